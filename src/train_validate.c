/*
 * train_validate.c
 *    Validation of a training state's model: the loss and AUC of every
 *    active scene's CTR, CVR and CTCVR on the validation rows, the
 *    fine-tune's checkpoints within a pass (each scene keeps its best
 *    towers), and the metrics a pass reports.
 */
#include "train_state.h"
#include "train_stages.h"
#include "joined_keys.h"

#include <math.h>

#include "auc.h"
#include "miscadmin.h"
#include "utils/memutils.h"

/*
 * CTR and CVR logits of scene's validation rows rows[0..nr) of vs, into
 * zc / zv, by the stage's own path; the fine-tune's keys of vs are built
 * once per row set (the embeddings are frozen) and kept in st->vkeys.
 */
static void
validation_logits(MtmsTrainState *st, int scene, const MtmsRowSet *vs,
				  const int64 *rows, int64 nr, float *zc, float *zv)
{
	MtmsStepCtx ctx;

	if (st->vkeys == NULL || st->vkeys_of != vs)
	{
		st->vkeys = palloc0(sizeof(MtmsJoinedKeys *) * st->model->nscenes);
		st->vkeys_of = vs;
	}
	mtms_state_step_ctx(st, &ctx);
	mtms_stage_info(st->stage)->validation_logits(&ctx, scene, vs, rows, nr, zc, zv,
												  &st->vkeys[scene]);
}

void
mtms_validation_metrics(const MtmsRowSet *vs, const int64 *rows, int64 nr,
						const float *zc, const float *zv, double auc_below,
						MtmsSceneMetrics *out)
{
	int64		k[MTMS_NMETRICS] = {0, 0, 0};
	double		lsum[MTMS_NMETRICS] = {0, 0, 0};
	double	   *score[MTMS_NMETRICS];
	bool	   *label[MTMS_NMETRICS];
	double		crit = 0;
	bool		with_auc;

	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		score[t] = palloc_extended(sizeof(double) * Max(nr, 1), MCXT_ALLOC_HUGE);
		label[t] = palloc_extended(sizeof(bool) * Max(nr, 1), MCXT_ALLOC_HUGE);
	}
	for (int64 i = 0; i < nr; i++)
	{
		uint8		lab = vs->label[rows[i]];
		bool		click = (lab & MTMS_LABEL_CLICK) != 0;
		bool		conv = (lab & MTMS_LABEL_CONV) != 0;
		double		pc = mtms_sigmoid(zc[i]);
		double		pv = mtms_sigmoid(zv[i]);

		score[MTMS_M_CTR][k[MTMS_M_CTR]] = pc;
		label[MTMS_M_CTR][k[MTMS_M_CTR]++] = click;
		lsum[MTMS_M_CTR] += mtms_bce(pc, click);
		if (click)
		{
			score[MTMS_M_CVR][k[MTMS_M_CVR]] = pv;
			label[MTMS_M_CVR][k[MTMS_M_CVR]++] = conv;
			lsum[MTMS_M_CVR] += mtms_bce(pv, conv);
		}
		score[MTMS_M_CTCVR][k[MTMS_M_CTCVR]] = pc * pv;
		label[MTMS_M_CTCVR][k[MTMS_M_CTCVR]++] = click && conv;
		lsum[MTMS_M_CTCVR] += mtms_bce(pc * pv, click && conv);
	}
	/* the checkpoint criterion: the sum of the scene's losses */
	for (int t = 0; t < MTMS_NMETRICS; t++)
		if (k[t] > 0)
			crit += lsum[t] / k[t];
	with_auc = k[MTMS_M_CTR] > 0 && crit < auc_below;
	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		int64		pos = 0;

		for (int64 i = 0; i < k[t]; i++)
			pos += label[t][i];
		out->vn[t] = k[t];
		out->vpos[t] = pos;
		out->vloss[t] = k[t] > 0 ? lsum[t] / k[t] : NAN;
		out->vauc[t] = with_auc ? mtms_auc_compute(score[t], label[t], k[t]) : NAN;
		pfree(score[t]);
		pfree(label[t]);
	}
}

/*
 * Fill st->vloss / vauc / vn / vpos from the validation rows vs.  With
 * auc_below, only the scenes whose criterion (the sum of their losses) is
 * below auc_below[scene] get AUCs, the others NaN: a checkpoint chooses by
 * loss and needs the AUCs of the scenes it keeps, and the sorts of the AUCs
 * cost more than the rest of its metrics.
 */
