/*
 * train_state.c
 *    One training pass as an aggregate state: its life (create, prepare,
 *    free), the shuffle buffer, and the dispatch of mini-batches to the
 *    stage's step function.
 *
 * See train_state.h for the life of a pass.
 */
#include "train_state.h"
#include "joined_keys.h"
#include "kept_rows.h"
#include "train_stages.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/parallel.h"
#include "auc.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "common/file_utils.h"	/* PG_TEMP_FILES_DIR moved here in 16 */
#endif


/* ---------------------------------------------------------------------
 * States
 * --------------------------------------------------------------------- */

void
mtms_state_alloc_stats(MtmsTrainState *st)
{
	int			n = st->model->nscenes * MTMS_NMETRICS;

	st->loss_sum = palloc0(sizeof(double) * n);
	st->loss_n = palloc0(sizeof(int64) * n);
	st->vloss = palloc0(sizeof(double) * n);
	st->vauc = palloc0(sizeof(double) * n);
	st->vn = palloc0(sizeof(int64) * n);
	st->vpos = palloc0(sizeof(int64) * n);
}

MtmsTrainState *
mtms_state_alloc(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "mtms training state",
											  ALLOCSET_DEFAULT_SIZES);
	MtmsTrainState *st = MemoryContextAllocZero(cxt, sizeof(MtmsTrainState));

	st->cxt = cxt;
	return st;
}

MtmsTrainState *
mtms_state_create(const MtmsModel *model, const MtmsOptions *opts,
				  MtmsStage stage, int epoch, const bool *unit_active,
				  const MtmsRowSet *valid)
{
	MtmsTrainState *st = mtms_state_alloc(CurrentMemoryContext);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	/*
	 * Borrowed, not copied: a base state only reads the model (to publish
	 * it, as the start of every participant's copy and of the combine), and
	 * the driver keeps it unchanged until the state is freed.  One model
	 * copy less at the peak of every pass.
	 */
	st->model = unconstify(MtmsModel *, model);
	st->opts = *opts;
	st->stage = stage;
	st->epoch = epoch;
	st->nunits = mtms_stage_nunits(mtms_stage_info(stage), model->nscenes);
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	memcpy(st->unit_active, unit_active, sizeof(bool) * st->nunits);
	st->collect_valid = (valid == NULL);
	/* every row of every scene trains until the driver says otherwise */
	st->train_lo = palloc0(sizeof(double) * model->nscenes);
	st->train_hi = palloc(sizeof(double) * model->nscenes);
	for (int s = 0; s < model->nscenes; s++)
		st->train_hi[s] = 1.0;
	/* the validation rows are borrowed too (read-only in a base state) */
	mtms_rowset_init(&st->valid);
	if (valid)
		st->valid = *valid;
	mtms_state_alloc_stats(st);
	MemoryContextSwitchTo(old);
	return st;
}

void
mtms_state_free(MtmsTrainState *s)
{
	if (s)
		MemoryContextDelete(s->cxt);
}


/*
 * Make a state ready to consume rows: fresh statistics, update counts and
 * combine weights, the work area, the shuffling generator.
 */
