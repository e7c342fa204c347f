#!/bin/bash
# Fuzz mtms: ONE command that installs what is missing, builds the libFuzzer
# targets, writes their seed corpora and runs each target for a while.
#
#   bash test/fuzz/run.sh [target ...]
#
#   FUZZ_SECONDS   seconds per target (default 600)
#   FUZZ_PARALLEL  targets fuzzed at once (default 2; each is one process)
#   FUZZ_WORK      work directory (default test/fuzz/work: corpus/, crashes/,
#                  logs/, seeds/; not committed)
#   FUZZ_NO_SUPPRESS=1  do not apply test/fuzz/ubsan.supp (known findings)
#   FUZZ_REPLAY_MAX  crash inputs replayed per target for the summary (40)
#
# Targets: fuzz_features fuzz_tower fuzz_embedding fuzz_auc fuzz_train_state
# fuzz_model_load (see README.md in this directory).  Each runs in libFuzzer's
# fork mode with one worker (-fork=1), so a crash is saved and fuzzing goes
# on (-ignore_crashes=1) for the whole time.  At the end every target's
# corpus is replayed once to count the ERRORs (expected outcomes) by origin,
# crash inputs are replayed to get their stacks, and a summary table is
# printed: executions, exec/s, coverage, corpus size, crash inputs and
# distinct crash sites.  Exit status 1 when any target has crash inputs.
set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECONDS_PER="${FUZZ_SECONDS:-600}"
PARALLEL="${FUZZ_PARALLEL:-2}"
WORK="${FUZZ_WORK:-$FUZZ_DIR/work}"
ALL="fuzz_features fuzz_tower fuzz_embedding fuzz_auc fuzz_train_state fuzz_model_load"
TARGETS="${*:-$ALL}"

# ---- packages -------------------------------------------------------------
need=""
command -v clang >/dev/null 2>&1 || need="$need clang"
# the libFuzzer runtime ships in libclang-rt-<ver>-dev
if command -v clang >/dev/null 2>&1; then
    echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long s) { return 0; }' > /tmp/mtms_fuzz_probe.c
    clang -fsanitize=fuzzer,address,undefined /tmp/mtms_fuzz_probe.c -o /tmp/mtms_fuzz_probe >/dev/null 2>&1 \
        || need="$need libclang-rt-dev"
    rm -f /tmp/mtms_fuzz_probe /tmp/mtms_fuzz_probe.c
else
    need="$need libclang-rt-dev"
fi
command -v llvm-symbolizer >/dev/null 2>&1 || need="$need llvm"
command -v pg_config >/dev/null 2>&1 && [ -d "$(pg_config --includedir-server 2>/dev/null)" ] \
    || need="$need postgresql-server-dev-15"
[ -f /usr/lib/x86_64-linux-gnu/openblas-serial/pkgconfig/openblas.pc ] || need="$need libopenblas-serial-dev"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $need || exit 1
fi

# ---- build and seeds ------------------------------------------------------
bash "$FUZZ_DIR/build.sh" $TARGETS || exit 1
mkdir -p "$WORK"/{corpus,crashes,logs}
rm -rf "$WORK/seeds"
"$FUZZ_DIR/build/gen_seeds" "$WORK/seeds" || exit 1

# per-target input size limit (bytes)
declare -A MAXLEN=(
  [fuzz_features]=16384 [fuzz_tower]=16384 [fuzz_embedding]=16384
  [fuzz_auc]=4096 [fuzz_train_state]=32768 [fuzz_model_load]=8192
)

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0}"
UBSAN="halt_on_error=1:print_stacktrace=1"
if [ -z "${FUZZ_NO_SUPPRESS:-}" ]; then
    UBSAN="$UBSAN:suppressions=$FUZZ_DIR/ubsan.supp"
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-$UBSAN}"

fuzz_one() {
    local t="$1"
    local corpus="$WORK/corpus/$t" crashes="$WORK/crashes/$t"
    mkdir -p "$corpus" "$crashes"
    cp -n "$WORK/seeds/$t/"* "$corpus/" 2>/dev/null
    # committed seeds: states made by a real server (mtms_nn_sample_state)
    cp -n "$FUZZ_DIR/seeds/$t/"* "$corpus/" 2>/dev/null
    (cd "$crashes" && exec "$FUZZ_DIR/build/$t" \
        -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$SECONDS_PER" -max_len="${MAXLEN[$t]}" \
        -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$corpus" \
        > "$WORK/logs/$t.log" 2>&1)
    echo "$(date +%T) finished $t"
}

