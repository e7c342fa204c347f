/*
 * model_shared.c
 *    Loaded model versions in shared memory (see model_shared.h).
 *
 * The registry is a fixed array of entries in the main shared memory,
 * under one LWLock (taken once per transaction and model, never across a
 * load); the blocks live in one DSA area, created by the first session
 * that needs it and pinned for the life of the server, its size capped by
 * mtms.shared_models_memory.  A backend keeps the load ids it pinned in
 * this transaction and unpins them at its end (and at exit).
 */
#include "model_shared.h"

#include "access/parallel.h"
#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "model_flat.h"
#include "model_store.h"
#include "proj_shared.h"
#include "score_projection.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

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
	int			refcount;		/* transactions that pin it */
	int			loader;			/* pid of the loader while SLOT_LOADING */
	uint64		load_id;		/* unique among all loads */
	uint64		last_used;		/* ctl->tick at its last pin */
	SlotKey		key;
	dsa_pointer root;			/* the flat model */
	dsa_pointer proj;			/* its projection cache (proj_shared.h) */
	Size		bytes;
} SharedSlot;

typedef struct SharedCtl
{
	LWLock		lock;			/* everything below */
	int			tranche;
	dsa_handle	handle;			/* DSA_HANDLE_INVALID until first use */
	ConditionVariable loaded;	/* a SLOT_LOADING entry changed state */
	uint64		next_load_id;
	uint64		tick;
	SharedSlot	slots[SHARED_SLOTS];
} SharedCtl;

struct MtmsSharedRef
{
	int			slot;
	uint64		load_id;
};

static SharedCtl *ctl = NULL;
static dsa_area *area = NULL;
static uint64 pinned[SHARED_SLOTS];	/* load id this transaction pinned, or 0 */
static int	npinned = 0;
static int	loading_slot = -1;	/* the entry this backend is loading */
static dsa_pointer loading_dp = InvalidDsaPointer;
static bool callbacks_done = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* ---------------------------------------------------------------------
 * Shared memory setup
 * --------------------------------------------------------------------- */

static void
shared_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(SharedCtl));
}

static void
shared_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ctl = ShmemInitStruct("mtms shared models", sizeof(SharedCtl), &found);
	if (!found)
	{
		memset(ctl, 0, sizeof(SharedCtl));
		ctl->tranche = LWLockNewTrancheId();
		LWLockInitialize(&ctl->lock, ctl->tranche);
		ctl->handle = DSA_HANDLE_INVALID;
		ConditionVariableInit(&ctl->loaded);
		ctl->next_load_id = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
mtms_shared_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shared_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shared_shmem_startup;
}

bool
mtms_shared_enabled(void)
{
	return ctl != NULL && mtms_shared_models;
}

int
mtms_shared_tranche(void)
{
	Assert(ctl != NULL);
	return ctl->tranche;
}

/* ---------------------------------------------------------------------
 * Entries (the caller holds ctl->lock exclusively)
 * --------------------------------------------------------------------- */

static void
slot_free(int i)
{
	SharedSlot *s = &ctl->slots[i];

	Assert(s->refcount == 0 && s->state == SLOT_READY);
	dsa_free(area, s->root);
	if (DsaPointerIsValid(s->proj))
		mtms_proj_shared_free(area, s->proj);
	memset(s, 0, sizeof(SharedSlot));
	s->root = InvalidDsaPointer;
	s->proj = InvalidDsaPointer;
}

static void
slot_unpin(int i, uint64 load_id)
{
	SharedSlot *s = &ctl->slots[i];

	if (s->state != SLOT_READY || s->load_id != load_id)
		return;					/* cannot happen: a pinned entry stays */
	Assert(s->refcount > 0);
	if (--s->refcount == 0 && s->stale)
		slot_free(i);
}

static bool
key_equal(const SlotKey *a, const SlotKey *b)
{
	return memcmp(a, b, sizeof(SlotKey)) == 0;
}

static bool
same_model(const SlotKey *a, const SlotKey *b)
{
	return a->db == b->db && a->relid == b->relid && a->model_id == b->model_id;
}

