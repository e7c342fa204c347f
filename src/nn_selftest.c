/*
 * nn_selftest.c
 *    Internal self-checks of the numerical core (optimizer.c, tower.c,
 *    embedding_store.c), callable from SQL so the regression suite can run
 *    them inside a real backend (memory contexts, OpenBLAS, error paths).
 *
 *    mtms_nn_selftest()                 one row per check
 *    mtms_nn_sample_state(kind text)    a small serialized tower/embedding
 *    mtms_nn_deserialize_check(bytea)   deserialize, ERROR if corrupt
 */
#include "mtms.h"

#include <math.h>

#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "embedding_store.h"
#include "joined_keys.h"
#include "optimizer.h"
#include "blas_state.h"
#include "tower.h"

PG_FUNCTION_INFO_V1(mtms_nn_selftest);
PG_FUNCTION_INFO_V1(mtms_nn_sample_state);
PG_FUNCTION_INFO_V1(mtms_nn_deserialize_check);

typedef bool (*selftest_fn) (double *detail);

typedef struct SelfTest
{
	const char *name;
	selftest_fn fn;
} SelfTest;

/* ----------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------- */

static void
fill_uniform(pg_prng_state *rng, float *x, int64 n, double lo, double hi)
{
	int64		i;

	for (i = 0; i < n; i++)
		x[i] = (float) (lo + (hi - lo) * pg_prng_double(rng));
}

static double
loss_linear(const float *logits, const float *c, int B)
{
	double		l = 0.0;
	int			i;

	for (i = 0; i < B; i++)
		l += (double) c[i] * (double) logits[i];
	return l;
}

/* A signature of the ReLU pattern of the last forward. */
static uint64
relu_pattern(const MtmsTower *t, const MtmsTowerWork *w)
{
	uint64		h = 0;
	int			l;

	for (l = 1; l < t->nlayers; l++)
	{
		int64		n = (int64) w->batch * t->sizes[l];
		int64		i;

		for (i = 0; i < n; i++)
			h = hash_combine64(h, w->act[l][i] > 0.0f ? 1 : 2);
	}
	return h;
}

static double
rel_err(double a, double n, double floor)
{
	double		den = Max(Max(fabs(a), fabs(n)), floor);

	return fabs(a - n) / den;
}

static double
bce_with_logit(float z, float y)
{
	double		zd = z;

	return Max(zd, 0.0) - zd * y + log1p(exp(-fabs(zd)));
}

static float
sigmoidf(float z)
{
	return (float) (1.0 / (1.0 + exp(-(double) z)));
}

/* A small tower with nonzero biases and a few Adam steps behind it. */
static MtmsTower *
trained_tower(int nin, uint64 seed)
{
	int32		hidden[2] = {6, 5};
	MtmsTower  *t = mtms_tower_create(nin, 2, hidden, seed);
	MtmsTowerWork *w = mtms_tower_work_create(t, 8);
	pg_prng_state rng;
	float		X[8 * 64];
	float		logits[8];
	float		dl[8];
	int			step;
	int			l;

	Assert(nin <= 64);
	pg_prng_seed(&rng, seed ^ UINT64CONST(0xabcdef));
	for (l = 0; l < t->nlayers; l++)
		fill_uniform(&rng, t->b[l], t->sizes[l + 1], -0.2, 0.2);
	for (step = 0; step < 3; step++)
	{
		fill_uniform(&rng, X, 8 * nin, -1.0, 1.0);
		fill_uniform(&rng, dl, 8, -0.5, 0.5);
		mtms_tower_forward(t, w, X, 8, logits);
		mtms_tower_backward(t, w, dl, NULL);
		mtms_tower_step(t, 0.01f, 0.001f);
	}
	t->nsamples = 24;
	mtms_tower_work_free(w);
	return t;
}

static bool
towers_identical(const MtmsTower *a, const MtmsTower *b)
{
	return a->nlayers == b->nlayers &&
		memcmp(a->sizes, b->sizes, sizeof(a->sizes)) == 0 &&
		a->nparams == b->nparams &&
		a->step == b->step && a->nsamples == b->nsamples && a->moments == b->moments &&
		memcmp(a->mem, b->mem, (a->moments ? 3 : 1) * a->nparams * sizeof(float)) == 0;
}

/*
 * Deserialize [data, data + len) as a tower or embedding state and report
 * whether it raised ERRCODE_DATA_CORRUPTED.  Any other error (a cancel, out
 * of memory) is re-thrown.  Deserialization only allocates memory, which
 * the private context below reclaims, so catching without a
 * subtransaction is safe here.
 */
static bool
deserialize_fails(const char *data, Size len, bool tower)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(oldcxt, "mtms selftest deserialize",
											  ALLOCSET_SMALL_SIZES);
	volatile bool failed = false;

	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		/* an exact-size copy, so reading past the end would be caught */
		char	   *copy = palloc(Max(len, 1));
		const char *p = copy;

		memcpy(copy, data, len);
		if (tower)
			(void) mtms_tower_deserialize(&p, copy + len);
		else
			(void) mtms_emb_deserialize(&p, copy + len);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_DATA_CORRUPTED)
		{
			MemoryContextSwitchTo(oldcxt);
			PG_RE_THROW();
		}
		FlushErrorState();
		failed = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return failed;
}

static uint64
test_key(int64 i)
{
	return hash_bytes_uint32_extended((uint32) i, UINT64CONST(12345)) ^
		((uint64) i << 40);
}

/* ----------------------------------------------------------------
 * Optimizer checks
 * ---------------------------------------------------------------- */

/* Adam against a double-precision reference over 5 steps, with L2. */
static bool
check_adam_reference(double *detail)
{
	float		w[4] = {1.0f, -2.0f, 0.5f, 0.0f};
	float		m[4] = {0};
	float		v[4] = {0};
	double		rw[4] = {1.0, -2.0, 0.5, 0.0};
	double		rm[4] = {0};
	double		rv[4] = {0};
	float		g[4];
	double		maxerr = 0.0;
	bool		first_ok = true;
	int			step;
	int			i;

	for (step = 1; step <= 5; step++)
	{
		float		lr = 0.1f;
		float		l2 = (step == 1) ? 0.0f : 0.01f;

		g[0] = 0.3f * step;
		g[1] = -0.001f;
		g[2] = 5.0f;
		g[3] = (step % 2) ? 1.0f : -1.0f;
		mtms_adam_update(w, g, m, v, 4, lr, l2, step);
		for (i = 0; i < 4; i++)
		{
			double		gi = (double) g[i] + (double) l2 * rw[i];
			double		mhat,
						vhat;
			double		before = rw[i];

			rm[i] = 0.9 * rm[i] + 0.1 * gi;
			rv[i] = 0.999 * rv[i] + 0.001 * gi * gi;
			mhat = rm[i] / (1.0 - pow(0.9, step));
			vhat = rv[i] / (1.0 - pow(0.999, step));
			rw[i] -= lr * mhat / (sqrt(vhat) + 1e-8);
			/* the first Adam step moves every weight by lr * sign(g) */
			if (step == 1 && fabs(fabs(rw[i] - before) - lr) > 1e-6)
				first_ok = false;
		}
		for (i = 0; i < 4; i++)
			maxerr = Max(maxerr, fabs(w[i] - rw[i]));
	}
	*detail = maxerr;
	return first_ok && maxerr < 1e-5;
}

/* Row-wise Adagrad against a double-precision reference. */
static bool
check_adagrad_reference(double *detail)
{
	float		w[5] = {0.1f, -0.2f, 0.3f, 0.0f, 1.0f};
	float		g[5] = {0.5f, 0.5f, -1.0f, 2.0f, 0.0f};
	float		acc = 0.1f;
	double		rw[5];
	double		racc = 0.1;
	double		sumsq = 0.0;
	double		maxerr;
	int			i;

	for (i = 0; i < 5; i++)
	{
		double		gi = g[i] + 0.01 * (double) w[i];

		sumsq += gi * gi;
	}
	racc += sumsq / 5.0;
	for (i = 0; i < 5; i++)
		rw[i] = w[i] - 0.05 * (g[i] + 0.01 * (double) w[i]) / (sqrt(racc) + 1e-8);

	mtms_rowwise_adagrad_update(w, g, &acc, 5, 0.05f, 0.01f);
	maxerr = fabs(acc - racc);
	for (i = 0; i < 5; i++)
		maxerr = Max(maxerr, fabs(w[i] - rw[i]));
	*detail = maxerr;
	return maxerr < 1e-6;
}

