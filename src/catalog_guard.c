/*
 * catalog_guard.c
 *    Triggers of the catalog tables: what plain SQL may not change, and
 *    making every committed change visible to every session.
 *
 * mtms's own functions write the catalog inside a writing scope
 * (catalog_tables.h) and announce their changes themselves; the triggers
 * let those statements through at once.  For any other statement (an
 * UPDATE by hand, a restore, a tool):
 *
 *  - mtms_catalog_row_trigger (BEFORE ROW on the four tables) refuses a
 *    change of mtms_model's model_id, owner or acl (they change only
 *    through mtms_alter_owner, mtms_grant and mtms_revoke), and notes which
 *    models the statement touches;
 *  - mtms_catalog_statement_trigger (AFTER STATEMENT, and TRUNCATE) bumps
 *    those models' params_revision and sends the relcache invalidation of
 *    mtms_model.  Scoring caches compare the revision, so every session
 *    scores with the edited rows from its next statement on, and hot
 *    standbys too (the invalidation is WAL-logged with the commit).
 *
 * Who may write which rows at all is the row security policies' business
 * (src/sql/mtms--0.1--0.2.sql); these triggers run after them.
 */
#include "mtms.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

#include "catalog_tables.h"

#define MAX_PENDING 64

/* Models touched by plain SQL in the current statement(s). */
static int32 pending[MAX_PENDING];
static int	npending = 0;
static bool pending_all = false;
static bool callbacks_registered = false;

/* A statement that failed changed nothing: forget what it noted. */
static void
forget_on_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		npending = 0, pending_all = false;
}

static void
forget_on_subabort(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		npending = 0, pending_all = false;
}

static void
note_model(int32 model_id)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(forget_on_abort, NULL);
		RegisterSubXactCallback(forget_on_subabort, NULL);
		callbacks_registered = true;
	}
	for (int i = 0; i < npending; i++)
		if (pending[i] == model_id)
			return;
	if (npending < MAX_PENDING)
		pending[npending++] = model_id;
	else
		pending_all = true;
}

static void
note_row(HeapTuple tup, TupleDesc desc)
{
	int			attno = SPI_fnumber(desc, "model_id");
	bool		isnull;
	Datum		d;

	if (attno <= 0)
		return;
	d = heap_getattr(tup, attno, desc, &isnull);
	if (!isnull)
		note_model(DatumGetInt32(d));
}

/* ERROR if column name differs between the old and the new row. */
static void
check_unchanged(HeapTuple oldtup, HeapTuple newtup, TupleDesc desc,
				const char *column, const char *how)
{
	int			attno = SPI_fnumber(desc, column);
	Form_pg_attribute att;
	bool		oldnull;
	bool		newnull;
	Datum		oldd;
	Datum		newd;

	if (attno <= 0)
		return;
	att = TupleDescAttr(desc, attno - 1);
	oldd = heap_getattr(oldtup, attno, desc, &oldnull);
	newd = heap_getattr(newtup, attno, desc, &newnull);
	if (oldnull && newnull)
		return;
	if (oldnull == newnull)
	{
		if (att->attlen == -1)
		{
			oldd = PointerGetDatum(PG_DETOAST_DATUM_PACKED(oldd));
			newd = PointerGetDatum(PG_DETOAST_DATUM_PACKED(newd));
			if (VARSIZE_ANY(DatumGetPointer(oldd)) == VARSIZE_ANY(DatumGetPointer(newd)) &&
				memcmp(DatumGetPointer(oldd), DatumGetPointer(newd),
					   VARSIZE_ANY(DatumGetPointer(oldd))) == 0)
				return;
		}
		else if (datumIsEqual(oldd, newd, att->attbyval, att->attlen))
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("column \"%s\" of mtms_model cannot be changed by UPDATE", column),
			 errhint("%s", how)));
}

PG_FUNCTION_INFO_V1(mtms_catalog_row_trigger);
Datum
mtms_catalog_row_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "mtms_catalog_row_trigger: not called as a BEFORE ROW trigger");

	result = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	if (mtms_catalog_internal_write())
		return PointerGetDatum(result);

	desc = RelationGetDescr(td->tg_relation);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		if (RelationGetRelid(td->tg_relation) == mtms_model_relid())
		{
			check_unchanged(td->tg_trigtuple, td->tg_newtuple, desc, "model_id",
							"A model keeps its model_id.");
			check_unchanged(td->tg_trigtuple, td->tg_newtuple, desc, "owner",
							"Use mtms_alter_owner(model, new_owner).");
			check_unchanged(td->tg_trigtuple, td->tg_newtuple, desc, "acl",
							"Use mtms_grant(model, role, privilege) and mtms_revoke(...).");
		}
		note_row(td->tg_newtuple, desc);
	}
	note_row(td->tg_trigtuple, desc);
	return PointerGetDatum(result);
}

/* Bump params_revision of the noted models (all of them after TRUNCATE). */
static void
bump_revisions(bool all)
{
	MtmsCatalogScope scope;
	Datum	   *ids;
	Oid			types[1] = {INT4ARRAYOID};
	Datum		args[1];
	char	   *sql;
	int			rc;
	int			guard;

	all = all || pending_all;
	if (!all && npending == 0)
		return;
	ids = palloc(sizeof(Datum) * Max(npending, 1));
	for (int i = 0; i < npending; i++)
		ids[i] = Int32GetDatum(pending[i]);
	args[0] = PointerGetDatum(construct_array(ids, npending, INT4OID, 4, true, TYPALIGN_INT));
	sql = psprintf("UPDATE %s.mtms_model SET params_revision = params_revision + 1%s",
				   mtms_schema_quoted(), all ? "" : " WHERE model_id = ANY ($1)");
	npending = 0;
	pending_all = false;

	mtms_catalog_scope_begin(&scope, true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	guard = mtms_guard_search_path();
	rc = SPI_execute_with_args(sql, all ? 0 : 1, types, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not mark the changed models: %s", SPI_result_code_string(rc));
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
}

PG_FUNCTION_INFO_V1(mtms_catalog_statement_trigger);
Datum
mtms_catalog_statement_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		elog(ERROR, "mtms_catalog_statement_trigger: not called as an AFTER STATEMENT trigger");
	if (mtms_catalog_internal_write())
		return PointerGetDatum(NULL);

	bump_revisions(TRIGGER_FIRED_BY_TRUNCATE(td->tg_event));
	mtms_catalog_changed();
	return PointerGetDatum(NULL);
}
