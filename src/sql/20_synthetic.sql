-- mtms install script, part 20: the synthetic impression generator
-- (src/synthetic.c; the generative model is documented there and in README).

CREATE FUNCTION @extschema@.mtms_synthetic_samples_support(internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'mtms_synthetic_samples_support'
LANGUAGE C STRICT;
COMMENT ON FUNCTION @extschema@.mtms_synthetic_samples_support(internal) IS
  'planner support for mtms_synthetic_samples: estimates n rows';

CREATE FUNCTION @extschema@.mtms_synthetic_samples(
    n bigint,
    seed int DEFAULT 1,
    options jsonb DEFAULT '{}')
RETURNS TABLE(slot int, scene text, features text[], click boolean,
              conversion boolean, p_ctr float8, p_cvr float8)
AS 'MODULE_PATHNAME', 'mtms_synthetic_samples'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE
SUPPORT @extschema@.mtms_synthetic_samples_support;
COMMENT ON FUNCTION @extschema@.mtms_synthetic_samples(bigint, int, jsonb) IS
  'n deterministic synthetic ad impressions (scene, features, click, conversion) with their true probabilities';
