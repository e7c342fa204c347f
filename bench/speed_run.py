#!/usr/bin/python3
"""bench/speed_run.py: the side-by-side speed benchmark of mtms against the
same MTMS model in PyTorch (bench/pytorch_mtms.py).  Run it with
bench/speed.sh, which installs what it needs and picks the database; this
script connects with the libpq environment (PGDATABASE, PGHOST, ...).

What it measures (every number is printed in a table at the end and saved
as JSON in the work directory):

  training   per stage (embedding, ctcvr, finetune): training samples per
             second (sample-epochs / stage seconds, validation included, the
             same definition on both sides), epochs, wall time to the
             converged model, test AUC per (scene, task); 1 thread (mtms
             max_parallel_workers_per_gather = 0, torch 1 thread) and 2
             (2 workers, torch 2 threads)
  scoring    SELECT sum(mtms_score(scene, 'ctr', features)) over 1M rows,
             against PyTorch batched inference and the psycopg2 round trip
  ranking    latency of a query that scores 1,000 candidates and returns the
             top 10 (p50, p99)
  cold start a new backend's first mtms_score with a model of ~1M embedding rows
  memory     backend RssAnon peak per stage and in a scoring backend, against
             the raw parameter and optimizer bytes
  scale      time per epoch at several sizes, and with many distinct features
  limit      FLOPs per training sample and the measured single-core sgemm
             rate: the fraction of the floor each stage reaches
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
PY = '/usr/bin/python3'
TORCH = os.path.join(HERE, 'pytorch_mtms.py')
SCENES = ['search', 'feeds', 'video']
TASKS = ['ctr', 'cvr', 'ctcvr']
FIELDS = '{user,ad,advertiser,hour,device,tag}'
STAGES = ['embedding', 'ctcvr', 'finetune']

LOG = None


def log(msg):
    line = '[%s] %s' % (time.strftime('%H:%M:%S'), msg)
    print(line, file=sys.stderr, flush=True)
    if LOG:
        LOG.write(line + '\n')
        LOG.flush()


class Sink:
    """Collects every NOTICE (psycopg2 keeps only 50 in a plain list)."""

    def __init__(self):
        self.items = []

    def append(self, x):
        self.items.append(x)


def connect():
    c = psycopg2.connect('')
    c.autocommit = True
    c.notices = Sink()
    return c


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()


def proc_status(pid):
    d = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('RssAnon', 'VmHWM', 'VmRSS', 'RssShmem'):
                d[k] = int(v.split()[0])   # kB
    return d


CLK_TCK = os.sysconf('SC_CLK_TCK')


def proc_cpu(pid):
    """User + system CPU seconds of a process."""
    with open('/proc/%d/stat' % pid) as f:
        rest = f.read().rsplit(')', 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def worker_pids(leader):
    """The parallel workers of a backend (their process title names it)."""
    tag = b'parallel worker for PID %d' % leader
    out = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/cmdline' % d, 'rb') as f:
                    if tag in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


class Poller(threading.Thread):
    """Samples the private memory (RssAnon) and CPU time of a backend and of
    its parallel workers, summed, every few ms; shared memory (the DSM
    segment the workers read the rows from) is counted once, as the largest
    growth of any one process's RssShmem over the backend's at the start."""

    def __init__(self, pid, every=0.005):
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples = []
        self.stopped = False
        self.cpu = {}
        self.shmem0 = proc_status(pid).get('RssShmem', 0)
        self.max_procs = 1

    def run(self):
        n = 0
        workers = []
        while not self.stopped:
            if n % 4 == 0:
                workers = worker_pids(self.pid)
            n += 1
            anon = hwm = shm = 0
            alive = 0
            for p in [self.pid] + workers:
                try:
                    d = proc_status(p)
                    self.cpu[p] = proc_cpu(p)
                except OSError:
                    if p == self.pid:
                        return
                    continue
                alive += 1
                anon += d.get('RssAnon', 0)
                hwm += d.get('VmHWM', 0)
                shm = max(shm, d.get('RssShmem', 0) - self.shmem0)
            self.max_procs = max(self.max_procs, alive)
            self.samples.append((time.time(), anon + max(shm, 0), hwm, sum(self.cpu.values())))
            time.sleep(self.every)

    def stop(self):
        self.stopped = True
        self.join()

    def peak_mb(self, t0, t1):
        v = [s[1] for s in self.samples if t0 <= s[0] <= t1]
        return max(v) / 1024.0 if v else None

    def cpu_at(self, t):
        best = self.samples[0][3] if self.samples else 0.0
        for s in self.samples:
            if s[0] > t:
                break
            best = s[3]
        return best


def raw_bytes(cur, model):
    """Embedding rows and tower parameters of the active version; raw bytes
    of the parameters and of parameters + optimizer state (Adagrad: 1 float
    per row; Adam: 2 floats per tower parameter)."""
    cur.execute("""
        SELECT (SELECT count(*) FROM mtms_embedding e
                 WHERE e.model_id = m.model_id AND e.version = m.active_version),
               (SELECT coalesce(sum(n_in * n_out + n_out), 0) FROM mtms_tower t
                 WHERE t.model_id = m.model_id AND t.version = m.active_version),
               m.embedding_dim
          FROM mtms_model m WHERE name = %s""", (model,))
    rows, tparams, dim = cur.fetchone()
    params = rows * dim * 4 + int(tparams) * 4
    with_opt = rows * (dim + 1) * 4 + int(tparams) * 3 * 4
    return {'embedding_rows': int(rows), 'tower_params': int(tparams),
            'param_mb': params / 2 ** 20, 'param_opt_mb': with_opt / 2 ** 20}


NOTICE_RE = re.compile(r'mtms_train (\w+) epoch (\d+):.*?, ([0-9.]+) samples/s')


def mtms_train(model, rel, workers, options='{}', phases='all', poll=True, scenes=None, fields=None,
               keep=True):
    """Train a fresh model; per-stage figures from the result rows.  keep=False: every pass scans
    (mtms.keep_training_rows off), the only way passes run as parallel plans."""
    c = connect()
    cur = c.cursor()
    # workers train units (mtms.train_workers); the scanning fallback's
    # passes (keep=False) run as parallel plans instead
    cur.execute('SET mtms.train_workers = %d' % workers)
    if workers >= 0:
        cur.execute('SET max_parallel_workers_per_gather = %d' % workers)
    cur.execute('SET mtms.keep_training_rows = %s' % ('on' if keep else 'off'))
    one(cur, 'SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = %s', (model,))
    cur.execute('SELECT mtms_create_model(%s, %s, %s, options => %s)',
                (model, '{' + ','.join(scenes or SCENES) + '}',
                 '{' + ','.join(fields) + '}' if fields else FIELDS, options))
    nrel = one(cur, 'SELECT count(*) FROM %s' % rel)[0]
    plan = ''
    if workers > 0:
        cur.execute("EXPLAIN (COSTS OFF) SELECT mtms_embedding_update('x', scene, features, click, "
                    "conversion) FROM %s" % rel)
        plan = ' '.join(r[0].strip() for r in cur.fetchall())
    pid = one(cur, 'SELECT pg_backend_pid()')[0]
    poller = Poller(pid) if poll else None
    if poller:
        poller.start()
    t0 = time.time()
    cur.execute('SELECT phase, scene, task, epochs, samples, seconds FROM mtms_train(%s, %s, phases => %s)',
                (model, rel, phases))
    res = cur.fetchall()
    t1 = time.time()
    if poller:
        time.sleep(0.02)
        poller.stop()
    st = proc_status(pid)
    stages = {}
    for phase, scene, task, epochs, samples, secs in res:
        s = stages.setdefault(phase, {'seconds': secs, 'sample_epochs': 0, 'epochs': 0})
        s['epochs'] = max(s['epochs'], epochs)
        # finetune rows come per task of a scene; its unit is the scene (CTR rows = impressions)
        if phase == 'finetune' and task != 'ctr':
            continue
        s['sample_epochs'] += epochs * samples
    rates = {}
    for n in c.notices.items:
        m = NOTICE_RE.search(n)
        if m:
            rates.setdefault(m.group(1), []).append(float(m.group(3)))
    tstart = t0
    for phase in STAGES:
        if phase not in stages:
            continue
        s = stages[phase]
        s['samples_per_s'] = s['sample_epochs'] / s['seconds'] if s['seconds'] > 0 else None
        s['notice_rows_per_s'] = rates.get(phase, [])
        if poller:
            s['peak_rss_anon_mb'] = poller.peak_mb(tstart, tstart + s['seconds'])
            s['cpu_seconds'] = poller.cpu_at(tstart + s['seconds']) - poller.cpu_at(tstart)
        tstart += s['seconds']
    out = {'model': model, 'workers': workers, 'wall': t1 - t0, 'stages': stages,
           'relation_rows': nrel, 'plan': plan,
           'commit_seconds': t1 - tstart, 'vmhwm_mb': st['VmHWM'] / 1024.0,
           'final_rss_anon_mb': st['RssAnon'] / 1024.0}
    out['notices'] = list(c.notices.items)
    if poller:
        out['commit_peak_rss_anon_mb'] = poller.peak_mb(tstart, t1 + 1)
        out['peak_rss_anon_mb'] = poller.peak_mb(t0, t1 + 1)
        out['processes'] = poller.max_procs
    out.update(raw_bytes(cur, model))
    c.close()
    return out


def timed_and_polled(model, rel, workers):
    """The wall time of a training with nothing else running, and the per-stage
    CPU and peak memory of one more, sampled by the poller: it takes about a
    tenth of a core, which on two cores slows mtms's two workers (PyTorch's
    runs have no poller beside them)."""
    polled = mtms_train(model, rel, workers, poll=True)
    timed = mtms_train(model, rel, workers, poll=False)
    for st, s in timed['stages'].items():
        for k in ('peak_rss_anon_mb', 'cpu_seconds'):
            if k in polled['stages'].get(st, {}):
                s[k] = polled['stages'][st][k]
    for k in ('commit_peak_rss_anon_mb', 'peak_rss_anon_mb', 'processes'):
        timed[k] = polled[k]
    timed['wall_polled'] = polled['wall']
    return timed


def mtms_evaluate(model, rel):
    c = connect()
    cur = c.cursor()
    cur.execute('SELECT scene, task, auc, n, positives FROM mtms_evaluate(%s, %s)', (model, rel))
    out = {}
    for scene, task, auc, n, pos in cur.fetchall():
        out.setdefault(scene, {})[task] = auc
        out[scene]['n_' + task] = n
        out[scene]['pos_' + task] = pos
    c.close()
    return out


def oracle_auc():
    c = connect()
    cur = c.cursor()
    cur.execute("""SELECT scene, mtms_auc(p_ctr, click), mtms_auc(p_cvr, conversion) FILTER (WHERE click),
                          mtms_auc(p_ctr * p_cvr, click AND conversion) FROM sp_test GROUP BY scene""")
    out = {r[0]: {'ctr': r[1], 'cvr': r[2], 'ctcvr': r[3]} for r in cur.fetchall()}
    c.close()
    return out


def torch_env(threads):
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = str(threads)
    env['MKL_NUM_THREADS'] = str(threads)
    # torch calls the system BLAS (here OpenBLAS, pthread build) from its own
    # threads: a second level of BLAS threads oversubscribes the cores (10x
    # slower measured), so BLAS is single-threaded and torch's intra-op
    # threads give the parallelism
    env['OPENBLAS_NUM_THREADS'] = '1'
    # spinning OpenMP threads collapse when another process needs the core
    # (a shared machine, or the PostgreSQL server next to it): measured 6x
    # slower than passive waiting under load
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    return env


def run_torch(args, threads, logname):
    with open(os.path.join(WORK, logname), 'w') as errf:
        p = subprocess.run([PY, TORCH] + args + ['--threads', str(threads)],
                           env=torch_env(threads), stdout=subprocess.PIPE, stderr=errf,
                           universal_newlines=True)
    if p.returncode != 0:
        raise RuntimeError('%s failed, see %s' % (' '.join(args[:1]), os.path.join(WORK, logname)))
    return json.loads(p.stdout.strip().splitlines()[-1])


def export_samples(path, rel='sp_all'):
    """What a PyTorch user does first: export the samples (COPY to a file)."""
    c = connect()
    cur = c.cursor()
    t0 = time.time()
    with open(path, 'w', encoding='utf-8') as f:
        cur.copy_expert("COPY (SELECT slot, scene, array_to_string(features, chr(31)), click, "
                        "coalesce(conversion, false) FROM %s) TO STDOUT" % rel, f)
    c.close()
    return time.time() - t0


# ---------------------------------------------------------------------------
# scoring, ranking, cold start
# ---------------------------------------------------------------------------

def mtms_scoring(model):
    out = {}
    for workers in (0, 2):
        c = connect()
        cur = c.cursor()
        cur.execute("SET mtms.model = %s", (model,))
        cur.execute('SET max_parallel_workers_per_gather = %d' % workers)
        pid = one(cur, 'SELECT pg_backend_pid()')[0]
        one(cur, "SELECT mtms_score('search', 'ctr', '{user=1}')")
        best = None
        for _ in range(2):
            t0 = time.time()
            one(cur, "SELECT sum(mtms_score(scene, 'ctr', features)) FROM sp_score")
            dt = time.time() - t0
            best = dt if best is None else min(best, dt)
        n = one(cur, 'SELECT count(*) FROM sp_score')[0]
        r = {'rows': n, 'seconds': best, 'rows_per_s': n / best}
        if workers == 0:
            st = proc_status(pid)
            r['rss_anon_mb'] = st['RssAnon'] / 1024.0
            r['vmhwm_mb'] = st['VmHWM'] / 1024.0
            cur.execute('DROP TABLE IF EXISTS sp_score_mtms')
            t0 = time.time()
            cur.execute("CREATE TABLE sp_score_mtms AS SELECT id, mtms_score(scene, 'ctr', features) AS score "
                        "FROM sp_score")
            r['ctas_seconds'] = time.time() - t0
            cur.execute('DROP TABLE sp_score_mtms')
        out['workers_%d' % workers] = r
        c.close()
    return out


def mtms_ranking(model, nreq=200, warm=10):
    c = connect()
    cur = c.cursor()
    cur.execute("SET mtms.model = %s", (model,))
    cur.execute('SET max_parallel_workers_per_gather = 0')
    nads = one(cur, 'SELECT count(*) FROM sp_ads')[0]
    cur.execute('SELECT k, scene, user_feats FROM sp_requests ORDER BY k')
    reqs = cur.fetchall()[:nreq + warm]
    cur.execute("PREPARE sp_rank(text, text[], bigint) AS "
                "SELECT ad FROM sp_ads WHERE n > $3 AND n <= $3 + 1000 "
                "ORDER BY mtms_score($1, 'ctcvr', $2 || feats) DESC LIMIT 10")
    lat = []
    starts = []
    for k, scene, user in reqs:
        start = (k * 37) % max(nads - 1000, 1)
        starts.append(start)
        t0 = time.perf_counter()
        cur.execute('EXECUTE sp_rank(%s, %s, %s)', (scene, user, start))
        top = cur.fetchall()
        lat.append(time.perf_counter() - t0)
        assert len(top) == 10
    lat = sorted(x * 1000 for x in lat[warm:])
    cur.execute('SELECT n, feats FROM sp_ads ORDER BY n')
    ads = [r[1] for r in cur.fetchall()]
    c.close()
    with open(os.path.join(WORK, 'requests.json'), 'w') as f:
        json.dump({'ads': ads, 'requests': [[r[1], r[2]] for r in reqs], 'starts': starts}, f)
    return {'requests': len(lat), 'candidates': 1000, 'p50_ms': pct(lat, 50), 'p99_ms': pct(lat, 99),
            'max_ms': lat[-1]}


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(sorted_vals) - 1)
    return sorted_vals[f] + (sorted_vals[c] - sorted_vals[f]) * (k - f)


def cold_start(trials=3):
    """A model of ~1M embedding rows (1M impressions of a universe of 1M users
    and 200k ads, phase 1 for one epoch), then new backends' first score."""
    c = connect()
    cur = c.cursor()
    cur.execute('DROP TABLE IF EXISTS sp_big')
    t0 = time.time()
    cur.execute("""CREATE TABLE sp_big AS SELECT * FROM mtms_synthetic_samples(1000000, 2,
                   '{"users": 1000000, "ads": 200000}')""")
    gen = time.time() - t0
    c.close()
    tr = mtms_train('sp_big', 'sp_big', 0, '{"max_epochs": 1, "finetune_fraction": 0}', 'embedding',
                    poll=True)
    out = {'generate_seconds': gen, 'train': tr, 'trials': []}
    for _ in range(trials):
        c = connect()
        cur = c.cursor()
        pid = one(cur, 'SELECT pg_backend_pid()')[0]
        before = proc_status(pid)
        t0 = time.perf_counter()
        one(cur, "SELECT mtms_score('sp_big', 'search', 'ctr', '{user=1,ad=2,advertiser=3,hour=4,device=1,tag=5}')")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        one(cur, "SELECT mtms_score('sp_big', 'search', 'ctr', '{user=1,ad=2,advertiser=3,hour=4,device=1,tag=5}')")
        second = time.perf_counter() - t0
        st = proc_status(pid)
        out['trials'].append({'first_ms': first * 1000, 'second_ms': second * 1000,
                              'rss_anon_mb': st['RssAnon'] / 1024.0,
                              'rss_anon_before_mb': before['RssAnon'] / 1024.0,
                              'vmhwm_mb': st['VmHWM'] / 1024.0})
        c.close()
    c = connect()
    cur = c.cursor()
    cur.execute('DROP TABLE sp_big')
    c.close()
    return out


