-- pgTAP: hardening (issue 6, items 2 and 3).
--
--  * mtms.max_memory: a training whose planned memory is over the limit is
--    refused with program_limit_exceeded (54000) and a message giving the
--    estimate; a pass whose state grows past it is stopped the same way;
--    either way the model is unchanged, and the next training works.
--  * max_features caps every (scene, task) embedding table; training and
--    scoring still work, a feature without a row scores like an unseen one.
--  * statement_timeout during each stage (embedding, ctcvr, finetune):
--    query_canceled (57014) within a second of the deadline, the previous
--    version and its scores unchanged, and the next training works.
--
-- To know which stage a cancel lands in, the samples of the cancel tests
-- are a view whose rows go through pg_temp.hc_mult(): it counts the rows
-- read (a sequence, which a rollback does not reset) and, once the count
-- passes a threshold, repeats every row many times.  So the first passes
-- (validation rows, the stages before the one under test) are small and
-- fast, and the stage under test is slow; the count at the cancel tells in
-- which pass the query was.
BEGIN;
SELECT plan(46);

SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;

-- 'SQLSTATE', message and DETAIL of a statement's error (NULLs: no error).
CREATE FUNCTION pg_temp.err(stmt text, OUT code text, OUT msg text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE stmt;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
END $$;

-- Fingerprint of a model: active version, kept versions, every parameter
-- row, and the scores of some sample rows for every task.
CREATE TEMP TABLE h_probe AS SELECT scene, features FROM mtms_synthetic_samples(30, 99);
CREATE FUNCTION pg_temp.fingerprint(p_model text) RETURNS text LANGUAGE sql AS $$
SELECT md5(concat_ws('|',
  (SELECT active_version FROM mtms_model WHERE name = p_model),
  (SELECT string_agg(version || ':' || active, ',' ORDER BY version) FROM mtms_versions(p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', version, scene, task, feature, vector, accum),
                         ',' ORDER BY version, scene, task, feature))
     FROM mtms_embedding WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', version, phase, scene, task, layer,
                                weights, bias), ',' ORDER BY version, phase, scene, task, layer))
     FROM mtms_tower WHERE model_id = (SELECT model_id FROM mtms_model WHERE name = p_model)),
  (SELECT string_agg(mtms_score(p_model, p.scene, t.task, p.features)::text, ','
                     ORDER BY p.features::text, t.task)
     FROM h_probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t(task))))
$$;

-- ===========================================================================
-- mtms.max_memory
-- hm_a: a small model whose shuffle buffers (131072 rows of about 160
-- bytes) alone are over 16 MB
CREATE TEMP TABLE hm_s AS SELECT * FROM mtms_synthetic_samples(20000, 3);
CREATE TEMP TABLE hm_small AS SELECT * FROM hm_s LIMIT 3000;
SELECT mtms_create_model('hm_a', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 8, '{8}',
       '{"max_epochs": 1, "batch_size": 256, "shuffle_buffer": 131072}');
SELECT lives_ok($$SELECT count(*) FROM mtms_train('hm_a', 'hm_small')$$,
                'a small model with large shuffle buffers trains with the default limit');
CREATE TEMP TABLE hm_before AS SELECT pg_temp.fingerprint('hm_a') AS fp;

-- refused before the first pass: the estimate is in the message
SET LOCAL mtms.max_memory = '16MB';
CREATE TEMP TABLE hm_e1 AS SELECT * FROM pg_temp.err($$SELECT count(*) FROM mtms_train('hm_a', 'hm_small')$$);
SELECT is((SELECT code FROM hm_e1), '54000',
          'over mtms.max_memory = 16MB: program_limit_exceeded');
SELECT matches((SELECT msg FROM hm_e1),
               '^mtms_train would need about [0-9]+ MB, more than mtms.max_memory \(16 MB\)$',
               'the message gives the estimate and the limit');
SELECT cmp_ok((SELECT substring(msg FROM 'about ([0-9]+) MB')::int FROM hm_e1), '>', 16,
              'the estimate is over the limit');
SELECT matches((SELECT detail FROM hm_e1), '^The model holds [0-9]+ MB of parameters and optimizer state; 1 processes train it\.$',
               'the detail gives the size of the model and the number of processes');
