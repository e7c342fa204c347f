#!/usr/bin/env bash
# bench/memory.sh: a model of many scenes (default 100 scenes, 5M rows of
# mtms_synthetic_samples) trained under the default settings, with the
# leader alone and with the default parallel workers: wall time, peak
# memory of all training processes against the parameters plus optimizer
# state, and whether both runs give the same model (bench/memory_run.py).
# About 5 minutes.
#
#   bash bench/memory.sh [--rows N] [--scenes N]
#
# With MTMS_DB set, runs in that existing database; otherwise builds and
# installs mtms and runs on a throwaway cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash bench/run-python.sh memory_run.py "$@"
