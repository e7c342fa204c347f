#!/usr/bin/env bash
# bench/kuairand.sh: mtms against the same MTMS model in PyTorch on real
# logs, KuaiRand-Pure (bench/kuairand_run.py; protocol in
# bench/kuairand_setup.sql): per (scene, task) test AUC of 'separate', mtms
# and PyTorch, and the per-stage speed ratio.  A minute or two.
#
#   bash bench/kuairand.sh [--data DIR] [--workdir DIR]
#
# The data is read at run time from ../shared/data/kuairand (relative to
# the repository; --data to change it) and never copied into the repository.
# With MTMS_DB set, runs in that existing database; otherwise builds and
# installs mtms and runs on a throwaway cluster.  Python packages come from
# Debian (installed when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash bench/run-python.sh kuairand_run.py "$@"