SELECT is(pg_temp.fingerprint('hm_a'), (SELECT fp FROM hm_before),
          'the model is unchanged: same version, parameters and scores');
-- every process of a parallel plan holds its own copy: the estimate grows
SET LOCAL max_parallel_workers_per_gather = 2;
CREATE TEMP TABLE hm_e2 AS SELECT * FROM pg_temp.err($$SELECT count(*) FROM mtms_train('hm_a', 'hm_small')$$);
SET LOCAL max_parallel_workers_per_gather = 0;
SELECT cmp_ok((SELECT substring(msg FROM 'about ([0-9]+) MB')::int FROM hm_e2), '>',
              (SELECT substring(msg FROM 'about ([0-9]+) MB')::int FROM hm_e1),
              'with 2 parallel workers the estimate is larger');
SELECT matches((SELECT detail FROM hm_e2), '; 3 processes train it\.$', 'and counts 3 processes');

-- a fresh model (64-float embeddings, 20000 rows, small buffers) passes
-- the first estimate, then outgrows the limit during the first pass:
-- stopped, nothing is committed
SELECT mtms_create_model('hm_b', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 64, '{16}',
       '{"max_epochs": 1, "batch_size": 256, "shuffle_buffer": 4096}');
CREATE TEMP TABLE hm_e3 AS SELECT * FROM pg_temp.err($$SELECT count(*) FROM mtms_train('hm_b', 'hm_s')$$);
SELECT is((SELECT code FROM hm_e3), '54000', 'a fresh model outgrowing the limit: program_limit_exceeded');
SELECT matches((SELECT msg FROM hm_e3),
               '^(mtms_train( [a-z_]+)? would need about|mtms training state uses) [0-9]+ MB, more than mtms.max_memory \(16 MB\)$',
               'the message gives the size and the limit');
-- "uses N MB, more than ... (16 MB)": N must be more than 16 (shown rounded up)
SELECT cmp_ok((SELECT substring(msg FROM '(?:about|uses) ([0-9]+) MB')::int FROM hm_e3), '>', 16,
              'the size shown is more than the limit');
SELECT results_eq($$SELECT active_version, (SELECT count(*) FROM mtms_version v WHERE v.model_id = m.model_id)::int
                      FROM mtms_model m WHERE name = 'hm_b'$$,
                  $$VALUES (NULL::int, 0)$$, 'no version was committed');

-- with workers, phase 1's two stages run as one chain of unit jobs; the
-- CTCVR stage's plan is still checked with the model as the embedding
-- stage left it (embedding rows are made as features are seen), as when
-- one stage follows the other: a limit that the model before training
-- fits but the CTCVR stage with 3 processes does not is refused there.
-- With the leader alone the same training fits.
CREATE TEMP TABLE hm_c_rows AS SELECT * FROM mtms_synthetic_samples(40000, 3);
SELECT mtms_create_model('hm_c', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}');
SET LOCAL mtms.max_memory = '20MB';
SET LOCAL mtms.train_workers = 2;
CREATE TEMP TABLE hm_e4 AS SELECT * FROM pg_temp.err($$SELECT count(*) FROM mtms_train('hm_c', 'hm_c_rows')$$);
SELECT is((SELECT code FROM hm_e4), '54000', 'chained with 2 workers: program_limit_exceeded');
SELECT matches((SELECT msg FROM hm_e4),
               '^mtms_train ctcvr would need about [0-9]+ MB, more than mtms.max_memory \(20 MB\)$',
               'refused by the CTCVR stage''s plan, with the model the embedding stage left');
SELECT matches((SELECT detail FROM hm_e4), '; 3 processes train units\.$', 'counting 3 processes');
SET LOCAL mtms.train_workers = 0;
SELECT lives_ok($$SELECT count(*) FROM mtms_train('hm_c', 'hm_c_rows')$$,
                'with the leader alone the same training fits');
RESET mtms.train_workers;
RESET mtms.max_memory;

