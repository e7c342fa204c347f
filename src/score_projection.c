/*
 * score_projection.c
 *    The first-layer projection cache (see score_projection.h).
 *
 * One table per tower (pair) in use, created on the pair's first row:
 * a simplehash from the feature hash (the entry checks the field) to the
 * index of the projection vector, -1 for a key no pair knows.  Vectors
 * live in chunks of PROJ_CHUNK vectors, h1 floats padded to a multiple of
 * 4 (zeros) so the per-row sums run on whole SSE registers; they never
 * move.
 */
#include "score_projection.h"

#include "blas.h"
#include "feature_keys.h"
#include "proj_shared.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "miscadmin.h"
#include "utils/memutils.h"

#define PROJ_CHUNK		256		/* vectors per chunk (power of 2) */
#define PROJ_CHUNK_SHIFT 8
#define PROJ_INITIAL	16		/* keys a tower's table starts with */
#define PROJ_BATCH		32		/* features looked up before their vectors are added */

/*
 * Keyed by the feature hash; the entry also records the field, and a key
 * met with another field (a 64-bit hash collision across fields) is
 * computed for that row without being kept.  16 bytes an entry.
 */
typedef struct ProjEntry
{
	uint64		hash;
	int32		vec;			/* vector index, -1: projects to zero */
	int16		field;
	char		status;
} ProjEntry;

#define SH_PREFIX		projhash
#define SH_ELEMENT_TYPE	ProjEntry
#define SH_KEY_TYPE		uint64
#define SH_KEY			hash
#define PROJ_HASH(k)		((uint32) ((k) ^ ((k) >> 32)))	/* already well mixed */
#define SH_HASH_KEY(tb, k)	PROJ_HASH(k)
#define SH_EQUAL(tb, a, b)	((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct ProjTower
{
	const MtmsTower *tower;
	bool		joined;			/* fine-tune tower (reads every pair) */
	int			pair;
	int			h1;				/* first layer outputs */
	int			h1p;			/* h1 rounded up to 4: a vector's stride */
	int			nread;			/* first-layer input columns read */
	projhash_hash *ht;
	float	  **chunks;
	int			nchunks;
	int			maxchunks;
	int64		nvec;
} ProjTower;

/*
 * Where projections are kept: this backend's tables, or the shared cache
 * of a shared model version (proj_shared.h).  Both compute a miss with
 * projection_compute, so they hold the same bits, and both serve one-row
 * scoring and batches alike.
 */
typedef struct ProjOps ProjOps;

#define PROJ_HIT		1		/* cached: *vec is its vector (NULL: zero) */
#define PROJ_MISS		0		/* not cached; may be kept once computed */
#define PROJ_NO_KEEP	(-1)	/* not cached; must not be kept (its hash is
								 * cached for another field) */

struct ProjOps
{
	/* start fetching where the lookup of hash begins */
	void		(*prefetch) (const MtmsScorer *sc, const ProjTower *pt, uint64 hash);
	/* PROJ_HIT, PROJ_MISS or PROJ_NO_KEEP */
	int			(*lookup) (const MtmsScorer *sc, const ProjTower *pt,
						   const MtmsFeature *f, const float **vec);
	/* keep a projection just computed when the cap allows: the vector to add */
	const float *(*keep) (MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f,
						  bool known, const float *computed);
};

static const ProjOps local_ops;
static const ProjOps shared_ops;
static const float *projection_insert(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f,
									  bool known, const float *missbuf);

struct MtmsScorer
{
	MemoryContext cxt;
	const MtmsModel *m;
	const ProjOps *ops;			/* where the projections are kept */
	dsa_area   *area;			/* shared: the area, the cache in it */
	MtmsProjShared *shared;
	ProjTower **towers;			/* [npairs], NULL until used */
	float	   *act[2];			/* activations, widest layer each */
	float	   *miss;			/* projections not kept: PROJ_BATCH x widest */
	MtmsFeature *sorted;		/* a row's features in canonical order */
	int			sorted_cap;
	Size		bytes;
	Size		reserve;		/* the fixed part of the towers not yet used */
	int64		keys;
	int64		zero_keys;
	int64		computed;
	int64		uncached;
};

/*
 * Memory of a tower's table before its first key: always allocated, even
 * with the cap reached (a row needs the table to look up), so the inserts
 * leave room for the towers not yet used.
 */
static Size
tower_fixed_bytes(void)
{
	return sizeof(ProjTower) + sizeof(float *) * 16 +
		sizeof(ProjEntry) * pg_nextpower2_32((uint32) (PROJ_INITIAL / 0.9) + 1);
}

Size
mtms_scorer_cap_bytes(void)
{
	if (mtms_score_cache_mb >= 0)
		return (Size) mtms_score_cache_mb * 1024 * 1024;
	return (Size) mtms_max_memory_mb * 1024 * 1024 / 16;
}

MtmsScorer *
mtms_scorer_create(const MtmsModel *m, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "mtms score projections",
											  ALLOCSET_DEFAULT_SIZES);
	MtmsScorer *sc = MemoryContextAllocZero(cxt, sizeof(MtmsScorer));
	int			widest = 1;

	sc->cxt = cxt;
	sc->m = m;
	sc->ops = &local_ops;
	sc->towers = MemoryContextAllocZero(cxt, sizeof(ProjTower *) * m->npairs);
	sc->reserve = tower_fixed_bytes() * m->npairs;
	for (int p = 0; p < m->npairs; p++)
	{
		const MtmsTower *t = m->tower2[p] ? m->tower2[p] : m->tower1[p];

		for (int l = 1; l <= t->nlayers; l++)
			widest = Max(widest, t->sizes[l]);
	}
	widest = (widest + 3) & ~3;
	sc->act[0] = MemoryContextAlloc(cxt, sizeof(float) * widest);
	sc->act[1] = MemoryContextAlloc(cxt, sizeof(float) * widest);
	sc->miss = MemoryContextAlloc(cxt, sizeof(float) * widest * PROJ_BATCH);
	return sc;
}

