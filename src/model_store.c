/*
 * model_store.c
 *    Moving a model between memory and the parameter tables
 *    (mtms_embedding: one row per model, version, scene, task, feature;
 *    mtms_tower: one row per tower layer).
 *
 * Everything read back from the tables is validated (lengths, shapes, NaN
 * or infinite values), so a hand-edited row gives an error, not a crash.
 * Both directions run as the catalog's owner (catalog_tables.h): callers
 * check the user's privilege on the model first.
 */
#include "model_store.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "access/xact.h"

#define SAVE_BATCH	20000
#define LOAD_BATCH	10000

static void
corrupt(const MtmsModelMeta *meta, int32 version, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("stored parameters of model \"%s\" version %d are invalid: %s",
					meta->name, version, what),
			 errhint("Roll back to another version with mtms_rollback(), or retrain.")));
}

static int
name_index(char **names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

static int
task_index(const char *task)
{
	if (strcmp(task, "ctr") == 0)
		return MTMS_TASK_CTR;
	if (strcmp(task, "cvr") == 0)
		return MTMS_TASK_CVR;
	return -1;
}

/* float4[] datum -> exactly n finite floats into out */
static bool
read_floats(Datum d, int n, float *out)
{
	ArrayType  *a = DatumGetArrayTypeP(d);
	const float *src;

	if (ARR_ELEMTYPE(a) != FLOAT4OID || ARR_NDIM(a) != 1 || ARR_HASNULL(a) ||
		ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) != n)
		return false;
	src = (const float *) ARR_DATA_PTR(a);
	for (int i = 0; i < n; i++)
	{
		if (!isfinite(src[i]))
			return false;
		out[i] = src[i];
	}
	return true;
}

static char **
text_array_names(Datum d, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return out;
}

static Datum
name_array(char **names, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(names[i]);
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* What a load reads with: the version, its SQL arguments, the schema. */
typedef struct LoadCtx
{
	const MtmsModelMeta *meta;
	int32		version;
	char	   *schema;
	Datum		args[2];		/* model_id, version */
	bool		has_stats;		/* the schema has seen, last_seen (0.3) */
} LoadCtx;

static Oid load_argtypes[2] = {INT4OID, INT4OID};

/*
 * The shape the version was trained with (its scenes and fields, a prefix
 * of the model's), as an empty model of that shape in cxt.
 */
static MtmsModel *
load_shape(LoadCtx *lc, MemoryContext cxt)
{
	const MtmsModelMeta *meta = lc->meta;
	MtmsModelMeta vmeta = *meta;
	char	   *sql;
	MtmsModel  *m;
	MemoryContext old;
	bool		isnull;

	sql = psprintf("SELECT scenes, fields FROM %s.mtms_version "
				   "WHERE model_id = $1 AND version = $2", lc->schema);
	if (SPI_execute_with_args(sql, 2, load_argtypes, lc->args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("version %d of model \"%s\" does not exist", lc->version, meta->name)));
	old = MemoryContextSwitchTo(cxt);
	vmeta.scenes = text_array_names(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
									&vmeta.nscenes);
	vmeta.fields = text_array_names(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull),
									&vmeta.nfields);
	MemoryContextSwitchTo(old);
	if (vmeta.nscenes < 1 || vmeta.nscenes > meta->nscenes ||
		vmeta.nfields < 1 || vmeta.nfields > meta->nfields)
		corrupt(meta, lc->version, "its scenes or fields do not match the model");
	for (int s = 0; s < vmeta.nscenes; s++)
		if (strcmp(vmeta.scenes[s], meta->scenes[s]) != 0)
			corrupt(meta, lc->version, "its scenes do not match the model");
	for (int f = 0; f < vmeta.nfields; f++)
		if (strcmp(vmeta.fields[f], meta->fields[f]) != 0)
			corrupt(meta, lc->version, "its fields do not match the model");
	old = MemoryContextSwitchTo(cxt);
	m = mtms_model_create(&vmeta);
	MemoryContextSwitchTo(old);
	return m;
}

