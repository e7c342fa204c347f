#!/usr/bin/env bash
# bench/evaluate.sh: mtms_evaluate against mtms_score, in rows per second
# per task (issue 11, item 2), at 3, 20 and 100 scenes.
#
# For each scene count S: mtms_synthetic_samples(2 * ROWS, 1, {"scenes":
# [s1 .. sS], "slots": 2}); day 1 trains a model (default shape: 6 fields,
# embedding_dim 8, hidden {64,32}; {"max_epochs": 1}, all three stages, so
# every pair has a fine-tune tower), day 2 is measured, serially
# (max_parallel_workers_per_gather = 0: a parallel worker is a new process
# that would load the model and fill its own projections at every query;
# jit off):
#
#   evaluate  SELECT count(*) FROM mtms_evaluate('m', 'test'): rows x 3 tasks / s
#   ctr, cvr, ctcvr
#             SELECT sum(mtms_score('m', scene, TASK, features)) FROM test: rows / s
#
# each in two states of the backend, the model loaded in both (one
# mtms_score call first, its time is load_s):
#
#   cold  the first such query of a new session: the projection cache is
#         empty, the query computes the projections it needs (one session
#         per query kind);
#   warm  the same query again in a session where it already ran: the
#         median of REPS runs, the kinds alternating.
#
# ratio = evaluate's rows/s / the task's score rows/s, in the same state.
#
#     bash bench/evaluate.sh                 # throwaway cluster (pg_virtualenv)
#     MTMS_DB=bench bash bench/evaluate.sh   # an existing database with mtms
#     SCENES="3 20" ROWS=100000 REPS=5 bash bench/evaluate.sh
#
# Training 100 scenes takes about 7 GB (2,000 MB of fine-tune towers and
# their Adam state), so the training session sets mtms.max_memory to
# TRAIN_MEMORY (8GB) and trains serially; a scoring backend holds the
# loaded model (about 2 GB at 100 scenes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != --in-cluster ] && [ -z "${MTMS_DB:-}" ]; then
    bash test/setup.sh
    # shellcheck source=test/pg-env.sh
    . test/pg-env.sh
    export LC_ALL=C.UTF-8
    exec pg_virtualenv -t -v "$MTMS_PG" -o shared_buffers=1GB bash "$0" --in-cluster </dev/null
fi

SCENES=${SCENES:-"3 20 100"}
ROWS=${ROWS:-200000}
REPS=${REPS:-3}
TRAIN_MEMORY=${TRAIN_MEMORY:-8GB}
db=${MTMS_DB:-postgres}
[ -n "${MTMS_DB:-}" ] || psql -X -q -d "$db" -c "CREATE EXTENSION IF NOT EXISTS mtms"
out=$(mktemp -t mtms-evaluate.XXXXXX)
trap 'rm -f "$out"' EXIT

# one session: settings, then the caller's SQL; prints what it selects
session() {
    psql -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -d "$db" \
        -c "SET client_min_messages = warning" \
        -c "SET max_parallel_workers_per_gather = 0" -c "SET jit = off" "$@"
}

# SQL that times one query: prints "label seconds"
timed() {
    echo "SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset"
    echo "$2 \\gset"
    echo "SELECT '$1', round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 4);"
}
eval_q="SELECT count(*) AS n FROM mtms_evaluate('bench_eval', 'bench_eval_test')"
score_q() { echo "SELECT sum(mtms_score('bench_eval', scene, '$1', features)) AS s FROM bench_eval_test"; }
load_q="SELECT mtms_score('bench_eval', 's1', 'ctr', '{user=1}') AS s"

echo "mtms_evaluate against mtms_score: $ROWS test rows per scene count, REPS=$REPS"
session -c "SELECT 'blas: ' || kernels || ' kernels (' || kernels_source || '), ' || round(gflops::numeric, 1) || ' gflops' FROM mtms_blas_info()"
session -c "SELECT 'version: ' || extversion FROM pg_extension WHERE extname = 'mtms'"
echo

for S in $SCENES; do
    scenes_json=$(seq 1 "$S" | sed 's/^/"s/; s/$/"/' | paste -sd, -)
    scenes_arr=$(seq 1 "$S" | sed 's/^/s/' | paste -sd, -)
    t=$(date +%s.%N)
    session -c "SET mtms.max_memory = '$TRAIN_MEMORY'" -f - >/dev/null <<SQL
