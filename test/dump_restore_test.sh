#!/usr/bin/env bash
# test/dump_restore_test.sh: a database with trained models survives
# pg_dump and a restore into a new database (TAP; run by test/in-cluster.sh
# through prove).
#
# The source database has two trained models: one of a non-superuser role
# (two versions), one of the superuser.  It is dumped twice: whole
# (pg_dump -Fc, pg_restore) and as a schema-only dump followed by a
# data-only dump.  In each restored database: every probe score is
# bit-identical, the parameter rows and the training history
# (mtms_training_info of every kept version) are identical, the owner is the same
# role (written by name in the dump), and creating, training, rolling back
# and dropping models works, with the owner's rights as before.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

SRC=mtms_dump_src
DST=mtms_dump_dst
DST2=mtms_dump_dst2
OWNER=mtms_dump_owner
OTHER=mtms_dump_other
DBA=mtms_dump_dba
tmp=$(mktemp -d -t mtms-dump.XXXXXX)
chmod 755 "$tmp"

cleanup() {
    for db in $SRC $DST $DST2; do
        "$PG_BINDIR/dropdb" --if-exists "$db" 2>/dev/null
    done
    q postgres "DROP ROLE IF EXISTS $OWNER" "DROP ROLE IF EXISTS $OTHER" "DROP ROLE IF EXISTS $DBA" >/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
cleanup
mkdir -p "$tmp"

plan 36

# --- the source database ------------------------------------------------
"$PG_BINDIR/createdb" "$SRC"
setup=$(q "$SRC" \
    "CREATE EXTENSION mtms" \
    "CREATE ROLE $OWNER" \
    "CREATE ROLE $OTHER" \
    "GRANT SELECT, INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower TO $OWNER, $OTHER" \
    "CREATE TABLE samples AS SELECT * FROM mtms_synthetic_samples(6000, 1, '{\"slots\": 2}')" \
    "CREATE TABLE day1 AS SELECT * FROM samples WHERE slot = 1" \
    "CREATE TABLE day2 AS SELECT * FROM samples WHERE slot = 2" \
    "GRANT SELECT ON samples, day1, day2 TO $OWNER, $OTHER" \
    "SET ROLE $OWNER" \
    "SELECT mtms_create_model('owned', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', options => '{\"max_epochs\": 2}')" \
    "SELECT count(*) FROM mtms_train('owned', 'day1')" \
    "SELECT count(*) FROM mtms_train('owned', 'day2')" \
    "SELECT mtms_grant('owned', '$OTHER', 'score')" \
    "RESET ROLE" \
    "SELECT mtms_create_model('super', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', embedding_dim => 4, hidden => '{8}', options => '{\"max_epochs\": 1}')" \
    "SELECT count(*) FROM mtms_train('super', 'samples')" 2>&1)
status=$?
ok $status "source database: two models trained, one by a non-superuser role"
[ $status -eq 0 ] || diag "$setup"

# Fingerprints: every probe score (exact float8 text) and every parameter.
scores() {
    q "$1" "SELECT md5(string_agg(mtms_score('$2', p.scene, t, p.features)::text, ',' ORDER BY p.i, t))
              FROM (SELECT row_number() OVER () AS i, scene, features
                      FROM mtms_synthetic_samples(60, 7)) p,
                   unnest('{ctr,cvr,ctcvr}'::text[]) t"
}
params() {
    q "$1" "SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
              SELECT format('e %s %s %s %s %s %s', version, scene, task, feature, vector, accum) AS r
                FROM mtms_embedding WHERE model_id = mtms_model_id('$2')
              UNION ALL
              SELECT format('t %s %s %s %s %s %s %s', version, phase, scene, task, layer, weights, bias)
                FROM mtms_tower WHERE model_id = mtms_model_id('$2')
              UNION ALL
              SELECT format('v %s %s %s', version, samples, metrics)
                FROM mtms_version WHERE model_id = mtms_model_id('$2')) s"
}
# every kept version's training history, exactly (extra_float_digits 3)
info() {
    q "$1" "SELECT count(*) || ' ' || md5(string_agg(format('%s %s %s %s %s %s %s %s %s %s %s %s',
                h.version, h.stage, h.scene, h.task, h.epoch, h.checkpoint, h.train_loss,
                h.valid_loss, h.valid_auc, h.rows, h.seconds, h.kept), ',' ORDER BY v.version, h.ord))
              FROM mtms_versions('$2') v,
                   LATERAL mtms_training_info('$2', v.version) WITH ORDINALITY
                       AS h(version, stage, scene, task, epoch, checkpoint, train_loss,
                            valid_loss, valid_auc, rows, seconds, kept, ord)"
}
src_info="$(info $SRC owned) $(info $SRC super)"
ok "$(case "$src_info" in 0\ *|*\ 0\ *|*ERROR*) echo 1 ;; *) echo 0 ;; esac)" \
    "source database: both models have a training history"
src_owned_scores=$(scores $SRC owned)
src_super_scores=$(scores $SRC super)
src_owned_params=$(params $SRC owned)
src_super_params=$(params $SRC super)

