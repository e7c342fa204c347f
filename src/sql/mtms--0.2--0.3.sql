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
-- Online experiments (src/experiment.c): a candidate version serves a
-- deterministic share of request keys next to the active version, for an
-- A/B test whose share is ramped (30% -> 50% -> 90%) and then promoted.
-- ---------------------------------------------------------------------

-- At most one experiment per model.  experiment_id seeds the routing hash:
-- a re-declared share keeps it (a ramp moves only the keys between the old
-- and the new share), a new experiment gets a new one (keys re-randomised).
-- The candidate must be a kept version: the foreign key refuses deleting
-- it by plain SQL (mtms_train's pruning skips it; mtms_drop_model cascades).
CREATE TABLE @extschema@.mtms_experiment (
    model_id       int PRIMARY KEY REFERENCES @extschema@.mtms_model ON DELETE CASCADE,
    experiment_id  bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    version        int NOT NULL,
    share          float8 NOT NULL CHECK (share >= 0 AND share <= 1),
    started_at     timestamptz NOT NULL DEFAULT now(),
    share_set_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (model_id, version) REFERENCES @extschema@.mtms_version
);
COMMENT ON TABLE @extschema@.mtms_experiment IS
  'mtms experiments: per model at most one candidate version serving a deterministic share of request keys (mtms_experiment)';
COMMENT ON COLUMN @extschema@.mtms_experiment.model_id IS
  'the model (mtms_model.model_id); dropping the model ends its experiment';
COMMENT ON COLUMN @extschema@.mtms_experiment.experiment_id IS
  'seed of the routing hash: kept when only the share changes, new for every new experiment';
COMMENT ON COLUMN @extschema@.mtms_experiment.version IS
  'the candidate version (a kept version, never the active one)';
COMMENT ON COLUMN @extschema@.mtms_experiment.share IS
  'the candidate''s share of request keys, 0..1: a key goes to the candidate when hash(key, experiment_id) in [0,1) < share';
COMMENT ON COLUMN @extschema@.mtms_experiment.started_at IS
  'when the experiment was declared';
COMMENT ON COLUMN @extschema@.mtms_experiment.share_set_at IS
  'when the share was last set (the ramp)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_experiment', '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('@extschema@.mtms_experiment', 'experiment_id')::pg_catalog.regclass, '');

-- Row security as for mtms_version: readable with the model, writable by
-- its owner; mtms's functions write as the catalog's owner after checking
-- the caller's 'train' privilege.
ALTER TABLE @extschema@.mtms_experiment ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_experiment_read ON @extschema@.mtms_experiment FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_experiment.model_id));
CREATE POLICY mtms_experiment_insert ON @extschema@.mtms_experiment FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_experiment.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_experiment_update ON @extschema@.mtms_experiment FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_experiment.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_experiment.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_experiment_delete ON @extschema@.mtms_experiment FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_experiment.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));

GRANT SELECT ON @extschema@.mtms_experiment TO PUBLIC;
DO $$
BEGIN
    EXECUTE pg_catalog.format('GRANT SELECT ON SEQUENCE %s TO PUBLIC',
        pg_catalog.pg_get_serial_sequence('@extschema@.mtms_experiment', 'experiment_id'));
END
$$;

-- A change by plain SQL reaches every session's scoring cache, as for the
-- other catalog tables.
CREATE TRIGGER mtms_experiment_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.mtms_experiment
    FOR EACH ROW EXECUTE FUNCTION @extschema@.mtms_catalog_row_trigger();
CREATE TRIGGER mtms_experiment_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.mtms_experiment
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.mtms_catalog_statement_trigger();

CREATE FUNCTION @extschema@.mtms_experiment(model text, version int, share float8)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_experiment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_experiment(text, int, float8) IS
  'declare a candidate version serving a share (0..1) of request keys, or re-declare it with a new share (the ramp keeps keys below both shares on the candidate); needs ''train''';

