-- test/sanitize_workload.sql: a heavier training run for test/sanitize.sh,
-- executed in the AddressSanitizer + UBSan cluster, once serially and once
-- through forced parallel plans:
--
--   psql -v parallel=off -f test/sanitize_workload.sql
--   psql -v parallel=on  -f test/sanitize_workload.sql
--
-- It exercises what the pg_regress tests only touch lightly: both phases on
-- 300,000 rows, a warm-started fine-tune on its own (a heap corruption was
-- once seen there), phase 1 again for one scene, evaluation and scoring.
-- Its output is not compared with anything: it passes when every statement
-- succeeds, and the sanitizers (not this file) judge the memory accesses.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset pager off

SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS mtms;
DROP TABLE IF EXISTS sw_samples CASCADE;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM mtms_model WHERE name = 'sw') THEN
        PERFORM mtms_drop_model('sw');
    END IF;
END $$;

\if :parallel
\echo '== sanitize workload: forced parallel plans (2 workers per gather)'
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET min_parallel_index_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
-- every pass scans (kept rows would replay in the leader alone)
SET mtms.keep_training_rows = off;
\else
\echo '== sanitize workload: serial plans'
SET max_parallel_workers_per_gather = 0;
\endif

\echo '-- 300000 synthetic impressions over 3 slots'
CREATE TABLE sw_samples AS
    SELECT * FROM mtms_synthetic_samples(300000, 1, '{"slots": 3}');
ANALYZE sw_samples;
CREATE VIEW sw_test AS SELECT * FROM sw_samples WHERE slot = 3;
SELECT scene, count(*) AS n, sum(click::int) AS clicks,
       sum(conversion::int) AS conversions
  FROM sw_samples GROUP BY scene ORDER BY scene;

SELECT mtms_create_model('sw', '{search,feeds,video}',
                         '{user,ad,advertiser,hour,device,tag}') \g /dev/null

\echo '-- plan of a training pass (Parallel Seq Scan expected in parallel mode)'
EXPLAIN (COSTS OFF)
SELECT mtms_embedding_update('token', scene::text, features, click, conversion)
  FROM sw_samples;

\echo '-- mtms_train phases => all'
SELECT phase, scene, task, epochs, samples,
       round(train_loss::numeric, 4) AS train_loss,
       round(valid_loss::numeric, 4) AS valid_loss,
       round(valid_auc::numeric, 4) AS valid_auc
  FROM mtms_train('sw', 'sw_samples', phases => 'all');

\echo '-- mtms_train phases => finetune (warm start from the previous version)'
SELECT phase, scene, task, epochs, samples,
       round(train_loss::numeric, 4) AS train_loss,
       round(valid_loss::numeric, 4) AS valid_loss,
       round(valid_auc::numeric, 4) AS valid_auc
  FROM mtms_train('sw', 'sw_samples', phases => 'finetune');

\echo '-- mtms_train phases => embedding, scenes => {video}'
SELECT phase, scene, task, epochs, samples,
       round(train_loss::numeric, 4) AS train_loss,
       round(valid_loss::numeric, 4) AS valid_loss,
       round(valid_auc::numeric, 4) AS valid_auc
  FROM mtms_train('sw', 'sw_samples', scenes => '{video}', phases => 'embedding');

\echo '-- mtms_train phases => finetune again, after the video-only phase 1'
SELECT count(*) AS finetune_rows
  FROM mtms_train('sw', 'sw_samples', phases => 'finetune');

SELECT version, active, samples_relation, samples FROM mtms_versions('sw');

\echo '-- mtms_evaluate on slot 3'
SELECT scene, task, n, positives,
       round(auc::numeric, 3) AS auc,
       round(logloss::numeric, 3) AS logloss
  FROM mtms_evaluate('sw', 'sw_test') ORDER BY scene, task;

