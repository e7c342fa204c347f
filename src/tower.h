/*
 * tower.h
 *    A tower: a small fully connected network, ReLU hidden layers and one
 *    output logit (the caller applies the sigmoid).  Every dense product is
 *    an OpenBLAS call (cblas_sgemm for batches, cblas_sgemv for one row).
 *
 * Layout: layer l maps sizes[l] -> sizes[l+1]; W[l] is sizes[l+1] x sizes[l]
 * row-major (one row per output unit), b[l] has sizes[l+1] entries.  The
 * last layer has one output.
 *
 * All memory of a tower is allocated in the memory context current at
 * creation (or deserialization / copy); huge allocations are used where the
 * sizes call for them.  Parameters and optimizer state are ONE allocation
 * (mem: 4 blocks of nparams floats = parameters, gradients, Adam m, Adam v;
 * each block holds every layer's W, then every layer's b); the per-layer
 * pointers below point into it.  Never pfree or repalloc them one by one.
 */
#ifndef MTMS_TOWER_H
#define MTMS_TOWER_H

#include "mtms.h"
#include "lib/stringinfo.h"

#define MTMS_TOWER_MAX_LAYERS	(MTMS_MAX_HIDDEN_LAYERS + 1)

/* first 4 bytes of a serialized tower ("MTTW" in little-endian order) */
#define MTMS_TOWER_MAGIC		0x5754544D

typedef struct MtmsTower
{
	int32		nlayers;		/* weight layers = hidden layers + 1 */
	int32		sizes[MTMS_TOWER_MAX_LAYERS + 1];	/* sizes[0] = input */
	float	   *W[MTMS_TOWER_MAX_LAYERS];
	float	   *b[MTMS_TOWER_MAX_LAYERS];
	/* gradient accumulators, same shapes (zeroed by mtms_tower_step) */
	float	   *gW[MTMS_TOWER_MAX_LAYERS];
	float	   *gb[MTMS_TOWER_MAX_LAYERS];
	/* Adam moments, same shapes */
	float	   *mW[MTMS_TOWER_MAX_LAYERS];
	float	   *vW[MTMS_TOWER_MAX_LAYERS];
	float	   *mb[MTMS_TOWER_MAX_LAYERS];
	float	   *vb[MTMS_TOWER_MAX_LAYERS];
	int64		step;			/* Adam steps taken */
	int64		nsamples;		/* rows trained since last reset (combine weight) */
	/* private: the allocations and their layout */
	float	   *mem;			/* 3 * nparams floats: params, m, v; or
								 * nparams: params only (!moments) */
	bool		moments;		/* mem holds the Adam moments */
	float	   *grad;			/* nparams floats, or NULL (see tower.c) */
	int64		nweights;		/* floats in all W[l] */
	int64		nparams;		/* nweights + floats in all b[l] */

	/*
	 * Scoring reads only the first nin_used input columns (0 = all): the
	 * columns after them have zero weights, appended when the model grew a
	 * scene or a field, so one-row predictions stay bit-identical to those
	 * of the tower before it grew (same BLAS call, same summation order).
	 * Set by mtms_tower_remap_input and mtms_tower_trim_input; a training
	 * step resets it.
	 */
	int32		nin_used;
} MtmsTower;

/*
 * Scratch space for a batch forward/backward of up to max_batch rows.
 * Holds the activations of every layer, reused across calls.
 */
typedef struct MtmsTowerWork
{
	int32		max_batch;
	int32		batch;			/* rows of the last forward */
	float	   *act[MTMS_TOWER_MAX_LAYERS + 1]; /* act[0] = room for an input copy */
	const float *in0;			/* input of the last forward: act[0] or the
								 * caller's X (mtms_tower_forward_train) */
	float	   *delta[MTMS_TOWER_MAX_LAYERS + 1];
} MtmsTowerWork;

/*
 * New tower nin -> hidden[0] -> ... -> hidden[nhidden-1] -> 1, He-uniform
 * weights drawn with pg_prng from seed (deterministic), zero biases, zero
 * Adam state.
 */
