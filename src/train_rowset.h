/*
 * train_rowset.h
 *    Parsed sample rows in flat arrays: each row's scene, its labels and
 *    its features (field, hash), as the training passes buffer, validate
 *    and serialize them.
 */
#ifndef MTMS_TRAIN_ROWSET_H
#define MTMS_TRAIN_ROWSET_H

#include "mtms.h"
#include "feature_parser.h"

#define MTMS_LABEL_CLICK	0x01
#define MTMS_LABEL_CONV		0x02

/* Parsed sample rows: scene, labels and features, in flat arrays. */
typedef struct MtmsRowSet
{
	int64		nrows;
	int64		cap;
	int32	   *scene;
	uint8	   *label;
	int64	   *start;			/* row i's features: feats[start[i] .. start[i+1]) */
	MtmsFeature *feats;
	int64		nfeats;
	int64		featcap;
} MtmsRowSet;

/* Empty; arrays grow in the current memory context. */
extern void mtms_rowset_init(MtmsRowSet *rs);
/* Room for rows rows and feats features in all (grows the arrays). */
extern void mtms_rowset_reserve(MtmsRowSet *rs, int64 rows, int64 feats);
extern void mtms_rowset_add(MtmsRowSet *rs, int32 scene, uint8 label,
							const MtmsFeature *feats, int nfeats);
extern void mtms_rowset_append(MtmsRowSet *dst, const MtmsRowSet *src);
extern void mtms_rowset_copy(MtmsRowSet *dst, const MtmsRowSet *src);
/* No rows (the arrays are kept for reuse). */
extern void mtms_rowset_clear(MtmsRowSet *rs);

#endif							/* MTMS_TRAIN_ROWSET_H */
