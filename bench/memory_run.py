#!/usr/bin/python3
"""bench/memory_run.py: the many-scenes scale run of bench/memory.sh.

A synthetic set of --scenes scenes and --rows rows (mtms_synthetic_samples
with that many scene names, equal traffic) is trained under the default
settings (mtms.max_memory, options) with the leader alone and with the
default parallel workers (mtms.train_workers = -1, i.e.
max_parallel_maintenance_workers).  Per run: wall time, each stage's
seconds, peak memory of all training processes together (private memory
of each, plus the shared segment once; bench/speed_run.py's poller) against
the raw parameters plus optimizer state of the trained model (embedding
vectors and Adagrad accumulators, tower weights and both Adam moments),
and an md5 over the parameters (the two runs must give the same model).
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True   # no __pycache__ in the repository
import parallel_run as P  # noqa: E402
import speed_run as S  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description='mtms_train memory and time on many scenes')
    ap.add_argument('--rows', type=int, default=5000000)
    ap.add_argument('--scenes', type=int, default=100)
    ap.add_argument('--json', default='/tmp/mtms_memory.json')
    a = ap.parse_args()
    scenes = ['s%03d' % i for i in range(1, a.scenes + 1)]
    S.log('%d rows of %d scenes' % (a.rows, a.scenes))
    P.sql('DROP TABLE IF EXISTS mb_samples')
    P.sql('CREATE TABLE mb_samples AS SELECT * FROM mtms_synthetic_samples(%s, 1, %s)',
          (a.rows, json.dumps({'scenes': scenes})))
    workers_default = P.sql("SELECT current_setting('max_parallel_maintenance_workers')::int")[0][0]
    R = {'env': P.env(), 'rows': a.rows, 'scenes': a.scenes, 'runs': {}}
    for w in (0, -1):
        S.log('mtms.train_workers = %d' % w)
        r = S.mtms_train('mb_%d' % (w + 1), 'mb_samples', w, scenes=scenes)
        r['md5'] = P.params_md5('mb_%d' % (w + 1))
        r['stage_lines'] = [n.strip() for n in r['notices']
                            if 'units in' in n or 'read:' in n or 'written' in n]
        del r['notices']
        R['runs'][str(w)] = r
        S.log('  %.1f s, peak %.0f MB over %d processes, parameters + optimizer %.0f MB'
              % (r['wall'], r['peak_rss_anon_mb'], r['processes'], r['param_opt_mb']))
    with open(a.json, 'w') as f:
        json.dump(R, f, indent=1, default=str)
    e = R['env']
    print('%s; %s; %s' % (e['cpu'], e['pg'], e['blas']))
    rows = []
    for w, r in R['runs'].items():
        rows.append(['0 (leader alone)' if w == '0' else '-1 (%d workers)' % workers_default,
                     '%.1f' % r['wall'], r['processes'], '%.0f' % r['param_opt_mb'],
                     '%.0f' % r['peak_rss_anon_mb'], '%.2fx' % (r['peak_rss_anon_mb'] / r['param_opt_mb']),
                     '%.0f' % r['vmhwm_mb']])
    print(S.table(['mtms.train_workers', 'wall s', 'processes', 'params+opt MB', 'peak MB (all)',
                   'peak / params+opt', 'leader VmHWM MB'], rows))
    r0, r1 = R['runs']['0'], R['runs']['-1']
    print('speed-up %.2fx; same model: %s; embedding rows %d, tower parameters %d'
          % (r0['wall'] / r1['wall'], 'yes' if r0['md5'] == r1['md5'] else 'NO',
             r0['embedding_rows'], r0['tower_params']))
    for w, r in R['runs'].items():
        print('train_workers %s:' % w)
        for line in r['stage_lines']:
            print('  ' + line)


if __name__ == '__main__':
    main()
