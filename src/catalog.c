/*
 * catalog.c
 *    The model catalog: declaring, changing and dropping models, and reading
 *    a model's declaration for the other modules (mtms_model_lookup).
 *
 * A model is one row of @extschema@.mtms_model (src/sql/00_tables.sql);
 * its trained versions, embeddings and towers hang off it with ON DELETE
 * CASCADE, so dropping the row drops everything.  All access goes through
 * SPI with parameters; only the (quoted) schema name is put into SQL text.
 *
 * Every change to a model ends with mtms_catalog_changed(), a relcache
 * invalidation of mtms_model, which other backends receive at commit and
 * use to reload their scoring caches.
 */
#include "mtms.h"

#include <ctype.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "access.h"
#include "catalog.h"
#include "model_shared.h"
#include "options.h"

/* Longest part of a user-supplied name shown in an error message. */
#define MAX_SHOWN_NAME 40

#define NAME_RULES_HINT \
	"Names are 1 to 63 bytes: a letter, digit or underscore, followed by " \
	"letters, digits, underscores, hyphens or dots (ASCII only)."

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* A user string for an error message: cut (at a character boundary). */
static char *
shown(const char *s)
{
	int			len = strlen(s);

	if (len <= MAX_SHOWN_NAME)
		return pstrdup(s);
	return psprintf("%.*s...", pg_mbcliplen(s, len, MAX_SHOWN_NAME), s);
}

/* Run one parameterized statement through SPI (caller is connected). */
static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
		 int expected_rc)
{
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);
	if (rc != expected_rc)
		elog(ERROR, "SPI_execute_with_args failed (%s): %s",
			 SPI_result_code_string(rc), sql);
}

/*
 * The search_path guard and the catalog scope of the current spi_connect
 * (they do not nest here).  Every statement runs as the catalog's owner
 * (catalog_tables.h): the caller's rights were checked in C before.
 */
static int	spi_guard_level = 0;
static MtmsCatalogScope spi_scope;

static void
spi_connect(bool writes)
{
	mtms_catalog_scope_begin(&spi_scope, writes);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_guard_level = mtms_guard_search_path();
}

static void
spi_finish(void)
{
	mtms_unguard_search_path(spi_guard_level);
	spi_guard_level = 0;
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	mtms_catalog_scope_end(&spi_scope);
}

/* ---------------------------------------------------------------------
 * Argument checks
 * ---------------------------------------------------------------------
 */

static void
check_not_null(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

static char *
check_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	check_not_null(fcinfo, argno, argname);
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

void
mtms_check_name(const char *name, const char *what)
{
	int			len = strlen(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name must not be empty", what),
				 errhint(NAME_RULES_HINT)));

	if (len > MTMS_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name \"%s\" is too long", what, shown(name)),
				 errdetail("The name is %d bytes long; at most %d are allowed.",
						   len, MTMS_NAME_MAXLEN),
				 errhint(NAME_RULES_HINT)));

	if (strcmp(what, "field") == 0 && strchr(name, '=') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("field name \"%s\" must not contain \"=\"", shown(name)),
				 errdetail("Features are written 'field=value', so '=' ends a field name."),
				 errhint(NAME_RULES_HINT)));

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];
		bool		ok;

		if (i == 0)
			ok = (c < 128 && (isalnum(c) || c == '_'));
		else
			ok = (c < 128 && (isalnum(c) || c == '_' || c == '-' || c == '.'));
		if (ok)
			continue;

		if (c >= 32 && c < 127)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name \"%s\"", what, shown(name)),
					 errdetail("%s %s at position %d is not allowed.",
							   i == 0 ? "First character" : "Character",
							   c == '\'' ? "\"'\"" : psprintf("'%c'", c),
							   i + 1),
					 errhint(NAME_RULES_HINT)));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name \"%s\"", what, shown(name)),
					 errdetail("Byte 0x%02x at position %d is not allowed.",
							   c, i + 1),
					 errhint(NAME_RULES_HINT)));
	}
}

/*
 * A text[] argument holding names: one-dimensional, non-empty, no NULLs,
 * at most maxn entries, every name valid and none repeated.  Returns the
 * count and the names in *out.
 */
