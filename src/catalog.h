/*
 * catalog.h
 *    The model catalog: what a model declares (scenes, fields, sizes,
 *    options) and which version is active.  Implemented in catalog.c on top
 *    of the tables mtms_model / mtms_version (src/sql/00_tables.sql).
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
	int32	   *scene_birth;	/* [nscenes] 0 = declared, k = k-th addition */
	int32	   *field_birth;	/* [nfields] */
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

/*
 * Validate a model, scene or field name; "what" names it in the error
 * ("model", "scene", "field").  For "field" a '=' gets its own message.
 */
extern void mtms_check_name(const char *name, const char *what);

/*
 * OID of @extschema@.mtms_model.  Cached per backend and revalidated with a
 * syscache lookup, so it stays right across DROP/CREATE EXTENSION.  Scoring
 * caches register a relcache callback on it.  It reads catalogs: call it
 * from ordinary code, never from inside an invalidation callback.
 */
extern Oid	mtms_model_relid(void);

/*
 * The extension's schema name, already quoted for SQL text
 * (e.g. "public" or "my schema" in double quotes).  palloc'd.
 */
extern char *mtms_schema_quoted(void);

/*
 * Tell every backend that a model changed (drop, add scene/field, rollback,
 * new version): a relcache invalidation of mtms_model, sent at commit.
 */
extern void mtms_catalog_changed(void);

#endif							/* MTMS_CATALOG_H */
