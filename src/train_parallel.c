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
 * takes the next job that is ready (largest first, see order_jobs), reads
 * the unit's parameters into its skeleton of the model,
 * frees them from the area, trains the unit (unit_train.c) and writes the
 * trained parameters back into the area.  At the end the leader puts every
 * unit's parameters into its model.  A unit's training does not depend on
 * which process ran it, so the model is the one a serial run gives, bit for
 * bit.  An error or a cancel in any process ends them all (PostgreSQL's
 * parallel machinery), and the model's previous version stays untouched.
 *
 * A session may run a chain of stages on the same rows (phase 1's
 * embedding and CTCVR stages): a later stage's unit continues the earlier
 * stage's units that share a pair with it, and the leader feeds it as soon
 * as it has taken those back, not at the end of the earlier stage.  Its
 * start is then the same as after the whole earlier stage, so the model is
 * still the serial one.  When the leader trains units too, it takes back
 * and feeds between the mini-batches of its own unit.
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

/*
 * A job's state: its start is fed, it is claimed, trained, then taken
 * back.
 */
#define JOB_WAITING		0		/* its starting parameters are not there yet */
#define JOB_READY		1		/* they are in the area */
#define JOB_CLAIMED		2		/* a participant trains it */
#define JOB_DONE		3		/* its trained parameters are in the area */

/* jobs of the earlier stage a job continues: a unit has at most two pairs */
#define MAX_DEPS		2

typedef struct ParJob
{
	int32		plan;			/* its stage in the chain */
	int32		index;			/* its job in that stage's plan */
	int32		unit;
	bool		start_candidate;
	int32		ndeps;
	int32		deps[MAX_DEPS]; /* jobs to take back before feeding it */
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
	int32		nplans;
	int32		stages[MTMS_CHAIN_MAX];
	int32		njobs;
	MtmsOptions opts;
	bool		has_frozen;
	Size		shape_len;
	Size		jrows_len;		/* bytes of each joined table (0: none) */
	Size		jvalid_len;
	pg_atomic_uint32 nclaimed;	/* jobs claimed so far */
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
	struct Feeder *feeder;		/* the leader's (NULL in a worker) */
} Participant;

static void poll_feeder(void *arg);

/* Claim the first job that is ready (jobs are in order); false if none is. */
static bool
try_claim(ParShared *sh, uint32 *j)
{
	for (uint32 i = 0; i < (uint32) sh->njobs; i++)
	{
		uint32		ready = JOB_READY;

		if (pg_atomic_read_u32(&sh->jobs[i].state) == JOB_READY &&
			pg_atomic_compare_exchange_u32(&sh->jobs[i].state, &ready, JOB_CLAIMED))
		{
			pg_atomic_fetch_add_u32(&sh->nclaimed, 1);
			pg_read_barrier();
			*j = i;
			return true;
		}
	}
	return false;
}

/*
 * Claim the next job, waiting until the leader has fed one; false when
 * every job has been claimed.
 */
