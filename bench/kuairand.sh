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

PACKAGES=(python3-torch python3-psycopg2 python3-numpy)
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "kuairand.sh: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if [ -n "${MTMS_DB:-}" ]; then
    PGDATABASE="$MTMS_DB" exec /usr/bin/python3 bench/kuairand_run.py "$@"
fi
bash test/setup.sh
export LC_ALL=C.UTF-8
pg_virtualenv -t -v 15 -o shared_buffers=1GB \
    bash -c 'psql -X -q -c "CREATE EXTENSION mtms" && /usr/bin/python3 bench/kuairand_run.py "$@"' \
    mtms-kuairand "$@" </dev/null
