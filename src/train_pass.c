/*
 * train_pass.c
 *    One pass of the stage's aggregate query over the samples: which rows
 *    train, whether the planned memory fits, serial or as a parallel plan
 *    whose workers start from a snapshot file.  Two kinds: the collecting
 *    pass that parses a window's rows once into memory for the unit jobs
 *    (train_units.c), and, when they do not fit or are not to be kept
 *    (mtms.keep_training_rows), the training passes of the scanning
 *    fallback (train_stage.c).
 */
#include "train_driver.h"
#include "progress.h"
#include "train_memory.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* serialized training states are single values: stay well below 1 GB */
#define MAX_PARALLEL_MODEL_BYTES ((Size) 600 * 1024 * 1024)

/* Scenes with an active unit, palloc'd. */
static bool *
active_scenes(MtmsTrainCtx *cx, const MtmsStageInfo *si, const bool *active)
{
	bool	   *scenes = palloc0(sizeof(bool) * cx->model->nscenes);

	for (int u = 0; u < mtms_stage_nunits(si, cx->model->nscenes); u++)
		if (active[u])
			scenes[mtms_unit_scene(si, u)] = true;
	return scenes;
}

/* Memory of the training rows kept so far. */
static double
kept_bytes(MtmsTrainCtx *cx)
{
	double		bytes = 0;

	for (int w = 0; w < lengthof(cx->kept); w++)
		if (cx->kept[w].cxt)
			bytes += (double) MemoryContextMemAllocated(cx->kept[w].cxt, true);
	return bytes;
}

static void
check_pass_result(MtmsTrainCtx *cx, const MtmsTrainState *res, bool trains_nothing)
{
	if (res == NULL || res->rows_in == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no rows", cx->relname)));
	if (res->rows_trained == 0 && !trains_nothing)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no training rows for the scenes being trained",
						cx->relname),
				 errhint("Check the scene column, or lower validation_fraction.")));
}

/*
 * Which rows of scene s window w trains on: lo <= u < hi (u: the row's
 * hash, train_aggregate.c; below validation_fraction validates).
 */
static void
window_bounds(const MtmsTrainCtx *cx, int w, int s, double *lo, double *hi)
{
	double		vf = cx->meta->opts.validation_fraction;
	double		ff = cx->ft_share[s];

	*lo = w == 0 ? vf + ff : vf;
	*hi = w == 1 && ff > 0 ? vf + ff : 1.0;
}

/*
 * The base state of a pass: the model as it stands, the active units and
 * which rows train.  The fine-tune must learn how the frozen embeddings
 * behave on rows they were not trained on (on their own training rows the
 * embeddings have memorized the labels, and a tower fitted there overfits
 * at once), so phase 1 always leaves a scene's fine-tune share of its rows
 * (cx->ft_share) to phase 2, whether the phases run in one call or in two
 * calls on the same samples.
 */
static MtmsTrainState *
pass_base(MtmsTrainCtx *cx, const MtmsStageInfo *si, int epoch, const bool *active)
{
	MtmsTrainState *base = mtms_state_create(cx->model, &cx->meta->opts, si->stage, epoch,
											 active, cx->valid);
	double		widest = 0;

	if (cx->frozen_fields && si->trains_embeddings)
	{
		MemoryContext old = MemoryContextSwitchTo(base->cxt);

		base->frozen_fields = palloc(sizeof(int32) * cx->model->npairs);
		memcpy(base->frozen_fields, cx->frozen_fields, sizeof(int32) * cx->model->npairs);
		MemoryContextSwitchTo(old);
	}
	for (int s = 0; s < cx->model->nscenes; s++)
	{
		window_bounds(cx, si->window, s, &base->train_lo[s], &base->train_hi[s]);
		widest = Max(widest, base->train_hi[s] - base->train_lo[s]);
	}
	base->expected_rows = (int64) (cx->samples * widest);
	return base;
}

/*
 * Refuse a pass whose planned memory is over mtms.max_memory: the driver's
 * model, the best epoch's snapshots (at most one more model), one model
 * copy per participant of the pass, their shuffle buffers and the
 * validation rows; a collecting pass trains nothing: the model and the
 * validation rows (the kept rows have their own limit, plan_keep_rows).
 */
