-- The bad-input matrix (issue 6, item 1): every bad input gets an error
-- with a specific SQLSTATE and a message naming the offending value, never
-- a crash, and after every failed call the model is exactly as it was:
-- same active version, same versions, same parameters (md5 of every
-- embedding and tower row) and the same scores.
--
-- Cases already covered elsewhere are not repeated one by one (train.sql,
-- score.sql, catalog.sql); the matrix below runs the sample-row cases
-- through both mtms_train and mtms_evaluate, which the other tests do not.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- 3000 impressions; id numbers the rows so that a bad row can be put late
-- in the scan, after many good rows were already trained on.
CREATE TABLE bi_s AS
SELECT row_number() OVER () AS id, scene, features, click, conversion
  FROM mtms_synthetic_samples(3000, 1);
SELECT mtms_create_model('bi_m', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT count(*) AS rows FROM mtms_train('bi_m', 'bi_s');

-- Parameters of a model, bit for bit: active version, kept versions, every
-- embedding and tower row (used to compare two models).
CREATE FUNCTION pg_temp.bi_params(p_model text) RETURNS text LANGUAGE sql AS $$
SELECT md5(concat_ws('|',
  (SELECT active_version FROM mtms_model WHERE name = p_model),
  (SELECT string_agg(version || ':' || active, ',' ORDER BY version) FROM mtms_versions(p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', version, scene, task, feature, vector, accum),
                         ',' ORDER BY version, scene, task, feature))
     FROM mtms_embedding WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', version, phase, scene, task, layer,
                                weights, bias), ',' ORDER BY version, phase, scene, task, layer))
     FROM mtms_tower WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model))))
$$;
-- State of a model, cheap enough to take after every case: its rows in the
-- four tables are the very same tuples (ctid and xmin: any change, even
-- one rewriting the same values, writes new tuples), and it gives the same
-- scores to a few rows for every task.
CREATE FUNCTION pg_temp.bi_state(p_model text) RETURNS text LANGUAGE sql AS $$
WITH m AS (SELECT model_id, ctid, xmin FROM mtms_model WHERE name = p_model)
SELECT md5(concat_ws('|',
  (SELECT ctid::text || xmin::text FROM m),
  (SELECT string_agg(ctid::text || xmin::text, ',' ORDER BY ctid) FROM mtms_version
    WHERE model_id = (SELECT model_id FROM m)),
  (SELECT string_agg(ctid::text || xmin::text, ',' ORDER BY ctid) FROM mtms_embedding
    WHERE model_id = (SELECT model_id FROM m)),
  (SELECT string_agg(ctid::text || xmin::text, ',' ORDER BY ctid) FROM mtms_tower
    WHERE model_id = (SELECT model_id FROM m)),
  (SELECT string_agg(mtms_score(p_model, s.scene, t.task, s.features)::text, ','
                     ORDER BY s.id, t.task)
     FROM (SELECT * FROM bi_s WHERE id % 500 = 7) s, unnest('{ctr,cvr,ctcvr}'::text[]) t(task))))
$$;
CREATE TEMP TABLE bi_base AS SELECT pg_temp.bi_state('bi_m') AS state, pg_temp.bi_params('bi_m') AS params;
CREATE FUNCTION pg_temp.bi_unchanged() RETURNS boolean LANGUAGE sql AS $$
SELECT pg_temp.bi_state('bi_m') = state FROM bi_base
$$;
SELECT pg_temp.bi_unchanged() AS unchanged;