# ---------------------------------------------------------------------------
# scale and the limit
# ---------------------------------------------------------------------------

def scale_run(n, universe):
    c = connect()
    cur = c.cursor()
    cur.execute('DROP TABLE IF EXISTS sp_scale')
    opts = {'slots': 5}
    opts.update(universe)
    t0 = time.time()
    cur.execute('CREATE TABLE sp_scale AS SELECT * FROM mtms_synthetic_samples(%s, 1, %s)',
                (n, json.dumps(opts)))
    gen = time.time() - t0
    c.close()
    tr = mtms_train('sp_scale', 'sp_scale', 0, '{"max_epochs": 1}', 'all', poll=True)
    tr['generate_seconds'] = gen
    tr['universe'] = universe
    c = connect()
    cur = c.cursor()
    cur.execute('DROP TABLE sp_scale')
    one(cur, "SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = 'sp_scale'")
    c.close()
    return tr


def sgemm_rate():
    exe = os.path.join(WORK, 'speed_sgemm')
    pc = '/usr/lib/x86_64-linux-gnu/openblas-serial/pkgconfig'
    env = dict(os.environ, PKG_CONFIG_PATH=pc)
    flags = subprocess.run(['pkg-config', '--cflags', '--libs', 'openblas'], env=env,
                           stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.split()
    libdir = subprocess.run(['pkg-config', '--variable=libdir', 'openblas'], env=env,
                            stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
    subprocess.run(['gcc', '-O2', os.path.join(HERE, 'speed_sgemm.c')] + flags +
                   ['-Wl,-rpath,' + libdir, '-o', exe], check=True)
    return json.loads(subprocess.run([exe], stdout=subprocess.PIPE, universal_newlines=True,
                                     check=True).stdout)


def tower_flops(nin, input_grad):
    """FLOPs of one sample through a tower nin-64-32-1, forward + backward
    (weight gradients, and the input gradient when the embeddings train)."""
    sizes = [nin, 64, 32, 1]
    f = 0
    for i in range(3):
        mac = sizes[i] * sizes[i + 1]
        f += 2 * mac          # forward
        f += 2 * mac          # weight gradient
        if i > 0 or input_grad:
            f += 2 * mac      # gradient of the layer's input
    return f


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def table(headers, rows):
    cells = [[fmt(x) for x in r] for r in rows]
    w = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [' | '.join(h.ljust(w[i]) for i, h in enumerate(headers)),
             '-+-'.join('-' * x for x in w)]
    for r in cells:
        lines.append(' | '.join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r)))
    return '\n'.join(lines)


