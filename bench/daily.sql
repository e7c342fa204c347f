-- bench/daily.sql: the daily life of a model.
--
-- Synthetic impressions over :slots days (default 6 days of 150k rows).
--  1. Time slots.  'warm' trains on day 1, then on day 2 starting from
--     day 1's version, and so on (one mtms_train per day, both phases); after
--     each day it is tested on the next day.  'scratch' is a new model
--     trained on that day alone, tested on the same next day; 'history' (last
--     day only) a new model trained on all the days at once.
--  2. A new scene.  A model of search and feeds trained on every day but the
--     last; then video is added (mtms_add_scene), trained in phase 1 on its
--     own (scenes => '{video}', phases => 'embedding'), then every scene is
--     fine-tuned (phases => 'finetune').  The existing scenes' test AUCs
--     before, after video's phase 1 (must be identical) and after the
--     fine-tune; then the same from the first version in one call
--     (mtms_train(scenes => '{video}'), both phases); video next to
--     'history' (video in the model from the start).
--  3. Feature hygiene (min_count, ttl_slots).  :hy_slots days (default 8)
--     of :hy_rows rows (default 150k a day) from a universe of :hy_users
--     users (default 200,000: many ids seen once or twice, as in ad logs),
--     trained warm day after day three times: 'plain' (no hygiene),
--     'admit' (min_count :hy_min) and 'admit+evict' (min_count :hy_min,
--     ttl_slots :hy_ttl); per day the embedding rows and candidates each
--     version keeps, its stored bytes, the training seconds and the next
--     day's test AUC against 'plain'.  -v life=false runs only this part.
-- Run with bench/daily.sh (a throwaway cluster) or psql -f on any database.
\set ON_ERROR_STOP 1
\pset pager off
\if :{?rows}
\else
\set rows 900000
\endif
\if :{?slots}
\else
\set slots 6
\endif
\if :{?opts}
\else
\set opts '{}'
\endif
\if :{?life}
\else
\set life true
\endif
\if :{?hy_rows}
\else
\set hy_rows 1200000
\endif
\if :{?hy_slots}
\else
\set hy_slots 8
\endif
\if :{?hy_users}
\else
\set hy_users 200000
\endif
\if :{?hy_min}
\else
\set hy_min 3
\endif
\if :{?hy_ttl}
\else
\set hy_ttl 2
\endif
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

\echo The BLAS of this run (src/blas.c): its kernels, how they were chosen, sgemm GFLOP/s at the tower shapes
SELECT version AS openblas, kernels, kernels_source, round(gflops::numeric, 1) AS gflops FROM mtms_blas_info();

DROP TABLE IF EXISTS dl_all, dl_result, dl_stages CASCADE;
SELECT count(mtms_drop_model(name)) AS dropped FROM mtms_model WHERE name LIKE 'dl\_%';
CREATE TABLE dl_all AS
  SELECT * FROM mtms_synthetic_samples(:rows, 1, jsonb_build_object('slots', :slots));
SELECT format('CREATE VIEW dl_day%s AS SELECT * FROM dl_all WHERE slot = %s', d, d)
  FROM generate_series(1, :slots) d \gexec
CREATE VIEW dl_train AS SELECT * FROM dl_all WHERE slot < :slots;
CREATE VIEW dl_train_sf AS SELECT * FROM dl_train WHERE scene <> 'video';
CREATE VIEW dl_test_sf AS SELECT * FROM dl_all WHERE slot = :slots AND scene <> 'video';
CREATE TABLE dl_result (variant text, test_day int, scene text, task text, auc float8,
                        logloss float8, n bigint, positives bigint, seconds float8);
CREATE TABLE dl_stages (variant text, test_day int, phase text, scene text, task text, epochs int,
                        seconds float8);
-- Standard error of an AUC (Hanley & McNeil 1982).
CREATE FUNCTION pg_temp.auc_se(a float8, n bigint, p bigint) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
  SELECT sqrt((a * (1 - a) + (p - 1) * (a / (2 - a) - a * a)
               + (n - p - 1) * (2 * a * a / (1 + a) - a * a)) / (p::float8 * (n - p)))
$$;
-- Train a model on a relation (creating it first if fresh), evaluate it on
-- another; one line of progress.
CREATE FUNCTION pg_temp.dl_step(p_variant text, p_model text, p_train text, p_test text,
                                p_test_day int, p_fresh boolean, p_opts jsonb,
                                p_scenes text[] DEFAULT '{search,feeds,video}',
                                p_only text[] DEFAULT NULL, p_phases text DEFAULT 'all')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz;
  secs float8 := NULL;