/* ----------------------------------------------------------------
 * Tower checks
 * ---------------------------------------------------------------- */

#define GC_NIN	7
#define GC_B	4

/*
 * Finite differences on every weight and bias of a 7-6-5-1 tower with the
 * loss sum_i c_i * logit_i.  The network is piecewise linear, so central
 * differences are exact up to float rounding unless a perturbation flips a
 * ReLU; such parameters are skipped (detected by the ReLU pattern), and at
 * least 3/4 of them must remain.  detail: max relative error.
 */
static bool
check_tower_gradient(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 11);
	MtmsTowerWork *w = mtms_tower_work_create(t, GC_B);
	pg_prng_state rng;
	float		X[GC_B * GC_NIN];
	float		c[GC_B];
	float		logits[GC_B];
	float	   *analytic;
	uint64		pattern;
	const float eps = 1e-2f;
	double		maxrel = 0.0;
	int64		checked = 0;
	int64		i;

	pg_prng_seed(&rng, 42);
	fill_uniform(&rng, X, GC_B * GC_NIN, -1.0, 1.0);
	fill_uniform(&rng, c, GC_B, -1.0, 1.0);

	memset(t->grad, 0, t->nparams * sizeof(float));
	mtms_tower_forward(t, w, X, GC_B, logits);
	pattern = relu_pattern(t, w);
	mtms_tower_backward(t, w, c, NULL);
	analytic = palloc(t->nparams * sizeof(float));
	memcpy(analytic, t->grad, t->nparams * sizeof(float));

	for (i = 0; i < t->nparams; i++)
	{
		float		saved = t->mem[i];
		double		lp,
					lm;
		bool		same;

		t->mem[i] = saved + eps;
		mtms_tower_forward(t, w, X, GC_B, logits);
		lp = loss_linear(logits, c, GC_B);
		same = relu_pattern(t, w) == pattern;
		t->mem[i] = saved - eps;
		mtms_tower_forward(t, w, X, GC_B, logits);
		lm = loss_linear(logits, c, GC_B);
		same = same && relu_pattern(t, w) == pattern;
		t->mem[i] = saved;
		if (!same)
			continue;
		maxrel = Max(maxrel, rel_err(analytic[i], (lp - lm) / (2.0 * eps), 1e-2));
		checked++;
	}
	*detail = maxrel;
	/* most parameters must have been checked */
	return maxrel < 1e-2 && checked >= t->nparams * 3 / 4;
}

/* Same for the input gradient dX. */
static bool
check_tower_input_gradient(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 12);
	MtmsTowerWork *w = mtms_tower_work_create(t, GC_B);
	pg_prng_state rng;
	float		X[GC_B * GC_NIN];
	float		dX[GC_B * GC_NIN];
	float		c[GC_B];
	float		logits[GC_B];
	uint64		pattern;
	const float eps = 1e-3f;
	double		maxrel = 0.0;
	int			checked = 0;
	int			i;

	pg_prng_seed(&rng, 43);
	fill_uniform(&rng, X, GC_B * GC_NIN, -1.0, 1.0);
	fill_uniform(&rng, c, GC_B, -1.0, 1.0);

	mtms_tower_forward(t, w, X, GC_B, logits);
	pattern = relu_pattern(t, w);
	mtms_tower_backward(t, w, c, dX);

	for (i = 0; i < GC_B * GC_NIN; i++)
	{
		float		saved = X[i];
		double		lp,
					lm;
		bool		same;

		X[i] = saved + eps;
		mtms_tower_forward(t, w, X, GC_B, logits);
		lp = loss_linear(logits, c, GC_B);
		same = relu_pattern(t, w) == pattern;
		X[i] = saved - eps;
		mtms_tower_forward(t, w, X, GC_B, logits);
		lm = loss_linear(logits, c, GC_B);
		same = same && relu_pattern(t, w) == pattern;
		X[i] = saved;
		if (!same)
			continue;
		maxrel = Max(maxrel, rel_err(dX[i], (lp - lm) / (2.0 * eps), 1e-2));
		checked++;
	}
	*detail = maxrel;
	return maxrel < 1e-2 && checked >= GC_B * GC_NIN * 3 / 4;
}

/*
 * Adam + tower on a separable logistic problem: label = (x . u > 0.1) for
 * a fixed random u.  Mean BCE must fall far below its start.  detail is the
 * final mean loss.
 */
#define LG_N	1024
#define LG_NIN	4
#define LG_B	64
static bool
check_tower_learns(double *detail)
{
	int32		hidden[2] = {16, 8};
	MtmsTower  *t = mtms_tower_create(LG_NIN, 2, hidden, 7);
	MtmsTowerWork *w = mtms_tower_work_create(t, LG_B);
	pg_prng_state rng;
	float	   *X = palloc(LG_N * LG_NIN * sizeof(float));
	float	   *y = palloc(LG_N * sizeof(float));
	float		u[LG_NIN];
	float		logits[LG_B];
	float		dl[LG_B];
	double		loss0 = 0.0,
				loss1 = 0.0;
	int			i,
				j,
				step;

	pg_prng_seed(&rng, 99);
	fill_uniform(&rng, u, LG_NIN, -1.0, 1.0);
	fill_uniform(&rng, X, LG_N * LG_NIN, -1.0, 1.0);
	for (i = 0; i < LG_N; i++)
	{
		double		s = 0.0;

		for (j = 0; j < LG_NIN; j++)
			s += (double) X[i * LG_NIN + j] * u[j];
		y[i] = s > 0.1 ? 1.0f : 0.0f;
	}

	for (i = 0; i < LG_N; i += LG_B)
	{
		mtms_tower_forward(t, w, X + i * LG_NIN, LG_B, logits);
		for (j = 0; j < LG_B; j++)
			loss0 += bce_with_logit(logits[j], y[i + j]);
	}
	loss0 /= LG_N;

	for (step = 0; step < 600; step++)
	{
		int			off = (step % (LG_N / LG_B)) * LG_B;

		mtms_tower_forward(t, w, X + off * LG_NIN, LG_B, logits);
		for (j = 0; j < LG_B; j++)
			dl[j] = (sigmoidf(logits[j]) - y[off + j]) / LG_B;
		mtms_tower_backward(t, w, dl, NULL);
		mtms_tower_step(t, 0.01f, 0.0f);
	}

	for (i = 0; i < LG_N; i += LG_B)
	{
		mtms_tower_forward(t, w, X + i * LG_NIN, LG_B, logits);
		for (j = 0; j < LG_B; j++)
			loss1 += bce_with_logit(logits[j], y[i + j]);
	}
	loss1 /= LG_N;

	*detail = loss1;
	return loss0 > 0.3 && loss1 < 0.15 && loss1 < 0.25 * loss0;
}

/* predict1 (sgemv) agrees with the batch forward (sgemm). */
static bool
check_tower_predict1(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 13);
	MtmsTowerWork *w = mtms_tower_work_create(t, 8);
	pg_prng_state rng;
	float		X[8 * GC_NIN];
	float		logits[8];
	float		scratch[2 * GC_NIN];
	double		maxdiff = 0.0;
	int			i;

	pg_prng_seed(&rng, 44);
	fill_uniform(&rng, X, 8 * GC_NIN, -1.0, 1.0);
	mtms_tower_forward(t, w, X, 8, logits);
	for (i = 0; i < 8; i++)
	{
		float		z = mtms_tower_predict1(t, X + i * GC_NIN, scratch);

		maxdiff = Max(maxdiff, fabs((double) z - logits[i]) / (1.0 + fabs(z)));
	}
	*detail = maxdiff;
	return maxdiff < 1e-5;
}

