/*
 * joined_keys.c
 *    Fine-tune rows as distinct keys with frozen joined embeddings, and the
 *    first tower layer through per-key projections (see joined_keys.h for
 *    why this is exact).
 *
 * Layout: the distinct (feature hash, field) keys of a set of rows are
 * numbered field by field, so the keys of field f are [fstart[f],
 * fstart[f+1]) and their joined embeddings J (npairs * dim floats per key,
 * pair q's vector in columns q*dim ..) form one matrix per field.  For a
 * tower, the first-layer columns of field f (dim columns per pair,
 * scattered over the joined input by block_off) are gathered into one
 * h1 x (npairs * dim) matrix Wf, and P_f = J_f Wf^T is one cblas_sgemm;
 * a row's first-layer products are the sum of its keys' rows of P.  The
 * validation rows (MtmsJoinedKeys) and a training batch (MtmsKeyBatch,
 * numbering the batch's keys among the shuffle buffer's) share this.
 */
#include "joined_keys.h"
#include "feature_keys.h"

#include "blas.h"

#include "miscadmin.h"

#define VK_BATCH 512

/*
 * Number n items field by field: fstart[0..F] (zeroed here) gets the first
 * number of each field, pos[i] the number of item i (of field field[i]),
 * items of one field keeping their order.
 */
static void
group_by_field(const int32 *field, int64 n, int F, int64 *fstart, int32 *pos)
{
	int64	   *next = palloc(sizeof(int64) * Max(F, 1));

	memset(fstart, 0, sizeof(int64) * (F + 1));
	for (int64 i = 0; i < n; i++)
		fstart[field[i] + 1]++;
	for (int f = 0; f < F; f++)
		fstart[f + 1] += fstart[f];
	memcpy(next, fstart, sizeof(int64) * F);
	for (int64 i = 0; i < n; i++)
		pos[i] = (int32) next[field[i]]++;
	pfree(next);
}

/*
 * A key's joined embedding (npairs * dim floats into dst): its vector in
 * every pair's frozen table, zero where a pair has no row for it.
 */
static void
joined_vector(const MtmsModel *m, uint64 hash, float *dst)
{
	int			d = m->dim;

	for (int q = 0; q < m->npairs; q++)
	{
		int64		idx = mtms_emb_find(m->emb[q], hash);

		if (idx >= 0)
			memcpy(dst + q * d, mtms_emb_vector(m->emb[q], idx), sizeof(float) * d);
		else
			memset(dst + q * d, 0, sizeof(float) * d);
	}
}

static void
check_joined_tower(const MtmsModel *m, const MtmsTower *t, int W)
{
	if (t->sizes[0] != MTMS_INPUT2(m) || W != m->npairs * m->dim)
		elog(ERROR, "fine-tune tower input of %d columns does not match the model's %d",
			 t->sizes[0], MTMS_INPUT2(m));
}

/* Wf (h1 x W) = tower t's first-layer columns of field f, pair by pair. */
static void
gather_field_columns(const MtmsModel *m, const MtmsTower *t, int f, float *Wf)
{
	int			F = m->nfields;
	int			d = m->dim;
	int			W = m->npairs * d;
	int			nin = t->sizes[0];

	for (int o = 0; o < t->sizes[1]; o++)
		for (int q = 0; q < m->npairs; q++)
			memcpy(Wf + (Size) o * W + q * d,
				   t->W[0] + (Size) o * nin + m->block_off[q * F + f],
				   sizeof(float) * d);
}

/*
 * P (keys x h1) = each key's first-layer products for tower t: the keys'
 * joined embeddings J (W floats each) are grouped by field as fstart says;
 * Wf is scratch of h1 x W floats.
 */
static void
project_keys(const MtmsModel *m, const MtmsTower *t, const float *J,
			 const int64 *fstart, float *Wf, float *P)
{
	int			W = m->npairs * m->dim;
	int			h1 = t->sizes[1];

	for (int f = 0; f < m->nfields; f++)
	{
		int64		k0 = fstart[f];
		int64		nk = fstart[f + 1] - k0;

		if (nk == 0)
			continue;
		gather_field_columns(m, t, f, Wf);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) nk, h1, W,
					1.0f, J + k0 * W, W, Wf, W, 0.0f, P + k0 * h1, h1);
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
 * Row sets (validation rows, shuffle buffers)
 * ---------------------------------------------------------------- */

struct MtmsJoinedKeys
{
	int32		nfields;
	int32		width;			/* npairs * dim */
	int64		nkeys;
	int64	   *field_start;	/* [nfields + 1] */
	int32	   *key_field;		/* [nkeys] */
	float	   *J;				/* [nkeys * width] */
	int64		nrows;
	int64	   *row_start;		/* [nrows + 1] */
	int32	   *row_keys;		/* key of every feature occurrence */
};

