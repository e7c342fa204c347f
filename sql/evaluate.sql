-- mtms_evaluate through the scoring path: per-feature first-layer
-- projections from the scorer's cache (the missing ones computed per batch
-- of rows), the upper layers of many rows as one matrix product.  Its
-- figures equal those computed in SQL from mtms_score_reference (the
-- joined input, row by row) to float rounding, for every scene and task:
-- with fine-tune towers, with a scene added after the fine-tune that has
-- only phase-1 towers, with rows of unseen, repeated and no features, over
-- more rows than one batch, and with a projection cache too small to keep
-- them all.  The projections a batch computes are the very ones mtms_score
-- computes, bit for bit, so a score never depends on whether mtms_evaluate
-- filled the cache first.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- 40,000 rows (more than one batch of mtms_evaluate) of four scenes;
-- 'games' is added to the model later
CREATE TABLE ev_all AS
SELECT * FROM mtms_synthetic_samples(40000, 7,
    '{"scenes": ["search", "feeds", "video", "games"], "ctr": 0.2, "cvr": 0.3}');
INSERT INTO ev_all (scene, features, click, conversion) VALUES
    ('search', '{user=999999999,ad=888888888,tag=77777777}', true, true),
    ('feeds', '{tag=5,tag=5,tag=5,user=1,user=1}', true, false),
    ('video', '{}', false, false),
    ('games', '{}', true, true),
    ('games', '{user=1,user=1,hour=3}', false, false);
CREATE TABLE ev_three AS SELECT * FROM ev_all WHERE scene <> 'games';
CREATE TABLE ev_train AS SELECT * FROM ev_all WHERE slot <= 2;
CREATE TABLE ev_train3 AS SELECT * FROM ev_train WHERE scene <> 'games';
CREATE TABLE ev_t (task text);
INSERT INTO ev_t VALUES ('ctr'), ('cvr'), ('ctcvr');

-- mtms_evaluate against the same figures in SQL over the reference scores
-- (ctcvr = ctr x cvr; cvr on clicked rows; probabilities clamped as
-- mtms_evaluate clamps them for the logloss): per scene and task, whether
-- each figure agrees to 5 decimals, the AUC also when up to 10 pairs of a
-- positive and a negative whose scores are equal to float rounding come
-- out in the other order
CREATE FUNCTION ev_check(model text, samples regclass)
RETURNS TABLE(scene text, task text, n bigint, n_ok boolean, positives_ok boolean,
              auc_ok boolean, logloss_ok boolean, mae_ok boolean, calibration_ok boolean)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format($q$
    WITH r AS (
      SELECT s.scene, t.task, count(*) AS n, count(*) FILTER (WHERE y) AS positives,
             mtms_auc(p, y) AS auc,
             avg(CASE WHEN y THEN -ln(least(greatest(p, 1e-7), 1 - 1e-7))
                      ELSE -ln(1 - least(greatest(p, 1e-7), 1 - 1e-7)) END) AS logloss,
             avg(abs(p - y::int)) AS mae,
             avg(p) / nullif(avg(y::int), 0) AS calibration
        FROM %1$s s CROSS JOIN ev_t t,
             LATERAL (SELECT mtms_score_reference(%2$L, s.scene, t.task, s.features) AS p,
                             CASE t.task WHEN 'ctr' THEN s.click
                                         WHEN 'cvr' THEN coalesce(s.conversion, false)
                                         ELSE s.click AND coalesce(s.conversion, false) END AS y) x
       WHERE t.task <> 'cvr' OR s.click
       GROUP BY 1, 2)
    SELECT r.scene, r.task, r.n, e.n = r.n, e.positives = r.positives,
           e.auc IS NOT DISTINCT FROM r.auc
               OR abs(e.auc - r.auc) <= greatest(1e-5, 10.0 / (r.positives * (r.n - r.positives))),
           abs(e.logloss - r.logloss) < 1e-5,
           abs(e.mae - r.mae) < 1e-5,
           e.calibration IS NOT DISTINCT FROM r.calibration
               OR abs(e.calibration - r.calibration) < 1e-5
      FROM r FULL JOIN mtms_evaluate(%2$L, %1$L) e USING (scene, task)
     ORDER BY 1, 2 $q$, samples, model);
END $$;

-- embedding_dim 12 and 12 first-layer units: the projection kernels' main
-- loops (8 columns, 8 units at a time) and their tails both run
SELECT mtms_create_model('ev_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       12, '{12,8}', '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 2048}');

