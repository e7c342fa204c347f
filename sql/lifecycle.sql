-- The model lifecycle: daily time slots (warm start, versions, metrics),
-- keep_versions pruning, rollback, and growth without regression: a new
-- scene (existing embeddings bit-identical, existing scores bit-identical
-- until the fine-tune, no scene worse on validation after it) and a new
-- field (scores unchanged until training, its embeddings trained, the old
-- fields' rows bit-identical, no scene worse on validation).  Lifecycle
-- errors leave the model as it was.
--
-- Training prints a NOTICE per epoch with timings, so notices are off; every
-- floating-point figure is compared or bounded, never shown.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- Three days of a small world (few users and ads, many clicks and
-- conversions) so that tiny trainings learn something.
CREATE TABLE lc_all AS
SELECT * FROM mtms_synthetic_samples(9000, 3,
    '{"slots": 3, "ctr": 0.15, "cvr": 0.3, "users": 400, "ads": 100, "advertisers": 30,
      "tags": 20, "scene_weights": [0.45, 0.35, 0.2]}');
SELECT slot, scene, count(*) > 500 AS rows_ok, count(*) FILTER (WHERE click) >= 50 AS clicks_ok,
       count(*) FILTER (WHERE conversion) >= 10 AS conversions_ok
  FROM lc_all GROUP BY 1, 2 ORDER BY 1, 2;
CREATE VIEW lc_day1 AS SELECT * FROM lc_all WHERE slot = 1;
CREATE VIEW lc_day2 AS SELECT * FROM lc_all WHERE slot = 2;
CREATE VIEW lc_day3 AS SELECT * FROM lc_all WHERE slot = 3;
CREATE VIEW lc_days12 AS SELECT * FROM lc_all WHERE slot <= 2;
-- 20 rows of each scene from day 3 to score
CREATE TABLE lc_probe AS
SELECT row_number() OVER (ORDER BY scene, features::text) AS id, scene, features,
       array(SELECT f FROM unnest(features) f WHERE f NOT LIKE 'tag=%') AS features_notag
  FROM (SELECT *, row_number() OVER (PARTITION BY scene ORDER BY features::text) AS rn
          FROM lc_day3) s
 WHERE rn <= 20;
-- every (probe row, task) scored by a model: the scores of a version
CREATE FUNCTION pg_temp.lc_scores(p_model text, p_notag boolean DEFAULT false,
                                  p_scenes text[] DEFAULT '{search,feeds,video}')
RETURNS TABLE(id bigint, scene text, task text, p float8) LANGUAGE sql AS $$
SELECT q.id, q.scene, t.task,
       mtms_score(p_model, q.scene, t.task, CASE WHEN p_notag THEN q.features_notag ELSE q.features END)
  FROM lc_probe q, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
 WHERE q.scene = ANY (p_scenes)
$$;
-- md5 of a version's embedding rows of one (scene, task), or of all
CREATE FUNCTION pg_temp.lc_emb_md5(p_model text, p_version int, p_scene text DEFAULT NULL,
                                   p_task text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', e.scene, e.task, e.field, e.feature,
                             e.vector, e.accum), ',' ORDER BY e.scene, e.task, e.feature))
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = p_model AND e.version = p_version
   AND (p_scene IS NULL OR e.scene = p_scene) AND (p_task IS NULL OR e.task = p_task)
$$;
CREATE FUNCTION pg_temp.lc_tower_md5(p_model text, p_version int, p_phase text, p_scene text)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', t.task, t.layer, t.n_in, t.n_out,
                             t.weights, t.bias), ',' ORDER BY t.task, t.layer))
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = p_model AND t.version = p_version AND t.phase = p_phase AND t.scene = p_scene
$$;
-- a scene's validation criterion in a version's metrics: the sum of its
-- CTR, CVR and CTCVR validation losses (what the fine-tune minimizes)
CREATE FUNCTION pg_temp.lc_crit(p_metrics jsonb, p_scene text) RETURNS float8
LANGUAGE sql AS $$
SELECT sum((t.value->>'valid_loss')::float8) FROM jsonb_each(p_metrics->p_scene) t
$$;
CREATE FUNCTION pg_temp.lc_metrics(p_model text, p_version int) RETURNS jsonb
LANGUAGE sql AS $$
SELECT metrics FROM mtms_versions(p_model) WHERE version = p_version
$$;

