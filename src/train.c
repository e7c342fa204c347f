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
#include "funcapi.h"
#include "kept_rows.h"
#include "miscadmin.h"
#include "model_store.h"
#include "optimizer/cost.h"
#include "samples.h"
#include "train_state.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

typedef struct UnitResult
{
	bool		trained;
	int32		epochs;
	int64		samples;
	double		train_loss;
	double		valid_loss;
	double		valid_auc;
	double		crit;
	/* per metric slot (CTR, CVR, CTCVR) of the unit's scene */
	int64		m_n[MTMS_NMETRICS];
	double		m_train[MTMS_NMETRICS];
	double		m_loss[MTMS_NMETRICS];
	double		m_auc[MTMS_NMETRICS];
} UnitResult;

typedef struct KeptWindow
{
	MtmsKeptRows *rows;			/* NULL until a pass kept them */
	bool	   *scenes;			/* [nscenes] scenes the rows hold */
	bool		failed;			/* the window's rows did not fit */
} KeptWindow;

typedef struct TrainCtx
{
	MemoryContext cxt;
	MtmsModelMeta *meta;
	MtmsModel  *model;
	MtmsRowSet *valid;			/* validation rows, after the first pass */
	char	   *relname;		/* quoted, qualified */
	char	   *schema;
	int64		samples;		/* rows of the relation */
	int32		stored_npairs;	/* pairs of the version training started from */
	int32	   *frozen_fields;	/* [npairs] growth: see train_state.h; or NULL */
	int64		bad_conversions;
	ReturnSetInfo *rsinfo;
	/* per (scene, metric) validation results of the last stage run */
	double	   *metric_loss;
	double	   *metric_auc;
	bool		finetuned;

	/*
	 * Training rows kept by the first pass of a window for the passes after
	 * it (mtms.keep_training_rows): [0] phase 1's window (the embedding and
	 * CTCVR stages train on the same rows), [1] the fine-tune's.
	 */
	KeptWindow	kept[2];
	MemoryContext rows_cxt;		/* holds every window's rows */
} TrainCtx;

/* the kept-rows window of a stage */
#define KEPT_WINDOW(cx, stage)	(&(cx)->kept[(stage) == MTMS_STAGE_FINETUNE])

static const char *stage_names[] = {"embedding", "ctcvr", "finetune"};

/* serialized training states are single values: stay well below 1 GB */
#define MAX_PARALLEL_MODEL_BYTES ((Size) 600 * 1024 * 1024)

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
 * Units: what trains and converges together in each stage
 * --------------------------------------------------------------------- */

/* pairs of a unit: pair itself (embedding) or both pairs of the scene */
static int
unit_pairs(MtmsStage stage, int unit, int *pairs)
{
	if (stage == MTMS_STAGE_EMBEDDING)
	{
		pairs[0] = unit;
		return 1;
	}
	pairs[0] = MTMS_PAIR(unit, MTMS_TASK_CTR);
	pairs[1] = MTMS_PAIR(unit, MTMS_TASK_CVR);
	return 2;
}

/* Parameters of a unit kept from its best epoch. */
typedef struct UnitSnapshot
{
	int			npairs;
	int			pairs[2];
	MtmsEmbStore *emb[2];
	MtmsTower  *tower[2];
} UnitSnapshot;

static void
snapshot_free(UnitSnapshot *s)
{
	for (int i = 0; i < s->npairs; i++)
	{
		if (s->emb[i])
			mtms_emb_free(s->emb[i]);
		if (s->tower[i])
			mtms_tower_free(s->tower[i]);
		s->emb[i] = NULL;
		s->tower[i] = NULL;
	}
	s->npairs = 0;
}

static void
snapshot_take(UnitSnapshot *s, const MtmsModel *m, MtmsStage stage, int unit)
{
	snapshot_free(s);
	s->npairs = unit_pairs(stage, unit, s->pairs);
	for (int i = 0; i < s->npairs; i++)
	{
		int			p = s->pairs[i];

		if (stage == MTMS_STAGE_FINETUNE)
		{
			s->emb[i] = NULL;
			s->tower[i] = mtms_tower_copy(m->tower2[p]);
		}
		else
		{
			s->emb[i] = mtms_emb_copy(m->emb[p]);
			s->tower[i] = mtms_tower_copy(m->tower1[p]);
		}
	}
}

