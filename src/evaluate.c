/*
 * evaluate.c
 *    mtms_evaluate(): offline metrics per (scene, task) over a sample
 *    relation, with the model's active version or another kept one.
 *
 *   ctr    every impression of the scene, label click
 *   cvr    clicked impressions, label conversion
 *   ctcvr  every impression, score pCTR x pCVR, label click AND conversion
 *
 * n, positives, exact AUC (ties one half; NULL when a class is absent),
 * logloss (mean BCE, probabilities clamped to [1e-7, 1 - 1e-7]), MAE (mean
 * |p - label|) and calibration (mean prediction / mean label; NULL without
 * positives).  Rows are scored through the model's first-layer projection
 * cache (score_projection.h), as mtms_score does, in batches of SCORE_ROWS
 * rows: a batch computes the projections the cache lacks all at once and
 * runs the upper layers of a tower's rows as matrix products
 * (mtms_score_batch_run), so evaluating costs less per row and task than
 * scoring, and far less in a backend whose cache is still empty.
 *
 * version NULL (or the 2-argument form of extension version 0.2 and
 * before) evaluates the active version, through the backend's model cache;
 * another kept version is loaded for this call alone (model_store.h) and
 * scored the same way, through a projection cache of its own that goes
 * with the call.
 */
#include "mtms.h"

#include <math.h>

#include "access.h"
#include "auc.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "model_cache.h"
#include "model_store.h"
#include "progress.h"
#include "samples.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define FETCH_BATCH 8192		/* rows fetched from the samples at a time */
#define SCORE_ROWS	32768		/* rows scored at a time (mtms_score_batch_run) */
#define SCORE_FEATURES (1024 * 1024)	/* or fewer rows, when they have this many features */

typedef struct Column
{
	int64		n;
	int64		cap;
	double	   *score;
	bool	   *label;
} Column;

static void
column_add(Column *c, double score, bool label)
{
	if (c->n == c->cap)
	{
		int64		cap = Max(c->cap * 2, 1024);

		if (c->cap == 0)
		{
			c->score = palloc_extended(sizeof(double) * cap, MCXT_ALLOC_HUGE);
			c->label = palloc_extended(sizeof(bool) * cap, MCXT_ALLOC_HUGE);
		}
		else
		{
			c->score = repalloc_huge(c->score, sizeof(double) * cap);
			c->label = repalloc_huge(c->label, sizeof(bool) * cap);
		}
		c->cap = cap;
	}
	c->score[c->n] = score;
	c->label[c->n++] = label;
}

static double
bce(double p, bool y)
{
	p = Min(Max(p, 1e-7), 1.0 - 1e-7);
	return y ? -log(p) : -log(1.0 - p);
}

static void
emit(ReturnSetInfo *rsi, const char *scene, const char *task, const Column *c)
{
	Datum		values[8];
	bool		nulls[8] = {0};
	int64		pos = 0;
	double		loss = 0,
				mae = 0,
				psum = 0,
				auc;

	for (int64 i = 0; i < c->n; i++)
	{
		pos += c->label[i];
		loss += bce(c->score[i], c->label[i]);
		mae += fabs(c->score[i] - (c->label[i] ? 1.0 : 0.0));
		psum += c->score[i];
	}
	auc = mtms_auc_compute(c->score, c->label, c->n);
	values[0] = CStringGetTextDatum(scene);
	values[1] = CStringGetTextDatum(task);
	values[2] = Int64GetDatum(c->n);
	values[3] = Int64GetDatum(pos);
	values[4] = Float8GetDatum(auc);
	nulls[4] = isnan(auc);
	values[5] = Float8GetDatum(loss / c->n);
	values[6] = Float8GetDatum(mae / c->n);
	values[7] = Float8GetDatum(pos > 0 ? (psum / c->n) / ((double) pos / c->n) : 0);
	nulls[7] = pos == 0;
	tuplestore_putvalues(rsi->setResult, rsi->setDesc, values, nulls);
}

