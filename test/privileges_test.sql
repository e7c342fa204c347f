-- pgTAP: privileges and a hostile search_path (issue 6, item 4; issue 17).
--
-- A model belongs to the role that created it.  Only that role, a member
-- of it, or a superuser may add scenes or fields, grant, give the model
-- away or drop it ("must be owner of model", 42501); training and rolling
-- back need the owner's 'train' grant, scoring, evaluating and listing
-- versions its 'score' grant ("permission denied to ... model", 42501),
-- whatever table privileges a role has.
--
-- The grants (see the README's security section):
--   * to score and evaluate (mtms_score, mtms_evaluate, mtms_versions):
--       SELECT mtms_grant('model', 'r', 'score');   -- by the model's owner
--     plus SELECT on the sample relation for mtms_evaluate; no grant on the
--     catalog tables (SELECT is PUBLIC, row security shows a role only the
--     models it owns or was granted);
--   * to create models of its own: GRANT INSERT ON mtms_model TO r.
--
-- Every function of the extension is SECURITY INVOKER, and none of them
-- calls a function or operator found through the caller's search_path: a
-- schema put before pg_catalog with look-alikes of what the extension uses
-- (=, <>, +, cardinality, generate_series, max, count, ...) is never called.
BEGIN;
SELECT plan(47);

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

CREATE TABLE pv_s AS SELECT * FROM mtms_synthetic_samples(2000, 1);
CREATE TABLE pv_probe AS SELECT scene, features FROM mtms_synthetic_samples(20, 7);

-- Roles: the owner, another role with the same table privileges, a reader
-- (SELECT only), a member of the owner role, a role without any grant.
CREATE ROLE mtms_priv_owner;
CREATE ROLE mtms_priv_other;
CREATE ROLE mtms_priv_reader;
CREATE ROLE mtms_priv_member IN ROLE mtms_priv_owner;
CREATE ROLE mtms_priv_nogrant;
DO $$
DECLARE
  nsp text := (SELECT quote_ident(n.nspname) FROM pg_extension e
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'mtms');
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %s TO mtms_priv_owner, mtms_priv_other, mtms_priv_reader, mtms_priv_nogrant', nsp);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %1$s.mtms_model, %1$s.mtms_version, %1$s.mtms_embedding, %1$s.mtms_tower
                    TO mtms_priv_owner, mtms_priv_other', nsp);
  EXECUTE format('GRANT SELECT ON %1$s.mtms_model, %1$s.mtms_version, %1$s.mtms_embedding, %1$s.mtms_tower
                    TO mtms_priv_reader', nsp);
END $$;
GRANT SELECT ON pv_s, pv_probe TO mtms_priv_owner, mtms_priv_other, mtms_priv_reader, mtms_priv_nogrant;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

-- Fingerprint of a model (versions, parameters, scores), as a superuser.
CREATE FUNCTION pg_temp.fingerprint(p_model text) RETURNS text LANGUAGE sql AS $$
SELECT md5(concat_ws('|',
  (SELECT active_version || '/' || array_to_string(scenes, ',') || '/' || array_to_string(fields, ',')
     FROM mtms_model WHERE name = p_model),
  (SELECT string_agg(version::text, ',' ORDER BY version) FROM mtms_version
    WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', version, scene, task, feature, vector, accum),
                         ',' ORDER BY version, scene, task, feature))
     FROM mtms_embedding WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', version, phase, scene, task, layer,
                                weights, bias), ',' ORDER BY version, phase, scene, task, layer))
     FROM mtms_tower WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model))))
$$;

-- ---------------------------------------------------------------------------
-- The owner creates and trains its model.
SET LOCAL ROLE mtms_priv_owner;
SELECT lives_ok($$SELECT mtms_create_model('pv_m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                                           '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 5}')$$,
                'a role with the table privileges creates a model');
SELECT lives_ok($$SELECT * FROM mtms_train('pv_m', 'pv_s')$$, 'and trains it');
SELECT lives_ok($$SELECT * FROM mtms_train('pv_m', 'pv_s', phases => 'finetune')$$, 'twice');
CREATE TEMP TABLE pv_scores AS
SELECT p.scene, p.features, t.task, mtms_score('pv_m', p.scene, t.task, p.features) AS p
  FROM pv_probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t(task);
GRANT SELECT ON pv_scores TO PUBLIC;
RESET ROLE;
SELECT is((SELECT r.rolname::text FROM mtms_model m JOIN pg_roles r ON r.oid = m.owner WHERE m.name = 'pv_m'),
          'mtms_priv_owner', 'the model belongs to its creator');
CREATE TEMP TABLE pv_before AS SELECT pg_temp.fingerprint('pv_m') AS fp;

