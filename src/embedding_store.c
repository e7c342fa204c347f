/*
 * embedding_store.c
 *    Sparse embedding rows of one (scene, task) pair.
 *
 * A simplehash maps the 64-bit feature key to a row index; rows live in
 * chunks of 2^chunk_shift rows, each chunk one allocation of about 1 MB
 * holding keys, vectors, accumulators, fields and update counts.  The
 * array of chunk descriptors grows with repalloc_huge, so no single
 * allocation approaches 1 GB however many rows there are (the hash table
 * itself reaches 1 GB only beyond ~60 million rows, and is a huge
 * allocation then).  Rows never move: indexes and vector pointers stay
 * valid for the life of the store.
 *
 * New rows start from U(-0.05, 0.05) drawn with pg_prng seeded by
 * hash_combine64(store seed, key): the same key gets the same start in
 * every worker, whatever order rows are created in.
 *
 * Mini-batch gradients are summed per row in a small open-addressing map
 * (row index -> slot) plus a dense buffer of per-slot gradients, and applied
 * in first-touch order, so one batch gives one Adagrad step per row and the
 * result does not depend on hash iteration order.
 */
#include "mtms.h"

#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "embedding_store.h"
#include "optimizer.h"

#define MTMS_EMB_MAGIC			0x4D45544D	/* "MTEM" little-endian */
#define MTMS_EMB_VERSION		3		/* 2: rows without seen, last_seen;
										 * 1: nor accum0 */
#define MTMS_EMB_INIT_RANGE		0.05
#define MTMS_EMB_MAX_SHIFT		14		/* at most 16384 rows per chunk */
#define MTMS_EMB_MIN_SHIFT		6		/* at least 64 rows per chunk */
#define MTMS_EMB_CHUNK_BYTES	(1024 * 1024)
/* row indexes are stored as uint32 in the hash table */
#define MTMS_EMB_MAX_ROWS		((int64) PG_UINT32_MAX)
/* hash entry of an admitted key that has no row yet (never a row index) */
#define MTMS_EMB_ADMITTED		PG_UINT32_MAX
/* serialized flags (the header's former zero word) */
#define MTMS_EMB_FLAG_GATED		0x01

/*
 * bytes of one row, in a chunk and serialized: key, field, updates, seen,
 * last_seen, accum, accum0, vector (version 2 states lack seen and
 * last_seen, version 1 states accum0 too)
 */
#define EMB_ROW_BYTES(dim)		(sizeof(uint64) + 4 * sizeof(int32) + \
								 2 * sizeof(float) + (Size) (dim) * sizeof(float))
#define EMB_ROW_BYTES_V2(dim)	(EMB_ROW_BYTES(dim) - 2 * sizeof(int32))
#define EMB_ROW_BYTES_V1(dim)	(EMB_ROW_BYTES_V2(dim) - sizeof(float))
#define EMB_HEADER_BYTES		(2 * sizeof(uint32) + 2 * sizeof(int32) + \
								 sizeof(uint64) + sizeof(int64))

typedef struct MtmsEmbEntry
{
	uint64		key;
	uint32		idx;
	char		status;
} MtmsEmbEntry;

#define SH_PREFIX		mtms_embhash
#define SH_ELEMENT_TYPE	MtmsEmbEntry
#define SH_KEY_TYPE		uint64
#define SH_KEY			key
#define SH_HASH_KEY(tb, k)	mtms_emb_hash_key(k)
#define SH_EQUAL(tb, a, b)	((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* ----------------------------------------------------------------
 * Creation, chunks, rows
 * ---------------------------------------------------------------- */

static void
check_dim(int dim)
{
	if (dim < 1 || dim > MTMS_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("embedding dimension %d is out of range", dim),
				 errhint("The embedding dimension is between 1 and %d.",
						 MTMS_MAX_DIM)));
}