static ProjTower *
tower_get(MtmsScorer *sc, int p)
{
	const MtmsModel *m = sc->m;
	ProjTower  *pt = sc->towers[p];
	const MtmsTower *t;

	if (pt)
		return pt;
	t = m->tower2[p] ? m->tower2[p] : m->tower1[p];
	pt = MemoryContextAllocZero(sc->cxt, sizeof(ProjTower));
	pt->tower = t;
	pt->joined = m->tower2[p] != NULL;
	pt->pair = p;
	pt->h1 = t->sizes[1];
	pt->h1p = (pt->h1 + 3) & ~3;
	pt->nread = t->nin_used > 0 ? t->nin_used : t->sizes[0];
	if (sc->shared == NULL)
	{
		pt->ht = projhash_create(sc->cxt, PROJ_INITIAL, NULL);
		pt->maxchunks = 16;
		pt->chunks = MemoryContextAlloc(sc->cxt, sizeof(float *) * pt->maxchunks);
		sc->bytes += sizeof(ProjTower) + pt->ht->size * sizeof(ProjEntry) +
			sizeof(float *) * pt->maxchunks;
		sc->reserve -= Min(sc->reserve, tower_fixed_bytes());
	}
	sc->towers[p] = pt;
	return pt;
}

/* Columns of the block at off that the tower reads (0: none). */
static inline int
block_cols(const ProjTower *pt, int off, int dim)
{
	return off >= pt->nread ? 0 : Min(dim, pt->nread - off);
}

/*
 * out += W1[:, off .. off + dim) v, reading only the columns the tower
 * reads: one cblas_sgemv, the only arithmetic a projection goes through.
 * A key's projection is these calls for its known pairs, in pair order,
 * from zero, with the same arguments but the output's address, whether
 * mtms_score computes it alone (projection_compute) or a batch of
 * mtms_evaluate with others (joined_tile, batch_compute_phase1); so it is
 * the same, bit for bit, and a score never depends on who filled the
 * cache.  (A product over many keys at once, cblas_sgemm, would sum each
 * dot product in another kernel's order.)
 */
static inline void
add_block(const ProjTower *pt, int off, int dim, const float *v, float *out)
{
	int			ncols = block_cols(pt, off, dim);

	if (ncols > 0)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, pt->h1, ncols,
					1.0f, pt->tower->W[0] + off, pt->tower->sizes[0], v, 1, 1.0f, out, 1);
}

/*
 * P(f) into out (h1p floats, the padding zero); false when no pair knows
 * the feature (out is then zero).
 */
static bool
projection_compute(const MtmsScorer *sc, const ProjTower *pt, const MtmsFeature *f,
				   float *out)
{
	const MtmsModel *m = sc->m;
	bool		known = false;

	memset(out, 0, sizeof(float) * pt->h1p);
	if (pt->joined)
	{
		for (int q = 0; q < m->npairs; q++)
		{
			int64		idx = mtms_emb_find(m->emb[q], f->hash);

			if (idx >= 0)
			{
				add_block(pt, m->block_off[q * m->nfields + f->field], m->dim,
						  mtms_emb_vector(m->emb[q], idx), out);
				known = true;
			}
		}
	}
	else
	{
		int64		idx = mtms_emb_find(m->emb[pt->pair], f->hash);

		if (idx >= 0)
		{
			add_block(pt, f->field * m->dim, m->dim,
					  mtms_emb_vector(m->emb[pt->pair], idx), out);
			known = true;
		}
	}
	return known;
}

static inline float *
vec_ptr(const ProjTower *pt, int64 idx)
{
	return pt->chunks[idx >> PROJ_CHUNK_SHIFT] + (idx & (PROJ_CHUNK - 1)) * pt->h1p;
}

/*
 * Keep the projection of f just computed into missbuf (known: it has a
 * vector) when the cap allows; returns the vector to add (NULL: zero).
 */
