/*
 * train_stage.c
 *    One training stage, epoch by epoch (see train_driver.h): every active
 *    unit validates after each pass, keeps the parameters of its best
 *    validation, and stops after patience passes without improving by
 *    more than min_delta (patience / evals_per_epoch passes).  One NOTICE
 *    per epoch; the units' results at the end.  This is how a stage runs
 *    when its rows are not kept in memory (mtms.keep_training_rows off, or
 *    more rows than fit); else train_units.c.
 */
#include "train_driver.h"
#include "progress.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* A stage in progress. */
typedef struct StageRun
{
	const MtmsStageInfo *si;
	int			nunits;
	bool	   *active;			/* [nunits] still training */
	int		   *bad;			/* passes without improvement */
	MtmsUnitResult *best;		/* the best pass (or the start) */
	MtmsUnitSnapshot *snap;		/* its parameters */
	int			any;			/* active units */
	/* the history: a checkpoint per pass, and the start's */
	TimestampTz start;
	MtmsCheckpoint **hist;		/* [nunits] max_epochs + 1 each, or NULL */
	int		   *nhist;
	int		   *kept_cp;		/* the checkpoint kept (-1: none) */
	int64	   *rows;			/* rows trained so far */
} StageRun;

static void
stage_run_init(MtmsTrainCtx *cx, StageRun *run, MtmsStage stage, const bool *selected)
{
	run->si = mtms_stage_info(stage);
	run->nunits = mtms_stage_nunits(run->si, cx->model->nscenes);
	run->active = palloc0(sizeof(bool) * run->nunits);
	run->bad = palloc0(sizeof(int) * run->nunits);
	run->best = palloc0(sizeof(MtmsUnitResult) * run->nunits);
	run->snap = palloc0(sizeof(MtmsUnitSnapshot) * run->nunits);
	run->any = 0;
	run->start = GetCurrentTimestamp();
	run->hist = palloc0(sizeof(MtmsCheckpoint *) * run->nunits);
	run->nhist = palloc0(sizeof(int) * run->nunits);
	run->kept_cp = palloc(sizeof(int) * run->nunits);
	run->rows = palloc0(sizeof(int64) * run->nunits);
	for (int u = 0; u < run->nunits; u++)
	{
		run->kept_cp[u] = -1;
		run->active[u] = selected[mtms_unit_scene(run->si, u)];
		run->best[u].crit = INFINITY;
		run->best[u].valid_loss = run->best[u].valid_auc = run->best[u].train_loss = NAN;
		run->any += run->active[u];
	}
}

/* Unit u's validation after epoch (0: its start) into its history. */
static void
record_pass(MtmsTrainCtx *cx, StageRun *run, int u, const MtmsUnitResult *r, int epoch)
{
	MtmsCheckpoint *c;

	if (run->hist[u] == NULL)
		run->hist[u] = MemoryContextAlloc(cx->cxt, sizeof(MtmsCheckpoint) *
										  (cx->meta->opts.max_epochs + 1));
	if (epoch > 0)
		run->rows[u] += r->samples;
	Assert(run->nhist[u] <= cx->meta->opts.max_epochs);
	c = &run->hist[u][run->nhist[u]++];
	memset(c, 0, sizeof(*c));
	c->checkpoint = epoch;
	c->epoch = epoch;
	c->rows = run->rows[u];
	c->seconds = (double) (GetCurrentTimestamp() - run->start) / 1e6;
	memcpy(c->train_loss, r->m_train, sizeof(c->train_loss));
	memcpy(c->valid_loss, r->m_loss, sizeof(c->valid_loss));
	memcpy(c->valid_auc, r->m_auc, sizeof(c->valid_auc));
}

/* A pass that only collects the validation rows (and counts the samples). */
static void
collect_validation_rows(MtmsTrainCtx *cx, StageRun *run)
{
	bool	   *none = palloc0(sizeof(bool) * run->nunits);
	MtmsTrainState *res = mtms_run_pass(cx, run->si->stage, 0, none);
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	cx->valid = palloc(sizeof(MtmsRowSet));
	mtms_rowset_copy(cx->valid, &res->valid);
	cx->samples = res->rows_in;
	MemoryContextSwitchTo(old);
	mtms_state_free(res);
	pfree(none);
}

/*
 * Start from what the model already knows: the phase-1 stages of a model
 * trained before (a new day, a new scene or field) and the fine-tune
 * validate their starting parameters first, and a unit keeps them unless a
 * pass does better on validation, so retraining never leaves a pair's
 * phase-1 model or a scene's fine-tune towers worse on validation than
 * they were.  On a model's first training the CTCVR stage always trains at
 * least one epoch: it exists to add the pCTR x pCVR objective, which its
 * starting point (the converged separate sub-models) lacks even when their
 * losses are lower.
 */