/* Same seed, same weights; weights within the He-uniform bound. */
static bool
check_tower_init(double *detail)
{
	int32		hidden[2] = {32, 16};
	MtmsTower  *a = mtms_tower_create(20, 2, hidden, 5);
	MtmsTower  *b = mtms_tower_create(20, 2, hidden, 5);
	MtmsTower  *c = mtms_tower_create(20, 2, hidden, 6);
	bool		ok = towers_identical(a, b) && !towers_identical(a, c);
	double		maxratio = 0.0;
	int			l;
	int64		i;

	for (l = 0; l < a->nlayers; l++)
	{
		double		limit = sqrt(6.0 / a->sizes[l]);

		for (i = 0; i < (int64) a->sizes[l + 1] * a->sizes[l]; i++)
			maxratio = Max(maxratio, fabs(a->W[l][i]) / limit);
		for (i = 0; i < a->sizes[l + 1]; i++)
			ok = ok && a->b[l][i] == 0.0f;
	}
	*detail = maxratio;
	return ok && maxratio <= 1.0 && maxratio > 0.9;
}

/* L2 shrinks weights, never biases; step clears gradients. */
static bool
check_tower_l2(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 14);
	MtmsTower  *before;
	bool		ok = true;
	int64		i;

	memset(t->grad, 0, t->nparams * sizeof(float));
	memset(t->mem + t->nparams, 0, 2 * t->nparams * sizeof(float));
	before = mtms_tower_copy(t);
	t->step = 0;
	mtms_tower_step(t, 0.01f, 0.1f);
	for (i = 0; i < t->nweights; i++)
		if (before->mem[i] != 0.0f &&
			!((t->mem[i] - before->mem[i]) * before->mem[i] < 0.0f))
			ok = false;
	for (i = t->nweights; i < t->nparams; i++)
		if (t->mem[i] != before->mem[i])
			ok = false;
	for (i = 0; i < t->nparams; i++)
		if (t->grad[i] != 0.0f)
			ok = false;
	*detail = (double) t->step;
	return ok && t->step == 1;
}

static bool
check_tower_serialize(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 15);
	MtmsTower  *r;
	MtmsTowerWork *w1 = mtms_tower_work_create(t, 8);
	MtmsTowerWork *w2;
	StringInfoData buf;
	const char *p;
	pg_prng_state rng;
	float		X[8 * GC_NIN];
	float		z1[8],
				z2[8];
	bool		ok;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "xyz");	/* not at offset 0 */
	mtms_tower_serialize(&buf, t);
	appendStringInfoString(&buf, "tail");
	p = buf.data + 3;
	r = mtms_tower_deserialize(&p, buf.data + buf.len);
	ok = (p == buf.data + buf.len - 4) && towers_identical(t, r);

	pg_prng_seed(&rng, 45);
	fill_uniform(&rng, X, 8 * GC_NIN, -1.0, 1.0);
	w2 = mtms_tower_work_create(r, 8);
	mtms_tower_forward(t, w1, X, 8, z1);
	mtms_tower_forward(r, w2, X, 8, z2);
	ok = ok && memcmp(z1, z2, sizeof(z1)) == 0;
	*detail = (double) (buf.len - 7);
	return ok;
}

static bool
check_tower_truncated(double *detail)
{
	MtmsTower  *t = trained_tower(4, 16);
	StringInfoData buf;
	int			len;
	int			rejected = 0;
	bool		ok = true;

	initStringInfo(&buf);
	mtms_tower_serialize(&buf, t);
	for (len = 0; len < buf.len; len++)
	{
		CHECK_FOR_INTERRUPTS();
		if (deserialize_fails(buf.data, len, true))
			rejected++;
	}
	/* the whole buffer is fine, a bad magic number is not */
	ok = !deserialize_fails(buf.data, buf.len, true);
	buf.data[0] ^= 0x55;
	ok = ok && deserialize_fails(buf.data, buf.len, true);
	buf.data[0] ^= 0x55;
	/* an embedding state is not a tower */
	{
		MtmsEmbStore *s = mtms_emb_create(4, 1);
		StringInfoData eb;

		initStringInfo(&eb);
		(void) mtms_emb_find_or_create(s, 1, 0, 0);
		mtms_emb_serialize(&eb, s);
		ok = ok && deserialize_fails(eb.data, eb.len, true);
		mtms_emb_free(s);
	}
	*detail = rejected;
	return ok && rejected == buf.len;
}

static bool
check_tower_copy(double *detail)
{
	MtmsTower  *t = trained_tower(GC_NIN, 17);
	MtmsTower  *c = mtms_tower_copy(t);
	MtmsTower  *orig = mtms_tower_copy(t);
	bool		ok = towers_identical(t, c) && c->mem != t->mem &&
		c->W[0] != t->W[0];

	/* train the copy (it has no gradients until it trains): the original must not move */
	ok = ok && c->grad == NULL;
	mtms_tower_ensure_grad(c);
	c->gW[0][0] = 1.0f;
	mtms_tower_step(c, 0.1f, 0.0f);
	ok = ok && towers_identical(t, orig) && !towers_identical(t, c);
	*detail = (double) mtms_tower_bytes(t);
	return ok && mtms_tower_bytes(t) >= 4 * t->nparams * sizeof(float);
}

/*
 * Adam moments exist only while a tower trains: a zero-created tower has
 * none (a third of the memory), ensure_grad gives zero ones, dropping the
 * training state keeps the parameters bit for bit, and such a tower
 * travels as parameters only and comes back the same.  Detail: bytes of
 * the tower without moments.
 */
static bool
check_tower_moments(double *detail)
{
	int32		hidden[] = {8, 4};
	MtmsTower  *z = mtms_tower_create_zero(GC_NIN, 2, hidden);
	MtmsTower  *t = trained_tower(GC_NIN, 23);
	MtmsTower  *before = mtms_tower_copy(t);
	StringInfoData buf;
	const char *p;
	MtmsTower  *back;
	bool		ok = !z->moments && z->grad == NULL && z->mW[0] == NULL &&
		mtms_tower_bytes(z) < 2 * z->nparams * sizeof(float) + sizeof(MtmsTower);

	mtms_tower_ensure_grad(z);
	ok = ok && z->moments && z->mW[0] != NULL && z->vb[0][0] == 0.0f && z->gW[0] != NULL;
	mtms_tower_drop_training_state(t);
	ok = ok && !t->moments && t->grad == NULL &&
		memcmp(t->mem, before->mem, t->nparams * sizeof(float)) == 0;
	initStringInfo(&buf);
	mtms_tower_serialize(&buf, t);
	ok = ok && buf.len < (int) (2 * t->nparams * sizeof(float));
	p = buf.data;
	back = mtms_tower_deserialize(&p, buf.data + buf.len);
	ok = ok && towers_identical(t, back);
	*detail = (double) mtms_tower_bytes(t);
	return ok;
}

static bool
check_tower_average(double *detail)
{
	MtmsTower  *a = trained_tower(GC_NIN, 18);
	MtmsTower  *b = trained_tower(GC_NIN, 19);
	MtmsTower  *eq = mtms_tower_copy(a);
	MtmsTower  *wt = mtms_tower_copy(a);
	MtmsTower  *zero = mtms_tower_copy(a);
	double		maxerr = 0.0;
	int64		k,
				i;

	b->step = 10;
	mtms_tower_average(eq, 1.0, b, 1.0);
	mtms_tower_average(wt, 3.0, b, 1.0);
	mtms_tower_average(zero, 0.0, b, 0.0);
	/* parameters and both moments (gradients are not averaged) */
	for (k = 0; k < 3; k++)
	{
		for (i = k * a->nparams; i < (k + 1) * a->nparams; i++)
		{
			double		x = a->mem[i],
						y = b->mem[i];

			maxerr = Max(maxerr, fabs(eq->mem[i] - (x + y) / 2.0));
			maxerr = Max(maxerr, fabs(zero->mem[i] - (x + y) / 2.0));
			maxerr = Max(maxerr, fabs(wt->mem[i] - (3.0 * x + y) / 4.0));
		}
	}
	*detail = maxerr;
	return maxerr < 1e-6 && eq->step == 10 && eq->nsamples == 48;
}