BEGIN
  IF p_fresh THEN
    PERFORM mtms_create_model(p_model, p_scenes, '{user,ad,advertiser,hour,device,tag}', options => p_opts);
  END IF;
  IF p_train IS NOT NULL THEN
    t0 := clock_timestamp();
    INSERT INTO dl_stages
    SELECT p_variant, p_test_day, phase, scene, task, epochs, seconds
      FROM mtms_train(p_model, p_train::regclass, p_only, p_phases);
    secs := extract(epoch FROM clock_timestamp() - t0);
  END IF;
  INSERT INTO dl_result
  SELECT p_variant, p_test_day, scene, task, auc, logloss, n, positives, secs
    FROM mtms_evaluate(p_model, p_test::regclass);
  RETURN format('%-14s train %-12s test %-11s %6s s', p_variant, coalesce(p_train, '-'), p_test,
                coalesce(round(secs::numeric, 1)::text, '-'));
END $$;

\if :life
-- ---------------------------------------------------------------------------
\echo 1. Time slots: day after day, warm against scratch
SELECT count(*) AS rows_per_day FROM dl_day1;
\t on
SELECT format($q$SELECT pg_temp.dl_step('warm', 'dl_warm', 'dl_day%1$s', 'dl_day%2$s', %2$s, %3$s, %4$L)$q$,
              d, d + 1, (d = 1)::text, :'opts'),
       format($q$SELECT pg_temp.dl_step('scratch', 'dl_scratch', 'dl_day%1$s', 'dl_day%2$s', %2$s, true, %3$L),
                        mtms_drop_model('dl_scratch')$q$, d, d + 1, :'opts')
  FROM generate_series(1, :slots - 1) d \gexec
SELECT pg_temp.dl_step('history', 'dl_history', 'dl_train', 'dl_day' || :slots, :slots, true, :'opts');
\t off

\echo
\echo Test AUC on the next day: warm (trained day after day) and scratch (that day alone)
SELECT test_day AS day, scene, task,
       round(max(auc) FILTER (WHERE variant = 'warm')::numeric, 4)    AS warm,
       round(max(auc) FILTER (WHERE variant = 'scratch')::numeric, 4) AS scratch,
       round((max(auc) FILTER (WHERE variant = 'warm')
              - max(auc) FILTER (WHERE variant = 'scratch'))::numeric, 4) AS "warm-scratch",
       round(max(pg_temp.auc_se(auc, n, positives)) FILTER (WHERE variant = 'warm')::numeric, 4) AS se
  FROM dl_result WHERE variant IN ('warm', 'scratch') AND task <> 'ctcvr'
 GROUP BY 1, 2, 3
 ORDER BY 1, array_position('{search,feeds,video}'::text[], scene), 3;

\echo Mean over the test days and scenes (CTR, CVR, CTCVR)
SELECT task,
       round(avg(auc) FILTER (WHERE variant = 'warm')::numeric, 4)    AS warm,
       round(avg(auc) FILTER (WHERE variant = 'scratch')::numeric, 4) AS scratch,
       count(*) FILTER (WHERE variant = 'warm' AND auc > (SELECT s.auc FROM dl_result s
                         WHERE s.variant = 'scratch' AND (s.test_day, s.scene, s.task) = (r.test_day, r.scene, r.task)))
           || ' of ' || count(*) FILTER (WHERE variant = 'warm') AS "warm better"
  FROM dl_result r WHERE variant IN ('warm', 'scratch')
 GROUP BY task ORDER BY array_position('{ctr,cvr,ctcvr}'::text[], task);

\echo Last day: warm, scratch (last training day alone), history (every training day at once)
SELECT scene, task,
       round(max(auc) FILTER (WHERE variant = 'warm')::numeric, 4)    AS warm,
       round(max(auc) FILTER (WHERE variant = 'scratch')::numeric, 4) AS scratch,
       round(max(auc) FILTER (WHERE variant = 'history')::numeric, 4) AS history,
       round(max(pg_temp.auc_se(auc, n, positives)) FILTER (WHERE variant = 'warm')::numeric, 4) AS se
  FROM dl_result WHERE test_day = :slots AND variant IN ('warm', 'scratch', 'history')
 GROUP BY 1, 2
 ORDER BY array_position('{search,feeds,video}'::text[], scene), array_position('{ctr,cvr,ctcvr}'::text[], task);

