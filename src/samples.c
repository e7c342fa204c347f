/*
 * samples.c
 *    Checking the shape of a sample relation (see samples.h).
 */
#include "samples.h"

#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "model.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* The column must exist with one of the accepted types. */
static void
check_column(Oid relid, const char *relname, const char *column,
			 Oid type1, Oid type2, const char *expected)
{
	AttrNumber	att = get_attnum(relid, column);
	Oid			type;

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("sample relation %s has no column \"%s\"", relname, column),
				 errhint("Samples need the columns scene text, features text[], click boolean and conversion boolean.")));
	type = get_atttype(relid, att);
	if (type != type1 && type != type2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of sample relation %s has type %s, expected %s",
						column, relname, format_type_be(type), expected)));
}

char *
mtms_samples_check(Oid relid)
{
	char	   *rel = get_rel_name(relid);
	char	   *relname;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("sample relation with OID %u does not exist", relid)));
	relname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
	switch (get_rel_relkind(relid))
	{
		case RELKIND_RELATION:
		case RELKIND_VIEW:
		case RELKIND_MATVIEW:
		case RELKIND_FOREIGN_TABLE:
		case RELKIND_PARTITIONED_TABLE:
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("sample relation %s is not a table, view or materialized view",
							relname)));
	}
	check_column(relid, relname, "scene", TEXTOID, VARCHAROID, "text");
	check_column(relid, relname, "features", TEXTARRAYOID, TEXTARRAYOID, "text[]");
	check_column(relid, relname, "click", BOOLOID, BOOLOID, "boolean");
	check_column(relid, relname, "conversion", BOOLOID, BOOLOID, "boolean");
	return relname;
}

int64 *
mtms_samples_scene_rows(const char *relname, const MtmsModel *m)
{
	int64	   *rows = palloc0(sizeof(int64) * m->nscenes);
	char	   *sql = psprintf("SELECT scene::text, count(*) FROM %s GROUP BY 1", relname);

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "mtms_train: counting the rows of %s failed", relname);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, 1, &isnull);
		char	   *name;
		int			s;

		if (isnull)
			continue;
		name = TextDatumGetCString(d);
		s = mtms_model_scene(m, name, (int) strlen(name));
		if (s >= 0)
			rows[s] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	}
	pfree(sql);
	return rows;
}