/* One embedding row of the cursor into m, validated. */
static void
load_embedding_row(LoadCtx *lc, MtmsModel *m, HeapTuple tup, TupleDesc td, float *vec)
{
	bool		sn,
				tn,
				fn,
				isnull;
	int			s = DatumGetInt32(SPI_getbinval(tup, td, 1, &sn)) - 1;
	int			t = DatumGetInt32(SPI_getbinval(tup, td, 2, &tn));
	int			f = DatumGetInt32(SPI_getbinval(tup, td, 3, &fn)) - 1;
	int64		feature = DatumGetInt64(SPI_getbinval(tup, td, 4, &isnull));
	Datum		vd = SPI_getbinval(tup, td, 5, &isnull);
	float		accum = DatumGetFloat4(SPI_getbinval(tup, td, 6, &isnull));
	int64		seen = DatumGetInt64(SPI_getbinval(tup, td, 10, &isnull));
	int32		last_seen = DatumGetInt32(SPI_getbinval(tup, td, 11, &isnull));
	MtmsEmbStore *emb;
	int64		idx;

	if (sn || tn || fn)
		corrupt(lc->meta, lc->version,
				psprintf("embedding row (%s, %s, %s) names an unknown scene, task or field",
						 SPI_getvalue(tup, td, 7), SPI_getvalue(tup, td, 8),
						 SPI_getvalue(tup, td, 9)));
	if (!read_floats(vd, m->dim, vec) || !isfinite(accum) || accum < 0)
		corrupt(lc->meta, lc->version,
				psprintf("embedding row (%s, %s, " INT64_FORMAT ") has a bad vector or accumulator",
						 SPI_getvalue(tup, td, 7), SPI_getvalue(tup, td, 8), feature));
	if (seen < 0 || last_seen < 0 || last_seen > lc->version)
		corrupt(lc->meta, lc->version,
				psprintf("embedding row (%s, %s, " INT64_FORMAT ") has bad feature statistics",
						 SPI_getvalue(tup, td, 7), SPI_getvalue(tup, td, 8), feature));
	emb = m->emb[MTMS_PAIR(s, t)];
	if (mtms_emb_find(emb, (uint64) feature) >= 0)
		corrupt(lc->meta, lc->version, "an embedding row is duplicated");
	idx = mtms_emb_insert(emb, (uint64) feature, f, vec, accum);
	mtms_emb_set_stats(emb, idx, (int32) Min(seen, (int64) PG_INT32_MAX), last_seen);
}

/*
 * The version's embedding rows, streamed through a cursor; scene, task
 * and field come back as indexes (NULL when unknown).
 */
static void
load_embeddings(LoadCtx *lc, MtmsModel *m)
{
	Oid			types[4] = {INT4OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[4];
	float	   *vec = palloc(sizeof(float) * m->dim);
	SPIPlanPtr	plan;
	Portal		portal;
	char	   *sql;

	sql = psprintf("SELECT pg_catalog.array_position($3, scene), "
				   "CASE task WHEN 'ctr' THEN %d WHEN 'cvr' THEN %d END, "
				   "pg_catalog.array_position($4, field), feature, vector, accum, "
				   "scene, task, field, %s FROM %s.mtms_embedding "
				   "WHERE model_id = $1 AND version = $2",
				   MTMS_TASK_CTR, MTMS_TASK_CVR,
				   lc->has_stats ? "seen, last_seen" : "0::int8, 0::int4",
				   lc->schema);
	plan = SPI_prepare(sql, 4, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	args[0] = lc->args[0];
	args[1] = lc->args[1];
	args[2] = name_array(m->scenes, m->nscenes);
	args[3] = name_array(m->fields, m->nfields);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, LOAD_BATCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
			load_embedding_row(lc, m, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, vec);
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	pfree(vec);
}

/*
 * A pair has a fine-tune tower once phase 2 ran for its scene (a scene
 * added later scores with its phase-1 towers until then): create the ones
 * the version's tower rows name.
 */
static bool *
create_finetune_towers(MtmsModel *m)
{
	bool	   *has2 = palloc0(sizeof(bool) * m->npairs);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		char	   *phase = TextDatumGetCString(SPI_getbinval(tup, td, 1, &isnull));
		int			s = name_index(m->scenes, m->nscenes,
								   TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull)));
		int			t = task_index(TextDatumGetCString(SPI_getbinval(tup, td, 3, &isnull)));

		if (strcmp(phase, "finetune") == 0 && s >= 0 && t >= 0 && !has2[MTMS_PAIR(s, t)])
		{
			MemoryContext old = MemoryContextSwitchTo(m->cxt);

			has2[MTMS_PAIR(s, t)] = true;
			/* every parameter is read from the rows below */
			m->tower2[MTMS_PAIR(s, t)] =
				mtms_tower_create_zero(MTMS_INPUT2(m), m->nhidden, m->hidden);
			MemoryContextSwitchTo(old);
		}
	}
	return has2;
}

