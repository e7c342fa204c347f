-- mtms install script, part 40: training.
--
-- The two phases are aggregates over sample rows, PARALLEL SAFE with
-- combine, serialize and deserialize functions; mtms_train drives them one
-- epoch at a time.  Their first argument is a token that mtms_train passes
-- to tell the aggregate which training (and which stage) it serves.

CREATE FUNCTION @extschema@.mtms_embedding_update_transfn(internal, text, text, text[], boolean, boolean)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_embedding_update_transfn(internal, text, text, text[], boolean, boolean)
  IS 'internal: transition function of mtms_embedding_update';

CREATE FUNCTION @extschema@.mtms_finetune_transfn(internal, text, text, text[], boolean, boolean)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_finetune_transfn(internal, text, text, text[], boolean, boolean)
  IS 'internal: transition function of mtms_finetune';

CREATE FUNCTION @extschema@.mtms_train_combinefn(internal, internal)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_train_combinefn(internal, internal)
  IS 'internal: combines partial training states by sample-weighted parameter averaging';

CREATE FUNCTION @extschema@.mtms_train_serialfn(internal)
RETURNS bytea AS 'MODULE_PATHNAME' LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_train_serialfn(internal)
  IS 'internal: serializes a partial training state';

CREATE FUNCTION @extschema@.mtms_train_deserialfn(bytea, internal)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_train_deserialfn(bytea, internal)
  IS 'internal: deserializes a partial training state';

CREATE FUNCTION @extschema@.mtms_train_finalfn(internal)
RETURNS bigint AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_train_finalfn(internal)
  IS 'internal: evaluates the validation rows and hands the trained state to mtms_train';

CREATE AGGREGATE @extschema@.mtms_embedding_update(token text, scene text, features text[],
                                                   click boolean, conversion boolean) (
    SFUNC = @extschema@.mtms_embedding_update_transfn,
    STYPE = internal,
    FINALFUNC = @extschema@.mtms_train_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = @extschema@.mtms_train_combinefn,
    SERIALFUNC = @extschema@.mtms_train_serialfn,
    DESERIALFUNC = @extschema@.mtms_train_deserialfn,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.mtms_embedding_update(text, text, text[], boolean, boolean) IS
  'MTMS phase 1 (embedding update and CTCVR stage) over sample rows: one epoch; driven by mtms_train';

CREATE AGGREGATE @extschema@.mtms_finetune(token text, scene text, features text[],
                                           click boolean, conversion boolean) (
    SFUNC = @extschema@.mtms_finetune_transfn,
    STYPE = internal,
    FINALFUNC = @extschema@.mtms_train_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = @extschema@.mtms_train_combinefn,
    SERIALFUNC = @extschema@.mtms_train_serialfn,
    DESERIALFUNC = @extschema@.mtms_train_deserialfn,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.mtms_finetune(text, text, text[], boolean, boolean) IS
  'MTMS phase 2 (towers on the joined frozen embeddings) over sample rows: one epoch; driven by mtms_train';

CREATE FUNCTION @extschema@.mtms_train(model text, samples regclass,
                                       scenes text[] DEFAULT NULL,
                                       phases text DEFAULT 'all')
RETURNS TABLE(phase text, scene text, task text, epochs int, samples bigint,
              train_loss float8, valid_loss float8, valid_auc float8, seconds float8)
AS 'MODULE_PATHNAME', 'mtms_train'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_train(text, regclass, text[], text) IS
  'Train an mtms model on a sample relation (both MTMS phases, or one) and commit it as a new version';
