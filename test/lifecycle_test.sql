-- pgTAP: the model lifecycle.  Daily time slots (warm start from the active
-- version, version N+1, what mtms_versions records), rollback, keep_versions
-- pruning (with a rollback in between), a new scene and a new field without
-- regression (bit-identical embeddings and scores, the old fields' rows
-- untouched, no scene worse on validation), and the lifecycle errors.
BEGIN;
SELECT plan(63);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- A small world over three days, with many clicks and conversions.
CREATE TEMP TABLE tl_all AS
SELECT * FROM mtms_synthetic_samples(9000, 5,
    '{"slots": 3, "ctr": 0.15, "cvr": 0.3, "users": 400, "ads": 100, "advertisers": 30,
      "tags": 20, "scene_weights": [0.45, 0.35, 0.2]}');
CREATE TEMP VIEW tl_day1 AS SELECT * FROM tl_all WHERE slot = 1;
CREATE TEMP VIEW tl_day2 AS SELECT * FROM tl_all WHERE slot = 2;
CREATE TEMP VIEW tl_day3 AS SELECT * FROM tl_all WHERE slot = 3;
CREATE TEMP VIEW tl_days12 AS SELECT * FROM tl_all WHERE slot <= 2;
CREATE TEMP TABLE tl_probe AS
SELECT row_number() OVER (ORDER BY scene, features::text) AS id, scene, features
  FROM (SELECT *, row_number() OVER (PARTITION BY scene ORDER BY features::text) AS rn FROM tl_day3) s
 WHERE rn <= 15;
CREATE FUNCTION pg_temp.tl_scores(p_model text, p_scenes text[] DEFAULT '{search,feeds,video}',
                                  p_drop_field text DEFAULT NULL)
RETURNS TABLE(id bigint, task text, p float8) LANGUAGE sql AS $$
SELECT q.id, t.task,
       mtms_score(p_model, q.scene, t.task,
                  array(SELECT f FROM unnest(q.features) f
                         WHERE p_drop_field IS NULL OR f NOT LIKE p_drop_field || '=%'))
  FROM tl_probe q, unnest('{ctr,cvr,ctcvr}'::text[]) AS t(task)
 WHERE q.scene = ANY (p_scenes)
