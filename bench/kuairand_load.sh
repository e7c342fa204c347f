#!/usr/bin/env bash
# bench/kuairand_load.sh: load the KuaiRand-Pure CSV files into the tables
# kr_log, kr_user and kr_video of a database, then build the samples
# (bench/kuairand_setup.sql: kr_samples, kr_train, kr_test), with psql.
# Used by the tests (test/parallel_identity_test.sh); the Python benchmark
# loads the same way (bench/kuairand_run.py).  The data is read at run time
# and never copied into the repository.
#
#   bash bench/kuairand_load.sh DB [DATADIR]
#
# DATADIR defaults to $MTMS_KUAIRAND, else ../shared/data/kuairand beside
# the repository.
#
# Exit status 2 when the data is not there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
db=$1
data=${2:-${MTMS_KUAIRAND:-$here/../../shared/data/kuairand}}
PSQL="$("${PG_CONFIG:-pg_config}" --bindir)/psql"

shopt -s nullglob
logs=("$data"/val_*.csv "$data"/test_*.csv)
if [ "${#logs[@]}" -eq 0 ] || [ ! -f "$data/user_features_pure.csv" ] ||
   [ ! -f "$data/video_features_basic_pure.csv" ]; then
    echo "no KuaiRand-Pure files in $data" >&2
    exit 2
fi
# the columns as the files' headers name them (bigint for the log, text
# for the user and video tables: their ranges are strings)
cols() { head -n 1 "$1" | tr -d '\r' | sed "s/,/ $2, /g; s/\$/ $2/"; }

{
    echo '\set ON_ERROR_STOP 1'
    echo 'SET client_min_messages = warning;'
    echo 'DROP TABLE IF EXISTS kr_log, kr_user, kr_video CASCADE;'
    echo "CREATE TABLE kr_log ($(cols "${logs[0]}" bigint));"
    echo "CREATE TABLE kr_user ($(cols "$data/user_features_pure.csv" text));"
    echo "CREATE TABLE kr_video ($(cols "$data/video_features_basic_pure.csv" text));"
    for f in "${logs[@]}"; do
        echo "\\copy kr_log FROM '$f' WITH (FORMAT csv, HEADER)"
    done
    echo "\\copy kr_user FROM '$data/user_features_pure.csv' WITH (FORMAT csv, HEADER)"
    echo "\\copy kr_video FROM '$data/video_features_basic_pure.csv' WITH (FORMAT csv, HEADER)"
    echo "\\i $here/kuairand_setup.sql"
} | "$PSQL" -X -q -d "$db" -f - >/dev/null
