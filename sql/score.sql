-- mtms_score and mtms_evaluate: both forms of mtms_score, what they compute
-- (checked against the stored parameters with a reference written in SQL),
-- their errors, the per-backend model cache following new versions,
-- rollbacks, aborted trainings and drops, and mtms_evaluate's figures checked
-- against SQL computations.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

CREATE TABLE sc_s AS SELECT * FROM mtms_synthetic_samples(5000, 1);
-- 100 rows of each scene
CREATE TABLE sc_q AS
SELECT row_number() OVER (ORDER BY scene, rn) AS id, scene, features, click, conversion
  FROM (SELECT *, row_number() OVER (PARTITION BY scene ORDER BY features::text) AS rn FROM sc_s) s
 WHERE rn <= 50;
SELECT mtms_create_model('sc_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');

-- not trained yet
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=1}');
SELECT * FROM mtms_evaluate('sc_m', 'sc_s');

SELECT count(*) AS rows FROM mtms_train('sc_m', 'sc_s');

-- ---------------------------------------------------------------------------
-- Probabilities in (0, 1) for every scene and task; ctcvr = ctr x cvr.
SELECT q.scene, t.task, count(*) AS n,
       bool_and(mtms_score('sc_m', q.scene, t.task, q.features) > 0 AND
                mtms_score('sc_m', q.scene, t.task, q.features) < 1) AS in_0_1
  FROM sc_q q, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT max(abs(mtms_score('sc_m', scene, 'ctcvr', features) -
               mtms_score('sc_m', scene, 'ctr', features) *
               mtms_score('sc_m', scene, 'cvr', features))) < 1e-12 AS ctcvr_is_product
  FROM sc_q;
-- scores differ between rows, scenes and tasks
SELECT count(DISTINCT mtms_score('sc_m', scene, 'ctr', features)) > 0.9 * count(*) AS varied,
       count(*) FILTER (WHERE mtms_score('sc_m', 'search', 'ctr', features) <>
                              mtms_score('sc_m', 'feeds', 'ctr', features)) > 0.9 * count(*) AS by_scene,
       count(*) FILTER (WHERE mtms_score('sc_m', scene, 'ctr', features) <>
                              mtms_score('sc_m', scene, 'cvr', features)) > 0.9 * count(*) AS by_task
  FROM sc_q;

-- The score is the fine-tune tower (ReLU hidden layer, sigmoid output) on
-- the JOIN of all pairs' sum-pooled field embeddings, exactly as stored:
-- a reference in SQL over mtms_embedding and mtms_tower, for one hidden
-- layer, scoring the rows of sc_q for CTR and CVR with the towers of phase.
CREATE FUNCTION pg_temp.sc_ref(p_model text, p_phase text)
RETURNS TABLE(id bigint, task text, p float8) LANGUAGE sql AS $$
WITH m AS (
  SELECT model_id, active_version AS version, scenes, fields, embedding_dim AS d
    FROM mtms_model WHERE name = p_model),
feat AS MATERIALIZED (SELECT q.id, q.scene, mtms_feature_hash(f) AS h FROM sc_q q, unnest(q.features) AS f),
-- pair (sc, tk) is block pq of the joined input
pairs AS (
  SELECT sc, tk, (array_position(m.scenes, sc) - 1) * 2 + CASE tk WHEN 'ctr' THEN 0 ELSE 1 END AS pq
    FROM m, unnest(m.scenes) AS sc, unnest('{ctr,cvr}'::text[]) AS tk),
