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
 *
 * Feature hygiene (feature_hygiene.h): every row carries how often its
 * feature was seen in training and the slot (training) that saw it last,
 * kept with the row wherever it goes (copies, parallel workers, storage).
 * A store can be gated: then find_or_create creates rows only for keys
 * admitted beforehand (mtms_emb_admit), and every other feature pools as
 * zero, as an unseen one does at scoring time.
 */
#ifndef MTMS_EMBEDDING_STORE_H
#define MTMS_EMBEDDING_STORE_H

#include "mtms.h"
#include "feature_parser.h"
#include "lib/stringinfo.h"

typedef struct MtmsEmbStore MtmsEmbStore;

/* a hint to fetch the cache line at p (no effect where unsupported) */
#if defined(__GNUC__) || defined(__clang__)
#define mtms_prefetch(p)	__builtin_prefetch(p)
#else
#define mtms_prefetch(p)	((void) (p))
#endif

/*
 * All memory of the store lives in a new child of the current context
 * (copy and deserialize too); free deletes that context.
 */
extern MtmsEmbStore *mtms_emb_create(int dim, uint64 seed);
extern void mtms_emb_free(MtmsEmbStore *s);
extern MtmsEmbStore *mtms_emb_copy(const MtmsEmbStore *s);

/* int mtms_emb_dim(s) and int64 mtms_emb_count(s) are inline (below). */
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
 * The rows of one sample's features, in order, as a training pass needs
 * them: ridx[j] = mtms_emb_find (field < frozen: a frozen field's rows are
 * only read) or mtms_emb_find_or_create(.., max_rows) of f[j].  Also starts
 * fetching the hash slots of next[0..nnext), the features of a sample to
 * be resolved a little later (next may be NULL when nnext is 0).
 */
extern void mtms_emb_resolve(MtmsEmbStore *s, const MtmsFeature *f, int nf,
							 int32 frozen, int64 max_rows, int64 *ridx,
							 const MtmsFeature *next, int nnext);

/*
 * Start fetching the hash table slot where a lookup of key begins (a hint,
 * for lookups a little later; changes nothing).
 */
extern void mtms_emb_prefetch(const MtmsEmbStore *s, uint64 key);

/*
 * Gating (feature admission): once gated, find_or_create creates rows only
 * for keys admitted with mtms_emb_admit (which must not be rows yet); an
 * admitted key without a row is invisible to every lookup.  Gate and
 * admitted keys go with the store through copy and serialize.
 */
extern void mtms_emb_set_gated(MtmsEmbStore *s, bool gated);
extern bool mtms_emb_gated(const MtmsEmbStore *s);
extern void mtms_emb_admit(MtmsEmbStore *s, uint64 key);
/* admitted keys that have no row yet */
extern int64 mtms_emb_admitted_pending(const MtmsEmbStore *s);

/*
 * A copy of s holding only the rows with keep[idx] (in index order, so
 * renumbered), their statistics, gate and admitted keys.
 */
extern MtmsEmbStore *mtms_emb_copy_kept(const MtmsEmbStore *s, const bool *keep);

/*
 * Insert a row with given contents (loading from storage).  ERROR if the
 * key exists.  Returns its index.
 */
extern int64 mtms_emb_insert(MtmsEmbStore *s, uint64 key, int32 field,
							 const float *vec, float accum);

/*
 * Access by index (0 <= idx < count): inline, see the end of this file.
 *   float *mtms_emb_vector(const MtmsEmbStore *s, int64 idx);
 *   float *mtms_emb_accum(const MtmsEmbStore *s, int64 idx);
 *   uint64 mtms_emb_key(const MtmsEmbStore *s, int64 idx);
 *   int32  mtms_emb_field(const MtmsEmbStore *s, int64 idx);
 * Pointers stay valid for the life of the store (rows never move).
 */

/*
 * Gradient accumulation for one mini-batch: add_grad sums gradients per row
 * (a row seen several times in a batch gets one summed gradient); apply
 * then runs one row-wise Adagrad update per touched row, in the order the
 * rows were first touched, bumps each touched row's update count, and
 * clears the batch.  A pending (not yet applied) batch is private to the
 * store: copy, merge and serialize ignore it.
 */
extern void mtms_emb_add_grad(MtmsEmbStore *s, int64 idx, const float *grad);
extern void mtms_emb_apply(MtmsEmbStore *s, float lr, float l2);

/*
 * add_grad for one sample's features as resolved by mtms_emb_resolve: for
 * each j with ridx[j] >= 0 and f[j].field >= frozen, the gradient
 * dx + f[j].field * dim (dx: the sample's input gradient, fields' blocks
 * of dim floats).
 */
extern void mtms_emb_add_grad_row(MtmsEmbStore *s, const MtmsFeature *f, int nf,
								  const int64 *ridx, int32 frozen,
								  const float *dx);

/*
 * Number of updates of row idx since the last reset_counts (inline:
 * int32 mtms_emb_updates(const MtmsEmbStore *s, int64 idx)).
 */
extern void mtms_emb_reset_counts(MtmsEmbStore *s);

/*
 * Combine two partial states that started from the same snapshot: for each
 * row of src, if dst lacks it, insert it; if both have it, average the
 * vectors weighted by their update counts (equal weights when both are 0),
 * ADD the accumulators' increments of this pass (accum = accum0 + (dst's
 * accum - accum0) + (src's accum - accum0), where accum0 is the row's
 * accumulator before its first update since reset_counts: the merged row
 * anneals as if one worker had seen all its gradients; with no updates on
 * either side, the weighted mean) and sum the counts.  Rows of src are visited in index order, so
 * the result is deterministic.  ERROR if the dims differ.
 */
