/*
 * experiment.c
 *    Declaring, ramping, stopping and promoting a model's experiment, and
 *    the routing of request keys (see experiment.h).
 *
 * The functions change the model's row of mtms_experiment as the catalog's
 * owner after checking the caller's 'train' privilege, under the model
 * row's lock (so they serialize with trainings, rollbacks and drops), and
 * end with mtms_catalog_changed(): every session scores with the new state
 * from its next query.
 */
#include "mtms.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "access.h"
#include "catalog.h"
#include "experiment.h"
#include "model_cache.h"

PG_FUNCTION_INFO_V1(mtms_experiment);
PG_FUNCTION_INFO_V1(mtms_experiment_stop);
PG_FUNCTION_INFO_V1(mtms_experiment_promote);
PG_FUNCTION_INFO_V1(mtms_score_version);

/* ---------------------------------------------------------------------
 * Routing
 * ---------------------------------------------------------------------
 */

double
mtms_experiment_unit(const char *key, int len, int64 experiment_id)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, len,
										(uint64) experiment_id);

	/* the top 53 bits: exactly representable, uniform on [0,1) */
	return (double) (h >> 11) * (1.0 / 9007199254740992.0);
}

bool
mtms_experiment_routes_candidate(const MtmsModelMeta *meta, const char *key, int len)
{
	if (meta->experiment_id == 0 || meta->candidate_version == meta->active_version)
		return false;
	return mtms_experiment_unit(key, len, meta->experiment_id) < meta->candidate_share;
}

/* ---------------------------------------------------------------------
 * Argument checks
 * ---------------------------------------------------------------------
 */

static void
check_not_null(FunctionCallInfo fcinfo, int argno, const char *argname,
			   const char *fn, const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s must not be NULL", argname, fn),
				 hint ? errhint("%s", hint) : 0));
}

static float8
check_share(FunctionCallInfo fcinfo, int argno)
{
	float8		share;

	check_not_null(fcinfo, argno, "share", "mtms_experiment",
				   "To end the experiment, call mtms_experiment_stop(model).");
	share = PG_GETARG_FLOAT8(argno);
	if (isnan(share) || share < 0.0 || share > 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("share must be between 0 and 1, got %g", share),
				 errhint("share is the candidate's fraction of request keys: 0.3 sends 30%% of the keys to it.")));
	return share;
}

/* The schema has mtms_experiment (0.3): else say how to get it. */
static void
check_schema_has_experiments(void)
{
	if (!mtms_catalog_has_experiments())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("experiments need extension mtms version 0.3 or later in this database"),
				 errhint("Run ALTER EXTENSION mtms UPDATE.")));
}

/*
 * The model (argument 0 of fname) locked for a change of its running
 * experiment: the caller may train it and it has one.
 */
static MtmsModelMeta *
lookup_experiment_model(FunctionCallInfo fcinfo, const char *fname)
{
	MtmsModelMeta *m;

	check_not_null(fcinfo, 0, "model", fname, NULL);
	check_schema_has_experiments();
	m = mtms_model_lookup_for_change(text_to_cstring(PG_GETARG_TEXT_PP(0)),
									 MTMS_PRIV_TRAIN);
	if (m->experiment_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no experiment", m->name),
				 errhint("Declare one with mtms_experiment('%s', version, share).", m->name)));
	return m;
}

/* ---------------------------------------------------------------------
 * Catalog access (as the catalog's owner; the caller's right is checked)
 * ---------------------------------------------------------------------
 */

typedef struct ExpSpi
{
	MtmsCatalogScope scope;
	int			guard;
	char	   *schema;
} ExpSpi;

static void
exp_spi_begin(ExpSpi *x)
{
	x->schema = mtms_schema_quoted();
	mtms_catalog_scope_begin(&x->scope, true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	x->guard = mtms_guard_search_path();
}

static void
exp_spi_end(ExpSpi *x)
{
	mtms_unguard_search_path(x->guard);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	mtms_catalog_scope_end(&x->scope);
}

static void
exp_exec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "SPI_execute_with_args failed (%s): %s",
			 SPI_result_code_string(rc), sql);
}

static void
check_not_active(const MtmsModelMeta *m, int32 version)
{
	if (version == m->active_version)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version %d is the active version of model \"%s\"", version, m->name),
				 errdetail("An experiment compares a candidate version with the active one."),
				 errhint("Choose another kept version (mtms_versions('%s') lists them).", m->name)));
}

/* ---------------------------------------------------------------------
 * SQL-callable functions
 * ---------------------------------------------------------------------
 */

/*
 * mtms_experiment(model text, version int, share float8): declare the
 * candidate, or set a new share of the running experiment (same id: the
 * ramp).  Another candidate replaces the experiment (new id).
 */
