/*
 * train_refit.c
 *    The refit option: phase 1 again for the small scenes, after the
 *    fine-tune (see train_refit.h).
 *
 * The fine-tune must learn on rows the frozen embeddings were not trained
 * on, so phase 1 leaves each scene a fine-tune share of its rows
 * (finetune_fraction, capped at finetune_rows).  A large scene hardly
 * notices; a small one loses a fifth of its few rows, and where the join
 * brings it little, its sub-models are worse than the separate ones
 * trained on all its rows (on KuaiRand, tab6: 9.6k rows).  With the refit
 * option, after the fine-tune, every scene whose share was not capped
 * (a "small" scene) has its pairs' embeddings and phase-1 towers trained
 * again, from where phase 1 started, on its phase-1 and fine-tune rows
 * together: its separate model.  They are validated as a fine-tune would
 * start from them, by the fine-tune's criterion, and a scene keeps them
 * (its fine-tune towers become copies of the refit phase-1 towers: it
 * scores with its separate model) where they beat its fine-tuned towers;
 * elsewhere its phase-1 parameters and fine-tune towers go back as they
 * were.  The embeddings of a scene that kept its refit changed, and every
 * other scene's fine-tune towers read them, so the fine-tune then runs
 * once more for the other scenes, starting from their fine-tuned towers.
 *
 * Costs: phase 1 once more for the small scenes, and, when one of them
 * keeps its refit, a second fine-tune.  Not on clusters (train_nodes.c
 * trains without it), nor with feature hygiene.  A scene of fewer than
 * REFIT_MIN_ROWS rows (or none, as a scene without traffic today) does not
 * refit: its validation could not tell the two apart.
 */
#include "train_refit.h"

#include <math.h>

#include "catalog_tables.h"
#include "lib/stringinfo.h"

#define REFIT_MIN_ROWS	100

typedef struct MtmsRefit
{
	bool	   *scenes;			/* [nscenes] small scenes: may refit */
	bool	   *again;			/* [nscenes] fine-tuned a second time */
	bool	   *kept;			/* [npairs] kept their refit sub-models */
	MtmsUnitSnapshot *start;	/* [npairs] a warm start's parameters of the
								 * small scenes' pairs (npairs 0: none) */
} MtmsRefit;

void
mtms_refit_plan(MtmsTrainCtx *cx, const bool *selected)
{
	const MtmsOptions *o = &cx->meta->opts;
	MtmsModel  *m = cx->model;
	MtmsRefit  *r;
	int			n = 0;

	cx->refit = NULL;
	if (!o->refit || o->finetune_fraction <= 0 || cx->scene_rows == NULL)
		return;
	if (mtms_options_hygiene(o))
	{
		ereport(NOTICE,
				(errmsg("mtms_train: model \"%s\" trains without its refit option, which does not run with feature hygiene (min_count, ttl_slots)",
						cx->meta->name)));
		return;
	}
	if (!mtms_catalog_at_least("0.5"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has the refit option, which needs mtms 0.5 in this database",
						cx->meta->name),
				 errhint("ALTER EXTENSION mtms UPDATE")));
	r = palloc0(sizeof(MtmsRefit));
	r->scenes = palloc0(sizeof(bool) * m->nscenes);
	r->again = palloc0(sizeof(bool) * m->nscenes);
	r->kept = palloc0(sizeof(bool) * m->npairs);
	r->start = palloc0(sizeof(MtmsUnitSnapshot) * m->npairs);
	for (int s = 0; s < m->nscenes; s++)
	{
		/* not capped by finetune_rows: phase 1 lost the whole share */
		r->scenes[s] = selected[s] && cx->ft_share[s] >= o->finetune_fraction &&
			cx->scene_rows[s] >= REFIT_MIN_ROWS;
		n += r->scenes[s];
		for (int t = 0; r->scenes[s] && t < MTMS_NTASKS; t++)
		{
			int			p = MTMS_PAIR(s, t);

			if (cx->meta->active_version > 0 && p < cx->stored_npairs)
				mtms_unit_snapshot_take(&r->start[p], m, &mtms_stage_embedding_info, p);
		}
	}
	if (n > 0)
		cx->refit = r;
}

