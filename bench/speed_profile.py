#!/usr/bin/python3
"""bench/speed_profile.py: where mtms spends its time, per training stage,
in scoring and in a cold start (perf, DWARF call graphs, on the backend).

  speed_profile.py train   mtms_train of sp_train (bench/speed_setup.sql), serial;
                           the samples are split by stage (the first sample under
                           mtms_step_ctcvr / the fine-tune starts the next stage)
  speed_profile.py score   SELECT sum(mtms_score(scene, 'ctr', features)) FROM sp_score
                           (model sp_w0, serial)
  speed_profile.py cold    a new backend's first mtms_score with model sp_big

Prints, per part, the share of the samples of the functions that matter
(inclusive: the function and what it calls) and the top functions by self
time.  Needs perf (linux-perf) and root (or perf_event_paranoid <= 0); uses
the libpq environment for the database.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2

KEY = ['mtms_step_pair', 'mtms_step_ctcvr', 'mtms_step_finetune', 'gather_train', 'scatter_grads',
       'mtms_emb_apply', 'mtms_emb_find_or_create', 'mtms_emb_find', 'mtms_input1', 'mtms_input2',
       'mtms_tower_forward', 'mtms_tower_backward', 'mtms_tower_step', 'mtms_adam_update', 'cblas_sgemm',
       'cblas_sgemv', 'mtms_joint_loss_grad', 'process_buffer', 'mtms_parse_features', 'mtms_rowset_add',
       'evaluate_validation', 'checkpoint', 'restore_best', 'mtms_auc_compute', 'state_prepare',
       'mtms_model_copy', 'mtms_emb_copy', 'snapshot_take', 'mtms_model_free', 'mtms_state_create',
       'heap_getnextslot', 'detoast_attr', 'mtms_model_save', 'mtms_model_load', 'mtms_emb_insert',
       'mtms_tower_predict1', 'mtms_model_predict', 'SPI_cursor_fetch', 'nocachegetattr', 'read_floats',
       'exc_page_fault', 'ExecInitAgg', 'llvm_compile_module', 'mtms_cache_get']


def run_profiled(sql_setup, sql, data):
    c = psycopg2.connect('')
    c.autocommit = True
    cur = c.cursor()
    for s in sql_setup:
        cur.execute(s)
    cur.execute('SELECT pg_backend_pid()')
    pid = cur.fetchone()[0]
    perf = subprocess.Popen(['perf', 'record', '-q', '-F', '499', '--call-graph', 'dwarf,8192', '-o', data,
                             '-p', str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    t0 = time.time()
    cur.execute(sql)
    cur.fetchall()
    secs = time.time() - t0
    time.sleep(0.2)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    c.close()
    return secs


def report(data, window=None, title=''):
    args = ['perf', 'report', '-i', data, '--stdio', '-g', 'none', '--sort', 'dso,symbol', '--percent-limit', '0.3']
    if window:
        args += ['--time', '%.6f,%.6f' % window]
    out = {}
    for children in (True, False):
        txt = subprocess.run(args + (['--children'] if children else ['--no-children']),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
        rows = []
        for line in txt.splitlines():
            m = re.match(r'\s+([0-9.]+)%\s+(?:([0-9.]+)%\s+)?(\S+)\s+\[[.k]\]\s+(\S+)', line)
            if m:
                name = m.group(4)
                if name.startswith('0x'):
                    name = '%s (in %s)' % (name, m.group(3))
                rows.append((float(m.group(1)), name))
        out[children] = rows
    print('\n== %s' % title)
    incl = {name: pct for pct, name in out[True]}
    print('inclusive (function and its callees), % of the samples:')
    print('  ' + ', '.join('%s %.1f' % (k, incl[k]) for k in KEY if k in incl and incl[k] >= 0.5))
    print('top functions by self time:')
    for pct, name in out[False][:15]:
        print('  %5.1f%%  %s' % (pct, name))


def stage_windows(data):
    """Start times of the ctcvr and fine-tune stages: the first sample under
    mtms_step_ctcvr, and the first under mtms_step_finetune or the fine-tune's
    checkpoint()."""
    txt = subprocess.run(['perf', 'script', '-i', data, '-F', 'time,ip,sym'], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    first, last = None, None
    t_ctcvr, t_ft = None, None
    cur_t = None
    for line in txt.splitlines():
        m = re.match(r'\s*([0-9]+\.[0-9]+):', line)
        if m:
            cur_t = float(m.group(1))
            first = cur_t if first is None else first
            last = cur_t
            continue
        if t_ctcvr is None and 'mtms_step_ctcvr' in line:
            t_ctcvr = cur_t
        if t_ft is None and ('mtms_step_finetune' in line or re.search(r'\bcheckpoint\b', line)):
            t_ft = cur_t
    return first, t_ctcvr, t_ft, last


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else 'train'
    tmp = tempfile.mkdtemp(prefix='mtms_profile_')
    data = os.path.join(tmp, 'perf.data')
    if what == 'train':
        secs = run_profiled(['SET max_parallel_workers_per_gather = 0',
                             "SELECT count(mtms_drop_model(name)) FROM mtms_model WHERE name = 'sp_prof'",
                             "SELECT mtms_create_model('sp_prof', '{search,feeds,video}', "
                             "'{user,ad,advertiser,hour,device,tag}')"],
                            "SELECT * FROM mtms_train('sp_prof', 'sp_train')", data)
        print('mtms_train under perf: %.1f s' % secs)
        t0, tc, tf, t1 = stage_windows(data)
        report(data, None, 'whole mtms_train')
        if tc and tf:
            print('\nstage windows (perf time): embedding %.1f s, ctcvr %.1f s, fine-tune + commit %.1f s'
                  % (tc - t0, tf - tc, t1 - tf))
            report(data, (t0, tc), 'embedding stage')
            report(data, (tc, tf), 'ctcvr stage')
            report(data, (tf, t1 + 1), 'fine-tune stage (and the commit)')
    elif what == 'score':
        secs = run_profiled(["SET mtms.model = 'sp_w0'", 'SET max_parallel_workers_per_gather = 0',
                             "SELECT mtms_score('search', 'ctr', '{user=1}')"],
                            "SELECT sum(mtms_score(scene, 'ctr', features)) FROM sp_score", data)
        print('scoring under perf: %.1f s' % secs)
        report(data, None, 'SELECT sum(mtms_score(...)) over sp_score')
    elif what == 'cold':
        secs = run_profiled([], "SELECT mtms_score('sp_big', 'search', 'ctr', "
                                "'{user=1,ad=2,advertiser=3,hour=4,device=1,tag=5}')", data)
        print('first mtms_score under perf: %.2f s' % secs)
        report(data, None, "a new backend's first mtms_score (model sp_big)")
    else:
        raise SystemExit(__doc__)
    subprocess.run(['rm', '-rf', tmp])


if __name__ == '__main__':
    main()
