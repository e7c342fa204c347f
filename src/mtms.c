/*
 * mtms.c
 *    Module entry point: PG_MODULE_MAGIC, settings (GUCs), shared helpers.
 */
#include "mtms.h"

#include <limits.h>

#include <cblas.h>

#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

char	   *mtms_default_model = NULL;
int			mtms_max_memory_mb = 4096;

void		_PG_init(void);

void
_PG_init(void)
{
	/*
	 * We link the serial OpenBLAS; should another build sneak in, keep it to
	 * one thread anyway: parallelism comes from PostgreSQL's workers, and no
	 * BLAS thread may ever call back into PostgreSQL.
	 */
	openblas_set_num_threads(1);

	DefineCustomStringVariable("mtms.model",
							   "Model used by the 3-argument mtms_score().",
							   "Empty means: the database's only model.",
							   &mtms_default_model,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("mtms.max_memory",
							"Largest memory a training may plan to use, in megabytes.",
							"mtms_train refuses to start when its estimate of the model, "
							"optimizer and aggregate states exceeds this.",
							&mtms_max_memory_mb,
							4096, 16, INT_MAX / 2,
							PGC_USERSET,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("mtms");
}

const char *
mtms_task_name(int task)
{
	return task == MTMS_TASK_CTR ? "ctr" : "cvr";
}
