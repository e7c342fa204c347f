-- bench/parallel.sql: the same MTMS training serial and with 2 parallel
-- workers (each epoch is one aggregate query; workers train on their share
-- of the rows and the partial models are averaged), side by side: wall
-- time, speed-up and test AUC difference.
\set ON_ERROR_STOP 1
\pset pager off
\if :{?rows}
\else
\set rows 800000
\endif
SET client_min_messages = warning;

DROP TABLE IF EXISTS pb_all, pb_result CASCADE;
CREATE TABLE pb_all AS
  SELECT * FROM mtms_synthetic_samples(:rows, 1, '{"slots": 5}');
CREATE VIEW pb_train AS SELECT * FROM pb_all WHERE slot < 5;
CREATE VIEW pb_test AS SELECT * FROM pb_all WHERE slot = 5;
CREATE TABLE pb_result (workers int, scene text, task text, auc float8, seconds float8, n bigint, positives bigint);
-- Standard error of an AUC (Hanley & McNeil 1982).
CREATE FUNCTION pg_temp.auc_se(a float8, n bigint, p bigint) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
  SELECT sqrt((a * (1 - a) + (p - 1) * (a / (2 - a) - a * a)
               + (n - p - 1) * (2 * a * a / (1 + a) - a * a)) / (p::float8 * (n - p)))
$$;

SELECT count(mtms_drop_model(name)) AS dropped FROM mtms_model WHERE name IN ('pb_0', 'pb_2');
SELECT mtms_create_model('pb_0', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}');
SELECT mtms_create_model('pb_2', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}');

-- Both runs scan the samples on every pass: with the training rows kept
-- (mtms.keep_training_rows, the default) the passes after the first run in
-- one process whatever max_parallel_workers_per_gather says, and the two
-- runs would be the same training.
SET mtms.keep_training_rows = off;

\echo serial (max_parallel_workers_per_gather = 0)
SET max_parallel_workers_per_gather = 0;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM mtms_train('pb_0', 'pb_train');
SELECT extract(epoch FROM clock_timestamp() - :'t0') AS s0 \gset
INSERT INTO pb_result SELECT 0, scene, task, auc, :s0, n, positives FROM mtms_evaluate('pb_0', 'pb_test');

\echo parallel (2 workers)
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT mtms_embedding_update('x', scene, features, click, conversion) FROM pb_train;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM mtms_train('pb_2', 'pb_train');
SELECT extract(epoch FROM clock_timestamp() - :'t0') AS s2 \gset
INSERT INTO pb_result SELECT 2, scene, task, auc, :s2, n, positives FROM mtms_evaluate('pb_2', 'pb_test');

\echo
\echo Test AUC, serial against 2 workers
SELECT scene, task,
       round(max(auc) FILTER (WHERE workers = 0)::numeric, 4) AS serial,
       round(max(auc) FILTER (WHERE workers = 2)::numeric, 4) AS workers_2,
       round((max(auc) FILTER (WHERE workers = 2) - max(auc) FILTER (WHERE workers = 0))::numeric, 4) AS diff,
       round(max(pg_temp.auc_se(auc, n, positives)) FILTER (WHERE workers = 0)::numeric, 4) AS se
  FROM pb_result GROUP BY scene, task ORDER BY scene, task;
SELECT round(max(seconds) FILTER (WHERE workers = 0)::numeric, 1) AS serial_s,
       round(max(seconds) FILTER (WHERE workers = 2)::numeric, 1) AS workers_2_s,
       round((max(seconds) FILTER (WHERE workers = 0) / max(seconds) FILTER (WHERE workers = 2))::numeric, 2) AS speedup
  FROM pb_result;