/* New empty store in a new child of parent, its hash sized for nrows. */
static MtmsEmbStore *
emb_create_in(MemoryContext parent, int dim, uint64 seed, int64 nrows)
{
	MemoryContext cxt;
	MtmsEmbStore *s;
	Size		rowbytes = EMB_ROW_BYTES(dim);
	int			shift;

	check_dim(dim);
	cxt = AllocSetContextCreate(parent, "mtms embedding store",
								ALLOCSET_DEFAULT_SIZES);
	s = MemoryContextAllocZero(cxt, sizeof(MtmsEmbStore));
	s->cxt = cxt;
	s->dim = dim;
	s->seed = seed;
	s->count = 0;

	shift = MTMS_EMB_MAX_SHIFT;
	while (shift > MTMS_EMB_MIN_SHIFT &&
		   ((Size) 1 << shift) * rowbytes > MTMS_EMB_CHUNK_BYTES)
		shift--;
	s->chunk_shift = shift;
	s->chunk_mask = ((int64) 1 << shift) - 1;

	s->maxchunks = Max(16, (nrows >> shift) + 1);
	s->chunks = MemoryContextAllocExtended(cxt,
										   s->maxchunks * sizeof(MtmsEmbChunk),
										   MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	s->nchunks = 0;
	s->hash = mtms_embhash_create(cxt, (uint32) Min(Max(nrows, 256), MTMS_EMB_MAX_ROWS),
								  NULL);
	s->nbatch = 0;
	s->batch_cap = 0;
	s->bmap_cap = 0;
	return s;
}

MtmsEmbStore *
mtms_emb_create(int dim, uint64 seed)
{
	return emb_create_in(CurrentMemoryContext, dim, seed, 0);
}

void
mtms_emb_free(MtmsEmbStore *s)
{
	if (s != NULL)
		MemoryContextDelete(s->cxt);
}

/* Allocate the next chunk (zeroed), growing the descriptor array. */
static void
emb_add_chunk(MtmsEmbStore *s)
{
	Size		rows = (Size) 1 << s->chunk_shift;
	MtmsEmbChunk *c;
	char	   *mem;

	if (s->nchunks == s->maxchunks)
	{
		int64		newmax = s->maxchunks * 2;

		s->chunks = repalloc_huge(s->chunks, newmax * sizeof(MtmsEmbChunk));
		memset(s->chunks + s->maxchunks, 0,
			   (newmax - s->maxchunks) * sizeof(MtmsEmbChunk));
		s->maxchunks = newmax;
	}

	/* keys first (8-byte aligned), then the 4-byte arrays */
	mem = MemoryContextAllocExtended(s->cxt, rows * EMB_ROW_BYTES(s->dim),
									 MCXT_ALLOC_ZERO);
	c = &s->chunks[s->nchunks++];
	c->key = (uint64 *) mem;
	mem += rows * sizeof(uint64);
	c->vec = (float *) mem;
	mem += rows * s->dim * sizeof(float);
	c->accum = (float *) mem;
	mem += rows * sizeof(float);
	c->accum0 = (float *) mem;
	mem += rows * sizeof(float);
	c->field = (int32 *) mem;
	mem += rows * sizeof(int32);
	c->updates = (int32 *) mem;
	mem += rows * sizeof(int32);
	c->seen = (int32 *) mem;
	mem += rows * sizeof(int32);
	c->last_seen = (int32 *) mem;
}

/* Claim row index s->count for key; the caller fills the vector. */
static inline int64
emb_new_row(MtmsEmbStore *s, uint64 key, int32 field)
{
	int64		idx = s->count;
	MtmsEmbChunk *c;
	int64		r;

	if ((idx >> s->chunk_shift) >= s->nchunks)
		emb_add_chunk(s);
	c = &s->chunks[idx >> s->chunk_shift];
	r = idx & s->chunk_mask;
	c->key[r] = key;
	c->field[r] = field;
	c->updates[r] = 0;
	c->seen[r] = 0;
	c->last_seen[r] = 0;
	c->accum[r] = 0.0f;
	c->accum0[r] = 0.0f;
	s->count++;
	return idx;
}

static void
emb_too_many_rows(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("embedding table cannot hold more than %lld rows",
					(long long) MTMS_EMB_MAX_ROWS)));
}

int64
mtms_emb_find(const MtmsEmbStore *s, uint64 key)
{
	MtmsEmbEntry *e = mtms_embhash_lookup(s->hash, key);

	return (e && e->idx != MTMS_EMB_ADMITTED) ? (int64) e->idx : -1;
}

static pg_attribute_always_inline int64
emb_find_or_create(MtmsEmbStore *s, uint64 key, int32 field, int64 max_rows)
{
	MtmsEmbEntry *e;
	bool		found;
	int64		idx;
	float	   *vec;
	pg_prng_state rng;
	int			d;

	if (unlikely((max_rows > 0 && s->count >= max_rows) ||
				 s->count >= MTMS_EMB_MAX_ROWS))
	{
		e = mtms_embhash_lookup(s->hash, key);
		if (e && e->idx != MTMS_EMB_ADMITTED)
			return e->idx;
		if (max_rows > 0 && s->count >= max_rows)
			return -1;
		emb_too_many_rows();
	}

	/* most keys exist: a plain lookup is cheaper than an insert */
	e = mtms_embhash_lookup(s->hash, key);
	if (likely(e != NULL && e->idx != MTMS_EMB_ADMITTED))
		return e->idx;
	if (e != NULL)
		s->nadmitted--;			/* an admitted key gets its row */
	else if (unlikely(s->gated))
		return -1;				/* not admitted: pools as zero */
	else
	{
		e = mtms_embhash_insert(s->hash, key, &found);
		Assert(!found);
	}

	idx = emb_new_row(s, key, field);
	e->idx = (uint32) idx;

	/* deterministic start from (seed, key) */
	pg_prng_seed(&rng, hash_combine64(s->seed, key));
	vec = mtms_emb_vector(s, idx);
	for (d = 0; d < s->dim; d++)
		vec[d] = (float) ((2.0 * pg_prng_double(&rng) - 1.0) * MTMS_EMB_INIT_RANGE);
	return idx;
}