static void
check_pass_memory(MtmsTrainCtx *cx, bool collecting)
{
	int			participants = collecting ? 0 : 1 + Max(max_parallel_workers_per_gather, 0);
	Size		model = mtms_model_bytes(cx->model);
	Size		rows = (Size) cx->meta->opts.shuffle_buffer * 160;
	Size		valid = cx->valid ? (Size) cx->valid->nrows * 160 : 0;
	double		est = (double) model * (collecting ? 1 : 2 + participants) +
		(double) rows * participants + valid;

	if (est > (double) mtms_max_memory_mb * 1024 * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms_train would need about %.0f MB, more than mtms.max_memory (%d MB)",
						est / (1024 * 1024), mtms_max_memory_mb),
				 errdetail("The model holds %.0f MB of parameters and optimizer state; %d processes train it.",
						   (double) model / (1024 * 1024), participants),
				 errhint("Raise mtms.max_memory, lower max_parallel_workers_per_gather, or cap the embedding tables with the max_features option.")));
}

/*
 * A collecting pass runs serially and keeps the window's training rows,
 * within what mtms.max_memory leaves for them (train_memory.c); a window
 * whose rows do not fit trains by scanning every pass.  Returns whether
 * this pass may keep rows.
 */
static bool
plan_keep_rows(MtmsTrainCtx *cx, MtmsTrainState *base, const MtmsStageInfo *si)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	Size		room;

	if (kw->rows != NULL || kw->failed || !mtms_keep_training_rows)
		return false;
	room = mtms_rows_room(cx->model, si, kept_bytes(cx));
	if (room == 0)
		return false;
	base->train_limit = room;
	if (kw->cxt == NULL)
		kw->cxt = AllocSetContextCreate(cx->cxt, "mtms kept training rows",
										ALLOCSET_DEFAULT_SIZES);
	base->collect_train = true;
	base->train_cxt = kw->cxt;
	return true;
}

