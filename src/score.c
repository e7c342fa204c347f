/*
 * score.c
 *    mtms_score(): one sample's probability inside a query.
 *
 * The model comes from the per-backend cache (model_cache.c); per call site
 * we keep the parsed scene and the scratch buffers in fn_extra, so scoring
 * a million rows allocates nothing per row.  Rows are scored through the
 * model's first-layer projection cache (score_projection.h);
 * mtms_score_reference() scores them the direct way (mtms_model_predict),
 * for tests, and mtms_score_cache_stats() shows the cache.
 */
#include "mtms.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "experiment.h"
#include "model_cache.h"
#include "funcapi.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(mtms_score);
PG_FUNCTION_INFO_V1(mtms_score_default);
PG_FUNCTION_INFO_V1(mtms_score_keyed);
PG_FUNCTION_INFO_V1(mtms_score_reference);
PG_FUNCTION_INFO_V1(mtms_score_cache_stats);

#define TASK_CTCVR 2

typedef struct ScoreCallCache
{
	uint64		generation;		/* catalog generation of the serving state */
	Oid			user;			/* role the model was fetched for */
	char	   *model_name;
	MtmsServing serving;		/* active version, experiment's candidate */
	char	   *scene_name;		/* last scene looked up */
	int			scene;
	float	   *scratch;
	Size		scratch_len;
	MtmsFeature *feats;
	int			feat_cap;
} ScoreCallCache;

static int
check_task(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len == 3 && memcmp(s, "ctr", 3) == 0)
		return MTMS_TASK_CTR;
	if (len == 3 && memcmp(s, "cvr", 3) == 0)
		return MTMS_TASK_CVR;
	if (len == 5 && memcmp(s, "ctcvr", 5) == 0)
		return TASK_CTCVR;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown task \"%s\"", text_to_cstring(t)),
			 errhint("Valid tasks are 'ctr', 'cvr' and 'ctcvr'.")));
	return -1;
}

static void
check_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of mtms_score must not be NULL", name)));
}

/* Scratch for the larger of the serving versions. */
static void
ensure_scratch(ScoreCallCache *cc, MemoryContext cxt, const MtmsModel *m)
{
	if (m == NULL || cc->scratch_len >= mtms_model_scratch_size(m))
		return;
	if (cc->scratch)
		pfree(cc->scratch);
	cc->scratch_len = mtms_model_scratch_size(m);
	cc->scratch = MemoryContextAllocExtended(cxt, sizeof(float) * cc->scratch_len,
											 MCXT_ALLOC_HUGE);
}

/*
 * The serving state, cached per call site until the catalog changes.  The
 * model cache returns one state per query (model_cache.h), so a refresh in
 * the middle of a query hands back the same models.
 */
static ScoreCallCache *
call_cache(FunctionCallInfo fcinfo, const char *model_name)
{
	ScoreCallCache *cc = (ScoreCallCache *) fcinfo->flinfo->fn_extra;
	MtmsServing sv;

	if (cc == NULL)
	{
		cc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ScoreCallCache));
		fcinfo->flinfo->fn_extra = cc;
	}
	if (cc->serving.active != NULL && cc->generation == mtms_cache_generation() &&
		cc->user == GetUserId() && strcmp(cc->model_name, model_name) == 0)
		return cc;

	mtms_cache_get_serving(model_name, &sv);
	cc->generation = sv.generation;
	cc->user = GetUserId();
	if (cc->model_name == NULL || strcmp(cc->model_name, model_name) != 0)
	{
		if (cc->model_name)
			pfree(cc->model_name);
		cc->model_name = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, model_name);
	}
	else if (memcmp(&sv, &cc->serving, offsetof(MtmsServing, generation)) == 0)
		return cc;				/* the same state: keep the scene */
	cc->serving = sv;
	if (cc->scene_name)
		pfree(cc->scene_name);
	cc->scene_name = NULL;
	ensure_scratch(cc, fcinfo->flinfo->fn_mcxt, sv.active);
	ensure_scratch(cc, fcinfo->flinfo->fn_mcxt, sv.candidate);
	return cc;
}

/* The scene argument as an index of the model (both versions share it). */
static int
call_scene(FunctionCallInfo fcinfo, ScoreCallCache *cc, int argno, const char *model_name)
{
	text	   *scene_t = PG_GETARG_TEXT_PP(argno);

	if (cc->scene_name == NULL ||
		strlen(cc->scene_name) != VARSIZE_ANY_EXHDR(scene_t) ||
		memcmp(cc->scene_name, VARDATA_ANY(scene_t), VARSIZE_ANY_EXHDR(scene_t)) != 0)
	{
		char	   *sc = text_to_cstring(scene_t);
		int			s = mtms_model_scene(cc->serving.active, sc, strlen(sc));

		if (s < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scene \"%s\" is not a scene of model \"%s\"", sc, model_name),
					 errhint("The model's scenes are: %s.", mtms_scene_list(cc->serving.meta))));
		if (cc->scene_name)
			pfree(cc->scene_name);
		cc->scene_name = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, sc);
		cc->scene = s;
	}
	return cc->scene;
}

