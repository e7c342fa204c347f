#!/usr/bin/env bash
# test/standby_test.sh: a hot standby scores with what the primary
# committed, from a session's next statement on (TAP; run by
# test/in-cluster.sh through prove).
#
# Starts its own primary and a streaming standby (pg_basebackup -R) of the
# PostgreSQL under test, in a temporary directory, as the postgres OS user
# when run as root.  A model is trained on the primary; one psql session on
# the standby stays open and scores a probe after each change the primary
# commits (a new version, tower rows changed by plain SQL, a rollback, a
# drop), once the standby has replayed it: the scores must be the
# primary's, bit for bit, never the ones the session cached before.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

if [ "$(id -u)" -eq 0 ]; then
    as_owner() { (cd / && runuser -u postgres -- "$@"); }
else
    as_owner() { "$@"; }
fi

DIR=$(mktemp -d /tmp/mtms-standby.XXXXXX)
[ "$(id -u)" -ne 0 ] || chown postgres: "$DIR"
PPORT=$((20000 + RANDOM % 20000))
SPORT=$((PPORT + 1))
SB_PID=
cleanup() {
    [ -z "$SB_PID" ] || kill "$SB_PID" 2>/dev/null
    for d in standby primary; do
        [ -d "$DIR/$d" ] && as_owner "$PG_BINDIR/pg_ctl" -D "$DIR/$d" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$DIR"
}
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT

plan 11

# qp / qs SQL...: q on the primary / the standby (database mtms_sb)
qp() { PGHOST=$DIR PGPORT=$PPORT PGUSER=postgres q mtms_sb "$@"; }
qs() { PGHOST=$DIR PGPORT=$SPORT PGUSER=postgres q mtms_sb "$@"; }

start() {
    local name=$1 port=$2
    cat >>"$DIR/$name/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$DIR'
hot_standby = on
max_wal_senders = 4
wal_level = replica
shared_buffers = 32MB
EOF
    # MTMS_PRELOAD=1: both servers preload mtms, so the standby's sessions
    # score from the version in its shared memory (One model for all sessions)
    if [ -n "${MTMS_PRELOAD:-}" ]; then
        echo "shared_preload_libraries = 'mtms'" >>"$DIR/$name/postgresql.conf"
    fi
    # under test/sanitize.sh, servers preload the sanitizers like its own
    local san=()
    if [ -n "${MTMS_SAN_LD_PRELOAD:-}" ]; then
        san=(LD_PRELOAD="$MTMS_SAN_LD_PRELOAD" ASAN_OPTIONS="${MTMS_SAN_ASAN_OPTIONS:-}"
             UBSAN_OPTIONS="${MTMS_SAN_UBSAN_OPTIONS:-}")
    fi
    as_owner env "${san[@]}" "$PG_BINDIR/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w -t 60 start >/dev/null
}

