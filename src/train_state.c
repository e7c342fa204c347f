/*
 * train_state.c
 *    One training pass as an aggregate state: buffering and shuffling rows,
 *    dispatching mini-batches, combining partial states, serialization,
 *    snapshot files for parallel workers, validation metrics.
 *
 * See train_state.h for the life of a pass.
 */
#include "train_state.h"
#include "joined_keys.h"
#include "kept_rows.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/parallel.h"
#include "auc.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "common/file_utils.h"	/* PG_TEMP_FILES_DIR moved here in 16 */
#endif

#define STATE_MAGIC		0x6d747331	/* "mts1" */
#define SNAPSHOT_DIR	"base/" PG_TEMP_FILES_DIR

/* ---------------------------------------------------------------------
 * Row sets
 * --------------------------------------------------------------------- */

void
mtms_rowset_init(MtmsRowSet *rs)
{
	memset(rs, 0, sizeof(MtmsRowSet));
}

static void
rowset_reserve(MtmsRowSet *rs, int64 rows, int64 feats)
{
	if (rows + 1 > rs->cap)
	{
		int64		cap = Max(rs->cap * 2, Max(rows + 1, 1024));

		if (rs->cap == 0)
		{
			rs->scene = palloc_extended(sizeof(int32) * cap, MCXT_ALLOC_HUGE);
			rs->label = palloc_extended(sizeof(uint8) * cap, MCXT_ALLOC_HUGE);
			rs->start = palloc_extended(sizeof(int64) * (cap + 1), MCXT_ALLOC_HUGE);
			rs->start[0] = 0;
		}
		else
		{
			rs->scene = repalloc_huge(rs->scene, sizeof(int32) * cap);
			rs->label = repalloc_huge(rs->label, sizeof(uint8) * cap);
			rs->start = repalloc_huge(rs->start, sizeof(int64) * (cap + 1));
		}
		rs->cap = cap;
	}
	if (feats > rs->featcap)
	{
		int64		cap = Max(rs->featcap * 2, Max(feats, 8192));

		if (rs->featcap == 0)
			rs->feats = palloc_extended(sizeof(MtmsFeature) * cap, MCXT_ALLOC_HUGE);
		else
			rs->feats = repalloc_huge(rs->feats, sizeof(MtmsFeature) * cap);
		rs->featcap = cap;
	}
}

void
mtms_rowset_add(MtmsRowSet *rs, int32 scene, uint8 label,
				const MtmsFeature *feats, int nfeats)
{
	rowset_reserve(rs, rs->nrows + 1, rs->nfeats + nfeats);
	if (rs->nrows == 0)
		rs->start[0] = 0;
	rs->scene[rs->nrows] = scene;
	rs->label[rs->nrows] = label;
	if (nfeats > 0)
		memcpy(rs->feats + rs->nfeats, feats, sizeof(MtmsFeature) * nfeats);
	rs->nfeats += nfeats;
	rs->nrows++;
	rs->start[rs->nrows] = rs->nfeats;
}

void
mtms_rowset_append(MtmsRowSet *dst, const MtmsRowSet *src)
{
	for (int64 i = 0; i < src->nrows; i++)
		mtms_rowset_add(dst, src->scene[i], src->label[i],
						src->feats + src->start[i],
						(int) (src->start[i + 1] - src->start[i]));
}

void
mtms_rowset_copy(MtmsRowSet *dst, const MtmsRowSet *src)
{
	mtms_rowset_init(dst);
	mtms_rowset_append(dst, src);
}

static void
rowset_clear(MtmsRowSet *rs)
{
	rs->nrows = 0;
	rs->nfeats = 0;
}

/* ---------------------------------------------------------------------
 * States
 * --------------------------------------------------------------------- */

static void
alloc_stats(MtmsTrainState *st)
{
	int			n = st->model->nscenes * MTMS_NMETRICS;

	st->loss_sum = palloc0(sizeof(double) * n);
	st->loss_n = palloc0(sizeof(int64) * n);
	st->vloss = palloc0(sizeof(double) * n);
	st->vauc = palloc0(sizeof(double) * n);
	st->vn = palloc0(sizeof(int64) * n);
	st->vpos = palloc0(sizeof(int64) * n);
}

static MtmsTrainState *
state_alloc(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "mtms training state",
											  ALLOCSET_DEFAULT_SIZES);
	MtmsTrainState *st = MemoryContextAllocZero(cxt, sizeof(MtmsTrainState));

	st->cxt = cxt;
	return st;
}

MtmsTrainState *
mtms_state_create(const MtmsModel *model, const MtmsOptions *opts,
				  MtmsStage stage, int epoch, const bool *unit_active,
				  const MtmsRowSet *valid)
{
	MtmsTrainState *st = state_alloc(CurrentMemoryContext);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	/*
	 * Borrowed, not copied: a base state only reads the model (to publish
	 * it, as the start of every participant's copy and of the combine), and
	 * the driver keeps it unchanged until the state is freed.  One model
	 * copy less at the peak of every pass.
	 */
	st->model = unconstify(MtmsModel *, model);
	st->opts = *opts;
	st->stage = stage;
	st->epoch = epoch;
	st->nunits = mtms_stage_units(stage, model->nscenes);
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	memcpy(st->unit_active, unit_active, sizeof(bool) * st->nunits);
	st->collect_valid = (valid == NULL);
	/* the validation rows are borrowed too (read-only in a base state) */
	mtms_rowset_init(&st->valid);
	if (valid)
		st->valid = *valid;
	alloc_stats(st);
	MemoryContextSwitchTo(old);
	return st;
}

void
mtms_state_free(MtmsTrainState *s)
{
	if (s)
		MemoryContextDelete(s->cxt);
}

/* Is any unit of this scene still training? */
static inline bool
scene_active(const MtmsTrainState *st, int scene)
{
	if (st->stage == MTMS_STAGE_EMBEDDING)
		return st->unit_active[MTMS_PAIR(scene, MTMS_TASK_CTR)] ||
			st->unit_active[MTMS_PAIR(scene, MTMS_TASK_CVR)];
	return st->unit_active[scene];
}

/*
 * Make a state ready to consume rows: fresh statistics, update counts and
 * combine weights, the work area, the shuffling generator.
 */
static void checkpoint(MtmsTrainState *st);
static void buffer_row(MtmsTrainState *st, int scene, uint8 label,
					   const MtmsFeature *feats, int nfeats);
static void restore_best(MtmsTrainState *st);
static void final_validation(MtmsTrainState *st, const MtmsRowSet *vs);
static void finish_pass(MtmsTrainState *st, const MtmsRowSet *vs);
static void evaluate_validation(MtmsTrainState *st, const MtmsRowSet *vs,
								const double *auc_below);

