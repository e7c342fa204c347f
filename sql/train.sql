-- mtms_train: a small end-to-end training run, its result rows, the
-- parameters it stores, phases / scenes / ctcvr, warm starts and versions,
-- determinism, and every input error (after which the model is unchanged).
--
-- Training prints a NOTICE per epoch with timings, so notices are off; every
-- floating-point figure is bounded, never shown.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

CREATE TABLE tr_s AS SELECT * FROM mtms_synthetic_samples(5000, 1);
SELECT scene, count(*) > 100 AS many, count(*) FILTER (WHERE click) > 0 AS clicked
  FROM tr_s GROUP BY scene ORDER BY count(*) DESC;
SELECT mtms_create_model('tr_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');

-- ---------------------------------------------------------------------------
-- The first training: one row per (phase, scene, task), in training order.
CREATE TEMP TABLE tr_r1 AS
SELECT * FROM mtms_train('tr_m', 'tr_s') WITH ORDINALITY
    AS r(phase, scene, task, epochs, samples, train_loss, valid_loss,
         valid_auc, seconds, ord);
SELECT ord, phase, scene, task,
       epochs BETWEEN 1 AND 2 AS epochs_ok,
       samples > 0 AS has_samples,
       train_loss > 0 AND train_loss < 'Infinity' AS train_loss_ok,
       valid_loss IS NULL OR (valid_loss > 0 AND valid_loss < 'Infinity') AS valid_loss_ok,
       valid_auc IS NULL OR valid_auc BETWEEN 0 AND 1 AS auc_ok,
       seconds >= 0 AND seconds < 60 AS seconds_ok
  FROM tr_r1 ORDER BY ord;
-- the pairs with validation rows have a validation loss and ran every epoch
SELECT count(*) FILTER (WHERE valid_loss IS NOT NULL) >= 12 AS most_validated,
       bool_and(epochs = 2) FILTER (WHERE valid_loss IS NOT NULL) AS ran_all_epochs
  FROM tr_r1;
-- samples = training rows of the pair per epoch: a share of the scene's
-- rows (ctr, ctcvr) or of its clicked rows (cvr), the rest validates (and
-- some is left to the fine-tune); the CTCVR stage trains on the same rows
-- as the scene's CTR pair
SELECT r.phase, r.scene, r.task,
       r.samples BETWEEN CASE r.phase WHEN 'finetune' THEN 0.05 ELSE 0.5 END * c.n
                     AND c.n AS samples_ok
  FROM tr_r1 r
  JOIN (SELECT scene, task,
               CASE task WHEN 'cvr' THEN count(*) FILTER (WHERE click) ELSE count(*) END AS n
          FROM tr_s, unnest('{ctr,cvr,ctcvr}'::text[]) AS task GROUP BY scene, task) c
    USING (scene, task)
 WHERE c.n >= 100
 ORDER BY r.ord;
SELECT r.scene, r.samples = e.samples AS ctcvr_rows_are_ctr_rows,
       f.samples <= c.samples AS finetune_cvr_rows_are_clicked
  FROM tr_r1 r
  JOIN tr_r1 e ON e.scene = r.scene AND e.phase = 'embedding' AND e.task = 'ctr'
  JOIN tr_r1 f ON f.scene = r.scene AND f.phase = 'finetune' AND f.task = 'cvr'
  JOIN tr_r1 c ON c.scene = r.scene AND c.phase = 'finetune' AND c.task = 'ctr'
 WHERE r.phase = 'ctcvr' ORDER BY r.ord;

-- The version, the active version, the metrics.
SELECT active_version FROM mtms_model WHERE name = 'tr_m';
SELECT version, active, samples_relation, samples,
       trained_at BETWEEN now() - interval '1 hour' AND now() AS trained_now
  FROM mtms_versions('tr_m');
SELECT v.has_finetune, v.scenes, v.fields,
       jsonb_object_keys(v.metrics) AS metric_scene
  FROM mtms_version v JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' ORDER BY metric_scene;
SELECT s.key AS scene, t.key AS task,
       (t.value->>'valid_auc')::float8 BETWEEN 0 AND 1 AS auc_ok,
       (t.value->>'valid_loss')::float8 > 0 AS loss_ok
  FROM mtms_version v JOIN mtms_model m USING (model_id),
       jsonb_each(v.metrics) s, jsonb_each(s.value) t
 WHERE m.name = 'tr_m' AND s.key = 'search' ORDER BY 1, 2;

