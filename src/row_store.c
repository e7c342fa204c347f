/*
 * row_store.c
 *    Rows grouped by scene in one flat block (see row_store.h).
 */
#include "row_store.h"

#include "miscadmin.h"
#include "utils/memutils.h"

/* Block layout for the given counts; returns its size. */
static Size
layout(MtmsRowStore *h, int nscenes, int64 nrows, int64 nocc, int64 nkeys)
{
	Size		off = MAXALIGN(sizeof(MtmsRowStore));

	h->magic = MTMS_ROW_STORE_MAGIC;
	h->nscenes = nscenes;
	h->nrows = nrows;
	h->nocc = nocc;
	h->nkeys = nkeys;
	h->off_scene_first = off;
	off += MAXALIGN(sizeof(int64) * (nscenes + 1));
	h->off_row_start = off;
	off += MAXALIGN(sizeof(int64) * (nrows + 1));
	h->off_keys = off;
	off += MAXALIGN(sizeof(MtmsFeatureKey) * nkeys);
	h->off_occ = off;
	off += MAXALIGN(sizeof(int32) * nocc);
	h->off_label = off;
	off += MAXALIGN(nrows);
	h->size = off;
	return off;
}

MtmsRowStore *
mtms_row_store_build(const MtmsKeptRows *kr, int nscenes)
{
	int64		nrows = mtms_kept_rows_count(kr);
	int64		nkeys;
	const MtmsFeatureKey *keys = mtms_kept_rows_keys(kr, &nkeys);
	MtmsRowStore h;
	MtmsRowStore *s;
	int64	   *first;
	int64	   *next;
	int64	   *row_start;
	int32	   *occ;
	uint8	   *label;
	int64	   *order;

	layout(&h, nscenes, nrows, mtms_kept_rows_occurrences(kr), nkeys);
	s = MemoryContextAllocExtended(CurrentMemoryContext, h.size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	*s = h;
	first = (int64 *) mtms_rs_scene_first(s);
	row_start = (int64 *) mtms_rs_row_start(s);
	occ = (int32 *) mtms_rs_occ(s);
	label = (uint8 *) mtms_rs_labels(s);
	memcpy((char *) s + s->off_keys, keys, sizeof(MtmsFeatureKey) * nkeys);

	/* a counting sort by scene, stable: rows of a scene in reading order */
	for (int64 i = 0; i < nrows; i++)
	{
		int32		sc;
		uint8		lb;
		const int32 *o;

		(void) mtms_kept_rows_raw(kr, i, &sc, &lb, &o);
		if (sc < 0 || sc >= nscenes)
			elog(ERROR, "mtms: kept row of scene %d in a store of %d scenes", sc, nscenes);
		first[sc + 1]++;
	}
	for (int sc = 0; sc < nscenes; sc++)
		first[sc + 1] += first[sc];
	next = palloc(sizeof(int64) * nscenes);
	memcpy(next, first, sizeof(int64) * nscenes);
	order = palloc_extended(sizeof(int64) * Max(nrows, 1), MCXT_ALLOC_HUGE);
	for (int64 i = 0; i < nrows; i++)
	{
		int32		sc;
		uint8		lb;
		const int32 *o;

		(void) mtms_kept_rows_raw(kr, i, &sc, &lb, &o);
		order[next[sc]++] = i;
	}
	row_start[0] = 0;
	for (int64 r = 0; r < nrows; r++)
	{
		int32		sc;
		const int32 *o;
		int			n = mtms_kept_rows_raw(kr, order[r], &sc, &label[r], &o);

		if ((r & 65535) == 0)
			CHECK_FOR_INTERRUPTS();
		memcpy(occ + row_start[r], o, sizeof(int32) * n);
		row_start[r + 1] = row_start[r] + n;
	}
	pfree(order);
	pfree(next);
	return s;
}

void
mtms_row_store_copy(const MtmsRowStore *store, void *dst)
{
	memcpy(dst, store, store->size);
}

void
mtms_row_store_check(const MtmsRowStore *p, Size size)
{
	MtmsRowStore h;

	if (size < sizeof(MtmsRowStore) || p->magic != MTMS_ROW_STORE_MAGIC ||
		p->nscenes < 1 || p->nrows < 0 || p->nocc < 0 || p->nkeys < 0 ||
		layout(&h, p->nscenes, p->nrows, p->nocc, p->nkeys) != p->size || p->size != size)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: invalid row store")));
}

void
mtms_row_store_decode(const MtmsRowStore *s, int scene, const int64 *rows, int64 n,
					  MtmsRowSet *out)
{
	const int64 *row_start = mtms_rs_row_start(s);
	const int32 *occ = mtms_rs_occ(s);
	const MtmsFeatureKey *keys = mtms_rs_keys(s);
	const uint8 *label = mtms_rs_labels(s);
	int64		nocc = 0;

	for (int64 i = 0; i < n; i++)
		nocc += row_start[rows[i] + 1] - row_start[rows[i]];
	mtms_rowset_clear(out);
	mtms_rowset_reserve(out, n, nocc);
	out->start[0] = 0;
	for (int64 i = 0; i < n; i++)
	{
		int64		r = rows[i];
		MtmsFeature *f = out->feats + out->nfeats;
		int64		k = row_start[r + 1] - row_start[r];

		for (int64 j = 0; j < k; j++)
		{
			const MtmsFeatureKey *key = &keys[occ[row_start[r] + j]];

			f[j].hash = key->hash;
			f[j].field = key->field;
		}
		out->scene[i] = scene;
		out->label[i] = label[r];
		out->nfeats += k;
		out->start[i + 1] = out->nfeats;
	}
	out->nrows = n;
}
