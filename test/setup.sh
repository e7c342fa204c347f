#!/usr/bin/env bash
# test/setup.sh: make this machine ready to build, test and run mtms.
#
#  1. installs the Debian packages mtms needs, only those that are missing
#     (and the optional ones, PL/Proxy, where the archive has them)
#     (apt-get update runs at most once), for the PostgreSQL that
#     test/pg-env.sh picks (15 on Debian 12, 17 on Debian 13, MTMS_PG=NN to
#     choose);
#  2. builds the extension with warnings as errors (make COPT=-Werror);
#  3. installs it into that PostgreSQL (make install).
#
# Works as root and as a normal user with sudo; safe to run again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=test/pg-env.sh
. test/pg-env.sh

bash test/install-packages.sh "${PG_PACKAGES[@]}"
for p in "${PG_OPTIONAL_PACKAGES[@]}"; do
    if apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then
        bash test/install-packages.sh "$p"
    else
        echo "setup.sh: no package $p in this archive; the tests that need it skip"
    fi
done
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

echo "setup.sh: building mtms for PostgreSQL $MTMS_PG (make COPT=-Werror)"
make -s PG_CONFIG="$PG_CONFIG" COPT=-Werror
echo "setup.sh: installing mtms into $("$PG_CONFIG" --pkglibdir)"
"${SUDO[@]}" make -s PG_CONFIG="$PG_CONFIG" install