int64
mtms_emb_find_or_create(MtmsEmbStore *s, uint64 key, int32 field,
						int64 max_rows)
{
	return emb_find_or_create(s, key, field, max_rows);
}

void
mtms_emb_resolve(MtmsEmbStore *s, const MtmsFeature *f, int nf, int32 frozen,
				 int64 max_rows, int64 *ridx,
				 const MtmsFeature *next, int nnext)
{
	int			j;

	for (j = 0; j < nnext; j++)
		mtms_prefetch(&s->hash->data[mtms_emb_hash_key(next[j].hash) & s->hash->sizemask]);
	for (j = 0; j < nf; j++)
	{
		if (f[j].field < frozen)
		{
			MtmsEmbEntry *e = mtms_embhash_lookup(s->hash, f[j].hash);

			ridx[j] = (e && e->idx != MTMS_EMB_ADMITTED) ? (int64) e->idx : -1;
		}
		else
			ridx[j] = emb_find_or_create(s, f[j].hash, f[j].field, max_rows);
	}
}

void
mtms_emb_prefetch(const MtmsEmbStore *s, uint64 key)
{
	mtms_prefetch(&s->hash->data[mtms_emb_hash_key(key) & s->hash->sizemask]);
}

int64
mtms_emb_insert(MtmsEmbStore *s, uint64 key, int32 field,
				const float *vec, float accum)
{
	MtmsEmbEntry *e;
	bool		found;
	int64		idx;

	if (s->count >= MTMS_EMB_MAX_ROWS)
		emb_too_many_rows();
	e = mtms_embhash_insert(s->hash, key, &found);
	if (found && e->idx != MTMS_EMB_ADMITTED)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("duplicate embedding row for feature %lld",
						(long long) key)));
	if (found)
		s->nadmitted--;
	idx = emb_new_row(s, key, field);
	e->idx = (uint32) idx;
	memcpy(mtms_emb_vector(s, idx), vec, s->dim * sizeof(float));
	*mtms_emb_accum(s, idx) = accum;
	s->chunks[idx >> s->chunk_shift].accum0[idx & s->chunk_mask] = accum;
	return idx;
}

Size
mtms_emb_bytes(const MtmsEmbStore *s)
{
	if (s->cxt == NULL)			/* a view of a flat copy owns nothing */
		return 0;
	return MemoryContextMemAllocated(s->cxt, true);
}

/* ----------------------------------------------------------------
 * Gating (feature admission)
 * ---------------------------------------------------------------- */

void
mtms_emb_set_gated(MtmsEmbStore *s, bool gated)
{
	s->gated = gated;
}

bool
mtms_emb_gated(const MtmsEmbStore *s)
{
	return s->gated;
}

void
mtms_emb_admit(MtmsEmbStore *s, uint64 key)
{
	MtmsEmbEntry *e;
	bool		found;

	e = mtms_embhash_insert(s->hash, key, &found);
	if (found)
	{
		if (e->idx != MTMS_EMB_ADMITTED)
			elog(ERROR, "feature %lld already has an embedding row", (long long) key);
		return;
	}
	e->idx = MTMS_EMB_ADMITTED;
	s->nadmitted++;
}

int64
mtms_emb_admitted_pending(const MtmsEmbStore *s)
{
	return s->nadmitted;
}

/* The admitted keys of src (without rows) admitted in dst too. */
static void
emb_copy_admitted(MtmsEmbStore *dst, const MtmsEmbStore *src)
{
	mtms_embhash_iterator it;
	MtmsEmbEntry *e;

	dst->gated = src->gated;
	if (src->nadmitted == 0)
		return;
	mtms_embhash_start_iterate(src->hash, &it);
	while ((e = mtms_embhash_iterate(src->hash, &it)) != NULL)
		if (e->idx == MTMS_EMB_ADMITTED)
			mtms_emb_admit(dst, e->key);
}

MtmsEmbStore *
mtms_emb_copy_kept(const MtmsEmbStore *s, const bool *keep)
{
	MtmsEmbStore *c = emb_create_in(CurrentMemoryContext, s->dim, s->seed, 0);
	int64		i;

	for (i = 0; i < s->count; i++)
	{
		const MtmsEmbChunk *sc = &s->chunks[i >> s->chunk_shift];
		int64		sr = i & s->chunk_mask;
		MtmsEmbChunk *dc;
		int64		idx,
					r;

		if ((i & 0xFFFF) == 0xFFFF)
			CHECK_FOR_INTERRUPTS();
		if (!keep[i])
			continue;
		idx = mtms_emb_insert(c, sc->key[sr], sc->field[sr],
							  sc->vec + sr * s->dim, sc->accum[sr]);
		dc = &c->chunks[idx >> c->chunk_shift];
		r = idx & c->chunk_mask;
		dc->accum0[r] = sc->accum0[sr];
		dc->updates[r] = sc->updates[sr];
		dc->seen[r] = sc->seen[sr];
		dc->last_seen[r] = sc->last_seen[sr];
	}
	emb_copy_admitted(c, s);
	return c;
}

