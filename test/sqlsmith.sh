#!/usr/bin/env bash
# test/sqlsmith.sh: random SQL from sqlsmith against trained models, as a
# role that may train but owns only one of them.  A long test, not part of
# test/run-all.sh (about 10 minutes for the default 10,000 queries):
#
#     bash test/sqlsmith.sh          # SQLSMITH_QUERIES=n, SQLSMITH_SEED=n
#
# Sets up like test/run-all.sh (packages, build, install; sqlsmith from
# Debian), starts a throwaway cluster and in it:
#  1. a database with two owners' trained models: smith_a's model A and
#     smith_b's model B; smith_b has the training recipe's table grants
#     (INSERT, UPDATE, DELETE on the catalog tables) and no grant on A;
#  2. sqlsmith sends SQLSMITH_QUERIES random queries as smith_b
#     (statement_timeout 2 s), over the whole catalog and every function
#     it can call, mtms's among them;
#  3. checks that the server never crashed (no backend terminated by a
#     signal in the server log, the server still answers) and that model A
#     is bit-identical: its row, versions, every parameter and its probe
#     scores.
# Prints sqlsmith's error summary and how many queries called mtms
# functions; exits non-zero on a crash or a changed model A.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != --in-cluster ]; then
    bash test/setup.sh
    # shellcheck source=test/pg-env.sh
    . test/pg-env.sh
    bash test/install-packages.sh sqlsmith
    export LC_ALL=C.UTF-8
    unset LANGUAGE
    exec pg_virtualenv -t -v "$MTMS_PG" -o log_min_messages=log \
        -o log_min_error_statement=panic bash "$0" --in-cluster </dev/null
fi

N=${SQLSMITH_QUERIES:-10000}
SEED=${SQLSMITH_SEED:-1}
DB=mtms_smith
work=$(mktemp -d -t mtms-sqlsmith.XXXXXX)
trap 'rm -rf "$work"' EXIT

psql_db() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

echo "=== setting up two owners' models"
createdb "$DB"
psql_db <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION mtms;
CREATE ROLE smith_a;
CREATE ROLE smith_b;
GRANT INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower TO smith_a, smith_b;
CREATE TABLE samples AS SELECT * FROM mtms_synthetic_samples(20000, 1);
CREATE TABLE probe AS SELECT scene, features FROM mtms_synthetic_samples(50, 9);
GRANT SELECT ON samples, probe TO smith_a, smith_b;
SET ROLE smith_a;
SELECT mtms_create_model('model_a', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         '{"max_epochs": 2}');
SELECT count(*) FROM mtms_train('model_a', 'samples');
SET ROLE smith_b;
SELECT mtms_create_model('model_b', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', 4, '{8}',
                         '{"max_epochs": 2}');
SELECT count(*) FROM mtms_train('model_b', 'samples');
RESET ROLE;
CREATE FUNCTION fingerprint() RETURNS text LANGUAGE sql AS $f$
SELECT md5(concat_ws('|',
  (SELECT format('%s/%s/%s/%s/%s/%s', owner, acl, active_version, scenes, fields, params_revision)
     FROM mtms_model WHERE name = 'model_a'),
  (SELECT string_agg(format('%s/%s', version, metrics), ',' ORDER BY version) FROM mtms_version
    WHERE model_id = mtms_model_id('model_a')),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s', version, scene, task, feature, vector, accum),
                         ',' ORDER BY version, scene, task, feature))
     FROM mtms_embedding WHERE model_id = mtms_model_id('model_a')),
  (SELECT md5(string_agg(format('%s/%s/%s/%s/%s/%s/%s', version, phase, scene, task, layer, weights, bias),
                         ',' ORDER BY version, phase, scene, task, layer))
     FROM mtms_tower WHERE model_id = mtms_model_id('model_a')),
  (SELECT string_agg(mtms_score('model_a', p.scene, t, p.features)::text, ',' ORDER BY p.scene, p.features::text, t)
     FROM probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t)))
$f$;
REVOKE ALL ON FUNCTION fingerprint() FROM PUBLIC;
SQL
before=$(psql_db -c "SELECT fingerprint()")

log=$(pg_lsclusters -h | awk 'NR == 1 { print $NF }')
crashes() { grep -c -E 'terminated by signal|was terminated by exception|server process .* exited with exit code [^0]' "$log" || true; }
[ -r "$log" ] || { echo "sqlsmith.sh: cannot read the server log '$log'"; exit 1; }
echo "server log: $log"
crashes_before=$(crashes)

echo "=== sqlsmith: $N queries as smith_b (seed $SEED)"
start=$(date +%s)
set +e
sqlsmith --seed="$SEED" --max-queries="$N" --dump-all-queries --verbose \
    --target="host=$PGHOST port=$PGPORT dbname=$DB user=$PGUSER password=$PGPASSWORD options='-c role=smith_b -c statement_timeout=2s -c client_min_messages=error'" \
    >"$work/queries.sql" 2>"$work/sqlsmith.err"
rc=$?
set -e
echo "sqlsmith exited with status $rc after $(($(date +%s) - start)) s"
tail -n 25 "$work/sqlsmith.err" | tr -d '\r' | grep -v '^\s*$' | tail -n 15 || true

status=0
read -r sent mtms_queries < <(awk 'BEGIN { RS = ";\n" } NF { n++; if (/mtms_/) m++ } END { print n + 0, m + 0 }' "$work/queries.sql")
echo "queries sent: $sent, of which calling or reading mtms objects: $mtms_queries"
crashes_after=$(crashes)
if [ "$crashes_after" -ne "$crashes_before" ]; then
    echo "FAILED: the server log shows $((crashes_after - crashes_before)) crashed backends:"
    grep -E -B2 'terminated by signal|terminated by exception|exited with exit code [^0]' "$log" | tail -n 40
    status=1
fi
if ! psql_db -c "SELECT 1" >/dev/null; then
    echo "FAILED: the server does not answer"
    status=1
fi
after=$(psql_db -c "SELECT fingerprint()")
if [ "$after" != "$before" ]; then
    echo "FAILED: model A changed ($before -> $after)"
    status=1
else
    echo "model A is bit-identical (row, versions, parameters, probe scores)"
fi
[ "$status" -eq 0 ] && echo "sqlsmith.sh: passed" || echo "sqlsmith.sh: FAILED"
exit "$status"