as_owner "$PG_BINDIR/initdb" -D "$DIR/primary" -U postgres -A trust >"$DIR/initdb.log" 2>&1 &&
    start primary "$PPORT" &&
    PGHOST=$DIR PGPORT=$PPORT PGUSER=postgres "$PG_BINDIR/createdb" mtms_sb &&
    qp "CREATE EXTENSION mtms" \
        "CREATE TABLE s AS SELECT * FROM mtms_synthetic_samples(6000, 3, '{\"slots\": 2}')" \
        "CREATE TABLE probe AS SELECT row_number() OVER (ORDER BY features::text) AS i, scene, features
           FROM mtms_synthetic_samples(30, 9)" \
        "SELECT mtms_create_model('m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                                  options => '{\"max_epochs\": 1}')" \
        "SELECT count(*) FROM mtms_train('m', 's')" >/dev/null &&
    as_owner "$PG_BINDIR/pg_basebackup" -h "$DIR" -p "$PPORT" -U postgres -D "$DIR/standby" -R -X stream -c fast \
        >"$DIR/basebackup.log" 2>&1 &&
    start standby "$SPORT"
status=$?
ok $status "a primary with a trained model and a streaming hot standby"
if [ $status -ne 0 ]; then
    diag "$(cat "$DIR"/*.log 2>/dev/null | tail -n 30)"
    exit 1
fi

# These servers do not preload mtms: PostgreSQL 15 and 16 have nowhere to
# keep the progress slots and the view says so; 17 and later keep them in a
# DSM segment registered on first use.
major=$("$PG_BINDIR/pg_config" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
progress=$(PGHOST=$DIR PGPORT=$SPORT PGUSER=postgres "$PG_BINDIR/psql" -X -q -A -t -v VERBOSITY=terse -d mtms_sb \
    -c "SELECT count(*) FROM mtms_progress" 2>&1 | tr '\n' ' ')
if [ "${major:-0}" -lt 17 ] && [ -z "${MTMS_PRELOAD:-}" ]; then
    want="NOTICE:  mtms_progress is empty: mtms is not in shared_preload_libraries 0 "
else
    want="0 "
fi
is "$progress" "$want" "without preloading, mtms_progress on PostgreSQL $major: $want"

# caught_up: the standby has replayed everything the primary has written
caught_up() {
    local lsn
    lsn=$(qp "SELECT pg_current_wal_lsn()")
    for _ in $(seq 1 300); do
        [ "$(qs "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && return 0
        sleep 0.1
    done
    return 1
}

PROBE="SELECT md5(string_agg(mtms_score('m', p.scene, t, p.features)::text, ',' ORDER BY p.i, t))
         FROM probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t"

# One session on the standby for the whole test: its model cache is what
# must not go stale.  Each request is the probe followed by a marker line.
coproc SB { PGHOST=$DIR PGPORT=$SPORT PGUSER=postgres "$PG_BINDIR/psql" -X -q -A -t -d mtms_sb 2>&1; }
session_probe() {
    local line out=
    printf '%s;\nSELECT %s;\n' "$PROBE" "'--end--'" >&"${SB[1]}"
    while IFS= read -r -t 60 line <&"${SB[0]}"; do
        [ "$line" = "--end--" ] && break
        # an error's first line, not its DETAIL or HINT
        case "$out" in ERROR*) ;; *) out=$line ;; esac
    done
    printf '%s\n' "$out"
}

v0=$(qp "$PROBE")
caught_up
is "$(session_probe)" "$v0" "the standby session scores what the primary scores"

# a new version
qp "SELECT count(*) FROM mtms_train('m', 's', scenes => '{video}')" >/dev/null
v2=$(qp "$PROBE")
isnt "$v2" "$v0" "the new version changes the primary's scores"
caught_up
is "$(session_probe)" "$v2" "after a new version committed on the primary, the same session's next probe scores it"

# tower rows changed by plain SQL (a superuser's UPDATE)
before=$v2
qp "UPDATE mtms_tower SET bias = array(SELECT b + 0.25 FROM unnest(bias) b)
     WHERE model_id = mtms_model_id('m') AND version = 2 AND phase = 'finetune'" >/dev/null
v2b=$(qp "$PROBE")
isnt "$v2b" "$before" "the UPDATE changes the primary's scores"
caught_up
is "$(session_probe)" "$v2b" "and the standby session's next probe scores the updated rows"

# a rollback
qp "SELECT mtms_rollback('m', 1)" >/dev/null
v1=$(qp "$PROBE")
caught_up
is "$(session_probe)" "$v1" "after mtms_rollback, the standby session scores version 1"

# writes are refused on the standby, and it keeps serving
is "$(qs "SELECT count(*) FROM mtms_train('m', 's')")" "ERROR 25006" \
    "mtms_train on the standby: read_only_sql_transaction (25006)"

# a drop: the standby session's next probe fails as on the primary
qp "SELECT mtms_drop_model('m')" >/dev/null
want=$(qp "$PROBE")
caught_up
got=$(session_probe)
case "$got" in
    *ERROR*) got="ERROR" ;;
esac
case "$want" in
    ERROR*) want="ERROR" ;;
esac
is "$got" "$want" "after mtms_drop_model, the standby session's probe fails like the primary's"
ok "$([ "$want" = ERROR ]; echo $?)" "(the primary's probe of a dropped model is an error)"

done_testing
