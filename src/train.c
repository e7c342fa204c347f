/*
 * train.c
 *    mtms_train(): the driver of the two MTMS training phases.
 *
 * It locks the model, checks the sample relation, starts from the model's
 * active version (or a fresh model), and runs the stages one epoch at a
 * time, each epoch one aggregate query over the samples (so PostgreSQL may
 * run it as a parallel plan):
 *
 *   embedding  every selected (scene, task) pair on its own rows, each pair
 *              stopping early on its own validation loss;
 *   ctcvr      per selected scene, L_ctr + L_cvr + L_ctcvr on its phase-1
 *              sub-models, stopping on the validation sum of the three;
 *   finetune   every scene's towers on the joined frozen embeddings,
 *              stopping per scene on the same sum.
 *
 * Every unit keeps the parameters of its best validation epoch.  The result
 * is written as a new version in the caller's transaction, so an error or a
 * cancel leaves the previous version active and untouched.
 */
#include "mtms.h"

#include <math.h>

#include "blas.h"
#include "catalog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "feature_hygiene.h"
#include "funcapi.h"
#include "kept_rows.h"
#include "miscadmin.h"
#include "model_store.h"
#include "progress.h"
#include "optimizer/cost.h"
#include "samples.h"
#include "train_driver.h"
#include "train_memory.h"
#include "train_refit.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* ---------------------------------------------------------------------
 * Argument checks
 * --------------------------------------------------------------------- */

static void
check_not_null(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of mtms_train must not be NULL", name)));
}

static void
check_phases(const char *phases, bool *embedding, bool *finetune)
{
	*embedding = *finetune = false;
	if (strcmp(phases, "all") == 0)
		*embedding = *finetune = true;
	else if (strcmp(phases, "embedding") == 0)
		*embedding = true;
	else if (strcmp(phases, "finetune") == 0)
		*finetune = true;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phases \"%s\"", phases),
				 errhint("Valid values are 'all', 'embedding' and 'finetune'.")));
}

/* ---------------------------------------------------------------------
 * Committing a version
 * --------------------------------------------------------------------- */

/*
 * Which towers score a pair after this training: "finetune" (its fine-tuned
 * tower), "phase1" (the fine-tune kept its start, the phase-1 tower, on a
 * pair's first fine-tune), "previous" (it kept the previous version's
 * fine-tune tower), "refit" (the refit option: the separate sub-model);
 * NULL when this training ran no fine-tune.
 */
static const char *
pair_scoring(const MtmsTrainCtx *cx, int s, int t)
{
	int			p = MTMS_PAIR(s, t);
	int			kept;

	if (mtms_refit_kept(cx, p))
		return "refit";
	kept = mtms_history_kept(cx->history, &mtms_stage_finetune_info, s);
	if (kept < 0)
		return NULL;
	if (kept > 0 || mtms_refit_finetuned_again(cx, s))
		return "finetune";
	return cx->meta->active_version > 0 && p < cx->stored_npairs ? "previous" : "phase1";
}

/* , "scoring": ... for metric slot t of scene s, when the fine-tune ran */
static void
append_scoring(StringInfo buf, const MtmsTrainCtx *cx, int s, int t)
{
	const char *how;

	if (t == MTMS_M_CTCVR)
		return;
	how = pair_scoring(cx, s, t == MTMS_M_CTR ? MTMS_TASK_CTR : MTMS_TASK_CVR);
	if (how)
		appendStringInfo(buf, ", \"scoring\": \"%s\"", how);
}

