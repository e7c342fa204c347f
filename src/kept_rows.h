/*
 * kept_rows.h
 *    Training rows kept in memory from one pass of mtms_train for the
 *    passes after it (mtms.keep_training_rows), in a compact form.
 *
 * A row is its scene, its labels and its features; a feature is stored as
 * the 4-byte number of its distinct (hash, field) key, the keys once each:
 * about 40 bytes per row of the synthetic samples instead of the ~125 of a
 * parsed row set.  Rows come back in the order they were added.
 */
#ifndef MTMS_KEPT_ROWS_H
#define MTMS_KEPT_ROWS_H

#include "feature_parser.h"

typedef struct MtmsKeptRows MtmsKeptRows;

/* An empty set; it and everything it holds live in cxt. */
extern MtmsKeptRows *mtms_kept_rows_create(MemoryContext cxt);

extern void mtms_kept_rows_add(MtmsKeptRows *kr, int32 scene, uint8 label,
							   const MtmsFeature *feats, int nfeats);

/* No more rows: drop the key lookup table and trim the arrays. */
extern void mtms_kept_rows_finish(MtmsKeptRows *kr);

extern int64 mtms_kept_rows_count(const MtmsKeptRows *kr);

/*
 * Row i: its scene and label, its features into *buf (of *cap entries,
 * repalloc'd larger in the current context when needed); returns how many.
 */
extern int	mtms_kept_rows_get(const MtmsKeptRows *kr, int64 i, int32 *scene,
							   uint8 *label, MtmsFeature **buf, int *cap);

#endif							/* MTMS_KEPT_ROWS_H */
