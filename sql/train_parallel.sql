-- Training through a parallel plan: both aggregates run as partial
-- aggregates in parallel workers whose states are combined; the model is
-- as good as the serial one on held-out rows.  Scoring in a parallel query
-- (the scan in the workers, mtms_score, PARALLEL RESTRICTED, in the leader)
-- gives the serial scores.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- 50k training rows and 10k held-out rows of the same synthetic universe
CREATE TABLE tp_all AS
SELECT row_number() OVER () AS i, * FROM mtms_synthetic_samples(60000, 3);
CREATE VIEW tp_train AS SELECT * FROM tp_all WHERE i <= 50000;
CREATE VIEW tp_test AS SELECT * FROM tp_all WHERE i > 50000;
SELECT mtms_create_model('tp_serial', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT mtms_create_model('tp_parallel', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');

SELECT count(*) AS rows FROM mtms_train('tp_serial', 'tp_train');

SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
-- passes replay kept training rows in one process when they can; with
-- mtms.keep_training_rows off every pass scans, here in a parallel plan
SET mtms.keep_training_rows = off;
-- the workers scan every row (a leader that also scans can finish the
-- 50k rows before they start, on a busy machine, and train alone)
SET parallel_leader_participation = off;
-- the shape of mtms_train's per-epoch query gets a parallel plan
EXPLAIN (COSTS OFF)
SELECT mtms_embedding_update('token', scene::text, features, click, conversion) FROM tp_train;
EXPLAIN (COSTS OFF)
SELECT mtms_finetune('token', scene::text, features, click, conversion) FROM tp_train;
SELECT phase, scene, task, epochs BETWEEN 1 AND 2 AS epochs_ok, samples > 0 AS has_samples,
       valid_auc IS NULL OR valid_auc BETWEEN 0 AND 1 AS auc_ok
  FROM mtms_train('tp_parallel', 'tp_train');
-- scoring in a parallel query: the workers scan, the leader scores
EXPLAIN (COSTS OFF)
SELECT sum(mtms_score('tp_parallel', scene, 'ctr', features)) FROM tp_all;
CREATE TEMP TABLE tp_par_sum AS
SELECT scene, sum(mtms_score('tp_parallel', scene, 'ctr', features)) AS s,
       sum(mtms_score('tp_parallel', scene, 'ctcvr', features)) AS s2
  FROM tp_all GROUP BY scene;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET mtms.keep_training_rows;
RESET parallel_leader_participation;
SET max_parallel_workers_per_gather = 0;

SELECT p.scene, abs(p.s - q.s) < 1e-9 * q.s AS same_ctr_sum,
       abs(p.s2 - q.s2) < 1e-9 * q.s2 AS same_ctcvr_sum
  FROM tp_par_sum p
  JOIN (SELECT scene, sum(mtms_score('tp_parallel', scene, 'ctr', features)) AS s,
               sum(mtms_score('tp_parallel', scene, 'ctcvr', features)) AS s2
          FROM tp_all GROUP BY scene) q USING (scene)
 ORDER BY scene;

-- The workers did train: the parameters are not the serial ones.  (The
-- serial training is deterministic; parallel ones depend on how the rows
-- were split between the processes.)
SELECT (SELECT md5(string_agg(e.vector::text, ',' ORDER BY e.scene, e.task, e.feature))
          FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_serial') <>
       (SELECT md5(string_agg(e.vector::text, ',' ORDER BY e.scene, e.task, e.feature))
          FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_parallel')
       AS parallel_differs;
-- Both learned, and the parallel model's held-out CTR AUC is within 0.02
-- of the serial one's on the large scenes.
SELECT s.scene, s.task, s.auc > 0.55 AS serial_learned, p.auc > 0.55 AS parallel_learned,
       abs(s.auc - p.auc) < 0.02 AS within_002
  FROM mtms_evaluate('tp_serial', 'tp_test') s
  JOIN mtms_evaluate('tp_parallel', 'tp_test') p USING (scene, task)
 WHERE s.task = 'ctr' AND s.scene IN ('search', 'feeds')
 ORDER BY s.scene;

-- With training rows kept (the default), the first pass of each window
-- runs in one process to keep its rows and the others replay them, so a
-- training allowed two workers gives the serial model, bit for bit.
SELECT mtms_create_model('tp_kept', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT count(*) AS rows FROM mtms_train('tp_kept', 'tp_train');
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
SELECT (SELECT md5(string_agg(e.vector::text || e.accum::text, ',' ORDER BY e.scene, e.task, e.feature))
          FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_serial') =
       (SELECT md5(string_agg(e.vector::text || e.accum::text, ',' ORDER BY e.scene, e.task, e.feature))
          FROM mtms_embedding e JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_kept')
       AS kept_same_embeddings,
       (SELECT md5(string_agg(t.weights::text || t.bias::text, ',' ORDER BY t.phase, t.scene, t.task, t.layer))
          FROM mtms_tower t JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_serial') =
       (SELECT md5(string_agg(t.weights::text || t.bias::text, ',' ORDER BY t.phase, t.scene, t.task, t.layer))
          FROM mtms_tower t JOIN mtms_model m USING (model_id) WHERE m.name = 'tp_kept')
       AS kept_same_towers;

SELECT mtms_drop_model('tp_serial');
SELECT mtms_drop_model('tp_parallel');
SELECT mtms_drop_model('tp_kept');
DROP VIEW tp_train, tp_test;
DROP TABLE tp_all;
