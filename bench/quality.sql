-- bench/quality.sql: MTMS quality against its ablations and the oracle.
--
-- Synthetic impressions over :slots days (default 5); train on every day but
-- the last, test on the last.  Three models on the same data:
--   separate    phase 1 only, no CTCVR stage (each (scene, task) on its own)
--   p1+ctcvr    phase 1 with the CTCVR stage
--   mtms        p1+ctcvr, then the fine-tune on the joined embeddings
-- and the oracle: the AUC of the generator's true probabilities.
-- Run with bench/quality.sh (a throwaway cluster) or psql -f on any database.
\set ON_ERROR_STOP 1
\pset pager off
\if :{?rows}
\else
\set rows 800000
\endif
\if :{?slots}
\else
\set slots 5
\endif
\if :{?opts}
\else
\set opts '{}'
\endif
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

\echo The BLAS of this run (src/blas.c): its kernels, how they were chosen, sgemm GFLOP/s at the tower shapes
SELECT version AS openblas, kernels, kernels_source, round(gflops::numeric, 1) AS gflops FROM mtms_blas_info();

DROP TABLE IF EXISTS qb_all, qb_result CASCADE;
CREATE TABLE qb_all AS
  SELECT * FROM mtms_synthetic_samples(:rows, 1, jsonb_build_object('slots', :slots));
CREATE VIEW qb_train AS SELECT * FROM qb_all WHERE slot < :slots;
CREATE VIEW qb_test AS SELECT * FROM qb_all WHERE slot = :slots;
CREATE TABLE qb_result (variant text, scene text, task text, auc float8, logloss float8, seconds float8,
                        n bigint, positives bigint);
-- Standard error of an AUC (Hanley & McNeil 1982): differences between the
-- variants smaller than about 2 se are within the noise of the test set.
CREATE FUNCTION pg_temp.auc_se(a float8, n bigint, p bigint) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
  SELECT sqrt((a * (1 - a) + (p - 1) * (a / (2 - a) - a * a)
               + (n - p - 1) * (2 * a * a / (1 + a) - a * a)) / (p::float8 * (n - p)))
$$;

SELECT count(mtms_drop_model(name)) AS dropped FROM mtms_model WHERE name IN ('qb_separate', 'qb_p1', 'qb_mtms');
SELECT mtms_create_model('qb_separate', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         options => :'opts'::jsonb || '{"ctcvr": false, "finetune_fraction": 0}');
SELECT mtms_create_model('qb_p1', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         options => :'opts'::jsonb || '{"finetune_fraction": 0}');
SELECT mtms_create_model('qb_mtms', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                         options => :'opts'::jsonb);

\echo training separate (phase 1, no CTCVR)
SELECT sum(seconds) FILTER (WHERE scene = 'search' AND task = 'ctr') AS s
  FROM mtms_train('qb_separate', 'qb_train', phases => 'embedding') \gset sep_
INSERT INTO qb_result SELECT 'separate', scene, task, auc, logloss, :sep_s, n, positives FROM mtms_evaluate('qb_separate', 'qb_test');

\echo training p1+ctcvr (phase 1 with the CTCVR stage)
SELECT max(seconds) FILTER (WHERE phase = 'embedding') + max(seconds) FILTER (WHERE phase = 'ctcvr') AS s
  FROM mtms_train('qb_p1', 'qb_train', phases => 'embedding') \gset p1_
INSERT INTO qb_result SELECT 'p1+ctcvr', scene, task, auc, logloss, :p1_s, n, positives FROM mtms_evaluate('qb_p1', 'qb_test');

\echo training mtms (both phases; phase 1 leaves finetune_fraction of the rows to the fine-tune)
CREATE TEMP TABLE qb_stages AS SELECT * FROM mtms_train('qb_mtms', 'qb_train');
SELECT max(seconds) FILTER (WHERE phase = 'embedding') + max(seconds) FILTER (WHERE phase = 'ctcvr')
       + max(seconds) FILTER (WHERE phase = 'finetune') AS s
  FROM qb_stages \gset ft_
INSERT INTO qb_result SELECT 'mtms', scene, task, auc, logloss, :ft_s, n, positives FROM mtms_evaluate('qb_mtms', 'qb_test');

INSERT INTO qb_result
  SELECT 'oracle', scene, 'ctr', mtms_auc(p_ctr, click), NULL::float8, NULL::float8, NULL::bigint, NULL::bigint FROM qb_test GROUP BY scene
  UNION ALL
  SELECT 'oracle', scene, 'cvr', mtms_auc(p_cvr, conversion) FILTER (WHERE click), NULL, NULL, NULL, NULL FROM qb_test GROUP BY scene
  UNION ALL
  SELECT 'oracle', scene, 'ctcvr', mtms_auc(p_ctr * p_cvr, click AND conversion), NULL, NULL, NULL, NULL FROM qb_test GROUP BY scene;

\echo
\echo Test AUC on the last day (train rows per scene in brackets)
SELECT r.scene || ' [' || (SELECT count(*) FROM qb_train t WHERE t.scene = r.scene) || ']' AS scene,
       r.task,
       round(max(auc) FILTER (WHERE variant = 'oracle')::numeric, 4)   AS oracle,
       round(max(auc) FILTER (WHERE variant = 'separate')::numeric, 4) AS separate,
       round(max(auc) FILTER (WHERE variant = 'p1+ctcvr')::numeric, 4) AS "p1+ctcvr",
       round(max(auc) FILTER (WHERE variant = 'mtms')::numeric, 4)     AS mtms,
       round((max(auc) FILTER (WHERE variant = 'mtms') - max(auc) FILTER (WHERE variant = 'separate'))::numeric, 4) AS "mtms-separate",
       round(max(pg_temp.auc_se(auc, n, positives)) FILTER (WHERE variant = 'mtms')::numeric, 4) AS "se",
       round((max(auc) FILTER (WHERE variant = 'oracle') - max(auc) FILTER (WHERE variant = 'mtms'))::numeric, 4) AS "oracle-mtms"
  FROM qb_result r
 GROUP BY r.scene, r.task
 ORDER BY (SELECT count(*) FROM qb_train t WHERE t.scene = r.scene) DESC, array_position('{ctr,cvr,ctcvr}'::text[], r.task);

\echo mtms: epochs per stage (the most any unit ran) and seconds of the stage
SELECT phase, max(epochs) AS epochs, string_agg(scene || '/' || task || ' ' || epochs, ', ' ORDER BY scene, task) AS units,
       round(max(seconds)::numeric, 1) AS seconds
  FROM qb_stages GROUP BY phase ORDER BY min(CASE phase WHEN 'embedding' THEN 1 WHEN 'ctcvr' THEN 2 ELSE 3 END);

\echo Training wall time in seconds
SELECT variant, round(max(seconds)::numeric, 1) AS seconds FROM qb_result WHERE variant <> 'oracle' GROUP BY variant ORDER BY 2;
