#!/usr/bin/env bash
# test/demo.sh: the mtms demo on a throwaway cluster.
#
# Runs test/setup.sh (Debian packages, build, install) with its output in a
# log file, then starts a throwaway PostgreSQL cluster (the version
# test/pg-env.sh picks) with pg_virtualenv and runs test/demo.sql in it:
# declare a model, generate synthetic impressions, train, evaluate and
# rank; then writes the model's training report (tools/report.sh) into a
# temporary directory and prints its path.  Only the demo's own output
# reaches the terminal; the cluster is removed afterwards (the report
# stays).  On a failure the log's tail is printed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/pg-env.sh
. test/pg-env.sh

log=$(mktemp -t mtms-demo.XXXXXX)
chmod 644 "$log"
failed() {
    echo
    echo "demo.sh: $1 failed; the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

echo "mtms demo: sets this machine up from Debian's packages (PostgreSQL $MTMS_PG, its"
echo "server headers, pgTAP, OpenBLAS, gcc: about 240 MB to download and 1.2 GB on"
echo "disk the first time), builds and installs mtms, then trains and uses a model"
echo "on a throwaway cluster that is removed at the end."
echo
start=$(date +%s)
echo "== 0. Set-up: Debian packages, build, install (output in $log)"
bash test/setup.sh >"$log" 2>&1 </dev/null || failed "the set-up"
echo "   ready in $(($(date +%s) - start)) s: PostgreSQL $("$PG_CONFIG" --version | sed 's/^PostgreSQL //'), mtms $(sed -n "s/^default_version = '\(.*\)'/\1/p" mtms.control)"

# The same locale and encoding whatever the caller's environment (a CI
# container often has no LANG at all, which would give SQL_ASCII).
export LC_ALL=C.UTF-8
unset LANGUAGE

# The training report (tools/report.sh) is written here and outlives the
# cluster.
report_dir=$(mktemp -d -t mtms-demo-report.XXXXXX)
chmod 755 "$report_dir"

# -t: keep the cluster in a temporary directory even as root.  psql and the
# report write to file descriptor 3 (the terminal); pg_virtualenv's own
# messages about creating and dropping the cluster, and the report's
# errors, go to the log.  ($1 is the inner shell's: the report directory.)
# shellcheck disable=SC2016
pg_virtualenv -t -v "$MTMS_PG" \
    bash -c 'psql -X -v ON_ERROR_STOP=1 -P pager=off <test/demo.sql >&3 2>&3 &&
             printf "\n%s\n" "== 6. The training report: curves, AUC, calibration, score distribution" >&3 &&
             bash tools/report.sh demo --samples mtms_demo.test --out "$1" >&3' \
    mtms-demo "$report_dir" 3>&1 >>"$log" 2>&1 </dev/null || failed "the demo"
echo "   open it in a browser (tools/report.sh; README: Looking at a training)"
echo "demo.sh: finished in $(($(date +%s) - start)) s; set-up log: $log"
