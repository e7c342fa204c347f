#!/usr/bin/env bash
# bench/parallel.sh: mtms_train with parallel workers (mtms.train_workers)
# against the leader alone, on 3-scene and 20-scene synthetic data and on
# KuaiRand's 15 tabs (bench/parallel_run.py): wall time, speed-up, whether
# the model is the same, peak memory of all training processes, test AUC,
# the projected speed-up on 4, 16 and 64 cores, and the bound this
# machine sets (serial parts as they are, two processes at the measured
# ceiling).  A few minutes.
#
#   bash bench/parallel.sh [--rows N] [--reps N] [--workers N] [--datasets a,b]
#
# With MTMS_DB set, runs in that existing database; otherwise builds and
# installs mtms and runs on a throwaway cluster.  The KuaiRand data is read
# at run time from ../shared/data/kuairand (MTMS_KUAIRAND or --data to
# change it), never copied into the repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash bench/run-python.sh parallel_run.py "$@"
