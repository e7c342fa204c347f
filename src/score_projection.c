/*
 * score_projection.c
 *    The first-layer projection cache (see score_projection.h).
 *
 * One table per tower (pair) in use, created on the pair's first row:
 * a simplehash from the feature hash (the entry checks the field) to the
 * index of the projection vector, -1 for a key no pair knows.  Vectors
 * live in chunks of PROJ_CHUNK vectors, h1 floats padded to a multiple of
 * 8 (zeros) so the products and the per-row sums run on whole vector
 * registers; they never move.
 */
#include "score_projection.h"

#include "blas.h"
#include "optimizer.h"			/* MTMS_VEC_CLONES */
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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
	int			h1p;			/* h1 rounded up to 8: a vector's stride */
	int			nread;			/* first-layer input columns read */
	projhash_hash *ht;
	float	  **chunks;
	int			nchunks;
	int			maxchunks;
	int64		nvec;
} ProjTower;

struct MtmsScorer
{
	MemoryContext cxt;
	const MtmsModel *m;
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
	sc->towers = MemoryContextAllocZero(cxt, sizeof(ProjTower *) * m->npairs);
	sc->reserve = tower_fixed_bytes() * m->npairs;
	for (int p = 0; p < m->npairs; p++)
	{
		const MtmsTower *t = m->tower2[p] ? m->tower2[p] : m->tower1[p];

		for (int l = 1; l <= t->nlayers; l++)
			widest = Max(widest, t->sizes[l]);
	}
	widest = (widest + 7) & ~7;
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
	pt->h1p = (pt->h1 + 7) & ~7;
	pt->nread = t->nin_used > 0 ? t->nin_used : t->sizes[0];
	pt->ht = projhash_create(sc->cxt, PROJ_INITIAL, NULL);
	pt->maxchunks = 16;
	pt->chunks = MemoryContextAlloc(sc->cxt, sizeof(float *) * pt->maxchunks);
	sc->bytes += sizeof(ProjTower) + pt->ht->size * sizeof(ProjEntry) +
		sizeof(float *) * pt->maxchunks;
	sc->reserve -= Min(sc->reserve, tower_fixed_bytes());
	sc->towers[p] = pt;
	return pt;
}

/*
 * The first-layer products of a key with one block of input columns, the
 * arithmetic every projection goes through:
 *
 *     p[o] += sum over j < ncols of W1[o][off + j] e[j]    (o < h1)
 *
 * Each sum runs over j in order, from W1[o][off] e[0], and is then added
 * to p[o]: plain IEEE operations in a fixed order, the same on any vector
 * unit (no FMA contraction, see the Makefile), which a kernel for many
 * keys at once can repeat exactly (an OpenBLAS sgemv, as before, sums in
 * its own order, which a batched product cannot reproduce).  p has h1p
 * floats (a multiple of 8); its padding, +0 like all of p at first, stays
 * +0.
 */
typedef float v8sf __attribute__((vector_size(32)));
typedef float v8sf_u __attribute__((vector_size(32), aligned(4)));

/* a with b's lanes as 8..15: the lanes i0 .. i7 (GCC and clang spell it differently) */
#ifdef __clang__
#define SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
	__builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
typedef int v8si __attribute__((vector_size(32)));
#define SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
	__builtin_shuffle(a, b, (v8si) {i0, i1, i2, i3, i4, i5, i6, i7})
#endif

/*
 * Straight from the weights W (h1 rows, ldw floats apart): for one key.
 * Eight rows at a time, eight columns of them transposed in registers.
 */
MTMS_VEC_CLONES static void
block_products_rows(const float *W, int ldw, int h1, int ncols, const float *e, float *p)
{
	int			o = 0;

	for (; o + 8 <= h1; o += 8)
	{
		const float *w = W + (Size) o * ldw;
		v8sf		t = {0};
		int			j = 0;

		for (; j + 8 <= ncols; j += 8)
		{
			v8sf		r[8],
						a[8],
						b[8],
						c[8];

			for (int i = 0; i < 8; i++)
				r[i] = *(const v8sf_u *) (w + (Size) i * ldw + j);
			for (int i = 0; i < 8; i += 2)
			{
				a[i] = SHUFFLE8(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
				a[i + 1] = SHUFFLE8(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
			}
			for (int i = 0; i < 8; i += 4)
			{
				b[i] = SHUFFLE8(a[i], a[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
				b[i + 1] = SHUFFLE8(a[i], a[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
				b[i + 2] = SHUFFLE8(a[i + 1], a[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
				b[i + 3] = SHUFFLE8(a[i + 1], a[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
			}
			for (int i = 0; i < 4; i++)
			{
				c[i] = SHUFFLE8(b[i], b[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
				c[i + 4] = SHUFFLE8(b[i], b[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
			}
			/* c[i]: column j + i of the 8 rows */
			for (int i = 0; i < 8; i++)
				t = (j + i == 0) ? c[0] * e[0] : t + c[i] * e[j + i];
		}
		for (; j < ncols; j++)
		{
			v8sf		c;

			for (int i = 0; i < 8; i++)
				c[i] = w[(Size) i * ldw + j];
			t = (j == 0) ? c * e[0] : t + c * e[j];
		}
		*(v8sf_u *) (p + o) = *(v8sf_u *) (p + o) + t;
	}
	for (; o < h1; o++)
	{
		const float *w = W + (Size) o * ldw;
		float		t = w[0] * e[0];

		for (int j = 1; j < ncols; j++)
			t = t + w[j] * e[j];
		p[o] = p[o] + t;
	}
}

/* Columns of the block at off that the tower reads (0: none). */
static inline int
block_cols(const ProjTower *pt, int off, int dim)
{
	return off >= pt->nread ? 0 : Min(dim, pt->nread - off);
}

/* out += W1[:, off .. off + dim) v, reading only the columns the tower reads */
static inline void
add_block(const ProjTower *pt, int off, int dim, const float *v, float *out)
{
	int			ncols = block_cols(pt, off, dim);

	if (ncols > 0)
		block_products_rows(pt->tower->W[0] + off, pt->tower->sizes[0], pt->h1, ncols, v, out);
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

/*
 * The vector to add for feature f (NULL: zero), computing it on a miss
 * into missbuf (h1p floats), which must stay untouched until it is added.
 */
static inline const float *
projection_get(MtmsScorer *sc, ProjTower *pt, const MtmsFeature *f, float *missbuf)
{
	ProjEntry  *e = projhash_lookup(pt->ht, f->hash);
	bool		known;

	if (likely(e != NULL && e->field == f->field))
		return e->vec >= 0 ? vec_ptr(pt, e->vec) : NULL;
	known = projection_compute(sc, pt, f, missbuf);
	sc->computed++;
	if (e != NULL)
	{
		/* the same hash in another field: not kept */
		sc->uncached++;
		return known ? missbuf : NULL;
	}
	return projection_insert(sc, pt, f, known, missbuf);
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
			mtms_prefetch(&pt->ht->data[PROJ_HASH(fb[i].hash) & pt->ht->sizemask]);
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

void
mtms_scorer_stats(const MtmsScorer *sc, MtmsScorerStats *st)
{
	st->keys = sc->keys;
	st->zero_keys = sc->zero_keys;
	st->bytes = (int64) sc->bytes;
	st->cap_bytes = (int64) mtms_scorer_cap_bytes();
	st->computed = sc->computed;
	st->uncached = sc->uncached;
}
