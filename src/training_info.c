/*
 * training_info.c
 *    mtms_training_info(model, version): the training history of a kept
 *    version (default: the active one), as mtms_train wrote it into
 *    mtms_training_history (train_history.c).  The caller needs 'score' on
 *    the model, like mtms_versions; the rows are then read as the
 *    catalog's owner (catalog_tables.h).  An unknown model or version is
 *    undefined_object (42704), the default of a model never trained
 *    object_not_in_prerequisite_state (55000), as scoring it is.
 */
#include "mtms.h"

#include "access.h"
#include "catalog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

/* The version's history rows, in the order training wrote them. */
static void
read_history(ReturnSetInfo *rsinfo, const MtmsModelMeta *m, int32 version,
			 const char *schema)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		args[2];

	args[0] = Int32GetDatum(m->model_id);
	args[1] = Int32GetDatum(version);
	if (SPI_execute_with_args(psprintf("SELECT version, stage, scene, task, epoch, checkpoint, "
									   "train_loss, valid_loss, valid_auc, rows, seconds, kept "
									   "FROM %s.mtms_training_history "
									   "WHERE model_id = $1 AND version = $2 ORDER BY seq", schema),
							  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the training history of model \"%s\"", m->name);
	for (uint64 i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
}

PG_FUNCTION_INFO_V1(mtms_training_info);
Datum
mtms_training_info(PG_FUNCTION_ARGS)
{
	MtmsModelMeta *m;
	int32		version;
	char	   *schema;
	MtmsCatalogScope scope;
	int			guard;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"model\" must not be null")));
	m = mtms_model_lookup(text_to_cstring(PG_GETARG_TEXT_PP(0)), false, false);
	mtms_check_privilege(m, MTMS_PRIV_SCORE);
	if (!PG_ARGISNULL(1))
		mtms_check_version_kept(m, PG_GETARG_INT32(1));
	else if (m->active_version <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has not been trained", m->name),
				 errhint("Train it with mtms_train('%s', samples).", m->name)));
	version = PG_ARGISNULL(1) ? m->active_version : PG_GETARG_INT32(1);
	schema = mtms_schema_quoted();

	InitMaterializedSRF(fcinfo, 0);
	mtms_catalog_scope_begin(&scope, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	guard = mtms_guard_search_path();
	read_history((ReturnSetInfo *) fcinfo->resultinfo, m, version, schema);
	mtms_unguard_search_path(guard);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	mtms_catalog_scope_end(&scope);
	PG_RETURN_VOID();
}
