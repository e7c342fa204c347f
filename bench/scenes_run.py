#!/usr/bin/python3
"""bench/scenes_run.py: how mtms grows with the number of scenes (bench/scenes.sh).

For each number of scenes, two data sets of mtms_synthetic_samples with that
many scene names (equal traffic): a fixed total (--total rows) and a fixed
number of rows per scene (--per-scene), the same set when they coincide.
Each is trained under the default settings (the default parallel workers);
per stage: seconds and training rows per second (the stage's NOTICE), peak
memory of all training processes against the parameters plus optimizer
state; then, on a test set of --test rows, the first score of a new
session (the model's load), mtms_score's rows per second (ctcvr, warm) and
mtms_evaluate's rows per second per task (three tasks a row, warm).
"""
import argparse
import json
import re
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the repository
import parallel_run as P  # noqa: E402
import speed_run as S  # noqa: E402

UNITS_RE = re.compile(r'mtms_train (\w+): (\d+) units in ([0-9.]+) s, (\d+) workers, (\d+) training rows/s')
WRITE_RE = re.compile(r'version \d+ written: (\d+) embedding rows, [0-9.]+ MB of tower parameters, ([0-9.]+) s')


def make_samples(rel, rows, names, seed):
    P.sql('DROP TABLE IF EXISTS %s' % rel)
    P.sql('CREATE TABLE %s AS SELECT * FROM mtms_synthetic_samples(%%s, %%s, %%s)' % rel,
          (rows, seed, json.dumps({'scenes': names})))


WORLD = 20   # scenes of one world (--worlds)