DROP TABLE IF EXISTS bench_eval_data, bench_eval_train, bench_eval_test;
SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = 'bench_eval';
CREATE TABLE bench_eval_data AS
SELECT * FROM mtms_synthetic_samples(2 * $ROWS, 1, '{"scenes": [$scenes_json], "slots": 2}');
CREATE TABLE bench_eval_train AS SELECT * FROM bench_eval_data WHERE slot = 1;
CREATE TABLE bench_eval_test AS SELECT * FROM bench_eval_data WHERE slot = 2;
ANALYZE bench_eval_train, bench_eval_test;
SELECT mtms_create_model('bench_eval', '{$scenes_arr}', '{user,ad,advertiser,hour,device,tag}',
                         options => '{"max_epochs": 1}');
SELECT count(*) FROM mtms_train('bench_eval', 'bench_eval_train');
SQL
    train_s=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    n=$(session -c "SELECT count(*) FROM bench_eval_test")

    # cold: a new session per query kind
    for kind in evaluate ctr cvr ctcvr; do
        if [ "$kind" = evaluate ]; then q=$eval_q; else q=$(score_q "$kind"); fi
        { timed load "$load_q"; timed "$kind" "$q"; } | session -f - | sed "s/^/$S cold /" >>"$out"
    done
    # warm: one session, every kind once before the timed runs
    {
        timed load "$load_q"
        for kind in evaluate ctr cvr ctcvr; do
            if [ "$kind" = evaluate ]; then echo "$eval_q \\gset"; else echo "$(score_q "$kind") \\gset"; fi
        done
        for rep in $(seq 1 "$REPS"); do
            timed evaluate "$eval_q"
            for kind in ctr cvr ctcvr; do timed "$kind" "$(score_q "$kind")"; done
        done
    } | session -f - | sed "s/^/$S warm /" >>"$out"
    echo "$S scenes: $n test rows, training $train_s s" >&2
    echo "$S rows $n" >>"$out"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
get() { awk -v s="$1" -v st="$2" -v k="$3" '$1 == s && $2 == st && $3 == k { print $4 }' "$out" | median; }

echo
echo "rows/s (evaluate: rows x 3 tasks / s; score: rows / s); ratio = evaluate / score"
printf '%6s %5s %7s %7s | %10s %9s %9s %9s | %5s %5s %5s\n' \
    scenes state rows load_s evaluate ctr cvr ctcvr r_ctr r_cvr r_ctcvr
for S in $SCENES; do
    n=$(awk -v s="$S" '$1 == s && $2 == "rows" { print $3 }' "$out")
    for st in cold warm; do
        load=$(get "$S" "$st" load)
        e=$(echo "$n $(get "$S" "$st" evaluate)" | awk '{ printf "%d", 3 * $1 / $2 }')
        c=$(echo "$n $(get "$S" "$st" ctr)" | awk '{ printf "%d", $1 / $2 }')
        v=$(echo "$n $(get "$S" "$st" cvr)" | awk '{ printf "%d", $1 / $2 }')
        cc=$(echo "$n $(get "$S" "$st" ctcvr)" | awk '{ printf "%d", $1 / $2 }')
        printf '%6s %5s %7s %7.2f | %10s %9s %9s %9s | %5.2f %5.2f %5.2f\n' "$S" "$st" "$n" "$load" \
            "$e" "$c" "$v" "$cc" "$(echo "$e $c" | awk '{ print $1 / $2 }')" \
            "$(echo "$e $v" | awk '{ print $1 / $2 }')" "$(echo "$e $cc" | awk '{ print $1 / $2 }')"
    done
done
echo
echo "seconds (medians for warm):"
for S in $SCENES; do
    for st in cold warm; do
        printf '  %4s %s: evaluate %s  ctr %s  cvr %s  ctcvr %s\n' "$S" "$st" "$(get "$S" "$st" evaluate)" \
            "$(get "$S" "$st" ctr)" "$(get "$S" "$st" cvr)" "$(get "$S" "$st" ctcvr)"
    done
done
session -c "SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = 'bench_eval'" \
    -c "DROP TABLE bench_eval_data, bench_eval_train, bench_eval_test" >/dev/null
