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
 * feature occurrence.  The first layer is linear, so
 * W1 x = sum_k W1[:, blocks(field k)] J(k): one small product per DISTINCT
 * key instead of a full-width product per row, then a few additions per
 * row.  Rows repeat keys a lot (hours, devices, advertisers, popular users
 * and ads), which makes validation checkpoints (the logits below) and
 * training batches (MtmsKeyBatch) several times cheaper; the results equal
 * the dense forward and backward passes up to float rounding.
 */
#ifndef MTMS_JOINED_KEYS_H
#define MTMS_JOINED_KEYS_H

#include "model.h"
#include "row_store.h"
#include "train_rowset.h"

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

extern void mtms_joined_keys_free(MtmsJoinedKeys *vk);

/*
 * The joined embeddings (npairs * dim floats each) of nkeys keys from m's
 * frozen tables, palloc'd: the table of a row store's keys.
 */
extern float *mtms_joined_table_build(const MtmsModel *m, const MtmsFeatureKey *keys,
									  int64 nkeys);

/*
 * The keys of rows rows[0..n) of a row store with their joined embeddings
 * from J, the store's table (width = npairs * dim floats per key).
 */
extern MtmsJoinedKeys *mtms_joined_keys_from_store(const MtmsRowStore *st, const int64 *rows,
												   int64 n, const float *J, int nfields,
												   int width);

/*
 * The first tower layer of a training batch through the same keys: a
 * batch of n rows of vk has far fewer distinct features than n x fields
 * field blocks (hours, devices, advertisers repeat), so its first-layer
 * products and weight gradient go per distinct key (one sgemm per field)
 * instead of per row.  Equal to the dense X W^T and delta^T X to float
 * rounding.  A MtmsKeyBatch is scratch space, reused from batch to batch.
 */
typedef struct MtmsKeyBatch MtmsKeyBatch;

extern MtmsKeyBatch *mtms_key_batch_create(void);

/* Number the distinct keys of vk's rows rows[0..n). */
extern void mtms_key_batch_prepare(MtmsKeyBatch *kb, const MtmsJoinedKeys *vk,
								   const int64 *rows, int n);

/* H1 (n x sizes[1]) = X W[0]^T of the prepared batch for fine-tune tower t. */
extern void mtms_key_batch_forward(MtmsKeyBatch *kb, const MtmsModel *m,
								   const MtmsTower *t, float *H1);

/* t->gW[0] += delta1^T X for the prepared batch (delta1: n x sizes[1]). */
extern void mtms_key_batch_weight_grad(MtmsKeyBatch *kb, const MtmsModel *m,
									   MtmsTower *t, const float *delta1);

#endif							/* MTMS_JOINED_KEYS_H */
