/*
 * joined_keys.c
 *    Validating fine-tune towers through per-key first-layer projections
 *    (see joined_keys.h for why this is exact).
 *
 * Layout: the distinct (feature hash, field) keys of the rows are numbered
 * field by field, so the keys of field f are [field_start[f],
 * field_start[f+1]) and their joined embeddings J (npairs * dim floats per
 * key, pair q's vector in columns q*dim ..) form one matrix per field.  For
 * a tower, the first-layer columns of field f (dim columns per pair,
 * scattered over the joined input by block_off) are gathered into one
 * nout x (npairs * dim) matrix, and P_f = J_f W1_f^T is one cblas_sgemm.
 */
#include "joined_keys.h"
#include "feature_keys.h"

#include <cblas.h>

#include "common/hashfn.h"
#include "miscadmin.h"

#define VK_BATCH 512

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
	MtmsFeatureKey	   *keys;
	int32	   *remap;
	int64	   *next;

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
			MtmsFeatureKey		k;
			MtmsFeatureKeyEntry    *e;
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

	/* renumber field by field */
	vk->nkeys = nkeys;
	vk->field_start = palloc0(sizeof(int64) * (F + 1));
	for (int64 k = 0; k < nkeys; k++)
		vk->field_start[keys[k].field + 1]++;
	for (int f = 0; f < F; f++)
		vk->field_start[f + 1] += vk->field_start[f];
	next = palloc(sizeof(int64) * F);
	memcpy(next, vk->field_start, sizeof(int64) * F);
	remap = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	vk->J = palloc_extended(sizeof(float) * Max(nkeys, 1) * vk->width, MCXT_ALLOC_HUGE);
	vk->key_field = palloc_extended(sizeof(int32) * Max(nkeys, 1), MCXT_ALLOC_HUGE);
	for (int64 k = 0; k < nkeys; k++)
	{
		int64		id = next[keys[k].field]++;
		float	   *dst = vk->J + id * vk->width;

		if ((k & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		remap[k] = (int32) id;
		vk->key_field[id] = keys[k].field;
		for (int q = 0; q < m->npairs; q++)
		{
			int64		idx = mtms_emb_find(m->emb[q], keys[k].hash);

			if (idx >= 0)
				memcpy(dst + q * d, mtms_emb_vector(m->emb[q], idx), sizeof(float) * d);
			else
				memset(dst + q * d, 0, sizeof(float) * d);
		}
	}
	for (int64 j = 0; j < nocc; j++)
		vk->row_keys[j] = remap[vk->row_keys[j]];
	pfree(next);
	pfree(remap);
	pfree(keys);
	return vk;
}

/*
 * h = bias + the sum of the projections of keys[0..nkeys): the hot loop of
 * a checkpoint, written so that the compiler vectorizes it (restrict, no
 * aliasing between h and P).
 */
static void
sum_projections(float *restrict h, const float *restrict bias,
				const float *restrict P, int h1, const int32 *keys, int nkeys)
{
	memcpy(h, bias, sizeof(float) * h1);
	for (int j = 0; j < nkeys; j++)
	{
		const float *restrict p = P + (Size) keys[j] * h1;

		for (int o = 0; o < h1; o++)
			h[o] += p[o];
	}
}

/* out = act(in W^T + b) for B rows, the layer's activation ReLU unless last */
static void
dense_layer(const MtmsTower *t, int l, const float *in, int B, float *out)
{
	int			nin = t->sizes[l];
	int			nout = t->sizes[l + 1];

	if (nout == 1)
	{
		for (int r = 0; r < B; r++)
			out[r] = t->b[l][0];
		cblas_sgemv(CblasRowMajor, CblasNoTrans, B, nin, 1.0f, in, nin,
					t->W[l], 1, 1.0f, out, 1);
	}
	else
	{
		for (int r = 0; r < B; r++)
			memcpy(out + (Size) r * nout, t->b[l], sizeof(float) * nout);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, nout, nin,
					1.0f, in, nin, t->W[l], nin, 1.0f, out, nout);
	}
	if (l < t->nlayers - 1)
		for (Size i = 0; i < (Size) B * nout; i++)
			out[i] = out[i] > 0.0f ? out[i] : 0.0f;
}