-- Parameters landed in the tables: embeddings of embedding_dim values for
-- every pair, phase-1 towers of F*d = 24 inputs, fine-tune towers of
-- S*2*F*d = 144 inputs, hidden layer 8, one output.
SELECT e.scene, e.task, count(*) > 100 AS many_rows,
       count(DISTINCT e.field) AS fields,
       bool_and(cardinality(e.vector) = 4) AS dim_ok,
       bool_and(e.accum >= 0) AS accum_ok
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' AND e.version = 1
 GROUP BY e.scene, e.task ORDER BY 1, 2;
-- every stored feature hash is the hash of a 'field=value' of the samples
SELECT count(*) AS unknown_features
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' AND e.scene = 'search' AND e.task = 'ctr'
   AND e.feature NOT IN (SELECT mtms_feature_hash(f) FROM tr_s, unnest(features) f);
SELECT t.phase, t.layer, t.n_in, t.n_out, count(*) AS towers,
       bool_and(cardinality(t.weights) = t.n_in * t.n_out) AS weights_ok,
       bool_and(cardinality(t.bias) = t.n_out) AS bias_ok
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' AND t.version = 1
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2;

-- The model ranks its training data well above chance.
SELECT scene, task, auc > 0.7 AS auc_well_above_chance
  FROM mtms_evaluate('tr_m', 'tr_s')
 WHERE task = 'ctr' AND scene IN ('search', 'feeds') ORDER BY scene;

-- ---------------------------------------------------------------------------
-- Input errors.  After each one the model is exactly as it was.
CREATE TEMP TABLE tr_base AS
SELECT m.active_version,
       (SELECT count(*) FROM mtms_version v WHERE v.model_id = m.model_id) AS versions,
       (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id) AS embeddings,
       (SELECT count(*) FROM mtms_tower t WHERE t.model_id = m.model_id) AS towers,
       mtms_score('tr_m', 'search', 'ctr', '{user=1,ad=2,tag=3}') AS score
  FROM mtms_model m WHERE m.name = 'tr_m';
CREATE FUNCTION pg_temp.tr_unchanged() RETURNS boolean LANGUAGE sql AS $$
SELECT m.active_version = b.active_version
   AND (SELECT count(*) FROM mtms_version v WHERE v.model_id = m.model_id) = b.versions
   AND (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id) = b.embeddings
   AND (SELECT count(*) FROM mtms_tower t WHERE t.model_id = m.model_id) = b.towers
   AND mtms_score('tr_m', 'search', 'ctr', '{user=1,ad=2,tag=3}') = b.score
  FROM mtms_model m, tr_base b WHERE m.name = 'tr_m'
$$;

-- NULL and unknown arguments
SELECT * FROM mtms_train(NULL, 'tr_s');
SELECT * FROM mtms_train('tr_m', NULL);
SELECT * FROM mtms_train('tr_nope', 'tr_s');
SELECT * FROM mtms_train('tr_m', 'tr_nope');
SELECT * FROM mtms_train('tr_m', 4294967295::oid::regclass);
SELECT * FROM mtms_train('tr_m', 'tr_s', phases => 'both');
SELECT * FROM mtms_train('tr_m', 'tr_s', phases => '');
SELECT * FROM mtms_train('tr_m', 'tr_s', scenes => '{search,shopping}');
SELECT * FROM mtms_train('tr_m', 'tr_s', scenes => '{}');
SELECT * FROM mtms_train('tr_m', 'tr_s', scenes => '{search,NULL}');
SELECT pg_temp.tr_unchanged();

