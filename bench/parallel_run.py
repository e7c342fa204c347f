#!/usr/bin/python3
"""bench/parallel_run.py: mtms_train with parallel workers (mtms.train_workers)
against the leader alone, on three data sets, side by side in one run.  Run
it with bench/parallel.sh, which installs what it needs and picks the
database; this script connects with the libpq environment.

Data sets (train / test):
  synthetic3   mtms_synthetic_samples(rows, 1, 5 days): days 1-4 / day 5;
               search, feeds, video at 60/36/4% of the traffic
  synthetic20  the same with 20 scenes of equal traffic
  kuairand15   KuaiRand-Pure with all 15 tabs as scenes (kr_train_tabs:
               days 1-11 / kr_test_tabs: days 12-14), loaded by
               bench/kuairand_load.sh; skipped when the data is not there

Per data set and worker count: wall time of mtms_train (best of --reps,
with nothing else running, the worker counts taking turns), peak memory of the training processes together
(one more training, sampled by a poller), an md5 over the trained
parameters (the same for every worker count, or the run says so), test AUC.
From the serial run's NOTICEs (each unit's seconds, each stage's seconds) it
projects the wall time on P cores: per stage, the units scheduled largest
first onto P processes (as mtms_train hands them out; the embedding and
CTCVR stages as one chain, a scene's CTCVR unit after its two embedding
units) plus the stage's serial part, plus the training's serial part
(reading the samples, writing the version).  The projection for P = 2 is checked against the measurement.
It also gives the bound this machine sets for P = 2: the serial parts as they
are, the units' work at the measured ceiling of two processes (two serial
trainings at once), and no less than the longest chain of units.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the repository
import speed_run as S  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT_RE = re.compile(r'mtms_train (\w+) (\S+): ([0-9.]+) passes over (\d+) rows, .*, ([0-9.]+) s$')
STAGE_RE = re.compile(r'mtms_train (\w+): (\d+) units in ([0-9.]+) s, (\d+) workers')
KR_FIELDS = ['user', 'video', 'hour', 'active', 'lowact', 'streamer', 'vauthor', 'follow', 'fans', 'friend',
             'register', 'author', 'vtype', 'upload', 'music', 'dur', 'uf', 'tag']
SYN_FIELDS = ['user', 'ad', 'advertiser', 'hour', 'device', 'tag']


def sql(q, args=None):
    c = S.connect()
    cur = c.cursor()
    cur.execute(q, args)
    out = cur.fetchall() if cur.description else None
    c.close()
    return out


def params_md5(model):
    """md5 over the ordered parameter rows (per row first: a model's rows as
    one text would pass 1 GB)."""
    return sql("""SELECT md5(string_agg(h, ',' ORDER BY k)) FROM (
                    SELECT format('e %%s %%s %%s', scene, task, feature) AS k,
                           md5(format('%%s %%s', vector, accum)) AS h
                      FROM mtms_embedding WHERE model_id = mtms_model_id(%s)
                    UNION ALL
                    SELECT format('t %%s %%s %%s %%s', phase, scene, task, layer),
                           md5(format('%%s %%s', weights, bias))
                      FROM mtms_tower WHERE model_id = mtms_model_id(%s)) s""", (model, model))[0][0]


def env():
    r = sql('SELECT version, kernels, gflops FROM mtms_blas_info()')[0]
    return {'cpu': S.cpu_model(), 'pg': sql('SELECT version()')[0][0].split(' on ')[0],
            'blas': 'OpenBLAS %s, %s kernels, %.0f GFLOP/s' % r,
            'load_before': open('/proc/loadavg').read().split()[:3]}


def setup(rows, datasets, kuairand):
    out = {}
    if 'synthetic3' in datasets:
        S.log('synthetic3: %d rows' % rows)
        sql('DROP TABLE IF EXISTS pb3 CASCADE')
        sql("CREATE TABLE pb3 AS SELECT * FROM mtms_synthetic_samples(%s, 1, '{\"slots\": 5}')", (rows,))
        quiesce(['pb3'])
        sql('CREATE VIEW pb3_train AS SELECT * FROM pb3 WHERE slot < 5')
        sql('CREATE VIEW pb3_test AS SELECT * FROM pb3 WHERE slot = 5')
        out['synthetic3'] = ('pb3_train', 'pb3_test', ['search', 'feeds', 'video'], SYN_FIELDS)
    if 'synthetic20' in datasets:
        S.log('synthetic20: %d rows' % rows)
        scenes = ['s%02d' % i for i in range(1, 21)]
        sql('DROP TABLE IF EXISTS pb20 CASCADE')
        sql('CREATE TABLE pb20 AS SELECT * FROM mtms_synthetic_samples(%s, 1, %s)',
            (rows, json.dumps({'slots': 5, 'scenes': scenes})))
        quiesce(['pb20'])
        sql('CREATE VIEW pb20_train AS SELECT * FROM pb20 WHERE slot < 5')
        sql('CREATE VIEW pb20_test AS SELECT * FROM pb20 WHERE slot = 5')
        out['synthetic20'] = ('pb20_train', 'pb20_test', scenes, SYN_FIELDS)
    if 'kuairand15' in datasets:
        S.log('kuairand15: loading %s' % kuairand)
        db = S.one(S.connect().cursor(), 'SELECT current_database()')[0]
        r = subprocess.run(['bash', os.path.join(HERE, 'kuairand_load.sh'), db, kuairand],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode == 0:
            scenes = [x[0] for x in sql('SELECT DISTINCT scene FROM kr_train_tabs ORDER BY 1')]
            out['kuairand15'] = ('kr_train_tabs', 'kr_test_tabs', scenes, KR_FIELDS)
        else:
            S.log('  skipped: %s' % r.stderr.strip())
    return out


def units_of(notices):
    """Per stage: [(unit, seconds, rows)] and the stage's seconds."""
    units, stages = {}, {}
    for n in notices:
        n = n.strip()
        m = UNIT_RE.search(n)
        if m:
            units.setdefault(m.group(1), []).append((m.group(2), float(m.group(5)), int(m.group(4))))
            continue
        m = STAGE_RE.search(n)
        if m:
            stages[m.group(1)] = {'units': int(m.group(2)), 'seconds': float(m.group(3)),
                                  'workers': int(m.group(4))}
    return units, stages


