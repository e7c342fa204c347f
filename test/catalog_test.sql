-- pgTAP: the model catalog (create, add scene, add field, drop, rollback,
-- the owner check and the SQLSTATE of each kind of error).
BEGIN;
SELECT plan(60);

-- The functions of API.md exist with their argument types.
SELECT has_function('mtms_create_model',
                    ARRAY['text', 'text[]', 'text[]', 'integer', 'integer[]', 'jsonb']);
SELECT has_function('mtms_drop_model', ARRAY['text']);
SELECT has_function('mtms_add_scene', ARRAY['text', 'text']);
SELECT has_function('mtms_add_field', ARRAY['text', 'text']);
SELECT has_function('mtms_versions', ARRAY['text']);
SELECT has_function('mtms_rollback', ARRAY['text', 'integer']);

-- Create.
SELECT lives_ok($$SELECT mtms_create_model('tap_m', '{search,feeds}', '{user,ad}')$$,
                'create a model with defaults');
SELECT results_eq(
    $$SELECT scenes, fields, embedding_dim, hidden, active_version
        FROM mtms_model WHERE name = 'tap_m'$$,
    $$VALUES ('{search,feeds}'::text[], '{user,ad}'::text[], 8, '{64,32}'::int[], NULL::int)$$,
    'the declaration is stored with the default sizes and no active version');
SELECT is((SELECT options FROM mtms_model WHERE name = 'tap_m'),
          '{"lr_embedding": 0.05, "lr_tower": 0.001, "batch_size": 256, "l2": 0.000001,
            "max_epochs": 10, "patience": 4, "validation_fraction": 0.1,
            "finetune_fraction": 0.2, "finetune_rows": 5000, "seed": 42,
            "ctcvr": true, "shuffle_buffer": 65536, "evals_per_epoch": 4,
            "keep_versions": 2, "max_features": 0, "min_delta": 0,
            "min_count": 0, "ttl_slots": 0}'::jsonb,
          'every option is stored with its default');
SELECT is((SELECT owner::text FROM mtms_model WHERE name = 'tap_m'),
          current_user::text,
          'the creating role owns the model');
SELECT is((SELECT owner::oid FROM mtms_model WHERE name = 'tap_m'),
          (SELECT oid FROM pg_roles WHERE rolname = current_user),
          'the owner column holds the role (a regrole: its oid, shown as its name)');
SELECT lives_ok($$SELECT mtms_create_model('tap_m2', '{a}', '{b}', 4, '{16,8,4}',
                                             '{"patience": 5, "ctcvr": false}')$$,
                'create a model with explicit sizes and options');
SELECT results_eq(
    $$SELECT embedding_dim, hidden, (options->>'patience')::int, (options->>'ctcvr')::boolean,
             (options->>'batch_size')::int
        FROM mtms_model WHERE name = 'tap_m2'$$,
    $$VALUES (4, '{16,8,4}'::int[], 5, false, 256)$$,
    'explicit sizes and options are stored, the rest defaulted');

-- Add scene, add field.
SELECT lives_ok($$SELECT mtms_add_scene('tap_m', 'video')$$, 'add a scene');
SELECT is((SELECT scenes FROM mtms_model WHERE name = 'tap_m'), '{search,feeds,video}'::text[],
          'the scene is appended');
SELECT lives_ok($$SELECT mtms_add_field('tap_m', 'hour')$$, 'add a field');
SELECT is((SELECT fields FROM mtms_model WHERE name = 'tap_m'), '{user,ad,hour}'::text[],
          'the field is appended');

-- Errors and their SQLSTATEs.
SELECT throws_ok($$SELECT mtms_create_model('tap_m', '{x}', '{y}')$$,
                 '42710', 'model "tap_m" already exists', 'an existing name is duplicate_object');
SELECT throws_ok($$SELECT mtms_add_scene('tap_m', 'feeds')$$,
                 '42710', NULL, 'adding an existing scene is duplicate_object');
SELECT throws_ok($$SELECT mtms_add_field('tap_m', 'user')$$,
                 '42710', NULL, 'adding an existing field is duplicate_object');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s,s}', '{f}')$$,
                 '42710', NULL, 'a repeated scene is duplicate_object');
SELECT throws_ok($$SELECT mtms_create_model('tap x', '{s}', '{f}')$$,
                 '42602', 'invalid model name "tap x"', 'a bad model name is invalid_name');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', '{"f;"}')$$,
                 '42602', NULL, 'a bad field name is invalid_name');
