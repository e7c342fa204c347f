/*
 * train_parallel.c
 *    Unit jobs spread over parallel workers, the way pgvector's parallel
 *    HNSW build uses PostgreSQL's parallel machinery (src/hnswbuild.c): a
 *    ParallelContext, a dynamic shared memory segment laid out with
 *    shm_toc, LaunchParallelWorkers, the leader taking part, and a serial
 *    fallback when there is nothing to share the work with.
 *
 * The segment holds what every unit reads, once, read-only: the row stores
 * of the window and of the validation rows, the fine-tune's joined
 * embedding tables, the model's shape and the options.  Each job's
 * starting parameters go into a DSA area in the segment, and the leader
 * drops its own copy of the big ones (embeddings) meanwhile; a participant
 * takes the next job (largest first: an atomic counter over the jobs in
 * plan order), reads the unit's parameters into its skeleton of the model,
 * frees them from the area, trains the unit (unit_train.c) and writes the
 * trained parameters back into the area.  At the end the leader puts every
 * unit's parameters into its model.  A unit's training does not depend on
 * which process ran it, so the model is the one a serial run gives, bit for
 * bit.  An error or a cancel in any process ends them all (PostgreSQL's
 * parallel machinery), and the model's previous version stays untouched.
 */
#include "train_parallel.h"
#include "progress.h"

#include <unistd.h>

#include "access/parallel.h"
#include "access/xact.h"
#include "optimizer/optimizer.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/shm_toc.h"
#include "utils/dsa.h"
#include "utils/memutils.h"

#include "joined_keys.h"
#include "train_memory.h"
#include "unit_wire.h"

#define KEY_SHARED		UINT64CONST(0x6d74740000000001)
#define KEY_ROWS		UINT64CONST(0x6d74740000000002)
#define KEY_VALID		UINT64CONST(0x6d74740000000003)
#define KEY_JROWS		UINT64CONST(0x6d74740000000004)
#define KEY_JVALID		UINT64CONST(0x6d74740000000005)
#define KEY_SHAPE		UINT64CONST(0x6d74740000000006)
#define KEY_FROZEN		UINT64CONST(0x6d74740000000007)
#define KEY_DSA			UINT64CONST(0x6d74740000000008)

/* initial size of the DSA area; it grows by itself */
#define AREA_SIZE		((Size) 4 * 1024 * 1024)

/* A job's state: its start is fed, then it is trained, then taken back. */
#define JOB_WAITING		0		/* its starting parameters are not there yet */
#define JOB_READY		1		/* they are in the area */
#define JOB_DONE		2		/* its trained parameters are in the area */

typedef struct ParJob
{
	int32		unit;
	bool		start_candidate;
	pg_atomic_uint32 state;
	dsa_pointer start;			/* the unit's starting parameters */
	Size		start_len;
	dsa_pointer result;			/* its trained parameters */
	Size		result_len;
	dsa_pointer history;		/* outcome.nhistory checkpoints */
	MtmsUnitOutcome outcome;	/* its history pointer is the trainer's own */
} ParJob;

typedef struct ParShared
{
	int32		stage;
	int32		njobs;
	MtmsOptions opts;
	bool		has_frozen;
	Size		shape_len;
	Size		jrows_len;		/* bytes of each joined table (0: none) */
	Size		jvalid_len;
	pg_atomic_uint32 next_job;	/* jobs claimed so far */
	ConditionVariable cv;		/* a job became ready, or done */
	ParJob		jobs[FLEXIBLE_ARRAY_MEMBER];
} ParShared;

/* What a participant reads from the segment. */
typedef struct Participant
{
	ParShared  *shared;
	dsa_area   *area;
	MtmsUnitData data;
	const int32 *frozen;
	MtmsModel  *skeleton;
} Participant;

