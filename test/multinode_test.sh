#!/usr/bin/env bash
# test/multinode_test.sh: mtms_train on the data nodes of a PL/Proxy
# cluster (TAP; run by test/in-cluster.sh through prove).
#
# Starts a coordinator and two data nodes (test/cluster.sh) of the
# PostgreSQL under test.  Each scene's rows are on one node (search on
# node 1, feeds and video on node 2) under the same name; the coordinator
# holds all the rows in another table for a single-server training of the
# same rows.  Asserts:
#   - the parameters (md5 over the embedding and tower rows), the scores
#     and the training history are the single-server training's, bit for
#     bit, for a first training, a warm-started second one (its job staged
#     on the nodes and every message in 16 kB chunks) and one whose phase 1
#     trains one scene;
#   - a node stopped mid-training: an error naming the node, the active
#     version unchanged; the node back, the next training works;
#   - statement_timeout (and a cancel) on the coordinator stop the nodes'
#     work;
#   - a node without mtms, or with another version of it, is refused
#     before any work, naming the node;
#   - a scene whose rows are on two nodes is refused, naming it; so are a
#     node reached through two partitions and an undefined cluster.
# Skips (TAP skip_all, a pass) where PL/Proxy is not installed for the
# PostgreSQL under test.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

major=$("$PG_BINDIR/pg_config" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
share=$("$PG_BINDIR/pg_config" --sharedir)
if [ ! -f "$share/extension/plproxy.control" ]; then
    echo "1..0 # SKIP PL/Proxy is not installed for PostgreSQL $major (Debian: postgresql-$major-plproxy)"
    exit 0
fi

# shellcheck source=test/cluster.sh
. test/cluster.sh

plan 23

DB=mtms_mn
qc() { cluster_sql coord "$DB" "$@"; }
q1() { cluster_sql node1 "$DB" "$@"; }
q2() { cluster_sql node2 "$DB" "$@"; }
# err SQL: the coordinator's error message (ERROR line), or "no error"
err() {
    local out
    out=$(PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port coord) PGUSER=postgres "$PG_BINDIR/psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -d "$DB" -c "SET client_min_messages = warning" -c "$1" 2>&1)
    if printf '%s\n' "$out" | grep -q '^ERROR:'; then
        printf '%s\n' "$out" | sed -n 's/^ERROR: *//p' | head -n 1
    else
        echo "no error"
    fi
}

N=${MTMS_MN_ROWS:-12000}
GEN="mtms_synthetic_samples($N, 7, '{\"slots\": 1}')"
OPTS='"max_epochs": 2, "seed": 5'
# a model whose trainings last a few seconds: time to stop a node or cancel
SLOW='"max_epochs": 40, "patience": 40, "min_delta": 0'

cluster_start coord node1 node2 &&
    for n in coord node1 node2; do
        PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port $n) PGUSER=postgres "$PG_BINDIR/createdb" "$DB" &&
            cluster_sql $n "$DB" "CREATE EXTENSION mtms" >/dev/null || exit 1
    done &&
    q1 "CREATE TABLE s AS SELECT * FROM $GEN WHERE scene = 'search'" >/dev/null &&
    q2 "CREATE TABLE s AS SELECT * FROM $GEN WHERE scene <> 'search'" >/dev/null &&
    qc "CREATE TABLE s_all AS SELECT * FROM $GEN" \
        "CREATE TABLE s (LIKE s_all)" \
        "CREATE TABLE probe AS SELECT row_number() OVER (ORDER BY features::text) AS i, scene, features
           FROM mtms_synthetic_samples(40, 9)" \
        "CREATE EXTENSION plproxy" \
        "CREATE SERVER mtms_nodes FOREIGN DATA WRAPPER plproxy
           OPTIONS (p0 'host=$cluster_host port=$(cluster_port node1) dbname=$DB',
                    p1 'host=$cluster_host port=$(cluster_port node2) dbname=$DB')" \
        "CREATE USER MAPPING FOR PUBLIC SERVER mtms_nodes OPTIONS (user 'postgres')" \
        "SELECT mtms_cluster_setup()" \
        "SELECT mtms_create_model('one', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                                  options => '{$OPTS}')" \
        "SELECT mtms_create_model('mn', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                                  options => '{$OPTS, \"cluster\": \"mtms_nodes\"}')" \
        "SELECT mtms_create_model('slow', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                                  options => '{$SLOW, \"cluster\": \"mtms_nodes\"}')" >/dev/null
status=$?
ok $status "a coordinator with PL/Proxy's cluster mtms_nodes and two data nodes holding the scenes' rows"
if [ $status -ne 0 ]; then
    diag "$(cluster_logs)"
    exit 1
fi

