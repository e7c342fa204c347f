/*
 * progress.h
 *    Progress of long mtms work (a training, an evaluation, generating
 *    synthetic samples) that any session can read through the mtms_progress
 *    view, the way PostgreSQL's pg_stat_progress_* views report its own
 *    long commands.
 *
 * Each backend has one slot in shared memory (indexed by its backend /
 * proc number), written by that backend and its parallel workers.
 * The slots live in the main shared memory segment when mtms is in
 * shared_preload_libraries, else (PostgreSQL 17 and later) in a DSM
 * segment registered by name on first use; on PostgreSQL 15 and 16
 * without preloading there is nowhere to put them and every call here
 * does nothing (the view says so).
 */
#ifndef MTMS_PROGRESS_H
#define MTMS_PROGRESS_H

#include "postgres.h"

/* _PG_init: request the shared memory when the library is preloaded. */
extern void mtms_progress_init(void);

/*
 * The calling backend starts (ends) reporting command ("train",
 * "evaluate", "synthetic") on model (NULL: none).  The slot is cleared at
 * the end of the transaction too, so an error or a cancel never leaves a
 * row behind.  A begin while this backend already reports is ignored and
 * returns false (the outer command keeps its row: the caller then reports
 * no stages and does not end it); true when the caller owns the row.
 */
extern bool mtms_progress_begin(const char *command, const char *model);
extern void mtms_progress_end(void);

/*
 * A new stage (or, for stages that run pass by pass, a new pass of it):
 * rows_total rows per pass over its units_total units (-1: unknown), with
 * workers parallel workers.  Resets the row and unit counters and the
 * clock of the rate.
 */
extern void mtms_progress_stage(const char *stage, int epoch, int units_total,
								int64 rows_total, int workers);

/* How many parallel workers the stage got. */
extern void mtms_progress_workers(int workers);

/* The unit (scene, task or NULL) and pass a participant started last. */
extern void mtms_progress_unit(const char *scene, const char *task, int epoch);

/* n more rows done; from the leader or any of its parallel workers. */
extern void mtms_progress_rows(int64 n);

/*
 * A unit finished after trained rows, over rows_per_pass rows a pass: the
 * estimated end of the stage extrapolates from the finished units.
 */
extern void mtms_progress_unit_done(int64 trained, int64 rows_per_pass);

/* The planner's estimate of a relation's rows (-1: a view), for rows_total. */
extern int64 mtms_progress_relation_rows(Oid relid);

/* mtms_progress_end when the context is reset or deleted (an SRF's end). */
extern void mtms_progress_end_with(MemoryContext cxt);

/*
 * Test hook (mtms.test_pause_lock): wait for a shared advisory lock on the
 * key the setting names (+ 1 every other pause) and release it at once, so
 * that a test holding the locks pauses the work at well-defined points.
 */
extern void mtms_progress_pause(void);

extern int	mtms_test_pause_lock;

#endif							/* MTMS_PROGRESS_H */
