/*
 * optimizer.h
 *    The two optimizers mtms uses.
 *
 *  - Adam for the dense tower weights: few parameters, every one updated on
 *    every batch, so per-coordinate first and second moments are cheap and
 *    make the step size insensitive to the very different scales of
 *    phase-1 (F*d inputs) and fine-tune (S*2*F*d inputs) towers.
 *  - Row-wise Adagrad for the sparse embedding rows: one accumulator per row
 *    (not per coordinate), so optimizer state adds 1 float to d floats.
 *    Rare features keep a large step, frequent ones anneal, with no global
 *    step counter to keep consistent across sparse updates (which Adam's bias
 *    correction would need).
 */
#ifndef MTMS_OPTIMIZER_H
#define MTMS_OPTIMIZER_H

#include "mtms.h"

#define MTMS_ADAM_BETA1		0.9f
#define MTMS_ADAM_BETA2		0.999f
#define MTMS_ADAM_EPS		1e-8f
#define MTMS_ADAGRAD_EPS	1e-8f

/*
 * On the hot elementwise loops of training: an AVX2 build of the function
 * next to the baseline one, picked at load time by the CPU (x86-64 with
 * ifunc support only).  AVX2 without FMA: the same IEEE operations in the
 * same order, so the same results on every machine.  GCC only: clang
 * (the fuzzing build) does not emit the resolver of an extern clone.
 */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones)
#define MTMS_VEC_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MTMS_VEC_CLONES
#define MTMS_VEC_CLONES
#endif

/*
 * One Adam step on n parameters: w -= lr * mhat / (sqrt(vhat) + eps),
 * with decoupled-from-nothing classic L2 (grad += l2 * w) when l2 > 0.
 * step is the 1-based step count used for bias correction.
 */
extern void mtms_adam_update(float *w, const float *grad, float *m, float *v,
							 int64 n, float lr, float l2, int64 step);

/*
 * The same step on some columns of a row-major matrix of nrows rows
 * (stride floats apart): in every row, the runs of len[k] columns from
 * col[k], k < nruns.  Every other element is left as it is (the lazy Adam
 * of the fine-tune's first layer, joined_keys.h).  Same arithmetic per
 * element as mtms_adam_update.
 */
extern void mtms_adam_update_runs(float *w, const float *grad, float *m, float *v,
								  int nrows, int64 stride, const int32 *col,
								  const int32 *len, int nruns, float lr, float l2,
								  int64 step);

/*
 * Row-wise Adagrad on one embedding row of dim floats:
 *   g += l2 * w;  acc += mean(g^2);  w -= lr * g / (sqrt(acc) + eps)
 */
extern void mtms_rowwise_adagrad_update(float *w, const float *grad, float *acc,
										int dim, float lr, float l2);

#endif							/* MTMS_OPTIMIZER_H */