static void
state_prepare(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	int			n = m->nscenes * MTMS_NMETRICS;
	uint64		seed;

	memset(st->loss_sum, 0, sizeof(double) * n);
	memset(st->loss_n, 0, sizeof(int64) * n);
	st->rows_in = st->rows_trained = st->bad_conversions = 0;
	for (int p = 0; p < m->npairs; p++)
	{
		mtms_emb_reset_counts(m->emb[p]);
		m->tower1[p]->nsamples = 0;
		if (m->tower2[p])
			m->tower2[p]->nsamples = 0;
	}
	mtms_rowset_init(&st->buf);
	st->work = mtms_batch_work_create(m, st->opts.batch_size);
	st->order = palloc_extended(sizeof(int64) * st->opts.shuffle_buffer, MCXT_ALLOC_HUGE);
	st->pending = palloc(sizeof(int64 *) * st->nunits);
	st->npending = palloc0(sizeof(int32) * st->nunits);
	for (int u = 0; u < st->nunits; u++)
		st->pending[u] = palloc(sizeof(int64) * st->opts.batch_size);
	st->parse_cap = 64;
	st->parse_buf = palloc(sizeof(MtmsFeature) * st->parse_cap);

	seed = hash_combine64((uint64) st->opts.seed,
						  ((uint64) st->stage << 32) | (uint32) st->epoch);
	seed = hash_combine64(seed, (uint64) (ParallelWorkerNumber + 1));
	pg_prng_seed(&st->prng, seed);
	MemoryContextSwitchTo(old);

	if (st->stage == MTMS_STAGE_FINETUNE && st->eval_rows && st->eval_rows->nrows > 0)
	{
		int			nm = m->nscenes * MTMS_NMETRICS;

		old = MemoryContextSwitchTo(st->cxt);
		st->best2 = palloc0(sizeof(MtmsTower *) * m->npairs);
		st->best_crit = palloc(sizeof(double) * m->nscenes);
		for (int s = 0; s < m->nscenes; s++)
			st->best_crit[s] = INFINITY;
		st->best_vloss = palloc(sizeof(double) * nm);
		st->best_vauc = palloc(sizeof(double) * nm);
		st->best_vn = palloc0(sizeof(int64) * nm);
		st->best_vpos = palloc0(sizeof(int64) * nm);
		for (int i = 0; i < nm; i++)
			st->best_vloss[i] = st->best_vauc[i] = NAN;
		st->checked_at = -1;
		MemoryContextSwitchTo(old);
		st->next_eval = st->expected_rows > 0 ?
			Max(st->expected_rows / Max(st->opts.evals_per_epoch, 1), 1) : PG_INT64_MAX;
		checkpoint(st);
	}
}

/* ---------------------------------------------------------------------
 * Training: shuffle buffer and mini-batches
 * --------------------------------------------------------------------- */

static void
run_step(MtmsTrainState *st, int unit, const int64 *rows, int n)
{
	if (n <= 0)
		return;
	switch (st->stage)
	{
		case MTMS_STAGE_EMBEDDING:
			mtms_step_pair(st, unit, &st->buf, rows, n);
			break;
		case MTMS_STAGE_CTCVR:
			mtms_step_ctcvr(st, unit, &st->buf, rows, n);
			break;
		case MTMS_STAGE_FINETUNE:
			mtms_step_finetune(st, unit, &st->buf, rows, n);
			break;
	}
}

static inline void
push_row(MtmsTrainState *st, int unit, int64 row)
{
	st->pending[unit][st->npending[unit]++] = row;
	if (st->npending[unit] >= st->opts.batch_size)
	{
		CHECK_FOR_INTERRUPTS();
		run_step(st, unit, st->pending[unit], st->npending[unit]);
		st->npending[unit] = 0;
	}
}

/* Stop a pass whose state (model copy, buffers) outgrows mtms.max_memory. */
static void
check_memory(MtmsTrainState *st)
{
	Size		used = MemoryContextMemAllocated(st->cxt, true);
	Size		limit = (Size) mtms_max_memory_mb * 1024 * 1024;

	/* a model trained in place lives outside the state: count it too */
	if (st->model_shared)
		used += MemoryContextMemAllocated(st->model->cxt, true);

	if (used > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms training state uses %zu MB, more than mtms.max_memory (%d MB)",
						(used + 1024 * 1024 - 1) / (1024 * 1024), mtms_max_memory_mb),
				 errhint("Raise mtms.max_memory, or cap the embedding tables with the max_features option.")));
}

/* Shuffle the buffered rows and train on all of them. */
static void
process_buffer(MtmsTrainState *st)
{
	MtmsRowSet *buf = &st->buf;
	int64		n = buf->nrows;
	MemoryContext old;

	if (n == 0)
		return;
	old = MemoryContextSwitchTo(st->cxt);

	/* fine-tune: the buffer's distinct keys, looked up once (joined_keys.h) */
	if (st->stage == MTMS_STAGE_FINETUNE)
		st->buf_keys = mtms_joined_keys_build(st->model, buf, NULL, n);

	for (int64 i = 0; i < n; i++)
		st->order[i] = i;
	for (int64 i = n - 1; i > 0; i--)
	{
		int64		j = (int64) pg_prng_uint64_range(&st->prng, 0, (uint64) i);
		int64		t = st->order[i];

		st->order[i] = st->order[j];
		st->order[j] = t;
	}

	for (int64 i = 0; i < n; i++)
	{
		int64		r = st->order[i];
		int			s = buf->scene[r];

		if (st->stage == MTMS_STAGE_EMBEDDING)
		{
			int			pc = MTMS_PAIR(s, MTMS_TASK_CTR);
			int			pv = MTMS_PAIR(s, MTMS_TASK_CVR);

			if (st->unit_active[pc])
				push_row(st, pc, r);
			if ((buf->label[r] & MTMS_LABEL_CLICK) && st->unit_active[pv])
				push_row(st, pv, r);
		}
		else if (st->unit_active[s])
			push_row(st, s, r);
	}
	for (int u = 0; u < st->nunits; u++)
	{
		CHECK_FOR_INTERRUPTS();
		run_step(st, u, st->pending[u], st->npending[u]);
		st->npending[u] = 0;
	}
	mtms_joined_keys_free(st->buf_keys);
	st->buf_keys = NULL;
	rowset_clear(buf);
	MemoryContextSwitchTo(old);
	check_memory(st);

	if (st->best2 && st->rows_trained >= st->next_eval)
	{
		checkpoint(st);
		st->next_eval += Max(st->expected_rows / Max(st->opts.evals_per_epoch, 1), 1);
	}
}

/* ---------------------------------------------------------------------
 * Token registry and snapshot files
 * --------------------------------------------------------------------- */

static struct
{
	char		token[64];
	MtmsTrainState *base;
	MtmsTrainState *result;
	MemoryContext owner;		/* the driver's context; results move there */
	bool		has_file;
	char		path[MAXPGPATH];
} registry;

static uint32 publish_seq = 0;
static bool cleanup_registered = false;

