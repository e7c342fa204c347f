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
-- Shared models: the versions loaded once for every session.
-- ---------------------------------------------------------------------

-- With mtms in shared_preload_libraries, one row per model version of this
-- database loaded in shared memory (src/model_shared.c); no rows without.
CREATE FUNCTION @extschema@.mtms_shared_models(
    OUT model_id int, OUT version int, OUT state text, OUT pins int,
    OUT stale boolean, OUT dropped boolean, OUT bytes bigint,
    OUT projection_bytes bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'mtms_shared_models_list'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_shared_models() IS
  'model versions of this database in shared memory: state loading or ready, pins (transactions scoring with it), stale (no longer active: freed at its last unpin), dropped (its model was dropped: evicted first), bytes of the model and of its shared projection cache';