def makespan(units, procs):
    """Units by rows, largest first, each to the process free first."""
    free = [0.0] * procs
    for _, secs, _ in sorted(units, key=lambda u: -u[2]):
        i = free.index(min(free))
        free[i] += secs
    return max(free)


def chain_makespan(emb, ctcvr, procs):
    """The embedding and CTCVR stages as one chain (as mtms_train runs them with
    workers): a scene's CTCVR unit starts once its two embedding units are done;
    jobs by the rows of the longest chain they start (train_parallel.c's
    order_jobs), each to the process free first."""
    jobs = {}
    for name, secs, rows in emb:
        jobs[('e', name)] = {'secs': secs, 'rows': rows, 'rank': rows, 'deps': []}
    for name, secs, rows in ctcvr:
        deps = [k for k in jobs if k[0] == 'e' and k[1].split('/')[0] == name]
        jobs[('c', name)] = {'secs': secs, 'rows': rows, 'rank': rows, 'deps': deps}
        longest = max([jobs[d]['rows'] for d in deps] or [0])
        for d in deps:
            jobs[d]['rank'] = max(jobs[d]['rank'], longest + rows)
    done, free, left = {}, [0.0] * procs, dict(jobs)
    while left:
        i = free.index(min(free))
        t = free[i]
        ready = [k for k, j in left.items() if all(d in done and done[d] <= t for d in j['deps'])]
        if not ready:
            free[i] = min(done[d] for k, j in left.items() for d in j['deps']
                          if d in done and done[d] > t)
            continue
        k = max(ready, key=lambda k: (left[k]['rank'], k[0] == 'e'))
        done[k] = free[i] = t + left.pop(k)['secs']
    return max(done.values()) if done else 0.0


def serial_parts(run):
    """A run's units per stage, its stages, and its serial part: the wall time
    outside the stages (reading the samples, writing the version) plus each
    stage's time outside its units."""
    units, stages = units_of(run['notices'])
    serial = run['wall'] - sum(s['seconds'] for s in stages.values())
    for name, st in stages.items():
        serial += max(st['seconds'] - sum(u[1] for u in units.get(name, [])), 0)
    return units, stages, serial


def units_makespan(units, stages, procs):
    """The stages' units on procs processes, one stage after the other (the
    embedding and CTCVR stages as one chain)."""
    t = 0.0
    for name in stages:
        if name == 'embedding' and 'ctcvr' in stages:
            t += chain_makespan(units.get('embedding', []), units.get('ctcvr', []), procs)
        elif name != 'ctcvr' or 'embedding' not in stages:
            t += makespan(units.get(name, []), procs)
    return t