static int
check_name_array(FunctionCallInfo fcinfo, int argno, const char *argname,
				 const char *what, int maxn, char ***out)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	  **names;

	check_not_null(fcinfo, argno, argname);
	arr = PG_GETARG_ARRAYTYPE_P(argno);

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array, got %d dimensions",
						argname, ARR_NDIM(arr))));

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", argname),
				 errhint("Declare at least one %s.", what)));
	if (n > maxn)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many %ss: %d", what, n),
				 errdetail("A model has at most %d %ss.", maxn, what)));

	names = palloc(n * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL (element %d)",
							argname, i + 1)));
		names[i] = TextDatumGetCString(elems[i]);
		mtms_check_name(names[i], what);
		for (int j = 0; j < i; j++)
		{
			if (strcmp(names[i], names[j]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("%s \"%s\" appears more than once in %s",
								what, names[i], argname)));
		}
	}

	*out = names;
	return n;
}

/* hidden int[]: one-dimensional, 1..8 entries, each 1..4096, no NULLs. */
static int
check_hidden(FunctionCallInfo fcinfo, int argno, int32 *hidden)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	check_not_null(fcinfo, argno, "hidden");
	arr = PG_GETARG_ARRAYTYPE_P(argno);

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("hidden must be a one-dimensional array, got %d dimensions",
						ARR_NDIM(arr))));

	deconstruct_array(arr, INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n < 1 || n > MTMS_MAX_HIDDEN_LAYERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("hidden must have 1 to %d layers, got %d",
						MTMS_MAX_HIDDEN_LAYERS, n),
				 errhint("For example '{64,32}': the sizes of the towers' hidden layers.")));

	for (int i = 0; i < n; i++)
	{
		int32		size;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("hidden must not contain NULL (element %d)", i + 1)));
		size = DatumGetInt32(elems[i]);
		if (size < 1 || size > MTMS_MAX_HIDDEN_SIZE)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("hidden layer %d size must be between 1 and %d, got %d",
							i + 1, MTMS_MAX_HIDDEN_SIZE, size)));
		hidden[i] = size;
	}
	return n;
}

static void
check_embedding_dim(int32 dim)
{
	if (dim < 1 || dim > MTMS_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("embedding_dim must be between 1 and %d, got %d",
						MTMS_MAX_DIM, dim)));
}

/*
 * Creating models is for the roles the database administrator allowed:
 * those with INSERT on mtms_model (the model itself is then written as the
 * catalog's owner, and its owner is the caller).
 */
