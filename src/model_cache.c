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
#include "model_shared.h"
#include "score_projection.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"

typedef struct CacheEntry
{
	char	   *name;
	int32		model_id;
	int32		version;
	int32		nscenes;
	int32		nfields;
	int64		params_revision;
	uint64		generation;

	/*
	 * Checked with a transaction snapshot (REPEATABLE READ, SERIALIZABLE):
	 * the check saw the catalog as of that transaction's start, so it holds
	 * for that transaction only.
	 */
	bool		xact_bound;
	LocalTransactionId lxid;
	Oid			checked_user;	/* role whose 'score' privilege was checked */
	MemoryContext cxt;			/* holds the entry and model */
	MemoryContext meta_cxt;		/* holds meta, replaced at each re-check */
	MtmsModelMeta *meta;
	MtmsModel  *model;
	MtmsSharedRef *shared;		/* model is a view of this shared entry, or NULL */
	MtmsScorer *scorer;			/* projection cache, in cxt; NULL until used */
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

static CacheEntry *cache_get_entry(const char *name);

/*
 * May this transaction use e's model?  A view of a shared version only
 * while its entry is still that version (pinned for the transaction from
 * here on), and only while mtms.shared_models is on.
 */
static bool
entry_usable(CacheEntry *e)
{
	if (e->shared == NULL)
		return true;
	return mtms_shared_enabled() && mtms_shared_repin(e->shared);
}

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
	{
		/* a shared version's projections are shared too (when there was room) */
		if (e->shared && DsaPointerIsValid(mtms_shared_proj(e->shared)))
			e->scorer = mtms_scorer_create_shared(e->model, e->cxt, mtms_shared_area(),
												  mtms_shared_proj(e->shared));
		else
			e->scorer = mtms_scorer_create(e->model, e->cxt);
	}
	*meta_out = e->meta;
	*model_out = e->model;
	return e->scorer;
}

static CacheEntry *
cache_get_entry(const char *name)
{
	CacheEntry *e;
	MtmsModelMeta *meta;
	MemoryContext meta_cxt;
	MemoryContext old;
	uint64		gen;

	cache_init();
	gen = mtms_catalog_generation();
	for (e = entries; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			break;
	if (e && e->generation == gen &&
		(!e->xact_bound || e->lxid == MY_LXID) && entry_usable(e))
	{
		check_score_privilege(e);
		return e;
	}

	/* (re)read the catalog and check the caller's right first */
	meta_cxt = AllocSetContextCreate(cache_cxt, "mtms cached model meta",
									 ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(meta_cxt);
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

	if (e && e->model_id == meta->model_id && e->version == meta->active_version &&
		e->nscenes == meta->nscenes && e->nfields == meta->nfields &&
		e->params_revision == meta->params_revision && entry_usable(e))
	{
		/*
		 * Unchanged: keep the loaded model and its declaration (callers may
		 * hold pointers into it), taking what may change without a reload:
		 * the owner, the grants and the options.
		 */
		e->meta->owner = meta->owner;
		e->meta->opts = meta->opts;
		if (e->meta->acl)
			pfree(e->meta->acl);
		e->meta->acl = NULL;
		if (meta->acl)
			e->meta->acl = (Acl *) MemoryContextAlloc(e->meta_cxt, ACL_SIZE(meta->acl));
		if (meta->acl)
			memcpy(e->meta->acl, meta->acl, ACL_SIZE(meta->acl));
		MemoryContextDelete(meta_cxt);
	}
	else
	{
		MemoryContext cxt = AllocSetContextCreate(cache_cxt, "mtms cached model",
												  ALLOCSET_DEFAULT_SIZES);
		MtmsModel  *model;
		MtmsSharedRef *shared = NULL;

		PG_TRY();
		{
			MemoryContextSwitchTo(cxt);
			/* one copy for all sessions when it can be, else our own */
			model = mtms_shared_model(meta, cxt, &shared);
			if (model == NULL)
				model = mtms_model_load(meta, meta->active_version);
			MemoryContextSwitchTo(old);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(old);
			MemoryContextDelete(cxt);
			MemoryContextDelete(meta_cxt);
			PG_RE_THROW();
		}
		PG_END_TRY();

		if (e)
			entry_forget(e);
		MemoryContextSetParent(meta_cxt, cxt);
		e = MemoryContextAllocZero(cxt, sizeof(CacheEntry));
		e->name = MemoryContextStrdup(cxt, name);
		e->model_id = meta->model_id;
		e->version = meta->active_version;
		e->nscenes = meta->nscenes;
		e->nfields = meta->nfields;
		e->params_revision = meta->params_revision;
		e->cxt = cxt;
		e->meta_cxt = meta_cxt;
		e->meta = meta;
		e->model = model;
		e->shared = shared;
		e->next = entries;
		entries = e;
	}
	e->generation = gen;
	e->xact_bound = IsolationUsesXactSnapshot();
	e->lxid = MY_LXID;
	e->checked_user = GetUserId();	/* checked above */
	return e;
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