def project(run, procs):
    units, stages, serial = serial_parts(run)
    return serial + units_makespan(units, stages, procs)


def bound(run, ceil):
    """The speed-up two processes could give at best on this machine: the
    serial run's serial parts stay as they are; its units' work runs at the
    machine's ceiling for two processes (two trainings at once), and no
    faster than its longest chain of units (their makespan on 64 processes)."""
    units, stages, serial = serial_parts(run)
    work = sum(u[1] for name in stages for u in units.get(name, []))
    return run['wall'] / (serial + max(work / max(ceil, 1e-9), units_makespan(units, stages, 64)))


def ceiling(rel, scenes, fields):
    """What two processes give on this machine for this very work: two
    serial trainings at once, against one alone (2 x alone / together)."""
    import threading
    quiesce()
    alone = S.mtms_train('pb_ceiling_a', rel, 0, scenes=scenes, fields=fields, poll=False)['wall']
    quiesce()
    out = {}

    def one_of_two(name):
        out[name] = S.mtms_train(name, rel, 0, scenes=scenes, fields=fields, poll=False)['wall']
    ts = [threading.Thread(target=one_of_two, args=(n,)) for n in ('pb_ceiling_a', 'pb_ceiling_b')]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    together = time.time() - t0
    sql("SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name IN ('pb_ceiling_a', 'pb_ceiling_b')")
    return {'alone': alone, 'together': together, 'ceiling': 2 * alone / together}


def quiesce(rels=()):
    """Vacuum what an autovacuum worker would otherwise pick up during the next
    timed training (on two cores it would take one of them): the sample tables
    just created, the catalog rows of the models dropped before."""
    sql('VACUUM (ANALYZE) ' + ', '.join(list(rels) + ['mtms_embedding', 'mtms_tower',
                                                     'mtms_version', 'mtms_model']))


def train(rel, scenes, fields, counts, reps, name):
    """Per worker count: the best wall time of reps trainings with nothing else
    running, the counts taking turns (the VM's speed drifts over minutes: every
    count sees the same drift), then one more with the memory poller for the
    peak.  The poller takes about a tenth of a core: on two cores it would slow
    the workers down, and not the leader alone."""
    best = {}
    for rep in range(reps):
        for w in counts:
            quiesce()
            r = S.mtms_train('pb_%s_%d' % (name, w), rel, w, scenes=scenes, fields=fields, poll=False)
            S.log('  %d workers, run %d: %.2f s' % (w, rep + 1, r['wall']))
            walls = best[w]['walls'] if w in best else []
            if w not in best or r['wall'] < best[w]['wall']:
                best[w] = r
            best[w]['walls'] = walls + [r['wall']]
    for w in counts:
        model = 'pb_%s_%d' % (name, w)
        m = S.mtms_train(model, rel, w, scenes=scenes, fields=fields, poll=True)
        best[w]['peak_rss_anon_mb'] = m['peak_rss_anon_mb']
        best[w]['processes'] = m['processes']
        best[w]['wall_polled'] = m['wall']
        best[w]['md5'] = params_md5(model)
    return best


def mean_auc(ev):
    v = [t[k] for t in ev.values() for k in ('ctr', 'cvr', 'ctcvr') if t.get(k) is not None]
    return sum(v) / len(v) if v else None


