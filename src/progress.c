/*
 * progress.c
 *    Progress slots in shared memory and the mtms_progress view over them
 *    (see progress.h).
 *
 * A slot's fields are written and copied under its spinlock (a backend
 * and its parallel workers may write them; a reader copies a few hundred
 * bytes); the counters that grow with every mini-batch are atomics
 * outside it.
 */
#include "progress.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "access/relation.h"
#include "catalog/pg_class.h"
#include "optimizer/plancat.h"
#include "utils/lsyscache.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#if PG_VERSION_NUM >= 170000
#include "storage/dsm_registry.h"
#include "storage/procnumber.h"
#else
#include "storage/backendid.h"
#endif

int			mtms_test_pause_lock = 0;

typedef struct ProgressSlot
{
	slock_t		mutex;
	int			pid;			/* 0: nothing to report */
	Oid			userid;
	Oid			dbid;
	char		command[16];
	char		model[NAMEDATALEN];
	char		stage[16];
	char		scene[NAMEDATALEN];
	char		task[8];
	int32		epoch;
	int32		units_total;
	int32		workers;
	int64		rows_total;
	TimestampTz started_at;
	TimestampTz stage_started_at;
	/* added to by the owner's parallel workers too */
	pg_atomic_uint64 rows_done;
	pg_atomic_uint32 units_done;
	pg_atomic_uint64 finished_rows;	/* rows the finished units trained */
	pg_atomic_uint64 finished_per_pass;	/* their rows per pass */
} ProgressSlot;

typedef struct ProgressShared
{
	int			nslots;
	ProgressSlot slots[FLEXIBLE_ARRAY_MEMBER];
} ProgressShared;

static ProgressShared *shared = NULL;
static bool preloaded = false;
static bool reporting = false;	/* this backend's slot has a row */
static SubTransactionId reporting_subxact;
static bool callbacks_registered = false;
static uint32 pauses = 0;		/* mtms_progress_pause calls since begin */
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* ---------------------------------------------------------------------
 * The shared memory
 * --------------------------------------------------------------------- */

static Size
progress_size(void)
{
	return add_size(offsetof(ProgressShared, slots),
					mul_size(sizeof(ProgressSlot), MaxBackends));
}

static void
init_slots(void *ptr)
{
	ProgressShared *s = (ProgressShared *) ptr;

	memset(s, 0, progress_size());
	s->nslots = MaxBackends;
	for (int i = 0; i < s->nslots; i++)
	{
		ProgressSlot *sl = &s->slots[i];

		SpinLockInit(&sl->mutex);
		pg_atomic_init_u64(&sl->rows_done, 0);
		pg_atomic_init_u32(&sl->units_done, 0);
		pg_atomic_init_u64(&sl->finished_rows, 0);
		pg_atomic_init_u64(&sl->finished_per_pass, 0);
	}
}

static void
progress_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(progress_size());
}

static void
progress_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("mtms progress", progress_size(), &found);
	if (!found)
		init_slots(shared);
	LWLockRelease(AddinShmemInitLock);
}

void
mtms_progress_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = progress_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = progress_shmem_startup;
}

/* The slots, or NULL where there are none (see progress.h). */
static ProgressShared *
attach(void)
{
#if PG_VERSION_NUM >= 170000
	if (shared == NULL && !preloaded && IsUnderPostmaster)
	{
		bool		found;

		shared = GetNamedDSMSegment("mtms progress", progress_size(), init_slots, &found);
	}
#endif
	return shared;
}

/* This backend's slot number, and its parallel leader's. */
static int
own_index(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;
#else
	return MyBackendId - 1;
#endif
}

static int
leader_index(void)
{
#if PG_VERSION_NUM >= 170000
	return ParallelLeaderProcNumber != INVALID_PROC_NUMBER ? ParallelLeaderProcNumber : MyProcNumber;
#else
	return ParallelLeaderBackendId != InvalidBackendId ? ParallelLeaderBackendId - 1 : MyBackendId - 1;
#endif
}

