/*
 * joined_keys.c
 *    Fine-tune rows as distinct keys with sparse frozen joined embeddings,
 *    and the first tower layer at a cost that follows the data (see
 *    joined_keys.h for why this is exact).
 *
 * Layout: a MtmsJoinedTable holds, key by key, the key's entries: the
 * pairs that have an embedding row for it (in pair order) and that row's
 * vector.  A MtmsJoinedKeys numbers the distinct keys of a set of rows and
 * points at their entries in a table.  To go through a tower's first
 * layer, a list of keys (a batch's, or a validation set's) is laid out in
 * Panels: field by field, the field's keys as rows and, as columns, only
 * the field's ACTIVE pairs (those in which one of these keys has an
 * entry), d columns each, zero where a key has no entry in a pair.  Field
 * f's products are then one cblas_sgemm of its panel J_f (keys x na*d)
 * by W1's columns of the blocks (active pair, f), gathered into one
 * h1 x na*d matrix, and the weight gradient is D_f^T J_f added to those
 * blocks.  When features occur in every scene (dense joins) the panels
 * are as wide as the joined input and this is the dense product; when a
 * scene's keys occur in a few scenes only, the cost shrinks with them.
 * A row's first layer is the sum of its keys' products.
 */
#include "joined_keys.h"
#include "feature_keys.h"

#include "blas.h"

#include "miscadmin.h"

#define VK_BATCH 512

/* ----------------------------------------------------------------
 * The flat table of entries
 * ---------------------------------------------------------------- */

struct MtmsJoinedTable
{
	int64		nkeys;
	int64		nent;			/* entries of all keys */
	int32		dim;
	int32		pad;
	/* then int64 start[nkeys + 1], int32 pair[nent], float vec[nent * dim] */
};

#define JT_HEADER	MAXALIGN(sizeof(MtmsJoinedTable))

static inline int64 *
jt_start(const MtmsJoinedTable *jt)
{
	return (int64 *) ((char *) jt + JT_HEADER);
}

static inline int32 *
jt_pair(const MtmsJoinedTable *jt)
{
	return (int32 *) (jt_start(jt) + jt->nkeys + 1);
}

static inline float *
jt_vec(const MtmsJoinedTable *jt)
{
	return (float *) ((char *) jt_pair(jt) + MAXALIGN(sizeof(int32) * jt->nent));
}

static Size
jt_bytes(int64 nkeys, int64 nent, int dim)
{
	return JT_HEADER + sizeof(int64) * (nkeys + 1) + MAXALIGN(sizeof(int32) * nent) +
		sizeof(float) * nent * dim;
}

Size
mtms_joined_table_bytes(const MtmsJoinedTable *jt)
{
	return jt_bytes(jt->nkeys, jt->nent, jt->dim);
}

/*
 * Each key's entries: its row in every pair's frozen table that has one,
 * in pair order.  One lookup per (key, pair); the vectors are copied once
 * the number of entries is known.
 */
