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
