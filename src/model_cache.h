/*
 * model_cache.h
 *    Per-backend cache of loaded models for scoring and evaluation.
 *
 * A model is loaded once per backend and kept until the catalog changes:
 * every committed training, rollback, scene or field addition and drop
 * sends a relcache invalidation on mtms_model (mtms_catalog_changed), which
 * bumps this backend's cache generation, so the next query re-reads the
 * active version.  Versions are immutable once committed, so a scorer sees
 * the old version or the new one, never half of one.
 */
#ifndef MTMS_MODEL_CACHE_H
#define MTMS_MODEL_CACHE_H

#include "catalog.h"
#include "model.h"
#include "score_projection.h"

/* The active version of model name, loaded if needed. ERROR if untrained. */
extern MtmsModel *mtms_cache_get(const char *name, const MtmsModelMeta **meta);

/*
 * The same, with the model's first-layer projection cache for one-row
 * scoring (score_projection.h); it lives and dies with the loaded model.
 */
extern MtmsScorer *mtms_cache_get_scorer(const char *name, const MtmsModelMeta **meta,
										 const MtmsModel **model);

/*
 * What serves a model's request keys: the active version, and during an
 * experiment with a share above 0 its candidate version (else NULL), each
 * with its projection cache.  Both come from one read of the catalog, so
 * the pair and meta's experiment always agree.  Within one query (one
 * active snapshot) the same state is returned even if a change committed
 * meanwhile: a query never mixes two states; the next query sees the new
 * one.  generation is the catalog generation the state was read at.
 */
typedef struct MtmsServing
{
	const MtmsModelMeta *meta;
	const MtmsModel *active;
	MtmsScorer *active_scorer;
	const MtmsModel *candidate;
	MtmsScorer *candidate_scorer;
	uint64		generation;
} MtmsServing;

extern void mtms_cache_get_serving(const char *name, MtmsServing *out);

/* Name of the model the 3-argument mtms_score uses (mtms.model or the only one). */
extern const char *mtms_cache_default_model(void);

/* Changes whenever the catalog may have changed. */
extern uint64 mtms_cache_generation(void);

#endif							/* MTMS_MODEL_CACHE_H */