static void
snapshot_path(char *path, int pid, uint32 seq)
{
	/* the pgsql_tmp prefix: removed by the server's restart clean-up too */
	snprintf(path, MAXPGPATH, "%s/%s_mtms.%d.%u", SNAPSHOT_DIR,
			 PG_TEMP_FILE_PREFIX, pid, seq);
}

static void
registry_reset(void *arg)
{
	if (registry.has_file)
		(void) unlink(registry.path);
	registry.has_file = false;
	registry.token[0] = '\0';
	registry.base = NULL;
	registry.result = NULL;
	registry.owner = NULL;
	cleanup_registered = false;
}

void
mtms_state_unpublish(void)
{
	if (registry.has_file)
		(void) unlink(registry.path);
	registry.has_file = false;
	registry.token[0] = '\0';
	registry.base = NULL;
}

static void serialize_state(StringInfo buf, const MtmsTrainState *st,
							bool with_valid);

char *
mtms_state_publish(MtmsTrainState *base, bool with_snapshot)
{
	mtms_state_unpublish();
	if (!cleanup_registered)
	{
		/* forget everything (and remove the file) with the driver's context */
		MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));

		cb->func = registry_reset;
		cb->arg = NULL;
		MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
		cleanup_registered = true;
	}
	registry.owner = CurrentMemoryContext;
	registry.base = base;
	registry.result = NULL;
	publish_seq++;
	snprintf(registry.token, sizeof(registry.token), "%d.%u", MyProcPid, publish_seq);

	if (with_snapshot)
	{
		StringInfoData buf;
		int			fd;

		initStringInfo(&buf);
		/* fine-tune workers validate at checkpoints: they need the rows */
		serialize_state(&buf, base, base->stage == MTMS_STAGE_FINETUNE);
		(void) MakePGDirectory(SNAPSHOT_DIR);
		snapshot_path(registry.path, MyProcPid, publish_seq);
		fd = OpenTransientFile(registry.path, O_CREAT | O_WRONLY | O_TRUNC | PG_BINARY);
		if (fd < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create training snapshot \"%s\": %m",
							registry.path)));
		registry.has_file = true;
		{
			Size		done = 0;

			while (done < (Size) buf.len)
			{
				ssize_t		w = write(fd, buf.data + done, buf.len - done);

				if (w <= 0)
				{
					CloseTransientFile(fd);
					ereport(ERROR,
							(errcode_for_file_access(),
							 errmsg("could not write training snapshot \"%s\": %m",
									registry.path)));
				}
				done += w;
			}
		}
		CloseTransientFile(fd);
		pfree(buf.data);
	}
	return pstrdup(registry.token);
}

MtmsTrainState *
mtms_state_take_result(const char *token)
{
	MtmsTrainState *r;

	if (strcmp(token, registry.token) != 0 || registry.result == NULL)
		return NULL;
	r = registry.result;
	registry.result = NULL;
	return r;
}

static MtmsTrainState *deserialize_state(const char *data, Size len,
										 MemoryContext parent);

/* Read a parallel worker's starting state from the leader's snapshot. */
static MtmsTrainState *
load_snapshot(const char *token, MemoryContext parent)
{
	int			pid;
	uint32		seq;
	char		tail;
	char		path[MAXPGPATH];
	int			fd;
	struct stat stt;
	char	   *data;
	Size		done = 0;
	MtmsTrainState *st;

	if (sscanf(token, "%d.%u%c", &pid, &seq, &tail) != 2 || pid <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mtms training token \"%s\"", token),
				 errhint("The training aggregates are driven by mtms_train(); call that instead.")));
	snapshot_path(path, pid, seq);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no mtms training in progress for token \"%s\"", token),
				 errhint("The training aggregates are driven by mtms_train(); call that instead.")));
	if (fstat(fd, &stt) < 0)
		ereport(ERROR, (errcode_for_file_access(),
						errmsg("could not stat \"%s\": %m", path)));
	data = MemoryContextAllocExtended(CurrentMemoryContext, Max(stt.st_size, 1),
									  MCXT_ALLOC_HUGE);
	while (done < (Size) stt.st_size)
	{
		ssize_t		r = read(fd, data + done, stt.st_size - done);

		if (r <= 0)
			ereport(ERROR, (errcode_for_file_access(),
							errmsg("could not read \"%s\": %m", path)));
		done += r;
	}
	CloseTransientFile(fd);
	st = deserialize_state(data, done, parent);
	pfree(data);
	if (st->stage == MTMS_STAGE_FINETUNE && !st->collect_valid && st->valid.nrows > 0)
		st->eval_rows = &st->valid;
	return st;
}

/* Deep copy of the published base for this process's aggregate. */
static MtmsTrainState *
start_from_base(const MtmsTrainState *base, MemoryContext parent, bool share_model)
{
	MtmsTrainState *st = state_alloc(parent);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	st->model = share_model ? base->model : mtms_model_copy(base->model);
	st->model_shared = share_model;
	st->opts = base->opts;
	st->stage = base->stage;
	st->epoch = base->epoch;
	st->nunits = base->nunits;
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	memcpy(st->unit_active, base->unit_active, sizeof(bool) * st->nunits);
	st->collect_valid = base->collect_valid;
	st->collect_train = base->collect_train && base->train_cxt != NULL;
	st->train_cxt = base->train_cxt;
	st->train_limit = base->train_limit;
	st->train_rows = NULL;
	st->expected_rows = base->expected_rows;
	if (base->frozen_fields)
	{
		st->frozen_fields = palloc(sizeof(int32) * base->model->npairs);
		memcpy(st->frozen_fields, base->frozen_fields, sizeof(int32) * base->model->npairs);
	}
	st->train_lo = base->train_lo;
	st->train_hi = base->train_hi;
	mtms_rowset_init(&st->valid);
	if (base->stage == MTMS_STAGE_FINETUNE && !base->collect_valid)
		st->eval_rows = &base->valid;
	alloc_stats(st);
	MemoryContextSwitchTo(old);
	return st;
}

/* ---------------------------------------------------------------------
 * The transition function
 * --------------------------------------------------------------------- */

static void
check_row_arg(FunctionCallInfo fcinfo, int argno, const char *column)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sample column \"%s\" is NULL", column),
				 errhint("Every sample needs a scene, a features array and a click flag; filter NULLs out in a view.")));
}