-- Runs one statement; 'SQLSTATE: message' of its error, or 'no error'.
CREATE FUNCTION pg_temp.bi_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A matrix of cases: each row a statement; run them in order, and after
-- each one check the model.
CREATE TEMP TABLE bi_case (id serial PRIMARY KEY, what text, stmt text);
CREATE FUNCTION pg_temp.bi_run()
RETURNS TABLE(id int, what text, error text, unchanged boolean) LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  FOR c IN SELECT * FROM bi_case ORDER BY bi_case.id LOOP
    id := c.id;
    what := c.what;
    error := pg_temp.bi_try(c.stmt);
    unchanged := pg_temp.bi_unchanged();
    RETURN NEXT;
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- 1. Bad sample rows, through mtms_train and mtms_evaluate.  Row 2508 of
-- the 3000 is the bad one: a clicked row late in the scan, so that both
-- pairs of its scene read it after having trained on many good rows.
SELECT id AS bad_row, scene, click FROM bi_s WHERE id = 2508;
CREATE FUNCTION pg_temp.bi_bad_view(p_name text, p_col text, p_expr text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE VIEW %I AS SELECT %s FROM bi_s', p_name,
    CASE p_col
      WHEN 'scene' THEN format('CASE WHEN id = 2508 THEN %s ELSE scene END AS scene, features, click, conversion', p_expr)
      WHEN 'features' THEN format('scene, CASE WHEN id = 2508 THEN %s ELSE features END AS features, click, conversion', p_expr)
      WHEN 'click' THEN format('scene, features, CASE WHEN id = 2508 THEN %s ELSE click END AS click, conversion', p_expr)
    END);
END $$;
SELECT count(pg_temp.bi_bad_view(v, c, e)) AS views FROM (VALUES
  ('bi_null_scene', 'scene', 'NULL::text'),
  ('bi_null_features', 'features', 'NULL::text[]'),
  ('bi_null_click', 'click', 'NULL::boolean'),
  ('bi_null_element', 'features', $$features || NULL::text$$),
  ('bi_unknown_scene', 'scene', $$'shopping'$$),
  ('bi_empty_scene', 'scene', $$''$$),
  ('bi_unknown_field', 'features', $$features || 'colour=red'::text$$),
  ('bi_no_equals', 'features', $$features || 'user42'::text$$),
  ('bi_empty_field', 'features', $$features || '=42'::text$$),
  ('bi_empty_value', 'features', $$features || 'user='::text$$),
  ('bi_only_equals', 'features', $$features || '='::text$$),
  ('bi_empty_string', 'features', $$features || ''::text$$),
  ('bi_10kb_value', 'features', $$features || ('user=' || repeat('x', 10240))$$),
  ('bi_100k_features', 'features', $$(SELECT array_agg('user=' || i) FROM generate_series(1, 100000) i)$$),
  ('bi_2d_features', 'features', $$'{{user=1,ad=2},{hour=3,device=1}}'::text[]$$)) AS t(v, c, e);
INSERT INTO bi_case (what, stmt)
SELECT v || ' / ' || f, format('SELECT count(*) FROM %s(''bi_m'', %L)', f, v)
  FROM unnest('{bi_null_scene,bi_null_features,bi_null_click,bi_null_element,bi_unknown_scene,
                bi_empty_scene,bi_unknown_field,bi_no_equals,bi_empty_field,bi_empty_value,
                bi_only_equals,bi_empty_string,bi_10kb_value,bi_100k_features,bi_2d_features}'::text[])
       WITH ORDINALITY AS a(v, i),
       unnest('{mtms_train,mtms_evaluate}'::text[]) WITH ORDINALITY AS b(f, j)
 ORDER BY i, j;
SELECT * FROM pg_temp.bi_run();

