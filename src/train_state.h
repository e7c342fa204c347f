/*
 * train_state.h
 *    The state of one training pass, shared by the two training aggregates
 *    (mtms_embedding_update, mtms_finetune) and their driver (mtms_train).
 *
 * One pass = one epoch of one stage over the sample relation.  The driver
 * publishes a *base* state (the model as it stands, the stage, which units
 * still train) under a token; each aggregate instance starts from a private
 * copy of it (in the driver's process straight from memory, in a parallel
 * worker from a snapshot file), buffers and shuffles rows, trains
 * mini-batches, and the partial states are combined by sample-weighted
 * parameter averaging.  The final function evaluates the validation rows
 * and hands the trained state back to the driver.
 *
 * Units: in the embedding stage every (scene, task) pair trains on its own
 * and converges on its own; in the CTCVR and fine-tune stages the unit is a
 * scene (its CTR and CVR sub-models train together).
 */
#ifndef MTMS_TRAIN_STATE_H
#define MTMS_TRAIN_STATE_H

#include "mtms.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "model.h"
#include "options.h"

typedef enum MtmsStage
{
	MTMS_STAGE_EMBEDDING = 0,	/* phase 1: every pair on its own samples */
	MTMS_STAGE_CTCVR = 1,		/* phase 1: pCTR x pCVR per scene */
	MTMS_STAGE_FINETUNE = 2		/* phase 2: towers on the joined embeddings */
} MtmsStage;

/* Per-scene metric slots: CTR, CVR (clicked rows), CTCVR. */
#define MTMS_NMETRICS	3
#define MTMS_M_CTR		0
#define MTMS_M_CVR		1
#define MTMS_M_CTCVR	2

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

typedef struct MtmsTrainState
{
	MemoryContext cxt;			/* owns the state and its model */
	MtmsModel  *model;
	MtmsOptions opts;
	MtmsStage	stage;
	int32		epoch;			/* 1-based, for shuffling seeds and notices */
	int32		nunits;			/* npairs (embedding) or nscenes */
	bool	   *unit_active;	/* [nunits] still training */
	bool		collect_valid;	/* keep validation rows seen */

	/*
	 * Growth: in phase 1, pair p keeps its embedding rows of fields
	 * < frozen_fields[p] and its tower as they are (no new rows either)
	 * and trains only the rows of newer fields and the tower's columns for
	 * them.  NULL or 0: the whole pair trains.
	 */
	int32	   *frozen_fields;	/* [npairs] or NULL */
	MtmsRowSet	valid;			/* validation rows */

	/* training statistics of this pass, [nscenes * MTMS_NMETRICS] */
	double	   *loss_sum;
	int64	   *loss_n;
	/* validation metrics (final function), [nscenes * MTMS_NMETRICS] */
	double	   *vloss;
	double	   *vauc;			/* NaN when a class is absent */
	int64	   *vn;
	int64	   *vpos;

	int64		expected_rows;	/* rows per pass, when the driver knows it */

	/*
	 * Rows are split by a hash of their content into u in [0, 1):
	 * u < validation_fraction validates, train_lo <= u < train_hi trains
	 * this pass, the rest is skipped (see train.c for who gets which).
	 */
	double		train_lo;
	double		train_hi;

	/*
	 * Fine-tune checkpoints: the towers are validated evals_per_epoch times
	 * per pass (and at its start) and each scene keeps its best towers, so
	 * a pass cannot end worse on validation than it began.
	 */
	const MtmsRowSet *eval_rows;	/* rows to validate on, or NULL */
	MtmsTower **best2;			/* [npairs] best fine-tune towers this pass */
	double	   *best_crit;		/* [nscenes] */
	int64		next_eval;		/* rows_trained at the next checkpoint */
	int64		checked_at;		/* rows_trained at the last checkpoint, or -1 */

	/*
	 * The validation metrics of each scene's best checkpoint (slots as
	 * vloss ...), AUCs included: in a state that was not combined with
	 * another, the end of the pass reports them instead of validating the
	 * restored towers again.
	 */
	double	   *best_vloss;
	double	   *best_vauc;
	int64	   *best_vn;
	int64	   *best_vpos;
	bool		combined;		/* partial states were merged into this one */

	/*
	 * Per scene, the validation rows' keys and frozen joined embeddings
	 * (joined_keys.h), built on first use for the row set vkeys_of.
	 */
	struct MtmsJoinedKeys **vkeys;	/* [nscenes] or NULL */
	const MtmsRowSet *vkeys_of;

	/*
	 * Serial passes keep their training rows for the passes after them
	 * (see mtms_state_run_rows): with collect_train, every row of the
	 * training window of an active scene is also appended here.
	 */
	bool		collect_train;
	struct MtmsKeptRows *train_rows;	/* in train_cxt, NULL until a row */

	/*
	 * Base only: the driver runs the pass in one process, so the leader's
	 * aggregate may train the base's (the driver's) model itself instead of
	 * a copy; nothing is combined.
	 */
	bool		train_in_place;
	bool		model_shared;	/* model is the driver's, not in cxt */
	MemoryContext train_cxt;	/* the driver's: train_rows outlive the pass */
	Size		train_limit;	/* stop keeping rows beyond this many bytes */

	int64		rows_in;		/* rows seen by this state */
	int64		rows_trained;	/* rows that trained some unit */
	int64		bad_conversions;	/* conversion without click: counted, CVR-skipped */

	/* process-local work area, never serialized */
	MtmsRowSet	buf;			/* shuffle buffer */
	struct MtmsJoinedKeys *buf_keys;	/* fine-tune: buf's keys, or NULL */
	pg_prng_state prng;
	MtmsBatchWork *work;
	int64	   *order;			/* shuffle permutation */
	int64	  **pending;		/* [nunits] row numbers waiting for a batch */
	int32	   *npending;
	MtmsFeature *parse_buf;
	int			parse_cap;
	const char *token;
} MtmsTrainState;

