#!/usr/bin/env bash
# bench/shared_model.sh: one model for all sessions (issue 11, item 4).
# Concurrent sessions rank candidates with a 100-scene model, each session
# with its own copy (mtms.shared_models = off) and all from one copy in
# shared memory (on; needs mtms in shared_preload_libraries).
#
# The model is built once (kept across runs): mtms_synthetic_samples(ROWS,
# 1, {"scenes": [s1 .. s100], "slots": 2}), 6 fields, embedding_dim DIM
# (4), hidden HIDDEN ({8,4}), {"max_epochs": 1}, all three stages (every
# pair has a fine-tune tower: 200 towers of 4,800 inputs).  Drop model
# bench_shm to build another.  (A session's own copy also holds the
# optimizer state, 3x the tower parameters: at {32,16}, 32 sessions each
# with its own copy need some 20 GB, more than the machine this ran on.
# Before each per-backend run the script checks that C times the private
# memory of the 1-client session fits in half of MemAvailable, and skips
# the run otherwise; a watchdog ends a per-backend run's sessions, and
# says so, if MemAvailable falls below MIN_AVAIL_MB, 3000.)  The ranking query (pgbench custom script): one request
# = a random user, scene and hour, and 1,000 candidate ads (their ad,
# advertiser and tag features, from a random window of the 2,000 ads),
# scored by mtms_score(model, scene, 'ctcvr', features), top 10 returned.
#
# For each mode (shared, per-backend) and clients C in CLIENTS (1 8 32):
# pgbench -n -c C -j 2 -T SECONDS, every transaction logged (-l):
#   p99_all     p99 latency of every ranking query (the first query of a
#               session includes loading the model: its own copy, or
#               waiting for the one loader of the shared copy);
#   p99_steady  p99 without each session's first query;
#   p99_late    p99 of the queries that ended in the second half of the run;
#   tps.
# The shared runs go first, 1 then 8 then 32 clients: the shared copy and
# its projections, once loaded by the first run, serve the later ones; a
# per-backend session starts with an empty cache (a new connection).
# At C = 1 and C = 32, 2-4 s before the end of the run, the memory of the
# pgbench backends from /proc/PID/smaps_rollup: the sum of Pss (shared
# pages counted once over the processes mapping them) and of
# Private_Dirty; idle = the same of one backend that ran SELECT 1.  Then
#   model_1  = Pss of the one per-backend session - idle (its model and
#              projection cache);
#   shared   = mtms_shared_models(): the shared copy and its projections;
#   per_session = (Pss sum at 32 shared - shared bytes) / 32 - idle.
# Done when Pss(32 shared) - 32 x idle <= 1.3 x model_1 + 32 x per_session.
#
# Must run on the database host (reads /proc) as root or the server's
# user, against a cluster with mtms preloaded:
#
#     MTMS_DB=bench bash bench/shared_model.sh
#     ROWS=200000 SECONDS_RUN=20 CLIENTS="1 8 32" MTMS_DB=bench bash bench/shared_model.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

db=${MTMS_DB:?set MTMS_DB to a database of a cluster with mtms in shared_preload_libraries}
ROWS=${ROWS:-200000}
DIM=${DIM:-4}
HIDDEN=${HIDDEN:-"{8,4}"}
SECONDS_RUN=${SECONDS_RUN:-20}
CLIENTS=${CLIENTS:-"1 8 32"}
MODES=${MODES:-"shared per-backend"}
MIN_AVAIL_MB=${MIN_AVAIL_MB:-3000}
PSQL=${PSQL:-psql}
PGBENCH=${PGBENCH:-pgbench}
work=$(mktemp -d -t mtms-shared.XXXXXX)
trap 'rm -rf "$work"' EXIT

q() { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" -c "SET client_min_messages = warning" "$@"; }

if ! q -c "SHOW shared_preload_libraries" | grep -qw mtms; then
    echo "mtms is not in shared_preload_libraries of MTMS_DB's cluster" >&2
    exit 1
fi
q -c "CREATE EXTENSION IF NOT EXISTS mtms"

# the model and the candidates, built once
if [ "$(q -c "SELECT count(*) FROM mtms_model WHERE name = 'bench_shm'")" = 0 ]; then
    scenes_json=$(seq 1 100 | sed 's/^/"s/; s/$/"/' | paste -sd, -)
    scenes_arr=$(seq 1 100 | sed 's/^/s/' | paste -sd, -)
    echo "building the 100-scene model ($ROWS rows)..."
    t0=$(date +%s)
    q -c "SET max_parallel_workers_per_gather = 0" -c "SET mtms.max_memory = '4GB'" \
      -c "DROP TABLE IF EXISTS bench_shm_samples, bench_shm_ads" \
      -c "CREATE TABLE bench_shm_samples AS SELECT * FROM mtms_synthetic_samples($ROWS, 1, '{\"scenes\": [$scenes_json], \"slots\": 2}')" \
      -c "SELECT mtms_create_model('bench_shm', '{$scenes_arr}', '{user,ad,advertiser,hour,device,tag}', $DIM, '$HIDDEN', '{\"max_epochs\": 1}')" \
      -c "SELECT count(*) FROM mtms_train('bench_shm', 'bench_shm_samples')" >/dev/null
    echo "built in $(( $(date +%s) - t0 )) s"
fi
q -c "CREATE TABLE IF NOT EXISTS bench_shm_ads AS
      SELECT row_number() OVER (ORDER BY ad) AS k, feats
        FROM (SELECT DISTINCT ON (f[2]) f[2] AS ad,
                     array(SELECT x FROM unnest(f) x WHERE x ~ '^(ad|advertiser|tag)=') AS feats
                FROM (SELECT features AS f FROM bench_shm_samples) s
               ORDER BY f[2]) a"
nads=$(q -c "SELECT count(*) FROM bench_shm_ads")

cat > "$work/rank.sql" <<EOF
\\set u random(1, 20000)
\\set s random(1, 100)
\\set h random(0, 23)
\\set c random(0, $((nads - 1000)))
SELECT k FROM (SELECT a.k, mtms_score('bench_shm', 's' || :s, 'ctcvr',
                  ARRAY['user=' || :u, 'hour=' || :h, 'device=1'] || a.feats) AS p
                 FROM bench_shm_ads a WHERE a.k > :c AND a.k <= :c + 1000) r
 ORDER BY p DESC LIMIT 10;
EOF
echo "SELECT 1;" > "$work/idle.sql"

# sum of Pss and Private_Dirty (kB) of the pgbench backends, in "pss dirty n"
backend_memory() {
    local pss=0 dirty=0 n=0 pid
    for pid in $(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = current_database()"); do
        # (a backend may exit meanwhile: skipped)
        read -r p d < <(awk '/^Pss:/ {p = $2} /^Private_Dirty:/ {d = $2} END {print p + 0, d + 0}' \
                            "/proc/$pid/smaps_rollup" 2>/dev/null || echo "0 0")
        [ "$p" -gt 0 ] || continue
        pss=$((pss + p)); dirty=$((dirty + d)); n=$((n + 1))
    done
    echo "$pss $dirty $n"
}

# p99 (ms) of a pgbench log: all transactions (all), without each
# client's first (steady), or of those that ended in the second half of the
# run (late)
p99() {
    awk -v how="$2" -v half=$((SECONDS_RUN / 2)) '
        NR == FNR { if (t0 == "" || $5 < t0) t0 = $5; next }
        how == "steady" && !seen[$1]++ { next }
        how == "late" && $5 - t0 < half { next }
        { print $3 / 1000.0 }' "$1" "$1" |
        sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * 0.99); if (i < 1) i = 1; printf "%.1f", v[i] }'
}