$$;
-- how many probe scores differ from a stored set
CREATE FUNCTION pg_temp.tl_changed(p_now regclass, p_then regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM %s a FULL JOIN %s b USING (id, task)
                   WHERE a.p IS DISTINCT FROM b.p', p_now, p_then) INTO n;
  RETURN n;
END $$;
CREATE FUNCTION pg_temp.tl_emb_md5(p_model text, p_version int, p_scene text, p_task text)
RETURNS text LANGUAGE sql AS $$
SELECT md5(string_agg(format('%s/%s/%s/%s', e.field, e.feature, e.vector, e.accum), ','
                      ORDER BY e.feature))
  FROM mtms_embedding e
 WHERE e.model_id = mtms_model_id(p_model) AND e.version = p_version
   AND e.scene = p_scene AND e.task = p_task
$$;
-- a scene's validation criterion (sum of its ctr, cvr, ctcvr validation losses)
CREATE FUNCTION pg_temp.tl_crit(p_metrics jsonb, p_scene text) RETURNS float8 LANGUAGE sql AS $$
SELECT sum((t.value->>'valid_loss')::float8) FROM jsonb_each(p_metrics->p_scene) t
$$;
CREATE FUNCTION pg_temp.tl_metrics(p_model text, p_version int) RETURNS jsonb LANGUAGE sql AS $$
SELECT metrics FROM mtms_versions(p_model) WHERE version = p_version
$$;

-- ---------------------------------------------------------------------------
-- Time slots.
SELECT lives_ok($$SELECT mtms_create_model('tl_m', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'create a model');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_m', 'tl_day1')), 15, 'day 1: every phase, scene and task');
CREATE TEMP TABLE tl_m_v1 AS SELECT * FROM pg_temp.tl_scores('tl_m');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_m', 'tl_day2')), 15, 'day 2: every phase, scene and task');
CREATE TEMP TABLE tl_m_v2 AS SELECT * FROM pg_temp.tl_scores('tl_m');
SELECT results_eq(
    $$SELECT version, active, samples_relation FROM mtms_versions('tl_m')$$,
    $$VALUES (1, false, 'tl_day1'), (2, true, 'tl_day2')$$,
    'day 2 is version 2, active; each version names its samples');
SELECT is((SELECT active_version FROM mtms_model WHERE name = 'tl_m'), 2, 'active_version is 2');
SELECT results_eq(
    $$SELECT samples FROM mtms_versions('tl_m') ORDER BY version$$,
    $$SELECT count(*) FROM tl_all WHERE slot <= 2 GROUP BY slot ORDER BY slot$$,
    'samples: the rows of each day');
SELECT is((SELECT count(*)::int FROM mtms_versions('tl_m') WHERE trained_at = now()), 2,
          'trained_at: the time of the training''s transaction');
SELECT results_eq(
    $$SELECT v.version, count(*)::int,
             bool_and((t.value->>'valid_loss')::float8 > 0 AND (t.value->>'valid_auc')::float8 BETWEEN 0 AND 1)
        FROM mtms_versions('tl_m') v, jsonb_each(v.metrics) s, jsonb_each(s.value) t
       WHERE s.key IN ('search', 'feeds', 'video') AND t.key IN ('ctr', 'cvr', 'ctcvr')
       GROUP BY 1 ORDER BY 1$$,
    $$VALUES (1, 9, true), (2, 9, true)$$,
    'metrics: valid_loss and valid_auc for every scene and task');
SELECT is((SELECT count(*)::int
             FROM (SELECT scene, task, feature FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tl_m') AND version = 1
                   EXCEPT
                   SELECT scene, task, feature FROM mtms_embedding
                    WHERE model_id = mtms_model_id('tl_m') AND version = 2) x), 0,
          'warm start: every embedding row of version 1 is in version 2');
SELECT is((SELECT count(*)::int
             FROM mtms_embedding a JOIN mtms_embedding b USING (model_id, scene, task, feature)
            WHERE a.model_id = mtms_model_id('tl_m') AND a.version = 1 AND b.version = 2
              AND b.accum < a.accum), 0,
          'warm start: no Adagrad accumulator went down from version 1 to 2');
SELECT cmp_ok((SELECT count(*)::int
                 FROM mtms_embedding a JOIN mtms_embedding b USING (model_id, scene, task, feature)
                WHERE a.model_id = mtms_model_id('tl_m') AND a.version = 1 AND b.version = 2
                  AND b.accum > a.accum), '>', 500,
              'day 2 trained on from version 1: many accumulators grew');
SELECT cmp_ok(pg_temp.tl_changed('tl_m_v1', 'tl_m_v2'), '>', 100::bigint, 'version 2 scores differently');

-- ---------------------------------------------------------------------------
-- Rollback.
SELECT lives_ok($$SELECT mtms_rollback('tl_m', 1)$$, 'roll back to version 1');
SELECT results_eq($$SELECT version, active FROM mtms_versions('tl_m')$$,
                  $$VALUES (1, true), (2, false)$$, 'the active flag moved to version 1');
CREATE TEMP TABLE tl_now AS SELECT * FROM pg_temp.tl_scores('tl_m');
SELECT is(pg_temp.tl_changed('tl_now', 'tl_m_v1'), 0::bigint, 'scores are version 1''s, bit for bit');
SELECT throws_ok($$SELECT mtms_rollback('tl_m', 3)$$, '42704',
                 'version 3 of model "tl_m" does not exist', 'rollback to a version never trained');
SELECT lives_ok($$SELECT mtms_rollback('tl_m', 2)$$, 'roll forward to version 2');
DROP TABLE tl_now;
CREATE TEMP TABLE tl_now AS SELECT * FROM pg_temp.tl_scores('tl_m');
SELECT is(pg_temp.tl_changed('tl_now', 'tl_m_v2'), 0::bigint, 'scores are version 2''s again');

-- ---------------------------------------------------------------------------
-- keep_versions.
CREATE TEMP VIEW tl_day3x AS SELECT scene, features || 'hour=99'::text AS features, click, conversion
  FROM tl_day3;
SELECT lives_ok($$SELECT mtms_create_model('tl_k', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 2}')$$,
                'a model keeping 2 versions');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_k', 'tl_day1')) +
          (SELECT count(*)::int FROM mtms_train('tl_k', 'tl_day2')) +
          (SELECT count(*)::int FROM mtms_train('tl_k', 'tl_day3x')), 45, 'three days trained');
SELECT results_eq($$SELECT version, active FROM mtms_versions('tl_k')$$,
                  $$VALUES (2, false), (3, true)$$, 'keep_versions 2: versions 2 and 3 remain');
SELECT results_eq(
    $$SELECT (SELECT array_agg(DISTINCT version ORDER BY version) FROM mtms_version WHERE model_id = mtms_model_id('tl_k')),
             (SELECT array_agg(DISTINCT version ORDER BY version) FROM mtms_embedding WHERE model_id = mtms_model_id('tl_k')),
             (SELECT array_agg(DISTINCT version ORDER BY version) FROM mtms_tower WHERE model_id = mtms_model_id('tl_k'))$$,
    $$VALUES ('{2,3}'::int[], '{2,3}'::int[], '{2,3}'::int[])$$,
    'version 1''s rows are gone from mtms_version, mtms_embedding and mtms_tower');
SELECT throws_ok($$SELECT mtms_rollback('tl_k', 1)$$, '42704',
                 'version 1 of model "tl_k" does not exist', 'a pruned version cannot be rolled back to');
SELECT lives_ok($$SELECT mtms_rollback('tl_k', 2)$$, 'roll back to version 2');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_k', 'tl_day1')), 15, 'train after the rollback');
SELECT results_eq($$SELECT version, active FROM mtms_versions('tl_k')$$,
                  $$VALUES (3, false), (4, true)$$, 'the new version is active; 3 and 4 are kept');
SELECT results_eq(
    $$SELECT DISTINCT version FROM mtms_embedding
       WHERE model_id = mtms_model_id('tl_k') AND feature = mtms_feature_hash('hour=99')
       ORDER BY 1$$,
    $$VALUES (3)$$,
    'version 4 started from the active version 2, not from version 3 (no row of 3''s marker feature)');
SELECT lives_ok($$SELECT mtms_create_model('tl_k1', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 1}')$$,
                'a model keeping 1 version');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_k1', 'tl_day1')) +
          (SELECT count(*)::int FROM mtms_train('tl_k1', 'tl_day2')), 30, 'two days trained');