static const float *
projection_insert(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f, bool known,
				  const float *missbuf)
{
	Size		need = 0;
	Size		chunk_bytes = sizeof(float) * (Size) PROJ_CHUNK * pt->h1p;
	bool		new_chunk = known && (pt->nvec & (PROJ_CHUNK - 1)) == 0;
	uint64		old_size = pt->ht->size;
	ProjEntry  *e;
	bool		found;

	/*
	 * The insert may double the table: at the fill threshold, or earlier
	 * when a probe sequence gets too long (simplehash's SH_GROW_MAX_DIB).
	 */
	need += pt->ht->size * sizeof(ProjEntry);
	if (new_chunk)
	{
		need += chunk_bytes;
		if (pt->nchunks == pt->maxchunks)
			need += sizeof(float *) * pt->maxchunks * 2;
	}
	if (sc->bytes + sc->reserve + need > mtms_scorer_cap_bytes() ||
		pt->nvec >= PG_INT32_MAX - PROJ_CHUNK)
	{
		sc->uncached++;
		return known ? missbuf : NULL;
	}

	if (new_chunk)
	{
		if (pt->nchunks == pt->maxchunks)
		{
			pt->chunks = repalloc(pt->chunks, sizeof(float *) * pt->maxchunks * 2);
			sc->bytes += sizeof(float *) * pt->maxchunks;
			pt->maxchunks *= 2;
		}
		pt->chunks[pt->nchunks++] = MemoryContextAlloc(sc->cxt, chunk_bytes);
		sc->bytes += chunk_bytes;
	}
	e = projhash_insert(pt->ht, f->hash, &found);
	Assert(!found);
	if (pt->ht->size != old_size)
		sc->bytes += (pt->ht->size - old_size) * sizeof(ProjEntry);
	e->field = (int16) f->field;
	sc->keys++;
	if (!known)
	{
		e->vec = -1;
		sc->zero_keys++;
		return NULL;
	}
	e->vec = (int32) pt->nvec++;
	memcpy(vec_ptr(pt, e->vec), missbuf, sizeof(float) * pt->h1p);
	return vec_ptr(pt, e->vec);
}

/* ----------------------------------------------------------------
 * The two ProjOps: this backend's tables (above), the shared cache
 * ---------------------------------------------------------------- */

static void
local_prefetch(const MtmsScorer *sc, const ProjTower *pt, uint64 hash)
{
	mtms_prefetch(&pt->ht->data[PROJ_HASH(hash) & pt->ht->sizemask]);
}

static int
local_lookup(const MtmsScorer *sc, const ProjTower *pt, const MtmsFeature *f,
			 const float **vec)
{
	ProjEntry  *e = projhash_lookup(pt->ht, f->hash);

	if (e == NULL)
		return PROJ_MISS;
	if (e->field != f->field)
		return PROJ_NO_KEEP;
	*vec = e->vec >= 0 ? vec_ptr(pt, e->vec) : NULL;
	return PROJ_HIT;
}

static void
shared_prefetch(const MtmsScorer *sc, const ProjTower *pt, uint64 hash)
{
	mtms_proj_shared_prefetch(sc->area, sc->shared, pt->pair, hash);
}

/* (keyed by hash and field: a hash of two fields is kept twice) */
static int
shared_lookup(const MtmsScorer *sc, const ProjTower *pt, const MtmsFeature *f,
			  const float **vec)
{
	return mtms_proj_shared_lookup(sc->area, sc->shared, pt->pair, f->hash,
								   f->field, vec) ? PROJ_HIT : PROJ_MISS;
}

static const float *
shared_keep(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f, bool known,
			const float *computed)
{
	bool		kept;
	const float *v = mtms_proj_shared_insert(sc->area, sc->shared, pt->pair, f->hash,
											 f->field, known, computed,
											 mtms_scorer_cap_bytes(), &kept);

	if (!kept)
		sc->uncached++;
	return v;
}

static const ProjOps local_ops = {local_prefetch, local_lookup, projection_insert};
static const ProjOps shared_ops = {shared_prefetch, shared_lookup, shared_keep};

/*
 * The vector to add for feature f (NULL: zero), computing it on a miss
 * into missbuf (h1p floats), which must stay untouched until it is added.
 */
static inline const float *
projection_get(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f, float *missbuf)
{
	const float *v;
	int			r = sc->ops->lookup(sc, pt, f, &v);
	bool		known;

	if (likely(r == PROJ_HIT))
		return v;
	known = projection_compute(sc, pt, f, missbuf);
	sc->computed++;
	if (r == PROJ_NO_KEEP)
	{
		sc->uncached++;
		return known ? missbuf : NULL;
	}
	return sc->ops->keep(sc, pt, f, known, missbuf);
}

/* dst[0..n) += src[0..n), n a multiple of 4 */
static inline void
vec_add(float *dst, const float *src, int n)
{
#ifdef __SSE2__
	for (int j = 0; j < n; j += 4)
		_mm_storeu_ps(dst + j, _mm_add_ps(_mm_loadu_ps(dst + j), _mm_loadu_ps(src + j)));
#else
	for (int j = 0; j < n; j++)
		dst[j] += src[j];
#endif
}

static inline bool
feature_less(const MtmsFeature *a, const MtmsFeature *b)
{
	return a->hash < b->hash || (a->hash == b->hash && a->field < b->field);
}

static int
feature_cmp(const void *a, const void *b)
{
	return feature_less(a, b) ? -1 : feature_less(b, a) ? 1 : 0;
}

/*
 * The row's features sorted by (hash, field): the projections are summed
 * in this order, so a score does not depend on the order of the features
 * in the array (float addition is not associative).
 */
static void
sort_features(MtmsFeature *f, int n)
{
	if (n <= 32)
	{
		for (int i = 1; i < n; i++)
		{
			MtmsFeature x = f[i];
			int			j = i;

			while (j > 0 && feature_less(&x, &f[j - 1]))
			{
				f[j] = f[j - 1];
				j--;
			}
			f[j] = x;
		}
	}
	else
		qsort(f, n, sizeof(MtmsFeature), feature_cmp);
}

