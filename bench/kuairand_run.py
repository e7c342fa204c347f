#!/usr/bin/python3
"""bench/kuairand_run.py: mtms against PyTorch on real logs, KuaiRand-Pure
(run it with bench/kuairand.sh).  Loads the CSV files of the data directory
into kr_log, kr_user and kr_video (at run time; the data is never copied
into the repository), builds the samples (bench/kuairand_setup.sql: the
protocol), then trains on days 1-11 and tests on days 12-14:

  separate   mtms, phase 1 without the CTCVR stage, on every training row
             (finetune_fraction 0: the README's separate baseline)
  (--seeds 42,43,44: each side once per seed, the AUC table gives the mean
  and the spread; the speed table is the first seed's)
  mtms       mtms, both phases
  refit      mtms, both phases with the refit option (README: How training
             works)
  PyTorch    bench/pytorch_mtms.py, both phases (and its 'separate')

and prints per (scene, task) test AUC and the per-stage speed ratio
(1 thread: mtms max_parallel_workers_per_gather = 0, torch 1 thread).
"""
import argparse
import glob
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the repository
import speed_run as S  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCENES = ['tab1', 'tab0', 'tab4', 'tab6', 'tab2', 'other']
FIELDS = ['user', 'video', 'hour', 'active', 'lowact', 'streamer', 'vauthor', 'follow', 'fans', 'friend',
          'register', 'author', 'vtype', 'upload', 'music', 'dur', 'uf', 'tag']
TASKS = ['ctr', 'cvr', 'ctcvr']

LOG_COLS = ['user_id', 'video_id', 'date', 'hourmin', 'time_ms', 'is_click', 'is_like', 'is_follow',
            'is_comment', 'is_forward', 'is_hate', 'long_view', 'play_time_ms', 'duration_ms',
            'profile_stay_time', 'comment_stay_time', 'is_profile_enter', 'is_rand', 'tab']


def header(path):
    with open(path, encoding='utf-8') as f:
        return f.readline().strip().split(',')


def load(datadir):
    c = S.connect()
    cur = c.cursor()
    logs = sorted(glob.glob(os.path.join(datadir, 'val_*.csv')) + glob.glob(os.path.join(datadir, 'test_*.csv')))
    if not logs:
        raise SystemExit('no KuaiRand log files in %s' % datadir)
    if header(logs[0]) != LOG_COLS:
        raise SystemExit('unexpected columns in %s' % logs[0])
    cur.execute('DROP TABLE IF EXISTS kr_log, kr_user, kr_video CASCADE')
    cur.execute('CREATE TABLE kr_log (%s)' % ', '.join('%s bigint' % x for x in LOG_COLS))
    ucols = header(os.path.join(datadir, 'user_features_pure.csv'))
    vcols = header(os.path.join(datadir, 'video_features_basic_pure.csv'))
    cur.execute('CREATE TABLE kr_user (%s)' % ', '.join('%s text' % x for x in ucols))
    cur.execute('CREATE TABLE kr_video (%s)' % ', '.join('%s text' % x for x in vcols))
    for path in logs:
        with open(path, encoding='utf-8') as f:
            cur.copy_expert('COPY kr_log FROM STDIN WITH (FORMAT csv, HEADER)', f)
    with open(os.path.join(datadir, 'user_features_pure.csv'), encoding='utf-8') as f:
        cur.copy_expert('COPY kr_user FROM STDIN WITH (FORMAT csv, HEADER)', f)
    with open(os.path.join(datadir, 'video_features_basic_pure.csv'), encoding='utf-8') as f:
        cur.copy_expert('COPY kr_video FROM STDIN WITH (FORMAT csv, HEADER)', f)
    cur.execute('SELECT count(*) FROM kr_log')
    n = cur.fetchone()[0]
    c.close()
    return n


