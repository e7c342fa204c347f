-- pgTAP: the training history (mtms_training_history, mtms_training_info).
-- Its objects; what a training writes per stage and unit (checkpoints,
-- the kept one and its figures against mtms_versions' metrics, monotone
-- rows); a warm start's checkpoint 0; versions and pruning; errors; the
-- pass-by-pass engine (mtms.keep_training_rows off); and the same history
-- from units trained in parallel workers as in the leader.
BEGIN;
SELECT plan(41);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;
SET LOCAL mtms.train_workers = 0;

-- ---------------------------------------------------------------------------
-- Objects.
SELECT has_table('mtms_training_history');
SELECT has_function('mtms_training_info', ARRAY['text', 'integer']);
SELECT is((SELECT array_agg(p ORDER BY o)
             FROM pg_proc, unnest(proargnames) WITH ORDINALITY AS u(p, o)
            WHERE proname = 'mtms_training_info'),
          '{model,version,version,stage,scene,task,epoch,checkpoint,train_loss,valid_loss,valid_auc,rows,seconds,kept}'::text[],
          'mtms_training_info has the argument and result names of API.md');
SELECT is((SELECT pg_get_function_result('mtms_training_info(text, int)'::regprocedure)),
          'TABLE(version integer, stage text, scene text, task text, epoch integer, checkpoint integer, '
          'train_loss double precision, valid_loss double precision, valid_auc double precision, '
          'rows bigint, seconds double precision, kept boolean)',
          'mtms_training_info returns the columns of API.md');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'mtms_training_history'::regclass),
          'mtms_training_history has row security');
SELECT ok((SELECT 'mtms_training_history'::regclass = ANY (extconfig) FROM pg_extension
            WHERE extname = 'mtms'), 'pg_dump dumps mtms_training_history');
SELECT isnt(obj_description('mtms_training_history'::regclass, 'pg_class'), NULL,
            'mtms_training_history has a comment');
SELECT is((SELECT count(*)::int FROM pg_attribute
            WHERE attrelid = 'mtms_training_history'::regclass AND attnum > 0 AND NOT attisdropped
              AND col_description(attrelid, attnum) IS NULL
              AND attname NOT IN ('model_id', 'version')), 0,
          'every column of mtms_training_history but the key has a comment');

