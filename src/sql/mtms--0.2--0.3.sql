-- mtms upgrade script 0.2 -> 0.3.
--
-- 0.2 landed on main and may be installed; every change since is written
-- here, so that ALTER EXTENSION mtms UPDATE brings a 0.2 (or, through
-- mtms--0.1--0.2.sql, a 0.1) database to exactly what CREATE EXTENSION mtms
-- gives a new one.  Sections by concern; each says what it adds.

\echo Use "ALTER EXTENSION mtms UPDATE TO '0.3'" to load this file. \quit

-- ---------------------------------------------------------------------
-- Progress: running trainings (and evaluations, synthetic samples) that
-- any session can watch, like pg_stat_progress_* (src/progress.c).
-- ---------------------------------------------------------------------

CREATE FUNCTION @extschema@.mtms_progress_slots(
    OUT pid integer, OUT model text, OUT stage text, OUT scene text, OUT task text,
    OUT epoch integer, OUT rows_done bigint, OUT rows_total bigint,
    OUT rows_per_second double precision, OUT started_at timestamptz,
    OUT stage_eta timestamptz, OUT workers integer, OUT command text,
    OUT database text, OUT units_done integer, OUT units_total integer,
    OUT stage_started_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'mtms_progress_slots'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_progress_slots() IS
  'one row per session running mtms work (the mtms_progress view reads it); needs mtms in shared_preload_libraries on PostgreSQL 15 and 16';

CREATE VIEW @extschema@.mtms_progress AS
SELECT * FROM @extschema@.mtms_progress_slots();
COMMENT ON VIEW @extschema@.mtms_progress IS
  'running mtms_train, mtms_evaluate and mtms_synthetic_samples calls, one row per session: stage, unit, pass, rows done, rate, estimated end; another role''s row shows only pid, command and database unless you have its privileges or pg_read_all_stats';
COMMENT ON COLUMN @extschema@.mtms_progress.pid IS 'the backend running the work (its parallel workers add to its row)';
COMMENT ON COLUMN @extschema@.mtms_progress.model IS 'the model (NULL for mtms_synthetic_samples)';
COMMENT ON COLUMN @extschema@.mtms_progress.stage IS 'reading (the pass that reads the samples into memory), embedding, ctcvr, finetune, writing (the new version); scoring for mtms_evaluate, generating for mtms_synthetic_samples';
COMMENT ON COLUMN @extschema@.mtms_progress.scene IS 'the scene of the unit the session trains now';
COMMENT ON COLUMN @extschema@.mtms_progress.task IS 'ctr or cvr for an embedding-stage unit; NULL for a scene unit';
COMMENT ON COLUMN @extschema@.mtms_progress.epoch IS 'the pass over its rows that the current unit is in (pass-by-pass stages: the pass)';
COMMENT ON COLUMN @extschema@.mtms_progress.rows_done IS 'rows done in this stage so far, by all of its processes (pass-by-pass stages: in this pass); only grows within a stage';
COMMENT ON COLUMN @extschema@.mtms_progress.rows_total IS 'rows of one pass over the stage''s units (pass-by-pass stages: the samples); NULL when not known yet';
COMMENT ON COLUMN @extschema@.mtms_progress.rows_per_second IS 'rows_done over the time since the stage started';
COMMENT ON COLUMN @extschema@.mtms_progress.started_at IS 'when the call started';
COMMENT ON COLUMN @extschema@.mtms_progress.stage_eta IS 'estimated end of the stage: the rest of a first pass, and once units have finished, their mean number of passes for the others (pass-by-pass stages: end of this pass)';
COMMENT ON COLUMN @extschema@.mtms_progress.workers IS 'parallel workers training units beside the session';
COMMENT ON COLUMN @extschema@.mtms_progress.command IS 'train, evaluate or synthetic';
COMMENT ON COLUMN @extschema@.mtms_progress.database IS 'the database the session is connected to';
COMMENT ON COLUMN @extschema@.mtms_progress.units_done IS 'units of the stage that have finished';
COMMENT ON COLUMN @extschema@.mtms_progress.units_total IS 'units of the stage';
COMMENT ON COLUMN @extschema@.mtms_progress.stage_started_at IS 'when the stage (pass-by-pass stages: the pass) started';
GRANT SELECT ON @extschema@.mtms_progress TO PUBLIC;

-- ---------------------------------------------------------------------
-- Evaluating a chosen version: mtms_evaluate(model, samples, version).
-- ---------------------------------------------------------------------

-- mtms_evaluate evaluates a chosen kept version: a third argument, version
-- (NULL, the default, is the active version, as before), so that a
-- training report compares the active version with the previous one on the
-- same samples.  Every 2-argument call keeps working through the default.
-- (A function's argument list cannot change in place: dropped and created
-- again, with the old one's volatility, parallel label and comment.)
DROP FUNCTION @extschema@.mtms_evaluate(text, regclass);
CREATE FUNCTION @extschema@.mtms_evaluate(model text, samples regclass,
                                          version int DEFAULT NULL)
RETURNS TABLE(scene text, task text, n bigint, positives bigint, auc float8,
              logloss float8, mae float8, calibration float8)
AS 'MODULE_PATHNAME', 'mtms_evaluate'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_evaluate(text, regclass, int) IS
  'Offline metrics of a model per (scene, task) over a sample relation: AUC, logloss, MAE, calibration; of a kept version (default: the active one)';

-- ---------------------------------------------------------------------
-- Feature hygiene: admission after min_count sightings, eviction after
-- ttl_slots trainings unseen (model options; src/feature_hygiene.c).
-- ---------------------------------------------------------------------

-- Each embedding row's statistics.  A slot is a training, numbered by the
-- version it wrote.  Rows of versions trained before 0.3 get seen 0 (not
-- counted) and last_seen 0 (not recorded: taken as the version the row
-- belongs to); both defaults are constants, so adding the columns
-- rewrites nothing, however many rows there are.
ALTER TABLE @extschema@.mtms_embedding
    ADD COLUMN seen bigint NOT NULL DEFAULT 0 CHECK (seen >= 0),
    ADD COLUMN last_seen int NOT NULL DEFAULT 0 CHECK (last_seen >= 0);
COMMENT ON COLUMN @extschema@.mtms_embedding.seen IS
  'sightings of the feature in the (scene, task) pair''s training rows, over every training that counted (min_count, ttl_slots); 0 = not counted';
COMMENT ON COLUMN @extschema@.mtms_embedding.last_seen IS
  'the slot (version number) of the last training whose rows held the feature; 0 = not recorded (before 0.3)';

-- Candidates: features counted but not admitted yet (min_count), with the
-- counts of every training so far, kept per version like the embeddings.
-- Forgotten once unseen for ttl_slots trainings (30 without ttl_slots) and
-- capped at max_features per pair when that is set.
CREATE TABLE @extschema@.mtms_feature_count (
    model_id   int NOT NULL,
    version    int NOT NULL,
    scene      text NOT NULL,
    task       text NOT NULL,               -- 'ctr' | 'cvr'
    field      text NOT NULL,
    feature    bigint NOT NULL,             -- mtms_feature_hash('field=value')
    seen       bigint NOT NULL CHECK (seen >= 0),
    last_seen  int NOT NULL CHECK (last_seen > 0),
    PRIMARY KEY (model_id, version, scene, task, feature),
    FOREIGN KEY (model_id, version) REFERENCES @extschema@.mtms_version ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.mtms_feature_count IS
  'mtms feature candidates: features seen in training but not (yet) given embedding rows (min_count), one row per (model, version, scene, task, feature hash)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_feature_count', '');

ALTER TABLE @extschema@.mtms_feature_count ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_feature_count_read ON @extschema@.mtms_feature_count FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_feature_count.model_id));
CREATE POLICY mtms_feature_count_insert ON @extschema@.mtms_feature_count FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_feature_count.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_feature_count_update ON @extschema@.mtms_feature_count FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_feature_count.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_feature_count.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_feature_count_delete ON @extschema@.mtms_feature_count FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_feature_count.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
GRANT SELECT ON @extschema@.mtms_feature_count TO PUBLIC;
