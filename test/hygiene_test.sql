-- pgTAP: feature hygiene (the model options min_count and ttl_slots,
-- src/feature_hygiene.c) on hand-made samples with known feature counts.
-- Admission after min_count sightings counted per (scene, task) pair and
-- over trainings, the candidates' counts, scores of features not admitted,
-- eviction after ttl_slots trainings unseen, both options off (and
-- min_count 1) giving the very parameters of a model without them, the
-- same model with 0 and 2 parallel workers, and bad option values.
BEGIN;
SELECT plan(35);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- ---------------------------------------------------------------------------
-- Samples.  Scene s, fields user and ad.  Filler: 60 rows over users u0..u3
-- (15 each; clicks on every fifth row: 3 per user) and ads a0, a1.  Day 1
-- adds user x1 once, x2 twice, x3 three times and x5 five times (clicked on
-- even k: x3 once, x5 twice).  Every row trains (validation_fraction 0.001
-- puts none of these rows in validation; finetune_fraction 0).
CREATE TEMP TABLE hy_fill AS
SELECT 's'::text AS scene, ARRAY['user=u' || (i % 4), 'ad=a' || (i % 2)] AS features,
       (i % 5 = 0) AS click, (i % 10 = 0) AS conversion
  FROM generate_series(1, 60) i;
CREATE TEMP TABLE hy_d1 AS
SELECT * FROM hy_fill
UNION ALL
SELECT 's', ARRAY['user=' || u, 'ad=a' || (k % 2)], k % 2 = 0, false
  FROM (VALUES ('x1', 1), ('x2', 2), ('x3', 3), ('x5', 5)) AS t(u, n), generate_series(1, n) k;
-- day 2: x1 and x2 once more each
CREATE TEMP TABLE hy_d2 AS
SELECT * FROM hy_fill
UNION ALL SELECT 's', '{user=x1,ad=a0}', false, false
UNION ALL SELECT 's', '{user=x2,ad=a1}', false, false;

-- The users that have rows in a pair of a version, and their counts.
CREATE FUNCTION pg_temp.users(m text, v int, t text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(u ORDER BY u), '{}')
      FROM (VALUES ('u0'), ('u1'), ('u2'), ('u3'), ('x1'), ('x2'), ('x3'), ('x5'),
                   ('y1'), ('y2'), ('y3')) AS n(u)
      JOIN mtms_embedding e ON e.feature = mtms_feature_hash('user=' || u)
      JOIN mtms_model mm ON mm.model_id = e.model_id
     WHERE mm.name = m AND e.version = v AND e.task = t $$;
CREATE FUNCTION pg_temp.seen(m text, v int, t text, f text) RETURNS bigint LANGUAGE sql AS $$
    SELECT seen FROM mtms_embedding e JOIN mtms_model mm USING (model_id)
     WHERE mm.name = m AND e.version = v AND e.task = t AND e.feature = mtms_feature_hash(f) $$;
CREATE FUNCTION pg_temp.candidate(m text, v int, t text, f text) RETURNS bigint LANGUAGE sql AS $$
    SELECT seen FROM mtms_feature_count c JOIN mtms_model mm USING (model_id)
     WHERE mm.name = m AND c.version = v AND c.task = t AND c.feature = mtms_feature_hash(f) $$;

-- ---------------------------------------------------------------------------
-- Options.
SELECT mtms_create_model('hy_plain', '{s}', '{user,ad}');
SELECT is((SELECT array[options->'min_count', options->'ttl_slots']::text[]
             FROM mtms_model WHERE name = 'hy_plain'),
          '{0,0}', 'min_count and ttl_slots default to 0 (off) and are stored');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"min_count": -1}')$$,
                 '22023', 'option "min_count" must be an integer between 0 and 1000000 (0 means off), got -1',
                 'min_count -1 is refused');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"min_count": 2.5}')$$,
                 '22023', 'option "min_count" must be an integer between 0 and 1000000 (0 means off), got 2.5',
                 'min_count 2.5 is refused');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"min_count": "3"}')$$,
                 '22023', 'option "min_count" must be an integer between 0 and 1000000 (0 means off), got "3"',
                 'min_count "3" is refused');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"ttl_slots": -2}')$$,
                 '22023', 'option "ttl_slots" must be an integer between 0 and 100000 (0 means off), got -2',
                 'ttl_slots -2 is refused');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"ttl_slots": true}')$$,
                 '22023', 'option "ttl_slots" must be an integer between 0 and 100000 (0 means off), got true',
                 'ttl_slots true is refused');
