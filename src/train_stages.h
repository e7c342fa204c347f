/*
 * train_stages.h
 *    The three training stages as tables of what differs between them, so
 *    that the code that runs passes, validates, keeps best epochs and
 *    schedules units never names a stage (the way pgvector's HnswTypeInfo
 *    or PostgreSQL's index AMs plug variants in):
 *
 *   embedding  a unit is a (scene, task) pair, trained on its own
 *              embeddings and phase-1 tower with BCE (phase_embedding.c);
 *   ctcvr      a unit is a scene, its two phase-1 sub-models trained with
 *              the joint loss (phase_embedding.c);
 *   finetune   a unit is a scene, its two fine-tune towers trained on the
 *              frozen joined embeddings with the joint loss
 *              (phase_finetune.c);
 *   refit      the embedding stage again, for the small scenes of a model
 *              with the refit option, on their phase-1 and fine-tune rows
 *              together (phase_embedding.c, train_refit.c).
 */
#ifndef MTMS_TRAIN_STAGES_H
#define MTMS_TRAIN_STAGES_H

#include "train_step.h"

typedef struct MtmsStageInfo
{
	MtmsStage	stage;
	const char *name;			/* in NOTICEs and mtms_train's result */
	const char *aggregate;		/* the aggregate whose passes run it */
	bool		unit_is_pair;	/* a unit is a (scene, task) pair, else a scene */
	bool		trains_embeddings;	/* a unit's parameters: its pairs' embeddings
									 * and phase-1 towers; else their fine-tune
									 * towers */
	bool		keyed_rows;		/* steps need MtmsStepCtx.keys */
	bool		checkpoints;	/* a pass validates evals_per_epoch times and
								 * each unit keeps its best checkpoint */
	int			window;			/* rows it trains on: 0 = phase 1's, 1 = the
								 * fine-tune's (finetune_fraction), 2 = both */
	bool		validates_start;	/* always validate the starting parameters
									 * (even of a model's first training or a
									 * scene added since): they are a stage's
									 * output, not an initialisation */
	bool		reports_per_task;	/* a scene unit reports CTR and CVR rows and
									 * all three metrics, else one CTCVR row */
	bool		last_for_towers;	/* a unit's towers train no further in this
									 * training: their Adam moments go when the
									 * unit is done */
	/* one mini-batch of unit on rows[0..n) of rs */
	void		(*step) (MtmsStepCtx *ctx, int unit, const MtmsRowSet *rs,
						 const int64 *rows, int n);
	/* whether unit trains on a row with these labels (of its scene) */
	bool		(*takes_row) (int unit, uint8 label);
	/*
	 * CTR and CVR logits of scene's rows rows[0..nr) of vs into zc / zv;
	 * *keys caches what the stage derives from vs (NULL at first).
	 */
	void		(*validation_logits) (MtmsStepCtx *ctx, int scene, const MtmsRowSet *vs,
									  const int64 *rows, int64 nr, float *zc, float *zv,
									  struct MtmsJoinedKeys **keys);
	/*
	 * Make unit's parameters exist in m before they are trained or handed
	 * to a worker (NULL: they always do).
	 */
	void		(*prepare_unit) (MtmsModel *m, int unit);
} MtmsStageInfo;

extern const MtmsStageInfo mtms_stage_embedding_info;
extern const MtmsStageInfo mtms_stage_ctcvr_info;
extern const MtmsStageInfo mtms_stage_finetune_info;
extern const MtmsStageInfo mtms_stage_refit_info;

/* The table of a stage. */
static inline const MtmsStageInfo *
mtms_stage_info(MtmsStage stage)
{
	switch (stage)
	{
		case MTMS_STAGE_EMBEDDING:
			return &mtms_stage_embedding_info;
		case MTMS_STAGE_CTCVR:
			return &mtms_stage_ctcvr_info;
		case MTMS_STAGE_REFIT:
			return &mtms_stage_refit_info;
		default:
			return &mtms_stage_finetune_info;
	}
}

/* Units of a stage for a model of nscenes scenes. */
static inline int
mtms_stage_nunits(const MtmsStageInfo *si, int nscenes)
{
	return si->unit_is_pair ? nscenes * MTMS_NTASKS : nscenes;
}

/* The scene a unit belongs to. */
static inline int
mtms_unit_scene(const MtmsStageInfo *si, int unit)
{
	return si->unit_is_pair ? MTMS_PAIR_SCENE(unit) : unit;
}

/* The pairs a unit trains (1 or 2), into pairs[]; returns how many. */
static inline int
mtms_unit_pairs(const MtmsStageInfo *si, int unit, int *pairs)
{
	if (si->unit_is_pair)
	{
		pairs[0] = unit;
		return 1;
	}
	pairs[0] = MTMS_PAIR(unit, MTMS_TASK_CTR);
	pairs[1] = MTMS_PAIR(unit, MTMS_TASK_CVR);
	return 2;
}

/*
 * Whether a unit's starting parameters are a candidate for the parameters
 * it keeps: always in a stage that validates its start (its start is an
 * earlier stage's output); otherwise only when training starts from a
 * stored version (active_version > 0) and the unit's pairs are in it (a
 * scene added since has nothing but an initialisation to keep).
 */
static inline bool
mtms_unit_start_is_candidate(const MtmsStageInfo *si, int unit, int active_version,
							 int stored_npairs)
{
	int			pairs[2];

	if (si->validates_start)
		return true;
	if (active_version <= 0)
		return false;
	mtms_unit_pairs(si, unit, pairs);
	return !(si->trains_embeddings && pairs[0] >= stored_npairs);
}

/* The units a row of scene may train (its two pairs, or the scene). */
static inline int
mtms_scene_units(const MtmsStageInfo *si, int scene, int *units)
{
	if (si->unit_is_pair)
	{
		units[0] = MTMS_PAIR(scene, MTMS_TASK_CTR);
		units[1] = MTMS_PAIR(scene, MTMS_TASK_CVR);
		return 2;
	}
	units[0] = scene;
	return 1;
}

#endif							/* MTMS_TRAIN_STAGES_H */
