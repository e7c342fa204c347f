/*
 * train_step.h
 *    What one mini-batch step of a training stage works on: the model, the
 *    options, scratch buffers, the loss statistics, and for the fine-tune
 *    the frozen joined embeddings of the rows (joined_keys.h).  The stage
 *    tables (train_stages.h) hold the step functions; the passes that feed
 *    them (the aggregates' shuffle buffer, the unit jobs) fill a
 *    MtmsStepCtx.
 */
#ifndef MTMS_TRAIN_STEP_H
#define MTMS_TRAIN_STEP_H

#include "mtms.h"
#include "model.h"
#include "options.h"
#include "train_loss.h"
#include "train_rowset.h"

typedef enum MtmsStage
{
	MTMS_STAGE_EMBEDDING = 0,	/* phase 1: every pair on its own samples */
	MTMS_STAGE_CTCVR = 1,		/* phase 1: pCTR x pCVR per scene */
	MTMS_STAGE_FINETUNE = 2,	/* phase 2: towers on the joined embeddings */
	MTMS_STAGE_REFIT = 3		/* after it: small scenes' phase 1 again on
								 * all their training rows (train_refit.c) */
} MtmsStage;

/* Scratch buffers of the training steps, sized for one mini-batch. */
typedef struct MtmsBatchWork
{
	int32		max_batch;
	float	   *xa;				/* B x input1 (CTR side / the pair) */
	float	   *xb;				/* B x input (CVR side) */
	float	   *dx;				/* B x input1 */
	float	   *za;				/* B logits */
	float	   *zb;
	float	   *da;				/* B dLoss/dlogit */
	float	   *db;
	MtmsTowerWork *w1a;			/* phase-1 tower activations */
	MtmsTowerWork *w1b;
	MtmsTowerWork *w2a;			/* fine-tune tower activations (lazy) */
	MtmsTowerWork *w2b;
	struct MtmsKeyBatch *kb;	/* fine-tune: keyed first layers (lazy) */
	float	   *h1a;			/* B x first hidden layer */
	float	   *h1b;
	int64	   *ridx_a;			/* embedding row of each feature occurrence */
	int64	   *ridx_b;
	int64		ridx_cap;
} MtmsBatchWork;

/* What a step reads and updates. */
typedef struct MtmsStepCtx
{
	MtmsModel  *model;			/* trained in place */
	const MtmsOptions *opts;
	MemoryContext cxt;			/* scratch allocated lazily lives here */
	MtmsBatchWork *work;
	/*
	 * Growth: in phase 1, pair p keeps its embedding rows of fields
	 * < frozen_fields[p] and its tower's columns for them as they are.
	 * NULL: every field trains.
	 */
	const int32 *frozen_fields;
	double	   *loss_sum;		/* [nscenes * MTMS_NMETRICS] training losses */
	int64	   *loss_n;
	/* fine-tune: the keys and frozen joined embeddings of the step's rows */
	const struct MtmsJoinedKeys *keys;
} MtmsStepCtx;

/* Scratch buffers for m, sized for batches of batch_size rows. */
extern MtmsBatchWork *mtms_batch_work_create(const MtmsModel *m, int batch_size);
/* Room in ridx_a / ridx_b for need feature occurrences. */
extern void mtms_batch_work_ridx(MtmsBatchWork *w, int64 need);

#endif							/* MTMS_TRAIN_STEP_H */
