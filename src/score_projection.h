/*
 * score_projection.h
 *    The first-layer projection cache of a loaded model, and one-row
 *    prediction through it.
 *
 * A tower's first layer is linear in its input, and the input of a row is
 * a sum over the row's features of that feature's embedding vectors, each
 * in the columns of its field's block (of every pair for a fine-tune
 * tower, of the tower's own pair for a phase-1 tower).  So
 *
 *     W1 x = sum over features k of P(k),
 *     P(k) = sum over pairs q of W1[:, block(q, field(k))] e_q(k)
 *
 * (phase-1 tower of pair p: P(k) = W1[:, field(k) * dim ..] e_p(k)).
 * P(k) has hidden[0] floats.  The cache keeps P(k) per tower and feature
 * (hash, field), computed on the key's first use (a probe per pair and
 * small matrix-vector products; a key no pair knows projects to zero and
 * is kept without a vector), so a row costs one probe and one vector add
 * per feature, then the bias, ReLU and the deeper layers.  Scores equal
 * those of mtms_model_predict up to float summation order; the vectors are
 * summed in (hash, field) order, so a score does not depend on the order
 * of the features in the row, nor on what was cached.
 *
 * Bounded: the cache stops inserting when it would grow past
 * mtms_scorer_cap_bytes() (a sixteenth of mtms.max_memory); a miss is then
 * computed for that row without being kept.  All memory lives in a child
 * of the context given at creation (the loaded model's), so it goes when
 * the model cache drops the model (new version, rollback, drop, another
 * role).  Per backend, not thread safe, not for a model being trained.
 */
#ifndef MTMS_SCORE_PROJECTION_H
#define MTMS_SCORE_PROJECTION_H

#include "model.h"
#include "utils/dsa.h"

typedef struct MtmsScorer MtmsScorer;

typedef struct MtmsScorerStats
{
	int64		keys;			/* cached (tower, feature) projections */
	int64		zero_keys;		/* of those, keys no pair knows (no vector) */
	int64		bytes;			/* memory held by the cache */
	int64		cap_bytes;		/* current cap */
	int64		computed;		/* projections computed (inserted or not) */
	int64		uncached;		/* misses computed without being kept (cap reached) */
} MtmsScorerStats;

/* An empty cache for m, in a new child of parent.  m must outlive it. */
extern MtmsScorer *mtms_scorer_create(const MtmsModel *m, MemoryContext parent);

/*
 * A scorer of a shared model version whose projections are kept in the
 * version's shared cache (proj_shared.h, at cache in area) instead: the
 * same scores, bit for bit, one row at a time or in batches.  A session
 * adds projections to it while it holds less than the session's
 * mtms_scorer_cap_bytes().  Its per-backend part is a few buffers.
 */
extern MtmsScorer *mtms_scorer_create_shared(const MtmsModel *m, MemoryContext parent,
											 dsa_area *area, dsa_pointer cache);
/* floats of one projection vector of m (its first hidden size, padded) */
extern int	mtms_scorer_vector_floats(const MtmsModel *m);

/*
 * Probability of task (MTMS_TASK_CTR / CVR) for scene: the pair's
 * fine-tune tower when it has one, else its phase-1 tower, as
 * mtms_model_predict.
 */
extern double mtms_scorer_predict(MtmsScorer *sc, int scene, int task,
								  const MtmsFeature *feats, int nfeats);

/*
 * Rows scored in batches (mtms_evaluate): the same projections, looked up
 * in and added to the same cache, but the missing ones computed per batch
 * (each distinct feature probed once in every pair for all the batch's
 * fine-tune towers, a tower's missing features computed a tile at a time,
 * grouped by field, pair by pair; each with the same cblas_sgemv calls as
 * one at a time, so the cache holds the same vectors whoever computed
 * them), and the upper layers of up to
 * 256 rows of a tower in one cblas_sgemm per layer.  Probabilities equal
 * mtms_scorer_predict's up to float rounding (the upper layers sum in
 * another order).  A batch lives in a new child of the current memory
 * context; it must not outlive sc.
 */
typedef struct MtmsScoreBatch MtmsScoreBatch;

extern MtmsScoreBatch *mtms_score_batch_create(MtmsScorer *sc);

/* Add a row (the features are copied); returns its number in the batch. */
extern int	mtms_score_batch_add(MtmsScoreBatch *b, int scene,
								 const MtmsFeature *feats, int nfeats);

/*
 * Score every row added since the last run, both tasks:
 * prob[row * MTMS_NTASKS + task] for task MTMS_TASK_CTR and MTMS_TASK_CVR
 * (the pair's fine-tune tower when it has one, else its phase-1 tower),
 * then empty the batch.
 */
extern void mtms_score_batch_run(MtmsScoreBatch *b, float *prob);
extern void mtms_score_batch_free(MtmsScoreBatch *b);

extern Size mtms_scorer_cap_bytes(void);
extern void mtms_scorer_stats(const MtmsScorer *sc, MtmsScorerStats *st);

#endif							/* MTMS_SCORE_PROJECTION_H */