\echo Training seconds per day (warm, scratch) and for all days at once (history)
SELECT variant, round(avg(s)::numeric, 1) AS mean_seconds, round(max(s)::numeric, 1) AS max_seconds
  FROM (SELECT DISTINCT variant, test_day, seconds AS s FROM dl_result
         WHERE variant IN ('warm', 'scratch', 'history')) x
 GROUP BY 1 ORDER BY 1 DESC;
SELECT version, active, samples_relation, samples FROM mtms_versions('dl_warm');

-- ---------------------------------------------------------------------------
\echo
\echo 2. A new scene: video added to a model of search and feeds
\t on
SELECT pg_temp.dl_step('before', 'dl_grow', 'dl_train_sf', 'dl_test_sf', :slots, true,
                       :'opts'::jsonb || '{"keep_versions": 5}', '{search,feeds}');
SELECT mtms_add_scene('dl_grow', 'video');
SELECT pg_temp.dl_step('added', 'dl_grow', NULL, 'dl_day' || :slots, :slots, false, NULL);
-- two steps: phase 1 for video alone, then the fine-tune of every scene on
-- the same rows
SELECT pg_temp.dl_step('video phase 1', 'dl_grow', 'dl_train', 'dl_day' || :slots, :slots, false, NULL,
                       p_only => '{video}', p_phases => 'embedding');
SELECT pg_temp.dl_step('fine-tune', 'dl_grow', 'dl_train', 'dl_day' || :slots, :slots, false, NULL,
                       p_phases => 'finetune');
-- one call from version 1 (rolled back to): phase 1 for video on part of
-- the rows, the fine-tune on the rows phase 1 did not see
SELECT mtms_rollback('dl_grow', 1);
SELECT pg_temp.dl_step('one call', 'dl_grow', 'dl_train', 'dl_day' || :slots, :slots, false, NULL,
                       p_only => '{video}');
\t off

\echo
\echo Test AUC on the last day.  identical: the same AUC and logloss, bit for bit, as before.
\echo fine-tune: phases => finetune after the phase 1 of video, on the same rows.  one call:
\echo scenes => video, both phases, from before (phase 1 leaves finetune_fraction to the fine-tune)
SELECT r.scene, r.task,
       round(max(r.auc) FILTER (WHERE variant = 'before')::numeric, 4)        AS before,
       round(max(r.auc) FILTER (WHERE variant = 'added')::numeric, 4)         AS "+video",
       round(max(r.auc) FILTER (WHERE variant = 'video phase 1')::numeric, 4) AS "video p1",
       bool_and(r.auc = b.auc AND r.logloss = b.logloss)
           FILTER (WHERE variant IN ('added', 'video phase 1'))               AS identical,
       round(max(r.auc) FILTER (WHERE variant = 'fine-tune')::numeric, 4)     AS "fine-tune",
       round(max(r.auc) FILTER (WHERE variant = 'one call')::numeric, 4)      AS "one call",
       round(max(r.auc) FILTER (WHERE variant = 'history')::numeric, 4)       AS history,
       round(max(pg_temp.auc_se(r.auc, r.n, r.positives)) FILTER (WHERE variant = 'one call')::numeric, 4) AS se
  FROM dl_result r
  LEFT JOIN (SELECT scene, task, auc, logloss FROM dl_result WHERE variant = 'before') b
         ON (b.scene, b.task) = (r.scene, r.task)
 WHERE r.test_day = :slots AND variant IN ('before', 'added', 'video phase 1', 'fine-tune', 'one call', 'history')
 GROUP BY 1, 2
 ORDER BY array_position('{search,feeds,video}'::text[], r.scene), array_position('{ctr,cvr,ctcvr}'::text[], r.task);
\echo Validation criterion per scene in each version (sum of its validation losses; phase 1 has no ctcvr)
SELECT v.version, v.samples_relation, s.key AS scene,
       string_agg(t.key, '+' ORDER BY array_position('{ctr,cvr,ctcvr}'::text[], t.key)) AS tasks,
       round(sum((t.value->>'valid_loss')::numeric), 5) AS valid_loss_sum
  FROM mtms_version v JOIN mtms_model m USING (model_id), jsonb_each(v.metrics) s, jsonb_each(s.value) t
 WHERE m.name = 'dl_grow'
 GROUP BY 1, 2, 3
 ORDER BY 1, array_position('{search,feeds,video}'::text[], s.key);
