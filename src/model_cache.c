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
#include "model_store.h"
#include "score_projection.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"

/* This backend's local transaction id (PGPROC grew a vxid struct in 17). */
#if PG_VERSION_NUM >= 170000
#define MY_LXID (MyProc->vxid.lxid)
#else
#define MY_LXID (MyProc->lxid)
#endif

typedef struct CacheEntry
{
	char	   *name;
	int32		model_id;
	int32		version;
	int32		nscenes;
	int32		nfields;
	uint64		generation;

	/*
	 * Checked with a transaction snapshot (REPEATABLE READ, SERIALIZABLE):
	 * the check saw the catalog as of that transaction's start, so it holds
	 * for that transaction only.
	 */
	bool		xact_bound;
	LocalTransactionId lxid;
	Oid			checked_user;	/* role whose read privileges were checked */
	MemoryContext cxt;			/* holds meta and model */
	MtmsModelMeta *meta;
	MtmsModel  *model;
	MtmsScorer *scorer;			/* projection cache, in cxt; NULL until used */
	struct CacheEntry *next;
} CacheEntry;

static MemoryContext cache_cxt = NULL;
static CacheEntry *entries = NULL;
static uint64 generation = 1;
static Oid	watched_relid = InvalidOid;
static bool watched_valid = false;	/* no invalidation since it was resolved */
static bool callback_registered = false;
static char *default_name = NULL;
static uint64 default_generation = 0;

static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == watched_relid)
	{
		generation++;
		watched_valid = false;
	}
}

static void
cache_init(void)
{
	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "mtms model cache",
										  ALLOCSET_DEFAULT_SIZES);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	/*
	 * The extension may have been dropped and recreated: re-resolve.  Only
	 * needed after an invalidation of the watched table (its drop sends
	 * one) or a cache reset, so scoring a row does no catalog lookup.
	 */
	if (!watched_valid)
	{
		Oid			relid = mtms_model_relid();

		if (relid != watched_relid)
		{
			watched_relid = relid;
			generation++;
		}
		watched_valid = true;
	}
}

uint64
mtms_cache_generation(void)
{
	cache_init();
	return generation;
}

static void
entry_forget(CacheEntry *e)
{
	CacheEntry **pp = &entries;

	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	MemoryContextDelete(e->cxt);
}

/*
 * A cached model must not outlive the privileges it was read with: when
 * another role (SET ROLE, a pooler switching roles) uses it, check that
 * this role may read the parameter tables, as loading them would.
 */
static void
check_read_privileges(CacheEntry *e)
{
	static const char *const tables[] = {"mtms_model", "mtms_version",
	"mtms_embedding", "mtms_tower"};
	Oid			user = GetUserId();
	Oid			nsp;

	if (e->checked_user == user)
		return;
	nsp = get_rel_namespace(mtms_model_relid());
	for (int i = 0; i < (int) lengthof(tables); i++)
	{
		Oid			relid = get_relname_relid(tables[i], nsp);
		AclResult	r;

		if (!OidIsValid(relid))
			elog(ERROR, "mtms table %s is missing", tables[i]);
		r = pg_class_aclcheck(relid, user, ACL_SELECT);
		if (r != ACLCHECK_OK)
			aclcheck_error(r, OBJECT_TABLE, tables[i]);
	}
	e->checked_user = user;
}

static CacheEntry *cache_get_entry(const char *name);

MtmsModel *
mtms_cache_get(const char *name, const MtmsModelMeta **meta_out)
{
	CacheEntry *e = cache_get_entry(name);

	*meta_out = e->meta;
	return e->model;
}

MtmsScorer *
mtms_cache_get_scorer(const char *name, const MtmsModelMeta **meta_out,
					  const MtmsModel **model_out)
{
	CacheEntry *e = cache_get_entry(name);

	if (e->scorer == NULL)
		e->scorer = mtms_scorer_create(e->model, e->cxt);
	*meta_out = e->meta;
	*model_out = e->model;
	return e->scorer;
}

static CacheEntry *
cache_get_entry(const char *name)
{
	CacheEntry *e;
	MtmsModelMeta *meta;
	MemoryContext cxt;
	MemoryContext old;
	MtmsModel  *model;

	cache_init();
	for (e = entries; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e && e->generation == generation &&
		(!e->xact_bound || e->lxid == MY_LXID))
	{
		check_read_privileges(e);
		return e;
	}

	/* (re)check the catalog; load into a fresh context, swap on success */
	cxt = AllocSetContextCreate(cache_cxt, "mtms cached model", ALLOCSET_DEFAULT_SIZES);
	old = CurrentMemoryContext;
	PG_TRY();
	{
		MemoryContextSwitchTo(cxt);
		meta = mtms_model_lookup(name, false, false);
		if (meta->active_version <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("model \"%s\" has not been trained", name),
					 errhint("Train it with mtms_train('%s', samples).", name)));
		if (e && e->model_id == meta->model_id && e->version == meta->active_version &&
			e->nscenes == meta->nscenes && e->nfields == meta->nfields)
			model = NULL;		/* unchanged: keep the loaded one */
		else
			model = mtms_model_load(meta, meta->active_version);
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (model == NULL)
	{
		MemoryContextDelete(cxt);
		e->generation = generation;
		e->checked_user = GetUserId();	/* the lookup just read as this role */
		e->xact_bound = IsolationUsesXactSnapshot();
		e->lxid = MY_LXID;
		return e;
	}
	if (e)
		entry_forget(e);
	e = MemoryContextAllocZero(cxt, sizeof(CacheEntry));
	e->name = MemoryContextStrdup(cxt, name);
	e->model_id = meta->model_id;
	e->version = meta->active_version;
	e->nscenes = meta->nscenes;
	e->nfields = meta->nfields;
	e->generation = generation;
	e->xact_bound = IsolationUsesXactSnapshot();
	e->lxid = MY_LXID;
	e->checked_user = GetUserId();
	e->cxt = cxt;
	e->meta = meta;
	e->model = model;
	e->next = entries;
	entries = e;
	return e;
}

const char *
mtms_cache_default_model(void)
{
	int			guard;

	cache_init();
	if (mtms_default_model && mtms_default_model[0] != '\0')
		return mtms_default_model;
	if (default_name && default_generation == generation)
		return default_name;

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
	return default_name;
}
