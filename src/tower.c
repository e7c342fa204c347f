/*
 * tower.c
 *    Small fully connected networks (ReLU hidden layers, one output logit)
 *    with every dense product done by OpenBLAS.
 *
 * Memory layout: the parameters and optimizer state of a tower live in ONE
 * allocation t->mem of 3 * nparams floats, as three blocks of the same
 * layout: parameters, Adam first moments, Adam second moments (a tower
 * that does not train, one loaded for scoring or one whose training is
 * over, has the first block only: t->moments false); the
 * gradient accumulators, a fourth block of that layout, are a separate
 * allocation t->grad that only a tower being trained has (NULL
 * otherwise: a model that is only held, scored or written carries no
 * gradients).  Within a block come first the weight matrices of every
 * layer (W[0], W[1], ...) and then the biases (b[0], b[1], ...), so that
 *   - one Adam call covers every weight (with L2) and one every bias
 *     (without L2),
 *   - copy, average and serialization are single passes over memory.
 * The per-layer pointers in MtmsTower (W, b, gW, gb, mW, vW, mb, vb) point
 * into those allocations.
 *
 * Batch shapes (row-major): X is B x sizes[0]; act[l] is B x sizes[l]
 * (in0 points to the input: act[0] holding a copy of X, or X itself after
 * mtms_tower_forward_train; act[l] for 0 < l < nlayers the post-ReLU output
 * of layer l-1, act[nlayers] the B logits); delta[l] for l >= 1 is the gradient
 * of the loss with respect to the pre-activation of sizes[l] units.
 */
#include "mtms.h"

#include <math.h>

#include "blas.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "tower.h"
#include "optimizer.h"

#define MTMS_TOWER_VERSION	2	/* 2: without the gradient accumulators */
#define MTMS_TOWER_VERSION_PARAMS	3	/* 3: parameters only, Adam moments zero */

/* Elementwise passes over big arrays check for cancel every this many. */
#define TOWER_CHUNK		(1 << 20)

static void tower_check_shape(int nin, int nhidden, const int32 *hidden);
static void tower_alloc(MtmsTower *t, bool moments);
static void tower_set_pointers(MtmsTower *t);
static void *tower_alloc_floats(int64 n);

/* ----------------------------------------------------------------
 * Creation, copy, free
 * ---------------------------------------------------------------- */

static void
tower_check_shape(int nin, int nhidden, const int32 *hidden)
{
	int			i;

	if (nin < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tower input size %d must be at least 1", nin)));
	if (nhidden < 0 || nhidden > MTMS_MAX_HIDDEN_LAYERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tower hidden layer count %d is out of range", nhidden),
				 errhint("A tower has between 0 and %d hidden layers.",
						 MTMS_MAX_HIDDEN_LAYERS)));
	for (i = 0; i < nhidden; i++)
	{
		if (hidden[i] < 1 || hidden[i] > MTMS_MAX_HIDDEN_SIZE)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tower hidden layer size %d is out of range", hidden[i]),
					 errhint("Hidden layer sizes are between 1 and %d.",
							 MTMS_MAX_HIDDEN_SIZE)));
	}
}

/* palloc of n floats, zeroed, huge allowed. */
static void *
tower_alloc_floats(int64 n)
{
	if (n < 0 || (uint64) n > MaxAllocHugeSize / sizeof(float))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("tower needs %lld floats, more than can be allocated",
						(long long) n)));
	return palloc_extended(Max(n, 1) * sizeof(float),
						   MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
}

/* Point W, b, gW, ... into t->mem; needs nlayers, sizes, nweights, nparams. */
static void
tower_set_pointers(MtmsTower *t)
{
	int64		woff = 0;
	int64		boff = t->nweights;
	int			l;

	for (l = 0; l < MTMS_TOWER_MAX_LAYERS; l++)
	{
		if (l < t->nlayers)
		{
			int64		nout = t->sizes[l + 1];
			int64		nin = t->sizes[l];

			t->W[l] = t->mem + woff;
			t->gW[l] = t->grad ? t->grad + woff : NULL;
			t->mW[l] = t->moments ? t->mem + t->nparams + woff : NULL;
			t->vW[l] = t->moments ? t->mem + 2 * t->nparams + woff : NULL;
			t->b[l] = t->mem + boff;
			t->gb[l] = t->grad ? t->grad + boff : NULL;
			t->mb[l] = t->moments ? t->mem + t->nparams + boff : NULL;
			t->vb[l] = t->moments ? t->mem + 2 * t->nparams + boff : NULL;
			woff += nout * nin;
			boff += nout;
		}
		else
		{
			t->W[l] = t->gW[l] = t->mW[l] = t->vW[l] = NULL;
			t->b[l] = t->gb[l] = t->mb[l] = t->vb[l] = NULL;
		}
	}
}