MtmsJoinedTable *
mtms_joined_table_build(const MtmsModel *m, const MtmsFeatureKey *keys, int64 nkeys)
{
	int			d = m->dim;
	int64		cap = Max(nkeys, 1024);
	int64		nent = 0;
	int32	   *pair = palloc_extended(sizeof(int32) * cap, MCXT_ALLOC_HUGE);
	const float **src = palloc_extended(sizeof(float *) * cap, MCXT_ALLOC_HUGE);
	int64	   *start = palloc_extended(sizeof(int64) * (nkeys + 1), MCXT_ALLOC_HUGE);
	MtmsJoinedTable *jt;

	for (int64 k = 0; k < nkeys; k++)
	{
		if ((k & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		start[k] = nent;
		for (int q = 0; q < m->npairs; q++)
		{
			int64		idx = mtms_emb_find(m->emb[q], keys[k].hash);

			if (idx < 0)
				continue;
			if (nent == cap)
			{
				cap *= 2;
				pair = repalloc_huge(pair, sizeof(int32) * cap);
				src = repalloc_huge(src, sizeof(float *) * cap);
			}
			pair[nent] = q;
			src[nent++] = mtms_emb_vector(m->emb[q], idx);
		}
	}
	start[nkeys] = nent;

	jt = palloc_extended(jt_bytes(nkeys, nent, d), MCXT_ALLOC_HUGE);
	jt->nkeys = nkeys;
	jt->nent = nent;
	jt->dim = d;
	jt->pad = 0;
	memcpy(jt_start(jt), start, sizeof(int64) * (nkeys + 1));
	memcpy(jt_pair(jt), pair, sizeof(int32) * nent);
	for (int64 e = 0; e < nent; e++)
		memcpy(jt_vec(jt) + e * d, src[e], sizeof(float) * d);
	pfree(start);
	pfree(src);
	pfree(pair);
	return jt;
}

/* ----------------------------------------------------------------
 * Panels: a list of keys, field by field, dense over the field's pairs
 * ---------------------------------------------------------------- */

typedef struct Panels
{
	MemoryContext cxt;			/* of the arrays below */
	int			nfields;
	int			d;
	int64		n;				/* keys */
	int64	   *fstart;			/* [F + 1] keys of field f: order[fstart[f]..] */
	int64	   *order;			/* [n] panel row -> caller's key */
	int64		ncap;
	int64	   *astart;			/* [F + 1] active pairs of field f */
	int32	   *apair;			/* [sum of na] */
	int64		acap;
	int64	   *joff;			/* [F + 1] field f's panel in J */
	float	   *J;				/* per field nk x (na * d), zero where no entry */
	int64		jcap;
	int32	   *pos;			/* [npairs] scratch: pair -> panel column, -1 */
	int32		npairs;
	int32	   *run_col;		/* the first-layer column runs of the blocks */
	int32	   *run_len;
	int			nruns;
	int64		runcap;
	int64		lencap;
	float	   *wc;				/* h1 x (max na * d): gathered W1 columns */
	int64		wccap;
	float	   *pp;				/* n x h1: products / gradients, panel order */
	int64		ppcap;
} Panels;

/* buf (cap elements of size sz) with room for n, contents not kept */
static void *
room(MemoryContext cxt, void *buf, int64 *cap, int64 n, Size sz)
{
	if (*cap >= n && buf != NULL)
		return buf;
	if (buf)
		pfree(buf);
	*cap = Max(n, Max(2 * *cap, 1024));
	return MemoryContextAllocHuge(cxt, sz * *cap);
}

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return (x > y) - (x < y);
}

/* Order the n keys field by field (stable). */
static void
panels_order(Panels *pn, const int32 *kfield, int64 n)
{
	int			F = pn->nfields;
	int64	   *next = palloc(sizeof(int64) * F);

	memset(pn->fstart, 0, sizeof(int64) * (F + 1));
	for (int64 i = 0; i < n; i++)
		pn->fstart[kfield[i] + 1]++;
	for (int f = 0; f < F; f++)
		pn->fstart[f + 1] += pn->fstart[f];
	memcpy(next, pn->fstart, sizeof(int64) * F);
	for (int64 i = 0; i < n; i++)
		pn->order[next[kfield[i]]++] = i;
	pfree(next);
}

/* Field f's active pairs (those with an entry of one of its keys), sorted. */
static void
panels_active(Panels *pn, const MtmsJoinedTable *jt, const int64 *kid, int f)
{
	const int64 *start = jt_start(jt);
	const int32 *pair = jt_pair(jt);
	int64		a0 = pn->astart[f];
	int64		na = 0;

	for (int64 r = pn->fstart[f]; r < pn->fstart[f + 1]; r++)
	{
		int64		k = kid[pn->order[r]];

		for (int64 e = start[k]; e < start[k + 1]; e++)
			if (pn->pos[pair[e]] < 0)
			{
				pn->pos[pair[e]] = 0;
				pn->apair[a0 + na++] = pair[e];
			}
	}
	qsort(pn->apair + a0, na, sizeof(int32), cmp_int32);
	for (int64 a = 0; a < na; a++)
		pn->pos[pn->apair[a0 + a]] = -1;
	pn->astart[f + 1] = a0 + na;
}

/* Fill field f's panel of J from the keys' entries. */
static void
panels_fill(Panels *pn, const MtmsJoinedTable *jt, const int64 *kid, int f)
{
	const int64 *start = jt_start(jt);
	const int32 *pair = jt_pair(jt);
	const float *vec = jt_vec(jt);
	int			d = pn->d;
	int64		na = pn->astart[f + 1] - pn->astart[f];
	int64		w = na * d;
	float	   *J = pn->J + pn->joff[f];

	for (int64 a = 0; a < na; a++)
		pn->pos[pn->apair[pn->astart[f] + a]] = (int32) a;
	for (int64 r = pn->fstart[f]; r < pn->fstart[f + 1]; r++)
	{
		int64		k = kid[pn->order[r]];
		float	   *row = J + (r - pn->fstart[f]) * w;

		memset(row, 0, sizeof(float) * w);
		for (int64 e = start[k]; e < start[k + 1]; e++)
			memcpy(row + (Size) pn->pos[pair[e]] * d, vec + e * d, sizeof(float) * d);
	}
	for (int64 a = pn->astart[f]; a < pn->astart[f + 1]; a++)
		pn->pos[pn->apair[a]] = -1;
}

/* First joined-input column of field f's a-th active block. */
static inline int32
panel_block_col(const Panels *pn, const MtmsModel *m, int f, int64 a)
{
	return m->block_off[pn->apair[pn->astart[f] + a] * pn->nfields + f];
}

/*
 * The first-layer columns of all panels' blocks as merged runs: what a
 * training step's lazy Adam moves (validation panels need none).
 */
static void
panels_runs(Panels *pn, const MtmsModel *m)
{
	int			F = pn->nfields;
	int64		nb = pn->astart[F];
	int			nr = 0;

	pn->run_col = room(pn->cxt, pn->run_col, &pn->runcap, nb, sizeof(int32));
	pn->run_len = room(pn->cxt, pn->run_len, &pn->lencap, nb, sizeof(int32));
	for (int f = 0; f < F; f++)
		for (int64 a = 0; a < pn->astart[f + 1] - pn->astart[f]; a++)
			pn->run_col[nr++] = panel_block_col(pn, m, f, a);
	qsort(pn->run_col, nr, sizeof(int32), cmp_int32);
	pn->nruns = 0;
	for (int i = 0; i < nr; i++)
	{
		int			r = pn->nruns - 1;

		if (r >= 0 && pn->run_col[r] + pn->run_len[r] == pn->run_col[i])
			pn->run_len[r] += pn->d;
		else
		{
			pn->run_col[pn->nruns] = pn->run_col[i];
			pn->run_len[pn->nruns++] = pn->d;
		}
	}
}

/*
 * Build the panels of n keys (key i: number kid[i] in jt, field kfield[i])
 * for m's layout.
 */
static void
panels_build(Panels *pn, const MtmsModel *m, const MtmsJoinedTable *jt,
			 const int64 *kid, const int32 *kfield, int64 n)
{
	int			F = m->nfields;
	int64		total = 0;

	if (pn->fstart == NULL || pn->nfields != F || pn->npairs != m->npairs)
	{
		if (pn->fstart)
		{
			pfree(pn->fstart);
			pfree(pn->astart);
			pfree(pn->joff);
			pfree(pn->pos);
		}
		pn->nfields = F;
		pn->npairs = m->npairs;
		pn->fstart = MemoryContextAlloc(pn->cxt, sizeof(int64) * (F + 1));
		pn->astart = MemoryContextAlloc(pn->cxt, sizeof(int64) * (F + 1));
		pn->joff = MemoryContextAlloc(pn->cxt, sizeof(int64) * (F + 1));
		pn->pos = MemoryContextAlloc(pn->cxt, sizeof(int32) * Max(m->npairs, 1));
		memset(pn->pos, 0xff, sizeof(int32) * Max(m->npairs, 1));	/* -1 */
	}
	pn->d = m->dim;
	pn->n = n;
	pn->order = room(pn->cxt, pn->order, &pn->ncap, n, sizeof(int64));
	panels_order(pn, kfield, n);
	pn->apair = room(pn->cxt, pn->apair, &pn->acap, (int64) F * m->npairs, sizeof(int32));
	pn->astart[0] = 0;
	for (int f = 0; f < F; f++)
	{
		panels_active(pn, jt, kid, f);
		pn->joff[f] = total;
		total += (pn->fstart[f + 1] - pn->fstart[f]) *
			(pn->astart[f + 1] - pn->astart[f]) * pn->d;
	}
	pn->joff[F] = total;
	pn->J = room(pn->cxt, pn->J, &pn->jcap, total, sizeof(float));
	for (int f = 0; f < F; f++)
		panels_fill(pn, jt, kid, f);
}

static Panels *
panels_create(MemoryContext cxt)
{
	Panels	   *pn = MemoryContextAllocZero(cxt, sizeof(Panels));

	pn->cxt = cxt;
	return pn;
}

static void
panels_free(Panels *pn)
{
	void	   *bufs[] = {pn->fstart, pn->order, pn->astart, pn->apair, pn->joff,
	pn->J, pn->pos, pn->run_col, pn->run_len, pn->wc, pn->pp};

	for (int i = 0; i < lengthof(bufs); i++)
		if (bufs[i])
			pfree(bufs[i]);
	pfree(pn);
}

static void
check_joined_tower(const MtmsModel *m, const MtmsTower *t)
{
	if (t->sizes[0] != MTMS_INPUT2(m))
		elog(ERROR, "fine-tune tower input of %d columns does not match the model's %d",
			 t->sizes[0], MTMS_INPUT2(m));
}

/* wc (h1 x na*d) = tower t's first-layer columns of field f's active blocks. */
static void
panels_gather_columns(Panels *pn, const MtmsModel *m, const MtmsTower *t, int f)
{
	int			d = pn->d;
	int			h1 = t->sizes[1];
	int			nin = t->sizes[0];
	int64		a0 = pn->astart[f];
	int64		w = (pn->astart[f + 1] - a0) * d;

	pn->wc = room(pn->cxt, pn->wc, &pn->wccap, h1 * w, sizeof(float));
	for (int o = 0; o < h1; o++)
		for (int64 a = 0; a * d < w; a++)
			memcpy(pn->wc + o * w + a * d, t->W[0] + (Size) o * nin + panel_block_col(pn, m, f, a),
				   sizeof(float) * d);
}

/*
 * P (keys x h1, the caller's key order) = each key's first-layer products
 * for tower t: per field one cblas_sgemm of its panel by the gathered
 * columns of its active blocks.
 */
static void
panels_project(Panels *pn, const MtmsModel *m, const MtmsTower *t, float *P)
{
	int			h1 = t->sizes[1];

	pn->pp = room(pn->cxt, pn->pp, &pn->ppcap, Max(pn->n, 1) * h1, sizeof(float));
	for (int f = 0; f < pn->nfields; f++)
	{
		int64		nk = pn->fstart[f + 1] - pn->fstart[f];
		int64		w = (pn->astart[f + 1] - pn->astart[f]) * pn->d;
		float	   *out = pn->pp + pn->fstart[f] * h1;

		if (nk == 0)
			continue;
		if (w == 0)
		{
			memset(out, 0, sizeof(float) * nk * h1);
			continue;
		}
		panels_gather_columns(pn, m, t, f);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) nk, h1, (int) w,
					1.0f, pn->J + pn->joff[f], (int) w, pn->wc, (int) w, 0.0f, out, h1);
	}
	for (int64 r = 0; r < pn->n; r++)
		memcpy(P + (Size) pn->order[r] * h1, pn->pp + r * h1, sizeof(float) * h1);
}

