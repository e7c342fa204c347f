#!/usr/bin/env bash
# bench/multinode.sh: mtms_train on 2 data nodes against 1 (PL/Proxy
# clusters, README "Scaling out"), on a 20-scene synthetic set: wall time
# and its ratio, the bytes shipped to and from the nodes per training and
# per epoch against the model's size, whether the trainings are the same
# (and the same as one server's), and the measured per-row cost
# the paper estimate in bench/RESULTS.md starts from.  About a minute.
#
#   PG_CONFIG=/path/to/pg_config bash bench/multinode.sh [--rows N] [--reps N]
#
# Needs mtms and PL/Proxy installed for that PostgreSQL; starts its own
# coordinator and two data nodes (test/cluster.sh) and stops them.  Every
# server trains with mtms.train_workers = 0, so that a node is one process
# and the comparison is of node counts, not of workers.  Scenes s01..s20
# of equal traffic: odd ones on node 1, even ones on node 2 (cluster
# "two"); all on node 1 for cluster "one".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=200000
REPS=2
while [ $# -gt 0 ]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        *) echo "usage: bench/multinode.sh [--rows N] [--reps N]" >&2; exit 2 ;;
    esac
done

# shellcheck source=test/tap.sh
. test/tap.sh
# shellcheck source=test/cluster.sh
. test/cluster.sh
cluster_has_plproxy || { echo "bench/multinode.sh: PL/Proxy is not installed for $PG_BINDIR" >&2; exit 1; }

DB=mtms_bench
SCENES=$(printf '"s%02d",' $(seq 1 20) | sed 's/,$//')
GEN="mtms_synthetic_samples($ROWS, 1, '{\"slots\": 1, \"scenes\": [$SCENES]}')"
FIELDS="'{user,ad,advertiser,hour,device,tag}'"
SCENE_ARRAY="'{$(seq -f 's%02g' 1 20 | paste -sd,)}'"

log() { echo "[$(date +%T)] $*" >&2; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "starting a coordinator and two data nodes"
cluster_start coord node1 node2 || { cluster_logs; exit 1; }
for n in coord node1 node2; do
    PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port $n) PGUSER=postgres "$PG_BINDIR/createdb" "$DB" &&
        cluster_sql $n "$DB" "CREATE EXTENSION mtms" "ALTER DATABASE $DB SET mtms.train_workers = 0" >/dev/null ||
        exit 1
done
log "generating $ROWS rows on each node (its scenes)"
cluster_sql node1 "$DB" "CREATE TABLE s_all AS SELECT * FROM $GEN" \
    "CREATE TABLE s AS SELECT * FROM $GEN WHERE substr(scene, 2)::int % 2 = 1" >/dev/null
cluster_sql node2 "$DB" "CREATE TABLE s AS SELECT * FROM $GEN WHERE substr(scene, 2)::int % 2 = 0" >/dev/null
p1="host=$cluster_host port=$(cluster_port node1) dbname=$DB"
p2="host=$cluster_host port=$(cluster_port node2) dbname=$DB"
cluster_sql coord "$DB" "CREATE TABLE s_full AS SELECT * FROM $GEN" \
    "CREATE TABLE s_all (LIKE s_full)" "CREATE TABLE s (LIKE s_full)" \
    "CREATE EXTENSION plproxy" \
    "CREATE SERVER one FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '$p1')" \
    "CREATE SERVER two FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '$p1', p1 '$p2')" \
    "CREATE USER MAPPING FOR PUBLIC SERVER one OPTIONS (user 'postgres')" \
    "CREATE USER MAPPING FOR PUBLIC SERVER two OPTIONS (user 'postgres')" \
    "SELECT mtms_cluster_setup()" >/dev/null || { cluster_logs; exit 1; }

# same NAME1 NAME2: "yes" when the two trainings' result rows (epochs,
# samples, losses, AUC: every figure but the seconds) are the same; the
# identity of the parameter rows themselves is test/multinode_test.sh's
same() {
    local n
    n=$(cluster_sql coord "$DB" "SELECT count(*) FROM r_$1 a FULL JOIN r_$2 b USING (phase, scene, task)
          WHERE (a.epochs, a.samples, a.train_loss, a.valid_loss, a.valid_auc)
                IS DISTINCT FROM (b.epochs, b.samples, b.train_loss, b.valid_loss, b.valid_auc)")
    [ "$n" = 0 ] && echo yes || echo "no ($n rows differ)"
}

# run NAME CLUSTER REL: a fresh model trained once; prints
# "seconds out_MB back_MB max_epochs row_epochs"
run() {
    local name=$1 cluster=$2 rel=$3 opts='{}' t0 t1 out
    [ -z "$cluster" ] || opts="{\"cluster\": \"$cluster\"}"
    cluster_sql coord "$DB" "DO \$\$BEGIN PERFORM mtms_drop_model('$name'); EXCEPTION WHEN undefined_object THEN END\$\$" \
        "SELECT mtms_create_model('$name', $SCENE_ARRAY, $FIELDS, options => '$opts')" >/dev/null
    t0=$(date +%s.%N)
    out=$(PGHOST=$CLUSTER_DIR PGPORT=$(cluster_port coord) PGUSER=postgres "$PG_BINDIR/psql" -X -q -A -t -d "$DB" \
        -c "DROP TABLE IF EXISTS r_$name" -c "CREATE TABLE r_$name AS SELECT * FROM mtms_train('$name', '$rel')" \
        -c "SELECT max(epochs) || ' ' || sum(samples::numeric * epochs) FROM r_$name" 2>&1)
    t1=$(date +%s.%N)
    local shipped back figures
    shipped=$(printf '%s\n' "$out" | sed -n 's/.*: [0-9.]* s, \([0-9.]*\) MB shipped to the nodes.*/\1/p' | paste -sd+ | bc)
    back=$(printf '%s\n' "$out" | sed -n 's/.*MB shipped to the nodes[^,]*, \([0-9.]*\) MB back.*/\1/p' | paste -sd+ | bc)
    figures=$(printf '%s\n' "$out" | grep -v '^NOTICE\|^WARNING' | tail -n 1)
    local p1 ft wr
    p1=$(printf '%s\n' "$out" | sed -n 's/.*phase 1 on [0-9]* data nodes[^:]*: \([0-9.]*\) s,.*/\1/p')
    ft=$(printf '%s\n' "$out" | sed -n 's/.*fine-tune on [0-9]* data nodes[^:]*: \([0-9.]*\) s,.*/\1/p')
    wr=$(printf '%s\n' "$out" | sed -n 's/.*version [0-9]* written: .*, \([0-9.]*\) s$/\1/p')
    echo "$(echo "$t1 - $t0" | bc) ${shipped:-0} ${back:-0} $figures ${p1:--} ${ft:--} ${wr:--}"
}

declare -A best
for rep in $(seq 1 "$REPS"); do
    for cfg in local one two; do
        case $cfg in
            local) r=$(run m_local "" s_full) ;;
            one) r=$(run m_one one s_all) ;;
            two) r=$(run m_two two s) ;;
        esac
        log "rep $rep $cfg: $r"
        set -- $r
        if [ -z "${best[$cfg]:-}" ] || [ "$(echo "$1 < ${best[$cfg]%% *}" | bc)" = 1 ]; then
            best[$cfg]=$r
        fi
    done
