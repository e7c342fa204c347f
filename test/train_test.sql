-- pgTAP: mtms_train.  The SQL objects (signatures, volatility, parallel
-- labels of the training aggregates), a small training and what it stores,
-- the result rows, phases / scenes / ctcvr, determinism, warm start and
-- versions, and the SQLSTATE and message of every input error, after which
-- the model is unchanged.
BEGIN;
SELECT plan(81);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- ---------------------------------------------------------------------------
-- Objects.
SELECT has_function('mtms_train', ARRAY['text', 'regclass', 'text[]', 'text']);
SELECT function_returns('mtms_train', ARRAY['text', 'regclass', 'text[]', 'text'], 'setof record');
SELECT volatility_is('mtms_train', ARRAY['text', 'regclass', 'text[]', 'text'], 'volatile');
SELECT is((SELECT proparallel FROM pg_proc WHERE proname = 'mtms_train'), 'u',
          'mtms_train is PARALLEL UNSAFE');
SELECT is((SELECT array_agg(p ORDER BY p)
             FROM pg_proc, unnest(proargnames) p WHERE proname = 'mtms_train'),
          '{epochs,model,phase,phases,samples,samples,scene,scenes,seconds,task,train_loss,valid_auc,valid_loss}'::text[],
          'mtms_train has the argument and result names of API.md');
SELECT isa_ok((SELECT proargdefaults FROM pg_proc WHERE proname = 'mtms_train'), 'pg_node_tree',
              'mtms_train has argument defaults');
SELECT is_aggregate('mtms_embedding_update', ARRAY['text', 'text', 'text[]', 'boolean', 'boolean']);
SELECT is_aggregate('mtms_finetune', ARRAY['text', 'text', 'text[]', 'boolean', 'boolean']);
SELECT results_eq(
    $$SELECT p.proname::text COLLATE "default", p.proparallel::text, a.aggcombinefn <> 0, a.aggserialfn <> 0,
             a.aggdeserialfn <> 0, a.aggtranstype = 'internal'::regtype
        FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
       WHERE p.proname IN ('mtms_embedding_update', 'mtms_finetune') ORDER BY 1$$,
    $$VALUES ('mtms_embedding_update', 's', true, true, true, true),
             ('mtms_finetune', 's', true, true, true, true)$$,
    'both training aggregates are PARALLEL SAFE with combine, serialize and deserialize');
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_aggregate a ON a.aggcombinefn = p.oid
                                                                 OR a.aggserialfn = p.oid
                                                                 OR a.aggdeserialfn = p.oid
                                                                 OR a.aggtransfn = p.oid
                                                                 OR a.aggfinalfn = p.oid
            WHERE a.aggfnoid::regproc::text IN ('mtms_embedding_update', 'mtms_finetune')
              AND p.proparallel <> 's'), 0,
          'their support functions are PARALLEL SAFE too');

