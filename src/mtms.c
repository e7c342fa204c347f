/*
 * mtms.c
 *    Module entry point: PG_MODULE_MAGIC, settings (GUCs), shared helpers.
 */
#include "mtms.h"
#include "progress.h"
#include "model_shared_mem.h"

#include <limits.h>
#include <unistd.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "blas.h"
#include "blas_state.h"

PG_MODULE_MAGIC;

char	   *mtms_default_model = NULL;
int			mtms_max_memory_mb = 4096;
bool		mtms_keep_training_rows = true;
bool		mtms_read_windows_once = true;
int			mtms_score_cache_mb = -1;
int			mtms_train_workers = -1;
int			mtms_node_chunk_kb = 64 * 1024;

void		_PG_init(void);

/* A quarter of the physical memory, in MB (4 GB when it cannot be read). */
static int
default_max_memory_mb(void)
{
	long		pages = sysconf(_SC_PHYS_PAGES);
	long		pagesize = sysconf(_SC_PAGESIZE);
	double		mb;

	if (pages <= 0 || pagesize <= 0)
		return 4096;
	mb = (double) pages * (double) pagesize / (1024.0 * 1024.0) / 4.0;
	return (int) Min(Max(mb, 256.0), (double) (INT_MAX / 2));
}

void
_PG_init(void)
{
	DefineCustomStringVariable("mtms.model",
							   "Model used by the 3-argument mtms_score().",
							   "Empty means: the database's only model.",
							   &mtms_default_model,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.max_memory",
							"Largest memory a training may use, in megabytes.",
							"mtms_train refuses to start a pass when its estimate of the model, "
							"optimizer and aggregate states exceeds this, and stops a pass whose "
							"state grows beyond it.  The default is a quarter of the machine's memory.",
							&mtms_max_memory_mb,
							default_max_memory_mb(), 16, INT_MAX / 2,
							PGC_USERSET,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("mtms.keep_training_rows",
							 "Let serial training passes replay the training rows in memory.",
							 "The first serial pass of a stage keeps its parsed training rows "
							 "(within half of mtms.max_memory) and the serial passes after it "
							 "train on them instead of scanning and parsing the sample relation "
							 "again; the model is the same.  Off: every pass scans.",
							 &mtms_keep_training_rows,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.score_cache",
							"Largest memory of a backend's scoring projections per model, in megabytes.",
							"mtms_score and mtms_evaluate cache each feature's first-layer projection "
							"per tower; past this size they compute the others on every use.  "
							"0 caches nothing; -1 (the default) means a sixteenth of mtms.max_memory.",
							&mtms_score_cache_mb,
							-1, -1, INT_MAX / 2,
							PGC_USERSET,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.train_workers",
							"Parallel workers that train units of a stage beside the leader.",
							"0 trains in the leader alone; -1 (the default) uses "
							"max_parallel_maintenance_workers.  The model is the same whatever "
							"the number.",
							&mtms_train_workers,
							-1, -1, 1024,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.node_chunk_size",
							"Largest piece of a multi-node training's job or result in one value.",
							"A job of more than four pieces is staged on the data nodes piece by "
							"piece before the training call.  For tests and troubleshooting.",
							&mtms_node_chunk_kb,
							64 * 1024, 8, 256 * 1024,
							PGC_USERSET,
							GUC_UNIT_KB | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("mtms.read_windows_once",
							 "Let phase 1's first pass keep the fine-tune's rows too.",
							 "A training of both phases keeps both row windows in one scan of the "
							 "samples; off, the fine-tune's rows are read by a scan of their own, as "
							 "when they do not fit in memory.  The model is the same.  For tests and "
							 "troubleshooting.",
							 &mtms_read_windows_once,
							 true,
							 PGC_USERSET,
							 GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("mtms.blas_test_hook",
							   "Test hook: how mtms loads OpenBLAS (read when the library loads).",
							   "unknown_cpu: as if OpenBLAS did not know this CPU; user_prescott: as if "
							   "OPENBLAS_CORETYPE=Prescott were set; fail_check: mtms's choice of kernels "
							   "fails its check.  For tests only.",
							   &mtms_blas_test_hook,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.test_pause_lock",
							"Test hook: pause long work at its progress points on this advisory lock.",
							"Not 0: a training waits for a shared advisory lock on this key (and this key + 1 every other time) after "
							"each unit, each pass and before it writes the version (mtms_evaluate: "
							"each batch of rows read; mtms_synthetic_samples: every 1024 rows), "
							"and releases it at once.  For tests only.",
							&mtms_test_pause_lock,
							0, INT_MIN, INT_MAX,
							PGC_SUSET,
							GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("mtms.shared_models",
							 "Score from one copy of each model version in shared memory.",
							 "Needs mtms in shared_preload_libraries.  Off: this session loads "
							 "its own copy of each model, as without preloading.",
							 &mtms_shared_models,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.shared_models_memory",
							"Largest shared memory of the model versions sessions score from, in megabytes.",
							"A version that does not fit (with the versions sessions are using) is "
							"loaded by each session for itself, with a WARNING.  The default is a "
							"quarter of the machine's memory.",
							&mtms_shared_models_memory_mb,
							default_max_memory_mb(), 16, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.test_pause_load",
							"Test hook: pause the load of a shared model version on this advisory lock.",
							"Not 0: a session that loads a version into shared memory waits for a shared "
							"advisory lock on this key between writing the copy and publishing it, and "
							"releases it at once.  For tests only.",
							&mtms_test_pause_load,
							0, INT_MIN, INT_MAX,
							PGC_SUSET,
							GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("mtms");
	mtms_progress_init();
	mtms_shared_init();

	/*
	 * after the settings: the test hook steers it.  Preloaded, the
	 * postmaster leaves it to each backend's first product (src/blas.c).
	 */
	if (!process_shared_preload_libraries_in_progress)
		mtms_blas_load();
}

int
mtms_guard_search_path(void)
{
	int			level;

	if (IsInParallelMode())
		return 0;
	level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return level;
}

void
mtms_unguard_search_path(int level)
{
	if (level > 0)
		AtEOXact_GUC(true, level);
}

const char *
mtms_task_name(int task)
{
	return task == MTMS_TASK_CTR ? "ctr" : "cvr";
}