done

same_one_two=$(same m_one m_two)
same_local=$(same m_local m_one)
read -r t_local _ _ ep_local re_local _ _ wr_local <<<"${best[local]}"
read -r t_one out_one back_one ep_one re_one p1_one ft_one wr_one <<<"${best[one]}"
read -r t_two out_two back_two ep_two re_two p1_two ft_two wr_two <<<"${best[two]}"
# the trained model's parameters as stored (vectors, accumulators, weights)
model_mb=$(cluster_sql coord "$DB" "SELECT round((
      (SELECT sum(pg_column_size(vector) + pg_column_size(accum)) FROM mtms_embedding
        WHERE model_id = mtms_model_id('m_two')) +
      (SELECT sum(pg_column_size(weights) + pg_column_size(bias)) FROM mtms_tower
        WHERE model_id = mtms_model_id('m_two'))) / 1048576.0, 1)")
load=$(cut -d' ' -f1-3 /proc/loadavg)

printf '\n%s rows, 20 scenes of equal traffic, default options, mtms.train_workers = 0; best of %s; load %s after\n' \
    "$ROWS" "$REPS" "$load"
printf 'PostgreSQL: %s; mtms %s\n\n' "$(cluster_sql coord "$DB" "SELECT split_part(version(), ' on ', 1)")" \
    "$(git rev-parse --short HEAD 2>/dev/null)"
printf 'load before: %s\n' "$LOAD_BEFORE"
printf '%-23s | %7s | %9s | %9s | %9s | %7s | %11s | %7s | %6s | %12s\n' setup seconds "vs 1 node" \
    "phase 1 s" "finetune s" "write s" "MB to nodes" "MB back" epochs "MB per epoch"
printf '%-23s-+-%7s-+-%9s-+-%9s-+-%9s-+-%7s-+-%11s-+-%7s-+-%6s-+-%12s\n' "" "" "" "" "" "" "" "" "" "" | tr ' ' '-'
printf '%-23s | %7.2f | %9s | %9s | %9s | %7s | %11s | %7s | %6s | %12s\n' "one server (no cluster)" "$t_local" \
    "$(echo "scale=2; $t_one / $t_local" | bc | sed 's/^\./0./')x" - - "$wr_local" - - "$ep_local" -
for cfg in one two; do
    eval "t=\$t_$cfg o=\$out_$cfg b=\$back_$cfg e=\$ep_$cfg p=\$p1_$cfg f=\$ft_$cfg w=\$wr_$cfg"
    printf '%-23s | %7.2f | %9s | %9s | %9s | %7s | %11.1f | %7.1f | %6s | %12.2f\n' \
        "cluster $cfg ($([ $cfg = one ] && echo 1 || echo 2) node$([ $cfg = two ] && echo s))" \
        "$t" "$(echo "scale=2; $t_one / $t" | bc | sed 's/^\./0./')x" "$p" "$f" "$w" "$o" "$b" "$e" \
        "$(echo "scale=3; ($o + $b) / $e" | bc)"
done
printf '\ntrained model, stored parameters: %s MB (phase 1 ships the start model, the fine-tune the model with its new embeddings; back come the trained units: embeddings with their Adagrad accumulators, towers without Adam moments; bytea travels as hex text, twice these bytes on the wire); same training (every figure of the result rows) 1 node / 2 nodes: %s, cluster / one server: %s\n' \
    "$model_mb" "$same_one_two" "$same_local"
printf 'per-row cost on one node: %.2f us per training row-epoch (%s row-epochs in %.2f s, all stages and overheads)\n' \
    "$(echo "scale=6; $t_one * 1000000 / $re_one" | bc)" "$re_one" "$t_one"
