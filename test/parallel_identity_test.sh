#!/usr/bin/env bash
# test/parallel_identity_test.sh: training with 0, 1, 2 and 3 parallel
# workers (mtms.train_workers) gives the same parameters, bit for bit, on
# synthetic data and on the real KuaiRand logs (TAP; run by
# test/in-cluster.sh through prove).
#
# Per data set, four models with the same options are trained, one per
# worker count; the md5 over their ordered embedding rows (vector and
# accumulator) and tower rows (weights and bias) must be equal, and so
# must the validation figures mtms_train returns and the training history
# (mtms_training_info, but for its seconds).  The stage NOTICEs must
# say that the workers asked for did train (a run that quietly fell back
# to the leader alone would prove nothing), and that the CTCVR stage ran
# as one chain with the embedding stage (a scene's CTCVR unit starting as
# soon as its two embedding units are back).  KuaiRand (all 15 tabs as
# scenes, days 1-11) is read from ../shared/data/kuairand
# (bench/kuairand_load.sh); the test skips it when the data is not there.
#
# Last, the order a scan reads a large table in does not change the model:
# a scan of a table over a quarter of shared_buffers starts where the last
# scan of it left off (synchronize_seqscans), so a training after a
# partial scan must still read the rows from the start.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

DB=mtms_parallel_identity
cleanup() { "$PG_BINDIR/dropdb" --if-exists "$DB" 2>/dev/null; }
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
cleanup

plan 12

"$PG_BINDIR/createdb" "$DB"
q "$DB" "CREATE EXTENSION mtms" \
    "CREATE TABLE syn AS SELECT * FROM mtms_synthetic_samples(60000, 5)" >/dev/null

params() {
    q "$DB" "SELECT md5(string_agg(r, ',' ORDER BY r)) FROM (
              SELECT format('e %s %s %s %s %s', scene, task, feature, vector, accum) AS r
                FROM mtms_embedding WHERE model_id = mtms_model_id('$1')
              UNION ALL
              SELECT format('t %s %s %s %s %s %s', phase, scene, task, layer, weights, bias)
                FROM mtms_tower WHERE model_id = mtms_model_id('$1')) s"
}

# the training history of the active version, but for the seconds
history() {
    q "$DB" "SELECT count(*) || ' ' || md5(string_agg(format('%s %s %s %s %s %s %s %s %s %s',
                stage, scene, task, epoch, checkpoint, train_loss, valid_loss, valid_auc, rows, kept),
                ',' ORDER BY ord))
              FROM mtms_training_info('$1') WITH ORDINALITY
                   AS h(version, stage, scene, task, epoch, checkpoint, train_loss, valid_loss,
                        valid_auc, rows, seconds, kept, ord)"
}

# train DATASET SAMPLES SCENES FIELDS: four models, workers 0..3; checks
train_four() {
    local set=$1 samples=$2 scenes=$3 fields=$4 w log figures params0 figures0 history0 ok_workers=0
    for w in 0 1 2 3; do
        q "$DB" "SELECT mtms_create_model('${set}_$w', '$scenes', '$fields')" >/dev/null
        # the NOTICEs go to stderr: keep them
        log=$("$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" \
            -c "SET max_parallel_maintenance_workers = 3" -c "SET mtms.train_workers = $w" \
            -c "SELECT string_agg(format('%s %s %s %s %s %s', phase, scene, task, epochs, valid_loss, valid_auc),
                                  ';' ORDER BY phase, scene, task)
                  FROM mtms_train('${set}_$w', '$samples')" 2>&1)
        figures=$(printf '%s\n' "$log" | grep -v '^NOTICE' | tail -n 1)
        # "mtms_train finetune: 15 units in 0.52 s, 2 workers, ..."; with
        # workers, the CTCVR stage's units are chained to the embedding's
        if [ "$w" -gt 0 ] &&
           printf '%s\n' "$log" | grep -q "mtms_train embedding: .* units in .*, $w workers" &&
           printf '%s\n' "$log" |
               grep -q "mtms_train ctcvr: .*, $w workers, .*; its units started while the embedding stage ran"; then
            ok_workers=$((ok_workers + 1))
        fi
        if [ "$w" -eq 0 ]; then
            params0=$(params "${set}_0")
            figures0=$figures
            history0=$(history "${set}_0")
        elif [ "$w" -eq 3 ]; then
            is "$(params "${set}_1"),$(params "${set}_2"),$(params "${set}_3")" \
               "$params0,$params0,$params0" "$set: the same parameters with 0, 1, 2 and 3 workers"
            is "$figures" "$figures0" "$set: the same validation figures with 3 workers as with 0"
            is "$(history "${set}_1"),$(history "${set}_2"),$(history "${set}_3")" \
               "$history0,$history0,$history0" \
               "$set: the same training history with 0, 1, 2 and 3 workers (but seconds)"
        fi
    done
    is "$ok_workers" 3 "$set: the workers asked for trained (1, 2 and 3), the CTCVR stage chained to the embedding stage"
}

train_four syn syn '{search,feeds,video}' '{user,ad,advertiser,hour,device,tag}'
isnt "$(params syn_0)" "" "syn: the model has parameters"
is "$(q "$DB" "SELECT count(DISTINCT md5(weights::text)) FROM mtms_tower
               WHERE model_id = mtms_model_id('syn_0') AND phase = 'finetune'")" \
   "$(q "$DB" "SELECT count(*) FROM mtms_tower
               WHERE model_id = mtms_model_id('syn_0') AND phase = 'finetune'")" \
   "syn: every fine-tune layer has weights of its own (the units trained apart)"

if bash bench/kuairand_load.sh "$DB" >/dev/null 2>&1; then
    scenes=$(q "$DB" "SELECT '{' || string_agg(scene, ',' ORDER BY scene) || '}'
                        FROM (SELECT DISTINCT scene FROM kr_train_tabs) s")
    train_four kr kr_train_tabs "$scenes" \
        '{user,video,hour,active,lowact,streamer,vauthor,follow,fans,friend,register,author,vtype,upload,music,dur,uf,tag}'
    is "$(q "$DB" "SELECT count(DISTINCT scene) FROM mtms_embedding WHERE model_id = mtms_model_id('kr_0')")" \
       15 "kr: all 15 tabs trained"
else
    for i in 1 2 3 4 5; do
        echo "ok $((TAP_N + i)) # SKIP the KuaiRand data is not in ../shared/data/kuairand"
    done
    TAP_N=$((TAP_N + 5))
fi
# a table over a quarter of shared_buffers, a training, a partial scan
# that leaves its place in the table behind, the same training again
q "$DB" "CREATE TABLE big AS SELECT * FROM mtms_synthetic_samples(300000, 9)" >/dev/null
if [ "$(q "$DB" "SELECT pg_relation_size('big') > pg_size_bytes(current_setting('shared_buffers')) / 4")" = t ]; then
    for m in big_a big_b; do
        q "$DB" "SELECT mtms_create_model('$m', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                                          options => '{\"max_epochs\": 1}')" \
                "SET mtms.train_workers = 0" \
                "SELECT count(*) FROM mtms_train('$m', 'big', phases => 'embedding')" >/dev/null
        q "$DB" "SELECT count(*) FROM (SELECT * FROM big LIMIT 150000) s" >/dev/null
    done
    is "$(params big_b)" "$(params big_a)" "the same model after a partial scan of a large table (synchronized scans)"
else
    echo "ok $((TAP_N + 1)) # SKIP shared_buffers is too large for a synchronized scan of the test table"
    TAP_N=$((TAP_N + 1))
fi
done_testing
