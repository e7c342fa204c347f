-- test/report_training_info_standin.sql: a stand-in for
-- mtms_training_info(model, version) (API.md, turn 2) for databases whose
-- mtms does not have it yet, so that test/report_test.sh exercises the
-- training report's curves.  Same signature and columns; the rows are
-- made up, plausibly, from the version's stored validation metrics: per
-- (stage, scene, task) 7 to 11 checkpoints (0 = the starting parameters),
-- validation loss falling to the stored figure, then rising a little
-- while patience runs out; the kept checkpoint is the lowest.  Delete once
-- mtms_training_info has landed (report_test.sh uses it only when the
-- database has no function of that name).
CREATE FUNCTION mtms_training_info(model text, version int DEFAULT NULL)
RETURNS TABLE(version int, stage text, scene text, task text, epoch int,
              checkpoint int, train_loss float8, valid_loss float8,
              valid_auc float8, rows bigint, seconds float8, kept boolean)
LANGUAGE sql STABLE AS $$
WITH v AS (
    SELECT x.version, x.metrics
      FROM mtms_versions(mtms_training_info.model) x
     WHERE x.version = coalesce(mtms_training_info.version,
                                (SELECT y.version FROM mtms_versions(mtms_training_info.model) y
                                  WHERE y.active))
),
u AS (
    SELECT v.version, st.stage, s.key AS scene, t.key AS task,
           (t.value->>'valid_loss')::float8 AS loss_end,
           (t.value->>'valid_auc')::float8 AS auc_end,
           4 + abs(hashtext(st.stage || s.key || t.key)) % 5 AS best
      FROM v, jsonb_each(v.metrics) s, jsonb_each(s.value) t,
           unnest(CASE WHEN t.key = 'ctcvr' THEN '{ctcvr,finetune}'::text[]
                       ELSE '{embedding,finetune}'::text[] END) st(stage)
),
c AS (
    SELECT u.*, k,
           u.loss_end * (1 + 0.35 * exp(-0.6 * k) - 0.35 * exp(-0.6 * u.best)
                         + 0.03 * greatest(k - u.best, 0)) AS vl
      FROM u, generate_series(0, u.best + 2) k
)
SELECT c.version, c.stage, c.scene, c.task,
       CASE WHEN c.k = 0 THEN 0 ELSE (c.k - 1) / 3 + 1 END,
       c.k,
       CASE WHEN c.k > 0 THEN c.vl * (0.97 - 0.01 * c.k) END,
       c.vl,
       0.5 + (c.auc_end - 0.5) * (1 - exp(-0.8 * c.k)) / (1 - exp(-0.8 * c.best)),
       c.k * 2000::bigint,
       c.k * 0.05,
       c.k = c.best
  FROM c
 ORDER BY 2, 3, 4, 6
$$;