def fmt(x):
    if x is None:
        return '-'
    if isinstance(x, float):
        if abs(x) >= 1000:
            return '{:,.0f}'.format(x)
        if abs(x) >= 100:
            return '%.1f' % x
        if abs(x) >= 1:
            return '%.2f' % x
        return '%.4f' % x
    if isinstance(x, int):
        return '{:,}'.format(x)
    return str(x)


def auc_se(a, n, p):
    """Standard error of an AUC (Hanley & McNeil 1982)."""
    if a is None or not n or not p or p >= n:
        return None
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    return ((a * (1 - a) + (p - 1) * (q1 - a * a) + (n - p - 1) * (q2 - a * a)) / (p * (n - p))) ** 0.5


def chained(m):
    """Whether mtms ran the embedding and CTCVR stages as one chain (workers)."""
    return any('its units started while the embedding stage ran' in n for n in m.get('notices', []))


def joined_stage(r, a, b):
    """Two stages' figures as one: their samples over their seconds together."""
    sa, sb = r['stages'].get(a), r['stages'].get(b)
    if not sa or not sb:
        return None
    out = {'seconds': sa['seconds'] + sb['seconds'],
           'sample_epochs': sa['sample_epochs'] + sb['sample_epochs'],
           'epochs': max(sa['epochs'], sb['epochs']) if not isinstance(sa['epochs'], list)
           else sa['epochs'] + sb['epochs']}
    out['samples_per_s'] = out['sample_epochs'] / out['seconds'] if out['seconds'] > 0 else None
    if sa.get('cpu_seconds') is not None and sb.get('cpu_seconds') is not None:
        out['cpu_seconds'] = sa['cpu_seconds'] + sb['cpu_seconds']
    return out


