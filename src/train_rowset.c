/*
 * train_rowset.c
 *    Parsed sample rows in flat arrays (see train_rowset.h).
 */
#include "train_rowset.h"

#include "utils/memutils.h"

void
mtms_rowset_init(MtmsRowSet *rs)
{
	memset(rs, 0, sizeof(MtmsRowSet));
}

void
mtms_rowset_reserve(MtmsRowSet *rs, int64 rows, int64 feats)
{
	if (rows + 1 > rs->cap)
	{
		int64		cap = Max(rs->cap * 2, Max(rows + 1, 1024));

		if (rs->cap == 0)
		{
			rs->scene = palloc_extended(sizeof(int32) * cap, MCXT_ALLOC_HUGE);
			rs->label = palloc_extended(sizeof(uint8) * cap, MCXT_ALLOC_HUGE);
			rs->start = palloc_extended(sizeof(int64) * (cap + 1), MCXT_ALLOC_HUGE);
			rs->start[0] = 0;
		}
		else
		{
			rs->scene = repalloc_huge(rs->scene, sizeof(int32) * cap);
			rs->label = repalloc_huge(rs->label, sizeof(uint8) * cap);
			rs->start = repalloc_huge(rs->start, sizeof(int64) * (cap + 1));
		}
		rs->cap = cap;
	}
	if (feats > rs->featcap)
	{
		int64		cap = Max(rs->featcap * 2, Max(feats, 8192));

		if (rs->featcap == 0)
			rs->feats = palloc_extended(sizeof(MtmsFeature) * cap, MCXT_ALLOC_HUGE);
		else
			rs->feats = repalloc_huge(rs->feats, sizeof(MtmsFeature) * cap);
		rs->featcap = cap;
	}
}

void
mtms_rowset_add(MtmsRowSet *rs, int32 scene, uint8 label,
				const MtmsFeature *feats, int nfeats)
{
	mtms_rowset_reserve(rs, rs->nrows + 1, rs->nfeats + nfeats);
	if (rs->nrows == 0)
		rs->start[0] = 0;
	rs->scene[rs->nrows] = scene;
	rs->label[rs->nrows] = label;
	if (nfeats > 0)
		memcpy(rs->feats + rs->nfeats, feats, sizeof(MtmsFeature) * nfeats);
	rs->nfeats += nfeats;
	rs->nrows++;
	rs->start[rs->nrows] = rs->nfeats;
}

void
mtms_rowset_append(MtmsRowSet *dst, const MtmsRowSet *src)
{
	for (int64 i = 0; i < src->nrows; i++)
		mtms_rowset_add(dst, src->scene[i], src->label[i],
						src->feats + src->start[i],
						(int) (src->start[i + 1] - src->start[i]));
}

void
mtms_rowset_copy(MtmsRowSet *dst, const MtmsRowSet *src)
{
	mtms_rowset_init(dst);
	mtms_rowset_append(dst, src);
}

void
mtms_rowset_clear(MtmsRowSet *rs)
{
	rs->nrows = 0;
	rs->nfeats = 0;
}

