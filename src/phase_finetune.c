/*
 * phase_finetune.c
 *    Phase 2 of MTMS, the fine-tune: the mtms_finetune aggregate's
 *    transition function and its mini-batch step.
 *
 * Every embedding is frozen.  For a sample of scene s the input of both of
 * s's fine-tune towers is the JOIN (concatenation) of the sum-pooled field
 * embeddings of every (scene, task) pair, so what every scene and task
 * learned informs every other.  Only the towers train, with
 * L = L_ctr + L_cvr (clicked rows) + L_ctcvr per scene.
 */
#include "train_state.h"
#include "joined_keys.h"

#include "miscadmin.h"

void
mtms_step_finetune(MtmsTrainState *st, int scene, const MtmsRowSet *rs,
				   const int64 *rows, int n)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);

	if (w->w2a == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		w->w2a = mtms_tower_work_create(m->tower2[pc], w->max_batch);
		w->w2b = mtms_tower_work_create(m->tower2[pc], w->max_batch);
		MemoryContextSwitchTo(old);
	}

	/*
	 * The batch's rows come from the shuffle buffer, whose keys and frozen
	 * joined embeddings process_buffer numbered (joined_keys.h): the first
	 * layers go per distinct feature of the batch, the other layers as
	 * usual.
	 */
	if (st->buf_keys == NULL || rs != &st->buf)
		elog(ERROR, "mtms fine-tune step outside a keyed shuffle buffer");
	if (w->kb == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		w->kb = mtms_key_batch_create();
		w->h1a = palloc(sizeof(float) * w->max_batch * m->tower2[pc]->sizes[1]);
		w->h1b = palloc(sizeof(float) * w->max_batch * m->tower2[pv]->sizes[1]);
		MemoryContextSwitchTo(old);
	}
	mtms_key_batch_prepare(w->kb, st->buf_keys, rows, n);
	mtms_key_batch_forward(w->kb, m, m->tower2[pc], w->h1a);
	mtms_key_batch_forward(w->kb, m, m->tower2[pv], w->h1b);
	mtms_tower_forward_hidden(m->tower2[pc], w->w2a, w->h1a, n, w->za);
	mtms_tower_forward_hidden(m->tower2[pv], w->w2b, w->h1b, n, w->zb);
	mtms_joint_batch_grads(st, scene, rs, rows, n);
	mtms_key_batch_weight_grad(w->kb, m, m->tower2[pc],
							   mtms_tower_backward_hidden(m->tower2[pc], w->w2a, w->da));
	mtms_key_batch_weight_grad(w->kb, m, m->tower2[pv],
							   mtms_tower_backward_hidden(m->tower2[pv], w->w2b, w->db));
	mtms_tower_step(m->tower2[pc], (float) st->opts.lr_tower, (float) st->opts.l2);
	mtms_tower_step(m->tower2[pv], (float) st->opts.lr_tower, (float) st->opts.l2);
	m->tower2[pc]->nsamples += n;
	m->tower2[pv]->nsamples += n;
}

PG_FUNCTION_INFO_V1(mtms_finetune_transfn);
Datum
mtms_finetune_transfn(PG_FUNCTION_ARGS)
{
	return mtms_state_transition(fcinfo, true);
}
