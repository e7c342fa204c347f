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

/*
 * The same from the scores of the positives and of the negatives, which are
 * sorted in place (no copy: for callers that collect the two classes apart,
 * like the mtms_auc aggregate).  NaN when npos or nneg is 0.  A NaN score
 * sorts above every number, as in PostgreSQL's float8 ordering.
 */
extern double mtms_auc_compute_split(double *pos, int64 npos,
									 double *neg, int64 nneg);

#endif							/* MTMS_AUC_H */