MtmsEmbStore *
mtms_emb_copy(const MtmsEmbStore *s)
{
	MtmsEmbStore *c = emb_create_in(CurrentMemoryContext, s->dim, s->seed,
									s->count + s->nadmitted);
	Size		chunkbytes = ((Size) 1 << s->chunk_shift) * EMB_ROW_BYTES(s->dim);
	int64		ci;
	int64		i;

	Assert(c->chunk_shift == s->chunk_shift);
	for (ci = 0; ci < s->nchunks; ci++)
	{
		CHECK_FOR_INTERRUPTS();
		emb_add_chunk(c);
		/* a chunk is one allocation starting at its key array */
		memcpy(c->chunks[ci].key, s->chunks[ci].key, chunkbytes);
	}
	c->count = s->count;

	for (i = 0; i < s->count; i++)
	{
		MtmsEmbEntry *e;
		bool		found;

		if ((i & 0xFFFF) == 0xFFFF)
			CHECK_FOR_INTERRUPTS();
		e = mtms_embhash_insert(c->hash, mtms_emb_key(s, i), &found);
		Assert(!found);
		e->idx = (uint32) i;
	}
	emb_copy_admitted(c, s);
	return c;
}

/* ----------------------------------------------------------------
 * Mini-batch gradients
 * ---------------------------------------------------------------- */

static inline uint64
emb_bmap_hash(int64 idx)
{
	return (uint64) idx * UINT64CONST(0x9E3779B97F4A7C15);
}

/* (Re)build the row -> slot map with capacity cap (power of 2). */
static void
emb_bmap_rebuild(MtmsEmbStore *s, int64 cap)
{
	int64		mask = cap - 1;
	int64		slot;

	if (s->bmap_row)
		pfree(s->bmap_row);
	if (s->bmap_slot)
		pfree(s->bmap_slot);
	s->bmap_row = MemoryContextAllocExtended(s->cxt, cap * sizeof(int64),
											 MCXT_ALLOC_HUGE);
	s->bmap_slot = MemoryContextAllocExtended(s->cxt, cap * sizeof(int64),
											  MCXT_ALLOC_HUGE);
	memset(s->bmap_row, 0xFF, cap * sizeof(int64));		/* all -1 */
	s->bmap_cap = cap;

	for (slot = 0; slot < s->nbatch; slot++)
	{
		int64		h = (int64) (emb_bmap_hash(s->brow[slot]) >> 20) & mask;

		while (s->bmap_row[h] != -1)
			h = (h + 1) & mask;
		s->bmap_row[h] = s->brow[slot];
		s->bmap_slot[h] = slot;
		s->bpos[slot] = h;
	}
}

static void
emb_batch_grow(MtmsEmbStore *s)
{
	int64		newcap = s->batch_cap ? s->batch_cap * 2 : 256;

	if (s->batch_cap == 0)
	{
		s->brow = MemoryContextAllocExtended(s->cxt, newcap * sizeof(int64),
											 MCXT_ALLOC_HUGE);
		s->bpos = MemoryContextAllocExtended(s->cxt, newcap * sizeof(int64),
											 MCXT_ALLOC_HUGE);
		s->bgrad = MemoryContextAllocExtended(s->cxt,
											  newcap * s->dim * sizeof(float),
											  MCXT_ALLOC_HUGE);
	}
	else
	{
		s->brow = repalloc_huge(s->brow, newcap * sizeof(int64));
		s->bpos = repalloc_huge(s->bpos, newcap * sizeof(int64));
		s->bgrad = repalloc_huge(s->bgrad, newcap * s->dim * sizeof(float));
	}
	s->batch_cap = newcap;
}

/* g[0..dim) += grad[0..dim), vectorised (dim in a local: no reload) */
static inline void
emb_add_vec(float *restrict g, const float *restrict grad, int dim)
{
	for (int d = 0; d < dim; d++)
		g[d] += grad[d];
}

static pg_attribute_always_inline void
emb_add_grad(MtmsEmbStore *s, int64 idx, const float *grad)
{
	int64		mask;
	int64		h;
	int64		slot;
	int			dim = s->dim;

	if (unlikely(idx < 0 || idx >= s->count))
		elog(ERROR, "embedding row %lld out of range (%lld rows)",
			 (long long) idx, (long long) s->count);

	/* keep the map at most half full */
	if (unlikely(2 * (s->nbatch + 1) > s->bmap_cap))
		emb_bmap_rebuild(s, s->bmap_cap ? s->bmap_cap * 2 : 1024);

	mask = s->bmap_cap - 1;
	h = (int64) (emb_bmap_hash(idx) >> 20) & mask;
	while (s->bmap_row[h] != -1)
	{
		if (s->bmap_row[h] == idx)
		{
			emb_add_vec(s->bgrad + s->bmap_slot[h] * dim, grad, dim);
			return;
		}
		h = (h + 1) & mask;
	}

	if (unlikely(s->nbatch == s->batch_cap))
		emb_batch_grow(s);
	slot = s->nbatch++;
	s->bmap_row[h] = idx;
	s->bmap_slot[h] = slot;
	s->brow[slot] = idx;
	s->bpos[slot] = h;
	memcpy(s->bgrad + slot * dim, grad, dim * sizeof(float));
}