void
mtms_joined_keys_logits(const MtmsJoinedKeys *vk, const MtmsModel *m,
					   const MtmsTower *t, float *logits)
{
	int			F = vk->nfields;
	int			d = m->dim;
	int			W = vk->width;
	int			nin = t->sizes[0];
	int			h1 = t->sizes[1];
	int			widest = 1;
	float	   *Wf;
	float	   *P;
	float	   *buf[2];

	if (nin != MTMS_INPUT2(m) || W != m->npairs * d)
		elog(ERROR, "fine-tune tower input of %d columns does not match the model's %d",
			 nin, MTMS_INPUT2(m));
	if (vk->nrows == 0)
		return;
	for (int l = 1; l <= t->nlayers; l++)
		widest = Max(widest, t->sizes[l]);

	/* first layer per key: P_f = J_f W1_f^T, field by field */
	Wf = palloc(sizeof(float) * h1 * W);
	P = palloc_extended(sizeof(float) * Max(vk->nkeys, 1) * h1, MCXT_ALLOC_HUGE);
	for (int f = 0; f < F; f++)
	{
		int64		k0 = vk->field_start[f];
		int64		nk = vk->field_start[f + 1] - k0;

		if (nk == 0)
			continue;
		for (int o = 0; o < h1; o++)
			for (int q = 0; q < m->npairs; q++)
				memcpy(Wf + (Size) o * W + q * d,
					   t->W[0] + (Size) o * nin + m->block_off[q * F + f],
					   sizeof(float) * d);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) nk, h1, W,
					1.0f, vk->J + k0 * W, W, Wf, W, 0.0f, P + k0 * h1, h1);
	}

	/* then per row: the sum of its keys' projections, and the other layers */
	buf[0] = palloc(sizeof(float) * VK_BATCH * widest);
	buf[1] = palloc(sizeof(float) * VK_BATCH * widest);
	for (int64 b = 0; b < vk->nrows; b += VK_BATCH)
	{
		int			n = (int) Min(VK_BATCH, vk->nrows - b);
		float	   *h = buf[0];
		int			cur = 0;

		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < n; i++)
			sum_projections(h + (Size) i * h1, t->b[0], P, h1,
							vk->row_keys + vk->row_start[b + i],
							(int) (vk->row_start[b + i + 1] - vk->row_start[b + i]));
		if (t->nlayers == 1)
		{
			memcpy(logits + b, h, sizeof(float) * n);
			continue;
		}
		for (Size i = 0; i < (Size) n * h1; i++)
			h[i] = h[i] > 0.0f ? h[i] : 0.0f;
		for (int l = 1; l < t->nlayers; l++)
		{
			float	   *out = (l == t->nlayers - 1) ? logits + b : buf[1 - cur];

			dense_layer(t, l, buf[cur], n, out);
			cur = 1 - cur;
		}
	}
	pfree(buf[0]);
	pfree(buf[1]);
	pfree(P);
	pfree(Wf);
}