def phase1_as_one(probe, *runs):
    """The stages to report and the runs to report them of: when probe ran the
    embedding and CTCVR stages as one chain (workers), they overlap and only
    their sum compares, as one stage 'embedding+ctcvr' of every run."""
    if not chained(probe):
        return STAGES, runs
    one = 'embedding+ctcvr'
    stages = [one] + [st for st in STAGES if st not in ('embedding', 'ctcvr')]
    return stages, tuple(dict(r, stages=dict(r['stages'], **{one: joined_stage(r, 'embedding', 'ctcvr')}))
                         for r in runs)


def report(R):
    out = []
    add = out.append
    add('Machine: %s; %s; torch %s; mtms %s' % (R['env']['cpu'], R['env']['pg'], R['env']['torch'],
                                                R['env']['commit']))
    add('Load average before / after: %s / %s' % (R['env']['load_before'], R['env'].get('load_after')))
    add('Data: %s rows of mtms_synthetic_samples(n, 1, \'{"slots": 5}\'); train days 1-4 (%s rows), '
        'test day 5 (%s rows)' % (fmt(R['rows']), fmt(R['train_rows']), fmt(R['test_rows'])))
    add('')
    if 'blas' in R['env']:
        out.extend(blas_report(R['env']['blas']))
        add('')
    add('Training throughput per stage (training samples per second = sample-epochs / stage '
        'seconds, validation included)')
    rows = []
    for th in R['threads']:
        m = R['mtms'][str(th)]
        t = R['torch'][str(th)]
        stages, (m, t) = phase1_as_one(m, m, t)
        for st in stages:
            ms = m['stages'].get(st)
            ts = t['stages'].get(st)
            if not ms or not ts:
                continue
            cpu_ratio = None
            if th == 1 and ms.get('cpu_seconds') and ts.get('cpu_seconds'):
                cpu_ratio = (ms['sample_epochs'] / ms['cpu_seconds']) / (ts['sample_epochs'] / ts['cpu_seconds'])
            rows.append([st, th, ms['samples_per_s'], ts['samples_per_s'],
                         ms['samples_per_s'] / ts['samples_per_s'],
                         ms['epochs'], max(ts['epochs']), ms['seconds'], ts['seconds'],
                         ms.get('cpu_seconds') if th == 1 else None, ts.get('cpu_seconds'), cpu_ratio])
    add(table(['stage', 'threads', 'mtms samples/s', 'PyTorch samples/s', 'mtms/PyTorch',
               'mtms epochs', 'PyTorch epochs', 'mtms s', 'PyTorch s', 'mtms CPU s', 'PyTorch CPU s',
               'ratio by CPU'], rows))
    add('(threads 1: mtms max_parallel_workers_per_gather = 0, PyTorch set_num_threads(1); '
        'threads 2: 2 workers, set_num_threads(2); ratio by CPU: training samples per CPU second of '
        'the backend / of the PyTorch process, which other load on the machine does not change)')
    add('')
    add('Wall time to the converged model, seconds')
    rows = []
    for th in R['threads']:
        m = R['mtms'][str(th)]
        t = R['torch'][str(th)]
        tot = R['export_seconds'] + t['prepare_seconds'] + t['train_seconds']
        rows.append([th, m['wall'], m['commit_seconds'], R['export_seconds'], t['prepare_seconds'],
                     t['train_seconds'], tot, tot / m['wall']])
    add(table(['threads', 'mtms_train', 'of which commit', 'PyTorch export', 'read+prepare', 'train',
               'PyTorch total', 'PyTorch/mtms'], rows))
    add('')
    add('Test AUC on day 5 (oracle = true probabilities; se = standard error of the mtms AUC)')
    rows = []
    for sc in SCENES:
        for task in TASKS:
            m0 = R['auc']['mtms_0'].get(sc, {})
            m2 = R['auc'].get('mtms_2', {}).get(sc, {})
            t1 = R['torch']['1']['test_auc'].get(sc, {})
            t2 = R['torch'].get('2', {}).get('test_auc', {}).get(sc, {})
            a = m0.get(task)
            b = t1.get(task)
            n = m0.get('n_' + task)
            p = m0.get('pos_' + task)
            d = a - b if a is not None and b is not None else None
            r = [sc, task, p, R['oracle'].get(sc, {}).get(task), a, b, d, auc_se(a, n, p),
                 m2.get(task), t2.get(task)]
            if 'seed2' in R:
                a2 = R['seed2']['mtms'].get(sc, {}).get(task)
                b2 = R['seed2']['torch'].get(sc, {}).get(task)
                r += [a2, b2, (a + a2) / 2 - (b + b2) / 2 if None not in (a, a2, b, b2) else None]
            rows.append(r)
    hdr = ['scene', 'task', 'positives', 'oracle', 'mtms', 'PyTorch', 'mtms-PyTorch', 'se',
           'mtms 2w', 'PyTorch 2t']
    if 'seed2' in R:
        s2 = R['seed2']['seed']
        hdr += ['mtms s%d' % s2, 'PyTorch s%d' % s2, 'diff of means']
    add(table(hdr, rows))
    if 'seed2' in R:
        add('(mtms, PyTorch: seed 42; s%d: both retrained with seed %d, 1 thread; diff of means: mean of '
            'the two mtms AUCs - mean of the two PyTorch AUCs)' % (s2, s2))
    add('')
    for label, k0, k2, a0, a2 in (
            ('default (training rows kept: after the first pass of each window, passes replay them '
             'in one process)', '1', '2', 'mtms_0', 'mtms_2'),
            ('mtms.keep_training_rows off (every pass scans; with workers, as a parallel plan)',
             'scan_0', 'scan_2', 'mtms_scan_0', 'mtms_scan_2')):
        m0, m2 = R['mtms'].get(k0), R['mtms'].get(k2)
        if not (m0 and m2):
            continue
        add('Parallel scaling of mtms, %s: max_parallel_workers_per_gather 0 against 2 (plan: %s)'
            % (label, m2['plan']))
        rows = []
        stages, (m0, m2) = phase1_as_one(m2, m0, m2)
        for st in stages:
            a, b = m0['stages'].get(st), m2['stages'].get(st)
            if a and b:
                rows.append([st, a['seconds'], b['seconds'], a['samples_per_s'], b['samples_per_s'],
                             b['samples_per_s'] / a['samples_per_s'], a['epochs'], b['epochs']])
        rows.append(['mtms_train wall', m0['wall'], m2['wall'], None, None, m0['wall'] / m2['wall'],
                     None, None])
        add(table(['stage', 'serial s', '2 workers s', 'serial samples/s', '2w samples/s', 'speed-up',
                   'epochs 0', 'epochs 2'], rows))
        diffs = [R['auc'][a2][sc][t] - R['auc'][a0][sc][t]
                 for sc in SCENES for t in TASKS
                 if R['auc'][a2].get(sc, {}).get(t) is not None and R['auc'][a0].get(sc, {}).get(t) is not None]
        add('AUC difference (2 workers - serial): min %+.4f, max %+.4f, mean %+.4f'
            % (min(diffs), max(diffs), sum(diffs) / len(diffs)))
        add('')
    m0, m2 = R['mtms'].get('1'), R['mtms'].get('2')
    if 'scoring' in R:
        S = R['scoring']
        n = S['mtms']['workers_0']['rows']
        add('Scoring %s rows: pCTR of every row of sp_score (the training days)' % fmt(n))
        rows = [['SELECT sum(mtms_score(scene, \'ctr\', features)), 0 workers', 1,
                 S['mtms']['workers_0']['seconds'], S['mtms']['workers_0']['rows_per_s']],
                ['same, 2 workers', 2, S['mtms']['workers_2']['seconds'], S['mtms']['workers_2']['rows_per_s']],
                ['CREATE TABLE AS SELECT id, mtms_score(...), 0 workers', 1,
                 S['mtms']['workers_0']['ctas_seconds'], n / S['mtms']['workers_0']['ctas_seconds']]]
        for th in R['threads']:
            t = S['torch'][str(th)]
            rows.append(['PyTorch batched inference (ids in memory)', th, t['seconds'], t['rows_per_s']])
        rt = S['roundtrip']
        rows.append(['PyTorch round trip: psycopg2 fetch, featurize, score, COPY back', 1, rt['seconds'],
                     rt['rows_per_s']])
        add(table(['method', 'threads', 'seconds', 'rows/s'], rows))
        add('round trip breakdown: fetch %.1f s, featurize %.1f s, score %.1f s, write back %.1f s'
            % (rt['fetch_s'], rt['featurize_s'], rt['score_s'], rt['write_s']))
        add('mtms (0 workers) / PyTorch batched (1 thread): %.2f; mtms / round trip: %.1f'
            % (S['mtms']['workers_0']['rows_per_s'] / S['torch']['1']['rows_per_s'],
               S['mtms']['workers_0']['rows_per_s'] / rt['rows_per_s']))
        add('')
        rk = R['ranking']
        add('Ranking: score 1,000 candidates for one request (pCTCVR) and return the top 10')
        rows = [['mtms: prepared SQL query over psycopg2 (0 workers)', rk['mtms']['requests'],
                 rk['mtms']['p50_ms'], rk['mtms']['p99_ms']],
                ['PyTorch in process: featurize + score + topk (1 thread)', rk['torch']['requests'],
                 rk['torch']['p50_ms'], rk['torch']['p99_ms']]]
        add(table(['method', 'requests', 'p50 ms', 'p99 ms'], rows))
        add('')
    if 'cold_start' in R:
        cs = R['cold_start']
        add('Cold start: a new backend\'s first mtms_score, model of %s embedding rows '
            '(%.0f MB raw parameters)' % (fmt(cs['train']['embedding_rows']), cs['train']['param_mb']))
        rows = [[i + 1, t['first_ms'], t['second_ms'], t['rss_anon_mb'], t['vmhwm_mb']]
                for i, t in enumerate(cs['trials'])]
        add(table(['trial', 'first call ms', 'second call ms', 'backend RssAnon MB', 'VmHWM MB'], rows))
        add('')
    add('Memory: peak backend RssAnon (private memory) against the raw parameter and optimizer bytes')
    rows = []
    m = R['mtms']['1']
    for st in STAGES:
        if st in m['stages']:
            rows.append(['mtms_train %s (serial)' % st, m['stages'][st].get('peak_rss_anon_mb'),
                         m['param_opt_mb'], m['stages'][st].get('peak_rss_anon_mb') / m['param_opt_mb']])
    rows.append(['mtms_train commit', m.get('commit_peak_rss_anon_mb'), m['param_opt_mb'],
                 m.get('commit_peak_rss_anon_mb') / m['param_opt_mb']])
    if 'scoring' in R:
        sc = R['scoring']['mtms']['workers_0']
        rows.append(['scoring backend (after 1M rows)', sc['rss_anon_mb'], m['param_mb'],
                     sc['rss_anon_mb'] / m['param_mb']])
    if 'cold_start' in R:
        cs = R['cold_start']
        tr = cs['train']
        for st in ('embedding', 'ctcvr'):
            if st in tr['stages']:
                rows.append(['1M-row model: mtms_train %s' % st, tr['stages'][st]['peak_rss_anon_mb'],
                             tr['param_opt_mb'], tr['stages'][st]['peak_rss_anon_mb'] / tr['param_opt_mb']])
        rows.append(['1M-row model: commit', tr.get('commit_peak_rss_anon_mb'), tr['param_opt_mb'],
                     tr.get('commit_peak_rss_anon_mb') / tr['param_opt_mb']])
        t = cs['trials'][-1]
        rows.append(['1M-row model: scoring backend', t['rss_anon_mb'], tr['param_mb'],
                     t['rss_anon_mb'] / tr['param_mb']])
    for sc in R.get('scale', []):
        if sc['embedding_rows'] > 1000000:
            for st in STAGES:
                if st in sc['stages']:
                    rows.append(['%s-row model: mtms_train %s' % (fmt(sc['embedding_rows']), st),
                                 sc['stages'][st]['peak_rss_anon_mb'], sc['param_opt_mb'],
                                 sc['stages'][st]['peak_rss_anon_mb'] / sc['param_opt_mb']])
            rows.append(['%s-row model: commit' % fmt(sc['embedding_rows']),
                         sc['commit_peak_rss_anon_mb'], sc['param_opt_mb'],
                         sc['commit_peak_rss_anon_mb'] / sc['param_opt_mb']])
    add(table(['process', 'peak MB', 'raw MB', 'ratio'], rows))
    add('(raw MB: parameters + optimizer state for training (embedding rows x (dim + 1) floats, '
        'tower parameters x 3 floats), parameters only for scoring; the main model has %s '
        'embedding rows)' % fmt(m['embedding_rows']))
    for th in R['threads']:
        t = R['torch'][str(th)]
        add('PyTorch process peak RSS (%d thread%s): after data preparation %.0f MB, %s'
            % (th, 's' if th > 1 else '', t['maxrss_prepared_kb'] / 1024.0,
               ', '.join('%s %.0f MB' % (st, t['stages'][st]['maxrss_kb'] / 1024.0) for st in STAGES
                         if st in t['stages'])))
    add('')
    if R.get('scale'):
        add('Scale: one epoch of each stage (max_epochs 1, serial), seconds and microseconds per '
            'training sample')
        rows = []
        for sc in R['scale']:
            r = [sc['relation_rows'], sc['embedding_rows']]
            for st in STAGES:
                s = sc['stages'].get(st)
                r += [s['seconds'], 1e6 / s['samples_per_s'] if s else None]
            r += [sc['commit_seconds'], sc['peak_rss_anon_mb']]
            rows.append(r)
        add(table(['rows', 'embedding rows', 'embedding s', 'us/sample', 'ctcvr s', 'us/sample',
                   'finetune s', 'us/sample', 'commit s', 'peak MB'], rows))
        add('')
    if 'limit' in R:
        L = R['limit']
        add('The limit: training FLOPs per sample (tower forward + backward) against the measured '
            'single-core sgemm rate')
        add('sgemm GFLOP/s (serial OpenBLAS): %s' % ', '.join('%s %.1f' % kv for kv in L['sgemm'].items()))
        rows = []
        for st in STAGES:
            if st in m0['stages']:
                fl = L['flops'][st]
                rate = L['sgemm']['b256_288x64' if st == 'finetune' else 'b256_48x64'] * 1e9
                floor = rate / fl
                meas = m0['stages'][st]['samples_per_s']
                rows.append([st, fl, floor, meas, meas / floor,
                             R['torch']['1']['stages'][st]['samples_per_s'] / floor])
        add(table(['stage', 'FLOPs/sample', 'floor samples/s', 'mtms samples/s', 'mtms fraction',
                   'PyTorch fraction'], rows))
        add('')
    return '\n'.join(out)