void
mtms_state_prepare(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	int			n = m->nscenes * MTMS_NMETRICS;
	uint64		seed;

	memset(st->loss_sum, 0, sizeof(double) * n);
	memset(st->loss_n, 0, sizeof(int64) * n);
	st->rows_in = st->rows_trained = st->bad_conversions = 0;
	for (int p = 0; p < m->npairs; p++)
	{
		MemoryContext mc = MemoryContextSwitchTo(m->cxt);

		mtms_emb_reset_counts(m->emb[p]);
		m->tower1[p]->nsamples = 0;
		if (m->tower2[p])
			m->tower2[p]->nsamples = 0;

		/*
		 * Gradients (and Adam moments) for the towers this state trains; a
		 * collecting pass trains nothing, and its state shares the driver's
		 * model: every tower of a warm-started model would keep them for
		 * the whole training (the unit jobs give their towers their own).
		 */
		if (!st->collect_only)
		{
			mtms_tower_ensure_grad(m->tower1[p]);
			if (m->tower2[p])
				mtms_tower_ensure_grad(m->tower2[p]);
		}
		MemoryContextSwitchTo(mc);
	}
	mtms_rowset_init(&st->buf);
	st->work = mtms_batch_work_create(m, st->opts.batch_size);
	st->order = palloc_extended(sizeof(int64) * st->opts.shuffle_buffer, MCXT_ALLOC_HUGE);
	st->pending = palloc(sizeof(int64 *) * st->nunits);
	st->npending = palloc0(sizeof(int32) * st->nunits);
	for (int u = 0; u < st->nunits; u++)
		st->pending[u] = palloc(sizeof(int64) * st->opts.batch_size);
	st->parse_cap = 64;
	st->parse_buf = palloc(sizeof(MtmsFeature) * st->parse_cap);

	seed = hash_combine64((uint64) st->opts.seed,
						  ((uint64) st->stage << 32) | (uint32) st->epoch);
	seed = hash_combine64(seed, (uint64) (ParallelWorkerNumber + 1));
	pg_prng_seed(&st->prng, seed);
	MemoryContextSwitchTo(old);

	/*
	 * Checkpoints copy every scene's fine-tune towers; a collecting pass
	 * trains nothing and has none (the unit jobs checkpoint by themselves).
	 */
	if (mtms_stage_info(st->stage)->checkpoints && !st->collect_only &&
		st->eval_rows && st->eval_rows->nrows > 0)
	{
		int			nm = m->nscenes * MTMS_NMETRICS;

		old = MemoryContextSwitchTo(st->cxt);
		st->best2 = palloc0(sizeof(MtmsTower *) * m->npairs);
		st->best_crit = palloc(sizeof(double) * m->nscenes);
		for (int s = 0; s < m->nscenes; s++)
			st->best_crit[s] = INFINITY;
		st->best_vloss = palloc(sizeof(double) * nm);
		st->best_vauc = palloc(sizeof(double) * nm);
		st->best_vn = palloc0(sizeof(int64) * nm);
		st->best_vpos = palloc0(sizeof(int64) * nm);
		for (int i = 0; i < nm; i++)
			st->best_vloss[i] = st->best_vauc[i] = NAN;
		st->checked_at = -1;
		MemoryContextSwitchTo(old);
		st->next_eval = st->expected_rows > 0 ?
			Max(st->expected_rows / Max(st->opts.evals_per_epoch, 1), 1) : PG_INT64_MAX;
		mtms_state_checkpoint(st);
	}
}

/* ---------------------------------------------------------------------
 * Training: shuffle buffer and mini-batches
 * --------------------------------------------------------------------- */

static void
run_step(MtmsTrainState *st, int unit, const int64 *rows, int n)
{
	MtmsStepCtx ctx;

	if (n <= 0)
		return;
	mtms_state_step_ctx(st, &ctx);
	mtms_stage_info(st->stage)->step(&ctx, unit, &st->buf, rows, n);
}

static inline void
push_row(MtmsTrainState *st, int unit, int64 row)
{
	st->pending[unit][st->npending[unit]++] = row;
	if (st->npending[unit] >= st->opts.batch_size)
	{
		CHECK_FOR_INTERRUPTS();
		run_step(st, unit, st->pending[unit], st->npending[unit]);
		st->npending[unit] = 0;
	}
}

/* Stop a pass whose state (model copy, buffers) outgrows mtms.max_memory. */
static void
check_memory(MtmsTrainState *st)
{
	Size		used = MemoryContextMemAllocated(st->cxt, true);
	Size		limit = (Size) mtms_max_memory_mb * 1024 * 1024;

	/* a model trained in place lives outside the state: count it too */
	if (st->model_shared)
		used += MemoryContextMemAllocated(st->model->cxt, true);

	if (used > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms training state uses %zu MB, more than mtms.max_memory (%d MB)",
						(used + 1024 * 1024 - 1) / (1024 * 1024), mtms_max_memory_mb),
				 errhint("Raise mtms.max_memory, or cap the embedding tables with the max_features option.")));
}