Datum
mtms_state_transition(FunctionCallInfo fcinfo, bool finetune)
{
	MemoryContext aggcxt;
	MtmsTrainState *st;
	text	   *scene_txt;
	int			scene;
	int			nfeats;
	uint64		content;
	uint8		label = 0;
	bool		click;
	bool		conv;
	double		u;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms training transition called in non-aggregate context");

	if (PG_ARGISNULL(0))
	{
		char	   *token;

		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("mtms training token is NULL"),
					 errhint("The training aggregates are driven by mtms_train(); call that instead.")));
		token = text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (!IsParallelWorker() && registry.base != NULL &&
			strcmp(token, registry.token) == 0)
			st = start_from_base(registry.base, aggcxt, registry.base->train_in_place);
		else
			st = load_snapshot(token, aggcxt);
		if ((st->stage == MTMS_STAGE_FINETUNE) != finetune)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("training token \"%s\" is for the %s aggregate", token,
							finetune ? "mtms_embedding_update" : "mtms_finetune")));
		state_prepare(st);
		st->token = MemoryContextStrdup(st->cxt, token);
	}
	else
		st = (MtmsTrainState *) PG_GETARG_POINTER(0);

	check_row_arg(fcinfo, 2, "scene");
	check_row_arg(fcinfo, 3, "features");
	check_row_arg(fcinfo, 4, "click");
	st->rows_in++;

	scene_txt = PG_GETARG_TEXT_PP(2);
	scene = mtms_model_scene(st->model, VARDATA_ANY(scene_txt), VARSIZE_ANY_EXHDR(scene_txt));
	if (scene < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample scene \"%s\" is not a scene of the model",
						text_to_cstring(scene_txt)),
				 errhint("Add it with mtms_add_scene(), or filter the samples in a view.")));
	if (!scene_active(st, scene) && !st->collect_valid)
		PG_RETURN_POINTER(st);

	{
		/* detoast in the per-row context: a copy in st->cxt lives all pass */
		ArrayType  *features = PG_GETARG_ARRAYTYPE_P(3);
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		nfeats = mtms_parse_features(features, st->model->nfields,
									 st->model->fields, &st->parse_buf,
									 &st->parse_cap, &content);
		MemoryContextSwitchTo(old);
	}

	click = PG_GETARG_BOOL(4);
	conv = !PG_ARGISNULL(5) && PG_GETARG_BOOL(5);
	if (conv && !click)
	{
		st->bad_conversions++;
		conv = false;
	}
	if (click)
		label |= MTMS_LABEL_CLICK;
	if (conv)
		label |= MTMS_LABEL_CONV;

	/* the validation split: a deterministic function of the row's content */
	content = hash_combine64(content, hash_bytes_extended((const unsigned char *) st->model->scenes[scene],
														  strlen(st->model->scenes[scene]), 0));
	u = (double) (content >> 11) * (1.0 / 9007199254740992.0);
	if (u < st->opts.validation_fraction)
	{
		if (st->collect_valid)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			mtms_rowset_add(&st->valid, scene, label, st->parse_buf, nfeats);
			MemoryContextSwitchTo(old);
		}
		PG_RETURN_POINTER(st);
	}

	if (!scene_active(st, scene) || u < st->train_lo || u >= st->train_hi)
		PG_RETURN_POINTER(st);	/* not a training row of this pass */
	if (st->collect_train)
	{
		if (st->train_rows == NULL)
			st->train_rows = mtms_kept_rows_create(st->train_cxt);
		mtms_kept_rows_add(st->train_rows, scene, label, st->parse_buf, nfeats);
		if ((mtms_kept_rows_count(st->train_rows) & 4095) == 0 &&
			MemoryContextMemAllocated(st->train_cxt, true) > st->train_limit)
		{
			/* too many to keep: this pass keeps none */
			st->collect_train = false;
			st->train_rows = NULL;
			MemoryContextReset(st->train_cxt);
		}
	}
	buffer_row(st, scene, label, st->parse_buf, nfeats);

	PG_RETURN_POINTER(st);
}

/* A training row for this pass: into the shuffle buffer, train when full. */
static void
buffer_row(MtmsTrainState *st, int scene, uint8 label, const MtmsFeature *feats,
		   int nfeats)
{
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	mtms_rowset_add(&st->buf, scene, label, feats, nfeats);
	MemoryContextSwitchTo(old);
	st->rows_trained++;
	if (st->buf.nrows >= st->opts.shuffle_buffer)
		process_buffer(st);
}

MtmsTrainState *
mtms_state_run_rows(const MtmsTrainState *base, const MtmsKeptRows *rows, int64 rows_in)
{
	MtmsTrainState *st = start_from_base(base, CurrentMemoryContext, true);
	int64		n = mtms_kept_rows_count(rows);

	state_prepare(st);
	st->rows_in = rows_in;
	for (int64 i = 0; i < n; i++)
	{
		int32		scene;
		uint8		label;
		int			nfeats;

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		nfeats = mtms_kept_rows_get(rows, i, &scene, &label, &st->parse_buf, &st->parse_cap);
		if (!scene_active(st, scene))
			continue;
		buffer_row(st, scene, label, st->parse_buf, nfeats);
	}
	finish_pass(st, &base->valid);
	return st;
}

/* ---------------------------------------------------------------------
 * Loss helpers
 * --------------------------------------------------------------------- */

double
mtms_bce(double p, bool y)
{
	const double eps = 1e-7;

	p = Min(Max(p, eps), 1.0 - eps);
	return y ? -log(p) : -log(1.0 - p);
}

static void
joint_loss_grad(float zctr, float zcvr, uint8 label, float *dctr,
				float *dcvr, double *loss, int64 *count)
{
	bool		click = (label & MTMS_LABEL_CLICK) != 0;
	bool		conv = (label & MTMS_LABEL_CONV) != 0;
	double		pc = mtms_sigmoid(zctr);
	double		pv = mtms_sigmoid(zcvr);
	double		q = pc * pv;
	double		qc = Min(q, 1.0 - 1e-7);
	double		y = (click && conv) ? 1.0 : 0.0;
	double		gc;
	double		gv;

	/* CTR: on every impression */
	gc = pc - (click ? 1.0 : 0.0);
	gv = 0.0;
	loss[MTMS_M_CTR] += mtms_bce(pc, click);
	count[MTMS_M_CTR]++;
	/* CVR: on clicked impressions */
	if (click)
	{
		gv += pv - (conv ? 1.0 : 0.0);
		loss[MTMS_M_CVR] += mtms_bce(pv, conv);
		count[MTMS_M_CVR]++;
	}
	/* CTCVR = pCTR x pCVR on every impression: dL/dz = (q - y)(1 - p)/(1 - q) */
	gc += (q - y) * (1.0 - pc) / (1.0 - qc);
	gv += (q - y) * (1.0 - pv) / (1.0 - qc);
	loss[MTMS_M_CTCVR] += mtms_bce(q, y > 0.5);
	count[MTMS_M_CTCVR]++;

	*dctr = (float) gc;
	*dcvr = (float) gv;
}

void
mtms_joint_batch_grads(MtmsTrainState *st, int scene, const MtmsRowSet *rs,
					   const int64 *rows, int n)
{
	MtmsBatchWork *w = st->work;

	for (int i = 0; i < n; i++)
	{
		joint_loss_grad(w->za[i], w->zb[i], rs->label[rows[i]],
						&w->da[i], &w->db[i],
						st->loss_sum + scene * MTMS_NMETRICS,
						st->loss_n + scene * MTMS_NMETRICS);
		w->da[i] /= n;
		w->db[i] /= n;
	}
}

