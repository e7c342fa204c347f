/*
 * unit_snapshot.h
 *    A copy of a unit's parameters, kept from its best validation: its
 *    pairs' embeddings and phase-1 towers, or their fine-tune towers.
 */
#ifndef MTMS_UNIT_SNAPSHOT_H
#define MTMS_UNIT_SNAPSHOT_H

#include "mtms.h"
#include "model.h"
#include "train_stages.h"

typedef struct MtmsUnitSnapshot
{
	int			npairs;			/* 0: nothing kept */
	int			pairs[2];
	MtmsEmbStore *emb[2];
	MtmsTower  *tower[2];
} MtmsUnitSnapshot;

/* Copy the unit's parameters (in the current memory context). */
extern void mtms_unit_snapshot_take(MtmsUnitSnapshot *s, const MtmsModel *m,
									const MtmsStageInfo *si, int unit);
/* Put them back into m (copies in m's context). */
extern void mtms_unit_snapshot_restore(MtmsUnitSnapshot *s, MtmsModel *m,
									   const MtmsStageInfo *si);
extern void mtms_unit_snapshot_free(MtmsUnitSnapshot *s);

#endif							/* MTMS_UNIT_SNAPSHOT_H */