/*
 * Compute nweights/nparams from sizes, allocate zeroed mem (with room for
 * the Adam moments when moments; no gradients), set pointers.
 */
static void
tower_alloc(MtmsTower *t, bool moments)
{
	int64		nweights = 0;
	int64		nbias = 0;
	int			l;

	for (l = 0; l < t->nlayers; l++)
	{
		nweights += (int64) t->sizes[l + 1] * (int64) t->sizes[l];
		nbias += t->sizes[l + 1];
	}
	t->nweights = nweights;
	t->nparams = nweights + nbias;
	if (t->nparams > (int64) (MaxAllocHugeSize / sizeof(float) / 3))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("tower with %lld parameters is too large",
						(long long) t->nparams)));
	t->moments = moments;
	t->mem = tower_alloc_floats((moments ? 3 : 1) * t->nparams);
	t->grad = NULL;
	tower_set_pointers(t);
}

/* Zero Adam moments for a tower that has none. */
static void
tower_ensure_moments(MtmsTower *t)
{
	if (t->moments)
		return;
	t->mem = repalloc_huge(t->mem, Max(3 * t->nparams, 1) * sizeof(float));
	memset(t->mem + t->nparams, 0, 2 * t->nparams * sizeof(float));
	t->moments = true;
	tower_set_pointers(t);
}

/* A backward pass or a step on a tower without gradients is a bug. */
static inline void
tower_check_grad(const MtmsTower *t)
{
	if (unlikely(t->grad == NULL || !t->moments))
		elog(ERROR, "mtms: a tower without gradient accumulators was trained");
}

void
mtms_tower_ensure_grad(MtmsTower *t)
{
	tower_ensure_moments(t);
	if (t->grad)
		return;
	t->grad = tower_alloc_floats(t->nparams);
	tower_set_pointers(t);
}

void
mtms_tower_drop_training_state(MtmsTower *t)
{
	mtms_tower_drop_grad(t);
	if (!t->moments)
		return;
	t->mem = repalloc_huge(t->mem, Max(t->nparams, 1) * sizeof(float));
	t->moments = false;
	tower_set_pointers(t);
}

void
mtms_tower_drop_grad(MtmsTower *t)
{
	if (t->grad == NULL)
		return;
	pfree(t->grad);
	t->grad = NULL;
	tower_set_pointers(t);
}

MtmsTower *
mtms_tower_create_zero(int nin, int nhidden, const int32 *hidden)
{
	MtmsTower  *t;

	tower_check_shape(nin, nhidden, hidden);

	t = palloc0(sizeof(MtmsTower));
	t->nlayers = nhidden + 1;
	t->sizes[0] = nin;
	for (int l = 0; l < nhidden; l++)
		t->sizes[l + 1] = hidden[l];
	t->sizes[t->nlayers] = 1;
	tower_alloc(t, false);
	return t;
}

MtmsTower *
mtms_tower_create(int nin, int nhidden, const int32 *hidden, uint64 seed)
{
	MtmsTower  *t = mtms_tower_create_zero(nin, nhidden, hidden);
	pg_prng_state rng;
	int			l;

	mtms_tower_ensure_grad(t);

	/* He-uniform: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), biases zero. */
	pg_prng_seed(&rng, seed);
	for (l = 0; l < t->nlayers; l++)
	{
		int64		n = (int64) t->sizes[l + 1] * t->sizes[l];
		double		limit = sqrt(6.0 / (double) t->sizes[l]);
		float	   *W = t->W[l];
		int64		i;

		for (i = 0; i < n; i++)
		{
			if ((i & (TOWER_CHUNK - 1)) == TOWER_CHUNK - 1)
				CHECK_FOR_INTERRUPTS();
			W[i] = (float) ((2.0 * pg_prng_double(&rng) - 1.0) * limit);
		}
	}
	return t;
}

static MtmsTower *
tower_copy(const MtmsTower *t, bool moments)
{
	MtmsTower  *c = palloc(sizeof(MtmsTower));
	int64		n = (moments ? 3 : 1) * t->nparams;

	memcpy(c, t, sizeof(MtmsTower));
	c->moments = moments;
	c->mem = palloc_extended(Max(n, 1) * sizeof(float), MCXT_ALLOC_HUGE);
	memcpy(c->mem, t->mem, n * sizeof(float));
	/* gradients are zero between steps: a copy gets them when trained */
	c->grad = NULL;
	tower_set_pointers(c);
	return c;
}