void
mtms_emb_add_grad(MtmsEmbStore *s, int64 idx, const float *grad)
{
	emb_add_grad(s, idx, grad);
}

void
mtms_emb_add_grad_row(MtmsEmbStore *s, const MtmsFeature *f, int nf,
					  const int64 *ridx, int32 frozen, const float *dx)
{
	int			dim = s->dim;

	for (int j = 0; j < nf; j++)
		if (ridx[j] >= 0 && f[j].field >= frozen)
			emb_add_grad(s, ridx[j], dx + (Size) f[j].field * dim);
}

void
mtms_emb_apply(MtmsEmbStore *s, float lr, float l2)
{
	int64		slot;

	for (slot = 0; slot < s->nbatch; slot++)
	{
		int64		idx = s->brow[slot];
		MtmsEmbChunk *c = &s->chunks[idx >> s->chunk_shift];
		int64		r = idx & s->chunk_mask;

		/* the accumulator before this pass's first update, for merges */
		if (c->updates[r] == 0)
			c->accum0[r] = c->accum[r];
		mtms_rowwise_adagrad_update(c->vec + r * s->dim,
									s->bgrad + slot * s->dim,
									&c->accum[r], s->dim, lr, l2);
		if (c->updates[r] < PG_INT32_MAX)
			c->updates[r]++;
		s->bmap_row[s->bpos[slot]] = -1;
	}
	s->nbatch = 0;
}

void
mtms_emb_reset_counts(MtmsEmbStore *s)
{
	int64		ci;

	for (ci = 0; ci < s->nchunks; ci++)
		memset(s->chunks[ci].updates, 0,
			   ((Size) 1 << s->chunk_shift) * sizeof(int32));
}

/* ----------------------------------------------------------------
 * Merge
 * ---------------------------------------------------------------- */

void
mtms_emb_merge(MtmsEmbStore *dst, const MtmsEmbStore *src)
{
	int			dim = dst->dim;
	int64		i;

	if (src->dim != dst->dim)
		elog(ERROR, "cannot merge embedding stores of dimensions %d and %d",
			 dst->dim, src->dim);

	for (i = 0; i < src->count; i++)
	{
		uint64		key = mtms_emb_key(src, i);
		const float *svec = mtms_emb_vector(src, i);
		int32		scount = mtms_emb_updates(src, i);
		MtmsEmbEntry *e;
		bool		found;

		if ((i & 0xFFFF) == 0xFFFF)
			CHECK_FOR_INTERRUPTS();

		if (unlikely(dst->count >= MTMS_EMB_MAX_ROWS))
		{
			if (mtms_embhash_lookup(dst->hash, key) == NULL)
				emb_too_many_rows();
		}
		e = mtms_embhash_insert(dst->hash, key, &found);
		if (found && e->idx == MTMS_EMB_ADMITTED)
		{
			dst->nadmitted--;
			found = false;
		}
		if (!found)
		{
			int64		idx = emb_new_row(dst, key, mtms_emb_field(src, i));

			e->idx = (uint32) idx;
			memcpy(mtms_emb_vector(dst, idx), svec, dim * sizeof(float));
			*mtms_emb_accum(dst, idx) = *mtms_emb_accum(src, i);
			dst->chunks[idx >> dst->chunk_shift].accum0[idx & dst->chunk_mask] =
				src->chunks[i >> src->chunk_shift].accum0[i & src->chunk_mask];
			dst->chunks[idx >> dst->chunk_shift].updates[idx & dst->chunk_mask] = scount;
			mtms_emb_set_stats(dst, idx, mtms_emb_seen(src, i), mtms_emb_last_seen(src, i));
		}
		else
		{
			int64		idx = e->idx;
			MtmsEmbChunk *c = &dst->chunks[idx >> dst->chunk_shift];
			int64		r = idx & dst->chunk_mask;
			float	   *dvec = c->vec + r * dim;
			int32		dcount = c->updates[r];
			float		wd,
						ws;
			int64		sum;
			int			d;

			if (dcount == 0 && scount == 0)
				wd = ws = 0.5f;
			else
			{
				double		tot = (double) dcount + (double) scount;

				wd = (float) (dcount / tot);
				ws = (float) (scount / tot);
			}
			for (d = 0; d < dim; d++)
				dvec[d] = wd * dvec[d] + ws * svec[d];

			/*
			 * Adagrad accumulators add up: both sides started this pass
			 * from the same value (accum0, kept at a row's first update),
			 * so a row both updated gets dst's accumulator plus src's
			 * increment, as if one worker had seen all of its gradients.
			 * A row one side updated keeps that side's accumulator.
			 */
			if (scount > 0)
			{
				const MtmsEmbChunk *sc = &src->chunks[i >> src->chunk_shift];
				int64		sr = i & src->chunk_mask;

				if (dcount > 0)
					c->accum[r] += sc->accum[sr] - sc->accum0[sr];
				else
				{
					c->accum[r] = sc->accum[sr];
					c->accum0[r] = sc->accum0[sr];
				}
			}
			else if (dcount == 0)
				c->accum[r] = wd * c->accum[r] + ws * *mtms_emb_accum(src, i);
			sum = (int64) dcount + scount;
			c->updates[r] = (int32) Min(sum, (int64) PG_INT32_MAX);
		}
	}
}