-- ---------------------------------------------------------------------------
-- Another role with the same table privileges may not change it.
SET LOCAL ROLE mtms_priv_other;
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('pv_m', 'pv_s')$$),
          '42501: permission denied to train model "pv_m"', 'another role cannot train the model');
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('pv_m', 'pv_s', phases => 'finetune')$$),
          '42501: permission denied to train model "pv_m"', 'nor fine-tune it');
SELECT is(pg_temp.try($$SELECT mtms_add_scene('pv_m', 'shopping')$$),
          '42501: must be owner of model "pv_m"', 'nor add a scene');
SELECT is(pg_temp.try($$SELECT mtms_add_field('pv_m', 'age')$$),
          '42501: must be owner of model "pv_m"', 'nor add a field');
SELECT is(pg_temp.try($$SELECT mtms_rollback('pv_m', 1)$$),
          '42501: permission denied to train model "pv_m"', 'nor roll it back');
SELECT is(pg_temp.try($$SELECT mtms_drop_model('pv_m')$$),
          '42501: must be owner of model "pv_m"', 'nor drop it');
SELECT is(pg_temp.try($$SELECT mtms_create_model('pv_m', '{s}', '{f}')$$),
          '42710: model "pv_m" already exists', 'nor take its name');
-- nor score with it, until the owner grants 'score'
SELECT is(pg_temp.try($$SELECT mtms_score('pv_m', 'search', 'ctr', '{user=1}')$$),
          '42501: permission denied to score with model "pv_m"', 'another role cannot score without a grant');
RESET ROLE;
SET LOCAL ROLE mtms_priv_owner;
SELECT mtms_grant('pv_m', r, 'score') FROM unnest('{mtms_priv_other,mtms_priv_reader}'::regrole[]) r;
SET LOCAL ROLE mtms_priv_other;
-- then it scores, evaluates and lists versions
SELECT is((SELECT count(*)::int FROM pv_scores s WHERE mtms_score('pv_m', s.scene, s.task, s.features) = s.p), 60,
          'another role granted score scores with the owner''s model, the same scores');
SELECT is((SELECT count(*)::int FROM mtms_evaluate('pv_m', 'pv_s')), 9, 'and evaluates it');
SELECT results_eq($$SELECT version, active FROM mtms_versions('pv_m')$$, $$VALUES (1, false), (2, true)$$,
                  'and lists its versions');
RESET ROLE;
SELECT is(pg_temp.fingerprint('pv_m'), (SELECT fp FROM pv_before), 'the model is unchanged');

-- ---------------------------------------------------------------------------
-- A reader (SELECT on the four tables) scores and evaluates; every change
-- is refused as for any non-owner.
SET LOCAL ROLE mtms_priv_reader;
SELECT is((SELECT count(*)::int FROM pv_scores s WHERE mtms_score('pv_m', s.scene, s.task, s.features) = s.p), 60,
          'a reader scores with the 4-argument form');
SET LOCAL mtms.model = 'pv_m';
SELECT is((SELECT count(*)::int FROM pv_scores s WHERE mtms_score(s.scene, s.task, s.features) = s.p), 60,
          'and with the 3-argument form');
RESET mtms.model;
SELECT is((SELECT count(*)::int FROM mtms_evaluate('pv_m', 'pv_s')), 9, 'a reader evaluates');
SELECT is(pg_temp.try($$SELECT * FROM mtms_train('pv_m', 'pv_s')$$),
          '42501: permission denied to train model "pv_m"', 'a reader cannot train (and is told why)');
SELECT is(pg_temp.try($$SELECT mtms_add_scene('pv_m', 'shopping')$$),
          '42501: must be owner of model "pv_m"', 'nor add a scene');
SELECT is(pg_temp.try($$SELECT mtms_rollback('pv_m', 1)$$),
          '42501: permission denied to train model "pv_m"', 'nor roll back');
SELECT is(pg_temp.try($$SELECT mtms_drop_model('pv_m')$$),
          '42501: must be owner of model "pv_m"', 'nor drop');
SELECT is(pg_temp.try($$SELECT mtms_create_model('pv_r', '{s}', '{f}')$$),
          '42501: permission denied for table mtms_model', 'nor create a model (no INSERT)');
RESET ROLE;

-- A role without a grant on the model cannot score or evaluate.
SET LOCAL ROLE mtms_priv_nogrant;
SELECT is(pg_temp.try($$SELECT mtms_score('pv_m', 'search', 'ctr', '{user=1}')$$),
          '42501: permission denied to score with model "pv_m"', 'without the score grant no scoring');
SELECT is(pg_temp.try($$SELECT * FROM mtms_evaluate('pv_m', 'pv_s')$$),
          '42501: permission denied to score with model "pv_m"', 'nor evaluation');