MtmsTower *
mtms_tower_copy(const MtmsTower *t)
{
	return tower_copy(t, t->moments);
}

MtmsTower *
mtms_tower_copy_params(const MtmsTower *t)
{
	return tower_copy(t, false);
}

void
mtms_tower_free(MtmsTower *t)
{
	if (t == NULL)
		return;
	if (t->mem)
		pfree(t->mem);
	if (t->grad)
		pfree(t->grad);
	pfree(t);
}

Size
mtms_tower_bytes(const MtmsTower *t)
{
	return sizeof(MtmsTower) +
		(Size) (((t->moments ? 3 : 1) + (t->grad ? 1 : 0)) * t->nparams) * sizeof(float);
}

/* ----------------------------------------------------------------
 * Batch scratch
 * ---------------------------------------------------------------- */

static MtmsTowerWork *
tower_work_create(const MtmsTower *t, int max_batch, bool input_copy)
{
	MtmsTowerWork *w;
	int			l;

	if (max_batch < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tower batch size %d must be at least 1", max_batch)));

	w = palloc0(sizeof(MtmsTowerWork));
	w->max_batch = max_batch;
	w->batch = 0;
	for (l = 0; l <= t->nlayers; l++)
	{
		int64		n = (int64) max_batch * t->sizes[l];

		w->act[l] = (l > 0 || input_copy) ? tower_alloc_floats(n) : NULL;
		w->delta[l] = (l == 0) ? NULL : tower_alloc_floats(n);
	}
	return w;
}

MtmsTowerWork *
mtms_tower_work_create(const MtmsTower *t, int max_batch)
{
	return tower_work_create(t, max_batch, true);
}

MtmsTowerWork *
mtms_tower_work_create_hidden(const MtmsTower *t, int max_batch)
{
	return tower_work_create(t, max_batch, false);
}

void
mtms_tower_work_free(MtmsTowerWork *w)
{
	int			l;

	if (w == NULL)
		return;
	for (l = 0; l <= MTMS_TOWER_MAX_LAYERS; l++)
	{
		if (w->act[l])
			pfree(w->act[l]);
		if (w->delta[l])
			pfree(w->delta[l]);
	}
	pfree(w);
}

/* ----------------------------------------------------------------
 * Forward / backward
 * ---------------------------------------------------------------- */

/*
 * out (B x nout) += bias in every row, then ReLU if relu: one pass, written
 * so that the compiler vectorises it (max with 0 as a select, no branch).
 * out already holds in * W^T (sgemm with beta 0), so every element is
 * bias + dot product, the same sum the sgemm with beta 1 over a broadcast
 * bias computed.
 */
MTMS_VEC_CLONES static void
tower_bias_act(float *restrict out, const float *restrict bias, int B, int nout,
			   bool relu)
{
	int			r,
				j;

	if (relu)
	{
		for (r = 0; r < B; r++)
		{
			float	   *restrict o = out + (int64) r * nout;

			for (j = 0; j < nout; j++)
			{
				float		v = o[j] + bias[j];

				o[j] = v > 0.0f ? v : 0.0f;
			}
		}
	}
	else
	{
		for (r = 0; r < B; r++)
		{
			float	   *restrict o = out + (int64) r * nout;

			for (j = 0; j < nout; j++)
				o[j] += bias[j];
		}
	}
}

/* The layers l0.. of a forward pass; their input has been set. */
static void
tower_forward_from(const MtmsTower *t, MtmsTowerWork *w, int l0, int B, float *logits)
{
	int			l;

	for (l = l0; l < t->nlayers; l++)
	{
		int			nin = t->sizes[l];
		int			nout = t->sizes[l + 1];
		const float *in = (l == 0) ? w->in0 : w->act[l];
		float	   *out = w->act[l + 1];

		/* out = in * W^T + bias, then ReLU on hidden layers */
		if (nout == 1)
			cblas_sgemv(CblasRowMajor, CblasNoTrans, B, nin,
						1.0f, in, nin, t->W[l], 1, 0.0f, out, 1);
		else
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
						B, nout, nin,
						1.0f, in, nin, t->W[l], nin,
						0.0f, out, nout);
		tower_bias_act(out, t->b[l], B, nout, l < t->nlayers - 1);
	}

	memcpy(logits, w->act[t->nlayers], B * sizeof(float));
}

