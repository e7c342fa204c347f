/*
 * phase_embedding.c
 *    Phase 1 of MTMS, the embedding update: the mtms_embedding_update
 *    aggregate's transition function and its two kinds of mini-batch steps.
 *
 *  - Embedding stage: each (scene, task) pair is an independent sub-model,
 *    its own embeddings sum-pooled per field into its own phase-1 tower,
 *    trained with BCE on its own rows (CTR: every impression of the scene,
 *    label click; CVR: clicked impressions, label conversion).
 *  - CTCVR stage: per scene, pCTCVR = pCTR x pCVR on every impression of the
 *    scene (label click AND conversion), trained together with the CTR and
 *    CVR losses (L = L_ctr + L_cvr + L_ctcvr) so the product is learned
 *    without letting either factor drift; gradients reach both sub-models'
 *    towers and embeddings.
 *
 * Embedding rows are created on first sight (up to max_features per pair)
 * and updated with row-wise Adagrad; towers with Adam.
 */
#include "train_step.h"
#include "train_stages.h"

#include "miscadmin.h"
#include "optimizer.h"

/*
 * Sum-pool rows' features from emb into x (n x in1), creating unseen rows;
 * ridx records the row of every feature occurrence for the backward pass.
 */
static inline int
frozen_fields(const MtmsStepCtx *st, int pair)
{
	return st->frozen_fields ? st->frozen_fields[pair] : 0;
}

/* feature arrays of the row this many rows ahead are prefetched */
#define GATHER_AHEAD_ROWS	4
/* embedding vectors of the occurrence this many occurrences ahead too */
#define GATHER_AHEAD_FEATS	16

MTMS_VEC_CLONES static void
gather_train(MtmsStepCtx *st, int pair, const MtmsRowSet *rs,
			 const int64 *rows, int n, float *x, int64 *ridx)
{
	MtmsModel  *m = st->model;
	MtmsEmbStore *emb = m->emb[pair];
	int			d = m->dim;
	Size		in1 = MTMS_INPUT1(m);
	int64		k = 0;
	int64		nocc;
	int			frozen = frozen_fields(st, pair);
	int64		max_features = st->opts->max_features;

	/*
	 * Pass 1: the row of every feature occurrence, in order (so rows are
	 * created in the same order as always).  The rows' feature arrays are
	 * scattered over the whole row set: fetch them a few rows ahead.
	 */
	for (int i = 0; i < n; i++)
	{
		const MtmsFeature *f = rs->feats + rs->start[rows[i]];
		int			nf = (int) (rs->start[rows[i] + 1] - rs->start[rows[i]]);

		if (i + GATHER_AHEAD_ROWS < n)
		{
			int64		r = rows[i + GATHER_AHEAD_ROWS];
			const MtmsFeature *fa = rs->feats + rs->start[r];

			mtms_prefetch(fa);
			mtms_prefetch(rs->feats + rs->start[r + 1] - 1);
		}
		if (i + GATHER_AHEAD_ROWS / 2 < n)
		{
			int64		r = rows[i + GATHER_AHEAD_ROWS / 2];

			mtms_emb_resolve(emb, f, nf, frozen, max_features, ridx + k,
							 rs->feats + rs->start[r],
							 (int) (rs->start[r + 1] - rs->start[r]));
		}
		else
			mtms_emb_resolve(emb, f, nf, frozen, max_features, ridx + k,
							 NULL, 0);
		k += nf;
	}
	nocc = k;

	/* Pass 2: sum-pool the vectors, fetching them ahead. */
	memset(x, 0, sizeof(float) * in1 * n);
	k = 0;
	for (int i = 0; i < n; i++)
	{
		const MtmsFeature *f = rs->feats + rs->start[rows[i]];
		int			nf = (int) (rs->start[rows[i] + 1] - rs->start[rows[i]]);
		float	   *xi = x + in1 * i;

		for (int j = 0; j < nf; j++, k++)
		{
			int64		idx = ridx[k];

			if (k + GATHER_AHEAD_FEATS < nocc && ridx[k + GATHER_AHEAD_FEATS] >= 0)
				mtms_prefetch(mtms_emb_vector(emb, ridx[k + GATHER_AHEAD_FEATS]));
			if (idx >= 0)
			{
				const float *v = mtms_emb_vector(emb, idx);
				float	   *dst = xi + (Size) f[j].field * d;

				for (int c = 0; c < d; c++)
					dst[c] += v[c];
			}
		}
	}
}