void
mtms_state_evaluate(MtmsTrainState *st, const MtmsRowSet *vs, const double *auc_below)
{
	int			ns = st->model->nscenes;
	int64	   *count;
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	for (int i = 0; i < ns * MTMS_NMETRICS; i++)
	{
		st->vloss[i] = NAN;
		st->vauc[i] = NAN;
		st->vn[i] = 0;
		st->vpos[i] = 0;
	}
	count = palloc0(sizeof(int64) * ns);
	for (int64 i = 0; i < vs->nrows; i++)
		count[vs->scene[i]]++;
	for (int s = 0; s < ns; s++)
	{
		int64		nr = 0;
		int64	   *rows;
		float	   *zc;
		float	   *zv;
		MtmsSceneMetrics sm;

		if (!mtms_state_scene_active(st, s) || count[s] == 0)
			continue;
		rows = palloc_extended(sizeof(int64) * count[s], MCXT_ALLOC_HUGE);
		for (int64 i = 0; i < vs->nrows; i++)
			if (vs->scene[i] == s)
				rows[nr++] = i;
		zc = palloc_extended(sizeof(float) * nr, MCXT_ALLOC_HUGE);
		zv = palloc_extended(sizeof(float) * nr, MCXT_ALLOC_HUGE);
		validation_logits(st, s, vs, rows, nr, zc, zv);
		mtms_validation_metrics(vs, rows, nr, zc, zv, auc_below ? auc_below[s] : INFINITY, &sm);
		for (int t = 0; t < MTMS_NMETRICS; t++)
		{
			int			slot = s * MTMS_NMETRICS + t;

			st->vn[slot] = sm.vn[t];
			st->vpos[slot] = sm.vpos[t];
			st->vloss[slot] = sm.vloss[t];
			st->vauc[slot] = sm.vauc[t];
		}
		pfree(zc);
		pfree(zv);
		pfree(rows);
	}
	pfree(count);
	MemoryContextSwitchTo(old);
}

/* Validate the fine-tune towers; each scene keeps its best ones. */
void
mtms_state_checkpoint(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;
	MemoryContext old;

	if (st->best2 == NULL)
		return;
	/* the towers have not moved since the last checkpoint: nothing to learn */
	if (st->checked_at == st->rows_trained)
		return;
	st->checked_at = st->rows_trained;
	mtms_state_evaluate(st, st->eval_rows, st->best_crit);
	/* in the model's context: the kept towers become the model's */
	old = MemoryContextSwitchTo(m->cxt);
	for (int s = 0; s < m->nscenes; s++)
	{
		double		crit = 0;
		int			base = s * MTMS_NMETRICS;

		if (!st->unit_active[s] || isnan(st->vloss[base + MTMS_M_CTR]))
			continue;
		for (int t = 0; t < MTMS_NMETRICS; t++)
			if (!isnan(st->vloss[base + t]))
				crit += st->vloss[base + t];
		if (mtms_improved(crit, st->best_crit[s], st->opts.min_delta))
		{
			st->best_crit[s] = crit;
			for (int t = 0; t < MTMS_NMETRICS; t++)
			{
				st->best_vloss[base + t] = st->vloss[base + t];
				st->best_vauc[base + t] = st->vauc[base + t];
				st->best_vn[base + t] = st->vn[base + t];
				st->best_vpos[base + t] = st->vpos[base + t];
			}
			for (int task = 0; task < MTMS_NTASKS; task++)
			{
				int			p = MTMS_PAIR(s, task);

				if (st->best2[p])
					mtms_tower_free(st->best2[p]);
				st->best2[p] = mtms_tower_copy(m->tower2[p]);
			}
		}
	}
	MemoryContextSwitchTo(old);
}

/* End of a pass: put every scene's best checkpointed towers in place. */
void
mtms_state_restore_best(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;

	if (st->best2 == NULL)
		return;
	mtms_state_checkpoint(st);
	for (int p = 0; p < m->npairs; p++)
	{
		if (st->best2[p])
		{
			int64		n = m->tower2[p]->nsamples;

			mtms_tower_free(m->tower2[p]);
			m->tower2[p] = st->best2[p];
			m->tower2[p]->nsamples = n;
			st->best2[p] = NULL;
		}
	}
	st->best2 = NULL;
}

/*
 * The metrics a pass reports, after restore_best: those of each scene's
 * best checkpoint when this state trained alone (the restored towers are
 * the ones that checkpoint validated; same numbers, one validation less),
 * else a validation of vs.
 */
void
mtms_state_final_validation(MtmsTrainState *st, const MtmsRowSet *vs)
{
	int			nm = st->model->nscenes * MTMS_NMETRICS;

	if (st->best_vloss == NULL || st->combined)
	{
		mtms_state_evaluate(st, vs, NULL);
		return;
	}
	memcpy(st->vloss, st->best_vloss, sizeof(double) * nm);
	memcpy(st->vauc, st->best_vauc, sizeof(double) * nm);
	memcpy(st->vn, st->best_vn, sizeof(int64) * nm);
	memcpy(st->vpos, st->best_vpos, sizeof(int64) * nm);
}

void
mtms_state_validate(MtmsTrainState *st)
{
	if (st->work == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->work = mtms_batch_work_create(st->model, st->opts.batch_size);
		MemoryContextSwitchTo(old);
	}
	mtms_state_evaluate(st, &st->valid, NULL);
}

