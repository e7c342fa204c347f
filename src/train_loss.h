/*
 * train_loss.h
 *    The training losses: binary cross-entropy, and the per-scene joint
 *    loss of the CTCVR and fine-tune stages
 *      L = BCE(pCTR, click) + [click] BCE(pCVR, conv) + BCE(pCTR x pCVR, click AND conv)
 *    with its gradients with respect to both logits.  A leaf: plain
 *    arithmetic on logits and labels.
 */
#ifndef MTMS_TRAIN_LOSS_H
#define MTMS_TRAIN_LOSS_H

#include "mtms.h"
#include "train_rowset.h"

/* Per-scene metric slots: CTR, CVR (clicked rows), CTCVR. */
#define MTMS_NMETRICS	3
#define MTMS_M_CTR		0
#define MTMS_M_CVR		1
#define MTMS_M_CTCVR	2

/* BCE of probability p against label y, clamped */
extern double mtms_bce(double p, bool y);

/*
 * For rows rows[0..n) of rs whose CTR and CVR logits are zctr / zcvr: the
 * gradients (batch means) of the joint loss with respect to both logits,
 * into dctr / dcvr, and the three losses added to loss[MTMS_NMETRICS] and
 * their row counts to count[MTMS_NMETRICS].
 */
extern void mtms_joint_loss_grads(const MtmsRowSet *rs, const int64 *rows, int n,
								  const float *zctr, const float *zcvr,
								  float *dctr, float *dcvr,
								  double *loss, int64 *count);

/* A scene's validation metrics: loss, AUC, rows and positives per slot. */
typedef struct MtmsSceneMetrics
{
	double		vloss[MTMS_NMETRICS];
	double		vauc[MTMS_NMETRICS];	/* NaN when not computed or a class is absent */
	int64		vn[MTMS_NMETRICS];
	int64		vpos[MTMS_NMETRICS];
} MtmsSceneMetrics;

#endif							/* MTMS_TRAIN_LOSS_H */