/* ---------------------------------------------------------------------
 * Validation
 * --------------------------------------------------------------------- */

#define EVAL_BATCH 512

/* Phase-1 logits of CTR and CVR for rows[0..n) of vs. */
static void
eval_batch(MtmsTrainState *st, int scene, const MtmsRowSet *vs,
		   const int64 *rows, int n, float *zc, float *zv)
{
	MtmsModel  *m = st->model;
	MtmsBatchWork *w = st->work;
	int			pc = MTMS_PAIR(scene, MTMS_TASK_CTR);
	int			pv = MTMS_PAIR(scene, MTMS_TASK_CVR);
	int			in1 = MTMS_INPUT1(m);

	for (int i = 0; i < n; i++)
	{
		const MtmsFeature *f = vs->feats + vs->start[rows[i]];
		int			nf = (int) (vs->start[rows[i] + 1] - vs->start[rows[i]]);

		mtms_input1(m, pc, f, nf, w->xa + (Size) i * in1);
		mtms_input1(m, pv, f, nf, w->xb + (Size) i * in1);
	}
	mtms_tower_forward(m->tower1[pc], w->w1a, w->xa, n, zc);
	mtms_tower_forward(m->tower1[pv], w->w1b, w->xb, n, zv);
}

/*
 * CTR and CVR logits of scene's validation rows rows[0..nr) of vs, into
 * zc / zv.  The fine-tune stage goes through the per-key projections of
 * joined_keys.c (built once per row set: the embeddings are
 * frozen), the phase-1 stages through the towers' batch forward.
 */
static void
validation_logits(MtmsTrainState *st, int scene, const MtmsRowSet *vs,
				  const int64 *rows, int64 nr, float *zc, float *zv)
{
	MtmsModel  *m = st->model;

	if (st->stage == MTMS_STAGE_FINETUNE)
	{
		if (st->vkeys == NULL || st->vkeys_of != vs)
		{
			st->vkeys = palloc0(sizeof(MtmsJoinedKeys *) * m->nscenes);
			st->vkeys_of = vs;
		}
		if (st->vkeys[scene] == NULL)
			st->vkeys[scene] = mtms_joined_keys_build(m, vs, rows, nr);
		mtms_joined_keys_logits(st->vkeys[scene], m, m->tower2[MTMS_PAIR(scene, MTMS_TASK_CTR)], zc);
		mtms_joined_keys_logits(st->vkeys[scene], m, m->tower2[MTMS_PAIR(scene, MTMS_TASK_CVR)], zv);
		return;
	}
	for (int64 b = 0; b < nr; b += EVAL_BATCH)
	{
		int			n = (int) Min(EVAL_BATCH, nr - b);

		CHECK_FOR_INTERRUPTS();
		eval_batch(st, scene, vs, rows + b, n, zc + b, zv + b);
	}
}

/*
 * Fill st->vloss / vauc / vn / vpos from the validation rows vs.  With
 * auc_below, only the scenes whose criterion (the sum of their losses) is
 * below auc_below[scene] get AUCs, the others NaN: a checkpoint chooses by
 * loss and needs the AUCs of the scenes it keeps, and the sorts of the AUCs
 * cost more than the rest of its metrics.
 */
static void
evaluate_validation(MtmsTrainState *st, const MtmsRowSet *vs, const double *auc_below)
{
	MtmsModel  *m = st->model;
	int			ns = m->nscenes;
	int64	   *rows;
	int64	   *count;
	double	   *score[MTMS_NMETRICS];
	bool	   *label[MTMS_NMETRICS];
	float	   *zc;
	float	   *zv;
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	for (int i = 0; i < ns * MTMS_NMETRICS; i++)
	{
		st->vloss[i] = NAN;
		st->vauc[i] = NAN;
		st->vn[i] = 0;
		st->vpos[i] = 0;
	}
	count = palloc0(sizeof(int64) * ns);
	for (int64 i = 0; i < vs->nrows; i++)
		count[vs->scene[i]]++;

	for (int s = 0; s < ns; s++)
	{
		int64		nr = 0;
		int64		k[MTMS_NMETRICS] = {0, 0, 0};
		double		lsum[MTMS_NMETRICS] = {0, 0, 0};
		bool		with_auc;

		if (!scene_active(st, s) || count[s] == 0)
			continue;
		rows = palloc_extended(sizeof(int64) * count[s], MCXT_ALLOC_HUGE);
		for (int64 i = 0; i < vs->nrows; i++)
			if (vs->scene[i] == s)
				rows[nr++] = i;
		for (int t = 0; t < MTMS_NMETRICS; t++)
		{
			score[t] = palloc_extended(sizeof(double) * nr, MCXT_ALLOC_HUGE);
			label[t] = palloc_extended(sizeof(bool) * nr, MCXT_ALLOC_HUGE);
		}
		zc = palloc_extended(sizeof(float) * nr, MCXT_ALLOC_HUGE);
		zv = palloc_extended(sizeof(float) * nr, MCXT_ALLOC_HUGE);
		validation_logits(st, s, vs, rows, nr, zc, zv);

		for (int64 i = 0; i < nr; i++)
		{
			uint8		lab = vs->label[rows[i]];
			bool		click = (lab & MTMS_LABEL_CLICK) != 0;
			bool		conv = (lab & MTMS_LABEL_CONV) != 0;
			double		pc = mtms_sigmoid(zc[i]);
			double		pv = mtms_sigmoid(zv[i]);

			score[MTMS_M_CTR][k[MTMS_M_CTR]] = pc;
			label[MTMS_M_CTR][k[MTMS_M_CTR]++] = click;
			lsum[MTMS_M_CTR] += mtms_bce(pc, click);
			if (click)
			{
				score[MTMS_M_CVR][k[MTMS_M_CVR]] = pv;
				label[MTMS_M_CVR][k[MTMS_M_CVR]++] = conv;
				lsum[MTMS_M_CVR] += mtms_bce(pv, conv);
			}
			score[MTMS_M_CTCVR][k[MTMS_M_CTCVR]] = pc * pv;
			label[MTMS_M_CTCVR][k[MTMS_M_CTCVR]++] = click && conv;
			lsum[MTMS_M_CTCVR] += mtms_bce(pc * pv, click && conv);
		}
		with_auc = true;
		if (auc_below)
		{
			/* the checkpoint criterion: the sum of the scene's losses */
			double		crit = 0;

			for (int t = 0; t < MTMS_NMETRICS; t++)
				if (k[t] > 0)
					crit += lsum[t] / k[t];
			with_auc = k[MTMS_M_CTR] > 0 && crit < auc_below[s];
		}
		for (int t = 0; t < MTMS_NMETRICS; t++)
		{
			int			slot = s * MTMS_NMETRICS + t;
			int64		pos = 0;

			for (int64 i = 0; i < k[t]; i++)
				pos += label[t][i];
			st->vn[slot] = k[t];
			st->vpos[slot] = pos;
			st->vloss[slot] = k[t] > 0 ? lsum[t] / k[t] : NAN;
			if (with_auc)
				st->vauc[slot] = mtms_auc_compute(score[t], label[t], k[t]);
			pfree(score[t]);
			pfree(label[t]);
		}
		pfree(zc);
		pfree(zv);
		pfree(rows);
	}
	pfree(count);
	MemoryContextSwitchTo(old);
}

