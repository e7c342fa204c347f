/*
 * finetune_validation.h
 *    Validating fine-tune towers fast: the first layer through per-key
 *    projections of the frozen joined embeddings.
 *
 * In the fine-tune stage every embedding is frozen, so a validation row's
 * joined input is a fixed sum, over the row's features k, of the vector
 * J(k) (k's embeddings in every pair) placed in the blocks of k's field.
 * The first layer is linear, so W1 x = sum_k W1[:, blocks(field k)] J(k):
 * one small product per DISTINCT key instead of a 288-wide row product per
 * row, then a few additions per row.  Validation rows repeat keys a lot
 * (hours, devices, advertisers, popular users and ads), which makes a
 * checkpoint several times cheaper than the dense forward pass; the result
 * equals it up to float rounding.
 */
#ifndef MTMS_FINETUNE_VALIDATION_H
#define MTMS_FINETUNE_VALIDATION_H

#include "train_state.h"

typedef struct MtmsValidKeys MtmsValidKeys;

/*
 * The distinct keys of rows[0..nrows) of vs (rows of one scene) with their
 * joined embeddings from m's frozen tables, and each row's key list.
 * Allocated in the current memory context.
 */
extern MtmsValidKeys *mtms_valid_keys_build(const MtmsModel *m, const MtmsRowSet *vs,
											const int64 *rows, int64 nrows);

/*
 * Logits of tower t (a fine-tune tower of m, input MTMS_INPUT2(m)) for every
 * row vk was built on, into logits[0..nrows).
 */
extern void mtms_valid_keys_logits(const MtmsValidKeys *vk, const MtmsModel *m,
								   const MtmsTower *t, float *logits);

extern void mtms_valid_keys_free(MtmsValidKeys *vk);

#endif							/* MTMS_FINETUNE_VALIDATION_H */