/* Put the snapshot's parameters back into m (whose context owns them). */
static void
snapshot_restore(UnitSnapshot *s, MtmsModel *m, MtmsStage stage)
{
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int i = 0; i < s->npairs; i++)
	{
		int			p = s->pairs[i];

		if (stage == MTMS_STAGE_FINETUNE)
		{
			mtms_tower_free(m->tower2[p]);
			m->tower2[p] = mtms_tower_copy(s->tower[i]);
		}
		else
		{
			mtms_emb_free(m->emb[p]);
			m->emb[p] = mtms_emb_copy(s->emb[i]);
			mtms_tower_free(m->tower1[p]);
			m->tower1[p] = mtms_tower_copy(s->tower[i]);
		}
	}
	MemoryContextSwitchTo(old);
}

static inline double
mean_or_nan(double sum, int64 n)
{
	return n > 0 ? sum / n : NAN;
}

/* Early-stopping criterion and reported figures of a unit after a pass. */
static void
unit_figures(const MtmsTrainState *res, MtmsStage stage, int unit, UnitResult *r)
{
	int			sc = stage == MTMS_STAGE_EMBEDDING ? MTMS_PAIR_SCENE(unit) : unit;

	for (int t = 0; t < MTMS_NMETRICS; t++)
	{
		int			slot = sc * MTMS_NMETRICS + t;

		r->m_n[t] = res->loss_n[slot];
		r->m_train[t] = mean_or_nan(res->loss_sum[slot], res->loss_n[slot]);
		r->m_loss[t] = res->vloss[slot];
		r->m_auc[t] = res->vauc[slot];
	}
	if (stage == MTMS_STAGE_EMBEDDING)
	{
		int			s = MTMS_PAIR_SCENE(unit);
		int			slot = s * MTMS_NMETRICS +
			(MTMS_PAIR_TASK(unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR);

		r->samples = res->loss_n[slot];
		r->train_loss = mean_or_nan(res->loss_sum[slot], res->loss_n[slot]);
		r->valid_loss = res->vloss[slot];
		r->valid_auc = res->vauc[slot];
		r->crit = r->valid_loss;
	}
	else
	{
		int			base = unit * MTMS_NMETRICS;
		double		crit = 0;

		r->samples = res->loss_n[base + MTMS_M_CTCVR];
		r->train_loss = mean_or_nan(res->loss_sum[base + MTMS_M_CTCVR],
									res->loss_n[base + MTMS_M_CTCVR]);
		r->valid_loss = res->vloss[base + MTMS_M_CTCVR];
		r->valid_auc = res->vauc[base + MTMS_M_CTCVR];
		for (int t = 0; t < MTMS_NMETRICS; t++)
			if (!isnan(res->vloss[base + t]))
				crit += res->vloss[base + t];
		r->crit = isnan(res->vloss[base + MTMS_M_CTR]) ? NAN : crit;
	}
}

/* ---------------------------------------------------------------------
 * One stage
 * --------------------------------------------------------------------- */

static void
emit_row(TrainCtx *cx, const char *phase, const char *scene, const char *task,
		 const UnitResult *r, double seconds)
{
	Datum		values[9];
	bool		nulls[9] = {0};

	values[0] = CStringGetTextDatum(phase);
	values[1] = CStringGetTextDatum(scene);
	values[2] = CStringGetTextDatum(task);
	values[3] = Int32GetDatum(r->epochs);
	values[4] = Int64GetDatum(r->samples);
	values[5] = Float8GetDatum(r->train_loss);
	nulls[5] = isnan(r->train_loss);
	values[6] = Float8GetDatum(r->valid_loss);
	nulls[6] = isnan(r->valid_loss);
	values[7] = Float8GetDatum(r->valid_auc);
	nulls[7] = isnan(r->valid_auc);
	values[8] = Float8GetDatum(seconds);
	tuplestore_putvalues(cx->rsinfo->setResult, cx->rsinfo->setDesc, values, nulls);
}

/* Scenes with an active unit, palloc'd. */
static bool *
active_scenes(TrainCtx *cx, MtmsStage stage, const bool *active)
{
	bool	   *scenes = palloc0(sizeof(bool) * cx->model->nscenes);

	for (int u = 0; u < mtms_stage_units(stage, cx->model->nscenes); u++)
		if (active[u])
			scenes[stage == MTMS_STAGE_EMBEDDING ? MTMS_PAIR_SCENE(u) : u] = true;
	return scenes;
}

/* Memory of the training rows kept so far. */
static double
kept_bytes(TrainCtx *cx)
{
	return cx->rows_cxt ? (double) MemoryContextMemAllocated(cx->rows_cxt, true) : 0;
}

static void
check_pass_result(TrainCtx *cx, const MtmsTrainState *res, bool collect_only)
{
	if (res == NULL || res->rows_in == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no rows", cx->relname)));
	if (res->rows_trained == 0 && !collect_only)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample relation %s has no training rows for the scenes being trained",
						cx->relname),
				 errhint("Check the scene column, or lower validation_fraction.")));
}