/* ----------------------------------------------------------------
 * Serialization
 *
 * header: magic u32, version u32, dim i32, flags i32 (zero before
 * version 3), seed u64, count i64
 * rows (index order): key u64, field i32, updates i32, seen i32 and
 * last_seen i32 (from version 3), accum f32, accum0 f32 (not in version
 * 1), vec f32[dim]
 * then (from version 3): admitted keys without rows, count i64, keys u64
 * ---------------------------------------------------------------- */

void
mtms_emb_serialize(StringInfo buf, const MtmsEmbStore *s)
{
	uint32		magic = MTMS_EMB_MAGIC;
	uint32		version = MTMS_EMB_VERSION;
	int32		flags = s->gated ? MTMS_EMB_FLAG_GATED : 0;
	Size		rowbytes = EMB_ROW_BYTES(s->dim);
	Size		total;
	int64		nadm = s->nadmitted;
	char	   *out;
	int64		i;

	if ((Size) s->count > (MaxAllocSize - EMB_HEADER_BYTES - 1) / rowbytes ||
		(Size) nadm > MaxAllocSize / sizeof(uint64) ||
		EMB_HEADER_BYTES + s->count * rowbytes + (1 + nadm) * sizeof(uint64) >=
		(Size) (MaxAllocSize - buf->len))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("embedding table of %lld rows is too large to serialize",
						(long long) s->count),
				 errhint("Use fewer parallel workers or a smaller model.")));
	total = EMB_HEADER_BYTES + s->count * rowbytes + (1 + nadm) * sizeof(uint64);
	enlargeStringInfo(buf, (int) total);
	out = buf->data + buf->len;

#define EMB_PUT(ptr, n) do { memcpy(out, (ptr), (n)); out += (n); } while (0)
	EMB_PUT(&magic, sizeof(magic));
	EMB_PUT(&version, sizeof(version));
	EMB_PUT(&s->dim, sizeof(int32));
	EMB_PUT(&flags, sizeof(int32));
	EMB_PUT(&s->seed, sizeof(uint64));
	EMB_PUT(&s->count, sizeof(int64));
	for (i = 0; i < s->count; i++)
	{
		const MtmsEmbChunk *c = &s->chunks[i >> s->chunk_shift];
		int64		r = i & s->chunk_mask;

		if ((i & 0xFFFF) == 0xFFFF)
			CHECK_FOR_INTERRUPTS();
		EMB_PUT(&c->key[r], sizeof(uint64));
		EMB_PUT(&c->field[r], sizeof(int32));
		EMB_PUT(&c->updates[r], sizeof(int32));
		EMB_PUT(&c->seen[r], sizeof(int32));
		EMB_PUT(&c->last_seen[r], sizeof(int32));
		EMB_PUT(&c->accum[r], sizeof(float));
		EMB_PUT(&c->accum0[r], sizeof(float));
		EMB_PUT(c->vec + r * s->dim, s->dim * sizeof(float));
	}
	EMB_PUT(&nadm, sizeof(int64));
	if (nadm > 0)
	{
		mtms_embhash_iterator it;
		MtmsEmbEntry *e;

		mtms_embhash_start_iterate(s->hash, &it);
		while ((e = mtms_embhash_iterate(s->hash, &it)) != NULL)
			if (e->idx == MTMS_EMB_ADMITTED)
				EMB_PUT(&e->key, sizeof(uint64));
	}
#undef EMB_PUT

	Assert(out == buf->data + buf->len + total);
	buf->len += (int) total;
	buf->data[buf->len] = '\0';
}

static void
emb_read(const char **p, const char *end, void *dst, Size n)
{
	if (*p > end || (Size) (end - *p) < n)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("truncated embedding state: header needs %zu bytes, %zu left",
						n, (Size) (*p <= end ? end - *p : 0))));
	memcpy(dst, *p, n);
	*p += n;
}