/*
 * Grow a 5-input tower to 9 inputs with the old columns scattered; logits
 * (batch and single-row) must not change, whatever the new columns hold.
 */
static bool
check_tower_remap(double *detail)
{
	MtmsTower  *t = trained_tower(5, 20);
	MtmsTower  *old = mtms_tower_copy(t);
	int32		map[5] = {0, 2, 3, 6, 8};
	MtmsTowerWork *wo = mtms_tower_work_create(old, 8);
	MtmsTowerWork *wn;
	pg_prng_state rng;
	float		Xo[8 * 5],
				Xz[8 * 9],
				Xj[8 * 9];
	float		zo[8],
				zz[8],
				zj[8];
	float		scratch[2 * 9];
	double		maxdiff = 0.0;
	bool		ok = true;
	int			i,
				j;

	mtms_tower_remap_input(t, 9, map);
	ok = t->sizes[0] == 9 && t->nparams == old->nparams + 4 * 6;
	pg_prng_seed(&rng, 46);
	fill_uniform(&rng, Xo, 8 * 5, -1.0, 1.0);
	fill_uniform(&rng, Xj, 8 * 9, -100.0, 100.0);
	memset(Xz, 0, sizeof(Xz));
	for (i = 0; i < 8; i++)
		for (j = 0; j < 5; j++)
			Xz[i * 9 + map[j]] = Xj[i * 9 + map[j]] = Xo[i * 5 + j];

	wn = mtms_tower_work_create(t, 8);
	mtms_tower_forward(old, wo, Xo, 8, zo);
	mtms_tower_forward(t, wn, Xz, 8, zz);
	mtms_tower_forward(t, wn, Xj, 8, zj);
	for (i = 0; i < 8; i++)
	{
		float		p1 = mtms_tower_predict1(t, Xj + i * 9, scratch);
		float		p0 = mtms_tower_predict1(old, Xo + i * 5, scratch);

		maxdiff = Max(maxdiff, fabs(zz[i] - zo[i]));
		maxdiff = Max(maxdiff, fabs(zj[i] - zo[i]));
		maxdiff = Max(maxdiff, fabs(p1 - p0));
	}
	/* Adam moments and gradients moved with their columns */
	for (i = 0; i < 6; i++)
		for (j = 0; j < 5; j++)
		{
			ok = ok && t->W[0][i * 9 + map[j]] == old->W[0][i * 5 + j];
			ok = ok && t->mW[0][i * 9 + map[j]] == old->mW[0][i * 5 + j];
			ok = ok && t->vW[0][i * 9 + map[j]] == old->vW[0][i * 5 + j];
		}
	for (i = 0; i < 6; i++)
		ok = ok && t->W[0][i * 9 + 1] == 0.0f && t->vW[0][i * 9 + 7] == 0.0f;
	ok = ok && memcmp(t->W[1], old->W[1], 5 * 6 * sizeof(float)) == 0 &&
		memcmp(t->b[0], old->b[0], 6 * sizeof(float)) == 0;
	*detail = maxdiff;
	return ok && maxdiff < 1e-5;
}

/* ----------------------------------------------------------------
 * Embedding store checks
 * ---------------------------------------------------------------- */

static bool
check_emb_find_create(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(8, 1);
	bool		ok = true;
	int64		i;

	for (i = 0; i < 1000; i++)
		ok = ok && mtms_emb_find_or_create(s, test_key(i), (int32) (i % 7), 0) == i;
	for (i = 0; i < 1000; i++)
	{
		ok = ok && mtms_emb_find_or_create(s, test_key(i), 0, 0) == i;
		ok = ok && mtms_emb_find(s, test_key(i)) == i;
		ok = ok && mtms_emb_key(s, i) == test_key(i);
		ok = ok && mtms_emb_field(s, i) == i % 7;
		ok = ok && mtms_emb_updates(s, i) == 0 && *mtms_emb_accum(s, i) == 0.0f;
	}
	ok = ok && mtms_emb_count(s) == 1000 && mtms_emb_dim(s) == 8;
	ok = ok && mtms_emb_find(s, test_key(5000)) == -1;
	/* max_rows: a full store returns -1 for new keys, finds old ones */
	ok = ok && mtms_emb_find_or_create(s, test_key(5000), 0, 1000) == -1;
	ok = ok && mtms_emb_find_or_create(s, test_key(17), 0, 1000) == 17;
	ok = ok && mtms_emb_count(s) == 1000;
	ok = ok && mtms_emb_find_or_create(s, test_key(5000), 0, 1001) == 1000;
	/* key 0 and all-ones are ordinary keys */
	ok = ok && mtms_emb_find_or_create(s, 0, 1, 0) == 1001;
	ok = ok && mtms_emb_find_or_create(s, PG_UINT64_MAX, 1, 0) == 1002;
	ok = ok && mtms_emb_find(s, 0) == 1001 && mtms_emb_find(s, PG_UINT64_MAX) == 1002;
	*detail = (double) mtms_emb_count(s);
	mtms_emb_free(s);
	return ok;
}

/* Same (seed, key): same start vector whatever the creation order. */
static bool
check_emb_init(double *detail)
{
	MtmsEmbStore *a = mtms_emb_create(16, 77);
	MtmsEmbStore *b = mtms_emb_create(16, 77);
	MtmsEmbStore *c = mtms_emb_create(16, 78);
	bool		ok = true;
	bool		differ = false;
	double		maxabs = 0.0;
	int64		i;
	int			d;

	for (i = 0; i < 500; i++)
		(void) mtms_emb_find_or_create(a, test_key(i), 0, 0);
	for (i = 499; i >= 0; i--)
		(void) mtms_emb_find_or_create(b, test_key(i), 0, 0);
	for (i = 0; i < 500; i++)
		(void) mtms_emb_find_or_create(c, test_key(i), 0, 0);
	for (i = 0; i < 500; i++)
	{
		const float *va = mtms_emb_vector(a, i);
		const float *vb = mtms_emb_vector(b, mtms_emb_find(b, test_key(i)));
		const float *vc = mtms_emb_vector(c, i);

		ok = ok && memcmp(va, vb, 16 * sizeof(float)) == 0;
		differ = differ || memcmp(va, vc, 16 * sizeof(float)) != 0;
		for (d = 0; d < 16; d++)
			maxabs = Max(maxabs, fabs(va[d]));
	}
	*detail = maxabs;
	return ok && differ && maxabs <= 0.05 && maxabs > 0.04;
}

