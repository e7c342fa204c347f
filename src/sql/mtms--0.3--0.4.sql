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
