/*
 * catalog.h
 *    The model catalog: what a model declares (scenes, fields, sizes,
 *    options) and which version is active.  Implemented in catalog.c on top
 *    of the tables mtms_model / mtms_version (src/sql/00_tables.sql).
 */
#ifndef MTMS_CATALOG_H
#define MTMS_CATALOG_H

#include "mtms.h"
#include "catalog_tables.h"
#include "options.h"
#include "utils/acl.h"

/* What a role may do with a model (access.h checks it). */
typedef enum MtmsPrivilege
{
	MTMS_PRIV_SCORE,			/* score, evaluate, read versions and rows */
	MTMS_PRIV_TRAIN,			/* train a new version, roll back */
	MTMS_PRIV_OWNER				/* drop, add scenes and fields, grant, change the owner */
} MtmsPrivilege;

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
	bool		has_acl;		/* the schema has acl and params_revision (0.2+) */
	Acl		   *acl;			/* grants; NULL when none (or no column) */
	int64		params_revision;	/* bumped by edits of its rows by plain SQL */

	/*
	 * The model's experiment (experiment.h), read in the same statement as
	 * active_version: experiment_id 0 when there is none (or the schema
	 * predates 0.3).
	 */
	int64		experiment_id;
	int32		candidate_version;
	float8		candidate_share;
} MtmsModelMeta;

/*
 * Look a model up by name (via SPI; the caller need not be connected).
 * Result is palloc'd in CurrentMemoryContext.  With missing_ok false an
 * unknown name raises undefined_object listing nothing (hint: mtms_create_model).
 * With lock true the model row is locked FOR UPDATE (training, lifecycle).
 * The row is read as the catalog's owner, whatever row security would show
 * the caller: check the caller's privilege (access.h) before using it.
 */
extern MtmsModelMeta *mtms_model_lookup(const char *name, bool missing_ok,
										bool lock);

/*
 * Look a model up for a change that needs privilege, and lock its row: the
 * privilege is checked before waiting for the lock, and again after it.
 */
extern MtmsModelMeta *mtms_model_lookup_for_change(const char *name,
												   MtmsPrivilege privilege);

/*
 * ERROR undefined_object (42704), naming the kept versions, unless version
 * is a kept version of m (mtms_rollback, mtms_evaluate).  Check the
 * caller's privilege on m first: the catalog is read as its owner.
 */
extern void mtms_check_version_kept(const MtmsModelMeta *m, int32 version);

/* Index of a scene / field in the model, or -1. */
extern int	mtms_scene_index(const MtmsModelMeta *m, const char *scene);
extern int	mtms_field_index(const MtmsModelMeta *m, const char *field);

/* "a, b, c" list of a model's scenes / fields, for error hints. */
extern char *mtms_scene_list(const MtmsModelMeta *m);
extern char *mtms_field_list(const MtmsModelMeta *m);

/*
 * Validate a model, scene or field name; "what" names it in the error
 * ("model", "scene", "field").  For "field" a '=' gets its own message.
 */
extern void mtms_check_name(const char *name, const char *what);

#endif							/* MTMS_CATALOG_H */