SELECT throws_ok($$SELECT mtms_create_model('hy_bad', '{s}', '{u}', options => '{"ttl_slots": 100001}')$$,
                 '22023', 'option "ttl_slots" must be an integer between 0 and 100000 (0 means off), got 100001',
                 'ttl_slots over 100000 is refused');
SELECT is((SELECT count(*)::int FROM mtms_model WHERE name = 'hy_bad'), 0, 'no model was created');

-- ---------------------------------------------------------------------------
-- min_count 3, counted per pair (ctcvr off: the CVR pair counts clicked rows).
SELECT mtms_create_model('hy_min', '{s}', '{user,ad}', 4, '{8}',
    '{"min_count": 3, "ctcvr": false, "validation_fraction": 0.001, "finetune_fraction": 0,
      "max_epochs": 2, "batch_size": 16}');
SELECT is((SELECT sum(samples)::int FROM mtms_train('hy_min', 'hy_d1') WHERE phase = 'embedding' AND task = 'ctr'),
          71, 'day 1: all 71 rows train phase 1');
SELECT is(pg_temp.users('hy_min', 1, 'ctr'), '{u0,u1,u2,u3,x3,x5}',
          'CTR: exactly the users seen at least 3 times have rows');
SELECT is(pg_temp.users('hy_min', 1, 'cvr'), '{u0,u1,u2,u3}',
          'CVR: exactly the users clicked at least 3 times have rows (x3 once, x5 twice)');
SELECT is(ARRAY[pg_temp.seen('hy_min', 1, 'ctr', 'user=x3'), pg_temp.seen('hy_min', 1, 'ctr', 'user=x5'),
                pg_temp.seen('hy_min', 1, 'ctr', 'user=u0'), pg_temp.seen('hy_min', 1, 'cvr', 'user=u0')],
          '{3,5,15,3}'::bigint[], 'each row keeps its sightings in its pair');
SELECT is((SELECT count(*)::int FROM mtms_embedding JOIN mtms_model USING (model_id)
            WHERE name = 'hy_min' AND last_seen <> 1), 0, 'every row of version 1 was last seen in slot 1');
SELECT is(ARRAY[pg_temp.candidate('hy_min', 1, 'ctr', 'user=x1'), pg_temp.candidate('hy_min', 1, 'ctr', 'user=x2'),
                pg_temp.candidate('hy_min', 1, 'cvr', 'user=x5'), pg_temp.candidate('hy_min', 1, 'ctr', 'user=x3')],
          ARRAY[1, 2, 2, NULL]::bigint[], 'features not admitted are candidates with their counts');

-- scores: a feature without rows pools as zero, exactly as an unseen one
SELECT is((SELECT array_agg(mtms_score('hy_min', 's', t, '{user=x1,ad=a0}') ORDER BY t)
             FROM unnest('{ctr,cvr,ctcvr}'::text[]) t),
          (SELECT array_agg(mtms_score('hy_min', 's', t, '{user=never_seen,ad=a0}') ORDER BY t)
             FROM unnest('{ctr,cvr,ctcvr}'::text[]) t),
          'scores with a feature not admitted equal those with an unseen feature');
SELECT is(mtms_score('hy_min', 's', 'ctr', '{user=x2,ad=a1}'), mtms_score('hy_min', 's', 'ctr', '{user=nobody,ad=a1}'),
          'so does x2, seen twice');
SELECT isnt(mtms_score('hy_min', 's', 'ctr', '{user=x5,ad=a1}'), mtms_score('hy_min', 's', 'ctr', '{user=nobody,ad=a1}'),
            'an admitted feature scores with its rows');

-- day 2: x2's third sighting admits it; x1 (2 sightings) still waits
SELECT lives_ok($$SELECT * FROM mtms_train('hy_min', 'hy_d2')$$, 'day 2 trains');
SELECT is(pg_temp.users('hy_min', 2, 'ctr'), '{u0,u1,u2,u3,x2,x3,x5}',
          'day 2: x2 is admitted once its count reaches 3 over two trainings');
SELECT is(ARRAY[pg_temp.seen('hy_min', 2, 'ctr', 'user=x2'), pg_temp.candidate('hy_min', 2, 'ctr', 'user=x1'),
                pg_temp.candidate('hy_min', 2, 'ctr', 'user=x2'), pg_temp.seen('hy_min', 2, 'ctr', 'user=x3')],
          ARRAY[3, 2, NULL, 3]::bigint[],
          'x2''s row carries its 3 sightings, x1 stays a candidate with 2, unseen x3 keeps 3');