SELECT results_eq(
    $$SELECT (SELECT array_agg(DISTINCT version) FROM mtms_version WHERE model_id = mtms_model_id('tl_k1')),
             (SELECT array_agg(DISTINCT version) FROM mtms_embedding WHERE model_id = mtms_model_id('tl_k1')),
             (SELECT array_agg(DISTINCT version) FROM mtms_tower WHERE model_id = mtms_model_id('tl_k1')),
             (SELECT active_version FROM mtms_model WHERE name = 'tl_k1')$$,
    $$VALUES ('{2}'::int[], '{2}'::int[], '{2}'::int[], 2)$$,
    'keep_versions 1: only the active version and its rows');

-- ---------------------------------------------------------------------------
-- A new scene.
CREATE TEMP VIEW tl_days12_sf AS SELECT * FROM tl_days12 WHERE scene <> 'video';
SELECT lives_ok($$SELECT mtms_create_model('tl_s', '{search,feeds}',
                    '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'a model of search and feeds');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_s', 'tl_days12_sf')), 10, 'trained on search and feeds');
CREATE TEMP TABLE tl_s_v1 AS SELECT * FROM pg_temp.tl_scores('tl_s', '{search,feeds}');
CREATE TEMP TABLE tl_s_m1 AS SELECT pg_temp.tl_metrics('tl_s', 1) AS metrics;
CREATE TEMP TABLE tl_s_md5 AS
SELECT sc AS scene, tk AS task, pg_temp.tl_emb_md5('tl_s', 1, sc, tk) AS md5
  FROM unnest('{search,feeds}'::text[]) sc, unnest('{ctr,cvr}'::text[]) tk;
SELECT lives_ok($$SELECT mtms_add_scene('tl_s', 'video')$$, 'add the scene video');
CREATE TEMP TABLE tl_s_now AS SELECT * FROM pg_temp.tl_scores('tl_s', '{search,feeds}');
SELECT is(pg_temp.tl_changed('tl_s_now', 'tl_s_v1'), 0::bigint,
          'after mtms_add_scene, existing scenes score bit-identically');
SELECT results_eq(
    $$SELECT phase, scene, task FROM mtms_train('tl_s', 'tl_days12', scenes => '{video}', phases => 'embedding')$$,
    $$VALUES ('embedding', 'video', 'ctr'), ('embedding', 'video', 'cvr'), ('ctcvr', 'video', 'ctcvr')$$,
    'phase 1 for video only');
SELECT is((SELECT count(*)::int FROM tl_s_md5 h
            WHERE pg_temp.tl_emb_md5('tl_s', 2, h.scene, h.task) IS DISTINCT FROM h.md5), 0,
          'every existing (scene, task)''s embedding rows are bit-identical (checksums)');
