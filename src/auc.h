/*
 * auc.h
 *    Exact ROC AUC (ties count one half), shared by the mtms_auc aggregate,
 *    training validation and mtms_evaluate.
 */
#ifndef MTMS_AUC_H
#define MTMS_AUC_H

#include "mtms.h"

/*
 * AUC of n (score, label) pairs.  Sorts a private copy; does not modify the
 * inputs.  Returns NaN when either class is absent (callers turn it into
 * NULL).  O(n log n); n may exceed the 1 GB palloc limit (huge allocations).
 */
extern double mtms_auc_compute(const double *scores, const bool *labels, int64 n);

#endif							/* MTMS_AUC_H */
