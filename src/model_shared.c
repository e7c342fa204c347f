/*
 * model_shared.c
 *    Loaded model versions in shared memory (see model_shared.h).
 *
 * The registry (model_shared_mem.h) is a fixed array of entries in the
 * main shared memory, under one LWLock (taken once per transaction and model, never across a
 * load); the blocks live in one DSA area, created by the first session
 * that needs it and pinned for the life of the server, its size capped by
 * mtms.shared_models_memory.  A backend keeps the load ids it pinned in
 * this transaction and unpins them at its end (and at exit).
 */
#include "model_shared.h"
#include "model_shared_mem.h"

#include "access/parallel.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "model_flat.h"
#include "model_store.h"
#include "proj_shared.h"
#include "score_projection.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

struct MtmsSharedRef
{
	int			slot;
	uint64		load_id;
};

static dsa_area *area = NULL;
static uint64 pinned[SHARED_SLOTS];	/* load id this transaction pinned, or 0 */
static int	npinned = 0;
static int	loading_slot = -1;	/* the entry this backend is loading */
static dsa_pointer loading_dp = InvalidDsaPointer;
static bool callbacks_done = false;
#define MAX_FORGET 16
static int32 forget[MAX_FORGET];	/* models this transaction dropped */
static int	nforget = 0;

bool
mtms_shared_enabled(void)
{
	return mtms_shared_ctl != NULL && mtms_shared_models;
}

/* ---------------------------------------------------------------------
 * Entries (the caller holds mtms_shared_ctl->lock exclusively)
 * --------------------------------------------------------------------- */

static void
slot_free(int i)
{
	SharedSlot *s = &mtms_shared_ctl->slots[i];

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
	SharedSlot *s = &mtms_shared_ctl->slots[i];

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

/*
 * The versions of key's model that the catalog serves now (its active
 * version and, during an experiment, its candidate), as key says.
 */
typedef struct LiveVersions
{
	int32		version[2];
} LiveVersions;

static void
live_versions(const MtmsModelMeta *meta, LiveVersions *live)
{
	live->version[0] = meta->active_version;
	live->version[1] = meta->experiment_id != 0 && meta->candidate_share > 0 ?
		meta->candidate_version : meta->active_version;
}

/* Other versions of key's model are no longer served: free them once unpinned. */
static void
mark_others_stale(const SlotKey *key, const LiveVersions *live)
{
	for (int i = 0; i < SHARED_SLOTS; i++)
	{
		SharedSlot *s = &mtms_shared_ctl->slots[i];
		SlotKey		k;

		if (s->state == SLOT_FREE || !same_model(&s->key, key))
			continue;
		k = *key;
		k.version = s->key.version;
		if ((k.version == live->version[0] || k.version == live->version[1]) &&
			key_equal(&s->key, &k))
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
		if (mtms_shared_ctl->slots[i].state != SLOT_FREE && key_equal(&mtms_shared_ctl->slots[i].key, key))
			return i;
	return -1;
}

/* The unpinned published entry to evict: of a dropped model first, then used longest ago; or -1. */
static int
slot_lru(int except)
{
	int			best = -1;

	for (int i = 0; i < SHARED_SLOTS; i++)
	{
		SharedSlot *s = &mtms_shared_ctl->slots[i];

		if (i == except || s->state != SLOT_READY || s->refcount > 0)
			continue;
		if (best < 0 || s->dropped > mtms_shared_ctl->slots[best].dropped ||
			(s->dropped == mtms_shared_ctl->slots[best].dropped &&
			 s->last_used < mtms_shared_ctl->slots[best].last_used))
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
		if (mtms_shared_ctl->slots[i].state == SLOT_FREE)
			return i;
	i = slot_lru(-1);
	if (i >= 0)
		slot_free(i);
	return i;
}

static void
slot_pin(int i)
{
	SharedSlot *s = &mtms_shared_ctl->slots[i];

	if (pinned[i] == s->load_id)
		return;
	Assert(pinned[i] == 0);
	s->refcount++;
	s->last_used = ++mtms_shared_ctl->tick;
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
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
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
		SharedSlot *s = &mtms_shared_ctl->slots[loading_slot];

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
	LWLockRelease(&mtms_shared_ctl->lock);
}

/*
 * The models this transaction dropped are gone: their versions are the
 * first to go when room is needed.  (Not at once: a statement that began
 * before the drop committed may still score with them, as it would with
 * its own copy; see specs/drop_during_score.spec.)
 */
static void
forget_committed(void)
{
	if (nforget == 0)
		return;
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SHARED_SLOTS; i++)
		for (int k = 0; k < nforget; k++)
			if (mtms_shared_ctl->slots[i].state != SLOT_FREE && mtms_shared_ctl->slots[i].key.db == MyDatabaseId &&
				mtms_shared_ctl->slots[i].key.model_id == forget[k])
				mtms_shared_ctl->slots[i].dropped = true;
	LWLockRelease(&mtms_shared_ctl->lock);
	nforget = 0;
}

static void
shared_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			release_pins();
			forget_committed();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			release_pins();
			nforget = 0;
			break;
		default:
			break;
	}
}