-- a sample relation without one of the columns, or with a wrong type
CREATE TABLE tr_bad AS SELECT * FROM tr_s LIMIT 200;
CREATE VIEW tr_no_scene AS SELECT features, click, conversion FROM tr_bad;
CREATE VIEW tr_no_features AS SELECT scene, click, conversion FROM tr_bad;
CREATE VIEW tr_no_click AS SELECT scene, features, conversion FROM tr_bad;
CREATE VIEW tr_no_conversion AS SELECT scene, features, click FROM tr_bad;
CREATE VIEW tr_int_scene AS SELECT 1 AS scene, features, click, conversion FROM tr_bad;
CREATE VIEW tr_text_features AS SELECT scene, features::text AS features, click, conversion FROM tr_bad;
CREATE VIEW tr_int_features AS SELECT scene, '{1}'::int[] AS features, click, conversion FROM tr_bad;
CREATE VIEW tr_int_click AS SELECT scene, features, click::int AS click, conversion FROM tr_bad;
CREATE VIEW tr_text_conversion AS SELECT scene, features, click, conversion::text AS conversion FROM tr_bad;
SELECT * FROM mtms_train('tr_m', 'tr_no_scene');
SELECT * FROM mtms_train('tr_m', 'tr_no_features');
SELECT * FROM mtms_train('tr_m', 'tr_no_click');
SELECT * FROM mtms_train('tr_m', 'tr_no_conversion');
SELECT * FROM mtms_train('tr_m', 'tr_int_scene');
SELECT * FROM mtms_train('tr_m', 'tr_text_features');
SELECT * FROM mtms_train('tr_m', 'tr_int_features');
SELECT * FROM mtms_train('tr_m', 'tr_int_click');
SELECT * FROM mtms_train('tr_m', 'tr_text_conversion');
-- a dropped column does not count
CREATE TABLE tr_dropped AS SELECT * FROM tr_bad;
ALTER TABLE tr_dropped DROP COLUMN click;
SELECT * FROM mtms_train('tr_m', 'tr_dropped');
-- not a table
CREATE SEQUENCE tr_seq;
SELECT * FROM mtms_train('tr_m', 'tr_seq');
SELECT pg_temp.tr_unchanged();

-- no rows
CREATE TABLE tr_empty (LIKE tr_s);
SELECT * FROM mtms_train('tr_m', 'tr_empty');
SELECT pg_temp.tr_unchanged();

-- bad rows: an unknown scene, NULLs, malformed and undeclared features
CREATE TABLE tr_rows AS SELECT scene, features, click, conversion FROM tr_s LIMIT 300;
UPDATE tr_rows SET scene = 'shopping' WHERE ctid = (SELECT min(ctid) FROM tr_rows);
SELECT * FROM mtms_train('tr_m', 'tr_rows');
SELECT pg_temp.tr_unchanged();
CREATE OR REPLACE VIEW tr_rows_v AS
SELECT scene, features, click, conversion FROM tr_s LIMIT 300;
CREATE FUNCTION pg_temp.tr_row_error(col text, val text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE OR REPLACE VIEW tr_rows_v AS SELECT %s FROM tr_s',
    CASE col
      WHEN 'scene' THEN format('CASE WHEN click THEN %s ELSE scene END AS scene, features, click, conversion', val)
      WHEN 'features' THEN format('scene, CASE WHEN click THEN %s ELSE features END AS features, click, conversion', val)
      WHEN 'click' THEN format('scene, features, CASE WHEN click THEN %s ELSE click END AS click, conversion', val)
    END);
  PERFORM count(*) FROM mtms_train('tr_m', 'tr_rows_v');
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT pg_temp.tr_row_error('scene', 'NULL::text');
SELECT pg_temp.tr_row_error('features', 'NULL::text[]');
SELECT pg_temp.tr_row_error('click', 'NULL::boolean');
SELECT pg_temp.tr_row_error('features', $$features || 'user'::text$$);
SELECT pg_temp.tr_row_error('features', $$features || '=7'::text$$);
SELECT pg_temp.tr_row_error('features', $$features || 'user='::text$$);
SELECT pg_temp.tr_row_error('features', $$features || 'color=red'::text$$);
SELECT pg_temp.tr_row_error('features', $$features || NULL::text$$);
SELECT pg_temp.tr_row_error('features', $$'{{user=1,ad=2},{hour=3,device=1}}'::text[]$$);
SELECT pg_temp.tr_unchanged();
-- a bad row of a scene that phase 1 does not train still fails the fine-tune,
-- after phase 1 ran: nothing of it is kept either
CREATE OR REPLACE VIEW tr_rows_v AS
SELECT scene, CASE WHEN scene = 'search' AND click THEN features || 'color=red'::text
                   ELSE features END AS features, click, conversion FROM tr_s;