/*
 * t->gW[0] += D^T X in the panels' blocks: per field G = D_f^T J_f (one
 * cblas_sgemm), added to the blocks' columns.  D: keys x h1, caller order.
 */
static void
panels_weight_grad(Panels *pn, const MtmsModel *m, MtmsTower *t, const float *D)
{
	int			d = pn->d;
	int			h1 = t->sizes[1];
	int			nin = t->sizes[0];

	pn->pp = room(pn->cxt, pn->pp, &pn->ppcap, Max(pn->n, 1) * h1, sizeof(float));
	for (int64 r = 0; r < pn->n; r++)
		memcpy(pn->pp + r * h1, D + (Size) pn->order[r] * h1, sizeof(float) * h1);
	for (int f = 0; f < pn->nfields; f++)
	{
		int64		nk = pn->fstart[f + 1] - pn->fstart[f];
		int64		a0 = pn->astart[f];
		int64		w = (pn->astart[f + 1] - a0) * d;

		if (nk == 0 || w == 0)
			continue;
		pn->wc = room(pn->cxt, pn->wc, &pn->wccap, h1 * w, sizeof(float));
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h1, (int) w, (int) nk,
					1.0f, pn->pp + pn->fstart[f] * h1, h1, pn->J + pn->joff[f], (int) w,
					0.0f, pn->wc, (int) w);
		for (int o = 0; o < h1; o++)
			for (int64 a = 0; a * d < w; a++)
			{
				float	   *restrict dst = t->gW[0] + (Size) o * nin + panel_block_col(pn, m, f, a);
				const float *restrict src = pn->wc + o * w + a * d;

				for (int k = 0; k < d; k++)
					dst[k] += src[k];
			}
	}
}