/* Run one epoch's aggregate query; returns the trained state. */
static MtmsTrainState *
run_pass(TrainCtx *cx, MtmsStage stage, int epoch, const bool *active)
{
	bool		collect_only = true;
	bool		parallel;
	int			guc_level = 0;
	MtmsTrainState *base;
	MtmsTrainState *res;
	char	   *token;
	char	   *sql;
	int			rc;
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	for (int u = 0; u < mtms_stage_units(stage, cx->model->nscenes); u++)
		if (active[u])
			collect_only = false;
	base = mtms_state_create(cx->model, &cx->meta->opts, stage, epoch, active, cx->valid);
	if (cx->frozen_fields && stage != MTMS_STAGE_FINETUNE)
	{
		MemoryContext old2 = MemoryContextSwitchTo(base->cxt);

		base->frozen_fields = palloc(sizeof(int32) * cx->model->npairs);
		memcpy(base->frozen_fields, cx->frozen_fields, sizeof(int32) * cx->model->npairs);
		MemoryContextSwitchTo(old2);
	}

	/*
	 * Which rows train.  The fine-tune must learn how the frozen embeddings
	 * behave on rows they were not trained on (on their own training rows
	 * the embeddings have memorized the labels, and a tower fitted there
	 * overfits at once), so phase 1 always leaves the rows of
	 * finetune_fraction to phase 2, whether the phases run in one call or
	 * in two calls on the same samples.
	 */
	{
		double		vf = cx->meta->opts.validation_fraction;
		double		ff = cx->meta->opts.finetune_fraction;

		if (stage == MTMS_STAGE_FINETUNE)
		{
			base->train_lo = vf;
			base->train_hi = ff > 0 ? vf + ff : 1.0;
		}
		else
		{
			base->train_lo = vf + ff;
			base->train_hi = 1.0;
		}
		base->expected_rows = (int64) (cx->samples * (base->train_hi - base->train_lo));
	}
	/*
	 * Refuse a pass whose planned memory is over mtms.max_memory: the
	 * driver's model, the best epoch's snapshots (at most one more model),
	 * one model copy per participant of the pass, their shuffle buffers and
	 * the validation rows.
	 */
	{
		int			participants = 1 + Max(max_parallel_workers_per_gather, 0);
		Size		model = mtms_model_bytes(cx->model);
		Size		rows = (Size) cx->meta->opts.shuffle_buffer * 160;
		Size		valid = cx->valid ? (Size) cx->valid->nrows * 160 : 0;
		double		est = (double) model * (2 + participants) + (double) rows * participants + valid;

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
	 * Parallel workers start from a snapshot file; a model whose snapshot
	 * would pass the 1 GB limit of one serialized value trains serially.
	 */
	parallel = max_parallel_workers_per_gather > 0 &&
		mtms_model_bytes(cx->model) < MAX_PARALLEL_MODEL_BYTES;
	/*
	 * Kept training rows.  A pass replays the rows an earlier pass of the
	 * same window kept, when they hold every scene this pass trains: no
	 * scan, no parsing, the same rows in the same order, so the same model
	 * as a serial scan.  The first pass of a window runs serially and keeps
	 * its rows, memory permitting; only a window whose rows did not fit
	 * scans again, in parallel when the plan allows.  Replaying in one
	 * process beats scanning with workers: a parallel pass re-reads and
	 * re-parses every row and its averaged partial models need more epochs
	 * (bench/RESULTS.md, "Parallel").
	 */
	{
		KeptWindow *kw = KEPT_WINDOW(cx, stage);
		bool	   *scenes = active_scenes(cx, stage, active);

		if (kw->rows && !collect_only && cx->samples > 0 && cx->valid != NULL)
		{
			bool		covered = true;

			for (int s = 0; s < cx->model->nscenes; s++)
				if (scenes[s] && !kw->scenes[s])
					covered = false;
			if (covered)
			{
				elog(DEBUG1, "mtms_train: %s epoch %d replays %lld kept training rows",
					 stage_names[stage], epoch, (long long) mtms_kept_rows_count(kw->rows));
				MemoryContextSwitchTo(cx->cxt);
				res = mtms_state_run_rows(base, kw->rows, cx->samples);
				MemoryContextSwitchTo(old);
				mtms_state_free(base);
				pfree(scenes);
				check_pass_result(cx, res, collect_only);
				return res;
			}
		}
		if (kw->rows == NULL && !kw->failed && !collect_only && mtms_keep_training_rows)
		{
			/* at most half of mtms.max_memory beside three model copies */
			double		room = (double) mtms_max_memory_mb * 1024 * 1024 / 2 -
				3.0 * mtms_model_bytes(cx->model) - kept_bytes(cx);

			if (room > 1024 * 1024)
			{
				base->train_limit = (Size) room;
				if (cx->rows_cxt == NULL)
					cx->rows_cxt = AllocSetContextCreate(cx->cxt, "mtms kept training rows",
														 ALLOCSET_DEFAULT_SIZES);
				base->collect_train = true;
				base->train_cxt = cx->rows_cxt;
				parallel = false;
			}
		}
		pfree(scenes);
	}
	/* no workers, no partial states to combine: train the model in place */
	base->train_in_place = !parallel;
	token = mtms_state_publish(base, parallel);
	sql = psprintf("SELECT %s.%s(%s, scene::text, features, click, conversion) FROM %s",
				   cx->schema,
				   stage == MTMS_STAGE_FINETUNE ? "mtms_finetune" : "mtms_embedding_update",
				   quote_literal_cstr(token), cx->relname);
	MemoryContextSwitchTo(old);

	if (!parallel && max_parallel_workers_per_gather > 0)
	{
		/* like a function's SET clause: undone right after the query */
		guc_level = NewGUCNestLevel();
		(void) set_config_option("max_parallel_workers_per_gather", "0",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	}
	rc = SPI_execute(sql, true, 0);
	if (guc_level > 0)
		AtEOXact_GUC(true, guc_level);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "mtms_train: training query failed: %s", SPI_result_code_string(rc));

	res = mtms_state_take_result(token);
	mtms_state_unpublish();
	if (base->collect_train)
	{
		KeptWindow *kw = KEPT_WINDOW(cx, stage);

		if (res == NULL || !res->collect_train || res->train_rows == NULL)
			kw->failed = true;	/* too many rows to keep (or none): scan */
		else
		{
			MemoryContext old2 = MemoryContextSwitchTo(cx->rows_cxt);

			kw->rows = res->train_rows; /* allocated in cx->rows_cxt */
			res->train_rows = NULL;
			mtms_kept_rows_finish(kw->rows);
			kw->scenes = active_scenes(cx, stage, active);
			elog(DEBUG1, "mtms_train: %s keeps %lld training rows in %.1f MB",
				 stage_names[stage], (long long) mtms_kept_rows_count(kw->rows),
				 kept_bytes(cx) / (1024.0 * 1024.0));
			MemoryContextSwitchTo(old2);
		}
	}
	mtms_state_free(base);
	check_pass_result(cx, res, collect_only);
	return res;
}

static void
run_stage(TrainCtx *cx, MtmsStage stage, const bool *selected)
{
	MtmsOptions *o = &cx->meta->opts;
	int			nunits = mtms_stage_units(stage, cx->model->nscenes);
	bool	   *active = palloc0(sizeof(bool) * nunits);
	int		   *bad = palloc0(sizeof(int) * nunits);
	UnitResult *best = palloc0(sizeof(UnitResult) * nunits);
	UnitSnapshot *snap = palloc0(sizeof(UnitSnapshot) * nunits);
	TimestampTz start = GetCurrentTimestamp();
	double		seconds;
	int			any = 0;

	for (int u = 0; u < nunits; u++)
	{
		int			scene = stage == MTMS_STAGE_EMBEDDING ? MTMS_PAIR_SCENE(u) : u;

		active[u] = selected[scene];
		best[u].crit = INFINITY;
		best[u].valid_loss = best[u].valid_auc = best[u].train_loss = NAN;
		any += active[u];
	}

	/*
	 * Start from what the model already knows: the phase-1 stages of a
	 * model trained before (a new day, a new scene or field) and the
	 * fine-tune validate their starting parameters first, and a unit keeps
	 * them unless an epoch does better on validation, so retraining never
	 * leaves a pair's phase-1 model or a scene's fine-tune towers worse on
	 * validation than they were.  On a model's first training the CTCVR
	 * stage always trains at least one epoch: it exists to add the
	 * pCTR x pCVR objective, which its starting point (the converged
	 * separate sub-models) lacks even when their losses are lower.
	 */
	if (cx->meta->active_version > 0 || stage == MTMS_STAGE_FINETUNE)
	{
		MtmsTrainState *st;

		if (cx->valid == NULL)
		{
			/* one pass that only collects the validation rows */
			bool	   *none = palloc0(sizeof(bool) * nunits);
			MtmsTrainState *res = run_pass(cx, stage, 0, none);
			MemoryContext old = MemoryContextSwitchTo(cx->cxt);

			cx->valid = palloc(sizeof(MtmsRowSet));
			mtms_rowset_copy(cx->valid, &res->valid);
			cx->samples = res->rows_in;
			MemoryContextSwitchTo(old);
			mtms_state_free(res);
		}
		st = mtms_state_create(cx->model, o, stage, 0, active, cx->valid);
		mtms_state_validate(st);
		for (int u = 0; u < nunits; u++)
		{
			UnitResult	r;
			int			first_pair = stage == MTMS_STAGE_EMBEDDING ? u : MTMS_PAIR(u, 0);

			if (!active[u])
				continue;
			/* a scene added since the stored version has nothing to keep */
			if (stage != MTMS_STAGE_FINETUNE && first_pair >= cx->stored_npairs)
				continue;
			unit_figures(st, stage, u, &r);
			if (isnan(r.crit))
				continue;
			r.train_loss = NAN;
			r.samples = 0;
			r.epochs = 0;
			best[u] = r;
			{
				MemoryContext old = MemoryContextSwitchTo(cx->cxt);

				snapshot_take(&snap[u], cx->model, stage, u);
				MemoryContextSwitchTo(old);
			}
		}
		mtms_state_free(st);
	}

	for (int epoch = 1; epoch <= o->max_epochs && any > 0; epoch++)
	{
		TimestampTz t0 = GetCurrentTimestamp();
		MtmsTrainState *res;
		double		secs;
		double		tl = 0,
					vl = 0,
					va = 0;
		int			nl = 0,
					nv = 0,
					na = 0;
		StringInfoData detail;

		CHECK_FOR_INTERRUPTS();
		res = run_pass(cx, stage, epoch, active);
		secs = (double) (GetCurrentTimestamp() - t0) / 1e6;

		/* adopt the trained model and, once, the validation rows */
		{
			MemoryContext old = MemoryContextSwitchTo(cx->cxt);

			if (res->model != cx->model)	/* else trained in place */
			{
				mtms_model_free(cx->model);
				MemoryContextSetParent(res->model->cxt, cx->cxt);
				cx->model = res->model;
			}
			if (cx->valid == NULL)
			{
				cx->valid = palloc(sizeof(MtmsRowSet));
				mtms_rowset_copy(cx->valid, &res->valid);
			}
			if (cx->samples == 0)
				cx->samples = res->rows_in;
			cx->bad_conversions = Max(cx->bad_conversions, res->bad_conversions);
			MemoryContextSwitchTo(old);
		}

		initStringInfo(&detail);
		any = 0;
		for (int u = 0; u < nunits; u++)
		{
			UnitResult	r;
			const char *scene;

			if (!active[u])
				continue;
			unit_figures(res, stage, u, &r);
			r.epochs = epoch;
			r.trained = true;
			scene = cx->model->scenes[stage == MTMS_STAGE_EMBEDDING ? MTMS_PAIR_SCENE(u) : u];
			appendStringInfo(&detail, "%s%s%s%s: train %.5f valid %.5f auc %.4f",
							 detail.len ? "; " : "", scene,
							 stage == MTMS_STAGE_EMBEDDING ? "/" : "",
							 stage == MTMS_STAGE_EMBEDDING ? mtms_task_name(MTMS_PAIR_TASK(u)) : "",
							 r.train_loss, r.valid_loss, r.valid_auc);
			if (!isnan(r.train_loss))
				tl += r.train_loss, nl++;
			if (!isnan(r.valid_loss))
				vl += r.valid_loss, nv++;
			if (!isnan(r.valid_auc))
				va += r.valid_auc, na++;

			if (!isnan(r.crit) && mtms_improved(r.crit, best[u].crit, o->min_delta))
			{
				MemoryContext old = MemoryContextSwitchTo(cx->cxt);

				best[u] = r;
				bad[u] = 0;
				snapshot_take(&snap[u], cx->model, stage, u);
				MemoryContextSwitchTo(old);
			}
			else
			{
				bad[u]++;
				best[u].epochs = epoch;
				/* samples: rows per epoch, whichever epoch is kept */
				best[u].samples = r.samples;
				memcpy(best[u].m_n, r.m_n, sizeof(r.m_n));
				/* the starting point was kept: report the loss training reached */
				if (isnan(best[u].train_loss))
				{
					best[u].train_loss = r.train_loss;
					memcpy(best[u].m_train, r.m_train, sizeof(r.m_train));
				}
				if (isnan(r.crit) && snap[u].npairs == 0)
				{
					/* nothing to validate against: keep this epoch, stop */
					MemoryContext old = MemoryContextSwitchTo(cx->cxt);

					best[u] = r;
					snapshot_take(&snap[u], cx->model, stage, u);
					MemoryContextSwitchTo(old);
					bad[u] = o->patience;
				}
			}
			best[u].epochs = epoch;
			if (bad[u] >= o->patience)
				active[u] = false;
			else
				any++;
		}

		ereport(NOTICE,
				(errmsg("mtms_train %s epoch %d: train loss %.5f, valid loss %.5f, valid AUC %.4f, %.0f samples/s, %d of %d units still improving",
						stage_names[stage], epoch,
						nl ? tl / nl : NAN, nv ? vl / nv : NAN, na ? va / na : NAN,
						secs > 0 ? res->rows_in / secs : 0.0, any, nunits),
				 errdetail_internal("%s", detail.data)));
		pfree(detail.data);
		res->model = NULL;
		mtms_state_free(res);
	}

	/* every unit goes back to its best epoch */
	for (int u = 0; u < nunits; u++)
		if (snap[u].npairs > 0)
		{
			snapshot_restore(&snap[u], cx->model, stage);
			snapshot_free(&snap[u]);
		}

	seconds = (double) (GetCurrentTimestamp() - start) / 1e6;
	for (int u = 0; u < nunits; u++)
	{
		int			scene = stage == MTMS_STAGE_EMBEDDING ? MTMS_PAIR_SCENE(u) : u;

		if (!selected[scene] || best[u].epochs == 0)
			continue;
		if (stage == MTMS_STAGE_EMBEDDING)
		{
			int			t = MTMS_PAIR_TASK(u);
			int			slot = scene * MTMS_NMETRICS + (t == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR);

			emit_row(cx, "embedding", cx->model->scenes[scene], mtms_task_name(t), &best[u], seconds);
			cx->metric_loss[slot] = best[u].valid_loss;
			cx->metric_auc[slot] = best[u].valid_auc;
		}
		else if (stage == MTMS_STAGE_CTCVR)
			emit_row(cx, "ctcvr", cx->model->scenes[scene], "ctcvr", &best[u], seconds);
		else
		{
			/* fine-tune: one row per task, with that task's figures */
			for (int t = 0; t < MTMS_NMETRICS; t++)
			{
				UnitResult	r = best[u];
				static const char *names[] = {"ctr", "cvr", "ctcvr"};
				int			slot = scene * MTMS_NMETRICS + t;

				r.samples = r.m_n[t];
				r.train_loss = r.m_train[t];
				r.valid_loss = r.m_loss[t];
				r.valid_auc = r.m_auc[t];
				if (t != MTMS_M_CTCVR)
					emit_row(cx, "finetune", cx->model->scenes[scene], names[t], &r, seconds);
				cx->metric_loss[slot] = r.valid_loss;
				cx->metric_auc[slot] = r.valid_auc;
			}
		}
	}
}

/* ---------------------------------------------------------------------
 * Committing a version
 * --------------------------------------------------------------------- */

static Jsonb *
metrics_jsonb(TrainCtx *cx)
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
			appendStringInfoChar(&buf, '}');
		}
		if (!first)
			appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

