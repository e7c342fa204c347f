-- pgTAP: a model belongs to its owner (issue 17).
--
-- Four roles: own_a owns model A; own_b is a second trainer with its own
-- model B and the write grants of the README's training recipe on every
-- catalog table; srv is a serving role granted 'score' on A and nothing on
-- the tables; the superuser running the test.  own_b tries every way to
-- change A by SQL (INSERT, UPDATE, DELETE on each table, the owner and acl
-- columns, TRUNCATE) and every mtms function that changes a model: each
-- fails with 42501 or finds no row, and A scores bit-identically
-- afterwards.  srv scores A, is refused on B, and is refused on A from the
-- statement after mtms_revoke.
BEGIN;
SELECT plan(76);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- 'SQLSTATE' of a statement's error, or 'ok N' with the rows it touched.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  EXECUTE stmt;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN 'ok ' || n;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

CREATE TABLE ow_s AS SELECT * FROM mtms_synthetic_samples(3000, 1);
CREATE TABLE ow_probe AS SELECT scene, features FROM mtms_synthetic_samples(20, 7);

CREATE ROLE ow_a;
CREATE ROLE ow_b;
CREATE ROLE ow_srv;
DO $$
DECLARE
  nsp text := (SELECT quote_ident(n.nspname) FROM pg_extension e
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'mtms');
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %s TO ow_a, ow_b, ow_srv', nsp);
  EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %1$s.mtms_model, %1$s.mtms_version, %1$s.mtms_embedding, %1$s.mtms_tower
                    TO ow_a, ow_b', nsp);
END $$;
GRANT SELECT ON ow_s, ow_probe TO ow_a, ow_b, ow_srv;

-- Everything that identifies a model's state, read as the superuser: its
-- row, its versions, every parameter and the probe scores.
CREATE FUNCTION pg_temp.fingerprint(p_model text) RETURNS text LANGUAGE sql AS $$
SELECT md5(concat_ws('|',
  (SELECT format('%s/%s/%s/%s/%s/%s', owner, acl, active_version, scenes, fields, params_revision)
     FROM mtms_model WHERE name = p_model),
  (SELECT string_agg(format('%s/%s', version, metrics), ',' ORDER BY version) FROM mtms_version
    WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', version, scene, task, feature, vector, accum),
                         ',' ORDER BY version, scene, task, feature))
     FROM mtms_embedding WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', version, phase, scene, task, layer,
                                weights, bias), ',' ORDER BY version, phase, scene, task, layer))
     FROM mtms_tower WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT string_agg(mtms_score(p_model, p.scene, t, p.features)::text, ',' ORDER BY p.scene, p.features::text, t)
     FROM ow_probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t)))
$$;

CREATE FUNCTION pg_temp.scores(p_model text) RETURNS text LANGUAGE sql AS $$
SELECT string_agg(mtms_score(p_model, p.scene, t, p.features)::text, ',' ORDER BY p.scene, p.features::text, t)
  FROM ow_probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t
$$;

