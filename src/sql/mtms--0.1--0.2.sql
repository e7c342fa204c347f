-- mtms upgrade script 0.1 -> 0.2.
--
-- mtms--0.1.sql is the released install script and never changes; every
-- later change to the extension's objects is written here (and in later
-- upgrade scripts), so that ALTER EXTENSION mtms UPDATE brings an existing
-- database to exactly what CREATE EXTENSION mtms gives a new one (which runs
-- mtms--0.1.sql and then this file).

\echo Use "ALTER EXTENSION mtms UPDATE TO '0.2'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Backups: pg_dump must restore a database that can go on creating models.
-- ---------------------------------------------------------------------

-- The model_id identity sequence: without this, a restored database has
-- the models but a sequence back at 1, and the next mtms_create_model fails
-- with a duplicate key.
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('@extschema@.mtms_model', 'model_id')::pg_catalog.regclass, '');

-- The owner as regrole instead of a raw oid: the same four bytes (so the C
-- code reads it either way), but pg_dump writes the role's name and a
-- restore looks the name up, so the owner is the same role in another
-- cluster (restore the roles first: pg_dumpall --globals-only).  A rename
-- of the role follows automatically.
ALTER TABLE @extschema@.mtms_model ALTER COLUMN owner TYPE pg_catalog.regrole;
COMMENT ON COLUMN @extschema@.mtms_model.owner IS
  'the role that owns the model (created it, or got it with mtms_alter_owner)';

-- ---------------------------------------------------------------------
-- Training: patience now counts validations, evals_per_epoch of them per
-- pass (it counted passes).  A model keeps its behaviour: its stored
-- patience becomes patience x evals_per_epoch validations.
-- ---------------------------------------------------------------------
UPDATE @extschema@.mtms_model
   SET options = options || pg_catalog.jsonb_build_object('patience',
           LEAST(1000, (options->>'patience')::int * (options->>'evals_per_epoch')::int))
 WHERE options ? 'patience' AND options ? 'evals_per_epoch';

-- A model keeps its fine-tune hold-out too: finetune_fraction of every
-- scene's rows, uncapped (new models cap it at finetune_rows, 5000 rows a
-- scene by default).
UPDATE @extschema@.mtms_model
   SET options = options || '{"finetune_rows": 0}'::pg_catalog.jsonb
 WHERE NOT options ? 'finetune_rows';

-- ---------------------------------------------------------------------
-- Tower weights are float arrays that do not compress: stored out of line
-- without trying (a fine-tune tower of 100 scenes is 2.4 MB per layer).
-- ---------------------------------------------------------------------
ALTER TABLE @extschema@.mtms_tower ALTER COLUMN weights SET STORAGE EXTERNAL;

-- ---------------------------------------------------------------------
-- A model belongs to its owner: per-model grants, row security on the
-- catalog tables, guard triggers, and no stale parameters in any session.
-- ---------------------------------------------------------------------

-- Per-model grants, as PostgreSQL keeps them for its own objects: 'score'
-- is the SELECT bit ("r"), 'train' the UPDATE bit ("w"), the owner is the
-- grantor.  aclexplode(acl) lists them.
ALTER TABLE @extschema@.mtms_model ADD COLUMN acl pg_catalog.aclitem[];
COMMENT ON COLUMN @extschema@.mtms_model.acl IS
  'grants of the model: r = score, w = train (mtms_grant, mtms_revoke); NULL = only the owner';

-- Bumped when a model's rows are changed by plain SQL (not by an mtms
-- function): every session's cache compares it and reloads the model.
ALTER TABLE @extschema@.mtms_model ADD COLUMN params_revision bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.mtms_model.params_revision IS
  'incremented by the catalog triggers when the model''s rows are changed by plain SQL; scoring caches reload on a change';

CREATE FUNCTION @extschema@.mtms_model_access(owner pg_catalog.regrole, acl pg_catalog.aclitem[], access text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'mtms_model_access'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_model_access(pg_catalog.regrole, pg_catalog.aclitem[], text) IS
  'row security of the mtms tables: may the current role ''read'' (owner, granted score or train, database owner) or ''write'' (owner) a model with this owner and acl';

CREATE FUNCTION @extschema@.mtms_grant(model text, role pg_catalog.regrole, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_grant'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_grant(text, pg_catalog.regrole, text) IS
  'allow a role to ''score'' with a model (score, evaluate, read its rows) or to ''train'' it (new versions, rollback; includes score); owner only';

CREATE FUNCTION @extschema@.mtms_revoke(model text, role pg_catalog.regrole, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_revoke'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_revoke(text, pg_catalog.regrole, text) IS
  'take back a privilege granted with mtms_grant; the role is refused from its next statement on; owner only';

CREATE FUNCTION @extschema@.mtms_alter_owner(model text, new_owner pg_catalog.regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_alter_owner'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_alter_owner(text, pg_catalog.regrole) IS
  'give a model to another role, with the rules of ALTER ... OWNER TO (owner, and member of the new owner unless superuser); grants move with it';

-- Row security.  A role reads the rows of the models it owns (is a member
-- of the owner), was granted, or all of them as the database owner (for
-- pg_dump); it inserts, updates and deletes only rows of models it owns.
-- The catalog's owner (the extension's owner) and superusers are not
-- subject to it; mtms's functions check the caller's right on the model
-- in C and then read and write as the catalog's owner.
ALTER TABLE @extschema@.mtms_model ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_model_read ON @extschema@.mtms_model FOR SELECT
    USING (@extschema@.mtms_model_access(owner, acl, 'read'));
CREATE POLICY mtms_model_insert ON @extschema@.mtms_model FOR INSERT
    WITH CHECK (@extschema@.mtms_model_access(owner, acl, 'write'));
CREATE POLICY mtms_model_update ON @extschema@.mtms_model FOR UPDATE
    USING (@extschema@.mtms_model_access(owner, acl, 'write'))
    WITH CHECK (@extschema@.mtms_model_access(owner, acl, 'write'));
CREATE POLICY mtms_model_delete ON @extschema@.mtms_model FOR DELETE
    USING (@extschema@.mtms_model_access(owner, acl, 'write'));

-- The other tables follow their model's row: readable when the model row
-- is (the subquery is itself under mtms_model's policy), writable when the
-- model is the role's own.
ALTER TABLE @extschema@.mtms_version ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_version_read ON @extschema@.mtms_version FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_version.model_id));
CREATE POLICY mtms_version_insert ON @extschema@.mtms_version FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_version.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_version_update ON @extschema@.mtms_version FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_version.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_version.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_version_delete ON @extschema@.mtms_version FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_version.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));

