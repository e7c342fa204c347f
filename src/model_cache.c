/*
 * model_cache.c
 *    Per-backend cache of loaded models (see model_cache.h).
 */
#include "model_cache.h"

#include "access/xact.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "executor/spi.h"
#include "storage/proc.h"
#include "access.h"
#include "model_store.h"
#include "score_projection.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* This backend's local transaction id (PGPROC grew a vxid struct in 17). */
#if PG_VERSION_NUM >= 170000
#define MY_LXID (MyProc->vxid.lxid)
#else
#define MY_LXID (MyProc->lxid)
#endif

/*
 * One loaded version of a model, in its own memory context: the entry's
 * active version or its experiment's candidate.  The key says which
 * catalog state it was loaded for; a promotion swaps the two without a
 * reload.
 */
typedef struct LoadedVersion
{
	int32		version;		/* 0 = empty */
	int32		model_id;
	int32		nscenes;
	int32		nfields;
	int64		params_revision;
	MemoryContext cxt;			/* child of cache_cxt; holds model and scorer */
	MtmsModel  *model;
	MtmsScorer *scorer;			/* projection cache, in cxt; NULL until used */
} LoadedVersion;

typedef struct CacheEntry
{
	char	   *name;
	uint64		generation;

	/*
	 * Checked with a transaction snapshot (REPEATABLE READ, SERIALIZABLE):
	 * the check saw the catalog as of that transaction's start, so it holds
	 * for that transaction only.
	 */
	bool		xact_bound;
	LocalTransactionId lxid;

	/*
	 * The last query that used the entry (its active snapshot): within it
	 * the entry is kept even if an invalidation arrives, so that one query
	 * never scores with two catalog states.
	 */
	bool		snap_valid;
	LocalTransactionId snap_lxid;
	TransactionId snap_xmin;
	TransactionId snap_xmax;
	CommandId	snap_curcid;

	Oid			checked_user;	/* role whose 'score' privilege was checked */
	MemoryContext cxt;			/* holds the entry and its name */
	MemoryContext meta_cxt;		/* holds meta, replaced when the active version changes */
	MtmsModelMeta *meta;
	LoadedVersion active;
	LoadedVersion candidate;	/* version 0 without an experiment (or share 0) */
	struct CacheEntry *next;
} CacheEntry;

static MemoryContext cache_cxt = NULL;
static CacheEntry *entries = NULL;
static char *default_name = NULL;
static uint64 default_generation = 0;
static Oid	default_user = InvalidOid;

static void
cache_init(void)
{
	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "mtms model cache",
										  ALLOCSET_DEFAULT_SIZES);
}

uint64
mtms_cache_generation(void)
{
	return mtms_catalog_generation();
}

static void
loaded_release(LoadedVersion *lv)
{
	if (lv->cxt)
		MemoryContextDelete(lv->cxt);
	memset(lv, 0, sizeof(LoadedVersion));
}

static bool
loaded_matches(const LoadedVersion *lv, const MtmsModelMeta *meta, int32 version)
{
	return lv->model != NULL && lv->version == version &&
		lv->model_id == meta->model_id && lv->nscenes == meta->nscenes &&
		lv->nfields == meta->nfields && lv->params_revision == meta->params_revision;
}

