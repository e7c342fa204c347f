#!/usr/bin/python3
"""bench/pytorch_mtms.py: the MTMS model of mtms, written in PyTorch, as the
baseline of the side-by-side speed benchmark (bench/speed.sh).

It implements the same model and training procedure as mtms (src/train.c,
src/train_state.c, src/phase_embedding.c, src/phase_finetune.c, src/model.c):

  * every (scene, task) pair owns one embedding table over all features
    ('field=value' strings mapped to ids), sum-pooled per field
    (EmbeddingBag, mode 'sum', one bag per (row, field)), concatenated over
    the fields, into its own tower (hidden 64, 32, ReLU, one logit);
  * embedding rows start from U(-0.05, 0.05) once the scene's phase-1
    training rows have seen them, and are zero (absent, as in mtms, which
    creates rows on first sight) otherwise; towers are He-uniform, biases 0;
  * row-wise Adagrad for the embeddings (sparse gradients, acc += mean(g^2)
    per row, w -= lr g / (sqrt(acc) + 1e-8), lr 0.05, L2 1e-6 on the rows a
    batch touches), Adam (lr 0.001, L2 1e-6 on weights) for the towers,
    batch 256, shuffled every epoch;
  * rows are split by a hash of their content into u in [0, 1): u < 0.1
    validates, 0.1 <= u < 0.3 is left to the fine-tune, u >= 0.3 trains
    phase 1 (a CRC-32 of scene and features, not mtms's hash: the same
    fractions, not the same rows);
  * embedding stage: every pair on its own rows (CTR: every impression of
    the scene; CVR: clicked ones), BCE, early stopping per pair on its
    validation loss, as a tuned user would: validated --evals-per-epoch
    times per pass over its rows (default 16), stopping --patience-checks
    validations (default 3) after its best, and keeping that best (at most
    10 passes); --evals-per-epoch 0 validates once per pass with patience
    2 passes instead (the schedule mtms had before it stopped inside passes,
    for the fine-tune too);
  * CTCVR stage per scene: L_ctr + L_cvr (clicked rows) + L_ctcvr with
    pCTCVR = pCTR x pCVR on every impression, both sub-models updated,
    stopping per scene on the sum of the three validation losses, on the
    same schedule;
  * fine-tune: embeddings frozen, per scene two towers on the concatenation
    of all pairs' pooled embeddings, L_ctr + L_cvr + L_ctcvr, towers
    starting as the pair's phase-1 tower (zero weights on the other pairs'
    blocks), validated at the start and 4 times per pass, each scene keeping
    its best towers and stopping --finetune-patience-checks validations
    (default 4, mtms's) after them.

Subcommands (the data files are written by bench/speed_run.py):
  train     train on a sample file, print a JSON report (per-stage seconds,
            sample-epochs, epochs, test AUC per (scene, task)), save the model
  score     batched inference of the saved model over a sample file
  roundtrip fetch rows from PostgreSQL with psycopg2, score them, write the
            scores back with COPY (what a PyTorch user does)
  rank      latency of scoring 1,000 candidates and taking the top 10
  blas      the BLAS torch's dense products run on (the OpenBLAS library in
            this process: version, kernel set, threads) and its GFLOP/s at
            the towers' shapes, the products mtms_blas_info() measures
"""
import argparse
import copy
import json
import os
import math
import resource
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

D = 8
HIDDEN = (64, 32)
LR_EMB = 0.05
LR_TOWER = 0.001
L2 = 1e-6
BATCH = 256
MAX_EPOCHS = 10
PATIENCE = 2
VALID_FRACTION = 0.1
FINETUNE_FRACTION = 0.2
EVALS_PER_EPOCH = 4            # the fine-tune's checkpoints per pass
PHASE1_EVALS = 16              # phase-1 stages: validations per pass (--evals-per-epoch)
PHASE1_PATIENCE = 3            # ... and validations after the best (--patience-checks)
FT_PATIENCE = 4                # fine-tune: validations after the best (--finetune-patience-checks)
EMB_INIT = 0.05
ADAGRAD_EPS = 1e-8
EVAL_BATCH = 8192


# ---------------------------------------------------------------------------
# Data: rows of (slot, scene, features, click, conversion)
# ---------------------------------------------------------------------------

class Samples:
    """Rows parsed into flat arrays: feature ids grouped by (row, field)."""

    def __init__(self):
        self.n = 0


