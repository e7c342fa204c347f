/*
 * train_snapshot.c
 *    How a training pass's aggregates find their starting state: the
 *    driver publishes a base state under a token; the leader's aggregate
 *    starts from it in memory, a parallel worker's from a snapshot file the
 *    driver wrote (base/pgsql_tmp, removed with the driver's context or at
 *    the server's restart).  The final function hands the trained state
 *    back through the same registry.
 */
#include "train_state.h"
#include "train_stages.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/parallel.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "common/file_utils.h"	/* PG_TEMP_FILES_DIR moved here in 16 */
#endif

#define SNAPSHOT_DIR	"base/" PG_TEMP_FILES_DIR

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
		mtms_state_serialize(&buf, base, mtms_stage_info(base->stage)->checkpoints);
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

/* Read a parallel worker's starting state from the leader's snapshot. */
MtmsTrainState *
mtms_state_load_snapshot(const char *token, MemoryContext parent)
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
	st = mtms_state_deserialize(data, done, parent);
	pfree(data);
	if (mtms_stage_info(st->stage)->checkpoints && !st->collect_valid && st->valid.nrows > 0)
		st->eval_rows = &st->valid;
	return st;
}


MtmsTrainState *
mtms_registry_base(const char *token)
{
	if (IsParallelWorker() || registry.base == NULL || strcmp(token, registry.token) != 0)
		return NULL;
	return registry.base;
}

bool
mtms_registry_active(void)
{
	return registry.owner != NULL;
}

const MtmsRowSet *
mtms_registry_valid(void)
{
	return &registry.base->valid;
}

void
mtms_registry_set_result(MtmsTrainState *st)
{
	MemoryContextSetParent(st->cxt, registry.owner);
	registry.result = st;
}