ALTER TABLE @extschema@.mtms_embedding ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_embedding_read ON @extschema@.mtms_embedding FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_embedding.model_id));
CREATE POLICY mtms_embedding_insert ON @extschema@.mtms_embedding FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_embedding.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_embedding_update ON @extschema@.mtms_embedding FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_embedding.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_embedding.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_embedding_delete ON @extschema@.mtms_embedding FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_embedding.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));

ALTER TABLE @extschema@.mtms_tower ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_tower_read ON @extschema@.mtms_tower FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_tower.model_id));
CREATE POLICY mtms_tower_insert ON @extschema@.mtms_tower FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_tower.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_tower_update ON @extschema@.mtms_tower FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_tower.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_tower.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_tower_delete ON @extschema@.mtms_tower FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_tower.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));

-- Every role may look (row security shows it its own and granted models);
-- writing by SQL stays for the roles the administrator grants it to.
GRANT SELECT ON @extschema@.mtms_model, @extschema@.mtms_version,
                @extschema@.mtms_embedding, @extschema@.mtms_tower TO PUBLIC;
-- (and the model_id sequence, so that the database owner can pg_dump it)
DO $$
BEGIN
    EXECUTE pg_catalog.format('GRANT SELECT ON SEQUENCE %s TO PUBLIC',
        pg_catalog.pg_get_serial_sequence('@extschema@.mtms_model', 'model_id'));
END
$$;

-- Guard and change-tracking triggers (src/catalog_guard.c).
CREATE FUNCTION @extschema@.mtms_catalog_row_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mtms_catalog_row_trigger'
LANGUAGE C;
COMMENT ON FUNCTION @extschema@.mtms_catalog_row_trigger() IS
  'internal: refuses changes of mtms_model.model_id, owner and acl by plain SQL, and notes the models a statement changes';

CREATE FUNCTION @extschema@.mtms_catalog_statement_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mtms_catalog_statement_trigger'
LANGUAGE C;
COMMENT ON FUNCTION @extschema@.mtms_catalog_statement_trigger() IS
  'internal: after plain SQL changed catalog rows, bumps the models'' params_revision and tells every session';

CREATE TRIGGER mtms_model_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.mtms_model
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_catalog_row_trigger();
CREATE TRIGGER mtms_model_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.mtms_model
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.mtms_catalog_statement_trigger();
CREATE TRIGGER mtms_version_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.mtms_version
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_catalog_row_trigger();
CREATE TRIGGER mtms_version_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.mtms_version
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.mtms_catalog_statement_trigger();
CREATE TRIGGER mtms_embedding_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.mtms_embedding
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_catalog_row_trigger();
CREATE TRIGGER mtms_embedding_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.mtms_embedding
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.mtms_catalog_statement_trigger();
CREATE TRIGGER mtms_tower_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.mtms_tower
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_catalog_row_trigger();
CREATE TRIGGER mtms_tower_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.mtms_tower
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.mtms_catalog_statement_trigger();

-- ---------------------------------------------------------------------
-- The BLAS in use (src/blas.c, src/blas_info.c).
-- ---------------------------------------------------------------------
CREATE FUNCTION @extschema@.mtms_blas_info()
RETURNS TABLE(library text, version text, config text, path text,
              kernels text, kernels_source text, openblas_choice text,
              rejected_kernels text, environment_coretype text,
              cpu text, cpu_family int, cpu_model int, cpu_class text, cpu_features text[],
              threads int, check_passed boolean, check_max_error float8, gflops float8)
AS 'MODULE_PATHNAME', 'mtms_blas_info'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_blas_info() IS
  'the BLAS this backend uses: OpenBLAS version and build, its kernel set and how it was chosen (OpenBLAS, mtms, OPENBLAS_CORETYPE), the CPU and its vector class, threads, the kernels'' check against a plain product, and the sgemm GFLOP/s at the towers'' shapes (measured on the first call)';