static ProgressSlot *
slot_at(int i)
{
	ProgressShared *s = attach();

	if (s == NULL || i < 0 || i >= s->nslots)
		return NULL;
	return &s->slots[i];
}

/* The slot this backend reports in, or NULL when it reports nothing. */
static ProgressSlot *
own_slot(void)
{
	return reporting ? slot_at(own_index()) : NULL;
}

static void
write_begin(ProgressSlot *sl)
{
	SpinLockAcquire(&sl->mutex);
}

static void
write_end(ProgressSlot *sl)
{
	SpinLockRelease(&sl->mutex);
}

/* ---------------------------------------------------------------------
 * Reporting
 * --------------------------------------------------------------------- */

static void
reset_counters(ProgressSlot *sl)
{
	pg_atomic_write_u64(&sl->rows_done, 0);
	pg_atomic_write_u32(&sl->units_done, 0);
	pg_atomic_write_u64(&sl->finished_rows, 0);
	pg_atomic_write_u64(&sl->finished_per_pass, 0);
}

void
mtms_progress_end(void)
{
	ProgressSlot *sl = own_slot();

	reporting = false;
	if (sl == NULL)
		return;
	write_begin(sl);
	sl->pid = 0;
	write_end(sl);
}

static void
progress_xact_callback(XactEvent event, void *arg)
{
	if (reporting)
		mtms_progress_end();
}

static void
progress_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (reporting && event == SUBXACT_EVENT_ABORT_SUB && mySubid == reporting_subxact)
		mtms_progress_end();
}

static void
progress_exit(int code, Datum arg)
{
	if (reporting)
		mtms_progress_end();
}

bool
mtms_progress_begin(const char *command, const char *model)
{
	ProgressSlot *sl;

	if (reporting || (sl = slot_at(own_index())) == NULL)
		return false;
	if (!callbacks_registered)
	{
		RegisterXactCallback(progress_xact_callback, NULL);
		RegisterSubXactCallback(progress_subxact_callback, NULL);
		before_shmem_exit(progress_exit, (Datum) 0);
		callbacks_registered = true;
	}
	write_begin(sl);
	sl->pid = MyProcPid;
	sl->userid = GetUserId();
	sl->dbid = MyDatabaseId;
	strlcpy(sl->command, command, sizeof(sl->command));
	strlcpy(sl->model, model ? model : "", sizeof(sl->model));
	sl->stage[0] = sl->scene[0] = sl->task[0] = '\0';
	sl->epoch = 0;
	sl->units_total = -1;
	sl->workers = 0;
	sl->rows_total = -1;
	sl->started_at = sl->stage_started_at = GetCurrentTimestamp();
	reset_counters(sl);
	write_end(sl);
	reporting = true;
	reporting_subxact = GetCurrentSubTransactionId();
	pauses = 0;
	return true;
}

void
mtms_progress_stage(const char *stage, int epoch, int units_total, int64 rows_total,
					int workers)
{
	ProgressSlot *sl = own_slot();

	if (sl == NULL)
		return;
	write_begin(sl);
	strlcpy(sl->stage, stage, sizeof(sl->stage));
	sl->scene[0] = sl->task[0] = '\0';
	sl->epoch = epoch;
	sl->units_total = units_total;
	sl->rows_total = rows_total;
	sl->workers = workers;
	sl->stage_started_at = GetCurrentTimestamp();
	reset_counters(sl);
	write_end(sl);
}

void
mtms_progress_workers(int workers)
{
	ProgressSlot *sl = own_slot();

	if (sl == NULL)
		return;
	write_begin(sl);
	sl->workers = workers;
	write_end(sl);
}

/* The slot of this backend's parallel leader (or its own), if it reports. */
static ProgressSlot *
leader_slot(void)
{
	ProgressSlot *sl;

	if (!IsParallelWorker())
		return own_slot();
	sl = slot_at(leader_index());
	return (sl && sl->pid != 0) ? sl : NULL;
}

