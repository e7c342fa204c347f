#!/usr/bin/env bash
# test/upgrade_test.sh: a database on the released mtms 0.1 keeps its
# models through ALTER EXTENSION mtms UPDATE (TAP; run by
# test/in-cluster.sh through prove).
#
# Installs the frozen 0.1 script (CREATE EXTENSION mtms VERSION '0.1'),
# trains a model of a non-superuser role, updates to the default version
# and checks: the version, bit-identical scores and parameters, training
# and rolling back again, a new model, the training history (none for a
# version trained before 0.3, also from a database at 0.2, whose trainings
# the library runs without writing one), and that the upgraded database has
# exactly the objects (and the same definitions) as a fresh install.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

DB=mtms_upgrade
FRESH=mtms_upgrade_fresh
AT02=mtms_upgrade_02
AT02H=mtms_upgrade_02_hygiene
OWNER=mtms_upgrade_owner

cleanup() {
    "$PG_BINDIR/dropdb" --if-exists "$DB" 2>/dev/null
    "$PG_BINDIR/dropdb" --if-exists "$FRESH" 2>/dev/null
    "$PG_BINDIR/dropdb" --if-exists "$AT02" 2>/dev/null
    "$PG_BINDIR/dropdb" --if-exists "$AT02H" 2>/dev/null
    q postgres "DROP ROLE IF EXISTS $OWNER" >/dev/null
}
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
cleanup

plan 18

default_version=$(q postgres "SELECT default_version FROM pg_available_extensions WHERE name = 'mtms'")

"$PG_BINDIR/createdb" "$DB"
setup=$(q "$DB" \
    "CREATE EXTENSION mtms VERSION '0.1'" \
    "CREATE ROLE $OWNER" \
    "GRANT SELECT, INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower TO $OWNER" \
    "CREATE TABLE samples AS SELECT * FROM mtms_synthetic_samples(6000, 1, '{\"slots\": 2}')" \
    "CREATE TABLE day1 AS SELECT * FROM samples WHERE slot = 1" \
    "CREATE TABLE day2 AS SELECT * FROM samples WHERE slot = 2" \
    "GRANT SELECT ON day1, day2 TO $OWNER" \
    "SET ROLE $OWNER" \
    "SELECT mtms_create_model('m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', options => '{\"max_epochs\": 2}')" \
    "SELECT count(*) FROM mtms_train('m', 'day1')" \
    "RESET ROLE" \
    "UPDATE mtms_model SET options = options - 'finetune_rows'" 2>&1)
status=$?
# (the last statement: the options as the 0.1 library stored them; this
# test runs 0.1's SQL on the current library, which knows finetune_rows)
ok $status "version 0.1 installed and a model trained on it"
[ $status -eq 0 ] || diag "$setup"
is "$(q "$DB" "SELECT extversion FROM pg_extension WHERE extname = 'mtms'")" "0.1" "the installed version is 0.1"

scores() {
    q "$1" "SELECT md5(string_agg(mtms_score('m', p.scene, t, p.features)::text, ',' ORDER BY p.i, t))
              FROM (SELECT row_number() OVER () AS i, scene, features
                      FROM mtms_synthetic_samples(60, 7)) p,
                   unnest('{ctr,cvr,ctcvr}'::text[]) t"
}
params() {
    q "$1" "SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
              SELECT format('e %s %s %s %s %s %s', version, scene, task, feature, vector, accum) AS r
                FROM mtms_embedding
              UNION ALL
              SELECT format('t %s %s %s %s %s %s %s', version, phase, scene, task, layer, weights, bias)
                FROM mtms_tower) s"
}
before_scores=$(scores "$DB")
before_params=$(params "$DB")

out=$(q "$DB" "ALTER EXTENSION mtms UPDATE" 2>&1)
ok $? "ALTER EXTENSION mtms UPDATE"
[ -z "$out" ] || diag "$out"
is "$(q "$DB" "SELECT extversion FROM pg_extension WHERE extname = 'mtms'")" "$default_version" \
    "the installed version is the default version ($default_version)"
is "$(scores "$DB")" "$before_scores" "scores are bit-identical after the update"
is "$(params "$DB")" "$before_params" "parameters are identical after the update"
is "$(q "$DB" "SELECT owner::text FROM mtms_model WHERE name = 'm'")" "$OWNER" "the owner is kept"
is "$(q "$DB" "SELECT options->>'finetune_rows' FROM mtms_model WHERE name = 'm'")" "0" \
    "the model keeps its uncapped fine-tune hold-out (finetune_rows 0)"
is "$(q "$DB" "SET ROLE $OWNER" "SELECT count(*) FROM mtms_train('m', 'day2')" \
    "SELECT string_agg(version::text || active::text, ',' ORDER BY version) FROM mtms_versions('m')" | tail -n 1)" \
    "1false,2true" "the owner trains version 2 (warm-started from version 1)"
is "$(q "$DB" "SELECT count(*) FROM mtms_training_info('m', 1)" \
    "SELECT count(DISTINCT stage) FROM mtms_training_info('m', 2)")" "0
3" "version 1 (trained before 0.3) has no training history, version 2 has its three stages'"
is "$(q "$DB" "SET ROLE $OWNER" "SELECT mtms_rollback('m', 1)" >/dev/null && scores "$DB")" "$before_scores" \
    "rolled back to version 1, it scores as before the update"
is "$(q "$DB" "SET ROLE $OWNER" "SELECT mtms_create_model('m2', '{search}', '{user}')" \
    "SELECT count(*) FROM mtms_model" | tail -n 1)" "2" "a new model can be created"