SELECT is((SELECT array_agg(DISTINCT last_seen ORDER BY last_seen) FROM mtms_feature_count JOIN mtms_model USING (model_id)
            WHERE name = 'hy_min' AND version = 2 AND feature = mtms_feature_hash('user=x1')),
          '{2}'::int[], 'a candidate seen again is stamped with the new slot');

-- day 3 scanned (rows not kept in memory): nothing is counted, so x1, seen a
-- third time, is not admitted, no other feature gets rows, and the
-- candidates are carried over
CREATE TEMP TABLE hy_d3 AS SELECT * FROM hy_d2 UNION ALL SELECT 's', '{user=x9,ad=a0}', true, false;
SET LOCAL mtms.keep_training_rows = off;
SELECT lives_ok($$SELECT * FROM mtms_train('hy_min', 'hy_d3')$$, 'day 3 trains by scanning');
RESET mtms.keep_training_rows;
SELECT is(ARRAY[array_to_string(pg_temp.users('hy_min', 3, 'ctr'), ','),
                pg_temp.candidate('hy_min', 3, 'ctr', 'user=x1')::text,
                pg_temp.candidate('hy_min', 3, 'ctr', 'user=x9')::text],
          ARRAY['u0,u1,u2,u3,x2,x3,x5', '2', NULL],
          'a scanning training admits no feature and carries the candidates over');

-- ---------------------------------------------------------------------------
-- ttl_slots 2: y1 seen on day 1 only, y2 every day, y3 on days 1 and 3.
CREATE TEMP TABLE hy_t1 AS SELECT * FROM hy_fill
    UNION ALL SELECT 's', ARRAY['user=' || u, 'ad=a0'], true, false FROM unnest('{y1,y2,y3}'::text[]) u;
CREATE TEMP TABLE hy_t2 AS SELECT * FROM hy_fill UNION ALL SELECT 's', '{user=y2,ad=a1}', false, false;
CREATE TEMP TABLE hy_t3 AS SELECT * FROM hy_fill
    UNION ALL SELECT 's', ARRAY['user=' || u, 'ad=a1'], false, false FROM unnest('{y2,y3}'::text[]) u;
SELECT mtms_create_model('hy_ttl', '{s}', '{user,ad}', 4, '{8}',
    '{"ttl_slots": 2, "validation_fraction": 0.001, "finetune_fraction": 0, "max_epochs": 2,
      "batch_size": 16, "keep_versions": 3}');
SELECT lives_ok($$SELECT * FROM mtms_train('hy_ttl', 'hy_t1'); SELECT * FROM mtms_train('hy_ttl', 'hy_t2')$$,
                'two trainings with ttl_slots 2');
SELECT is(pg_temp.users('hy_ttl', 2, 'ctr'), '{u0,u1,u2,u3,y1,y2,y3}',
          'after one training without them, y1 and y3 keep their rows');
SELECT lives_ok($$SELECT * FROM mtms_train('hy_ttl', 'hy_t3')$$, 'a third training');
SELECT is(pg_temp.users('hy_ttl', 3, 'ctr'), '{u0,u1,u2,u3,y2,y3}',
          'y1, absent from 2 trainings, is gone from version 3; y3, seen again, stays');
SELECT is(pg_temp.users('hy_ttl', 3, 'cvr'), '{u0,u1,u2,u3,y2,y3}', 'in every pair');
SELECT is((SELECT array_agg(last_seen ORDER BY u) FROM unnest('{y2,y3,u0}'::text[]) u
             JOIN mtms_embedding e ON e.feature = mtms_feature_hash('user=' || u)
             JOIN mtms_model m USING (model_id)
            WHERE m.name = 'hy_ttl' AND e.version = 3 AND e.task = 'ctr'),
          '{3,3,3}'::int[], 'rows seen in slot 3 are stamped 3');
SELECT is(mtms_score('hy_ttl', 's', 'ctr', '{user=y1,ad=a0}'), mtms_score('hy_ttl', 's', 'ctr', '{user=never,ad=a0}'),
          'an evicted feature scores as an unseen one');