/* The pass as the stage's aggregate query over the samples. */
static MtmsTrainState *
run_query(MtmsTrainCtx *cx, MtmsTrainState *base, const MtmsStageInfo *si, bool parallel)
{
	MtmsTrainState *res;
	char	   *token;
	char	   *sql;
	int			guc_level;
	int			rc;

	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	/* no workers, no partial states to combine: train the model in place */
	base->train_in_place = !parallel;
	token = mtms_state_publish(base, parallel);
	sql = psprintf("SELECT %s.%s(%s, scene::text, features, click, conversion) FROM %s",
				   cx->schema, si->aggregate, quote_literal_cstr(token), cx->relname);
	MemoryContextSwitchTo(old);

	/*
	 * Like a function's SET clause, undone right after the query.  A scan
	 * of a large table joins the place where the last scan of it left off
	 * (synchronize_seqscans): the rows would come in another order each
	 * time, and the model would depend on it.
	 */
	guc_level = NewGUCNestLevel();
	(void) set_config_option("synchronize_seqscans", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	/* partial states per partition would be combined: kept rows do not combine */
	(void) set_config_option("enable_partitionwise_aggregate", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (!parallel && max_parallel_workers_per_gather > 0)
		(void) set_config_option("max_parallel_workers_per_gather", "0",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	rc = SPI_execute(sql, true, 0);
	AtEOXact_GUC(true, guc_level);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "mtms_train: training query failed: %s", SPI_result_code_string(rc));
	res = mtms_state_take_result(token);
	mtms_state_unpublish();
	return res;
}

/*
 * Phase 1's collecting pass keeps the fine-tune's rows too when the same
 * call fine-tunes all scenes (cx->collect_ahead): one scan and one parse
 * of the samples instead of two.  The rows are the ones the fine-tune's
 * own pass would keep, in the same order.
 */
static void
plan_ahead(MtmsTrainCtx *cx, MtmsTrainState *base, const MtmsStageInfo *si)
{
	MtmsKeptWindow *ahead = &cx->kept[1];
	const MtmsStageInfo *next = mtms_stage_info(MTMS_STAGE_FINETUNE);
	MemoryContext old;
	bool		any = false;

	if (!cx->collect_ahead || si->window != 0 || next->window != 1 ||
		ahead->rows != NULL || ahead->store != NULL || ahead->failed ||
		mtms_rows_room(cx->model, next, 0) == 0)
		return;
	for (int s = 0; s < cx->model->nscenes; s++)
	{
		/* the fine-tune trains every scene: so must this pass */
		if (!mtms_state_scene_active(base, s))
			return;
		any |= cx->ft_share[s] > 0;
	}
	if (!any)
		return;					/* no share: both windows are the same rows */
	if (ahead->cxt == NULL)
		ahead->cxt = AllocSetContextCreate(cx->cxt, "mtms kept training rows",
										   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(base->cxt);
	base->ahead_lo = palloc(sizeof(double) * cx->model->nscenes);
	base->ahead_hi = palloc(sizeof(double) * cx->model->nscenes);
	for (int s = 0; s < cx->model->nscenes; s++)
		window_bounds(cx, 1, s, &base->ahead_lo[s], &base->ahead_hi[s]);
	MemoryContextSwitchTo(old);
	base->ahead_cxt = ahead->cxt;
	base->ahead_limit = mtms_rows_room(cx->model, next, 0);
}

/*
 * Adopt the next window's rows kept by the same pass, if they all fit and
 * this window's did too.
 */
static void
adopt_ahead_rows(MtmsTrainCtx *cx, MtmsTrainState *res)
{
	MtmsKeptWindow *kw = &cx->kept[1];
	const bool *scenes = cx->kept[0].scenes;
	MemoryContext old;

	if (res == NULL || kw->cxt == NULL || kw->rows != NULL)
		return;
	if (res->ahead_lo == NULL || res->ahead_rows == NULL || cx->kept[0].rows == NULL)
	{
		MemoryContextReset(kw->cxt);	/* its own pass keeps them */
		return;
	}
	old = MemoryContextSwitchTo(cx->cxt);
	kw->scenes = palloc(sizeof(bool) * cx->model->nscenes);
	memcpy(kw->scenes, scenes, sizeof(bool) * cx->model->nscenes);
	MemoryContextSwitchTo(kw->cxt);
	kw->rows = res->ahead_rows;
	res->ahead_rows = NULL;
	kw->measured = res->ahead_measured;
	mtms_kept_rows_finish(kw->rows);
	kw->ahead = true;
	MemoryContextSwitchTo(old);
}

/*
 * Rows a window kept ahead, in a pass before this stage's, must fit the
 * room this stage leaves them now that the model has grown, measured as
 * the stage's own collecting pass would have measured them (the size at
 * their last 4096th row, before mtms_kept_rows_finish trimmed them): so
 * the stage keeps or drops them as that pass would, and trains the same
 * model.  If they do not fit, they go and the stage collects (or scans)
 * as usual.
 */
void
mtms_check_ahead_rows(MtmsTrainCtx *cx, const MtmsStageInfo *si)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	Size		mine;
	Size		room;

	if (!kw->ahead || kw->rows == NULL)
		return;
	mine = MemoryContextMemAllocated(kw->cxt, true);
	room = mtms_rows_room(cx->model, si, (Size) (kept_bytes(cx) - (double) mine));
	if (room > 0 && kw->measured <= room)
		return;
	elog(DEBUG1, "mtms_train: the %s rows kept ahead (%zu bytes) leave the room (%zu bytes): read again",
		 si->name, kw->measured, room);
	MemoryContextReset(kw->cxt);
	kw->rows = NULL;
	kw->ahead = false;
}

/* Adopt the rows a keeping pass kept (or note that they did not fit). */
static void
adopt_kept_rows(MtmsTrainCtx *cx, MtmsTrainState *res, const MtmsStageInfo *si,
				const bool *active)
{
	MtmsKeptWindow *kw = &cx->kept[si->window];
	MemoryContext old;

	if (res == NULL || !res->collect_train || res->train_rows == NULL)
	{
		kw->failed = true;		/* too many rows to keep (or none): scan */
		return;
	}
	/* kw->scenes outlives the rows: window_store() resets kw->cxt */
	old = MemoryContextSwitchTo(cx->cxt);
	kw->scenes = active_scenes(cx, si, active);
	MemoryContextSwitchTo(kw->cxt);
	kw->rows = res->train_rows; /* allocated in kw->cxt */
	res->train_rows = NULL;
	mtms_kept_rows_finish(kw->rows);
	elog(DEBUG1, "mtms_train: %s keeps %lld training rows in %.1f MB",
		 si->name, (long long) mtms_kept_rows_count(kw->rows),
		 kept_bytes(cx) / (1024.0 * 1024.0));
	MemoryContextSwitchTo(old);
}

MtmsTrainState *
mtms_run_pass(MtmsTrainCtx *cx, MtmsStage stage, int epoch, const bool *active)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);
	bool		trains = false;
	bool		parallel;
	MtmsTrainState *base;
	MtmsTrainState *res;
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	/* a pass with no active unit only reads the validation rows */
	for (int u = 0; u < mtms_stage_nunits(si, cx->model->nscenes); u++)
		if (active[u])
			trains = true;
	base = pass_base(cx, si, epoch, active);
	check_pass_memory(cx, false);

	/*
	 * Parallel workers start from a snapshot file; a model whose snapshot
	 * would pass the 1 GB limit of one value trains serially.
	 */
	parallel = max_parallel_workers_per_gather > 0 &&
		mtms_model_bytes(cx->model) < MAX_PARALLEL_MODEL_BYTES;
	MemoryContextSwitchTo(old);
	res = run_query(cx, base, si, parallel);
	mtms_state_free(base);
	check_pass_result(cx, res, !trains);
	return res;
}