static void
shared_exit(int code, Datum arg)
{
	if (mtms_shared_ctl != NULL && area != NULL)
		release_pins();
}

dsa_area *
mtms_shared_area(void)
{
	MemoryContext old;

	if (area != NULL)
		return area;
	Assert(mtms_shared_ctl != NULL);
	if (!callbacks_done)
	{
		LWLockRegisterTranche(mtms_shared_ctl->tranche, "mtms_shared_models");
		RegisterXactCallback(shared_xact_callback, NULL);
		before_shmem_exit(shared_exit, (Datum) 0);
		callbacks_done = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	PG_TRY();
	{
		if (mtms_shared_ctl->handle == DSA_HANDLE_INVALID)
		{
			area = dsa_create(mtms_shared_ctl->tranche);
			dsa_pin(area);
			mtms_shared_ctl->handle = dsa_get_handle(area);
		}
		else
			area = dsa_attach(mtms_shared_ctl->handle);
		dsa_pin_mapping(area);
	}
	PG_FINALLY();
	{
		LWLockRelease(&mtms_shared_ctl->lock);
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

		LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
		victim = slot_lru(slot);
		if (victim >= 0)
			slot_free(victim);
		LWLockRelease(&mtms_shared_ctl->lock);
		if (victim < 0)
			break;
		dp = dsa_allocate_extended(area, size, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	}
	return dp;
}

static void
warn_no_room(const MtmsModelMeta *meta, int32 version, Size bytes, const char *why)
{
	static int32 warned_model = 0;
	static int32 warned_version = 0;

	if (warned_model == meta->model_id && warned_version == version)
		return;
	warned_model = meta->model_id;
	warned_version = version;
	ereport(WARNING,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("model \"%s\" version %d is not shared: %s",
					meta->name, version, why),
			 bytes > 0 ?
			 errdetail("It needs %zu MB; mtms.shared_models_memory is %d MB, "
					   "part of it used by versions other sessions are scoring with.",
					   bytes / (1024 * 1024) + 1, mtms_shared_models_memory_mb) : 0,
			 errhint("This session scores with its own copy.  Raise mtms.shared_models_memory "
					 "to share it.")));
}

/* Test hook: a load pauses between writing its block and publishing it. */
static void
test_pause(void)
{
	Datum		key;

	if (mtms_test_pause_load == 0)
		return;
	key = Int64GetDatum((int64) mtms_test_pause_load);
	DirectFunctionCall1(pg_advisory_lock_shared_int8, key);
	DirectFunctionCall1(pg_advisory_unlock_shared_int8, key);
}

/*
 * Load meta's active version into entry i (ours, SLOT_LOADING) and
 * publish it; returns the session's own copy (in cxt) instead when it
 * does not fit.
 */
static MtmsModel *
load_into(const MtmsModelMeta *meta, int32 version, int i, MemoryContext cxt,
		  bool *published)
{
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "mtms shared model load",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(tmp);
	MtmsModel  *model = mtms_model_load(meta, version);
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
		warn_no_room(meta, version, size, "it does not fit in mtms.shared_models_memory");
		return model;
	}
	mtms_model_flat_write(model, dsa_get_address(area, dp), size);
	test_pause();
	proj = mtms_proj_shared_create(area, model->npairs, mtms_scorer_vector_floats(model),
								   mtms_shared_ctl->tranche);

	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	Assert(mtms_shared_ctl->slots[i].state == SLOT_LOADING && mtms_shared_ctl->slots[i].loader == MyProcPid);
	mtms_shared_ctl->slots[i].root = dp;
	mtms_shared_ctl->slots[i].proj = proj;
	mtms_shared_ctl->slots[i].bytes = size;
	mtms_shared_ctl->slots[i].state = SLOT_READY;
	loading_slot = -1;
	loading_dp = InvalidDsaPointer;
	slot_pin(i);
	LWLockRelease(&mtms_shared_ctl->lock);
	MemoryContextDelete(tmp);
	*published = true;
	return NULL;
}

