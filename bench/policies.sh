#!/usr/bin/env bash
# bench/policies.sh: what row security, the guard triggers and the grant
# checks cost (issue 17).  One run, two databases in one cluster, the same
# data and seed:
#
#   secured  the extension as installed (0.2: policies, triggers, grants);
#   plain    the same, with row security disabled and the catalog triggers
#            dropped on the four tables (what 0.1 had, on the 0.2 code).
#
# A non-superuser training role creates and trains the same model in each
# (REPS times, alternating the databases); a serving role granted 'score'
# then scores the test day in a new session (cold: loads the model) and
# again (warm).  Prints every time, the medians and secured/plain ratios.
#
#     bash bench/policies.sh        # ROWS=500000 REPS=3; MTMS_DB is not used
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != --in-cluster ]; then
    bash test/setup.sh
    # shellcheck source=test/pg-env.sh
    . test/pg-env.sh
    export LC_ALL=C.UTF-8
    exec pg_virtualenv -t -v "$MTMS_PG" -o shared_buffers=1GB bash "$0" --in-cluster </dev/null
fi

ROWS=${ROWS:-500000}
REPS=${REPS:-3}
out=$(mktemp -t mtms-policies.XXXXXX)
trap 'rm -f "$out"' EXIT

q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "SET client_min_messages = warning" "${@:2}"; }

psql -X -q -c "CREATE ROLE bench_trainer" -c "CREATE ROLE bench_server"
for db in secured plain; do
    createdb "$db"
    q "$db" -c "CREATE EXTENSION mtms" \
        -c "GRANT INSERT, UPDATE, DELETE ON mtms_model, mtms_version, mtms_embedding, mtms_tower TO bench_trainer" \
        -c "CREATE TABLE samples AS SELECT * FROM mtms_synthetic_samples($ROWS, 1, '{\"slots\": 5}')" \
        -c "CREATE TABLE train AS SELECT * FROM samples WHERE slot <= 4" \
        -c "CREATE TABLE test AS SELECT * FROM samples WHERE slot = 5" \
        -c "ANALYZE train, test" \
        -c "GRANT SELECT ON train, test TO bench_trainer, bench_server"
done
q plain \
    -c "ALTER TABLE mtms_model DISABLE ROW LEVEL SECURITY" \
    -c "ALTER TABLE mtms_version DISABLE ROW LEVEL SECURITY" \
    -c "ALTER TABLE mtms_embedding DISABLE ROW LEVEL SECURITY" \
    -c "ALTER TABLE mtms_tower DISABLE ROW LEVEL SECURITY" \
    -c "DROP TRIGGER mtms_model_guard ON mtms_model" -c "DROP TRIGGER mtms_model_changed ON mtms_model" \
    -c "DROP TRIGGER mtms_version_guard ON mtms_version" -c "DROP TRIGGER mtms_version_changed ON mtms_version" \
    -c "DROP TRIGGER mtms_embedding_guard ON mtms_embedding" -c "DROP TRIGGER mtms_embedding_changed ON mtms_embedding" \
    -c "DROP TRIGGER mtms_tower_guard ON mtms_tower" -c "DROP TRIGGER mtms_tower_changed ON mtms_tower"

echo "rows: $ROWS (days 1-4 train, day 5 scored), reps: $REPS; $(q secured -c "SELECT count(*) FROM train") training rows"
printf '%-8s %4s %10s %10s %10s %12s\n' db rep train_s load_s score_s rows_per_s
for rep in $(seq 1 "$REPS"); do
    for db in secured plain; do
        [ $((rep % 2)) -eq 1 ] || db=$([ "$db" = secured ] && echo plain || echo secured)
        train=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" <<'SQL' | tail -n 1
SET client_min_messages = warning;
SET ROLE bench_trainer;
SELECT count(mtms_drop_model(name)) AS dropped FROM mtms_model WHERE name = 'm' \gset
SELECT mtms_create_model('m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}') \gset
SELECT mtms_grant('m', 'bench_server', 'score') \gset
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM mtms_train('m', 'train') \gset
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
        )
        # a new session of the serving role: the first query loads the model
        read -r load score rate < <(psql -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
SET client_min_messages = warning;
SET ROLE bench_server;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT mtms_score('m', 'search', 'ctr', '{user=1}') \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT count(mtms_score('m', scene, 'ctcvr', features)) AS n FROM test \gset
SELECT round((:t1 - :t0)::numeric, 3), round((extract(epoch FROM clock_timestamp()) - :t1)::numeric, 3),
       round(:n / (extract(epoch FROM clock_timestamp()) - :t1));
SQL
        )
        printf '%-8s %4s %10s %10s %10s %12s\n' "$db" "$rep" "$train" "$load" "$score" "$rate"
        echo "$db $train $load $score" >>"$out"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "medians (secured / plain = ratio; 1.00 means no cost):"
for col in 2 3 4; do
    name=$(echo "train_s load_s score_s" | cut -d' ' -f$((col - 1)))
    s=$(awk -v c=$col '$1 == "secured" { print $c }' "$out" | median)
    p=$(awk -v c=$col '$1 == "plain" { print $c }' "$out" | median)
    printf '  %-8s secured %8.3f  plain %8.3f  ratio %.3f\n' "$name" "$s" "$p" "$(echo "$s $p" | awk '{ print $1 / $2 }')"
done
psql -X -q -c "DROP DATABASE secured" -c "DROP DATABASE plain" -c "DROP ROLE bench_trainer" -c "DROP ROLE bench_server"