# --- checks of one restored database --------------------------------------
check_restored() {
    local db=$1 how=$2
    is "$(scores "$db" owned)" "$src_owned_scores" "$how: scores of the role's model are bit-identical"
    is "$(scores "$db" super)" "$src_super_scores" "$how: scores of the superuser's model are bit-identical"
    is "$(params "$db" owned)$(params "$db" super)" "$src_owned_params$src_super_params" \
        "$how: parameter, tower and version rows are identical"
    is "$(info "$db" owned) $(info "$db" super)" "$src_info" \
        "$how: mtms_training_info of every kept version is identical"
    is "$(q "$db" "SELECT owner::text FROM mtms_model WHERE name = 'owned'")" "$OWNER" \
        "$how: the model's owner is the same role"
    is "$(q "$db" "SET ROLE $OTHER" "SELECT mtms_drop_model('owned')")" "ERROR 42501" \
        "$how: another role still may not drop the model"
    is "$(q "$db" "SET ROLE $OTHER" "SELECT count(*) FROM mtms_versions('owned')")" "2" \
        "$how: but scores it with the grant it had"
    is "$(q "$db" "SET ROLE $OWNER" \
        "SELECT count(*) FROM mtms_train('owned', 'day1', phases => 'embedding')" \
        "SELECT max(version) FROM mtms_versions('owned')" | tail -n 1)" "3" \
        "$how: the owner trains version 3 of the restored model"
    is "$(q "$db" "SET ROLE $OWNER" "SELECT mtms_rollback('owned', 2)" \
        "SELECT version FROM mtms_versions('owned') WHERE active" | tail -n 1)" "2" \
        "$how: and rolls it back to version 2"
    is "$(scores "$db" owned)" "$src_owned_scores" "$how: version 2 scores as before"
    is "$(q "$db" "SET ROLE $OWNER" \
        "SELECT mtms_create_model('fresh', '{search}', '{user,ad}', embedding_dim => 4, hidden => '{8}')" \
        "SELECT model_id > (SELECT max(model_id) FROM mtms_model WHERE name <> 'fresh') FROM mtms_model WHERE name = 'fresh'" |
        tail -n 1)" "t" "$how: a new model gets a new model_id (the identity sequence was restored)"
    q "$db" "SET ROLE $OWNER" "SELECT mtms_drop_model('owned')" "SELECT mtms_drop_model('fresh')" >/dev/null
    is "$(q "$db" "SELECT string_agg(name, ',') FROM mtms_model")" "super" "$how: the owner drops its models"
    is "$(q "$db" "SELECT count(*) FROM mtms_version WHERE model_id NOT IN (SELECT model_id FROM mtms_model)")" "0" \
        "$how: nothing of the dropped models is left"
}

# --- 1. a whole dump, restored with pg_restore ------------------------------
"$PG_BINDIR/pg_dump" -Fc -f "$tmp/whole.dump" "$SRC"
ok $? "pg_dump -Fc"
"$PG_BINDIR/pg_restore" -l "$tmp/whole.dump" >/dev/null &&
    "$PG_BINDIR/pg_restore" -f - --data-only -t mtms_model "$tmp/whole.dump" | grep -q "	$OWNER	"
ok $? "the dump names the owner by role name, not by oid"
"$PG_BINDIR/createdb" "$DST"
out=$("$PG_BINDIR/pg_restore" --exit-on-error -d "$DST" "$tmp/whole.dump" 2>&1)
ok $? "pg_restore into a new database, without errors"
[ -z "$out" ] || diag "$out"
check_restored "$DST" "whole dump"

# --- 2. the database owner (not a superuser) dumps every model ---------------
# Row security applies to it: pg_dump's default row_security = off makes
# the dump fail rather than silently leave rows out; with
# --enable-row-security the policies let the database owner read every
# model.  (The samples are the superuser's tables: not the owner's to dump.)
q postgres "CREATE ROLE $DBA" "ALTER DATABASE $SRC OWNER TO $DBA" >/dev/null
out=$(PGOPTIONS="-c role=$DBA" "$PG_BINDIR/pg_dump" -Fc -T samples -T day1 -T day2 -f "$tmp/dba.dump" "$SRC" 2>&1)
status=$?
ok $([ $status -ne 0 ] && printf '%s' "$out" | grep -q 'row-level security'; echo $?) \
    "the database owner's pg_dump without --enable-row-security stops at row security"
PGOPTIONS="-c role=$DBA" "$PG_BINDIR/pg_dump" -Fc --enable-row-security -T samples -T day1 -T day2 \
    -f "$tmp/dba.dump" "$SRC"
ok $? "with --enable-row-security it dumps"
is "$("$PG_BINDIR/pg_restore" -f - --data-only -t mtms_tower "$tmp/dba.dump" | grep -c '^[0-9]')" \
    "$(q "$SRC" "SELECT count(*) FROM mtms_tower")" "every model's tower rows are in the database owner's dump"

# --- 3. schema-only, then data-only ----------------------------------------
"$PG_BINDIR/pg_dump" --schema-only -f "$tmp/schema.sql" "$SRC" &&
    "$PG_BINDIR/pg_dump" --data-only -f "$tmp/data.sql" "$SRC"
ok $? "pg_dump --schema-only and --data-only"
"$PG_BINDIR/createdb" "$DST2"
# (errors and warnings only: the scripts' SELECTs print their results)
out=$("$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$DST2" -f "$tmp/schema.sql" 2>&1 >/dev/null &&
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$DST2" -f "$tmp/data.sql" 2>&1 >/dev/null)
ok $? "restore the schema, then the data, without errors"
[ -z "$out" ] || diag "$out"
check_restored "$DST2" "schema + data"

done_testing
