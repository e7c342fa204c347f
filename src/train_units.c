/*
 * train_units.c
 *    A training stage as one job per unit over the rows a collecting pass
 *    kept (see unit_train.h): every unit trains to convergence on its own,
 *    largest first, in this process or spread over parallel workers
 *    (train_parallel.c), and the model is the same either way.  Then the
 *    units' result rows, and one NOTICE for the stage.
 */
#include "train_driver.h"
#include "train_memory.h"
#include "train_parallel.h"
#include "progress.h"

#include <math.h>

#include "joined_keys.h"
#include "node_wire.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* The validation rows as a store, once per training. */
static MtmsRowStore *
validation_store(MtmsTrainCtx *cx)
{
	MemoryContext old;
	MtmsKeptRows *kr;

	if (cx->valid_store)
		return cx->valid_store;
	old = MemoryContextSwitchTo(cx->cxt);
	kr = mtms_kept_rows_create(CurrentMemoryContext);
	for (int64 i = 0; i < cx->valid->nrows; i++)
		mtms_kept_rows_add(kr, cx->valid->scene[i], cx->valid->label[i],
						   cx->valid->feats + cx->valid->start[i],
						   (int) (cx->valid->start[i + 1] - cx->valid->start[i]));
	mtms_kept_rows_finish(kr);
	cx->valid_store = mtms_row_store_build(kr, cx->model->nscenes);
	MemoryContextSwitchTo(old);
	return cx->valid_store;
}

/* The window's rows as a store; the kept rows are freed once it exists. */
static MtmsRowStore *
window_store(MtmsTrainCtx *cx, const MtmsStageInfo *si)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	MemoryContext old;

	if (kw->store)
		return kw->store;
	old = MemoryContextSwitchTo(cx->cxt);
	kw->store = mtms_row_store_build(kw->rows, cx->model->nscenes);
	MemoryContextSwitchTo(old);
	MemoryContextReset(kw->cxt);
	kw->rows = NULL;
	return kw->store;
}

/* The units of the selected scenes, largest first (ties: unit order). */
static int
plan_jobs(MtmsTrainCtx *cx, const MtmsStageInfo *si, const bool *selected,
		  const MtmsRowStore *rows, MtmsUnitPlan *plan, int64 *rows_per_pass)
{
	int			nunits = mtms_stage_nunits(si, cx->model->nscenes);
	int64	   *work = palloc(sizeof(int64) * nunits);

	plan->units = palloc(sizeof(int) * nunits);
	plan->start_candidate = palloc(sizeof(bool) * nunits);
	plan->njobs = 0;
	for (int u = 0; u < nunits; u++)
	{
		if (!selected[mtms_unit_scene(si, u)])
			continue;
		work[u] = mtms_unit_rows(si, u, rows);
		*rows_per_pass += work[u];
		plan->start_candidate[plan->njobs] =
			mtms_unit_start_is_candidate(si, u, cx->meta->active_version, cx->stored_npairs);
		plan->units[plan->njobs++] = u;
	}
	/* insertion sort: a handful to a few hundred units */
	for (int i = 1; i < plan->njobs; i++)
	{
		int			u = plan->units[i];
		bool		c = plan->start_candidate[i];
		int			j = i;

		while (j > 0 && work[plan->units[j - 1]] < work[u])
		{
			plan->units[j] = plan->units[j - 1];
			plan->start_candidate[j] = plan->start_candidate[j - 1];
			j--;
		}
		plan->units[j] = u;
		plan->start_candidate[j] = c;
	}
	plan->work = palloc(sizeof(int64) * Max(plan->njobs, 1));
	for (int j = 0; j < plan->njobs; j++)
		plan->work[j] = work[plan->units[j]];
	pfree(work);
	return plan->njobs;
}

static void
notice_unit(MtmsTrainCtx *cx, const MtmsStageInfo *si, int unit, const MtmsUnitOutcome *o)
{
	ereport(NOTICE,
			(errmsg("mtms_train %s %s: %.2f passes over %lld rows, best at validation %d of %d: valid loss %.5f, valid AUC %.4f, %.2f s",
					si->name, mtms_unit_name(cx->model, si, unit), o->epochs,
					(long long) o->best.samples, o->best_checkpoint, o->checkpoints,
					o->best.valid_loss, o->best.valid_auc, o->seconds)));
}

