/*
 * kept_rows.c
 *    Training rows kept by a collecting pass, compactly (see kept_rows.h).
 *
 * Arrays grow by doubling (repalloc_huge: no 1 GB limit) and are trimmed
 * to their size by mtms_kept_rows_finish.
 */
#include "kept_rows.h"

#include "feature_keys.h"
#include "utils/memutils.h"

struct MtmsKeptRows
{
	MemoryContext cxt;
	int64		nrows;
	int64		rowcap;
	int32	   *scene;
	uint8	   *label;
	int64	   *start;			/* row i: feat[start[i] .. start[i + 1]) */
	int64		nfeat;
	int64		featcap;
	int32	   *feat;			/* key numbers */
	int32		nkeys;
	int32		keycap;
	MtmsFeatureKey *keys;
	mtms_fkhash_hash *lookup;	/* NULL once finished */
};

MtmsKeptRows *
mtms_kept_rows_create(MemoryContext cxt)
{
	MtmsKeptRows *kr = MemoryContextAllocZero(cxt, sizeof(MtmsKeptRows));

	kr->cxt = cxt;
	kr->rowcap = 1024;
	kr->scene = MemoryContextAlloc(cxt, sizeof(int32) * kr->rowcap);
	kr->label = MemoryContextAlloc(cxt, sizeof(uint8) * kr->rowcap);
	kr->start = MemoryContextAlloc(cxt, sizeof(int64) * (kr->rowcap + 1));
	kr->start[0] = 0;
	kr->featcap = 8192;
	kr->feat = MemoryContextAlloc(cxt, sizeof(int32) * kr->featcap);
	kr->keycap = 1024;
	kr->keys = MemoryContextAlloc(cxt, sizeof(MtmsFeatureKey) * kr->keycap);
	kr->lookup = mtms_fkhash_create(cxt, 1024, NULL);
	return kr;
}

void
mtms_kept_rows_add(MtmsKeptRows *kr, int32 scene, uint8 label,
				   const MtmsFeature *feats, int nfeats)
{
	if (kr->lookup == NULL)
		elog(ERROR, "mtms: rows added to a finished set of kept rows");
	if (kr->nrows + 1 > kr->rowcap)
	{
		kr->rowcap *= 2;
		kr->scene = repalloc_huge(kr->scene, sizeof(int32) * kr->rowcap);
		kr->label = repalloc_huge(kr->label, sizeof(uint8) * kr->rowcap);
		kr->start = repalloc_huge(kr->start, sizeof(int64) * (kr->rowcap + 1));
	}
	if (kr->nfeat + nfeats > kr->featcap)
	{
		kr->featcap = Max(kr->featcap * 2, kr->nfeat + nfeats);
		kr->feat = repalloc_huge(kr->feat, sizeof(int32) * kr->featcap);
	}
	for (int i = 0; i < nfeats; i++)
	{
		MtmsFeatureKey k;
		MtmsFeatureKeyEntry *e;
		bool		found;

		k.hash = feats[i].hash;
		k.field = feats[i].field;
		e = mtms_fkhash_insert(kr->lookup, k, &found);
		if (!found)
		{
			if (kr->nkeys == PG_INT32_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("mtms: more than %d distinct features in the kept training rows",
								PG_INT32_MAX),
						 errhint("Set mtms.keep_training_rows to off.")));
			if (kr->nkeys == kr->keycap)
			{
				kr->keycap = (int32) Min((int64) kr->keycap * 2, (int64) PG_INT32_MAX);
				kr->keys = repalloc_huge(kr->keys, sizeof(MtmsFeatureKey) * kr->keycap);
			}
			e->id = kr->nkeys;
			kr->keys[kr->nkeys++] = k;
		}
		kr->feat[kr->nfeat++] = e->id;
	}
	kr->scene[kr->nrows] = scene;
	kr->label[kr->nrows] = label;
	kr->nrows++;
	kr->start[kr->nrows] = kr->nfeat;
}

void
mtms_kept_rows_finish(MtmsKeptRows *kr)
{
	if (kr->lookup == NULL)
		return;
	mtms_fkhash_destroy(kr->lookup);
	kr->lookup = NULL;
	kr->rowcap = Max(kr->nrows, 1);
	kr->scene = repalloc_huge(kr->scene, sizeof(int32) * kr->rowcap);
	kr->label = repalloc_huge(kr->label, sizeof(uint8) * kr->rowcap);
	kr->start = repalloc_huge(kr->start, sizeof(int64) * (kr->rowcap + 1));
	kr->featcap = Max(kr->nfeat, 1);
	kr->feat = repalloc_huge(kr->feat, sizeof(int32) * kr->featcap);
	kr->keycap = Max(kr->nkeys, 1);
	kr->keys = repalloc_huge(kr->keys, sizeof(MtmsFeatureKey) * kr->keycap);
}

int64
mtms_kept_rows_count(const MtmsKeptRows *kr)
{
	return kr->nrows;
}

int
mtms_kept_rows_raw(const MtmsKeptRows *kr, int64 i, int32 *scene, uint8 *label,
				   const int32 **occ)
{
	*scene = kr->scene[i];
	*label = kr->label[i];
	*occ = kr->feat + kr->start[i];
	return (int) (kr->start[i + 1] - kr->start[i]);
}

const MtmsFeatureKey *
mtms_kept_rows_keys(const MtmsKeptRows *kr, int64 *nkeys)
{
	*nkeys = kr->nkeys;
	return kr->keys;
}

int64
mtms_kept_rows_occurrences(const MtmsKeptRows *kr)
{
	return kr->nfeat;
}