-- the setting: megabytes, at least 16
SELECT is((pg_temp.err($$SET mtms.max_memory = '15MB'$$)).code, '22023', 'mtms.max_memory below 16MB is refused');
SELECT is((pg_temp.err($$SET mtms.max_memory = 'lots'$$)).code, '22023', 'mtms.max_memory must be a size');
SET LOCAL mtms.max_memory = '2GB';
SELECT is(current_setting('mtms.max_memory'), '2GB', 'mtms.max_memory takes units');
RESET mtms.max_memory;
SELECT lives_ok($$SELECT count(*) FROM mtms_train('hm_a', 'hm_small')$$, 'with the default limit the model trains again');
SELECT results_eq($$SELECT version, active FROM mtms_versions('hm_a')$$, $$VALUES (1, false), (2, true)$$,
                  'as version 2');
SELECT lives_ok($$SELECT mtms_drop_model('hm_a'); SELECT mtms_drop_model('hm_b')$$, 'drop the memory models');

-- ===========================================================================
-- max_features: 300 rows per (scene, task) table at most.  Search and feeds
-- see more distinct features than that in 3000 rows, video fewer.
CREATE TEMP TABLE hf_s AS SELECT * FROM mtms_synthetic_samples(3000, 1);
CREATE TEMP TABLE hf_s2 AS SELECT * FROM mtms_synthetic_samples(3000, 5, '{"universe_seed": 1}');
SELECT mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       format('{"max_epochs": 2, "batch_size": 64, "shuffle_buffer": 1024, "max_features": %s}', c)::jsonb)
  FROM (VALUES ('hf_m', 300), ('hf_free', 0)) AS t(m, c);
SELECT is((SELECT count(*)::int FROM mtms_train('hf_m', 'hf_s')), 15, 'a model with max_features = 300 trains');
SELECT is((SELECT count(*)::int FROM mtms_train('hf_free', 'hf_s')), 15, 'and the same model without a cap');
CREATE TEMP VIEW hf_rows AS
SELECT m.name AS model, e.version, e.scene, e.task, count(*)::int AS n
  FROM mtms_embedding e JOIN mtms_model m USING (model_id)
 WHERE m.name IN ('hf_m', 'hf_free') GROUP BY 1, 2, 3, 4;
SELECT is((SELECT count(*)::int FROM hf_rows WHERE model = 'hf_m' AND version = 1 AND n > 300), 0,
          'no (scene, task) table has more than 300 rows');
SELECT results_eq(
    $$SELECT c.scene, c.task, c.n, f.n > 300 FROM hf_rows c JOIN hf_rows f USING (version, scene, task)
       WHERE c.model = 'hf_m' AND f.model = 'hf_free' AND c.version = 1 ORDER BY 1, 2$$,
    $$VALUES ('feeds', 'ctr', 300, true), ('feeds', 'cvr', 300, true),
             ('search', 'ctr', 300, true), ('search', 'cvr', 300, true),
             ('video', 'ctr', (SELECT n FROM hf_rows WHERE model = 'hf_free' AND scene = 'video' AND task = 'ctr'), false),
             ('video', 'cvr', (SELECT n FROM hf_rows WHERE model = 'hf_free' AND scene = 'video' AND task = 'cvr'), false)$$,
    'tables that would be larger hold exactly 300 rows; video, with fewer features, keeps them all');
SELECT cmp_ok((SELECT auc FROM mtms_evaluate('hf_m', 'hf_s') WHERE scene = 'search' AND task = 'ctr'), '>', 0.6::float8,
              'the capped model still learns (search CTR AUC on its rows)');
SELECT is((SELECT count(*)::int FROM hf_s s, unnest('{ctr,cvr,ctcvr}'::text[]) t(task)
            WHERE NOT (mtms_score('hf_m', s.scene, t.task, s.features) BETWEEN 0 AND 1)), 0,
          'and scores every row with a probability');
-- a feature of the samples that got no row (in any table) scores as unseen
CREATE TEMP TABLE hf_rowless AS
SELECT f FROM (SELECT DISTINCT f FROM hf_s, unnest(features) f WHERE scene = 'search') x
 WHERE NOT EXISTS (SELECT 1 FROM mtms_embedding e
                    WHERE e.model_id = (SELECT model_id FROM mtms_model WHERE name = 'hf_m')
                      AND e.feature = mtms_feature_hash(x.f))
 ORDER BY f LIMIT 20;
SELECT is((SELECT count(*)::int FROM hf_rowless), 20, 'some features of the samples have no row');
SELECT is((SELECT count(*)::int FROM hf_rowless
            WHERE mtms_score('hf_m', 'search', 'ctr', ARRAY[f]) <> mtms_score('hf_m', 'search', 'ctr', '{}')), 0,
          'a feature without a row scores like no feature at all');
