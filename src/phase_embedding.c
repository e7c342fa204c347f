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
#include "train_state.h"

#include "miscadmin.h"
#include "optimizer.h"

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

static void
ensure_ridx(MtmsBatchWork *w, int64 need)
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

/*
 * Sum-pool rows' features from emb into x (n x in1), creating unseen rows;
 * ridx records the row of every feature occurrence for the backward pass.
 */
static inline int
frozen_fields(const MtmsTrainState *st, int pair)
{
	return st->frozen_fields ? st->frozen_fields[pair] : 0;
}

/* feature arrays of the row this many rows ahead are prefetched */
#define GATHER_AHEAD_ROWS	4
/* embedding vectors of the occurrence this many occurrences ahead too */
#define GATHER_AHEAD_FEATS	16

MTMS_VEC_CLONES static void
gather_train(MtmsTrainState *st, int pair, const MtmsRowSet *rs,
			 const int64 *rows, int n, float *x, int64 *ridx)
{
	MtmsModel  *m = st->model;
	MtmsEmbStore *emb = m->emb[pair];
	int			d = m->dim;
	Size		in1 = MTMS_INPUT1(m);
	int64		k = 0;
	int64		nocc;
	int			frozen = frozen_fields(st, pair);
	int64		max_features = st->opts.max_features;

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
scatter_grads(MtmsTrainState *st, int pair, const MtmsRowSet *rs,
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
	mtms_emb_apply(emb, (float) st->opts.lr_embedding, (float) st->opts.l2);
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
tower_step(MtmsTrainState *st, int pair)
{
	MtmsTower  *t = st->model->tower1[pair];
	int			frozen = frozen_fields(st, pair);

	if (frozen > 0)
		mtms_tower_step_columns(t, (float) st->opts.lr_tower, (float) st->opts.l2,
								frozen * st->model->dim);
	else
		mtms_tower_step(t, (float) st->opts.lr_tower, (float) st->opts.l2);
}

void
mtms_step_pair(MtmsTrainState *st, int pair, const MtmsRowSet *rs,
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

	ensure_ridx(w, batch_features(rs, rows, n));
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

void
mtms_step_ctcvr(MtmsTrainState *st, int scene, const MtmsRowSet *rs,
				const int64 *rows, int n)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);

	ensure_ridx(w, batch_features(rs, rows, n));
	gather_train(st, pc, rs, rows, n, w->xa, w->ridx_a);
	gather_train(st, pv, rs, rows, n, w->xb, w->ridx_b);
	mtms_tower_forward_train(m->tower1[pc], w->w1a, w->xa, n, w->za);
	mtms_tower_forward_train(m->tower1[pv], w->w1b, w->xb, n, w->zb);
	mtms_joint_batch_grads(st, scene, rs, rows, n);

	mtms_tower_backward(m->tower1[pc], w->w1a, w->da, w->dx);
	scatter_grads(st, pc, rs, rows, n, w->dx, w->ridx_a);
	mtms_tower_backward(m->tower1[pv], w->w1b, w->db, w->dx);
	scatter_grads(st, pv, rs, rows, n, w->dx, w->ridx_b);
	tower_step(st, pc);
	tower_step(st, pv);
	m->tower1[pc]->nsamples += n;
	m->tower1[pv]->nsamples += n;
}

PG_FUNCTION_INFO_V1(mtms_embedding_update_transfn);
Datum
mtms_embedding_update_transfn(PG_FUNCTION_ARGS)
{
	return mtms_state_transition(fcinfo, false);
}
