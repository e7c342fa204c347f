/*
 * unit_train.h
 *    Training one unit of a stage to convergence, on its own: the unit's
 *    rows (its scene's rows of the window, the clicked ones for a CVR pair)
 *    in an order drawn from (seed, stage, epoch, unit) alone, mini-batches,
 *    evals_per_epoch validations per pass over them, a stop after patience
 *    validations without an improvement of more than min_delta, and the
 *    parameters of its best validation kept.
 *
 * A unit's trajectory depends on nothing but its own rows, its starting
 * parameters and the seed: not on the other units, on which process trains
 * it, or on how many do.  So units train in any order, in parallel
 * workers or one after the other, and the model is the same bit for bit.
 */
#ifndef MTMS_UNIT_TRAIN_H
#define MTMS_UNIT_TRAIN_H

#include "mtms.h"
#include "model.h"
#include "options.h"
#include "row_store.h"
#include "train_stages.h"

/* What a unit reports of a validation (the best one, in the end). */
typedef struct MtmsUnitResult
{
	bool		trained;
	int32		epochs;			/* passes over the unit's rows, started */
	int64		samples;		/* the unit's rows per pass */
	double		train_loss;
	double		valid_loss;
	double		valid_auc;
	double		crit;			/* the early-stopping criterion */
	/* per metric slot (CTR, CVR, CTCVR) of the unit's scene */
	int64		m_n[MTMS_NMETRICS];
	double		m_train[MTMS_NMETRICS];
	double		m_loss[MTMS_NMETRICS];
	double		m_auc[MTMS_NMETRICS];
} MtmsUnitResult;

/* The rows every unit of a stage reads (shared, read-only). */
typedef struct MtmsUnitData
{
	const MtmsRowStore *rows;	/* the stage's window of training rows */
	const MtmsRowStore *valid;	/* the validation rows */
	const struct MtmsJoinedTable *joined_rows;	/* keyed stages: the joined
												 * embeddings of rows' keys
												 * (mtms_joined_table_build) */
	const struct MtmsJoinedTable *joined_valid; /* ... and of valid's keys */
} MtmsUnitData;

typedef struct MtmsUnitJob
{
	const MtmsStageInfo *si;
	int			unit;
	MtmsModel  *model;			/* the unit's parameters train in place */
	const MtmsOptions *opts;
	const int32 *frozen_fields; /* [npairs] phase-1 growth, or NULL */
	const MtmsUnitData *data;
	/*
	 * Called after every mini-batch in the caller's memory context, or
	 * NULL: the leader of a parallel session keeps feeding its workers
	 * while it trains a unit itself (train_parallel.c).  It must not touch
	 * the unit's parameters.
	 */
	void		(*between_batches) (void *arg);
	void	   *between_arg;
	bool		start_is_candidate; /* the starting parameters are kept unless
									 * a validation does better */
} MtmsUnitJob;

/*
 * One validation of a unit, for the training history (train_history.h):
 * checkpoint 0 is the validation of the starting parameters (when they are
 * a candidate), 1, 2, ... the validations during training.  A plain array
 * of these crosses process boundaries as bytes (train_parallel.c).
 */
typedef struct MtmsCheckpoint
{
	int32		checkpoint;
	int32		epoch;			/* the pass it happened in (0: before any) */
	int64		rows;			/* rows the unit had trained on so far */
	double		seconds;		/* since the unit started */
	bool		kept;			/* the unit kept these parameters */
	/* per metric slot (CTR, CVR, CTCVR) of the unit's scene; NaN: none */
	double		train_loss[MTMS_NMETRICS];	/* of the pass so far */
	double		valid_loss[MTMS_NMETRICS];
	double		valid_auc[MTMS_NMETRICS];
} MtmsCheckpoint;

typedef struct MtmsUnitOutcome
{
	MtmsUnitResult best;		/* of the kept parameters */
	int32		checkpoints;	/* validations during training */
	int32		best_checkpoint;	/* 0: the start was kept */
	double		epochs;			/* passes over the unit's rows, run */
	int64		rows_trained;	/* rows of all its mini-batches */
	double		seconds;
	int32		nhistory;		/* every validation, the start's first */
	MtmsCheckpoint *history;	/* [nhistory], in the caller's context */
} MtmsUnitOutcome;

/* The rows unit trains on per pass: its share of the work. */
extern int64 mtms_unit_rows(const MtmsStageInfo *si, int unit, const MtmsRowStore *rows);

/*
 * Train job's unit; the model's other parameters are only read.  Emits
 * one NOTICE (debug level DEBUG1 for units without rows).  out->history
 * is allocated in the caller's memory context.
 */
extern void mtms_unit_train(const MtmsUnitJob *job, MtmsUnitOutcome *out);

#endif							/* MTMS_UNIT_TRAIN_H */