\echo Training seconds
SELECT variant, round(max(seconds)::numeric, 1) AS seconds FROM dl_result
 WHERE variant IN ('before', 'video phase 1', 'fine-tune', 'one call') GROUP BY 1 ORDER BY min(seconds) DESC;

\echo
\echo Epochs (the most any unit ran) and seconds per stage, summed over the warm days
SELECT phase, sum(epochs) AS epochs, round(sum(seconds)::numeric, 1) AS seconds
  FROM (SELECT test_day, phase, max(epochs) AS epochs, max(seconds) AS seconds
          FROM dl_stages WHERE variant = 'warm' GROUP BY 1, 2) d
 GROUP BY phase ORDER BY min(CASE phase WHEN 'embedding' THEN 1 WHEN 'ctcvr' THEN 2 ELSE 3 END);
\endif

-- ---------------------------------------------------------------------------
\echo
\echo 3. Feature hygiene: min_count (admission) and ttl_slots (eviction), day after day
DROP TABLE IF EXISTS dl_hy_all, dl_hy_result CASCADE;
SELECT count(mtms_drop_model(name)) AS dropped FROM mtms_model WHERE name LIKE 'dl\_hy\_%';
CREATE TABLE dl_hy_all AS
  SELECT * FROM mtms_synthetic_samples(:hy_rows, 2, jsonb_build_object('slots', :hy_slots, 'users', :hy_users));
SELECT format('CREATE VIEW dl_hy_day%s AS SELECT * FROM dl_hy_all WHERE slot = %s', d, d)
  FROM generate_series(1, :hy_slots) d \gexec
CREATE TABLE dl_hy_result (variant text, day int, version int, emb_rows bigint, candidates bigint,
                           stored_bytes bigint, seconds float8, scene text, task text, auc float8,
                           n bigint, positives bigint);
-- One warm day of a variant: train on day d, count what the version keeps,
-- evaluate on day d + 1.
CREATE FUNCTION pg_temp.hy_day(p_variant text, p_opts jsonb, d int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  m text := 'dl_hy_' || replace(p_variant, '+', '_');
  t0 timestamptz;
  secs float8;
  v int;
  er bigint;
  cr bigint;
  sb bigint;
BEGIN
  IF d = 1 THEN
    PERFORM mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                              options => p_opts);
  END IF;
  t0 := clock_timestamp();
  PERFORM count(*) FROM mtms_train(m, format('dl_hy_day%s', d)::regclass);
  secs := extract(epoch FROM clock_timestamp() - t0);
  SELECT active_version INTO v FROM mtms_model WHERE name = m;
  SELECT count(*), coalesce(sum(pg_column_size(e.*)), 0) INTO er, sb
    FROM mtms_embedding e JOIN mtms_model USING (model_id) WHERE name = m AND e.version = v;
  SELECT count(*), sb + coalesce(sum(pg_column_size(c.*)), 0) INTO cr, sb
    FROM mtms_feature_count c JOIN mtms_model USING (model_id) WHERE name = m AND c.version = v;
  INSERT INTO dl_hy_result
  SELECT p_variant, d, v, er, cr, sb, secs, scene, task, auc, n, positives
    FROM mtms_evaluate(m, format('dl_hy_day%s', d + 1)::regclass);
  RETURN format('%-12s day %s: %8s rows, %8s candidates, %6s s', p_variant, d, er, cr,
                round(secs::numeric, 1));
END $$;
SELECT (SELECT count(*) FROM dl_hy_day1) AS rows_per_day,
       count(DISTINCT f) AS users_on_day1,
       count(*) FILTER (WHERE n = 1) AS users_seen_once
  FROM (SELECT f, count(*) AS n FROM dl_hy_day1, unnest(features) f
         WHERE f LIKE 'user=%' GROUP BY f) u;
\t on
SELECT format($q$SELECT pg_temp.hy_day(%L, %L, %s)$q$, v, o, d)
  FROM generate_series(1, :hy_slots - 1) d,
       (VALUES (1, 'plain', :'opts'::jsonb),
               (2, 'admit', :'opts'::jsonb || jsonb_build_object('min_count', :hy_min)),
               (3, 'admit+evict', :'opts'::jsonb || jsonb_build_object('min_count', :hy_min,
                                                                      'ttl_slots', :hy_ttl))) AS x(k, v, o)
 ORDER BY d, k \gexec
