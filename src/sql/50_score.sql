-- mtms install script, part 50: scoring and evaluation.

CREATE FUNCTION @extschema@.mtms_score(model text, scene text, task text, features text[])
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score(text, text, text, text[]) IS
  'Probability of task (ctr, cvr or ctcvr = ctr x cvr) for one sample of scene, with the active version of model';

CREATE FUNCTION @extschema@.mtms_score(scene text, task text, features text[])
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score_default'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score(text, text, text[]) IS
  'mtms_score with the model named by the setting mtms.model, or the database''s only model';

CREATE FUNCTION @extschema@.mtms_evaluate(model text, samples regclass)
RETURNS TABLE(scene text, task text, n bigint, positives bigint, auc float8,
              logloss float8, mae float8, calibration float8)
AS 'MODULE_PATHNAME', 'mtms_evaluate'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_evaluate(text, regclass) IS
  'Offline metrics of a model per (scene, task) over a sample relation: AUC, logloss, MAE, calibration';