def main():
    ap = argparse.ArgumentParser(description='mtms against PyTorch on KuaiRand-Pure')
    ap.add_argument('--data', default=os.path.join(HERE, '..', '..', 'shared', 'data', 'kuairand'))
    ap.add_argument('--workdir', default='/tmp/mtms_kuairand')
    ap.add_argument('--seeds', default='42',
                    help='comma-separated seeds; with several, the AUC table gives the mean and spread')
    a = ap.parse_args()
    S.WORK = a.workdir
    os.makedirs(a.workdir, exist_ok=True)
    S.LOG = open(os.path.join(a.workdir, 'kuairand.log'), 'w')
    R = {'env': S.env_info()}
    S.log('loading %s' % os.path.abspath(a.data))
    R['log_rows'] = load(a.data)
    out = subprocess.run(['psql', '-X', '-q', '-f', os.path.join(HERE, 'kuairand_setup.sql')], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    R['scenes_table'] = out
    R['seeds'] = [int(x) for x in a.seeds.split(',')]
    S.log('exporting')
    samples = os.path.join(a.workdir, 'kuairand.tsv')
    R['export_seconds'] = S.export_samples(samples, 'kr_samples')
    common = ['train', '--data', samples, '--scenes', ','.join(SCENES), '--fields', ','.join(FIELDS),
              '--test-slot', '12']
    R['runs'] = []
    for seed in R['seeds']:
        run = {'seed': seed}
        opts = '{"seed": %d}' % seed
        S.log('seed %d: mtms separate (phase 1 on every training row, no CTCVR)' % seed)
        run['separate'] = S.mtms_train('kr_separate', 'kr_train', 0,
                                       '{"ctcvr": false, "finetune_fraction": 0, "seed": %d}' % seed,
                                       'embedding', scenes=SCENES, fields=FIELDS)
        run['auc_separate'] = S.mtms_evaluate('kr_separate', 'kr_test')
        S.log('seed %d: mtms (both phases)' % seed)
        run['mtms'] = S.mtms_train('kr_mtms', 'kr_train', 0, opts, scenes=SCENES, fields=FIELDS)
        run['auc_mtms'] = S.mtms_evaluate('kr_mtms', 'kr_test')
        S.log('seed %d: mtms with the refit option' % seed)
        run['refit'] = S.mtms_train('kr_refit', 'kr_train', 0, '{"seed": %d, "refit": true}' % seed,
                                    scenes=SCENES, fields=FIELDS)
        run['auc_refit'] = S.mtms_evaluate('kr_refit', 'kr_test')
        seed_arg = ['--seed', str(seed)]
        S.log('seed %d: PyTorch (both phases)' % seed)
        run['torch'] = S.run_torch(common + seed_arg, 1, 'torch_kuairand_%d.log' % seed)
        S.log('seed %d: PyTorch separate' % seed)
        run['torch_separate'] = S.run_torch(common + seed_arg + ['--variant', 'separate'], 1,
                                            'torch_kuairand_separate_%d.log' % seed)
        R['runs'].append(run)
    # the speed tables: the first seed's runs
    for k in ('separate', 'auc_separate', 'mtms', 'auc_mtms', 'refit', 'auc_refit', 'torch',
              'torch_separate'):
        R[k] = R['runs'][0][k]
    with open(os.path.join(a.workdir, 'kuairand_results.json'), 'w') as f:
        json.dump(R, f, indent=1)
    print(report(R))


def report(R):
    out = []
    add = out.append
    add('Machine: %s; %s; torch %s; mtms %s' % (R['env']['cpu'], R['env']['pg'], R['env']['torch'],
                                                R['env']['commit']))
    if 'blas' in R['env']:
        out.extend(S.blas_report(R['env']['blas']))
    add('KuaiRand-Pure: %s log rows; scenes, train days 1-11 and test days 12-14:' % S.fmt(R['log_rows']))
    add(R['scenes_table'].rstrip())
    add('')
    runs = R.get('runs') or [R]
    seeds = R.get('seeds', [42])
    add('Test AUC (days 12-14); se = standard error of the mtms AUC; seeds %s%s'
        % (', '.join(map(str, seeds)), ': mean [min-max]' if len(runs) > 1 else ''))

    def cell(key, sc, t):
        vals = []
        for r in runs:
            if key not in r:
                continue
            d = r[key]['test_auc'] if key.startswith('torch') else r[key]
            v = d.get(sc, {}).get(t)
            if v is not None:
                vals.append(v)
        if not vals:
            return None, ''
        mean = sum(vals) / len(vals)
        if len(vals) == 1:
            return mean, '%.4f' % mean
        return mean, '%.4f [%.4f-%.4f]' % (mean, min(vals), max(vals))

    rows = []
    for sc in SCENES:
        for t in TASKS:
            m = R['auc_mtms'].get(sc, {})
            sep, sep_s = cell('auc_separate', sc, t)
            a, a_s = cell('auc_mtms', sc, t)
            rf, rf_s = cell('auc_refit', sc, t)
            tsep, tsep_s = cell('torch_separate', sc, t)
            b, b_s = cell('torch', sc, t)
            rows.append([sc, t, m.get('n_' + t), m.get('pos_' + t), sep_s, a_s,
                         a - sep if a is not None and sep is not None else None, rf_s,
                         rf - sep if rf is not None and sep is not None else None, tsep_s, b_s,
                         a - b if a is not None and b is not None else None,
                         S.auc_se(a, m.get('n_' + t), m.get('pos_' + t))])
    add(S.table(['scene', 'task', 'n', 'positives', 'mtms separate', 'mtms', 'mtms-separate',
                 'mtms refit', 'refit-separate', 'PyTorch separate', 'PyTorch', 'mtms-PyTorch', 'se'], rows))
    add('')
    add('Training speed, 1 thread (samples/s = sample-epochs / stage seconds)')
    rows = []
    for st in S.STAGES:
        ms = R['mtms']['stages'].get(st)
        ts = R['torch']['stages'].get(st)
        if ms and ts:
            rows.append([st, ms['samples_per_s'], ts['samples_per_s'], ms['samples_per_s'] / ts['samples_per_s'],
                         ms['epochs'], max(ts['epochs']), ms['seconds'], ts['seconds'],
                         (ms['sample_epochs'] / ms['cpu_seconds']) / (ts['sample_epochs'] / ts['cpu_seconds'])
                         if ms.get('cpu_seconds') else None])
    add(S.table(['stage', 'mtms samples/s', 'PyTorch samples/s', 'mtms/PyTorch', 'mtms epochs',
                 'PyTorch epochs', 'mtms s', 'PyTorch s', 'ratio by CPU'], rows))
    t = R['torch']
    tot = R['export_seconds'] + t['prepare_seconds'] + t['train_seconds']
    add('Wall time to the converged model: mtms_train %.1f s (commit %.1f s); PyTorch %.1f s '
        '(export %.1f, read+prepare %.1f, train %.1f); PyTorch/mtms %.2f'
        % (R['mtms']['wall'], R['mtms']['commit_seconds'], tot, R['export_seconds'], t['prepare_seconds'],
           t['train_seconds'], tot / R['mtms']['wall']))
    add('mtms model: %s embedding rows; separate: %.1f s%s'
        % (S.fmt(R['mtms']['embedding_rows']), R['separate']['wall'],
           '; with the refit option: %.1f s' % R['refit']['wall'] if 'refit' in R else ''))
    return '\n'.join(out)


if __name__ == '__main__':
    main()
