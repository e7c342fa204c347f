/*
 * unit_wire.h
 *    A model's shape and a unit's parameters as bytes, for the parallel
 *    workers that train units (train_parallel.c): a worker builds the
 *    model's skeleton once, then takes in each unit's parameters, trains
 *    them and hands them back.  Everything read back is validated.
 */
#ifndef MTMS_UNIT_WIRE_H
#define MTMS_UNIT_WIRE_H

#include "mtms.h"
#include "lib/stringinfo.h"
#include "model.h"
#include "train_stages.h"

/* The shape of m (scenes, fields, births, sizes, seed). */
extern void mtms_wire_shape(StringInfo buf, const MtmsModel *m);

/*
 * A model of that shape in a new memory context (child of the current
 * one): every pair's fresh phase-1 tower and empty embeddings, the
 * parameters units are then read into.
 */
extern MtmsModel *mtms_wire_read_shape(const char *data, Size len);

/* The unit's parameters: its pairs' embeddings and phase-1 towers, or fine-tune towers. */
extern void mtms_wire_unit(StringInfo buf, const MtmsModel *m, const MtmsStageInfo *si,
						   int unit);

/*
 * The same with the towers' parameters only (their Adam moments read back
 * as zero): for units that are finished, or whose towers start fresh
 * moments (a multi-node training's job and results, node_wire.c).
 */
extern void mtms_wire_unit_params(StringInfo buf, const MtmsModel *m,
								  const MtmsStageInfo *si, int unit);

/* Replace the unit's parameters in m (in m's context) with those in data. */
extern void mtms_wire_read_unit(const char *data, Size len, MtmsModel *m,
								const MtmsStageInfo *si, int unit);

/*
 * Drop the unit's big parameters from m once they are handed back: its
 * pairs' embeddings (left empty), or their fine-tune towers (left NULL).
 */
extern void mtms_wire_drop_unit(MtmsModel *m, const MtmsStageInfo *si, int unit);

#endif							/* MTMS_UNIT_WIRE_H */
