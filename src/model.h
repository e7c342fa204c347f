/*
 * model.h
 *    The MTMS model in memory, as training updates it and scoring reads it.
 *
 * For every (scene, task) pair p (see MTMS_PAIR):
 *   emb[p]     its own embedding table (all fields, keyed by feature hash);
 *   tower1[p]  its phase-1 tower on its own embeddings: F*d inputs
 *              (field f's sum-pooled embedding in columns f*d .. f*d+d-1);
 *   tower2[p]  its fine-tune tower on the JOIN of all pairs' embeddings:
 *              P*F*d inputs, pair q's field f in the d columns from
 *              block_off[q*F + f]; NULL until phase 2 has run for the pair.
 *
 * The joined input's blocks are ordered by when they came to exist: block
 * (q, f) is born with the later of its scene and its field (birth numbers
 * in the catalog), ties in (q, f) order.  A new scene or field therefore
 * only appends blocks, and the towers of a model that grew read their old
 * inputs in the old columns (see nin_used in tower.h).
 */
#ifndef MTMS_MODEL_H
#define MTMS_MODEL_H

#include <math.h>

#include "mtms.h"
#include "catalog.h"
#include "embedding_store.h"
#include "feature_parser.h"
#include "tower.h"

typedef struct MtmsModel
{
	MemoryContext cxt;			/* owns everything below */
	int32		nscenes;
	int32		nfields;
	int32		dim;
	int32		npairs;
	int32		nhidden;
	int32		hidden[MTMS_MAX_HIDDEN_LAYERS];
	char	  **scenes;
	char	  **fields;
	int32	   *scene_birth;	/* [nscenes] */
	int32	   *field_birth;	/* [nfields] */
	int32	   *block_off;		/* [npairs * nfields] joined-input offsets */

	/*
	 * Shape of the stored version a loaded model came from, before it grew
	 * to the model's current scenes and fields (= current when it did not).
	 */
	int32		stored_nfields;
	int32		stored_npairs;
	uint64		seed;
	MtmsEmbStore **emb;			/* [npairs] */
	MtmsTower **tower1;			/* [npairs] */
	MtmsTower **tower2;			/* [npairs], entries NULL until fine-tuned */
} MtmsModel;

/* Width of the phase-1 input and of the joined input. */
#define MTMS_INPUT1(m)	((m)->nfields * (m)->dim)
#define MTMS_INPUT2(m)	((m)->npairs * (m)->nfields * (m)->dim)

/* Fresh model for meta's scenes and fields: empty embeddings, new towers. */
extern MtmsModel *mtms_model_create(const MtmsModelMeta *meta);
extern void mtms_model_free(MtmsModel *m);
extern MtmsModel *mtms_model_copy(const MtmsModel *m);
extern bool mtms_model_has_finetune(const MtmsModel *m);
extern Size mtms_model_bytes(const MtmsModel *m);

/*
 * Grow a model (trained for fewer scenes / fields) to meta's scenes and
 * fields, which only ever append.  Existing towers get zero weights on the
 * new input columns; new pairs get fresh embeddings and phase-1 towers.
 */
extern void mtms_model_extend(MtmsModel *m, const MtmsModelMeta *meta);

/* Index of the scene named by len bytes at name, or -1. */
extern int	mtms_model_scene(const MtmsModel *m, const char *name, int len);

/*
 * Pair p as a new model has it: fresh embeddings and phase-1 tower (the
 * same as mtms_model_create's), no fine-tune tower.
 */
extern void mtms_model_reset_pair(MtmsModel *m, int p);

/* (Re)compute block_off from the births. */
extern void mtms_model_layout(MtmsModel *m);

/* Create the fine-tune towers that are missing. */
extern void mtms_model_ensure_finetune(MtmsModel *m);
/*
 * bytes of one fine-tune tower, existing or not: its parameters, and when
 * training, its gradients and Adam moments too
 */
extern Size mtms_model_finetune_tower_bytes(const MtmsModel *m, bool training);
/* ... of pair p only (a fine-tune unit's, created when it trains) */
extern void mtms_model_ensure_finetune_pair(MtmsModel *m, int p);

/*
 * Sum-pool the features of one row into x (MTMS_INPUT1 floats, zeroed here)
 * from pair p's embeddings.  Lookup only: unknown features add nothing.
 */
extern void mtms_input1(const MtmsModel *m, int pair, const MtmsFeature *feats,
						int nfeats, float *x);

/* The joined input of all pairs (MTMS_INPUT2 floats, zeroed here). */
extern void mtms_input2(const MtmsModel *m, const MtmsFeature *feats, int nfeats,
						float *x);

/*
 * Probability of task (MTMS_TASK_CTR / CVR) for scene, with the fine-tune
 * tower when the pair has one, else its phase-1 tower.  scratch must hold
 * mtms_model_scratch_size(m) floats.
 */
extern double mtms_model_predict(const MtmsModel *m, int scene, int task,
								 const MtmsFeature *feats, int nfeats,
								 float *scratch);
extern Size mtms_model_scratch_size(const MtmsModel *m);

static inline float
mtms_sigmoid(float z)
{
	if (z >= 0)
		return (float) (1.0 / (1.0 + exp(-z)));
	else
	{
		double		e = exp(z);

		return (float) (e / (1.0 + e));
	}
}

#endif							/* MTMS_MODEL_H */