/*
 * A pass that trains nothing: it keeps the window's training rows of the
 * active units' scenes (and, the first time, the validation rows) for the
 * unit jobs (train_units.c).  False when the rows do not fit the memory
 * mtms_train may keep them in: the stage then runs pass by pass.
 */
bool
mtms_collect_window(MtmsTrainCtx *cx, MtmsStage stage, const bool *active)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);
	MtmsKeptWindow *kw = &cx->kept[si->window];
	MtmsTrainState *base;
	MtmsTrainState *res;
	TimestampTz start = GetCurrentTimestamp();
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	base = pass_base(cx, si, 0, active);
	check_pass_memory(cx, true);
	if (!plan_keep_rows(cx, base, si))
	{
		MemoryContextSwitchTo(old);
		mtms_state_free(base);
		return false;
	}
	base->collect_only = true;
	plan_ahead(cx, base, si);
	MemoryContextSwitchTo(old);
	mtms_progress_stage("reading", 0, -1, cx->samples > 0 ? cx->samples : -1, 0);
	res = run_query(cx, base, si, false);
	adopt_kept_rows(cx, res, si, active);
	if (base->ahead_lo)
		adopt_ahead_rows(cx, res);
	if (res == NULL || res->rows_in == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no rows", cx->relname)));
	old = MemoryContextSwitchTo(cx->cxt);
	if (cx->valid == NULL)
	{
		cx->valid = palloc(sizeof(MtmsRowSet));
		mtms_rowset_copy(cx->valid, &res->valid);
	}
	cx->samples = res->rows_in;
	cx->bad_conversions = Max(cx->bad_conversions, res->bad_conversions);
	MemoryContextSwitchTo(old);
	mtms_state_free(res);
	mtms_state_free(base);
	if (kw->rows != NULL && mtms_kept_rows_count(kw->rows) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no training rows for the scenes being trained",
						cx->relname),
				 errhint("Check the scene column, or lower validation_fraction.")));
	if (kw->rows != NULL && cx->kept[1].ahead && cx->kept[1].rows != NULL && si->window == 0)
		ereport(NOTICE,
				(errmsg("mtms_train: phase-1 and fine-tune rows read: %lld samples, %lld + %lld training rows kept in %.1f MB, %.2f s",
						(long long) cx->samples,
						(long long) mtms_kept_rows_count(kw->rows),
						(long long) mtms_kept_rows_count(cx->kept[1].rows),
						kept_bytes(cx) / (1024.0 * 1024.0),
						(double) (GetCurrentTimestamp() - start) / 1e6)));
	else if (kw->rows != NULL)
		ereport(NOTICE,
				(errmsg("mtms_train: %s rows read: %lld samples, %lld training rows kept in %.1f MB, %.2f s",
						si->window == 0 ? "phase-1" : si->window == 1 ? "fine-tune" : "refit",
						(long long) cx->samples,
						(long long) mtms_kept_rows_count(kw->rows), kept_bytes(cx) / (1024.0 * 1024.0),
						(double) (GetCurrentTimestamp() - start) / 1e6)));
	return kw->rows != NULL;
}