/* Wait until the leader has fed job's starting parameters. */
static void
wait_ready(ParShared *sh, ParJob *job)
{
	ConditionVariablePrepareToSleep(&sh->cv);
	while (pg_atomic_read_u32(&job->state) != JOB_READY)
		ConditionVariableSleep(&sh->cv, PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
}

/* Claim the next job; false when none is left. */
static bool
claim(ParShared *sh, uint32 *j)
{
	*j = pg_atomic_fetch_add_u32(&sh->next_job, 1);
	return *j < (uint32) sh->njobs;
}

/*
 * A unit's history into the area (the outcome's own copy is freed), and
 * back out of it into the leader's memory.  Checkpoints are plain structs:
 * every participant runs the same library.
 */
static void
put_history(dsa_area *area, ParJob *job)
{
	Size		len = sizeof(MtmsCheckpoint) * Max(job->outcome.nhistory, 1);

	job->history = dsa_allocate_extended(area, len, DSA_ALLOC_HUGE);
	memcpy(dsa_get_address(area, job->history), job->outcome.history, len);
	pfree(job->outcome.history);
	job->outcome.history = NULL;
}

static MtmsCheckpoint *
take_history(dsa_area *area, ParJob *job)
{
	Size		len = sizeof(MtmsCheckpoint) * Max(job->outcome.nhistory, 1);
	MtmsCheckpoint *h = palloc(len);

	memcpy(h, dsa_get_address(area, job->history), len);
	dsa_free(area, job->history);
	job->history = InvalidDsaPointer;
	return h;
}

/* Train job j in this process: its start from the area, its result back. */
static void
train_job(Participant *pt, uint32 j)
{
	ParShared  *sh = pt->shared;
	const MtmsStageInfo *si = mtms_stage_info((MtmsStage) sh->stage);
	ParJob	   *job = &sh->jobs[j];
	MtmsUnitJob uj;
	StringInfoData buf;

	CHECK_FOR_INTERRUPTS();
	wait_ready(sh, job);
	mtms_wire_read_unit(dsa_get_address(pt->area, job->start), job->start_len,
						pt->skeleton, si, job->unit);
	dsa_free(pt->area, job->start);
	job->start = InvalidDsaPointer;

	uj.si = si;
	uj.unit = job->unit;
	uj.model = pt->skeleton;
	uj.opts = &sh->opts;
	uj.frozen_fields = si->trains_embeddings ? pt->frozen : NULL;
	uj.data = &pt->data;
	uj.start_is_candidate = job->start_candidate;
	mtms_unit_train(&uj, &job->outcome);

	initStringInfo(&buf);
	mtms_wire_unit(&buf, pt->skeleton, si, job->unit);
	job->result = dsa_allocate_extended(pt->area, buf.len, DSA_ALLOC_HUGE);
	memcpy(dsa_get_address(pt->area, job->result), buf.data, buf.len);
	job->result_len = buf.len;
	pfree(buf.data);
	put_history(pt->area, job);
	mtms_wire_drop_unit(pt->skeleton, si, job->unit);
	pg_write_barrier();
	pg_atomic_write_u32(&job->state, JOB_DONE);
	ConditionVariableBroadcast(&sh->cv);
	ereport(NOTICE,
			(errmsg("mtms_train %s %s: %.2f passes over %lld rows, best at validation %d of %d: valid loss %.5f, valid AUC %.4f, %.2f s",
					si->name, mtms_unit_name(pt->skeleton, si, job->unit),
					job->outcome.epochs, (long long) job->outcome.best.samples,
					job->outcome.best_checkpoint, job->outcome.checkpoints,
					job->outcome.best.valid_loss, job->outcome.best.valid_auc,
					job->outcome.seconds)));
}

/* A worker: take jobs until none is left. */
static void
participate(Participant *pt)
{
	uint32		j;

	while (claim(pt->shared, &j))
		train_job(pt, j);
}

/* A participant's view of the segment (leader and workers alike). */
static void
attach(Participant *pt, shm_toc *toc, dsm_segment *seg, bool leader)
{
	char	   *shape;

	pt->shared = shm_toc_lookup(toc, KEY_SHARED, false);
	pt->data.rows = shm_toc_lookup(toc, KEY_ROWS, false);
	pt->data.valid = shm_toc_lookup(toc, KEY_VALID, false);
	pt->data.joined_rows = pt->shared->jrows_len ? shm_toc_lookup(toc, KEY_JROWS, false) : NULL;
	pt->data.joined_valid = pt->shared->jvalid_len ? shm_toc_lookup(toc, KEY_JVALID, false) : NULL;
	pt->frozen = pt->shared->has_frozen ? shm_toc_lookup(toc, KEY_FROZEN, false) : NULL;
	if (!leader)
		pt->area = dsa_attach_in_place(shm_toc_lookup(toc, KEY_DSA, false), seg);
	shape = shm_toc_lookup(toc, KEY_SHAPE, false);
	pt->skeleton = mtms_wire_read_shape(shape, pt->shared->shape_len);
}

/* Worker entry point (see CreateParallelContext). */
PGDLLEXPORT void mtms_train_parallel_main(dsm_segment *seg, shm_toc *toc);

void
mtms_train_parallel_main(dsm_segment *seg, shm_toc *toc)
{
	Participant pt;

	memset(&pt, 0, sizeof(pt));
	attach(&pt, toc, seg, false);
	participate(&pt);
	dsa_detach(pt.area);
}

/*
 * Whether the leader trains units too: when no worker came, always; else
 * as parallel_leader_participation says, unless the workers already fill
 * every CPU (one more process there only slows the largest unit down,
 * which bounds the stage).
 */
static bool
leader_participates(int launched)
{
	long		ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (launched == 0)
		return true;
	return parallel_leader_participation && (ncpu <= 0 || launched < ncpu);
}

/* Sizes of the segment's parts. */
typedef struct Sizes
{
	Size		shared;
	Size		shape;
	Size		frozen;
	Size		jrows;
	Size		jvalid;
} Sizes;

static void
estimate(ParallelContext *pcxt, const MtmsUnitPlan *plan, const Sizes *sz)
{
	int			keys = 4;

	shm_toc_estimate_chunk(&pcxt->estimator, sz->shared);
	shm_toc_estimate_chunk(&pcxt->estimator, plan->data.rows->size);
	shm_toc_estimate_chunk(&pcxt->estimator, plan->data.valid->size);
	shm_toc_estimate_chunk(&pcxt->estimator, sz->shape);
	shm_toc_estimate_chunk(&pcxt->estimator, AREA_SIZE);
	if (sz->jrows)
		shm_toc_estimate_chunk(&pcxt->estimator, sz->jrows), keys++;
	if (sz->jvalid)
		shm_toc_estimate_chunk(&pcxt->estimator, sz->jvalid), keys++;
	if (sz->frozen)
		shm_toc_estimate_chunk(&pcxt->estimator, sz->frozen), keys++;
	shm_toc_estimate_keys(&pcxt->estimator, keys + 1);
}

/* Copy len bytes of data into a new chunk of the segment under key. */
static void *
put_chunk(ParallelContext *pcxt, uint64 key, const void *data, Size len)
{
	void	   *p = shm_toc_allocate(pcxt->toc, Max(len, 1));

	if (len > 0)
		memcpy(p, data, len);
	shm_toc_insert(pcxt->toc, key, p);
	return p;
}

/*
 * The leader feeds the jobs' starting parameters into the area a few jobs
 * ahead of the claims, and takes the trained units back into its model as
 * they come: the area holds a few units at a time, never the whole stage,
 * and the leader's model gives each unit's big parameters away while it is
 * elsewhere (its embeddings in phase 1, its fine-tune towers in the
 * fine-tune).
 */
typedef struct Feeder
{
	MtmsTrainCtx *cx;
	const MtmsUnitPlan *plan;
	ParShared  *sh;
	dsa_area   *area;
	MtmsUnitOutcome *out;
	bool	   *taken;			/* [njobs] */
	int			fed;			/* jobs 0 .. fed-1 are fed */
	int			taken_count;
	int			ahead;			/* jobs fed beyond the claimed ones */
	Size		freed;			/* bytes given away since the last trim */
} Feeder;

/* memory given back to the system once this much has been freed */
#define TRIM_BYTES		((Size) 256 * 1024 * 1024)

static void
feed_one(Feeder *f)
{
	ParJob	   *job = &f->sh->jobs[f->fed];
	StringInfoData buf;

	if (f->plan->si->prepare_unit)
		f->plan->si->prepare_unit(f->cx->model, job->unit);
	initStringInfo(&buf);
	mtms_wire_unit(&buf, f->cx->model, f->plan->si, job->unit);
	job->start = dsa_allocate_extended(f->area, buf.len, DSA_ALLOC_HUGE);
	memcpy(dsa_get_address(f->area, job->start), buf.data, buf.len);
	job->start_len = buf.len;
	pfree(buf.data);
	mtms_wire_drop_unit(f->cx->model, f->plan->si, job->unit);
	f->freed += job->start_len;
	if (f->freed > TRIM_BYTES)
	{
		mtms_return_freed_memory();
		f->freed = 0;
	}
	pg_write_barrier();
	pg_atomic_write_u32(&job->state, JOB_READY);
	f->fed++;
	ConditionVariableBroadcast(&f->sh->cv);
}

/* Feed the jobs up to `ahead` beyond those claimed. */
static void
feed(Feeder *f)
{
	uint32		claimed = Min(pg_atomic_read_u32(&f->sh->next_job), (uint32) f->sh->njobs);

	while (f->fed < f->sh->njobs && f->fed < (int) claimed + f->ahead)
		feed_one(f);
}

/* Take every finished job's unit back into the leader's model. */
static void
take_back(Feeder *f)
{
	for (int j = 0; j < f->sh->njobs; j++)
	{
		ParJob	   *job = &f->sh->jobs[j];

		if (f->taken[j] || pg_atomic_read_u32(&job->state) != JOB_DONE)
			continue;
		pg_read_barrier();
		mtms_wire_read_unit(dsa_get_address(f->area, job->result), job->result_len,
							f->cx->model, f->plan->si, job->unit);
		dsa_free(f->area, job->result);
		job->result = InvalidDsaPointer;
		f->out[j] = job->outcome;
		f->out[j].history = take_history(f->area, job);
		f->taken[j] = true;
		f->taken_count++;
	}
}

/* The leader: feed, take back, and train jobs too when it takes part. */
static void
lead(Feeder *f, Participant *pt, bool participates)
{
	uint32		j;

	for (;;)
	{
		feed(f);
		take_back(f);
		if (f->taken_count == f->sh->njobs)
			break;
		if (participates && claim(f->sh, &j))
		{
			feed(f);
			train_job(pt, j);
			continue;
		}
		(void) ConditionVariableTimedSleep(&f->sh->cv, 100, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* The shared header and the read-only parts, into the segment. */
static ParShared *
fill_segment(ParallelContext *pcxt, MtmsTrainCtx *cx, const MtmsUnitPlan *plan,
			 const Sizes *sz, const StringInfoData *shape)
{
	ParShared  *sh = shm_toc_allocate(pcxt->toc, sz->shared);

	memset(sh, 0, sz->shared);
	sh->stage = plan->si->stage;
	sh->njobs = plan->njobs;
	sh->opts = cx->meta->opts;
	sh->has_frozen = sz->frozen > 0;
	sh->shape_len = sz->shape;
	sh->jrows_len = sz->jrows;
	sh->jvalid_len = sz->jvalid;
	pg_atomic_init_u32(&sh->next_job, 0);
	ConditionVariableInit(&sh->cv);
	for (int j = 0; j < plan->njobs; j++)
	{
		sh->jobs[j].unit = plan->units[j];
		sh->jobs[j].start_candidate = plan->start_candidate[j];
		pg_atomic_init_u32(&sh->jobs[j].state, JOB_WAITING);
		sh->jobs[j].start = InvalidDsaPointer;
		sh->jobs[j].result = InvalidDsaPointer;
		sh->jobs[j].history = InvalidDsaPointer;
	}
	shm_toc_insert(pcxt->toc, KEY_SHARED, sh);
	put_chunk(pcxt, KEY_ROWS, plan->data.rows, plan->data.rows->size);
	put_chunk(pcxt, KEY_VALID, plan->data.valid, plan->data.valid->size);
	if (sz->jrows)
		put_chunk(pcxt, KEY_JROWS, plan->data.joined_rows, sz->jrows);
	if (sz->jvalid)
		put_chunk(pcxt, KEY_JVALID, plan->data.joined_valid, sz->jvalid);
	put_chunk(pcxt, KEY_SHAPE, shape->data, shape->len);
	if (sz->frozen)
		put_chunk(pcxt, KEY_FROZEN, cx->frozen_fields, sz->frozen);
	return sh;
}

bool
mtms_train_parallel(MtmsTrainCtx *cx, MtmsUnitPlan *plan, MtmsUnitOutcome *out,
					int *workers)
{
	int			nworkers = mtms_train_workers_for(plan->njobs);
	ParallelContext *pcxt;
	StringInfoData shape;
	Sizes		sz;
	ParShared  *sh;
	Participant pt;
	Feeder		f;
	bool		participates;
	void	   *place;

	*workers = 0;
	if (nworkers <= 0 || IsInParallelMode())
		return false;
	initStringInfo(&shape);
	mtms_wire_shape(&shape, cx->model);
	sz.shared = add_size(offsetof(ParShared, jobs), mul_size(sizeof(ParJob), plan->njobs));
	sz.shape = shape.len;
	sz.frozen = (cx->frozen_fields && plan->si->trains_embeddings) ?
		sizeof(int32) * cx->model->npairs : 0;
	sz.jrows = plan->data.joined_rows ?
		mtms_joined_table_bytes(plan->data.joined_rows) : 0;
	sz.jvalid = plan->data.joined_valid ?
		mtms_joined_table_bytes(plan->data.joined_valid) : 0;

	EnterParallelMode();
	pcxt = CreateParallelContext("mtms", "mtms_train_parallel_main", nworkers);
	estimate(pcxt, plan, &sz);
	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		/* no dynamic shared memory: train here */
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}
	sh = fill_segment(pcxt, cx, plan, &sz, &shape);
	/* the joined tables are read from the segment now, by the leader too */
	if (plan->data.joined_rows)
		pfree((void *) plan->data.joined_rows);
	if (plan->data.joined_valid)
		pfree((void *) plan->data.joined_valid);
	plan->data.joined_rows = plan->data.joined_valid = NULL;
	place = shm_toc_allocate(pcxt->toc, AREA_SIZE);
	shm_toc_insert(pcxt->toc, KEY_DSA, place);
	memset(&pt, 0, sizeof(pt));
	pt.area = dsa_create_in_place(place, AREA_SIZE, LWTRANCHE_PARALLEL_QUERY_DSA, pcxt->seg);

	LaunchParallelWorkers(pcxt);
	*workers = pcxt->nworkers_launched;
	mtms_progress_workers(*workers);
	attach(&pt, pcxt->toc, pcxt->seg, true);
	memset(&f, 0, sizeof(f));
	f.cx = cx;
	f.plan = plan;
	f.sh = sh;
	f.area = pt.area;
	f.out = out;
	f.taken = palloc0(sizeof(bool) * plan->njobs);
	f.ahead = 2 * pcxt->nworkers_launched + 2;
	participates = leader_participates(pcxt->nworkers_launched);
	/* a worker that could not start would leave its jobs to nobody */
	if (!participates)
		WaitForParallelWorkersToAttach(pcxt);
	lead(&f, &pt, participates);
	WaitForParallelWorkersToFinish(pcxt);
	mtms_return_freed_memory();
	dsa_detach(pt.area);
	DestroyParallelContext(pcxt);
	ExitParallelMode();
	return true;
}