/* ---- driver side (train.c) ---- */

/*
 * New base state for a pass (or for validating model).  It borrows model
 * and valid, which must stay unchanged until the state is freed, and
 * takes ownership of nothing.
 */
extern MtmsTrainState *mtms_state_create(const MtmsModel *model,
										 const MtmsOptions *opts,
										 MtmsStage stage, int epoch,
										 const bool *unit_active,
										 const MtmsRowSet *valid);

/*
 * Publish base under a fresh token (returned, palloc'd).  When
 * with_snapshot, also write it to a file parallel workers can read.  The
 * file is removed by mtms_state_unpublish or at the end of the transaction.
 */
extern char *mtms_state_publish(MtmsTrainState *base, bool with_snapshot);

/*
 * Run a pass of base without a query, over training rows a serial pass
 * kept (collect_train), in the order the scan gave them: the same buffers,
 * shuffles and mini-batches as the aggregate, so the same model.  rows_in
 * is what the relation holds.  Returns the trained, validated state, whose
 * model IS base's model, trained in place (no copy: the driver adopts the
 * trained model after every pass anyway, and keeps its units' best epochs
 * apart).
 */
extern MtmsTrainState *mtms_state_run_rows(const MtmsTrainState *base,
										   const struct MtmsKeptRows *rows,
										   int64 rows_in);

/* Take the trained state the final function left for token; ERROR if none. */
extern MtmsTrainState *mtms_state_take_result(const char *token);
extern void mtms_state_unpublish(void);
extern void mtms_state_free(MtmsTrainState *s);

/* Validate st's model on st's validation rows, in this process (vloss ...). */
extern void mtms_state_validate(MtmsTrainState *st);

/* ---- aggregate side ---- */

/* Transition body shared by both aggregates: stage family is checked. */
extern Datum mtms_state_transition(FunctionCallInfo fcinfo, bool finetune);

/* unit index of a row's pair / scene */
static inline int
mtms_stage_units(MtmsStage stage, int nscenes)
{
	return stage == MTMS_STAGE_EMBEDDING ? nscenes * MTMS_NTASKS : nscenes;
}

/* Row-set helpers. */
extern void mtms_rowset_init(MtmsRowSet *rs);
extern void mtms_rowset_add(MtmsRowSet *rs, int32 scene, uint8 label,
							const MtmsFeature *feats, int nfeats);
extern void mtms_rowset_append(MtmsRowSet *dst, const MtmsRowSet *src);
extern void mtms_rowset_copy(MtmsRowSet *dst, const MtmsRowSet *src);

/* ---- training steps (phase_embedding.c, phase_finetune.c) ---- */

extern MtmsBatchWork *mtms_batch_work_create(const MtmsModel *m, int batch_size);

/* one mini-batch of pair p on rows[0..n) of rs */
extern void mtms_step_pair(MtmsTrainState *st, int pair, const MtmsRowSet *rs,
						   const int64 *rows, int n);
/* one mini-batch of scene s, CTCVR stage */
extern void mtms_step_ctcvr(MtmsTrainState *st, int scene, const MtmsRowSet *rs,
							const int64 *rows, int n);
/* one mini-batch of scene s, fine-tune stage */
extern void mtms_step_finetune(MtmsTrainState *st, int scene,
							   const MtmsRowSet *rs, const int64 *rows, int n);

/*
 * For a mini-batch of scene's rows whose CTR and CVR logits are in
 * st->work->za / zb: the gradients (batch means) of the per-scene loss
 * L = BCE(pctr, click) + [click] BCE(pcvr, conv) + BCE(pctr * pcvr, click AND conv)
 * with respect to both logits, into st->work->da / db, and the three
 * losses added to the scene's training statistics.
 */
extern void mtms_joint_batch_grads(MtmsTrainState *st, int scene,
								   const MtmsRowSet *rs, const int64 *rows, int n);

/* BCE of probability p against label y, clamped */
extern double mtms_bce(double p, bool y);

#endif							/* MTMS_TRAIN_STATE_H */
