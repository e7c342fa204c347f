-- pgTAP: mtms_score and mtms_evaluate.  Signatures and labels, values and
-- their relations (ctcvr = ctr x cvr, the 3-argument form), every error
-- with its SQLSTATE and message, the cache following versions in this
-- transaction, and mtms_evaluate against SQL computations.
BEGIN;
SELECT plan(56);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- ---------------------------------------------------------------------------
-- Objects.
SELECT has_function('mtms_score', ARRAY['text', 'text', 'text', 'text[]']);
SELECT has_function('mtms_score', ARRAY['text', 'text', 'text[]']);
SELECT function_returns('mtms_score', ARRAY['text', 'text', 'text', 'text[]'], 'double precision');
SELECT function_returns('mtms_score', ARRAY['text', 'text', 'text[]'], 'double precision');
SELECT volatility_is('mtms_score', ARRAY['text', 'text', 'text', 'text[]'], 'stable');
SELECT volatility_is('mtms_score', ARRAY['text', 'text', 'text[]'], 'stable');
SELECT is((SELECT array_agg(DISTINCT proparallel::text) FROM pg_proc WHERE proname = 'mtms_score'),
          '{r}'::text[], 'every form of mtms_score is PARALLEL RESTRICTED (scores in the leader, whose model is warm)');

-- A parallel plan scans in the workers and scores above the Gather, in the
-- leader: no worker loads the model for one query.
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
    o text := '';
BEGIN
    FOR r IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q LOOP
        o := o || r || E'\n';
    END LOOP;
    RETURN o;
END $$;
CREATE TABLE ts_par AS SELECT * FROM mtms_synthetic_samples(500, 1);
SET LOCAL max_parallel_workers_per_gather = 2;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SELECT ok(plan ~ 'Gather' AND split_part(plan, 'Gather', 2) !~ 'mtms_score',
          'a parallel plan evaluates mtms_score above its Gather')
  FROM pg_temp.plan_of($$SELECT sum(mtms_score('ts_m', scene, 'ctr', features)) FROM ts_par$$) plan;
SET LOCAL max_parallel_workers_per_gather = 0;
SELECT has_function('mtms_evaluate', ARRAY['text', 'regclass', 'integer']);
SELECT is((SELECT proargnames FROM pg_proc WHERE proname = 'mtms_evaluate'),
          '{model,samples,version,scene,task,n,positives,auc,logloss,mae,calibration}'::text[],
          'mtms_evaluate has the argument and result names of API.md (and the added version)');

-- ---------------------------------------------------------------------------
-- A trained model.
CREATE TEMP TABLE ts_s AS SELECT * FROM mtms_synthetic_samples(4000, 1);
CREATE TEMP TABLE ts_q AS SELECT * FROM ts_s ORDER BY features::text LIMIT 200;
SELECT lives_ok($$SELECT mtms_create_model('ts_m', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'create a model');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', '{user=1}')$$, '55000',
                 'model "ts_m" has not been trained', 'an untrained model does not score');
SELECT throws_ok($$SELECT * FROM mtms_evaluate('ts_m', 'ts_s')$$, '55000',
                 'model "ts_m" has not been trained', 'nor evaluate');
SELECT is((SELECT count(*)::int FROM mtms_train('ts_m', 'ts_s')), 15, 'train it');

-- ---------------------------------------------------------------------------
-- Values.
SELECT is((SELECT count(*)::int FROM ts_q, unnest('{ctr,cvr,ctcvr}'::text[]) t
            WHERE NOT (mtms_score('ts_m', scene, t, features) > 0 AND
                       mtms_score('ts_m', scene, t, features) < 1)), 0,
          'every score is a probability in (0, 1)');
SELECT cmp_ok((SELECT max(abs(mtms_score('ts_m', scene, 'ctcvr', features)
                              - mtms_score('ts_m', scene, 'ctr', features)
                                * mtms_score('ts_m', scene, 'cvr', features))) FROM ts_q),
              '<', 1e-12::float8, 'ctcvr = ctr x cvr');
SELECT cmp_ok((SELECT count(DISTINCT mtms_score('ts_m', scene, 'ctr', features))::int FROM ts_q),
              '>', 150, 'scores depend on the features');
SELECT is(mtms_score('ts_m', 'video', 'ctr', '{user=123456789,ad=123456789,hour=99}'),
          mtms_score('ts_m', 'video', 'ctr', '{}'),
          'unseen values score like no features');
SELECT cmp_ok(mtms_score('ts_m', 'video', 'cvr', '{user=123456789}'), '>', 0::float8,
              'an unseen value scores fine');
