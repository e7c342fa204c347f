-- mtms install script, part 05: internal self-checks of the numerical core
-- (optimizer, towers, embedding store).  Not part of the public API.

CREATE FUNCTION @extschema@.mtms_nn_selftest()
RETURNS TABLE(check_name text, passed boolean, detail float8)
AS 'MODULE_PATHNAME', 'mtms_nn_selftest'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_nn_selftest() IS
  'internal: runs the self-checks of the mtms numerical core (gradients, optimizers, towers, embedding store); one row per check';

CREATE FUNCTION @extschema@.mtms_nn_sample_state(kind text)
RETURNS bytea
AS 'MODULE_PATHNAME', 'mtms_nn_sample_state'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_nn_sample_state(text) IS
  'internal: a small valid serialized ''tower'' or ''embedding'' state, for corruption tests';

CREATE FUNCTION @extschema@.mtms_nn_deserialize_check(data bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'mtms_nn_deserialize_check'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_nn_deserialize_check(bytea) IS
  'internal: deserializes a tower or embedding state and describes it; raises data_corrupted on a truncated or corrupt buffer';
