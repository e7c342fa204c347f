/*
 * train_driver.h
 *    What mtms_train's driver layer shares (train.c, train_stage.c,
 *    train_pass.c, train_unit.c): the context of one training, the results
 *    of its units, and the steps the files offer each other.
 *
 * A training runs stages (embedding, ctcvr, finetune: train_stages.h);
 * a stage trains units (pairs or scenes) to convergence, each keeping the
 * parameters of its best validation.  train_stage.c drives a stage epoch by
 * epoch, each epoch one pass (train_pass.c): an aggregate query over the
 * samples, or a replay of the rows a first pass kept.
 */
#ifndef MTMS_TRAIN_DRIVER_H
#define MTMS_TRAIN_DRIVER_H

#include "mtms.h"
#include "catalog.h"
#include "funcapi.h"
#include "kept_rows.h"
#include "row_store.h"
#include "model.h"
#include "train_history.h"
#include "train_stages.h"
#include "train_state.h"
#include "unit_snapshot.h"
#include "unit_train.h"

/* Training rows a first pass kept for the passes after it. */
typedef struct MtmsKeptWindow
{
	MemoryContext cxt;			/* holds rows (NULL until a pass keeps them) */
	MtmsKeptRows *rows;			/* NULL until a pass kept them */
	bool	   *scenes;			/* [nscenes] scenes the rows hold */
	bool		failed;			/* the window's rows did not fit */
	bool		ahead;			/* kept by an earlier window's pass */
	Size		measured;		/* ahead: their size at their last 4096th row */
	MtmsRowStore *store;		/* the rows grouped by scene, for unit jobs
								 * (then rows are freed) */
} MtmsKeptWindow;

typedef struct MtmsTrainCtx
{
	MemoryContext cxt;
	MtmsModelMeta *meta;
	MtmsModel  *model;
	MtmsRowSet *valid;			/* validation rows, after the first pass */
	char	   *relname;		/* quoted, qualified */
	char	   *schema;
	int64		samples;		/* rows of the relation */
	double	   *ft_share;		/* [nscenes] share of a scene's rows that
								 * phase 1 leaves to the fine-tune */
	int32		stored_npairs;	/* pairs of the version training started from */
	int32	   *frozen_fields;	/* [npairs] growth: see train_step.h; or NULL */
	int64		bad_conversions;
	ReturnSetInfo *rsinfo;
	/* per (scene, metric) validation results of the stages run */
	double	   *metric_loss;
	double	   *metric_auc;
	MtmsHistory *history;		/* every unit's checkpoints, for the version */
	int64	   *scene_rows;		/* [nscenes] rows of each scene in the
								 * samples, when counted (or NULL) */
	struct MtmsRefit *refit;	/* the refit option's plan, or NULL
								 * (train_refit.h) */

	/*
	 * Training rows kept by the first pass of a window for the passes after
	 * it (mtms.keep_training_rows): [0] phase 1's window (the embedding and
	 * CTCVR stages train on the same rows), [1] the fine-tune's, [2] both
	 * (the refit's).
	 */
	MtmsKeptWindow kept[3];
	bool		collect_ahead;	/* phase 1's pass keeps the fine-tune's
								 * rows too (train_pass.c) */
	MtmsRowStore *valid_store;	/* valid grouped by scene, for unit jobs */
	struct MtmsHygiene *hygiene;	/* min_count / ttl_slots, or NULL
									 * (feature_hygiene.h) */

	/*
	 * On a data node of a multi-node training (node_train.c): the units'
	 * outcomes go into this result (node_wire.h) instead of mtms_train's
	 * rows and history, and a stage must keep its rows (the scanning
	 * fallback's snapshots do not travel).  NULL otherwise.
	 */
	struct MtmsChunks *node_out;
} MtmsTrainCtx;

