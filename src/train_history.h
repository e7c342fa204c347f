/*
 * train_history.h
 *    The training history: every validation checkpoint of every unit of a
 *    training, collected while the stages run (both engines, whichever
 *    process trained the unit), written with the new version into
 *    mtms_training_history (schema 0.3 and later) and read back by
 *    mtms_training_info.
 *
 * A pair unit (embedding stage) gives one row per checkpoint, its task; a
 * scene unit (ctcvr, finetune) three, 'ctr', 'cvr' and 'ctcvr', from its
 * per-metric figures.
 */
#ifndef MTMS_TRAIN_HISTORY_H
#define MTMS_TRAIN_HISTORY_H

#include "mtms.h"
#include "model.h"
#include "train_stages.h"
#include "unit_train.h"

typedef struct MtmsHistory MtmsHistory;

/* An empty history, in CurrentMemoryContext (it grows there). */
extern MtmsHistory *mtms_history_create(void);

/* A unit's checkpoints cps[0..n), in the order they happened. */
extern void mtms_history_add_unit(MtmsHistory *h, const MtmsStageInfo *si, int unit,
								  const MtmsCheckpoint *cps, int n);

/* The checkpoint a stage's unit of scene kept (0: its start), or -1. */
extern int	mtms_history_kept(const MtmsHistory *h, const MtmsStageInfo *si, int scene);

/* Drop the rows of scene's units of a stage (it runs again). */
extern void mtms_history_forget(MtmsHistory *h, const MtmsStageInfo *si, int scene);

/*
 * Write the history as version's, in one statement, through SPI (the
 * caller is connected, inside a writing catalog scope).  Nothing on a
 * schema without the table (0.2, before ALTER EXTENSION mtms UPDATE).
 */
extern void mtms_history_write(const MtmsHistory *h, const MtmsModel *m,
							   const char *schema, int32 model_id, int32 version);

#endif							/* MTMS_TRAIN_HISTORY_H */