static void
validate_start(MtmsTrainCtx *cx, StageRun *run)
{
	MtmsTrainState *st;

	if (cx->valid == NULL)
		collect_validation_rows(cx, run);
	st = mtms_state_create(cx->model, &cx->meta->opts, run->si->stage, 0, run->active,
						   cx->valid);
	mtms_state_validate(st);
	for (int u = 0; u < run->nunits; u++)
	{
		MtmsUnitResult r;

		if (!run->active[u] ||
			!mtms_unit_start_is_candidate(run->si, u, cx->meta->active_version,
										  cx->stored_npairs))
			continue;
		mtms_unit_figures(st, run->si, u, &r);
		record_pass(cx, run, u, &r, 0);
		if (isnan(r.crit))
			continue;
		r.train_loss = NAN;
		r.samples = 0;
		r.epochs = 0;
		run->best[u] = r;
		run->kept_cp[u] = 0;
		{
			MemoryContext old = MemoryContextSwitchTo(cx->cxt);

			mtms_unit_snapshot_take(&run->snap[u], cx->model, run->si, u);
			MemoryContextSwitchTo(old);
		}
	}
	mtms_state_free(st);
}

/* Take a pass's trained model and, once, its validation rows. */
static void
adopt_pass(MtmsTrainCtx *cx, MtmsTrainState *res)
{
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	if (res->model != cx->model)	/* else trained in place */
	{
		mtms_model_free(cx->model);
		MemoryContextSetParent(res->model->cxt, cx->cxt);
		cx->model = res->model;
	}
	if (cx->valid == NULL)
	{
		cx->valid = palloc(sizeof(MtmsRowSet));
		mtms_rowset_copy(cx->valid, &res->valid);
	}
	if (cx->samples == 0)
		cx->samples = res->rows_in;
	cx->bad_conversions = Max(cx->bad_conversions, res->bad_conversions);
	MemoryContextSwitchTo(old);
}

/*
 * patience counts validations, evals_per_epoch of them per pass of a unit
 * job; here a unit validates once per pass.
 */
static int
patience_passes(const MtmsOptions *o)
{
	return Max(1, (o->patience + o->evals_per_epoch - 1) / Max(o->evals_per_epoch, 1));
}

/* A unit after a pass: keep the pass if it improved, count it if not. */
static void
unit_after_pass(MtmsTrainCtx *cx, StageRun *run, int u, const MtmsUnitResult *r, int epoch)
{
	MtmsUnitResult *best = &run->best[u];

	if (!isnan(r->crit) && mtms_improved(r->crit, best->crit, cx->meta->opts.min_delta))
	{
		MemoryContext old = MemoryContextSwitchTo(cx->cxt);

		*best = *r;
		run->bad[u] = 0;
		run->kept_cp[u] = epoch;
		mtms_unit_snapshot_take(&run->snap[u], cx->model, run->si, u);
		MemoryContextSwitchTo(old);
	}
	else
	{
		run->bad[u]++;
		/* samples: rows per epoch, whichever epoch is kept */
		best->samples = r->samples;
		memcpy(best->m_n, r->m_n, sizeof(r->m_n));
		/* the starting point was kept: report the loss training reached */
		if (isnan(best->train_loss))
		{
			best->train_loss = r->train_loss;
			memcpy(best->m_train, r->m_train, sizeof(r->m_train));
		}
		if (isnan(r->crit) && run->snap[u].npairs == 0)
		{
			/* nothing to validate against: keep this epoch, stop */
			MemoryContext old = MemoryContextSwitchTo(cx->cxt);

			*best = *r;
			run->kept_cp[u] = epoch;
			mtms_unit_snapshot_take(&run->snap[u], cx->model, run->si, u);
			MemoryContextSwitchTo(old);
			run->bad[u] = patience_passes(&cx->meta->opts);
		}
	}
	best->epochs = epoch;
	if (run->bad[u] >= patience_passes(&cx->meta->opts))
		run->active[u] = false;
	else
		run->any++;
}