\t off

\echo
\echo Per day: embedding rows and candidates the version keeps, its stored MB, training seconds,
\echo mean next-day test AUC over scenes and tasks (CTR, CVR, CTCVR), and its difference to plain
WITH d AS (
  SELECT variant, day, max(emb_rows) AS emb_rows, max(candidates) AS candidates,
         max(stored_bytes) AS bytes, max(seconds) AS seconds, avg(auc) AS auc
    FROM dl_hy_result GROUP BY 1, 2)
SELECT d.day, d.variant, d.emb_rows, d.candidates, round(d.bytes / 1e6, 1) AS stored_mb,
       round(d.seconds::numeric, 1) AS seconds, round(d.auc::numeric, 4) AS mean_auc,
       round((d.auc - p.auc)::numeric, 4) AS "auc-plain",
       round(100.0 * d.emb_rows / p.emb_rows, 1) AS "rows % of plain"
  FROM d JOIN d p ON p.day = d.day AND p.variant = 'plain'
 ORDER BY d.day, array_position('{plain,admit,admit+evict}'::text[], d.variant);

\echo Over the days: mean rows, seconds, and next-day AUC per task (CTR, CVR over the clicked, CTCVR)
SELECT variant, round(avg(emb_rows)) AS mean_rows, max(emb_rows) AS last_rows,
       round(avg(seconds)::numeric, 2) AS mean_seconds,
       round(avg(auc) FILTER (WHERE task = 'ctr')::numeric, 4) AS ctr,
       round(avg(auc) FILTER (WHERE task = 'cvr')::numeric, 4) AS cvr,
       round(avg(auc) FILTER (WHERE task = 'ctcvr')::numeric, 4) AS ctcvr
  FROM dl_hy_result
 GROUP BY 1 ORDER BY array_position('{plain,admit,admit+evict}'::text[], variant);

\echo Next-day AUC per scene and task, mean over the days, against plain (with its standard error)
SELECT r.scene, r.task,
       round(avg(r.auc) FILTER (WHERE r.variant = 'plain')::numeric, 4) AS plain,
       round(avg(r.auc) FILTER (WHERE r.variant = 'admit')::numeric, 4) AS admit,
       round(avg(r.auc) FILTER (WHERE r.variant = 'admit+evict')::numeric, 4) AS "admit+evict",
       round(avg(pg_temp.auc_se(r.auc, r.n, r.positives)) FILTER (WHERE r.variant = 'plain')::numeric, 4) AS se
  FROM dl_hy_result r
 GROUP BY 1, 2
 ORDER BY array_position('{search,feeds,video}'::text[], r.scene), array_position('{ctr,cvr,ctcvr}'::text[], r.task);

\echo Cost of one more day (day :hy_slots) per variant, each in a new session and one process
\echo (mtms.train_workers = 0): CPU seconds of the backend, and its peak resident memory
\echo (VmHWM) less the shared memory it mapped (RssShmem), from /proc: a superuser on the same machine
CREATE TABLE IF NOT EXISTS dl_hy_cost (variant text, emb_rows bigint, candidates bigint, cpu_seconds float8,
                                       wall_seconds float8, vm_hwm_mb float8, rss_shmem_mb float8);
TRUNCATE dl_hy_cost;
CREATE OR REPLACE VIEW dl_hy_proc AS
SELECT (SELECT sum(x::float8) / 100 FROM unnest((string_to_array(
            split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' '))[12:13]) AS x) AS cpu_seconds,
       (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::float8 / 1024 AS vm_hwm_mb,
       (regexp_match(pg_read_file('/proc/self/status'), 'RssShmem:\s+(\d+)'))[1]::float8 / 1024 AS rss_shmem_mb;
\set hy_variant plain
\ir daily_cost.sql
\set hy_variant admit
\ir daily_cost.sql
\set hy_variant admit+evict
\ir daily_cost.sql
SELECT variant, emb_rows, candidates, round(cpu_seconds::numeric, 2) AS cpu_seconds,
       round(wall_seconds::numeric, 2) AS wall_seconds, round(vm_hwm_mb::numeric) AS vm_hwm_mb,
       round((vm_hwm_mb - rss_shmem_mb)::numeric) AS private_peak_mb
  FROM dl_hy_cost ORDER BY array_position('{plain,admit,admit+evict}'::text[], variant);
