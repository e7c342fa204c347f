-- mtms install script, part 00: the tables that hold models.
--
-- Every object lives in the extension's schema (@extschema@).  Parameters
-- are ordinary rows: one per (model, version, scene, task, feature) for
-- embeddings and one per tower layer, so a model of any size can be stored,
-- inspected, backed up and replicated like any data.

\echo Use "CREATE EXTENSION mtms" to load this file. \quit

CREATE TABLE @extschema@.mtms_model (
    model_id        int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    owner           oid NOT NULL,            -- pg_authid oid of the creating role
    scenes          text[] NOT NULL,
    fields          text[] NOT NULL,
    -- when each scene / field was added (0 = declared with the model, then
    -- 1, 2, ... in order of mtms_add_scene/mtms_add_field calls): orders the
    -- blocks of the fine-tune towers' joined input so that growth only
    -- appends
    scene_birth     int[] NOT NULL,
    field_birth     int[] NOT NULL,
    embedding_dim   int NOT NULL,
    hidden          int[] NOT NULL,
    options         jsonb NOT NULL,          -- every option, defaults filled in
    active_version  int,                     -- NULL until first trained
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.mtms_model IS
  'mtms models: declared scenes, fields, sizes, options and the active version';

CREATE TABLE @extschema@.mtms_version (
    model_id         int NOT NULL REFERENCES @extschema@.mtms_model ON DELETE CASCADE,
    version          int NOT NULL,
    trained_at       timestamptz NOT NULL DEFAULT now(),
    samples_relation text,
    samples          bigint,
    scenes           text[] NOT NULL,       -- the model's scenes when trained
    fields           text[] NOT NULL,       -- the model's fields when trained
    has_finetune     boolean NOT NULL DEFAULT false,
    metrics          jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (model_id, version)
);
COMMENT ON TABLE @extschema@.mtms_version IS
  'mtms model versions: one row per kept trained version, with its validation metrics';

CREATE TABLE @extschema@.mtms_embedding (
    model_id   int NOT NULL,
    version    int NOT NULL,
    scene      text NOT NULL,
    task       text NOT NULL,               -- 'ctr' | 'cvr'
    field      text NOT NULL,
    feature    bigint NOT NULL,             -- mtms_feature_hash('field=value')
    vector     real[] NOT NULL,             -- embedding_dim values
    accum      real NOT NULL,               -- row-wise Adagrad accumulator
    PRIMARY KEY (model_id, version, scene, task, feature),
    FOREIGN KEY (model_id, version) REFERENCES @extschema@.mtms_version ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.mtms_embedding IS
  'mtms embedding rows: one per (model, version, scene, task, feature hash)';

CREATE TABLE @extschema@.mtms_tower (
    model_id   int NOT NULL,
    version    int NOT NULL,
    phase      text NOT NULL,               -- 'embedding' (phase-1 tower) | 'finetune'
    scene      text NOT NULL,
    task       text NOT NULL,               -- 'ctr' | 'cvr'
    layer      int NOT NULL,                -- 0 = first weight layer
    n_in       int NOT NULL,
    n_out      int NOT NULL,
    weights    real[] NOT NULL,             -- n_out x n_in, row-major
    bias       real[] NOT NULL,             -- n_out
    PRIMARY KEY (model_id, version, phase, scene, task, layer),
    FOREIGN KEY (model_id, version) REFERENCES @extschema@.mtms_version ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.mtms_tower IS
  'mtms tower layers: one row per (model, version, phase, scene, task, layer)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_model', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_version', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_embedding', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_tower', '');
-- mtms install script, part 01: the model catalog (src/catalog.c, src/options.c).
--
-- Declaring, changing and dropping models.  The C functions are not STRICT:
-- a NULL argument gets an error naming it.

CREATE FUNCTION @extschema@.mtms_create_model(
    name text,
    scenes text[],
    fields text[],
    embedding_dim int DEFAULT 8,
    hidden int[] DEFAULT '{64,32}',
    options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_create_model'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_create_model(text, text[], text[], int, int[], jsonb) IS
  'declare a model: its scenes, categorical fields, embedding size, tower hidden layers and training options';

CREATE FUNCTION @extschema@.mtms_drop_model(model text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_drop_model'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_drop_model(text) IS
  'drop a model with all its versions, embeddings and towers (owner only)';

CREATE FUNCTION @extschema@.mtms_add_scene(model text, scene text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_add_scene'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_add_scene(text, text) IS
  'add a scene to a model; the next training trains it in phase 1 on its own, then joins it to the fine-tune';

CREATE FUNCTION @extschema@.mtms_add_field(model text, field text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_add_field'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_add_field(text, text) IS
  'add a categorical field to a model (features ''field=value'' of it are accepted from then on)';

CREATE FUNCTION @extschema@.mtms_rollback(model text, version int)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_rollback(text, int) IS
  'make a kept version of a model the active one, for every session at once (owner only)';

CREATE FUNCTION @extschema@.mtms_model_id(model text)
RETURNS int
AS 'MODULE_PATHNAME', 'mtms_model_id'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_model_id(text) IS
  'the model_id of a model in the mtms tables; an error if the model does not exist';

-- The first statement only checks that the model exists (an error if not).
CREATE FUNCTION @extschema@.mtms_versions(model text)
RETURNS TABLE(version int, active boolean, trained_at timestamptz,
              samples_relation text, samples bigint, metrics jsonb)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT @extschema@.mtms_model_id(mtms_versions.model);
SELECT v.version,
       coalesce(v.version = m.active_version, false),
       v.trained_at,
       v.samples_relation,
       v.samples,
       v.metrics
  FROM @extschema@.mtms_version v
  JOIN @extschema@.mtms_model m ON m.model_id = v.model_id
 WHERE m.name = mtms_versions.model
 ORDER BY v.version;
$$;
COMMENT ON FUNCTION @extschema@.mtms_versions(text) IS
  'one row per kept version of a model; active marks the one scoring uses';
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
-- mtms install script, part 50: scoring and evaluation.

CREATE FUNCTION @extschema@.mtms_score(model text, scene text, task text, features text[])
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score(text, text, text, text[]) IS
  'Probability of task (ctr, cvr or ctcvr = ctr x cvr) for one sample of scene, with the active version of model';

CREATE FUNCTION @extschema@.mtms_score(scene text, task text, features text[])
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score_default'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score(text, text, text[]) IS
  'mtms_score with the model named by the setting mtms.model, or the database''s only model';

CREATE FUNCTION @extschema@.mtms_evaluate(model text, samples regclass)
RETURNS TABLE(scene text, task text, n bigint, positives bigint, auc float8,
              logloss float8, mae float8, calibration float8)
AS 'MODULE_PATHNAME', 'mtms_evaluate'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_evaluate(text, regclass) IS
  'Offline metrics of a model per (scene, task) over a sample relation: AUC, logloss, MAE, calibration';
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
