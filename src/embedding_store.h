/*
 * embedding_store.h
 *    The sparse embedding table of one (scene, task) pair: rows keyed by the
 *    64-bit feature hash (which already encodes the field), each a vector of
 *    dim floats plus its row-wise Adagrad accumulator.
 *
 * Rows are created on first sight during training, with a small vector
 * drawn deterministically from (seed, key) so that the same row gets the
 * same start wherever (which worker) it is first seen.  Lookups for scoring
 * never create rows: an unknown feature contributes a zero vector.
 *
 * Storage: a simplehash from key to a row index, rows in fixed-size chunks
 * (no allocation over 1 GB however many rows).  Row indexes are stable for
 * the life of the store.
 */
#ifndef MTMS_EMBEDDING_STORE_H
#define MTMS_EMBEDDING_STORE_H

#include "mtms.h"
#include "lib/stringinfo.h"

typedef struct MtmsEmbStore MtmsEmbStore;

/* All memory of the store lives in a new child of the current context. */
extern MtmsEmbStore *mtms_emb_create(int dim, uint64 seed);
extern void mtms_emb_free(MtmsEmbStore *s);
extern MtmsEmbStore *mtms_emb_copy(const MtmsEmbStore *s);

extern int	mtms_emb_dim(const MtmsEmbStore *s);
extern int64 mtms_emb_count(const MtmsEmbStore *s);
/* bytes used (vectors, accumulators, keys, hash table) */
extern Size mtms_emb_bytes(const MtmsEmbStore *s);

/* Row index of key, or -1. */
extern int64 mtms_emb_find(const MtmsEmbStore *s, uint64 key);

/*
 * Row index of key, creating the row (field recorded for storage) if absent.
 * Returns -1 without creating when the store already holds max_rows rows
 * (max_rows <= 0: unlimited).
 */
extern int64 mtms_emb_find_or_create(MtmsEmbStore *s, uint64 key, int32 field,
									 int64 max_rows);

/*
 * Insert a row with given contents (loading from storage).  ERROR if the
 * key exists.  Returns its index.
 */
extern int64 mtms_emb_insert(MtmsEmbStore *s, uint64 key, int32 field,
							 const float *vec, float accum);

/* Access by index (0 <= idx < count). */
extern float *mtms_emb_vector(const MtmsEmbStore *s, int64 idx);
extern float *mtms_emb_accum(const MtmsEmbStore *s, int64 idx);
extern uint64 mtms_emb_key(const MtmsEmbStore *s, int64 idx);
extern int32 mtms_emb_field(const MtmsEmbStore *s, int64 idx);

/*
 * Gradient accumulation for one mini-batch: add_grad sums gradients per row
 * (a row seen several times in a batch gets one summed gradient); apply
 * then runs one row-wise Adagrad update per touched row, bumps each touched
 * row's update count, and clears the batch.
 */
extern void mtms_emb_add_grad(MtmsEmbStore *s, int64 idx, const float *grad);
extern void mtms_emb_apply(MtmsEmbStore *s, float lr, float l2);

/* Number of updates of row idx since the last reset_counts. */
extern int32 mtms_emb_updates(const MtmsEmbStore *s, int64 idx);
extern void mtms_emb_reset_counts(MtmsEmbStore *s);

/*
 * Combine two partial states that started from the same snapshot: for each
 * row of src, if dst lacks it, insert it; if both have it, average vector
 * and accumulator weighted by their update counts (equal weights when both
 * are 0) and sum the counts.
 */
extern void mtms_emb_merge(MtmsEmbStore *dst, const MtmsEmbStore *src);

/* Binary serialization (see tower.h); rows keep their update counts. */
extern void mtms_emb_serialize(StringInfo buf, const MtmsEmbStore *s);
extern MtmsEmbStore *mtms_emb_deserialize(const char **p, const char *end);

#endif							/* MTMS_EMBEDDING_STORE_H */
