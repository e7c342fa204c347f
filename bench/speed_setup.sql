-- bench/speed_setup.sql: the data of the side-by-side speed benchmark
-- (bench/speed.sh, driven by bench/speed_run.py).
--
--   sp_all       :rows synthetic impressions over 5 days (seed 1)
--   sp_train     days 1-4 (the training rows of both mtms and PyTorch)
--   sp_test      day 5
--   sp_score     the training days with a row id: the scoring benchmark's input
--   sp_ads       every ad with its ad-side features (ad, advertiser, tags): ranking candidates
--   sp_requests  210 test impressions' scene and user-side features (user, hour, device):
--                ranking requests
\set ON_ERROR_STOP 1
\if :{?rows}
\else
\set rows 1250000
\endif
SET client_min_messages = warning;

DROP TABLE IF EXISTS sp_all, sp_score, sp_ads, sp_requests CASCADE;
CREATE TABLE sp_all AS
  SELECT * FROM mtms_synthetic_samples(:rows, 1, '{"slots": 5}');
CREATE VIEW sp_train AS SELECT * FROM sp_all WHERE slot < 5;
CREATE VIEW sp_test AS SELECT * FROM sp_all WHERE slot = 5;

CREATE TABLE sp_score AS
  SELECT row_number() OVER () AS id, scene, features FROM sp_all WHERE slot < 5;

CREATE TABLE sp_ads AS
  SELECT row_number() OVER (ORDER BY ad) AS n, ad, feats
    FROM (SELECT DISTINCT ON (ad) ad, feats
            FROM (SELECT (SELECT f FROM unnest(features) f WHERE f LIKE 'ad=%') AS ad,
                         ARRAY(SELECT f FROM unnest(features) f
                                WHERE f LIKE 'ad=%' OR f LIKE 'advertiser=%' OR f LIKE 'tag=%') AS feats
                    FROM sp_all WHERE slot = 5) a
           ORDER BY ad) d;

CREATE TABLE sp_requests AS
  SELECT row_number() OVER () AS k, scene,
         ARRAY(SELECT f FROM unnest(features) f
                WHERE f LIKE 'user=%' OR f LIKE 'hour=%' OR f LIKE 'device=%') AS user_feats
    FROM (SELECT scene, features FROM sp_all WHERE slot = 5
           ORDER BY hashtext(features::text) LIMIT 210) r;

VACUUM ANALYZE sp_all;
VACUUM ANALYZE sp_score;
ANALYZE sp_ads;
ANALYZE sp_requests;
SELECT (SELECT count(*) FROM sp_train) AS train_rows, (SELECT count(*) FROM sp_test) AS test_rows,
       (SELECT count(*) FROM sp_ads) AS ads, (SELECT count(*) FROM sp_requests) AS requests;