/* Validate the fine-tune towers; each scene keeps its best ones. */
static void
checkpoint(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;
	MemoryContext old;

	if (st->best2 == NULL)
		return;
	/* the towers have not moved since the last checkpoint: nothing to learn */
	if (st->checked_at == st->rows_trained)
		return;
	st->checked_at = st->rows_trained;
	evaluate_validation(st, st->eval_rows, st->best_crit);
	/* in the model's context: the kept towers become the model's */
	old = MemoryContextSwitchTo(m->cxt);
	for (int s = 0; s < m->nscenes; s++)
	{
		double		crit = 0;
		int			base = s * MTMS_NMETRICS;

		if (!st->unit_active[s] || isnan(st->vloss[base + MTMS_M_CTR]))
			continue;
		for (int t = 0; t < MTMS_NMETRICS; t++)
			if (!isnan(st->vloss[base + t]))
				crit += st->vloss[base + t];
		if (mtms_improved(crit, st->best_crit[s], st->opts.min_delta))
		{
			st->best_crit[s] = crit;
			for (int t = 0; t < MTMS_NMETRICS; t++)
			{
				st->best_vloss[base + t] = st->vloss[base + t];
				st->best_vauc[base + t] = st->vauc[base + t];
				st->best_vn[base + t] = st->vn[base + t];
				st->best_vpos[base + t] = st->vpos[base + t];
			}
			for (int task = 0; task < MTMS_NTASKS; task++)
			{
				int			p = MTMS_PAIR(s, task);

				if (st->best2[p])
					mtms_tower_free(st->best2[p]);
				st->best2[p] = mtms_tower_copy(m->tower2[p]);
			}
		}
	}
	MemoryContextSwitchTo(old);
}

/* End of a pass: put every scene's best checkpointed towers in place. */
static void
restore_best(MtmsTrainState *st)
{
	MtmsModel  *m = st->model;

	if (st->best2 == NULL)
		return;
	checkpoint(st);
	for (int p = 0; p < m->npairs; p++)
	{
		if (st->best2[p])
		{
			int64		n = m->tower2[p]->nsamples;

			mtms_tower_free(m->tower2[p]);
			m->tower2[p] = st->best2[p];
			m->tower2[p]->nsamples = n;
			st->best2[p] = NULL;
		}
	}
	st->best2 = NULL;
}

/*
 * The end of a pass: train on what is still buffered, put each scene's best
 * fine-tune towers in place, and fill the metrics the pass reports.
 */
static void
finish_pass(MtmsTrainState *st, const MtmsRowSet *vs)
{
	process_buffer(st);
	restore_best(st);
	final_validation(st, vs);
}

/*
 * The metrics a pass reports, after restore_best: those of each scene's
 * best checkpoint when this state trained alone (the restored towers are
 * the ones that checkpoint validated; same numbers, one validation less),
 * else a validation of vs.
 */
static void
final_validation(MtmsTrainState *st, const MtmsRowSet *vs)
{
	int			nm = st->model->nscenes * MTMS_NMETRICS;

	if (st->best_vloss == NULL || st->combined)
	{
		evaluate_validation(st, vs, NULL);
		return;
	}
	memcpy(st->vloss, st->best_vloss, sizeof(double) * nm);
	memcpy(st->vauc, st->best_vauc, sizeof(double) * nm);
	memcpy(st->vn, st->best_vn, sizeof(int64) * nm);
	memcpy(st->vpos, st->best_vpos, sizeof(int64) * nm);
}

void
mtms_state_validate(MtmsTrainState *st)
{
	if (st->work == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->work = mtms_batch_work_create(st->model, st->opts.batch_size);
		MemoryContextSwitchTo(old);
	}
	evaluate_validation(st, &st->valid, NULL);
}

/* ---------------------------------------------------------------------
 * Combine, serialize, deserialize, final
 * --------------------------------------------------------------------- */

static void
combine_into(MtmsTrainState *a, MtmsTrainState *b)
{
	MtmsModel  *ma = a->model;
	MtmsModel  *mb = b->model;
	int			n = ma->nscenes * MTMS_NMETRICS;
	MemoryContext old = MemoryContextSwitchTo(a->cxt);

	if (ma->npairs != mb->npairs || ma->dim != mb->dim || ma->nfields != mb->nfields ||
		ma->nhidden != mb->nhidden || a->stage != b->stage)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: cannot combine training states of different shapes")));
	for (int s = 0; s < ma->nscenes; s++)
		if (strcmp(ma->scenes[s], mb->scenes[s]) != 0 ||
			ma->scene_birth[s] != mb->scene_birth[s])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: cannot combine training states of different models")));
	for (int f = 0; f < ma->nfields; f++)
		if (strcmp(ma->fields[f], mb->fields[f]) != 0 ||
			ma->field_birth[f] != mb->field_birth[f])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: cannot combine training states of different models")));

	for (int p = 0; p < ma->npairs; p++)
	{
		int64		na = ma->tower1[p]->nsamples;
		int64		nb = mb->tower1[p]->nsamples;

		mtms_emb_merge(ma->emb[p], mb->emb[p]);
		if (na + nb > 0)
			mtms_tower_average(ma->tower1[p], (double) na, mb->tower1[p], (double) nb);
		ma->tower1[p]->nsamples = na + nb;
		if (ma->tower2[p] && mb->tower2[p])
		{
			na = ma->tower2[p]->nsamples;
			nb = mb->tower2[p]->nsamples;
			if (na + nb > 0)
				mtms_tower_average(ma->tower2[p], (double) na, mb->tower2[p], (double) nb);
			ma->tower2[p]->nsamples = na + nb;
		}
	}
	for (int i = 0; i < n; i++)
	{
		a->loss_sum[i] += b->loss_sum[i];
		a->loss_n[i] += b->loss_n[i];
	}
	a->combined = true;
	a->rows_in += b->rows_in;
	a->rows_trained += b->rows_trained;
	a->bad_conversions += b->bad_conversions;
	if (a->collect_valid)
		mtms_rowset_append(&a->valid, &b->valid);
	MemoryContextSwitchTo(old);
}

/* serialization primitives */
static void
put(StringInfo buf, const void *data, Size len)
{
	if (len > 0)
		appendBinaryStringInfo(buf, data, (int) len);
}