/* Undo a load that failed (an ERROR): the entry is free again. */
static void
load_failed(int i)
{
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	if (mtms_shared_ctl->slots[i].state == SLOT_LOADING && mtms_shared_ctl->slots[i].loader == MyProcPid)
	{
		memset(&mtms_shared_ctl->slots[i], 0, sizeof(SharedSlot));
		mtms_shared_ctl->slots[i].root = InvalidDsaPointer;
	}
	if (DsaPointerIsValid(loading_dp))
		dsa_free(area, loading_dp);
	loading_dp = InvalidDsaPointer;
	loading_slot = -1;
	LWLockRelease(&mtms_shared_ctl->lock);
}

static void
make_key(const MtmsModelMeta *meta, int32 version, SlotKey *key)
{
	memset(key, 0, sizeof(SlotKey));
	key->db = MyDatabaseId;
	key->relid = mtms_model_relid();
	key->model_id = meta->model_id;
	key->version = version;
	key->nscenes = meta->nscenes;
	key->nfields = meta->nfields;
	key->params_revision = meta->params_revision;
}

static MtmsModel *
view_of(int i, MemoryContext cxt, MtmsSharedRef **ref)
{
	SharedSlot *s = &mtms_shared_ctl->slots[i];
	MtmsSharedRef *r = MemoryContextAlloc(cxt, sizeof(MtmsSharedRef));

	r->slot = i;
	r->load_id = s->load_id;
	*ref = r;
	/* pinned: root stays, and was published under the lock */
	return mtms_model_flat_view(dsa_get_address(area, s->root), cxt);
}

/*
 * The heavyweight lock a loader holds on its version while it loads it,
 * and others wait for (so that the lock manager sees, and tests can tell,
 * who waits for whom): an advisory lock tag of our own class (pg_locks:
 * locktype advisory, objsubid 77, classid/objid the model id and version).
 */
#define MTMS_LOCKTAG_CLASS	77

static void
load_locktag(const SlotKey *key, LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, key->db, (uint32) key->model_id, (uint32) key->version,
						 MTMS_LOCKTAG_CLASS);
}

typedef enum Found
{
	FOUND_READY,				/* pinned */
	FOUND_LOADING,				/* someone loads it */
	FOUND_CLAIMED,				/* ours to load */
	FOUND_NO_ROOM				/* every entry in use */
} Found;

/* Look key up (pinning it), or claim an entry when claim. */
static Found
find_or_claim(const SlotKey *key, const LiveVersions *live, bool claim, Oid owner,
			  int *slot)
{
	Found		r;
	int			i;

	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);

	/*
	 * A statement snapshot sees the latest committed version: the others
	 * are no longer active.  (A transaction snapshot may see an older one;
	 * a parallel worker the leader's query's.)
	 */
	if (!IsolationUsesXactSnapshot() && !IsParallelWorker())
		mark_others_stale(key, live);
	i = slot_find(key);
	if (i >= 0 && mtms_shared_ctl->slots[i].state == SLOT_READY)
	{
		slot_pin(i);
		r = FOUND_READY;
	}
	else if (i >= 0)
		r = FOUND_LOADING;
	else if (!claim)
		r = FOUND_CLAIMED;		/* (nobody has it: the caller claims next) */
	else if ((i = slot_claim()) < 0)
		r = FOUND_NO_ROOM;
	else
	{
		SharedSlot *s = &mtms_shared_ctl->slots[i];

		s->state = SLOT_LOADING;
		s->stale = false;
		s->dropped = false;
		s->refcount = 0;
		s->loader = MyProcPid;
		s->load_id = mtms_shared_ctl->next_load_id++;
		s->key = *key;
		s->owner = owner;
		s->root = InvalidDsaPointer;
		s->proj = InvalidDsaPointer;
		loading_slot = i;
		r = FOUND_CLAIMED;
	}
	LWLockRelease(&mtms_shared_ctl->lock);
	*slot = i;
	return r;
}

MtmsModel *
mtms_shared_model(const MtmsModelMeta *meta, int32 version, MemoryContext cxt,
				  MtmsSharedRef **ref)
{
	SlotKey		key;
	LiveVersions live;
	LOCKTAG		tag;
	int			i;
	Found		f;

	*ref = NULL;
	if (!mtms_shared_enabled() || version <= 0 ||
		TransactionIdIsCurrentTransactionId(meta->row_xmin))
		return NULL;
	make_key(meta, version, &key);
	live_versions(meta, &live);
	load_locktag(&key, &tag);
	mtms_shared_area();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		f = find_or_claim(&key, &live, false, meta->owner, &i);
		if (f == FOUND_READY)
			return view_of(i, cxt, ref);
		if (f == FOUND_LOADING)
		{
			/*
			 * Wait until its loader published it (or failed).  (The members
			 * of a parallel group do not block each other: a leader and its
			 * workers poll instead.)
			 */
			if (LockAcquire(&tag, ShareLock, false, false) == LOCKACQUIRE_OK &&
				IsInParallelMode())
				pg_usleep(1000L);
			LockRelease(&tag, ShareLock, false);
			continue;
		}

		/* a loader claims the entry only while it holds the lock */
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
		f = find_or_claim(&key, &live, true, meta->owner, &i);
		if (f != FOUND_CLAIMED)
		{
			LockRelease(&tag, ExclusiveLock, false);
			if (f == FOUND_READY)
				return view_of(i, cxt, ref);
			if (f == FOUND_NO_ROOM)
			{
				warn_no_room(meta, version, 0, "every shared entry is in use");
				return NULL;
			}
			continue;
		}
		break;
	}

	{
		MtmsModel  *own = NULL;
		bool		published = false;

		PG_TRY();
		{
			own = load_into(meta, version, i, cxt, &published);
		}
		PG_CATCH();
		{
			load_failed(i);
			PG_RE_THROW();
		}
		PG_END_TRY();
		LockRelease(&tag, ExclusiveLock, false);
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
	return mtms_shared_ctl->slots[ref->slot].proj;
}

