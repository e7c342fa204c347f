/*
 * model_flat.h
 *    A loaded model in one pointer-free block (offsets, not pointers), so
 *    that it can live in shared memory, and read-only views over it.
 *
 * mtms_model_flat_write copies what scoring reads of a loaded model: the
 * declaration (names, births, the joined layout), every pair's embedding
 * rows and hash buckets, and the parameters of every tower, without any
 * optimizer state.  mtms_model_flat_view builds, in a new memory context,
 * the small MtmsModel / MtmsEmbStore / MtmsTower headers whose big arrays
 * point into the block: scoring code reads them as it reads a loaded
 * model, bit for bit the same numbers.  A view never writes the block;
 * training, extending or copying a view is a bug.
 */
#ifndef MTMS_MODEL_FLAT_H
#define MTMS_MODEL_FLAT_H

#include "model.h"

/* Bytes of the flat copy of m. */
extern Size mtms_model_flat_size(const MtmsModel *m);

/* Write the flat copy of m into dst (mtms_model_flat_size bytes, 64-aligned). */
extern void mtms_model_flat_write(const MtmsModel *m, char *dst, Size size);

/*
 * A model reading the block at src in place; its headers live in a new
 * child of parent (mtms_model_free deletes them, never the block).
 */
extern MtmsModel *mtms_model_flat_view(const char *src, MemoryContext parent);

#endif							/* MTMS_MODEL_FLAT_H */
