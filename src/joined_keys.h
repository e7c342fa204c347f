/*
 * joined_keys.h
 *    Rows of the fine-tune stage as lists of distinct keys, each key with
 *    its frozen joined embedding, and the fine-tune towers' first layer
 *    at a cost that follows the data.
 *
 * In the fine-tune stage every embedding is frozen, so a row's joined
 * input is a fixed sum, over the row's features k, of k's vectors in the
 * pairs that have a row for k, each placed in the block (pair, field of
 * k) of the joined input.  Most (key, pair) combinations have no row: a
 * scene's ads and most of its users never occur in other scenes.  So a
 * key's joined embedding is stored sparse, as its ENTRIES (pair, vector),
 * and the first layer, which is linear, goes per entry:
 *   W1 x = sum over the row's keys k, over k's entries (q, e):
 *          W1[:, block(q, field k)] e
 * Entries are grouped by block, so each block is one small product
 * (entries x d times d x h1), and the weight gradient likewise touches
 * only the blocks of the batch's entries.  Rows repeat keys a lot
 * (hours, devices, advertisers, popular users), so the products go per
 * distinct key, then a few additions per row.  The optimizer of the first
 * layer is lazy: Adam moves only the blocks a batch touched (the others
 * have a zero gradient and keep weights and moments), so a step's cost is
 * proportional to the entries of its rows, not to the number of pairs.
 * Forward and gradient equal the dense products up to float rounding.
 */
#ifndef MTMS_JOINED_KEYS_H
#define MTMS_JOINED_KEYS_H

#include "model.h"
#include "row_store.h"
#include "train_rowset.h"

/*
 * The joined embeddings of a list of keys, as entries: one flat,
 * pointer-free allocation (so a parallel training copies it into its
 * shared segment as it is).
 */
typedef struct MtmsJoinedTable MtmsJoinedTable;

/*
 * The entries of nkeys keys from m's frozen tables, palloc'd (huge): the
 * table of a row store's keys.
 */
extern MtmsJoinedTable *mtms_joined_table_build(const MtmsModel *m, const MtmsFeatureKey *keys,
												int64 nkeys);
/* Its size in bytes (to copy it). */
extern Size mtms_joined_table_bytes(const MtmsJoinedTable *jt);

typedef struct MtmsJoinedKeys MtmsJoinedKeys;

/*
 * The distinct keys of rows[0..nrows) of vs (all rows when rows is NULL)
 * with their entries from m's frozen tables, and each row's key list.
 * Allocated in the current memory context.
 */
extern MtmsJoinedKeys *mtms_joined_keys_build(const MtmsModel *m, const MtmsRowSet *vs,
											  const int64 *rows, int64 nrows);

/*
 * The keys of rows rows[0..n) of a row store, their entries read from jt,
 * the table of the store's keys (which must outlive the result).
 */
extern MtmsJoinedKeys *mtms_joined_keys_from_store(const MtmsRowStore *st, const int64 *rows,
												   int64 n, const MtmsJoinedTable *jt);

/*
 * Logits of tower t (a fine-tune tower of m, input MTMS_INPUT2(m)) for every
 * row vk was built on, into logits[0..nrows).  The first call groups vk's
 * entries by block and keeps that for the next calls.
 */
extern void mtms_joined_keys_logits(MtmsJoinedKeys *vk, const MtmsModel *m,
									const MtmsTower *t, float *logits);

extern void mtms_joined_keys_free(MtmsJoinedKeys *vk);

/*
 * The first tower layer of a training batch through its distinct keys'
 * entries.  A MtmsKeyBatch is scratch space, reused from batch to batch.
 */
typedef struct MtmsKeyBatch MtmsKeyBatch;

extern MtmsKeyBatch *mtms_key_batch_create(void);

/* Number the distinct keys of vk's rows rows[0..n) and group their entries. */
extern void mtms_key_batch_prepare(MtmsKeyBatch *kb, const MtmsModel *m,
								   const MtmsJoinedKeys *vk, const int64 *rows, int n);

/* H1 (n x sizes[1]) = X W[0]^T of the prepared batch for fine-tune tower t. */
extern void mtms_key_batch_forward(MtmsKeyBatch *kb, const MtmsModel *m,
								   const MtmsTower *t, float *H1);

/*
 * t->gW[0] += delta1^T X for the prepared batch (delta1: n x sizes[1]),
 * in the blocks of the batch's entries only.
 */
extern void mtms_key_batch_weight_grad(MtmsKeyBatch *kb, const MtmsModel *m,
									   MtmsTower *t, const float *delta1);

/*
 * The Adam step of tower t after the batch's backward: its first layer's
 * weights in the batch's blocks, every other parameter as usual
 * (mtms_tower_step_input_runs).
 */
extern void mtms_key_batch_step(MtmsKeyBatch *kb, MtmsTower *t, float lr, float l2);

#endif							/* MTMS_JOINED_KEYS_H */