/* The rows of the batch being gathered, and where their figures go. */
typedef struct EvalBatch
{
	MtmsScoreBatch *batch;
	int			nrows;
	int64		nfeatures;
	int32	   *scene;			/* [SCORE_ROWS] */
	bool	   *click;
	bool	   *conv;			/* conversion (and click) */
	float	   *prob;			/* [SCORE_ROWS * MTMS_NTASKS] */
	Column	   *cols;			/* [nscenes * 3] */
} EvalBatch;

/* Score the gathered rows and add them to their columns (in work). */
static void
eval_flush(EvalBatch *eb, MemoryContext work)
{
	MemoryContext old;

	if (eb->nrows == 0)
		return;
	mtms_score_batch_run(eb->batch, eb->prob);
	old = MemoryContextSwitchTo(work);
	for (int i = 0; i < eb->nrows; i++)
	{
		int			s = eb->scene[i];
		double		pc = eb->prob[i * MTMS_NTASKS + MTMS_TASK_CTR];
		double		pv = eb->prob[i * MTMS_NTASKS + MTMS_TASK_CVR];

		column_add(&eb->cols[s * 3 + 0], pc, eb->click[i]);
		if (eb->click[i])
			column_add(&eb->cols[s * 3 + 1], pv, eb->conv[i]);
		column_add(&eb->cols[s * 3 + 2], pc * pv, eb->click[i] && eb->conv[i]);
	}
	MemoryContextSwitchTo(old);
	eb->nrows = 0;
	eb->nfeatures = 0;
}

/*
 * Index of the scene named by a text datum, without copying it; last is
 * the previous answer, tried first.  -1 if the model has no such scene.
 */
static int
scene_of(const MtmsModel *m, const int *lens, text *t, int last)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (last >= 0 && lens[last] == len && memcmp(m->scenes[last], s, len) == 0)
		return last;
	for (int i = 0; i < m->nscenes; i++)
		if (lens[i] == len && memcmp(m->scenes[i], s, len) == 0)
			return i;
	return -1;
}

/*
 * The scorer of the version to evaluate: the active one's from the model
 * cache when the version argument is NULL (or absent: the 2-argument
 * function of extension version 0.2) or names the active version; another
 * kept version loaded into cxt, with a projection cache of its own there.
 * An unknown version is an error (undefined_object) naming the kept ones.
 */
static MtmsScorer *
eval_scorer(FunctionCallInfo fcinfo, const char *name, MemoryContext cxt,
			const MtmsModelMeta **meta_out, const MtmsModel **model_out)
{
	MtmsModelMeta *meta;
	int32		version;
	MemoryContext old;
	MtmsModel  *m;

	if (PG_NARGS() < 3 || PG_ARGISNULL(2))
		return mtms_cache_get_scorer(name, meta_out, model_out);
	version = PG_GETARG_INT32(2);
	old = MemoryContextSwitchTo(cxt);
	meta = mtms_model_lookup(name, false, false);
	mtms_check_privilege(meta, MTMS_PRIV_SCORE);
	mtms_check_version_kept(meta, version);
	MemoryContextSwitchTo(old);
	if (version == meta->active_version)
		return mtms_cache_get_scorer(name, meta_out, model_out);

	old = MemoryContextSwitchTo(cxt);
	m = mtms_model_load(meta, version);
	MemoryContextSwitchTo(old);
	*meta_out = meta;
	*model_out = m;
	return mtms_scorer_create(m, cxt);
}

