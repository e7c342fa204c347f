/*
 * proj_shared.h
 *    The first-layer projection cache of a shared model version
 *    (score_projection.h), in shared memory: one table per tower, filled
 *    by every session that scores the version, read without locks.
 *
 * Insert-only.  A tower's table is an open-addressing array of entries
 * (hash, field, vector); an entry is written, then published by setting
 * its state with a write barrier, and never changes again, so readers
 * probe without any lock (a reader that misses an entry being written
 * just computes the projection itself: the same bits).  Inserts into one
 * tower take its LWLock; a table past 3/4 full is replaced by one twice
 * its size (the old one stays readable until the version is freed).
 * Bounded by the inserting session's cap (mtms.score_cache) and by the
 * DSA area's limit; past them projections are computed for the row
 * without being kept.
 */
#ifndef MTMS_PROJ_SHARED_H
#define MTMS_PROJ_SHARED_H

#include "mtms.h"
#include "utils/dsa.h"

typedef struct MtmsProjShared MtmsProjShared;

/* A cache for npairs towers of h1p floats per vector; Invalid when no room. */
extern dsa_pointer mtms_proj_shared_create(dsa_area *area, int npairs, int h1p,
										   int tranche);
extern void mtms_proj_shared_free(dsa_area *area, dsa_pointer dp);

/*
 * The projection of (hash, field) for tower p: true when cached, *vec
 * then its vector (NULL: zero).
 */
extern bool mtms_proj_shared_lookup(dsa_area *area, MtmsProjShared *ps, int p,
									uint64 hash, int32 field, const float **vec);

/* Start fetching the table slot of hash (a hint). */
extern void mtms_proj_shared_prefetch(dsa_area *area, MtmsProjShared *ps, int p,
									  uint64 hash);

/*
 * Keep a projection just computed (known: vec holds h1p floats; else it
 * projects to zero) when the cache then holds at most cap bytes.  Returns
 * the vector to add: the shared copy, vec when not kept, NULL for zero.
 * *kept says which.
 */
extern const float *mtms_proj_shared_insert(dsa_area *area, MtmsProjShared *ps, int p,
											uint64 hash, int32 field, bool known,
											const float *vec, Size cap, bool *kept);

extern void mtms_proj_shared_stats(MtmsProjShared *ps, int64 *keys, int64 *zero_keys,
								   int64 *bytes);

#endif							/* MTMS_PROJ_SHARED_H */