CREATE FUNCTION @extschema@.mtms_experiment_stop(model text)
RETURNS void
AS 'MODULE_PATHNAME', 'mtms_experiment_stop'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_experiment_stop(text) IS
  'end a model''s experiment: every key is served by the active version again; needs ''train''';

CREATE FUNCTION @extschema@.mtms_experiment_promote(model text)
RETURNS int
AS 'MODULE_PATHNAME', 'mtms_experiment_promote'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.mtms_experiment_promote(text) IS
  'make the experiment''s candidate the active version and end the experiment, atomically (as mtms_rollback(model, candidate)); returns the version; needs ''train''';

CREATE FUNCTION @extschema@.mtms_score(model text, scene text, task text, features text[], request_key text)
RETURNS float8 AS 'MODULE_PATHNAME', 'mtms_score_keyed'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION @extschema@.mtms_score(text, text, text, text[], text) IS
  'score one sample with the version serving request_key: the experiment''s candidate for its share of keys, else the active version (NULL key: active)';

-- No mtms_score(scene, task, features, request_key) for the default model:
-- next to mtms_score(model, scene, task, features) it would make every call
-- with four literals, mtms_score('m', 'search', 'ctr', '{user=1}'), an
-- ambiguous function call (text vs text[] in the last two positions).  With
-- a key, name the model: mtms_score(current_setting('mtms.model'), ...).

CREATE FUNCTION @extschema@.mtms_score_version(model text, request_key text)
RETURNS int AS 'MODULE_PATHNAME', 'mtms_score_version'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.mtms_score_version(text, text) IS
  'the version mtms_score(model, ..., request_key) uses for this key now: for attributing clicks and conversions to an arm';

-- Per arm: realised rates with 95% normal-approximation intervals, the
-- models' mean predictions and calibration, and the charge.  Plain SQL over
-- mtms_score / mtms_score_version, run as the caller (reads the caller's
-- samples relation).
CREATE FUNCTION @extschema@.mtms_experiment_report(model text, samples pg_catalog.regclass)
RETURNS TABLE(arm text, version int, rows bigint, clicks bigint, conversions bigint,
              ctr float8, ctr_low float8, ctr_high float8,
              cvr float8, cvr_low float8, cvr_high float8,
              mean_pctr float8, mean_pcvr float8,
              ctr_calibration float8, cvr_calibration float8,
              t_charge float8, t_charge_low float8, t_charge_high float8)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cand int;
    missing text;
    has_bid boolean;