/* The layers of a forward pass; in0 has been set to the input. */
static void
tower_forward_layers(const MtmsTower *t, MtmsTowerWork *w, int B, float *logits)
{
	tower_forward_from(t, w, 0, B, logits);
}

static void
tower_check_batch(const MtmsTowerWork *w, int B)
{
	if (B < 0 || B > w->max_batch)
		elog(ERROR, "tower batch of %d rows exceeds the work area's %d", B,
			 w->max_batch);
}

void
mtms_tower_forward(const MtmsTower *t, MtmsTowerWork *w,
				   const float *X, int B, float *logits)
{
	tower_check_batch(w, B);
	w->batch = B;
	if (B == 0)
		return;
	if (w->act[0] == NULL)
		elog(ERROR, "mtms: tower forward with a work area made for forward_hidden");
	memcpy(w->act[0], X, (Size) B * t->sizes[0] * sizeof(float));
	w->in0 = w->act[0];
	tower_forward_layers(t, w, B, logits);
}

void
mtms_tower_forward_train(const MtmsTower *t, MtmsTowerWork *w,
						 const float *X, int B, float *logits)
{
	tower_check_batch(w, B);
	w->batch = B;
	if (B == 0)
		return;
	w->in0 = X;
	tower_forward_layers(t, w, B, logits);
}

/* gb[j] += sum over rows of delta[r][j], rows in order (vectorised on j) */
MTMS_VEC_CLONES static void
tower_bias_grad(float *restrict gb, const float *restrict delta, int B, int nout)
{
	int			r,
				j;

	for (r = 0; r < B; r++)
	{
		const float *restrict drow = delta + (int64) r * nout;

		for (j = 0; j < nout; j++)
			gb[j] += drow[j];
	}
}

/* d[i] = 0 where the post-ReLU activation a[i] is 0 (branchless) */
MTMS_VEC_CLONES static void
tower_relu_mask(float *restrict d, const float *restrict a, int64 n)
{
	int64		i;

	for (i = 0; i < n; i++)
		d[i] = a[i] > 0.0f ? d[i] : 0.0f;
}

void
mtms_tower_forward_hidden(const MtmsTower *t, MtmsTowerWork *w,
						  const float *H1, int B, float *logits)
{
	tower_check_batch(w, B);
	w->batch = B;
	w->in0 = NULL;
	if (B == 0)
		return;
	memcpy(w->act[1], H1, (Size) B * t->sizes[1] * sizeof(float));
	tower_bias_act(w->act[1], t->b[0], B, t->sizes[1], t->nlayers > 1);
	tower_forward_from(t, w, 1, B, logits);
}

/*
 * The backward pass down to layer l_stop (0: all; 1: all but the first
 * layer's weights and input gradient).
 */
static void
tower_backward_to(MtmsTower *t, MtmsTowerWork *w, const float *dlogits,
				  float *dX, int l_stop)
{
	int			B = w->batch;
	int			l;

	if (B == 0)
		return;

	memcpy(w->delta[t->nlayers], dlogits, B * sizeof(float));

	for (l = t->nlayers - 1; l >= l_stop; l--)
	{
		int			nin = t->sizes[l];
		int			nout = t->sizes[l + 1];
		const float *delta = w->delta[l + 1];	/* B x nout */
		const float *act = (l == 0) ? w->in0 : w->act[l];	/* B x nin */

		/* gW (nout x nin) += delta^T * act */
		if (nout == 1)
			cblas_sgemv(CblasRowMajor, CblasTrans, B, nin,
						1.0f, act, nin, delta, 1, 1.0f, t->gW[l], 1);
		else
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
						nout, nin, B,
						1.0f, delta, nout, act, nin,
						1.0f, t->gW[l], nin);

		/* gb += column sums of delta */
		tower_bias_grad(t->gb[l], delta, B, nout);

		/* gradient with respect to this layer's input: delta * W */
		if (l > 0 || dX != NULL)
		{
			float	   *dprev = (l > 0) ? w->delta[l] : dX;

			if (nout == 1)
			{
				/* outer product delta (B) x W (nin): no BLAS call needed */
				const float *W = t->W[l];
				int			r,
							j;

				for (r = 0; r < B; r++)
				{
					float		dr = delta[r];
					float	   *restrict o = dprev + (int64) r * nin;

					for (j = 0; j < nin; j++)
						o[j] = dr * W[j];
				}
			}
			else
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
							B, nin, nout,
							1.0f, delta, nout, t->W[l], nin,
							0.0f, dprev, nin);

			/* ReLU mask: act[l] is the post-ReLU output of layer l-1 */
			if (l > 0)
				tower_relu_mask(dprev, act, (int64) B * nin);
		}
	}
}

