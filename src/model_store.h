/*
 * model_store.h
 *    Loading a model version from, and saving one to, the parameter tables.
 */
#ifndef MTMS_MODEL_STORE_H
#define MTMS_MODEL_STORE_H

#include "catalog.h"
#include "model.h"

/*
 * Load version of the model into a new MtmsModel (child of the current
 * context), grown to meta's current scenes and fields.  Stored values are
 * validated: ERRCODE_DATA_CORRUPTED names what is wrong.
 */
extern MtmsModel *mtms_model_load(const MtmsModelMeta *meta, int32 version);

/* Insert m's parameters as rows of version (whose mtms_version row exists). */
extern void mtms_model_save(const MtmsModelMeta *meta, const MtmsModel *m,
							int32 version);

#endif							/* MTMS_MODEL_STORE_H */