def read_samples(path, fields, scenes, vocab, grow=True):
    """Read a tab-separated file: slot, scene, features joined by \\x1f,
    click (t/f), conversion (t/f).  Features are mapped to ids through vocab
    (a dict, grown when grow, else unknown features are dropped: they score
    with a zero embedding, as in mtms)."""
    fidx = {f: i for i, f in enumerate(fields)}
    sidx = {s: i for i, s in enumerate(scenes)}
    nf = len(fields)
    slot, scene, click, conv, u = [], [], [], [], []
    ids, row_len, bag_len = [], [], []
    with open(path, encoding='utf-8') as fh:
        for line in fh:
            parts = line.rstrip('\n').split('\t')
            slot.append(int(parts[0]))
            sc = parts[1]
            scene.append(sidx[sc])
            click.append(parts[3] == 't')
            conv.append(parts[4] == 't')
            u.append(zlib.crc32((sc + '\t' + parts[2]).encode()) / 4294967296.0)
            feats = parts[2].split('\x1f') if parts[2] else []
            per_field = [[] for _ in range(nf)]
            for ft in feats:
                fi = fidx[ft[:ft.index('=')]]
                g = vocab.get(ft)
                if g is None:
                    if not grow:
                        continue
                    g = len(vocab)
                    vocab[ft] = g
                per_field[fi].append(g)
            k = 0
            for lst in per_field:
                ids.extend(lst)
                bag_len.append(len(lst))
                k += len(lst)
            row_len.append(k)
    s = Samples()
    s.n = len(slot)
    s.slot = np.array(slot, dtype=np.int32)
    s.scene = np.array(scene, dtype=np.int64)
    s.click = np.array(click, dtype=bool)
    s.conv = np.array(conv, dtype=bool) & s.click
    s.u = np.array(u)
    s.ids = np.array(ids, dtype=np.int64)
    s.row_len = np.array(row_len, dtype=np.int64)
    s.row_start = np.concatenate(([0], np.cumsum(s.row_len)[:-1])).astype(np.int64)
    s.bag_len = np.array(bag_len, dtype=np.int64).reshape(s.n, nf)
    return s


def gather(s, rows):
    """EmbeddingBag input and offsets of rows (B x F bags)."""
    lens = s.row_len[rows]
    total = int(lens.sum())
    cum = np.cumsum(lens)
    idx = np.repeat(s.row_start[rows] - (cum - lens), lens) + np.arange(total)
    ids = s.ids[idx]
    bl = s.bag_len[rows].ravel()
    offsets = np.empty(len(bl), dtype=np.int64)
    offsets[0] = 0
    np.cumsum(bl[:-1], out=offsets[1:])
    return torch.from_numpy(ids), torch.from_numpy(offsets)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def make_tower(n_in, gen):
    sizes = [n_in] + list(HIDDEN) + [1]
    layers = []
    for i in range(len(sizes) - 1):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1])
        lim = math.sqrt(6.0 / sizes[i])
        with torch.no_grad():
            lin.weight.uniform_(-lim, lim, generator=gen)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def make_adam(tower):
    weights = [m.weight for m in tower if isinstance(m, torch.nn.Linear)]
    biases = [m.bias for m in tower if isinstance(m, torch.nn.Linear)]
    return torch.optim.Adam([{'params': weights, 'weight_decay': L2},
                             {'params': biases, 'weight_decay': 0.0}],
                            lr=LR_TOWER, betas=(0.9, 0.999), eps=1e-8)


class Pair:
    """One (scene, task) pair: embedding table, Adagrad state, phase-1 tower."""

    def __init__(self, nvocab, nfields, seen, gen):
        self.emb = torch.nn.EmbeddingBag(nvocab, D, mode='sum', sparse=True)
        with torch.no_grad():
            w = torch.empty(nvocab, D).uniform_(-EMB_INIT, EMB_INIT, generator=gen)
            w[~torch.from_numpy(seen)] = 0.0
            self.emb.weight.copy_(w)
        self.acc = torch.zeros(nvocab)
        self.tower1 = make_tower(nfields * D, gen)
        self.opt1 = make_adam(self.tower1)
        self.tower2 = None
        self.opt2 = None

    def pool(self, ids, offsets, b):
        return self.emb(ids, offsets).view(b, -1)

    def adagrad_step(self):
        """Row-wise Adagrad on the rows the batch touched (summed gradient)."""
        g = self.emb.weight.grad
        self.emb.weight.grad = None
        if g is None:
            return
        g = g.coalesce()
        rows = g.indices()[0]
        with torch.no_grad():
            w = self.emb.weight
            gv = g.values() + L2 * w[rows]
            acc = self.acc[rows] + gv.pow(2).mean(1)
            self.acc[rows] = acc
            w.index_add_(0, rows, gv * (-LR_EMB / (acc.sqrt() + ADAGRAD_EPS)).unsqueeze(1))

    def state(self, finetune=False):
        if finetune:
            return (copy.deepcopy(self.tower2.state_dict()), copy.deepcopy(self.opt2.state_dict()))
        return (self.emb.weight.detach().clone(), self.acc.clone(),
                copy.deepcopy(self.tower1.state_dict()), copy.deepcopy(self.opt1.state_dict()))

    def restore(self, st, finetune=False):
        if finetune:
            self.tower2.load_state_dict(st[0])
            self.opt2.load_state_dict(st[1])
            return
        with torch.no_grad():
            self.emb.weight.copy_(st[0])
        self.acc.copy_(st[1])
        self.tower1.load_state_dict(st[2])
        self.opt1.load_state_dict(st[3])