SELECT throws_ok($$SELECT mtms_add_field('tap_m', 'a=b')$$,
                 '42602', NULL, 'a field name with = is invalid_name');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', '{f}', 513)$$,
                 '22023', NULL, 'embedding_dim out of range is invalid_parameter_value');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', '{f}', 8, '{}')$$,
                 '22023', NULL, 'an empty hidden is invalid_parameter_value');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', '{f}', options => '{"lr": 1}')$$,
                 '22023', 'unknown option "lr"', 'an unknown option is invalid_parameter_value');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', '{f}', options => '{"batch_size": "big"}')$$,
                 '22023', NULL, 'a wrong option type is invalid_parameter_value');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', '{s}', NULL)$$,
                 '22004', 'argument "fields" must not be null', 'a NULL argument is null_value_not_allowed');
SELECT throws_ok($$SELECT mtms_create_model('tap_x', (SELECT array_agg('s' || i) FROM generate_series(1, 1025) i), '{f}')$$,
                 '54000', NULL, 'too many scenes is program_limit_exceeded');
SELECT throws_ok($$SELECT mtms_drop_model('tap_nope')$$,
                 '42704', 'model "tap_nope" does not exist', 'an unknown model is undefined_object');
SELECT throws_ok($$SELECT * FROM mtms_versions('tap_nope')$$,
                 '42704', NULL, 'mtms_versions of an unknown model is undefined_object');
SELECT throws_ok($$SELECT mtms_rollback('tap_m', 1)$$,
                 '42704', 'version 1 of model "tap_m" does not exist',
                 'rollback to a missing version is undefined_object');
SELECT is((SELECT count(*)::int FROM mtms_model WHERE name LIKE 'tap_x%'), 0,
          'failed calls leave no row behind');

-- Versions and rollback over hand-written versions (training is not tested here).
INSERT INTO mtms_version (model_id, version, samples_relation, samples, scenes, fields)
SELECT model_id, v, 'train', 100 * v, scenes, fields
  FROM mtms_model, generate_series(1, 2) v WHERE name = 'tap_m';
UPDATE mtms_model SET active_version = 2 WHERE name = 'tap_m';
SELECT results_eq($$SELECT version, active FROM mtms_versions('tap_m')$$,
                  $$VALUES (1, false), (2, true)$$, 'mtms_versions marks the active version');
SELECT lives_ok($$SELECT mtms_rollback('tap_m', 1)$$, 'rollback to a kept version');
SELECT results_eq($$SELECT version, active FROM mtms_versions('tap_m')$$,
                  $$VALUES (1, true), (2, false)$$, 'rollback moves the active version');

-- Drop leaves nothing behind in any of the four tables.
INSERT INTO mtms_embedding (model_id, version, scene, task, field, feature, vector, accum)
SELECT model_id, 1, 'search', 'ctr', 'user', 12345, '{0.1,0.2}', 0
  FROM mtms_model WHERE name = 'tap_m';
INSERT INTO mtms_tower (model_id, version, phase, scene, task, layer, n_in, n_out, weights, bias)
SELECT model_id, 1, 'embedding', 'search', 'ctr', 0, 2, 1, '{0.5,0.5}', '{0}'
  FROM mtms_model WHERE name = 'tap_m';
CREATE TEMP TABLE tap_ids AS SELECT model_id FROM mtms_model WHERE name = 'tap_m';
SELECT lives_ok($$SELECT mtms_drop_model('tap_m')$$, 'drop a model with versions and parameters');
SELECT is((SELECT count(*)::int FROM mtms_model WHERE model_id IN (SELECT model_id FROM tap_ids)), 0,
          'no mtms_model row is left');
SELECT is((SELECT count(*)::int FROM mtms_version WHERE model_id IN (SELECT model_id FROM tap_ids)), 0,
          'no mtms_version row is left');
SELECT is((SELECT count(*)::int FROM mtms_embedding WHERE model_id IN (SELECT model_id FROM tap_ids)), 0,
          'no mtms_embedding row is left');
SELECT is((SELECT count(*)::int FROM mtms_tower WHERE model_id IN (SELECT model_id FROM tap_ids)), 0,
          'no mtms_tower row is left');

-- Only the owner (or a superuser) may change or drop a model.
CREATE ROLE tap_mtms_other;
DO $$
DECLARE
  nsp text := (SELECT quote_ident(n.nspname) FROM pg_extension e
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'mtms');
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %s TO tap_mtms_other', nsp);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s.mtms_model, %s.mtms_version TO tap_mtms_other',
                 nsp, nsp);
END $$;
SET ROLE tap_mtms_other;
SELECT throws_ok($$SELECT mtms_drop_model('tap_m2')$$,
                 '42501', 'must be owner of model "tap_m2"', 'another role cannot drop the model');
SELECT throws_ok($$SELECT mtms_add_scene('tap_m2', 'z')$$,
                 '42501', NULL, 'another role cannot add a scene');
SELECT throws_ok($$SELECT mtms_add_field('tap_m2', 'z')$$,
                 '42501', NULL, 'another role cannot add a field');