/* The admitted keys of a version 3 state: count i64, keys u64. */
static void
emb_read_admitted(const char **p, const char *end, MtmsEmbStore *s)
{
	int64		n;

	emb_read(p, end, &n, sizeof(n));
	if (n < 0 || (Size) n > (Size) (end - *p) / sizeof(uint64))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: %lld admitted keys", (long long) n)));
	for (int64 i = 0; i < n; i++)
	{
		uint64		key;
		MtmsEmbEntry *e;

		emb_read(p, end, &key, sizeof(key));
		e = mtms_embhash_lookup(s->hash, key);
		if (e != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("corrupt embedding state: admitted feature %lld appears twice",
							(long long) key)));
		mtms_emb_admit(s, key);
	}
}

MtmsEmbStore *
mtms_emb_deserialize(const char **p, const char *end)
{
	uint32		magic;
	uint32		version;
	int32		dim;
	int32		flags;
	uint64		seed;
	int64		count;
	Size		rowbytes;
	MtmsEmbStore *s;
	const char *in;
	int64		i;

	emb_read(p, end, &magic, sizeof(magic));
	if (magic != MTMS_EMB_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: bad magic number %08x", magic)));
	emb_read(p, end, &version, sizeof(version));
	if (version < 1 || version > MTMS_EMB_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: unsupported version %u", version)));
	emb_read(p, end, &dim, sizeof(dim));
	if (dim < 1 || dim > MTMS_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: dimension %d", dim)));
	emb_read(p, end, &flags, sizeof(flags));
	if (version < 3)
		flags = 0;
	else if ((flags & ~MTMS_EMB_FLAG_GATED) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: flags %08x", (uint32) flags)));
	emb_read(p, end, &seed, sizeof(seed));
	emb_read(p, end, &count, sizeof(count));
	rowbytes = (version == 1) ? EMB_ROW_BYTES_V1(dim) :
		(version == 2) ? EMB_ROW_BYTES_V2(dim) : EMB_ROW_BYTES(dim);
	if (count < 0 || count > MTMS_EMB_MAX_ROWS)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt embedding state: %lld rows", (long long) count)));
	if ((Size) count > (Size) (end - *p) / rowbytes)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("truncated embedding state: %lld rows of %zu bytes, %zu bytes left",
						(long long) count, rowbytes, (Size) (end - *p))));

	s = emb_create_in(CurrentMemoryContext, dim, seed, count);
	in = *p;
	for (i = 0; i < count; i++)
	{
		uint64		key;
		int32		field;
		int32		updates;
		int32		seen = 0;
		int32		last_seen = 0;
		MtmsEmbEntry *e;
		bool		found;
		int64		idx;
		MtmsEmbChunk *c;
		int64		r;

		if ((i & 0xFFFF) == 0xFFFF)
			CHECK_FOR_INTERRUPTS();
		memcpy(&key, in, sizeof(uint64));
		in += sizeof(uint64);
		memcpy(&field, in, sizeof(int32));
		in += sizeof(int32);
		memcpy(&updates, in, sizeof(int32));
		in += sizeof(int32);
		if (updates < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("corrupt embedding state: negative update count %d", updates)));
		if (version >= 3)
		{
			memcpy(&seen, in, sizeof(int32));
			in += sizeof(int32);
			memcpy(&last_seen, in, sizeof(int32));
			in += sizeof(int32);
			if (seen < 0 || last_seen < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("corrupt embedding state: negative feature statistics")));
		}

		e = mtms_embhash_insert(s->hash, key, &found);
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("corrupt embedding state: feature %lld appears twice",
							(long long) key)));
		idx = emb_new_row(s, key, field);
		e->idx = (uint32) idx;
		c = &s->chunks[idx >> s->chunk_shift];
		r = idx & s->chunk_mask;
		c->updates[r] = updates;
		c->seen[r] = seen;
		c->last_seen[r] = last_seen;
		memcpy(&c->accum[r], in, sizeof(float));
		in += sizeof(float);
		if (version == 1)
			c->accum0[r] = c->accum[r];
		else
		{
			memcpy(&c->accum0[r], in, sizeof(float));
			in += sizeof(float);
		}
		memcpy(c->vec + r * dim, in, dim * sizeof(float));
		in += dim * sizeof(float);
	}
	*p = in;
	s->gated = (flags & MTMS_EMB_FLAG_GATED) != 0;
	if (version >= 3)
		emb_read_admitted(p, end, s);
	return s;
}

/* ----------------------------------------------------------------
 * Flat copies (model_flat.h): one pointer-free block, read by views
 * ---------------------------------------------------------------- */

#define FLAT_ALIGN(x)	TYPEALIGN(64, (x))

/* The block's header; the arrays follow at the offsets (from the header). */
typedef struct EmbFlat
{
	uint32		magic;
	int32		dim;
	int32		chunk_shift;
	int32		pad;
	int64		count;
	uint64		seed;
	uint64		hsize;			/* hash buckets (a power of 2) */
	uint32		hmembers;
	uint32		hsizemask;
	uint32		hgrow;
	uint32		pad2;
	Size		off_hash;		/* hsize MtmsEmbEntry, as the simplehash's */
	Size		off_key;		/* count uint64 */
	Size		off_vec;		/* count * dim floats */
	Size		off_field;		/* count int32 */
} EmbFlat;