-- ---------------------------------------------------------------------------
-- A small training.
CREATE TEMP TABLE tt_s AS SELECT * FROM mtms_synthetic_samples(4000, 1);
SELECT lives_ok($$SELECT mtms_create_model('tt_m', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'create a small model');
CREATE TEMP TABLE tt_r AS
SELECT * FROM mtms_train('tt_m', 'tt_s') WITH ORDINALITY
    AS r(phase, scene, task, epochs, samples, train_loss, valid_loss, valid_auc, seconds, ord);
SELECT results_eq(
    $$SELECT phase, scene, task FROM tt_r ORDER BY ord$$,
    $$VALUES ('embedding', 'search', 'ctr'), ('embedding', 'search', 'cvr'),
             ('embedding', 'feeds', 'ctr'), ('embedding', 'feeds', 'cvr'),
             ('embedding', 'video', 'ctr'), ('embedding', 'video', 'cvr'),
             ('ctcvr', 'search', 'ctcvr'), ('ctcvr', 'feeds', 'ctcvr'), ('ctcvr', 'video', 'ctcvr'),
             ('finetune', 'search', 'ctr'), ('finetune', 'search', 'cvr'),
             ('finetune', 'feeds', 'ctr'), ('finetune', 'feeds', 'cvr'),
             ('finetune', 'video', 'ctr'), ('finetune', 'video', 'cvr')$$,
    'one row per phase, scene and task, in training order');
SELECT is((SELECT count(*)::int FROM tt_r WHERE epochs NOT BETWEEN 1 AND 2), 0,
          'epochs between 1 and max_epochs');
SELECT is((SELECT count(*)::int FROM tt_r
            WHERE NOT (samples > 0 OR (task = 'cvr' AND scene = 'video' AND samples = 0))), 0,
          'every pair trained on rows (the few clicked video rows may all validate)');
SELECT is((SELECT count(*)::int FROM tt_r
            WHERE NOT (train_loss > 0 AND train_loss < 'Infinity')
               OR NOT coalesce(valid_loss > 0 AND valid_loss < 'Infinity', true)), 0,
          'losses are finite and positive');
SELECT is((SELECT count(*)::int FROM tt_r WHERE NOT coalesce(valid_auc BETWEEN 0 AND 1, true)), 0,
          'validation AUCs are in [0, 1]');
SELECT cmp_ok((SELECT count(*)::int FROM tt_r WHERE valid_auc IS NOT NULL), '>=', 10,
              'most pairs have a validation AUC');
SELECT is((SELECT count(*)::int FROM tt_r WHERE NOT (seconds >= 0 AND seconds < 60)), 0,
          'seconds are plausible');
SELECT results_eq(
    $$SELECT active_version, (SELECT array_agg(version ORDER BY version) FROM mtms_versions('tt_m'))
        FROM mtms_model WHERE name = 'tt_m'$$,
    $$VALUES (1, '{1}'::int[])$$,
    'version 1 is committed and active');
SELECT results_eq(
    $$SELECT count(DISTINCT (scene, task))::int, bool_and(cardinality(vector) = 4)
        FROM mtms_embedding WHERE model_id = mtms_model_id('tt_m') AND version = 1$$,
    $$VALUES (6, true)$$,
    'embedding rows of embedding_dim values for all six pairs');
SELECT results_eq(
    $$SELECT phase, layer, n_in, n_out, count(*)::int
        FROM mtms_tower WHERE model_id = mtms_model_id('tt_m') AND version = 1
       GROUP BY 1, 2, 3, 4 ORDER BY 1, 2$$,
    $$VALUES ('embedding', 0, 24, 8, 6), ('embedding', 1, 8, 1, 6),
             ('finetune', 0, 144, 8, 6), ('finetune', 1, 8, 1, 6)$$,
    'phase-1 towers take F*d inputs, fine-tune towers S*2*F*d');
SELECT cmp_ok((SELECT min(auc) FROM mtms_evaluate('tt_m', 'tt_s')
                WHERE task = 'ctr' AND scene IN ('search', 'feeds')), '>', 0.7::float8,
              'CTR AUC on the training rows is well above chance');

-- ---------------------------------------------------------------------------
-- Input errors: SQLSTATE and message; the model is unchanged after each.
CREATE TEMP TABLE tt_before AS
SELECT (SELECT active_version FROM mtms_model WHERE name = 'tt_m') AS active_version,
       (SELECT count(*) FROM mtms_embedding WHERE model_id = mtms_model_id('tt_m')) AS embeddings,
       mtms_score('tt_m', 'search', 'ctr', '{user=1,ad=2}') AS score;
CREATE TEMP VIEW tt_unchanged AS
SELECT (SELECT active_version FROM mtms_model WHERE name = 'tt_m') = b.active_version
   AND (SELECT count(*) FROM mtms_embedding WHERE model_id = mtms_model_id('tt_m')) = b.embeddings
   AND mtms_score('tt_m', 'search', 'ctr', '{user=1,ad=2}') = b.score AS unchanged
  FROM tt_before b;

SELECT throws_ok($$SELECT * FROM mtms_train(NULL, 'tt_s')$$, '22004',
                 'argument "model" of mtms_train must not be NULL', 'NULL model');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', NULL)$$, '22004',
                 'argument "samples" of mtms_train must not be NULL', 'NULL samples');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_nope', 'tt_s')$$, '42704',
                 'model "tt_nope" does not exist', 'unknown model');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_s', phases => 'phase1')$$, '22023',
                 'invalid phases "phase1"', 'invalid phases');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_s', scenes => '{search,news}')$$, '22023',
                 'scene "news" is not a scene of model "tt_m"', 'unknown scene in scenes');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_s', scenes => '{}')$$, '22023',
                 'scenes must not be empty', 'empty scenes');
CREATE TEMP VIEW tt_v_noscene AS SELECT features, click, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_nofeatures AS SELECT scene, click, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_noclick AS SELECT scene, features, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_noconversion AS SELECT scene, features, click FROM tt_s;
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_noscene')$$,
                   '% has no column "scene"', 'a relation without scene: the error names it');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_nofeatures')$$,
                   '% has no column "features"', 'without features');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_noclick')$$,
                   '% has no column "click"', 'without click');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_noconversion')$$,
                   '% has no column "conversion"', 'without conversion');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_noclick')$$, '42703', NULL,
                 'a missing column is undefined_column');
