-- The first-layer projection cache of mtms_score and mtms_evaluate: the
-- cached scores equal the direct computation (mtms_score_reference) for
-- every row, scene and task, with phase-1 towers and fine-tune towers, for
-- unseen, repeated and missing features, after a new version, a rollback
-- and a new field (the cache never serves another version's projections),
-- and when the cap is so small that the cache fills.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

CREATE TABLE sp_s AS SELECT * FROM mtms_synthetic_samples(5000, 1);
-- every row, plus rows with unseen values, repeated features and none
CREATE TABLE sp_q AS
SELECT row_number() OVER (ORDER BY scene, features::text) AS id, scene, features
  FROM (SELECT scene, features FROM sp_s
        UNION ALL SELECT 'search', '{user=999999999,ad=888888888,tag=77777777}'
        UNION ALL SELECT 'feeds', '{tag=5,tag=5,tag=5,user=1,user=1}'
        UNION ALL SELECT 'video', '{}') s;
CREATE TABLE sp_t (task text);
INSERT INTO sp_t VALUES ('ctr'), ('cvr'), ('ctcvr');

SELECT mtms_create_model('sp_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{64,8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');

-- cached against direct, per task: rows, largest difference, and that the
-- scores are not all alike (a test of equality must be able to fail)
CREATE FUNCTION sp_check(OUT task text, OUT n bigint, OUT close boolean, OUT varied boolean)
RETURNS SETOF record LANGUAGE sql AS $$
  SELECT t.task, count(*),
         max(abs(mtms_score('sp_m', q.scene, t.task, q.features) -
                 mtms_score_reference('sp_m', q.scene, t.task, q.features))) < 1e-5,
         count(DISTINCT round(mtms_score('sp_m', q.scene, t.task, q.features)::numeric, 6)) > 100
    FROM sp_q q, sp_t t GROUP BY 1 ORDER BY 1 $$;

-- ---------------------------------------------------------------------------
-- Version 1: phase 1 only (every pair scores with its phase-1 tower).
SELECT count(*) AS rows FROM mtms_train('sp_m', 'sp_s', phases => 'embedding');
SELECT * FROM sp_check();
SELECT keys > 3000 AS keys_cached, zero_keys > 0 AS unseen_cached, bytes > 0 AS has_bytes,
       bytes <= cap_bytes AS within_cap, uncached = 0 AS all_kept
  FROM mtms_score_cache_stats('sp_m');
-- a warm cache gives the same scores again
SELECT max(abs(mtms_score('sp_m', scene, 'ctr', features) -
               mtms_score_reference('sp_m', scene, 'ctr', features))) < 1e-5 AS warm_close
  FROM sp_q;
-- the order of the features does not matter, exactly (the sum runs in a
-- canonical order), also with several values of one field
SELECT count(*) FILTER (WHERE mtms_score('sp_m', scene, 'ctr', features) <>
                              mtms_score('sp_m', scene, 'ctr', array(SELECT f FROM unnest(features) f
                                                                     ORDER BY f DESC))) AS order_changes,
       count(*) FILTER (WHERE mtms_score('sp_m', scene, 'ctr', features) <>
                              mtms_score('sp_m', scene, 'ctr', features || features)) > 4000 AS repeats_count
  FROM (SELECT scene, features || '{tag=1,tag=2,tag=3}'::text[] AS features FROM sp_q) q;
CREATE TABLE sp_v1 AS
SELECT q.id, t.task, mtms_score('sp_m', q.scene, t.task, q.features) AS p FROM sp_q q, sp_t t;

-- ---------------------------------------------------------------------------
-- Version 2: the fine-tune (joined towers), scored with a cap so small
-- (mtms.score_cache = 1 MB) that the cache fills; the misses are computed
-- without being kept, the scores stay right.  Without mtms.score_cache the
-- cap is a sixteenth of mtms.max_memory.
SELECT count(*) AS rows FROM mtms_train('sp_m', 'sp_s', phases => 'finetune');
SET mtms.max_memory = 32;
SELECT cap_bytes = 2 * 1024 * 1024 AS cap_from_max_memory FROM mtms_score_cache_stats('sp_m');
RESET mtms.max_memory;
SET mtms.score_cache = 1;
SELECT * FROM sp_check();
SELECT keys > 0 AS keys_cached, bytes <= cap_bytes AS within_cap, cap_bytes = 1024 * 1024 AS cap_1mb,
       uncached > 0 AS cap_reached
  FROM mtms_score_cache_stats('sp_m');
RESET mtms.score_cache;
-- the new version's scores, not version 1's
SELECT count(*) FILTER (WHERE abs(v.p - mtms_score('sp_m', q.scene, v.task, q.features)) > 1e-4)
         > 0.5 * count(*) AS changed
  FROM sp_v1 v JOIN sp_q q USING (id);

-- mtms_evaluate scores through the cache: its figures equal those computed
-- in SQL from the direct scores
SELECT e.scene, e.task, e.n = r.n AS n_ok, coalesce(abs(e.auc - r.auc) < 1e-4, e.auc IS NULL AND r.auc IS NULL) AS auc_ok,
       abs(e.logloss - r.logloss) < 1e-6 AS logloss_ok
  FROM mtms_evaluate('sp_m', 'sp_s') e
  JOIN (SELECT scene, 'ctr' AS task, count(*) AS n,
               mtms_auc(mtms_score_reference('sp_m', scene, 'ctr', features), click) AS auc,
               avg(-ln(CASE WHEN click THEN p ELSE 1 - p END)) AS logloss
          FROM (SELECT *, least(greatest(mtms_score_reference('sp_m', scene, 'ctr', features), 1e-7),
                                1 - 1e-7) AS p FROM sp_s) s
         GROUP BY scene
        UNION ALL
        SELECT scene, 'ctcvr', count(*),
               mtms_auc(mtms_score_reference('sp_m', scene, 'ctcvr', features), click AND conversion),
               avg(-ln(CASE WHEN click AND conversion THEN p ELSE 1 - p END))
          FROM (SELECT *, least(greatest(mtms_score_reference('sp_m', scene, 'ctcvr', features), 1e-7),
                                1 - 1e-7) AS p FROM sp_s) s
         GROUP BY scene) r USING (scene, task)
 ORDER BY 1, 2;

-- ---------------------------------------------------------------------------
-- Rollback to version 1: version 1's scores again, exactly as before.
SELECT mtms_rollback('sp_m', 1);
SELECT * FROM sp_check();
SELECT max(abs(v.p - mtms_score('sp_m', q.scene, v.task, q.features))) < 1e-12 AS same_as_before
  FROM sp_v1 v JOIN sp_q q USING (id);

-- Back to version 2, and a new field: towers read their old columns only
-- (the new field's features add nothing), the cache follows the new shape.
SELECT mtms_rollback('sp_m', 2);
SELECT mtms_add_field('sp_m', 'city');
UPDATE sp_q SET features = features || ARRAY['city=' || (id % 50)] WHERE id % 3 = 0;
SELECT * FROM sp_check();
-- trained with the new field: now the towers read it
UPDATE sp_s SET features = features || ARRAY['city=' || (length(features::text) % 50)];
SELECT count(*) AS rows FROM mtms_train('sp_m', 'sp_s');
SELECT * FROM sp_check();

-- the reference function checks its arguments as mtms_score does
SELECT mtms_score_reference('sp_m', 'search', 'nope', '{user=1}');
SELECT mtms_score_reference('sp_m', 'nowhere', 'ctr', '{user=1}');

SELECT mtms_drop_model('sp_m');
DROP FUNCTION sp_check();
DROP TABLE sp_s, sp_q, sp_t, sp_v1;