MtmsJoinedKeys *
mtms_joined_keys_build(const MtmsModel *m, const MtmsRowSet *vs,
					   const int64 *rows, int64 nrows)
{
	MtmsJoinedKeys *vk = palloc0(sizeof(MtmsJoinedKeys));
	int			F = m->nfields;
	int			d = m->dim;
	int64		nocc = 0;
	int64		nkeys = 0;
	mtms_fkhash_hash *tab;
	MtmsFeatureKey *keys;
	int32	   *fields;
	int32	   *remap;

	vk->nfields = F;
	vk->width = m->npairs * d;
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

	/* renumber field by field, and look each key up once */
	vk->nkeys = nkeys;
	vk->field_start = palloc(sizeof(int64) * (F + 1));
	fields = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	remap = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < nkeys; k++)
		fields[k] = keys[k].field;
	group_by_field(fields, nkeys, F, vk->field_start, remap);
	vk->J = palloc_extended(sizeof(float) * Max(nkeys, 1) * vk->width, MCXT_ALLOC_HUGE);
	vk->key_field = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < nkeys; k++)
	{
		float	   *dst = vk->J + (Size) remap[k] * vk->width;

		if ((k & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		vk->key_field[remap[k]] = keys[k].field;
		joined_vector(m, keys[k].hash, dst);
	}
	for (int64 j = 0; j < nocc; j++)
		vk->row_keys[j] = remap[vk->row_keys[j]];
	pfree(fields);
	pfree(remap);
	pfree(keys);
	return vk;
}

/*
 * A store's keys' joined embeddings from m's frozen tables: row k of the
 * result (npairs * dim floats) is key k's vector in every pair, zero where
 * a pair has no row for it.
 */
float *
mtms_joined_table_build(const MtmsModel *m, const MtmsFeatureKey *keys, int64 nkeys)
{
	int			d = m->dim;
	Size		width = (Size) m->npairs * d;
	float	   *J = palloc_extended(sizeof(float) * Max(nkeys, 1) * width, MCXT_ALLOC_HUGE);

	for (int64 k = 0; k < nkeys; k++)
	{
		float	   *dst = J + (Size) k * width;

		if ((k & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		joined_vector(m, keys[k].hash, dst);
	}
	return J;
}

/*
 * The keys of rows rows[0..n) of a row store, their joined embeddings taken
 * from J (the store's keys' table, mtms_joined_table_build): the same
 * layout as mtms_joined_keys_build, without looking anything up.
 */
MtmsJoinedKeys *
mtms_joined_keys_from_store(const MtmsRowStore *st, const int64 *rows, int64 n,
							const float *J, int nfields, int width)
{
	MtmsJoinedKeys *vk = palloc0(sizeof(MtmsJoinedKeys));
	const int64 *rstart = mtms_rs_row_start(st);
	const int32 *occ = mtms_rs_occ(st);
	const MtmsFeatureKey *skeys = mtms_rs_keys(st);
	int32	   *local = palloc_extended(sizeof(int32) * Max(st->nkeys, 1), MCXT_ALLOC_HUGE);
	int64	   *global;
	int32	   *fields;
	int32	   *remap;
	int64		nocc = 0;

	for (int64 i = 0; i < n; i++)
		nocc += rstart[rows[i] + 1] - rstart[rows[i]];
	vk->nfields = nfields;
	vk->width = width;
	vk->nrows = n;
	vk->row_start = palloc_extended(sizeof(int64) * (n + 1), MCXT_ALLOC_HUGE);
	vk->row_keys = palloc_extended(sizeof(int32) * Max(nocc, 1), MCXT_ALLOC_HUGE);
	global = palloc_extended(sizeof(int64) * Max(nocc, 1), MCXT_ALLOC_HUGE);
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
				global[vk->nkeys++] = g;
			}
			vk->row_keys[nocc++] = local[g];
		}
	}
	vk->row_start[n] = nocc;

	/* field by field, as the projections want them */
	vk->field_start = palloc(sizeof(int64) * (nfields + 1));
	fields = palloc_extended(sizeof(int32) * Max(vk->nkeys, 1), MCXT_ALLOC_HUGE);
	remap = palloc_extended(sizeof(int32) * Max(vk->nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < vk->nkeys; k++)
		fields[k] = skeys[global[k]].field;
	group_by_field(fields, vk->nkeys, nfields, vk->field_start, remap);
	vk->J = palloc_extended(sizeof(float) * Max(vk->nkeys, 1) * width, MCXT_ALLOC_HUGE);
	vk->key_field = palloc_extended(sizeof(int32) * Max(vk->nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < vk->nkeys; k++)
	{
		memcpy(vk->J + (Size) remap[k] * width, J + (Size) global[k] * width,
			   sizeof(float) * width);
		vk->key_field[remap[k]] = fields[k];
	}
	for (int64 j = 0; j < nocc; j++)
		vk->row_keys[j] = remap[vk->row_keys[j]];
	pfree(fields);
	pfree(remap);
	pfree(global);
	pfree(local);
	return vk;
}

void
mtms_joined_keys_logits(const MtmsJoinedKeys *vk, const MtmsModel *m,
						const MtmsTower *t, float *logits)
{
	int			h1 = t->sizes[1];
	float	   *Wf;
	float	   *P;
	float	   *H;
	MtmsTowerWork *w;

	check_joined_tower(m, t, vk->width);
	if (vk->nrows == 0)
		return;

	Wf = palloc(sizeof(float) * h1 * vk->width);
	P = palloc_extended(sizeof(float) * Max(vk->nkeys, 1) * h1, MCXT_ALLOC_HUGE);
	project_keys(m, t, vk->J, vk->field_start, Wf, P);

	/* per row the sum of its keys' projections, then the other layers */
	H = palloc(sizeof(float) * VK_BATCH * h1);
	w = mtms_tower_work_create(t, VK_BATCH);
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
	pfree(Wf);
}

void
mtms_joined_keys_free(MtmsJoinedKeys *vk)
{
	if (vk == NULL)
		return;
	pfree(vk->field_start);
	pfree(vk->key_field);
	pfree(vk->J);
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
	int32	   *mark;			/* buffer key -> local key, or -1 */
	int64		markcap;
	int			n;				/* rows of the batch */
	int			nloc;			/* distinct keys */
	int32	   *loc;			/* local key -> buffer key, grouped by field */
	int32	   *locfield;		/* field of loc[i] while numbering */
	int32	   *locpos;			/* its local number */
	int64	   *fstart;			/* [nfields + 1] local keys of each field */
	int64	   *rstart;			/* [n + 1] */
	int32	   *rkeys;			/* local key of every occurrence */
	int64		occcap;
	int			rowcap;
	int			W;				/* npairs * dim */
	float	   *Jb;				/* nloc x W */
	float	   *Wf;				/* h1 x W */
	float	   *PD;				/* nloc x h1: projections, then gradients */
	int64		pdcap;
	float	   *G;				/* h1 x W */
	int			h1cap;
};

MtmsKeyBatch *
mtms_key_batch_create(void)
{
	MtmsKeyBatch *kb = palloc0(sizeof(MtmsKeyBatch));

	kb->cxt = CurrentMemoryContext;
	return kb;
}

void
mtms_key_batch_prepare(MtmsKeyBatch *kb, const MtmsJoinedKeys *vk,
					   const int64 *rows, int n)
{
	MemoryContext old = MemoryContextSwitchTo(kb->cxt);
	int			F = vk->nfields;
	int64		nocc = 0;
	int			nloc = 0;

	if (kb->fstart == NULL || kb->W != vk->width)
	{
		kb->fstart = kb->fstart ? repalloc(kb->fstart, sizeof(int64) * (F + 1)) :
			palloc(sizeof(int64) * (F + 1));
		kb->W = vk->width;
		kb->h1cap = 0;
	}
	if (kb->markcap < vk->nkeys)
	{
		if (kb->mark)
			pfree(kb->mark);
		kb->markcap = Max(vk->nkeys, 1024);
		kb->mark = palloc_extended(sizeof(int32) * kb->markcap, MCXT_ALLOC_HUGE);
		memset(kb->mark, 0xff, sizeof(int32) * kb->markcap);	/* -1 */
	}
	for (int i = 0; i < n; i++)
		nocc += vk->row_start[rows[i] + 1] - vk->row_start[rows[i]];
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
			pfree(kb->locfield);
			pfree(kb->locpos);
		}
		kb->rkeys = palloc(sizeof(int32) * kb->occcap);
		kb->loc = palloc(sizeof(int32) * kb->occcap);
		kb->locfield = palloc(sizeof(int32) * kb->occcap);
		kb->locpos = palloc(sizeof(int32) * kb->occcap);
	}

	/* the distinct keys in order of first sight (mark = 1 meanwhile) */
	for (int i = 0; i < n; i++)
		for (int64 j = vk->row_start[rows[i]]; j < vk->row_start[rows[i] + 1]; j++)
		{
			int32		k = vk->row_keys[j];

			if (kb->mark[k] < 0)
			{
				kb->mark[k] = 1;
				kb->locfield[nloc] = vk->key_field[k];
				kb->loc[nloc++] = k;
			}
		}

	/* local numbers grouped by field; rkeys[] in local numbers */
	group_by_field(kb->locfield, nloc, F, kb->fstart, kb->locpos);
	for (int i = 0; i < nloc; i++)
		kb->mark[kb->loc[i]] = kb->locpos[i];
	for (int i = 0; i < nloc; i++)
		kb->locfield[kb->locpos[i]] = kb->loc[i];	/* reused: keys by number */
	memcpy(kb->loc, kb->locfield, sizeof(int32) * nloc);
	nocc = 0;
	for (int i = 0; i < n; i++)
	{
		kb->rstart[i] = nocc;
		for (int64 j = vk->row_start[rows[i]]; j < vk->row_start[rows[i] + 1]; j++)
			kb->rkeys[nocc++] = kb->mark[vk->row_keys[j]];
	}
	kb->rstart[n] = nocc;
	for (int i = 0; i < nloc; i++)
		kb->mark[kb->loc[i]] = -1;
	kb->n = n;
	kb->nloc = nloc;

	/* the keys' joined embeddings, contiguous */
	if (kb->pdcap < (int64) nloc)
	{
		kb->pdcap = Max(nloc, 1024);
		if (kb->Jb)
			pfree(kb->Jb);
		kb->Jb = palloc_extended(sizeof(float) * kb->pdcap * kb->W, MCXT_ALLOC_HUGE);
		if (kb->PD)
			pfree(kb->PD);
		kb->PD = NULL;			/* sized with h1 on first use */
		kb->h1cap = 0;
	}
	for (int i = 0; i < nloc; i++)
		memcpy(kb->Jb + (Size) i * kb->W, vk->J + (Size) kb->loc[i] * vk->width,
			   sizeof(float) * kb->W);
	MemoryContextSwitchTo(old);
}