static void
put_rowset(StringInfo buf, const MtmsRowSet *rs)
{
	put(buf, &rs->nrows, sizeof(int64));
	put(buf, &rs->nfeats, sizeof(int64));
	if (rs->nrows > 0)
	{
		put(buf, rs->scene, sizeof(int32) * rs->nrows);
		put(buf, rs->label, sizeof(uint8) * rs->nrows);
		put(buf, rs->start, sizeof(int64) * (rs->nrows + 1));
		put(buf, rs->feats, sizeof(MtmsFeature) * rs->nfeats);
	}
}

static void
put_name(StringInfo buf, const char *s)
{
	int32		len = strlen(s);

	put(buf, &len, sizeof(int32));
	put(buf, s, len);
}

static void
serialize_state(StringInfo buf, const MtmsTrainState *st, bool with_valid)
{
	const MtmsModel *m = st->model;
	uint32		magic = STATE_MAGIC;
	int32		stage = st->stage;
	int			n = m->nscenes * MTMS_NMETRICS;
	bool		has_valid = with_valid && st->valid.nrows > 0;

	put(buf, &magic, sizeof(uint32));
	put(buf, &stage, sizeof(int32));
	put(buf, &st->epoch, sizeof(int32));
	put(buf, &st->opts, sizeof(MtmsOptions));
	put(buf, &m->nscenes, sizeof(int32));
	put(buf, &m->nfields, sizeof(int32));
	put(buf, &m->dim, sizeof(int32));
	put(buf, &m->nhidden, sizeof(int32));
	put(buf, m->hidden, sizeof(m->hidden));
	put(buf, &m->seed, sizeof(uint64));
	for (int s = 0; s < m->nscenes; s++)
		put_name(buf, m->scenes[s]);
	for (int f = 0; f < m->nfields; f++)
		put_name(buf, m->fields[f]);
	put(buf, m->scene_birth, sizeof(int32) * m->nscenes);
	put(buf, m->field_birth, sizeof(int32) * m->nfields);
	for (int p = 0; p < m->npairs; p++)
	{
		bool		has2 = m->tower2[p] != NULL;

		mtms_emb_serialize(buf, m->emb[p]);
		mtms_tower_serialize(buf, m->tower1[p]);
		put(buf, &has2, sizeof(bool));
		if (has2)
			mtms_tower_serialize(buf, m->tower2[p]);
	}
	put(buf, st->unit_active, sizeof(bool) * st->nunits);
	put(buf, &st->collect_valid, sizeof(bool));
	put(buf, &st->expected_rows, sizeof(int64));
	put(buf, &st->train_lo, sizeof(double));
	put(buf, &st->train_hi, sizeof(double));
	{
		bool		has_frozen = st->frozen_fields != NULL;

		put(buf, &has_frozen, sizeof(bool));
		if (has_frozen)
			put(buf, st->frozen_fields, sizeof(int32) * m->npairs);
	}
	put(buf, &has_valid, sizeof(bool));
	if (has_valid)
		put_rowset(buf, &st->valid);
	put(buf, st->loss_sum, sizeof(double) * n);
	put(buf, st->loss_n, sizeof(int64) * n);
	put(buf, &st->rows_in, sizeof(int64));
	put(buf, &st->rows_trained, sizeof(int64));
	put(buf, &st->bad_conversions, sizeof(int64));
}

