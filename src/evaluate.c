/*
 * evaluate.c
 *    mtms_evaluate(): offline metrics per (scene, task) over a sample
 *    relation, with the model's active version.
 *
 *   ctr    every impression of the scene, label click
 *   cvr    clicked impressions, label conversion
 *   ctcvr  every impression, score pCTR x pCVR, label click AND conversion
 *
 * n, positives, exact AUC (ties one half; NULL when a class is absent),
 * logloss (mean BCE, probabilities clamped to [1e-7, 1 - 1e-7]), MAE (mean
 * |p - label|) and calibration (mean prediction / mean label; NULL without
 * positives).  Rows are scored through the model's first-layer projection
 * cache (score_projection.h), as mtms_score does.
 */
#include "mtms.h"

#include <math.h>

#include "auc.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "model_cache.h"
#include "samples.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define FETCH_BATCH 10000

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
	Column	   *cols;
	MtmsFeature *feats = NULL;
	int			featcap = 0;
	Portal		portal;
	MemoryContext work;
	MemoryContext old;
	int			guard;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("arguments \"model\" and \"samples\" of mtms_evaluate must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	relid = PG_GETARG_OID(1);

	InitMaterializedSRF(fcinfo, 0);
	rsi = (ReturnSetInfo *) fcinfo->resultinfo;
	relname = mtms_samples_check(relid);
	scorer = mtms_cache_get_scorer(name, &meta, &m);

	work = AllocSetContextCreate(CurrentMemoryContext, "mtms_evaluate", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(work);
	cols = palloc0(sizeof(Column) * m->nscenes * 3);
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
			char	   *scene;
			int			s;
			bool		click;
			bool		conv;
			int			nf;
			double		pc,
						pv;

			d = SPI_getbinval(tup, td, 1, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"scene\" is NULL")));
			scene = TextDatumGetCString(d);
			s = mtms_model_scene(m, scene, strlen(scene));
			if (s < 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("sample scene \"%s\" is not a scene of model \"%s\"", scene, name),
						 errhint("The model's scenes are: %s.", mtms_scene_list(meta))));
			pfree(scene);
			d = SPI_getbinval(tup, td, 2, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"features\" is NULL")));
			old = MemoryContextSwitchTo(work);
			nf = mtms_parse_features(DatumGetArrayTypeP(d), m->nfields, m->fields,
									 &feats, &featcap, NULL);
			MemoryContextSwitchTo(old);
			d = SPI_getbinval(tup, td, 3, &isnull);
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("sample column \"click\" is NULL")));
			click = DatumGetBool(d);
			d = SPI_getbinval(tup, td, 4, &isnull);
			conv = !isnull && DatumGetBool(d) && click;

			pc = mtms_scorer_predict(scorer, s, MTMS_TASK_CTR, feats, nf);
			pv = mtms_scorer_predict(scorer, s, MTMS_TASK_CVR, feats, nf);
			old = MemoryContextSwitchTo(work);
			column_add(&cols[s * 3 + 0], pc, click);
			if (click)
				column_add(&cols[s * 3 + 1], pv, conv);
			column_add(&cols[s * 3 + 2], pc * pv, click && conv);
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	mtms_unguard_search_path(guard);
	SPI_finish();

	for (int s = 0; s < m->nscenes; s++)
	{
		static const char *tasks[] = {"ctr", "cvr", "ctcvr"};

		for (int t = 0; t < 3; t++)
			if (cols[s * 3 + t].n > 0)
				emit(rsi, m->scenes[s], tasks[t], &cols[s * 3 + t]);
	}
	MemoryContextDelete(work);
	return (Datum) 0;
}
