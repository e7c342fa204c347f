/*
 * fake_spi.c
 *    SPI without tables, for fuzz_model_load (see fake_spi.h).
 *
 * Memory behaves as in spi.c: SPI_connect makes a procedure context
 * current and SPI_finish deletes it (and returns to the caller's); the
 * rows of a result live in a tuple-table context below it, freed by
 * SPI_freetuptable or SPI_finish, and every varlena value is copied there,
 * so code that keeps a pointer into a result past its lifetime is caught
 * by AddressSanitizer.  Queries are recognised by the table they read.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "fake_spi.h"
#include "mtms.h"
#include "pg_stubs.h"

uint64		SPI_processed = 0;
SPITupleTable *SPI_tuptable = NULL;
int			SPI_result = 0;

static FakeRow *rowsets[FAKE_NQUERIES];
static int	nrowsets[FAKE_NQUERIES];

static int	depth = 0;
static MemoryContext proc_cxt = NULL;
static MemoryContext saved_cxt = NULL;

/* plans and portals: just tags */
static int	plan_tag[FAKE_NQUERIES];
static struct
{
	bool		open;
	FakeQuery	q;
	int			pos;
} cursor;

void
fake_spi_reset(void)
{
	memset(rowsets, 0, sizeof(rowsets));
	memset(nrowsets, 0, sizeof(nrowsets));
	depth = 0;
	proc_cxt = saved_cxt = NULL;
	SPI_processed = 0;
	SPI_tuptable = NULL;
	cursor.open = false;
}

void
fake_spi_set_rows(FakeQuery q, FakeRow *rows, int nrows)
{
	rowsets[q] = rows;
	nrowsets[q] = nrows;
}

int
fake_spi_depth(void)
{
	return depth;
}

static FakeQuery
query_of(const char *src)
{
	if (strstr(src, ".mtms_version") != NULL)
		return FAKE_VERSION;
	if (strstr(src, ".mtms_embedding") != NULL)
		return FAKE_EMBEDDING;
	if (strstr(src, ".mtms_tower") != NULL)
		return FAKE_TOWER;
	stub_finding("fake SPI: unexpected query: %s", src);
}

/* A tuple table of rows[from .. from+n) of q, in a new context. */
static SPITupleTable *
make_tuptable(FakeQuery q, int from, int n)
{
	MemoryContext cxt = AllocSetContextCreate(proc_cxt, "SPI TupTable",
											  ALLOCSET_DEFAULT_SIZES);
	SPITupleTable *tt = MemoryContextAllocZero(cxt, sizeof(SPITupleTable));

	tt->tuptabcxt = cxt;
	tt->vals = MemoryContextAlloc(cxt, sizeof(HeapTuple) * Max(n, 1));
	tt->numvals = n;
	tt->alloced = n;
	tt->tupdesc = NULL;
	for (int i = 0; i < n; i++)
	{
		const FakeRow *src = &rowsets[q][from + i];
		FakeRow    *r = MemoryContextAlloc(cxt, sizeof(FakeRow));

		*r = *src;
		for (int a = 0; a < r->natts; a++)
			if (r->varlena[a] && !r->nulls[a])
			{
				Size		sz = VARSIZE_ANY(DatumGetPointer(src->values[a]));
				void	   *copy = MemoryContextAlloc(cxt, sz);

				memcpy(copy, DatumGetPointer(src->values[a]), sz);
				r->values[a] = PointerGetDatum(copy);
			}
		tt->vals[i] = (HeapTuple) r;
	}
	return tt;
}

int
SPI_connect(void)
{
	if (depth != 0)
		stub_finding("fake SPI: nested SPI_connect");
	depth = 1;
	saved_cxt = CurrentMemoryContext;
	proc_cxt = AllocSetContextCreate(CurrentMemoryContext, "SPI Proc",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(proc_cxt);
	return SPI_OK_CONNECT;
}

int
SPI_finish(void)
{
	if (depth != 1)
		stub_finding("fake SPI: SPI_finish without SPI_connect");
	MemoryContextSwitchTo(saved_cxt);
	MemoryContextDelete(proc_cxt);
	proc_cxt = NULL;
	depth = 0;
	SPI_tuptable = NULL;
	SPI_processed = 0;
	return SPI_OK_FINISH;
}

int
SPI_execute_with_args(const char *src, int nargs, Oid *argtypes,
					  Datum *Values, const char *Nulls, bool read_only,
					  long tcount)
{
	FakeQuery	q = query_of(src);
	int			n = nrowsets[q];

	if (depth != 1)
		stub_finding("fake SPI: query while not connected");
	if (tcount > 0 && n > tcount)
		n = (int) tcount;
	SPI_tuptable = make_tuptable(q, 0, n);
	SPI_processed = n;
	return SPI_OK_SELECT;
}

SPIPlanPtr
SPI_prepare(const char *src, int nargs, Oid *argtypes)
{
	FakeQuery	q = query_of(src);

	if (depth != 1)
		stub_finding("fake SPI: prepare while not connected");
	plan_tag[q] = q;
	return (SPIPlanPtr) &plan_tag[q];
}

/* 1-based position of the text s in the text[] a, 0 when absent */
static int
position_in(Datum a, Datum s)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	   *name = TextDatumGetCString(s);

	deconstruct_array(DatumGetArrayTypeP(a), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && strcmp(TextDatumGetCString(elems[i]), name) == 0)
			return i + 1;
	return 0;
}