/* Shuffle the buffered rows and train on all of them. */
void
mtms_state_process_buffer(MtmsTrainState *st)
{
	const MtmsStageInfo *si = mtms_stage_info(st->stage);
	MtmsRowSet *buf = &st->buf;
	int64		n = buf->nrows;
	MemoryContext old;

	if (n == 0)
		return;
	old = MemoryContextSwitchTo(st->cxt);

	/* fine-tune: the buffer's distinct keys, looked up once (joined_keys.h) */
	if (si->keyed_rows)
		st->buf_keys = mtms_joined_keys_build(st->model, buf, NULL, n);

	for (int64 i = 0; i < n; i++)
		st->order[i] = i;
	for (int64 i = n - 1; i > 0; i--)
	{
		int64		j = (int64) pg_prng_uint64_range(&st->prng, 0, (uint64) i);
		int64		t = st->order[i];

		st->order[i] = st->order[j];
		st->order[j] = t;
	}

	for (int64 i = 0; i < n; i++)
	{
		int64		r = st->order[i];
		int			scene = buf->scene[r];
		int			units[MTMS_NTASKS];
		int			nu = mtms_scene_units(si, scene, units);

		for (int k = 0; k < nu; k++)
			if (st->unit_active[units[k]] && si->takes_row(units[k], buf->label[r]))
				push_row(st, units[k], r);
	}
	for (int u = 0; u < st->nunits; u++)
	{
		CHECK_FOR_INTERRUPTS();
		run_step(st, u, st->pending[u], st->npending[u]);
		st->npending[u] = 0;
	}
	mtms_joined_keys_free(st->buf_keys);
	st->buf_keys = NULL;
	mtms_rowset_clear(buf);
	MemoryContextSwitchTo(old);
	check_memory(st);

	if (st->best2 && st->rows_trained >= st->next_eval)
	{
		mtms_state_checkpoint(st);
		st->next_eval += Max(st->expected_rows / Max(st->opts.evals_per_epoch, 1), 1);
	}
}

/* Deep copy of the published base for this process's aggregate. */
MtmsTrainState *
mtms_state_start_from_base(const MtmsTrainState *base, MemoryContext parent, bool share_model)
{
	MtmsTrainState *st = mtms_state_alloc(parent);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	st->model = share_model ? base->model : mtms_model_copy(base->model);
	st->model_shared = share_model;
	st->opts = base->opts;
	st->stage = base->stage;
	st->epoch = base->epoch;
	st->nunits = base->nunits;
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	memcpy(st->unit_active, base->unit_active, sizeof(bool) * st->nunits);
	st->collect_valid = base->collect_valid;
	st->collect_train = base->collect_train && base->train_cxt != NULL;
	st->collect_only = base->collect_only && st->collect_train;
	st->train_cxt = base->train_cxt;
	st->train_limit = base->train_limit;
	st->train_rows = NULL;
	if (base->ahead_lo && base->ahead_cxt)
	{
		st->ahead_lo = palloc(sizeof(double) * base->model->nscenes);
		st->ahead_hi = palloc(sizeof(double) * base->model->nscenes);
		memcpy(st->ahead_lo, base->ahead_lo, sizeof(double) * base->model->nscenes);
		memcpy(st->ahead_hi, base->ahead_hi, sizeof(double) * base->model->nscenes);
		st->ahead_cxt = base->ahead_cxt;
		st->ahead_limit = base->ahead_limit;
	}
	st->expected_rows = base->expected_rows;
	if (base->frozen_fields)
	{
		st->frozen_fields = palloc(sizeof(int32) * base->model->npairs);
		memcpy(st->frozen_fields, base->frozen_fields, sizeof(int32) * base->model->npairs);
	}
	st->train_lo = palloc(sizeof(double) * base->model->nscenes);
	st->train_hi = palloc(sizeof(double) * base->model->nscenes);
	memcpy(st->train_lo, base->train_lo, sizeof(double) * base->model->nscenes);
	memcpy(st->train_hi, base->train_hi, sizeof(double) * base->model->nscenes);
	mtms_rowset_init(&st->valid);
	if (mtms_stage_info(base->stage)->checkpoints && !base->collect_valid)
		st->eval_rows = &base->valid;
	mtms_state_alloc_stats(st);
	MemoryContextSwitchTo(old);
	return st;
}

/* A training row for this pass: into the shuffle buffer, train when full. */
void
mtms_state_buffer_row(MtmsTrainState *st, int scene, uint8 label, const MtmsFeature *feats,
		   int nfeats)
{
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	mtms_rowset_add(&st->buf, scene, label, feats, nfeats);
	MemoryContextSwitchTo(old);
	st->rows_trained++;
	if (st->buf.nrows >= st->opts.shuffle_buffer)
		mtms_state_process_buffer(st);
}

/*
 * The end of a pass: train on what is still buffered, put each scene's best
 * fine-tune towers in place, and fill the metrics the pass reports.
 */
void
mtms_state_finish_pass(MtmsTrainState *st, const MtmsRowSet *vs)
{
	mtms_state_process_buffer(st);
	if (st->collect_only)
		return;					/* nothing trained: nothing to validate */
	mtms_state_restore_best(st);
	mtms_state_final_validation(st, vs);
}

