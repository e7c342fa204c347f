#!/usr/bin/env bash
# test/run-all.sh: the whole mtms test suite on a throwaway cluster.
#
# Runs test/setup.sh (packages, build, install), then starts a throwaway
# PostgreSQL cluster (the version test/pg-env.sh picks) with pg_virtualenv
# and runs test/in-cluster.sh in
# it: pg_regress (make installcheck, isolation tests too once the Makefile
# sets ISOLATION) and every pgTAP file test/*_test.sql through pg_prove.
# The last line is "N passed, N failed"; the exit status is non-zero when
# anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash test/setup.sh
# shellcheck source=test/pg-env.sh
. test/pg-env.sh

# The same locale and encoding whatever the caller's environment (a CI
# container often has no LANG at all, which would give SQL_ASCII).
export LC_ALL=C.UTF-8
unset LANGUAGE

counts=$(mktemp -t mtms-counts.XXXXXX)
trap 'rm -f "$counts"' EXIT
chmod 666 "$counts"

# As root pg_virtualenv would use the system's cluster directories and a
# cluster named "regress"; -t keeps everything in a temporary directory
# (owned by postgres), so parallel runs and existing clusters don't clash.
# The server only runs SQL; it never reads the build directory.
# The server preloads mtms, as a production server would for the
# mtms_progress view and shared models (test/pg-versions.sh does too; the
# servers of test/standby_test.sh do not, and check the view without).
# The server logs LOG and above, not the ERRORs that tests provoke on
# purpose: pg_virtualenv prints the log's tail when a test fails, and that
# should show crashes, not expected errors.
status=0
MTMS_COUNTS_FILE="$counts" pg_virtualenv -t -v "$MTMS_PG" \
    -o log_min_messages=log -o log_min_error_statement=panic \
    -o shared_preload_libraries=mtms \
    bash test/in-cluster.sh </dev/null || status=$?

passed=0
failed=0
what=""
if [ -s "$counts" ]; then
    read -r passed failed what <"$counts"
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    # the harness itself failed before or after counting
    failed=1
fi
[ -z "$what" ] || echo "ran: $what"
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