SELECT is(mtms_score('ts_m', 'feeds', 'cvr', '{user=5,ad=7,tag=1,tag=2}'),
          mtms_score('ts_m', 'feeds', 'cvr', '{tag=2,ad=7,tag=1,user=5}'),
          'the order of the features does not matter');
SELECT is((SELECT count(*)::int FROM ts_q
            WHERE mtms_score('search', 'ctr', features) <> mtms_score('ts_m', 'search', 'ctr', features)),
          0, 'the 3-argument form uses the only model');
SELECT lives_ok($$SELECT mtms_create_model('ts_other', '{search}', '{user}')$$, 'a second model');
SELECT throws_ok($$SELECT mtms_score('search', 'ctr', '{user=1}')$$, '42P08', NULL,
                 'with two models the 3-argument form needs mtms.model');
SET LOCAL mtms.model = 'ts_m';
SELECT is((SELECT count(*)::int FROM ts_q
            WHERE mtms_score('search', 'ctr', features) <> mtms_score('ts_m', 'search', 'ctr', features)),
          0, 'SET mtms.model picks the model');
SELECT throws_ok($$SELECT mtms_score('search', 'ctr', NULL)$$, '22004',
                 'argument "features" of mtms_score must not be NULL', 'NULL features, 3 arguments');
SET LOCAL mtms.model = 'ts_nope';
SELECT throws_ok($$SELECT mtms_score('search', 'ctr', '{user=1}')$$, '42704',
                 'model "ts_nope" does not exist', 'mtms.model naming no model');
SET LOCAL mtms.model = '';

-- ---------------------------------------------------------------------------
-- Errors.
SELECT throws_ok($$SELECT mtms_score('ts_nope', 'search', 'ctr', '{user=1}')$$, '42704',
                 'model "ts_nope" does not exist', 'unknown model');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'mail', 'ctr', '{user=1}')$$, '22023',
                 'scene "mail" is not a scene of model "ts_m"', 'unknown scene');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctcvr ', '{user=1}')$$, '22023',
                 'unknown task "ctcvr "', 'unknown task');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', '{age=1}')$$, '42704',
                 'feature "age=1" has field "age" that the model does not declare',
                 'undeclared field');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', '{user:1}')$$, '22P02',
                 'invalid feature "user:1": missing "="', 'malformed feature');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', '{user=1,NULL}')$$, '22004',
                 'feature array contains a NULL element', 'NULL feature');
SELECT throws_ok($$SELECT mtms_score(NULL, 'search', 'ctr', '{user=1}')$$, '22004',
                 'argument "model" of mtms_score must not be NULL', 'NULL model');
SELECT throws_ok($$SELECT mtms_score('ts_m', NULL, 'ctr', '{user=1}')$$, '22004',
                 'argument "scene" of mtms_score must not be NULL', 'NULL scene');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', NULL, '{user=1}')$$, '22004',
                 'argument "task" of mtms_score must not be NULL', 'NULL task');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', NULL)$$, '22004',
                 'argument "features" of mtms_score must not be NULL', 'NULL features');

-- the hints list the valid values
CREATE FUNCTION pg_temp.hint_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  h text;
BEGIN
  EXECUTE stmt;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;
SELECT is(pg_temp.hint_of($$SELECT mtms_score('ts_m', 'mail', 'ctr', '{user=1}')$$),
          'The model''s scenes are: search, feeds, video.', 'unknown scene: the hint lists the scenes');
SELECT is(pg_temp.hint_of($$SELECT mtms_score('ts_m', 'search', 'click', '{user=1}')$$),
          'Valid tasks are ''ctr'', ''cvr'' and ''ctcvr''.', 'unknown task: the hint lists the tasks');
SELECT matches(pg_temp.hint_of($$SELECT mtms_score('ts_m', 'search', 'ctr', '{age=1}')$$),
               'user, ad, advertiser, hour, device, tag', 'undeclared field: the hint lists the fields');