/* Two gradients for one row in a batch == one update with their sum. */
static bool
check_emb_grad_sum(double *detail)
{
	MtmsEmbStore *a = mtms_emb_create(8, 3);
	MtmsEmbStore *b = mtms_emb_create(8, 3);
	pg_prng_state rng;
	float		g1[8],
				g2[8],
				g3[8],
				gs[8];
	int64		ra,
				rb,
				oa,
				ob;
	bool		ok;
	int			d;

	pg_prng_seed(&rng, 47);
	fill_uniform(&rng, g1, 8, -1.0, 1.0);
	fill_uniform(&rng, g2, 8, -1.0, 1.0);
	fill_uniform(&rng, g3, 8, -1.0, 1.0);
	for (d = 0; d < 8; d++)
		gs[d] = g1[d] + g2[d];
	ra = mtms_emb_find_or_create(a, 1001, 0, 0);
	oa = mtms_emb_find_or_create(a, 1002, 0, 0);
	rb = mtms_emb_find_or_create(b, 1001, 0, 0);
	ob = mtms_emb_find_or_create(b, 1002, 0, 0);

	mtms_emb_add_grad(a, ra, g1);
	mtms_emb_add_grad(a, oa, g3);
	mtms_emb_add_grad(a, ra, g2);
	mtms_emb_apply(a, 0.1f, 0.01f);
	mtms_emb_add_grad(b, rb, gs);
	mtms_emb_add_grad(b, ob, g3);
	mtms_emb_apply(b, 0.1f, 0.01f);

	ok = memcmp(mtms_emb_vector(a, ra), mtms_emb_vector(b, rb), 8 * sizeof(float)) == 0 &&
		*mtms_emb_accum(a, ra) == *mtms_emb_accum(b, rb) &&
		memcmp(mtms_emb_vector(a, oa), mtms_emb_vector(b, ob), 8 * sizeof(float)) == 0 &&
		mtms_emb_updates(a, ra) == 1 && mtms_emb_updates(a, oa) == 1 &&
		*mtms_emb_accum(a, ra) > 0.0f;

	/* a second batch on a is a second update */
	mtms_emb_add_grad(a, ra, g1);
	mtms_emb_apply(a, 0.1f, 0.0f);
	ok = ok && mtms_emb_updates(a, ra) == 2 && mtms_emb_updates(a, oa) == 1;
	mtms_emb_reset_counts(a);
	ok = ok && mtms_emb_updates(a, ra) == 0;
	*detail = *mtms_emb_accum(b, rb);
	return ok;
}

/* apply changes only the rows of the batch, even in a big batch. */
static bool
check_emb_apply_touched(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(4, 9);
	MtmsEmbStore *before;
	float		g[4] = {0.5f, -0.5f, 1.0f, 0.25f};
	int64		changed = 0;
	bool		ok = true;
	int64		i;

	for (i = 0; i < 20000; i++)
		(void) mtms_emb_find_or_create(s, test_key(i), 0, 0);
	before = mtms_emb_copy(s);
	/* touch every third row, several times, across a growing batch map */
	for (i = 0; i < 20000; i += 3)
	{
		mtms_emb_add_grad(s, i, g);
		if (i % 2 == 0)
			mtms_emb_add_grad(s, i, g);
	}
	mtms_emb_apply(s, 0.1f, 0.0f);
	for (i = 0; i < 20000; i++)
	{
		bool		same = memcmp(mtms_emb_vector(s, i), mtms_emb_vector(before, i),
								  4 * sizeof(float)) == 0 &&
			*mtms_emb_accum(s, i) == *mtms_emb_accum(before, i);

		if (i % 3 == 0)
			ok = ok && !same && mtms_emb_updates(s, i) == 1;
		else
			ok = ok && same && mtms_emb_updates(s, i) == 0;
		changed += same ? 0 : 1;
	}
	/* the batch is cleared: an empty apply changes nothing */
	mtms_emb_free(before);
	before = mtms_emb_copy(s);
	mtms_emb_apply(s, 0.1f, 0.0f);
	for (i = 0; i < 20000; i++)
		ok = ok && memcmp(mtms_emb_vector(s, i), mtms_emb_vector(before, i),
						  4 * sizeof(float)) == 0;
	*detail = (double) changed;
	return ok && changed == 6667;
}

/*
 * merge: rows only in src are inserted as they are; shared rows'
 * vectors are averaged weighted by update counts (equally when both are
 * 0), their Adagrad accumulators get both sides' increments, counts
 * summed; rows only in dst are untouched.
 */
static bool
check_emb_merge(double *detail)
{
	MtmsEmbStore *base = mtms_emb_create(4, 5);
	MtmsEmbStore *dst,
			   *src,
			   *dst0;
	float		g[4] = {1.0f, -1.0f, 0.5f, -0.5f};
	int64		ka = 11, kb = 12, kc = 13, kd = 14, ke = 15;
	int64		a, b, e, c, d;
	double		maxerr = 0.0;
	bool		ok = true;
	int			j;

	(void) mtms_emb_find_or_create(base, ka, 1, 0);
	(void) mtms_emb_find_or_create(base, kb, 1, 0);
	(void) mtms_emb_find_or_create(base, ke, 1, 0);
	dst = mtms_emb_copy(base);
	src = mtms_emb_copy(base);

	/* dst: a once, b three times; src: b once, a never, new rows c and d */
	a = mtms_emb_find(dst, ka);
	b = mtms_emb_find(dst, kb);
	mtms_emb_add_grad(dst, a, g);
	mtms_emb_apply(dst, 0.1f, 0.0f);
	for (j = 0; j < 3; j++)
	{
		mtms_emb_add_grad(dst, b, g);
		mtms_emb_apply(dst, 0.1f, 0.0f);
	}
	c = mtms_emb_find_or_create(src, kc, 2, 0);
	(void) mtms_emb_find_or_create(src, kd, 3, 0);
	mtms_emb_add_grad(src, mtms_emb_find(src, kb), g);
	mtms_emb_add_grad(src, c, g);
	mtms_emb_add_grad(src, c, g);
	mtms_emb_apply(src, 0.3f, 0.0f);
	/* e: untouched in both but moved in src by hand -> plain mean */
	mtms_emb_vector(src, mtms_emb_find(src, ke))[0] += 0.5f;

	dst0 = mtms_emb_copy(dst);
	mtms_emb_merge(dst, src);

	ok = mtms_emb_count(dst) == 5;
	a = mtms_emb_find(dst, ka);
	b = mtms_emb_find(dst, kb);
	c = mtms_emb_find(dst, kc);
	d = mtms_emb_find(dst, kd);
	e = mtms_emb_find(dst, ke);
	ok = ok && a == 0 && b == 1 && e == 2 && c == 3 && d == 4;
	/* a: only dst updated it -> dst's row exactly */
	ok = ok && memcmp(mtms_emb_vector(dst, a), mtms_emb_vector(dst0, a), 4 * sizeof(float)) == 0 &&
		*mtms_emb_accum(dst, a) == *mtms_emb_accum(dst0, a) &&
		mtms_emb_updates(dst, a) == 1;
	/* b: (3 * dst + 1 * src) / 4, counts 3 + 1 */
	for (j = 0; j < 4; j++)
	{
		double		want = (3.0 * mtms_emb_vector(dst0, b)[j] +
							mtms_emb_vector(src, mtms_emb_find(src, kb))[j]) / 4.0;

		maxerr = Max(maxerr, fabs(mtms_emb_vector(dst, b)[j] - want));
	}
	/* b's accumulator: base + both increments (src's base = base's) */
	maxerr = Max(maxerr, fabs(*mtms_emb_accum(dst, b) -
							  (*mtms_emb_accum(dst0, b) +
							   *mtms_emb_accum(src, mtms_emb_find(src, kb)) -
							   *mtms_emb_accum(base, mtms_emb_find(base, kb)))));
	ok = ok && mtms_emb_updates(dst, b) == 4;
	/* e: both 0 updates -> mean, count 0 */
	for (j = 0; j < 4; j++)
	{
		double		want = (mtms_emb_vector(dst0, e)[j] +
							mtms_emb_vector(src, mtms_emb_find(src, ke))[j]) / 2.0;

		maxerr = Max(maxerr, fabs(mtms_emb_vector(dst, e)[j] - want));
	}
	ok = ok && mtms_emb_updates(dst, e) == 0;
	/* c, d: inserted as they are in src, with fields and counts */
	ok = ok && memcmp(mtms_emb_vector(dst, c), mtms_emb_vector(src, mtms_emb_find(src, kc)),
					  4 * sizeof(float)) == 0 &&
		*mtms_emb_accum(dst, c) == *mtms_emb_accum(src, mtms_emb_find(src, kc)) &&
		mtms_emb_updates(dst, c) == 1 && mtms_emb_field(dst, c) == 2 &&
		mtms_emb_updates(dst, d) == 0 && mtms_emb_field(dst, d) == 3 &&
		memcmp(mtms_emb_vector(dst, d), mtms_emb_vector(src, mtms_emb_find(src, kd)),
			   4 * sizeof(float)) == 0;
	*detail = maxerr;
	return ok && maxerr < 1e-7;
}