-- the input of the (row's scene, task) tower: x[i]
x AS MATERIALIZED (
  SELECT f.id, t.task,
         (CASE p_phase WHEN 'finetune' THEN p.pq ELSE 0 END * cardinality(m.fields)
          + array_position(m.fields, e.field) - 1) * m.d + k - 1 AS i,
         sum(e.vector[k]::float8) AS v
    FROM m, feat f, unnest('{ctr,cvr}'::text[]) AS t(task), pairs p, mtms_embedding e,
         generate_series(1, m.d) AS k
   WHERE e.model_id = m.model_id AND e.version = m.version
     AND e.scene = p.sc AND e.task = p.tk AND e.feature = f.h
     AND (p_phase = 'finetune' OR (p.sc = f.scene AND p.tk = t.task))
   GROUP BY 1, 2, 3),
layer AS (
  SELECT t.* FROM mtms_tower t, m
   WHERE t.model_id = m.model_id AND t.version = m.version AND t.phase = p_phase),
w0 AS MATERIALIZED (
  SELECT l.scene, l.task, (o - 1) / l.n_in + 1 AS j, (o - 1) % l.n_in AS i, w::float8 AS w
    FROM layer l, unnest(l.weights) WITH ORDINALITY AS u(w, o) WHERE l.layer = 0),
wx AS (
  SELECT x.id, x.task, w0.j, sum(w0.w * x.v) AS s
    FROM x JOIN sc_q q USING (id) JOIN w0 ON (w0.scene, w0.task, w0.i) = (q.scene, x.task, x.i)
   GROUP BY 1, 2, 3),
h AS (
  SELECT q.id, l.task, g.j, greatest(0, l.bias[g.j] + coalesce(wx.s, 0)) AS v
    FROM sc_q q JOIN layer l ON l.scene = q.scene AND l.layer = 0
         CROSS JOIN generate_series(1, l.n_out) AS g(j)
         LEFT JOIN wx ON (wx.id, wx.task, wx.j) = (q.id, l.task, g.j))
SELECT q.id, l.task, 1 / (1 + exp(-(l.bias[1] + sum(l.weights[h.j]::float8 * h.v))))
  FROM sc_q q JOIN layer l ON l.scene = q.scene AND l.layer = 1
       JOIN h ON (h.id, h.task) = (q.id, l.task)
 GROUP BY q.id, l.task, l.bias
$$;
SELECT q.scene, r.task, count(*) AS n,
       max(abs(mtms_score('sc_m', q.scene, r.task, q.features) - r.p)) < 1e-5 AS matches_reference
  FROM sc_q q JOIN pg_temp.sc_ref('sc_m', 'finetune') r USING (id)
 GROUP BY 1, 2 ORDER BY 1, 2;

-- Unseen values of declared fields add nothing: all unseen = no features.
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=987654321,ad=987654321,tag=987654321}') =
       mtms_score('sc_m', 'search', 'ctr', '{}') AS unseen_is_zero,
       mtms_score('sc_m', 'video', 'cvr', '{}') > 0 AND
       mtms_score('sc_m', 'video', 'cvr', '{}') < 1 AS empty_in_0_1;
-- Features are pooled per field: order does not matter, repeats count.
SELECT mtms_score('sc_m', 'feeds', 'ctr', (SELECT features FROM sc_q LIMIT 1)) =
       mtms_score('sc_m', 'feeds', 'ctr', (SELECT array(SELECT f FROM unnest(features) f ORDER BY f DESC)
                                            FROM sc_q LIMIT 1)) AS order_free,
       mtms_score('sc_m', 'search', 'ctr', (SELECT features || features FROM sc_q LIMIT 1)) <>
       mtms_score('sc_m', 'search', 'ctr', (SELECT features FROM sc_q LIMIT 1)) AS repeats_count;

-- ---------------------------------------------------------------------------
-- The 3-argument form: the only model, or the one mtms.model names.
SELECT mtms_score('search', 'ctr', features) = mtms_score('sc_m', 'search', 'ctr', features)
       AS same_as_4_args
  FROM sc_q LIMIT 3;
SELECT mtms_create_model('sc_other', '{search}', '{user}');
SELECT mtms_score('search', 'ctr', '{user=1}');
SET mtms.model = 'sc_m';
SELECT mtms_score('search', 'ctr', features) = mtms_score('sc_m', 'search', 'ctr', features)
       AS same_as_4_args
  FROM sc_q LIMIT 3;
SET mtms.model = 'sc_other';
SELECT mtms_score('search', 'ctr', '{user=1}');
SET mtms.model = 'sc_nope';
SELECT mtms_score('search', 'ctr', '{user=1}');
RESET mtms.model;
SELECT mtms_drop_model('sc_other');
SELECT mtms_score('search', 'ctr', '{user=1}') > 0 AS only_model_again;

