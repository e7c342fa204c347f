#!/usr/bin/env bash
# bench/speed.sh: mtms against the same MTMS model written in PyTorch
# (bench/pytorch_mtms.py), side by side on the same machine and data:
# training throughput per stage, wall time and test AUC, parallel scaling,
# scoring, ranking latency, cold start, memory, scale and the sgemm limit
# (bench/speed_run.py; about 8 minutes on 2 cores).
#
#   bash bench/speed.sh [speed_run.py options]
#       --rows N              samples (default 1250000: days 1-4 = 1M train)
#       --threads 1,2         thread counts compared
#       --scale 100000,...    sizes of the scale table ('' skips it)
#       --scale-features N    rows of the many-features run (0 skips it)
#       --skip scoring,cold,limit
#       --workdir DIR         exported samples, logs, JSON (default /tmp/mtms_speed)
#
# With MTMS_DB set, runs in that existing database (mtms installed and
# CREATE EXTENSION mtms done); otherwise builds and installs mtms
# (test/setup.sh) and runs on a throwaway cluster (pg_virtualenv).
# PyTorch, psycopg2 and numpy come from Debian's packages (installed here
# when missing, never from PyPI).  Not for CI: it takes minutes and both
# cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# gcc, pkg-config and the serial OpenBLAS build the sgemm probe (speed_sgemm.c)
BENCH_PACKAGES="gcc pkg-config libopenblas-serial-dev" exec bash bench/run-python.sh speed_run.py "$@"
