#!/usr/bin/env bash
# test/in-cluster.sh: run inside pg_virtualenv by test/run-all.sh (PGHOST,
# PGPORT, PGUSER, PGPASSWORD point at the throwaway cluster): pg_regress
# and isolation tests (make installcheck), the pgTAP files test/*_test.sql
# (pg_prove) and the shell TAP tests test/*_test.sh (prove).  Writes
# "passed failed what-ran" into $MTMS_COUNTS_FILE (files passed and failed,
# then how many tests, specs and assertions ran); exits non-zero on any
# failure.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=test/pg-env.sh
. test/pg-env.sh
passed=0
failed=0
log=$(mktemp -t mtms-installcheck.XXXXXX)
tap_log=$(mktemp -t mtms-tap.XXXXXX)
trap 'rm -f "$log" "$tap_log"' EXIT

echo "=== pg_regress (make installcheck) on port $PGPORT"
rm -f regression.diffs output_iso/regression.diffs
# The regression and the isolation tests run as two makes: in one, a failed
# regression test would stop make before the isolation tests ran.
make -s PG_CONFIG="$PG_CONFIG" installcheck ISOLATION= 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
make -s PG_CONFIG="$PG_CONFIG" installcheck REGRESS= 2>&1 | tee -a "$log"
rc_iso=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] || rc=$rc_iso

# pg_regress ends with "All N tests passed." or "M of N tests failed."
# (once for the regression tests and once for isolation tests, if any).
while read -r line; do
    if [[ $line =~ All\ ([0-9]+)\ tests\ passed ]]; then
        passed=$((passed + BASH_REMATCH[1]))
    elif [[ $line =~ ([0-9]+)\ of\ ([0-9]+)\ tests\ failed ]]; then
        failed=$((failed + BASH_REMATCH[1]))
        passed=$((passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
    fi
done <"$log"
if [ "$rc" -ne 0 ]; then
    for diffs in regression.diffs output_iso/regression.diffs; do
        if [ -s "$diffs" ]; then
            echo "=== $diffs"
            cat "$diffs"
        fi
    done
    if [ "$failed" -eq 0 ]; then
        # make failed but no summary counted a failure: pg_regress stopped
        # early (e.g. a test without its expected file)
        echo "pg_regress did not run to the end (exit status $rc)"
        failed=$((failed + 1))
    fi
fi

echo "=== pgTAP (pg_prove test/*_test.sql)"
db=mtms_tap
tap_files=0
tap_asserts=0

# run_tap COMMAND...: one TAP file through pg_prove or prove; counts the
# file and the assertions it ran ("Files=1, Tests=N" of the harness).
run_tap() {
    "$@" 2>&1 | tee "$tap_log"
    local rc=${PIPESTATUS[0]} n
    n=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$tap_log" | tail -n 1)
    tap_files=$((tap_files + 1))
    tap_asserts=$((tap_asserts + ${n:-0}))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
}

if createdb "$db" &&
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
        -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION mtms'; then
    shopt -s nullglob
    for f in test/*_test.sql; do
        run_tap pg_prove -d "$db" "$f"
    done
else
    echo "could not create the pgTAP database"
    failed=$((failed + 1))
fi

# Shell tests (TAP from test/tap.sh): what needs pg_dump, several databases
# or ALTER EXTENSION (dump and restore, upgrades).
echo "=== shell tests (prove test/*_test.sh)"
for f in test/*_test.sh; do
    run_tap prove --exec bash "$f"
done

regress_tests=$(sed -n 's/.*All \([0-9]*\) tests passed.*/\1/p; s/.* of \([0-9]*\) tests failed.*/\1/p' "$log" | head -n 1)
iso_tests=$(sed -n 's/.*All \([0-9]*\) tests passed.*/\1/p; s/.* of \([0-9]*\) tests failed.*/\1/p' "$log" | sed -n 2p)
echo "$passed $failed pg_regress ${regress_tests:-0} tests, isolation ${iso_tests:-0} specs, TAP $tap_files files with $tap_asserts assertions" \
    >"${MTMS_COUNTS_FILE:-/dev/null}"
[ "$failed" -eq 0 ]
