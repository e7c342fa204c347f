#!/usr/bin/env bash
# bench/scenes.sh: mtms at 3, 20 and 100 scenes (or --scenes 3,20,100,300),
# at a fixed total of rows and at a fixed number of rows per scene: per
# stage training rows per second, the version write, peak memory against
# parameters plus optimizer state, a new session's first score (the load),
# mtms_score's and mtms_evaluate's rates (bench/scenes_run.py).  About 5
# minutes for the defaults on 2 cores; 300 scenes adds about 15.
#
#   bash bench/scenes.sh [--scenes 3,20,100] [--total 1000000] [--per-scene 10000] [--test 50000] [--worlds]
#
# --worlds adds (--worlds-only: only), at 20 and 100 scenes, data made of disjoint 20-scene worlds
# (feature values prefixed by the world), where a row's features occur in
# at most 20 scenes at every scene count: the fine-tune's cost per row
# should not grow with the number of scenes there.
#
# With MTMS_DB set, runs in that existing database; otherwise builds and
# installs mtms and runs on a throwaway cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash bench/run-python.sh scenes_run.py "$@"