extern MtmsTower *mtms_tower_create(int nin, int nhidden, const int32 *hidden,
									uint64 seed);
/*
 * The same shape with every parameter and moment zero and no gradient
 * accumulators: for a caller that sets the parameters itself.
 */
extern MtmsTower *mtms_tower_create_zero(int nin, int nhidden, const int32 *hidden);
/* A copy, without gradient accumulators (they are zero between steps). */
extern MtmsTower *mtms_tower_copy(const MtmsTower *t);
/* A copy of the parameters only (no Adam moments either). */
extern MtmsTower *mtms_tower_copy_params(const MtmsTower *t);
extern void mtms_tower_free(MtmsTower *t);
/* bytes of parameters + optimizer state (+ gradients, when it has them) */
extern Size mtms_tower_bytes(const MtmsTower *t);

/*
 * Gradient accumulators: a created tower has them; a copied or
 * deserialized one gets them (zero) with ensure before it trains.  Any
 * backward pass or step needs them.  Drop frees them once training is
 * over.
 */
extern void mtms_tower_ensure_grad(MtmsTower *t);
extern void mtms_tower_drop_grad(MtmsTower *t);

/*
 * Adam moments: a tower that trains has them (ensure_grad creates zero
 * ones); a created-zero or params-only deserialized tower has none, and
 * drop_training_state frees them with the gradients once the tower trains
 * no further in this training (they are never stored: a next training
 * starts its moments at zero).  The parameters stay.
 */
extern void mtms_tower_drop_training_state(MtmsTower *t);

extern MtmsTowerWork *mtms_tower_work_create(const MtmsTower *t, int max_batch);
/*
 * The same without room for a copy of the input: for forward_hidden and
 * backward_hidden only (or forward_train, which reads the caller's X), at
 * no cost in the input's width (a fine-tune tower's is the joined input).
 */
extern MtmsTowerWork *mtms_tower_work_create_hidden(const MtmsTower *t, int max_batch);
extern void mtms_tower_work_free(MtmsTowerWork *w);

/*
 * Forward a batch: X is B x sizes[0] row-major (B <= w->max_batch); writes B
 * logits.  Keeps activations (a copy of X included) in w for a following
 * backward, so X may be reused as soon as this returns.
 */
extern void mtms_tower_forward(const MtmsTower *t, MtmsTowerWork *w,
							   const float *X, int B, float *logits);

/*
 * The same forward without the copy of X: the following backward reads X
 * itself, so X must stay unchanged until then (training steps, where X is
 * the caller's batch buffer anyway).  Same results as mtms_tower_forward.
 */
extern void mtms_tower_forward_train(const MtmsTower *t, MtmsTowerWork *w,
									 const float *X, int B, float *logits);

/*
 * Backward of the last forward: dlogits[B] = dLoss/dlogit per row (already
 * divided by the batch size if the caller wants a mean).  Accumulates into
 * gW/gb.  If dX is not NULL it receives B x sizes[0] input gradients.
 */
extern void mtms_tower_backward(MtmsTower *t, MtmsTowerWork *w,
								const float *dlogits, float *dX);

/*
 * A forward pass whose first layer the caller computed some other way:
 * H1 (B x sizes[1]) holds the batch's X W[0]^T.  Adds b[0], applies the
 * ReLU and runs the other layers, like mtms_tower_forward_train.
 */
extern void mtms_tower_forward_hidden(const MtmsTower *t, MtmsTowerWork *w,
									  const float *H1, int B, float *logits);

/*
 * Backward of a mtms_tower_forward_hidden: accumulates the gradients of
 * every parameter but the first layer's weights (gb[0] included) and
 * returns the B x sizes[1] gradient with respect to the first layer's
 * output before its ReLU (in w, valid until the next call), from which the
 * caller accumulates gW[0] (= that gradient^T X).
 */
extern const float *mtms_tower_backward_hidden(MtmsTower *t, MtmsTowerWork *w,
											   const float *dlogits);