/* Scratch sized for first layers of h1 units. */
static void
key_batch_reserve(MtmsKeyBatch *kb, int h1)
{
	MemoryContext old;

	if (kb->h1cap >= h1 && kb->PD != NULL)
		return;
	old = MemoryContextSwitchTo(kb->cxt);
	if (kb->PD)
		pfree(kb->PD);
	if (kb->Wf)
		pfree(kb->Wf);
	if (kb->G)
		pfree(kb->G);
	kb->h1cap = h1;
	kb->PD = palloc_extended(sizeof(float) * Max(kb->pdcap, 1) * h1, MCXT_ALLOC_HUGE);
	kb->Wf = palloc(sizeof(float) * h1 * kb->W);
	kb->G = palloc(sizeof(float) * h1 * kb->W);
	MemoryContextSwitchTo(old);
}

void
mtms_key_batch_forward(MtmsKeyBatch *kb, const MtmsModel *m, const MtmsTower *t,
					   float *H1)
{
	check_joined_tower(m, t, kb->W);
	key_batch_reserve(kb, t->sizes[1]);
	project_keys(m, t, kb->Jb, kb->fstart, kb->Wf, kb->PD);
	sum_projections(H1, kb->PD, t->sizes[1], kb->rstart, kb->rkeys, kb->n);
}

