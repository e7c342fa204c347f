/*
 * train_refit.h
 *    The refit option (train_refit.c): a small scene, whose phase 1 lost a
 *    fine-tune share of its few rows, gets its phase-1 sub-models trained
 *    again on all of its training rows after the fine-tune, and keeps them
 *    where they validate better than its fine-tuned towers.
 */
#ifndef MTMS_TRAIN_REFIT_H
#define MTMS_TRAIN_REFIT_H

#include "train_driver.h"

/*
 * Before phase 1: which scenes may refit (cx->refit, NULL when none), and
 * for a warm start their pairs' starting parameters.
 */
extern void mtms_refit_plan(MtmsTrainCtx *cx, const bool *selected);

/*
 * The fine-tune of every scene (all), then the refit: choose per small
 * scene, and fine-tune the others again when one kept its refit.
 */
extern void mtms_refit_finetune(MtmsTrainCtx *cx, const bool *all);

/* Whether pair p scores with its refit phase-1 sub-model. */
extern bool mtms_refit_kept(const MtmsTrainCtx *cx, int p);
/* Whether scene s was fine-tuned a second time (its start: the first's). */
extern bool mtms_refit_finetuned_again(const MtmsTrainCtx *cx, int s);

#endif							/* MTMS_TRAIN_REFIT_H */