SELECT cmp_ok((SELECT count(*)::int FROM mtms_embedding
                WHERE model_id = mtms_model_id('tl_s') AND version = 2 AND scene = 'video'), '>', 200,
              'video has embedding rows');
DROP TABLE tl_s_now;
CREATE TEMP TABLE tl_s_now AS SELECT * FROM pg_temp.tl_scores('tl_s', '{search,feeds}');
SELECT is(pg_temp.tl_changed('tl_s_now', 'tl_s_v1'), 0::bigint,
          'after video''s phase 1, existing scenes still score bit-identically');
SELECT is((SELECT count(*)::int FROM mtms_tower
            WHERE model_id = mtms_model_id('tl_s') AND version = 2 AND scene = 'video' AND phase = 'finetune'), 0,
          'video has no fine-tune tower yet');
SELECT is((SELECT bool_and(p > 0 AND p < 1) FROM pg_temp.tl_scores('tl_s', '{video}')), true,
          'video scores with its phase-1 towers');
SELECT results_eq(
    $$SELECT DISTINCT phase, scene FROM mtms_train('tl_s', 'tl_days12', phases => 'finetune') ORDER BY 2 DESC$$,
    $$VALUES ('finetune', 'video'), ('finetune', 'search'), ('finetune', 'feeds')$$,
    'the fine-tune trains every scene');
SELECT is((SELECT count(*)::int FROM mtms_tower
            WHERE model_id = mtms_model_id('tl_s') AND version = 3 AND scene = 'video' AND phase = 'finetune'), 4,
          'video joined the fine-tune');
SELECT cmp_ok(pg_temp.tl_crit(pg_temp.tl_metrics('tl_s', 3), 'search'), '<=',
              pg_temp.tl_crit((SELECT metrics FROM tl_s_m1), 'search') + 1e-5,
              'search is no worse on validation than before video was added');
SELECT cmp_ok(pg_temp.tl_crit(pg_temp.tl_metrics('tl_s', 3), 'feeds'), '<=',
              pg_temp.tl_crit((SELECT metrics FROM tl_s_m1), 'feeds') + 1e-5,
              'feeds is no worse on validation than before video was added');

-- ---------------------------------------------------------------------------
-- A new field.
CREATE TEMP VIEW tl_days12_notag AS
SELECT scene, array(SELECT f FROM unnest(features) f WHERE f NOT LIKE 'tag=%') AS features,
       click, conversion
  FROM tl_days12;
SELECT lives_ok($$SELECT mtms_create_model('tl_f', '{search,feeds,video}',
                    '{user,ad,advertiser,hour,device}', 4, '{8}',
                    '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024, "min_delta": 0}')$$,
                'a model without tags (min_delta 0: any gain of the new field counts)');
SELECT is((SELECT count(*)::int FROM mtms_train('tl_f', 'tl_days12_notag')), 15, 'trained without tags');
CREATE TEMP TABLE tl_f_v1 AS SELECT * FROM pg_temp.tl_scores('tl_f', p_drop_field => 'tag');
CREATE TEMP TABLE tl_f_e1 AS
SELECT scene, task, feature, vector, accum FROM mtms_embedding
 WHERE model_id = mtms_model_id('tl_f') AND version = 1;
CREATE TEMP TABLE tl_f_t1 AS
SELECT scene, task, layer, n_in, n_out, weights, bias FROM mtms_tower
 WHERE model_id = mtms_model_id('tl_f') AND version = 1 AND phase = 'embedding';
SELECT lives_ok($$SELECT mtms_add_field('tl_f', 'tag')$$, 'add the field tag');
CREATE TEMP TABLE tl_f_now AS SELECT * FROM pg_temp.tl_scores('tl_f', p_drop_field => 'tag');
SELECT is(pg_temp.tl_changed('tl_f_now', 'tl_f_v1'), 0::bigint,
          'after mtms_add_field, scores are bit-identical');
DROP TABLE tl_f_now;
CREATE TEMP TABLE tl_f_now AS SELECT * FROM pg_temp.tl_scores('tl_f');
SELECT is(pg_temp.tl_changed('tl_f_now', 'tl_f_v1'), 0::bigint,
          'also with values of the new field in the features');