CREATE TEMP VIEW tt_v_badscene AS SELECT 1.5 AS scene, features, click, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_badfeatures AS SELECT scene, array_to_string(features, ',') AS features, click, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_badclick AS SELECT scene, features, 'yes'::text AS click, conversion FROM tt_s;
CREATE TEMP VIEW tt_v_badconversion AS SELECT scene, features, click, 0 AS conversion FROM tt_s;
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_badscene')$$,
                   'column "scene" % has type numeric, expected text', 'scene of a wrong type');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_badfeatures')$$,
                   'column "features" % has type text, expected text[]', 'features of a wrong type');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_badclick')$$,
                   'column "click" % has type text, expected boolean', 'click of a wrong type');
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_v_badconversion')$$,
                   'column "conversion" % has type integer, expected boolean',
                   'conversion of a wrong type');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_badclick')$$, '42804', NULL,
                 'a wrong type is datatype_mismatch');
CREATE TEMP TABLE tt_empty (LIKE tt_s);
SELECT throws_like($$SELECT * FROM mtms_train('tt_m', 'tt_empty')$$, '% has no rows',
                   'an empty relation');
CREATE TEMP VIEW tt_v_rows AS
SELECT CASE WHEN click THEN 'news' ELSE scene END AS scene, features, click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '22023',
                 'sample scene "news" is not a scene of the model', 'a row of an unknown scene');
CREATE OR REPLACE TEMP VIEW tt_v_rows AS
SELECT CASE WHEN click THEN NULL ELSE scene END AS scene, features, click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '22004',
                 'sample column "scene" is NULL', 'a row with a NULL scene');
CREATE OR REPLACE TEMP VIEW tt_v_rows AS
SELECT scene, CASE WHEN click THEN NULL ELSE features END AS features, click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '22004',
                 'sample column "features" is NULL', 'a row with NULL features');
CREATE OR REPLACE TEMP VIEW tt_v_rows AS
SELECT scene, features, CASE WHEN click THEN NULL ELSE click END AS click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '22004',
                 'sample column "click" is NULL', 'a row with a NULL click');
CREATE OR REPLACE TEMP VIEW tt_v_rows AS
SELECT scene, CASE WHEN click THEN features || 'hour'::text ELSE features END AS features,
       click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '22P02',
                 'invalid feature "hour": missing "="', 'a malformed feature');
CREATE OR REPLACE TEMP VIEW tt_v_rows AS
SELECT scene, CASE WHEN click THEN features || 'age=3'::text ELSE features END AS features,
       click, conversion FROM tt_s;
SELECT throws_ok($$SELECT * FROM mtms_train('tt_m', 'tt_v_rows')$$, '42704',
                 'feature "age=3" has field "age" that the model does not declare',
                 'a feature of an undeclared field');
SELECT is((SELECT unchanged FROM tt_unchanged), true,
          'after all these errors the model, its active version and its scores are unchanged');

-- ---------------------------------------------------------------------------
-- phases, scenes, ctcvr.
SELECT lives_ok($$SELECT mtms_create_model('tt_p', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "ctcvr": false}')$$,
                'a model without the CTCVR stage');
SELECT throws_ok($$SELECT * FROM mtms_train('tt_p', 'tt_s', phases => 'finetune')$$, '55000',
                 'model "tt_p" has no trained embeddings to fine-tune',
                 'fine-tune only needs trained embeddings');
SELECT results_eq(
    $$SELECT DISTINCT phase FROM mtms_train('tt_p', 'tt_s', phases => 'embedding') ORDER BY 1$$,
    $$VALUES ('embedding')$$,
    'phases => embedding without CTCVR: embedding rows only');
SELECT results_eq(
    $$SELECT phase, scene, task FROM mtms_train('tt_p', 'tt_s', scenes => '{feeds}')$$,
    $$VALUES ('embedding', 'feeds', 'ctr'), ('embedding', 'feeds', 'cvr'),
             ('finetune', 'search', 'ctr'), ('finetune', 'search', 'cvr'),
             ('finetune', 'feeds', 'ctr'), ('finetune', 'feeds', 'cvr'),
             ('finetune', 'video', 'ctr'), ('finetune', 'video', 'cvr')$$,
    'scenes => {feeds}: phase 1 for feeds only, the fine-tune for all');
