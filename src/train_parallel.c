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

#include <unistd.h>

#include "access/parallel.h"
#include "access/xact.h"
#include "optimizer/optimizer.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shm_toc.h"
#include "utils/dsa.h"
#include "utils/memutils.h"

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

typedef struct ParJob
{
	int32		unit;
	bool		start_candidate;
	dsa_pointer start;			/* the unit's starting parameters */
	Size		start_len;
	dsa_pointer result;			/* its trained parameters */
	Size		result_len;
	MtmsUnitOutcome outcome;
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
	pg_atomic_uint32 next_job;
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

/* Take jobs until none is left. */
static void
participate(Participant *pt)
{
	ParShared  *sh = pt->shared;
	const MtmsStageInfo *si = mtms_stage_info((MtmsStage) sh->stage);

	for (;;)
	{
		uint32		j = pg_atomic_fetch_add_u32(&sh->next_job, 1);
		ParJob	   *job;
		MtmsUnitJob uj;
		StringInfoData buf;

		if (j >= (uint32) sh->njobs)
			break;
		CHECK_FOR_INTERRUPTS();
		job = &sh->jobs[j];
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
		ereport(NOTICE,
				(errmsg("mtms_train %s %s: %.2f passes over %lld rows, best at validation %d of %d: valid loss %.5f, valid AUC %.4f, %.2f s",
						si->name, mtms_unit_name(pt->skeleton, si, job->unit),
						job->outcome.epochs, (long long) job->outcome.best.samples,
						job->outcome.best_checkpoint, job->outcome.checkpoints,
						job->outcome.best.valid_loss, job->outcome.best.valid_auc,
						job->outcome.seconds)));
	}
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
 * The jobs' starting parameters into the area; the leader's copies of the
 * big ones give way meanwhile (they come back trained): the units'
 * embeddings in phase 1, their fine-tune towers in the fine-tune.
 */
static void
put_start_params(MtmsTrainCtx *cx, const MtmsUnitPlan *plan, ParShared *sh, dsa_area *area)
{
	const MtmsStageInfo *si = plan->si;
	MtmsModel  *m = cx->model;

	for (int j = 0; j < plan->njobs; j++)
	{
		ParJob	   *job = &sh->jobs[j];
		StringInfoData buf;
		int			pairs[2];
		int			n;

		job->unit = plan->units[j];
		job->start_candidate = plan->start_candidate[j];
		initStringInfo(&buf);
		mtms_wire_unit(&buf, m, si, job->unit);
		job->start = dsa_allocate_extended(area, buf.len, DSA_ALLOC_HUGE);
		memcpy(dsa_get_address(area, job->start), buf.data, buf.len);
		job->start_len = buf.len;
		job->result = InvalidDsaPointer;
		pfree(buf.data);
		n = mtms_unit_pairs(si, job->unit, pairs);
		for (int i = 0; i < n; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(m->cxt);

			if (si->trains_embeddings)
			{
				uint64		seed = m->emb[pairs[i]]->seed;

				mtms_emb_free(m->emb[pairs[i]]);
				m->emb[pairs[i]] = mtms_emb_create(m->dim, seed);
			}
			else
			{
				mtms_tower_free(m->tower2[pairs[i]]);
				m->tower2[pairs[i]] = NULL;
			}
			MemoryContextSwitchTo(old);
		}
	}
}

/* Every job's trained parameters into the leader's model, outcomes out. */
static void
take_results(MtmsTrainCtx *cx, const MtmsUnitPlan *plan, ParShared *sh, dsa_area *area,
			 MtmsUnitOutcome *out)
{
	for (int j = 0; j < plan->njobs; j++)
	{
		ParJob	   *job = &sh->jobs[j];

		if (!DsaPointerIsValid(job->result))
			elog(ERROR, "mtms: unit %d was not trained", job->unit);
		mtms_wire_read_unit(dsa_get_address(area, job->result), job->result_len,
							cx->model, plan->si, job->unit);
		dsa_free(area, job->result);
		out[j] = job->outcome;
	}
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
mtms_train_parallel(MtmsTrainCtx *cx, const MtmsUnitPlan *plan, MtmsUnitOutcome *out,
					int *workers)
{
	int			nworkers = mtms_train_workers_for(plan->njobs);
	int			width = cx->model->npairs * cx->model->dim;
	ParallelContext *pcxt;
	StringInfoData shape;
	Sizes		sz;
	ParShared  *sh;
	Participant pt;
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
		mul_size(sizeof(float) * width, Max(plan->data.rows->nkeys, 1)) : 0;
	sz.jvalid = plan->data.joined_valid ?
		mul_size(sizeof(float) * width, Max(plan->data.valid->nkeys, 1)) : 0;

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
	place = shm_toc_allocate(pcxt->toc, AREA_SIZE);
	shm_toc_insert(pcxt->toc, KEY_DSA, place);
	memset(&pt, 0, sizeof(pt));
	pt.area = dsa_create_in_place(place, AREA_SIZE, LWTRANCHE_PARALLEL_QUERY_DSA, pcxt->seg);
	put_start_params(cx, plan, sh, pt.area);

	LaunchParallelWorkers(pcxt);
	*workers = pcxt->nworkers_launched;
	attach(&pt, pcxt->toc, pcxt->seg, true);
	if (leader_participates(pcxt->nworkers_launched))
		participate(&pt);
	WaitForParallelWorkersToFinish(pcxt);
	take_results(cx, plan, sh, pt.area, out);
	dsa_detach(pt.area);
	DestroyParallelContext(pcxt);
	ExitParallelMode();
	return true;
}
