/*
 * catalog.h
 *    The model catalog: what a model declares (scenes, fields, sizes,
 *    options) and which version is active.  Implemented in catalog.c on top
 *    of the tables mtms_model / mtms_version (src/sql/00_catalog.sql).
 */
#ifndef MTMS_CATALOG_H
#define MTMS_CATALOG_H

#include "mtms.h"
#include "options.h"

typedef struct MtmsModelMeta
{
	int32		model_id;
	char	   *name;
	Oid			owner;
	int32		nscenes;
	char	  **scenes;			/* declaration order; appended by add_scene */
	int32		nfields;
	char	  **fields;			/* declaration order; appended by add_field */
	int32		dim;			/* embedding_dim */
	int32		nhidden;
	int32		hidden[MTMS_MAX_HIDDEN_LAYERS];
	MtmsOptions opts;
	int32		active_version; /* 0 when the model was never trained */
} MtmsModelMeta;

/*
 * Look a model up by name (via SPI; the caller need not be connected).
 * Result is palloc'd in CurrentMemoryContext.  With missing_ok false an
 * unknown name raises undefined_object listing nothing (hint: mtms_create_model).
 * With lock true the model row is locked FOR UPDATE (training, lifecycle).
 */
extern MtmsModelMeta *mtms_model_lookup(const char *name, bool missing_ok,
										bool lock);

/* Index of a scene / field in the model, or -1. */
extern int	mtms_scene_index(const MtmsModelMeta *m, const char *scene);
extern int	mtms_field_index(const MtmsModelMeta *m, const char *field);

/* Error unless the current role owns the model or is superuser. */
extern void mtms_check_owner(const MtmsModelMeta *m);

/* "a, b, c" list of a model's scenes / fields, for error hints. */
extern char *mtms_scene_list(const MtmsModelMeta *m);
extern char *mtms_field_list(const MtmsModelMeta *m);

/* Validate a model, scene or field name; "what" names it in the error. */
extern void mtms_check_name(const char *name, const char *what);

#endif							/* MTMS_CATALOG_H */