/*
 * key_arg: the argument holding the request key, or -1 (no key: the
 * active version).  A key goes to the experiment's candidate when its
 * hash falls below the share (experiment.h).
 */
static double
score_common(FunctionCallInfo fcinfo, const char *model_name, int first,
			 bool reference, int key_arg)
{
	ScoreCallCache *cc;
	int			scene;
	int			task;
	int			nfeats;
	const MtmsModel *m;
	MtmsScorer *scorer;

	check_arg(fcinfo, first, "scene");
	check_arg(fcinfo, first + 1, "task");
	check_arg(fcinfo, first + 2, "features");

	cc = call_cache(fcinfo, model_name);
	m = cc->serving.active;
	scorer = cc->serving.active_scorer;
	scene = call_scene(fcinfo, cc, first, model_name);
	task = check_task(PG_GETARG_TEXT_PP(first + 1));

	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		nfeats = mtms_parse_features(PG_GETARG_ARRAYTYPE_P(first + 2), m->nfields,
									 m->fields, &cc->feats, &cc->feat_cap, NULL);
		MemoryContextSwitchTo(old);
	}

	if (key_arg >= 0 && !PG_ARGISNULL(key_arg) && cc->serving.candidate != NULL)
	{
		text	   *key = PG_GETARG_TEXT_PP(key_arg);

		if (mtms_experiment_routes_candidate(cc->serving.meta, VARDATA_ANY(key),
											 VARSIZE_ANY_EXHDR(key)))
		{
			m = cc->serving.candidate;
			scorer = cc->serving.candidate_scorer;
		}
	}

	if (reference)
	{
		if (task == TASK_CTCVR)
			return mtms_model_predict(m, scene, MTMS_TASK_CTR, cc->feats, nfeats, cc->scratch) *
				mtms_model_predict(m, scene, MTMS_TASK_CVR, cc->feats, nfeats, cc->scratch);
		return mtms_model_predict(m, scene, task, cc->feats, nfeats, cc->scratch);
	}
	if (task == TASK_CTCVR)
		return mtms_scorer_predict(scorer, scene, MTMS_TASK_CTR, cc->feats, nfeats) *
			mtms_scorer_predict(scorer, scene, MTMS_TASK_CVR, cc->feats, nfeats);
	return mtms_scorer_predict(scorer, scene, task, cc->feats, nfeats);
}

/* mtms_score(model text, scene text, task text, features text[]) */
Datum
mtms_score(PG_FUNCTION_ARGS)
{
	char	   *model;

	check_arg(fcinfo, 0, "model");
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PG_RETURN_FLOAT8(score_common(fcinfo, model, 1, false, -1));
}

/* mtms_score(scene text, task text, features text[]): mtms.model or the only model */
Datum
mtms_score_default(PG_FUNCTION_ARGS)
{
	/* argument errors first: they do not depend on which model */
	check_arg(fcinfo, 0, "scene");
	check_arg(fcinfo, 1, "task");
	check_arg(fcinfo, 2, "features");
	PG_RETURN_FLOAT8(score_common(fcinfo, mtms_cache_default_model(), 0, false, -1));
}

/*
 * mtms_score(model text, scene text, task text, features text[],
 * request_key text): the version serving the key (NULL: the active one).
 */
Datum
mtms_score_keyed(PG_FUNCTION_ARGS)
{
	char	   *model;

	check_arg(fcinfo, 0, "model");
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PG_RETURN_FLOAT8(score_common(fcinfo, model, 1, false, 4));
}

/*
 * mtms_score_reference(model text, scene text, task text, features text[]):
 * the same score computed directly (joined input, then the whole tower),
 * without the projection cache: what the cached path must equal.
 */
Datum
mtms_score_reference(PG_FUNCTION_ARGS)
{
	char	   *model;

	check_arg(fcinfo, 0, "model");
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PG_RETURN_FLOAT8(score_common(fcinfo, model, 1, true, -1));
}

/*
 * mtms_score_cache_stats(model text): this backend's projection cache of
 * the model's active version (loading the model if needed).
 */
Datum
mtms_score_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	td;
	const MtmsModelMeta *meta;
	const MtmsModel *m;
	MtmsScorer *sc;
	MtmsScorerStats st;
	Datum		values[6];
	bool		nulls[6] = {0};

	check_arg(fcinfo, 0, "model");
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	sc = mtms_cache_get_scorer(text_to_cstring(PG_GETARG_TEXT_PP(0)), &meta, &m);
	mtms_scorer_stats(sc, &st);
	values[0] = Int64GetDatum(st.keys);
	values[1] = Int64GetDatum(st.zero_keys);
	values[2] = Int64GetDatum(st.bytes);
	values[3] = Int64GetDatum(st.cap_bytes);
	values[4] = Int64GetDatum(st.computed);
	values[5] = Int64GetDatum(st.uncached);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}