void
mtms_tower_backward(MtmsTower *t, MtmsTowerWork *w,
					const float *dlogits, float *dX)
{
	tower_check_grad(t);
	tower_backward_to(t, w, dlogits, dX, 0);
}

const float *
mtms_tower_backward_hidden(MtmsTower *t, MtmsTowerWork *w, const float *dlogits)
{
	int			B = w->batch;

	tower_check_grad(t);

	if (B == 0)
		return w->delta[1];
	if (t->nlayers == 1)
		memcpy(w->delta[1], dlogits, B * sizeof(float));
	else
		tower_backward_to(t, w, dlogits, NULL, 1);
	/* gb[0] += column sums of the first layer's output gradient */
	tower_bias_grad(t->gb[0], w->delta[1], B, t->sizes[1]);
	return w->delta[1];
}

/*
 * Adam on the weights from float `from` of the weight block (with L2) and
 * on every bias (without), then zero their gradients.  W[0] leads the
 * weight block, so from = 0 is every weight and from = |W[0]| every layer
 * but the first.
 */
static void
tower_step_from(MtmsTower *t, int64 from, float lr, float l2)
{
	float	   *p = t->mem;
	float	   *g = t->grad;
	float	   *m = t->mem + t->nparams;
	float	   *v = t->mem + 2 * t->nparams;
	int64		nw = t->nweights;
	int64		nb = t->nparams - t->nweights;

	mtms_adam_update(p + from, g + from, m + from, v + from, nw - from, lr, l2, t->step);
	mtms_adam_update(p + nw, g + nw, m + nw, v + nw, nb, lr, 0.0f, t->step);
	memset(g + from, 0, (t->nparams - from) * sizeof(float));
}

void
mtms_tower_step(MtmsTower *t, float lr, float l2)
{
	tower_check_grad(t);

	t->step++;
	t->nin_used = 0;			/* every column may now be non-zero */
	tower_step_from(t, 0, lr, l2);
}

void
mtms_tower_step_input_runs(MtmsTower *t, float lr, float l2, const int32 *col,
						   const int32 *len, int nruns)
{
	int			nin = t->sizes[0];
	int			h1 = t->sizes[1];

	tower_check_grad(t);
	for (int k = 0; k < nruns; k++)
		if (col[k] < 0 || len[k] < 0 || col[k] + len[k] > nin)
			elog(ERROR, "tower input columns %d..%d out of %d", col[k], col[k] + len[k], nin);

	t->step++;
	t->nin_used = 0;
	/* the first layer's runs, then every other layer and bias */
	mtms_adam_update_runs(t->W[0], t->gW[0], t->mW[0], t->vW[0], h1, nin, col, len, nruns,
						  lr, l2, t->step);
	for (int o = 0; o < h1; o++)
		for (int k = 0; k < nruns; k++)
			memset(t->gW[0] + (int64) o * nin + col[k], 0, sizeof(float) * len[k]);
	tower_step_from(t, (int64) nin * h1, lr, l2);
}

void
mtms_tower_step_columns(MtmsTower *t, float lr, float l2, int first_col)
{
	int			nin = t->sizes[0];
	int32		ncols = nin - first_col;

	tower_check_grad(t);

	t->step++;
	t->nin_used = 0;
	/* one run of columns in every row of the first layer */
	if (ncols > 0)
		mtms_adam_update_runs(t->W[0], t->gW[0], t->mW[0], t->vW[0], t->sizes[1], nin,
							  &first_col, &ncols, 1, lr, l2, t->step);
	memset(t->grad, 0, t->nparams * sizeof(float));
}

float
mtms_tower_predict1(const MtmsTower *t, const float *x, float *scratch)
{
	int			maxsize = 0;
	int			nin = t->sizes[0];
	int			nread = t->nin_used > 0 ? t->nin_used : nin;
	float	   *h = scratch;

	for (int l = 0; l <= t->nlayers; l++)
		maxsize = Max(maxsize, t->sizes[l]);

	/* the first layer reads the columns that carry weights (nin_used) */
	memcpy(h, t->b[0], t->sizes[1] * sizeof(float));
	cblas_sgemv(CblasRowMajor, CblasNoTrans, t->sizes[1], nread,
				1.0f, t->W[0], nin, x, 1, 1.0f, h, 1);
	return mtms_tower_predict1_hidden(t, h, scratch + maxsize);
}