-- ---------------------------------------------------------------------------
-- 2. Malformed features given to mtms_score (the cases score.sql does not
-- have): the limits are 4096 bytes per feature and 65536 features per row.
DELETE FROM bi_case;
INSERT INTO bi_case (what, stmt) VALUES
  ('only "="', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{=}')$$),
  ('empty string', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{""}')$$),
  ('field with a space', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{" user=1"}')$$),
  ('field in another case', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{USER=1}')$$),
  ('10 kB value', $$SELECT mtms_score('bi_m', 'search', 'ctr', ARRAY['user=' || repeat('x', 10240)])$$),
  ('4097 bytes', $$SELECT mtms_score('bi_m', 'search', 'ctr', ARRAY['user=' || repeat('x', 4092)])$$),
  ('4096 bytes', $$SELECT mtms_score('bi_m', 'search', 'ctr', ARRAY['user=' || repeat('x', 4091)])$$),
  -- the message cuts a long value on a character boundary
  ('10 kB of emoji', $$SELECT mtms_score('bi_m', 'search', 'ctr', ARRAY['user=' || repeat('😀', 2600)])$$),
  ('100k features', $$SELECT mtms_score('bi_m', 'search', 'ctr', (SELECT array_agg('user=' || i) FROM generate_series(1, 100000) i))$$),
  ('65537 features', $$SELECT mtms_score('bi_m', 'search', 'ctr', (SELECT array_agg('ad=' || i) FROM generate_series(1, 65537) i))$$),
  ('65536 features', $$SELECT mtms_score('bi_m', 'search', 'ctr', (SELECT array_agg('ad=' || i) FROM generate_series(1, 65536) i))$$),
  ('NULL element first', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{NULL,user=1}')$$),
  ('3-D array', $$SELECT mtms_score('bi_m', 'search', 'ctr', '{{{user=1}}}')$$),
  ('unknown task, 3 args', $$SELECT mtms_score('search', 'pctr', '{user=1}')$$),
  ('unknown scene, 3 args', $$SELECT mtms_score('shopping', 'ctr', '{user=1}')$$),
  ('unknown field, 3 args', $$SELECT mtms_score('search', 'ctr', '{colour=red}')$$);
SELECT * FROM pg_temp.bi_run();
-- Multibyte values are ordinary values: each is its own feature, and the
-- hash is that of the bytes, so the same text always finds the same row.
SELECT mtms_feature_hash('user=😀') <> mtms_feature_hash('user=😁') AS emoji_distinct,
       mtms_feature_hash('user=😀') = mtms_feature_hash('user=' || chr(128512)) AS same_bytes_same_hash,
       mtms_feature_hash('user=ä') <> mtms_feature_hash('user=a' || chr(776)) AS nfc_nfd_differ,
       mtms_score('bi_m', 'search', 'ctr', '{user=😀,ad=日本語,tag=ü}') =
       mtms_score('bi_m', 'search', 'ctr', '{}') AS unseen_emoji_scores_as_unseen;
SELECT * FROM mtms_parse_features('bi_m', '{user=😀,ad=日本語,user==1,tag=a=b}')
 ORDER BY feature;
SELECT pg_temp.bi_unchanged() AS unchanged;

-- ---------------------------------------------------------------------------
-- 3. Sample relations of the wrong shape, through mtms_evaluate (train.sql
-- and train_test.sql check these for mtms_train) and a few kinds of
-- relation.  Errors name the column and its type.
DELETE FROM bi_case;
CREATE VIEW bi_no_scene AS SELECT features, click, conversion FROM bi_s;
CREATE VIEW bi_no_features AS SELECT scene, click, conversion FROM bi_s;
CREATE VIEW bi_upper_scene AS SELECT scene AS "Scene", features, click, conversion FROM bi_s;
CREATE VIEW bi_int_scene AS SELECT 1 AS scene, features, click, conversion FROM bi_s;
CREATE VIEW bi_text_features AS SELECT scene, features::text AS features, click, conversion FROM bi_s;
CREATE VIEW bi_varchar_features AS SELECT scene, features::varchar[] AS features, click, conversion FROM bi_s;
CREATE VIEW bi_int_click AS SELECT scene, features, click::int AS click, conversion FROM bi_s;
CREATE VIEW bi_text_conversion AS SELECT scene, features, click, conversion::text AS conversion FROM bi_s;
CREATE TYPE bi_composite AS (scene text, features text[], click boolean, conversion boolean);
CREATE MATERIALIZED VIEW bi_unpopulated AS SELECT * FROM bi_s WITH NO DATA;
CREATE INDEX bi_index ON bi_s (scene, click, conversion);
INSERT INTO bi_case (what, stmt)
SELECT v || ' / ' || f, format('SELECT count(*) FROM %s(''bi_m'', %L)', f, v)
  FROM unnest('{bi_no_scene,bi_no_features,bi_upper_scene,bi_int_scene,bi_text_features,
                bi_varchar_features,bi_int_click,bi_text_conversion}'::text[]) WITH ORDINALITY AS a(v, i),
       unnest('{mtms_evaluate}'::text[]) AS f
 ORDER BY i;
INSERT INTO bi_case (what, stmt)
SELECT v || ' / ' || f, format('SELECT count(*) FROM %s(''bi_m'', %L)', f, v)
  FROM unnest('{bi_varchar_features,bi_composite,bi_unpopulated,bi_index}'::text[]) WITH ORDINALITY AS a(v, i),
       unnest('{mtms_train,mtms_evaluate}'::text[]) WITH ORDINALITY AS b(f, j)
 ORDER BY i, j;
INSERT INTO bi_case (what, stmt) VALUES
  ('OID 0', $$SELECT count(*) FROM mtms_evaluate('bi_m', 0::oid::regclass)$$),
  ('dropped relation', $$SELECT count(*) FROM mtms_evaluate('bi_m', 4294967295::oid::regclass)$$);
SELECT * FROM pg_temp.bi_run();

-- Accepted: a partitioned table, and a populated materialized view.
CREATE TABLE bi_part (scene text, features text[], click boolean, conversion boolean)
  PARTITION BY LIST (scene);
CREATE TABLE bi_part_search PARTITION OF bi_part FOR VALUES IN ('search');
CREATE TABLE bi_part_other PARTITION OF bi_part DEFAULT;
INSERT INTO bi_part SELECT scene, features, click, conversion FROM bi_s;
CREATE MATERIALIZED VIEW bi_populated AS SELECT * FROM bi_s;
SELECT (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_part') e) =
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_s') e) AS partitioned_same,
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_populated') e) =
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_s') e) AS matview_same;

-- ---------------------------------------------------------------------------
-- 4. No rows: training is an error, evaluation returns no rows; a relation
-- without rows of the scenes being trained is an error too.
CREATE TABLE bi_empty (LIKE bi_s);
CREATE VIEW bi_no_video AS SELECT * FROM bi_s WHERE scene <> 'video';
DELETE FROM bi_case;
INSERT INTO bi_case (what, stmt) VALUES
  ('empty table', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_empty')$$),
  ('empty table, fine-tune', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_empty', phases => 'finetune')$$),
  ('no video rows, train video', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_no_video', scenes => '{video}')$$),
  ('no video rows, embedding only', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_no_video', scenes => '{video}', phases => 'embedding')$$);
SELECT * FROM pg_temp.bi_run();
SELECT count(*) AS evaluate_rows FROM mtms_evaluate('bi_m', 'bi_empty');

-- ---------------------------------------------------------------------------
-- 5. Names with quotes, semicolons, 200 characters, for every function that
-- takes a model or scene name: invalid_name (42602) when declaring,
-- undefined_object (42704) when looking up; never an injection.
DELETE FROM bi_case;
INSERT INTO bi_case (what, stmt)
SELECT 'create, scene ' || n, format('SELECT mtms_create_model(''bi_x'', ARRAY[%L], ''{f}'')', s)
  FROM (VALUES (1, 'quote', $$it's$$), (2, 'double quote', 'a"b'),
               (3, 'semicolon', 'x; DROP TABLE bi_s; --'), (4, '200 chars', repeat('s', 200)),
               (5, '64 bytes', repeat('s', 64)), (6, 'multibyte', 'scène'),
               (7, 'newline', E'a\nb'), (8, 'empty', '')) AS t(i, n, s) ORDER BY i;
INSERT INTO bi_case (what, stmt)
SELECT 'add_scene ' || n, format('SELECT mtms_add_scene(''bi_m'', %L)', s)
  FROM (VALUES (1, 'quote', $$it's$$), (2, 'semicolon', 'x; DROP TABLE bi_s; --'),
               (3, '200 chars', repeat('s', 200))) AS t(i, n, s) ORDER BY i;
INSERT INTO bi_case (what, stmt)
SELECT f || ', model ' || n, format(stmt, quote_literal(s))
  FROM (VALUES (1, 'quote', $$it's$$), (2, 'semicolon', $$bi_m'; DROP TABLE bi_s; --$$),
               (3, '200 chars', repeat('m', 200))) AS t(i, n, s),
       (VALUES (1, 'mtms_score', 'SELECT mtms_score(%s, ''search'', ''ctr'', ''{}'')'),
               (2, 'mtms_train', 'SELECT count(*) FROM mtms_train(%s, ''bi_s'')'),
               (3, 'mtms_evaluate', 'SELECT count(*) FROM mtms_evaluate(%s, ''bi_s'')'),
               (4, 'mtms_versions', 'SELECT count(*) FROM mtms_versions(%s)'),
               (5, 'mtms_rollback', 'SELECT mtms_rollback(%s, 1)'),
               (6, 'mtms_add_field', 'SELECT mtms_add_field(%s, ''age'')'),
               (7, 'mtms_drop_model', 'SELECT mtms_drop_model(%s)')) AS g(j, f, stmt)
 ORDER BY j, i;
INSERT INTO bi_case (what, stmt) VALUES
  ('score, scene with quote', $$SELECT mtms_score('bi_m', 'it''s', 'ctr', '{}')$$),
  ('score, 200-char scene', $$SELECT mtms_score('bi_m', repeat('s', 200), 'ctr', '{}')$$),
  ('score, 200-char task', $$SELECT mtms_score('bi_m', 'search', repeat('t', 200), '{}')$$),
  ('train, scenes with a quote', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_s', scenes => ARRAY['it''s'])$$),
  ('train, phases with a quote', $$SELECT count(*) FROM mtms_train('bi_m', 'bi_s', phases => 'all''; --')$$),
  ('mtms.model with a quote', $$SELECT set_config('mtms.model', 'it''s', true), mtms_score('search', 'ctr', '{}')$$);
SELECT * FROM pg_temp.bi_run();
SELECT count(*) AS bi_s_rows FROM bi_s;
SELECT name FROM mtms_model WHERE name LIKE 'bi%' ORDER BY name;

-- ---------------------------------------------------------------------------
-- 6. Options: wrong JSON types and absurd values not in catalog.sql.
DELETE FROM bi_case;
INSERT INTO bi_case (what, stmt)
SELECT o, format('SELECT mtms_create_model(''bi_x'', ''{s}'', ''{f}'', options => %L)', o)
  FROM unnest(ARRAY[
    'null', '"max_epochs"', 'true', '{"max_epochs": {"value": 3}}', '{"max_epochs": true}',
    '{"max_epochs": -1}', '{"max_epochs": 1001}', '{"max_epochs": 1e30}',
    '{"patience": 0}', '{"finetune_fraction": 0.46}', '{"finetune_fraction": -0.1}',
    '{"evals_per_epoch": 0}', '{"evals_per_epoch": 101}', '{"shuffle_buffer": 0}',
    '{"keep_versions": 1001}', '{"keep_versions": "2"}', '{"l2": 1.5}',
    '{"seed": -9223372036854775809}', '{"seed": "42"}', '{"seed": true}',
    '{"max_features": 1.5}', '{"max_features": "all"}', '{"max_features": 1e19}',
    '{"ctcvr": null}', '{"ctcvr": "false"}', '{"lr_embedding": "NaN"}',
    '{"lr_embedding": 1e-400}', '{"Batch_Size": 64}', '{"batch_size\"; --": 64}']) WITH ORDINALITY AS t(o, i)
 ORDER BY i;
SELECT * FROM pg_temp.bi_run();
-- the extremes that are valid (validation 0.5 + fine-tune 0.45 leaves 5 %
-- to phase 1), a negative seed, a huge max_features
SELECT mtms_create_model('bi_x', '{s}', '{f}',
       options => '{"seed": -9223372036854775808, "max_features": 9223372036854775807,
                    "validation_fraction": 0.5, "finetune_fraction": 0.45}');
SELECT options->'seed' AS seed, options->'max_features' AS max_features
  FROM mtms_model WHERE name = 'bi_x';
SELECT mtms_drop_model('bi_x');

-- ---------------------------------------------------------------------------
-- 7. A relation the caller may not read: PostgreSQL's own permission error
-- (42501), for mtms_train on the caller's own model and for mtms_evaluate.
CREATE ROLE regress_mtms_badinput;
GRANT SELECT, INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower
   TO regress_mtms_badinput;
CREATE TABLE bi_secret AS SELECT scene, features, click, conversion FROM bi_s;
REVOKE ALL ON bi_secret FROM PUBLIC;
CREATE VIEW bi_secret_view AS SELECT * FROM bi_secret;
GRANT SELECT ON bi_secret_view TO regress_mtms_badinput;
-- (evaluating another role's model needs its 'score' grant)
SELECT mtms_grant('bi_m', 'regress_mtms_badinput', 'score');
UPDATE bi_base SET state = pg_temp.bi_state('bi_m');  -- the grant wrote the model's row
DELETE FROM bi_case;
INSERT INTO bi_case (what, stmt) VALUES
  ('train, unreadable table', $$SELECT count(*) FROM mtms_train('bi_theirs', 'bi_secret')$$),
  ('evaluate, unreadable table', $$SELECT count(*) FROM mtms_evaluate('bi_m', 'bi_secret')$$);
GRANT SELECT ON bi_case TO regress_mtms_badinput;
SET ROLE regress_mtms_badinput;
SELECT mtms_create_model('bi_theirs', '{search,feeds,video}',
       '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT id, what, pg_temp.bi_try(stmt) AS error FROM bi_case ORDER BY id;
SELECT active_version FROM mtms_model WHERE name = 'bi_theirs';
-- a view its owner may read is fine (the view's owner's rights apply)
SELECT count(*) AS rows FROM mtms_train('bi_theirs', 'bi_secret_view');
SELECT count(*) AS rows FROM mtms_evaluate('bi_m', 'bi_secret_view');
RESET ROLE;
SELECT mtms_drop_model('bi_theirs');
SELECT pg_temp.bi_unchanged() AS unchanged;

-- ---------------------------------------------------------------------------
-- 8. A NULL conversion is false, and a conversion without a click is
-- counted and treated as no conversion: training on such rows gives the
-- very same parameters, bit for bit, as training on the cleaned rows.
CREATE VIEW bi_clean AS
SELECT scene, features, click, conversion AND click AS conversion FROM bi_s;
CREATE VIEW bi_null_conv AS
SELECT scene, features, click, CASE WHEN conversion THEN true END AS conversion FROM bi_s;
-- every 10th non-clicked row claims a conversion
CREATE VIEW bi_conv_no_click AS
SELECT scene, features, click, CASE WHEN NOT click AND id % 10 = 3 THEN true ELSE conversion END AS conversion
  FROM bi_s;
SELECT count(*) FILTER (WHERE conversion IS NULL) AS null_conversions,
       count(*) FILTER (WHERE conversion) AS conversions
  FROM bi_null_conv;
SELECT count(*) FILTER (WHERE conversion AND NOT click) AS conversions_without_click
  FROM bi_conv_no_click;
SELECT mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}')
  FROM unnest('{bi_c1,bi_c2,bi_c3}'::text[]) m;
SELECT count(*) AS rows FROM mtms_train('bi_c1', 'bi_clean');
SELECT count(*) AS rows FROM mtms_train('bi_c2', 'bi_null_conv');
-- The NOTICE with the count: the epoch NOTICEs carry timings, so this one
-- training runs in a second session whose output is filtered.
SELECT current_database() AS bi_db \gset
\setenv PGDATABASE :bi_db
\! psql -X -q -c "SET max_parallel_workers_per_gather = 0" -c "SELECT count(*) FROM mtms_train('bi_c3', 'bi_conv_no_click')" 2>&1 | grep -E 'conversion without|ERROR'
SELECT pg_temp.bi_params('bi_c1') = pg_temp.bi_params('bi_c2') AS null_conversion_is_false,
       pg_temp.bi_params('bi_c1') = pg_temp.bi_params('bi_c3') AS conversion_without_click_ignored;
-- and mtms_evaluate counts them the same way
SELECT (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_clean') e) =
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_null_conv') e) AS eval_null_conversion,
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_clean') e) =
       (SELECT array_agg(e ORDER BY scene, task) FROM mtms_evaluate('bi_m', 'bi_conv_no_click') e) AS eval_no_click;

-- ---------------------------------------------------------------------------
-- 9. A scene without positives: video has no click, feeds no conversion.
-- Training works; the AUCs without both classes are NULL (in mtms_train,
-- in the version's metrics and in mtms_evaluate), the losses are finite.
CREATE VIEW bi_no_pos AS
SELECT scene, features, click AND scene <> 'video' AS click,
       conversion AND scene NOT IN ('video', 'feeds') AS conversion
  FROM bi_s;
SELECT mtms_create_model('bi_np', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT phase, scene, task, samples > 0 AS has_rows,
       train_loss >= 0 AND train_loss < 'Infinity' AS train_loss_finite,
       valid_loss >= 0 AND valid_loss < 'Infinity' AS valid_loss_finite,
       valid_auc IS NULL AS auc_null
  FROM mtms_train('bi_np', 'bi_no_pos') ORDER BY phase, scene, task;
SELECT s.key AS scene, t.key AS task, t.value->'valid_auc' AS valid_auc
  FROM mtms_version v, jsonb_each(v.metrics) s, jsonb_each(s.value) t
 WHERE v.model_id = (SELECT model_id FROM mtms_model WHERE name = 'bi_np') AND s.key IN ('video', 'feeds')
 ORDER BY 1, 2;
SELECT scene, task, n > 0 AS has_rows, positives, auc IS NULL AS auc_null,
       logloss >= 0 AND logloss < 'Infinity' AS logloss_finite, calibration IS NULL AS calibration_null
  FROM mtms_evaluate('bi_np', 'bi_no_pos') ORDER BY scene, task;
-- the scores of the scene without clicks are low, but probabilities
SELECT bool_and(p > 0 AND p < 0.5) AS low_probabilities
  FROM (SELECT mtms_score('bi_np', 'video', 'ctr', features) AS p FROM bi_s WHERE scene = 'video') s;

-- ---------------------------------------------------------------------------
-- 10. Accepted oddities: multibyte values, a value containing '=', a
-- feature of exactly 4096 bytes, a sample without features.  They train,
-- get their own embedding rows, and score.
CREATE VIEW bi_odd AS
SELECT scene,
       CASE id % 5 WHEN 0 THEN features || '{user=😀,ad=日本語}'::text[]
                   WHEN 1 THEN features || ARRAY['tag=a=b', 'device=' || repeat('d', 4089)]
                   WHEN 2 THEN '{}'::text[]
                   ELSE features END AS features,
       click, conversion
  FROM bi_s;
SELECT mtms_create_model('bi_odd', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 1, "batch_size": 64, "shuffle_buffer": 1024}');
SELECT count(*) AS rows FROM mtms_train('bi_odd', 'bi_odd');
SELECT left(f, 12) AS feature, octet_length(f) AS bytes,
       (SELECT count(*) FROM mtms_embedding e
         WHERE e.model_id = (SELECT model_id FROM mtms_model WHERE name = 'bi_odd')
           AND e.feature = mtms_feature_hash(f)) AS pairs
  FROM unnest(ARRAY['user=😀', 'ad=日本語', 'tag=a=b', 'device=' || repeat('d', 4089)]) f;
SELECT mtms_score('bi_odd', 'search', 'ctr', '{user=😀,ad=日本語}') <>
       mtms_score('bi_odd', 'search', 'ctr', '{}') AS emoji_feature_learned,
       mtms_score('bi_odd', 'feeds', 'cvr', '{}') BETWEEN 0 AND 1 AS no_features_scores;

-- ---------------------------------------------------------------------------
-- After all of it, the model is unchanged, parameters and all, and still
-- trains.
SELECT pg_temp.bi_unchanged() AS unchanged,
       pg_temp.bi_params('bi_m') = (SELECT params FROM bi_base) AS same_parameters;
SELECT count(*) AS rows FROM mtms_train('bi_m', 'bi_s');
SELECT version, active FROM mtms_versions('bi_m');

SELECT mtms_drop_model(name) FROM mtms_model WHERE name LIKE 'bi\_%' ORDER BY name;
DROP VIEW bi_null_scene, bi_null_features, bi_null_click, bi_null_element, bi_unknown_scene,
     bi_empty_scene, bi_unknown_field, bi_no_equals, bi_empty_field, bi_empty_value, bi_only_equals,
     bi_empty_string, bi_10kb_value, bi_100k_features, bi_2d_features, bi_no_scene, bi_no_features,
     bi_upper_scene, bi_int_scene, bi_text_features, bi_varchar_features, bi_int_click,
     bi_text_conversion, bi_no_video, bi_secret_view, bi_clean, bi_null_conv, bi_conv_no_click,
     bi_no_pos, bi_odd;
DROP MATERIALIZED VIEW bi_unpopulated, bi_populated;
DROP TYPE bi_composite;
DROP TABLE bi_s, bi_part, bi_empty, bi_secret;
REVOKE ALL ON mtms_model, mtms_version, mtms_embedding, mtms_tower, bi_case FROM regress_mtms_badinput;
DROP ROLE regress_mtms_badinput;