static bool
claim(ParShared *sh, uint32 *j)
{
	bool		got = false;

	ConditionVariablePrepareToSleep(&sh->cv);
	while (pg_atomic_read_u32(&sh->nclaimed) < (uint32) sh->njobs)
	{
		if (try_claim(sh, j))
		{
			got = true;
			break;
		}
		ConditionVariableSleep(&sh->cv, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return got;
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
	ParJob	   *job = &sh->jobs[j];
	const MtmsStageInfo *si = mtms_stage_info((MtmsStage) sh->stages[job->plan]);
	MtmsUnitJob uj;
	StringInfoData buf;

	CHECK_FOR_INTERRUPTS();
	memset(&uj, 0, sizeof(uj));
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
	/* the leader takes units back and feeds while it trains one itself */
	uj.between_batches = pt->feeder ? poll_feeder : NULL;
	uj.between_arg = pt->feeder;
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
estimate(ParallelContext *pcxt, const MtmsUnitData *data, const Sizes *sz)
{
	int			keys = 4;

	shm_toc_estimate_chunk(&pcxt->estimator, sz->shared);
	shm_toc_estimate_chunk(&pcxt->estimator, data->rows->size);
	shm_toc_estimate_chunk(&pcxt->estimator, data->valid->size);
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
 * fine-tune).  A job of a later stage is fed once the jobs it continues
 * are back.
 */
typedef struct Feeder
{
	MtmsTrainCtx *cx;
	const MtmsUnitPlan *plans;
	ParShared  *sh;
	dsa_area   *area;
	MtmsUnitOutcome **outs;		/* [plan][job of the plan] */
	TimestampTz *ends;			/* [plan] when its last job came back */
	bool	   *fed;			/* [njobs] */
	bool	   *taken;			/* [njobs] */
	int			taken_count;
	int			taken_of[MTMS_CHAIN_MAX];	/* per plan */
	Size	   *pair_bytes;		/* [npairs] phase-1 bytes as the jobs came
								 * back (see note_back) */
	int			ahead;			/* jobs fed and not claimed, at most */
	Size		freed;			/* bytes given away since the last trim */
} Feeder;

/* memory given back to the system once this much has been freed */
#define TRIM_BYTES		((Size) 256 * 1024 * 1024)

static void
feed_one(Feeder *f, int j)
{
	ParJob	   *job = &f->sh->jobs[j];
	const MtmsStageInfo *si = f->plans[job->plan].si;
	StringInfoData buf;

	if (si->prepare_unit)
		si->prepare_unit(f->cx->model, job->unit);
	initStringInfo(&buf);
	mtms_wire_unit(&buf, f->cx->model, si, job->unit);
	job->start = dsa_allocate_extended(f->area, buf.len, DSA_ALLOC_HUGE);
	memcpy(dsa_get_address(f->area, job->start), buf.data, buf.len);
	job->start_len = buf.len;
	pfree(buf.data);
	mtms_wire_drop_unit(f->cx->model, si, job->unit);
	f->freed += job->start_len;
	if (f->freed > TRIM_BYTES)
	{
		mtms_return_freed_memory();
		f->freed = 0;
	}
	pg_write_barrier();
	pg_atomic_write_u32(&job->state, JOB_READY);
	f->fed[j] = true;
	ConditionVariableBroadcast(&f->sh->cv);
}

/* Whether job j can be fed: not yet, and the jobs it continues are back. */
static bool
feedable(const Feeder *f, int j)
{
	const ParJob *job = &f->sh->jobs[j];

	if (f->fed[j])
		return false;
	for (int d = 0; d < job->ndeps; d++)
		if (!f->taken[job->deps[d]])
			return false;
	return true;
}

/* Feed jobs in order while fewer than `ahead` wait to be claimed. */
static void
feed(Feeder *f)
{
	int			waiting = 0;

	for (int j = 0; j < f->sh->njobs; j++)
		if (pg_atomic_read_u32(&f->sh->jobs[j].state) == JOB_READY)
			waiting++;
	for (int j = 0; j < f->sh->njobs && waiting < f->ahead; j++)
		if (feedable(f, j))
		{
			feed_one(f, j);
			waiting++;
		}
}

/*
 * A job of a stage that another continues is back: note its pairs' bytes
 * as it left them, and once the whole stage is back, check the next
 * stage's memory plan with the model as the stage left it (whichever of
 * the next stage's own units are out or back by then).
 */
static void
note_back(Feeder *f, const ParJob *job)
{
	const MtmsUnitPlan *plan = &f->plans[job->plan];
	const MtmsUnitPlan *next = &f->plans[job->plan + 1];
	int			pairs[2];
	int			n = mtms_unit_pairs(plan->si, job->unit, pairs);

	for (int i = 0; i < n; i++)
		f->pair_bytes[pairs[i]] = mtms_pair_bytes(f->cx->model, pairs[i]);
	if (++f->taken_of[job->plan] == plan->njobs && next->recheck)
		next->recheck(f->cx, next, f->pair_bytes);
}

/* Take every finished job's unit back into the leader's model. */
static void
take_back(Feeder *f)
{
	for (int j = 0; j < f->sh->njobs; j++)
	{
		ParJob	   *job = &f->sh->jobs[j];
		MtmsUnitOutcome *o = &f->outs[job->plan][job->index];

		if (f->taken[j] || pg_atomic_read_u32(&job->state) != JOB_DONE)
			continue;
		pg_read_barrier();
		mtms_wire_read_unit(dsa_get_address(f->area, job->result), job->result_len,
							f->cx->model, f->plans[job->plan].si, job->unit);
		dsa_free(f->area, job->result);
		job->result = InvalidDsaPointer;
		*o = job->outcome;
		o->history = take_history(f->area, job);
		f->taken[j] = true;
		f->taken_count++;
		f->ends[job->plan] = Max(f->ends[job->plan], GetCurrentTimestamp());
		if (job->plan + 1 < f->sh->nplans)
			note_back(f, job);
	}
}

/*
 * Between the mini-batches of a unit the leader trains: take back what is
 * done and feed what that lets start, so that no worker waits for the
 * leader's unit to end (a chained stage's unit continues units that may
 * come back meanwhile).  It works on the leader's model, never on the
 * skeleton the unit trains in.
 */
static void
poll_feeder(void *arg)
{
	Feeder	   *f = arg;

	take_back(f);
	feed(f);
}

/* The leader: take back, feed, and train jobs too when it takes part. */
static void
lead(Feeder *f, Participant *pt, bool participates)
{
	uint32		j;

	pt->feeder = f;
	for (;;)
	{
		take_back(f);
		if (f->taken_count == f->sh->njobs)
			break;
		feed(f);
		if (participates && try_claim(f->sh, &j))
		{
			feed(f);
			train_job(pt, j);
			continue;
		}
		(void) ConditionVariableTimedSleep(&f->sh->cv, 100, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* A job of the chain before it is placed: its stage, its index, its rank. */
typedef struct JobRef
{
	int32		plan;
	int32		index;
	int64		rank;			/* the rows a pass of the longest chain of
								 * jobs it starts (see order_jobs) */
	int32		ndeps;
	int32		deps[MAX_DEPS]; /* flat indices of the jobs it continues */
} JobRef;

static int
cmp_jobref(const void *a, const void *b)
{
	const JobRef *x = a;
	const JobRef *y = b;

	if (x->rank != y->rank)
		return x->rank > y->rank ? -1 : 1;
	if (x->plan != y->plan)
		return x->plan < y->plan ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index ? 1 : 0;
}

/* Whether two units (of two stages) train a pair in common. */
static bool
share_pair(const MtmsStageInfo *sa, int a, const MtmsStageInfo *sb, int b)
{
	int			pa[2];
	int			pb[2];
	int			na = mtms_unit_pairs(sa, a, pa);
	int			nb = mtms_unit_pairs(sb, b, pb);

	for (int i = 0; i < na; i++)
		for (int k = 0; k < nb; k++)
			if (pa[i] == pb[k])
				return true;
	return false;
}

/* The jobs that job i of plan k (k > 0) continues, by flat index. */
static void
find_deps(const MtmsUnitPlan *plans, const int *base, int k, int i, JobRef *r)
{
	const MtmsUnitPlan *prev = &plans[k - 1];

	for (int d = 0; d < prev->njobs; d++)
	{
		if (!share_pair(prev->si, prev->units[d], plans[k].si, plans[k].units[i]))
			continue;
		if (r->ndeps == MAX_DEPS)
			elog(ERROR, "mtms_train: a unit of the %s stage continues more than %d units",
				 plans[k].si->name, MAX_DEPS);
		r->deps[r->ndeps++] = base[k - 1] + d;
	}
}

/*
 * The chain's jobs into the segment, longest chain first: largest first
 * within a stage, and an earlier stage's unit that a large unit continues
 * before its peers, so that the job that bounds the session starts early.
 */
static void
order_jobs(ParShared *sh, const MtmsUnitPlan *plans, int nplans)
{
	int			base[MTMS_CHAIN_MAX];
	int			n = 0;
	JobRef	   *ref;
	int		   *pos;

	for (int k = 0; k < nplans; k++)
		base[k] = n, n += plans[k].njobs;
	ref = palloc0(sizeof(JobRef) * Max(n, 1));
	pos = palloc(sizeof(int) * Max(n, 1));
	for (int k = 0; k < nplans; k++)
		for (int i = 0; i < plans[k].njobs; i++)
		{
			JobRef	   *r = &ref[base[k] + i];

			r->plan = k;
			r->index = i;
			r->rank = plans[k].work[i];
			if (k > 0)
				find_deps(plans, base, k, i, r);
		}
	/*
	 * A job starts once all the jobs it continues are done: they share its
	 * rank plus the largest of them, so that none of them waits behind
	 * other work.
	 */
	for (int b = n - 1; b >= 0; b--)
	{
		int64		longest = 0;

		for (int d = 0; d < ref[b].ndeps; d++)
		{
			JobRef	   *a = &ref[ref[b].deps[d]];

			longest = Max(longest, plans[a->plan].work[a->index]);
		}
		for (int d = 0; d < ref[b].ndeps; d++)
		{
			JobRef	   *a = &ref[ref[b].deps[d]];

			a->rank = Max(a->rank, longest + ref[b].rank);
		}
	}
	qsort(ref, n, sizeof(JobRef), cmp_jobref);
	for (int p = 0; p < n; p++)
		pos[base[ref[p].plan] + ref[p].index] = p;
	for (int p = 0; p < n; p++)
	{
		ParJob	   *job = &sh->jobs[p];
		const MtmsUnitPlan *plan = &plans[ref[p].plan];

		job->plan = ref[p].plan;
		job->index = ref[p].index;
		job->unit = plan->units[ref[p].index];
		job->start_candidate = plan->start_candidate[ref[p].index];
		job->ndeps = ref[p].ndeps;
		for (int d = 0; d < ref[p].ndeps; d++)
			job->deps[d] = pos[ref[p].deps[d]];
		pg_atomic_init_u32(&job->state, JOB_WAITING);
		job->start = InvalidDsaPointer;
		job->result = InvalidDsaPointer;
		job->history = InvalidDsaPointer;
	}
	pfree(ref);
	pfree(pos);
}

/* The shared header and the read-only parts, into the segment. */
static ParShared *
fill_segment(ParallelContext *pcxt, MtmsTrainCtx *cx, const MtmsUnitPlan *plans,
			 int nplans, int njobs, const Sizes *sz, const StringInfoData *shape)
{
	ParShared  *sh = shm_toc_allocate(pcxt->toc, sz->shared);
	const MtmsUnitData *data = &plans[0].data;

	memset(sh, 0, sz->shared);
	sh->nplans = nplans;
	for (int k = 0; k < nplans; k++)
		sh->stages[k] = plans[k].si->stage;
	sh->njobs = njobs;
	sh->opts = cx->meta->opts;
	sh->has_frozen = sz->frozen > 0;
	sh->shape_len = sz->shape;
	sh->jrows_len = sz->jrows;
	sh->jvalid_len = sz->jvalid;
	pg_atomic_init_u32(&sh->nclaimed, 0);
	ConditionVariableInit(&sh->cv);
	order_jobs(sh, plans, nplans);
	shm_toc_insert(pcxt->toc, KEY_SHARED, sh);
	put_chunk(pcxt, KEY_ROWS, data->rows, data->rows->size);
	put_chunk(pcxt, KEY_VALID, data->valid, data->valid->size);
	if (sz->jrows)
		put_chunk(pcxt, KEY_JROWS, data->joined_rows, sz->jrows);
	if (sz->jvalid)
		put_chunk(pcxt, KEY_JVALID, data->joined_valid, sz->jvalid);
	put_chunk(pcxt, KEY_SHAPE, shape->data, shape->len);
	if (sz->frozen)
		put_chunk(pcxt, KEY_FROZEN, cx->frozen_fields, sz->frozen);
	return sh;
}

/* The sizes of the segment's parts for these plans (sharing plans[0]'s data). */
static void
size_parts(MtmsTrainCtx *cx, const MtmsUnitPlan *plans, int nplans, int njobs,
		   const StringInfoData *shape, Sizes *sz)
{
	const MtmsUnitData *data = &plans[0].data;
	bool		trains_embeddings = false;

	for (int k = 0; k < nplans; k++)
	{
		Assert(plans[k].data.rows == data->rows && plans[k].data.valid == data->valid);
		trains_embeddings |= plans[k].si->trains_embeddings;
	}
	sz->shared = add_size(offsetof(ParShared, jobs), mul_size(sizeof(ParJob), njobs));
	sz->shape = shape->len;
	sz->frozen = (cx->frozen_fields && trains_embeddings) ?
		sizeof(int32) * cx->model->npairs : 0;
	sz->jrows = data->joined_rows ? mtms_joined_table_bytes(data->joined_rows) : 0;
	sz->jvalid = data->joined_valid ? mtms_joined_table_bytes(data->joined_valid) : 0;
}

/* The leader's side of a launched session: feed, take back, wait. */
static void
run_session(MtmsTrainCtx *cx, ParallelContext *pcxt, ParShared *sh, Participant *pt,
			const MtmsUnitPlan *plans, MtmsUnitOutcome **outs, TimestampTz *ends)
{
	Feeder		f;
	bool		participates = leader_participates(pcxt->nworkers_launched);

	memset(&f, 0, sizeof(f));
	f.cx = cx;
	f.plans = plans;
	f.sh = sh;
	f.area = pt->area;
	f.outs = outs;
	f.ends = ends;
	f.fed = palloc0(sizeof(bool) * Max(sh->njobs, 1));
	f.taken = palloc0(sizeof(bool) * Max(sh->njobs, 1));
	if (sh->nplans > 1)
	{
		/* for note_back: the pairs no job of the session trains as they are */
		f.pair_bytes = palloc(sizeof(Size) * cx->model->npairs);
		for (int p = 0; p < cx->model->npairs; p++)
			f.pair_bytes[p] = mtms_pair_bytes(cx->model, p);
	}
	f.ahead = 2 * pcxt->nworkers_launched + 2;
	/* a worker that could not start would leave its jobs to nobody */
	if (!participates)
		WaitForParallelWorkersToAttach(pcxt);
	lead(&f, pt, participates);
	pfree(f.fed);
	pfree(f.taken);
	if (f.pair_bytes)
		pfree(f.pair_bytes);
}

bool
mtms_train_parallel(MtmsTrainCtx *cx, MtmsUnitPlan *plans, int nplans,
					MtmsUnitOutcome **outs, TimestampTz *ends, int *workers)
{
	MtmsUnitData *data = &plans[0].data;
	int			njobs = 0;
	int			nworkers;
	ParallelContext *pcxt;
	StringInfoData shape;
	Sizes		sz;
	ParShared  *sh;
	Participant pt;
	void	   *place;

	for (int k = 0; k < nplans; k++)
		njobs += plans[k].njobs;
	nworkers = mtms_train_workers_for(njobs);
	*workers = 0;
	if (nworkers <= 0 || IsInParallelMode())
		return false;
	initStringInfo(&shape);
	mtms_wire_shape(&shape, cx->model);
	size_parts(cx, plans, nplans, njobs, &shape, &sz);

	EnterParallelMode();
	pcxt = CreateParallelContext("mtms", "mtms_train_parallel_main", nworkers);
	estimate(pcxt, data, &sz);
	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		/* no dynamic shared memory: train here */
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}
	sh = fill_segment(pcxt, cx, plans, nplans, njobs, &sz, &shape);
	/* the joined tables are read from the segment now, by the leader too */
	if (data->joined_rows)
		pfree((void *) data->joined_rows);
	if (data->joined_valid)
		pfree((void *) data->joined_valid);
	for (int k = 0; k < nplans; k++)
		plans[k].data.joined_rows = plans[k].data.joined_valid = NULL;
	place = shm_toc_allocate(pcxt->toc, AREA_SIZE);
	shm_toc_insert(pcxt->toc, KEY_DSA, place);
	memset(&pt, 0, sizeof(pt));
	pt.area = dsa_create_in_place(place, AREA_SIZE, LWTRANCHE_PARALLEL_QUERY_DSA, pcxt->seg);

	LaunchParallelWorkers(pcxt);
	*workers = pcxt->nworkers_launched;
	mtms_progress_workers(*workers);
	attach(&pt, pcxt->toc, pcxt->seg, true);
	for (int k = 0; k < nplans; k++)
		ends[k] = GetCurrentTimestamp();
	run_session(cx, pcxt, sh, &pt, plans, outs, ends);
	WaitForParallelWorkersToFinish(pcxt);
	mtms_return_freed_memory();
	dsa_detach(pt.area);
	DestroyParallelContext(pcxt);
	ExitParallelMode();
	return true;
}