float
mtms_tower_predict1_hidden(const MtmsTower *t, float *h, float *other)
{
	float	   *bufs[2] = {h, other};
	const float *in = h;

	if (t->nlayers == 1)
		return h[0];
	for (int i = 0; i < t->sizes[1]; i++)
		h[i] = h[i] > 0.0f ? h[i] : 0.0f;
	for (int l = 1; l < t->nlayers; l++)
	{
		int			nout = t->sizes[l + 1];
		float	   *out = bufs[l & 1];

		if (nout == 1)			/* the logit: a dot product, cheaper to call */
			out[0] = t->b[l][0] + cblas_sdot(t->sizes[l], t->W[l], 1, in, 1);
		else
		{
			memcpy(out, t->b[l], nout * sizeof(float));
			cblas_sgemv(CblasRowMajor, CblasNoTrans, nout, t->sizes[l],
						1.0f, t->W[l], t->sizes[l], in, 1, 1.0f, out, 1);
		}
		if (l < t->nlayers - 1)
			for (int i = 0; i < nout; i++)
				out[i] = out[i] > 0.0f ? out[i] : 0.0f;
		in = out;
	}
	return in[0];
}

void
mtms_tower_trim_input(MtmsTower *t)
{
	int			nin = t->sizes[0];
	int			nout = t->sizes[1];
	int			last = -1;

	for (int o = 0; o < nout; o++)
	{
		const float *row = t->W[0] + (int64) o * nin;

		for (int j = nin - 1; j > last; j--)
			if (row[j] != 0.0f)
			{
				last = j;
				break;
			}
	}
	t->nin_used = (last + 1 < nin) ? Max(last + 1, 1) : 0;
}

/* ----------------------------------------------------------------
 * Combine, grow
 * ---------------------------------------------------------------- */

void
mtms_tower_average(MtmsTower *dst, double wdst,
				   const MtmsTower *src, double wsrc)
{
	double		wsum;
	float		a,
				b;
	int64		k;
	int			l;

	if (dst->nlayers != src->nlayers)
		elog(ERROR, "cannot average towers of %d and %d layers",
			 dst->nlayers, src->nlayers);
	for (l = 0; l <= dst->nlayers; l++)
		if (dst->sizes[l] != src->sizes[l])
			elog(ERROR, "cannot average towers: layer %d has %d units in one and %d in the other",
				 l, dst->sizes[l], src->sizes[l]);
	if (!(wdst >= 0.0) || !(wsrc >= 0.0))
		elog(ERROR, "tower average weights must be non-negative, got %g and %g",
			 wdst, wsrc);

	wsum = wdst + wsrc;
	if (wsum > 0.0 && isfinite(wsum))
	{
		a = (float) (wdst / wsum);
		b = (float) (wsrc / wsum);
	}
	else
		a = b = 0.5f;

	/*
	 * parameters, first and second moments (those of a tower without
	 * moments count as zero); gradients are left alone
	 */
	for (k = 0; k < (dst->moments ? 3 : 1); k++)
	{
		float	   *d;
		const float *s;
		int64		i;

		d = dst->mem + k * dst->nparams;
		s = (k == 0 || src->moments) ? src->mem + k * src->nparams : NULL;
		for (i = 0; i < dst->nparams; i++)
		{
			if ((i & (TOWER_CHUNK - 1)) == TOWER_CHUNK - 1)
				CHECK_FOR_INTERRUPTS();
			d[i] = a * d[i] + (s ? b * s[i] : 0.0f);
		}
	}
	dst->step = Max(dst->step, src->step);
	dst->nsamples += src->nsamples;
}