-- ---------------------------------------------------------------------------
-- Errors: unknown model, scene, task, field; malformed features; NULLs.
SELECT mtms_score('sc_nope', 'search', 'ctr', '{user=1}');
SELECT mtms_score('sc_m', 'shopping', 'ctr', '{user=1}');
SELECT mtms_score('sc_m', 'search', 'ctcvr2', '{user=1}');
SELECT mtms_score('sc_m', 'search', 'CTR', '{user=1}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{color=red}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{user}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{=1}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=1,NULL}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{{user=1},{ad=2}}');
SELECT mtms_score(NULL, 'search', 'ctr', '{user=1}');
SELECT mtms_score('sc_m', NULL, 'ctr', '{user=1}');
SELECT mtms_score('sc_m', 'search', NULL, '{user=1}');
SELECT mtms_score('sc_m', 'search', 'ctr', NULL);
SELECT mtms_score(NULL, 'ctr', '{user=1}');
SELECT mtms_score('search', NULL, '{user=1}');
SELECT mtms_score('search', 'ctr', NULL);
-- an error in the middle of a scan, after rows scored fine
SELECT count(mtms_score('sc_m', scene, 'ctr', CASE WHEN n = 200 THEN '{colour=1}' ELSE features END))
  FROM (SELECT row_number() OVER () AS n, * FROM sc_q) q;
DO $$
DECLARE
  stmt text;