/* Rows the other windows hold meanwhile (the fine-tune's, kept ahead). */
static Size
other_windows_bytes(const MtmsTrainCtx *cx, int window)
{
	Size		bytes = 0;

	for (int w = 0; w < lengthof(cx->kept); w++)
	{
		if (w == window)
			continue;
		if (cx->kept[w].store)
			bytes += cx->kept[w].store->size;
		if (cx->kept[w].rows)
			bytes += MemoryContextMemAllocated(cx->kept[w].cxt, true);
	}
	return bytes;
}

/*
 * The stage's memory plan against mtms.max_memory (train_memory.c), with
 * the model as it stands (pair_bytes NULL) or, for a chained stage once
 * the stage before it is back, with the pairs as that stage left them:
 * the model has grown by then (embedding rows are made as features are
 * seen), as it has when one stage follows the other.
 */
static void
check_memory(MtmsTrainCtx *cx, const MtmsUnitPlan *plan, const Size *pair_bytes)
{
	const MtmsModel *m = cx->model;
	Size		joined = 0;

	if (plan->data.joined_rows)
		joined = mtms_joined_table_bytes(plan->data.joined_rows) +
			mtms_joined_table_bytes(plan->data.joined_valid);
	mtms_check_units_memory(m, pair_bytes, plan->si, mtms_stage_nunits(plan->si, m->nscenes),
							plan->data.rows->size + plan->data.valid->size +
							other_windows_bytes(cx, plan->si->window), joined);
}

/* Every job in this process, one after the other. */
static void
run_jobs_here(MtmsTrainCtx *cx, const MtmsUnitPlan *plan, MtmsUnitOutcome *out)
{
	for (int j = 0; j < plan->njobs; j++)
	{
		MtmsUnitJob job;

		CHECK_FOR_INTERRUPTS();
		memset(&job, 0, sizeof(job));
		job.si = plan->si;
		job.unit = plan->units[j];
		job.model = cx->model;
		job.opts = &cx->meta->opts;
		job.frozen_fields = plan->si->trains_embeddings ? cx->frozen_fields : NULL;
		job.data = &plan->data;
		job.start_is_candidate = plan->start_candidate[j];
		if (plan->si->prepare_unit)
			plan->si->prepare_unit(cx->model, job.unit);
		mtms_unit_train(&job, &out[j]);
		notice_unit(cx, plan->si, job.unit, &out[j]);
		mtms_progress_pause();
	}
}

/* A stage's plan: its rows, joined tables, memory check and jobs. */
static void
build_plan(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected, MtmsUnitPlan *plan,
		   int64 *rows_per_pass)
{
	memset(plan, 0, sizeof(*plan));
	plan->si = mtms_stage_info(stage);
	plan->data.rows = window_store(cx, plan->si);
	plan->data.valid = validation_store(cx);
	if (plan->si->keyed_rows)
	{
		/* sparse: each key's rows in the pairs that have one */
		plan->data.joined_rows = mtms_joined_table_build(cx->model, mtms_rs_keys(plan->data.rows),
														 plan->data.rows->nkeys);
		plan->data.joined_valid = mtms_joined_table_build(cx->model, mtms_rs_keys(plan->data.valid),
														  plan->data.valid->nkeys);
	}
	check_memory(cx, plan, NULL);
	plan->recheck = plan->si->trains_embeddings ? check_memory : NULL;
	plan_jobs(cx, plan->si, selected, plan->data.rows, plan, rows_per_pass);
}

static double
seconds_between(TimestampTz from, TimestampTz to)
{
	return to > from ? (double) (to - from) / 1e6 : 0.0;
}

/*
 * A stage's end: its NOTICE, then its units' result rows and history in
 * unit order, whatever order the jobs ran in (on a data node: their
 * outcomes for the coordinator).  seconds is the stage's share of the wall
 * time, busy the time its units could run (longer for a stage of a chain,
 * whose units started during the stage before it: after names that one).
 */