extern void mtms_emb_merge(MtmsEmbStore *dst, const MtmsEmbStore *src);

/*
 * Binary serialization (see tower.h); rows keep their update counts, in
 * index order, so a deserialized store has the same row indexes.
 */
extern void mtms_emb_serialize(StringInfo buf, const MtmsEmbStore *s);
extern MtmsEmbStore *mtms_emb_deserialize(const char **p, const char *end);

/*
 * Flat copies for shared memory (model_flat.h): the hash buckets and the
 * rows' keys, vectors and fields in one pointer-free block (the optimizer
 * state left out), and a store that reads such a block in place: lookups
 * and row accessors only (mtms_emb_accum and the update counts are not
 * there); training, copying, serializing or freeing it is a bug.
 */
extern Size mtms_emb_flat_size(const MtmsEmbStore *s);
extern void mtms_emb_flat_write(const MtmsEmbStore *s, char *dst);
extern MtmsEmbStore *mtms_emb_flat_view(const char *src);

/* ----------------------------------------------------------------
 * Private layout, exposed only so that the per-row accessors inline.
 * Rows live in chunks of 2^chunk_shift rows (fixed per store, chosen from
 * dim so that a chunk is about 1 MB and at most 16384 rows): row idx is
 * row idx & chunk_mask of chunk idx >> chunk_shift.
 * ---------------------------------------------------------------- */
typedef struct MtmsEmbChunk
{
	float	   *vec;			/* chunk rows * dim */
	float	   *accum;			/* chunk rows */
	float	   *accum0;			/* accum before the first update since
								 * reset_counts (valid where updates > 0) */
	uint64	   *key;
	int32	   *field;
	int32	   *updates;
	int32	   *seen;			/* sightings in training (saturating) */
	int32	   *last_seen;		/* slot of the last training that saw it;
								 * 0 = not recorded */
} MtmsEmbChunk;

struct mtms_embhash_hash;

struct MtmsEmbStore
{
	MemoryContext cxt;			/* owns everything below */
	int32		dim;
	uint64		seed;
	int64		count;			/* rows */
	int32		chunk_shift;
	int64		chunk_mask;		/* (1 << chunk_shift) - 1 */
	int64		nchunks;		/* allocated chunks */
	int64		maxchunks;		/* length of chunks[] */
	MtmsEmbChunk *chunks;
	struct mtms_embhash_hash *hash;		/* key -> row index, or
										 * MTMS_EMB_ADMITTED */
	bool		gated;			/* create rows for admitted keys only */
	int64		nadmitted;		/* admitted keys without a row */

	/* pending mini-batch gradients (see mtms_emb_add_grad) */
	int64		nbatch;			/* touched rows */
	int64		batch_cap;		/* capacity of brow/bpos/bgrad, in rows */
	int64	   *brow;			/* slot -> row index, first-touch order */
	int64	   *bpos;			/* slot -> position in bmap */
	float	   *bgrad;			/* slot -> dim summed gradient */
	int64		bmap_cap;		/* power of 2 */
	int64	   *bmap_row;		/* open addressing: row index or -1 */
	int64	   *bmap_slot;
};

/*
 * The hash of a feature key in the store's table (and in any other table
 * keyed by feature keys): keys are already good hashes; still finalise
 * them (murmur3's fmix64; PostgreSQL 17 has it as murmurhash64, 15 not).
 */
static inline uint32
mtms_emb_hash_key(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	k *= UINT64CONST(0xc4ceb9fe1a85ec53);
	k ^= k >> 33;
	return (uint32) k;
}

static inline int
mtms_emb_dim(const MtmsEmbStore *s)
{
	return s->dim;
}

static inline int64
mtms_emb_count(const MtmsEmbStore *s)
{
	return s->count;
}

static inline float *
mtms_emb_vector(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].vec +
		(idx & s->chunk_mask) * s->dim;
}

static inline float *
mtms_emb_accum(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].accum + (idx & s->chunk_mask);
}

static inline uint64
mtms_emb_key(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].key[idx & s->chunk_mask];
}

static inline int32
mtms_emb_field(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].field[idx & s->chunk_mask];
}

/* a row's sightings and last slot (feature hygiene), and setting them */
static inline int32
mtms_emb_seen(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].seen[idx & s->chunk_mask];
}

static inline int32
mtms_emb_last_seen(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].last_seen[idx & s->chunk_mask];
}

static inline void
mtms_emb_set_stats(MtmsEmbStore *s, int64 idx, int32 seen, int32 last_seen)
{
	Assert(idx >= 0 && idx < s->count);
	s->chunks[idx >> s->chunk_shift].seen[idx & s->chunk_mask] = seen;
	s->chunks[idx >> s->chunk_shift].last_seen[idx & s->chunk_mask] = last_seen;
}

static inline int32
mtms_emb_updates(const MtmsEmbStore *s, int64 idx)
{
	Assert(idx >= 0 && idx < s->count);
	return s->chunks[idx >> s->chunk_shift].updates[idx & s->chunk_mask];
}

#endif							/* MTMS_EMBEDDING_STORE_H */
