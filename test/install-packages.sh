#!/usr/bin/env bash
# test/install-packages.sh: install the given Debian packages that are
# missing (apt-get update runs only when something is missing, at most
# once).  Works as root and as a normal user with sudo.
#
#   bash test/install-packages.sh package ...
#
# Used by test/setup.sh (what mtms needs) and bench/run-python.sh (what the
# Python benchmarks need).
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-packages.sh: run as root, or install sudo for this user" >&2
    exit 1
fi

missing=()
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-packages.sh: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
    echo "install-packages.sh: all Debian packages present"
fi
