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