void
mtms_tower_remap_input(MtmsTower *t, int new_nin, const int32 *map)
{
	MtmsTower	old;
	int			old_nin = t->sizes[0];
	int			nout = t->sizes[1];
	bool	   *used;
	int64		k;
	int			j;

	if (new_nin < old_nin)
		elog(ERROR, "cannot shrink a tower's input from %d to %d", old_nin, new_nin);
	used = palloc0(new_nin * sizeof(bool));
	for (j = 0; j < old_nin; j++)
	{
		if (map[j] < 0 || map[j] >= new_nin || used[map[j]])
			elog(ERROR, "invalid tower input map: column %d maps to %d (new input size %d)",
				 j, map[j], new_nin);
		used[map[j]] = true;
	}
	pfree(used);

	old = *t;
	t->sizes[0] = new_nin;
	tower_alloc(t, old.moments);
	/* gradients are zero between steps: new zero ones, if it had any */
	if (old.grad)
	{
		pfree(old.grad);
		mtms_tower_ensure_grad(t);
	}

	/*
	 * Scoring keeps reading the old columns only when they stay in place
	 * in front (an identity map on a prefix): the usual case, new blocks
	 * appended.
	 */
	t->nin_used = 0;
	if (new_nin > old_nin)
	{
		bool		prefix = true;

		for (j = 0; j < old_nin; j++)
			if (map[j] != j)
				prefix = false;
		if (prefix)
			t->nin_used = old.nin_used > 0 ? old.nin_used : old_nin;
	}

	for (k = 0; k < (old.moments ? 3 : 1); k++)
	{
		const float *osrc = old.mem + k * old.nparams;
		float	   *ndst = t->mem + k * t->nparams;
		int64		o;

		/* layer 0 weights: scatter the columns; new ones stay zero */
		for (o = 0; o < nout; o++)
		{
			const float *orow = osrc + o * old_nin;
			float	   *nrow = ndst + o * new_nin;

			for (j = 0; j < old_nin; j++)
				nrow[map[j]] = orow[j];
		}
		/* the other layers' weights and all biases keep their layout */
		memcpy(ndst + (int64) nout * new_nin,
			   osrc + (int64) nout * old_nin,
			   (old.nparams - (int64) nout * old_nin) * sizeof(float));
	}
	pfree(old.mem);
}

/* ----------------------------------------------------------------
 * Serialization
 * ---------------------------------------------------------------- */

static void
tower_serialize(StringInfo buf, const MtmsTower *t, bool moments)
{
	uint32		magic = MTMS_TOWER_MAGIC;
	uint32		version;
	Size		nbytes;

	/* a tower without moments travels as parameters only */
	moments = moments && t->moments;
	version = moments ? MTMS_TOWER_VERSION : MTMS_TOWER_VERSION_PARAMS;
	nbytes = (Size) ((moments ? 3 : 1) * t->nparams) * sizeof(float);

	appendBinaryStringInfo(buf, (char *) &magic, sizeof(magic));
	appendBinaryStringInfo(buf, (char *) &version, sizeof(version));
	appendBinaryStringInfo(buf, (char *) &t->nlayers, sizeof(int32));
	appendBinaryStringInfo(buf, (char *) t->sizes,
						   (t->nlayers + 1) * sizeof(int32));
	appendBinaryStringInfo(buf, (char *) &t->step, sizeof(int64));
	appendBinaryStringInfo(buf, (char *) &t->nsamples, sizeof(int64));
	if (nbytes >= (Size) (MaxAllocSize - buf->len))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("tower of %lld parameters is too large to serialize",
						(long long) t->nparams)));
	/* weights and biases, then the Adam moments; the gradients are zero */
	appendBinaryStringInfo(buf, (char *) t->mem, nbytes);
}

void
mtms_tower_serialize(StringInfo buf, const MtmsTower *t)
{
	tower_serialize(buf, t, true);
}

void
mtms_tower_serialize_params(StringInfo buf, const MtmsTower *t)
{
	tower_serialize(buf, t, false);
}

/* Copy n bytes from *p to dst, ERROR if fewer than n remain. */
static void
tower_read(const char **p, const char *end, void *dst, Size n, const char *what)
{
	if (*p > end || (Size) (end - *p) < n)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("truncated tower state: %s needs %zu bytes, %zu left",
						what, n, (Size) (*p <= end ? end - *p : 0))));
	memcpy(dst, *p, n);
	*p += n;
}