static void
check_may_create(void)
{
	if (pg_class_aclcheck(mtms_model_relid(), GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table mtms_model"),
				 errdetail("Creating a model needs INSERT on mtms_model."),
				 errhint("A database administrator can allow it: GRANT INSERT ON mtms_model TO %s.",
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

static ArrayType *
make_text_array(char **names, int n)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(names[i]);
	return construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/* ---------------------------------------------------------------------
 * Reading a model
 * ---------------------------------------------------------------------
 */

/* Copy a text[] Datum into a palloc'd array of strings in cxt. */
static int
copy_text_array(Datum d, MemoryContext cxt, char ***out)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	  **res;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	res = MemoryContextAlloc(cxt, Max(n, 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			elog(ERROR, "mtms_model holds a NULL name");
		res[i] = MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
	}
	*out = res;
	return n;
}

/* An int[] of exactly n non-NULL elements, copied into cxt. */
static int32 *
copy_int_array(Datum d, MemoryContext cxt, int n, const char *model)
{
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	int32	   *out;

	deconstruct_array(DatumGetArrayTypeP(d), INT4OID, sizeof(int32), true,
					  TYPALIGN_INT, &elems, &nulls, &count);
	if (count != n)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms_model \"%s\" has %d birth numbers for %d names",
						model, count, n)));
	out = MemoryContextAlloc(cxt, sizeof(int32) * Max(n, 1));
	for (int i = 0; i < n; i++)
		out[i] = nulls[i] ? 0 : DatumGetInt32(elems[i]);
	return out;
}

/*
 * The experiment's columns for mtms_model_lookup: read in the statement
 * that reads active_version, so that the two always agree (0.3 and later).
 */
static char *
experiment_columns(void)
{
	char	   *schema;

	if (!mtms_catalog_has_experiments())
		return "NULL::int8, NULL::int4, NULL::float8";
	schema = mtms_schema_quoted();
	return psprintf("(SELECT e.experiment_id FROM %s.mtms_experiment e WHERE e.model_id = m.model_id),"
					" (SELECT e.version FROM %s.mtms_experiment e WHERE e.model_id = m.model_id),"
					" (SELECT e.share FROM %s.mtms_experiment e WHERE e.model_id = m.model_id)",
					schema, schema, schema);
}

MtmsModelMeta *
mtms_model_lookup(const char *name, bool missing_ok, bool lock)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MtmsModelMeta *m = NULL;
	char	   *sql;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		read_only;
	bool		has_acl;
	int			rc;

	if (name == NULL)
		elog(ERROR, "mtms_model_lookup: NULL model name");

	has_acl = mtms_catalog_has_acl();
	sql = psprintf("SELECT model_id, name, owner, scenes, fields, embedding_dim,"
				   " hidden, options, active_version, scene_birth, field_birth, %s, %s, m.xmin"
				   " FROM %s.mtms_model m WHERE name = $1%s",
				   has_acl ? "acl, params_revision" : "NULL::pg_catalog.aclitem[], 0::int8",
				   experiment_columns(),
				   mtms_schema_quoted(), lock ? " FOR UPDATE" : "");
	values[0] = CStringGetTextDatum(name);

	/*
	 * A fresh snapshot, so that a caller sees its own earlier changes; but
	 * no command counter increment in parallel mode (a scoring function may
	 * run in a parallel worker), where we read with the active snapshot.
	 */
	read_only = !lock && IsInParallelMode();

	spi_connect(false);
	rc = SPI_execute_with_args(sql, 1, argtypes, values, NULL, read_only, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed (%s): %s",
			 SPI_result_code_string(rc), sql);

	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		ArrayType  *hidden;
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		m = MemoryContextAllocZero(callercxt, sizeof(MtmsModelMeta));
		m->model_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		m->name = MemoryContextStrdup(callercxt,
									  TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)));
		m->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		m->nscenes = copy_text_array(SPI_getbinval(tup, desc, 4, &isnull),
									 callercxt, &m->scenes);
		m->nfields = copy_text_array(SPI_getbinval(tup, desc, 5, &isnull),
									 callercxt, &m->fields);
		m->dim = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));

		hidden = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 7, &isnull));
		deconstruct_array(hidden, INT4OID, sizeof(int32), true, TYPALIGN_INT,
						  &elems, &nulls, &n);
		if (n < 1 || n > MTMS_MAX_HIDDEN_LAYERS)
			elog(ERROR, "mtms_model \"%s\" has %d hidden layers", m->name, n);
		m->nhidden = n;
		for (int i = 0; i < n; i++)
			m->hidden[i] = nulls[i] ? 0 : DatumGetInt32(elems[i]);

		/* stored options are normalized; parsing also fills new defaults */
		mtms_options_default(&m->opts);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		if (!isnull)
			mtms_options_parse(DatumGetJsonbP(d), &m->opts);

		d = SPI_getbinval(tup, desc, 9, &isnull);
		m->active_version = isnull ? 0 : DatumGetInt32(d);

		m->scene_birth = copy_int_array(SPI_getbinval(tup, desc, 10, &isnull),
										callercxt, m->nscenes, m->name);
		m->field_birth = copy_int_array(SPI_getbinval(tup, desc, 11, &isnull),
										callercxt, m->nfields, m->name);

		m->has_acl = has_acl;
		d = SPI_getbinval(tup, desc, 12, &isnull);
		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(callercxt);

			m->acl = DatumGetAclPCopy(d);
			MemoryContextSwitchTo(old);
		}
		m->params_revision = DatumGetInt64(SPI_getbinval(tup, desc, 13, &isnull));
		d = SPI_getbinval(tup, desc, 14, &isnull);
		if (!isnull)
		{
			m->experiment_id = DatumGetInt64(d);
			m->candidate_version = DatumGetInt32(SPI_getbinval(tup, desc, 15, &isnull));
			m->candidate_share = DatumGetFloat8(SPI_getbinval(tup, desc, 16, &isnull));
		}
		m->row_xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 17, &isnull));
	}
	spi_finish();

	if (m == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", shown(name)),
				 errhint("Create it with mtms_create_model().")));
	return m;
}