Size
mtms_emb_flat_size(const MtmsEmbStore *s)
{
	Size		n = FLAT_ALIGN(sizeof(EmbFlat));

	n += FLAT_ALIGN(mul_size(s->hash->size, sizeof(MtmsEmbEntry)));
	n += FLAT_ALIGN(mul_size(s->count, sizeof(uint64)));
	n += FLAT_ALIGN(mul_size(mul_size(s->count, s->dim), sizeof(float)));
	n += FLAT_ALIGN(mul_size(s->count, sizeof(int32)));
	return n;
}

/*
 * Copy s into dst (mtms_emb_flat_size bytes, 64-byte aligned): the hash
 * buckets as they are (row indexes stay), the rows' keys, vectors and
 * fields in index order.  The optimizer state is left out.
 */
void
mtms_emb_flat_write(const MtmsEmbStore *s, char *dst)
{
	EmbFlat    *h = (EmbFlat *) dst;
	Size		off = FLAT_ALIGN(sizeof(EmbFlat));
	Size		rows_per_chunk = (Size) 1 << s->chunk_shift;

	memset(h, 0, sizeof(EmbFlat));
	h->magic = MTMS_EMB_MAGIC;
	h->dim = s->dim;
	h->chunk_shift = s->chunk_shift;
	h->count = s->count;
	h->seed = s->seed;
	h->hsize = s->hash->size;
	h->hmembers = s->hash->members;
	h->hsizemask = s->hash->sizemask;
	h->hgrow = s->hash->grow_threshold;
	h->off_hash = off;
	memcpy(dst + off, s->hash->data, s->hash->size * sizeof(MtmsEmbEntry));
	off += FLAT_ALIGN(s->hash->size * sizeof(MtmsEmbEntry));
	h->off_key = off;
	off += FLAT_ALIGN(s->count * sizeof(uint64));
	h->off_vec = off;
	off += FLAT_ALIGN(s->count * s->dim * sizeof(float));
	h->off_field = off;
	for (int64 c = 0; c * (int64) rows_per_chunk < s->count; c++)
	{
		int64		r0 = c * rows_per_chunk;
		int64		n = Min((int64) rows_per_chunk, s->count - r0);
		const MtmsEmbChunk *ch = &s->chunks[c];

		memcpy(dst + h->off_key + r0 * sizeof(uint64), ch->key, n * sizeof(uint64));
		memcpy(dst + h->off_vec + r0 * s->dim * sizeof(float), ch->vec,
			   n * s->dim * sizeof(float));
		memcpy(dst + h->off_field + r0 * sizeof(int32), ch->field, n * sizeof(int32));
		if ((c & 63) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/*
 * A store that reads the flat copy at src in place, its small headers in
 * CurrentMemoryContext: lookups and the row accessors work (accumulators
 * and update counts are not there: NULL); anything that writes, trains,
 * copies, serializes or frees it is a bug.  src must stay mapped while the
 * view is used.
 */
MtmsEmbStore *
mtms_emb_flat_view(const char *src)
{
	const EmbFlat *h = (const EmbFlat *) src;
	MtmsEmbStore *s;
	Size		rows_per_chunk;

	if (h->magic != MTMS_EMB_MAGIC)
		elog(ERROR, "mtms: corrupt shared embedding table");
	s = palloc0(sizeof(MtmsEmbStore));
	s->cxt = NULL;
	s->dim = h->dim;
	s->seed = h->seed;
	s->count = h->count;
	s->chunk_shift = h->chunk_shift;
	s->chunk_mask = ((int64) 1 << h->chunk_shift) - 1;
	rows_per_chunk = (Size) 1 << h->chunk_shift;
	s->nchunks = (s->count + rows_per_chunk - 1) / rows_per_chunk;
	s->maxchunks = Max(s->nchunks, 1);
	s->chunks = palloc0(sizeof(MtmsEmbChunk) * s->maxchunks);
	for (int64 c = 0; c < s->nchunks; c++)
	{
		int64		r0 = c * rows_per_chunk;

		s->chunks[c].key = (uint64 *) (src + h->off_key) + r0;
		s->chunks[c].vec = (float *) (src + h->off_vec) + r0 * s->dim;
		s->chunks[c].field = (int32 *) (src + h->off_field) + r0;
	}
	s->hash = palloc0(sizeof(mtms_embhash_hash));
	s->hash->size = h->hsize;
	s->hash->members = h->hmembers;
	s->hash->sizemask = h->hsizemask;
	s->hash->grow_threshold = h->hgrow;
	s->hash->data = (MtmsEmbEntry *) (src + h->off_hash);
	s->hash->ctx = NULL;
	return s;
}
