/*
 * unit_train.c
 *    Training one unit of a stage to convergence (see unit_train.h).
 *
 * The unit's rows are numbered 0 .. n-1 (its scene's rows of the window
 * that it takes, in reading order).  Each pass visits them in a
 * permutation drawn from pg_prng seeded by (seed, stage, epoch, unit), in
 * mini-batches of batch_size; phase-1 stages decode each batch's rows from
 * the row store, the fine-tune reads the keys and frozen joined embeddings
 * of all the unit's rows, looked up once.  Every ceil(n / evals_per_epoch)
 * rows, but no sooner than MIN_CHECK_BATCHES mini-batches, and at the end
 * of a pass, the unit is validated on its scene's
 * validation rows; it keeps a copy of its parameters at each improvement
 * and stops after patience validations without one.
 */
#include "unit_train.h"

#include <math.h>

#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "joined_keys.h"
#include "progress.h"
#include "miscadmin.h"
#include "train_loss.h"
#include "train_state.h"
#include "train_step.h"
#include "unit_snapshot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/*
 * At least this many mini-batches between two validations: a small unit
 * (a few thousand rows) validated evals_per_epoch times a pass would take
 * a handful of steps between checks and stop on the validation's noise
 * (measured: a 6k-row fine-tune stopped after 2 passes, 0.03-0.05 test AUC
 * below the same unit trained 5 or 6).
 */
#define MIN_CHECK_BATCHES 16

/* A unit in training. */
typedef struct UnitRun
{
	const MtmsUnitJob *job;
	const MtmsStageInfo *si;
	int			scene;
	MtmsStepCtx ctx;
	int64		n;				/* the unit's rows */
	int64	   *store_row;		/* [n] their rows in the store */
	MtmsRowSet	labels;			/* keyed stages: labels of the unit's rows */
	MtmsRowSet	batch;			/* phase 1: the decoded batch */
	int64	   *batch_pos;		/* 0 .. batch_size-1 */
	MtmsRowSet	vset;			/* the scene's validation rows, decoded */
	int64	   *vrows;			/* 0 .. vset.nrows-1 */
	struct MtmsJoinedKeys *vkeys;	/* keyed stages: their keys */
	MtmsUnitSnapshot snap;		/* the best parameters so far */
	MtmsUnitResult best;
	int			bad;			/* validations without improvement */
	int32		checkpoints;
	int32		best_checkpoint;
	int64		since;			/* rows trained since the last validation */
	int64		epoch_n[MTMS_NMETRICS];	/* training rows per pass, per slot */
	MtmsUnitResult last;		/* the last validation during training */
	bool		done;
	int64		trained;		/* rows of all its mini-batches so far */
	TimestampTz start;
	MtmsCheckpoint *hist;		/* every validation, for the history */
	int32		nhist;
	int32		hist_cap;
	MemoryContext caller;		/* the caller's context (between_batches) */
} UnitRun;

int64
mtms_unit_rows(const MtmsStageInfo *si, int unit, const MtmsRowStore *rows)
{
	int64		first;
	int64		count = mtms_rs_scene_rows(rows, mtms_unit_scene(si, unit), &first);
	const uint8 *label = mtms_rs_labels(rows);
	int64		n = 0;

	for (int64 r = first; r < first + count; r++)
		n += si->takes_row(unit, label[r]);
	return n;
}