/*
 * The embedding query as SQL computes it from the stored (scene, task,
 * field, feature, vector, accum) rows: array_position of scene in $3,
 * the task's index, array_position of field in $4 (NULL when unknown),
 * then the stored columns, then scene, task and field again as text, then
 * the statistics the query selects as 0 on a catalog without them.
 */
static void
derive_embedding_rows(Datum *args)
{
	int			n = nrowsets[FAKE_EMBEDDING];
	FakeRow    *out = MemoryContextAllocZero(proc_cxt, sizeof(FakeRow) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		const FakeRow *in = &rowsets[FAKE_EMBEDDING][i];
		FakeRow    *r = &out[i];
		char	   *task = TextDatumGetCString(in->values[1]);
		int			sp = position_in(args[2], in->values[0]);
		int			fp = position_in(args[3], in->values[2]);

		r->natts = 11;
		r->values[0] = Int32GetDatum(sp);
		r->nulls[0] = sp == 0;
		r->values[1] = Int32GetDatum(strcmp(task, "ctr") == 0 ? MTMS_TASK_CTR : MTMS_TASK_CVR);
		r->nulls[1] = strcmp(task, "ctr") != 0 && strcmp(task, "cvr") != 0;
		r->values[2] = Int32GetDatum(fp);
		r->nulls[2] = fp == 0;
		for (int a = 3; a < 6; a++)
		{
			r->values[a] = in->values[a];
			r->varlena[a] = in->varlena[a];
		}
		for (int a = 0; a < 3; a++)
		{
			r->values[6 + a] = in->values[a];
			r->varlena[6 + a] = true;
		}
		r->values[9] = Int64GetDatum(0);	/* seen */
		r->values[10] = Int32GetDatum(0);	/* last_seen */
	}
	rowsets[FAKE_EMBEDDING] = out;
}

Portal
SPI_cursor_open(const char *name, SPIPlanPtr plan, Datum *Values,
				const char *Nulls, bool read_only)
{
	if (cursor.open)
		stub_finding("fake SPI: second cursor");
	cursor.open = true;
	cursor.q = (FakeQuery) *(int *) plan;
	cursor.pos = 0;
	if (cursor.q == FAKE_EMBEDDING)
		derive_embedding_rows(Values);
	return (Portal) &cursor;
}

void
SPI_cursor_fetch(Portal portal, bool forward, long count)
{
	int			n;

	if ((void *) portal != (void *) &cursor || !cursor.open)
		stub_finding("fake SPI: fetch from a closed cursor");
	n = Min((long) (nrowsets[cursor.q] - cursor.pos), count);
	SPI_tuptable = make_tuptable(cursor.q, cursor.pos, n);
	SPI_processed = n;
	cursor.pos += n;
}

void
SPI_cursor_close(Portal portal)
{
	cursor.open = false;
}

void
SPI_freetuptable(SPITupleTable *tuptable)
{
	if (tuptable == NULL)
		return;
	if (tuptable == SPI_tuptable)
		SPI_tuptable = NULL;
	MemoryContextDelete(tuptable->tuptabcxt);
}

Datum
SPI_getbinval(HeapTuple tuple, TupleDesc tupdesc, int fnumber, bool *isnull)
{
	FakeRow    *r = (FakeRow *) tuple;

	if (fnumber < 1 || fnumber > r->natts)
		stub_finding("fake SPI: SPI_getbinval of column %d of %d", fnumber, r->natts);
	*isnull = r->nulls[fnumber - 1];
	return r->nulls[fnumber - 1] ? (Datum) 0 : r->values[fnumber - 1];
}

/* error messages name the row's text columns: any text will do here */
char *
SPI_getvalue(HeapTuple tuple, TupleDesc tupdesc, int fnumber)
{
	return pstrdup("?");
}

/* the loader's enable_indexscan = off: nothing to plan in the harness */
int
set_config_option(const char *name, const char *value,
				  GucContext context, GucSource source,
				  GucAction action, bool changeVal, int elevel,
				  bool is_reload)
{
	return 1;
}

int
SPI_execute_plan(SPIPlanPtr plan, Datum *Values, const char *Nulls,
				 bool read_only, long tcount)
{
	stub_finding("fake SPI: SPI_execute_plan is not expected when loading");
}

const char *
SPI_result_code_string(int code)
{
	return "fake SPI result";
}

/* snapshots and parallel mode */
static int	snapshot_dummy;

Snapshot
GetLatestSnapshot(void)
{
	return (Snapshot) &snapshot_dummy;
}

void
PushActiveSnapshot(Snapshot snapshot)
{
}

void
PopActiveSnapshot(void)
{
}

bool
IsInParallelMode(void)
{
	return false;
}

/* catalog_tables.c */
char *
mtms_schema_quoted(void)
{
	return pstrdup("mtms");
}

/* acting as the catalog's owner: nothing to switch in the harness */
void
mtms_catalog_scope_begin(MtmsCatalogScope *scope, bool writes)
{
	scope->writes = writes;
}

void
mtms_catalog_scope_end(MtmsCatalogScope *scope)
{
}

/*
 * catalog.c: the fake embedding rows have the columns of extension
 * version 0.2 (no seen and last_seen statistics)
 */
bool
mtms_catalog_has_feature_stats(void)
{
	return false;
}
