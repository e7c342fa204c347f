#!/usr/bin/env bash
# bench/daily.sh: the daily life of a model (bench/daily.sql) on a throwaway
# cluster: warm-started day after day against training from scratch, and a
# scene added to a trained model without touching the others.
#   bash bench/daily.sh [psql -v settings, e.g. -v rows=900000 -v slots=6]
# With MTMS_DB set, runs in that existing database instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${MTMS_DB:-}" ]; then
    exec psql -X -d "$MTMS_DB" "$@" -f bench/daily.sql
fi
bash test/setup.sh
# shellcheck source=test/pg-env.sh
. test/pg-env.sh
export LC_ALL=C.UTF-8
pg_virtualenv -t -v "$MTMS_PG" -o shared_buffers=1GB \
    bash -c 'psql -X -q -c "CREATE EXTENSION mtms" && psql -X "$@" -f bench/daily.sql' mtms-bench "$@" </dev/null
