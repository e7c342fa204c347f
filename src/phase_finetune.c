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
#include "train_step.h"
#include "train_stages.h"
#include "joined_keys.h"

#include "miscadmin.h"

static void
mtms_step_finetune(MtmsStepCtx *st, int scene, const MtmsRowSet *rs,
				   const int64 *rows, int n)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);

	if (w->w2a == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		w->w2a = mtms_tower_work_create_hidden(m->tower2[pc], w->max_batch);
		w->w2b = mtms_tower_work_create_hidden(m->tower2[pc], w->max_batch);
		MemoryContextSwitchTo(old);
	}

	/*
	 * The batch's rows come from the shuffle buffer, whose keys and frozen
	 * joined embeddings process_buffer numbered (joined_keys.h): the first
	 * layers go per distinct feature of the batch, the other layers as
	 * usual.
	 */
	if (st->keys == NULL)
		elog(ERROR, "mtms fine-tune step without the rows' joined keys");
	if (w->kb == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		w->kb = mtms_key_batch_create();
		w->h1a = palloc(sizeof(float) * w->max_batch * m->tower2[pc]->sizes[1]);
		w->h1b = palloc(sizeof(float) * w->max_batch * m->tower2[pv]->sizes[1]);
		MemoryContextSwitchTo(old);
	}
	mtms_key_batch_prepare(w->kb, m, st->keys, rows, n);
	mtms_key_batch_forward(w->kb, m, m->tower2[pc], w->h1a);
	mtms_key_batch_forward(w->kb, m, m->tower2[pv], w->h1b);
	mtms_tower_forward_hidden(m->tower2[pc], w->w2a, w->h1a, n, w->za);
	mtms_tower_forward_hidden(m->tower2[pv], w->w2b, w->h1b, n, w->zb);
	mtms_joint_loss_grads(rs, rows, n, w->za, w->zb, w->da, w->db,
						  st->loss_sum + scene * MTMS_NMETRICS,
						  st->loss_n + scene * MTMS_NMETRICS);
	mtms_key_batch_weight_grad(w->kb, m, m->tower2[pc],
							   mtms_tower_backward_hidden(m->tower2[pc], w->w2a, w->da));
	mtms_key_batch_weight_grad(w->kb, m, m->tower2[pv],
							   mtms_tower_backward_hidden(m->tower2[pv], w->w2b, w->db));
	mtms_key_batch_step(w->kb, m->tower2[pc], (float) st->opts->lr_tower, (float) st->opts->l2);
	mtms_key_batch_step(w->kb, m->tower2[pv], (float) st->opts->lr_tower, (float) st->opts->l2);
	m->tower2[pc]->nsamples += n;
	m->tower2[pv]->nsamples += n;
}

/*
 * Validation logits of the fine-tune towers through the per-key
 * projections of joined_keys.c, built on first use for the row set.
 */
static void
finetune_validation_logits(MtmsStepCtx *ctx, int scene, const MtmsRowSet *vs,
						   const int64 *rows, int64 nr, float *zc, float *zv,
						   struct MtmsJoinedKeys **keys)
{
	MtmsModel  *m = ctx->model;

	if (*keys == NULL)
		*keys = mtms_joined_keys_build(m, vs, rows, nr);
	mtms_joined_keys_logits(*keys, m, m->tower2[MTMS_PAIR(scene, MTMS_TASK_CTR)], zc);
	mtms_joined_keys_logits(*keys, m, m->tower2[MTMS_PAIR(scene, MTMS_TASK_CVR)], zv);
}

static bool
scene_takes_row(int scene, uint8 label)
{
	return true;
}

/* A scene's fine-tune towers start as its phase-1 ones (model.c). */
static void
prepare_scene(MtmsModel *m, int scene)
{
	mtms_model_ensure_finetune_pair(m, MTMS_PAIR(scene, MTMS_TASK_CTR));
	mtms_model_ensure_finetune_pair(m, MTMS_PAIR(scene, MTMS_TASK_CVR));
}

const MtmsStageInfo mtms_stage_finetune_info = {
	.stage = MTMS_STAGE_FINETUNE,
	.name = "finetune",
	.aggregate = "mtms_finetune",
	.unit_is_pair = false,
	.trains_embeddings = false,
	.keyed_rows = true,
	.window = 1,
	.validates_start = true,
	.reports_per_task = true,
	.last_for_towers = true,
	.checkpoints = true,
	.step = mtms_step_finetune,
	.takes_row = scene_takes_row,
	.validation_logits = finetune_validation_logits,
	.prepare_unit = prepare_scene,
};
