-- The synthetic impression generator mtms_synthetic_samples(n, seed, options).
\set SHOW_CONTEXT never

-- Row count; n = 0 is an empty set.
SELECT count(*) FROM mtms_synthetic_samples(12345);
SELECT count(*) FROM mtms_synthetic_samples(0);
-- The planner knows the row count.
EXPLAIN (COSTS ON) SELECT * FROM mtms_synthetic_samples(4321);

-- The first rows of the default seed (a guard against accidental changes).
SELECT slot, scene, features, click, conversion,
       round(p_ctr::numeric, 4) AS p_ctr, round(p_cvr::numeric, 4) AS p_cvr
  FROM mtms_synthetic_samples(8);

-- Determinism: the same seed gives the same rows, another seed other rows.
CREATE TEMP TABLE syn_digest AS
SELECT seed, opt,
       (SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s', slot, scene, features,
                                     click, conversion, p_ctr, p_cvr), E'\n' ORDER BY i))
          FROM mtms_synthetic_samples(5000, seed, opt::jsonb) WITH ORDINALITY s(slot, scene, features, click, conversion, p_ctr, p_cvr, i)) AS digest
  FROM (VALUES (1, '{}'), (1, '{}'), (2, '{}'), (2, '{"universe_seed": 1}'), (1, '{"users": 1000}')) v(seed, opt);
SELECT count(DISTINCT digest) AS distinct_digests,
       count(DISTINCT digest) FILTER (WHERE seed = 1 AND opt = '{}') AS seed1_runs_equal
  FROM syn_digest;
-- The universe (users, ads, their parameters) comes from the seed, or from
-- option universe_seed: seed 2 with universe_seed 1 is the world of seed 1.
SELECT (SELECT count(*) FROM (
          SELECT a FROM (SELECT features[2] AS a, features[3] AS b FROM mtms_synthetic_samples(20000, 1)
                         UNION
                         SELECT features[2], features[3] FROM mtms_synthetic_samples(20000, 2, '{"universe_seed": 1}')) x
           GROUP BY a HAVING count(*) > 1) y) AS same_universe_conflicts,
       (SELECT count(*) FROM (
          SELECT a FROM (SELECT features[2] AS a, features[3] AS b FROM mtms_synthetic_samples(20000, 1)
                         UNION
                         SELECT features[2], features[3] FROM mtms_synthetic_samples(20000, 2)) x
           GROUP BY a HAVING count(*) > 1) y) > 1000 AS other_universe_differs;
-- Row i depends on (seed, i) and the universe, not on what comes after it.
SELECT (SELECT string_agg(features::text || p_ctr, ';' ORDER BY i) FROM mtms_synthetic_samples(50, 7, '{"slots": 1}') WITH ORDINALITY s(a, b, features, c, d, p_ctr, f, i) WHERE i <= 20) =
       (SELECT string_agg(features::text || p_ctr, ';' ORDER BY i) FROM mtms_synthetic_samples(20, 7, '{"slots": 1}') WITH ORDINALITY s(a, b, features, c, d, p_ctr, f, i)) AS prefix_stable;

-- Structure of a row: one user, ad, advertiser, hour and device, 1-3 tags.
CREATE TEMP TABLE syn AS SELECT * FROM mtms_synthetic_samples(100000);
CREATE TEMP TABLE syn_f AS
SELECT i, split_part(f, '=', 1) AS field, split_part(f, '=', 2)::int AS value
  FROM (SELECT row_number() OVER () AS i, features FROM syn) s, unnest(features) f;
SELECT field, min(per_row), max(per_row), min(lo), max(hi)
  FROM (SELECT i, field, count(*) AS per_row, min(value) AS lo, max(value) AS hi
          FROM syn_f GROUP BY i, field) x
 GROUP BY field ORDER BY field;
SELECT count(DISTINCT field) AS fields_per_row FROM syn_f;
-- An ad always has the same advertiser and tags.
SELECT count(*) AS ads_with_two_advertisers FROM (
  SELECT features[2] FROM syn GROUP BY 1 HAVING count(DISTINCT features[3]) > 1) x;
SELECT count(*) AS ads_with_two_tag_sets FROM (
  SELECT features[2] FROM syn GROUP BY 1 HAVING count(DISTINCT features[6:]) > 1) x;
-- Zipf-like popularity: the top 10% of users make most of the traffic.
SELECT count(DISTINCT features[1]) > 10000 AS many_users,
       (SELECT sum(c) FROM (SELECT count(*) c FROM syn GROUP BY features[1] ORDER BY 1 DESC LIMIT 2000) t)
         > 0.5 * 100000 AS top_users_dominate
  FROM syn;