SELECT is((SELECT count(*)::int
             FROM (SELECT scene, task, feature, vector, accum FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tt_p') AND version = 1 AND scene <> 'feeds'
                   EXCEPT
                   SELECT scene, task, feature, vector, accum FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tt_p') AND version = 2) x), 0,
          'the other scenes'' embeddings are kept exactly');
SELECT results_eq(
    $$SELECT DISTINCT phase FROM mtms_train('tt_p', 'tt_s', phases => 'finetune')$$,
    $$VALUES ('finetune')$$,
    'phases => finetune: fine-tune rows only');
SELECT results_eq(
    $$SELECT version, active FROM mtms_versions('tt_p')$$,
    $$VALUES (2, false), (3, true)$$,
    'three trainings: versions 2 and 3 kept (keep_versions 2), 3 active');
SELECT results_eq(
    $$SELECT v.version, v.has_finetune FROM mtms_version v
       WHERE v.model_id = mtms_model_id('tt_p') ORDER BY 1$$,
    $$VALUES (2, true), (3, true)$$,
    'fine-tuned versions are marked');

-- ---------------------------------------------------------------------------
-- Determinism.
SELECT lives_ok($$SELECT mtms_create_model('tt_d', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'a second model with the options of the first');
SELECT results_eq(
    $$SELECT phase, scene, task, epochs, samples, train_loss, valid_loss, valid_auc
        FROM mtms_train('tt_d', 'tt_s')$$,
    $$SELECT phase, scene, task, epochs, samples, train_loss, valid_loss, valid_auc
        FROM tt_r ORDER BY ord$$,
    'the same options on the same rows give the same figures');
SELECT is((SELECT md5(string_agg(format('%s %s %s %s %s', scene, task, feature, vector, accum), ','
                                 ORDER BY scene, task, feature))
             FROM mtms_embedding WHERE model_id = mtms_model_id('tt_d')),
          (SELECT md5(string_agg(format('%s %s %s %s %s', scene, task, feature, vector, accum), ','
                                 ORDER BY scene, task, feature))
             FROM mtms_embedding WHERE model_id = mtms_model_id('tt_m') AND version = 1),
          'and the same embeddings, bit for bit');
SELECT is((SELECT md5(string_agg(format('%s %s %s %s %s %s', phase, scene, task, layer, weights, bias), ','
                                 ORDER BY phase, scene, task, layer))
             FROM mtms_tower WHERE model_id = mtms_model_id('tt_d')),
          (SELECT md5(string_agg(format('%s %s %s %s %s %s', phase, scene, task, layer, weights, bias), ','
                                 ORDER BY phase, scene, task, layer))
             FROM mtms_tower WHERE model_id = mtms_model_id('tt_m') AND version = 1),
          'and the same towers');

-- ---------------------------------------------------------------------------
-- Warm start: the next training is version 2 and keeps every embedding row.
SELECT is((SELECT count(*)::int FROM mtms_train('tt_m', 'tt_s', scenes => '{video}')), 9,
          'retrain: video in phase 1 (2 + 1 rows), the fine-tune (6 rows)');
SELECT results_eq(
    $$SELECT version, active FROM mtms_versions('tt_m')$$,
    $$VALUES (1, false), (2, true)$$,
    'the retraining is version 2, now active');
SELECT is((SELECT active_version FROM mtms_model WHERE name = 'tt_m'), 2, 'active_version is 2');
SELECT is((SELECT count(*)::int
             FROM (SELECT scene, task, feature FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tt_m') AND version = 1
                   EXCEPT
                   SELECT scene, task, feature FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tt_m') AND version = 2) x), 0,
          'version 2 started from version 1: every embedding row is still there');
SELECT isnt((SELECT score FROM tt_before), mtms_score('tt_m', 'search', 'ctr', '{user=1,ad=2}'),
            'and scores with the new fine-tune towers');

-- ---------------------------------------------------------------------------
-- The fine-tune hold-out: finetune_fraction (0.2) of a scene's rows, capped
-- at about finetune_rows rows; a capped scene's phase 1 gets the rest back.
-- (search has 2413 rows, feeds 1445, video 142.)
SELECT mtms_create_model('tt_cap', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         options => '{"max_epochs": 1, "finetune_rows": 200}');
SELECT mtms_create_model('tt_nocap', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         options => '{"max_epochs": 1, "finetune_rows": 0}');
CREATE TEMP TABLE tt_holdout AS
SELECT 'cap' AS variant, phase, scene, samples FROM mtms_train('tt_cap', 'tt_s') WHERE task = 'ctr'
UNION ALL
SELECT 'nocap', phase, scene, samples FROM mtms_train('tt_nocap', 'tt_s') WHERE task = 'ctr';
SELECT results_eq(
    $$SELECT scene, samples BETWEEN 150 AND 250 FROM tt_holdout
       WHERE variant = 'cap' AND phase = 'finetune' AND scene <> 'video' ORDER BY scene$$,
    $$VALUES ('feeds', true), ('search', true)$$,
    'finetune_rows 200: the large scenes leave about 200 rows to the fine-tune');
SELECT cmp_ok((SELECT samples FROM tt_holdout WHERE variant = 'nocap' AND phase = 'finetune' AND scene = 'search'),
              '>', 400::bigint, 'finetune_rows 0: search leaves its 20% (about 480 rows)');
SELECT is((SELECT count(DISTINCT samples)::int FROM tt_holdout WHERE phase = 'finetune' AND scene = 'video'), 1,
          'video (142 rows, 20% is under the cap) leaves the same rows either way');
SELECT is((SELECT bool_and(c.samples > n.samples) FROM tt_holdout c JOIN tt_holdout n USING (phase, scene)
            WHERE c.variant = 'cap' AND n.variant = 'nocap' AND phase = 'embedding' AND scene <> 'video'),
          true, 'and the capped scenes train phase 1 on the rows they keep');
SELECT throws_ok($$SELECT mtms_create_model('tt_bad', '{s}', '{f}', options => '{"finetune_rows": -1}')$$,
                 '22023', NULL, 'a negative finetune_rows is refused');

-- ---------------------------------------------------------------------------
-- The refit option: the small scenes (every scene of tt_s: none is capped)
-- train phase 1 again on all their rows after the fine-tune; each pair
-- keeps the refit where it validates better.  With every scene capped
-- (finetune_rows 10) nothing refits and the model is the one without it.
CREATE FUNCTION pg_temp.tt_params(model text) RETURNS text LANGUAGE sql AS $$
  SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
    SELECT format('e %s %s %s %s %s', scene, task, feature, vector, accum) AS r
      FROM mtms_embedding WHERE model_id = mtms_model_id(model)
    UNION ALL
    SELECT format('t %s %s %s %s %s %s', phase, scene, task, layer, weights, bias)
      FROM mtms_tower WHERE model_id = mtms_model_id(model)) s $$;
SELECT mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         options => o::jsonb)
  FROM (VALUES ('tt_rf', '{"seed": 1, "refit": true}'),
               ('tt_rf2', '{"seed": 1, "refit": true}'),
               ('tt_rfc', '{"max_epochs": 2, "seed": 5, "refit": true, "finetune_rows": 10}'),
               ('tt_rfc0', '{"max_epochs": 2, "seed": 5, "finetune_rows": 10}')) v(m, o);
CREATE TEMP TABLE tt_rf_rows AS SELECT 'tt_rf' AS model, * FROM mtms_train('tt_rf', 'tt_s');
INSERT INTO tt_rf_rows SELECT 'tt_rf2', * FROM mtms_train('tt_rf2', 'tt_s');
INSERT INTO tt_rf_rows SELECT 'tt_rfc', * FROM mtms_train('tt_rfc', 'tt_s');
INSERT INTO tt_rf_rows SELECT 'tt_rfc0', * FROM mtms_train('tt_rfc0', 'tt_s');
SELECT results_eq(
    $$SELECT model, count(*) FILTER (WHERE phase = 'refit') FROM tt_rf_rows GROUP BY 1 ORDER BY 1$$,
    $$VALUES ('tt_rf', 6::bigint), ('tt_rf2', 6), ('tt_rfc', 0), ('tt_rfc0', 0)$$,
    'refit: a result row for each pair of the small scenes; none where every scene is capped');
SELECT is((SELECT count(DISTINCT (scene, task)) FROM mtms_training_info('tt_rf') WHERE stage = 'refit'),
          6::bigint, 'refit: its checkpoints are in the training history');
SELECT is(pg_temp.tt_params('tt_rf'), pg_temp.tt_params('tt_rf2'),
          'refit: the same seed gives the same model');
SELECT is(pg_temp.tt_params('tt_rfc'), pg_temp.tt_params('tt_rfc0'),
          'refit with every scene capped: the model of the same options without it');
SELECT results_eq(
    $$SELECT options ? 'refit', options->'refit' FROM mtms_model WHERE name IN ('tt_rf', 'tt_rfc0') ORDER BY name$$,
    $$VALUES (true, 'true'::jsonb), (false, NULL)$$,
    'refit is stored when true, left out when false');
-- which towers score each pair: the version's metrics say so (each CTR
-- and CVR task's "scoring"; a task without validation rows, video CVR
-- here, has no metrics);
-- a pair that kept its refit has the validation loss of the refit's best
-- checkpoint there
CREATE TEMP TABLE tt_rf_scoring AS
SELECT v.model, s.key AS scene, t.key AS task, t.value ->> 'scoring' AS scoring,
       round((t.value ->> 'valid_loss')::numeric, 4) AS metric_loss
  FROM (SELECT 'tt_rf' AS model, metrics FROM mtms_versions('tt_rf') WHERE active
        UNION ALL
        SELECT 'tt_rfc0', metrics FROM mtms_versions('tt_rfc0') WHERE active) v,
       jsonb_each(v.metrics) s, jsonb_each(s.value) t
 WHERE t.key IN ('ctr', 'cvr');
SELECT results_eq(
    $$SELECT model, count(*) >= 5, bool_and(scoring IN ('finetune', 'phase1', 'refit')),
             count(*) FILTER (WHERE scoring = 'refit') > 0
        FROM tt_rf_scoring GROUP BY 1 ORDER BY 1$$,
    $$VALUES ('tt_rf', true, true, true), ('tt_rfc0', true, true, false)$$,
    'metrics name the towers that score each pair: refit ones only with the option');
CREATE TEMP TABLE tt_rf_kept AS SELECT * FROM tt_rf_scoring WHERE model = 'tt_rf' AND scoring = 'refit';
SELECT cmp_ok((SELECT count(*) FROM tt_rf_kept), '>', 0::bigint,
              'refit: some pair of this data keeps its separate sub-model');
SELECT is((SELECT count(*) FROM tt_rf_kept k
             JOIN mtms_training_info('tt_rf') h ON h.stage = 'refit' AND h.kept
                                               AND (h.scene, h.task) = (k.scene, k.task)
            WHERE round(h.valid_loss::numeric, 4) = k.metric_loss),
          (SELECT count(*) FROM tt_rf_kept),
          'refit: a kept pair''s metrics are its refit''s validation');
SELECT is((SELECT count(*) FILTER (WHERE phase = 'refit') FROM mtms_train('tt_rf', 'tt_s')), 6::bigint,
          'refit on a warm start: from the active version''s parameters, again for every small pair');
-- without kept rows every stage runs pass by pass and each pass replaces
-- the driver's model: the refit must not hold on to the old one
SET mtms.keep_training_rows = off;
SELECT is((SELECT count(*) FILTER (WHERE phase = 'refit') FROM mtms_train('tt_rf2', 'tt_s')), 6::bigint,
          'refit without kept training rows (stages pass by pass)');
RESET mtms.keep_training_rows;
-- a scene without rows today (news: none in tt_s) or too few to validate
-- does not refit; the others do
SELECT mtms_create_model('tt_rfn', '{search,feeds,video,news}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         options => '{"seed": 1, "refit": true, "max_epochs": 2}');
SELECT results_eq(
    $$SELECT scene, count(*) FROM mtms_train('tt_rfn', 'tt_s') WHERE phase = 'refit' GROUP BY 1 ORDER BY 1$$,
    $$VALUES ('feeds', 2::bigint), ('search', 2), ('video', 2)$$,
    'refit: a scene without rows is left out, the others refit');
-- phase 1's scan keeps the fine-tune's rows too (mtms.read_windows_once):
-- the same rows in the same order as the fine-tune's own scan
SELECT mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         options => '{"seed": 3, "max_epochs": 2}')
  FROM unnest('{tt_once,tt_twice}'::text[]) m;
SELECT count(*) FROM mtms_train('tt_once', 'tt_s') \g /dev/null
SET mtms.read_windows_once = off;
SELECT count(*) FROM mtms_train('tt_twice', 'tt_s') \g /dev/null
RESET mtms.read_windows_once;
SELECT is(pg_temp.tt_params('tt_once'), pg_temp.tt_params('tt_twice'),
          'one scan for both phases'' rows: the model of a scan per phase');
SELECT throws_ok($$SELECT mtms_create_model('tt_bad', '{s}', '{f}', options => '{"refit": "yes"}')$$,
                 '22023', NULL, 'a refit that is not a boolean is refused');

SELECT * FROM finish();
ROLLBACK;