RESET ROLE;
SELECT is(pg_temp.fingerprint('pv_m'), (SELECT fp FROM pv_before), 'the model is still unchanged');

-- ---------------------------------------------------------------------------
-- A member of the owner role acts as the owner.
SET LOCAL ROLE mtms_priv_member;
SELECT lives_ok($$SELECT * FROM mtms_train('pv_m', 'pv_s', phases => 'finetune')$$,
                'a member of the owner role trains the model');
SELECT lives_ok($$SELECT mtms_add_field('pv_m', 'age')$$, 'and adds a field');
RESET ROLE;

-- A superuser may do everything to any model.
SELECT lives_ok($$SELECT * FROM mtms_train('pv_m', 'pv_s')$$, 'a superuser trains another role''s model');
SELECT lives_ok($$SELECT mtms_add_scene('pv_m', 'shopping')$$, 'adds a scene');
SELECT lives_ok($$SELECT mtms_add_field('pv_m', 'region')$$, 'adds a field');
SELECT lives_ok($$SELECT mtms_rollback('pv_m', 1)$$, 'rolls back');
SELECT results_eq($$SELECT version, active FROM mtms_versions('pv_m')$$,
                  $$VALUES (1, true), (2, false), (3, false), (4, false)$$,
                  'the versions of the owner, the member and the superuser, version 1 active');
SELECT is((SELECT r.rolname::text FROM mtms_model m JOIN pg_roles r ON r.oid = m.owner WHERE m.name = 'pv_m'),
          'mtms_priv_owner', 'the model still belongs to its creator');

-- ---------------------------------------------------------------------------
-- Every function of the extension is SECURITY INVOKER; the extension is
-- not marked trusted.
SELECT cmp_ok((SELECT count(*)::int FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
                  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mtms') AND d.deptype = 'e'),
              '>=', 20, 'the extension has its functions');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1)
             FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
            WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
              AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mtms') AND d.deptype = 'e'
              AND p.prosecdef),
          NULL, 'no function of the extension is SECURITY DEFINER');
SELECT is((SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = 'mtms'), false,
          'the extension is not trusted');

-- ---------------------------------------------------------------------------
-- A hostile search_path.  Schema pv_evil holds look-alikes of functions and
-- operators the extension uses; each one counts its call in a sequence (a
-- rollback does not undo that) and raises.  The path puts pv_evil before
-- pg_catalog, so unqualified names would find them.
CREATE SCHEMA pv_evil;
CREATE SEQUENCE pv_evil.calls;
CREATE FUNCTION pv_evil.trap() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_catalog.nextval('pv_evil.calls');
  RAISE EXCEPTION 'a pv_evil function was called';