-- Labels and probabilities.
SELECT count(*) FILTER (WHERE conversion AND NOT click) AS conversions_without_click,
       count(*) FILTER (WHERE NOT (p_ctr > 0 AND p_ctr < 1 AND p_cvr > 0 AND p_cvr < 1)) AS bad_probabilities,
       count(*) FILTER (WHERE slot NOT BETWEEN 1 AND 7) AS bad_slots
  FROM syn;
-- Slots: floor(i * slots / n) + 1, in order.
SELECT slot, count(*) FROM mtms_synthetic_samples(70, 1, '{"slots": 7}') GROUP BY slot ORDER BY slot;

-- Rates within the documented bounds (default options, 100k rows):
-- traffic 60/36/4 %, CTR 2-6 % per scene, CVR among clicks 5-20 % per scene,
-- and the realised rates agree with the mean true probabilities.
SELECT scene,
       abs(count(*) / 100000.0 - CASE scene WHEN 'search' THEN 0.60 WHEN 'feeds' THEN 0.36 ELSE 0.04 END) < 0.01 AS share_ok,
       avg(click::int) BETWEEN 0.02 AND 0.06 AS ctr_ok,
       avg(conversion::int) FILTER (WHERE click) BETWEEN 0.05 AND 0.20 AS cvr_ok,
       abs(avg(click::int) - avg(p_ctr)) < 0.005 AS ctr_calibrated,
       abs(avg(conversion::int) FILTER (WHERE click) - avg(p_cvr) FILTER (WHERE click)) < 0.03 AS cvr_calibrated
  FROM syn GROUP BY scene ORDER BY count(*) DESC;
SELECT abs(avg(p_ctr) - 0.04) < 0.003 AS mean_ctr_near_target FROM syn;

-- Options.
SELECT scene, count(*) FROM mtms_synthetic_samples(10000, 3,
       '{"scenes": ["a", "b"], "scene_weights": [1, 3]}') GROUP BY scene ORDER BY scene;
SELECT count(DISTINCT scene) FROM mtms_synthetic_samples(1000, 1, '{"scenes": ["x", "y", "z", "w"]}');
SELECT round(avg(p_ctr)::numeric, 2) AS ctr,
       round((sum(p_ctr * p_cvr) / sum(p_ctr))::numeric, 2) AS cvr
  FROM mtms_synthetic_samples(20000, 1, '{"ctr": 0.1, "cvr": 0.3}');
SELECT max(split_part(f, '=', 2)::int) FILTER (WHERE f LIKE 'user=%') <= 50 AS users,
       max(split_part(f, '=', 2)::int) FILTER (WHERE f LIKE 'ad=%') <= 10 AS ads,
       max(split_part(f, '=', 2)::int) FILTER (WHERE f LIKE 'advertiser=%') <= 3 AS advertisers,
       max(split_part(f, '=', 2)::int) FILTER (WHERE f LIKE 'tag=%') <= 2 AS tags,
       count(DISTINCT f) FILTER (WHERE f LIKE 'tag=%') = 2 AS both_tags_used
  FROM mtms_synthetic_samples(2000, 1, '{"users": 50, "ads": 10, "advertisers": 3, "tags": 2}'), unnest(features) f;
SELECT max(slot) FROM mtms_synthetic_samples(100, 1, '{"slots": 30}');
SELECT count(*) FROM mtms_synthetic_samples(10, 1, '{"users": 1, "ads": 1, "advertisers": 1, "tags": 1, "slots": 1, "scenes": ["only"]}');

-- Errors.
SELECT * FROM mtms_synthetic_samples(-1);
SELECT * FROM mtms_synthetic_samples(10000000001);
SELECT * FROM mtms_synthetic_samples(NULL);
SELECT * FROM mtms_synthetic_samples(10, NULL);
SELECT * FROM mtms_synthetic_samples(10, 1, NULL);
SELECT * FROM mtms_synthetic_samples(10, 1, '[1]');
SELECT * FROM mtms_synthetic_samples(10, 1, '3');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"user": 10}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"users": "many"}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"users": 0}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"users": 2.5}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"ads": 1000001}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"advertisers": -1}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"tags": null}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"ctr": 0}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"ctr": 0.6}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"cvr": true}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"slots": 0}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"universe_seed": 3000000000}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": "search"}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": []}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": ["a", 1]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": ["a", "a"]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": ["a b"]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scene_weights": [1, 2]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": ["a", "b"], "scene_weights": [1, 0]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"scenes": ["a", "b"], "scene_weights": [1, "x"]}');
SELECT * FROM mtms_synthetic_samples(10, 1, '{"users": 10000000, "scenes": ["a","b","c","d","e","f","g","h","i"]}');
