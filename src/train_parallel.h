/*
 * train_parallel.h
 *    Unit jobs spread over parallel workers (see train_parallel.c).
 */
#ifndef MTMS_TRAIN_PARALLEL_H
#define MTMS_TRAIN_PARALLEL_H

#include "train_driver.h"
#include "datatype/timestamp.h"

/*
 * Run the jobs of plans[0..nplans) (a chain of stages on the same rows:
 * plans[0]'s data) in the leader and mtms.train_workers parallel workers,
 * their outcomes into outs[k][] (in each plan's job order), the time
 * plan k's last job came back into ends[k], and the trained units into
 * cx->model.  A job of plans[k] starts once the jobs of plans[k - 1] whose
 * units share a pair with it are back.  False, having done nothing, when
 * no worker can help (none allowed, one job, no dynamic shared memory):
 * run them here then.  *workers gets the number of workers that took
 * part.  The joined tables move into the shared segment (the plans'
 * pointers become NULL).
 */
extern bool mtms_train_parallel(MtmsTrainCtx *cx, MtmsUnitPlan *plans, int nplans,
								MtmsUnitOutcome **outs, TimestampTz *ends, int *workers);

#endif							/* MTMS_TRAIN_PARALLEL_H */
