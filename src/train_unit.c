/*
 * train_unit.c
 *    Units of a training stage (a pair, or a scene's two pairs) as the
 *    driver sees them: the figures a pass reports for a unit, its name,
 *    its rows of mtms_train's result, and the starting parameters of
 *    units that had no rows to train on.
 */
#include "train_driver.h"

#include <math.h>

#include "utils/builtins.h"

static inline double
mean_or_nan(double sum, int64 n)
{
	return n > 0 ? sum / n : NAN;
}

/*
 * The early-stopping criterion and reported figures of a unit after a
 * pass: a pair's own validation loss, or the sum of its scene's three.
 */
void
mtms_unit_figures(const MtmsTrainState *res, const MtmsStageInfo *si, int unit,
				  MtmsUnitResult *r)
{
	int			sc = mtms_unit_scene(si, unit);
	int			base = sc * MTMS_NMETRICS;
	int			slot;

	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		r->m_n[t] = res->loss_n[base + t];
		r->m_train[t] = mean_or_nan(res->loss_sum[base + t], res->loss_n[base + t]);
		r->m_loss[t] = res->vloss[base + t];
		r->m_auc[t] = res->vauc[base + t];
	}
	if (si->unit_is_pair)
		slot = base + (MTMS_PAIR_TASK(unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR);
	else
		slot = base + MTMS_M_CTCVR;
	r->samples = res->loss_n[slot];
	r->train_loss = mean_or_nan(res->loss_sum[slot], res->loss_n[slot]);
	r->valid_loss = res->vloss[slot];
	r->valid_auc = res->vauc[slot];
	if (si->unit_is_pair)
		r->crit = r->valid_loss;
	else
	{
		double		crit = 0;

		for (int t = 0; t < MTMS_NMETRICS; t++)
			if (!isnan(res->vloss[base + t]))
				crit += res->vloss[base + t];
		r->crit = isnan(res->vloss[base + MTMS_M_CTR]) ? NAN : crit;
	}
}

/* "search/ctr" of a pair, "search" of a scene. */
char *
mtms_unit_name(const MtmsModel *m, const MtmsStageInfo *si, int unit)
{
	const char *scene = m->scenes[mtms_unit_scene(si, unit)];

	if (si->unit_is_pair)
		return psprintf("%s/%s", scene, mtms_task_name(MTMS_PAIR_TASK(unit)));
	return pstrdup(scene);
}

static void
emit_row(MtmsTrainCtx *cx, const char *phase, const char *scene, const char *task,
		 const MtmsUnitResult *r, double seconds)
{
	Datum		values[9];
	bool		nulls[9] = {0};

	values[0] = CStringGetTextDatum(phase);
	values[1] = CStringGetTextDatum(scene);
	values[2] = CStringGetTextDatum(task);
	values[3] = Int32GetDatum(r->epochs);
	values[4] = Int64GetDatum(r->samples);
	values[5] = Float8GetDatum(r->train_loss);
	nulls[5] = isnan(r->train_loss);
	values[6] = Float8GetDatum(r->valid_loss);
	nulls[6] = isnan(r->valid_loss);
	values[7] = Float8GetDatum(r->valid_auc);
	nulls[7] = isnan(r->valid_auc);
	values[8] = Float8GetDatum(seconds);
	tuplestore_putvalues(cx->rsinfo->setResult, cx->rsinfo->setDesc, values, nulls);
}

/*
 * A unit's rows of mtms_train's result, from its best pass, and the
 * validation metrics the version records: a pair its task's; a fine-tune
 * scene one row per task and all three metrics; a CTCVR scene one row.
 */
void
mtms_unit_report(MtmsTrainCtx *cx, const MtmsStageInfo *si, int unit,
				 const MtmsUnitResult *best, double seconds)
{
	static const char *names[] = {"ctr", "cvr", "ctcvr"};
	int			scene = mtms_unit_scene(si, unit);
	const char *scene_name = cx->model->scenes[scene];

	if (si->unit_is_pair)
	{
		int			t = MTMS_PAIR_TASK(unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR;

		emit_row(cx, si->name, scene_name, names[t], best, seconds);
		cx->metric_loss[scene * MTMS_NMETRICS + t] = best->valid_loss;
		cx->metric_auc[scene * MTMS_NMETRICS + t] = best->valid_auc;
		return;
	}
	if (!si->reports_per_task)
	{
		emit_row(cx, si->name, scene_name, "ctcvr", best, seconds);
		return;
	}
	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		MtmsUnitResult r = *best;

		r.samples = r.m_n[t];
		r.train_loss = r.m_train[t];
		r.valid_loss = r.m_loss[t];
		r.valid_auc = r.m_auc[t];
		if (t != MTMS_M_CTCVR)
			emit_row(cx, si->name, scene_name, names[t], &r, seconds);
		cx->metric_loss[scene * MTMS_NMETRICS + t] = r.valid_loss;
		cx->metric_auc[scene * MTMS_NMETRICS + t] = r.valid_auc;
	}
}

/* Every unit's parameters exist (the stage's prepare_unit). */
void
mtms_prepare_units(MtmsTrainCtx *cx, const MtmsStageInfo *si)
{
	if (si->prepare_unit == NULL)
		return;
	for (int u = 0; u < mtms_stage_nunits(si, cx->model->nscenes); u++)
		si->prepare_unit(cx->model, u);
}
