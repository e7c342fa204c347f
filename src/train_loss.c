/*
 * train_loss.c
 *    The losses of the training stages and their gradients with respect to
 *    the towers' logits (see train_loss.h).
 */
#include "train_loss.h"

#include <math.h>

#include "model.h"

double
mtms_bce(double p, bool y)
{
	const double eps = 1e-7;

	p = Min(Max(p, eps), 1.0 - eps);
	return y ? -log(p) : -log(1.0 - p);
}

static void
joint_loss_grad(float zctr, float zcvr, uint8 label, float *dctr,
				float *dcvr, double *loss, int64 *count)
{
	bool		click = (label & MTMS_LABEL_CLICK) != 0;
	bool		conv = (label & MTMS_LABEL_CONV) != 0;
	double		pc = mtms_sigmoid(zctr);
	double		pv = mtms_sigmoid(zcvr);
	double		q = pc * pv;
	double		qc = Min(q, 1.0 - 1e-7);
	double		y = (click && conv) ? 1.0 : 0.0;
	double		gc;
	double		gv;

	/* CTR: on every impression */
	gc = pc - (click ? 1.0 : 0.0);
	gv = 0.0;
	loss[MTMS_M_CTR] += mtms_bce(pc, click);
	count[MTMS_M_CTR]++;
	/* CVR: on clicked impressions */
	if (click)
	{
		gv += pv - (conv ? 1.0 : 0.0);
		loss[MTMS_M_CVR] += mtms_bce(pv, conv);
		count[MTMS_M_CVR]++;
	}
	/* CTCVR = pCTR x pCVR on every impression: dL/dz = (q - y)(1 - p)/(1 - q) */
	gc += (q - y) * (1.0 - pc) / (1.0 - qc);
	gv += (q - y) * (1.0 - pv) / (1.0 - qc);
	loss[MTMS_M_CTCVR] += mtms_bce(q, y > 0.5);
	count[MTMS_M_CTCVR]++;

	*dctr = (float) gc;
	*dcvr = (float) gv;
}

void
mtms_joint_loss_grads(const MtmsRowSet *rs, const int64 *rows, int n,
					  const float *zctr, const float *zcvr, float *dctr, float *dcvr,
					  double *loss, int64 *count)
{
	for (int i = 0; i < n; i++)
	{
		joint_loss_grad(zctr[i], zcvr[i], rs->label[rows[i]], &dctr[i], &dcvr[i],
						loss, count);
		dctr[i] /= n;
		dcvr[i] /= n;
	}
}
