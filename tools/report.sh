#!/usr/bin/env bash
# tools/report.sh: a training report of an mtms model, as an HTML page with
# PNG figures (tools/mtms_report.py); prints the page's path.
#
#   bash tools/report.sh MODEL [--samples RELATION] [--out DIR]
#
# Connects with libpq's environment variables (PGHOST, PGPORT, PGUSER,
# PGDATABASE, ...), as the role whose models it reports on (score privilege
# suffices), and reads only the database: the training curves
# (mtms_training_info), the versions' AUCs (mtms_versions, or
# mtms_evaluate on RELATION), and with --samples the calibration and the
# score distribution of the active version over RELATION.  DIR defaults
# to ./mtms-report-MODEL.  Needs Python 3 with Debian's python3-matplotlib
# and python3-psycopg2 (test/setup.sh installs them), run by Debian's
# /usr/bin/python3 (not another python3 on the PATH, which lacks them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! /usr/bin/python3 -c 'import matplotlib, psycopg2' 2>/dev/null; then
    echo "report.sh: needs python3 with matplotlib and psycopg2:" >&2
    echo "  bash $here/../test/install-packages.sh python3-matplotlib python3-psycopg2" >&2
    exit 1
fi
exec /usr/bin/python3 "$here/mtms_report.py" "$@"
