-- mtms install script, part 51: the scoring projection cache, seen from SQL
-- (tests and diagnostics; mtms_score uses the cache by itself).

CREATE FUNCTION @extschema@.mtms_score_reference(model text, scene text, task text, features text[])
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score_reference'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score_reference(text, text, text, text[]) IS
  'mtms_score computed directly from the joined input, without the first-layer projection cache (for tests and diagnostics)';

CREATE FUNCTION @extschema@.mtms_score_cache_stats(model text,
    OUT keys bigint, OUT zero_keys bigint, OUT bytes bigint, OUT cap_bytes bigint,
    OUT computed bigint, OUT uncached bigint)
RETURNS record AS 'MODULE_PATHNAME', 'mtms_score_cache_stats'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_score_cache_stats(text) IS
  'This session''s first-layer projection cache of the model''s active version: cached (tower, feature) keys, of which projecting to zero, bytes held, the cap (mtms.max_memory / 16), projections computed, and those computed without being kept because the cap was reached';
