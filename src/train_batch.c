/*
 * train_batch.c
 *    Scratch buffers of the mini-batch steps (see train_step.h).
 */
#include "train_step.h"

/* validation is evaluated in batches this large, whatever batch_size is */
#define MIN_WORK_BATCH 512

MtmsBatchWork *
mtms_batch_work_create(const MtmsModel *m, int batch_size)
{
	MtmsBatchWork *w = palloc0(sizeof(MtmsBatchWork));
	int			B = Max(batch_size, MIN_WORK_BATCH);
	Size		in1 = MTMS_INPUT1(m);

	w->max_batch = B;
	w->xa = palloc_extended(sizeof(float) * B * in1, MCXT_ALLOC_HUGE);
	w->xb = palloc_extended(sizeof(float) * B * in1, MCXT_ALLOC_HUGE);
	w->dx = palloc_extended(sizeof(float) * B * in1, MCXT_ALLOC_HUGE);
	w->za = palloc(sizeof(float) * B);
	w->zb = palloc(sizeof(float) * B);
	w->da = palloc(sizeof(float) * B);
	w->db = palloc(sizeof(float) * B);
	w->w1a = mtms_tower_work_create(m->tower1[0], B);
	w->w1b = mtms_tower_work_create(m->tower1[0], B);
	w->w2a = NULL;
	w->w2b = NULL;
	w->ridx_cap = 0;
	return w;
}

void
mtms_batch_work_ridx(MtmsBatchWork *w, int64 need)
{
	if (need <= w->ridx_cap)
		return;
	need = Max(need, w->ridx_cap * 2);
	if (w->ridx_a)
	{
		pfree(w->ridx_a);
		pfree(w->ridx_b);
	}
	w->ridx_a = palloc_extended(sizeof(int64) * need, MCXT_ALLOC_HUGE);
	w->ridx_b = palloc_extended(sizeof(int64) * need, MCXT_ALLOC_HUGE);
	w->ridx_cap = need;
}