END $$;
CREATE FUNCTION pv_evil.b_int4(int, int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.b_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.b_text(text, text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.i_int4(int, int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE OPERATOR pv_evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.b_int4);
CREATE OPERATOR pv_evil.<> (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.b_int4);
CREATE OPERATOR pv_evil.< (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.b_int4);
CREATE OPERATOR pv_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pv_evil.b_int8);
CREATE OPERATOR pv_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pv_evil.b_text);
CREATE OPERATOR pv_evil.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.i_int4);
CREATE OPERATOR pv_evil.- (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.i_int4);
CREATE OPERATOR pv_evil.* (LEFTARG = int, RIGHTARG = int, FUNCTION = pv_evil.i_int4);
CREATE FUNCTION pv_evil.cardinality(bigint[]) RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.cardinality(anyarray) RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.generate_series(int, int) RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); END $$;
CREATE FUNCTION pv_evil.array_append(anycompatiblearray, anycompatible) RETURNS anycompatiblearray LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE FUNCTION pv_evil.max_step(int, int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE AGGREGATE pv_evil.max(int) (SFUNC = pv_evil.max_step, STYPE = int);
CREATE FUNCTION pv_evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;
CREATE AGGREGATE pv_evil.count(*) (SFUNC = pv_evil.count_step, STYPE = bigint);
CREATE FUNCTION pv_evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN PERFORM pv_evil.trap(); RETURN NULL; END $$;

-- Run a statement with search_path = pv_evil, pg_catalog, <extension schema>.
CREATE FUNCTION pg_temp.evil(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  path text := 'pv_evil, pg_catalog, ' ||
               (SELECT quote_ident(n.nspname) FROM pg_extension e
                  JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'mtms');
  old text := current_setting('search_path');
  result text;
BEGIN
  PERFORM set_config('search_path', path, true);
  result := pg_temp.try(stmt);
  PERFORM set_config('search_path', old, true);
  RETURN result;
END $$;
SELECT results_eq(
    $$SELECT s, pg_temp.evil(s) FROM unnest(ARRAY[
        'SELECT mtms_create_model(''pv_e'', ''{search,feeds,video}'', ''{user,ad,advertiser,hour,device,tag}'', 4, ''{8}'', ''{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'', scenes => ''{video}'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'', phases => ''finetune'')',
        'SELECT mtms_score(''pv_e'', ''search'', ''ctcvr'', ''{user=1,ad=2}'')',
        'SELECT set_config(''mtms.model'', ''pv_e'', true), mtms_score(''feeds'', ''cvr'', ''{user=1,ad=2}'')',
        'SELECT * FROM mtms_evaluate(''pv_e'', ''pv_s'')',
        'SELECT * FROM mtms_versions(''pv_e'')',
        'SELECT mtms_model_id(''pv_e'')',
        'SELECT mtms_rollback(''pv_e'', 2)',
        'SELECT mtms_add_scene(''pv_e'', ''shopping'')',
        'SELECT mtms_add_field(''pv_e'', ''age'')',
        'SELECT * FROM mtms_parse_features(''pv_e'', ''{user=1,age=3}'')',
        'SELECT mtms_feature_hash(''user=1'')',
        'SELECT * FROM mtms_synthetic_samples(10, 2)',
        'SELECT mtms_auc(p, y) FROM (VALUES (0.1::float8, true), (0.2::float8, false)) v(p, y)',
        'SELECT mtms_drop_model(''pv_e'')']) s$$,
    $$SELECT s, 'ok' FROM unnest(ARRAY[
        'SELECT mtms_create_model(''pv_e'', ''{search,feeds,video}'', ''{user,ad,advertiser,hour,device,tag}'', 4, ''{8}'', ''{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'', scenes => ''{video}'')',
        'SELECT * FROM mtms_train(''pv_e'', ''pv_s'', phases => ''finetune'')',
        'SELECT mtms_score(''pv_e'', ''search'', ''ctcvr'', ''{user=1,ad=2}'')',
        'SELECT set_config(''mtms.model'', ''pv_e'', true), mtms_score(''feeds'', ''cvr'', ''{user=1,ad=2}'')',
        'SELECT * FROM mtms_evaluate(''pv_e'', ''pv_s'')',
        'SELECT * FROM mtms_versions(''pv_e'')',
        'SELECT mtms_model_id(''pv_e'')',
        'SELECT mtms_rollback(''pv_e'', 2)',
        'SELECT mtms_add_scene(''pv_e'', ''shopping'')',
        'SELECT mtms_add_field(''pv_e'', ''age'')',
        'SELECT * FROM mtms_parse_features(''pv_e'', ''{user=1,age=3}'')',
        'SELECT mtms_feature_hash(''user=1'')',
        'SELECT * FROM mtms_synthetic_samples(10, 2)',
        'SELECT mtms_auc(p, y) FROM (VALUES (0.1::float8, true), (0.2::float8, false)) v(p, y)',
        'SELECT mtms_drop_model(''pv_e'')']) s$$,
    'every function works with a hostile search_path');
SELECT is((SELECT is_called FROM pv_evil.calls), false, 'and no pv_evil function or operator was ever called');
-- each call again, one test apiece, to name the one that fails
DO $$ BEGIN PERFORM mtms_drop_model('pv_e'); EXCEPTION WHEN OTHERS THEN NULL; END $$;
SELECT mtms_create_model('pv_e', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT is(pg_temp.evil($$SELECT * FROM mtms_train('pv_e', 'pv_s')$$), 'ok', 'mtms_train with a hostile search_path');
SELECT is(pg_temp.evil($$SELECT mtms_score('pv_e', 'search', 'ctr', '{user=1}')$$), 'ok',
          'mtms_score with a hostile search_path');
SELECT is(pg_temp.evil($$SELECT * FROM mtms_evaluate('pv_e', 'pv_s')$$), 'ok',
          'mtms_evaluate with a hostile search_path');
SELECT is(pg_temp.evil($$SELECT * FROM mtms_versions('pv_e')$$), 'ok', 'mtms_versions with a hostile search_path');
SELECT is(pg_temp.evil($$SELECT mtms_rollback('pv_e', 1)$$), 'ok', 'mtms_rollback with a hostile search_path');
SELECT is(pg_temp.evil($$SELECT mtms_drop_model('pv_e')$$), 'ok', 'mtms_drop_model with a hostile search_path');
-- the traps work: an unqualified = on integers under that path is caught
SELECT is(pg_temp.evil($$SELECT 1 = 1$$), 'P0001: a pv_evil function was called', 'the trap itself works');

SELECT * FROM finish();
ROLLBACK;