void
mtms_progress_unit(const char *scene, const char *task, int epoch)
{
	ProgressSlot *sl = leader_slot();

	if (sl == NULL)
		return;
	write_begin(sl);
	strlcpy(sl->scene, scene ? scene : "", sizeof(sl->scene));
	strlcpy(sl->task, task ? task : "", sizeof(sl->task));
	sl->epoch = epoch;
	write_end(sl);
}

void
mtms_progress_rows(int64 n)
{
	ProgressSlot *sl = leader_slot();

	if (sl)
		pg_atomic_fetch_add_u64(&sl->rows_done, (uint64) n);
}

void
mtms_progress_unit_done(int64 trained, int64 rows_per_pass)
{
	ProgressSlot *sl = leader_slot();

	if (sl == NULL)
		return;
	pg_atomic_fetch_add_u64(&sl->finished_rows, (uint64) trained);
	pg_atomic_fetch_add_u64(&sl->finished_per_pass, (uint64) rows_per_pass);
	pg_atomic_fetch_add_u32(&sl->units_done, 1);
}

int64
mtms_progress_relation_rows(Oid relid)
{
	Relation	rel;
	BlockNumber pages;
	double		tuples = -1;
	double		allvisfrac;

	if (!RELKIND_HAS_STORAGE(get_rel_relkind(relid)))
		return -1;
	rel = relation_open(relid, AccessShareLock);
	estimate_rel_size(rel, NULL, &pages, &tuples, &allvisfrac);
	relation_close(rel, AccessShareLock);
	return tuples >= 0 ? (int64) tuples : -1;
}

static void
end_callback(void *arg)
{
	mtms_progress_end();
}

void
mtms_progress_end_with(MemoryContext cxt)
{
	MemoryContextCallback *cb;

	if (!reporting)
		return;
	cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));
	cb->func = end_callback;
	cb->arg = NULL;
	MemoryContextRegisterResetCallback(cxt, cb);
}

/*
 * The keys alternate between the setting and the setting + 1, pause by
 * pause from each begin: a test that holds both releases one to let the
 * work run to exactly the next pause, and takes it back once the work
 * waits on the other, so the test itself never waits.
 */
void
mtms_progress_pause(void)
{
	Datum		key;

	if (mtms_test_pause_lock == 0 || IsInParallelMode() || !reporting)
		return;
	key = Int64GetDatum((int64) mtms_test_pause_lock + (pauses++ & 1));
	DirectFunctionCall1(pg_advisory_lock_shared_int8, key);
	DirectFunctionCall1(pg_advisory_unlock_shared_int8, key);
}

/* ---------------------------------------------------------------------
 * The view
 * --------------------------------------------------------------------- */

/* What a reader sees of a slot. */
typedef struct SlotCopy
{
	ProgressSlot s;
	uint64		rows_done;
	uint32		units_done;
	uint64		finished_rows;
	uint64		finished_per_pass;
} SlotCopy;

static void
copy_slot(ProgressSlot *sl, SlotCopy *c)
{
	SpinLockAcquire(&sl->mutex);
	memcpy(&c->s, sl, sizeof(ProgressSlot));
	SpinLockRelease(&sl->mutex);
	c->rows_done = pg_atomic_read_u64(&sl->rows_done);
	c->units_done = pg_atomic_read_u32(&sl->units_done);
	c->finished_rows = pg_atomic_read_u64(&sl->finished_rows);
	c->finished_per_pass = pg_atomic_read_u64(&sl->finished_per_pass);
}

/*
 * Rows still to do in the stage: once units have finished, the unfinished
 * ones are expected to take as many passes as the finished ones took on
 * average; before (and for a stage that runs pass by pass), the rest of a
 * first pass.
 */
