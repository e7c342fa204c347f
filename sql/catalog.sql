-- The model catalog: mtms_create_model, mtms_add_scene, mtms_add_field,
-- mtms_drop_model, mtms_versions, mtms_rollback, and every validation error.
\set SHOW_CONTEXT never

-- A model with defaults: every option is stored, normalized.
SELECT mtms_create_model('cat_m1', '{search,feeds}', '{user,ad}');
SELECT name, scenes, fields, embedding_dim, hidden, active_version,
       owner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS owned
  FROM mtms_model WHERE name = 'cat_m1';
SELECT key, value FROM mtms_model, jsonb_each(options)
 WHERE name = 'cat_m1' ORDER BY key;

-- Explicit sizes and options; names may use digits, '_', '-', '.'.
SELECT mtms_create_model(name => 'cat_m2.v-1', scenes => '{s_1,2nd}',
       fields => '{f.a,f-b,_c}', embedding_dim => 16, hidden => '{32}',
       options => '{"batch_size": 1024, "lr_tower": 0.01, "ctcvr": false,
                    "seed": -7, "max_features": 1000000, "l2": 0,
                    "keep_versions": 1.0}');
SELECT scenes, fields, embedding_dim, hidden,
       options->'batch_size' AS batch_size, options->'lr_tower' AS lr_tower,
       options->'ctcvr' AS ctcvr, options->'seed' AS seed,
       options->'max_features' AS max_features, options->'l2' AS l2,
       options->'keep_versions' AS keep_versions,
       options->'lr_embedding' AS lr_embedding
  FROM mtms_model WHERE name = 'cat_m2.v-1';
-- limits are inclusive
SELECT mtms_create_model('cat_m3', '{a}', '{b}', 512, '{4096,1,1,1,1,1,1,1}',
       '{"lr_embedding": 10, "lr_tower": 1, "batch_size": 65536,
         "validation_fraction": 0.5, "l2": 1, "max_epochs": 1000,
         "patience": 100, "shuffle_buffer": 16777216, "evals_per_epoch": 100,
         "keep_versions": 1000, "seed": 9223372036854775807}');
SELECT embedding_dim, hidden, options->'seed' AS seed FROM mtms_model WHERE name = 'cat_m3';
SELECT mtms_drop_model('cat_m3');

-- An existing name.
SELECT mtms_create_model('cat_m1', '{x}', '{y}');

-- Names.
SELECT mtms_create_model('', '{s}', '{f}');
SELECT mtms_create_model('bad name', '{s}', '{f}');
SELECT mtms_create_model('x;drop table mtms_model', '{s}', '{f}');
SELECT mtms_create_model('it''s', '{s}', '{f}');
SELECT mtms_create_model('-lead', '{s}', '{f}');
SELECT mtms_create_model('caf' || chr(233), '{s}', '{f}');
SELECT mtms_create_model(repeat('m', 200), '{s}', '{f}');
SELECT mtms_create_model(repeat('m', 63), '{s}', '{f}');  -- 63 bytes is fine
SELECT mtms_drop_model(repeat('m', 63));
SELECT mtms_create_model('cat_x', '{"a b"}', '{f}');
SELECT mtms_create_model('cat_x', '{s}', '{"a\"b"}');
SELECT mtms_create_model('cat_x', '{s}', '{user=1}');
SELECT mtms_create_model('cat_x', '{s}', ARRAY[repeat('f', 64)]);

-- Scene and field arrays.
SELECT mtms_create_model('cat_x', '{}', '{f}');
SELECT mtms_create_model('cat_x', '{s}', '{}');
SELECT mtms_create_model('cat_x', '{s,NULL}', '{f}');
SELECT mtms_create_model('cat_x', '{s}', '{{a,b},{c,d}}');
SELECT mtms_create_model('cat_x', '{search,feeds,search}', '{f}');
SELECT mtms_create_model('cat_x', '{s}', '{user,ad,user}');
SELECT mtms_create_model('cat_x', (SELECT array_agg('s' || i) FROM generate_series(1, 1025) i), '{f}');
SELECT mtms_create_model('cat_x', '{s}', (SELECT array_agg('f' || i) FROM generate_series(1, 257) i));

-- Sizes.
SELECT mtms_create_model('cat_x', '{s}', '{f}', 0);
SELECT mtms_create_model('cat_x', '{s}', '{f}', 513);
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{1,1,1,1,1,1,1,1,1}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{64,0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{4097}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{64,NULL}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{{1,2},{3,4}}');

-- Options: unknown key, not an object, wrong types, out of range.
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"learning_rate": 0.1}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '[1, 2]');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '3');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"batch_size": "big"}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"batch_size": 2.5}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"batch_size": 0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"batch_size": 65537}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"lr_embedding": 0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"lr_embedding": 10.5}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"lr_tower": -0.1}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"lr_tower": "0.1"}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"l2": -1e-9}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"max_epochs": 0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"patience": 1001}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"validation_fraction": 0.6}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"validation_fraction": 0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"seed": 9223372036854775808}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"seed": null}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"ctcvr": "yes"}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"ctcvr": 1}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"shuffle_buffer": 16777217}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"evals_per_epoch": [4]}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"keep_versions": 0}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"max_features": -1}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"min_delta": 0.5}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"min_delta": -0.001}');
SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"lr_tower": 1e400}');