/* One tower layer row into m's tower, validated; marks it in seen1 / seen2. */
static void
load_tower_row(LoadCtx *lc, MtmsModel *m, HeapTuple tup, TupleDesc td,
			   bool *seen1, bool *seen2)
{
	bool		isnull;
	char	   *phase = TextDatumGetCString(SPI_getbinval(tup, td, 1, &isnull));
	char	   *scene = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
	char	   *task = TextDatumGetCString(SPI_getbinval(tup, td, 3, &isnull));
	int			layer = DatumGetInt32(SPI_getbinval(tup, td, 4, &isnull));
	int			n_in = DatumGetInt32(SPI_getbinval(tup, td, 5, &isnull));
	int			n_out = DatumGetInt32(SPI_getbinval(tup, td, 6, &isnull));
	int			s = name_index(m->scenes, m->nscenes, scene);
	int			t = task_index(task);
	bool		fine = strcmp(phase, "finetune") == 0;
	MtmsTower  *tw;

	if (s < 0 || t < 0 || (!fine && strcmp(phase, "embedding") != 0) ||
		layer < 0 || layer >= m->nhidden + 1)
		corrupt(lc->meta, lc->version,
				psprintf("tower row (%s, %s, %s, %d) is not part of the model",
						 phase, scene, task, layer));
	tw = fine ? m->tower2[MTMS_PAIR(s, t)] : m->tower1[MTMS_PAIR(s, t)];
	if (tw == NULL)
		corrupt(lc->meta, lc->version, "a fine-tune tower row has no pair");
	if (n_in != tw->sizes[layer] || n_out != tw->sizes[layer + 1])
		corrupt(lc->meta, lc->version,
				psprintf("tower layer (%s, %s, %s, %d) is %d x %d, expected %d x %d",
						 phase, scene, task, layer, n_out, n_in,
						 tw->sizes[layer + 1], tw->sizes[layer]));
	if (!read_floats(SPI_getbinval(tup, td, 7, &isnull), n_in * n_out, tw->W[layer]) ||
		!read_floats(SPI_getbinval(tup, td, 8, &isnull), n_out, tw->b[layer]))
		corrupt(lc->meta, lc->version,
				psprintf("tower layer (%s, %s, %s, %d) has bad weights",
						 phase, scene, task, layer));
	(fine ? seen2 : seen1)[MTMS_PAIR(s, t) * MTMS_TOWER_MAX_LAYERS + layer] = true;
}