-- ---------------------------------------------------------------------------
-- The two trainers create and train their models.
SET LOCAL ROLE ow_a;
SELECT lives_ok($$SELECT mtms_create_model('ow_ma', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                                           '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'own_a creates model A');
SELECT lives_ok($$SELECT * FROM mtms_train('ow_ma', 'ow_s')$$, 'and trains it');
SELECT lives_ok($$SELECT mtms_grant('ow_ma', 'ow_srv', 'score')$$, 'and grants score on it to the serving role');
SET LOCAL ROLE ow_b;
SELECT lives_ok($$SELECT mtms_create_model('ow_mb', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                                           '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}')$$,
                'own_b creates model B');
SELECT lives_ok($$SELECT * FROM mtms_train('ow_mb', 'ow_s')$$, 'and trains it');
RESET ROLE;
CREATE TEMP TABLE ow_before AS SELECT pg_temp.fingerprint('ow_ma') AS fp, pg_temp.scores('ow_ma') AS scores;
SELECT is((SELECT acl::text FROM mtms_model WHERE name = 'ow_ma'), '{ow_srv=r/ow_a}',
          'the grant is an aclitem: score is r, granted by the owner');
CREATE TEMP TABLE ow_ids AS SELECT name, model_id FROM mtms_model WHERE name IN ('ow_ma', 'ow_mb');
GRANT SELECT ON ow_ids TO PUBLIC;

-- ---------------------------------------------------------------------------
-- own_b against model A, by SQL.
SET LOCAL ROLE ow_b;
SELECT is((SELECT count(*)::int FROM mtms_model WHERE name = 'ow_ma'), 0, 'B does not see A''s model row');
SELECT is((SELECT count(*)::int FROM mtms_embedding WHERE model_id = (SELECT model_id FROM ow_ids WHERE name = 'ow_ma')), 0,
          'nor its embedding rows');
SELECT is((SELECT count(*)::int FROM mtms_tower WHERE model_id = (SELECT model_id FROM ow_ids WHERE name = 'ow_ma')), 0,
          'nor its tower rows');
SELECT is((SELECT count(*)::int FROM mtms_version WHERE model_id = (SELECT model_id FROM ow_ids WHERE name = 'ow_ma')), 0,
          'nor its versions');
SELECT cmp_ok((SELECT count(*)::int FROM mtms_embedding), '>', 0, 'but sees the rows of its own model');

-- UPDATE and DELETE find no row of A
SELECT is(pg_temp.try(format('UPDATE mtms_tower SET bias = bias WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'UPDATE of A''s tower rows touches none');
SELECT is(pg_temp.try(format('UPDATE mtms_embedding SET accum = 0 WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'UPDATE of A''s embedding rows touches none');
SELECT is(pg_temp.try(format('UPDATE mtms_version SET metrics = ''{}'' WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'UPDATE of A''s versions touches none');
SELECT is(pg_temp.try($$UPDATE mtms_model SET owner = 'ow_b' WHERE name = 'ow_ma'$$),
          'ok 0', 'UPDATE of A''s owner touches no row');
SELECT is(pg_temp.try($$UPDATE mtms_model SET active_version = NULL WHERE name = 'ow_ma'$$),
          'ok 0', 'UPDATE of A''s active version touches no row');
SELECT is(pg_temp.try(format('DELETE FROM mtms_tower WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'DELETE of A''s tower rows deletes none');
SELECT is(pg_temp.try(format('DELETE FROM mtms_embedding WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'DELETE of A''s embedding rows deletes none');
SELECT is(pg_temp.try(format('DELETE FROM mtms_version WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'DELETE of A''s versions deletes none');
SELECT is(pg_temp.try($$DELETE FROM mtms_model WHERE name = 'ow_ma'$$), 'ok 0', 'DELETE of A''s model row deletes none');

-- INSERT of rows for A is refused by the policies
SELECT is(pg_temp.try(format($f$INSERT INTO mtms_tower VALUES (%s, (SELECT max(version) FROM mtms_version), 'embedding', 'search', 'ctr', 9, 1, 1, '{1}', '{1}')$f$,
                             (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          '42501', 'INSERT of a tower row into A: 42501');
SELECT is(pg_temp.try(format($f$INSERT INTO mtms_embedding VALUES (%s, 1, 'search', 'ctr', 'user', 42, '{1,1,1,1}', 0)$f$,
                             (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          '42501', 'INSERT of an embedding row into A: 42501');
SELECT is(pg_temp.try(format($f$INSERT INTO mtms_version (model_id, version, scenes, fields) VALUES (%s, 99, '{search}', '{user}')$f$,
                             (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          '42501', 'INSERT of a version into A: 42501');
SELECT is(pg_temp.try($$INSERT INTO mtms_model (name, owner, scenes, fields, scene_birth, field_birth, embedding_dim, hidden, options)
                        VALUES ('ow_fake', 'ow_a', '{s}', '{f}', '{0}', '{0}', 4, '{8}', '{}')$$),
          '42501', 'INSERT of a model owned by own_a: 42501');
-- Moving rows of its own model into A, or its own model to another owner
SELECT is(pg_temp.try(format('UPDATE mtms_tower SET model_id = %s WHERE model_id = %s',
                             (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'), (SELECT model_id FROM ow_ids WHERE name = 'ow_mb'))),
          '42501', 'moving its own tower rows into A: 42501');
SELECT is(pg_temp.try($$UPDATE mtms_model SET owner = 'ow_a' WHERE name = 'ow_mb'$$), '42501',
          'changing the owner column of its own model by SQL: 42501');
SELECT is(pg_temp.try($$UPDATE mtms_model SET acl = '{ow_b=rw/ow_a}' WHERE name = 'ow_mb'$$), '42501',
          'changing the acl column by SQL: 42501');
SELECT is(pg_temp.try($$UPDATE mtms_model SET model_id = model_id + 1000 WHERE name = 'ow_mb'$$), '428C9',
          'changing model_id: 428C9 (an identity column; the guard trigger refuses it too)');
-- TRUNCATE needs a privilege nobody is granted
SELECT is(pg_temp.try('TRUNCATE mtms_tower'), '42501', 'TRUNCATE mtms_tower: 42501');
SELECT is(pg_temp.try('TRUNCATE mtms_embedding'), '42501', 'TRUNCATE mtms_embedding: 42501');
SELECT is(pg_temp.try('TRUNCATE mtms_version CASCADE'), '42501', 'TRUNCATE mtms_version: 42501');
SELECT is(pg_temp.try('TRUNCATE mtms_model CASCADE'), '42501', 'TRUNCATE mtms_model: 42501');

-- ... and through mtms's functions
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('ow_ma', 'ow_s')$$), '42501', 'mtms_train of A: 42501');
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('ow_ma', 'ow_s', phases => 'finetune')$$), '42501', 'mtms_train finetune of A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_rollback('ow_ma', 1)$$), '42501', 'mtms_rollback of A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_add_scene('ow_ma', 'shopping')$$), '42501', 'mtms_add_scene to A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_add_field('ow_ma', 'age')$$), '42501', 'mtms_add_field to A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_drop_model('ow_ma')$$), '42501', 'mtms_drop_model of A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_alter_owner('ow_ma', 'ow_b')$$), '42501', 'mtms_alter_owner of A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_grant('ow_ma', 'ow_b', 'train')$$), '42501', 'mtms_grant on A to itself: 42501');
SELECT is(pg_temp.try($$SELECT mtms_revoke('ow_ma', 'ow_srv', 'score')$$), '42501', 'mtms_revoke on A: 42501');
SELECT is(pg_temp.try($$SELECT mtms_score('ow_ma', 'search', 'ctr', '{user=1}')$$), '42501', 'and mtms_score of A: 42501');
SELECT is(pg_temp.try($$SELECT * FROM mtms_versions('ow_ma')$$), '42501', 'nor mtms_versions of A: 42501');
RESET ROLE;
SELECT is(pg_temp.fingerprint('ow_ma'), (SELECT fp FROM ow_before),
          'after all of it, model A is bit-identical: row, versions, parameters, probe scores');

-- ---------------------------------------------------------------------------
-- The serving role: no table grant, 'score' on A only.
CREATE TEMP TABLE ow_scores AS
SELECT p.scene, p.features, t.task, mtms_score('ow_ma', p.scene, t.task, p.features) AS p
  FROM ow_probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t(task);
GRANT SELECT ON ow_scores TO PUBLIC;
SET LOCAL ROLE ow_srv;
SELECT is((SELECT count(*)::int FROM ow_scores s WHERE mtms_score('ow_ma', s.scene, s.task, s.features) = s.p), 60,
          'the serving role scores A, the owner''s scores bit for bit');
SELECT is((SELECT count(*)::int FROM mtms_evaluate('ow_ma', 'ow_s')), 9, 'evaluates A');
SELECT is((SELECT count(*)::int FROM mtms_versions('ow_ma')), 1, 'lists A''s versions');
SELECT is((SELECT array_agg(name) FROM mtms_model)::text, '{ow_ma}', 'and sees only A among the models');
SELECT is(pg_temp.try($$SELECT mtms_score('ow_mb', 'search', 'ctr', '{user=1}')$$), '42501', 'B: 42501');
SELECT is(pg_temp.try($$SELECT * FROM mtms_evaluate('ow_mb', 'ow_s')$$), '42501', 'evaluating B: 42501');
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('ow_ma', 'ow_s')$$), '42501', 'training A: 42501');
SELECT is(pg_temp.try($$UPDATE mtms_tower SET bias = bias$$), '42501', 'UPDATE of any row: 42501 (no table grant)');
SELECT is(pg_temp.try($$SELECT mtms_create_model('ow_srv_m', '{s}', '{f}')$$), '42501', 'creating a model: 42501');
SET LOCAL mtms.model = 'ow_ma';
SELECT is((SELECT count(*)::int FROM ow_scores s WHERE mtms_score(s.scene, s.task, s.features) = s.p), 60,
          'the 3-argument form scores A');
RESET mtms.model;
SELECT is((SELECT count(*)::int FROM ow_scores s WHERE mtms_score(s.scene, s.task, s.features) = s.p), 60,
          'and finds A as the only model it can use');
RESET ROLE;
SET LOCAL ROLE ow_a;
SELECT lives_ok($$SELECT mtms_revoke('ow_ma', 'ow_srv', 'score')$$, 'the owner revokes score');
SET LOCAL ROLE ow_srv;
SELECT is(pg_temp.try($$SELECT mtms_score('ow_ma', 'search', 'ctr', '{user=1}')$$), '42501',
          'the serving role is refused at its next statement');
SELECT is((SELECT count(*)::int FROM mtms_model), 0, 'and sees no model');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- 'train' lets another role train and roll back, nothing more.
SET LOCAL ROLE ow_a;
SELECT lives_ok($$SELECT mtms_grant('ow_ma', 'ow_b', 'train')$$, 'the owner grants train to own_b');
SET LOCAL ROLE ow_b;
SELECT lives_ok($$SELECT * FROM mtms_train('ow_ma', 'ow_s', phases => 'finetune')$$, 'own_b trains A');
SELECT lives_ok($$SELECT mtms_rollback('ow_ma', 1)$$, 'and rolls it back');
SELECT is((SELECT count(*)::int FROM mtms_model WHERE name = 'ow_ma'), 1, 'and sees A''s row now');
SELECT is(pg_temp.try(format('UPDATE mtms_tower SET bias = bias WHERE model_id = %s', (SELECT model_id FROM ow_ids WHERE name = 'ow_ma'))),
          'ok 0', 'but still cannot change A''s rows by SQL');
SELECT is(pg_temp.try($$SELECT mtms_add_scene('ow_ma', 'shopping')$$), '42501', 'nor add a scene');
SELECT is(pg_temp.try($$SELECT mtms_drop_model('ow_ma')$$), '42501', 'nor drop it');
SELECT is(pg_temp.try($$SELECT mtms_grant('ow_ma', 'ow_srv', 'score')$$), '42501', 'nor grant');
RESET ROLE;
SELECT is(pg_temp.scores('ow_ma'), (SELECT scores FROM ow_before),
          'version 1 active again: A scores as before (the fine-tuned version 2 is kept)');

-- ---------------------------------------------------------------------------
-- The owner changes: rules of ALTER ... OWNER TO.
SET LOCAL ROLE ow_a;
SELECT is(pg_temp.try($$SELECT mtms_alter_owner('ow_ma', 'ow_b')$$), '42501',
          'the owner cannot give A to a role it is not a member of');
RESET ROLE;
SELECT lives_ok($$SELECT mtms_alter_owner('ow_ma', 'ow_b')$$, 'a superuser gives A to own_b');
SELECT is((SELECT owner::text || ' ' || acl::text FROM mtms_model WHERE name = 'ow_ma'), 'ow_b {ow_b=w/ow_b}',
          'the grants move with the model (grantor is the new owner)');
SET LOCAL ROLE ow_a;
SELECT is(pg_temp.try($$SELECT mtms_drop_model('ow_ma')$$), '42501', 'the former owner cannot drop it');
SELECT is((SELECT count(*)::int FROM mtms_model WHERE name = 'ow_ma'), 0, 'nor see it');
SET LOCAL ROLE ow_b;
SELECT lives_ok($$SELECT mtms_drop_model('ow_ma')$$, 'the new owner drops it');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- Plain SQL edits by the owner are seen by the next statement.
SET LOCAL ROLE ow_b;
CREATE TEMP TABLE ow_b_before AS SELECT mtms_score('ow_mb', 'search', 'ctr', '{user=1,ad=2}') AS p;
SELECT is(pg_temp.try($$UPDATE mtms_tower SET bias = '{5}' WHERE scene = 'search' AND task = 'ctr' AND n_out = 1$$),
          'ok 2', 'the owner edits its towers by SQL');
SELECT isnt((SELECT mtms_score('ow_mb', 'search', 'ctr', '{user=1,ad=2}')), (SELECT p FROM ow_b_before),
            'and its session scores with the edited row at the next statement');
RESET ROLE;
SELECT is((SELECT params_revision FROM mtms_model WHERE name = 'ow_mb'), 1::bigint,
          'the edit bumped the model''s params_revision');

SELECT * FROM finish();
ROLLBACK;