params() {
    qc "SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
          SELECT format('e %s %s %s %s %s %s', version, scene, task, feature, vector, accum) AS r
            FROM mtms_embedding WHERE model_id = mtms_model_id('$1')
          UNION ALL
          SELECT format('t %s %s %s %s %s %s %s', version, phase, scene, task, layer, weights, bias)
            FROM mtms_tower WHERE model_id = mtms_model_id('$1')) s"
}
scores() {
    qc "SELECT md5(string_agg(mtms_score('$1', p.scene, t, p.features)::text, ',' ORDER BY p.i, t))
          FROM probe p, unnest('{ctr,cvr,ctcvr}'::text[]) t"
}
history() {
    qc "SELECT count(*) || ' ' || md5(string_agg(format('%s %s %s %s %s %s %s %s %s %s',
            stage, scene, task, epoch, checkpoint, train_loss, valid_loss, valid_auc, rows, kept),
            ',' ORDER BY ord))
          FROM mtms_training_info('$1') WITH ORDINALITY
               AS h(version, stage, scene, task, epoch, checkpoint, train_loss, valid_loss,
                    valid_auc, rows, seconds, kept, ord)"
}
train() {
    qc "SELECT string_agg(format('%s %s %s %s %s %s %s %s', phase, scene, task, epochs, samples,
                                 train_loss, valid_loss, valid_auc), ';' ORDER BY phase, scene, task)
          FROM mtms_train('$1', '$2')"
}

# 1. the same parameters, scores and history as one server's training
r1=$(train one s_all)
r2=$(train mn s)
is "$r2" "$r1" "mtms_train's rows on the nodes are one server's (but for the seconds)"
is "$(params mn)" "$(params one)" "first training: parameters bit-identical to one server's"
is "$(scores mn)" "$(scores one)" "first training: scores identical"
is "$(history mn)" "$(history one)" "first training: the training history is one server's"
is "$(qc "SELECT samples FROM mtms_versions('mn') WHERE active")" "$N" \
    "the version counts the nodes' rows"
# the second training ships its job and results in 16 kB chunks: the job
# (more than four chunks) is staged on the nodes before the training call
train one s_all >/dev/null
for n in node1 node2; do
    cluster_sql $n "$DB" "ALTER DATABASE $DB SET mtms.node_chunk_size = '16kB'" >/dev/null
done
staged=$(PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port coord) PGUSER=postgres "$PG_BINDIR/psql" -X -q -At -d "$DB" \
    -c "SET mtms.node_chunk_size = '16kB'" -c "SELECT count(*) FROM mtms_train('mn', 's')" 2>&1 |
    sed -n 's/.*phase 1 on 2 data nodes.*shipped to the nodes (staged in \([0-9]*\) calls).*/\1/p')
for n in node1 node2; do
    cluster_sql $n "$DB" "ALTER DATABASE $DB RESET mtms.node_chunk_size" >/dev/null
done
[ "${staged:-0}" -gt 4 ]
ok $? "a job of more than four chunks is staged on the nodes (${staged:-no} staging calls)"
is "$(params mn)" "$(params one)" "a second training, warm-started from the first, in 16 kB chunks: still bit-identical"
qc "SELECT count(*) FROM mtms_train('one', 's_all', scenes => '{video}')" >/dev/null
qc "SELECT count(*) FROM mtms_train('mn', 's', scenes => '{video}')" >/dev/null
is "$(params mn)" "$(params one)" "phase 1 for one scene (node 2's), the fine-tune for all: still bit-identical"

# 2. a node stopped mid-training
train slow s >/dev/null
before=$(qc "SELECT version FROM mtms_versions('slow') WHERE active")
err "SELECT count(*) FROM mtms_train('slow', 's')" >"$CLUSTER_DIR/stop.out" &
bg=$!
stopped=1
for _ in $(seq 1 200); do
    if [ "$(q2 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%mtms_node_train%' AND state = 'active' AND pid <> pg_backend_pid()")" != 0 ]; then
        sleep 0.3
        cluster_stop_server node2
        stopped=0
        break
    fi
    sleep 0.05
done
wait $bg
msg=$(cat "$CLUSTER_DIR/stop.out")
[ -z "${MTMS_MN_VERBOSE:-}" ] || diag "$msg"
ok $((stopped == 0 && $(grep -c "data node p1 (host=$cluster_host port=$(cluster_port node2) dbname=$DB) of cluster \"mtms_nodes\" failed" <<<"$msg") == 0 ? 1 : 0)) \
    "a node stopped mid-training: the error names it"
[ $stopped -eq 0 ] && [[ $msg == *"failed"* ]] || diag "$msg"
is "$(qc "SELECT version FROM mtms_versions('slow') WHERE active")" "$before" \
    "and the previous version stays active"
cluster_start_server node2
is "$(qc "SELECT count(*) > 0 FROM mtms_train('slow', 's')")|$(qc "SELECT version FROM mtms_versions('slow') WHERE active")" \
    "t|$((before + 1))" "with the node back, the next training works"