int
mtms_scene_index(const MtmsModelMeta *m, const char *scene)
{
	for (int i = 0; i < m->nscenes; i++)
		if (strcmp(m->scenes[i], scene) == 0)
			return i;
	return -1;
}

int
mtms_field_index(const MtmsModelMeta *m, const char *field)
{
	for (int i = 0; i < m->nfields; i++)
		if (strcmp(m->fields[i], field) == 0)
			return i;
	return -1;
}

static char *
name_list(char **names, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", names[i]);
	return buf.data;
}

char *
mtms_scene_list(const MtmsModelMeta *m)
{
	return name_list(m->scenes, m->nscenes);
}

char *
mtms_field_list(const MtmsModelMeta *m)
{
	return name_list(m->fields, m->nfields);
}

/*
 * The privilege check comes before the row lock, so that a role without
 * the right never waits for a training of the model; the second read
 * locks the row and checks again (the owner or the grants may have changed
 * while we waited).
 */
MtmsModelMeta *
mtms_model_lookup_for_change(const char *name, MtmsPrivilege privilege)
{
	MtmsModelMeta *m = mtms_model_lookup(name, false, false);

	mtms_check_privilege(m, privilege);
	m = mtms_model_lookup(name, false, true);
	mtms_check_privilege(m, privilege);
	return m;
}

/* ---------------------------------------------------------------------
 * SQL-callable functions
 * ---------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(mtms_create_model);
Datum
mtms_create_model(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	  **scenes;
	char	  **fields;
	int			nscenes;
	int			nfields;
	int32		dim;
	int32		hidden[MTMS_MAX_HIDDEN_LAYERS];
	int			nhidden;
	MtmsOptions opts;
	Datum		hidden_d[MTMS_MAX_HIDDEN_LAYERS];
	char	   *sql;
	Oid			argtypes[7] = {TEXTOID, OIDOID, TEXTARRAYOID, TEXTARRAYOID,
	INT4OID, INT4ARRAYOID, JSONBOID};
	Datum		values[7];

	name = check_text_arg(fcinfo, 0, "name");
	mtms_check_name(name, "model");
	nscenes = check_name_array(fcinfo, 1, "scenes", "scene",
							   MTMS_MAX_SCENES, &scenes);
	nfields = check_name_array(fcinfo, 2, "fields", "field",
							   MTMS_MAX_FIELDS, &fields);
	check_not_null(fcinfo, 3, "embedding_dim");
	dim = PG_GETARG_INT32(3);
	check_embedding_dim(dim);
	nhidden = check_hidden(fcinfo, 4, hidden);
	check_not_null(fcinfo, 5, "options");
	mtms_options_default(&opts);
	mtms_options_parse(PG_GETARG_JSONB_P(5), &opts);

	for (int i = 0; i < nhidden; i++)
		hidden_d[i] = Int32GetDatum(hidden[i]);

	values[0] = CStringGetTextDatum(name);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = PointerGetDatum(make_text_array(scenes, nscenes));
	values[3] = PointerGetDatum(make_text_array(fields, nfields));
	values[4] = Int32GetDatum(dim);
	values[5] = PointerGetDatum(construct_array(hidden_d, nhidden, INT4OID,
												sizeof(int32), true,
												TYPALIGN_INT));
	values[6] = JsonbPGetDatum(mtms_options_to_jsonb(&opts));

	sql = psprintf("INSERT INTO %s.mtms_model"
				   " (name, owner, scenes, fields, scene_birth, field_birth,"
				   "  embedding_dim, hidden, options)"
				   " VALUES ($1, $2, $3, $4, pg_catalog.array_fill(0, ARRAY[%d]),"
				   "  pg_catalog.array_fill(0, ARRAY[%d]), $5, $6, $7)"
				   " ON CONFLICT (name) DO NOTHING",
				   mtms_schema_quoted(), nscenes, nfields);

	check_may_create();
	spi_connect(true);
	spi_exec(sql, 7, argtypes, values, SPI_OK_INSERT);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("model \"%s\" already exists", name),
				 errhint("Drop it with mtms_drop_model() or choose another name.")));
	spi_finish();

	mtms_catalog_changed();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(mtms_drop_model);
Datum
mtms_drop_model(PG_FUNCTION_ARGS)
{
	char	   *name = check_text_arg(fcinfo, 0, "model");
	MtmsModelMeta *m = mtms_model_lookup_for_change(name, MTMS_PRIV_OWNER);
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];

	values[0] = Int32GetDatum(m->model_id);

	/* versions, embeddings and towers go with it (ON DELETE CASCADE) */
	spi_connect(true);
	spi_exec(psprintf("DELETE FROM %s.mtms_model WHERE model_id = $1",
					  mtms_schema_quoted()),
			 1, argtypes, values, SPI_OK_DELETE);
	spi_finish();

	mtms_catalog_changed();
	mtms_shared_forget_model(m->model_id);
	PG_RETURN_VOID();
}