/* Adam step with the accumulated gradients, then zero them. */
extern void mtms_tower_step(MtmsTower *t, float lr, float l2);

/*
 * Adam step on the first layer's input columns first_col.. only (every
 * other parameter stays as it is), then zero all gradients: how a grown
 * tower learns its new inputs without moving what it already knew.
 */
extern void mtms_tower_step_columns(MtmsTower *t, float lr, float l2, int first_col);

/*
 * Adam step on the first layer's input columns in the runs [col[k],
 * col[k] + len[k]) only, every other layer and every bias as usual, then
 * zero those gradients: the lazy step of a sparse first layer, whose
 * gradient is zero outside the runs (joined_keys.h).  The first layer's
 * other weights keep their values and Adam moments.
 */
extern void mtms_tower_step_input_runs(MtmsTower *t, float lr, float l2,
									   const int32 *col, const int32 *len, int nruns);

/* Set nin_used from the trailing all-zero input columns of the first layer. */
extern void mtms_tower_trim_input(MtmsTower *t);

/*
 * One row: logit of x (sizes[0] floats, of which the first nin_used are
 * read); scratch holds 2 * max(sizes) floats.
 */
extern float mtms_tower_predict1(const MtmsTower *t, const float *x, float *scratch);

/*
 * The rest of a one-row prediction whose first layer the caller computed:
 * h holds x W[0]^T + b[0] (sizes[1] floats, before the ReLU).  Layers
 * write alternately to other and back to h (each of max(sizes) floats), so
 * both are clobbered.  Returns the logit.
 */
extern float mtms_tower_predict1_hidden(const MtmsTower *t, float *h, float *other);

/*
 * dst = (wdst * dst + wsrc * src) / (wdst + wsrc), weights and Adam moments
 * alike (equal weights when both are 0; gradient accumulators untouched).
 * Shapes must match (elog ERROR otherwise).  Step = max, nsamples = sum.
 */
extern void mtms_tower_average(MtmsTower *dst, double wdst,
							   const MtmsTower *src, double wsrc);

/*
 * Grow the input from sizes[0] to new_nin: input column j of the old tower
 * moves to column map[j] of the new one (map injective, ERROR otherwise);
 * new columns get zero weights, so the tower's outputs are unchanged for
 * any finite values in the new columns (up to float rounding: BLAS may sum
 * the reordered columns in another order).  Adam moments and gradients
 * follow the same map.  Work areas made for the old shape are invalid.
 */
extern void mtms_tower_remap_input(MtmsTower *t, int new_nin, const int32 *map);

/*
 * Binary serialization (native endianness, used for partial aggregate
 * states, the training snapshot and parallel workers' units, not for
 * storage): shape, step, nsamples, parameters and Adam moments.  The
 * gradient accumulators are zero between steps: left out, and zero when
 * read back.
 * Starts with MTMS_TOWER_MAGIC.  Deserialize checks sizes against
 * [*p, end) before allocating and ERRORs (ERRCODE_DATA_CORRUPTED) on a
 * truncated/corrupt buffer, never reading past end; advances *p.
 */
extern void mtms_tower_serialize(StringInfo buf, const MtmsTower *t);
/*
 * The same without the Adam moments (they read back as zero): a third of
 * the bytes, for towers that will not train further from this state
 * (a multi-node training's finished units, node_wire.c).
 */
extern void mtms_tower_serialize_params(StringInfo buf, const MtmsTower *t);
extern MtmsTower *mtms_tower_deserialize(const char **p, const char *end);

/*
 * Flat copies for shared memory (model_flat.h): the parameters in one
 * pointer-free block, and a tower header that reads such a block in place
 * (predictions only: no gradients, no optimizer state).
 */
extern Size mtms_tower_flat_size(const MtmsTower *t);
extern void mtms_tower_flat_write(const MtmsTower *t, char *dst);
extern MtmsTower *mtms_tower_flat_view(const char *src);

#endif							/* MTMS_TOWER_H */
