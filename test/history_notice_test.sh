#!/usr/bin/env bash
# test/history_notice_test.sh: the training history says what the NOTICEs
# of the training said (TAP; run by test/in-cluster.sh through prove).
#
# mtms_train runs in psql; its NOTICE lines are parsed and compared with
# mtms_training_info of the version it wrote:
#
#  - a unit job's NOTICE ("mtms_train embedding search/ctr: ... best at
#    validation K of N: valid loss L, valid AUC A, ...") against the unit's
#    kept row (checkpoint K, its valid loss and AUC printed the same way)
#    and its last checkpoint (N): a pair's row, a scene unit's 'ctcvr' row
#    (the figure its NOTICE reports), for a fresh training in the leader
#    and for a warm-started one with two parallel workers (whose NOTICEs
#    the leader relays);
#  - without kept rows (mtms.keep_training_rows off), every epoch's NOTICE
#    detail ("search/ctr: train T valid L auc A; ...") against the rows of
#    checkpoint = that epoch.
#
# The figures of the history are formatted with Perl's sprintf, which is
# C's: the same rounding as the NOTICE's.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/tap.sh
. test/tap.sh

DB=mtms_history_notice
cleanup() { "$PG_BINDIR/dropdb" --if-exists "$DB" 2>/dev/null; }
trap cleanup EXIT
[ -z "${KEEP:-}" ] || trap - EXIT
cleanup

plan 7

"$PG_BINDIR/createdb" "$DB"
q "$DB" "CREATE EXTENSION mtms" \
    "CREATE TABLE s AS SELECT * FROM mtms_synthetic_samples(12000, 1)" \
    "SELECT mtms_create_model('hn', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                              4, '{8}', '{\"max_epochs\": 2, \"batch_size\": 64}')" \
    "SELECT mtms_create_model('hp', '{search,feeds,video}', '{user,ad,advertiser,hour,device,tag}',
                              4, '{8}', '{\"max_epochs\": 2, \"batch_size\": 64}')" >/dev/null

# train MODEL SETTINGS...: the training's messages (stderr), NOTICEs and DETAILs
train() {
    local model=$1
    shift
    "$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "${@/#/-c}" \
        -c "SELECT count(*) FROM mtms_train('$model', 's')" 2>&1 >/dev/null
}

# The NOTICEs as normalized lines:
#   U stage scene task kept_checkpoint checkpoints valid_loss valid_auc
#   E stage epoch scene task train_loss valid_loss valid_auc
parse_notices() {
    perl -ne '
        sub unit { my ($u) = @_; return $u =~ m{^(.*)/(ctr|cvr)$} ? "$1 $2" : "$u ctcvr" }
        sub num { my ($x) = @_; return $x =~ /nan/i ? "nan" : $x }
        if (/^NOTICE:  mtms_train (\w+) (\S+): .* best at validation (\d+) of (\d+): valid loss (\S+), valid AUC (\S+),/) {
            print "U $1 ", unit($2), " $3 $4 ", num($5), " ", num($6), "\n";
        } elsif (/^NOTICE:  mtms_train (\w+) epoch (\d+):/) {
            ($stage, $epoch) = ($1, $2);
        } elsif (defined $stage && /^DETAIL:  (.*)$/) {
            for my $u (split /; /, $1) {
                $u =~ /^(\S+): train (\S+) valid (\S+) auc (\S+)$/ or next;
                print "E $stage $epoch ", unit($1), " ", num($2), " ", num($3), " ", num($4), "\n";
            }
            undef $stage;
        }' | sort
}

# The same lines from mtms_training_info (the figures the NOTICEs report:
# a pair's task, a scene unit's ctcvr).
history_lines() {
    q "$DB" "SELECT 'U', stage, scene, task,
                    (max(checkpoint) FILTER (WHERE kept))::text, max(checkpoint)::text,
                    (max(valid_loss) FILTER (WHERE kept))::text, (max(valid_auc) FILTER (WHERE kept))::text
               FROM mtms_training_info('$1')
              WHERE stage = 'embedding' OR task = 'ctcvr'
              GROUP BY stage, scene, task
             UNION ALL
             SELECT 'E', stage, epoch::text, scene, task, train_loss::text, valid_loss::text, valid_auc::text
               FROM mtms_training_info('$1')
              WHERE checkpoint > 0 AND (stage = 'embedding' OR task = 'ctcvr')" |
        perl -F'\|' -lane '
            sub f { my ($x, $d) = @_; return $x eq "" ? "nan" : sprintf("%.${d}f", $x) }
            if ($F[0] eq "U") {
                print join " ", @F[0..5], f($F[6], 5), f($F[7], 4);
            } else {
                print join " ", @F[0..4], f($F[5], 5), f($F[6], 5), f($F[7], 4);
            }' | sort
}

# compare MODEL WHAT NOTICES DESC
compare() {
    local model=$1 what=$2 notices=$3 desc=$4 want got
    local kind=U
    [ "$what" = units ] || kind=E
    got=$(history_lines "$model" "$what" | grep "^$kind ")
    want=$(printf '%s\n' "$notices" | parse_notices | grep "^$kind ")
    is "$got" "$want" "$desc"
}

log=$(train hn "SET mtms.train_workers = 0")
ok $? "a fresh training in the leader"
n=$(printf '%s\n' "$log" | parse_notices | grep -c '^U')
is "$n" 12 "its NOTICEs name 12 units (6 pairs, 3 scenes twice)"
compare hn units "$log" "fresh: every unit's kept checkpoint and figures are its NOTICE's"

log=$(train hn "SET max_parallel_maintenance_workers = 2" "SET mtms.train_workers = 2")
ok $([ $? -eq 0 ] && printf '%s\n' "$log" | grep -q 'mtms_train embedding: .* 2 workers'; echo $?) \
    "a warm-started training with 2 workers"
compare hn units "$log" "warm start, workers: every unit's kept checkpoint and figures are its NOTICE's"

log=$(train hp "SET mtms.keep_training_rows = off")
ok $? "a training without kept rows (pass by pass)"
compare hp epochs "$log" "without kept rows: every epoch's figures per unit are its NOTICE detail's"

done_testing
