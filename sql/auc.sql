-- The exact ROC AUC aggregate mtms_auc(score, label).
\set SHOW_CONTEXT never

CREATE TEMP TABLE auc_cases (name text, score float8, label boolean);
INSERT INTO auc_cases VALUES
  -- perfect ranking
  ('perfect', 0.9, true), ('perfect', 0.8, true), ('perfect', 0.1, false), ('perfect', 0.2, false),
  -- reversed ranking
  ('reversed', 0.1, true), ('reversed', 0.9, false), ('reversed', 0.8, false),
  -- every score tied
  ('ties', 0.5, true), ('ties', 0.5, false), ('ties', 0.5, false), ('ties', 0.5, true),
  -- pos {3,2,2,1}, neg {2,1,0}: 3 beats 3; each 2 beats 2, ties 1; 1 beats 1, ties 1
  -- U = 3 + 2 * 2.5 + 1.5 = 9.5 of 12
  ('mixed', 3, true), ('mixed', 2, true), ('mixed', 2, true), ('mixed', 1, true),
  ('mixed', 2, false), ('mixed', 1, false), ('mixed', 0, false),
  -- NULL scores and labels are skipped: same as perfect
  ('nulls', 0.9, true), ('nulls', NULL, false), ('nulls', 0.1, false), ('nulls', 0.5, NULL),
  -- only one class present
  ('positives only', 0.3, true), ('positives only', 0.7, true),
  ('negatives only', 0.3, false),
  ('nothing but NULLs', NULL, true), ('nothing but NULLs', 0.2, NULL),
  -- infinities and NaN (NaN sorts above every number, as in PostgreSQL)
  ('special', 'Infinity', true), ('special', '-Infinity', false), ('special', 'NaN', true),
  ('special', 'NaN', false), ('special', 1e308, false);

SELECT name, mtms_auc(score, label), count(*) FILTER (WHERE label) AS pos,
       count(*) FILTER (WHERE NOT label) AS neg
  FROM auc_cases GROUP BY name ORDER BY name;

-- No rows at all.
SELECT mtms_auc(score, label) IS NULL AS empty FROM auc_cases WHERE false;

-- Against a reference: the Mann-Whitney statistic from average ranks, on
-- 20000 rows with many ties (scores are small integers).
CREATE TEMP TABLE auc_big AS
SELECT (abs(hashint4(i)) % 50)::float8 AS score,
       (abs(hashint4(i)) % 50) + abs(hashint4(i + 1000000)) % 60 > 60 AS label
  FROM generate_series(1, 20000) i;
WITH r AS (
  SELECT label, avg(rk) OVER (PARTITION BY score) AS r
    FROM (SELECT score, label, row_number() OVER (ORDER BY score) AS rk FROM auc_big) x),
ref AS (
  SELECT (sum(r) FILTER (WHERE label)
          - count(*) FILTER (WHERE label) * (count(*) FILTER (WHERE label) + 1) / 2.0)
         / (count(*) FILTER (WHERE label) * count(*) FILTER (WHERE NOT label)) AS auc
    FROM r)
SELECT round(ref.auc::numeric, 6) AS reference,
       abs((SELECT mtms_auc(score, label) FROM auc_big) - ref.auc) < 1e-12 AS equal
  FROM ref;
-- Input order does not matter.
SELECT (SELECT mtms_auc(score, label) FROM (SELECT * FROM auc_big ORDER BY score DESC) s) =
       (SELECT mtms_auc(score, label) FROM (SELECT * FROM auc_big ORDER BY score) s) AS order_free;
-- Scores only matter through their order.
SELECT (SELECT mtms_auc(score, label) FROM auc_big) =
       (SELECT mtms_auc(exp(score / 10) - 3, label) FROM auc_big) AS monotone_invariant;

-- As a window aggregate: the final function may run on a growing state.
SELECT i, mtms_auc(s, l) OVER (ORDER BY i) AS running
  FROM (VALUES (1, 0.9, true), (2, 0.1, false), (3, 0.5, true), (4, 0.7, false),
               (5, 0.5, false)) v(i, s, l);

-- Two calls with the same arguments in one query (they may share a state).
SELECT mtms_auc(score, label) AS a, mtms_auc(score, label) AS b,
       mtms_auc(-score, label) AS flipped
  FROM auc_cases WHERE name = 'mixed';
