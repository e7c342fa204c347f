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

#endif							/* MTMS_SAMPLES_H */