-- ---------------------------------------------------------------------------
-- mtms_evaluate against SQL, to float rounding (it runs the upper tower
-- layers of many rows as one matrix product, summing in another order than
-- one row's); the AUC also up to 10 pairs of a positive and a negative
-- whose scores are equal to float rounding and come out in the other order.
CREATE TEMP TABLE ts_e AS SELECT * FROM mtms_evaluate('ts_m', 'ts_s');
CREATE TEMP TABLE ts_ref AS
SELECT scene, task, count(*) AS n, count(*) FILTER (WHERE y) AS positives,
       mtms_auc(p, y) AS auc,
       avg(CASE WHEN y THEN -ln(least(greatest(p, 1e-7), 1 - 1e-7))
                ELSE -ln(1 - least(greatest(p, 1e-7), 1 - 1e-7)) END) AS logloss,
       avg(abs(p - y::int)) AS mae,
       avg(p) / nullif(avg(y::int), 0) AS calibration
  FROM (SELECT scene, t.task, mtms_score('ts_m', scene, t.task, features) AS p,
               CASE t.task WHEN 'ctr' THEN click WHEN 'cvr' THEN conversion
                           ELSE click AND conversion END AS y
          FROM ts_s, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
         WHERE t.task <> 'cvr' OR click) s
 GROUP BY scene, task;
SELECT results_eq(
    $$SELECT scene, task FROM ts_e$$,
    $$SELECT s, t FROM unnest('{search,feeds,video}'::text[]) WITH ORDINALITY AS a(s, i),
                       unnest('{ctr,cvr,ctcvr}'::text[]) WITH ORDINALITY AS b(t, j) ORDER BY i, j$$,
    'one row per scene and task');
SELECT set_eq($$SELECT scene, task, n, positives FROM ts_e$$,
              $$SELECT scene, task, n, positives FROM ts_ref$$,
              'n and positives as counted in SQL (CVR on clicked rows)');
SELECT is((SELECT count(*)::int FROM ts_e e JOIN ts_ref r USING (scene, task)
            WHERE NOT (e.auc IS NOT DISTINCT FROM r.auc
                       OR abs(e.auc - r.auc) <= 10.0 / (r.positives * (r.n - r.positives)))), 0,
          'AUC = mtms_auc(mtms_score, label)');
SELECT is((SELECT count(*)::int FROM ts_e e JOIN ts_ref r USING (scene, task)
            WHERE NOT abs(e.logloss - r.logloss) < 1e-6), 0, 'logloss = mean clamped BCE');
SELECT is((SELECT count(*)::int FROM ts_e e JOIN ts_ref r USING (scene, task)
            WHERE NOT abs(e.mae - r.mae) < 1e-6), 0, 'MAE = mean |p - label|');
SELECT is((SELECT count(*)::int FROM ts_e e JOIN ts_ref r USING (scene, task)
            WHERE NOT (e.calibration IS NOT DISTINCT FROM r.calibration
                       OR abs(e.calibration - r.calibration) < 1e-6)), 0,
          'calibration = mean prediction / mean label');
SELECT throws_ok($$SELECT * FROM mtms_evaluate('ts_m', NULL)$$, '22004', NULL, 'NULL samples');
SELECT throws_ok($$SELECT * FROM mtms_evaluate('ts_nope', 'ts_s')$$, '42704', NULL, 'unknown model');
CREATE TEMP VIEW ts_v AS SELECT scene, features, click FROM ts_s;
SELECT throws_like($$SELECT * FROM mtms_evaluate('ts_m', 'ts_v')$$, '% has no column "conversion"',
                   'a relation without conversion');

-- ---------------------------------------------------------------------------
-- The cache follows the catalog within the transaction.
CREATE TEMP TABLE ts_v1 AS SELECT mtms_score('ts_m', 'search', 'ctr', '{user=1,ad=2,tag=3}') AS p;
SAVEPOINT before_retrain;
SELECT is((SELECT count(*)::int FROM mtms_train('ts_m', 'ts_q')), 15, 'retrain on other rows');
SELECT isnt(mtms_score('ts_m', 'search', 'ctr', '{user=1,ad=2,tag=3}'), (SELECT p FROM ts_v1),
            'the new version scores at once');
ROLLBACK TO SAVEPOINT before_retrain;
SELECT is(mtms_score('ts_m', 'search', 'ctr', '{user=1,ad=2,tag=3}'), (SELECT p FROM ts_v1),
          'rolled back: the old version scores again');
SELECT lives_ok($$SELECT count(*) FROM mtms_train('ts_m', 'ts_q')$$, 'retrain and keep it');
SELECT lives_ok($$SELECT mtms_rollback('ts_m', 1)$$, 'roll back to version 1');
SELECT is(mtms_score('ts_m', 'search', 'ctr', '{user=1,ad=2,tag=3}'), (SELECT p FROM ts_v1),
          'version 1 scores again');
SELECT lives_ok($$SELECT mtms_drop_model('ts_m')$$, 'drop the model');
SELECT throws_ok($$SELECT mtms_score('ts_m', 'search', 'ctr', '{user=1}')$$, '42704', NULL,
                 'a dropped model does not score from the cache');

SELECT * FROM finish();
ROLLBACK;