/* Append a scene or field to a model (what = "scene" / "field"). */
static void
add_name(const char *model, const char *newname, const char *what,
		 const char *column, int maxn)
{
	MtmsModelMeta *m;
	char	  **names;
	int			n;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	mtms_check_name(newname, what);
	m = mtms_model_lookup_for_change(model, MTMS_PRIV_OWNER);

	if (strcmp(what, "scene") == 0)
	{
		names = m->scenes;
		n = m->nscenes;
	}
	else
	{
		names = m->fields;
		n = m->nfields;
	}

	for (int i = 0; i < n; i++)
	{
		if (strcmp(names[i], newname) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("%s \"%s\" already exists in model \"%s\"",
							what, newname, m->name)));
	}
	if (n >= maxn)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" already has %d %ss, the maximum",
						m->name, n, what)));

	values[0] = Int32GetDatum(m->model_id);
	values[1] = CStringGetTextDatum(newname);

	spi_connect(true);
	/* the new name is born after everything the model has */
	spi_exec(psprintf("UPDATE %s.mtms_model SET %s = pg_catalog.array_append(%s, $2),"
					  " %s = pg_catalog.array_append(%s, 1 + GREATEST("
					  "   (SELECT pg_catalog.max(b) FROM pg_catalog.unnest(scene_birth) b),"
					  "   (SELECT pg_catalog.max(b) FROM pg_catalog.unnest(field_birth) b)))"
					  " WHERE model_id = $1",
					  mtms_schema_quoted(), column, column,
					  strcmp(what, "scene") == 0 ? "scene_birth" : "field_birth",
					  strcmp(what, "scene") == 0 ? "scene_birth" : "field_birth"),
			 2, argtypes, values, SPI_OK_UPDATE);
	spi_finish();

	mtms_catalog_changed();
}