static const MtmsFeature *
canonical_order(MtmsScorer *sc, const MtmsFeature *feats, int nfeats)
{
	if (nfeats <= 1)
		return feats;
	if (nfeats > sc->sorted_cap)
	{
		int			cap = Max(nfeats, 64);

		if (sc->sorted)
			pfree(sc->sorted);
		sc->sorted = MemoryContextAlloc(sc->cxt, sizeof(MtmsFeature) * cap);
		sc->sorted_cap = cap;
	}
	memcpy(sc->sorted, feats, sizeof(MtmsFeature) * nfeats);
	sort_features(sc->sorted, nfeats);
	return sc->sorted;
}

static float
tower_logit(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *feats, int nfeats)
{
	const MtmsTower *t = pt->tower;
	float	   *h = sc->act[0];

	memcpy(h, t->b[0], sizeof(float) * pt->h1);
	memset(h + pt->h1, 0, sizeof(float) * (pt->h1p - pt->h1));
	feats = canonical_order(sc, feats, nfeats);

	/*
	 * In batches of features: prefetch the table buckets, then look up
	 * (prefetching the vectors), then add in (canonical) feature order, so
	 * that the cache misses of a row overlap and the sum does not depend
	 * on which keys were cached.
	 */
	for (int i0 = 0; i0 < nfeats; i0 += PROJ_BATCH)
	{
		int			n = Min(PROJ_BATCH, nfeats - i0);
		const MtmsFeature *fb = feats + i0;
		const float *v[PROJ_BATCH];

		for (int i = 0; i < n; i++)
			sc->ops->prefetch(sc, pt, fb[i].hash);
		for (int i = 0; i < n; i++)
		{
			v[i] = projection_get(sc, pt, &fb[i], sc->miss + (Size) i * pt->h1p);
			if (v[i])
				for (int j = 0; j < pt->h1p; j += 16)
					mtms_prefetch(v[i] + j);
		}
		for (int i = 0; i < n; i++)
			if (v[i])
				vec_add(h, v[i], pt->h1p);
	}

	/* the rest as mtms_tower_predict1 */
	return mtms_tower_predict1_hidden(t, h, sc->act[1]);
}

double
mtms_scorer_predict(MtmsScorer *sc, int scene, int task,
					const MtmsFeature *feats, int nfeats)
{
	int			p = MTMS_PAIR(scene, task);

	Assert(p >= 0 && p < sc->m->npairs);
	return mtms_sigmoid(tower_logit(sc, tower_get(sc, p), feats, nfeats));
}

MtmsScorer *
mtms_scorer_create_shared(const MtmsModel *m, MemoryContext parent, dsa_area *area,
						  dsa_pointer cache)
{
	MtmsScorer *sc = mtms_scorer_create(m, parent);

	sc->ops = &shared_ops;
	sc->area = area;
	sc->shared = dsa_get_address(area, cache);
	sc->reserve = 0;
	return sc;
}

int
mtms_scorer_vector_floats(const MtmsModel *m)
{
	return (m->hidden[0] + 3) & ~3;
}

void
mtms_scorer_stats(const MtmsScorer *sc, MtmsScorerStats *st)
{
	if (sc->shared)
	{
		mtms_proj_shared_stats(sc->shared, &st->keys, &st->zero_keys, &st->bytes);
		st->cap_bytes = (int64) mtms_scorer_cap_bytes();
		st->computed = sc->computed;
		st->uncached = sc->uncached;
		return;
	}
	st->keys = sc->keys;
	st->zero_keys = sc->zero_keys;
	st->bytes = (int64) sc->bytes;
	st->cap_bytes = (int64) mtms_scorer_cap_bytes();
	st->computed = sc->computed;
	st->uncached = sc->uncached;
}

/* ----------------------------------------------------------------
 * Batches of rows (mtms_evaluate)
 * ---------------------------------------------------------------- */

#define BATCH_UPPER		256		/* rows per upper-layer pass of a tower */
#define BATCH_RIDX_BYTES (32 * 1024 * 1024)	/* a chunk of keys' rows in every pair */
#define BATCH_KEY_TILE	256		/* keys computed together, pair by pair */

/* One tower's share of a run: the rows of its scene. */
typedef struct BatchTower
{
	ProjTower  *pt;
	int			task;
	int			row0;			/* its rows: order[row0 .. row0 + nrows) */
	int			nrows;
	const float **vec;			/* per occurrence: the vector (NULL: zero) */
	int32	   *miss;			/* per occurrence: local missing key, or -1 */
	int32	   *mkeys;			/* local missing key -> batch key */
	bool	   *mkeep;			/* may it be kept (no other field has its hash)? */
	int			nmiss;
	const float **mvec;			/* local missing key -> its vector once computed */
} BatchTower;

struct MtmsScoreBatch
{
	MtmsScorer *sc;
	MemoryContext cxt;			/* the batch and its buffers */
	MemoryContext run_cxt;		/* scratch of one run, reset at the next */
	int			nrows;
	int			rowcap;
	int32	   *scene;			/* [rowcap] */
	int64	   *start;			/* [rowcap + 1]: row i's features */
	MtmsFeature *feats;			/* rows' features, each row in canonical order */
	int64		featcap;
	MtmsTowerWork *work;		/* upper layers of BATCH_UPPER rows */
	float	   *H1;				/* BATCH_UPPER x h1 */
	float	   *hrow;			/* one row's sum, h1p floats */
	float	   *logits;			/* BATCH_UPPER */
};