-- NULL arguments name the argument.
SELECT mtms_create_model(NULL, '{s}', '{f}');
SELECT mtms_create_model('cat_x', NULL, '{f}');
SELECT mtms_create_model('cat_x', '{s}', NULL);
SELECT mtms_create_model('cat_x', '{s}', '{f}', NULL);
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, NULL);
SELECT mtms_create_model('cat_x', '{s}', '{f}', 8, '{8}', NULL);
SELECT mtms_drop_model(NULL);
SELECT mtms_add_scene(NULL, 's');
SELECT mtms_add_scene('cat_m1', NULL);
SELECT mtms_add_field('cat_m1', NULL);
SELECT mtms_rollback('cat_m1', NULL);
SELECT * FROM mtms_versions(NULL);

-- None of the failed calls left a row behind.
SELECT name FROM mtms_model WHERE name LIKE 'cat%' ORDER BY name;

-- Adding scenes and fields appends them.
SELECT mtms_add_scene('cat_m1', 'video');
SELECT mtms_add_field('cat_m1', 'hour');
SELECT mtms_add_field('cat_m1', 'device');
SELECT scenes, fields FROM mtms_model WHERE name = 'cat_m1';
SELECT mtms_add_scene('cat_m1', 'feeds');
SELECT mtms_add_field('cat_m1', 'user');
SELECT mtms_add_scene('cat_m1', 'bad scene');
SELECT mtms_add_field('cat_m1', 'a=b');
SELECT mtms_add_scene('cat_nope', 'video2');
SELECT mtms_add_field('cat_nope', 'f');
SELECT mtms_create_model('cat_full', '{s}', (SELECT array_agg('f' || i) FROM generate_series(1, 256) i));
SELECT mtms_add_field('cat_full', 'f257');
SELECT mtms_drop_model('cat_full');

-- Versions and rollback (no training here: versions are written by hand).
SELECT * FROM mtms_versions('cat_m1');
SELECT * FROM mtms_versions('cat_nope');
SELECT mtms_rollback('cat_m1', 1);
INSERT INTO mtms_version (model_id, version, trained_at, samples_relation, samples, scenes, fields)
SELECT model_id, v, '2024-01-01 00:00:00+00'::timestamptz + v * interval '1 day',
       'train', 1000 * v, scenes, fields
  FROM mtms_model, generate_series(1, 2) v WHERE name = 'cat_m1';
UPDATE mtms_model SET active_version = 2 WHERE name = 'cat_m1';
SELECT version, active, samples_relation, samples, metrics FROM mtms_versions('cat_m1');
SELECT mtms_rollback('cat_m1', 3);
SELECT mtms_rollback('cat_m1', 1);
SELECT version, active FROM mtms_versions('cat_m1');
SELECT mtms_rollback('cat_nope', 1);

-- SQLSTATEs of a few errors.
DO $$
DECLARE
  stmt text;
BEGIN
  FOREACH stmt IN ARRAY ARRAY[
    $q$SELECT mtms_create_model('cat_m1', '{s}', '{f}')$q$,
    $q$SELECT mtms_create_model('a b', '{s}', '{f}')$q$,
    $q$SELECT mtms_create_model('cat_x', '{s,s}', '{f}')$q$,
    $q$SELECT mtms_create_model('cat_x', '{s}', '{f}', 0)$q$,
    $q$SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"x": 1}')$q$,
    $q$SELECT mtms_create_model('cat_x', '{s}', '{f}', options => '{"seed": 1.5}')$q$,
    $q$SELECT mtms_create_model('cat_x', '{s}', NULL)$q$,
    $q$SELECT mtms_add_scene('cat_m1', 'search')$q$,
    $q$SELECT mtms_drop_model('cat_nope')$q$,
    $q$SELECT mtms_rollback('cat_m1', 7)$q$]
  LOOP
    BEGIN
      EXECUTE stmt;
      RAISE NOTICE 'no error: %', stmt;
    EXCEPTION WHEN OTHERS THEN
      RAISE NOTICE '%: %', SQLSTATE, SQLERRM;
    END;
  END LOOP;
END $$;

-- Drop removes the model and its versions.
SELECT model_id AS m1_id FROM mtms_model WHERE name = 'cat_m1' \gset
SELECT count(*) AS versions_before FROM mtms_version WHERE model_id = :m1_id;
SELECT mtms_drop_model('cat_m1');
SELECT count(*) AS versions_after FROM mtms_version WHERE model_id = :m1_id;
SELECT mtms_drop_model('cat_m1');
SELECT mtms_drop_model('cat_m2.v-1');
SELECT count(*) FROM mtms_model WHERE name LIKE 'cat%';

-- Integral numbers are accepted for integer options in any JSON spelling.
SELECT mtms_create_model('cat_m4', '{s}', '{f}', options => '{"batch_size": 1e3, "max_epochs": 5.0}');
SELECT options->'batch_size' AS batch_size, options->'max_epochs' AS max_epochs
  FROM mtms_model WHERE name = 'cat_m4';
SELECT mtms_model_id('cat_m4') = model_id AS id_matches FROM mtms_model WHERE name = 'cat_m4';
SELECT mtms_drop_model('cat_m4');