MtmsTower *
mtms_tower_deserialize(const char **p, const char *end)
{
	uint32		magic;
	uint32		version;
	int32		nlayers;
	int32		sizes[MTMS_TOWER_MAX_LAYERS + 1];
	int64		step;
	int64		nsamples;
	int64		nparams = 0;
	MtmsTower  *t;
	Size		nbytes;
	int			l;

	tower_read(p, end, &magic, sizeof(magic), "header");
	if (magic != MTMS_TOWER_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: bad magic number %08x", magic)));
	tower_read(p, end, &version, sizeof(version), "header");
	if (version != MTMS_TOWER_VERSION && version != MTMS_TOWER_VERSION_PARAMS)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: unsupported version %u", version)));
	tower_read(p, end, &nlayers, sizeof(nlayers), "header");
	if (nlayers < 1 || nlayers > MTMS_TOWER_MAX_LAYERS)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: %d layers", nlayers)));
	tower_read(p, end, sizes, (nlayers + 1) * sizeof(int32), "layer sizes");
	for (l = 0; l <= nlayers; l++)
	{
		if (sizes[l] < 1 || (l > 0 && sizes[l] > MTMS_MAX_HIDDEN_SIZE))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("corrupt tower state: layer %d has %d units", l, sizes[l])));
		if (l > 0)
			nparams += (int64) sizes[l] * sizes[l - 1] + sizes[l];
	}
	if (sizes[nlayers] != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: %d outputs instead of 1", sizes[nlayers])));
	tower_read(p, end, &step, sizeof(step), "header");
	tower_read(p, end, &nsamples, sizeof(nsamples), "header");
	if (step < 0 || nsamples < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: negative step or sample count")));
	/* far above any real count, and low enough that sums cannot overflow */
	if (step > ((int64) 1 << 53) || nsamples > ((int64) 1 << 53))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt tower state: step or sample count out of range")));

	/* check the remaining length before allocating anything */
	nbytes = (Size) ((version == MTMS_TOWER_VERSION ? 3 : 1) * nparams) * sizeof(float);
	if ((Size) (end - *p) < nbytes)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("truncated tower state: parameters need %zu bytes, %zu left",
						nbytes, (Size) (end - *p))));

	t = palloc0(sizeof(MtmsTower));
	t->nlayers = nlayers;
	memcpy(t->sizes, sizes, (nlayers + 1) * sizeof(int32));
	t->step = step;
	t->nsamples = nsamples;
	tower_alloc(t, version == MTMS_TOWER_VERSION);
	Assert(t->nparams == nparams);
	/* weights and biases, the Adam moments if sent (no gradients: zero) */
	memcpy(t->mem, *p, nbytes);
	*p += nbytes;
	return t;
}

/* ----------------------------------------------------------------
 * Flat copies (model_flat.h): the parameters only, read by views
 * ---------------------------------------------------------------- */

typedef struct TowerFlat
{
	uint32		magic;
	int32		nlayers;
	int32		sizes[MTMS_TOWER_MAX_LAYERS + 1];
	int32		nin_used;
	int64		step;
	int64		nsamples;
	int64		nweights;
	int64		nparams;
	/* then, 64-byte aligned: every layer's W, then every layer's b */
} TowerFlat;

#define TOWER_FLAT_HEADER	TYPEALIGN(64, sizeof(TowerFlat))

Size
mtms_tower_flat_size(const MtmsTower *t)
{
	return TYPEALIGN(64, add_size(TOWER_FLAT_HEADER,
								  mul_size(t->nparams, sizeof(float))));
}

void
mtms_tower_flat_write(const MtmsTower *t, char *dst)
{
	TowerFlat  *h = (TowerFlat *) dst;

	memset(h, 0, sizeof(TowerFlat));
	h->magic = MTMS_TOWER_MAGIC;
	h->nlayers = t->nlayers;
	memcpy(h->sizes, t->sizes, sizeof(h->sizes));
	h->nin_used = t->nin_used;
	h->step = t->step;
	h->nsamples = t->nsamples;
	h->nweights = t->nweights;
	h->nparams = t->nparams;
	/* mem starts with the parameters, W then b, in this very layout */
	memcpy(dst + TOWER_FLAT_HEADER, t->mem, t->nparams * sizeof(float));
}

/*
 * A tower reading the flat copy at src in place (its header in
 * CurrentMemoryContext): W and b only, no optimizer state nor gradients,
 * for predictions; training, copying or freeing it is a bug.
 */
MtmsTower *
mtms_tower_flat_view(const char *src)
{
	const TowerFlat *h = (const TowerFlat *) src;
	MtmsTower  *t;
	float	   *params = (float *) (src + TOWER_FLAT_HEADER);
	int64		woff = 0;
	int64		boff;

	if (h->magic != MTMS_TOWER_MAGIC)
		elog(ERROR, "mtms: corrupt shared tower");
	t = palloc0(sizeof(MtmsTower));
	t->nlayers = h->nlayers;
	memcpy(t->sizes, h->sizes, sizeof(t->sizes));
	t->nin_used = h->nin_used;
	t->step = h->step;
	t->nsamples = h->nsamples;
	t->nweights = h->nweights;
	t->nparams = h->nparams;
	boff = t->nweights;
	for (int l = 0; l < t->nlayers; l++)
	{
		t->W[l] = params + woff;
		t->b[l] = params + boff;
		woff += (int64) t->sizes[l + 1] * t->sizes[l];
		boff += t->sizes[l + 1];
	}
	return t;
}