Datum
mtms_experiment(PG_FUNCTION_ARGS)
{
	char	   *model;
	int32		version;
	float8		share;
	MtmsModelMeta *m;
	ExpSpi		x;
	Oid			types[3] = {INT4OID, INT4OID, FLOAT8OID};
	Datum		values[3];

	check_not_null(fcinfo, 0, "model", "mtms_experiment", NULL);
	check_not_null(fcinfo, 1, "version", "mtms_experiment", NULL);
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	version = PG_GETARG_INT32(1);
	share = check_share(fcinfo, 2);
	check_schema_has_experiments();

	m = mtms_model_lookup_for_change(model, MTMS_PRIV_TRAIN);
	check_not_active(m, version);
	mtms_check_version_kept(m, version);
	values[0] = Int32GetDatum(m->model_id);
	values[1] = Int32GetDatum(version);
	values[2] = Float8GetDatum(share);

	exp_spi_begin(&x);
	if (m->experiment_id != 0 && m->candidate_version == version)
		exp_exec(psprintf("UPDATE %s.mtms_experiment SET share = $3, share_set_at = pg_catalog.now()"
						  " WHERE model_id = $1 AND version = $2", x.schema),
				 3, types, values, SPI_OK_UPDATE);
	else
	{
		if (m->experiment_id != 0)
			ereport(NOTICE,
					(errmsg("the experiment of model \"%s\" on version %d is replaced by one on version %d",
							m->name, m->candidate_version, version)));
		exp_exec(psprintf("DELETE FROM %s.mtms_experiment WHERE model_id = $1", x.schema),
				 1, types, values, SPI_OK_DELETE);
		exp_exec(psprintf("INSERT INTO %s.mtms_experiment (model_id, version, share)"
						  " VALUES ($1, $2, $3)", x.schema),
				 3, types, values, SPI_OK_INSERT);
	}
	exp_spi_end(&x);
	mtms_catalog_changed();
	PG_RETURN_VOID();
}

/* mtms_experiment_stop(model text): every key to the active version again. */
Datum
mtms_experiment_stop(PG_FUNCTION_ARGS)
{
	MtmsModelMeta *m;
	ExpSpi		x;
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	m = lookup_experiment_model(fcinfo, "mtms_experiment_stop");
	values[0] = Int32GetDatum(m->model_id);

	exp_spi_begin(&x);
	exp_exec(psprintf("DELETE FROM %s.mtms_experiment WHERE model_id = $1", x.schema),
			 1, types, values, SPI_OK_DELETE);
	exp_spi_end(&x);
	mtms_catalog_changed();
	PG_RETURN_VOID();
}

/*
 * mtms_experiment_promote(model text) -> int: the candidate becomes the
 * active version and the experiment ends, in one transaction (what
 * mtms_rollback(model, candidate) does too).
 */
Datum
mtms_experiment_promote(PG_FUNCTION_ARGS)
{
	MtmsModelMeta *m;
	ExpSpi		x;
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];

	m = lookup_experiment_model(fcinfo, "mtms_experiment_promote");
	values[0] = Int32GetDatum(m->model_id);
	values[1] = Int32GetDatum(m->candidate_version);

	exp_spi_begin(&x);
	exp_exec(psprintf("UPDATE %s.mtms_model SET active_version = $2 WHERE model_id = $1",
					  x.schema), 2, types, values, SPI_OK_UPDATE);
	exp_exec(psprintf("DELETE FROM %s.mtms_experiment WHERE model_id = $1", x.schema),
			 1, types, values, SPI_OK_DELETE);
	exp_spi_end(&x);
	mtms_catalog_changed();
	PG_RETURN_INT32(m->candidate_version);
}

/*
 * mtms_score_version(model text, request_key text) -> int: the version
 * mtms_score(model, ..., request_key) scores this key with now, from the
 * same cached state (so a query attributes exactly what it scores).
 */
Datum
mtms_score_version(PG_FUNCTION_ARGS)
{
	MtmsServing sv;
	text	   *key;

	check_not_null(fcinfo, 0, "model", "mtms_score_version", NULL);
	mtms_cache_get_serving(text_to_cstring(PG_GETARG_TEXT_PP(0)), &sv);
	if (PG_ARGISNULL(1) || sv.candidate == NULL)
		PG_RETURN_INT32(sv.meta->active_version);
	key = PG_GETARG_TEXT_PP(1);
	if (mtms_experiment_routes_candidate(sv.meta, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)))
		PG_RETURN_INT32(sv.meta->candidate_version);
	PG_RETURN_INT32(sv.meta->active_version);
}
