/*
 * optimizer.c
 *    Adam for dense tower parameters, row-wise Adagrad for embedding rows.
 *
 * Both are plain loops over float arrays; the compiler vectorises them.
 * They never allocate and never throw, so they are safe to call anywhere
 * inside a training loop.
 */
#include "mtms.h"

#include <math.h>

#include "miscadmin.h"

#include "optimizer.h"

/* Adam updates are chunked so that a huge tower can still be cancelled. */
#define ADAM_CHUNK	(1 << 20)

/*
 * One Adam step on n parameters.
 *
 *   g = grad + l2 * w            (classic L2; l2 = 0 for biases)
 *   m = b1 * m + (1 - b1) * g
 *   v = b2 * v + (1 - b2) * g^2
 *   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * inv_bc1 and inv_bc2 are the inverse bias corrections (adam_corrections).
 * Inlined into both entry points, so each is vectorised in each clone.
 */
static inline void
adam_kernel(float *restrict w, const float *restrict grad, float *restrict m,
			float *restrict v, int64 n, float lr, float l2, float inv_bc1, float inv_bc2)
{
	const float b1 = MTMS_ADAM_BETA1;
	const float b2 = MTMS_ADAM_BETA2;
	const float c1 = 1.0f - MTMS_ADAM_BETA1;
	const float c2 = 1.0f - MTMS_ADAM_BETA2;
	int64		i;

	if (l2 > 0.0f)
	{
		for (i = 0; i < n; i++)
		{
			float		g = grad[i] + l2 * w[i];
			float		mi = b1 * m[i] + c1 * g;
			float		vi = b2 * v[i] + c2 * g * g;

			m[i] = mi;
			v[i] = vi;
			w[i] -= lr * (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + MTMS_ADAM_EPS);
		}
	}
	else
	{
		for (i = 0; i < n; i++)
		{
			float		g = grad[i];
			float		mi = b1 * m[i] + c1 * g;
			float		vi = b2 * v[i] + c2 * g * g;

			m[i] = mi;
			v[i] = vi;
			w[i] -= lr * (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + MTMS_ADAM_EPS);
		}
	}
}

/* The bias corrections of step `step`, computed once in double precision. */
static void
adam_corrections(int64 step, float *inv_bc1, float *inv_bc2)
{
	double		t = (double) Max(step, 1);

	*inv_bc1 = (float) (1.0 / (1.0 - pow((double) MTMS_ADAM_BETA1, t)));
	*inv_bc2 = (float) (1.0 / (1.0 - pow((double) MTMS_ADAM_BETA2, t)));
}

MTMS_VEC_CLONES void
mtms_adam_update(float *w, const float *grad, float *m, float *v,
				 int64 n, float lr, float l2, int64 step)
{
	float		inv_bc1;
	float		inv_bc2;

	adam_corrections(step, &inv_bc1, &inv_bc2);
	for (int64 start = 0; start < n; start += ADAM_CHUNK)
	{
		int64		len = Min(n - start, ADAM_CHUNK);

		if (start > 0)
			CHECK_FOR_INTERRUPTS();
		adam_kernel(w + start, grad + start, m + start, v + start, len, lr, l2,
					inv_bc1, inv_bc2);
	}
}

MTMS_VEC_CLONES void
mtms_adam_update_runs(float *w, const float *grad, float *m, float *v,
					  int nrows, int64 stride, const int32 *col, const int32 *len,
					  int nruns, float lr, float l2, int64 step)
{
	float		inv_bc1;
	float		inv_bc2;

	adam_corrections(step, &inv_bc1, &inv_bc2);
	for (int r = 0; r < nrows; r++)
	{
		int64		row = (int64) r * stride;

		for (int k = 0; k < nruns; k++)
		{
			int64		o = row + col[k];

			adam_kernel(w + o, grad + o, m + o, v + o, len[k], lr, l2, inv_bc1, inv_bc2);
		}
	}
}

/*
 * Row-wise Adagrad on one embedding row:
 *   g = grad + l2 * w;  acc += mean(g^2);  w -= lr * g / (sqrt(acc) + eps)
 *
 * Two passes over the row so no scratch is needed: the first computes
 * mean(g^2) from the old weights, the second updates each weight from its
 * own old value.
 */
void
mtms_rowwise_adagrad_update(float *w, const float *grad, float *acc,
							int dim, float lr, float l2)
{
	float		sumsq = 0.0f;
	float		scale;
	int			i;

	if (l2 > 0.0f)
	{
		for (i = 0; i < dim; i++)
		{
			float		g = grad[i] + l2 * w[i];

			sumsq += g * g;
		}
		*acc += sumsq / (float) dim;
		scale = lr / (sqrtf(*acc) + MTMS_ADAGRAD_EPS);
		for (i = 0; i < dim; i++)
			w[i] -= scale * (grad[i] + l2 * w[i]);
	}
	else
	{
		for (i = 0; i < dim; i++)
			sumsq += grad[i] * grad[i];
		*acc += sumsq / (float) dim;
		scale = lr / (sqrtf(*acc) + MTMS_ADAGRAD_EPS);
		for (i = 0; i < dim; i++)
			w[i] -= scale * grad[i];
	}
}