-- ---------------------------------------------------------------------------
-- Phase 1 only: every pair scores with its phase-1 tower.
SELECT count(*) > 0 AS trained FROM mtms_train('ev_m', 'ev_train3', phases => 'embedding');
SELECT * FROM ev_check('ev_m', 'ev_three');

-- ---------------------------------------------------------------------------
-- The fine-tune: every pair scores with its fine-tune tower.
SELECT count(*) > 0 AS trained FROM mtms_train('ev_m', 'ev_train3', phases => 'finetune');
SELECT * FROM ev_check('ev_m', 'ev_three');
-- the figures differ from scene to scene and task to task (a comparison
-- that can fail)
SELECT count(DISTINCT round(auc::numeric, 4)) > 5 AS aucs_vary,
       count(DISTINCT round(logloss::numeric, 4)) > 5 AS loglosses_vary
  FROM mtms_evaluate('ev_m', 'ev_three');

-- ---------------------------------------------------------------------------
-- A scene added after the fine-tune, trained in phase 1 only: its pairs
-- have no fine-tune tower and score with their phase-1 towers, the other
-- scenes' fine-tune towers read their grown input's old columns only.
SELECT mtms_add_scene('ev_m', 'games');
SELECT count(*) > 0 AS trained
  FROM mtms_train('ev_m', 'ev_train', scenes => '{games}', phases => 'embedding');
SELECT t.scene, t.phase, count(*) AS layers
  FROM mtms_tower t JOIN mtms_model m USING (model_id)
 WHERE m.name = 'ev_m' AND t.version = m.active_version AND t.task = 'ctr'
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM ev_check('ev_m', 'ev_all');

-- ---------------------------------------------------------------------------
-- The projections mtms_evaluate computes are those mtms_score computes,
-- bit for bit.  A new session scores every row (its cache filled one key
-- at a time), another evaluates first (the cache filled by batches), then
-- scores: the same scores exactly.
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
CREATE TABLE ev_scored_alone AS
SELECT s.ctid::text AS id, t.task, mtms_score('ev_m', s.scene, t.task, s.features) AS p
  FROM ev_all s, ev_t t;
SELECT keys > 10000 AS filled_by_scoring, uncached = 0 AS all_kept
  FROM mtms_score_cache_stats('ev_m');
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SELECT count(*) AS figures FROM mtms_evaluate('ev_m', 'ev_all');
SELECT keys > 10000 AS filled_by_evaluate, bytes <= cap_bytes AS within_cap, uncached = 0 AS all_kept
  FROM mtms_score_cache_stats('ev_m');
SELECT computed AS computed_before FROM mtms_score_cache_stats('ev_m') \gset
CREATE TABLE ev_scored_after AS
SELECT s.ctid::text AS id, t.task, mtms_score('ev_m', s.scene, t.task, s.features) AS p
  FROM ev_all s, ev_t t;
SELECT computed = :computed_before AS nothing_computed_by_scoring
  FROM mtms_score_cache_stats('ev_m');
SELECT count(*) AS scores, count(*) FILTER (WHERE a.p = b.p) AS identical
  FROM ev_scored_alone a JOIN ev_scored_after b USING (id, task);
-- and a second evaluation, from the cache, gives the same figures exactly
CREATE TABLE ev_first AS SELECT * FROM mtms_evaluate('ev_m', 'ev_all');
SELECT count(*) AS figures,
       count(*) FILTER (WHERE e.n = f.n AND e.auc IS NOT DISTINCT FROM f.auc
                          AND e.logloss = f.logloss AND e.mae = f.mae
                          AND e.calibration IS NOT DISTINCT FROM f.calibration) AS identical
  FROM ev_first f JOIN mtms_evaluate('ev_m', 'ev_all') e USING (scene, task);

-- ---------------------------------------------------------------------------
-- A cache of 1 MB fills during the evaluation: the projections it cannot
-- keep are computed for their batch, the figures stay right.  (This
-- session's own cache: preloaded, the shared one was filled above.)
\c
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SET mtms.shared_models = off;
SET mtms.score_cache = 1;
SELECT * FROM ev_check('ev_m', 'ev_all');
SELECT bytes <= cap_bytes AS within_cap, uncached > 0 AS cap_reached
  FROM mtms_score_cache_stats('ev_m');
SELECT count(*) AS figures,
       count(*) FILTER (WHERE e.n = f.n AND abs(e.logloss - f.logloss) < 1e-6) AS same
  FROM ev_first f JOIN mtms_evaluate('ev_m', 'ev_all') e USING (scene, task);
RESET mtms.score_cache;

SELECT mtms_drop_model('ev_m');