-- ---------------------------------------------------------------------------
-- Off is the old behaviour: the parameters of a model without the options,
-- bit for bit; so are min_count 1 (every seen feature admitted) and a long
-- ttl_slots.  Then 0 and 2 parallel workers give the same model, statistics
-- and candidates.
CREATE TEMP TABLE hy_syn AS SELECT * FROM mtms_synthetic_samples(3000, 3);
CREATE TEMP TABLE hy_syn1 AS SELECT * FROM hy_syn WHERE slot <= 4;
CREATE TEMP TABLE hy_syn2 AS SELECT * FROM hy_syn WHERE slot > 4;
CREATE FUNCTION pg_temp.make_and_train(m text, opts jsonb, workers int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('mtms.train_workers', workers::text, true);
    PERFORM mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
        '{"max_epochs": 2, "batch_size": 64}'::jsonb || opts);
    PERFORM * FROM mtms_train(m, 'hy_syn1');
    PERFORM * FROM mtms_train(m, 'hy_syn2');
END $$;
-- what a version's parameters are, without the model's id
CREATE FUNCTION pg_temp.params(m text) RETURNS TABLE(k text, v text) LANGUAGE sql AS $$
    SELECT concat_ws('/', e.version, scene, task, field, feature), concat_ws('/', vector, accum)
      FROM mtms_embedding e JOIN mtms_model USING (model_id) WHERE name = m
    UNION ALL
    SELECT concat_ws('/', t.version, phase, scene, task, layer), concat_ws('/', weights, bias)
      FROM mtms_tower t JOIN mtms_model USING (model_id) WHERE name = m $$;
CREATE FUNCTION pg_temp.stats(m text) RETURNS TABLE(k text, v text) LANGUAGE sql AS $$
    SELECT concat_ws('/', e.version, scene, task, feature), concat_ws('/', seen, last_seen)
      FROM mtms_embedding e JOIN mtms_model USING (model_id) WHERE name = m
    UNION ALL
    SELECT concat_ws('/', 'candidate', c.version, scene, task, feature), concat_ws('/', seen, last_seen)
      FROM mtms_feature_count c JOIN mtms_model USING (model_id) WHERE name = m $$;
SELECT pg_temp.make_and_train('hy_off', '{}', 0);
SELECT pg_temp.make_and_train('hy_zero', '{"min_count": 0, "ttl_slots": 0}', 0);
SELECT pg_temp.make_and_train('hy_one', '{"min_count": 1, "ttl_slots": 1000}', 0);
SELECT cmp_ok((SELECT count(*)::int FROM pg_temp.params('hy_off')), '>', 1000, 'the reference model has parameters');
SELECT is((SELECT count(*)::int FROM ((SELECT * FROM pg_temp.params('hy_off') EXCEPT SELECT * FROM pg_temp.params('hy_zero'))
                                       UNION ALL (SELECT * FROM pg_temp.params('hy_zero') EXCEPT SELECT * FROM pg_temp.params('hy_off'))) d),
          0, 'min_count 0 and ttl_slots 0: bit-identical parameters to a model without the options');
SELECT is((SELECT count(*)::int FROM ((SELECT * FROM pg_temp.params('hy_off') EXCEPT SELECT * FROM pg_temp.params('hy_one'))
                                       UNION ALL (SELECT * FROM pg_temp.params('hy_one') EXCEPT SELECT * FROM pg_temp.params('hy_off'))) d),
          0, 'min_count 1 and a long ttl_slots: bit-identical parameters too');

SELECT pg_temp.make_and_train('hy_w0', '{"min_count": 2, "ttl_slots": 1}', 0);
SELECT pg_temp.make_and_train('hy_w2', '{"min_count": 2, "ttl_slots": 1}', 2);
SELECT is((SELECT count(*)::int FROM ((SELECT * FROM pg_temp.params('hy_w0') EXCEPT SELECT * FROM pg_temp.params('hy_w2'))
                                       UNION ALL (SELECT * FROM pg_temp.params('hy_w2') EXCEPT SELECT * FROM pg_temp.params('hy_w0'))
                                       UNION ALL (SELECT * FROM pg_temp.stats('hy_w0') EXCEPT SELECT * FROM pg_temp.stats('hy_w2'))
                                       UNION ALL (SELECT * FROM pg_temp.stats('hy_w2') EXCEPT SELECT * FROM pg_temp.stats('hy_w0'))) d),
          0, 'with min_count and ttl_slots, 0 and 2 workers give the same parameters, statistics and candidates');
SELECT cmp_ok((SELECT count(*)::int FROM pg_temp.params('hy_w0')), '<', (SELECT count(*)::int FROM pg_temp.params('hy_off')),
              'and a smaller model than without them');

SELECT * FROM finish();
ROLLBACK;