def bce_mean(p, y):
    """Mean BCE of probabilities p against bool labels y, clamped like mtms."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(np.where(y, -np.log(p), -np.log1p(-p)))) if len(p) else float('nan')


def auc(score, label):
    """Exact ROC AUC, ties count one half (like mtms_auc)."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    npos = int(label.sum())
    nneg = len(label) - npos
    if npos == 0 or nneg == 0:
        return float('nan')
    _, inv, cnt = np.unique(score, return_inverse=True, return_counts=True)
    start = np.concatenate(([0], np.cumsum(cnt)[:-1]))
    ranks = start + (cnt + 1) / 2.0
    r = ranks[inv]
    return float((r[label].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def joint_loss(zc, zv, click, conv):
    """Sum over the batch of BCE(pctr, click) + [click] BCE(pcvr, conv)
    + BCE(pctr * pcvr, click and conv)."""
    l_ctr = F.binary_cross_entropy_with_logits(zc, click, reduction='sum')
    l_cvr = (F.binary_cross_entropy_with_logits(zv, conv, reduction='none') * click).sum()
    logq = F.logsigmoid(zc) + F.logsigmoid(zv)
    y = click * conv
    q = logq.exp().clamp(max=1 - 1e-7)
    l_ctcvr = -(y * logq + (1 - y) * torch.log1p(-q)).sum()
    return l_ctr + l_cvr + l_ctcvr


class MTMS:
    def __init__(self, scenes, fields, vocab_size, seen_by_scene, seed=42):
        self.scenes = scenes
        self.fields = fields
        self.S = len(scenes)
        self.P = 2 * self.S
        gen = torch.Generator().manual_seed(seed)
        self.pairs = [Pair(vocab_size, len(fields), seen_by_scene[p // 2], gen) for p in range(self.P)]
        self.gen = gen

    # -- prediction ----------------------------------------------------
    def logits1(self, s, scene, rows):
        """Phase-1 logits of (ctr, cvr) of scene for rows (numpy)."""
        out_c, out_v = [], []
        pc, pv = self.pairs[2 * scene], self.pairs[2 * scene + 1]
        with torch.no_grad():
            for b in range(0, len(rows), EVAL_BATCH):
                r = rows[b:b + EVAL_BATCH]
                ids, off = gather(s, r)
                out_c.append(pc.tower1(pc.pool(ids, off, len(r))).view(-1))
                out_v.append(pv.tower1(pv.pool(ids, off, len(r))).view(-1))
        return torch.cat(out_c).numpy(), torch.cat(out_v).numpy()

    def joined(self, ids, off, b):
        return torch.cat([p.pool(ids, off, b) for p in self.pairs], dim=1)

    def logits2(self, s, scene, rows, which=(0, 1)):
        outs = [[] for _ in which]
        with torch.no_grad():
            for b in range(0, len(rows), EVAL_BATCH):
                r = rows[b:b + EVAL_BATCH]
                ids, off = gather(s, r)
                x = self.joined(ids, off, len(r))
                for k, t in enumerate(which):
                    outs[k].append(self.pairs[2 * scene + t].tower2(x).view(-1))
        return [torch.cat(o).numpy() for o in outs]

    # -- validation ----------------------------------------------------
    def validate(self, s, vrows_by_scene, finetune, scenes=None):
        """Per scene (of scenes, default all): [loss ctr, loss cvr, loss
        ctcvr], [auc ...] on its validation rows."""
        res = {}
        for sc in range(self.S):
            rows = vrows_by_scene[sc]
            if len(rows) == 0 or (scenes is not None and sc not in scenes):
                continue
            if finetune:
                zc, zv = self.logits2(s, sc, rows)
            else:
                zc, zv = self.logits1(s, sc, rows)
            pc = 1 / (1 + np.exp(-zc.astype(np.float64)))
            pv = 1 / (1 + np.exp(-zv.astype(np.float64)))
            click = s.click[rows]
            conv = s.conv[rows]
            losses = [bce_mean(pc, click), bce_mean(pv[click], conv[click]),
                      bce_mean(pc * pv, click & conv)]
            aucs = [auc(pc, click), auc(pv[click], conv[click]), auc(pc * pv, click & conv)]
            res[sc] = (losses, aucs)
        return res


def batches(rng, rows):
    perm = rows[rng.permutation(len(rows))]
    for b in range(0, len(perm), BATCH):
        yield perm[b:b + BATCH]


def step_pair(pair, s, rows, task):
    b = len(rows)
    ids, off = gather(s, rows)
    z = pair.tower1(pair.pool(ids, off, b)).view(-1)
    y = torch.from_numpy((s.click if task == 0 else s.conv)[rows]).float()
    loss = F.binary_cross_entropy_with_logits(z, y)
    pair.opt1.zero_grad(set_to_none=True)
    loss.backward()
    pair.adagrad_step()
    pair.opt1.step()


def step_ctcvr(pc, pv, s, rows):
    b = len(rows)
    ids, off = gather(s, rows)
    zc = pc.tower1(pc.pool(ids, off, b)).view(-1)
    zv = pv.tower1(pv.pool(ids, off, b)).view(-1)
    click = torch.from_numpy(s.click[rows]).float()
    conv = torch.from_numpy(s.conv[rows]).float()
    loss = joint_loss(zc, zv, click, conv) / b
    pc.opt1.zero_grad(set_to_none=True)
    pv.opt1.zero_grad(set_to_none=True)
    loss.backward()
    pc.adagrad_step()
    pv.adagrad_step()
    pc.opt1.step()
    pv.opt1.step()


def step_finetune(model, pc, pv, s, rows):
    b = len(rows)
    ids, off = gather(s, rows)
    with torch.no_grad():
        x = model.joined(ids, off, b)
    zc = pc.tower2(x).view(-1)
    zv = pv.tower2(x).view(-1)
    click = torch.from_numpy(s.click[rows]).float()
    conv = torch.from_numpy(s.conv[rows]).float()
    loss = joint_loss(zc, zv, click, conv) / b
    pc.opt2.zero_grad(set_to_none=True)
    pv.opt2.zero_grad(set_to_none=True)
    loss.backward()
    pc.opt2.step()
    pv.opt2.step()


def finetune_tower_from(model, p):
    """Fine-tune tower of pair p: its phase-1 tower on its own block of the
    joined input, zero weights on the other pairs' blocks."""
    t1 = model.pairs[p].tower1
    in1 = len(model.fields) * D
    t2 = make_tower(model.P * in1, model.gen)
    with torch.no_grad():
        t2[0].weight.zero_()
        t2[0].weight[:, p * in1:(p + 1) * in1].copy_(t1[0].weight)
        t2[0].bias.copy_(t1[0].bias)
        for i in range(1, len(t1)):
            if isinstance(t1[i], torch.nn.Linear):
                t2[i].weight.copy_(t1[i].weight)
                t2[i].bias.copy_(t1[i].bias)
    return t2


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def train(model, s, train_mask, ft_mask, valid_mask, seed, log, ctcvr=True, finetune=True):
    S = model.S
    vrows = [np.nonzero(valid_mask & (s.scene == sc))[0] for sc in range(S)]
    rows1 = [np.nonzero(train_mask & (s.scene == sc))[0] for sc in range(S)]
    report = {'stages': {}}

    def run_stage(name, units, unit_rows, step, crit_of, finetune_stage=False, ft_rows=None):
        t0 = time.time()
        c0 = time.process_time()
        best = [math.inf] * len(units)
        bad = [0] * len(units)
        snap = [None] * len(units)
        active = [True] * len(units)
        epochs = [0] * len(units)
        sample_epochs = 0

        def unit_pass_checkpoints(u, unit, rows, step, crit_of, rng):
            """One pass over a unit's rows, validating it every len/PHASE1_EVALS
            rows and at the end, keeping its best, stopping it PHASE1_PATIENCE
            validations after the best.  Returns the rows trained."""
            perm = rows[rng.permutation(len(rows))]
            every = max(-(-len(perm) // PHASE1_EVALS), 1)
            done = since = 0
            scenes = {p // 2 for p in unit}
            for b in range(0, len(perm), BATCH):
                rb = perm[b:b + BATCH]
                step(unit, rb)
                done += len(rb)
                since += len(rb)
                if since >= every or done == len(perm):
                    since = 0
                    c = crit_of(unit, model.validate(s, vrows, False, scenes))
                    if not math.isnan(c) and c < best[u] - 1e-7:
                        best[u] = c
                        bad[u] = 0
                        snap[u] = unit_state(unit, False)
                    else:
                        bad[u] += 1
                    if bad[u] >= PHASE1_PATIENCE:
                        active[u] = False
                        break
            return done

        for epoch in range(1, MAX_EPOCHS + 1):
            if not any(active):
                break
            rng = np.random.default_rng([seed, epoch, len(name)])
            te = time.time()
            if finetune_stage and PHASE1_EVALS > 0:
                was = list(active)
                sample_epochs += finetune_pass_checkpoints(model, s, ft_rows, vrows, active, rng,
                                                           best, bad, snap, epoch == 1)
                epochs = [epoch if was[u] else epochs[u] for u in range(len(units))]
                log('%s epoch %d: %.1f s, %d of %d units still improving'
                    % (name, epoch, time.time() - te, sum(active), len(units)))
                continue
            if finetune_stage:
                sample_epochs += finetune_pass(model, s, ft_rows, vrows, active, rng)
            elif PHASE1_EVALS > 0:
                for u, unit in enumerate(units):
                    if active[u]:
                        sample_epochs += unit_pass_checkpoints(u, unit, unit_rows[u], step, crit_of, rng)
                        epochs[u] = epoch
                log('%s epoch %d: %.1f s, %d of %d units still improving'
                    % (name, epoch, time.time() - te, sum(active), len(units)))
                continue
            else:
                for u, unit in enumerate(units):
                    if not active[u]:
                        continue
                    for rb in batches(rng, unit_rows[u]):
                        step(unit, rb)
                    sample_epochs += len(unit_rows[u])
            val = model.validate(s, vrows, finetune_stage,
                                 {p // 2 for u, unit in enumerate(units) if active[u] for p in unit})
            for u, unit in enumerate(units):
                if not active[u]:
                    continue
                epochs[u] = epoch
                c = crit_of(unit, val)
                if not math.isnan(c) and c < best[u] - 1e-7:
                    best[u] = c
                    bad[u] = 0
                    snap[u] = unit_state(unit, finetune_stage)
                else:
                    bad[u] += 1
                if bad[u] >= PATIENCE:
                    active[u] = False
            log('%s epoch %d: %.1f s, %d of %d units still improving'
                % (name, epoch, time.time() - te, sum(active), len(units)))
        for u, unit in enumerate(units):
            if snap[u] is not None:
                unit_restore(unit, snap[u], finetune_stage)
        secs = time.time() - t0
        report['stages'][name] = {'seconds': secs, 'sample_epochs': sample_epochs,
                                  'cpu_seconds': time.process_time() - c0,
                                  'samples_per_s': sample_epochs / secs if secs > 0 else None,
                                  'epochs': epochs,
                                  'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}

    def unit_state(unit, ft):
        return [model.pairs[p].state(ft) for p in unit]

    def unit_restore(unit, st, ft):
        for p, x in zip(unit, st):
            model.pairs[p].restore(x, ft)

    # embedding stage: every pair on its own rows
    units = [(p,) for p in range(model.P)]
    unit_rows = []
    for p in range(model.P):
        r = rows1[p // 2]
        unit_rows.append(r if p % 2 == 0 else r[s.click[r]])

    def step_emb(unit, rb):
        p = unit[0]
        step_pair(model.pairs[p], s, rb, p % 2)

    def crit_emb(unit, val):
        p = unit[0]
        v = val.get(p // 2)
        return v[0][p % 2] if v else math.nan

    run_stage('embedding', units, unit_rows, step_emb, crit_emb)

    def crit_scene(unit, val):
        v = val.get(unit[0] // 2)
        if not v or math.isnan(v[0][0]):
            return math.nan
        return sum(x for x in v[0] if not math.isnan(x))

    if ctcvr:
        units = [(2 * sc, 2 * sc + 1) for sc in range(S)]

        def step_cc(unit, rb):
            step_ctcvr(model.pairs[unit[0]], model.pairs[unit[1]], s, rb)

        run_stage('ctcvr', units, rows1, step_cc, crit_scene)

    if finetune:
        for p in range(model.P):
            pr = model.pairs[p]
            pr.tower2 = finetune_tower_from(model, p)
            pr.opt2 = make_adam(pr.tower2)
            pr.emb.weight.requires_grad_(False)
        units = [(2 * sc, 2 * sc + 1) for sc in range(S)]
        ft_rows = np.nonzero(ft_mask)[0]
        run_stage('finetune', units, None, None, crit_scene, True, ft_rows)
    return report


def finetune_batches(s, ft_rows, active, rng):
    """A fine-tune pass's batches: the active scenes' rows in one shuffled
    order, cut into batches per scene, in order of completion (as mtms's
    pending lists fill).  Returns [(last position, scene, rows)], row count."""
    perm = ft_rows[rng.permutation(len(ft_rows))]
    perm = perm[np.isin(s.scene[perm], [sc for sc in range(len(active)) if active[sc]])]
    batches_ = []
    for sc in range(len(active)):
        pos = np.nonzero(s.scene[perm] == sc)[0]
        for b in range(0, len(pos), BATCH):
            chunk = pos[b:b + BATCH]
            batches_.append((int(chunk[-1]), sc, perm[chunk]))
    batches_.sort(key=lambda t: t[0])
    return batches_, len(perm)


def finetune_pass_checkpoints(model, s, ft_rows, vrows, active, rng, best, bad, snap, first):
    """A fine-tune pass on the tuned schedule: batches per scene in one
    shuffled order, the towers validated EVALS_PER_EPOCH times per pass (and
    at the very start), each scene keeping its best towers and stopping
    FT_PATIENCE validations after it (mtms's default patience).  best, bad, snap: per scene,
    across passes.  Returns the rows trained."""
    S = model.S
    batches_, total = finetune_batches(s, ft_rows, active, rng)
    every = max(total // EVALS_PER_EPOCH, 1)

    def checkpoint():
        val = model.validate(s, vrows, True, {sc for sc in range(S) if active[sc]})
        for sc in range(S):
            if not active[sc] or sc not in val or math.isnan(val[sc][0][0]):
                continue
            c = sum(x for x in val[sc][0] if not math.isnan(x))
            if c < best[sc] - 1e-7:
                best[sc] = c
                bad[sc] = 0
                snap[sc] = [model.pairs[p].state(True) for p in (2 * sc, 2 * sc + 1)]
            else:
                bad[sc] += 1
                if bad[sc] >= FT_PATIENCE:
                    active[sc] = False

    if first:
        checkpoint()
        for sc in range(S):
            bad[sc] = 0
    done = 0
    trained = 0
    next_eval = every
    for _, sc, rb in batches_:
        if not active[sc]:
            continue
        step_finetune(model, model.pairs[2 * sc], model.pairs[2 * sc + 1], s, rb)
        done += len(rb)
        trained += len(rb)
        if done >= next_eval and done < total:
            checkpoint()
            next_eval += every
    checkpoint()
    return trained


def finetune_pass(model, s, ft_rows, vrows, active, rng):
    """One fine-tune pass: batches per scene in one shuffled order, the towers
    validated at the start and EVALS_PER_EPOCH times, each scene keeping its
    best towers.  Returns the rows trained."""
    S = model.S
    batches_, total = finetune_batches(s, ft_rows, active, rng)
    every = max(total // EVALS_PER_EPOCH, 1)
    best = [math.inf] * S
    kept = [None] * S

    def checkpoint():
        val = model.validate(s, vrows, True, {sc for sc in range(S) if active[sc]})
        for sc in range(S):
            if not active[sc] or sc not in val or math.isnan(val[sc][0][0]):
                continue
            c = sum(x for x in val[sc][0] if not math.isnan(x))
            if c < best[sc]:
                best[sc] = c
                kept[sc] = [model.pairs[p].state(True) for p in (2 * sc, 2 * sc + 1)]

    checkpoint()
    done = 0
    next_eval = every
    for _, sc, rb in batches_:
        step_finetune(model, model.pairs[2 * sc], model.pairs[2 * sc + 1], s, rb)
        done += len(rb)
        if done >= next_eval and done < total:
            checkpoint()
            next_eval += every
    checkpoint()
    for sc in range(S):
        if kept[sc] is not None:
            for p, st in zip((2 * sc, 2 * sc + 1), kept[sc]):
                model.pairs[p].restore(st, True)
    return total


def test_auc(model, s, rows, finetune=True):
    out = {}
    for sc in range(model.S):
        r = rows[s.scene[rows] == sc]
        if len(r) == 0:
            continue
        if finetune:
            zc, zv = model.logits2(s, sc, r)
        else:
            zc, zv = model.logits1(s, sc, r)
        pc = 1 / (1 + np.exp(-zc.astype(np.float64)))
        pv = 1 / (1 + np.exp(-zv.astype(np.float64)))
        click = s.click[r]
        conv = s.conv[r]
        out[model.scenes[sc]] = {'ctr': auc(pc, click), 'cvr': auc(pv[click], conv[click]),
                                 'ctcvr': auc(pc * pv, click & conv),
                                 'n': int(len(r)), 'clicks': int(click.sum())}
    return out


def set_threads(n):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def cmd_train(a):
    set_threads(a.threads)
    log = (lambda m: print('pytorch: ' + m, file=sys.stderr, flush=True))
    fields = a.fields.split(',')
    scenes = a.scenes.split(',')
    t0 = time.time()
    vocab = {}
    s = read_samples(a.data, fields, scenes, vocab)
    t_read = time.time() - t0
    test = s.slot >= a.test_slot
    valid = ~test & (s.u < VALID_FRACTION)
    if a.variant == 'mtms':
        ft = ~test & (s.u >= VALID_FRACTION) & (s.u < VALID_FRACTION + FINETUNE_FRACTION)
        tr = ~test & (s.u >= VALID_FRACTION + FINETUNE_FRACTION)
    else:
        ft = np.zeros(s.n, dtype=bool)
        tr = ~test & (s.u >= VALID_FRACTION)
    # a pair's embedding rows exist for the features its scene's phase-1
    # training rows contain (mtms creates rows on first sight)
    seen = []
    for sc in range(len(scenes)):
        m = np.zeros(len(vocab), dtype=bool)
        r = np.nonzero(tr & (s.scene == sc))[0]
        ids, _ = gather(s, r)
        m[ids.numpy()] = True
        seen.append(m)
    global PHASE1_EVALS, PHASE1_PATIENCE, FT_PATIENCE
    PHASE1_EVALS = a.evals_per_epoch
    PHASE1_PATIENCE = a.patience_checks
    FT_PATIENCE = a.finetune_patience_checks
    torch.manual_seed(a.seed)
    model = MTMS(scenes, fields, len(vocab), seen, a.seed)
    t_prep = time.time() - t0
    maxrss_prepared = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log('read %d rows (%d features) in %.1f s, prepared in %.1f s; threads %d'
        % (s.n, len(vocab), t_read, t_prep, torch.get_num_threads()))
    t1 = time.time()
    rep = train(model, s, tr, ft, valid, a.seed, log,
                ctcvr=(a.variant != 'separate'), finetune=(a.variant == 'mtms'))
    t_train = time.time() - t1
    rep['read_seconds'] = t_read
    rep['prepare_seconds'] = t_prep
    rep['maxrss_prepared_kb'] = maxrss_prepared
    rep['train_seconds'] = t_train
    rep['threads'] = torch.get_num_threads()
    rep['rows'] = {'all': int(s.n), 'phase1': int(tr.sum()), 'finetune': int(ft.sum()),
                   'valid': int(valid.sum()), 'test': int(test.sum())}
    rep['vocab'] = len(vocab)
    rep['test_auc'] = test_auc(model, s, np.nonzero(test)[0], finetune=(a.variant == 'mtms'))
    nemb = sum(int(x.sum()) for x in seen) * 2
    rep['embedding_rows'] = nemb
    if a.save:
        torch.save({'scenes': scenes, 'fields': fields, 'vocab': vocab,
                    'emb': [p.emb.weight.detach() for p in model.pairs],
                    'tower2': [p.tower2.state_dict() if p.tower2 is not None else None
                               for p in model.pairs],
                    'tower1': [p.tower1.state_dict() for p in model.pairs]}, a.save)
    print(json.dumps(rep))


# ---------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------

class Scorer:
    def __init__(self, path):
        m = torch.load(path)
        self.scenes = m['scenes']
        self.fields = m['fields']
        self.vocab = m['vocab']
        self.embs = [torch.nn.EmbeddingBag.from_pretrained(w, mode='sum') for w in m['emb']]
        in1 = len(self.fields) * D
        self.towers = []
        for t2 in m['tower2']:
            t = make_tower(in1 * len(self.embs), torch.Generator())
            t.load_state_dict(t2)
            t.eval()
            self.towers.append(t)

    def ctr(self, s, rows):
        """pCTR of rows of sample set s (batched by scene)."""
        out = np.empty(len(rows))
        with torch.no_grad():
            for sc in range(len(self.scenes)):
                sel = np.nonzero(s.scene[rows] == sc)[0]
                for b in range(0, len(sel), EVAL_BATCH):
                    r = rows[sel[b:b + EVAL_BATCH]]
                    ids, off = gather(s, r)
                    x = torch.cat([e(ids, off).view(len(r), -1) for e in self.embs], dim=1)
                    out[sel[b:b + EVAL_BATCH]] = torch.sigmoid(self.towers[2 * sc](x).view(-1)).numpy()
        return out


def samples_from_lists(scenes_txt, feats_lists, scenes, fields, vocab):
    """Sample set from (scene, features list) pairs, e.g. fetched with psycopg2."""
    fidx = {f: i for i, f in enumerate(fields)}
    sidx = {x: i for i, x in enumerate(scenes)}
    nf = len(fields)
    ids, row_len, bag_len, scene = [], [], [], []
    for sc, feats in zip(scenes_txt, feats_lists):
        scene.append(sidx[sc])
        per_field = [[] for _ in range(nf)]
        for ft in feats:
            g = vocab.get(ft)
            if g is not None:
                per_field[fidx[ft[:ft.index('=')]]].append(g)
        k = 0
        for lst in per_field:
            ids.extend(lst)
            bag_len.append(len(lst))
            k += len(lst)
        row_len.append(k)
    s = Samples()
    s.n = len(scene)
    s.scene = np.array(scene, dtype=np.int64)
    s.ids = np.array(ids, dtype=np.int64)
    s.row_len = np.array(row_len, dtype=np.int64)
    s.row_start = np.concatenate(([0], np.cumsum(s.row_len)[:-1])).astype(np.int64)
    s.bag_len = np.array(bag_len, dtype=np.int64).reshape(s.n, nf)
    return s


def cmd_score(a):
    set_threads(a.threads)
    sc = Scorer(a.model)
    s = read_samples(a.data, sc.fields, sc.scenes, sc.vocab, grow=False)
    rows = np.nonzero(s.slot < a.test_slot)[0]
    sc.ctr(s, rows[:10000])        # warm-up
    t0 = time.time()
    p = sc.ctr(s, rows)
    secs = time.time() - t0
    print(json.dumps({'rows': int(len(rows)), 'seconds': secs, 'rows_per_s': len(rows) / secs,
                      'sum': float(p.sum()), 'threads': torch.get_num_threads()}))


def cmd_roundtrip(a):
    import io
    import psycopg2
    set_threads(a.threads)
    sc = Scorer(a.model)
    conn = psycopg2.connect('')
    t0 = time.time()
    cur = conn.cursor('rt')
    cur.itersize = 100000
    cur.execute('SELECT id, scene, features FROM %s' % a.table)
    ids_all, scores_all = [], []
    t_fetch = t_feat = t_score = 0.0
    while True:
        tf = time.time()
        chunk = cur.fetchmany(100000)
        t_fetch += time.time() - tf
        if not chunk:
            break
        tf = time.time()
        s = samples_from_lists([r[1] for r in chunk], [r[2] for r in chunk],
                               sc.scenes, sc.fields, sc.vocab)
        t_feat += time.time() - tf
        tf = time.time()
        p = sc.ctr(s, np.arange(s.n))
        t_score += time.time() - tf
        ids_all.extend(r[0] for r in chunk)
        scores_all.append(p)
    cur.close()
    tw = time.time()
    scores = np.concatenate(scores_all)
    wc = conn.cursor()
    wc.execute('DROP TABLE IF EXISTS %s_torch; CREATE TABLE %s_torch (id bigint, score float8)'
               % (a.table, a.table))
    buf = io.StringIO()
    buf.write(''.join('%d\t%.17g\n' % (i, x) for i, x in zip(ids_all, scores)))
    buf.seek(0)
    wc.copy_expert('COPY %s_torch FROM STDIN' % a.table, buf)
    conn.commit()
    t_write = time.time() - tw
    secs = time.time() - t0
    conn.close()
    print(json.dumps({'rows': len(ids_all), 'seconds': secs, 'rows_per_s': len(ids_all) / secs,
                      'fetch_s': t_fetch, 'featurize_s': t_feat, 'score_s': t_score,
                      'write_s': t_write, 'sum': float(scores.sum()),
                      'threads': torch.get_num_threads()}))


def cmd_rank(a):
    """Latency of one ranking request in PyTorch: featurize 1,000 candidates
    (user features + each ad's features), score pCTCVR, take the top 10."""
    set_threads(a.threads)
    sc = Scorer(a.model)
    req = json.load(open(a.requests))
    ads = req['ads']                 # list of ad feature lists
    lat = []
    with torch.no_grad():
        for k, (scene, user) in enumerate(req['requests']):
            start = req['starts'][k]
            cand = ads[start:start + 1000]
            t0 = time.perf_counter()
            s = samples_from_lists([scene] * len(cand), [user + f for f in cand],
                                   sc.scenes, sc.fields, sc.vocab)
            ids, off = gather(s, np.arange(s.n))
            x = torch.cat([e(ids, off).view(s.n, -1) for e in sc.embs], dim=1)
            si = sc.scenes.index(scene)
            p = torch.sigmoid(sc.towers[2 * si](x)) * torch.sigmoid(sc.towers[2 * si + 1](x))
            top = torch.topk(p.view(-1), 10).indices.tolist()
            lat.append(time.perf_counter() - t0)
            del top
    lat = np.array(lat[10:]) * 1000
    print(json.dumps({'requests': len(lat), 'p50_ms': float(np.percentile(lat, 50)),
                      'p99_ms': float(np.percentile(lat, 99)), 'threads': torch.get_num_threads()}))


def cmd_blas(a):
    import ctypes
    torch.set_num_threads(a.threads)
    x = torch.randn(256, 48)
    torch.mm(x, torch.randn(48, 64))      # the BLAS is loaded by now
    path = None
    with open('/proc/self/maps') as f:
        for line in f:
            name = line.split()[-1]
            if 'libopenblas' in name and '.so' in name:
                path = name
                break
    info = {'path': path, 'library': 'OpenBLAS' if path else 'unknown (torch %s)' % torch.__version__}
    if path:
        lib = ctypes.CDLL(path)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        info['kernels'] = lib.openblas_get_corename().decode()
        info['config'] = lib.openblas_get_config().decode()
        info['version'] = info['config'].split()[1] if info['config'].startswith('OpenBLAS ') else '?'
        info['threads'] = lib.openblas_get_num_threads()
        info['environment_coretype'] = os.environ.get('OPENBLAS_CORETYPE')
    # the three products of a dense layer on 256-row batches, over the
    # towers' layers (as src/blas_info.c measures them)
    flops = secs = 0.0
    for nin, nout in [(48, 64), (64, 32), (32, 1), (288, 64)]:
        xb = torch.rand(256, nin) - 0.5
        w = torch.rand(nout, nin) - 0.5
        gw = torch.zeros(nout, nin)
        reps = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(8):
                y = torch.mm(xb, w.t())
                gw.addmm_(y.t(), xb)
                torch.mm(y, w)
            reps += 8
            t = time.perf_counter() - t0
            if t >= 0.04:
                break
        flops += 3 * 2.0 * 256 * nin * nout * reps
        secs += t
    info['gflops'] = flops / secs / 1e9
    info['torch_threads'] = torch.get_num_threads()
    print(json.dumps(info))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    t = sub.add_parser('train')
    t.add_argument('--data', required=True)
    t.add_argument('--fields', default='user,ad,advertiser,hour,device,tag')
    t.add_argument('--scenes', default='search,feeds,video')
    t.add_argument('--test-slot', type=int, default=5, help='slots >= this one test')
    t.add_argument('--threads', type=int, default=1)
    t.add_argument('--seed', type=int, default=42)
    t.add_argument('--variant', choices=['mtms', 'p1', 'separate'], default='mtms')
    t.add_argument('--evals-per-epoch', type=int, default=PHASE1_EVALS,
                   help='phase-1 validations per pass over a unit (0: once per pass, patience 2 passes)')
    t.add_argument('--patience-checks', type=int, default=PHASE1_PATIENCE,
                   help='phase-1 validations without improvement before a unit stops')
    t.add_argument('--finetune-patience-checks', type=int, default=FT_PATIENCE,
                   help='fine-tune validations (4 per pass) without improvement before a scene stops')
    t.add_argument('--save')
    t.set_defaults(fn=cmd_train)
    t = sub.add_parser('score')
    t.add_argument('--model', required=True)
    t.add_argument('--data', required=True)
    t.add_argument('--test-slot', type=int, default=5, help='score the rows of earlier slots')
    t.add_argument('--threads', type=int, default=1)
    t.set_defaults(fn=cmd_score)
    t = sub.add_parser('roundtrip')
    t.add_argument('--model', required=True)
    t.add_argument('--table', required=True)
    t.add_argument('--threads', type=int, default=1)
    t.set_defaults(fn=cmd_roundtrip)
    t = sub.add_parser('rank')
    t.add_argument('--model', required=True)
    t.add_argument('--requests', required=True)
    t.add_argument('--threads', type=int, default=1)
    t.set_defaults(fn=cmd_rank)
    t = sub.add_parser('blas')
    t.add_argument('--threads', type=int, default=1)
    t.set_defaults(fn=cmd_blas)
    a = ap.parse_args()
    a.fn(a)


if __name__ == '__main__':
    main()
