-- mtms install script, part 30: the exact ROC AUC aggregate (src/auc.c).

CREATE FUNCTION @extschema@.mtms_auc_trans(internal, float8, boolean)
RETURNS internal
AS 'MODULE_PATHNAME', 'mtms_auc_trans'
LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_auc_trans(internal, float8, boolean) IS
  'mtms_auc transition: collect the score under its class (NULLs skipped)';

CREATE FUNCTION @extschema@.mtms_auc_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'mtms_auc_combine'
LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_auc_combine(internal, internal) IS
  'mtms_auc combine: append two partial states';

CREATE FUNCTION @extschema@.mtms_auc_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'mtms_auc_serialize'
LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_auc_serialize(internal) IS
  'mtms_auc serialize: partial state to bytea (parallel query)';

CREATE FUNCTION @extschema@.mtms_auc_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'mtms_auc_deserialize'
LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_auc_deserialize(bytea, internal) IS
  'mtms_auc deserialize: bytea to partial state (parallel query)';

CREATE FUNCTION @extschema@.mtms_auc_final(internal)
RETURNS float8
AS 'MODULE_PATHNAME', 'mtms_auc_final'
LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_auc_final(internal) IS
  'mtms_auc final: exact ROC AUC, NULL when a class is absent';

-- The final function sorts the collected scores in place, which keeps the
-- state's value (a multiset per class): READ_ONLY is honest.
CREATE AGGREGATE @extschema@.mtms_auc(score float8, label boolean) (
    SFUNC = @extschema@.mtms_auc_trans,
    STYPE = internal,
    FINALFUNC = @extschema@.mtms_auc_final,
    COMBINEFUNC = @extschema@.mtms_auc_combine,
    SERIALFUNC = @extschema@.mtms_auc_serialize,
    DESERIALFUNC = @extschema@.mtms_auc_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.mtms_auc(float8, boolean) IS
  'exact ROC AUC of score against a boolean label; ties count one half, NULL rows skipped, NULL when a class is absent';