-- ---------------------------------------------------------------------------
-- A small training, from a fresh model.
CREATE TEMP TABLE ht_s AS SELECT * FROM mtms_synthetic_samples(4000, 1);
SELECT mtms_create_model('ht_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         4, '{8}', '{"max_epochs": 2, "batch_size": 64, "keep_versions": 2}');
SELECT count(*) FROM mtms_train('ht_m', 'ht_s');
CREATE TEMP TABLE ht_h1 AS
SELECT * FROM mtms_training_info('ht_m') WITH ORDINALITY AS h(version, stage, scene, task, epoch,
    checkpoint, train_loss, valid_loss, valid_auc, rows, seconds, kept, ord);

SELECT results_eq($$SELECT DISTINCT version FROM ht_h1$$, $$VALUES (1)$$,
                  'the history is the active version''s');
SELECT results_eq(
    $$SELECT stage, count(DISTINCT (scene, task))::int FROM ht_h1 GROUP BY stage ORDER BY min(ord)$$,
    $$VALUES ('embedding', 6), ('ctcvr', 9), ('finetune', 9)$$,
    'rows for every unit of every stage: pairs, and three tasks per scene unit');
SELECT is((SELECT count(*)::int FROM (SELECT stage, scene, checkpoint FROM ht_h1
                                       WHERE stage <> 'embedding' GROUP BY 1, 2, 3
                                      HAVING array_agg(task ORDER BY ord) <> '{ctr,cvr,ctcvr}') s), 0,
          'a scene unit has the rows ctr, cvr, ctcvr at every checkpoint');
SELECT is((SELECT count(*)::int FROM ht_h1 WHERE stage = 'embedding' AND task NOT IN ('ctr', 'cvr')), 0,
          'an embedding unit is a pair: ctr or cvr');
SELECT is((SELECT count(*)::int FROM (SELECT stage, scene, task FROM ht_h1 GROUP BY 1, 2, 3
                                      HAVING count(*) FILTER (WHERE kept) <> 1) s), 0,
          'exactly one kept checkpoint per (stage, scene, task)');
SELECT is((SELECT count(*)::int FROM ht_h1 WHERE checkpoint = 0 AND stage = 'embedding'), 0,
          'a fresh model''s embedding units have no checkpoint 0');
SELECT is((SELECT count(DISTINCT (stage, scene))::int FROM ht_h1
            WHERE checkpoint = 0 AND epoch = 0 AND rows = 0 AND train_loss IS NULL
              AND valid_loss IS NOT NULL), 6,
          'the CTCVR stage and the fine-tune validate every scene''s start: checkpoint 0, no rows');

-- checkpoints 0/1 .. n in the order written, rows and epochs never going back
SELECT is((SELECT count(*)::int FROM (
             SELECT stage, scene, task FROM ht_h1 GROUP BY 1, 2, 3
             HAVING max(checkpoint) - min(checkpoint) + 1 <> count(*) OR min(checkpoint) > 1
                 OR array_agg(checkpoint ORDER BY ord) <> array_agg(checkpoint ORDER BY checkpoint)) s), 0,
          'checkpoints are numbered 0 or 1 to n, in order');
SELECT is((SELECT count(*)::int FROM (
             SELECT rows < lag(rows) OVER w OR epoch < lag(epoch) OVER w
                    OR seconds < lag(seconds) OVER w AS back
               FROM ht_h1 WINDOW w AS (PARTITION BY stage, scene, task ORDER BY checkpoint)) s
            WHERE back), 0,
          'rows, epochs and seconds never decrease from one checkpoint to the next');
SELECT ok((SELECT bool_and(epoch BETWEEN 1 AND 2 AND rows > 0) FROM ht_h1 WHERE checkpoint > 0),
          'a checkpoint during training is in pass 1 or 2 (max_epochs) and after some rows');

-- the kept checkpoints are what the version records
CREATE TEMP TABLE ht_metrics AS
SELECT s.key AS scene, t.key AS task, round((t.value->>'valid_loss')::numeric, 6) AS loss,
       round((t.value->>'valid_auc')::numeric, 6) AS auc
  FROM mtms_versions('ht_m') v, jsonb_each(v.metrics) s, jsonb_each(s.value) t WHERE v.active;
SELECT is((SELECT count(*)::int FROM ht_metrics m JOIN ht_h1 h USING (scene, task)
            WHERE h.stage = 'finetune' AND h.kept
              AND round(h.valid_loss::numeric, 6) IS NOT DISTINCT FROM m.loss
              AND round(h.valid_auc::numeric, 6) IS NOT DISTINCT FROM m.auc),
          (SELECT count(*)::int FROM ht_metrics),
          'the fine-tune''s kept checkpoints have the version''s validation metrics');
SELECT cmp_ok((SELECT count(*)::int FROM ht_metrics), '>=', 8, 'and there are metrics to compare');

-- ---------------------------------------------------------------------------
-- A warm start: every unit validates its start.
SELECT count(*) FROM mtms_train('ht_m', 'ht_s');
CREATE TEMP TABLE ht_h2 AS SELECT * FROM mtms_training_info('ht_m');
SELECT results_eq($$SELECT DISTINCT version FROM ht_h2$$, $$VALUES (2)$$,
                  'after a second training the default is version 2');
SELECT is((SELECT count(DISTINCT (scene, task))::int FROM ht_h2
            WHERE stage = 'embedding' AND checkpoint = 0 AND epoch = 0 AND rows = 0), 6,
          'a warm start validates every embedding unit''s start: checkpoint 0');
SELECT is((SELECT count(*)::int FROM (SELECT stage, scene, task FROM ht_h2 GROUP BY 1, 2, 3
                                      HAVING count(*) FILTER (WHERE kept) <> 1) s), 0,
          'exactly one kept checkpoint per (stage, scene, task) after a warm start');
SELECT results_eq($$SELECT stage, scene, task, checkpoint, valid_loss FROM mtms_training_info('ht_m', 1)$$,
                  $$SELECT stage, scene, task, checkpoint, valid_loss FROM ht_h1 ORDER BY ord$$,
                  'version 1''s history is still there, unchanged');

-- keep_versions 2: a third training prunes version 1 and its history
SELECT count(*) FROM mtms_train('ht_m', 'ht_s');
SELECT is((SELECT count(*)::int FROM mtms_training_history
            WHERE model_id = mtms_model_id('ht_m') AND version = 1), 0,
          'pruning a version removes its history');
SELECT is((SELECT array_agg(DISTINCT version ORDER BY version) FROM mtms_training_history
            WHERE model_id = mtms_model_id('ht_m')), '{2,3}'::int[],
          'the kept versions keep theirs');
SELECT throws_ok($$SELECT * FROM mtms_training_info('ht_m', 1)$$, '42704',
                 'version 1 of model "ht_m" does not exist', 'a pruned version is undefined_object');

-- ---------------------------------------------------------------------------
-- Errors.
SELECT throws_ok($$SELECT * FROM mtms_training_info('ht_nope')$$, '42704',
                 'model "ht_nope" does not exist', 'an unknown model is undefined_object');
SELECT throws_ok($$SELECT * FROM mtms_training_info('ht_m', 99)$$, '42704',
                 'version 99 of model "ht_m" does not exist', 'an unknown version is undefined_object');
SELECT throws_ok($$SELECT * FROM mtms_training_info(NULL)$$, '22004',
                 'argument "model" must not be null', 'a NULL model is null_value_not_allowed');
SELECT mtms_create_model('ht_new', '{a}', '{f}');
SELECT throws_ok($$SELECT * FROM mtms_training_info('ht_new')$$, '55000',
                 'model "ht_new" has not been trained', 'an untrained model has no active version to show');
CREATE ROLE ht_stranger;
SET LOCAL ROLE ht_stranger;
SELECT throws_ok($$SELECT * FROM mtms_training_info('ht_m')$$, '42501', NULL,
                 'a role without score on the model is refused');
SELECT is((SELECT count(*)::int FROM mtms_training_history), 0,
          'and row security hides the table''s rows from it');
RESET ROLE;

-- dropping the model drops its history
SELECT mtms_create_model('ht_d', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         4, '{8}', '{"max_epochs": 1, "batch_size": 64}');
SELECT count(*) FROM mtms_train('ht_d', 'ht_s', phases => 'embedding');
CREATE TEMP TABLE ht_did AS SELECT mtms_model_id('ht_d') AS id;
SELECT cmp_ok((SELECT count(*)::int FROM mtms_training_history, ht_did WHERE model_id = id), '>', 0,
              'an embedding-only training has a history');
SELECT mtms_drop_model('ht_d');
SELECT is((SELECT count(*)::int FROM mtms_training_history, ht_did WHERE model_id = id), 0,
          'dropping the model removes its history');

-- ---------------------------------------------------------------------------
-- The pass-by-pass engine: one checkpoint per epoch.
SET LOCAL mtms.keep_training_rows = off;
SELECT mtms_create_model('ht_p', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         4, '{8}', '{"max_epochs": 2, "batch_size": 64}');
SELECT count(*) FROM mtms_train('ht_p', 'ht_s');
CREATE TEMP TABLE ht_hp AS
SELECT * FROM mtms_training_info('ht_p') WITH ORDINALITY AS h(version, stage, scene, task, epoch,
    checkpoint, train_loss, valid_loss, valid_auc, rows, seconds, kept, ord);
RESET mtms.keep_training_rows;
SELECT results_eq(
    $$SELECT stage, count(DISTINCT (scene, task))::int FROM ht_hp GROUP BY stage ORDER BY min(ord)$$,
    $$VALUES ('embedding', 6), ('ctcvr', 9), ('finetune', 9)$$,
    'without kept rows: rows for every unit of every stage');
SELECT ok((SELECT bool_and(checkpoint = epoch AND epoch <= 2) FROM ht_hp),
          'without kept rows a checkpoint is an epoch');
SELECT is((SELECT count(*)::int FROM (SELECT stage, scene, task FROM ht_hp GROUP BY 1, 2, 3
                                      HAVING count(*) FILTER (WHERE kept) <> 1) s), 0,
          'without kept rows: exactly one kept checkpoint per (stage, scene, task)');
SELECT is((SELECT count(*)::int FROM (
             SELECT rows <= lag(rows) OVER w AS back
               FROM ht_hp WHERE checkpoint > 0
             WINDOW w AS (PARTITION BY stage, scene, task ORDER BY checkpoint)) s
            WHERE back), 0,
          'without kept rows: rows grow with every epoch');
SELECT is((SELECT count(*)::int
             FROM mtms_versions('ht_p') v, jsonb_each(v.metrics) s, jsonb_each(s.value) t, ht_hp h
            WHERE h.stage = 'finetune' AND h.kept AND h.scene = s.key AND h.task = t.key
              AND (round(h.valid_loss::numeric, 6) IS DISTINCT FROM round((t.value->>'valid_loss')::numeric, 6)
                OR round(h.valid_auc::numeric, 6) IS DISTINCT FROM round((t.value->>'valid_auc')::numeric, 6))),
          0, 'without kept rows: the kept checkpoints have the version''s metrics');

-- ---------------------------------------------------------------------------
-- Units trained in parallel workers bring the same history back.
SELECT mtms_create_model('ht_w0', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         4, '{8}', '{"max_epochs": 2, "batch_size": 64}');
SELECT mtms_create_model('ht_w2', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         4, '{8}', '{"max_epochs": 2, "batch_size": 64}');
SELECT count(*) FROM mtms_train('ht_w0', 'ht_s');
SET LOCAL max_parallel_maintenance_workers = 2;
SET LOCAL mtms.train_workers = 2;
SELECT count(*) FROM mtms_train('ht_w2', 'ht_s');
SET LOCAL mtms.train_workers = 0;
SELECT results_eq(
    $$SELECT stage, scene, task, epoch, checkpoint, train_loss, valid_loss, valid_auc, rows, kept
        FROM mtms_training_info('ht_w2')$$,
    $$SELECT stage, scene, task, epoch, checkpoint, train_loss, valid_loss, valid_auc, rows, kept
        FROM mtms_training_info('ht_w0')$$,
    'the same history with 2 workers as in the leader alone (but seconds)');

SELECT * FROM finish();
ROLLBACK;
