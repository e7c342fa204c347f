#!/usr/bin/env bash
# bench/parallel.sh: MTMS against 'separate', 'p1+ctcvr' and the oracle on
# synthetic days (bench/parallel.sql), on a throwaway cluster.
#   bash bench/parallel.sh [psql -v settings, e.g. -v rows=800000 -v slots=5]
# With MTMS_DB set, runs in that existing database instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${MTMS_DB:-}" ]; then
    exec psql -X -d "$MTMS_DB" "$@" -f bench/parallel.sql
fi
bash test/setup.sh
# shellcheck source=test/pg-env.sh
. test/pg-env.sh
export LC_ALL=C.UTF-8
pg_virtualenv -t -v "$MTMS_PG" -o shared_buffers=1GB \
    bash -c 'psql -X -q -c "CREATE EXTENSION mtms" && psql -X "$@" -f bench/parallel.sql' mtms-bench "$@" </dev/null