PG_FUNCTION_INFO_V1(mtms_add_scene);
Datum
mtms_add_scene(PG_FUNCTION_ARGS)
{
	char	   *model = check_text_arg(fcinfo, 0, "model");
	char	   *scene = check_text_arg(fcinfo, 1, "scene");

	add_name(model, scene, "scene", "scenes", MTMS_MAX_SCENES);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(mtms_add_field);
Datum
mtms_add_field(PG_FUNCTION_ARGS)
{
	char	   *model = check_text_arg(fcinfo, 0, "model");
	char	   *field = check_text_arg(fcinfo, 1, "field");

	add_name(model, field, "field", "fields", MTMS_MAX_FIELDS);
	PG_RETURN_VOID();
}

/*
 * ERROR (undefined_object, listing the kept versions) unless version is a
 * kept version of m.  Reads the catalog as its owner: check the caller's
 * privilege on m first.
 */
void
mtms_check_version_kept(const MtmsModelMeta *m, int32 version)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	bool		found = false;
	StringInfoData kept;

	values[0] = Int32GetDatum(m->model_id);
	initStringInfo(&kept);

	spi_connect(false);
	spi_exec(psprintf("SELECT version FROM %s.mtms_version"
					  " WHERE model_id = $1 ORDER BY version",
					  mtms_schema_quoted()),
			 1, argtypes, values, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		v = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													SPI_tuptable->tupdesc,
													1, &isnull));

		if (v == version)
			found = true;
		appendStringInfo(&kept, "%s%d", i > 0 ? ", " : "", v);
	}
	spi_finish();

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("version %d of model \"%s\" does not exist",
						version, m->name),
				 kept.len > 0 ?
				 errdetail("Kept versions: %s.", kept.data) :
				 errdetail("The model has no trained versions."),
				 errhint("mtms_versions('%s') lists the kept versions.", m->name)));
	pfree(kept.data);
}

PG_FUNCTION_INFO_V1(mtms_rollback);
Datum
mtms_rollback(PG_FUNCTION_ARGS)
{
	char	   *model = check_text_arg(fcinfo, 0, "model");
	int32		version;
	MtmsModelMeta *m;
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		values[2];

	check_not_null(fcinfo, 1, "version");
	version = PG_GETARG_INT32(1);
	m = mtms_model_lookup_for_change(model, MTMS_PRIV_TRAIN);
	mtms_check_version_kept(m, version);

	values[0] = Int32GetDatum(m->model_id);
	values[1] = Int32GetDatum(version);
	spi_connect(true);
	spi_exec(psprintf("UPDATE %s.mtms_model SET active_version = $2"
					  " WHERE model_id = $1",
					  mtms_schema_quoted()),
			 2, argtypes, values, SPI_OK_UPDATE);

	/*
	 * Rolling back to the experiment's candidate promotes it: the
	 * experiment ends in the same transaction, so no session ever sees the
	 * candidate active and still in an experiment.  Another version leaves
	 * the experiment running against the new active version.
	 */
	if (m->experiment_id != 0 && m->candidate_version == version)
		spi_exec(psprintf("DELETE FROM %s.mtms_experiment WHERE model_id = $1",
						  mtms_schema_quoted()),
				 1, argtypes, values, SPI_OK_DELETE);
	spi_finish();

	mtms_catalog_changed();
	PG_RETURN_VOID();
}

/*
 * mtms_model_id(model text) -> int: the model's id in the catalog tables,
 * or an error for an unknown model (mtms_versions uses it as its check).
 */
/* The last model mtms_model_id looked up at a call site (fn_extra). */
typedef struct ModelIdCache
{
	char	   *model;
	Oid			user;			/* who asked: the privilege check's answer */
	int32		model_id;
} ModelIdCache;

/*
 * STABLE: in "WHERE model_id = mtms_model_id('m')" over a parameter table
 * a sequential scan calls it once per row, so the call site keeps its last
 * answer for the rest of the statement.
 */
PG_FUNCTION_INFO_V1(mtms_model_id);
Datum
mtms_model_id(PG_FUNCTION_ARGS)
{
	char	   *model = check_text_arg(fcinfo, 0, "model");
	ModelIdCache *cache = (ModelIdCache *) fcinfo->flinfo->fn_extra;
	MtmsModelMeta *m;
	char	   *copy;

	if (cache != NULL && cache->user == GetUserId() &&
		strcmp(cache->model, model) == 0)
		PG_RETURN_INT32(cache->model_id);
	m = mtms_model_lookup(model, false, false);
	mtms_check_privilege(m, MTMS_PRIV_SCORE);
	copy = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, model);
	if (cache == NULL)
		cache = fcinfo->flinfo->fn_extra =
			MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ModelIdCache));
	else
		pfree(cache->model);
	cache->model = copy;
	cache->user = GetUserId();
	cache->model_id = m->model_id;
	PG_RETURN_INT32(m->model_id);
}