PG_FUNCTION_INFO_V1(mtms_evaluate);
Datum
mtms_evaluate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsi;
	char	   *name;
	Oid			relid;
	char	   *relname;
	const MtmsModelMeta *meta;
	const MtmsModel *m;
	MtmsScorer *scorer;
	EvalBatch	eb;
	int		   *lens;
	int			last = -1;
	MtmsFeature *feats = NULL;
	int			featcap = 0;
	Portal		portal;
	MemoryContext work;
	MemoryContext rowcxt;
	MemoryContext old;
	int			guard;
	bool		progress;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("arguments \"model\" and \"samples\" of mtms_evaluate must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	relid = PG_GETARG_OID(1);

	InitMaterializedSRF(fcinfo, 0);
	rsi = (ReturnSetInfo *) fcinfo->resultinfo;
	relname = mtms_samples_check(relid);

	work = AllocSetContextCreate(CurrentMemoryContext, "mtms_evaluate", ALLOCSET_DEFAULT_SIZES);
	scorer = eval_scorer(fcinfo, name, work, &meta, &m);
	progress = mtms_progress_begin("evaluate", name);
	if (progress)
		mtms_progress_stage("scoring", 0, -1, mtms_progress_relation_rows(relid), 0);
	old = MemoryContextSwitchTo(work);
	lens = palloc(sizeof(int) * m->nscenes);
	for (int s = 0; s < m->nscenes; s++)
		lens[s] = strlen(m->scenes[s]);
	memset(&eb, 0, sizeof(eb));
	eb.cols = palloc0(sizeof(Column) * m->nscenes * 3);
	eb.batch = mtms_score_batch_create(scorer);
	eb.scene = palloc(sizeof(int32) * SCORE_ROWS);
	eb.click = palloc(sizeof(bool) * SCORE_ROWS);
	eb.conv = palloc(sizeof(bool) * SCORE_ROWS);
	eb.prob = palloc(sizeof(float) * SCORE_ROWS * MTMS_NTASKS);
	/* detoasted copies of a fetch's values */
	rowcxt = AllocSetContextCreate(work, "mtms_evaluate rows", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(old);

	SPI_connect();
	guard = mtms_guard_search_path();
	portal = SPI_cursor_open_with_args(NULL,
									   psprintf("SELECT scene::text, features, click, conversion FROM %s",
												relname),
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, FETCH_BATCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		d;
			int			s;
			bool		click;
			ArrayType  *arr;
			int			nf;

			d = SPI_getbinval(tup, td, 1, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"scene\" is NULL")));
			old = MemoryContextSwitchTo(rowcxt);
			s = scene_of(m, lens, DatumGetTextPP(d), last);
			MemoryContextSwitchTo(old);
			if (s < 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("sample scene \"%s\" is not a scene of model \"%s\"",
								TextDatumGetCString(d), name),
						 errhint("The model's scenes are: %s.", mtms_scene_list(meta))));
			last = s;
			d = SPI_getbinval(tup, td, 2, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"features\" is NULL")));
			old = MemoryContextSwitchTo(rowcxt);
			arr = DatumGetArrayTypeP(d);
			MemoryContextSwitchTo(work);
			nf = mtms_parse_features(arr, m->nfields, m->fields, &feats, &featcap, NULL);
			d = SPI_getbinval(tup, td, 3, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"click\" is NULL")));
			click = DatumGetBool(d);
			eb.scene[eb.nrows] = s;
			eb.click[eb.nrows] = click;
			d = SPI_getbinval(tup, td, 4, &isnull);
			eb.conv[eb.nrows] = !isnull && DatumGetBool(d) && click;
			mtms_score_batch_add(eb.batch, s, feats, nf);
			MemoryContextSwitchTo(old);
			eb.nrows++;
			eb.nfeatures += nf;
			if (eb.nrows == SCORE_ROWS || eb.nfeatures >= SCORE_FEATURES)
				eval_flush(&eb, work);
		}
		mtms_progress_rows((int64) SPI_processed);
		mtms_progress_pause();
		MemoryContextReset(rowcxt);
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	eval_flush(&eb, work);
	SPI_cursor_close(portal);
	mtms_unguard_search_path(guard);
	SPI_finish();

	for (int s = 0; s < m->nscenes; s++)
	{
		static const char *tasks[] = {"ctr", "cvr", "ctcvr"};

		for (int t = 0; t < 3; t++)
			if (eb.cols[s * 3 + t].n > 0)
				emit(rsi, m->scenes[s], tasks[t], &eb.cols[s * 3 + t]);
	}
	MemoryContextDelete(work);
	if (progress)
		mtms_progress_end();
	return (Datum) 0;
}