/* Route input gradients dx (n x in1) to the embedding rows in ridx. */
static void
scatter_grads(MtmsStepCtx *st, int pair, const MtmsRowSet *rs,
			  const int64 *rows, int n, const float *dx, const int64 *ridx)
{
	MtmsModel  *m = st->model;
	MtmsEmbStore *emb = m->emb[pair];
	Size		in1 = MTMS_INPUT1(m);
	int64		k = 0;
	int			frozen = frozen_fields(st, pair);

	for (int i = 0; i < n; i++)
	{
		const MtmsFeature *f = rs->feats + rs->start[rows[i]];
		int			nf = (int) (rs->start[rows[i] + 1] - rs->start[rows[i]]);

		mtms_emb_add_grad_row(emb, f, nf, ridx + k, frozen, dx + in1 * i);
		k += nf;
	}
	mtms_emb_apply(emb, (float) st->opts->lr_embedding, (float) st->opts->l2);
}

static int64
batch_features(const MtmsRowSet *rs, const int64 *rows, int n)
{
	int64		total = 0;

	for (int i = 0; i < n; i++)
		total += rs->start[rows[i] + 1] - rs->start[rows[i]];
	return total;
}

/* Adam step of pair's phase-1 tower: whole, or only its new columns. */
static void
tower_step(MtmsStepCtx *st, int pair)
{
	MtmsTower  *t = st->model->tower1[pair];
	int			frozen = frozen_fields(st, pair);

	if (frozen > 0)
		mtms_tower_step_columns(t, (float) st->opts->lr_tower, (float) st->opts->l2,
								frozen * st->model->dim);
	else
		mtms_tower_step(t, (float) st->opts->lr_tower, (float) st->opts->l2);
}

static void
mtms_step_pair(MtmsStepCtx *st, int pair, const MtmsRowSet *rs,
			   const int64 *rows, int n)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	MtmsTower  *tower = m->tower1[pair];
	int			task = MTMS_PAIR_TASK(pair);
	int			slot = MTMS_PAIR_SCENE(pair) * MTMS_NMETRICS +
		(task == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR);
	uint8		bit = task == MTMS_TASK_CTR ? MTMS_LABEL_CLICK : MTMS_LABEL_CONV;
	double		loss = 0;

	mtms_batch_work_ridx(w, batch_features(rs, rows, n));
	gather_train(st, pair, rs, rows, n, w->xa, w->ridx_a);
	mtms_tower_forward_train(tower, w->w1a, w->xa, n, w->za);
	for (int i = 0; i < n; i++)
	{
		bool		y = (rs->label[rows[i]] & bit) != 0;
		float		p = mtms_sigmoid(w->za[i]);

		loss += mtms_bce(p, y);
		w->da[i] = (p - (y ? 1.0f : 0.0f)) / n;
	}
	st->loss_sum[slot] += loss;
	st->loss_n[slot] += n;

	mtms_tower_backward(tower, w->w1a, w->da, w->dx);
	scatter_grads(st, pair, rs, rows, n, w->dx, w->ridx_a);
	tower_step(st, pair);
	tower->nsamples += n;
}

static void
mtms_step_ctcvr(MtmsStepCtx *st, int scene, const MtmsRowSet *rs,
				const int64 *rows, int n)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);

	mtms_batch_work_ridx(w, batch_features(rs, rows, n));
	gather_train(st, pc, rs, rows, n, w->xa, w->ridx_a);
	gather_train(st, pv, rs, rows, n, w->xb, w->ridx_b);
	mtms_tower_forward_train(m->tower1[pc], w->w1a, w->xa, n, w->za);
	mtms_tower_forward_train(m->tower1[pv], w->w1b, w->xb, n, w->zb);
	mtms_joint_loss_grads(rs, rows, n, w->za, w->zb, w->da, w->db,
						  st->loss_sum + scene * MTMS_NMETRICS,
						  st->loss_n + scene * MTMS_NMETRICS);

	mtms_tower_backward(m->tower1[pc], w->w1a, w->da, w->dx);
	scatter_grads(st, pc, rs, rows, n, w->dx, w->ridx_a);
	mtms_tower_backward(m->tower1[pv], w->w1b, w->db, w->dx);
	scatter_grads(st, pv, rs, rows, n, w->dx, w->ridx_b);
	tower_step(st, pc);
	tower_step(st, pv);
	m->tower1[pc]->nsamples += n;
	m->tower1[pv]->nsamples += n;
}