MtmsScoreBatch *
mtms_score_batch_create(MtmsScorer *sc)
{
	const MtmsModel *m = sc->m;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms score batch",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MtmsScoreBatch *b = palloc0(sizeof(MtmsScoreBatch));
	const MtmsTower *shape = m->tower1[0];
	int			h1 = shape->sizes[1];

	/*
	 * One work area serves every tower: all have the model's hidden sizes,
	 * only their input widths differ, and a forward from the first layer's
	 * products never touches the input's area (sized here for the narrow
	 * phase-1 input).
	 */
	for (int p = 0; p < m->npairs; p++)
	{
		const MtmsTower *t = m->tower2[p] ? m->tower2[p] : m->tower1[p];
		bool		same = t->nlayers == shape->nlayers;

		for (int l = 1; same && l <= t->nlayers; l++)
			same = t->sizes[l] == shape->sizes[l];
		if (!same)
			elog(ERROR, "mtms: towers of one model differ in their hidden layers");
	}
	b->sc = sc;
	b->cxt = cxt;
	b->run_cxt = AllocSetContextCreate(cxt, "mtms score batch run", ALLOCSET_DEFAULT_SIZES);
	b->rowcap = 1024;
	b->scene = palloc(sizeof(int32) * b->rowcap);
	b->start = palloc(sizeof(int64) * (b->rowcap + 1));
	b->start[0] = 0;
	b->featcap = 8192;
	b->feats = palloc(sizeof(MtmsFeature) * b->featcap);
	b->work = mtms_tower_work_create(shape, BATCH_UPPER);
	b->H1 = palloc(sizeof(float) * BATCH_UPPER * h1);
	b->hrow = palloc(sizeof(float) * ((h1 + 3) & ~3));
	b->logits = palloc(sizeof(float) * BATCH_UPPER);
	MemoryContextSwitchTo(old);
	return b;
}

void
mtms_score_batch_free(MtmsScoreBatch *b)
{
	if (b)
		MemoryContextDelete(b->cxt);
}

int
mtms_score_batch_add(MtmsScoreBatch *b, int scene, const MtmsFeature *feats, int nfeats)
{
	int64		at = b->start[b->nrows];

	Assert(scene >= 0 && scene < b->sc->m->nscenes);
	if (b->nrows == b->rowcap)
	{
		b->rowcap *= 2;
		b->scene = repalloc(b->scene, sizeof(int32) * b->rowcap);
		b->start = repalloc(b->start, sizeof(int64) * (b->rowcap + 1));
	}
	if (at + nfeats > b->featcap)
	{
		b->featcap = Max(b->featcap * 2, at + nfeats);
		b->feats = repalloc_huge(b->feats, sizeof(MtmsFeature) * b->featcap);
	}
	memcpy(b->feats + at, feats, sizeof(MtmsFeature) * nfeats);
	sort_features(b->feats + at, nfeats);
	b->scene[b->nrows] = scene;
	b->start[b->nrows + 1] = at + nfeats;
	return b->nrows++;
}

/*
 * Look the features of bt's rows up in its tower's cache: bt->vec for the
 * hits, bt->miss and bt->mkeys for the others, each distinct missing
 * feature once per tower, numbered among the batch's (keys, tab).
 */
static void
batch_lookup(MtmsScoreBatch *b, BatchTower *bt, const int32 *order, int64 nocc,
			 mtms_fkhash_hash *tab, MtmsFeatureKey **keys, int *nkeys, int *keycap,
			 int32 *mark, int32 *local, int stamp)
{
	ProjTower  *pt = bt->pt;
	int64		j = 0;

	bt->vec = palloc(sizeof(float *) * Max(nocc, 1));
	bt->miss = palloc(sizeof(int32) * Max(nocc, 1));
	bt->mkeys = palloc(sizeof(int32) * Max(nocc, 1));
	bt->mkeep = palloc(sizeof(bool) * Max(nocc, 1));
	bt->nmiss = 0;
	for (int i = 0; i < bt->nrows; i++)
	{
		int			r = order[bt->row0 + i];
		const MtmsFeature *f = b->feats + b->start[r];
		int			nf = (int) (b->start[r + 1] - b->start[r]);

		/* the next row's buckets meanwhile */
		if (i + 1 < bt->nrows)
		{
			int			rn = order[bt->row0 + i + 1];

			for (int64 q = b->start[rn]; q < b->start[rn + 1]; q++)
				b->sc->ops->prefetch(b->sc, pt, b->feats[q].hash);
		}
		for (int k = 0; k < nf; k++, j++)
		{
			const float *v;
			int			hit = b->sc->ops->lookup(b->sc, pt, &f[k], &v);
			MtmsFeatureKey key;
			MtmsFeatureKeyEntry *ke;
			bool		found;

			if (likely(hit == PROJ_HIT))
			{
				bt->vec[j] = v;
				bt->miss[j] = -1;
				continue;
			}
			bt->vec[j] = NULL;
			key.hash = f[k].hash;
			key.field = f[k].field;
			ke = mtms_fkhash_insert(tab, key, &found);
			if (!found)
			{
				if (*nkeys == *keycap)
				{
					*keycap *= 2;
					*keys = repalloc_huge(*keys, sizeof(MtmsFeatureKey) * *keycap);
				}
				ke->id = (*nkeys)++;
				(*keys)[ke->id] = key;
				mark[ke->id] = -1;
			}
			if (mark[ke->id] != stamp)
			{
				mark[ke->id] = stamp;
				local[ke->id] = bt->nmiss;
				bt->mkeys[bt->nmiss] = ke->id;
				/* the same hash in another field: computed, not kept */
				bt->mkeep[bt->nmiss] = (hit == PROJ_MISS);
				bt->nmiss++;
			}
			bt->miss[j] = local[ke->id];
		}
	}
	Assert(j == nocc);
}