SELECT * FROM mtms_train('tr_m', 'tr_rows_v', scenes => '{video}');
SELECT pg_temp.tr_unchanged();

-- phases => 'finetune' needs trained embeddings
SELECT mtms_create_model('tr_fresh', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}');
SELECT * FROM mtms_train('tr_fresh', 'tr_s', phases => 'finetune');
SELECT active_version FROM mtms_model WHERE name = 'tr_fresh';
SELECT mtms_drop_model('tr_fresh');

-- the training aggregates only run inside mtms_train
SELECT mtms_embedding_update('123.4', scene, features, click, conversion) FROM tr_bad;
SELECT mtms_finetune('not a token', scene, features, click, conversion) FROM tr_bad;
SELECT mtms_embedding_update(NULL, scene, features, click, conversion) FROM tr_bad;
SELECT mtms_embedding_update('1.1', scene, features, click, conversion) FROM tr_empty;
SELECT pg_temp.tr_unchanged();

-- SQLSTATEs
DO $$
DECLARE
  stmt text;
BEGIN
  FOREACH stmt IN ARRAY ARRAY[
    $q$SELECT * FROM mtms_train(NULL, 'tr_s')$q$,
    $q$SELECT * FROM mtms_train('tr_nope', 'tr_s')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_s', phases => 'both')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_s', scenes => '{shopping}')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_no_click')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_int_click')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_empty')$q$,
    $q$SELECT * FROM mtms_train('tr_m', 'tr_rows')$q$]
  LOOP
    BEGIN
      EXECUTE stmt;
      RAISE WARNING 'no error: %', stmt;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING '%: %', SQLSTATE, SQLERRM;
    END;
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- Accepted variations: varchar scenes, extra columns, NULL conversions, a
-- conversion without a click (ignored), an odd relation name, NULL scenes
-- and phases meaning all.
CREATE TABLE "tr odd ""name""" AS
SELECT 42 AS extra, scene::varchar(16) AS scene, features, click,
       CASE WHEN NOT click AND features[1] LIKE '%1' THEN true
            WHEN NOT click THEN NULL ELSE conversion END AS conversion
  FROM tr_s;
SELECT count(*) AS rows FROM mtms_train('tr_m', '"tr odd ""name"""', NULL, NULL);
SELECT version, active, samples_relation, samples FROM mtms_versions('tr_m');

-- ---------------------------------------------------------------------------
-- Warm start: each training starts from the active version, so every
-- embedding row of the previous version is still there (nothing is evicted
-- without max_features); versions are kept up to keep_versions = 2.
CREATE TABLE tr_other AS SELECT * FROM mtms_synthetic_samples(500, 77);
SELECT count(*) AS rows FROM mtms_train('tr_m', 'tr_other');
SELECT version, active, samples_relation, samples FROM mtms_versions('tr_m');
SELECT active_version FROM mtms_model WHERE name = 'tr_m';
SELECT count(*) AS old_rows_missing
  FROM mtms_embedding a JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' AND a.version = 2
   AND NOT EXISTS (SELECT 1 FROM mtms_embedding b
                    WHERE b.model_id = a.model_id AND b.version = 3
                      AND (b.scene, b.task, b.feature) = (a.scene, a.task, a.feature));
SELECT (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id AND e.version = 3) >
       (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id AND e.version = 2)
       AS new_features_added
  FROM mtms_model m WHERE m.name = 'tr_m';
-- version 1 was pruned with its parameters
SELECT count(*) AS v1_rows
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_m' AND e.version = 1;

-- ---------------------------------------------------------------------------
-- phases => 'embedding': phase 1 only (embedding and ctcvr rows), no
-- fine-tune towers; then phases => 'finetune': fine-tune rows only, and the
-- embeddings are frozen (bit for bit the previous version's).
SELECT mtms_create_model('tr_p', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT phase, scene, task FROM mtms_train('tr_p', 'tr_s', phases => 'embedding');
SELECT v.version, v.has_finetune,
       (SELECT count(*) FROM mtms_tower t WHERE t.model_id = v.model_id AND t.version = v.version
           AND t.phase = 'finetune') AS finetune_layers,
       (SELECT count(*) FROM mtms_tower t WHERE t.model_id = v.model_id AND t.version = v.version
           AND t.phase = 'embedding') AS phase1_layers
  FROM mtms_version v JOIN mtms_model m USING (model_id) WHERE m.name = 'tr_p';
SELECT phase, scene, task FROM mtms_train('tr_p', 'tr_s', phases => 'finetune');
-- md5 of a version's embedding rows / tower layers (of some scenes)
CREATE FUNCTION pg_temp.tr_emb_md5(p_model text, p_version int, p_scenes text[] DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', e.scene, e.task, e.field, e.feature,
                             e.vector, e.accum), ',' ORDER BY e.scene, e.task, e.feature))
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = p_model AND e.version = p_version
   AND (p_scenes IS NULL OR e.scene = ANY (p_scenes))