/* Other versions of key's model are no longer active: free them once unpinned. */
static void
mark_others_stale(const SlotKey *key)
{
	for (int i = 0; i < SHARED_SLOTS; i++)
	{
		SharedSlot *s = &ctl->slots[i];

		if (s->state == SLOT_FREE || !same_model(&s->key, key) || key_equal(&s->key, key))
			continue;
		s->stale = true;
		if (s->state == SLOT_READY && s->refcount == 0)
			slot_free(i);
	}
}

static int
slot_find(const SlotKey *key)
{
	for (int i = 0; i < SHARED_SLOTS; i++)
		if (ctl->slots[i].state != SLOT_FREE && key_equal(&ctl->slots[i].key, key))
			return i;
	return -1;
}

/* The unpinned published entry used longest ago, or -1. */
static int
slot_lru(int except)
{
	int			best = -1;

	for (int i = 0; i < SHARED_SLOTS; i++)
	{
		SharedSlot *s = &ctl->slots[i];

		if (i != except && s->state == SLOT_READY && s->refcount == 0 &&
			(best < 0 || s->last_used < ctl->slots[best].last_used))
			best = i;
	}
	return best;
}

/* A free entry, evicting the least recently used unpinned one; or -1. */
static int
slot_claim(void)
{
	int			i;

	for (i = 0; i < SHARED_SLOTS; i++)
		if (ctl->slots[i].state == SLOT_FREE)
			return i;
	i = slot_lru(-1);
	if (i >= 0)
		slot_free(i);
	return i;
}

static void
slot_pin(int i)
{
	SharedSlot *s = &ctl->slots[i];

	if (pinned[i] == s->load_id)
		return;
	Assert(pinned[i] == 0);
	s->refcount++;
	s->last_used = ++ctl->tick;
	pinned[i] = s->load_id;
	npinned++;
}

/* ---------------------------------------------------------------------
 * This backend: the area, its pins, its exit
 * --------------------------------------------------------------------- */

static void
release_pins(void)
{
	if (npinned == 0 && loading_slot < 0)
		return;
	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SHARED_SLOTS; i++)
		if (pinned[i] != 0)
		{
			slot_unpin(i, pinned[i]);
			pinned[i] = 0;
		}
	npinned = 0;

	/* a load interrupted without an error (a FATAL exit) */
	if (loading_slot >= 0)
	{
		SharedSlot *s = &ctl->slots[loading_slot];

		if (s->state == SLOT_LOADING && s->loader == MyProcPid)
		{
			memset(s, 0, sizeof(SharedSlot));
			s->root = InvalidDsaPointer;
		}
		if (DsaPointerIsValid(loading_dp))
			dsa_free(area, loading_dp);
		loading_slot = -1;
		loading_dp = InvalidDsaPointer;
	}
	LWLockRelease(&ctl->lock);
	ConditionVariableBroadcast(&ctl->loaded);
}

static void
shared_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			release_pins();
			break;
		default:
			break;
	}
}

static void
shared_exit(int code, Datum arg)
{
	if (ctl != NULL && area != NULL)
		release_pins();
}

