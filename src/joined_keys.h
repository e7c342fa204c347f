/*
 * joined_keys.h
 *    Rows of the fine-tune stage as lists of distinct keys, each key with
 *    its frozen joined embedding.
 *
 * In the fine-tune stage every embedding is frozen, so a row's joined
 * input is a fixed sum, over the row's features k, of the vector J(k)
 * (k's embeddings in every pair) placed in the blocks of k's field.  A row
 * set numbers its distinct (hash, field) keys once and looks each key up
 * in the npairs embedding tables once, instead of npairs probes per
 * feature occurrence.  Two uses:
 *
 *  - the joined input of a row (training batches of a shuffle buffer);
 *  - validation logits: the first layer is linear, so
 *    W1 x = sum_k W1[:, blocks(field k)] J(k): one small product per
 *    DISTINCT key instead of a full-width product per row, then a few
 *    additions per row.  Validation rows repeat keys a lot (hours,
 *    devices, advertisers, popular users and ads), which makes a
 *    checkpoint several times cheaper; the result equals the dense
 *    forward pass up to float rounding.
 */
#ifndef MTMS_JOINED_KEYS_H
#define MTMS_JOINED_KEYS_H

#include "train_state.h"

typedef struct MtmsJoinedKeys MtmsJoinedKeys;

/*
 * The distinct keys of rows[0..nrows) of vs with their
 * joined embeddings from m's frozen tables, and each row's key list.
 * Allocated in the current memory context.
 */
extern MtmsJoinedKeys *mtms_joined_keys_build(const MtmsModel *m, const MtmsRowSet *vs,
											const int64 *rows, int64 nrows);

/*
 * Logits of tower t (a fine-tune tower of m, input MTMS_INPUT2(m)) for every
 * row vk was built on, into logits[0..nrows).
 */
extern void mtms_joined_keys_logits(const MtmsJoinedKeys *vk, const MtmsModel *m,
								   const MtmsTower *t, float *logits);

/* The joined input (MTMS_INPUT2(m) floats, zeroed here) of vk's row i. */
extern void mtms_joined_keys_input2(const MtmsJoinedKeys *vk, const MtmsModel *m,
									int64 i, float *x);

extern void mtms_joined_keys_free(MtmsJoinedKeys *vk);

#endif							/* MTMS_JOINED_KEYS_H */