/* A stage as unit jobs: the shared rows and the units, largest first. */
typedef struct MtmsUnitPlan MtmsUnitPlan;
struct MtmsUnitPlan
{
	const MtmsStageInfo *si;
	MtmsUnitData data;
	int			njobs;
	int		   *units;			/* [njobs] */
	bool	   *start_candidate;	/* [njobs] */
	int64	   *work;			/* [njobs] rows a pass, for the schedule */

	/*
	 * A later stage of a chain: its memory plan again once the stage before
	 * it is back, with each pair's phase-1 bytes as that stage left them
	 * (pair_bytes[npairs]); NULL: none
	 */
	void		(*recheck) (MtmsTrainCtx *cx, const MtmsUnitPlan *plan, const Size *pair_bytes);
};

/* The most stages one parallel session runs (train_parallel.c). */
#define MTMS_CHAIN_MAX	2

/* train_pass.c: one epoch of a stage for the active units */
extern MtmsTrainState *mtms_run_pass(MtmsTrainCtx *cx, MtmsStage stage, int epoch,
									 const bool *active);

/*
 * train_pass.c: a pass that keeps the window's rows for unit jobs; false
 * when they do not fit
 */
extern bool mtms_collect_window(MtmsTrainCtx *cx, MtmsStage stage, const bool *active);

/* train_pass.c: drop rows kept ahead for this stage that no longer fit */
extern void mtms_check_ahead_rows(MtmsTrainCtx *cx, const MtmsStageInfo *si);

/* train_units.c: a stage as one job per unit, over kept rows */
extern void mtms_run_units(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected);

/*
 * train_units.c: stages[0..n) that train on the same kept rows as one
 * schedule of unit jobs, a later stage's unit starting as soon as the
 * units it continues are done (in parallel workers; one stage after the
 * other when there are none)
 */
extern void mtms_run_unit_chain(MtmsTrainCtx *cx, const MtmsStage *stages, int n,
								const bool *selected);

/*
 * train_dispatch.c: a stage for the selected scenes, as unit jobs over kept rows
 * or pass by pass
 */
extern void mtms_train_stage(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected);

/*
 * train_dispatch.c: stages[0..n) one after the other for the selected
 * scenes; as one chain of unit jobs (mtms_run_unit_chain) when they train
 * on the same kept rows and parallel workers can take part
 */
extern void mtms_train_stages(MtmsTrainCtx *cx, const MtmsStage *stages, int n,
							  const bool *selected);
/* train.c: each scene's share of rows phase 1 leaves to the fine-tune */
extern void mtms_plan_finetune_share(MtmsTrainCtx *cx);

/*
 * train_nodes.c: the stages on the data nodes of the model's cluster (the
 * model option "cluster"), their units gathered into cx->model
 */
extern void mtms_train_on_nodes(MtmsTrainCtx *cx, const bool *selected,
								bool do_embedding, bool do_finetune);

/* train_stage.c: a stage, epoch by epoch, for the selected scenes */
extern void mtms_run_stage(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected);
/*
 * train_stage.c: the validation figures of the selected scenes' units as
 * the model stands (what the stage would start from), into out[nunits]
 * (crit NaN for the others)
 */
extern void mtms_stage_validate_start(MtmsTrainCtx *cx, MtmsStage stage, const bool *selected,
									  MtmsUnitResult *out);

/* train_unit.c: units' figures and result rows */
extern void mtms_unit_figures(const MtmsTrainState *res, const MtmsStageInfo *si,
							  int unit, MtmsUnitResult *r);
extern void mtms_unit_report(MtmsTrainCtx *cx, const MtmsStageInfo *si, int unit,
							 const MtmsUnitResult *best, double seconds);
extern char *mtms_unit_name(const MtmsModel *m, const MtmsStageInfo *si, int unit);
/* train_unit.c: every unit's parameters exist (the stage's prepare_unit) */
extern void mtms_prepare_units(MtmsTrainCtx *cx, const MtmsStageInfo *si);

#endif							/* MTMS_TRAIN_DRIVER_H */
