#!/usr/bin/env bash
# test/dev-cluster.sh: a private PostgreSQL installation and cluster for
# development, so that several people (or agents) on one machine can each
# build, install and test mtms without touching the system's PostgreSQL or
# each other's:
#
#     bash test/dev-cluster.sh DIR PORT        # set up (once) and start
#     bash test/dev-cluster.sh DIR stop
#     eval "$(bash test/dev-cluster.sh DIR env)"   # PG_CONFIG, PATH, PGHOST, ...
#
# DIR gets a copy of the packaged PostgreSQL (test/pg-env.sh's version; its
# binaries find their lib and share directories relative to themselves, so
# "make PG_CONFIG=DIR/.../pg_config install" installs into the copy) and a
# cluster in DIR/data, owned by the postgres OS user when run as root,
# listening on PORT on 127.0.0.1 and on a Unix socket in DIR/sock.  Then:
#
#     eval "$(bash test/dev-cluster.sh DIR env)"
#     make PG_CONFIG="$PG_CONFIG" install
#     make PG_CONFIG="$PG_CONFIG" installcheck        # or psql, pg_prove ...
#     bash test/in-cluster.sh                         # the whole suite
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/pg-env.sh
. test/pg-env.sh

dir=${1:?usage: dev-cluster.sh DIR PORT|stop|env}
what=${2:?usage: dev-cluster.sh DIR PORT|stop|env}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin=$dir/usr/lib/postgresql/$MTMS_PG/bin

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$what" in
    stop)
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop
        exit 0
        ;;
    env)
        port=$(cat "$dir/port")
        echo "export PG_CONFIG='$bin/pg_config' PATH='$bin:$PATH' PGHOST='$dir/sock' PGPORT=$port PGUSER=postgres PGDATABASE=postgres MTMS_PG=$MTMS_PG"
        exit 0
        ;;
esac

port=$what
if [ ! -x "$bin/postgres" ]; then
    mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql"
    cp -a "/usr/lib/postgresql/$MTMS_PG" "$dir/usr/lib/postgresql/"
    cp -a "/usr/share/postgresql/$MTMS_PG" "$dir/usr/share/postgresql/"
    # the server headers stay the system's (pg_config finds them by path)
    # (pg_config finds them as DIR/usr/include/postgresql/VERSION/server)
    ln -sfn /usr/include "$dir/usr/include"
fi
echo "$port" >"$dir/port"
if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir/data" "$dir/sock"
    touch "$dir/server.log"
    [ "$(id -u)" -ne 0 ] || chown postgres "$dir/data" "$dir/sock" "$dir/server.log"
    chmod 755 "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
fsync = off
shared_buffers = 512MB
log_min_messages = log
EOF
fi
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
echo "dev-cluster.sh: PostgreSQL $MTMS_PG in $dir on port $port; eval \"\$(bash test/dev-cluster.sh $dir env)\""