void
mtms_joined_keys_input2(const MtmsJoinedKeys *vk, const MtmsModel *m, int64 i,
						float *x)
{
	int			d = m->dim;
	int			F = m->nfields;

	memset(x, 0, sizeof(float) * MTMS_INPUT2(m));
	for (int64 j = vk->row_start[i]; j < vk->row_start[i + 1]; j++)
	{
		int32		key = vk->row_keys[j];
		const float *src = vk->J + (Size) key * vk->width;
		const int32 *off = m->block_off + vk->key_field[key];

		for (int q = 0; q < m->npairs; q++)
		{
			float	   *restrict dst = x + off[q * F];
			const float *restrict v = src + q * d;

			for (int k = 0; k < d; k++)
				dst[k] += v[k];
		}
	}
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
	const MtmsJoinedKeys *vk;	/* mark[] is sized for it */
	int32	   *mark;			/* vk key -> local key, or -1 */
	int64		markcap;
	int			n;				/* rows of the batch */
	int			nloc;			/* distinct keys */
	int			loccap;
	int32	   *loc;			/* local key -> vk key, grouped by field */
	int32	   *fstart;			/* [nfields + 1] local keys of each field */
	int32	   *rstart;			/* [n + 1] */
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
					   const MtmsModel *m, const int64 *rows, int n)
{
	MemoryContext old = MemoryContextSwitchTo(kb->cxt);
	int			F = vk->nfields;
	int64		nocc = 0;
	int			nloc = 0;

	if (kb->fstart == NULL || kb->W != vk->width)
	{
		kb->fstart = kb->fstart ? repalloc(kb->fstart, sizeof(int32) * (F + 1)) :
			palloc(sizeof(int32) * (F + 1));
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
	kb->vk = vk;
	for (int i = 0; i < n; i++)
		nocc += vk->row_start[rows[i] + 1] - vk->row_start[rows[i]];
	if (kb->rowcap < n + 1)
	{
		kb->rowcap = n + 1;
		kb->rstart = kb->rstart ? repalloc(kb->rstart, sizeof(int32) * kb->rowcap) :
			palloc(sizeof(int32) * kb->rowcap);
	}
	if (kb->occcap < nocc)
	{
		kb->occcap = Max(nocc, 4096);
		kb->rkeys = kb->rkeys ? repalloc(kb->rkeys, sizeof(int32) * kb->occcap) :
			palloc(sizeof(int32) * kb->occcap);
		kb->loccap = (int) kb->occcap;
		kb->loc = kb->loc ? repalloc(kb->loc, sizeof(int32) * kb->loccap) :
			palloc(sizeof(int32) * kb->loccap);
	}

	/* distinct keys, counted per field (mark = 1 while collecting) */
	memset(kb->fstart, 0, sizeof(int32) * (F + 1));
	for (int i = 0; i < n; i++)
		for (int64 j = vk->row_start[rows[i]]; j < vk->row_start[rows[i] + 1]; j++)
		{
			int32		k = vk->row_keys[j];

			if (kb->mark[k] < 0)
			{
				kb->mark[k] = 1;
				kb->loc[nloc++] = k;
				kb->fstart[vk->key_field[k] + 1]++;
			}
		}
	for (int f = 0; f < F; f++)
		kb->fstart[f + 1] += kb->fstart[f];

	/* local numbers grouped by field; rkeys[] in local numbers */
	{
		int32	   *next = palloc(sizeof(int32) * F);
		int32	   *tmp = palloc(sizeof(int32) * Max(nloc, 1));

		memcpy(next, kb->fstart, sizeof(int32) * F);
		for (int i = 0; i < nloc; i++)
		{
			int32		k = kb->loc[i];
			int32		pos = next[vk->key_field[k]]++;

			tmp[pos] = k;
			kb->mark[k] = pos;
		}
		memcpy(kb->loc, tmp, sizeof(int32) * nloc);
		pfree(tmp);
		pfree(next);
	}
	nocc = 0;
	for (int i = 0; i < n; i++)
	{
		kb->rstart[i] = (int32) nocc;
		for (int64 j = vk->row_start[rows[i]]; j < vk->row_start[rows[i] + 1]; j++)
			kb->rkeys[nocc++] = kb->mark[vk->row_keys[j]];
	}
	kb->rstart[n] = (int32) nocc;
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
	(void) m;
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
	int			F = m->nfields;
	int			d = m->dim;
	int			W = kb->W;
	int			nin = t->sizes[0];
	int			h1 = t->sizes[1];

	if (nin != MTMS_INPUT2(m) || W != m->npairs * d)
		elog(ERROR, "fine-tune tower input of %d columns does not match the model's %d",
			 nin, MTMS_INPUT2(m));
	key_batch_reserve(kb, h1);
	for (int f = 0; f < F; f++)
	{
		int			k0 = kb->fstart[f];
		int			nk = kb->fstart[f + 1] - k0;

		if (nk == 0)
			continue;
		for (int o = 0; o < h1; o++)
			for (int q = 0; q < m->npairs; q++)
				memcpy(kb->Wf + (Size) o * W + q * d,
					   t->W[0] + (Size) o * nin + m->block_off[q * F + f],
					   sizeof(float) * d);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nk, h1, W,
					1.0f, kb->Jb + (Size) k0 * W, W, kb->Wf, W,
					0.0f, kb->PD + (Size) k0 * h1, h1);
	}
	for (int i = 0; i < kb->n; i++)
	{
		float	   *restrict h = H1 + (Size) i * h1;

		memset(h, 0, sizeof(float) * h1);
		for (int32 j = kb->rstart[i]; j < kb->rstart[i + 1]; j++)
		{
			const float *restrict p = kb->PD + (Size) kb->rkeys[j] * h1;

			for (int o = 0; o < h1; o++)
				h[o] += p[o];
		}
	}
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

		for (int32 j = kb->rstart[i]; j < kb->rstart[i + 1]; j++)
		{
			float	   *restrict D = kb->PD + (Size) kb->rkeys[j] * h1;

			for (int o = 0; o < h1; o++)
				D[o] += g[o];
		}
	}
	for (int f = 0; f < F; f++)
	{
		int			k0 = kb->fstart[f];
		int			nk = kb->fstart[f + 1] - k0;

		if (nk == 0)
			continue;
		/* G (h1 x W) = D_f^T J_f, then into the field's columns of gW[0] */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h1, W, nk,
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
