/*
 * train_dispatch.c
 *    mtms_train_stage: a stage for the selected scenes, as unit jobs over
 *    the rows a first pass keeps in memory (train_units.c), or pass by pass
 *    over the samples (train_stage.c) when they do not fit.  Called by
 *    train.c, the refit (train_refit.c) and a data node (node_train.c).
 */
#include "train_driver.h"

#include "feature_hygiene.h"

/*
 * A stage: as unit jobs over rows kept in memory (mtms.keep_training_rows,
 * when they fit), else pass by pass over the samples.
 */
void
mtms_train_stage(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);
	MtmsKeptWindow *kw = &cx->kept[si->window];
	bool		kept = false;

	mtms_check_ahead_rows(cx, si);
	if (mtms_keep_training_rows && !kw->failed)
	{
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
			kept = mtms_collect_window(cx, stage, active);
			pfree(active);
		}
	}
	/* feature hygiene: phase 1's features counted, evicted, admitted */
	if (stage == MTMS_STAGE_EMBEDDING && kept)
		mtms_hygiene_prepare(cx->hygiene, cx->model, kw->rows, kw->store, selected);
	else if (stage == MTMS_STAGE_EMBEDDING)
		mtms_hygiene_skip(cx->hygiene, cx->model, selected);
	if (kept)
		mtms_run_units(cx, stage, selected);
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
		mtms_run_stage(cx, stage, selected);
	}
	/* units that had no rows to train on: their starting parameters */
	mtms_prepare_units(cx, si);
}