$$;
CREATE FUNCTION pg_temp.tr_tower_md5(p_model text, p_version int, p_phase text,
                                     p_scenes text[] DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', t.scene, t.task, t.layer, t.n_in, t.n_out,
                             t.weights, t.bias), ',' ORDER BY t.scene, t.task, t.layer))
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = p_model AND t.version = p_version AND t.phase = p_phase
   AND (p_scenes IS NULL OR t.scene = ANY (p_scenes))
$$;
SELECT pg_temp.tr_emb_md5('tr_p', 1) = pg_temp.tr_emb_md5('tr_p', 2) AS embeddings_frozen,
       pg_temp.tr_tower_md5('tr_p', 1, 'embedding') = pg_temp.tr_tower_md5('tr_p', 2, 'embedding')
           AS phase1_towers_kept,
       (SELECT has_finetune FROM mtms_version v JOIN mtms_model m USING (model_id)
         WHERE m.name = 'tr_p' AND v.version = 2) AS has_finetune;

-- scenes => '{video}': phase 1 trains video only and leaves every other
-- scene's embeddings and phase-1 towers untouched; the fine-tune trains all.
SELECT phase, scene, task FROM mtms_train('tr_p', 'tr_s', scenes => '{video}');
SELECT pg_temp.tr_emb_md5('tr_p', 2, '{search,feeds}') = pg_temp.tr_emb_md5('tr_p', 3, '{search,feeds}')
           AS other_scenes_untouched,
       pg_temp.tr_tower_md5('tr_p', 2, 'embedding', '{search,feeds}') =
           pg_temp.tr_tower_md5('tr_p', 3, 'embedding', '{search,feeds}') AS other_towers_untouched,
       pg_temp.tr_emb_md5('tr_p', 2, '{video}') <> pg_temp.tr_emb_md5('tr_p', 3, '{video}')
           AS video_trained,
       pg_temp.tr_tower_md5('tr_p', 2, 'finetune') <> pg_temp.tr_tower_md5('tr_p', 3, 'finetune')
           AS finetuned;
SELECT mtms_drop_model('tr_p');

-- option ctcvr = false: no CTCVR stage
SELECT mtms_create_model('tr_noctcvr', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "ctcvr": false}');
SELECT phase, scene, task, epochs FROM mtms_train('tr_noctcvr', 'tr_s');
SELECT mtms_drop_model('tr_noctcvr');

-- ---------------------------------------------------------------------------
-- A new scene and a new field: the model grows, old parameters stay.
SELECT mtms_create_model('tr_g', '{search,feeds}', '{user,ad,advertiser,hour,device}',
       4, '{8}', '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}');
CREATE VIEW tr_g2 AS
SELECT scene, array(SELECT f FROM unnest(features) f WHERE f NOT LIKE 'tag=%') AS features,
       click, conversion
  FROM tr_s;
CREATE VIEW tr_g1 AS SELECT * FROM tr_g2 WHERE scene <> 'video';
SELECT count(*) AS rows FROM mtms_train('tr_g', 'tr_g1');
-- video rows and tag features are errors until declared
SELECT count(*) FROM mtms_train('tr_g', 'tr_g2');
SELECT mtms_add_scene('tr_g', 'video');
CREATE VIEW tr_g3 AS SELECT scene, features || 'tag=5'::text AS features, click, conversion FROM tr_g2;
SELECT count(*) FROM mtms_train('tr_g', 'tr_g3');
SELECT mtms_add_field('tr_g', 'tag');
SELECT phase, scene, task FROM mtms_train('tr_g', 'tr_s', scenes => '{video}') WHERE phase <> 'finetune';
SELECT pg_temp.tr_emb_md5('tr_g', 1, '{search,feeds}') = pg_temp.tr_emb_md5('tr_g', 2, '{search,feeds}')
       AS old_scenes_untouched;
