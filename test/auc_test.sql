-- pgTAP: the exact ROC AUC aggregate mtms_auc(score, label) against
-- hand-computed cases, and the same result under a parallel plan.
BEGIN;
SELECT plan(16);

SELECT has_function('mtms_auc', ARRAY['double precision', 'boolean']);
SELECT is((SELECT prokind FROM pg_proc WHERE proname = 'mtms_auc'), 'a', 'mtms_auc is an aggregate');
SELECT is((SELECT proparallel FROM pg_proc WHERE proname = 'mtms_auc'), 's', 'mtms_auc is parallel safe');
SELECT isnt((SELECT aggcombinefn FROM pg_aggregate WHERE aggfnoid = 'mtms_auc'::regproc), 0::regproc,
            'mtms_auc has a combine function');

SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.9, true), (0.7, true), (0.3, false), (0.1, false)) v(s, l)),
          1::float8, 'perfect ranking: 1');
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.9, false), (0.7, false), (0.3, true), (0.1, true)) v(s, l)),
          0::float8, 'reversed ranking: 0');
SELECT is((SELECT mtms_auc(0.25, l) FROM (VALUES (true), (false), (false), (true), (false)) v(l)),
          0.5::float8, 'all scores tied: 0.5');
-- positives {0.8, 0.6, 0.4}, negatives {0.6, 0.2}:
-- 0.8 beats both (2), 0.6 ties one and beats one (1.5), 0.4 beats one (1): 4.5 / 6
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.8, true), (0.6, true), (0.4, true),
                                              (0.6, false), (0.2, false)) v(s, l)),
          0.75::float8, 'mixed example with a tie: 4.5 / 6');
-- positives {3, 1}, negatives {2, 2, 0}: 3 beats 3, 1 beats 1: 4 / 6
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (3, true), (1, true), (2, false), (2, false), (0, false)) v(s, l)),
          4 / 6::float8, 'mixed example: 4 / 6');
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.8, true), (NULL, false), (0.2, false), (0.1, NULL),
                                              (0.9, NULL)) v(s, l)),
          1::float8, 'NULL scores and labels are skipped');
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.8, true), (0.2, true)) v(s, l)),
          NULL::float8, 'no negatives: NULL');
SELECT is((SELECT mtms_auc(s, l) FROM (VALUES (0.8, false), (NULL, true)) v(s, l)),
          NULL::float8, 'no (non-NULL) positives: NULL');

-- Parallel: partial states are serialized, combined, and give the same AUC.
CREATE TABLE auc_tap AS
SELECT (abs(hashint4(i)) % 1000) / 1000.0::float8 AS score,
       abs(hashint4(i)) % 1000 + abs(hashint4(-i)) % 1500 > 1300 AS label
  FROM generate_series(1, 200000) i;
ANALYZE auc_tap;
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END $$;

SET LOCAL max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE auc_serial AS SELECT mtms_auc(score, label) AS auc FROM auc_tap;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 4;
SELECT matches(pg_temp.plan_of('SELECT mtms_auc(score, label) FROM auc_tap'),
               'Partial Aggregate.*Parallel Seq Scan',
               'the aggregate runs in a parallel plan');
SELECT is((SELECT mtms_auc(score, label) FROM auc_tap), (SELECT auc FROM auc_serial),
          'same AUC under the parallel plan');
SELECT ok((SELECT auc BETWEEN 0.6 AND 0.9 FROM auc_serial), 'and it is a plausible AUC');
SELECT is((SELECT array_agg(a ORDER BY g) FROM (SELECT score > 0.5 AS g, mtms_auc(score, label) AS a
                                                  FROM auc_tap GROUP BY 1) x),
          (SELECT array_agg(a ORDER BY g) FROM (SELECT score > 0.5 AS g, mtms_auc(score, label) AS a
                                                  FROM (SELECT * FROM auc_tap ORDER BY score) o GROUP BY 1) x),
          'grouped, parallel or not, the same per group');

SELECT * FROM finish();
ROLLBACK;
