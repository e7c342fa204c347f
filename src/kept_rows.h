/*
 * kept_rows.h
 *    Training rows kept in memory by a collecting pass of mtms_train
 *    (mtms.keep_training_rows), in a compact form, until row_store.c
 *    groups them by scene for the unit jobs.
 *
 * A row is its scene, its labels and its features; a feature is stored as
 * the 4-byte number of its distinct (hash, field) key, the keys once each:
 * about 40 bytes per row of the synthetic samples instead of the ~125 of a
 * parsed row set.  Rows come back in the order they were added.
 */
#ifndef MTMS_KEPT_ROWS_H
#define MTMS_KEPT_ROWS_H

#include "feature_parser.h"
#include "feature_keys.h"

typedef struct MtmsKeptRows MtmsKeptRows;

/* An empty set; it and everything it holds live in cxt. */
extern MtmsKeptRows *mtms_kept_rows_create(MemoryContext cxt);

extern void mtms_kept_rows_add(MtmsKeptRows *kr, int32 scene, uint8 label,
							   const MtmsFeature *feats, int nfeats);

/* No more rows: drop the key lookup table and trim the arrays. */
extern void mtms_kept_rows_finish(MtmsKeptRows *kr);

extern int64 mtms_kept_rows_count(const MtmsKeptRows *kr);

/*
 * Row i as stored: its scene and label, and its n features as key numbers
 * at *occ (valid while kr lives); returns n.
 */
extern int	mtms_kept_rows_raw(const MtmsKeptRows *kr, int64 i, int32 *scene, uint8 *label,
							   const int32 **occ);

/* The distinct keys, numbered as the key numbers of mtms_kept_rows_raw. */
extern const MtmsFeatureKey *mtms_kept_rows_keys(const MtmsKeptRows *kr, int64 *nkeys);

/* Feature occurrences of all rows. */
extern int64 mtms_kept_rows_occurrences(const MtmsKeptRows *kr);

#endif							/* MTMS_KEPT_ROWS_H */
