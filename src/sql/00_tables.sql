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