/* The unit's rows, its validation rows, keys and scratch. */
static void
unit_setup(UnitRun *run, const MtmsUnitJob *job)
{
	const MtmsUnitData *d = job->data;
	const uint8 *label = mtms_rs_labels(d->rows);
	int64		first;
	int64		count;
	int64		vfirst;
	int64		vcount;
	int64	   *vstore;
	MtmsModel  *m = job->model;

	run->job = job;
	run->si = job->si;
	run->scene = mtms_unit_scene(job->si, job->unit);
	count = mtms_rs_scene_rows(d->rows, run->scene, &first);
	run->store_row = palloc_extended(sizeof(int64) * Max(count, 1), MCXT_ALLOC_HUGE);
	run->n = 0;
	for (int64 r = first; r < first + count; r++)
		if (job->si->takes_row(job->unit, label[r]))
			run->store_row[run->n++] = r;

	vcount = mtms_rs_scene_rows(d->valid, run->scene, &vfirst);
	vstore = palloc_extended(sizeof(int64) * Max(vcount, 1), MCXT_ALLOC_HUGE);
	run->vrows = palloc_extended(sizeof(int64) * Max(vcount, 1), MCXT_ALLOC_HUGE);
	for (int64 i = 0; i < vcount; i++)
		vstore[i] = vfirst + i, run->vrows[i] = i;
	mtms_rowset_init(&run->vset);
	mtms_row_store_decode(d->valid, run->scene, vstore, vcount, &run->vset);

	memset(&run->ctx, 0, sizeof(MtmsStepCtx));
	run->ctx.model = m;
	run->ctx.opts = job->opts;
	run->ctx.cxt = CurrentMemoryContext;
	run->ctx.work = mtms_batch_work_create(m, job->opts->batch_size);
	run->ctx.frozen_fields = job->frozen_fields;
	run->ctx.loss_sum = palloc0(sizeof(double) * m->nscenes * MTMS_NMETRICS);
	run->ctx.loss_n = palloc0(sizeof(int64) * m->nscenes * MTMS_NMETRICS);
	mtms_rowset_init(&run->batch);
	mtms_rowset_init(&run->labels);
	run->batch_pos = palloc(sizeof(int64) * job->opts->batch_size);
	for (int i = 0; i < job->opts->batch_size; i++)
		run->batch_pos[i] = i;
	if (job->si->keyed_rows)
	{
		run->ctx.keys = mtms_joined_keys_from_store(d->rows, run->store_row, run->n,
													d->joined_rows);
		run->vkeys = mtms_joined_keys_from_store(d->valid, vstore, vcount,
												 d->joined_valid);
		mtms_rowset_reserve(&run->labels, run->n, 0);
		for (int64 i = 0; i < run->n; i++)
			run->labels.scene[i] = run->scene, run->labels.label[i] = label[run->store_row[i]];
		run->labels.nrows = run->n;
	}
	pfree(vstore);

	/* training rows per pass, per metric slot of the scene */
	if (job->si->unit_is_pair)
		run->epoch_n[MTMS_PAIR_TASK(job->unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR] = run->n;
	else
	{
		run->epoch_n[MTMS_M_CTR] = run->epoch_n[MTMS_M_CTCVR] = run->n;
		for (int64 i = 0; i < run->n; i++)
			run->epoch_n[MTMS_M_CVR] += (label[run->store_row[i]] & MTMS_LABEL_CLICK) != 0;
	}
}

/* The unit's figures now: validation of its scene, training since the last one. */
static void
unit_validate(UnitRun *run, MtmsUnitResult *r)
{
	const MtmsStageInfo *si = run->si;
	int64		nr = run->vset.nrows;
	int			base = run->scene * MTMS_NMETRICS;
	float	   *zc = palloc_extended(sizeof(float) * Max(nr, 1), MCXT_ALLOC_HUGE);
	float	   *zv = palloc_extended(sizeof(float) * Max(nr, 1), MCXT_ALLOC_HUGE);
	MtmsSceneMetrics sm;
	int			slot;

	memset(r, 0, sizeof(*r));
	if (nr > 0)
	{
		si->validation_logits(&run->ctx, run->scene, &run->vset, run->vrows, nr, zc, zv,
							  &run->vkeys);
		mtms_validation_metrics(&run->vset, run->vrows, nr, zc, zv, INFINITY, &sm);
	}
	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		int64		k = run->ctx.loss_n[base + t];

		r->m_n[t] = run->epoch_n[t];
		r->m_train[t] = k > 0 ? run->ctx.loss_sum[base + t] / k : NAN;
		r->m_loss[t] = nr > 0 ? sm.vloss[t] : NAN;
		r->m_auc[t] = nr > 0 ? sm.vauc[t] : NAN;
	}
	slot = si->unit_is_pair ?
		(MTMS_PAIR_TASK(run->job->unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR) : MTMS_M_CTCVR;
	r->samples = run->n;
	r->train_loss = r->m_train[slot];
	r->valid_loss = r->m_loss[slot];
	r->valid_auc = r->m_auc[slot];
	if (si->unit_is_pair)
		r->crit = r->valid_loss;
	else if (isnan(r->m_loss[MTMS_M_CTR]))
		r->crit = NAN;
	else
	{
		r->crit = 0;
		for (int t = 0; t < MTMS_NMETRICS; t++)
			if (!isnan(r->m_loss[t]))
				r->crit += r->m_loss[t];
	}
	pfree(zc);
	pfree(zv);
}

/* A validation into the unit's history. */
static void
record_checkpoint(UnitRun *run, const MtmsUnitResult *r, int epoch)
{
	MtmsCheckpoint *c;

	if (run->nhist == run->hist_cap)
	{
		run->hist_cap = Max(16, run->hist_cap * 2);
		run->hist = run->hist ?
			repalloc(run->hist, sizeof(MtmsCheckpoint) * run->hist_cap) :
			palloc(sizeof(MtmsCheckpoint) * run->hist_cap);
	}
	c = &run->hist[run->nhist++];
	memset(c, 0, sizeof(*c));
	c->checkpoint = run->checkpoints;
	c->epoch = epoch;
	c->rows = run->trained;
	c->seconds = (double) (GetCurrentTimestamp() - run->start) / 1e6;
	memcpy(c->train_loss, r->m_train, sizeof(c->train_loss));
	memcpy(c->valid_loss, r->m_loss, sizeof(c->valid_loss));
	memcpy(c->valid_auc, r->m_auc, sizeof(c->valid_auc));
}

/* The history, its kept checkpoint marked, into out (in context cxt). */
static void
history_out(UnitRun *run, MemoryContext cxt, MtmsUnitOutcome *out)
{
	bool		kept = run->snap.npairs > 0;

	out->nhistory = run->nhist;
	out->history = MemoryContextAlloc(cxt, sizeof(MtmsCheckpoint) * Max(run->nhist, 1));
	for (int i = 0; i < run->nhist; i++)
	{
		out->history[i] = run->hist[i];
		out->history[i].kept = kept && run->hist[i].checkpoint == run->best_checkpoint;
	}
}

static void
keep_best(UnitRun *run, const MtmsUnitResult *r)
{
	run->best = *r;
	run->best_checkpoint = run->checkpoints;
	mtms_unit_snapshot_take(&run->snap, run->job->model, run->si, run->job->unit);
}

/* A validation during training: keep an improvement, stop after patience without. */
static void
unit_checkpoint(UnitRun *run, int epoch)
{
	MtmsUnitResult r;
	const MtmsOptions *o = run->job->opts;

	run->checkpoints++;
	unit_validate(run, &r);
	r.epochs = epoch;
	r.trained = true;
	record_checkpoint(run, &r, epoch);
	run->last = r;
	run->since = 0;
	if (isnan(r.crit))
	{
		/* nothing to validate against: keep this pass, stop */
		if (run->snap.npairs == 0)
			keep_best(run, &r);
		run->done = true;
		return;
	}
	if (mtms_improved(r.crit, run->best.crit, o->min_delta))
	{
		keep_best(run, &r);
		run->bad = 0;
	}
	else if (++run->bad >= o->patience)
		run->done = true;
}

/* The permutation of a pass: from (seed, stage, epoch, unit) alone. */
static void
unit_order(UnitRun *run, int epoch, int64 *order)
{
	pg_prng_state prng;
	uint64		seed;

	seed = hash_combine64((uint64) run->job->opts->seed,
						  ((uint64) run->si->stage << 32) | (uint32) epoch);
	seed = hash_combine64(seed, (uint64) run->job->unit + 1);
	pg_prng_seed(&prng, seed);
	for (int64 i = 0; i < run->n; i++)
		order[i] = i;
	for (int64 i = run->n - 1; i > 0; i--)
	{
		int64		j = (int64) pg_prng_uint64_range(&prng, 0, (uint64) i);
		int64		t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
}

/* One mini-batch: the rows order[0..nb) of the unit. */
static void
unit_batch(UnitRun *run, const int64 *order, int nb)
{
	if (run->si->keyed_rows)
	{
		run->si->step(&run->ctx, run->job->unit, &run->labels, order, nb);
		return;
	}
	for (int i = 0; i < nb; i++)
		run->batch_pos[i] = run->store_row[order[i]];
	mtms_row_store_decode(run->job->data->rows, run->scene, run->batch_pos, nb, &run->batch);
	for (int i = 0; i < nb; i++)
		run->batch_pos[i] = i;
	run->si->step(&run->ctx, run->job->unit, &run->batch, run->batch_pos, nb);
}

/*
 * The unit's towers get gradient accumulators for its training (in the
 * model's context) and lose them after: a held model carries none (nor,
 * after its last stage, Adam moments).
 */
static void
unit_grads(const MtmsUnitJob *job, bool on)
{
	MtmsModel  *m = job->model;
	int			pairs[2];
	int			n = mtms_unit_pairs(job->si, job->unit, pairs);
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int i = 0; i < n; i++)
	{
		MtmsTower  *t = job->si->trains_embeddings ? m->tower1[pairs[i]] : m->tower2[pairs[i]];

		if (on)
			mtms_tower_ensure_grad(t);
		else if (job->si->last_for_towers)
			mtms_tower_drop_training_state(t);
		else
			mtms_tower_drop_grad(t);
	}
	MemoryContextSwitchTo(old);
}

/* One pass over the unit's rows, validating every interval rows. */
static void
unit_pass(UnitRun *run, int epoch, int64 *order, int64 interval)
{
	int			B = run->job->opts->batch_size;

	/* training losses are reported per pass (so far) */
	memset(run->ctx.loss_sum, 0, sizeof(double) * run->job->model->nscenes * MTMS_NMETRICS);
	memset(run->ctx.loss_n, 0, sizeof(int64) * run->job->model->nscenes * MTMS_NMETRICS);
	unit_order(run, epoch, order);
	mtms_progress_unit(run->job->model->scenes[run->scene],
					   run->si->unit_is_pair ? mtms_task_name(MTMS_PAIR_TASK(run->job->unit)) : NULL,
					   epoch);
	for (int64 b = 0; b < run->n && !run->done; b += B)
	{
		int			nb = (int) Min((int64) B, run->n - b);

		CHECK_FOR_INTERRUPTS();
		unit_batch(run, order + b, nb);
		if (run->job->between_batches)
		{
			MemoryContext here = MemoryContextSwitchTo(run->caller);

			run->job->between_batches(run->job->between_arg);
			MemoryContextSwitchTo(here);
		}
		mtms_progress_rows(nb);
		run->trained += nb;
		run->since += nb;
		if (run->since >= interval || b + nb >= run->n)
			unit_checkpoint(run, epoch);
	}
}

void
mtms_unit_train(const MtmsUnitJob *job, MtmsUnitOutcome *out)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms unit",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	const MtmsOptions *o = job->opts;
	UnitRun		run;
	int64	   *order;
	int64		interval;
	int			epoch = 0;

	memset(&run, 0, sizeof(run));
	run.caller = old;
	run.start = GetCurrentTimestamp();
	unit_grads(job, true);
	unit_setup(&run, job);
	run.best.crit = INFINITY;
	run.best.valid_loss = run.best.valid_auc = run.best.train_loss = NAN;
	if (job->start_is_candidate)
	{
		MtmsUnitResult r;

		unit_validate(&run, &r);
		record_checkpoint(&run, &r, 0);
		if (!isnan(r.crit))
			keep_best(&run, &r);
	}
	order = palloc_extended(sizeof(int64) * Max(run.n, 1), MCXT_ALLOC_HUGE);
	interval = Max((run.n + o->evals_per_epoch - 1) / Max(o->evals_per_epoch, 1),
				   (int64) MIN_CHECK_BATCHES * o->batch_size);
	while (run.n > 0 && !run.done && epoch < o->max_epochs)
		unit_pass(&run, ++epoch, order, interval);
	history_out(&run, old, out);
	if (run.snap.npairs > 0)
		mtms_unit_snapshot_restore(&run.snap, job->model, job->si);
	mtms_unit_snapshot_free(&run.snap);
	unit_grads(job, false);

	out->best = run.best;
	out->best.epochs = epoch;
	out->best.samples = run.n;
	memcpy(out->best.m_n, run.epoch_n, sizeof(run.epoch_n));
	if (run.best_checkpoint == 0 && run.checkpoints > 0)
	{
		/* the start was kept: report the loss training reached */
		out->best.train_loss = run.last.train_loss;
		memcpy(out->best.m_train, run.last.m_train, sizeof(run.last.m_train));
	}
	out->checkpoints = run.checkpoints;
	out->best_checkpoint = run.best_checkpoint;
	out->epochs = run.n > 0 ? (double) run.trained / run.n : 0;
	out->rows_trained = run.trained;
	out->seconds = (double) (GetCurrentTimestamp() - run.start) / 1e6;
	mtms_progress_unit_done(run.trained, run.n);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