-- version 1's losses on the validation rows of the next training: a
-- fine-tune with steps far below float precision reports its starting point
SAVEPOINT yardstick;
UPDATE mtms_model SET options = options || '{"lr_tower": 1e-30}' WHERE name = 'tl_f';
SELECT count(*) AS rows FROM mtms_train('tl_f', 'tl_days12', phases => 'finetune') \gset
SELECT metrics AS tl_base FROM mtms_versions('tl_f') WHERE active \gset
ROLLBACK TO SAVEPOINT yardstick;
SELECT is((SELECT count(*)::int FROM mtms_train('tl_f', 'tl_days12')), 15, 'trained with tags');
SELECT cmp_ok((SELECT count(DISTINCT (scene, task))::int FROM mtms_embedding
                WHERE model_id = mtms_model_id('tl_f') AND version = 2 AND field = 'tag'), '>=', 3,
              'the new field has embedding rows (in the pairs whose validation it improved)');
SELECT is((SELECT count(*)::int
             FROM tl_f_e1 a LEFT JOIN mtms_embedding b
                  ON (b.model_id, b.version, b.scene, b.task, b.feature)
                     = (mtms_model_id('tl_f'), 2, a.scene, a.task, a.feature)
            WHERE b.vector IS DISTINCT FROM a.vector OR b.accum IS DISTINCT FROM a.accum), 0,
          'every embedding row of the old fields is bit-identical');
SELECT is((SELECT count(*)::int
             FROM tl_f_t1 a JOIN mtms_tower b
                  ON (b.model_id, b.version, b.phase, b.scene, b.task, b.layer)
                     = (mtms_model_id('tl_f'), 2, 'embedding', a.scene, a.task, a.layer),
                  generate_series(0, a.n_out - 1) AS o
            WHERE b.weights[o * b.n_in + 1 : o * b.n_in + a.n_in]
                  <> a.weights[o * a.n_in + 1 : (o + 1) * a.n_in]
               OR b.bias <> a.bias), 0,
          'phase-1 towers: the weights on the old fields'' columns and the biases are unchanged');
SELECT cmp_ok(pg_temp.tl_crit(pg_temp.tl_metrics('tl_f', 2), 'search'), '<=',
              pg_temp.tl_crit(:'tl_base', 'search') + 1e-5,
              'search is no worse on validation than before the field was added');
SELECT cmp_ok(pg_temp.tl_crit(pg_temp.tl_metrics('tl_f', 2), 'feeds'), '<=',
              pg_temp.tl_crit(:'tl_base', 'feeds') + 1e-5,
              'feeds is no worse on validation than before the field was added');
SELECT cmp_ok(pg_temp.tl_crit(pg_temp.tl_metrics('tl_f', 2), 'video'), '<=',
              pg_temp.tl_crit(:'tl_base', 'video') + 1e-5,
              'video is no worse on validation than before the field was added');

-- ---------------------------------------------------------------------------
-- Errors.
CREATE TEMP TABLE tl_s_v3 AS SELECT * FROM pg_temp.tl_scores('tl_s');
SELECT throws_ok($$SELECT mtms_add_scene('tl_s', 'video')$$, '42710',
                 'scene "video" already exists in model "tl_s"', 'add an added scene again');
SELECT throws_ok($$SELECT mtms_add_field('tl_f', 'tag')$$, '42710',
                 'field "tag" already exists in model "tl_f"', 'add an added field again');
SELECT throws_ok($$SELECT * FROM mtms_train('tl_s', 'tl_days12', scenes => '{shopping}', phases => 'embedding')$$,
                 '22023', 'scene "shopping" is not a scene of model "tl_s"', 'train an unknown scene');
SELECT throws_ok($$SELECT mtms_rollback('tl_s', 1)$$, '42704',
                 'version 1 of model "tl_s" does not exist', 'rollback to a pruned version');
SELECT throws_ok($$SELECT mtms_rollback('tl_nope', 1)$$, '42704',
                 'model "tl_nope" does not exist', 'rollback of an unknown model');
SELECT results_eq(
    $$SELECT scenes, active_version, (SELECT array_agg(version) FROM mtms_versions('tl_s'))
        FROM mtms_model WHERE name = 'tl_s'$$,
    $$VALUES ('{search,feeds,video}'::text[], 3, '{2,3}'::int[])$$,
    'after the errors the model is as it was');
CREATE TEMP TABLE tl_s_now3 AS SELECT * FROM pg_temp.tl_scores('tl_s');
SELECT is(pg_temp.tl_changed('tl_s_now3', 'tl_s_v3'), 0::bigint, 'and scores as it did');

SELECT * FROM finish();
ROLLBACK;