/* Every active unit after a pass, and the epoch's NOTICE. */
static void
units_after_pass(MtmsTrainCtx *cx, StageRun *run, MtmsTrainState *res, int epoch,
				 double secs)
{
	StringInfoData detail;
	double		sum[3] = {0, 0, 0};
	int			cnt[3] = {0, 0, 0};

	initStringInfo(&detail);
	run->any = 0;
	for (int u = 0; u < run->nunits; u++)
	{
		MtmsUnitResult r;
		double		fig[3];

		if (!run->active[u])
			continue;
		mtms_unit_figures(res, run->si, u, &r);
		r.epochs = epoch;
		r.trained = true;
		appendStringInfo(&detail, "%s%s: train %.5f valid %.5f auc %.4f",
						 detail.len ? "; " : "", mtms_unit_name(cx->model, run->si, u),
						 r.train_loss, r.valid_loss, r.valid_auc);
		record_pass(cx, run, u, &r, epoch);
		fig[0] = r.train_loss;
		fig[1] = r.valid_loss;
		fig[2] = r.valid_auc;
		for (int k = 0; k < 3; k++)
			if (!isnan(fig[k]))
				sum[k] += fig[k], cnt[k]++;
		unit_after_pass(cx, run, u, &r, epoch);
	}
	ereport(NOTICE,
			(errmsg("mtms_train %s epoch %d: train loss %.5f, valid loss %.5f, valid AUC %.4f, %.0f samples/s, %d of %d units still improving",
					run->si->name, epoch,
					cnt[0] ? sum[0] / cnt[0] : NAN, cnt[1] ? sum[1] / cnt[1] : NAN,
					cnt[2] ? sum[2] / cnt[2] : NAN,
					secs > 0 ? res->rows_in / secs : 0.0, run->any, run->nunits),
			 errdetail_internal("%s", detail.data)));
	pfree(detail.data);
}

/* Every unit back to its best pass; then its result rows and history. */
static void
finish_stage(MtmsTrainCtx *cx, StageRun *run, const bool *selected, double seconds)
{
	for (int u = 0; u < run->nunits; u++)
		if (run->snap[u].npairs > 0)
		{
			mtms_unit_snapshot_restore(&run->snap[u], cx->model, run->si);
			mtms_unit_snapshot_free(&run->snap[u]);
		}
	for (int u = 0; u < run->nunits; u++)
	{
		for (int i = 0; i < run->nhist[u]; i++)
			run->hist[u][i].kept = run->hist[u][i].checkpoint == run->kept_cp[u];
		if (run->nhist[u] > 0)
			mtms_history_add_unit(cx->history, run->si, u, run->hist[u], run->nhist[u]);
		if (!selected[mtms_unit_scene(run->si, u)] || run->best[u].epochs == 0)
			continue;
		mtms_unit_report(cx, run->si, u, &run->best[u], seconds);
	}
}

void
mtms_stage_validate_start(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected,
						  MtmsUnitResult *out)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);
	int			nunits = mtms_stage_nunits(si, cx->model->nscenes);
	bool	   *active = palloc(sizeof(bool) * nunits);
	MtmsTrainState *st;

	if (cx->valid == NULL)
		elog(ERROR, "mtms: no validation rows to validate a stage's start on");
	for (int u = 0; u < nunits; u++)
	{
		active[u] = selected[mtms_unit_scene(si, u)];
		memset(&out[u], 0, sizeof(MtmsUnitResult));
		out[u].crit = NAN;
	}
	st = mtms_state_create(cx->model, &cx->meta->opts, stage, 0, active, cx->valid);
	mtms_state_validate(st);
	for (int u = 0; u < nunits; u++)
		if (active[u])
			mtms_unit_figures(st, si, u, &out[u]);
	mtms_state_free(st);
	pfree(active);
}

void
mtms_run_stage(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected)
{
	StageRun	run;
	TimestampTz start = GetCurrentTimestamp();

	stage_run_init(cx, &run, stage, selected);
	if (cx->meta->active_version > 0 || run.si->validates_start)
		validate_start(cx, &run);
	for (int epoch = 1; epoch <= cx->meta->opts.max_epochs && run.any > 0; epoch++)
	{
		TimestampTz t0 = GetCurrentTimestamp();
		MtmsTrainState *res;

		CHECK_FOR_INTERRUPTS();
		mtms_progress_stage(run.si->name, epoch, run.nunits,
							cx->samples > 0 ? cx->samples : -1, 0);
		res = mtms_run_pass(cx, stage, epoch, run.active);
		adopt_pass(cx, res);
		units_after_pass(cx, &run, res, epoch,
						 (double) (GetCurrentTimestamp() - t0) / 1e6);
		mtms_progress_pause();
		res->model = NULL;
		mtms_state_free(res);
	}
	finish_stage(cx, &run, selected,
				 (double) (GetCurrentTimestamp() - start) / 1e6);
}
