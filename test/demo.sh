#!/usr/bin/env bash
# test/demo.sh: the mtms demo on a throwaway cluster.
#
# Runs test/setup.sh (Debian packages, build, install), then starts a
# throwaway PostgreSQL cluster (the version test/pg-env.sh picks) with pg_virtualenv and runs test/demo.sql
# in it: declare a model, generate synthetic impressions, train, evaluate
# and rank.  The cluster is removed afterwards.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash test/setup.sh
# shellcheck source=test/pg-env.sh
. test/pg-env.sh

# The same locale and encoding whatever the caller's environment (a CI
# container often has no LANG at all, which would give SQL_ASCII).
export LC_ALL=C.UTF-8
unset LANGUAGE

# -t: keep the cluster in a temporary directory even as root.
pg_virtualenv -t -v "$MTMS_PG" \
    psql -X -v ON_ERROR_STOP=1 -P pager=off -f test/demo.sql </dev/null