BEGIN
  FOREACH stmt IN ARRAY ARRAY[
    $q$SELECT mtms_score('sc_nope', 'search', 'ctr', '{user=1}')$q$,
    $q$SELECT mtms_score('sc_m', 'shopping', 'ctr', '{user=1}')$q$,
    $q$SELECT mtms_score('sc_m', 'search', 'x', '{user=1}')$q$,
    $q$SELECT mtms_score('sc_m', 'search', 'ctr', '{color=red}')$q$,
    $q$SELECT mtms_score('sc_m', 'search', 'ctr', '{user}')$q$,
    $q$SELECT mtms_score('sc_m', 'search', 'ctr', NULL)$q$]
  LOOP
    BEGIN
      EXECUTE stmt;
      RAISE WARNING 'no error: %', stmt;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING '%: %', SQLSTATE, SQLERRM;
    END;
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- mtms_evaluate: one row per scene and task; n and positives as counted in
-- SQL (CVR on clicked rows), and AUC, logloss, MAE and calibration as
-- computed in SQL from mtms_score, to float rounding (mtms_evaluate runs
-- the upper tower layers of many rows as one matrix product, which sums in
-- another order than one row's).  The AUC may also differ by the pairs of
-- a positive and a negative whose scores are equal to float rounding and
-- come out in the other order: up to 10 such pairs, 10 / (positives x
-- negatives).
CREATE TEMP TABLE sc_e AS SELECT * FROM mtms_evaluate('sc_m', 'sc_s') WITH ORDINALITY
    AS e(scene, task, n, positives, auc, logloss, mae, calibration, ord);
SELECT ord, scene, task FROM sc_e ORDER BY ord;
CREATE TEMP TABLE sc_ref AS
SELECT scene, task, count(*) AS n, count(*) FILTER (WHERE y) AS positives,
       mtms_auc(p, y) AS auc,
       avg(CASE WHEN y THEN -ln(least(greatest(p, 1e-7), 1 - 1e-7))
                ELSE -ln(1 - least(greatest(p, 1e-7), 1 - 1e-7)) END) AS logloss,
       avg(abs(p - y::int)) AS mae,
       avg(p) / nullif(avg(y::int), 0) AS calibration
  FROM (SELECT scene, t.task,
               mtms_score('sc_m', scene, t.task, features) AS p,
               CASE t.task WHEN 'ctr' THEN click WHEN 'cvr' THEN conversion
                           ELSE click AND conversion END AS y
          FROM sc_s, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
         WHERE t.task <> 'cvr' OR click) s
 GROUP BY scene, task;
SELECT e.scene, e.task,
       e.n = r.n AS n_ok,
       e.positives = r.positives AS positives_ok,
       e.auc IS NOT DISTINCT FROM r.auc
           OR abs(e.auc - r.auc) <= 10.0 / (r.positives * (r.n - r.positives)) AS auc_ok,
       abs(e.logloss - r.logloss) < 1e-6 AS logloss_ok,
       abs(e.mae - r.mae) < 1e-6 AS mae_ok,
       e.calibration IS NOT DISTINCT FROM r.calibration
           OR abs(e.calibration - r.calibration) < 1e-6 AS calibration_ok
  FROM sc_e e FULL JOIN sc_ref r USING (scene, task)
 ORDER BY e.ord;
SELECT bool_and(auc BETWEEN 0 AND 1) AS auc_in_0_1,
       bool_and(logloss > 0 AND mae > 0 AND mae < 1) AS losses_ok,
       bool_and(calibration > 0) AS calibration_positive
  FROM sc_e;
-- a scene absent from the samples gets no rows; a class absent gives NULLs
CREATE VIEW sc_v AS
SELECT scene, features, click, false AS conversion FROM sc_s WHERE scene = 'feeds';
SELECT scene, task, n = (SELECT count(*) FROM sc_s WHERE scene = 'feeds') AS all_rows,
       positives, auc IS NULL AS auc_null, calibration IS NULL AS calibration_null
  FROM mtms_evaluate('sc_m', 'sc_v') WHERE task <> 'ctr';
-- errors
SELECT * FROM mtms_evaluate(NULL, 'sc_s');
SELECT * FROM mtms_evaluate('sc_m', NULL);
SELECT * FROM mtms_evaluate('sc_nope', 'sc_s');
CREATE VIEW sc_no_click AS SELECT scene, features, conversion FROM sc_s;
SELECT * FROM mtms_evaluate('sc_m', 'sc_no_click');
CREATE VIEW sc_bad_rows AS
SELECT CASE WHEN click THEN 'shopping' ELSE scene END AS scene, features, click, conversion FROM sc_s;
SELECT * FROM mtms_evaluate('sc_m', 'sc_bad_rows');
CREATE OR REPLACE VIEW sc_bad_rows AS
SELECT CASE WHEN click THEN NULL ELSE scene END AS scene, features, click, conversion FROM sc_s;
SELECT * FROM mtms_evaluate('sc_m', 'sc_bad_rows');
CREATE OR REPLACE VIEW sc_bad_rows AS
SELECT scene, CASE WHEN click THEN features || 'colour=1'::text ELSE features END AS features,
       click, conversion FROM sc_s;
SELECT * FROM mtms_evaluate('sc_m', 'sc_bad_rows');
CREATE OR REPLACE VIEW sc_bad_rows AS
SELECT scene, features, CASE WHEN click THEN NULL ELSE click END AS click, conversion FROM sc_s;
SELECT * FROM mtms_evaluate('sc_m', 'sc_bad_rows');

-- ---------------------------------------------------------------------------
-- The cache follows the catalog in this session: a new version, an aborted
-- training, a rollback, a drop.
CREATE TEMP TABLE sc_v1 AS
SELECT features, mtms_score('sc_m', 'search', 'ctr', features) AS p FROM sc_q LIMIT 20;
CREATE TABLE sc_s2 AS SELECT * FROM mtms_synthetic_samples(2000, 5);
BEGIN;
SELECT count(*) AS rows FROM mtms_train('sc_m', 'sc_s2');
SELECT count(*) FILTER (WHERE mtms_score('sc_m', 'search', 'ctr', features) <> p) > 15
       AS sees_own_new_version FROM sc_v1;
ROLLBACK;
SELECT bool_and(mtms_score('sc_m', 'search', 'ctr', features) = p) AS back_to_v1 FROM sc_v1;
SELECT count(*) AS rows FROM mtms_train('sc_m', 'sc_s2');
SELECT version, active FROM mtms_versions('sc_m');
SELECT count(*) FILTER (WHERE mtms_score('sc_m', 'search', 'ctr', features) <> p) > 15
       AS v2_scores FROM sc_v1;
SELECT mtms_rollback('sc_m', 1);
SELECT bool_and(mtms_score('sc_m', 'search', 'ctr', features) = p) AS v1_scores_again FROM sc_v1;
SELECT mtms_drop_model('sc_m');
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=1}');
-- a new model of the same name is a new model
SELECT mtms_create_model('sc_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "seed": 3}');
SELECT mtms_score('sc_m', 'search', 'ctr', '{user=1}');

-- ---------------------------------------------------------------------------
-- Phase 1 only: scoring uses each pair's own phase-1 tower on its own
-- embeddings; mtms_evaluate works too.
SELECT count(*) AS rows FROM mtms_train('sc_m', 'sc_s', phases => 'embedding');
SELECT q.scene, r.task, count(*) AS n,
       max(abs(mtms_score('sc_m', q.scene, r.task, q.features) - r.p)) < 1e-5 AS matches_reference
  FROM sc_q q JOIN pg_temp.sc_ref('sc_m', 'embedding') r USING (id)
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT scene, task, auc > 0.6 AS learned FROM mtms_evaluate('sc_m', 'sc_s')
 WHERE task = 'ctr' ORDER BY scene;

SELECT mtms_drop_model('sc_m');
DROP VIEW sc_v, sc_no_click, sc_bad_rows;
DROP TABLE sc_s, sc_q, sc_s2;
