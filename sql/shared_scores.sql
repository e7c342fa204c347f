-- One model for all sessions: with mtms preloaded, sessions score from one
-- copy of a version in shared memory (mtms.shared_models, on by default);
-- the scores equal those of a session's own copy (off) bit for bit: one
-- row at a time, in parallel workers, and mtms_evaluate's figures.
-- Without preloading both ways are the session's own copy.
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
CREATE TABLE shm_s AS SELECT * FROM mtms_synthetic_samples(4000, 3);
CREATE TABLE shm_rows AS
SELECT row_number() OVER () AS i, scene, features FROM shm_s;
ANALYZE shm_rows;
SELECT mtms_create_model('shm_m', ARRAY['search','feeds','video'],
       ARRAY['user','ad','advertiser','hour','device','tag'], 4, ARRAY[8],
       jsonb_build_object('max_epochs', 1, 'batch_size', 64, 'shuffle_buffer', 1024));
SELECT count(*) > 0 AS trained FROM mtms_train('shm_m', 'shm_s');

-- a session's own copy
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SET mtms.shared_models = off;
CREATE TABLE shm_own AS
SELECT i, t.task, mtms_score('shm_m', scene, t.task, features) AS p
  FROM shm_rows, (VALUES ('ctr'), ('cvr'), ('ctcvr')) t(task);
CREATE TABLE shm_own_eval AS SELECT * FROM mtms_evaluate('shm_m', 'shm_s');

-- from shared memory (a new session: nothing cached)
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
CREATE TABLE shm_shared AS
SELECT i, t.task, mtms_score('shm_m', scene, t.task, features) AS p
  FROM shm_rows, (VALUES ('ctr'), ('cvr'), ('ctcvr')) t(task);
SELECT count(*) AS scores, count(*) FILTER (WHERE a.p = b.p) AS identical
  FROM shm_own a JOIN shm_shared b USING (i, task);
SELECT current_setting('shared_preload_libraries') !~ 'mtms'
       OR EXISTS (SELECT 1 FROM mtms_shared_models() s JOIN mtms_model m USING (model_id)
                   WHERE m.name = 'shm_m' AND s.version = m.active_version
                     AND s.state = 'ready' AND s.bytes > 0 AND s.projection_bytes > 0)
       AS shared_when_preloaded;
-- the same figures from mtms_evaluate (through the shared projections)
SELECT count(*) AS figures,
       count(*) FILTER (WHERE e.n = o.n AND e.auc IS NOT DISTINCT FROM o.auc
                          AND e.logloss = o.logloss AND e.mae = o.mae
                          AND e.calibration IS NOT DISTINCT FROM o.calibration) AS identical
  FROM shm_own_eval o JOIN mtms_evaluate('shm_m', 'shm_s') e USING (scene, task);

-- a parallel plan (the scan in workers, the scores in the leader: mtms_score
-- is PARALLEL RESTRICTED) gives the same scores
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
CREATE TABLE shm_par AS
SELECT i, mtms_score('shm_m', scene, 'ctcvr', features) AS p FROM shm_rows;
SELECT count(*) AS scores, count(*) FILTER (WHERE a.p = b.p) AS identical
  FROM shm_own a JOIN shm_par b USING (i) WHERE a.task = 'ctcvr';

-- a new version: the next statement scores it, from shared memory, and the
-- old version is no longer there once nobody pins it
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SELECT count(*) > 0 AS trained FROM mtms_train('shm_m', 'shm_s', phases => 'finetune');
SELECT count(*) FILTER (WHERE a.p <> mtms_score('shm_m', r.scene, 'ctcvr', r.features))
         > 0.5 * count(*) AS new_scores
  FROM shm_own a JOIN shm_rows r USING (i) WHERE a.task = 'ctcvr';
SELECT current_setting('shared_preload_libraries') !~ 'mtms'
       OR (SELECT array_agg(s.version) FROM mtms_shared_models() s JOIN mtms_model m USING (model_id)
            WHERE m.name = 'shm_m') = ARRAY[2]
       AS only_the_new_version;

-- which model a row is: shown to its owner's roles (and pg_read_all_stats)
SELECT current_setting('shared_preload_libraries') !~ 'mtms' AS not_preloaded \gset
CREATE ROLE shm_other;
SET ROLE shm_other;
SELECT :'not_preloaded'::boolean
       OR (SELECT count(*) > 0 AND bool_and(model_id IS NULL AND version IS NULL)
             FROM mtms_shared_models()) AS hidden_from_another_role;
RESET ROLE;
DROP ROLE shm_other;

SELECT mtms_drop_model('shm_m');
DROP TABLE shm_s, shm_rows, shm_own, shm_own_eval, shm_shared, shm_par;