static double
rows_remaining(const SlotCopy *c)
{
	double		left;

	if (c->s.rows_total < 0)
		return -1;
	if (c->units_done > 0 && c->finished_per_pass > 0)
	{
		double		passes = (double) c->finished_rows / c->finished_per_pass;

		left = passes * ((double) c->s.rows_total - c->finished_per_pass) -
			((double) c->rows_done - c->finished_rows);
	}
	else
		left = (double) c->s.rows_total - c->rows_done;
	return Max(left, 0.0);
}

#define PROGRESS_COLS 17

static void
fill_values(const SlotCopy *c, Datum *v, bool *isnull, bool detail)
{
	TimestampTz now = GetCurrentTimestamp();
	double		secs = (double) (now - c->s.stage_started_at) / 1e6;
	double		rate = secs > 0 ? c->rows_done / secs : 0;
	double		left = rows_remaining(c);
	char	   *db = get_database_name(c->s.dbid);

	memset(isnull, !detail, sizeof(bool) * PROGRESS_COLS);
	v[0] = Int32GetDatum(c->s.pid);
	isnull[0] = false;
	v[12] = CStringGetTextDatum(c->s.command);
	isnull[12] = false;
	v[13] = db ? CStringGetTextDatum(db) : (Datum) 0;
	isnull[13] = (db == NULL);
	if (!detail)
		return;
	v[1] = CStringGetTextDatum(c->s.model);
	isnull[1] = c->s.model[0] == '\0';
	v[2] = CStringGetTextDatum(c->s.stage);
	isnull[2] = c->s.stage[0] == '\0';
	v[3] = CStringGetTextDatum(c->s.scene);
	isnull[3] = c->s.scene[0] == '\0';
	v[4] = CStringGetTextDatum(c->s.task);
	isnull[4] = c->s.task[0] == '\0';
	v[5] = Int32GetDatum(c->s.epoch);
	v[6] = Int64GetDatum((int64) c->rows_done);
	v[7] = Int64GetDatum(c->s.rows_total);
	isnull[7] = c->s.rows_total < 0;
	v[8] = Float8GetDatum(rate);
	isnull[8] = secs <= 0;
	v[9] = TimestampTzGetDatum(c->s.started_at);
	isnull[10] = left < 0 || rate <= 0;
	if (!isnull[10])
		v[10] = TimestampTzGetDatum(now + (TimestampTz) Min(left / rate * 1e6, 1e15));
	v[11] = Int32GetDatum(c->s.workers);
	v[14] = Int32GetDatum((int32) c->units_done);
	v[15] = Int32GetDatum(c->s.units_total);
	isnull[15] = c->s.units_total < 0;
	v[16] = TimestampTzGetDatum(c->s.stage_started_at);
}

/*
 * mtms_progress_slots(): one row per backend that reports; the view
 * mtms_progress selects it.  Like pg_stat_activity, another role's row
 * shows only its pid, command and database unless the caller has that
 * role's privileges or pg_read_all_stats.
 */
PG_FUNCTION_INFO_V1(mtms_progress_slots);
Datum
mtms_progress_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ProgressShared *s;

	InitMaterializedSRF(fcinfo, 0);
	s = attach();
	if (s == NULL)
	{
		ereport(NOTICE,
				(errmsg("mtms_progress is empty: mtms is not in shared_preload_libraries"),
				 errhint("Add mtms to shared_preload_libraries and restart the server to see running trainings from other sessions.")));
		return (Datum) 0;
	}
	for (int i = 0; i < s->nslots; i++)
	{
		SlotCopy	c;
		Datum		values[PROGRESS_COLS];
		bool		isnull[PROGRESS_COLS];

		if (s->slots[i].pid == 0)
			continue;
		copy_slot(&s->slots[i], &c);
		if (c.s.pid == 0)
			continue;
		fill_values(&c, values, isnull,
					has_privs_of_role(GetUserId(), c.s.userid) ||
					has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	return (Datum) 0;
}