static void
get(const char **p, const char *end, void *dst, Size len)
{
	if ((Size) (end - *p) < len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state is truncated")));
	if (len == 0)
		return;
	memcpy(dst, *p, len);
	*p += len;
}

/* a bool written by put(): exactly 0 or 1 (any other byte is not a bool) */
static bool
get_bool(const char **p, const char *end)
{
	uint8		b;

	get(p, end, &b, 1);
	if (b > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid boolean")));
	return b == 1;
}

/* A tower of the model's shape: in inputs, the model's hidden layers, 1 output. */
static bool
tower_fits(const MtmsTower *t, const MtmsModel *m, int in)
{
	if (t->nlayers != m->nhidden + 1 || t->sizes[0] != in || t->sizes[t->nlayers] != 1)
		return false;
	for (int l = 0; l < m->nhidden; l++)
		if (t->sizes[l + 1] != m->hidden[l])
			return false;
	return true;
}

static int32
get_count(const char **p, const char *end, int32 lo, int32 hi, const char *what)
{
	int32		v;

	get(p, end, &v, sizeof(int32));
	if (v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid %s: %d", what, v)));
	return v;
}

static char *
get_name(const char **p, const char *end)
{
	int32		len = get_count(p, end, 1, MTMS_NAME_MAXLEN, "name length");
	char	   *s = palloc(len + 1);

	get(p, end, s, len);
	s[len] = '\0';
	if ((int32) strlen(s) != len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has a name with a NUL byte")));
	return s;
}

static void
get_rowset(const char **p, const char *end, MtmsRowSet *rs, int nscenes, int nfields)
{
	int64		nrows;
	int64		nfeats;

	get(p, end, &nrows, sizeof(int64));
	get(p, end, &nfeats, sizeof(int64));
	if (nrows < 0 || nfeats < 0 || nrows > (int64) (end - *p) || nfeats > (int64) (end - *p))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid row counts")));
	mtms_rowset_init(rs);
	if (nrows == 0)
		return;
	rowset_reserve(rs, nrows, nfeats);
	get(p, end, rs->scene, sizeof(int32) * nrows);
	get(p, end, rs->label, sizeof(uint8) * nrows);
	get(p, end, rs->start, sizeof(int64) * (nrows + 1));
	get(p, end, rs->feats, sizeof(MtmsFeature) * nfeats);
	rs->nrows = nrows;
	rs->nfeats = nfeats;
	for (int64 i = 0; i < nrows; i++)
		if (rs->scene[i] < 0 || rs->scene[i] >= nscenes ||
			rs->start[i] < 0 || rs->start[i] > rs->start[i + 1])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has an invalid row")));
	for (int64 i = 0; i < nfeats; i++)
		if (rs->feats[i].field < 0 || rs->feats[i].field >= nfields)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has a feature of an unknown field")));
	if (rs->start[0] != 0 || rs->start[nrows] != nfeats)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid feature offsets")));
}

static MtmsTrainState *
deserialize_state(const char *data, Size len, MemoryContext parent)
{
	MtmsTrainState *st = state_alloc(parent);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	MemoryContext mcxt;
	const char *p = data;
	const char *end = data + len;
	uint32		magic;
	int32		stage;
	MtmsModel  *m;
	bool		has_valid;
	int			n;

	get(&p, end, &magic, sizeof(uint32));
	if (magic != STATE_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("not an mtms training state (bad magic number)")));
	get(&p, end, &stage, sizeof(int32));
	if (stage < MTMS_STAGE_EMBEDDING || stage > MTMS_STAGE_FINETUNE)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid stage %d", stage)));
	st->stage = (MtmsStage) stage;
	get(&p, end, &st->epoch, sizeof(int32));
	get(&p, end, &st->opts, sizeof(MtmsOptions));
	if (st->opts.batch_size < 1 || st->opts.batch_size > 65536 ||
		st->opts.shuffle_buffer < 1 || st->opts.shuffle_buffer > 16777216)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid options")));

	mcxt = AllocSetContextCreate(st->cxt, "mtms model", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(mcxt);
	m = palloc0(sizeof(MtmsModel));
	m->cxt = mcxt;
	m->nscenes = get_count(&p, end, 1, MTMS_MAX_SCENES, "scene count");
	m->nfields = get_count(&p, end, 1, MTMS_MAX_FIELDS, "field count");
	m->dim = get_count(&p, end, 1, MTMS_MAX_DIM, "embedding dimension");
	m->nhidden = get_count(&p, end, 1, MTMS_MAX_HIDDEN_LAYERS, "layer count");
	get(&p, end, m->hidden, sizeof(m->hidden));
	get(&p, end, &m->seed, sizeof(uint64));
	m->npairs = m->nscenes * MTMS_NTASKS;
	m->scenes = palloc(sizeof(char *) * m->nscenes);
	m->fields = palloc(sizeof(char *) * m->nfields);
	for (int s = 0; s < m->nscenes; s++)
		m->scenes[s] = get_name(&p, end);
	for (int f = 0; f < m->nfields; f++)
		m->fields[f] = get_name(&p, end);
	m->scene_birth = palloc(sizeof(int32) * m->nscenes);
	m->field_birth = palloc(sizeof(int32) * m->nfields);
	get(&p, end, m->scene_birth, sizeof(int32) * m->nscenes);
	get(&p, end, m->field_birth, sizeof(int32) * m->nfields);
	mtms_model_layout(m);
	m->emb = palloc0(sizeof(MtmsEmbStore *) * m->npairs);
	m->tower1 = palloc0(sizeof(MtmsTower *) * m->npairs);
	m->tower2 = palloc0(sizeof(MtmsTower *) * m->npairs);
	for (int pi = 0; pi < m->npairs; pi++)
	{
		bool		has2;

		m->emb[pi] = mtms_emb_deserialize(&p, end);
		m->tower1[pi] = mtms_tower_deserialize(&p, end);
		has2 = get_bool(&p, end);
		if (has2)
			m->tower2[pi] = mtms_tower_deserialize(&p, end);
		if (mtms_emb_dim(m->emb[pi]) != m->dim ||
			!tower_fits(m->tower1[pi], m, MTMS_INPUT1(m)) ||
			(m->tower2[pi] && !tower_fits(m->tower2[pi], m, MTMS_INPUT2(m))) ||
			(stage == MTMS_STAGE_FINETUNE && m->tower2[pi] == NULL))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has inconsistent shapes")));
	}
	MemoryContextSwitchTo(st->cxt);
	st->model = m;
	st->nunits = mtms_stage_units(st->stage, m->nscenes);
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	for (int u = 0; u < st->nunits; u++)
		st->unit_active[u] = get_bool(&p, end);
	st->collect_valid = get_bool(&p, end);
	get(&p, end, &st->expected_rows, sizeof(int64));
	get(&p, end, &st->train_lo, sizeof(double));
	get(&p, end, &st->train_hi, sizeof(double));
	{
		bool		has_frozen;

		has_frozen = get_bool(&p, end);
		if (has_frozen)
		{
			st->frozen_fields = palloc(sizeof(int32) * m->npairs);
			get(&p, end, st->frozen_fields, sizeof(int32) * m->npairs);
			for (int i = 0; i < m->npairs; i++)
				if (st->frozen_fields[i] < 0 || st->frozen_fields[i] > m->nfields)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_CORRUPTED),
							 errmsg("mtms training state has an invalid frozen field count")));
		}
	}
	has_valid = get_bool(&p, end);
	if (has_valid)
		get_rowset(&p, end, &st->valid, m->nscenes, m->nfields);
	else
		mtms_rowset_init(&st->valid);
	alloc_stats(st);
	n = m->nscenes * MTMS_NMETRICS;
	get(&p, end, st->loss_sum, sizeof(double) * n);
	get(&p, end, st->loss_n, sizeof(int64) * n);
	get(&p, end, &st->rows_in, sizeof(int64));
	get(&p, end, &st->rows_trained, sizeof(int64));
	get(&p, end, &st->bad_conversions, sizeof(int64));
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has %d trailing bytes", (int) (end - p))));
	MemoryContextSwitchTo(old);
	return st;
}

PG_FUNCTION_INFO_V1(mtms_train_combinefn);
Datum
mtms_train_combinefn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MtmsTrainState *a;
	MtmsTrainState *b;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms_train_combinefn called in non-aggregate context");
	a = PG_ARGISNULL(0) ? NULL : (MtmsTrainState *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (MtmsTrainState *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		/* b was built under aggcxt by the deserializer: adopt it */
		PG_RETURN_POINTER(b);
	}
	combine_into(a, b);
	mtms_state_free(b);
	PG_RETURN_POINTER(a);
}

PG_FUNCTION_INFO_V1(mtms_train_serialfn);
Datum
mtms_train_serialfn(PG_FUNCTION_ARGS)
{
	MtmsTrainState *st = (MtmsTrainState *) PG_GETARG_POINTER(0);
	StringInfoData buf;
	bytea	   *out;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "mtms_train_serialfn called in non-aggregate context");
	/* train on what is still buffered: the leader never sees these rows */
	process_buffer(st);
	restore_best(st);
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	serialize_state(&buf, st, st->collect_valid);
	out = (bytea *) buf.data;
	SET_VARSIZE(out, buf.len);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(mtms_train_deserialfn);
Datum
mtms_train_deserialfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	bytea	   *in;
	MtmsTrainState *st;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms_train_deserialfn called in non-aggregate context");
	in = PG_GETARG_BYTEA_PP(0);
	st = deserialize_state(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), aggcxt);
	/* the work area, for the final function's validation pass */
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->work = mtms_batch_work_create(st->model, st->opts.batch_size);
		mtms_rowset_init(&st->buf);
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(mtms_train_finalfn);
Datum
mtms_train_finalfn(PG_FUNCTION_ARGS)
{
	MtmsTrainState *st;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "mtms_train_finalfn called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (MtmsTrainState *) PG_GETARG_POINTER(0);
	if (st->token == NULL || strcmp(st->token, registry.token) != 0 ||
		registry.owner == NULL)
	{
		/* partial states from workers carry no token; take it from the base */
		if (registry.owner == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("mtms training aggregates can only run inside mtms_train()")));
	}
	finish_pass(st, st->collect_valid ? &st->valid : &registry.base->valid);
	MemoryContextSetParent(st->cxt, registry.owner);
	registry.result = st;
	PG_RETURN_INT64(st->rows_trained);
}
