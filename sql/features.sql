-- Feature parsing and hashing: mtms_feature_hash, mtms_parse_features.
\set SHOW_CONTEXT never

-- Known hashes.  They are part of the storage format (mtms_embedding.feature):
-- if this output changes, every trained model becomes unreadable.
SELECT mtms_feature_hash('user=42') AS user_42,
       mtms_feature_hash('ad=7') AS ad_7,
       mtms_feature_hash('tag=a=b') AS value_with_equals,
       mtms_feature_hash('ville=Zürich') AS utf8;
-- It is PostgreSQL's own hash of the whole string, seeded with "mtms".
SELECT mtms_feature_hash(f) = hashtextextended(f, x'6d746d73'::int) AS postgres_hash
  FROM (VALUES ('user=42'), ('tag=a=b'), ('x=' || repeat('y', 4000))) v(f);
-- Same string, same hash; any other byte, another hash.
SELECT mtms_feature_hash('user=' || 42) = mtms_feature_hash('user=42') AS same,
       mtms_feature_hash('user=42') <> mtms_feature_hash('user=43') AS value_differs,
       mtms_feature_hash('user=42') <> mtms_feature_hash('users=42') AS field_differs,
       mtms_feature_hash('a=b=c') <> mtms_feature_hash('a=b') AS tail_differs;
SELECT mtms_feature_hash(NULL) IS NULL AS strict;
-- The longest feature allowed.
SELECT mtms_feature_hash('x=' || repeat('y', 4094)) IS NOT NULL AS max_len;

-- Shape errors.
SELECT mtms_feature_hash('user42');
SELECT mtms_feature_hash('');
SELECT mtms_feature_hash('=42');
SELECT mtms_feature_hash('user=');
SELECT mtms_feature_hash('x=' || repeat('y', 4095));
-- Long elements are quoted in part, cut on a character boundary.
SELECT mtms_feature_hash(repeat('é', 100));

-- Parsing against a model's fields.
SELECT mtms_create_model('t', '{s}', '{user,ad}');
SELECT field, feature = mtms_feature_hash(f) AS hash_ok
  FROM mtms_parse_features('t', '{user=1,ad=7,user=2}') WITH ORDINALITY p(field, feature, i)
  JOIN unnest('{user=1,ad=7,user=2}'::text[]) WITH ORDINALITY u(f, j) ON i = j
 ORDER BY i;
-- A value may contain '=': the field ends at the first one.
SELECT * FROM mtms_parse_features('t', '{ad=a=b,user===}');
SELECT feature = mtms_feature_hash('ad=a=b') AS value_with_equals
  FROM mtms_parse_features('t', '{ad=a=b}');
-- An empty array is a sample without features.
SELECT count(*) FROM mtms_parse_features('t', '{}');
-- Lower bounds other than 1 do not matter.
SELECT field FROM mtms_parse_features('t', '[0:1]={ad=1,user=2}');
-- As many features as allowed.
SELECT count(*), count(DISTINCT feature)
  FROM mtms_parse_features('t', array_fill('user=1'::text, ARRAY[65536]));

-- Parse errors.
SELECT * FROM mtms_parse_features('t', NULL);
SELECT * FROM mtms_parse_features('t', '{user=1,NULL,ad=2}');
SELECT * FROM mtms_parse_features('t', '{{user=1},{ad=2}}');
SELECT * FROM mtms_parse_features('t', '{user=1,ad7}');
SELECT * FROM mtms_parse_features('t', '{=1}');
SELECT * FROM mtms_parse_features('t', '{user=}');
SELECT * FROM mtms_parse_features('t', '{user=1,hour=3}');
SELECT * FROM mtms_parse_features('t', '{User=1}');
SELECT * FROM mtms_parse_features('t', ARRAY['user=1', 'ad=' || repeat('9', 5000)]);
SELECT * FROM mtms_parse_features('t', array_fill('user=1'::text, ARRAY[65537]));
SELECT * FROM mtms_parse_features('no_such_model', '{user=1}');
SELECT * FROM mtms_parse_features(NULL, '{user=1}');

-- Many fields: looked up through a hash table, which must follow the model.
SELECT mtms_create_model('t_wide_a', '{s}',
       (SELECT array_agg('f' || i ORDER BY i) FROM generate_series(1, 20) i));
SELECT mtms_create_model('t_wide_b', '{s}',
       (SELECT array_agg('g' || i ORDER BY i) FROM generate_series(1, 20) i));
SELECT string_agg(field, ',') FROM mtms_parse_features('t_wide_a', '{f20=1,f1=2,f13=x}');
SELECT string_agg(field, ',') FROM mtms_parse_features('t_wide_b', '{g20=1,g1=2}');
SELECT * FROM mtms_parse_features('t_wide_b', '{g1=1,f1=1}');
SELECT string_agg(field, ',') FROM mtms_parse_features('t_wide_a', '{f2=1}');

SELECT mtms_drop_model('t');
SELECT mtms_drop_model('t_wide_a');
SELECT mtms_drop_model('t_wide_b');