def make_world_samples(rel, nscenes, per_scene, seed):
    """nscenes / WORLD disjoint worlds of WORLD scenes: each its own synthetic
    universe (seed) with its feature values prefixed by the world, so a
    feature occurs in at most WORLD scenes whatever the number of scenes."""
    P.sql('DROP TABLE IF EXISTS %s' % rel)
    P.sql("""CREATE TABLE %s AS
             SELECT s.slot, 'w' || w || '_' || s.scene AS scene,
                    array(SELECT split_part(f, '=', 1) || '=w' || w || '_' || split_part(f, '=', 2)
                            FROM unnest(s.features) f) AS features,
                    s.click, s.conversion
               FROM generate_series(0, %%s - 1) w,
                    LATERAL mtms_synthetic_samples(%%s, %%s * 1000 + w,
                        jsonb_build_object('universe_seed', 77 + w,
                                           'scenes', (SELECT jsonb_agg('s' || lpad(i::text, 2, '0'))
                                                        FROM generate_series(1, %d) i))) s""" % (rel, WORLD),
          (nscenes // WORLD, per_scene * WORLD, seed))


def serve(model, test, rows):
    """Load (first score of a new session), scoring and evaluation rates."""
    c = S.connect()
    cur = c.cursor()
    t0 = time.perf_counter()
    S.one(cur, "SELECT mtms_score(%s, scene, 'ctcvr', features) FROM " + test + " LIMIT 1", (model,))
    load_ms = (time.perf_counter() - t0) * 1000
    best_score = best_eval = None
    for _ in range(2):
        t0 = time.perf_counter()
        S.one(cur, "SELECT sum(mtms_score(%s, scene, 'ctcvr', features)) FROM " + test, (model,))
        dt = time.perf_counter() - t0
        best_score = dt if best_score is None else min(best_score, dt)
        t0 = time.perf_counter()
        cur.execute('SELECT count(*) FROM mtms_evaluate(%s, %s)', (model, test))
        cur.fetchall()
        dt = time.perf_counter() - t0
        best_eval = dt if best_eval is None else min(best_eval, dt)
    c.close()
    return {'load_ms': load_ms, 'score_rows_per_s': rows / best_score,
            'evaluate_rows_per_s_per_task': 3 * rows / best_eval}


def run(nscenes, rows, test_rows, data):
    if data == 'worlds':
        names = ['w%d_s%02d' % (w, i) for w in range(nscenes // WORLD) for i in range(1, WORLD + 1)]
        S.log('%d scenes in %d worlds, %d rows' % (nscenes, nscenes // WORLD, rows))
        make_world_samples('sc_samples', nscenes, rows // nscenes, 1)
        make_world_samples('sc_test', nscenes, max(test_rows // nscenes, 1), 2)
    else:
        names = ['s%03d' % i for i in range(1, nscenes + 1)]
        S.log('%d scenes, %d rows' % (nscenes, rows))
        make_samples('sc_samples', rows, names, 1)
        make_samples('sc_test', test_rows, names, 2)
    model = 'sc_%d_%d' % (nscenes, rows)
    r = S.mtms_train(model, 'sc_samples', -1, scenes=names)
    out = {'scenes': nscenes, 'rows': rows, 'data': data, 'wall': r['wall'],
           'param_opt_mb': r['param_opt_mb'], 'peak_mb': r['peak_rss_anon_mb'], 'stages': {}}
    for n in r['notices']:
        m = UNITS_RE.search(n)
        if m:
            out['stages'][m.group(1)] = {'units': int(m.group(2)), 'seconds': float(m.group(3)),
                                         'workers': int(m.group(4)), 'rows_per_s': int(m.group(5))}
        m = WRITE_RE.search(n)
        if m:
            out['write_seconds'] = float(m.group(2))
            out['embedding_rows'] = int(m.group(1))
    out.update(serve(model, 'sc_test', test_rows))
    S.log('  %.1f s; finetune %s rows/s; score %.0f rows/s; evaluate %.0f rows/s per task'
          % (out['wall'], out['stages'].get('finetune', {}).get('rows_per_s'),
             out['score_rows_per_s'], out['evaluate_rows_per_s_per_task']))
    P.sql('SELECT mtms_drop_model(%s)', (model,))
    return out


def report(R):
    e = R['env']
    print('%s; %s; %s' % (e['cpu'], e['pg'], e['blas']))
    rows = []
    for r in R['runs']:
        st = r['stages']

        def rate(s):
            return '%.0f' % st[s]['rows_per_s'] if s in st else '-'
        rows.append([r['scenes'], r.get('data', 'shared'), r['rows'], '%.1f' % r['wall'],
                     '%.1f' % (r['wall'] * 1e6 / r['rows']), rate('embedding'), rate('ctcvr'),
                     rate('finetune'), '%.2f' % r.get('write_seconds', 0), '%.0f' % r['param_opt_mb'],
                     '%.2fx' % (r['peak_mb'] / r['param_opt_mb']), '%.0f' % r['load_ms'],
                     '%.0f' % r['score_rows_per_s'], '%.0f' % r['evaluate_rows_per_s_per_task'],
                     '%.2fx' % (r['evaluate_rows_per_s_per_task'] / r['score_rows_per_s'])])
    print(S.table(['scenes', 'features', 'rows', 'wall s', 'us/row', 'embedding rows/s', 'ctcvr rows/s', 'finetune rows/s',
                   'write s', 'params+opt MB', 'peak/params', 'load ms', 'score rows/s',
                   'evaluate rows/s/task', 'evaluate/score'], rows))


def main():
    ap = argparse.ArgumentParser(description='mtms at 3 to 300 scenes')
    ap.add_argument('--scenes', default='3,20,100')
    ap.add_argument('--total', type=int, default=1000000)
    ap.add_argument('--per-scene', type=int, default=10000)
    ap.add_argument('--test', type=int, default=50000)
    ap.add_argument('--worlds', action='store_true',
                    help='also, at each multiple of 20 scenes, --per-scene rows per scene in '
                         'disjoint 20-scene worlds (a feature occurs in at most 20 scenes)')
    ap.add_argument('--worlds-only', action='store_true',
                    help='only the worlds data (e.g. --scenes 300 --worlds-only)')
    ap.add_argument('--json', default='/tmp/mtms_scenes.json')
    a = ap.parse_args()
    R = {'env': P.env(), 'runs': []}
    for n in [int(x) for x in a.scenes.split(',')]:
        for rows in ([] if a.worlds_only else sorted({a.total, n * a.per_scene})):
            R['runs'].append(run(n, rows, a.test, 'shared'))
        if (a.worlds or a.worlds_only) and n % WORLD == 0:
            R['runs'].append(run(n, n * a.per_scene, a.test, 'worlds'))
    with open(a.json, 'w') as f:
        json.dump(R, f, indent=1, default=str)
    report(R)
    P.sql('DROP TABLE IF EXISTS sc_samples')
    P.sql('DROP TABLE IF EXISTS sc_test')


if __name__ == '__main__':
    main()
