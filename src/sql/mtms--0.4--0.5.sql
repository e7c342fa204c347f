-- mtms upgrade script 0.4 -> 0.5.
--
-- 0.4 landed on main and may be installed; every change since is written
-- here, so that ALTER EXTENSION mtms UPDATE brings a 0.4 (or, through the
-- earlier scripts, a 0.1, 0.2 or 0.3) database to exactly what CREATE
-- EXTENSION mtms gives a new one.

\echo Use "ALTER EXTENSION mtms UPDATE TO '0.5'" to load this file. \quit

-- ---------------------------------------------------------------------
-- The refit stage (the model option "refit", src/train_refit.c): after
-- the fine-tune, the small scenes' phase-1 sub-models train again on all
-- their training rows; its checkpoints go into the history like the other
-- stages'.
-- ---------------------------------------------------------------------
ALTER TABLE @extschema@.mtms_training_history
    DROP CONSTRAINT mtms_training_history_stage_check,
    ADD CONSTRAINT mtms_training_history_stage_check
        CHECK (stage IN ('embedding', 'ctcvr', 'finetune', 'refit'));
COMMENT ON COLUMN @extschema@.mtms_training_history.stage IS
  'the training stage: embedding (units are (scene, task) pairs), ctcvr or finetune (units are scenes), refit (the refit option: small scenes'' pairs again on all their training rows)';