-- warm start on new rows: the full tables stay full, every old row stays
SELECT is((SELECT count(*)::int FROM mtms_train('hf_m', 'hf_s2')), 15, 'retrain the capped model on other rows');
SELECT is((SELECT count(*)::int FROM hf_rows WHERE model = 'hf_m' AND version = 2 AND n > 300), 0,
          'still no table over 300 rows');
SELECT is((SELECT count(*)::int
             FROM (SELECT scene, task, feature FROM mtms_embedding e JOIN mtms_model m USING (model_id)
                    WHERE m.name = 'hf_m' AND version = 1
                   EXCEPT
                   SELECT scene, task, feature FROM mtms_embedding e JOIN mtms_model m USING (model_id)
                    WHERE m.name = 'hf_m' AND version = 2) x), 0,
          'no row of version 1 was evicted');
SELECT lives_ok($$SELECT mtms_drop_model('hf_m'); SELECT mtms_drop_model('hf_free')$$, 'drop the max_features models');

-- ===========================================================================
-- statement_timeout in each stage.  The view counts the rows it serves to
-- tell the stages apart, so every pass must scan it: no kept rows.
SET LOCAL mtms.keep_training_rows = off;
CREATE TEMP TABLE hc_src AS
SELECT row_number() OVER () AS id, scene, features, click, conversion
  FROM mtms_synthetic_samples(2000, 4);
CREATE SEQUENCE pg_temp.hc_calls;
CREATE TEMP TABLE hc_cfg (threshold bigint, mult int);
INSERT INTO hc_cfg VALUES (0, 1);
-- called once per row read; mtms_train runs its queries with
-- search_path = pg_catalog, pg_temp, so names are qualified
CREATE FUNCTION pg_temp.hc_mult(bigint) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  n bigint := nextval('pg_temp.hc_calls');
BEGIN
  RETURN (SELECT CASE WHEN n > c.threshold THEN c.mult ELSE 1 END FROM pg_temp.hc_cfg c);
END $$;
CREATE TEMP VIEW hc_v AS
SELECT s.scene, s.features, s.click, s.conversion
  FROM hc_src s, LATERAL generate_series(1, pg_temp.hc_mult(s.id)) g;

-- Run a statement under the statement_timeout already set; its error,
-- the seconds it took and the rows the view served (calls).
CREATE FUNCTION pg_temp.hc_probe(stmt text, p_threshold bigint, p_mult int,
                                 OUT code text, OUT msg text, OUT seconds float8, OUT calls bigint)
LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz := clock_timestamp();
BEGIN
  UPDATE pg_temp.hc_cfg SET threshold = p_threshold, mult = p_mult;
  PERFORM setval('pg_temp.hc_calls', 1, false);
  BEGIN
    EXECUTE stmt;
    code := '00000';
  EXCEPTION
    WHEN query_canceled THEN
      GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
  END;
  seconds := extract(epoch FROM clock_timestamp() - t0);
  calls := (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pg_temp.hc_calls);
  UPDATE pg_temp.hc_cfg SET threshold = 0, mult = 1;
END $$;

SELECT mtms_create_model(m, '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
       '{"max_epochs": 2, "patience": 2, "batch_size": 64, "shuffle_buffer": 1024, "keep_versions": 5}')
  FROM unnest('{hc_m,hc_cal}'::text[]) m;
SELECT is((SELECT count(*)::int FROM mtms_train('hc_m', 'hc_src')), 15, 'version 1 of the model to cancel');
CREATE TEMP TABLE hc_before AS SELECT pg_temp.fingerprint('hc_m') AS fp;
-- The timeout: four times what phase 1 (2 embedding and 2 CTCVR epochs) of
-- a fresh model takes on the plain rows, between 400 ms and 3 s.  The stages
-- before the one under test read the plain rows (< 1/4 of that), the stage
-- under test reads each row 3000 times (seconds per pass).
CREATE TEMP TABLE hc_cal AS SELECT * FROM pg_temp.hc_probe(
    $$SELECT count(*) FROM mtms_train('hc_cal', 'hc_v', phases => 'embedding')$$, 0, 1);