-- ---------------------------------------------------------------------------
-- Time slots: day 1, then day 2 starting from day 1's parameters.
SELECT mtms_create_model('lc_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT count(*) AS rows FROM mtms_train('lc_m', 'lc_day1');
CREATE TABLE lc_m_v1 AS SELECT * FROM pg_temp.lc_scores('lc_m');
CREATE TABLE lc_m_e1 AS
SELECT e.scene, e.task, e.feature, e.vector, e.accum
  FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'lc_m' AND e.version = 1;
SELECT count(*) AS rows FROM mtms_train('lc_m', 'lc_day2');
CREATE TABLE lc_m_v2 AS SELECT * FROM pg_temp.lc_scores('lc_m');

-- one row per version: when, on what, how many rows, which is active
SELECT v.version, v.active, v.samples_relation,
       v.samples = (SELECT count(*) FROM lc_all WHERE slot = v.version) AS samples_are_the_days_rows,
       v.trained_at BETWEEN now() - interval '1 hour' AND now() AS trained_now,
       v.trained_at > coalesce(lag(v.trained_at) OVER (ORDER BY v.version), '-infinity') AS in_order
  FROM mtms_versions('lc_m') v ORDER BY v.version;
SELECT active_version FROM mtms_model WHERE name = 'lc_m';
-- validation metrics for every scene and task of each version
SELECT v.version, count(*) AS pairs,
       bool_and((t.value->>'valid_loss')::float8 > 0 AND (t.value->>'valid_loss')::float8 < 5) AS loss_ok,
       bool_and((t.value->>'valid_auc')::float8 BETWEEN 0 AND 1) AS auc_ok,
       string_agg(DISTINCT s.key, ',') AS scenes, string_agg(DISTINCT t.key, ',') AS tasks
  FROM mtms_versions('lc_m') v, jsonb_each(v.metrics) s, jsonb_each(s.value) t
 GROUP BY v.version ORDER BY v.version;

-- Version 2 started from version 1: every embedding row of version 1 is
-- still there, no Adagrad accumulator went down (they only grow), most rows
-- of day 2's features moved (a pair that no epoch improved keeps its start),
-- and version 2 is much closer to version 1 than a model trained on day 2
-- alone (same options and seed) is.
SELECT mtms_create_model('lc_fresh', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT count(*) AS rows FROM mtms_train('lc_fresh', 'lc_day2');
CREATE TABLE lc_m_e2 AS
SELECT e.scene, e.task, e.feature, e.vector, e.accum
  FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'lc_m' AND e.version = 2;
CREATE TABLE lc_fresh_e AS
SELECT e.scene, e.task, e.feature, e.vector, e.accum
  FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'lc_fresh';
CREATE FUNCTION pg_temp.lc_dist(a real[], b real[]) RETURNS float8 LANGUAGE sql AS $$
SELECT sqrt(sum((x - y)::float8 ^ 2)) FROM unnest(a, b) AS u(x, y)
$$;
SELECT (SELECT count(*) FROM lc_m_e1 a
         WHERE NOT EXISTS (SELECT 1 FROM lc_m_e2 b
                            WHERE (b.scene, b.task, b.feature) = (a.scene, a.task, a.feature)))
           AS v1_rows_missing,
       (SELECT count(*) FROM lc_m_e2) > (SELECT count(*) FROM lc_m_e1) AS day2_features_added,
       (SELECT count(*) FROM lc_m_e1 a JOIN lc_m_e2 b USING (scene, task, feature)
         WHERE b.accum < a.accum) AS accumulators_down;
SELECT count(*) > 500 AS common_rows,
       count(*) FILTER (WHERE a.vector <> b.vector) > count(*) / 2 AS most_day2_rows_moved,
       sum(pg_temp.lc_dist(a.vector, b.vector)) < 0.75 * sum(pg_temp.lc_dist(a.vector, c.vector))
           AS v2_near_v1
  FROM lc_m_e1 a JOIN lc_m_e2 b USING (scene, task, feature) JOIN lc_fresh_e c USING (scene, task, feature);
SELECT pg_temp.lc_emb_md5('lc_m', 2) <> pg_temp.lc_emb_md5('lc_fresh', 1) AS not_a_fresh_model;
SELECT mtms_drop_model('lc_fresh');
-- and it scores differently
SELECT count(*) AS scores, count(*) FILTER (WHERE a.p <> b.p) > 0.9 * count(*) AS mostly_changed
  FROM lc_m_v1 a JOIN lc_m_v2 b USING (id, task);

-- ---------------------------------------------------------------------------
-- Rollback: scoring uses the kept version made active, bit for bit.
SELECT mtms_rollback('lc_m', 1);
SELECT version, active FROM mtms_versions('lc_m') ORDER BY version;
SELECT active_version FROM mtms_model WHERE name = 'lc_m';
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS equal_v1
  FROM pg_temp.lc_scores('lc_m') s JOIN lc_m_v1 a USING (id, task);
SELECT mtms_rollback('lc_m', 2);
SELECT version, active FROM mtms_versions('lc_m') ORDER BY version;
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS equal_v2
  FROM pg_temp.lc_scores('lc_m') s JOIN lc_m_v2 a USING (id, task);
-- rolling back to the active version changes nothing
SELECT mtms_rollback('lc_m', 2);
SELECT version, active FROM mtms_versions('lc_m') ORDER BY version;
-- versions that do not exist
SELECT mtms_rollback('lc_m', 3);
SELECT mtms_rollback('lc_m', 0);
SELECT mtms_rollback('lc_m', -1);
SELECT active_version FROM mtms_model WHERE name = 'lc_m';
SELECT count(*) FILTER (WHERE s.p = a.p) AS still_equal_v2
  FROM pg_temp.lc_scores('lc_m') s JOIN lc_m_v2 a USING (id, task);

-- ---------------------------------------------------------------------------
-- keep_versions: the newest keep_versions versions stay, with their
-- parameters; older ones go with theirs.
CREATE FUNCTION pg_temp.lc_kept(p_model text)
RETURNS TABLE(tbl text, versions int[]) LANGUAGE sql AS $$
SELECT 'mtms_version', array_agg(DISTINCT v.version ORDER BY v.version)
  FROM mtms_version v JOIN mtms_model m USING (model_id) WHERE m.name = p_model
UNION ALL
SELECT 'mtms_embedding', array_agg(DISTINCT e.version ORDER BY e.version)
  FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = p_model
UNION ALL
SELECT 'mtms_tower', array_agg(DISTINCT t.version ORDER BY t.version)
  FROM mtms_tower t JOIN mtms_model m USING (model_id) WHERE m.name = p_model
$$;
-- day 3 with a marker feature that only this day has
CREATE VIEW lc_day3x AS SELECT slot, scene, features || 'device=99'::text AS features, click, conversion
  FROM lc_day3;
SELECT mtms_create_model('lc_k', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 2}');
SELECT count(*) AS rows FROM mtms_train('lc_k', 'lc_day1');
SELECT count(*) AS rows FROM mtms_train('lc_k', 'lc_day2');
SELECT version, active FROM mtms_versions('lc_k') ORDER BY version;
SELECT count(*) AS rows FROM mtms_train('lc_k', 'lc_day3x');
SELECT version, active, samples_relation FROM mtms_versions('lc_k') ORDER BY version;
SELECT * FROM pg_temp.lc_kept('lc_k');
-- a pruned version cannot be made active
SELECT mtms_rollback('lc_k', 1);
SELECT version, active FROM mtms_versions('lc_k') ORDER BY version;
-- roll back to 2 and train: version 4 starts from version 2, the active
-- one (no row of day 3's marker feature), and is active; 3 and 4 are kept
SELECT mtms_rollback('lc_k', 2);
SELECT count(*) AS rows FROM mtms_train('lc_k', 'lc_day1');
SELECT version, active, samples_relation FROM mtms_versions('lc_k') ORDER BY version;
SELECT * FROM pg_temp.lc_kept('lc_k');
SELECT e.version, count(*) AS marker_rows
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_k' AND e.feature = mtms_feature_hash('device=99')
 GROUP BY e.version ORDER BY e.version;
SELECT mtms_drop_model('lc_k');

-- keep_versions 1: only the active version, whose parameters score
SELECT mtms_create_model('lc_k1', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 1}');
SELECT count(*) AS rows FROM mtms_train('lc_k1', 'lc_day1');
SELECT count(*) AS rows FROM mtms_train('lc_k1', 'lc_day2');
SELECT version, active FROM mtms_versions('lc_k1') ORDER BY version;
SELECT * FROM pg_temp.lc_kept('lc_k1');
SELECT mtms_rollback('lc_k1', 1);
SELECT count(*) AS rows FROM mtms_train('lc_k1', 'lc_day3');
SELECT version, active FROM mtms_versions('lc_k1') ORDER BY version;
SELECT * FROM pg_temp.lc_kept('lc_k1');
SELECT count(*) FILTER (WHERE p > 0 AND p < 1) AS scored FROM pg_temp.lc_scores('lc_k1');
SELECT mtms_drop_model('lc_k1');

-- ---------------------------------------------------------------------------
-- A new scene.  A model of search and feeds, trained on their rows of days
-- 1-2; then video is added, trained in phase 1 on its own, then fine-tuned
-- with the others.  (patience 8: on video's 217 rows a validation comes
-- after every batch, and the fine-tune must get past its start to use the
-- other scenes' embeddings, which is what this part checks.)
CREATE VIEW lc_days12_sf AS SELECT * FROM lc_days12 WHERE scene <> 'video';
SELECT mtms_create_model('lc_s', '{search,feeds}', '{user,ad,advertiser,hour,device,tag}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024, "patience": 8}');
SELECT count(*) AS rows FROM mtms_train('lc_s', 'lc_days12_sf');
CREATE TABLE lc_s_v1 AS SELECT * FROM pg_temp.lc_scores('lc_s', p_scenes => '{search,feeds}');
-- version 1's metrics (the version is pruned by the time they are compared)
CREATE TABLE lc_s_m1 AS SELECT pg_temp.lc_metrics('lc_s', 1) AS metrics;
CREATE TABLE lc_s_md5 AS
SELECT sc AS scene, tk AS task, pg_temp.lc_emb_md5('lc_s', 1, sc, tk) AS emb,
       pg_temp.lc_tower_md5('lc_s', 1, 'embedding', sc) AS tower1
  FROM unnest('{search,feeds}'::text[]) sc, unnest('{ctr,cvr}'::text[]) tk;

-- adding the scene changes no score of the existing scenes, bit for bit
SELECT mtms_add_scene('lc_s', 'video');
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS identical
  FROM pg_temp.lc_scores('lc_s', p_scenes => '{search,feeds}') s JOIN lc_s_v1 a USING (id, task);

-- phase 1 for video only
SELECT phase, scene, task FROM mtms_train('lc_s', 'lc_days12', scenes => '{video}', phases => 'embedding');
SELECT version, active, samples_relation FROM mtms_versions('lc_s') ORDER BY version;
-- every existing (scene, task)'s embedding rows and phase-1 towers are
-- bit-identical; video has its own
SELECT h.scene, h.task,
       pg_temp.lc_emb_md5('lc_s', 2, h.scene, h.task) = h.emb AS embeddings_identical,
       pg_temp.lc_tower_md5('lc_s', 2, 'embedding', h.scene) = h.tower1 AS phase1_towers_identical
  FROM lc_s_md5 h ORDER BY 1 DESC, 2;
SELECT e.scene, e.task, count(*) > 100 AS trained
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_s' AND e.version = 2 AND e.scene = 'video' GROUP BY 1, 2 ORDER BY 1, 2;
-- the existing fine-tune towers got zero columns for video's blocks,
-- appended after their own: every weight in place, biases and the output
-- layer unchanged; video has no fine-tune tower yet
SELECT a.scene, a.task, a.n_in AS n_in_before, b.n_in AS n_in_after,
       bool_and(b.weights[o * b.n_in + 1 : o * b.n_in + a.n_in] = a.weights[o * a.n_in + 1 : (o + 1) * a.n_in])
           AS old_columns_in_place,
       bool_and(b.weights[o * b.n_in + a.n_in + 1 : (o + 1) * b.n_in]
                = array_fill(0::real, ARRAY[b.n_in - a.n_in])) AS new_columns_zero,
       bool_and(b.bias = a.bias) AS bias_same
  FROM mtms_tower a JOIN mtms_tower b USING (model_id, phase, scene, task, layer)
       JOIN mtms_model m USING (model_id), generate_series(0, a.n_out - 1) AS o
 WHERE m.name = 'lc_s' AND a.version = 1 AND b.version = 2 AND a.phase = 'finetune' AND a.layer = 0
 GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 2;
SELECT count(*) AS output_layers, count(*) FILTER (WHERE a.weights = b.weights AND a.bias = b.bias) AS same
  FROM mtms_tower a JOIN mtms_tower b USING (model_id, phase, scene, task, layer)
       JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_s' AND a.version = 1 AND b.version = 2 AND a.phase = 'finetune' AND a.layer = 1;
SELECT t.phase, count(*) AS video_layers
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_s' AND t.version = 2 AND t.scene = 'video' GROUP BY 1 ORDER BY 1;
-- and the existing scenes still score bit-identically
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS identical
  FROM pg_temp.lc_scores('lc_s', p_scenes => '{search,feeds}') s JOIN lc_s_v1 a USING (id, task);

-- Video scores with its phase-1 towers on its own embeddings: a user that
-- only search and feeds have seen changes nothing in a video score (after
-- the fine-tune, whose towers read every pair's embeddings, it does).
SELECT f AS lc_su FROM lc_days12_sf, unnest(features) f
 WHERE f LIKE 'user=%'
   AND f NOT IN (SELECT g FROM lc_days12, unnest(features) g WHERE scene = 'video')
 GROUP BY f ORDER BY count(*) DESC, f LIMIT 1 \gset
SELECT e.scene, count(*) > 0 AS has_rows_of_that_user
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_s' AND e.version = 2 AND e.feature = mtms_feature_hash(:'lc_su')
 GROUP BY 1 ORDER BY 1 DESC;
CREATE TABLE lc_video AS
SELECT row_number() OVER (ORDER BY features::text) AS id,
       array(SELECT f FROM unnest(features) f WHERE f NOT LIKE 'user=%') AS features
  FROM lc_day3 WHERE scene = 'video' ORDER BY features::text LIMIT 20;
CREATE FUNCTION pg_temp.lc_video_scores(p_user text)
RETURNS TABLE(id bigint, task text, p float8, p_user float8) LANGUAGE sql AS $$
SELECT v.id, t.task, mtms_score('lc_s', 'video', t.task, v.features),
       mtms_score('lc_s', 'video', t.task, v.features || p_user)
  FROM lc_video v, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
$$;
SELECT count(*) AS scores, bool_and(p > 0 AND p < 1) AS in_0_1,
       count(*) FILTER (WHERE p = p_user) AS other_scenes_user_ignored
  FROM pg_temp.lc_video_scores(:'lc_su');

-- The fine-tune: embeddings frozen, every scene gets fine-tune towers, and
-- no existing scene is worse on its validation rows (the same rows as in
-- version 1: the split depends on a row's content only) than version 1.
SELECT phase, scene, task FROM mtms_train('lc_s', 'lc_days12', phases => 'finetune');
SELECT version, active FROM mtms_versions('lc_s') ORDER BY version;
SELECT pg_temp.lc_emb_md5('lc_s', 3) = pg_temp.lc_emb_md5('lc_s', 2) AS embeddings_frozen;
SELECT t.scene, count(*) AS finetune_layers
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_s' AND t.version = 3 AND t.phase = 'finetune' GROUP BY 1 ORDER BY 1 DESC;
SELECT sc AS scene,
       pg_temp.lc_crit(pg_temp.lc_metrics('lc_s', 3), sc) > 0 AS has_metrics,
       pg_temp.lc_crit(pg_temp.lc_metrics('lc_s', 3), sc)
           <= pg_temp.lc_crit(m1.metrics, sc) + 1e-5 AS no_worse_than_v1
  FROM unnest('{search,feeds}'::text[]) sc, lc_s_m1 m1;
SELECT count(*) AS scores, count(*) FILTER (WHERE p <> p_user) > 0 AS other_scenes_user_used
  FROM pg_temp.lc_video_scores(:'lc_su');

-- ---------------------------------------------------------------------------
-- A new field.  A model without tag, trained on days 1-2 without tags.
CREATE VIEW lc_days12_notag AS
SELECT scene, array(SELECT f FROM unnest(features) f WHERE f NOT LIKE 'tag=%') AS features,
       click, conversion
  FROM lc_days12;
-- (min_delta 0: every improvement counts, so that each pair keeps the
-- epoch that learned the new field, however small its gain on 5k rows)
SELECT mtms_create_model('lc_f', '{search,feeds,video}', '{user,ad,advertiser,hour,device}',
       4, '{8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024, "min_delta": 0}');
SELECT count(*) AS rows FROM mtms_train('lc_f', 'lc_days12_notag');
CREATE TABLE lc_f_v1 AS SELECT * FROM pg_temp.lc_scores('lc_f', true);
CREATE TABLE lc_f_md5 AS
SELECT sc AS scene, tk AS task, pg_temp.lc_emb_md5('lc_f', 1, sc, tk) AS emb
  FROM unnest('{search,feeds,video}'::text[]) sc, unnest('{ctr,cvr}'::text[]) tk;
-- tags are an error until the field is declared
SELECT mtms_score('lc_f', 'search', 'ctr', '{user=1,tag=2}');
SELECT mtms_add_field('lc_f', 'tag');
-- scores are bit-identical, with or without values of the new field
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS identical_without_tags
  FROM pg_temp.lc_scores('lc_f', true) s JOIN lc_f_v1 a USING (id, task);
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS identical_with_tags
  FROM pg_temp.lc_scores('lc_f', false) s JOIN lc_f_v1 a USING (id, task);
-- The yardstick: version 1's validation losses on the rows that validate
-- the next training (days 1-2 with tags).  A fine-tune whose tower steps
-- are far below float precision reports exactly its starting point: run
-- one on version 1 (options edited by hand, all of it rolled back).
BEGIN;
UPDATE mtms_model SET options = options || '{"lr_tower": 1e-30}' WHERE name = 'lc_f';
SELECT count(*) AS rows FROM mtms_train('lc_f', 'lc_days12', phases => 'finetune');
SELECT metrics AS lc_f_base FROM mtms_versions('lc_f') WHERE active \gset
ROLLBACK;
SELECT version, active FROM mtms_versions('lc_f') ORDER BY version;
-- train with the tags, both phases
SELECT count(*) AS rows FROM mtms_train('lc_f', 'lc_days12');
SELECT version, active, samples_relation FROM mtms_versions('lc_f') ORDER BY version;
-- the new field has embedding rows in every pair that kept a new epoch (a
-- pair none of whose checkpoints beat its start keeps the start, bit for
-- bit, without tags), the old fields keep theirs; most pairs learn tags
CREATE TEMP TABLE lc_f_tags AS
SELECT e.scene, e.task, count(*) FILTER (WHERE e.field = 'tag') > 10 AS tag_rows,
       count(*) FILTER (WHERE e.field = 'user') > 100 AS user_rows,
       pg_temp.lc_emb_md5('lc_f', 2, e.scene, e.task) = h.emb AS kept_start
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
       JOIN lc_f_md5 h ON (h.scene, h.task) = (e.scene, e.task)
 WHERE m.name = 'lc_f' AND e.version = 2 GROUP BY 1, 2, h.emb;
SELECT scene, task, tag_rows OR (kept_start AND NOT tag_rows) AS tags_or_start, user_rows
  FROM lc_f_tags ORDER BY 1 DESC, 2;
SELECT count(*) FILTER (WHERE tag_rows) >= 4 AS most_learn_tags FROM lc_f_tags;
SELECT t.phase, t.n_in, count(*) AS towers
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'lc_f' AND t.layer = 0 GROUP BY t.version, 1, 2 ORDER BY t.version, 1;
-- what the model knew did not move: every pair's rows of the old fields
-- are bit-identical, and so are its phase-1 tower's weights on the old
-- fields' columns (the tag columns are appended), its biases and its output
-- layer
CREATE FUNCTION pg_temp.lc_emb_md5_old(p_model text, p_version int, p_scene text, p_task text)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', e.scene, e.task, e.field, e.feature,
                             e.vector, e.accum), ',' ORDER BY e.scene, e.task, e.feature))
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name = p_model AND e.version = p_version AND e.scene = p_scene AND e.task = p_task
   AND e.field <> 'tag'
$$;
SELECT h.scene, h.task, pg_temp.lc_emb_md5_old('lc_f', 2, h.scene, h.task) = h.emb AS old_fields_identical
  FROM lc_f_md5 h ORDER BY 1 DESC, 2;
SELECT a.scene, a.task,
       bool_and(b.weights[o * b.n_in + 1 : o * b.n_in + a.n_in] = a.weights[o * a.n_in + 1 : (o + 1) * a.n_in])
           AS old_columns_same,
       bool_and(b.bias = a.bias) AS bias_same,
       (SELECT x.weights = y.weights AND x.bias = y.bias
          FROM mtms_tower x JOIN mtms_tower y USING (model_id, phase, scene, task, layer)
         WHERE x.model_id = a.model_id AND x.version = 1 AND y.version = 2 AND x.phase = 'embedding'
           AND (x.scene, x.task, x.layer) = (a.scene, a.task, 1)) AS output_layer_same
  FROM mtms_tower a JOIN mtms_tower b USING (model_id, phase, scene, task, layer)
       JOIN mtms_model m USING (model_id), generate_series(0, a.n_out - 1) AS o
 WHERE m.name = 'lc_f' AND a.version = 1 AND b.version = 2 AND a.phase = 'embedding' AND a.layer = 0
 GROUP BY a.model_id, 1, 2 ORDER BY 1 DESC, 2;
-- and no scene is worse on validation than version 1 was on those rows
SELECT sc AS scene,
       pg_temp.lc_crit(:'lc_f_base'::jsonb, sc) > 0 AS has_yardstick,
       pg_temp.lc_crit(pg_temp.lc_metrics('lc_f', 2), sc)
           <= pg_temp.lc_crit(:'lc_f_base'::jsonb, sc) + 1e-5 AS no_worse_than_v1
  FROM unnest('{search,feeds,video}'::text[]) sc;
-- tags now count
SELECT count(*) FILTER (WHERE s.p <> a.p) > 0 AS tags_used
  FROM pg_temp.lc_scores('lc_f', false) s JOIN pg_temp.lc_scores('lc_f', true) a USING (id, task);

-- ---------------------------------------------------------------------------
-- Lifecycle errors, after which the models are unchanged.
CREATE TABLE lc_s_v3 AS SELECT * FROM pg_temp.lc_scores('lc_s');
SELECT mtms_add_scene('lc_s', 'video');
SELECT mtms_add_scene('lc_s', 'search');
SELECT mtms_add_field('lc_f', 'tag');
SELECT mtms_add_field('lc_f', 'user');
SELECT * FROM mtms_train('lc_s', 'lc_days12', scenes => '{shopping}');
SELECT * FROM mtms_train('lc_s', 'lc_days12', scenes => '{video,news}', phases => 'embedding');
SELECT mtms_rollback('lc_s', 1);
SELECT mtms_rollback('lc_nope', 1);
SELECT mtms_add_scene('lc_nope', 'video');
SELECT mtms_add_field('lc_nope', 'tag');
SELECT * FROM mtms_versions('lc_nope');
DO $$
DECLARE
  stmt text;
BEGIN
  FOREACH stmt IN ARRAY ARRAY[
    $q$SELECT mtms_add_scene('lc_s', 'video')$q$,
    $q$SELECT mtms_add_field('lc_f', 'tag')$q$,
    $q$SELECT * FROM mtms_train('lc_s', 'lc_days12', scenes => '{shopping}')$q$,
    $q$SELECT mtms_rollback('lc_s', 1)$q$,
    $q$SELECT mtms_rollback('lc_nope', 1)$q$]
  LOOP
    BEGIN
      EXECUTE stmt;
      RAISE WARNING 'no error: %', stmt;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING '%: %', SQLSTATE, SQLERRM;
    END;
  END LOOP;
END $$;
SELECT m.name, m.scenes, m.fields, m.active_version,
       (SELECT array_agg(version ORDER BY version) FROM mtms_versions(m.name)) AS versions
  FROM mtms_model m WHERE m.name IN ('lc_s', 'lc_f') ORDER BY 1;
SELECT count(*) AS scores, count(*) FILTER (WHERE s.p = a.p) AS unchanged
  FROM pg_temp.lc_scores('lc_s') s JOIN lc_s_v3 a USING (id, task);

-- ---------------------------------------------------------------------------
SELECT mtms_drop_model('lc_m');
SELECT mtms_drop_model('lc_s');
SELECT mtms_drop_model('lc_f');
SELECT count(*) AS leftover_models FROM mtms_model WHERE name LIKE 'lc\_%';
-- their versions and parameters went with them
SELECT (SELECT count(*) FROM mtms_version v
         WHERE NOT EXISTS (SELECT 1 FROM mtms_model m WHERE m.model_id = v.model_id))
     + (SELECT count(*) FROM mtms_embedding e
         WHERE NOT EXISTS (SELECT 1 FROM mtms_model m WHERE m.model_id = e.model_id))
     + (SELECT count(*) FROM mtms_tower t
         WHERE NOT EXISTS (SELECT 1 FROM mtms_model m WHERE m.model_id = t.model_id)) AS orphan_rows;
DROP VIEW lc_days12_notag, lc_days12_sf, lc_day3x, lc_day1, lc_day2, lc_day3, lc_days12;
DROP TABLE lc_all, lc_probe, lc_m_v1, lc_m_v2, lc_m_e1, lc_m_e2, lc_fresh_e, lc_s_v1, lc_s_m1, lc_s_md5,
     lc_video, lc_f_v1, lc_f_md5, lc_s_v3;