/*
 * H (n x h1) = per row the sum of its keys' projections P (row i's keys are
 * keys[start[i] .. start[i+1])): the hot loop, written so that the
 * compiler vectorizes it (restrict, no aliasing between H and P).
 */
static void
sum_projections(float *restrict H, const float *restrict P, int h1,
				const int64 *start, const int32 *keys, int n)
{
	for (int i = 0; i < n; i++)
	{
		float	   *restrict h = H + (Size) i * h1;

		memset(h, 0, sizeof(float) * h1);
		for (int64 j = start[i]; j < start[i + 1]; j++)
		{
			const float *restrict p = P + (Size) keys[j] * h1;

			for (int o = 0; o < h1; o++)
				h[o] += p[o];
		}
	}
}

/* ----------------------------------------------------------------
 * Row sets (validation rows, shuffle buffers, a unit's rows)
 * ---------------------------------------------------------------- */

struct MtmsJoinedKeys
{
	const MtmsJoinedTable *jt;	/* the keys' entries */
	MtmsJoinedTable *own_jt;	/* jt, when built for these keys */
	int64		nkeys;
	int64	   *key_id;			/* [nkeys] number in jt */
	int32	   *key_field;		/* [nkeys] */
	int64		nrows;
	int64	   *row_start;		/* [nrows + 1] */
	int32	   *row_keys;		/* key of every feature occurrence */
	Panels	   *all;			/* every key's panels (logits) */
};

