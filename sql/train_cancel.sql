-- A cancelled mtms_train (statement_timeout) leaves the previous version
-- active and its scores unchanged, writes nothing, leaves no snapshot file
-- behind, releases the model, and the next training works.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- 100k rows and up to 30 epochs per stage: many seconds of training, far
-- longer than the timeouts below on any machine
CREATE TABLE tc_big AS SELECT * FROM mtms_synthetic_samples(100000, 2);
CREATE TABLE tc_small AS SELECT * FROM tc_big LIMIT 3000;
SELECT mtms_create_model('tc_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 30, "patience": 100, "batch_size": 64, "shuffle_buffer": 1024,
         "keep_versions": 5}');
SELECT count(*) AS rows FROM mtms_train('tc_m', 'tc_small');

CREATE TEMP TABLE tc_before AS
SELECT scene, features, mtms_score('tc_m', scene, 'ctr', features) AS ctr,
       mtms_score('tc_m', scene, 'cvr', features) AS cvr
  FROM tc_small LIMIT 50;
CREATE FUNCTION pg_temp.tc_state() RETURNS TABLE(active_version int, versions text,
       embeddings_v1 bigint, other_embeddings bigint, other_towers bigint,
       scores_unchanged boolean, snapshot_files bigint)
LANGUAGE sql AS $$
SELECT m.active_version,
       (SELECT string_agg(version || CASE WHEN active THEN '*' ELSE '' END, ',' ORDER BY version)
          FROM mtms_versions('tc_m')),
       (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id AND e.version = 1),
       (SELECT count(*) FROM mtms_embedding e WHERE e.model_id = m.model_id AND e.version <> 1),
       (SELECT count(*) FROM mtms_tower t WHERE t.model_id = m.model_id AND t.version <> 1),
       (SELECT bool_and(mtms_score('tc_m', b.scene, 'ctr', b.features) = b.ctr AND
                        mtms_score('tc_m', b.scene, 'cvr', b.features) = b.cvr) FROM tc_before b),
       (SELECT count(*) FROM pg_ls_tmpdir()
         WHERE name LIKE 'pgsql_tmp_mtms.' || pg_backend_pid() || '.%')
  FROM mtms_model m WHERE m.name = 'tc_m'
$$;
SELECT active_version, versions, embeddings_v1 > 0 AS has_v1, other_embeddings,
       other_towers, scores_unchanged, snapshot_files
  FROM pg_temp.tc_state();

-- cancelled early, in a serial plan
SET statement_timeout = '300ms';
SELECT count(*) FROM mtms_train('tc_m', 'tc_big');
RESET statement_timeout;
SELECT active_version, versions, embeddings_v1 > 0 AS has_v1, other_embeddings,
       other_towers, scores_unchanged, snapshot_files
  FROM pg_temp.tc_state();

-- cancelled later, when the units train on the rows the first pass kept
-- (mtms.keep_training_rows; in the leader alone, then with workers)
SET statement_timeout = '1500ms';
SET mtms.train_workers = 0;
SELECT count(*) FROM mtms_train('tc_m', 'tc_big');
SET mtms.train_workers = 2;
SELECT count(*) FROM mtms_train('tc_m', 'tc_big');
RESET mtms.train_workers;
RESET statement_timeout;
SELECT active_version, versions, embeddings_v1 > 0 AS has_v1, other_embeddings,
       other_towers, scores_unchanged, snapshot_files
  FROM pg_temp.tc_state();

-- cancelled later, in a parallel plan (workers read a snapshot file; every
-- pass scans when no training rows are kept)
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET mtms.keep_training_rows = off;
SET statement_timeout = '1500ms';
SELECT count(*) FROM mtms_train('tc_m', 'tc_big');
RESET statement_timeout;
RESET mtms.keep_training_rows;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
SELECT active_version, versions, embeddings_v1 > 0 AS has_v1, other_embeddings,
       other_towers, scores_unchanged, snapshot_files
  FROM pg_temp.tc_state();

-- inside a transaction block, with a savepoint: the same
BEGIN;
SAVEPOINT s;
SET LOCAL statement_timeout = '300ms';
SELECT count(*) FROM mtms_train('tc_m', 'tc_big');
ROLLBACK TO SAVEPOINT s;
SELECT active_version, versions, other_embeddings, scores_unchanged
  FROM pg_temp.tc_state();
COMMIT;

-- the error is query_canceled (57014)
SET statement_timeout = '300ms';
DO $$
BEGIN
  PERFORM count(*) FROM mtms_train('tc_m', 'tc_big');
  RAISE WARNING 'not cancelled';
EXCEPTION WHEN query_canceled THEN
  RAISE WARNING 'cancelled: %', SQLSTATE;
END $$;
RESET statement_timeout;
SELECT active_version, versions, other_embeddings, scores_unchanged
  FROM pg_temp.tc_state();

-- the model is not left locked: the next training commits version 2
SET statement_timeout = '60s';
SELECT count(*) AS rows FROM mtms_train('tc_m', 'tc_small');
RESET statement_timeout;
SELECT active_version, versions, embeddings_v1 > 0 AS has_v1, other_embeddings > 0 AS has_v2,
       scores_unchanged, snapshot_files
  FROM pg_temp.tc_state();

SELECT mtms_drop_model('tc_m');
DROP TABLE tc_big, tc_small;