SELECT least(3000, greatest(400, ceil(4000 * seconds)))::int AS hc_timeout_ms FROM hc_cal \gset
SELECT is((SELECT code FROM hc_cal), '00000', 'calibration: phase 1 of a fresh model on the view');

-- embedding: a warm start reads the rows once for the validation rows
-- (calls 1..n) and trains from pass 2 on: cancelled during pass 2
SET LOCAL statement_timeout = :hc_timeout_ms;
CREATE TEMP TABLE hc_r_emb AS SELECT * FROM pg_temp.hc_probe(
    $$SELECT count(*) FROM mtms_train('hc_m', 'hc_v', phases => 'embedding')$$, 2000, 3000);
SET LOCAL statement_timeout = 0;
-- ctcvr: the validation pass and the 2 embedding epochs read the plain
-- rows (calls 1..3n), the first CTCVR epoch the multiplied ones
SET LOCAL statement_timeout = :hc_timeout_ms;
CREATE TEMP TABLE hc_r_ctcvr AS SELECT * FROM pg_temp.hc_probe(
    $$SELECT count(*) FROM mtms_train('hc_m', 'hc_v', phases => 'embedding')$$, 6000, 3000);
SET LOCAL statement_timeout = 0;
-- finetune on the trained model: validation pass, then the fine-tune epochs
SET LOCAL statement_timeout = :hc_timeout_ms;
CREATE TEMP TABLE hc_r_ft AS SELECT * FROM pg_temp.hc_probe(
    $$SELECT count(*) FROM mtms_train('hc_m', 'hc_v', phases => 'finetune')$$, 2000, 3000);
SET LOCAL statement_timeout = 0;

CREATE TEMP VIEW hc_r AS
SELECT 'embedding' AS stage, 2000 AS lo, 4000 AS hi, * FROM hc_r_emb
UNION ALL SELECT 'ctcvr', 6000, 8000, * FROM hc_r_ctcvr
UNION ALL SELECT 'finetune', 2000, 4000, * FROM hc_r_ft;
SELECT results_eq($$SELECT stage, code, msg FROM hc_r ORDER BY stage$$,
                  $$VALUES ('ctcvr', '57014', 'canceling statement due to statement timeout'),
                           ('embedding', '57014', 'canceling statement due to statement timeout'),
                           ('finetune', '57014', 'canceling statement due to statement timeout')$$,
                  'a statement_timeout in each stage cancels the training: query_canceled');
SELECT results_eq($$SELECT stage, calls > lo AND calls <= hi FROM hc_r ORDER BY stage$$,
                  $$VALUES ('ctcvr', true), ('embedding', true), ('finetune', true)$$,
                  'each cancel came in the first pass of the stage under test');
SELECT results_eq(format($$SELECT stage, seconds < %s FROM hc_r ORDER BY stage$$, :hc_timeout_ms / 1000.0 + 1),
                  $$VALUES ('ctcvr', true), ('embedding', true), ('finetune', true)$$,
                  'each one answered within a second of the deadline');
SELECT is(pg_temp.fingerprint('hc_m'), (SELECT fp FROM hc_before),
          'after the three cancels version 1 is active, kept and scores as before');
SELECT is((SELECT count(*)::int FROM pg_ls_tmpdir() WHERE name LIKE 'pgsql_tmp_mtms.' || pg_backend_pid() || '.%'), 0,
          'no training snapshot file is left behind');
SELECT is((SELECT count(*)::int FROM mtms_train('hc_m', 'hc_src', phases => 'embedding')), 9,
          'the next training works');
SELECT is((SELECT count(*)::int FROM mtms_train('hc_m', 'hc_src', phases => 'finetune')), 6,
          'and so does a fine-tune');
SELECT results_eq($$SELECT version, active FROM mtms_versions('hc_m')$$,
                  $$VALUES (1, false), (2, false), (3, true)$$,
                  'they are versions 2 and 3; the cancelled trainings left no version');
SELECT isnt(pg_temp.fingerprint('hc_m'), (SELECT fp FROM hc_before), 'version 3 scores differently');
SELECT lives_ok($$SELECT mtms_drop_model('hc_m'); SELECT mtms_drop_model('hc_cal')$$, 'drop the models');

SELECT * FROM finish();
ROLLBACK;