/*
 * Keep the projection of missing key i of bt (computed into slot, h1p
 * floats) when it may and the cap allows; records the vector to add.
 */
static void
batch_keep(MtmsScorer *sc, BatchTower *bt, int i, const MtmsFeatureKey *key,
		   bool known, const float *slot)
{
	MtmsFeature f;

	sc->computed++;
	f.hash = key->hash;
	f.field = key->field;
	if (!bt->mkeep[i])
	{
		sc->uncached++;
		bt->mvec[i] = known ? slot : NULL;
		return;
	}
	bt->mvec[i] = sc->ops->keep(sc, bt->pt, &f, known, slot);
}

/* The missing projections of a phase-1 tower, key by key as a score does. */
static void
batch_compute_phase1(MtmsScorer *sc, BatchTower *bt, const MtmsFeatureKey *keys)
{
	ProjTower  *pt = bt->pt;
	float	   *slots = palloc(sizeof(float) * Max(bt->nmiss, 1) * pt->h1p);

	for (int i = 0; i < bt->nmiss; i++)
	{
		MtmsFeature f;
		float	   *slot = slots + (Size) i * pt->h1p;
		bool		known;

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		f.hash = keys[bt->mkeys[i]].hash;
		f.field = keys[bt->mkeys[i]].field;
		known = projection_compute(sc, pt, &f, slot);
		batch_keep(sc, bt, i, &keys[bt->mkeys[i]], known, slot);
	}
}

/*
 * The missing projections of the fine-tune towers.  Every key some tower
 * misses is looked up once in every pair (ridx[k * P + q]: the row of
 * key k of the chunk in pair q's table, or -1), chunk by chunk of the keys
 * if they are very many; then each tower computes its missing keys, a
 * tile of keys at a time grouped by field, pair by pair, so a block of its
 * first-layer weights serves the tile's keys of its field while in the CPU
 * cache and a tile's sums stay there too.  Each key's sum still runs pair
 * by pair in order, from zero, with the same cblas_sgemv calls as
 * projection_compute's (add_block).
 */
typedef struct JoinedWork
{
	const MtmsFeatureKey *keys; /* the batch's keys */
	int32	   *need;			/* batch key -> its number among the needed, or -1 */
	int32	   *needed;			/* needed number -> batch key */
	int			nneed;
	int			c0;				/* the chunk: needed keys c0 .. c0 + C */
	int			C;
	int32	   *ridx;			/* ridx[k * npairs + q]: key c0 + k's row in pair q */
	int32	   *byfield;		/* a tower's missing keys of the chunk, by field */
	int32	   *xg;				/* their numbers in the chunk */
	int32	   *fend;			/* [nfields + 1]: where each field's keys end */
	int32	   *rtile;			/* a tile's rows: rtile[q * BATCH_KEY_TILE + g] */
} JoinedWork;

/* Every key of the chunk in every pair: one probe each, prefetched. */
static void
joined_probe(const MtmsModel *m, JoinedWork *jw)
{
	int			P = m->npairs;
	const int32 *kk = jw->needed + jw->c0;

	for (int q = 0; q < P; q++)
	{
		const MtmsEmbStore *emb = m->emb[q];

		CHECK_FOR_INTERRUPTS();
		for (int k = 0; k < Min(8, jw->C); k++)
			mtms_emb_prefetch(emb, jw->keys[kk[k]].hash);
		for (int k = 0; k < jw->C; k++)
		{
			if (k + 8 < jw->C)
				mtms_emb_prefetch(emb, jw->keys[kk[k + 8]].hash);
			jw->ridx[(Size) k * P + q] = (int32) mtms_emb_find(emb, jw->keys[kk[k]].hash);
		}
	}
}

/*
 * bt's missing keys of the chunk, grouped by field, into jw->byfield and
 * jw->xg (and jw->fend); returns how many.
 */
static int
joined_select(const MtmsModel *m, const BatchTower *bt, JoinedWork *jw)
{
	int			F = m->nfields;
	int			nt = 0;

	memset(jw->fend, 0, sizeof(int32) * (F + 1));
	for (int i = 0; i < bt->nmiss; i++)
	{
		int			x = jw->need[bt->mkeys[i]] - jw->c0;

		if (x >= 0 && x < jw->C)
		{
			jw->fend[jw->keys[bt->mkeys[i]].field + 1]++;
			nt++;
		}
	}
	for (int f = 0; f < F; f++)
		jw->fend[f + 1] += jw->fend[f];
	for (int i = 0; i < bt->nmiss; i++)
	{
		int			x = jw->need[bt->mkeys[i]] - jw->c0;

		if (x >= 0 && x < jw->C)
		{
			int			g = jw->fend[jw->keys[bt->mkeys[i]].field]++;

			jw->byfield[g] = i;
			jw->xg[g] = x;
		}
	}
	return nt;
}

/*
 * The projections of bt's selected keys g0 .. g1 into slots (zeroed), pair
 * by pair.
 */