static int32
commit_version(TrainCtx *cx, const char *relname_plain)
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

	if (SPI_execute_with_args(psprintf("UPDATE %s.mtms_model SET active_version = $2 WHERE model_id = $1",
									   cx->schema),
							  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not activate the new version");

	/* keep the newest keep_versions versions (and the active one) */
	{
		Oid			t3[3] = {INT4OID, INT4OID, INT4OID};
		Datum		a3[3];

		a3[0] = Int32GetDatum(meta->model_id);
		a3[1] = Int32GetDatum(version);
		a3[2] = Int32GetDatum(meta->opts.keep_versions);
		if (SPI_execute_with_args(psprintf("DELETE FROM %s.mtms_version WHERE model_id = $1 "
										   "AND version <> $2 AND version NOT IN "
										   "(SELECT version FROM %s.mtms_version WHERE model_id = $1 "
										   "ORDER BY version DESC LIMIT $3)",
										   cx->schema, cx->schema),
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

PG_FUNCTION_INFO_V1(mtms_train);
Datum
mtms_train(PG_FUNCTION_ARGS)
{
	TrainCtx	cx;
	char	   *name;
	Oid			relid;
	char	   *phases;
	bool		do_embedding;
	bool		do_finetune;
	bool	   *selected;
	bool	   *all;
	char	   *relname_plain;
	int			nscenes;
	int			guard;
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
	nscenes = cx.meta->nscenes;

	cx.relname = mtms_samples_check(relid);
	relname_plain = get_rel_name(relid);
	cx.schema = mtms_schema_quoted();

	selected = palloc(sizeof(bool) * nscenes);
	all = palloc(sizeof(bool) * nscenes);
	for (int s = 0; s < nscenes; s++)
		all[s] = true;
	if (PG_ARGISNULL(2))
		memcpy(selected, all, sizeof(bool) * nscenes);
	else
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		memset(selected, 0, sizeof(bool) * nscenes);
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
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
			s = mtms_scene_index(cx.meta, sc);
			if (s < 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("scene \"%s\" is not a scene of model \"%s\"", sc, name),
						 errhint("The model's scenes are: %s.", mtms_scene_list(cx.meta))));
			selected[s] = true;
		}
	}

	cx.metric_loss = palloc(sizeof(double) * nscenes * MTMS_NMETRICS);
	cx.metric_auc = palloc(sizeof(double) * nscenes * MTMS_NMETRICS);
	for (int i = 0; i < nscenes * MTMS_NMETRICS; i++)
		cx.metric_loss[i] = cx.metric_auc[i] = NAN;

	if (cx.meta->active_version > 0)
	{
		cx.model = mtms_model_load(cx.meta, cx.meta->active_version);
		cx.stored_npairs = cx.model->stored_npairs;

		/*
		 * Fields added since the stored version: the pairs that existed
		 * keep what they know and learn only the new fields (their rows and
		 * their tower columns), so they start from, and are validated
		 * against, exactly the previous model.
		 */
		if (cx.model->stored_nfields < cx.model->nfields)
		{
			cx.frozen_fields = palloc0(sizeof(int32) * cx.model->npairs);
			for (int p = 0; p < cx.model->stored_npairs; p++)
				cx.frozen_fields[p] = cx.model->stored_nfields;
		}
	}
	else if (!do_embedding)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no trained embeddings to fine-tune", name),
				 errhint("Run mtms_train with phases => 'embedding' or 'all' first.")));
	else
		cx.model = mtms_model_create(cx.meta);

	/* what runs the dense products: a user compares speeds by this */
	ereport(NOTICE,
			(errmsg("mtms_train: model \"%s\" on %s, %s", name, relname_plain,
					mtms_blas_summary())));

	SPI_connect();
	guard = mtms_guard_search_path();
	MemoryContextSwitchTo(cx.cxt);

	if (do_embedding)
	{
		run_stage(&cx, MTMS_STAGE_EMBEDDING, selected);
		if (cx.meta->opts.ctcvr)
			run_stage(&cx, MTMS_STAGE_CTCVR, selected);
	}
	if (do_finetune)
	{
		mtms_model_ensure_finetune(cx.model);
		run_stage(&cx, MTMS_STAGE_FINETUNE, all);
	}

	if (cx.bad_conversions > 0)
		ereport(NOTICE,
				(errmsg("mtms_train: %lld samples have a conversion without a click; their conversion was ignored",
						(long long) cx.bad_conversions)));

	commit_version(&cx, relname_plain);
	mtms_unguard_search_path(guard);
	SPI_finish();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cx.cxt);
	return (Datum) 0;
}
