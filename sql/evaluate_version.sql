-- mtms_evaluate(model, samples, version): a kept version other than the
-- active one, loaded for the call and scored through its own projection
-- cache, gives the very figures the active-version evaluation gave while
-- it was active; NULL (and the 2-argument call) is the active version; a
-- version that is not kept is an error (42704) naming the kept ones, as
-- mtms_rollback's.
\set SHOW_CONTEXT never
\set VERBOSITY default
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

CREATE TABLE evv_all AS
SELECT * FROM mtms_synthetic_samples(6000, 3, '{"slots": 3, "ctr": 0.2, "cvr": 0.3}');
CREATE TABLE evv_day1 AS SELECT * FROM evv_all WHERE slot = 1;
CREATE TABLE evv_day2 AS SELECT * FROM evv_all WHERE slot = 2;
CREATE TABLE evv_test AS SELECT * FROM evv_all WHERE slot = 3;

SELECT mtms_create_model('evv_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
       8, '{16,8}', '{"max_epochs": 2, "batch_size": 64}');

-- an untrained model has no version to evaluate
SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 1);

SELECT count(*) > 0 AS trained FROM mtms_train('evv_m', 'evv_day1');
CREATE TABLE evv_v1 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test');
SELECT count(*) > 0 AS trained FROM mtms_train('evv_m', 'evv_day2');
CREATE TABLE evv_v2 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test');
SELECT version, active FROM mtms_versions('evv_m') ORDER BY version;

-- the figures of a (scene, task) of two evaluations agree (rounded)
CREATE FUNCTION evv_same(a regclass, b regclass)
RETURNS TABLE(scene text, task text, same boolean)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format($q$
    SELECT scene, task,
           x.n = y.n AND x.positives = y.positives
           AND round(x.auc::numeric, 6) IS NOT DISTINCT FROM round(y.auc::numeric, 6)
           AND round(x.logloss::numeric, 6) = round(y.logloss::numeric, 6)
           AND round(x.mae::numeric, 6) = round(y.mae::numeric, 6)
           AND round(x.calibration::numeric, 6) IS NOT DISTINCT FROM round(y.calibration::numeric, 6)
      FROM %s x FULL JOIN %s y USING (scene, task)
     ORDER BY 1, 2 $q$, a, b);
END $$;

-- version 1, no longer active, evaluates as it did while it was active
CREATE TABLE evv_e1 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 1);
SELECT * FROM evv_same('evv_e1', 'evv_v1');
-- ... and the two versions do differ
SELECT bool_and(same) AS versions_equal FROM evv_same('evv_v1', 'evv_v2');

-- the active version: by its number, by NULL, by the 2-argument call
CREATE TABLE evv_e2 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 2);
SELECT bool_and(same) AS by_number FROM evv_same('evv_e2', 'evv_v2');
CREATE TABLE evv_null AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test', NULL);
SELECT bool_and(same) AS by_null FROM evv_same('evv_null', 'evv_v2');
CREATE TABLE evv_named AS SELECT * FROM mtms_evaluate(model => 'evv_m', samples => 'evv_test', version => 1);
SELECT bool_and(same) AS named_argument FROM evv_same('evv_named', 'evv_v1');

-- rolled back to 1: version 2 evaluates as it did when it was active
SELECT mtms_rollback('evv_m', 1);
CREATE TABLE evv_r2 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 2);
SELECT bool_and(same) AS v2_after_rollback FROM evv_same('evv_r2', 'evv_v2');
CREATE TABLE evv_r1 AS SELECT * FROM mtms_evaluate('evv_m', 'evv_test');
SELECT bool_and(same) AS active_after_rollback FROM evv_same('evv_r1', 'evv_v1');

-- versions that are not kept
SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 3);
SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 0);
SELECT * FROM mtms_evaluate('evv_m', 'evv_test', -1);
-- (their SQLSTATE: undefined_object, as mtms_rollback's)
CREATE FUNCTION evv_sqlstate(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE;
END $$;
SELECT evv_sqlstate($$SELECT * FROM mtms_evaluate('evv_m', 'evv_test', 3)$$) AS evaluate,
       evv_sqlstate($$SELECT mtms_rollback('evv_m', 3)$$) AS rollback;
-- an unknown model, a NULL model or samples
SELECT * FROM mtms_evaluate('evv_nope', 'evv_test', 1);
SELECT * FROM mtms_evaluate(NULL, 'evv_test', 1);
SELECT * FROM mtms_evaluate('evv_m', NULL, 1);

SELECT mtms_drop_model('evv_m');