static bool
emb_stores_identical(const MtmsEmbStore *a, const MtmsEmbStore *b)
{
	int64		i;

	if (mtms_emb_count(a) != mtms_emb_count(b) || mtms_emb_dim(a) != mtms_emb_dim(b))
		return false;
	for (i = 0; i < mtms_emb_count(a); i++)
	{
		if (mtms_emb_key(a, i) != mtms_emb_key(b, i) ||
			mtms_emb_field(a, i) != mtms_emb_field(b, i) ||
			mtms_emb_updates(a, i) != mtms_emb_updates(b, i) ||
			memcmp(mtms_emb_accum(a, i), mtms_emb_accum(b, i), sizeof(float)) != 0 ||
			memcmp(mtms_emb_vector(a, i), mtms_emb_vector(b, i),
				   mtms_emb_dim(a) * sizeof(float)) != 0 ||
			mtms_emb_find(b, mtms_emb_key(a, i)) != i)
			return false;
	}
	return true;
}

static bool
check_emb_serialize(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(8, 21);
	MtmsEmbStore *r;
	MtmsEmbStore *c;
	float		g[8] = {1, 2, 3, 4, -1, -2, -3, -4};
	StringInfoData buf;
	const char *p;
	bool		ok;
	int64		i;

	for (i = 0; i < 40000; i++)
		(void) mtms_emb_find_or_create(s, test_key(i), (int32) (i % 5), 0);
	for (i = 0; i < 40000; i += 7)
		mtms_emb_add_grad(s, i, g);
	mtms_emb_apply(s, 0.05f, 0.0f);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "ab");
	mtms_emb_serialize(&buf, s);
	appendStringInfoString(&buf, "cd");
	p = buf.data + 2;
	r = mtms_emb_deserialize(&p, buf.data + buf.len);
	ok = p == buf.data + buf.len - 2 && emb_stores_identical(s, r);

	/* a copy is identical and independent */
	c = mtms_emb_copy(s);
	ok = ok && emb_stores_identical(s, c);
	mtms_emb_add_grad(c, 0, g);
	mtms_emb_apply(c, 0.05f, 0.0f);
	ok = ok && !emb_stores_identical(s, c) && emb_stores_identical(s, r);

	/* the empty store round-trips too */
	mtms_emb_free(c);
	c = mtms_emb_create(3, 1);
	resetStringInfo(&buf);
	mtms_emb_serialize(&buf, c);
	p = buf.data;
	mtms_emb_free(r);
	r = mtms_emb_deserialize(&p, buf.data + buf.len);
	ok = ok && p == buf.data + buf.len && mtms_emb_count(r) == 0 && mtms_emb_dim(r) == 3;
	*detail = (double) mtms_emb_count(s);
	return ok;
}

/* Serialized and deserialized again (in the current context). */
static MtmsEmbStore *
emb_roundtrip(const MtmsEmbStore *s)
{
	StringInfoData buf;
	const char *p;
	MtmsEmbStore *r;

	initStringInfo(&buf);
	mtms_emb_serialize(&buf, s);
	p = buf.data;
	r = mtms_emb_deserialize(&p, buf.data + buf.len);
	if (p != buf.data + buf.len)
		elog(ERROR, "embedding state has trailing bytes");
	pfree(buf.data);
	return r;
}

/*
 * Feature admission: a gated store creates rows only for admitted keys; an
 * admitted key without a row is invisible; gate, admitted keys and the
 * rows' statistics survive copy, serialization and copy_kept.
 */
static bool
check_emb_gate(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(4, 41);
	MtmsEmbStore *c;
	MtmsEmbStore *r;
	MtmsEmbStore *k;
	bool		keep[3] = {true, false, true};
	bool		ok = true;

	for (int i = 0; i < 3; i++)
		ok = ok && mtms_emb_find_or_create(s, test_key(i), 1, 0) == i;
	mtms_emb_set_stats(s, 2, 7, 5);
	mtms_emb_set_gated(s, true);
	mtms_emb_admit(s, test_key(10));
	ok = ok && mtms_emb_find_or_create(s, test_key(11), 1, 0) == -1 &&
		mtms_emb_find(s, test_key(10)) == -1 && mtms_emb_count(s) == 3 &&
		mtms_emb_admitted_pending(s) == 1;

	c = mtms_emb_copy(s);
	r = emb_roundtrip(s);
	k = mtms_emb_copy_kept(s, keep);
	ok = ok && mtms_emb_gated(c) && mtms_emb_gated(r) && mtms_emb_gated(k);
	ok = ok && mtms_emb_seen(r, 2) == 7 && mtms_emb_last_seen(r, 2) == 5 &&
		mtms_emb_seen(k, 1) == 7 && mtms_emb_last_seen(k, 1) == 5 &&
		mtms_emb_count(k) == 2 && mtms_emb_find(k, test_key(1)) == -1 &&
		mtms_emb_find(k, test_key(2)) == 1;
	/* each of them creates the admitted key's row, and only that one */
	ok = ok && mtms_emb_find_or_create(c, test_key(10), 1, 0) == 3 &&
		mtms_emb_find_or_create(r, test_key(10), 1, 0) == 3 &&
		mtms_emb_find_or_create(k, test_key(10), 1, 0) == 2 &&
		mtms_emb_find_or_create(r, test_key(11), 1, 0) == -1 &&
		mtms_emb_admitted_pending(r) == 0 && mtms_emb_admitted_pending(s) == 1;
	/* ungated, a store creates rows on first sight again */
	mtms_emb_set_gated(r, false);
	ok = ok && mtms_emb_find_or_create(r, test_key(11), 1, 0) == 4;
	*detail = (double) mtms_emb_count(r);
	mtms_emb_free(s);
	mtms_emb_free(c);
	mtms_emb_free(r);
	mtms_emb_free(k);
	return ok;
}

static bool
check_emb_truncated(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(4, 22);
	StringInfoData buf;
	int			len;
	int			rejected = 0;
	bool		ok;
	Size		rowbytes = sizeof(uint64) + 4 * sizeof(int32) + 6 * sizeof(float);
	Size		header = 32;
	Size		trailer = sizeof(int64);	/* no admitted keys */

	(void) mtms_emb_find_or_create(s, 1, 0, 0);
	(void) mtms_emb_find_or_create(s, 2, 0, 0);
	(void) mtms_emb_find_or_create(s, 3, 0, 0);
	initStringInfo(&buf);
	mtms_emb_serialize(&buf, s);
	for (len = 0; len < buf.len; len++)
	{
		CHECK_FOR_INTERRUPTS();
		if (deserialize_fails(buf.data, len, false))
			rejected++;
	}
	ok = buf.len == (int) (header + 3 * rowbytes + trailer) &&
		!deserialize_fails(buf.data, buf.len, false);
	/* bad magic */
	buf.data[1] ^= 0x10;
	ok = ok && deserialize_fails(buf.data, buf.len, false);
	buf.data[1] ^= 0x10;
	/* a duplicate key: row 2 gets row 1's key */
	memcpy(buf.data + header + 2 * rowbytes, buf.data + header + rowbytes, sizeof(uint64));
	ok = ok && deserialize_fails(buf.data, buf.len, false);
	/* a tower state is not an embedding state */
	{
		MtmsTower  *t = trained_tower(4, 23);

		resetStringInfo(&buf);
		mtms_tower_serialize(&buf, t);
		ok = ok && deserialize_fails(buf.data, buf.len, false);
	}
	*detail = rejected;
	return ok && rejected == (int) (header + 3 * rowbytes + trailer);
}

/*
 * Many rows: 150000 rows of dim 8 (10 chunks of 16384) and 30000 of dim
 * 128 (chunks of 2048): every key found at its index, vectors where they
 * were written, copy and bytes consistent.
 */