# 3. statement_timeout and cancel stop the remote calls
running() {
    local n
    for _ in $(seq 1 100); do
        n=$(( $(q1 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%mtms_node_train%' AND state = 'active' AND pid <> pg_backend_pid()") +
              $(q2 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%mtms_node_train%' AND state = 'active' AND pid <> pg_backend_pid()") ))
        [ "$n" -eq 0 ] && break
        sleep 0.1
    done
    echo "$n"
}
msg=$(err "SET statement_timeout = '400ms'; SELECT count(*) FROM mtms_train('slow', 's')")
is "$msg|$(running)" "canceling statement due to statement timeout|0" \
    "statement_timeout on the coordinator: the training stops, and so do the nodes' calls"
err "SELECT count(*) FROM mtms_train('slow', 's')" >"$CLUSTER_DIR/cancel.out" &
bg=$!
for _ in $(seq 1 200); do
    [ "$(q1 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%mtms_node_train%' AND state = 'active' AND pid <> pg_backend_pid()")" != 0 ] && break
    sleep 0.05
done
qc "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%mtms_train(''slow''%' AND pid <> pg_backend_pid()" >/dev/null
wait $bg
is "$(cat "$CLUSTER_DIR/cancel.out")|$(running)" "canceling statement due to user request|0" \
    "a cancel on the coordinator: the training stops, and so do the nodes' calls"

# 4. a node without mtms, or with another version: refused before any work
node2="$cluster_host:$(cluster_port node2)/$DB"
q2 "DROP EXTENSION mtms" >/dev/null
is "$(err "SELECT count(*) FROM mtms_train('mn', 's')")" \
    "data node $node2 of cluster \"mtms_nodes\" does not have the extension mtms" \
    "a node without mtms is refused, named"
q2 "CREATE EXTENSION mtms VERSION '0.2'" >/dev/null
is "$(err "SELECT count(*) FROM mtms_train('mn', 's')")" \
    "data node $node2 of cluster \"mtms_nodes\" has mtms 0.2, the coordinator mtms $(qc "SELECT extversion FROM pg_extension WHERE extname = 'mtms'")" \
    "a node with another version of mtms is refused, named"
q2 "ALTER EXTENSION mtms UPDATE" >/dev/null
v=$(qc "SELECT version FROM mtms_versions('mn') WHERE active")
is "$(qc "SELECT count(*) > 0 FROM mtms_train('mn', 's')")|$(qc "SELECT version FROM mtms_versions('mn') WHERE active")" \
    "t|$((v + 1))" "updated to the coordinator's version, the node trains again"

# 5. a scene split over two nodes: refused, never averaged
q2 "INSERT INTO s SELECT * FROM $GEN WHERE scene = 'search' LIMIT 500" >/dev/null
is "$(err "SELECT count(*) FROM mtms_train('mn', 's')")" \
    "scene \"search\" has rows on data nodes $cluster_host:$(cluster_port node1)/$DB and $node2" \
    "a scene with rows on two nodes is refused, naming the scene and the nodes"
is "$(qc "SELECT version FROM mtms_versions('mn') WHERE active")" "$((v + 1))" \
    "and the active version is unchanged"

# 6. set-up mistakes, named
# two spellings of node 1's connection string: two connections to it
qc "CREATE SERVER dup FOREIGN DATA WRAPPER plproxy
      OPTIONS (p0 'host=$cluster_host port=$(cluster_port node1) dbname=$DB',
               p1 'dbname=$DB port=$(cluster_port node1) host=$cluster_host')" \
   "CREATE USER MAPPING FOR PUBLIC SERVER dup OPTIONS (user 'postgres')" \
   "SELECT mtms_create_model('dup', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                             options => '{\"cluster\": \"dup\"}')" \
   "SELECT mtms_create_model('nowhere', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                             options => '{\"cluster\": \"nowhere\"}')" >/dev/null
is "$(err "SELECT count(*) FROM mtms_train('dup', 's')")" \
    "data node $cluster_host:$(cluster_port node1)/$DB is more than one partition of cluster \"dup\"" \
    "a node reached by two partitions' connection strings is refused (its scenes would train twice)"
is "$(err "SELECT count(*) FROM mtms_train('nowhere', 's')")" \
    "PL/Proxy cluster \"nowhere\" of model \"nowhere\" does not exist" \
    "a cluster that is not defined is named"
is "$(qc "SELECT count(*) FROM mtms_versions('dup')")|$(qc "SELECT count(*) FROM mtms_versions('nowhere')")" "0|0" \
    "and neither wrote a version"
qc "SELECT mtms_create_model('hyg', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                             options => '{\"cluster\": \"mtms_nodes\", \"min_count\": 2}')" >/dev/null
is "$(err "SELECT count(*) FROM mtms_train('hyg', 's')")" \
    "model \"hyg\" trains on cluster \"mtms_nodes\" and uses feature hygiene, which a multi-node training does not support" \
    "feature hygiene (min_count) on a cluster is refused, not silently skipped"

done_testing