echo "$(date +%T) fuzzing $TARGETS: ${SECONDS_PER}s each, $PARALLEL at once; logs in $WORK/logs"
running=0
for t in $TARGETS; do
    echo "$(date +%T) starting $t"
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

# ---- summary --------------------------------------------------------------
status=0
printf '\n%-18s %12s %8s %6s %6s %8s %6s\n' target execs exec/s cov corpus crashes sites
for t in $TARGETS; do
    log="$WORK/logs/$t.log"
    last="$(grep -E '^#[0-9]+: cov:' "$log" | tail -1)"
    execs="$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")"
    cov="$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$last")"
    secs="$(sed -E 's/.* time: ([0-9]+)s.*/\1/' <<<"$last")"
    rate=0; [ -n "$secs" ] && [ "$secs" -gt 0 ] && rate=$((execs / secs))
    ncorpus="$(ls "$WORK/corpus/$t" | wc -l)"
    ncrash="$(ls "$WORK/crashes/$t" | grep -cE '^(crash|leak|oom|timeout)-')"
    # replay crash inputs for their stacks (at most FUZZ_REPLAY_MAX of
    # them, default 40): the site is the first frame in src/
    : > "$WORK/logs/$t.crashes"
    nreplay=0
    for c in "$WORK/crashes/$t"/crash-* "$WORK/crashes/$t"/leak-* "$WORK/crashes/$t"/oom-* "$WORK/crashes/$t"/timeout-*; do
        [ -f "$c" ] || continue
        nreplay=$((nreplay + 1))
        [ "$nreplay" -gt "${FUZZ_REPLAY_MAX:-40}" ] && break
        out="$("$FUZZ_DIR/build/$t" -runs=1 "$c" 2>&1)"
        kind="$(grep -a -m1 -oE 'runtime error: [^,]*|AddressSanitizer: [A-Za-z-]+|LeakSanitizer|FINDING: .{0,60}|libFuzzer: [a-z-]+' <<<"$out")"
        site="$(grep -a -oE ' in [A-Za-z0-9_]+ [^ ]*/src/[a-z_]+\.c(:[0-9]+)?' <<<"$out" | head -1 \
                | sed -E 's#^ in ([^ ]+) .*/src/#\1 src/#')"
        printf '%s\t%s\t%s\n' "$(basename "$c")" "${site:-?}" "${kind:-no crash on replay}" >> "$WORK/logs/$t.crashes"
    done
    nsites="$(cut -f2,3 "$WORK/logs/$t.crashes" | sort -u | grep -c . || true)"
    printf '%-18s %12s %8s %6s %6s %8s %6s\n' "$t" "${execs:-?}" "$rate" "${cov:-?}" "$ncorpus" "$ncrash" "$nsites"
    [ "$ncrash" -gt 0 ] && status=1
done

echo
for t in $TARGETS; do
    if [ -s "$WORK/logs/$t.crashes" ]; then
        echo "crash sites of $t (input: site kind), from $WORK/logs/$t.crashes:"
        awk -F'\t' '{ key = $2 "  " $3; if (!(key in seen)) { seen[key] = $1; n[key] = 0 } n[key]++ }
             END { for (k in seen) printf "  %s  (%d of the replayed inputs, e.g. %s)\n", k, n[k], seen[k] }' "$WORK/logs/$t.crashes"
    fi
    # ERROR origins over the final corpus (what the inputs exercise)
    FUZZ_ERROR_STATS=1 "$FUZZ_DIR/build/$t" -runs=0 "$WORK/corpus/$t" 2>&1 \
        | grep '==mtms-fuzz==' > "$WORK/logs/$t.errors" || true
done
echo "ERROR origins per target (expected outcomes): $WORK/logs/<target>.errors"
[ -n "${FUZZ_NO_SUPPRESS:-}" ] || echo "UBSan suppressions applied (known findings): $FUZZ_DIR/ubsan.supp"
exit $status