void
mtms_shared_served(const MtmsModelMeta *meta)
{
	SlotKey		key;
	LiveVersions live;

	if (!mtms_shared_enabled() || meta->active_version <= 0 ||
		mtms_shared_ctl->handle == DSA_HANDLE_INVALID ||
		IsolationUsesXactSnapshot() || IsParallelWorker() ||
		TransactionIdIsCurrentTransactionId(meta->row_xmin))
		return;
	mtms_shared_area();
	make_key(meta, meta->active_version, &key);
	live_versions(meta, &live);
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	mark_others_stale(&key, &live);
	LWLockRelease(&mtms_shared_ctl->lock);
}

bool
mtms_shared_repin(MtmsSharedRef *ref)
{
	bool		ok;

	if (pinned[ref->slot] == ref->load_id)
		return true;
	LWLockAcquire(&mtms_shared_ctl->lock, LW_EXCLUSIVE);
	ok = mtms_shared_ctl->slots[ref->slot].state == SLOT_READY &&
		mtms_shared_ctl->slots[ref->slot].load_id == ref->load_id;
	if (ok)
		slot_pin(ref->slot);
	LWLockRelease(&mtms_shared_ctl->lock);
	return ok;
}

void
mtms_shared_forget_model(int32 model_id)
{
	if (mtms_shared_ctl == NULL || nforget == MAX_FORGET)
		return;
	mtms_shared_area();			/* the callbacks */
	forget[nforget++] = model_id;
}

/* ---------------------------------------------------------------------
 * mtms_shared_models(): what this database has in shared memory
 * --------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(mtms_shared_models_list);
Datum
mtms_shared_models_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SharedSlot	copy[SHARED_SLOTS];

	InitMaterializedSRF(fcinfo, 0);
	if (mtms_shared_ctl == NULL)
		PG_RETURN_VOID();
	mtms_shared_area();
	LWLockAcquire(&mtms_shared_ctl->lock, LW_SHARED);
	memcpy(copy, mtms_shared_ctl->slots, sizeof(copy));
	LWLockRelease(&mtms_shared_ctl->lock);

	for (int i = 0; i < SHARED_SLOTS; i++)
	{
		SharedSlot *s = &copy[i];
		Datum		values[8];
		bool		nulls[8] = {0};
		int64		keys;
		int64		zero_keys;
		int64		pbytes = 0;

		if (s->state == SLOT_FREE || s->key.db != MyDatabaseId)
			continue;
		/* (a ready entry's cache lives as long as the entry: read under the lock) */
		LWLockAcquire(&mtms_shared_ctl->lock, LW_SHARED);
		if (mtms_shared_ctl->slots[i].state == SLOT_READY && mtms_shared_ctl->slots[i].load_id == s->load_id &&
			DsaPointerIsValid(mtms_shared_ctl->slots[i].proj))
			mtms_proj_shared_stats(dsa_get_address(area, mtms_shared_ctl->slots[i].proj),
								   &keys, &zero_keys, &pbytes);
		LWLockRelease(&mtms_shared_ctl->lock);
		values[0] = Int32GetDatum(s->key.model_id);
		values[1] = Int32GetDatum(s->key.version);
		/* which model: for its owner's roles and pg_read_all_stats only */
		if (!has_privs_of_role(GetUserId(), s->owner) &&
			!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS))
			nulls[0] = nulls[1] = true;
		values[2] = CStringGetTextDatum(s->state == SLOT_READY ? "ready" : "loading");
		values[3] = Int32GetDatum(s->refcount);
		values[4] = BoolGetDatum(s->stale);
		values[5] = BoolGetDatum(s->dropped);
		values[6] = Int64GetDatum((int64) s->bytes);
		values[7] = Int64GetDatum(pbytes);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
