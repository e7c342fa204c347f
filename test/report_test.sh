#!/usr/bin/env bash
# test/report_test.sh: the training report, tools/report.sh (TAP; run by
# test/in-cluster.sh through prove).
#
# Trains a small model twice and writes its report with --samples: the
# script exits 0 and prints the page's path, the page references every PNG
# it wrote and every image it references is there, each a whole PNG
# (signature, IHDR first, IEND last) and not tiny, the AUC table compares
# the two versions.  A model whose version has no training history (an
# mtms_training_info returning no rows) and no --samples gets notes instead
# of the curves and the sample figures; so does a database without
# mtms_training_info at all.  An unknown model is an error.  A few
# seconds.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=test/tap.sh
. test/tap.sh

DB=mtms_report
tmp=$(mktemp -d -t mtms-report.XXXXXX)

cleanup() {
    "$PG_BINDIR/dropdb" --if-exists "$DB" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
"$PG_BINDIR/dropdb" --if-exists "$DB" 2>/dev/null

plan 16

# report DIR [report.sh arguments...]: runs the report into DIR, its
# output (the page's path) in DIR.out, its errors in DIR.err
report() {
    local dir=$1
    shift
    PGDATABASE=$DB bash tools/report.sh "$@" --out "$dir" >"$dir.out" 2>"$dir.err"
}

# png_ok FILE: a whole PNG of more than 1 kB
png_ok() {
    /usr/bin/python3 - "$1" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
ok = (len(data) > 1024 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
      and data[-8:-4] == b"IEND"
      and int.from_bytes(data[16:20], "big") > 0 and int.from_bytes(data[20:24], "big") > 0)
sys.exit(0 if ok else 1)
EOF
}

# pngs_referenced DIR: every PNG of DIR is an <img> of its page and every
# <img> of the page is a PNG of DIR (diag names what is not)
pngs_referenced() {
    local dir=$1 on_disk in_page
    on_disk=$(cd "$dir" && find . -maxdepth 1 -name '*.png' -printf '%f\n' | sort)
    in_page=$(grep -o '<img src="[^"]*"' "$dir/index.html" | sed 's/<img src="\(.*\)"/\1/' | sort)
    [ "$on_disk" = "$in_page" ] && return 0
    diag "PNG files: $on_disk" "images of the page: $in_page"
    return 1
}

"$PG_BINDIR/createdb" "$DB"
setup=$(q "$DB" \
    "CREATE EXTENSION mtms" \
    "CREATE TABLE samples AS SELECT * FROM mtms_synthetic_samples(9000, 1, '{\"slots\": 3}')" \
    "CREATE TABLE day1 AS SELECT * FROM samples WHERE slot = 1" \
    "CREATE TABLE day2 AS SELECT * FROM samples WHERE slot = 2" \
    "CREATE TABLE day3 AS SELECT * FROM samples WHERE slot = 3" \
    "SELECT mtms_create_model('rm', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', options => '{\"max_epochs\": 2}')" \
    "SELECT count(*) FROM mtms_train('rm', 'day1')" \
    "SELECT count(*) FROM mtms_train('rm', 'day2')" \
    "SELECT mtms_create_model('rm_once', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', options => '{\"max_epochs\": 1}')" \
    "SELECT count(*) FROM mtms_train('rm_once', 'day1')" 2>&1)
status=$?
ok $status "a model trained twice, another once"
[ $status -eq 0 ] || diag "$setup"

# The history: mtms_training_info; an empty one for the model "without
# history".
has_info=$(q "$DB" "SELECT to_regprocedure('mtms_training_info(text,integer)') IS NOT NULL")
path=public
if [ "$has_info" != t ]; then
    diag "mtms_training_info is missing from this mtms"
    exit 1
fi
q "$DB" "CREATE SCHEMA report_nohist" \
    "CREATE FUNCTION report_nohist.mtms_training_info(model text, version int DEFAULT NULL)
       RETURNS TABLE(version int, stage text, scene text, task text, epoch int, checkpoint int,
                     train_loss float8, valid_loss float8, valid_auc float8, rows bigint,
                     seconds float8, kept boolean)
       LANGUAGE sql AS 'SELECT NULL::int, NULL, NULL, NULL, NULL::int, NULL::int, NULL::float8,
                            NULL::float8, NULL::float8, NULL::bigint, NULL::float8, NULL::boolean
                         WHERE false'" >/dev/null

# --- the model trained twice, with --samples ---------------------------------
full=$tmp/full
start=$(date +%s)
PGOPTIONS="-c search_path=$path" report "$full" rm --samples day3
status=$?
ok $status "report.sh rm --samples day3 exits 0"
[ $status -eq 0 ] || diag "$(cat "$full.err")"
is "$(cat "$full.out")" "$full/index.html" "it prints the page's path"
ok "$([ -s "$full/index.html" ]; echo $?)" "the page exists"
pngs_referenced "$full"
ok $? "the page shows every PNG written, and every image it shows was written"
bad=""
for f in "$full"/*.png; do
    png_ok "$f" || bad="$bad $(basename "$f")"
done
is "$bad" "" "each PNG is a whole, non-empty PNG"
for fig in auc_versions calibration score_histograms; do
    ok "$([ -f "$full/$fig.png" ]; echo $?)" "figure $fig.png"
done
n=$(find "$full" -maxdepth 1 -name 'curves_*.png' | wc -l)
ok "$([ "$n" -ge 1 ]; echo $?)" "training curves ($n figures)"
ok "$(grep -q '<th>AUC v1</th><th>AUC v2</th>' "$full/index.html"; echo $?)" \
    "the AUC table compares version 1 with the active version 2"
diag "report of 3,000 rows: $(($(date +%s) - start)) s"

# --- a version without history, no --samples ---------------------------------
bare=$tmp/bare
PGOPTIONS="-c search_path=report_nohist,public" report "$bare" rm_once
status=$?
ok $status "report.sh of a model without history and without --samples exits 0"
[ $status -eq 0 ] || diag "$(cat "$bare.err")"
ok "$(grep -q 'class="note">No training curves: version 1 has no recorded training history' "$bare/index.html" &&
    ! ls "$bare"/curves_*.png >/dev/null 2>&1; echo $?)" \
    "the page notes that the version has no training history, and draws no curves"
ok "$(grep -q 'class="note">No calibration or score distribution' "$bare/index.html" &&
    [ "$(cd "$bare" && ls -- *.png)" = auc_versions.png ] && pngs_referenced "$bare"; echo $?)" \
    "without --samples: a note, and the stored validation AUCs only"

# --- no mtms_training_info at all, an unknown model ---------------------------
if [ "$has_info" != t ]; then
    report "$tmp/noinfo" rm_once
    ok "$(grep -q "class=\"note\">No training curves: this database&#x27;s mtms has no mtms_training_info" \
        "$tmp/noinfo/index.html"; echo $?)" "a database without mtms_training_info: a note"
else
    echo "ok $((TAP_N += 1)) # skip this mtms has mtms_training_info"
fi
report "$tmp/nomodel" rm_nope
status=$?
ok "$([ $status -ne 0 ] && grep -q 'model "rm_nope" does not exist' "$tmp/nomodel.err"; echo $?)" \
    "an unknown model: an error naming it, exit status $status"

done_testing
