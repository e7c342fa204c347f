/*
 * row_store.h
 *    Sample rows parsed once, grouped by scene, in one flat block without
 *    pointers, so that it can be handed as it is to parallel workers
 *    (dynamic shared memory) and read by any number of them at once.
 *
 * A row is its labels and its features; a feature is the 4-byte number of
 * its distinct (hash, field) key, the keys once each.  Rows of scene s are
 * rows first(s) .. first(s) + count(s) - 1, in the order they were read.
 * Built from kept rows (kept_rows.h) by mtms_row_store_build.
 */
#ifndef MTMS_ROW_STORE_H
#define MTMS_ROW_STORE_H

#include "mtms.h"
#include "feature_keys.h"
#include "kept_rows.h"
#include "train_rowset.h"

typedef struct MtmsRowStore
{
	uint32		magic;
	int32		nscenes;
	int64		nrows;
	int64		nocc;			/* feature occurrences */
	int64		nkeys;			/* distinct (hash, field) keys */
	Size		size;			/* bytes of the whole block */
	/* offsets from the block's start */
	Size		off_scene_first;	/* int64 [nscenes + 1] */
	Size		off_label;		/* uint8 [nrows] */
	Size		off_row_start;	/* int64 [nrows + 1] into occ */
	Size		off_occ;		/* int32 [nocc]: key numbers */
	Size		off_keys;		/* MtmsFeatureKey [nkeys] */
} MtmsRowStore;

#define MTMS_ROW_STORE_MAGIC	0x6d747273	/* "mtrs" */

/*
 * The rows of kr (nscenes scenes), grouped by scene in one palloc'd block
 * in the current memory context; kr is left as it was.
 */
extern MtmsRowStore *mtms_row_store_build(const MtmsKeptRows *kr, int nscenes);

/* Copy of store into dst (store->size bytes). */
extern void mtms_row_store_copy(const MtmsRowStore *store, void *dst);

/* ERROR unless p holds a well-formed store of size bytes. */
extern void mtms_row_store_check(const MtmsRowStore *p, Size size);

static inline const int64 *
mtms_rs_scene_first(const MtmsRowStore *s)
{
	return (const int64 *) ((const char *) s + s->off_scene_first);
}

static inline const uint8 *
mtms_rs_labels(const MtmsRowStore *s)
{
	return (const uint8 *) ((const char *) s + s->off_label);
}

static inline const int64 *
mtms_rs_row_start(const MtmsRowStore *s)
{
	return (const int64 *) ((const char *) s + s->off_row_start);
}

static inline const int32 *
mtms_rs_occ(const MtmsRowStore *s)
{
	return (const int32 *) ((const char *) s + s->off_occ);
}

static inline const MtmsFeatureKey *
mtms_rs_keys(const MtmsRowStore *s)
{
	return (const MtmsFeatureKey *) ((const char *) s + s->off_keys);
}

/* Rows of scene s: [*first, *first + count). */
static inline int64
mtms_rs_scene_rows(const MtmsRowStore *s, int scene, int64 *first)
{
	const int64 *sf = mtms_rs_scene_first(s);

	*first = sf[scene];
	return sf[scene + 1] - sf[scene];
}

/*
 * Rows rows[0..n) of the store as a row set (scene, labels and features)
 * in out, which is cleared first and grows in the current context.
 */
extern void mtms_row_store_decode(const MtmsRowStore *s, int scene, const int64 *rows,
								  int64 n, MtmsRowSet *out);

#endif							/* MTMS_ROW_STORE_H */