static void
finish_plan(MtmsTrainCtx *cx, MtmsUnitPlan *plan, MtmsUnitOutcome *out, double seconds,
			double busy, int workers, const char *after)
{
	int64		rows = 0;

	for (int j = 0; j < plan->njobs; j++)
		rows += out[j].rows_trained;
	ereport(NOTICE,
			(errmsg("mtms_train %s: %d units in %.2f s, %d workers, %.0f training rows/s%s",
					plan->si->name, plan->njobs, seconds, workers,
					busy > 0 ? rows / busy : 0.0,
					after ? psprintf("; its units started while the %s stage ran", after) : "")));
	/* the joined tables serve this stage only */
	if (plan->data.joined_rows)
		pfree((void *) plan->data.joined_rows);
	if (plan->data.joined_valid)
		pfree((void *) plan->data.joined_valid);
	/* on a data node: the outcomes go to the coordinator */
	if (cx->node_out)
	{
		for (int j = 0; j < plan->njobs; j++)
		{
			mtms_node_put_outcome(cx->node_out, plan->si->stage, plan->units[j], &out[j], seconds);
			pfree(out[j].history);
		}
		return;
	}
	for (int u = 0; u < mtms_stage_nunits(plan->si, cx->model->nscenes); u++)
		for (int j = 0; j < plan->njobs; j++)
			if (plan->units[j] == u)
			{
				mtms_unit_report(cx, plan->si, u, &out[j].best, seconds);
				mtms_history_add_unit(cx->history, plan->si, u, out[j].history,
									  out[j].nhistory);
				pfree(out[j].history);
			}
}

/*
 * A chain of stages on the same rows: every stage's plan first (its memory
 * checked with the model as it stands), then all their jobs in one
 * parallel session (train_parallel.c), or each stage's after the other's
 * in this process.  Each stage reports the wall time from the end of the
 * one before it to its own end (the last one's: the session's), so that
 * the stages' times add up.
 */
void
mtms_run_unit_chain(MtmsTrainCtx *cx, const MtmsStage *stages, int n, const bool *selected)
{
	MtmsUnitPlan plans[MTMS_CHAIN_MAX];
	MtmsUnitOutcome *outs[MTMS_CHAIN_MAX];
	TimestampTz ends[MTMS_CHAIN_MAX];
	TimestampTz start = GetCurrentTimestamp();
	int64		rows_per_pass = 0;
	int			njobs = 0;
	int			workers = 0;
	StringInfoData name;
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	Assert(n >= 1 && n <= MTMS_CHAIN_MAX);
	initStringInfo(&name);
	for (int k = 0; k < n; k++)
	{
		build_plan(cx, stages[k], selected, &plans[k], &rows_per_pass);
		njobs += plans[k].njobs;
		outs[k] = palloc0(sizeof(MtmsUnitOutcome) * Max(plans[k].njobs, 1));
		appendStringInfo(&name, "%s%s", k > 0 ? "+" : "", plans[k].si->name);
	}
	/* mtms_progress: the stages' units count together ("embedding+ctcvr") */
	mtms_progress_stage(name.data, 0, njobs, rows_per_pass, 0);
	if (!mtms_train_parallel(cx, plans, n, outs, ends, &workers))
		for (int k = 0; k < n; k++)
		{
			if (k > 0)
				check_memory(cx, &plans[k], NULL);
			run_jobs_here(cx, &plans[k], outs[k]);
			ends[k] = GetCurrentTimestamp();
		}
	ends[n - 1] = GetCurrentTimestamp();
	for (int k = 0; k < n; k++)
	{
		TimestampTz from = k == 0 ? start : ends[k - 1];

		ends[k] = Max(ends[k], from);
		finish_plan(cx, &plans[k], outs[k], seconds_between(from, ends[k]),
					seconds_between(start, ends[k]), workers,
					k > 0 && workers > 0 ? plans[k - 1].si->name : NULL);
	}
	MemoryContextSwitchTo(old);
}

/* A stage as one job per unit: a chain of one. */
void
mtms_run_units(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected)
{
	mtms_run_unit_chain(cx, &stage, 1, selected);
}