SELECT throws_ok($$SELECT mtms_rollback('tap_m2', 1)$$,
                 '42501', NULL, 'another role cannot roll back');
SELECT lives_ok($$SELECT mtms_create_model('tap_other', '{s}', '{f}');
                  SELECT mtms_add_scene('tap_other', 's2')$$,
                'a role with table privileges creates and changes its own model');
RESET ROLE;
SELECT lives_ok($$SELECT mtms_drop_model('tap_other')$$, 'a superuser may drop any model');

-- A version's parameter rows go with it (a trigger, not a foreign key:
-- inserting them checks nothing per row), and a version keeps its number.
CREATE TEMP TABLE tap_fk_s AS SELECT * FROM mtms_synthetic_samples(1500, 1);
SELECT lives_ok($$SELECT mtms_create_model('tap_fk', '{search,feeds,video}',
                         '{user,ad,advertiser,hour,device,tag}',
                         options => '{"max_epochs": 1, "keep_versions": 3}')$$, 'a model to delete versions of');
SELECT ok((SELECT count(*) FROM mtms_train('tap_fk', 'tap_fk_s')) > 0, 'version 1');
SELECT ok((SELECT count(*) FROM mtms_train('tap_fk', 'tap_fk_s')) > 0, 'version 2');
SELECT is((SELECT count(*)::int FROM pg_constraint
            WHERE contype = 'f' AND conrelid IN ('mtms_embedding'::regclass, 'mtms_tower'::regclass)),
          0, 'no foreign key checks the parameter rows');
DELETE FROM mtms_version v USING mtms_model m
 WHERE v.model_id = m.model_id AND m.name = 'tap_fk' AND v.version = 1;
SELECT is((SELECT array_agg(DISTINCT e.version) || array_agg(DISTINCT t.version)
             FROM mtms_model m JOIN mtms_embedding e USING (model_id) JOIN mtms_tower t USING (model_id)
            WHERE m.name = 'tap_fk'),
          '{2,2}'::int[], 'deleting a version deletes its embedding and tower rows');
SELECT throws_ok($$UPDATE mtms_version v SET version = 9 FROM mtms_model m
                    WHERE v.model_id = m.model_id AND m.name = 'tap_fk'$$,
                 '23503', NULL, 'a version cannot be renumbered');
SELECT lives_ok($$SELECT mtms_drop_model('tap_fk')$$, 'and the model dropped');

-- The cached OID of mtms_model (for cache invalidation) survives
-- DROP EXTENSION / CREATE EXTENSION in the same session.
DROP EXTENSION mtms CASCADE;
CREATE EXTENSION mtms;
SELECT lives_ok($$SELECT mtms_create_model('tap_m3', '{s}', '{f}');
                  SELECT mtms_add_scene('tap_m3', 's2');
                  SELECT mtms_drop_model('tap_m3')$$,
                'create, change and drop after the extension was re-created');

-- Parameter columns: no statistics (ANALYZE would hash every float), and
-- tower weights compressed (zero blocks of a fine-tune tower's first layer)
SELECT is((SELECT array_agg(attrelid::regclass || '.' || attname || '=' || attstattarget
                            ORDER BY attrelid::regclass::text, attname)
             FROM pg_attribute
            WHERE (attrelid, attname) IN (('mtms_tower'::regclass, 'weights'),
                                          ('mtms_tower'::regclass, 'bias'),
                                          ('mtms_embedding'::regclass, 'vector'))),
          '{mtms_embedding.vector=0,mtms_tower.bias=0,mtms_tower.weights=0}'::text[],
          'no statistics are gathered on the parameters');
SELECT is((SELECT attstorage::text FROM pg_attribute
            WHERE attrelid = 'mtms_tower'::regclass AND attname = 'weights'),
          'x', 'tower weights are stored compressible (EXTENDED)');

-- mtms_model_id keeps its last answer per call site: another argument
-- at the same call site is looked up again
SELECT mtms_create_model('tap_i1', '{s}', '{f}'), mtms_create_model('tap_i2', '{s}', '{f}');
SELECT is((SELECT count(*) FILTER (WHERE mtms_model_id(n) = m.model_id)
             FROM mtms_model m, LATERAL (VALUES (m.name), (m.name)) v(n)
            WHERE m.name IN ('tap_i1', 'tap_i2')),
          4::bigint, 'mtms_model_id answers each model at one call site, in turn');
SELECT throws_ok($$SELECT mtms_model_id(n) FROM (VALUES ('tap_i1'), ('tap_nope')) v(n)$$,
                 '42704', NULL, 'mtms_model_id: an unknown model after a known one is still an error');

SELECT * FROM finish();
ROLLBACK;
