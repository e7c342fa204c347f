-- pgTAP: online experiments between versions (issue 15, items 1 and 3).
--
-- A candidate version serves a deterministic share of request keys:
-- mtms_experiment(model, version, share) declares it or sets a new share
-- (the ramp), mtms_experiment_stop ends it, mtms_rollback(model, candidate)
-- or mtms_experiment_promote(model) makes it active and ends it in the same
-- transaction.  mtms_score(model, scene, task, features, request_key)
-- routes a key to the candidate when hash(key, experiment_id) in [0,1) is
-- below the share; mtms_score_version(model, key) says which version that
-- is.  mtms_experiment_report(model, samples) compares the arms.
BEGIN;
SELECT plan(63);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- 'SQLSTATE: message' of a statement's error, or 'ok'.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- the SQLSTATE alone
CREATE FUNCTION pg_temp.state(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;

-- the HINT of a statement's error
CREATE FUNCTION pg_temp.hint(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE stmt;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;

CREATE TABLE ex_s1 AS SELECT * FROM mtms_synthetic_samples(2000, 1);
CREATE TABLE ex_s2 AS SELECT * FROM mtms_synthetic_samples(2000, 2);
CREATE TABLE ex_probe AS SELECT scene, features FROM mtms_synthetic_samples(1, 7);
CREATE TABLE ex_keys AS SELECT k, 'user-' || k AS key FROM generate_series(1, 100000) k;

SELECT mtms_create_model('ex_m', ARRAY['search','feeds','video'],
       ARRAY['user','ad','advertiser','hour','device','tag'], 4, ARRAY[8],
       jsonb_build_object('max_epochs', 1, 'batch_size', 64, 'shuffle_buffer', 1024,
                          'keep_versions', 2));
SELECT count(*) FROM mtms_train('ex_m', 'ex_s1');
SELECT count(*) FROM mtms_train('ex_m', 'ex_s2');

-- the probe's scores by version 1 and by version 2
CREATE TABLE ex_p AS SELECT 2 AS version, mtms_score('ex_m', scene, 'ctr', features) AS p FROM ex_probe;
SELECT mtms_rollback('ex_m', 1);
INSERT INTO ex_p SELECT 1, mtms_score('ex_m', scene, 'ctr', features) FROM ex_probe;
SELECT mtms_rollback('ex_m', 2);
SELECT isnt((SELECT p FROM ex_p WHERE version = 1), (SELECT p FROM ex_p WHERE version = 2),
            'the two versions score the probe differently');

-- ---------------------------------------------------------------------
-- Bad inputs
-- ---------------------------------------------------------------------
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', 1, NULL)$$), '22004', 'NULL share: 22004');
SELECT is(pg_temp.hint($$SELECT mtms_experiment('ex_m', 1, NULL)$$),
          'To end the experiment, call mtms_experiment_stop(model).', 'NULL share: the hint names mtms_experiment_stop');
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', NULL, 0.3)$$), '22004', 'NULL version: 22004');
SELECT is(pg_temp.state($$SELECT mtms_experiment(NULL, 1, 0.3)$$), '22004', 'NULL model: 22004');
SELECT is(pg_temp.try($$SELECT mtms_experiment('ex_m', 1, 1.5)$$),
          '22003: share must be between 0 and 1, got 1.5', 'share above 1: 22003');
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', 1, -0.1)$$), '22003', 'negative share: 22003');
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', 1, 'NaN')$$), '22003', 'NaN share: 22003');
SELECT is(pg_temp.try($$SELECT mtms_experiment('ex_m', 9, 0.3)$$),
          '42704: version 9 of model "ex_m" does not exist', 'unknown version: 42704');
SELECT is(pg_temp.try($$SELECT mtms_experiment('ex_m', 2, 0.3)$$),
          '22023: version 2 is the active version of model "ex_m"', 'the active version: 22023');
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_nope', 1, 0.3)$$), '42704', 'unknown model: 42704');
SELECT is(pg_temp.try($$SELECT mtms_experiment_stop('ex_m')$$),
          '55000: model "ex_m" has no experiment', 'stop without an experiment: 55000');
SELECT is(pg_temp.state($$SELECT mtms_experiment_promote('ex_m')$$), '55000', 'promote without an experiment: 55000');
SELECT is(pg_temp.state($$SELECT * FROM mtms_experiment_report('ex_m', 'ex_s1')$$), '55000', 'report without an experiment: 55000');
SELECT is((SELECT count(*) FROM mtms_experiment), 0::bigint, 'failed declarations left nothing');

-- without an experiment every key is served by the active version
SELECT is((SELECT count(*) FROM ex_keys WHERE mtms_score_version('ex_m', key) <> 2), 0::bigint,
          'no experiment: every key to the active version');

-- ---------------------------------------------------------------------
-- Routing: share 0.3
-- ---------------------------------------------------------------------
SELECT mtms_experiment('ex_m', 1, 0.3);
CREATE TABLE ex_arm03 AS SELECT k, mtms_score_version('ex_m', key) AS v FROM ex_keys;
SELECT ok((SELECT abs(count(*) - 30000) <= 4 * sqrt(100000 * 0.3 * 0.7) FROM ex_arm03 WHERE v = 1),
          'share 0.3: the candidate''s count of 100k keys is within 4 sigma of 30000');
SELECT is((SELECT count(*) FROM ex_arm03 WHERE v NOT IN (1, 2)), 0::bigint, 'every key is served by version 1 or 2');
SELECT is((SELECT count(*) FROM ex_arm03 a JOIN ex_keys USING (k)
            WHERE mtms_score_version('ex_m', key) <> a.v), 0::bigint,
          'the same key gets the same version in another query');
SELECT is((SELECT count(*) FROM ex_keys
            WHERE mtms_score_version('ex_m', key) <> mtms_score_version('ex_m', key)), 0::bigint,
          'and twice in one query');
SELECT is((SELECT count(*) FROM ex_keys, ex_probe, ex_arm03 a, ex_p
            WHERE a.k = ex_keys.k AND ex_keys.k <= 2000 AND ex_p.version = a.v
              AND mtms_score('ex_m', scene, 'ctr', features, key) <> ex_p.p), 0::bigint,
          'mtms_score with a key scores with the version mtms_score_version names');
SELECT is((SELECT mtms_score('ex_m', scene, 'ctr', features, NULL) FROM ex_probe),
          (SELECT p FROM ex_p WHERE version = 2), 'a NULL key scores with the active version');
SELECT is(mtms_score_version('ex_m', NULL), 2, 'mtms_score_version of a NULL key: the active version');
SELECT is((SELECT mtms_score('ex_m', scene, 'ctr', features) FROM ex_probe),
          (SELECT p FROM ex_p WHERE version = 2), 'without a key: the active version');
SELECT is((SELECT mtms_score('ex_m', scene, 'ctcvr', features, 'user-1') FROM ex_probe),
          (SELECT mtms_score('ex_m', scene, 'ctr', features, 'user-1') *
                  mtms_score('ex_m', scene, 'cvr', features, 'user-1') FROM ex_probe),
          'ctcvr with a key is ctr x cvr of the same version');
SELECT is((SELECT version FROM mtms_versions('ex_m') WHERE active), 2, 'the experiment leaves the active version');

-- ---------------------------------------------------------------------
-- The ramp: a new share keeps the experiment id; keys below the smaller
-- share stay on the candidate, keys above the larger stay on control
-- ---------------------------------------------------------------------
CREATE TEMP TABLE ex_id AS SELECT experiment_id FROM mtms_experiment;
SELECT mtms_experiment('ex_m', 1, 0.5);
SELECT is((SELECT experiment_id FROM mtms_experiment), (SELECT experiment_id FROM ex_id),
          'a new share keeps the experiment id');
CREATE TABLE ex_arm05 AS SELECT k, mtms_score_version('ex_m', key) AS v FROM ex_keys;
SELECT is((SELECT count(*) FROM ex_arm03 a JOIN ex_arm05 b USING (k) WHERE a.v = 1 AND b.v <> 1), 0::bigint,
          'ramp 0.3 -> 0.5: every candidate key stays on the candidate');
SELECT ok((SELECT abs(count(*) - 50000) <= 4 * sqrt(100000 * 0.5 * 0.5) FROM ex_arm05 WHERE v = 1),
          'share 0.5: within 4 sigma of 50000');
SELECT mtms_experiment('ex_m', 1, 0.2);
SELECT is((SELECT count(*) FROM ex_arm03 a JOIN ex_keys USING (k)
            WHERE a.v = 2 AND mtms_score_version('ex_m', key) <> 2), 0::bigint,
          'ramp down 0.3 -> 0.2: every control key stays on control');
SELECT is((SELECT count(*) FROM ex_keys JOIN ex_arm03 a USING (k)
            WHERE mtms_score_version('ex_m', key) = 1 AND a.v <> 1), 0::bigint,
          'and the candidate keys at 0.2 were candidate keys at 0.3');
SELECT mtms_experiment('ex_m', 1, 0);
SELECT is((SELECT count(*) FROM ex_keys WHERE mtms_score_version('ex_m', key) = 1), 0::bigint,
          'share 0: no key to the candidate');
SELECT mtms_experiment('ex_m', 1, 1);
SELECT is((SELECT count(*) FROM ex_keys WHERE mtms_score_version('ex_m', key) = 1), 100000::bigint,
          'share 1: every key to the candidate');

-- a new experiment re-randomises the keys
SELECT mtms_experiment_stop('ex_m');
SELECT is((SELECT count(*) FROM mtms_experiment), 0::bigint, 'mtms_experiment_stop ends the experiment');
SELECT is((SELECT count(*) FROM ex_keys WHERE mtms_score_version('ex_m', key) <> 2), 0::bigint,
          'after the stop every key to the active version');
SELECT mtms_experiment('ex_m', 1, 0.3);
SELECT ok((SELECT experiment_id FROM mtms_experiment) > (SELECT experiment_id FROM ex_id),
          'a new experiment has a new id');
SELECT ok((SELECT count(*) FROM ex_arm03 a JOIN ex_keys USING (k)
            WHERE mtms_score_version('ex_m', key) <> a.v) > 10000,
          'and other keys on the candidate');

-- ---------------------------------------------------------------------
-- Trainings during the experiment: the experiment and its candidate stay,
-- the control becomes the new version; pruning never deletes the candidate
-- ---------------------------------------------------------------------
DELETE FROM ex_id;
INSERT INTO ex_id SELECT experiment_id FROM mtms_experiment;
SELECT count(*) FROM mtms_train('ex_m', 'ex_s1');
SELECT count(*) FROM mtms_train('ex_m', 'ex_s2');
SELECT is(ARRAY(SELECT version FROM mtms_versions('ex_m') ORDER BY 1), ARRAY[1, 3, 4],
          'keep_versions 2 keeps the newest two and the candidate');
SELECT is((SELECT row(experiment_id, version, share)::text FROM mtms_experiment),
          (SELECT row(experiment_id, 1, 0.3::float8)::text FROM ex_id), 'the experiment survives the trainings');
SELECT is(ARRAY(SELECT DISTINCT mtms_score_version('ex_m', key) FROM ex_keys ORDER BY 1), ARRAY[1, 4],
          'keys go to the candidate or to the new active version');
SELECT is(pg_temp.state($$DELETE FROM mtms_version v USING mtms_model m
                           WHERE m.model_id = v.model_id AND m.name = 'ex_m' AND v.version = 1$$),
          '23503', 'the candidate''s version row cannot be deleted by plain SQL');

-- a rollback to another version keeps the experiment
SELECT mtms_rollback('ex_m', 3);
SELECT is((SELECT version FROM mtms_experiment), 1, 'a rollback to another version keeps the experiment');

-- ---------------------------------------------------------------------
-- The report
-- ---------------------------------------------------------------------
CREATE TABLE ex_rep AS
SELECT s.*, 'user-' || (row_number() OVER ()) AS request_key, 1 + (row_number() OVER ()) % 3 AS bid
  FROM mtms_synthetic_samples(4000, 5) s;
CREATE TABLE ex_r AS SELECT * FROM mtms_experiment_report('ex_m', 'ex_rep');
SELECT is(ARRAY(SELECT arm FROM ex_r), ARRAY['control', 'candidate'], 'one row per arm');
SELECT is((SELECT sum(rows) FROM ex_r), 4000::numeric, 'the arms'' rows add up to the samples');
SELECT is((SELECT rows FROM ex_r WHERE arm = 'candidate'),
          (SELECT count(*) FROM ex_rep WHERE mtms_score_version('ex_m', request_key) = 1),
          'a row''s arm is the version its request_key is served by');
SELECT is((SELECT array_agg(version ORDER BY arm) FROM ex_r), ARRAY[1, 3], 'the arms'' versions');
SELECT ok((SELECT bool_and(ctr_low < ctr AND ctr < ctr_high AND cvr_low < cvr AND cvr < cvr_high
                           AND abs(ctr_calibration - mean_pctr / ctr) < 1e-12) FROM ex_r),
          'rates inside their intervals; calibration is mean predicted / observed');
SELECT is((SELECT t_charge FROM ex_r WHERE arm = 'control'),
          (SELECT sum(bid)::float8 FROM ex_rep WHERE click AND conversion
              AND mtms_score_version('ex_m', request_key) = 3), 't_charge: the sum of bid over conversions');
SELECT is(pg_temp.try($$SELECT * FROM mtms_experiment_report('ex_m', 'ex_s1')$$),
          '42703: relation public.ex_s1 has no column request_key', 'samples without request_key: 42703 naming it');
ALTER TABLE ex_rep DROP COLUMN bid;
SELECT is((SELECT count(*) FROM mtms_experiment_report('ex_m', 'ex_rep') WHERE t_charge IS NULL), 2::bigint,
          'no bid column: t_charge is NULL');

-- ---------------------------------------------------------------------
-- Privileges: declaring and stopping need 'train', scoring 'score'
-- ---------------------------------------------------------------------
CREATE ROLE mtms_ex_scorer;
CREATE ROLE mtms_ex_trainer;
CREATE ROLE mtms_ex_nobody;
SELECT mtms_grant('ex_m', 'mtms_ex_scorer', 'score');
SELECT mtms_grant('ex_m', 'mtms_ex_trainer', 'train');
GRANT SELECT ON ex_probe, ex_rep TO mtms_ex_scorer, mtms_ex_nobody;
SET LOCAL ROLE mtms_ex_scorer;
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', 1, 0.5)$$), '42501', '''score'' may not declare');
SELECT is(pg_temp.state($$SELECT mtms_experiment_stop('ex_m')$$), '42501', '''score'' may not stop');
SELECT is(pg_temp.state($$SELECT mtms_score('ex_m', scene, 'ctr', features, 'k') FROM ex_probe$$), 'ok',
          '''score'' may score with a key');
SELECT is(pg_temp.state($$SELECT * FROM mtms_experiment_report('ex_m', 'ex_rep')$$), 'ok',
          '''score'' may read the report');
RESET ROLE;
SET LOCAL ROLE mtms_ex_nobody;
SELECT is(pg_temp.state($$SELECT mtms_score('ex_m', scene, 'ctr', features, 'k') FROM ex_probe$$), '42501',
          'no grant: no keyed scoring');
SELECT is(pg_temp.state($$SELECT mtms_score_version('ex_m', 'k')$$), '42501', 'no grant: no mtms_score_version');
SELECT is(pg_temp.state($$SELECT * FROM mtms_experiment_report('ex_m', 'ex_rep')$$), '42501', 'no grant: no report');
RESET ROLE;
SET LOCAL ROLE mtms_ex_trainer;
SELECT is(pg_temp.state($$SELECT mtms_experiment('ex_m', 1, 0.5)$$), 'ok', '''train'' may ramp');
RESET ROLE;

-- ---------------------------------------------------------------------
-- Promotion, atomic with the end of the experiment
-- ---------------------------------------------------------------------
SELECT mtms_rollback('ex_m', 1);
SELECT is((SELECT count(*) FROM mtms_experiment), 0::bigint, 'mtms_rollback to the candidate ends the experiment');
SELECT is((SELECT count(*) FROM ex_keys WHERE mtms_score_version('ex_m', key) <> 1), 0::bigint,
          'and every key goes to the promoted version');
SELECT mtms_experiment('ex_m', 4, 0.3);
SELECT is(mtms_experiment_promote('ex_m'), 4, 'mtms_experiment_promote returns the candidate');
SELECT is((SELECT row((SELECT count(*) FROM mtms_experiment), (SELECT version FROM mtms_versions('ex_m') WHERE active))::text),
          '(0,4)', 'it is active and the experiment ended');

-- dropping the model removes its experiment
SELECT mtms_experiment('ex_m', 1, 0.3);
SELECT mtms_drop_model('ex_m');
SELECT is((SELECT count(*) FROM mtms_experiment), 0::bigint, 'mtms_drop_model removes the experiment');

SELECT * FROM finish();
ROLLBACK;