def main():
    ap = argparse.ArgumentParser(description='mtms_train: parallel workers against the leader alone')
    ap.add_argument('--rows', type=int, default=800000, help='rows of each synthetic set (4/5 train)')
    ap.add_argument('--reps', type=int, default=4, help='trainings per worker count (best wall time)')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--datasets', default='synthetic3,synthetic20,kuairand15')
    ap.add_argument('--data', default=os.environ.get('MTMS_KUAIRAND',
                                                     os.path.join(HERE, '..', '..', 'shared', 'data', 'kuairand')))
    ap.add_argument('--json', default='/tmp/mtms_parallel.json')
    a = ap.parse_args()
    R = {'env': env(), 'rows': a.rows, 'reps': a.reps, 'sets': {}}
    sets = setup(a.rows, a.datasets.split(','), a.data)
    for name, (train_rel, test_rel, scenes, fields) in sets.items():
        D = R['sets'][name] = {'scenes': len(scenes), 'train_rows': sql('SELECT count(*) FROM ' + train_rel)[0][0]}
        S.log('%s: mtms.train_workers = 0 and %d, taking turns' % (name, a.workers))
        runs = train(train_rel, scenes, fields, (0, a.workers), a.reps, name)
        for w, r in runs.items():
            r['auc'] = S.mtms_evaluate('pb_%s_%d' % (name, w), test_rel)
            D[str(w)] = r
            S.log('  %d workers: best %.2f s, peak %.0f MB over %d processes'
                  % (w, r['wall'], r['peak_rss_anon_mb'], r['processes']))
        S.log('%s: two serial trainings at once (the machine\'s ceiling for this work)' % name)
        D['ceiling'] = ceiling(train_rel, scenes, fields)
        S.log('  alone %.2f s, two at once %.2f s: %.2fx' % (D['ceiling']['alone'], D['ceiling']['together'],
                                                          D['ceiling']['ceiling']))
        s, p = D['0'], D[str(a.workers)]
        D['speedup'] = s['wall'] / p['wall']
        D['median_speedup'] = statistics.median(s['walls']) / statistics.median(p['walls'])
        D['identical'] = s['md5'] == p['md5']
        D['bound'] = bound(s, D['ceiling']['ceiling'])
        D['projected'] = {str(n): s['wall'] / project(s, n) for n in (1, 2, 4, 16, 64)}
        units, _ = units_of(s['notices'])
        D['largest_unit'] = {st: max(u, key=lambda x: x[1]) for st, u in units.items() if u}
        D['work_share_largest'] = {st: max(x[1] for x in u) / max(sum(x[1] for x in u), 1e-9)
                                   for st, u in units.items() if u}
    with open(a.json, 'w') as f:
        json.dump(R, f, indent=1, default=str)
    report(R, a.workers)


def report(R, w):
    print()
    e = R['env']
    print('%s; %s; %s; load before %s' % (e['cpu'], e['pg'], e['blas'], ' '.join(e['load_before'])))
    print('mtms_train with mtms.train_workers = %d against 0 (the leader alone), best of %d '
          '(and the ratio of the medians), the two taking turns:' % (w, R['reps']))
    rows = []
    for name, D in R['sets'].items():
        s, p = D['0'], D[str(w)]
        rows.append([name, D['scenes'], D['train_rows'], '%.2f' % s['wall'], '%.2f' % p['wall'],
                     '%.2fx' % D['speedup'], '%.2fx' % D['median_speedup'], '%.2fx' % D['ceiling']['ceiling'],
                     '%.2fx' % D['bound'], 'yes' if D['identical'] else 'NO',
                     '%.0f / %.0f' % (s['peak_rss_anon_mb'], p['peak_rss_anon_mb']),
                     '%.4f / %.4f' % (mean_auc(s['auc']), mean_auc(p['auc']))])
    print(S.table(['data', 'scenes', 'train rows', '0 workers s', '%d workers s' % w, 'speed-up', 'of medians',
                   'machine ceiling', 'bound', 'same model', 'peak MB (0 / %d)' % w, 'mean test AUC (0 / %d)' % w], rows))
    print('(machine ceiling: two serial trainings of the same data at once against one alone, '
          '2 x alone / together: what two processes can give on this machine for this work.')
    print(' bound: the best speed-up the serial run allows with two processes at that ceiling: its serial '
          'parts (reading, writing, stage set-up) as they are, its units\' work divided by the ceiling, '
          'and no less than its longest chain of units.)')
    print()
    print('Projected speed-up on P cores, from the serial run\'s per-unit seconds (units largest first '
          'onto P processes, the embedding and CTCVR stages as one chain, plus the serial parts); '
          'P = %d against the measurement above:' % w)
    rows = []
    for name, D in R['sets'].items():
        pr = D['projected']
        rows.append([name] + ['%.2fx' % pr[k] for k in ('2', '4', '16', '64')] +
                    ['%.2fx' % D['speedup']] +
                    [', '.join('%s %.0f%%' % (st, 100 * v) for st, v in D['work_share_largest'].items())])
    print(S.table(['data', 'P=2', 'P=4', 'P=16', 'P=64', 'measured P=%d' % w,
                   'largest unit\'s share of its stage\'s work'], rows))


if __name__ == '__main__':
    main()