static bool
check_emb_many_rows(double *detail)
{
	MtmsEmbStore *s = mtms_emb_create(8, 31);
	MtmsEmbStore *big = mtms_emb_create(128, 32);
	MtmsEmbStore *c;
	bool		ok = true;
	int64		i;

	for (i = 0; i < 150000; i++)
	{
		int64		idx = mtms_emb_find_or_create(s, test_key(i), 0, 0);

		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		ok = ok && idx == i;
		mtms_emb_vector(s, idx)[i % 8] = (float) i;
	}
	for (i = 0; i < 150000; i++)
	{
		ok = ok && mtms_emb_find(s, test_key(i)) == i &&
			mtms_emb_key(s, i) == test_key(i) &&
			mtms_emb_vector(s, i)[i % 8] == (float) i;
	}
	ok = ok && mtms_emb_count(s) == 150000 && s->nchunks >= 2 &&
		mtms_emb_bytes(s) >= (Size) 150000 * 8 * sizeof(float);
	c = mtms_emb_copy(s);
	ok = ok && emb_stores_identical(s, c);
	mtms_emb_free(c);

	for (i = 0; i < 30000; i++)
	{
		int64		idx = mtms_emb_find_or_create(big, test_key(i), 0, 0);

		mtms_emb_vector(big, idx)[127] = (float) i;
	}
	for (i = 0; i < 30000; i++)
		ok = ok && mtms_emb_find(big, test_key(i)) == i &&
			mtms_emb_vector(big, i)[127] == (float) i;
	ok = ok && big->nchunks >= 2;
	*detail = (double) (mtms_emb_count(s) + mtms_emb_count(big));
	mtms_emb_free(s);
	mtms_emb_free(big);
	return ok;
}

/*
 * The fine-tune validation's per-key projections (joined_keys.c)
 * give the logits of the dense path (joined input, then the tower) on a
 * model whose joined layout is not the plain (pair, field) order (a scene
 * and a field born later), with keys missing from some pairs, repeated
 * keys and multi-valued fields.  Detail: the largest absolute difference.
 */
static bool
check_joined_keys(double *detail)
{
	MtmsModelMeta meta;
	char	   *scenes[] = {"s0", "s1"};
	char	   *fields[] = {"f0", "f1", "f2"};
	int32		scene_birth[] = {0, 1};
	int32		field_birth[] = {0, 0, 2};
	MtmsModel  *m;
	MtmsRowSet	rs;
	pg_prng_state rng;
	int64	   *rows;
	float	   *x;
	float	   *scratch;
	float		dense;
	float	   *fast;
	double		maxerr = 0;
	int			nrows = 300;
	MtmsJoinedKeys *vk;

	memset(&meta, 0, sizeof(meta));
	meta.nscenes = 2;
	meta.scenes = scenes;
	meta.nfields = 3;
	meta.fields = fields;
	meta.scene_birth = scene_birth;
	meta.field_birth = field_birth;
	meta.dim = 4;
	meta.nhidden = 2;
	meta.hidden[0] = 16;
	meta.hidden[1] = 8;
	meta.opts.seed = 5;
	m = mtms_model_create(&meta);
	mtms_model_ensure_finetune(m);
	pg_prng_seed(&rng, 99);
	/* keys: 40 per field; a pair holds a key with probability 3/4 */
	for (int q = 0; q < m->npairs; q++)
		for (int f = 0; f < 3; f++)
			for (int k = 0; k < 40; k++)
				if (pg_prng_uint64_range(&rng, 0, 3) > 0)
				{
					int64		idx = mtms_emb_find_or_create(m->emb[q], test_key(f * 1000 + k), f, 0);

					fill_uniform(&rng, mtms_emb_vector(m->emb[q], idx), 4, -1, 1);
				}
	for (int p = 0; p < m->npairs; p++)
	{
		MtmsTower  *t = m->tower2[p];

		for (int l = 0; l < t->nlayers; l++)
		{
			fill_uniform(&rng, t->W[l], (int64) t->sizes[l] * t->sizes[l + 1], -0.5, 0.5);
			fill_uniform(&rng, t->b[l], t->sizes[l + 1], -0.2, 0.2);
		}
	}

	mtms_rowset_init(&rs);
	rows = palloc(sizeof(int64) * nrows);
	for (int r = 0; r < nrows; r++)
	{
		MtmsFeature f[8];
		int			n = 0;

		for (int fld = 0; fld < 3; fld++)
		{
			int			nv = fld == 2 ? (int) pg_prng_uint64_range(&rng, 0, 3) : 1;

			for (int v = 0; v < nv; v++)
			{
				/* key 45..49 of a field is unknown to every pair */
				f[n].field = fld;
				f[n++].hash = test_key(fld * 1000 + (int) pg_prng_uint64_range(&rng, 0, 49));
			}
		}
		mtms_rowset_add(&rs, 1, 0, f, n);
		rows[r] = r;
	}

	vk = mtms_joined_keys_build(m, &rs, rows, nrows);
	x = palloc(sizeof(float) * MTMS_INPUT2(m));
	scratch = palloc(sizeof(float) * mtms_model_scratch_size(m));
	fast = palloc(sizeof(float) * nrows);
	for (int p = 0; p < m->npairs; p++)
	{
		mtms_joined_keys_logits(vk, m, m->tower2[p], fast);
		for (int r = 0; r < nrows; r++)
		{
			mtms_input2(m, rs.feats + rs.start[r], (int) (rs.start[r + 1] - rs.start[r]), x);
			dense = mtms_tower_predict1(m->tower2[p], x, scratch);
			maxerr = Max(maxerr, fabs((double) dense - fast[r]));
		}
	}
	/*
	 * A training step's first layer through the batch's keys: the same
	 * logits and gradients as the dense forward and backward.
	 */
	{
		int			B = 64;
		int64	   *brows = palloc(sizeof(int64) * B);
		float	   *X = palloc(sizeof(float) * (Size) B * MTMS_INPUT2(m));
		float	   *H1;
		float		z1[64],
					z2[64],
					dl[64];
		MtmsTower  *td = mtms_tower_copy(m->tower2[1]);
		MtmsTower  *tk = mtms_tower_copy(m->tower2[1]);
		MtmsTowerWork *wd = mtms_tower_work_create(td, B);
		MtmsTowerWork *wk = mtms_tower_work_create(tk, B);
		MtmsKeyBatch *kb = mtms_key_batch_create();

		mtms_tower_ensure_grad(td);
		mtms_tower_ensure_grad(tk);
		H1 = palloc(sizeof(float) * B * tk->sizes[1]);
		for (int i = 0; i < B; i++)
		{
			brows[i] = (i * 7) % nrows;		/* repeats rows, so keys too */
			mtms_input2(m, rs.feats + rs.start[brows[i]],
						(int) (rs.start[brows[i] + 1] - rs.start[brows[i]]),
						X + (Size) i * MTMS_INPUT2(m));
			dl[i] = (float) ((i % 5) - 2) / B;
		}
		mtms_tower_forward_train(td, wd, X, B, z1);
		mtms_tower_backward(td, wd, dl, NULL);
		mtms_key_batch_prepare(kb, m, vk, brows, B);
		mtms_key_batch_forward(kb, m, tk, H1);
		mtms_tower_forward_hidden(tk, wk, H1, B, z2);
		mtms_key_batch_weight_grad(kb, m, tk, mtms_tower_backward_hidden(tk, wk, dl));
		for (int i = 0; i < B; i++)
			maxerr = Max(maxerr, fabs((double) z1[i] - z2[i]));
		for (int l = 0; l < td->nlayers; l++)
		{
			for (int64 i = 0; i < (int64) td->sizes[l] * td->sizes[l + 1]; i++)
				maxerr = Max(maxerr, fabs((double) td->gW[l][i] - tk->gW[l][i]));
			for (int i = 0; i < td->sizes[l + 1]; i++)
				maxerr = Max(maxerr, fabs((double) td->gb[l][i] - tk->gb[l][i]));
		}
		/* and the gradients are not all zero */
		{
			double		norm = 0;

		mtms_tower_ensure_grad(td);
		mtms_tower_ensure_grad(tk);

			for (int64 i = 0; i < (int64) td->sizes[0] * td->sizes[1]; i++)
				norm += fabs(td->gW[0][i]);
			if (norm < 1e-3)
				maxerr = 1;
		}

		/*
		 * The lazy step moves the blocks the batch touched as the dense
		 * step does (from zero moments, a zero gradient moves nothing)
		 * and leaves every other first-layer weight exactly as it was.
		 */
		{
			MtmsTower  *t0 = mtms_tower_copy(tk);
			int64		nw0 = (int64) td->sizes[0] * td->sizes[1];
			int64		moved = 0;

			mtms_tower_step(td, 0.01f, 0.0f);
			mtms_key_batch_step(kb, tk, 0.01f, 0.0f);
			for (int l = 0; l < td->nlayers; l++)
				for (int64 i = 0; i < (int64) td->sizes[l] * td->sizes[l + 1]; i++)
					maxerr = Max(maxerr, fabs((double) td->W[l][i] - tk->W[l][i]));
			for (int64 i = 0; i < nw0; i++)
			{
				if (tk->gW[0][i] != 0.0f)
					maxerr = 1;	/* gradients zeroed */
				if (t0->W[0][i] != tk->W[0][i])
					moved++;
				else if (td->W[0][i] != t0->W[0][i] && fabs(td->W[0][i] - t0->W[0][i]) > 1e-6)
					maxerr = 1;	/* dense moved a weight the lazy step left */
			}
			if (moved == 0)
				maxerr = 1;	/* the step moved something */
			mtms_tower_free(t0);
		}
		mtms_tower_free(td);
		mtms_tower_free(tk);
	}
	mtms_joined_keys_free(vk);
	mtms_model_free(m);
	*detail = maxerr;
	return maxerr < 1e-4;
}