SELECT t.phase, t.layer, t.n_in, t.n_out, count(*) AS towers
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'tr_g' GROUP BY t.version, 1, 2, 3, 4 ORDER BY t.version, 1, 2;
SELECT mtms_drop_model('tr_g');

-- ---------------------------------------------------------------------------
-- Determinism: the same options on the same data give the same parameters,
-- bit for bit, and the same figures; another seed gives others.  (With
-- mtms.keep_training_rows off every pass scans the samples instead of unit
-- jobs over kept rows: another schedule, a model of its own; below.)
SELECT mtms_create_model('tr_d1', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT mtms_create_model('tr_d2', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT mtms_create_model('tr_d3', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024, "seed": 7}');
CREATE TEMP TABLE tr_d AS
SELECT 'tr_d1' AS model, r.* FROM mtms_train('tr_d1', 'tr_s') r;
INSERT INTO tr_d SELECT 'tr_d2', r.* FROM mtms_train('tr_d2', 'tr_s') r;
INSERT INTO tr_d SELECT 'tr_d3', r.* FROM mtms_train('tr_d3', 'tr_s') r;
SELECT pg_temp.tr_emb_md5('tr_d1', 1) = pg_temp.tr_emb_md5('tr_d2', 1) AS same_embeddings,
       pg_temp.tr_tower_md5('tr_d1', 1, 'embedding') = pg_temp.tr_tower_md5('tr_d2', 1, 'embedding')
           AS same_phase1_towers,
       pg_temp.tr_tower_md5('tr_d1', 1, 'finetune') = pg_temp.tr_tower_md5('tr_d2', 1, 'finetune')
           AS same_finetune_towers,
       pg_temp.tr_emb_md5('tr_d1', 1) <> pg_temp.tr_emb_md5('tr_d3', 1) AS seed_changes_embeddings,
       pg_temp.tr_tower_md5('tr_d1', 1, 'finetune') <> pg_temp.tr_tower_md5('tr_d3', 1, 'finetune')
           AS seed_changes_towers;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE a.epochs = b.epochs AND a.samples = b.samples
                          AND a.train_loss = b.train_loss
                          AND a.valid_loss IS NOT DISTINCT FROM b.valid_loss
                          AND a.valid_auc IS NOT DISTINCT FROM b.valid_auc) AS identical
  FROM tr_d a JOIN tr_d b USING (phase, scene, task)
 WHERE a.model = 'tr_d1' AND b.model = 'tr_d2';
-- The scanning path (mtms.keep_training_rows off: every pass an aggregate
-- query over the samples) trains too, and as well within 0.05 AUC.
SELECT mtms_create_model('tr_d4', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SET mtms.keep_training_rows = off;
INSERT INTO tr_d SELECT 'tr_d4', r.* FROM mtms_train('tr_d4', 'tr_s') r;
RESET mtms.keep_training_rows;
SELECT count(*) AS rows, bool_and(b.valid_loss > 0) AS learned,
       bool_and(abs(a.valid_auc - b.valid_auc) < 0.05) FILTER (WHERE a.scene = 'search' AND a.task = 'ctr') AS close_auc
  FROM tr_d a JOIN tr_d b USING (phase, scene, task)
 WHERE a.model = 'tr_d1' AND b.model = 'tr_d4';
SELECT mtms_drop_model('tr_d1');
SELECT mtms_drop_model('tr_d2');
SELECT mtms_drop_model('tr_d3');
SELECT mtms_drop_model('tr_d4');

-- ---------------------------------------------------------------------------
SELECT mtms_drop_model('tr_m');
SELECT count(*) AS leftover_models FROM mtms_model WHERE name LIKE 'tr\_%';
DROP VIEW tr_no_scene, tr_no_features, tr_no_click, tr_no_conversion, tr_int_scene,
     tr_text_features, tr_int_features, tr_int_click, tr_text_conversion, tr_rows_v, tr_g1, tr_g3, tr_g2;
DROP TABLE tr_s, tr_bad, tr_dropped, tr_empty, tr_rows, "tr odd ""name""", tr_other;
DROP SEQUENCE tr_seq;