MtmsJoinedKeys *
mtms_joined_keys_build(const MtmsModel *m, const MtmsRowSet *vs,
					   const int64 *rows, int64 nrows)
{
	MtmsJoinedKeys *vk = palloc0(sizeof(MtmsJoinedKeys));
	int64		nocc = 0;
	int64		nkeys = 0;
	mtms_fkhash_hash *tab;
	MtmsFeatureKey *keys;

	vk->nrows = nrows;
	if (rows == NULL)
		nocc = vs->start[nrows] - vs->start[0];
	else
		for (int64 i = 0; i < nrows; i++)
			nocc += vs->start[rows[i] + 1] - vs->start[rows[i]];
	vk->row_start = palloc_extended(sizeof(int64) * (nrows + 1), MCXT_ALLOC_HUGE);
	vk->row_keys = palloc_extended(sizeof(int32) * Max(nocc, 1), MCXT_ALLOC_HUGE);

	/* number the distinct keys in order of first sight */
	tab = mtms_fkhash_create(CurrentMemoryContext, (uint32) Min(Max(nocc / 4, 64), PG_INT32_MAX / 2), NULL);
	keys = palloc_extended(sizeof(MtmsFeatureKey) * Max(nocc, 1), MCXT_ALLOC_HUGE);
	nocc = 0;
	for (int64 i = 0; i < nrows; i++)
	{
		int64		r = rows ? rows[i] : i;

		if ((i & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		vk->row_start[i] = nocc;
		for (int64 j = vs->start[r]; j < vs->start[r + 1]; j++)
		{
			MtmsFeatureKey k;
			MtmsFeatureKeyEntry *e;
			bool		found;

			k.hash = vs->feats[j].hash;
			k.field = vs->feats[j].field;
			e = mtms_fkhash_insert(tab, k, &found);
			if (!found)
			{
				e->id = (int32) nkeys;
				keys[nkeys++] = k;
			}
			vk->row_keys[nocc++] = e->id;
		}
	}
	vk->row_start[nrows] = nocc;
	mtms_fkhash_destroy(tab);

	/* each key looked up once in every pair */
	vk->nkeys = nkeys;
	vk->own_jt = mtms_joined_table_build(m, keys, nkeys);
	vk->jt = vk->own_jt;
	vk->key_id = palloc_extended(sizeof(int64) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	vk->key_field = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < nkeys; k++)
	{
		vk->key_id[k] = k;
		vk->key_field[k] = keys[k].field;
	}
	pfree(keys);
	return vk;
}

/*
 * The keys of rows rows[0..n) of a row store, their entries in jt (the
 * store's keys' table, mtms_joined_table_build): nothing is looked up.
 */
MtmsJoinedKeys *
mtms_joined_keys_from_store(const MtmsRowStore *st, const int64 *rows, int64 n,
							const MtmsJoinedTable *jt)
{
	MtmsJoinedKeys *vk = palloc0(sizeof(MtmsJoinedKeys));
	const int64 *rstart = mtms_rs_row_start(st);
	const int32 *occ = mtms_rs_occ(st);
	const MtmsFeatureKey *skeys = mtms_rs_keys(st);
	int32	   *local = palloc_extended(sizeof(int32) * Max(st->nkeys, 1), MCXT_ALLOC_HUGE);
	int64		nocc = 0;

	if (jt->nkeys != st->nkeys)
		elog(ERROR, "joined table of " INT64_FORMAT " keys for a row store of " INT64_FORMAT,
			 jt->nkeys, st->nkeys);
	for (int64 i = 0; i < n; i++)
		nocc += rstart[rows[i] + 1] - rstart[rows[i]];
	vk->jt = jt;
	vk->nrows = n;
	vk->row_start = palloc_extended(sizeof(int64) * (n + 1), MCXT_ALLOC_HUGE);
	vk->row_keys = palloc_extended(sizeof(int32) * Max(nocc, 1), MCXT_ALLOC_HUGE);
	vk->key_id = palloc_extended(sizeof(int64) * Max(nocc, 1), MCXT_ALLOC_HUGE);
	memset(local, 0xff, sizeof(int32) * Max(st->nkeys, 1));

	/* number the distinct keys in order of first sight */
	nocc = 0;
	for (int64 i = 0; i < n; i++)
	{
		vk->row_start[i] = nocc;
		for (int64 j = rstart[rows[i]]; j < rstart[rows[i] + 1]; j++)
		{
			int32		g = occ[j];

			if (local[g] < 0)
			{
				local[g] = (int32) vk->nkeys;
				vk->key_id[vk->nkeys++] = g;
			}
			vk->row_keys[nocc++] = local[g];
		}
	}
	vk->row_start[n] = nocc;
	vk->key_field = palloc_extended(sizeof(int32) * Max(vk->nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < vk->nkeys; k++)
		vk->key_field[k] = skeys[vk->key_id[k]].field;
	pfree(local);
	return vk;
}

void
mtms_joined_keys_logits(MtmsJoinedKeys *vk, const MtmsModel *m,
						const MtmsTower *t, float *logits)
{
	int			h1 = t->sizes[1];
	float	   *P;
	float	   *H;
	MtmsTowerWork *w;

	check_joined_tower(m, t);
	if (vk->nrows == 0)
		return;
	if (vk->all == NULL)
	{
		/* kept as long as vk */
		vk->all = panels_create(GetMemoryChunkContext(vk));
		panels_build(vk->all, m, vk->jt, vk->key_id, vk->key_field, vk->nkeys);
	}

	P = palloc_extended(sizeof(float) * Max(vk->nkeys, 1) * h1, MCXT_ALLOC_HUGE);
	panels_project(vk->all, m, t, P);

	/* per row the sum of its keys' projections, then the other layers */
	H = palloc(sizeof(float) * VK_BATCH * h1);
	w = mtms_tower_work_create_hidden(t, VK_BATCH);
	for (int64 b = 0; b < vk->nrows; b += VK_BATCH)
	{
		int			n = (int) Min(VK_BATCH, vk->nrows - b);

		CHECK_FOR_INTERRUPTS();
		sum_projections(H, P, h1, vk->row_start + b, vk->row_keys, n);
		mtms_tower_forward_hidden(t, w, H, n, logits + b);
	}
	mtms_tower_work_free(w);
	pfree(H);
	pfree(P);
}

void
mtms_joined_keys_free(MtmsJoinedKeys *vk)
{
	if (vk == NULL)
		return;
	if (vk->all)
		panels_free(vk->all);
	if (vk->own_jt)
		pfree(vk->own_jt);
	pfree(vk->key_id);
	pfree(vk->key_field);
	pfree(vk->row_start);
	pfree(vk->row_keys);
	pfree(vk);
}

/* ----------------------------------------------------------------
 * Training batches
 * ---------------------------------------------------------------- */

struct MtmsKeyBatch
{
	MemoryContext cxt;
	int32	   *mark;			/* row set key -> local key, or -1 */
	int64		markcap;
	int			n;				/* rows of the batch */
	int			nloc;			/* distinct keys */
	int64	   *lkid;			/* local key -> number in the table */
	int32	   *lfield;			/* local key -> field */
	int32	   *loc;			/* local key -> row set key */
	int64	   *rstart;			/* [n + 1] */
	int32	   *rkeys;			/* local key of every occurrence */
	int64		occcap;
	int			rowcap;
	Panels	   *pn;				/* the batch's keys' panels */
	float	   *P;				/* nloc x h1: projections, then gradients */
	int64		pcap;			/* floats of P */
};

MtmsKeyBatch *
mtms_key_batch_create(void)
{
	MtmsKeyBatch *kb = palloc0(sizeof(MtmsKeyBatch));

	kb->cxt = CurrentMemoryContext;
	kb->pn = panels_create(kb->cxt);
	return kb;
}

/* Room for a batch of n rows with nocc occurrences of keys of vk. */
static void
key_batch_room(MtmsKeyBatch *kb, const MtmsJoinedKeys *vk, int n, int64 nocc)
{
	if (kb->markcap < vk->nkeys)
	{
		if (kb->mark)
			pfree(kb->mark);
		kb->markcap = Max(vk->nkeys, 1024);
		kb->mark = palloc_extended(sizeof(int32) * kb->markcap, MCXT_ALLOC_HUGE);
		memset(kb->mark, 0xff, sizeof(int32) * kb->markcap);	/* -1 */
	}
	if (kb->rowcap < n + 1)
	{
		kb->rowcap = n + 1;
		kb->rstart = kb->rstart ? repalloc(kb->rstart, sizeof(int64) * kb->rowcap) :
			palloc(sizeof(int64) * kb->rowcap);
	}
	if (kb->occcap < nocc)
	{
		/* a batch has at most as many distinct keys as occurrences */
		kb->occcap = Max(nocc, 4096);
		if (kb->rkeys)
		{
			pfree(kb->rkeys);
			pfree(kb->loc);
			pfree(kb->lkid);
			pfree(kb->lfield);
		}
		kb->rkeys = palloc(sizeof(int32) * kb->occcap);
		kb->loc = palloc(sizeof(int32) * kb->occcap);
		kb->lkid = palloc(sizeof(int64) * kb->occcap);
		kb->lfield = palloc(sizeof(int32) * kb->occcap);
	}
}

void
mtms_key_batch_prepare(MtmsKeyBatch *kb, const MtmsModel *m, const MtmsJoinedKeys *vk,
					   const int64 *rows, int n)
{
	MemoryContext old = MemoryContextSwitchTo(kb->cxt);
	int64		nocc = 0;
	int			nloc = 0;

	for (int i = 0; i < n; i++)
		nocc += vk->row_start[rows[i] + 1] - vk->row_start[rows[i]];
	key_batch_room(kb, vk, n, nocc);

	/* local numbers in order of first sight; rkeys[] in local numbers */
	nocc = 0;
	for (int i = 0; i < n; i++)
	{
		kb->rstart[i] = nocc;
		for (int64 j = vk->row_start[rows[i]]; j < vk->row_start[rows[i] + 1]; j++)
		{
			int32		k = vk->row_keys[j];

			if (kb->mark[k] < 0)
			{
				kb->mark[k] = nloc;
				kb->loc[nloc] = k;
				kb->lkid[nloc] = vk->key_id[k];
				kb->lfield[nloc++] = vk->key_field[k];
			}
			kb->rkeys[nocc++] = kb->mark[k];
		}
	}
	kb->rstart[n] = nocc;
	for (int i = 0; i < nloc; i++)
		kb->mark[kb->loc[i]] = -1;
	kb->n = n;
	kb->nloc = nloc;

	panels_build(kb->pn, m, vk->jt, kb->lkid, kb->lfield, nloc);
	panels_runs(kb->pn, m);
	MemoryContextSwitchTo(old);
}

/* Room for the keys' products of first layers of h1 units. */
static void
key_batch_reserve(MtmsKeyBatch *kb, int h1)
{
	kb->P = room(kb->cxt, kb->P, &kb->pcap, (int64) Max(kb->nloc, 1) * h1, sizeof(float));
}

void
mtms_key_batch_forward(MtmsKeyBatch *kb, const MtmsModel *m, const MtmsTower *t,
					   float *H1)
{
	check_joined_tower(m, t);
	key_batch_reserve(kb, t->sizes[1]);
	panels_project(kb->pn, m, t, kb->P);
	sum_projections(H1, kb->P, t->sizes[1], kb->rstart, kb->rkeys, kb->n);
}

void
mtms_key_batch_weight_grad(MtmsKeyBatch *kb, const MtmsModel *m, MtmsTower *t,
						   const float *delta1)
{
	int			h1 = t->sizes[1];

	check_joined_tower(m, t);
	key_batch_reserve(kb, h1);
	/* per key, the sum of the output gradients of the rows holding it */
	memset(kb->P, 0, sizeof(float) * (Size) kb->nloc * h1);
	for (int i = 0; i < kb->n; i++)
	{
		const float *restrict g = delta1 + (Size) i * h1;

		for (int64 j = kb->rstart[i]; j < kb->rstart[i + 1]; j++)
		{
			float	   *restrict D = kb->P + (Size) kb->rkeys[j] * h1;

			for (int o = 0; o < h1; o++)
				D[o] += g[o];
		}
	}
	panels_weight_grad(kb->pn, m, t, kb->P);
}

void
mtms_key_batch_step(MtmsKeyBatch *kb, MtmsTower *t, float lr, float l2)
{
	mtms_tower_step_input_runs(t, lr, l2, kb->pn->run_col, kb->pn->run_len, kb->pn->nruns);
}