\echo '-- mtms_score: single calls, an unseen value, and a scan'
SELECT round(mtms_score('sw', 'search', 'ctr',
                        '{user=1,ad=1,advertiser=1,hour=1,device=1,tag=1,tag=2}')::numeric, 6) AS ctr,
       round(mtms_score('sw', 'feeds', 'cvr',
                        '{user=2,ad=3,advertiser=4,hour=5,device=0}')::numeric, 6) AS cvr,
       round(mtms_score('sw', 'video', 'ctcvr',
                        '{user=999999999,ad=999999999,tag=1,tag=1,tag=1}')::numeric, 8) AS ctcvr,
       round(mtms_score('sw', 'search', 'ctr', '{}')::numeric, 6) AS no_features;
SELECT scene,
       round(avg(mtms_score('sw', scene, 'ctr', features))::numeric, 4) AS mean_ctr,
       round(avg(mtms_score('sw', scene, 'ctcvr', features))::numeric, 6) AS mean_ctcvr
  FROM sw_test GROUP BY scene ORDER BY scene;

\echo '-- rollback to the oldest kept version, score again'
SELECT mtms_rollback('sw', min(version)) FROM mtms_versions('sw') \g /dev/null
SELECT count(mtms_score('sw', scene, 'cvr', features)) AS scored
  FROM sw_test WHERE click;

\echo '-- growth: a new scene and a new field, phase 1 for the new scene, fine-tune'
SELECT mtms_add_scene('sw', 'shop') \g /dev/null
SELECT mtms_add_field('sw', 'region') \g /dev/null
CREATE TABLE sw_grown AS
    SELECT slot, scene,
           features || ('region=' || (abs(hashtext(features::text)) % 7))::text AS features,
           click, conversion
      FROM mtms_synthetic_samples(60000, 2,
               '{"scenes": ["search", "feeds", "video", "shop"],
                 "scene_weights": [0.5, 0.3, 0.1, 0.1]}');
ANALYZE sw_grown;
SELECT phase, scene, task, epochs, samples
  FROM mtms_train('sw', 'sw_grown', scenes => '{shop}', phases => 'embedding');
SELECT round(mtms_score('sw', 'shop', 'ctcvr', '{user=1,ad=1,region=3}')::numeric, 8) AS shop_before_finetune;
SELECT phase, scene, task, epochs, samples
  FROM mtms_train('sw', 'sw_grown', phases => 'finetune');
SELECT scene, task, n, round(auc::numeric, 3) AS auc
  FROM mtms_evaluate('sw', 'sw_grown') ORDER BY scene, task;
SELECT mtms_drop_model('sw') \g /dev/null

\echo '-- odd shapes: dimension 1, one-unit tower, tiny batches and buffers, capped tables'
CREATE VIEW sw_small AS SELECT * FROM sw_samples WHERE slot = 1 LIMIT 20000;
SELECT mtms_create_model('sw_tiny', '{search,feeds,video}',
                         '{user,ad,advertiser,hour,device,tag}', 1, '{1}',
                         '{"batch_size": 7, "shuffle_buffer": 5, "max_epochs": 2,
                           "evals_per_epoch": 3, "finetune_fraction": 0,
                           "max_features": 50, "keep_versions": 1}') \g /dev/null
SELECT count(*) AS rows FROM mtms_train('sw_tiny', 'sw_small');
SELECT count(*) AS rows FROM mtms_train('sw_tiny', 'sw_small', phases => 'finetune');
SELECT count(*) AS rows FROM mtms_evaluate('sw_tiny', 'sw_small');
SELECT mtms_drop_model('sw_tiny') \g /dev/null
SELECT mtms_create_model('sw_deep', '{search,feeds,video}',
                         '{user,ad,advertiser,hour,device,tag}', 3, '{17,1,5,3,2,9,1,4}',
                         '{"batch_size": 5000, "shuffle_buffer": 3, "max_epochs": 2,
                           "evals_per_epoch": 100, "validation_fraction": 0.3}') \g /dev/null
SELECT count(*) AS rows FROM mtms_train('sw_deep', 'sw_small');
SELECT count(*) AS rows FROM mtms_train('sw_deep', 'sw_small', phases => 'finetune');
SELECT count(*) AS rows FROM mtms_evaluate('sw_deep', 'sw_small');
SELECT mtms_drop_model('sw_deep') \g /dev/null

DROP TABLE sw_samples, sw_grown CASCADE;
\echo '== sanitize workload done'