run() {	# mode clients -> one result line; memory in $work/mem.$mode.$clients
    local mode=$1 c=$2 setting need avail cache
    setting=$([ "$mode" = shared ] && echo on || echo off)
    cache=""
    if [ "$mode" = per-backend ] && [ "$c" -gt 1 ] && [ -f "$work/mem.per-backend.1" ]; then
        need=$(( $(awk '{print $2}' "$work/mem.per-backend.1") * c ))
        avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
        if [ "$need" -gt $((avail - 2 * MIN_AVAIL_MB * 1024)) ]; then
            # the sessions' own projection caches capped at 8 MB, if that fits
            need=$(( (model_kb + 8192) * c ))
            if [ "$need" -gt $((avail - 2 * MIN_AVAIL_MB * 1024)) ]; then
                printf "%-11s %7d  skipped: %d sessions with their own copy need about %d MB, MemAvailable is %d MB\n" \
                    "$mode" "$c" "$c" $((need / 1024)) $((avail / 1024))
                return
            fi
            cache=" -c mtms.score_cache=8"
            mode="per-backend*"
        fi
    fi
    rm -f "$work"/pgbench_log.*
    if [ "$c" = 1 ] || [ "$c" = 32 ]; then
        # three samples a second apart: the one that found the most backends
        (sleep $((SECONDS_RUN - 5))
         for k in 1 2 3; do backend_memory; sleep 1; done | sort -k3 -n | tail -1 > "$work/mem.${mode%\*}.$c") &
    fi
    if [ "$mode" != shared ]; then
        # the watchdog: end the run's sessions before the machine runs short
        (while sleep 0.2; do
             if [ "$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)" -lt "$MIN_AVAIL_MB" ]; then
                 q -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgbench'" >/dev/null
                 echo "watchdog: MemAvailable below $MIN_AVAIL_MB MB, the sessions were ended" > "$work/watchdog"
                 break
             fi
         done) &
        watchdog=$!
    fi
    (cd "$work" && PGOPTIONS="-c mtms.shared_models=$setting -c max_parallel_workers_per_gather=0 -c jit=off$cache" \
        "$PGBENCH" -n -d "$db" -c "$c" -j 2 -T "$SECONDS_RUN" -f rank.sql -l > "pgbench.out" 2>&1)
    if [ -n "${watchdog:-}" ]; then
        kill "$watchdog" 2>/dev/null || true
        watchdog=
    fi
    wait || true
    [ -f "$work/watchdog" ] && { cat "$work/watchdog"; rm -f "$work/watchdog"; }
    cat "$work"/pgbench_log.* > "$work/log"
    printf "%-11s %7d  %8s  %10s  %13s  %11s  %7s\n" "$mode" "$c" \
        "$(awk '/^tps/ {printf "%.1f", $3}' "$work/pgbench.out")" \
        "$(p99 "$work/log" all)" "$(p99 "$work/log" steady)" "$(p99 "$work/log" late)" \
        "$(wc -l < "$work/log")"
}

echo "model: $(q -c "SELECT nscenes || ' scenes, version ' || active_version FROM (SELECT cardinality(scenes) AS nscenes, active_version FROM mtms_model WHERE name = 'bench_shm') m"), $nads candidate ads, 1000 per query"
echo "blas: $(q -c "SELECT kernels || ', ' || round(gflops::numeric, 1) || ' gflops' FROM mtms_blas_info()")"
echo "machine: $(nproc) cores; ${SECONDS_RUN} s per run"
echo
# private memory of a session with its own copy after one query (its
# projection cache nearly empty): the model's share of a session
(PGOPTIONS="-c mtms.shared_models=off" "$PSQL" -X -q -d "$db" -v ON_ERROR_STOP=1 -o /dev/null \
    -c "SET application_name = 'mtms_one'" \
    -c "SELECT count(mtms_score('bench_shm', 's1', 'ctcvr', ARRAY['user=1', 'hour=1', 'device=1'] || feats)) FROM bench_shm_ads WHERE k <= 1000" \
    -c "SELECT pg_sleep(4)") &
