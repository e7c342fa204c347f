-- mtms install script, part 10: feature parsing (src/feature_parser.c).

CREATE FUNCTION @extschema@.mtms_feature_hash(feature text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'mtms_feature_hash'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_feature_hash(text) IS
  '64-bit hash of a ''field=value'' feature, as stored in mtms_embedding.feature';

CREATE FUNCTION @extschema@.mtms_parse_features(model text, features text[])
RETURNS TABLE(field text, feature bigint)
AS 'MODULE_PATHNAME', 'mtms_parse_features_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 8;
COMMENT ON FUNCTION @extschema@.mtms_parse_features(text, text[]) IS
  'parse a feature array as a model does: one (field, feature hash) row per element, in order';
