/*
 * model_shared_mem.h
 *    The registry of shared model versions in the main shared memory, and
 *    the settings of model_shared.c: a leaf module, so that mtms.c can
 *    register it while preloading without depending on the rest.
 */
#ifndef MTMS_MODEL_SHARED_MEM_H
#define MTMS_MODEL_SHARED_MEM_H

#include "mtms.h"
#include "storage/lwlock.h"
#include "utils/dsa.h"

/* (PostgreSQL 15 and 16 spell it only for dsm handles, which dsa's are) */
#ifndef DSA_HANDLE_INVALID
#define DSA_HANDLE_INVALID ((dsa_handle) DSM_HANDLE_INVALID)
#endif

#define SHARED_SLOTS	64		/* versions in shared memory at most */

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_LOADING,				/* a loader writes its block: not to be read */
	SLOT_READY					/* published: read only */
} SlotState;

/* What identifies a stored version's parameters (model_cache.c compares the same). */
typedef struct SlotKey
{
	Oid			db;
	Oid			relid;			/* mtms_model: a re-created extension is another */
	int32		model_id;
	int32		version;
	int32		nscenes;
	int32		nfields;
	int64		params_revision;
} SlotKey;

typedef struct SharedSlot
{
	SlotState	state;
	bool		stale;			/* no longer active: free when unpinned */
	bool		dropped;		/* its model was dropped: evicted first */
	int			refcount;		/* transactions that pin it */
	int			loader;			/* pid of the loader while SLOT_LOADING */
	uint64		load_id;		/* unique among all loads */
	uint64		last_used;		/* ctl->tick at its last pin */
	SlotKey		key;
	Oid			owner;			/* the model's owner (who may see the row) */
	dsa_pointer root;			/* the flat model */
	dsa_pointer proj;			/* its projection cache (proj_shared.h) */
	Size		bytes;
} SharedSlot;

struct SharedCtl
{
	LWLock		lock;			/* everything below */
	int			tranche;
	dsa_handle	handle;			/* DSA_HANDLE_INVALID until first use */
	uint64		next_load_id;
	uint64		tick;
	SharedSlot	slots[SHARED_SLOTS];
};

typedef struct SharedCtl SharedCtl;

/* The registry; NULL unless mtms is in shared_preload_libraries. */
extern SharedCtl *mtms_shared_ctl;

/* Settings (registered by mtms.c). */
extern bool mtms_shared_models;			/* mtms.shared_models */
extern int	mtms_shared_models_memory_mb;	/* mtms.shared_models_memory */
extern int	mtms_test_pause_load;		/* mtms.test_pause_load (test hook) */

/* Request the registry's shared memory (from _PG_init while preloading). */
extern void mtms_shared_init(void);

#endif							/* MTMS_MODEL_SHARED_MEM_H */