# A database at 0.2 trains with this library (no history table: none is
# written), and its version has an empty history after the update.
"$PG_BINDIR/createdb" "$AT02"
is "$(q "$AT02" "CREATE EXTENSION mtms VERSION '0.2'" \
    "CREATE TABLE s AS SELECT * FROM mtms_synthetic_samples(2000, 1)" \
    "SELECT mtms_create_model('m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}', '{\"max_epochs\": 1}')" \
    "SELECT count(*) > 0 FROM mtms_train('m', 's')" \
    "ALTER EXTENSION mtms UPDATE" \
    "SELECT count(*) FROM mtms_training_info('m')" | tail -n 2)" "t
0" "at 0.2 a training writes its version without a history; after the update it reads as empty"

# Feature hygiene keeps its statistics in the 0.3 schema: at 0.2 a training
# with min_count is refused (feature_not_supported, with a hint to update);
# after the update the same model trains and its rows carry their counts.
"$PG_BINDIR/createdb" "$AT02H"
is "$(q "$AT02H" "CREATE EXTENSION mtms VERSION '0.2'" \
    "CREATE TABLE s AS SELECT * FROM mtms_synthetic_samples(2000, 1)" \
    "SELECT mtms_create_model('h', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}', '{\"max_epochs\": 1, \"min_count\": 2}')" \
    "SELECT count(*) FROM mtms_train('h', 's')" 2>&1 | tail -n 1)" "ERROR 0A000" \
    "at 0.2 a training with min_count is refused"
is "$(q "$AT02H" "ALTER EXTENSION mtms UPDATE" \
    "SELECT count(*) > 0 FROM mtms_train('h', 's')" \
    "SELECT bool_and(seen >= 2 AND last_seen = 1) FROM mtms_embedding" | tail -n 2)" "t
t" "after the update it trains, and its rows were seen at least min_count times in slot 1"

# The upgraded database has the same extension objects, with the same
# definitions, as a database where the current version was installed.
"$PG_BINDIR/createdb" "$FRESH"
# (with the same grants to the role as the upgraded one)
q "$FRESH" "CREATE EXTENSION mtms" \
    "GRANT SELECT, INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower TO $OWNER" >/dev/null
objects() {
    q "$1" "SELECT string_agg(pg_describe_object(classid, objid, objsubid), E'\n' ORDER BY 1)
              FROM pg_depend
             WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
               AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mtms')"
}
is "$(objects "$DB")" "$(objects "$FRESH")" "the upgraded database has the objects of a fresh install"
# Definitions of the extension's members, as the catalogs hold them (ACLs
# as sorted sets: grants made before and after the update differ in order).
definitions() {
    q "$1" "WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'mtms'),
                 member AS (SELECT classid, objid FROM pg_depend, ext
                             WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
                               AND refobjid = ext.oid)
            SELECT string_agg(d, E'\n' ORDER BY d) FROM (
              SELECT 'function ' || p.oid::regprocedure::text || ' ' || p.prokind::text || ' ' ||
                     CASE WHEN p.prokind = 'a' THEN '' ELSE pg_get_functiondef(p.oid) END ||
                     coalesce(' acl ' || (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(p.proacl) a)::text, '') ||
                     coalesce(' comment ' || obj_description(p.oid, 'pg_proc'), '') AS d
                FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
              UNION ALL
              SELECT 'aggregate ' || a.aggfnoid::regprocedure::text || ' ' || row(a.aggtransfn, a.aggfinalfn,
                     a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggfinalmodify, a.aggtranstype)::text
                FROM member m JOIN pg_aggregate a ON m.classid = 'pg_proc'::regclass AND a.aggfnoid = m.objid
              UNION ALL
              SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text || ' rls ' || c.relrowsecurity::text ||
                     ' force ' || c.relforcerowsecurity::text || coalesce(' acl ' || (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(c.relacl) a)::text, '') ||
                     coalesce(' options ' || c.reloptions::text, '') ||
                     coalesce(' comment ' || obj_description(c.oid, 'pg_class'), '')
                FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
              UNION ALL
              SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' ' ||
                     format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' ' || a.attidentity::text ||
                     coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') ||
                     coalesce(' comment ' || col_description(a.attrelid, a.attnum), '')
                FROM member m JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid
                LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
               WHERE a.attnum > 0 AND NOT a.attisdropped
              UNION ALL
              SELECT 'constraint ' || co.conrelid::regclass::text || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
                FROM member m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
              UNION ALL
              SELECT 'index ' || pg_get_indexdef(i.indexrelid)
                FROM member m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
              UNION ALL
              SELECT 'trigger ' || pg_get_triggerdef(t.oid)
                FROM member m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid
               WHERE NOT t.tgisinternal
              UNION ALL
              SELECT 'policy ' || po.schemaname || '.' || po.tablename || ' ' || po.policyname || ' ' ||
                     row(po.permissive, po.roles, po.cmd, po.qual, po.with_check)::text
                FROM pg_policies po JOIN member m ON m.classid = 'pg_class'::regclass
                 AND m.objid = (quote_ident(po.schemaname) || '.' || quote_ident(po.tablename))::regclass
              UNION ALL
              SELECT 'dumped ' || c::regclass::text || ' ' || coalesce(w, '')
                FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(c, w)) s"
}
defs=$(definitions "$FRESH")
ndefs=$(printf '%s\n' "$defs" | grep -c -e '^function ' -e '^relation ')
ok $([ "$ndefs" -gt 20 ]; echo $?) "the catalogs list the extension's definitions ($ndefs functions and relations)"
is "$(definitions "$DB")" "$defs" "and every definition is the same"

done_testing
