# test/tap.sh: a few TAP helpers for the suite's shell tests
# (test/*_test.sh), sourced by them.  The tests print TAP, so prove (Perl's
# TAP harness) runs and counts them as pg_prove does the pgTAP files.
#
#   plan N | ok COND DESC | is GOT WANT DESC | sql_is DB SQL WANT DESC
#   diag TEXT | done_testing
#
# The tests run inside the suite's cluster (PGHOST, PGPORT, PGUSER of a
# superuser, PG_CONFIG set by test/in-cluster.sh).

TAP_N=0
TAP_FAILED=0
PG_BINDIR=$("${PG_CONFIG:-pg_config}" --bindir)

plan() { echo "1..$1"; }

diag() { printf '%s\n' "$@" | sed 's/^/# /' >&2; }

# ok STATUS DESC: STATUS 0 passes
ok() {
    local status=$1 desc=$2
    TAP_N=$((TAP_N + 1))
    if [ "$status" -eq 0 ]; then
        echo "ok $TAP_N - $desc"
    else
        echo "not ok $TAP_N - $desc"
        TAP_FAILED=$((TAP_FAILED + 1))
    fi
}

# is GOT WANT DESC
is() {
    local got=$1 want=$2 desc=$3
    if [ "$got" = "$want" ]; then
        ok 0 "$desc"
    else
        ok 1 "$desc"
        diag "     got: $got" "expected: $want"
    fi
}

# isnt GOT UNWANTED DESC
isnt() {
    local got=$1 unwanted=$2 desc=$3
    if [ "$got" != "$unwanted" ]; then
        ok 0 "$desc"
    else
        ok 1 "$desc"
        diag "got the unwanted value: $got"
    fi
}

# q DB SQL...: one value (or rows, |-separated) of a query, quietly; on an
# error prints "ERROR <sqlstate>" so that tests can compare SQLSTATEs.
q() {
    local db=$1
    shift
    local out
    if out=$("$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate \
        -d "$db" -c "SET client_min_messages = warning" -c "SET extra_float_digits = 3" \
        "${@/#/-c}" 2>&1); then
        printf '%s\n' "$out"
    else
        printf 'ERROR %s\n' "$(printf '%s\n' "$out" | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\).*/\1/p' | head -n 1)"
        return 1
    fi
}

done_testing() {
    [ "$TAP_FAILED" -eq 0 ]
}