bool
mtms_refit_kept(const MtmsTrainCtx *cx, int p)
{
	return cx->refit != NULL && cx->refit->kept[p];
}

bool
mtms_refit_finetuned_again(const MtmsTrainCtx *cx, int s)
{
	return cx->refit != NULL && cx->refit->again[s];
}

/*
 * Set aside copies of the small scenes' phase-1 parameters and fine-tune
 * towers (into phase1[] and tower2[], in the current memory context: a
 * stage run pass by pass may replace the model) and put their pairs back
 * where phase 1 started.
 */
static void
set_aside(MtmsTrainCtx *cx, MtmsUnitSnapshot *phase1, MtmsTower **tower2)
{
	MtmsModel  *m = cx->model;
	MtmsRefit  *r = cx->refit;

	for (int p = 0; p < m->npairs; p++)
	{
		if (!r->scenes[MTMS_PAIR_SCENE(p)])
			continue;
		mtms_unit_snapshot_take(&phase1[p], m, &mtms_stage_embedding_info, p);
		tower2[p] = m->tower2[p] ? mtms_tower_copy(m->tower2[p]) : NULL;
		mtms_tower_free(m->tower2[p]);
		m->tower2[p] = NULL;
		if (r->start[p].npairs > 0)
		{
			mtms_unit_snapshot_restore(&r->start[p], m, &mtms_stage_embedding_info);
			mtms_unit_snapshot_free(&r->start[p]);
		}
		else
			mtms_model_reset_pair(m, p);
	}
}

/*
 * Pair p keeps its refit (its fine-tune tower then copies the new phase-1
 * one) or gets back what it had.
 */
static void
settle_pair(MtmsTrainCtx *cx, int p, bool keep, MtmsUnitSnapshot *phase1, MtmsTower **tower2)
{
	MtmsModel  *m = cx->model;

	if (!keep)
	{
		MemoryContext old = MemoryContextSwitchTo(m->cxt);

		mtms_unit_snapshot_restore(&phase1[p], m, &mtms_stage_embedding_info);
		mtms_tower_free(m->tower2[p]);
		m->tower2[p] = tower2[p] ? mtms_tower_copy(tower2[p]) : NULL;
		MemoryContextSwitchTo(old);
	}
	mtms_tower_free(tower2[p]);
	tower2[p] = NULL;
	mtms_unit_snapshot_free(&phase1[p]);
	cx->refit->kept[p] = keep;
}

/*
 * Each small scene's pairs: the refit where its loss on validation (CTR on
 * every row, CVR on clicked rows) beats the fine-tuned tower's; a NOTICE.
 */
static bool
choose(MtmsTrainCtx *cx, const double *a, const MtmsUnitResult *b,
	   MtmsUnitSnapshot *phase1, MtmsTower **tower2)
{
	MtmsRefit  *r = cx->refit;
	StringInfoData kept;
	StringInfoData not;
	bool		any = false;

	initStringInfo(&kept);
	initStringInfo(&not);
	for (int p = 0; p < cx->model->npairs; p++)
	{
		int			s = MTMS_PAIR_SCENE(p);
		int			slot = MTMS_PAIR_TASK(p) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR;
		double		lb = b[s].m_loss[slot];
		double		la = a[s * MTMS_NMETRICS + slot];
		bool		keep;
		StringInfo	list;

		if (!r->scenes[s])
			continue;
		keep = !isnan(lb) && (isnan(la) || lb < la);
		settle_pair(cx, p, keep, phase1, tower2);
		any |= keep;
		list = keep ? &kept : &not;
		appendStringInfo(list, "%s%s %.5f against %.5f", list->len ? ", " : "",
						 mtms_unit_name(cx->model, &mtms_stage_embedding_info, p), lb, la);
	}
	ereport(NOTICE,
			(errmsg("mtms_train refit: separate sub-models kept for %s; fine-tuned towers kept for %s",
					kept.len ? kept.data : "no pair", not.len ? not.data : "no pair"),
			 errdetail("Validation losses of the refit phase-1 sub-models against the fine-tuned towers.")));
	pfree(kept.data);
	pfree(not.data);
	return any;
}

