#!/usr/bin/env bash
# bench/run-python.sh: run a Python benchmark driver (bench/speed_run.py,
# bench/kuairand_run.py) against mtms, as bench/speed.sh and
# bench/kuairand.sh do.
#
#   bash bench/run-python.sh DRIVER.py [driver options]
#
# Installs what the drivers need from Debian's packages when missing
# (PyTorch, psycopg2, numpy, and the driver's own in BENCH_PACKAGES), never
# from PyPI.  With MTMS_DB set, runs in that
# existing database (mtms installed and CREATE EXTENSION mtms done);
# otherwise builds and installs mtms (test/setup.sh) and runs on a
# throwaway cluster (pg_virtualenv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

driver=$1
shift
# shellcheck disable=SC2086
bash test/install-packages.sh python3-torch python3-psycopg2 python3-numpy ${BENCH_PACKAGES:-}

if [ -n "${MTMS_DB:-}" ]; then
    PGDATABASE="$MTMS_DB" exec /usr/bin/python3 "bench/$driver" "$@"
fi
bash test/setup.sh
# shellcheck source=test/pg-env.sh
. test/pg-env.sh
export LC_ALL=C.UTF-8
pg_virtualenv -t -v "$MTMS_PG" -o shared_buffers=1GB \
    bash -c 'driver=$1; shift; psql -X -q -c "CREATE EXTENSION mtms" && /usr/bin/python3 "bench/$driver" "$@"' \
    mtms-bench "$driver" "$@" </dev/null
