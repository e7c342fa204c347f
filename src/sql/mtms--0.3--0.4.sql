-- mtms upgrade script 0.3 -> 0.4.
--
-- 0.3 landed on main and may be installed; every change since is written
-- here, so that ALTER EXTENSION mtms UPDATE brings a 0.3 (or, through the
-- earlier scripts, a 0.1 or 0.2) database to exactly what CREATE EXTENSION
-- mtms gives a new one.

\echo Use "ALTER EXTENSION mtms UPDATE TO '0.4'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Scoring runs in the leader of a parallel query.
--
-- A parallel worker is a new process for each query: without shared
-- models (mtms.shared_models, preloading) it loads the model from the
-- catalog before its first row, every query, and starts with a cold
-- projection cache.  Measured on a 100-scene model and 50,000 rows: a
-- parallel plan took 10-19 s per query against 0.14 s serial in a session
-- whose model was loaded.  PARALLEL RESTRICTED keeps the scan parallel and
-- evaluates the scores in the leader, which keeps its warm model from
-- query to query.
-- ---------------------------------------------------------------------

ALTER FUNCTION @extschema@.mtms_score(text, text, text, text[]) PARALLEL RESTRICTED;
ALTER FUNCTION @extschema@.mtms_score(text, text, text[]) PARALLEL RESTRICTED;
ALTER FUNCTION @extschema@.mtms_score(text, text, text, text[], text) PARALLEL RESTRICTED;
ALTER FUNCTION @extschema@.mtms_score_reference(text, text, text, text[]) PARALLEL RESTRICTED;

-- ---------------------------------------------------------------------
-- Parameter tables: no statistics on the parameters; tower weights
-- compressed again, with lz4 where the server has it.
--
-- After every training, autovacuum's ANALYZE of mtms_tower built element
-- statistics of every weights array (hashing each of a 300-scene model's
-- 1.1 billion floats) and took a core for minutes; nothing ever filters on
-- the parameters' values.  0.2 stored the weights uncompressed (dense
-- floats do not compress); but a fine-tune tower's first layer is zero in
-- every block of a pair whose embeddings its scene's features never meet,
-- most of it when scenes have their own vocabularies, and lz4 gives up
-- quickly on what does not compress.
-- ---------------------------------------------------------------------

ALTER TABLE @extschema@.mtms_tower ALTER COLUMN weights SET STATISTICS 0;
ALTER TABLE @extschema@.mtms_tower ALTER COLUMN bias SET STATISTICS 0;
ALTER TABLE @extschema@.mtms_embedding ALTER COLUMN vector SET STATISTICS 0;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE @extschema@.mtms_tower ALTER COLUMN weights SET COMPRESSION lz4;
    END IF;
END
$$;
ALTER TABLE @extschema@.mtms_tower ALTER COLUMN weights SET STORAGE EXTENDED;

-- ---------------------------------------------------------------------
-- mtms_shared_models(): which model a row is (model_id, version) only for
-- the roles of its owner and pg_read_all_stats, as pg_stat_activity shows
-- a session's query (src/model_shared.c); the memory figures for all.
-- ---------------------------------------------------------------------

COMMENT ON FUNCTION @extschema@.mtms_shared_models() IS
  'model versions of this database in shared memory: state loading or ready, pins (transactions scoring with it), stale (no longer active: freed at its last unpin), dropped (its model was dropped: evicted first), bytes of the model and of its shared projection cache; model_id and version are NULL unless the caller has the privileges of the model''s owner or of pg_read_all_stats';

-- ---------------------------------------------------------------------
-- A version's parameter rows go with it through a trigger, not a foreign
-- key.
--
-- The foreign keys of mtms_embedding and mtms_tower to mtms_version
-- checked every inserted row against the version the same training had
-- just inserted: a query per row, about 40% of writing a version (perf,
-- 590k embedding rows of a 100-scene model).  The rows are written by
-- mtms_train only after their version row; what the keys gave besides,
-- the cascade when a version goes (keep_versions, mtms_drop_model, or a
-- DELETE by hand), this trigger gives; it runs as the deleting role (no
-- function of the extension is SECURITY DEFINER: mtms_train and
-- mtms_drop_model write as the catalog's owner anyway, and a role allowed
-- to delete versions by SQL needs DELETE on the parameter tables too, as
-- the README's grants give it); and a version's model_id and number cannot
-- change (the foreign key refused that while it had rows).
-- ---------------------------------------------------------------------

ALTER TABLE @extschema@.mtms_embedding DROP CONSTRAINT mtms_embedding_model_id_version_fkey;
ALTER TABLE @extschema@.mtms_tower DROP CONSTRAINT mtms_tower_model_id_version_fkey;

CREATE FUNCTION @extschema@.mtms_version_parameters_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.model_id, NEW.version) IS DISTINCT FROM (OLD.model_id, OLD.version) THEN
            RAISE EXCEPTION 'version % of model % cannot be renumbered', OLD.version, OLD.model_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'A version''s embedding and tower rows are keyed by its model_id and number.';
        END IF;
        RETURN NEW;
    END IF;
    DELETE FROM @extschema@.mtms_embedding
     WHERE model_id = OLD.model_id AND version = OLD.version;
    DELETE FROM @extschema@.mtms_tower
     WHERE model_id = OLD.model_id AND version = OLD.version;
    RETURN OLD;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.mtms_version_parameters_trigger() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.mtms_version_parameters_trigger() IS
  'trigger of mtms_version: deleting a version deletes its embedding and tower rows; a version cannot be renumbered';
CREATE TRIGGER mtms_version_parameters AFTER DELETE OR UPDATE OF model_id, version
    ON @extschema@.mtms_version
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_version_parameters_trigger();