void
mtms_key_batch_weight_grad(MtmsKeyBatch *kb, const MtmsModel *m, MtmsTower *t,
						   const float *delta1)
{
	int			F = m->nfields;
	int			d = m->dim;
	int			W = kb->W;
	int			nin = t->sizes[0];
	int			h1 = t->sizes[1];

	key_batch_reserve(kb, h1);
	/* per key, the sum of the output gradients of the rows holding it */
	memset(kb->PD, 0, sizeof(float) * (Size) kb->nloc * h1);
	for (int i = 0; i < kb->n; i++)
	{
		const float *restrict g = delta1 + (Size) i * h1;

		for (int64 j = kb->rstart[i]; j < kb->rstart[i + 1]; j++)
		{
			float	   *restrict D = kb->PD + (Size) kb->rkeys[j] * h1;

			for (int o = 0; o < h1; o++)
				D[o] += g[o];
		}
	}
	for (int f = 0; f < F; f++)
	{
		int64		k0 = kb->fstart[f];
		int64		nk = kb->fstart[f + 1] - k0;

		if (nk == 0)
			continue;
		/* G (h1 x W) = D_f^T J_f, then into the field's columns of gW[0] */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h1, W, (int) nk,
					1.0f, kb->PD + (Size) k0 * h1, h1, kb->Jb + (Size) k0 * W, W,
					0.0f, kb->G, W);
		for (int o = 0; o < h1; o++)
			for (int q = 0; q < m->npairs; q++)
			{
				float	   *restrict dst = t->gW[0] + (Size) o * nin + m->block_off[q * F + f];
				const float *restrict src = kb->G + (Size) o * W + q * d;

				for (int k = 0; k < d; k++)
					dst[k] += src[k];
			}
	}
}