dsa_area *
mtms_shared_area(void)
{
	MemoryContext old;

	if (area != NULL)
		return area;
	Assert(ctl != NULL);
	if (!callbacks_done)
	{
		LWLockRegisterTranche(ctl->tranche, "mtms_shared_models");
		RegisterXactCallback(shared_xact_callback, NULL);
		before_shmem_exit(shared_exit, (Datum) 0);
		callbacks_done = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	PG_TRY();
	{
		if (ctl->handle == DSA_HANDLE_INVALID)
		{
			area = dsa_create(ctl->tranche);
			dsa_pin(area);
			ctl->handle = dsa_get_handle(area);
		}
		else
			area = dsa_attach(ctl->handle);
		dsa_pin_mapping(area);
	}
	PG_FINALLY();
	{
		LWLockRelease(&ctl->lock);
		MemoryContextSwitchTo(old);
	}
	PG_END_TRY();
	return area;
}

/* ---------------------------------------------------------------------
 * Loading
 * --------------------------------------------------------------------- */

static Size
shared_limit(void)
{
	return (Size) mtms_shared_models_memory_mb * 1024 * 1024;
}

/* Room for size bytes, evicting unpinned entries (but slot) as needed. */
static dsa_pointer
shared_allocate(Size size, int slot)
{
	dsa_pointer dp;

	dsa_set_size_limit(area, shared_limit());
	dp = dsa_allocate_extended(area, size, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	while (!DsaPointerIsValid(dp))
	{
		int			victim;

		LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
		victim = slot_lru(slot);
		if (victim >= 0)
			slot_free(victim);
		LWLockRelease(&ctl->lock);
		if (victim < 0)
			break;
		dp = dsa_allocate_extended(area, size, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	}
	return dp;
}

static void
warn_no_room(const MtmsModelMeta *meta, Size bytes, const char *why)
{
	static int32 warned_model = 0;
	static int32 warned_version = 0;

	if (warned_model == meta->model_id && warned_version == meta->active_version)
		return;
	warned_model = meta->model_id;
	warned_version = meta->active_version;
	ereport(WARNING,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("model \"%s\" version %d is not shared: %s",
					meta->name, meta->active_version, why),
			 bytes > 0 ?
			 errdetail("It needs %zu MB; mtms.shared_models_memory is %d MB, "
					   "part of it used by versions other sessions are scoring with.",
					   bytes / (1024 * 1024) + 1, mtms_shared_models_memory_mb) : 0,
			 errhint("This session scores with its own copy.  Raise mtms.shared_models_memory "
					 "to share it.")));
}

/*
 * Load meta's active version into entry i (ours, SLOT_LOADING) and
 * publish it; returns the session's own copy (in cxt) instead when it
 * does not fit.
 */
static MtmsModel *
load_into(const MtmsModelMeta *meta, int i, MemoryContext cxt, bool *published)
{
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "mtms shared model load",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(tmp);
	MtmsModel  *model = mtms_model_load(meta, meta->active_version);
	Size		size = mtms_model_flat_size(model);
	dsa_pointer dp;
	dsa_pointer proj;

	MemoryContextSwitchTo(old);
	*published = false;
	loading_dp = dp = shared_allocate(size, i);
	if (!DsaPointerIsValid(dp))
	{
		/* keep what we loaded, as this session's own copy */
		MemoryContextSetParent(model->cxt, cxt);
		MemoryContextDelete(tmp);
		warn_no_room(meta, size, "it does not fit in mtms.shared_models_memory");
		return model;
	}
	mtms_model_flat_write(model, dsa_get_address(area, dp), size);
	proj = mtms_proj_shared_create(area, model->npairs, mtms_scorer_vector_floats(model),
								   mtms_scorer_cap_bytes(), ctl->tranche);

	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	Assert(ctl->slots[i].state == SLOT_LOADING && ctl->slots[i].loader == MyProcPid);
	ctl->slots[i].root = dp;
	ctl->slots[i].proj = proj;
	ctl->slots[i].bytes = size;
	ctl->slots[i].state = SLOT_READY;
	loading_slot = -1;
	loading_dp = InvalidDsaPointer;
	slot_pin(i);
	LWLockRelease(&ctl->lock);
	ConditionVariableBroadcast(&ctl->loaded);
	MemoryContextDelete(tmp);
	*published = true;
	return NULL;
}

/* Undo a load that failed (an ERROR): the entry is free again. */
static void
load_failed(int i)
{
	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	if (ctl->slots[i].state == SLOT_LOADING && ctl->slots[i].loader == MyProcPid)
	{
		memset(&ctl->slots[i], 0, sizeof(SharedSlot));
		ctl->slots[i].root = InvalidDsaPointer;
	}
	if (DsaPointerIsValid(loading_dp))
		dsa_free(area, loading_dp);
	loading_dp = InvalidDsaPointer;
	loading_slot = -1;
	LWLockRelease(&ctl->lock);
	ConditionVariableBroadcast(&ctl->loaded);
}

static void
make_key(const MtmsModelMeta *meta, SlotKey *key)
{
	memset(key, 0, sizeof(SlotKey));
	key->db = MyDatabaseId;
	key->relid = mtms_model_relid();
	key->model_id = meta->model_id;
	key->version = meta->active_version;
	key->nscenes = meta->nscenes;
	key->nfields = meta->nfields;
	key->params_revision = meta->params_revision;
}

static MtmsModel *
view_of(int i, MemoryContext cxt, MtmsSharedRef **ref)
{
	SharedSlot *s = &ctl->slots[i];
	MtmsSharedRef *r = MemoryContextAlloc(cxt, sizeof(MtmsSharedRef));

	r->slot = i;
	r->load_id = s->load_id;
	*ref = r;
	/* pinned: root stays, and was published under the lock */
	return mtms_model_flat_view(dsa_get_address(area, s->root), cxt);
}

MtmsModel *
mtms_shared_model(const MtmsModelMeta *meta, MemoryContext cxt, MtmsSharedRef **ref)
{
	SlotKey		key;
	int			i;

	*ref = NULL;
	if (!mtms_shared_enabled() || meta->active_version <= 0 ||
		TransactionIdIsCurrentTransactionId(meta->row_xmin))
		return NULL;
	make_key(meta, &key);
	mtms_shared_area();

	ConditionVariablePrepareToSleep(&ctl->loaded);
	for (;;)
	{
		LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);

		/*
		 * A statement snapshot sees the latest committed version: the
		 * others are no longer active.  (A transaction snapshot may see an
		 * older one; a parallel worker the leader's query's.)
		 */
		if (!IsolationUsesXactSnapshot() && !IsParallelWorker())
			mark_others_stale(&key);
		i = slot_find(&key);
		if (i >= 0 && ctl->slots[i].state == SLOT_READY)
		{
			slot_pin(i);
			LWLockRelease(&ctl->lock);
			ConditionVariableCancelSleep();
			return view_of(i, cxt, ref);
		}
		if (i >= 0)
		{
			/* another session is loading it: wait for it */
			LWLockRelease(&ctl->lock);
			ConditionVariableSleep(&ctl->loaded, PG_WAIT_EXTENSION);
			continue;
		}
		i = slot_claim();
		if (i >= 0)
		{
			SharedSlot *s = &ctl->slots[i];

			s->state = SLOT_LOADING;
			s->stale = false;
			s->refcount = 0;
			s->loader = MyProcPid;
			s->load_id = ctl->next_load_id++;
			s->key = key;
			s->root = InvalidDsaPointer;
			loading_slot = i;
		}
		LWLockRelease(&ctl->lock);
		break;
	}
	ConditionVariableCancelSleep();
	if (i < 0)
	{
		warn_no_room(meta, 0, "every shared entry is in use");
		return NULL;
	}

	{
		MtmsModel  *own = NULL;
		bool		published = false;

		PG_TRY();
		{
			own = load_into(meta, i, cxt, &published);
		}
		PG_CATCH();
		{
			load_failed(i);
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (!published)
		{
			load_failed(i);
			return own;
		}
	}
	return view_of(i, cxt, ref);
}

dsa_pointer
mtms_shared_proj(const MtmsSharedRef *ref)
{
	Assert(pinned[ref->slot] == ref->load_id);
	return ctl->slots[ref->slot].proj;
}

bool
mtms_shared_repin(MtmsSharedRef *ref)
{
	bool		ok;

	if (pinned[ref->slot] == ref->load_id)
		return true;
	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	ok = ctl->slots[ref->slot].state == SLOT_READY &&
		ctl->slots[ref->slot].load_id == ref->load_id;
	if (ok)
		slot_pin(ref->slot);
	LWLockRelease(&ctl->lock);
	return ok;
}

void
mtms_shared_forget_model(int32 model_id)
{
	SlotKey		key;

	if (ctl == NULL || ctl->handle == DSA_HANDLE_INVALID)
		return;
	mtms_shared_area();
	memset(&key, 0, sizeof(key));
	key.db = MyDatabaseId;
	key.relid = mtms_model_relid();
	key.model_id = model_id;
	key.version = -1;			/* matches no entry: all of them are others */
	LWLockAcquire(&ctl->lock, LW_EXCLUSIVE);
	mark_others_stale(&key);
	LWLockRelease(&ctl->lock);
}