/*
 * The BLAS: the kernels in use agree with a plain double product (the check
 * src/blas.c runs when it loads OpenBLAS), and that check fails for an
 * sgemm that is off in one element by 1e-3 relative.
 */
static bool
check_blas_in_use(double *detail)
{
	return mtms_blas_check(&mtms_blas, detail);
}

static void
wrong_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
			const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
			const blasint k, const float alpha, const float *a, const blasint lda,
			const float *b, const blasint ldb, const float beta, float *c,
			const blasint ldc)
{
	mtms_blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
	if (m > 0 && n > 0)
		c[(m / 2) * ldc + n / 2] += 1e-3f * (1.0f + fabsf(c[(m / 2) * ldc + n / 2]));
}

static bool
check_blas_rejects_wrong(double *detail)
{
	MtmsBlas	wrong = mtms_blas;

	wrong.sgemm = wrong_sgemm;
	return !mtms_blas_check(&wrong, detail);
}

static const SelfTest selftests[] = {
	{"adam_matches_reference", check_adam_reference},
	{"adagrad_matches_reference", check_adagrad_reference},
	{"tower_init_deterministic", check_tower_init},
	{"tower_weight_gradient", check_tower_gradient},
	{"tower_input_gradient", check_tower_input_gradient},
	{"tower_predict1_matches_batch", check_tower_predict1},
	{"tower_adam_learns_logistic", check_tower_learns},
	{"tower_l2_on_weights_only", check_tower_l2},
	{"tower_serialize_roundtrip", check_tower_serialize},
	{"tower_truncated_state_rejected", check_tower_truncated},
	{"tower_copy_independent", check_tower_copy},
	{"tower_moments_while_training", check_tower_moments},
	{"tower_average", check_tower_average},
	{"tower_remap_input", check_tower_remap},
	{"emb_find_create_count", check_emb_find_create},
	{"emb_init_deterministic", check_emb_init},
	{"emb_duplicate_grads_summed", check_emb_grad_sum},
	{"emb_apply_touched_rows_only", check_emb_apply_touched},
	{"emb_merge", check_emb_merge},
	{"emb_serialize_roundtrip", check_emb_serialize},
	{"emb_truncated_state_rejected", check_emb_truncated},
	{"emb_many_rows", check_emb_many_rows},
	{"emb_gate_admitted_only", check_emb_gate},
	{"joined_keys_match_dense", check_joined_keys},
	{"blas_kernels_match_reference", check_blas_in_use},
	{"blas_check_rejects_wrong_product", check_blas_rejects_wrong},
};

/*
 * mtms_nn_selftest() RETURNS TABLE(check_name text, passed boolean,
 *                                  detail float8)
 */
Datum
mtms_nn_selftest(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt;
	MemoryContext oldcxt;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms nn selftest",
								ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < lengthof(selftests); i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		double		detail = 0.0;
		bool		passed;

		CHECK_FOR_INTERRUPTS();
		oldcxt = MemoryContextSwitchTo(cxt);
		passed = selftests[i].fn(&detail);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(cxt);

		values[0] = CStringGetTextDatum(selftests[i].name);
		values[1] = BoolGetDatum(passed);
		values[2] = Float8GetDatum(detail);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/*
 * mtms_nn_sample_state(kind text) RETURNS bytea: a small valid serialized
 * 'tower' (4-6-5-1) or 'embedding' (dim 4, 3 rows) for corruption tests.
 */
Datum
mtms_nn_sample_state(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	StringInfoData buf;
	bytea	   *result;

	initStringInfo(&buf);
	if (strcmp(kind, "tower") == 0)
		mtms_tower_serialize(&buf, trained_tower(4, 1));
	else if (strcmp(kind, "embedding") == 0)
	{
		MtmsEmbStore *s = mtms_emb_create(4, 1);

		(void) mtms_emb_find_or_create(s, 1, 0, 0);
		(void) mtms_emb_find_or_create(s, 2, 1, 0);
		(void) mtms_emb_find_or_create(s, 3, 2, 0);
		mtms_emb_serialize(&buf, s);
		mtms_emb_free(s);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown state kind \"%s\"", kind),
				 errhint("Use 'tower' or 'embedding'.")));

	result = palloc(VARHDRSZ + buf.len);
	SET_VARSIZE(result, VARHDRSZ + buf.len);
	memcpy(VARDATA(result), buf.data, buf.len);
	PG_RETURN_BYTEA_P(result);
}

/*
 * mtms_nn_deserialize_check(data bytea) RETURNS text: deserialize a tower
 * (recognised by its magic number) or else an embedding state, and
 * describe it; ERROR (data_corrupted) on a truncated or corrupt buffer or
 * trailing bytes.
 */
Datum
mtms_nn_deserialize_check(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	Size		len = VARSIZE_ANY_EXHDR(data);
	/* an exact-size copy: reading past its end would be a bug */
	char	   *copy = palloc(Max(len, 1));
	const char *p = copy;
	const char *end = copy + len;
	uint32		magic = 0;
	StringInfoData out;

	memcpy(copy, VARDATA_ANY(data), len);
	if (len >= sizeof(uint32))
		memcpy(&magic, copy, sizeof(uint32));

	initStringInfo(&out);
	if (magic == MTMS_TOWER_MAGIC)
	{
		MtmsTower  *t = mtms_tower_deserialize(&p, end);
		int			l;

		appendStringInfo(&out, "tower %d", t->sizes[0]);
		for (l = 1; l <= t->nlayers; l++)
			appendStringInfo(&out, "-%d", t->sizes[l]);
		appendStringInfo(&out, ", step %lld", (long long) t->step);
	}
	else
	{
		MtmsEmbStore *s = mtms_emb_deserialize(&p, end);

		appendStringInfo(&out, "embedding dim %d, %lld rows",
						 mtms_emb_dim(s), (long long) mtms_emb_count(s));
	}
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt state: %zu bytes follow the end of the state",
						(Size) (end - p))));
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}
