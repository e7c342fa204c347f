/*
 * samples.h
 *    Sample relations (tables or views with scene, features, click,
 *    conversion): checking their shape before reading them.
 */
#ifndef MTMS_SAMPLES_H
#define MTMS_SAMPLES_H

#include "mtms.h"

/*
 * Check that relid has the sample columns with usable types; returns its
 * schema-qualified, quoted name.  Missing column: ERRCODE_UNDEFINED_COLUMN
 * naming it; wrong type: ERRCODE_DATATYPE_MISMATCH naming it and the type.
 */
extern char *mtms_samples_check(Oid relid);

/*
 * Rows of each of the model's scenes in the relation (relname as returned
 * by mtms_samples_check), [nscenes]; rows of other scenes are not counted.
 * The caller is connected to SPI.
 */
struct MtmsModel;
extern int64 *mtms_samples_scene_rows(const char *relname, const struct MtmsModel *m);

#endif							/* MTMS_SAMPLES_H */