/* Load version of the model into *lv (empty on entry; left empty on error). */
static void
loaded_load(LoadedVersion *lv, const MtmsModelMeta *meta, int32 version)
{
	MemoryContext cxt = AllocSetContextCreate(cache_cxt, "mtms cached model",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	PG_TRY();
	{
		lv->model = mtms_model_load(meta, version);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		memset(lv, 0, sizeof(LoadedVersion));
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	lv->cxt = cxt;
	lv->version = version;
	lv->model_id = meta->model_id;
	lv->nscenes = meta->nscenes;
	lv->nfields = meta->nfields;
	lv->params_revision = meta->params_revision;
}

/*
 * *out gets the loaded version of the entry that matches, taken out of the
 * entry, or else a fresh load (version 0: nothing).
 */
static void
loaded_take_or_load(CacheEntry *e, const MtmsModelMeta *meta, int32 version,
					LoadedVersion *out)
{
	memset(out, 0, sizeof(LoadedVersion));
	if (version <= 0)
		return;
	if (e && loaded_matches(&e->active, meta, version))
	{
		*out = e->active;
		memset(&e->active, 0, sizeof(LoadedVersion));
	}
	else if (e && loaded_matches(&e->candidate, meta, version))
	{
		*out = e->candidate;
		memset(&e->candidate, 0, sizeof(LoadedVersion));
	}
	else
		loaded_load(out, meta, version);
}

/*
 * A cached model must not outlive the privileges it was read with: when
 * another role (SET ROLE, a pooler switching roles) uses it, check that
 * this role may score with it.  A grant or revoke changes the catalog, so
 * the entry is re-checked at the next statement anyway.
 */
static void
check_score_privilege(CacheEntry *e)
{
	Oid			user = GetUserId();

	if (e->checked_user == user)
		return;
	mtms_check_privilege(e->meta, MTMS_PRIV_SCORE);
	e->checked_user = user;
}

/* The version the experiment's candidate needs loaded, or 0. */
static int32
wanted_candidate(const MtmsModelMeta *meta)
{
	if (meta->experiment_id == 0 || meta->candidate_share <= 0 ||
		meta->candidate_version == meta->active_version)
		return 0;
	return meta->candidate_version;
}

/* Whether e was used in the query now running (same active snapshot). */
static bool
entry_in_this_query(const CacheEntry *e)
{
	Snapshot	snap;

	if (!e->snap_valid || e->snap_lxid != MY_LXID || !ActiveSnapshotSet())
		return false;
	snap = GetActiveSnapshot();
	return snap->xmin == e->snap_xmin && snap->xmax == e->snap_xmax &&
		snap->curcid == e->snap_curcid;
}

/* Note the query now using e (cheap: called for every row). */
static void
entry_note_query(CacheEntry *e)
{
	e->snap_lxid = MY_LXID;
	e->snap_valid = ActiveSnapshotSet();
	if (e->snap_valid)
	{
		Snapshot	snap = GetActiveSnapshot();

		e->snap_xmin = snap->xmin;
		e->snap_xmax = snap->xmax;
		e->snap_curcid = snap->curcid;
	}
}

/* Read the model's catalog row and check the caller's right (in meta_cxt). */
static MtmsModelMeta *
read_checked_meta(const char *name, MemoryContext meta_cxt)
{
	MemoryContext old = MemoryContextSwitchTo(meta_cxt);
	MtmsModelMeta *meta;

	PG_TRY();
	{
		meta = mtms_model_lookup(name, false, false);
		mtms_check_privilege(meta, MTMS_PRIV_SCORE);
		if (meta->active_version <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("model \"%s\" has not been trained", name),
					 errhint("Train it with mtms_train('%s', samples).", name)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(meta_cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return meta;
}

/*
 * The active version is unchanged: keep the entry's declaration (callers
 * may hold pointers into it), taking what may change without a reload:
 * the owner, the grants, the options and the experiment.
 */
static void
meta_refresh(MtmsModelMeta *kept, MemoryContext kept_cxt, const MtmsModelMeta *meta)
{
	kept->owner = meta->owner;
	kept->opts = meta->opts;
	kept->experiment_id = meta->experiment_id;
	kept->candidate_version = meta->candidate_version;
	kept->candidate_share = meta->candidate_share;
	if (kept->acl)
		pfree(kept->acl);
	kept->acl = NULL;
	if (meta->acl)
	{
		kept->acl = (Acl *) MemoryContextAlloc(kept_cxt, ACL_SIZE(meta->acl));
		memcpy(kept->acl, meta->acl, ACL_SIZE(meta->acl));
	}
}

/*
 * The candidate after the active version *act was taken: on an error the
 * taken active version goes back to the entry (or a fresh load is freed).
 */
static void
take_candidate(CacheEntry *e, const MtmsModelMeta *meta, int32 version,
			   LoadedVersion *act, bool act_from_entry, LoadedVersion *cand)
{
	PG_TRY();
	{
		loaded_take_or_load(e, meta, version, cand);
	}
	PG_CATCH();
	{
		if (act_from_entry)
			e->active = *act;
		else
			loaded_release(act);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Give the entry (NULL: a new one) the versions meta asks for, reusing
 * what it has loaded; nothing changes if a load fails.
 */
static CacheEntry *
entry_install(CacheEntry *e, const char *name, MtmsModelMeta *meta,
			  MemoryContext meta_cxt)
{
	LoadedVersion act;
	LoadedVersion cand;
	int32		want_cand = wanted_candidate(meta);
	bool		same_active = e && loaded_matches(&e->active, meta, meta->active_version);

	PG_TRY();
	{
		loaded_take_or_load(e, meta, meta->active_version, &act);
		take_candidate(e, meta, want_cand, &act, same_active, &cand);
	}
	PG_CATCH();
	{
		MemoryContextDelete(meta_cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (e == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(cache_cxt, "mtms cache entry",
												  ALLOCSET_SMALL_SIZES);

		e = MemoryContextAllocZero(cxt, sizeof(CacheEntry));
		e->cxt = cxt;
		e->name = MemoryContextStrdup(cxt, name);
		e->next = entries;
		entries = e;
	}
	if (same_active)
	{
		meta_refresh(e->meta, e->meta_cxt, meta);
		MemoryContextDelete(meta_cxt);
	}
	else
	{
		if (e->meta_cxt)
			MemoryContextDelete(e->meta_cxt);
		MemoryContextSetParent(meta_cxt, e->cxt);
		e->meta_cxt = meta_cxt;
		e->meta = meta;
	}
	loaded_release(&e->active);
	loaded_release(&e->candidate);
	e->active = act;
	e->candidate = cand;
	return e;
}

static CacheEntry *
cache_get_entry(const char *name)
{
	CacheEntry *e;
	MtmsModelMeta *meta;
	MemoryContext meta_cxt;
	uint64		gen;

	cache_init();
	gen = mtms_catalog_generation();
	for (e = entries; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e && ((e->generation == gen && (!e->xact_bound || e->lxid == MY_LXID)) ||
			  entry_in_this_query(e)))
	{
		check_score_privilege(e);
		entry_note_query(e);
		return e;
	}

	/* (re)read the catalog and check the caller's right first */
	meta_cxt = AllocSetContextCreate(cache_cxt, "mtms cached model meta",
									 ALLOCSET_SMALL_SIZES);
	meta = read_checked_meta(name, meta_cxt);
	e = entry_install(e, name, meta, meta_cxt);
	e->generation = gen;
	e->xact_bound = IsolationUsesXactSnapshot();
	e->lxid = MY_LXID;
	entry_note_query(e);
	e->checked_user = GetUserId();	/* checked above */
	return e;
}

static MtmsScorer *
loaded_scorer(LoadedVersion *lv)
{
	if (lv->scorer == NULL)
		lv->scorer = mtms_scorer_create(lv->model, lv->cxt);
	return lv->scorer;
}

MtmsModel *
mtms_cache_get(const char *name, const MtmsModelMeta **meta_out)
{
	CacheEntry *e = cache_get_entry(name);

	*meta_out = e->meta;
	return e->active.model;
}

MtmsScorer *
mtms_cache_get_scorer(const char *name, const MtmsModelMeta **meta_out,
					  const MtmsModel **model_out)
{
	CacheEntry *e = cache_get_entry(name);

	*meta_out = e->meta;
	*model_out = e->active.model;
	return loaded_scorer(&e->active);
}

void
mtms_cache_get_serving(const char *name, MtmsServing *out)
{
	CacheEntry *e = cache_get_entry(name);

	out->meta = e->meta;
	out->active = e->active.model;
	out->active_scorer = loaded_scorer(&e->active);
	out->candidate = e->candidate.model;
	out->candidate_scorer = e->candidate.model ? loaded_scorer(&e->candidate) : NULL;
	out->generation = e->generation;
}

const char *
mtms_cache_default_model(void)
{
	int			guard;
	uint64		generation;

	cache_init();
	if (mtms_default_model && mtms_default_model[0] != '\0')
		return mtms_default_model;
	generation = mtms_catalog_generation();
	if (default_name && default_generation == generation && default_user == GetUserId())
		return default_name;

	/*
	 * As the caller: with row security (0.2 and later) a role lists only
	 * the models it may read, so "the only model" is the only one it can
	 * use.
	 */

	SPI_connect();
	guard = mtms_guard_search_path();
	if (SPI_execute(psprintf("SELECT name FROM %s.mtms_model ORDER BY name LIMIT 3",
							 mtms_schema_quoted()), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list models");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("there is no mtms model in this database"),
				 errhint("Create one with mtms_create_model().")));
	if (SPI_processed > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg("this database has several mtms models; mtms_score(scene, task, features) does not know which to use"),
				 errhint("SET mtms.model = 'name', or call mtms_score(model, scene, task, features).")));
	{
		char	   *n = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (default_name)
			pfree(default_name);
		default_name = MemoryContextStrdup(cache_cxt, n);
	}
	mtms_unguard_search_path(guard);
	SPI_finish();
	default_generation = generation;
	default_user = GetUserId();
	return default_name;
}