sleep 1
for _ in $(seq 1 120); do
    pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'mtms_one' AND query LIKE '%pg_sleep%'")
    [ -n "$pid" ] && break
    sleep 0.5
done
model_kb=$(awk '/^Private_Dirty:/ {print $2}' "/proc/$pid/smaps_rollup")
wait || true
echo "a session with its own copy, after one query: Private_Dirty $((model_kb / 1024)) MB"
echo "per-backend*: the sessions' own projection caches capped at 8 MB (mtms.score_cache), when the default would not fit in half of MemAvailable"
echo
echo "mode        clients       tps  p99_all_ms  p99_steady_ms  p99_late_ms  queries"
for mode in $MODES; do
    for c in $CLIENTS; do
        run "$mode" "$c"
    done
done

# an idle backend
(sleep 2; backend_memory > "$work/mem.idle") &
(cd "$work" && "$PGBENCH" -n -d "$db" -c 1 -T 4 -f idle.sql > /dev/null 2>&1)
wait || true
read -r idle_pss idle_dirty _ < "$work/mem.idle"
shared_kb=$(q -c "SELECT (coalesce(sum(bytes + projection_bytes), 0) / 1024)::bigint FROM mtms_shared_models() s JOIN mtms_model m USING (model_id) WHERE m.name = 'bench_shm' AND s.version = m.active_version")

echo
echo "shared copy: $(q -c "SELECT round(bytes / 1048576.0) || ' MB, its projections ' || round(projection_bytes / 1048576.0) || ' MB' FROM mtms_shared_models() s JOIN mtms_model m USING (model_id) WHERE m.name = 'bench_shm' AND s.version = m.active_version")"
echo "memory (MB) of the pgbench backends, 2-4 s before the end of the run (idle backend: Pss $((idle_pss / 1024)), Private_Dirty $((idle_dirty / 1024)))"
echo "mode        clients  Pss_sum  Private_Dirty_sum  private_per_session"
for f in "$work"/mem.shared.* "$work"/mem.per-backend.*; do
    [ -f "$f" ] || continue
    read -r pss dirty n < "$f"
    name=${f##*/mem.}
    printf "%-11s %7s  %7d  %17d  %19.1f\n" "${name%.*}" "$n" $((pss / 1024)) $((dirty / 1024)) \
        "$(awk -v d="$dirty" -v n="$n" -v i="$idle_dirty" 'BEGIN {print (d - n * i) / n / 1024}')"
done
if [ -f "$work/mem.per-backend.1" ] && [ -f "$work/mem.shared.32" ]; then
    read -r pss1 _ _ < "$work/mem.per-backend.1"
    read -r pss32 dirty32 n32 < "$work/mem.shared.32"
    model_1=$((pss1 - idle_dirty))
    total32=$((pss32 - n32 * idle_dirty))
    per_session=$(( (dirty32 - n32 * idle_dirty) / n32 ))
    echo
    echo "one session's model = Pss of the 1-client per-backend session - idle private: $((model_1 / 1024)) MB"
    echo "shared copy + its projections (mtms_shared_models): $((shared_kb / 1024)) MB"
    echo "per-session overhead at 32 shared (Private_Dirty beyond idle): $(awk -v k=$per_session 'BEGIN {printf "%.1f", k / 1024}') MB"
    echo "32 shared sessions (Pss sum - 32 x idle private): $((total32 / 1024)) MB;" \
         "bound 1.3 x $((model_1 / 1024)) + 32 x $(awk -v k=$per_session 'BEGIN {printf "%.1f", k / 1024}') = $(((13 * model_1 / 10 + n32 * per_session) / 1024)) MB:" \
         "$([ "$total32" -le $((13 * model_1 / 10 + n32 * per_session)) ] && echo within || echo EXCEEDED)"
fi