static void
joined_tile(const MtmsModel *m, const BatchTower *bt, JoinedWork *jw, int g0, int g1,
			float *slots)
{
	const ProjTower *pt = bt->pt;
	int			P = m->npairs;
	int			F = m->nfields;

	/* the tile's rows, pair by pair (from the chunk's, key by key) */
	for (int g = g0; g < g1; g++)
	{
		const int32 *src = jw->ridx + (Size) jw->xg[g] * P;

		for (int q = 0; q < P; q++)
			jw->rtile[(Size) q * BATCH_KEY_TILE + g - g0] = src[q];
	}
	for (int q = 0; q < P; q++)
	{
		const MtmsEmbStore *emb = m->emb[q];
		const int32 *off = m->block_off + q * F;
		const int32 *rq = jw->rtile + (Size) q * BATCH_KEY_TILE;

		for (int g = g0; g < g1; g++)
		{
			int32		r = rq[g - g0];
			int			f;

			if (g + 8 < g1 && rq[g + 8 - g0] >= 0)
				mtms_prefetch(mtms_emb_vector(emb, rq[g + 8 - g0]));
			if (r < 0)
				continue;
			f = jw->keys[bt->mkeys[jw->byfield[g]]].field;
			add_block(pt, off[f], m->dim, mtms_emb_vector(emb, r),
					  slots + (Size) g * pt->h1p);
		}
	}
}

/* The projections of bt's missing keys of the chunk, into the cache. */
static void
joined_tower(MemoryContext run_cxt, MtmsScorer *sc, BatchTower *bt, JoinedWork *jw)
{
	const MtmsModel *m = sc->m;
	ProjTower  *pt = bt->pt;
	int			nt = joined_select(m, bt, jw);
	float	   *slots;
	bool		slots_used = false;

	if (nt == 0)
		return;
	slots = MemoryContextAllocZero(run_cxt, sizeof(float) * (Size) nt * pt->h1p);
	for (int g0 = 0; g0 < nt; g0 += BATCH_KEY_TILE)
	{
		CHECK_FOR_INTERRUPTS();
		joined_tile(m, bt, jw, g0, Min(nt, g0 + BATCH_KEY_TILE), slots);
	}

	/* into the cache (or the run's memory, past the cap) */
	for (int g = 0; g < nt; g++)
	{
		int			i = jw->byfield[g];
		const int32 *r = jw->ridx + (Size) jw->xg[g] * m->npairs;
		bool		known = false;

		for (int q = 0; q < m->npairs && !known; q++)
			known = r[q] >= 0;
		batch_keep(sc, bt, i, &jw->keys[bt->mkeys[i]], known, slots + (Size) g * pt->h1p);
		if (bt->mvec[i] == slots + (Size) g * pt->h1p)
			slots_used = true;
	}
	if (!slots_used)
		pfree(slots);
}

/* The missing projections of the batch's fine-tune towers (see above). */
static void
batch_compute_joined(MemoryContext run_cxt, MtmsScorer *sc, BatchTower *bts, int nbt,
					 const MtmsFeatureKey *keys, int nkeys)
{
	const MtmsModel *m = sc->m;
	int			P = m->npairs;
	int			chunk;
	JoinedWork	jw;

	memset(&jw, 0, sizeof(jw));
	jw.keys = keys;
	jw.need = palloc(sizeof(int32) * Max(nkeys, 1));
	memset(jw.need, 0xff, sizeof(int32) * Max(nkeys, 1));
	jw.needed = palloc(sizeof(int32) * Max(nkeys, 1));
	for (int t = 0; t < nbt; t++)
		if (bts[t].pt->joined)
			for (int i = 0; i < bts[t].nmiss; i++)
				if (jw.need[bts[t].mkeys[i]] < 0)
				{
					jw.needed[jw.nneed] = bts[t].mkeys[i];
					jw.need[bts[t].mkeys[i]] = jw.nneed++;
				}
	if (jw.nneed == 0)
		return;

	/* (row numbers as int32: a table of 2^31 rows would not fit in memory) */
	for (int q = 0; q < P; q++)
		if (mtms_emb_count(m->emb[q]) > PG_INT32_MAX)
			elog(ERROR, "mtms: an embedding table of more than %d rows", PG_INT32_MAX);
	chunk = (int) Min(jw.nneed, Max(64, BATCH_RIDX_BYTES / ((Size) P * sizeof(int32))));
	jw.ridx = palloc_extended(sizeof(int32) * (Size) P * chunk, MCXT_ALLOC_HUGE);
	jw.byfield = palloc(sizeof(int32) * chunk);
	jw.xg = palloc(sizeof(int32) * chunk);
	jw.fend = palloc(sizeof(int32) * (m->nfields + 1));
	jw.rtile = palloc(sizeof(int32) * (Size) P * BATCH_KEY_TILE);

	for (jw.c0 = 0; jw.c0 < jw.nneed; jw.c0 += chunk)
	{
		jw.C = Min(chunk, jw.nneed - jw.c0);
		joined_probe(m, &jw);
		for (int t = 0; t < nbt; t++)
			if (bts[t].pt->joined && bts[t].nmiss > 0)
			{
				CHECK_FOR_INTERRUPTS();
				joined_tower(run_cxt, sc, &bts[t], &jw);
			}
	}
}

/* The vector of occurrence j of bt (NULL: zero). */
static inline const float *
batch_vec(const BatchTower *bt, int64 j)
{
	return bt->miss[j] >= 0 ? bt->mvec[bt->miss[j]] : bt->vec[j];
}

/*
 * dst (h1p floats) = the sum of the vectors of one row's nf features,
 * occurrences j0 .. of bt, in the row's (canonical) order.
 */
