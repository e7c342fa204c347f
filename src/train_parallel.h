/*
 * train_parallel.h
 *    Unit jobs spread over parallel workers (see train_parallel.c).
 */
#ifndef MTMS_TRAIN_PARALLEL_H
#define MTMS_TRAIN_PARALLEL_H

#include "train_driver.h"

/*
 * Run plan's jobs in the leader and mtms.train_workers parallel workers,
 * their outcomes into out[] (in job order) and the trained units into
 * cx->model.  False, having done nothing, when no worker can help (none
 * allowed, one job, no dynamic shared memory): run them here then.
 * *workers gets the number of workers that took part.  The plan's joined
 * tables move into the shared segment (the plan's pointers become NULL).
 */
extern bool mtms_train_parallel(MtmsTrainCtx *cx, MtmsUnitPlan *plan,
								MtmsUnitOutcome *out, int *workers);

#endif							/* MTMS_TRAIN_PARALLEL_H */
