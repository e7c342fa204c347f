#!/usr/bin/env bash
# bench/multinode_large.sh: a multi-node training of a model larger than
# one value (1 GB) can hold: the fine-tune's job (the model with its new
# embeddings) is staged on the nodes chunk by chunk, and node 1's result
# (the units of two of the three scenes) comes back in chunks too.
# Reports the model's size, the bytes each way, the staging calls and the
# seconds; with --same, also trains the same rows on the coordinator alone
# and compares the parameters (md5 over every embedding and tower row).
#
#   PG_CONFIG=/path/to/pg_config bash bench/multinode_large.sh [--rows N] [--dim D] [--same]
#
# Defaults: 1.3M rows, embedding_dim 128, one epoch per stage: about
# 2.5M embedding rows, 1.3 GB on the wire.  Needs about 12 GB of memory
# and 6 GB of disk under /tmp; starts its own coordinator and two data
# nodes (test/cluster.sh) and stops them.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=1300000
DIM=128
SAME=0
while [ $# -gt 0 ]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --dim) DIM=$2; shift 2 ;;
        --same) SAME=1; shift ;;
        *) echo "usage: bench/multinode_large.sh [--rows N] [--dim D] [--same]" >&2; exit 2 ;;
    esac
done

# shellcheck source=test/tap.sh
. test/tap.sh
# shellcheck source=test/cluster.sh
. test/cluster.sh
cluster_has_plproxy || { echo "bench/multinode_large.sh: PL/Proxy is not installed for $PG_BINDIR" >&2; exit 1; }

DB=mtms_large
# many users and ads: most rows bring new features
GEN="mtms_synthetic_samples($ROWS, 3, '{\"slots\": 1, \"users\": 3000000, \"ads\": 1000000, \"advertisers\": 100000, \"tags\": 100000}')"
MODEL="'{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}', $DIM, options => '{\"max_epochs\": 1, \"seed\": 3%s}'"

log() { echo "[$(date +%T)] $*" >&2; }
qc() { cluster_sql coord "$DB" "$@"; }
log "starting a coordinator and two data nodes"
cluster_start coord node1 node2 || { cluster_logs; exit 1; }
for n in coord node1 node2; do
    PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port $n) PGUSER=postgres "$PG_BINDIR/createdb" "$DB" &&
        cluster_sql $n "$DB" "CREATE EXTENSION mtms" "ALTER DATABASE $DB SET mtms.max_memory = '16GB'" >/dev/null ||
        exit 1
done
log "generating $ROWS rows: search and feeds on node 1, video on node 2"
cluster_sql node1 "$DB" "CREATE TABLE s AS SELECT * FROM $GEN WHERE scene <> 'video'" >/dev/null
cluster_sql node2 "$DB" "CREATE TABLE s AS SELECT * FROM $GEN WHERE scene = 'video'" >/dev/null
qc "CREATE TABLE s_all AS SELECT * FROM $GEN WHERE $SAME = 1" "CREATE TABLE s (LIKE s_all)" \
    "CREATE TABLE probe AS SELECT scene, features FROM mtms_synthetic_samples(1000, 9)" \
    "CREATE EXTENSION plproxy" \
    "CREATE SERVER nodes FOREIGN DATA WRAPPER plproxy
       OPTIONS (p0 'host=$cluster_host port=$(cluster_port node1) dbname=$DB',
                p1 'host=$cluster_host port=$(cluster_port node2) dbname=$DB')" \
    "CREATE USER MAPPING FOR PUBLIC SERVER nodes OPTIONS (user 'postgres')" \
    "SELECT mtms_cluster_setup()" \
    "SELECT mtms_create_model('big', $(printf "$MODEL" ', "cluster": "nodes"'))" \
    "SELECT mtms_create_model('big_local', $(printf "$MODEL" ''))" >/dev/null || { cluster_logs; exit 1; }

# train NAME REL: the NOTICE lines and the seconds
train() {
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$(PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port coord) PGUSER=postgres "$PG_BINDIR/psql" -X -q -A -t -d "$DB" \
        -c "SELECT count(*) FROM mtms_train('$1', '$2')" 2>&1)
    t1=$(date +%s.%N)
    printf '%s\n' "$out" | grep -E 'data nodes|written|ERROR' >&2
    echo "$t1 - $t0" | bc
}
# params NAME: md5 over the md5 of every parameter row of the active version
params() {
    qc "SELECT md5(string_agg(h, ',' ORDER BY h)) FROM (
          SELECT md5(format('e %s %s %s %s %s', scene, task, feature, vector, accum)) AS h
            FROM mtms_embedding e JOIN mtms_model m USING (model_id)
           WHERE m.name = '$1' AND e.version = m.active_version
          UNION ALL
          SELECT md5(format('t %s %s %s %s %s %s', phase, scene, task, layer, weights, bias))
            FROM mtms_tower t JOIN mtms_model m USING (model_id)
           WHERE m.name = '$1' AND t.version = m.active_version) s"
}

log "training on the two data nodes"
t_nodes=$(train big s) || exit 1
emb_rows=$(qc "SELECT count(*) FROM mtms_embedding WHERE model_id = mtms_model_id('big')")
scored=$(qc "SELECT count(*) FILTER (WHERE mtms_score('big', scene, 'ctr', features) BETWEEN 0 AND 1)
               || ' of ' || count(*) FROM probe")
same="not checked (--same)"
if [ "$SAME" = 1 ]; then
    log "training the same rows on the coordinator alone"
    t_local=$(train big_local s_all) || exit 1
    if [ "$(params big)" = "$(params big_local)" ]; then
        same="yes (one server: $t_local s)"
    else
        same="NO (one server: $t_local s)"
    fi
fi
printf '\n%s rows, embedding_dim %s, one epoch per stage, 2 data nodes; PostgreSQL %s; mtms %s\n' "$ROWS" "$DIM" \
    "$(qc "SHOW server_version")" "$(git rev-parse --short HEAD 2>/dev/null)"
printf 'training on the nodes: %s s; %s embedding rows; probe rows scored: %s; parameters the same as one server'"'"'s: %s\n' \
    "$t_nodes" "$emb_rows" "$scored" "$same"