BEGIN
    IF model IS NULL OR samples IS NULL THEN
        RAISE EXCEPTION 'arguments "model" and "samples" of mtms_experiment_report must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM @extschema@.mtms_model_id(model);
    SELECT e.version INTO cand
      FROM @extschema@.mtms_experiment e JOIN @extschema@.mtms_model m USING (model_id)
     WHERE m.name = model;
    IF cand IS NULL THEN
        RAISE EXCEPTION 'model "%" has no experiment', model
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Declare one with mtms_experiment(%L, version, share).', model);
    END IF;
    SELECT string_agg(c, ', ' ORDER BY o) INTO missing
      FROM unnest(ARRAY['request_key', 'scene', 'features', 'click', 'conversion']) WITH ORDINALITY AS u(c, o)
     WHERE NOT EXISTS (SELECT FROM pg_attribute a
                        WHERE a.attrelid = samples AND a.attname = u.c
                          AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'relation % has no column %', samples, missing
            USING ERRCODE = 'undefined_column',
                  HINT = 'mtms_experiment_report needs the samples columns scene, features, click, conversion and the request_key each impression was served with (bid optional).';
    END IF;
    has_bid := EXISTS (SELECT FROM pg_attribute a
                        WHERE a.attrelid = samples AND a.attname = 'bid'
                          AND a.attnum > 0 AND NOT a.attisdropped);
    RETURN QUERY EXECUTE format($q$
      WITH s AS (
        SELECT v, click, conv,
               @extschema@.mtms_score($1, scene, 'ctr', features, k) AS pctr,
               CASE WHEN click THEN @extschema@.mtms_score($1, scene, 'cvr', features, k) END AS pcvr,
               %s AS charge
          FROM (SELECT x.request_key::text AS k, x.scene, x.features,
                       coalesce(x.click, false) AS click,
                       coalesce(x.click AND x.conversion, false) AS conv,
                       @extschema@.mtms_score_version($1, x.request_key::text) AS v,
                       %s AS bid
                  FROM %s x) r),
      a AS (
        SELECT CASE WHEN v = $2 THEN 'candidate' ELSE 'control' END AS arm,
               min(v) AS version, count(*) AS n,
               count(*) FILTER (WHERE click) AS clicks,
               count(*) FILTER (WHERE conv) AS convs,
               avg(pctr) AS mpctr, avg(pcvr) AS mpcvr,
               sum(charge) AS tc, count(charge) AS nc, var_samp(charge) AS vc
          FROM s GROUP BY 1),
      p AS (
        SELECT arms.arm, a.version, coalesce(a.n, 0) AS n, coalesce(a.clicks, 0) AS clicks,
               coalesce(a.convs, 0) AS convs, a.mpctr, a.mpcvr, a.tc, a.nc, a.vc,
               a.clicks::float8 / nullif(a.n, 0) AS ctr,
               a.convs::float8 / nullif(a.clicks, 0) AS cvr
          FROM (VALUES (1, 'control'), (2, 'candidate')) arms(o, arm)
          LEFT JOIN a USING (arm)
         ORDER BY arms.o)
      SELECT arm, version, n, clicks, convs,
             ctr, ctr - 1.959963984540054 * sqrt(ctr * (1 - ctr) / n),
                  ctr + 1.959963984540054 * sqrt(ctr * (1 - ctr) / n),
             cvr, cvr - 1.959963984540054 * sqrt(cvr * (1 - cvr) / clicks),
                  cvr + 1.959963984540054 * sqrt(cvr * (1 - cvr) / clicks),
             mpctr, mpcvr, mpctr / nullif(ctr, 0), mpcvr / nullif(cvr, 0),
             tc, tc - 1.959963984540054 * sqrt(nc * coalesce(vc, 0)),
                 tc + 1.959963984540054 * sqrt(nc * coalesce(vc, 0))
        FROM p
    $q$,
      CASE WHEN has_bid THEN 'bid * conv::int' ELSE 'NULL::float8' END,
      CASE WHEN has_bid THEN 'x.bid::float8' ELSE 'NULL::float8' END,
      samples)
    USING model, cand;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mtms_experiment_report(text, pg_catalog.regclass) IS
  'per arm of the model''s experiment (control, candidate; the arm of a row by its request_key): rows, CTR and CVR with 95% intervals, mean pCTR / pCVR and their calibration, t_charge = sum of bid x conversion (bid column optional)';

-- ---------------------------------------------------------------------
-- Training history: every validation checkpoint of every unit of a
-- training, kept with its version (src/train_history.c writes it with the
-- version, src/training_info.c reads it).  It goes where the version goes:
-- pruned with it (keep_versions), dropped with the model, dumped by
-- pg_dump, readable and writable under the same row security.
-- ---------------------------------------------------------------------
CREATE TABLE @extschema@.mtms_training_history (
    model_id    int NOT NULL,
    version     int NOT NULL,
    seq         int NOT NULL,               -- the order training wrote the rows in
    stage       text NOT NULL CHECK (stage IN ('embedding', 'ctcvr', 'finetune')),
    scene       text NOT NULL,
    task        text NOT NULL CHECK (task IN ('ctr', 'cvr', 'ctcvr')),
    epoch       int NOT NULL CHECK (epoch >= 0),
    checkpoint  int NOT NULL CHECK (checkpoint >= 0),
    train_loss  float8,
    valid_loss  float8,
    valid_auc   float8,
    rows        bigint NOT NULL,
    seconds     float8 NOT NULL,
    kept        boolean NOT NULL,
    PRIMARY KEY (model_id, version, stage, scene, task, checkpoint),
    FOREIGN KEY (model_id, version) REFERENCES @extschema@.mtms_version ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.mtms_training_history IS
  'mtms training history: per kept version, every validation checkpoint of every unit its training ran';
COMMENT ON COLUMN @extschema@.mtms_training_history.seq IS
  'the order the training wrote the rows in (stage, unit, checkpoint, task)';
COMMENT ON COLUMN @extschema@.mtms_training_history.stage IS
  'the training stage: embedding (units are (scene, task) pairs), ctcvr or finetune (units are scenes)';
COMMENT ON COLUMN @extschema@.mtms_training_history.scene IS
  'the unit''s scene';
COMMENT ON COLUMN @extschema@.mtms_training_history.task IS
  'ctr or cvr: the pair of an embedding unit; ctr, cvr and ctcvr: a scene unit''s three metrics, one row each';
COMMENT ON COLUMN @extschema@.mtms_training_history.epoch IS
  'the pass over the unit''s rows the validation happened in; 0 for the starting parameters';
COMMENT ON COLUMN @extschema@.mtms_training_history.checkpoint IS
  'the unit''s validation number: 0 = its starting parameters (validated when they can be kept), then 1, 2, ...';
COMMENT ON COLUMN @extschema@.mtms_training_history.train_loss IS
  'mean training loss of the pass so far; NULL before any training';
COMMENT ON COLUMN @extschema@.mtms_training_history.valid_loss IS
  'validation loss (log loss) of the task; NULL without validation rows';
COMMENT ON COLUMN @extschema@.mtms_training_history.valid_auc IS
  'validation AUC of the task; NULL when it is undefined';
COMMENT ON COLUMN @extschema@.mtms_training_history.rows IS
  'rows the unit had trained on so far (cumulative over passes)';
COMMENT ON COLUMN @extschema@.mtms_training_history.seconds IS
  'seconds since the unit started training (since the stage started, without kept training rows)';
COMMENT ON COLUMN @extschema@.mtms_training_history.kept IS
  'the checkpoint whose parameters the unit kept: one per unit that validated';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.mtms_training_history', '');

-- Row security as mtms_version's (mtms--0.1--0.2.sql): readable when the
-- model row is, writable when the model is the role's own.
ALTER TABLE @extschema@.mtms_training_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY mtms_training_history_read ON @extschema@.mtms_training_history FOR SELECT
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_training_history.model_id));
CREATE POLICY mtms_training_history_insert ON @extschema@.mtms_training_history FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_training_history.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_training_history_update ON @extschema@.mtms_training_history FOR UPDATE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_training_history.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')))
    WITH CHECK (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_training_history.model_id
                          AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
CREATE POLICY mtms_training_history_delete ON @extschema@.mtms_training_history FOR DELETE
    USING (EXISTS (SELECT FROM @extschema@.mtms_model m WHERE m.model_id = mtms_training_history.model_id
                     AND @extschema@.mtms_model_access(m.owner, m.acl, 'write')));
GRANT SELECT ON @extschema@.mtms_training_history TO PUBLIC;

CREATE FUNCTION @extschema@.mtms_training_info(model text, version int DEFAULT NULL)
RETURNS TABLE(version int, stage text, scene text, task text, epoch int,
              checkpoint int, train_loss float8, valid_loss float8,
              valid_auc float8, rows bigint, seconds float8, kept boolean)
AS 'MODULE_PATHNAME', 'mtms_training_info'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.mtms_training_info(text, int) IS
  'the training history of a kept version of a model (default: the active one): per stage, unit and validation checkpoint its losses, AUC, rows and seconds, and which checkpoint the unit kept; needs score on the model';

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

-- ---------------------------------------------------------------------
-- Training on data nodes (the model option "cluster"; README "Scaling out")
-- ---------------------------------------------------------------------

-- A data node's share of a multi-node training: the coordinator's
-- mtms_train calls it on every node at once through PL/Proxy.  It reads
-- the node's rows of samples, trains the units of the scenes it holds and
-- returns them as bytea chunks; it writes nothing.
CREATE FUNCTION @extschema@.mtms_node_train(job bytea[], samples text, phase text)
RETURNS TABLE(node text, seq int, nchunks int, chunk bytea)
AS 'MODULE_PATHNAME', 'mtms_node_train'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.mtms_node_train(bytea[], text, text) IS
  'a data node''s share of a multi-node mtms_train (called by the coordinator through PL/Proxy): trains the scenes whose rows the node holds and returns the units; writes nothing';

-- The coordinator's PL/Proxy functions, made on demand: PL/Proxy's
-- language is untrusted (a superuser creates its functions) and mtms must
-- install without it.  They become members of the extension, so DROP
-- EXTENSION mtms removes them; a restored dump needs this call again.
CREATE FUNCTION @extschema@.mtms_cluster_setup()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s text := quote_ident('@extschema@');
    f text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_language WHERE lanname = 'plproxy') THEN
        RAISE EXCEPTION 'PL/Proxy is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION plproxy; then SELECT mtms_cluster_setup();';
    END IF;
    EXECUTE format($q$
        CREATE OR REPLACE FUNCTION %1$s._mtms_nodes_check(cluster text,
            OUT node text, OUT extversion text, OUT extschema text)
        RETURNS SETOF record LANGUAGE plproxy AS $p$
            CLUSTER pg_catalog.btrim(cluster);
            RUN ON ALL;
            SELECT coalesce(pg_catalog.host(pg_catalog.inet_server_addr()), 'local') || ':' ||
                   coalesce(pg_catalog.inet_server_port()::text, pg_catalog.current_setting('port')) || '/' ||
                   pg_catalog.current_database() AS node,
                   (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'mtms') AS extversion,
                   (SELECT e.extnamespace::regnamespace::text FROM pg_catalog.pg_extension e
                     WHERE e.extname = 'mtms') AS extschema;
        $p$$q$, s);
    EXECUTE format($q$
        CREATE OR REPLACE FUNCTION %1$s._mtms_nodes_train(cluster text, job bytea[], samples text, phase text,
            OUT node text, OUT seq int, OUT nchunks int, OUT chunk bytea)
        RETURNS SETOF record LANGUAGE plproxy AS $p$
            CLUSTER pg_catalog.btrim(cluster);
            RUN ON ALL;
            SELECT node, seq, nchunks, chunk FROM %1$s.mtms_node_train(job, samples, phase);
        $p$$q$, s);
    EXECUTE format($q$
        CREATE OR REPLACE FUNCTION %1$s._mtms_node_ping(cluster text, part int)
        RETURNS int LANGUAGE plproxy AS $p$
            CLUSTER pg_catalog.btrim(cluster);
            RUN ON part;
            SELECT 1;
        $p$$q$, s);
    FOREACH f IN ARRAY ARRAY['_mtms_nodes_check(text)', '_mtms_nodes_train(text, bytea[], text, text)',
                             '_mtms_node_ping(text, int)'] LOOP
        IF NOT EXISTS (SELECT FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = (s || '.' || f)::regprocedure
                          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') THEN
            EXECUTE format('ALTER EXTENSION mtms ADD FUNCTION %s.%s', s, f);
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %s.%s FROM PUBLIC', s, f);
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.mtms_cluster_setup() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.mtms_cluster_setup() IS
  'creates the coordinator''s PL/Proxy functions that models with the "cluster" option train through (superuser; after CREATE EXTENSION plproxy)';

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