static inline void
batch_sum_row(float *dst, const BatchTower *bt, int64 j0, int nf, int h1p)
{
	memset(dst, 0, sizeof(float) * h1p);
	for (int k = 0; k < nf; k++)
	{
		const float *v = batch_vec(bt, j0 + k);

		if (v)
			vec_add(dst, v, h1p);
	}
}

/*
 * The probabilities of bt's rows into prob: per row the sum of its
 * features' vectors, then the upper layers, BATCH_UPPER rows at a time.
 */
static void
batch_forward(MtmsScoreBatch *b, const BatchTower *bt, const int32 *order, float *prob)
{
	const ProjTower *pt = bt->pt;
	int64		j = 0;
	int			ia = 0;			/* the next row whose vectors to prefetch */
	int64		ja = 0;

	for (int i0 = 0; i0 < bt->nrows; i0 += BATCH_UPPER)
	{
		int			nb = Min(BATCH_UPPER, bt->nrows - i0);

		for (int i = 0; i < nb; i++)
		{
			int			r = order[bt->row0 + i0 + i];
			int			nf = (int) (b->start[r + 1] - b->start[r]);

			/* the vectors of the rows two ahead meanwhile */
			for (; ia < bt->nrows && ia <= i0 + i + 2; ia++)
			{
				int			ra = order[bt->row0 + ia];

				for (int64 k = b->start[ra]; k < b->start[ra + 1]; k++, ja++)
				{
					const float *v = batch_vec(bt, ja);

					if (v)
						for (int o = 0; o < pt->h1p; o += 16)
							mtms_prefetch(v + o);
				}
			}
			batch_sum_row(b->hrow, bt, j, nf, pt->h1p);
			memcpy(b->H1 + (Size) i * pt->h1, b->hrow, sizeof(float) * pt->h1);
			j += nf;
		}
		mtms_tower_forward_hidden(pt->tower, b->work, b->H1, nb, b->logits);
		for (int i = 0; i < nb; i++)
			prob[(Size) order[bt->row0 + i0 + i] * MTMS_NTASKS + bt->task] =
				mtms_sigmoid(b->logits[i]);
	}
}

void
mtms_score_batch_run(MtmsScoreBatch *b, float *prob)
{
	MtmsScorer *sc = b->sc;
	const MtmsModel *m = sc->m;
	MemoryContext old;
	int			n = b->nrows;
	int32	   *sstart;
	int32	   *order;
	int32	   *next;
	BatchTower *bts;
	int			nbt = 0;
	mtms_fkhash_hash *tab;
	MtmsFeatureKey *keys;
	int			nkeys = 0;
	int			keycap;
	int32	   *mark;
	int32	   *local;
	int			markcap;

	if (n == 0)
		return;
	MemoryContextReset(b->run_cxt);
	old = MemoryContextSwitchTo(b->run_cxt);

	/* the rows by scene */
	sstart = palloc0(sizeof(int32) * (m->nscenes + 1));
	for (int i = 0; i < n; i++)
		sstart[b->scene[i] + 1]++;
	for (int s = 0; s < m->nscenes; s++)
		sstart[s + 1] += sstart[s];
	next = palloc(sizeof(int32) * m->nscenes);
	memcpy(next, sstart, sizeof(int32) * m->nscenes);
	order = palloc(sizeof(int32) * n);
	for (int i = 0; i < n; i++)
		order[next[b->scene[i]]++] = i;

	/* per tower of a scene with rows: look its features up */
	bts = palloc0(sizeof(BatchTower) * Min(m->npairs, 2 * n));
	keycap = 1024;
	keys = palloc(sizeof(MtmsFeatureKey) * keycap);
	markcap = (int) Min(b->start[n], PG_INT32_MAX / 2) + 1;
	mark = palloc_extended(sizeof(int32) * markcap, MCXT_ALLOC_HUGE);
	local = palloc_extended(sizeof(int32) * markcap, MCXT_ALLOC_HUGE);
	tab = mtms_fkhash_create(b->run_cxt, 1024, NULL);
	for (int s = 0; s < m->nscenes; s++)
	{
		int64		nocc = 0;

		if (sstart[s + 1] == sstart[s])
			continue;
		for (int i = sstart[s]; i < sstart[s + 1]; i++)
			nocc += b->start[order[i] + 1] - b->start[order[i]];
		for (int task = 0; task < MTMS_NTASKS; task++)
		{
			BatchTower *bt = &bts[nbt];

			CHECK_FOR_INTERRUPTS();
			bt->pt = tower_get(sc, MTMS_PAIR(s, task));
			bt->task = task;
			bt->row0 = sstart[s];
			bt->nrows = sstart[s + 1] - sstart[s];
			batch_lookup(b, bt, order, nocc, tab, &keys, &nkeys, &keycap,
						 mark, local, nbt);
			bt->mvec = palloc0(sizeof(float *) * Max(bt->nmiss, 1));
			nbt++;
		}
	}

	/* the missing projections */
	for (int t = 0; t < nbt; t++)
		if (!bts[t].pt->joined && bts[t].nmiss > 0)
			batch_compute_phase1(sc, &bts[t], keys);
	batch_compute_joined(b->run_cxt, sc, bts, nbt, keys, nkeys);

	/* per tower: its rows' sums, then the upper layers */
	for (int t = 0; t < nbt; t++)
	{
		CHECK_FOR_INTERRUPTS();
		batch_forward(b, &bts[t], order, prob);
	}

	MemoryContextSwitchTo(old);
	MemoryContextReset(b->run_cxt);
	b->nrows = 0;
}
