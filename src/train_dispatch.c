/*
 * train_dispatch.c
 *    mtms_train_stage: a stage for the selected scenes, as unit jobs over
 *    the rows a first pass keeps in memory (train_units.c), or pass by pass
 *    over the samples (train_stage.c) when they do not fit.  Called by
 *    train.c, the refit (train_refit.c) and a data node (node_train.c).
 *    mtms_train_stages: stages that follow each other on the same kept
 *    rows (phase 1's embedding and CTCVR stages) as one chain of unit jobs,
 *    so that workers need not wait at the end of a stage for its largest
 *    unit while the next stage's units could start.
 */
#include "train_driver.h"

#include "feature_hygiene.h"
#include "train_memory.h"

/*
 * Whether the stage's rows are kept in memory for unit jobs: kept by an
 * earlier pass of its window, else collected by a pass now (false when
 * they do not fit, or mtms.keep_training_rows is off).
 */
static bool
stage_rows_kept(MtmsTrainCtx *cx, const MtmsStageInfo *si, const bool *selected)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	bool		kept = false;

	mtms_check_ahead_rows(cx, si);
	if (!mtms_keep_training_rows || kw->failed)
		return false;
	if (kw->store || kw->rows)
	{
		kept = true;
		for (int s = 0; s < cx->model->nscenes; s++)
			if (selected[s] && !kw->scenes[s])
				kept = false;
	}
	else
	{
		int			nunits = mtms_stage_nunits(si, cx->model->nscenes);
		bool	   *active = palloc(sizeof(bool) * nunits);

		for (int u = 0; u < nunits; u++)
			active[u] = selected[mtms_unit_scene(si, u)];
		kept = mtms_collect_window(cx, si->stage, active);
		pfree(active);
	}
	return kept;
}

/* The stage's rows (see stage_rows_kept), and feature hygiene on them. */
static bool
prepare_stage(MtmsTrainCtx *cx, const MtmsStageInfo *si, const bool *selected)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	bool		kept = stage_rows_kept(cx, si, selected);

	/* feature hygiene: phase 1's features counted, evicted, admitted */
	if (si->stage == MTMS_STAGE_EMBEDDING && kept)
		mtms_hygiene_prepare(cx->hygiene, cx->model, kw->rows, kw->store, selected);
	else if (si->stage == MTMS_STAGE_EMBEDDING)
		mtms_hygiene_skip(cx->hygiene, cx->model, selected);
	return kept;
}

/* A prepared stage: as unit jobs over its kept rows, else pass by pass. */
static void
run_prepared_stage(MtmsTrainCtx *cx, const MtmsStageInfo *si, bool kept,
				   const bool *selected)
{
	if (kept)
		mtms_run_units(cx, si->stage, selected);
	else if (cx->node_out)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the %s stage's rows do not fit in memory on this data node", si->name),
				 errdetail("A multi-node training keeps each node's rows in memory (mtms.keep_training_rows); "
						   "the pass-by-pass fallback is not available on data nodes."),
				 errhint("Raise mtms.max_memory on the node, or spread the scenes over more nodes.")));
	else
	{
		mtms_prepare_units(cx, si);
		mtms_run_stage(cx, si->stage, selected);
	}
	/* units that had no rows to train on: their starting parameters */
	mtms_prepare_units(cx, si);
}

/*
 * A stage: as unit jobs over rows kept in memory (mtms.keep_training_rows,
 * when they fit), else pass by pass over the samples.
 */
void
mtms_train_stage(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);

	run_prepared_stage(cx, si, prepare_stage(cx, si, selected), selected);
}

/*
 * Whether the stages after the first, whose rows are kept (for every
 * selected scene: prepare_stage), can join its chain: they train on the
 * first one's window (then nothing is collected or dropped for them), and
 * workers can help.
 */
static bool
chainable(MtmsTrainCtx *cx, const MtmsStage *stages, int n)
{
	const MtmsStageInfo *first = mtms_stage_info(stages[0]);

	if (n < 2 || n > MTMS_CHAIN_MAX || cx->node_out || cx->kept[first->window].ahead ||
		mtms_train_workers_for(cx->model->nscenes * MTMS_NTASKS) == 0)
		return false;
	for (int k = 1; k < n; k++)
		if (mtms_stage_info(stages[k])->window != first->window)
			return false;
	return true;
}

void
mtms_train_stages(MtmsTrainCtx *cx, const MtmsStage *stages, int n, const bool *selected)
{
	const MtmsStageInfo *first = mtms_stage_info(stages[0]);
	bool		kept = prepare_stage(cx, first, selected);

	if (!kept || !chainable(cx, stages, n))
	{
		run_prepared_stage(cx, first, kept, selected);
		for (int k = 1; k < n; k++)
			mtms_train_stage(cx, stages[k], selected);
		return;
	}
	mtms_run_unit_chain(cx, stages, n, selected);
	for (int k = 0; k < n; k++)
		mtms_prepare_units(cx, mtms_stage_info(stages[k]));
}