def cpu_model():
    """'2 x AMD EPYC ...': the CPUs and their model name."""
    cpu = '?'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    return '%d x %s' % (os.cpu_count(), cpu)


def env_info():
    c = connect()
    cur = c.cursor()
    pg = one(cur, 'SELECT version()')[0].split(' on ')[0]
    c.close()
    try:
        commit = subprocess.run(['git', '-C', HERE, 'rev-parse', '--short', 'HEAD'], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', HERE, 'status', '--porcelain', '--', '../src'],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True).stdout.strip()
        if dirty:
            commit += ' (src modified)'
    except OSError:
        commit = '?'
    torch_v = subprocess.run([PY, '-c', 'import torch; print(torch.__version__)'], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout.strip()
    return {'cpu': cpu_model(), 'pg': pg, 'commit': commit, 'torch': torch_v,
            'load_before': open('/proc/loadavg').read().split()[:3], 'blas': blas_sides()}


def blas_sides():
    """The BLAS each side's dense products run on, and its rate at the towers' shapes."""
    c = connect()
    cur = c.cursor()
    cur.execute('SELECT version, kernels, kernels_source, openblas_choice, threads, cpu_class, gflops '
                'FROM mtms_blas_info()')
    r = cur.fetchone()
    c.close()
    mtms = dict(zip(['version', 'kernels', 'source', 'openblas_choice', 'threads', 'cpu_class', 'gflops'], r))
    torch_side = run_torch(['blas'], 1, 'torch_blas.log')
    return {'mtms': mtms, 'torch': torch_side}


def blas_report(B):
    """Lines: both sides' BLAS, kernels named, and the ratio of their sgemm rates."""
    m, t = B['mtms'], B['torch']
    rows = [['mtms (server)', 'OpenBLAS %s' % m['version'], m['kernels'], m['source'], m['threads'], m['gflops']],
            ['PyTorch', '%s %s' % (t.get('library'), t.get('version', '')), t.get('kernels', '?'),
             'OPENBLAS_CORETYPE=%s' % t['environment_coretype'] if t.get('environment_coretype')
             else "OpenBLAS's choice", t.get('threads', '?'), t['gflops']]]
    return ['BLAS of each side (GFLOP/s: a dense layer\'s three products on 256-row batches at the '
            'towers\' shapes, one thread):',
            table(['side', 'library', 'kernels', 'chosen by', 'threads', 'GFLOP/s'], rows),
            'mtms/PyTorch sgemm rate: %.2f' % (m['gflops'] / t['gflops'])]


WORK = None


def main():
    global WORK, LOG
    ap = argparse.ArgumentParser(description='mtms against PyTorch, side by side')
    ap.add_argument('--rows', type=int, default=1250000)
    ap.add_argument('--workdir', default='/tmp/mtms_speed')
    ap.add_argument('--threads', default='1,2', help='thread counts to compare (1 and/or 2)')
    ap.add_argument('--scale', default='100000,1000000,4000000',
                    help="sample counts of the scale table ('' to skip)")
    ap.add_argument('--scale-features', type=int, default=4000000,
                    help='rows of the many-features scale run (0 to skip)')
    ap.add_argument('--skip', default='', help='comma list of parts to skip: scoring,cold,limit')
    ap.add_argument('--seed2', type=int, default=43,
                    help='second seed of both models (1 thread), for the seed-to-seed AUC noise (0 skips it)')
    ap.add_argument('--wait-quiet', type=int, default=0,
                    help='wait up to this many minutes for the 1-minute load average to fall below 0.5 '
                         '(a shared machine)')
    a = ap.parse_args()
    deadline = time.time() + 60 * a.wait_quiet
    while time.time() < deadline and float(open('/proc/loadavg').read().split()[0]) >= 0.5:
        time.sleep(10)
    WORK = a.workdir
    os.makedirs(WORK, exist_ok=True)
    LOG = open(os.path.join(WORK, 'speed.log'), 'w')
    skip = set(x for x in a.skip.split(',') if x)
    threads = [int(x) for x in a.threads.split(',')]
    R = {'env': env_info(), 'threads': threads, 'rows': a.rows, 'mtms': {}, 'torch': {}, 'auc': {}}
    t_start = time.time()

    log('setting up %d rows (bench/speed_setup.sql)' % a.rows)
    subprocess.run(['psql', '-X', '-q', '-v', 'rows=%d' % a.rows, '-f', os.path.join(HERE, 'speed_setup.sql')],
                   check=True, stdout=subprocess.DEVNULL)
    c = connect()
    cur = c.cursor()
    R['train_rows'] = one(cur, 'SELECT count(*) FROM sp_train')[0]
    R['test_rows'] = one(cur, 'SELECT count(*) FROM sp_test')[0]
    c.close()
    R['oracle'] = oracle_auc()

    for th in threads:
        w = 0 if th == 1 else th
        log('mtms_train, max_parallel_workers_per_gather = %d' % w)
        R['mtms'][str(th)] = timed_and_polled('sp_w%d' % w, 'sp_train', w)
        R['auc']['mtms_%d' % w] = mtms_evaluate('sp_w%d' % w, 'sp_test')
        log('  %.1f s' % R['mtms'][str(th)]['wall'])

    if 2 in threads:
        # the parallel passes themselves: with no rows kept every pass scans, as a parallel plan
        for w in (0, 2):
            log('mtms_train, mtms.keep_training_rows off, max_parallel_workers_per_gather = %d' % w)
            R['mtms']['scan_%d' % w] = mtms_train('sp_s%d' % w, 'sp_train', w, keep=False)
            R['auc']['mtms_scan_%d' % w] = mtms_evaluate('sp_s%d' % w, 'sp_test')
            log('  %.1f s' % R['mtms']['scan_%d' % w]['wall'])

    samples = os.path.join(WORK, 'samples.tsv')
    log('exporting the samples for PyTorch')
    R['export_seconds'] = export_samples(samples)
    for th in threads:
        log('PyTorch training, %d thread(s)' % th)
        args = ['train', '--data', samples]
        if th == 1:
            args += ['--save', os.path.join(WORK, 'torch_model.pt')]
        R['torch'][str(th)] = run_torch(args, th, 'torch_train_%d.log' % th)
        log('  %.1f s' % R['torch'][str(th)]['train_seconds'])

    if a.seed2:
        log('second seed %d: mtms and PyTorch, 1 thread' % a.seed2)
        m = mtms_train('sp_seed2', 'sp_train', 0, json.dumps({'seed': a.seed2}), poll=False)
        R['seed2'] = {'seed': a.seed2, 'mtms_wall': m['wall'], 'mtms': mtms_evaluate('sp_seed2', 'sp_test')}
        t = run_torch(['train', '--data', samples, '--seed', str(a.seed2)], 1, 'torch_train_seed2.log')
        R['seed2']['torch'] = t['test_auc']
        c = connect()
        one(c.cursor(), "SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = 'sp_seed2'")
        c.close()

    if 'scoring' not in skip and 1 in threads:
        log('scoring')
        S = {'mtms': mtms_scoring('sp_w0'), 'torch': {}}
        for th in threads:
            S['torch'][str(th)] = run_torch(['score', '--model', os.path.join(WORK, 'torch_model.pt'),
                                             '--data', samples], th, 'torch_score_%d.log' % th)
        log('round trip')
        S['roundtrip'] = run_torch(['roundtrip', '--model', os.path.join(WORK, 'torch_model.pt'),
                                    '--table', 'sp_score'], 1, 'torch_roundtrip.log')
        c = connect()
        c.cursor().execute('DROP TABLE IF EXISTS sp_score_torch')
        c.close()
        R['scoring'] = S
        log('ranking latency')
        R['ranking'] = {'mtms': mtms_ranking('sp_w0')}
        R['ranking']['torch'] = run_torch(['rank', '--model', os.path.join(WORK, 'torch_model.pt'),
                                           '--requests', os.path.join(WORK, 'requests.json')], 1,
                                          'torch_rank.log')

    if 'cold' not in skip:
        log('cold start (building a model of ~1M embedding rows)')
        R['cold_start'] = cold_start()

    R['scale'] = []
    for n in [int(x) for x in a.scale.split(',') if x]:
        log('scale: %d rows, default universe' % n)
        R['scale'].append(scale_run(n, {}))
    if a.scale_features:
        log('scale: %d rows, universe of 8M users, 1M ads, 100k advertisers' % a.scale_features)
        R['scale'].append(scale_run(a.scale_features, {'users': 8000000, 'ads': 1000000,
                                                        'advertisers': 100000}))

    if 'limit' not in skip:
        log('sgemm rate')
        R['limit'] = {'sgemm': sgemm_rate(),
                      'flops': {'embedding': tower_flops(48, True), 'ctcvr': 2 * tower_flops(48, True),
                                'finetune': 2 * tower_flops(288, False)}}

    R['env']['load_after'] = open('/proc/loadavg').read().split()[:3]
    R['total_seconds'] = time.time() - t_start
    with open(os.path.join(WORK, 'speed_results.json'), 'w') as f:
        json.dump(R, f, indent=1)
    text = report(R)
    print(text)
    print('\nbenchmark time %.0f s; results in %s' % (R['total_seconds'], os.path.join(WORK, 'speed_results.json')))


if __name__ == '__main__':
    main()
