/*
 * catalog_tables.c
 *    The extension's catalog tables as relations (see catalog_tables.h).
 */
#include "catalog_tables.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/* Per-backend cache of mtms_model's OID and its namespace. */
static Oid	cached_model_relid = InvalidOid;
static Oid	cached_model_nsp = InvalidOid;

/* Invalidation tracking (mtms_catalog_generation). */
static uint64 generation = 1;
static bool callback_registered = false;
static Oid	watched_relid = InvalidOid;
static bool watched_valid = false;	/* no invalidation since it was resolved */

/* Facts about the tables, valid for one generation. */
static uint64 facts_generation = 0;
static Oid	facts_owner = InvalidOid;
static bool facts_has_acl = false;
static bool facts_has_experiments = false;

/* Depth of writing scopes; cleared at every abort. */
static int	internal_writes = 0;
static bool abort_callbacks_registered = false;

/* Namespace of an extension (commands/extension.c keeps its own static). */
static Oid
extension_schema(Oid ext_oid)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(ext_oid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

Oid
mtms_model_relid(void)
{
	Oid			ext_oid;
	Oid			nsp;
	Oid			relid;

	/*
	 * The cached OID is still right if a relation with that OID is named
	 * mtms_model and lives in the extension's namespace.  After DROP and
	 * CREATE EXTENSION the old table is gone, so we look it up again.
	 */
	if (OidIsValid(cached_model_relid))
	{
		HeapTuple	tup = SearchSysCache1(RELOID,
										  ObjectIdGetDatum(cached_model_relid));

		if (HeapTupleIsValid(tup))
		{
			Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);
			bool		ok = (c->relnamespace == cached_model_nsp &&
							  strcmp(NameStr(c->relname), "mtms_model") == 0);

			ReleaseSysCache(tup);
			if (ok)
				return cached_model_relid;
		}
		cached_model_relid = InvalidOid;
	}

	ext_oid = get_extension_oid("mtms", true);
	if (!OidIsValid(ext_oid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"mtms\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION mtms.")));
	nsp = extension_schema(ext_oid);
	relid = OidIsValid(nsp) ? get_relname_relid("mtms_model", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table mtms_model of extension \"mtms\" is missing"),
				 errhint("Reinstall the extension (DROP EXTENSION mtms; CREATE EXTENSION mtms).")));

	cached_model_nsp = nsp;
	cached_model_relid = relid;
	return relid;
}

Oid
mtms_catalog_relid(const char *table)
{
	Oid			relid = get_relname_relid(table, get_rel_namespace(mtms_model_relid()));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s of extension \"mtms\" is missing", table),
				 errhint("Reinstall the extension (DROP EXTENSION mtms; CREATE EXTENSION mtms).")));
	return relid;
}

char *
mtms_schema_quoted(void)
{
	Oid			relid = mtms_model_relid();
	char	   *nspname = get_namespace_name(get_rel_namespace(relid));

	if (nspname == NULL)
		elog(ERROR, "schema of relation %u not found", relid);
	return pstrdup(quote_identifier(nspname));
}

void
mtms_catalog_changed(void)
{
	CacheInvalidateRelcacheByRelid(mtms_model_relid());
}

/* ---------------------------------------------------------------------
 * Change tracking
 * ---------------------------------------------------------------------
 */

static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == watched_relid)
	{
		generation++;
		watched_valid = false;
	}
}

uint64
mtms_catalog_generation(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		callback_registered = true;
	}

	/*
	 * The extension may have been dropped and recreated: re-resolve.  Only
	 * needed after an invalidation of the watched table (its drop sends
	 * one) or a cache reset, so a caller that checks once per row does no
	 * catalog lookup.
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
	return generation;
}

/* Owner and schema facts of mtms_model, re-read after any invalidation. */
static void
read_facts(void)
{
	uint64		gen = mtms_catalog_generation();
	Oid			relid;
	HeapTuple	tup;

	if (facts_generation == gen)
		return;
	relid = mtms_model_relid();
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	facts_owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	facts_has_acl = get_attnum(relid, "acl") != InvalidAttrNumber;
	facts_has_experiments = OidIsValid(get_relname_relid("mtms_experiment",
														 get_rel_namespace(relid)));
	facts_generation = gen;
}

Oid
mtms_catalog_owner(void)
{
	read_facts();
	return facts_owner;
}

bool
mtms_catalog_has_acl(void)
{
	read_facts();
	return facts_has_acl;
}

bool
mtms_catalog_has_feature_stats(void)
{
	Oid			nsp = get_rel_namespace(mtms_model_relid());
	Oid			emb = get_relname_relid("mtms_embedding", nsp);

	return OidIsValid(emb) &&
		get_attnum(emb, "last_seen") != InvalidAttrNumber &&
		OidIsValid(get_relname_relid("mtms_feature_count", nsp));
}

/*
 * The upgrade to 0.3 creates mtms_experiment with a foreign key to
 * mtms_model, whose new triggers invalidate mtms_model: the facts are
 * re-read after it.
 */
bool
mtms_catalog_has_experiments(void)
{
	read_facts();
	return facts_has_experiments;
}

/*
 * Whether the installed catalog is at least version (of the "0.N" form
 * this extension's versions have), read through SPI (connected).
 */
bool
mtms_catalog_at_least(const char *version)
{
	char	   *v;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'mtms'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "mtms: could not read the installed version of mtms");
	v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return strlen(v) > strlen(version) || (strlen(v) == strlen(version) && strcmp(v, version) >= 0);
}

bool
mtms_catalog_has_history(void)
{
	Oid			nsp = get_rel_namespace(mtms_model_relid());

	return OidIsValid(get_relname_relid("mtms_training_history", nsp));
}

/* ---------------------------------------------------------------------
 * Acting as the tables' owner
 * ---------------------------------------------------------------------
 */

static void
clear_on_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		internal_writes = 0;
}

static void
clear_on_subabort(SubXactEvent event, SubTransactionId mySubid,
				  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		internal_writes = 0;
}

void
mtms_catalog_scope_begin(MtmsCatalogScope *scope, bool writes)
{
	Oid			owner = mtms_catalog_owner();

	if (!abort_callbacks_registered)
	{
		RegisterXactCallback(clear_on_abort, NULL);
		RegisterSubXactCallback(clear_on_subabort, NULL);
		abort_callbacks_registered = true;
	}
	GetUserIdAndSecContext(&scope->save_userid, &scope->save_sec_context);
	SetUserIdAndSecContext(owner, scope->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	scope->writes = writes;
	if (writes)
		internal_writes++;
}

void
mtms_catalog_scope_end(MtmsCatalogScope *scope)
{
	if (scope->writes && internal_writes > 0)
		internal_writes--;
	SetUserIdAndSecContext(scope->save_userid, scope->save_sec_context);
}

bool
mtms_catalog_internal_write(void)
{
	return internal_writes > 0;
}
