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
#include "lib/stringinfo.h"
#include "model.h"
#include "options.h"
#include "train_loss.h"
#include "train_rowset.h"
#include "train_step.h"
#include "train_stages.h"

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
	 * u < validation_fraction validates, train_lo[s] <= u < train_hi[s]
	 * trains this pass for a row of scene s, the rest is skipped (see
	 * train_pass.c for who gets which).  [nscenes]
	 */
	double	   *train_lo;
	double	   *train_hi;

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
	 * A collecting pass (mtms_collect_window) keeps its training rows for
	 * the unit jobs: with collect_train, every row of the training window
	 * of an active scene is also appended here.
	 */
	bool		collect_train;
	bool		collect_only;	/* keep the rows, train nothing (unit jobs do) */
	struct MtmsKeptRows *train_rows;	/* in train_cxt, NULL until a row */

	/*
	 * And, in the same scan, the next window's rows (the fine-tune's while
	 * phase 1's are collected): a row of scene s with ahead_lo[s] <= u <
	 * ahead_hi[s] goes to ahead_rows, in ahead_cxt, within ahead_limit
	 * bytes and train_limit for both.  ahead_lo NULL: not collecting ahead
	 * (or it stopped: too many rows).
	 */
	double	   *ahead_lo;
	double	   *ahead_hi;
	MemoryContext ahead_cxt;
	Size		ahead_limit;
	Size		ahead_measured;	/* ahead_cxt's size at its last 4096th row */
	struct MtmsKeptRows *ahead_rows;

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

/* Take the trained state the final function left for token; ERROR if none. */
extern MtmsTrainState *mtms_state_take_result(const char *token);
extern void mtms_state_unpublish(void);
extern void mtms_state_free(MtmsTrainState *s);

/* Validate st's model on st's validation rows, in this process (vloss ...). */
extern void mtms_state_validate(MtmsTrainState *st);

/* ---- inside the training core (train_*.c) ---- */

/* train_state.c: a state's life, the shuffle buffer, the steps */
extern MtmsTrainState *mtms_state_alloc(MemoryContext parent);
extern void mtms_state_alloc_stats(MtmsTrainState *st);
extern MtmsTrainState *mtms_state_start_from_base(const MtmsTrainState *base,
												  MemoryContext parent, bool share_model);
extern void mtms_state_prepare(MtmsTrainState *st);
extern void mtms_state_buffer_row(MtmsTrainState *st, int scene, uint8 label,
								  const MtmsFeature *feats, int nfeats);
extern void mtms_state_process_buffer(MtmsTrainState *st);
extern void mtms_state_finish_pass(MtmsTrainState *st, const MtmsRowSet *vs);

/* The step context of a state: its model, scratch and statistics. */
static inline void
mtms_state_step_ctx(MtmsTrainState *st, MtmsStepCtx *ctx)
{
	ctx->model = st->model;
	ctx->opts = &st->opts;
	ctx->cxt = st->cxt;
	ctx->work = st->work;
	ctx->frozen_fields = st->frozen_fields;
	ctx->loss_sum = st->loss_sum;
	ctx->loss_n = st->loss_n;
	ctx->keys = st->buf_keys;
}

/* Is any unit of this scene still training? */
static inline bool
mtms_state_scene_active(const MtmsTrainState *st, int scene)
{
	int			units[MTMS_NTASKS];
	int			n = mtms_scene_units(mtms_stage_info(st->stage), scene, units);

	for (int k = 0; k < n; k++)
		if (st->unit_active[units[k]])
			return true;
	return false;
}

/* train_validate.c */
/*
 * The metrics of one scene's validation rows rows[0..nr) of vs from their
 * CTR and CVR logits; AUCs only when the sum of the three losses is below
 * auc_below (INFINITY: always).
 */
extern void mtms_validation_metrics(const MtmsRowSet *vs, const int64 *rows, int64 nr,
									const float *zc, const float *zv, double auc_below,
									MtmsSceneMetrics *out);
extern void mtms_state_evaluate(MtmsTrainState *st, const MtmsRowSet *vs,
								const double *auc_below);
extern void mtms_state_checkpoint(MtmsTrainState *st);
extern void mtms_state_restore_best(MtmsTrainState *st);
extern void mtms_state_final_validation(MtmsTrainState *st, const MtmsRowSet *vs);

/* train_serialize.c */
extern void mtms_state_serialize(StringInfo buf, const MtmsTrainState *st, bool with_valid);
extern MtmsTrainState *mtms_state_deserialize(const char *data, Size len,
											  MemoryContext parent);
extern void mtms_state_combine(MtmsTrainState *a, MtmsTrainState *b);

/* train_snapshot.c: the registry of the published base */
extern MtmsTrainState *mtms_state_load_snapshot(const char *token, MemoryContext parent);
extern MtmsTrainState *mtms_registry_base(const char *token);
extern bool mtms_registry_active(void);
extern const MtmsRowSet *mtms_registry_valid(void);
extern void mtms_registry_set_result(MtmsTrainState *st);

#endif							/* MTMS_TRAIN_STATE_H */