/* The fine-tune for every scene, then the refit of the small ones. */
void
mtms_refit_finetune(MtmsTrainCtx *cx, const bool *all)
{
	/* a stage run pass by pass replaces cx->model: keep only its shape */
	int			nscenes = cx->model->nscenes;
	int			npairs = cx->model->npairs;
	MtmsRefit  *r = cx->refit;
	Size		metrics = sizeof(double) * nscenes * MTMS_NMETRICS;
	double	   *a = palloc(metrics);
	double	   *a_auc = palloc(metrics);
	MtmsUnitResult *b = palloc(sizeof(MtmsUnitResult) * nscenes);
	MtmsUnitSnapshot *phase1 = palloc0(sizeof(MtmsUnitSnapshot) * npairs);
	MtmsTower **tower2 = palloc0(sizeof(MtmsTower *) * npairs);
	bool	   *refit_scenes = palloc0(sizeof(bool) * nscenes);
	bool		any_again = false;

	for (int i = 0; i < nscenes * MTMS_NMETRICS; i++)
		cx->metric_loss[i] = cx->metric_auc[i] = NAN;
	mtms_train_stage(cx, MTMS_STAGE_FINETUNE, all);
	memcpy(a, cx->metric_loss, metrics);
	memcpy(a_auc, cx->metric_auc, metrics);

	set_aside(cx, phase1, tower2);
	mtms_train_stage(cx, MTMS_STAGE_REFIT, r->scenes);
	/* the version's metrics stay the fine-tune's but where a refit is kept */
	memcpy(cx->metric_loss, a, metrics);
	memcpy(cx->metric_auc, a_auc, metrics);
	for (int p = 0; p < npairs; p++)
		if (r->scenes[MTMS_PAIR_SCENE(p)])
			mtms_model_ensure_finetune_pair(cx->model, p);
	mtms_stage_validate_start(cx, MTMS_STAGE_FINETUNE, r->scenes, b);
	if (!choose(cx, a, b, phase1, tower2))
		return;

	/* the others read the new embeddings: their fine-tune again */
	for (int s = 0; s < nscenes; s++)
	{
		r->again[s] = all[s] && !(r->kept[MTMS_PAIR(s, MTMS_TASK_CTR)] &&
								  r->kept[MTMS_PAIR(s, MTMS_TASK_CVR)]);
		if (r->again[s])
			mtms_history_forget(cx->history, &mtms_stage_finetune_info, s);
		any_again |= r->again[s];
	}
	if (any_again)
		mtms_train_stage(cx, MTMS_STAGE_FINETUNE, r->again);
	for (int p = 0; p < npairs; p++)
		if (r->kept[p])
		{
			mtms_tower_free(cx->model->tower2[p]);
			cx->model->tower2[p] = NULL;
			mtms_model_ensure_finetune_pair(cx->model, p);
			refit_scenes[MTMS_PAIR_SCENE(p)] = true;
		}
	/* their metrics: the towers that now score, CTCVR included */
	mtms_stage_validate_start(cx, MTMS_STAGE_FINETUNE, refit_scenes, b);
	for (int s = 0; s < nscenes; s++)
		for (int i = 0; refit_scenes[s] && i < MTMS_NMETRICS; i++)
		{
			cx->metric_loss[s * MTMS_NMETRICS + i] = b[s].m_loss[i];
			cx->metric_auc[s * MTMS_NMETRICS + i] = b[s].m_auc[i];
		}
}