/* The version's tower rows: every layer of every tower, exactly once. */
static void
load_towers(LoadCtx *lc, MtmsModel *m)
{
	char	   *sql;
	bool	   *seen1 = palloc0(sizeof(bool) * m->npairs * MTMS_TOWER_MAX_LAYERS);
	bool	   *seen2 = palloc0(sizeof(bool) * m->npairs * MTMS_TOWER_MAX_LAYERS);
	bool	   *has2;

	sql = psprintf("SELECT phase, scene, task, layer, n_in, n_out, weights, bias "
				   "FROM %s.mtms_tower WHERE model_id = $1 AND version = $2 "
				   "ORDER BY phase, scene, task, layer", lc->schema);
	if (SPI_execute_with_args(sql, 2, load_argtypes, lc->args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read towers");
	has2 = create_finetune_towers(m);
	for (uint64 i = 0; i < SPI_processed; i++)
		load_tower_row(lc, m, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, seen1, seen2);
	for (int p = 0; p < m->npairs; p++)
		for (int l = 0; l < m->nhidden + 1; l++)
			if (!seen1[p * MTMS_TOWER_MAX_LAYERS + l] ||
				(has2[p] && !seen2[p * MTMS_TOWER_MAX_LAYERS + l]))
				corrupt(lc->meta, lc->version,
						psprintf("a layer of a tower of scene \"%s\" is missing",
								 m->scenes[MTMS_PAIR_SCENE(p)]));
}

MtmsModel *
mtms_model_load(const MtmsModelMeta *meta, int32 version)
{
	MemoryContext caller = CurrentMemoryContext;
	LoadCtx		lc;
	MtmsModel  *m;
	bool		pushed;
	int			guard;
	MtmsCatalogScope scope;

	lc.meta = meta;
	lc.version = version;
	lc.schema = mtms_schema_quoted();
	lc.args[0] = Int32GetDatum(meta->model_id);
	lc.args[1] = Int32GetDatum(version);
	lc.has_stats = mtms_catalog_has_feature_stats();

	/*
	 * Read the version with a snapshot at least as new as the one that
	 * found it active (mtms_model_lookup reads the catalog afresh): a
	 * version committed after this statement began must be loadable.  A
	 * parallel worker cannot take snapshots; it reads with the leader's.
	 */
	pushed = !IsInParallelMode();
	if (pushed)
		PushActiveSnapshot(GetLatestSnapshot());
	mtms_catalog_scope_begin(&scope, false);
	SPI_connect();
	guard = mtms_guard_search_path();

	/*
	 * A version's rows are read whole: in heap order (bitmap or sequential
	 * scan), not one index probe per row, which made a cold start of a
	 * million rows cost twice as much.
	 */
	if (guard > 0)
		(void) set_config_option("enable_indexscan", "off", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	m = load_shape(&lc, caller);
	load_embeddings(&lc, m);
	load_towers(&lc, m);
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
	if (pushed)
		PopActiveSnapshot();

	/* grow to the model's current scenes and fields */
	m->stored_nfields = m->nfields;
	m->stored_npairs = m->npairs;
	mtms_model_extend(m, meta);

	/* score with the columns that carry weights (see nin_used in tower.h) */
	for (int p = 0; p < m->npairs; p++)
	{
		mtms_tower_trim_input(m->tower1[p]);
		mtms_tower_drop_grad(m->tower1[p]);
		if (m->tower2[p])
		{
			mtms_tower_trim_input(m->tower2[p]);
			mtms_tower_drop_grad(m->tower2[p]);
		}
	}
	return m;
}

/*
 * A real[] of v[0..n): the array built around one copy of the floats
 * (construct_array would go through a Datum per element).
 */
static Datum
float_array(const float *v, int n)
{
	Size		nbytes = ARR_OVERHEAD_NONULLS(1) + sizeof(float4) * (Size) n;
	ArrayType  *a = palloc0(nbytes);

	SET_VARSIZE(a, nbytes);
	a->ndim = 1;
	a->dataoffset = 0;
	a->elemtype = FLOAT4OID;
	ARR_DIMS(a)[0] = n;
	ARR_LBOUND(a)[0] = 1;
	memcpy(ARR_DATA_PTR(a), v, sizeof(float4) * (Size) n);
	return PointerGetDatum(a);
}

/*
 * Rows start .. start + n - 1 of emb with the plan of mtms_model_save;
 * args[0..4] (model, version, scene, task, field names) are filled in.
 */
static void
save_embedding_batch(SPIPlanPtr plan, Datum *args, const MtmsEmbStore *emb,
					 const int64 *order, int64 start, int n)
{
	int			d = mtms_emb_dim(emb);
	Datum	   *fi = palloc(sizeof(Datum) * n);
	Datum	   *ft = palloc(sizeof(Datum) * n);
	Datum	   *vv = palloc(sizeof(Datum) * (Size) n * d);
	Datum	   *ac = palloc(sizeof(Datum) * n);
	Datum	   *sn = palloc(sizeof(Datum) * n);
	Datum	   *ls = palloc(sizeof(Datum) * n);
	int			rc;

	for (int i = 0; i < n; i++)
	{
		int64		r = order[start + i];
		const float *v = mtms_emb_vector(emb, r);

		fi[i] = Int32GetDatum(mtms_emb_field(emb, r) + 1);
		ft[i] = Int64GetDatum((int64) mtms_emb_key(emb, r));
		for (int k = 0; k < d; k++)
			vv[(Size) i * d + k] = Float4GetDatum(v[k]);
		ac[i] = Float4GetDatum(*mtms_emb_accum(emb, r));
		sn[i] = Int64GetDatum((int64) mtms_emb_seen(emb, r));
		ls[i] = Int32GetDatum(mtms_emb_last_seen(emb, r));
	}
	args[5] = PointerGetDatum(construct_array(fi, n, INT4OID, 4, true, TYPALIGN_INT));
	args[6] = PointerGetDatum(construct_array(ft, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[7] = PointerGetDatum(construct_array(vv, n * d, FLOAT4OID, 4, true, TYPALIGN_INT));
	args[8] = PointerGetDatum(construct_array(ac, n, FLOAT4OID, 4, true, TYPALIGN_INT));
	args[9] = Int32GetDatum(d);
	args[10] = PointerGetDatum(construct_array(sn, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[11] = PointerGetDatum(construct_array(ls, n, INT4OID, 4, true, TYPALIGN_INT));
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not store embeddings: %s", SPI_result_code_string(rc));
	pfree(fi);
	pfree(ft);
	pfree(vv);
	pfree(ac);
	pfree(sn);
	pfree(ls);
	for (int i = 5; i < 12; i++)
		if (i != 9)
			pfree(DatumGetPointer(args[i]));
	CHECK_FOR_INTERRUPTS();
}

/* Order rows by their feature as the primary key's btree does (signed). */
static int
cmp_feature(const void *a, const void *b, void *arg)
{
	const MtmsEmbStore *emb = arg;
	int64		ka = (int64) mtms_emb_key(emb, *(const int64 *) a);
	int64		kb = (int64) mtms_emb_key(emb, *(const int64 *) b);

	return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/*
 * A pair's rows in the order of the primary key: each insert lands next
 * to the one before it in the btree, on a page still in cache, and leaf
 * pages split the way an ascending load splits them.
 */
static int64 *
feature_order(const MtmsEmbStore *emb, int64 count)
{
	int64	   *order = palloc_extended(sizeof(int64) * Max(count, 1), MCXT_ALLOC_HUGE);

	for (int64 i = 0; i < count; i++)
		order[i] = i;
	qsort_arg(order, count, sizeof(int64), cmp_feature, unconstify(MtmsEmbStore *, emb));
	CHECK_FOR_INTERRUPTS();
	return order;
}

void
mtms_model_save(const MtmsModelMeta *meta, const MtmsModel *m, int32 version)
{
	char	   *schema = mtms_schema_quoted();
	SPIPlanPtr	emb_plan;
	SPIPlanPtr	tower_plan;
	Oid			emb_types[12] = {INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID,
		INT4ARRAYOID, INT8ARRAYOID, FLOAT4ARRAYOID, FLOAT4ARRAYOID, INT4OID,
	INT8ARRAYOID, INT4ARRAYOID};
	bool		has_stats = mtms_catalog_has_feature_stats();
	Oid			tower_types[10] = {INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTOID,
		INT4OID, INT4OID, INT4OID, FLOAT4ARRAYOID, FLOAT4ARRAYOID};
	Datum	   *fieldd;
	Datum		fields_arr;
	int			guard;
	MtmsCatalogScope scope;

	mtms_catalog_scope_begin(&scope, true);
	SPI_connect();
	guard = mtms_guard_search_path();
	/* 0.3 keeps each row's feature statistics (seen, last_seen) */
	emb_plan = SPI_prepare(psprintf(
									"INSERT INTO %s.mtms_embedding "
									"(model_id, version, scene, task, field, feature, vector, accum%s) "
									"SELECT $1, $2, $3, $4, $5[($6)[i]], ($7)[i], "
									"($8)[((i - 1) * $10 + 1):(i * $10)], ($9)[i]%s "
									"FROM generate_series(1, cardinality($7)) AS i",
									schema, has_stats ? ", seen, last_seen" : "",
									has_stats ? ", ($11)[i], ($12)[i]" : ""),
						   has_stats ? 12 : 10, emb_types);
	tower_plan = SPI_prepare(psprintf(
									  "INSERT INTO %s.mtms_tower "
									  "(model_id, version, phase, scene, task, layer, n_in, n_out, weights, bias) "
									  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
									  schema), 10, tower_types);
	if (emb_plan == NULL || tower_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	fieldd = palloc(sizeof(Datum) * m->nfields);
	for (int f = 0; f < m->nfields; f++)
		fieldd[f] = CStringGetTextDatum(m->fields[f]);
	fields_arr = PointerGetDatum(construct_array(fieldd, m->nfields, TEXTOID, -1, false,
												 TYPALIGN_INT));

	for (int p = 0; p < m->npairs; p++)
	{
		const MtmsEmbStore *emb = m->emb[p];
		int64		count = mtms_emb_count(emb);
		Datum		scene = CStringGetTextDatum(m->scenes[MTMS_PAIR_SCENE(p)]);
		Datum		task = CStringGetTextDatum(mtms_task_name(MTMS_PAIR_TASK(p)));
		int64	   *order = feature_order(emb, count);

		for (int64 start = 0; start < count; start += SAVE_BATCH)
		{
			Datum		args[12];

			args[0] = Int32GetDatum(meta->model_id);
			args[1] = Int32GetDatum(version);
			args[2] = scene;
			args[3] = task;
			args[4] = fields_arr;
			save_embedding_batch(emb_plan, args, emb, order, start,
								 (int) Min(SAVE_BATCH, count - start));
		}
		pfree(order);

		for (int phase = 0; phase < 2; phase++)
		{
			const MtmsTower *tw = phase == 0 ? m->tower1[p] : m->tower2[p];

			if (tw == NULL)
				continue;
			for (int l = 0; l < tw->nlayers; l++)
			{
				Datum		args[10];
				int			rc;

				args[0] = Int32GetDatum(meta->model_id);
				args[1] = Int32GetDatum(version);
				args[2] = CStringGetTextDatum(phase == 0 ? "embedding" : "finetune");
				args[3] = scene;
				args[4] = task;
				args[5] = Int32GetDatum(l);
				args[6] = Int32GetDatum(tw->sizes[l]);
				args[7] = Int32GetDatum(tw->sizes[l + 1]);
				args[8] = float_array(tw->W[l], tw->sizes[l] * tw->sizes[l + 1]);
				args[9] = float_array(tw->b[l], tw->sizes[l + 1]);
				rc = SPI_execute_plan(tower_plan, args, NULL, false, 0);
				if (rc != SPI_OK_INSERT)
					elog(ERROR, "could not store towers: %s", SPI_result_code_string(rc));
			}
		}
	}
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
}
