#!/usr/bin/env bash
# test/cluster.sh: throwaway PostgreSQL servers for the multi-node tests
# and benchmarks (test/multinode_test.sh, bench/multinode.sh), sourced:
#
#   . test/cluster.sh
#   cluster_start coord node1 node2   # initdb + start, loopback TCP ports
#   cluster_sql node1 mtms_mn "SQL"...  # one value (or |-separated rows)
#   cluster_port node1                # its port; cluster_host: 127.0.0.1
#   cluster_stop_server node2 [mode]  # pg_ctl stop (default immediate)
#   cluster_start_server node2        # start a stopped one again
#   cluster_has_plproxy               # PL/Proxy installed for $PG_BINDIR?
#
# The servers of the PostgreSQL under test ($PG_BINDIR, from tap.sh or
# $PG_CONFIG) live in one temporary directory, run as the postgres OS user
# when this runs as root (like test/standby_test.sh), listen on 127.0.0.1
# (PL/Proxy's partitions connect over TCP) and on a socket in that
# directory, and preload the sanitizers under test/sanitize.sh.  They are
# always stopped and the directory removed on exit (a trap; KEEP=1 keeps
# them for a post-mortem).  Run directly, it starts a coordinator and two
# nodes, prints how to reach them and waits for Ctrl-C.

PG_BINDIR=${PG_BINDIR:-$("${PG_CONFIG:-pg_config}" --bindir)}

if [ "$(id -u)" -eq 0 ]; then
    cluster_as_owner() { (cd / && runuser -u postgres -- "$@"); }
else
    cluster_as_owner() { "$@"; }
fi

CLUSTER_DIR=$(mktemp -d /tmp/mtms-cluster.XXXXXX)
[ "$(id -u)" -ne 0 ] || chown postgres: "$CLUSTER_DIR"
CLUSTER_BASE_PORT=$((20000 + RANDOM % 20000))
CLUSTER_NAMES=()
declare -A CLUSTER_PORTS=()
cluster_host=127.0.0.1

cluster_cleanup() {
    local n
    for n in "${CLUSTER_NAMES[@]}"; do
        [ -f "$CLUSTER_DIR/$n/postmaster.pid" ] &&
            cluster_as_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/$n" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$CLUSTER_DIR"
}
trap cluster_cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT

cluster_port() { echo "${CLUSTER_PORTS[$1]}"; }

# PL/Proxy for the PostgreSQL under test (its control file in the sharedir)
cluster_has_plproxy() {
    local share
    share=$("$PG_BINDIR/pg_config" --sharedir 2>/dev/null) || return 1
    [ -f "$share/extension/plproxy.control" ]
}

cluster_start_server() {
    local name=$1 san=()
    # under test/sanitize.sh, servers preload the sanitizers like its own
    if [ -n "${MTMS_SAN_LD_PRELOAD:-}" ]; then
        san=(LD_PRELOAD="$MTMS_SAN_LD_PRELOAD" ASAN_OPTIONS="${MTMS_SAN_ASAN_OPTIONS:-}"
             UBSAN_OPTIONS="${MTMS_SAN_UBSAN_OPTIONS:-}")
    fi
    cluster_as_owner env "${san[@]}" "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/$name" \
        -l "$CLUSTER_DIR/$name.log" -w -t 60 start >/dev/null
}

cluster_stop_server() {
    cluster_as_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/$1" -m "${2:-immediate}" -w stop >/dev/null 2>&1
}

# cluster_start NAME...: initdb and start one server per name
cluster_start() {
    local name port
    for name in "$@"; do
        port=$((CLUSTER_BASE_PORT + ${#CLUSTER_NAMES[@]}))
        CLUSTER_NAMES+=("$name")
        CLUSTER_PORTS[$name]=$port
        cluster_as_owner "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/$name" -U postgres -A trust \
            >"$CLUSTER_DIR/initdb-$name.log" 2>&1 || return 1
        cat >>"$CLUSTER_DIR/$name/postgresql.conf" <<CONF
port = $port
listen_addresses = '$cluster_host'
unix_socket_directories = '$CLUSTER_DIR'
shared_buffers = 32MB
max_connections = 30
fsync = off
CONF
        cluster_start_server "$name" || return 1
    done
}

# cluster_sql NAME DB SQL...: like tap.sh's q, on server NAME
cluster_sql() {
    local name=$1 db=$2
    shift 2
    PGHOST=$CLUSTER_DIR PGPORT=${CLUSTER_PORTS[$name]} PGUSER=postgres q "$db" "$@"
}

# cluster_logs: the servers' last log lines, for diag
cluster_logs() { tail -n 20 "$CLUSTER_DIR"/*.log 2>/dev/null; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    cluster_start coord node1 node2 || { cluster_logs; exit 1; }
    for n in coord node1 node2; do
        echo "$n: psql -h $CLUSTER_DIR -p $(cluster_port "$n") -U postgres postgres"
    done
    echo "Ctrl-C stops them."
    while sleep 3600; do :; done
fi
