#!/usr/bin/env bash
# test/setup.sh: make this machine ready to build, test and run mtms.
#
#  1. installs the Debian 12 packages mtms needs, only those that are missing
#     (apt-get update runs at most once);
#  2. builds the extension with warnings as errors (make COPT=-Werror);
#  3. installs it into PostgreSQL 15 (make install).
#
# Works as root and as a normal user with sudo; safe to run again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PACKAGES=(
    postgresql-common
    postgresql-15
    postgresql-server-dev-15
    postgresql-15-pgtap
    libtap-parser-sourcehandler-pgtap-perl
    libopenblas-serial-dev
    pkg-config
    make
    gcc
)

bash test/install-packages.sh "${PACKAGES[@]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

echo "setup.sh: building mtms (make COPT=-Werror)"
make -s PG_CONFIG="$PG_CONFIG" COPT=-Werror
echo "setup.sh: installing mtms into $("$PG_CONFIG" --pkglibdir)"
"${SUDO[@]}" make -s PG_CONFIG="$PG_CONFIG" install