/* validation logits are computed in batches this large */
#define EVAL_BATCH 512

/* Phase-1 logits of CTR and CVR for rows[0..n) of vs. */
static void
eval_batch(MtmsStepCtx *ctx, int scene, const MtmsRowSet *vs,
		   const int64 *rows, int n, float *zc, float *zv)
{
	MtmsModel  *m = ctx->model;
	MtmsBatchWork *w = ctx->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);
	int			in1 = MTMS_INPUT1(m);

	for (int i = 0; i < n; i++)
	{
		const MtmsFeature *f = vs->feats + vs->start[rows[i]];
		int			nf = (int) (vs->start[rows[i] + 1] - vs->start[rows[i]]);

		mtms_input1(m, pc, f, nf, w->xa + (Size) i * in1);
		mtms_input1(m, pv, f, nf, w->xb + (Size) i * in1);
	}
	mtms_tower_forward(m->tower1[pc], w->w1a, w->xa, n, zc);
	mtms_tower_forward(m->tower1[pv], w->w1b, w->xb, n, zv);
}

/* Validation logits of both phase-1 stages: the towers' batch forward. */
static void
phase1_validation_logits(MtmsStepCtx *ctx, int scene, const MtmsRowSet *vs,
						 const int64 *rows, int64 nr, float *zc, float *zv,
						 struct MtmsJoinedKeys **keys)
{
	for (int64 b = 0; b < nr; b += EVAL_BATCH)
	{
		int			n = (int) Min(EVAL_BATCH, nr - b);

		CHECK_FOR_INTERRUPTS();
		eval_batch(ctx, scene, vs, rows + b, n, zc + b, zv + b);
	}
}

static bool
pair_takes_row(int pair, uint8 label)
{
	/* CTR: every impression of the scene; CVR: the clicked ones */
	return MTMS_PAIR_TASK(pair) == MTMS_TASK_CTR || (label & MTMS_LABEL_CLICK) != 0;
}

static bool
scene_takes_row(int scene, uint8 label)
{
	return true;
}

const MtmsStageInfo mtms_stage_embedding_info = {
	.stage = MTMS_STAGE_EMBEDDING,
	.name = "embedding",
	.aggregate = "mtms_embedding_update",
	.unit_is_pair = true,
	.trains_embeddings = true,
	.keyed_rows = false,
	.window = 0,
	.validates_start = false,
	.reports_per_task = false,
	.checkpoints = false,
	.step = mtms_step_pair,
	.takes_row = pair_takes_row,
	.validation_logits = phase1_validation_logits,
};

/* The embedding stage on a scene's phase-1 and fine-tune rows together. */
const MtmsStageInfo mtms_stage_refit_info = {
	.stage = MTMS_STAGE_REFIT,
	.name = "refit",
	.aggregate = "mtms_embedding_update",
	.unit_is_pair = true,
	.trains_embeddings = true,
	.keyed_rows = false,
	.window = 2,
	.validates_start = false,
	.reports_per_task = false,
	.checkpoints = false,
	.step = mtms_step_pair,
	.takes_row = pair_takes_row,
	.validation_logits = phase1_validation_logits,
};

const MtmsStageInfo mtms_stage_ctcvr_info = {
	.stage = MTMS_STAGE_CTCVR,
	.name = "ctcvr",
	.aggregate = "mtms_embedding_update",
	.unit_is_pair = false,
	.trains_embeddings = true,
	.keyed_rows = false,
	.window = 0,
	.validates_start = true,
	.reports_per_task = false,
	.checkpoints = false,
	.step = mtms_step_ctcvr,
	.takes_row = scene_takes_row,
	.validation_logits = phase1_validation_logits,
};
