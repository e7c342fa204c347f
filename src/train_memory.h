/*
 * train_memory.h
 *    The memory plan of a training by unit jobs (see train_memory.c):
 *    how many processes train, how many bytes the kept rows may take, and
 *    the check against mtms.max_memory before a stage starts.
 */
#ifndef MTMS_TRAIN_MEMORY_H
#define MTMS_TRAIN_MEMORY_H

#include "model.h"
#include "train_stages.h"

/* Parallel workers a stage of njobs units asks for (mtms.train_workers). */
extern int	mtms_train_workers_for(int njobs);

/*
 * Bytes a collecting pass may keep rows in for the stage: what
 * mtms.max_memory leaves beside the model and the units' copies, over the
 * three copies the rows pass through (kept, grouped, shared).  0: none.
 */
extern Size mtms_rows_room(const MtmsModel *m, const MtmsStageInfo *si, Size kept_already);

/*
 * ERROR unless the stage's plan fits mtms.max_memory: the model once, the
 * row stores and joined tables (again in shared memory when workers
 * help), and per process the largest unit three times (its start, its
 * best checkpoint, its result).  pair_bytes: NULL for the model as m holds
 * it, or each pair's phase-1 bytes to count instead (a chained stage
 * checked with the model as the stage before it left it, whichever of its
 * own units are elsewhere or back by then).
 */
extern void mtms_check_units_memory(const MtmsModel *m, const Size *pair_bytes,
									const MtmsStageInfo *si, int njobs, Size rows, Size joined);

/* A pair's phase-1 parameters and optimizer state (embeddings, tower). */
extern Size mtms_pair_bytes(const MtmsModel *m, int p);

/*
 * Give the memory freed so far back to the operating system.  glibc keeps
 * freed blocks of a few MB (a fine-tune tower, a row store) in the heap
 * for reuse, so dropping the model's copy of a stage's parameters would
 * not lower the process's footprint without it.
 */
extern void mtms_return_freed_memory(void);

#endif							/* MTMS_TRAIN_MEMORY_H */