static Jsonb *
metrics_jsonb(MtmsTrainCtx *cx)
{
	StringInfoData buf;
	bool		first_scene = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int s = 0; s < cx->model->nscenes; s++)
	{
		bool		first = true;

		for (int t = 0; t < MTMS_NMETRICS; t++)
		{
			int			slot = s * MTMS_NMETRICS + t;
			static const char *names[] = {"ctr", "cvr", "ctcvr"};

			if (isnan(cx->metric_loss[slot]) && isnan(cx->metric_auc[slot]))
				continue;
			if (first)
			{
				if (!first_scene)
					appendStringInfoString(&buf, ", ");
				escape_json(&buf, cx->model->scenes[s]);
				appendStringInfoString(&buf, ": {");
				first = false;
				first_scene = false;
			}
			else
				appendStringInfoString(&buf, ", ");
			appendStringInfo(&buf, "\"%s\": {\"valid_loss\": ", names[t]);
			if (isnan(cx->metric_loss[slot]))
				appendStringInfoString(&buf, "null");
			else
				appendStringInfo(&buf, "%.6f", cx->metric_loss[slot]);
			appendStringInfoString(&buf, ", \"valid_auc\": ");
			if (isnan(cx->metric_auc[slot]))
				appendStringInfoString(&buf, "null");
			else
				appendStringInfo(&buf, "%.6f", cx->metric_auc[slot]);
			append_scoring(&buf, cx, s, t);
			appendStringInfoChar(&buf, '}');
		}
		if (!first)
			appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

static int32
commit_version(MtmsTrainCtx *cx, const char *relname_plain)
{
	MtmsModelMeta *meta = cx->meta;
	Oid			types[8] = {INT4OID, INT4OID, TEXTOID, INT8OID, TEXTARRAYOID,
		TEXTARRAYOID, BOOLOID, JSONBOID};
	Datum		args[8];
	Datum	   *sd;
	Datum	   *fd;
	int32		version;
	bool		isnull;
	Oid			t1[1] = {INT4OID};
	Datum		a1[1];
	MtmsCatalogScope scope;
	TimestampTz start = GetCurrentTimestamp();
	int64		rows = 0;
	int64		tower_params = 0;

	/* the caller may train the model (checked at the start): write as mtms */
	mtms_catalog_scope_begin(&scope, true);
	a1[0] = Int32GetDatum(meta->model_id);
	if (SPI_execute_with_args(psprintf("SELECT COALESCE(max(version), 0) + 1 FROM %s.mtms_version "
									   "WHERE model_id = $1", cx->schema),
							  1, t1, a1, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not number the new version");
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	sd = palloc(sizeof(Datum) * cx->model->nscenes);
	for (int s = 0; s < cx->model->nscenes; s++)
		sd[s] = CStringGetTextDatum(cx->model->scenes[s]);
	fd = palloc(sizeof(Datum) * cx->model->nfields);
	for (int f = 0; f < cx->model->nfields; f++)
		fd[f] = CStringGetTextDatum(cx->model->fields[f]);

	args[0] = Int32GetDatum(meta->model_id);
	args[1] = Int32GetDatum(version);
	args[2] = CStringGetTextDatum(relname_plain);
	args[3] = Int64GetDatum(cx->samples);
	args[4] = PointerGetDatum(construct_array(sd, cx->model->nscenes, TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_array(fd, cx->model->nfields, TEXTOID, -1, false, TYPALIGN_INT));
	args[6] = BoolGetDatum(mtms_model_has_finetune(cx->model));
	args[7] = JsonbPGetDatum(metrics_jsonb(cx));
	if (SPI_execute_with_args(psprintf("INSERT INTO %s.mtms_version (model_id, version, samples_relation, "
									   "samples, scenes, fields, has_finetune, metrics) "
									   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", cx->schema),
							  8, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the new version");

	mtms_model_save(meta, cx->model, version);
	mtms_history_write(cx->history, cx->model, cx->schema, meta->model_id, version);
	for (int p = 0; p < cx->model->npairs; p++)
	{
		rows += mtms_emb_count(cx->model->emb[p]);
		tower_params += cx->model->tower1[p]->nparams +
			(cx->model->tower2[p] ? cx->model->tower2[p]->nparams : 0);
	}
	ereport(NOTICE,
			(errmsg("mtms_train: version %d written: %lld embedding rows, %.1f MB of tower parameters, %.2f s",
					version, (long long) rows, (double) tower_params * sizeof(float) / (1024 * 1024),
					(double) (GetCurrentTimestamp() - start) / 1e6)));

	if (SPI_execute_with_args(psprintf("UPDATE %s.mtms_model SET active_version = $2 WHERE model_id = $1",
									   cx->schema),
							  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not activate the new version");

	/*
	 * Keep the newest keep_versions versions (and the active one), and an
	 * experiment's candidate, which keeps serving its share of keys: the
	 * experiment outlives a new training (its control becomes the new
	 * version).
	 */
	{
		Oid			t3[3] = {INT4OID, INT4OID, INT4OID};
		Datum		a3[3];

		a3[0] = Int32GetDatum(meta->model_id);
		a3[1] = Int32GetDatum(version);
		a3[2] = Int32GetDatum(meta->opts.keep_versions);
		if (SPI_execute_with_args(psprintf("DELETE FROM %s.mtms_version WHERE model_id = $1 "
										   "AND version <> $2 AND version NOT IN "
										   "(SELECT version FROM %s.mtms_version WHERE model_id = $1 "
										   "ORDER BY version DESC LIMIT $3)%s",
										   cx->schema, cx->schema,
										   mtms_catalog_has_experiments() ?
										   psprintf(" AND version NOT IN (SELECT version FROM %s.mtms_experiment"
													" WHERE model_id = $1)", cx->schema) : ""),
								  3, t3, a3, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not prune old versions");
	}
	mtms_catalog_scope_end(&scope);
	mtms_catalog_changed();
	return version;
}

/* ---------------------------------------------------------------------
 * mtms_train(model text, samples regclass, scenes text[], phases text)
 * --------------------------------------------------------------------- */

/* The scenes argument: NULL for all; else named scenes of the model. */
static bool *
check_scenes(FunctionCallInfo fcinfo, int argno, const MtmsModelMeta *meta)
{
	bool	   *selected = palloc0(sizeof(bool) * meta->nscenes);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (PG_ARGISNULL(argno))
	{
		for (int s = 0; s < meta->nscenes; s++)
			selected[s] = true;
		return selected;
	}
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scenes must not be empty"),
				 errhint("Pass NULL to train every scene.")));
	for (int i = 0; i < n; i++)
	{
		char	   *sc;
		int			s;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("scenes must not contain NULL")));
		sc = TextDatumGetCString(elems[i]);
		s = mtms_scene_index(meta, sc);
		if (s < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scene \"%s\" is not a scene of model \"%s\"", sc, meta->name),
					 errhint("The model's scenes are: %s.", mtms_scene_list(meta))));
		selected[s] = true;
	}
	return selected;
}

/*
 * The model training starts from: the active version, grown to the
 * model's scenes and fields, or a fresh one.  Fields added since the
 * stored version: the pairs that existed keep what they know and learn
 * only the new fields (their rows and their tower columns), so they start
 * from, and are validated against, exactly the previous model.
 */
static void
start_model(MtmsTrainCtx *cx, bool do_embedding)
{
	if (cx->meta->active_version > 0)
	{
		cx->model = mtms_model_load(cx->meta, cx->meta->active_version);
		cx->stored_npairs = cx->model->stored_npairs;
		if (cx->model->stored_nfields < cx->model->nfields)
		{
			cx->frozen_fields = palloc0(sizeof(int32) * cx->model->npairs);
			for (int p = 0; p < cx->model->stored_npairs; p++)
				cx->frozen_fields[p] = cx->model->stored_nfields;
		}
	}
	else if (!do_embedding)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no trained embeddings to fine-tune", cx->meta->name),
				 errhint("Run mtms_train with phases => 'embedding' or 'all' first.")));
	else
		cx->model = mtms_model_create(cx->meta);
	cx->hygiene = mtms_hygiene_begin(cx->meta, cx->model, cx->meta->active_version);
}

/* A window's kept rows, once no stage will read them again. */
static void
release_window(MtmsTrainCtx *cx, int w)
{
	MtmsKeptWindow *kw = &cx->kept[w];

	if (kw->store)
		pfree(kw->store);
	if (kw->cxt)
		MemoryContextReset(kw->cxt);
	kw->store = NULL;
	kw->rows = NULL;
	kw->ahead = false;
}

/* The kept rows are done with once the stages are: room for the write. */
static void
release_rows(MtmsTrainCtx *cx)
{
	for (int w = 0; w < lengthof(cx->kept); w++)
		release_window(cx, w);
	if (cx->valid_store)
		pfree(cx->valid_store);
	cx->valid_store = NULL;
	mtms_return_freed_memory();
}

/*
 * Each scene's share of rows that phase 1 leaves to the fine-tune:
 * finetune_fraction, capped at about finetune_rows rows of the scene, so
 * that a large scene keeps nearly all its rows for its own sub-models
 * while a small one still gives the fine-tune enough to learn from.
 */
void
mtms_plan_finetune_share(MtmsTrainCtx *cx)
{
	const MtmsOptions *o = &cx->meta->opts;
	int			nscenes = cx->model->nscenes;
	int64	   *rows = NULL;
	StringInfoData capped;

	cx->ft_share = palloc(sizeof(double) * nscenes);
	if (o->finetune_fraction > 0 && (o->finetune_rows > 0 || o->refit))
		rows = mtms_samples_scene_rows(cx->relname, cx->model);
	cx->scene_rows = rows;
	initStringInfo(&capped);
	for (int s = 0; s < nscenes; s++)
	{
		double		share = o->finetune_fraction;

		if (rows && rows[s] > 0 && o->finetune_rows > 0 &&
			(double) o->finetune_rows < share * rows[s])
		{
			share = (double) o->finetune_rows / rows[s];
			appendStringInfo(&capped, "%s%s %.1f%%", capped.len ? ", " : "",
							 cx->model->scenes[s], 100 * share);
		}
		cx->ft_share[s] = share;
	}
	if (capped.len > 0)
		ereport(NOTICE,
				(errmsg("mtms_train: fine-tune hold-out capped at finetune_rows = %lld rows: %s",
						(long long) o->finetune_rows, capped.data)));
	pfree(capped.data);
}

/* The stages, then the new version. */
static void
train_and_commit(MtmsTrainCtx *cx, const bool *selected, bool do_embedding,
				 bool do_finetune, const char *relname_plain)
{
	bool	   *all = palloc(sizeof(bool) * cx->model->nscenes);
	int			guard;
	int32		version;

	for (int s = 0; s < cx->model->nscenes; s++)
		all[s] = true;
	SPI_connect();
	guard = mtms_guard_search_path();
	MemoryContextSwitchTo(cx->cxt);
	if (cx->meta->opts.cluster[0] != '\0')
		mtms_train_on_nodes(cx, selected, do_embedding, do_finetune);
	else
	{
		mtms_plan_finetune_share(cx);
		if (do_embedding && do_finetune)
			mtms_refit_plan(cx, selected);
		/*
		 * phase 1's scan keeps the fine-tune's rows too (when it reads every
		 * scene: train_pass.c)
		 */
		cx->collect_ahead = do_embedding && do_finetune && mtms_read_windows_once;
		if (do_embedding)
		{
			MtmsStage	phase1[] = {MTMS_STAGE_EMBEDDING, MTMS_STAGE_CTCVR};

			mtms_train_stages(cx, phase1, cx->meta->opts.ctcvr ? 2 : 1, selected);
		}
		if (do_finetune)
		{
			release_window(cx, 0);	/* phase 1's rows; fine-tune towers come per unit */
			if (cx->refit)
				mtms_refit_finetune(cx, all);
			else
				mtms_train_stage(cx, MTMS_STAGE_FINETUNE, all);
		}
	}
	release_rows(cx);
	mtms_progress_stage("writing", 0, -1, -1, 0);
	mtms_progress_pause();
	if (cx->bad_conversions > 0)
		ereport(NOTICE,
				(errmsg("mtms_train: %lld samples have a conversion without a click; their conversion was ignored",
						(long long) cx->bad_conversions)));
	mtms_hygiene_finish(cx->hygiene, cx->model);
	version = commit_version(cx, relname_plain);
	mtms_hygiene_save(cx->hygiene, cx->meta, cx->model, version);
	mtms_unguard_search_path(guard);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(mtms_train);
Datum
mtms_train(PG_FUNCTION_ARGS)
{
	MtmsTrainCtx cx;
	char	   *name;
	Oid			relid;
	char	   *phases;
	bool		do_embedding;
	bool		do_finetune;
	bool	   *selected;
	char	   *relname_plain;
	bool		progress;
	MemoryContext old;

	check_not_null(fcinfo, 0, "model");
	check_not_null(fcinfo, 1, "samples");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	relid = PG_GETARG_OID(1);
	phases = PG_ARGISNULL(3) ? pstrdup("all") : text_to_cstring(PG_GETARG_TEXT_PP(3));
	check_phases(phases, &do_embedding, &do_finetune);

	InitMaterializedSRF(fcinfo, 0);
	memset(&cx, 0, sizeof(cx));
	cx.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	cx.cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms_train",
								   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cx.cxt);

	/* the model, locked against concurrent training and lifecycle changes */
	cx.meta = mtms_model_lookup_for_change(name, MTMS_PRIV_TRAIN);
	progress = mtms_progress_begin("train", name);
	cx.relname = mtms_samples_check(relid);
	relname_plain = get_rel_name(relid);
	cx.schema = mtms_schema_quoted();
	selected = check_scenes(fcinfo, 2, cx.meta);
	cx.metric_loss = palloc(sizeof(double) * cx.meta->nscenes * MTMS_NMETRICS);
	cx.metric_auc = palloc(sizeof(double) * cx.meta->nscenes * MTMS_NMETRICS);
	for (int i = 0; i < cx.meta->nscenes * MTMS_NMETRICS; i++)
		cx.metric_loss[i] = cx.metric_auc[i] = NAN;
	cx.history = mtms_history_create();
	start_model(&cx, do_embedding);

	/* what runs the dense products: a user compares speeds by this */
	ereport(NOTICE,
			(errmsg("mtms_train: model \"%s\" on %s, %s", name, relname_plain,
					mtms_blas_summary())));
	train_and_commit(&cx, selected, do_embedding, do_finetune, relname_plain);
	if (progress)
		mtms_progress_end();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cx.cxt);
	return (Datum) 0;
}
