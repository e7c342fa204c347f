/*
 * model_shared_mem.c
 *    The registry of shared model versions in the main shared memory (see
 *    model_shared_mem.h); model_shared.c does everything with it.
 */
#include "model_shared_mem.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

SharedCtl  *mtms_shared_ctl = NULL;
bool		mtms_shared_models = true;
int			mtms_shared_models_memory_mb = 1024;
int			mtms_test_pause_load = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shared_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(SharedCtl));
}

static void
shared_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	mtms_shared_ctl = ShmemInitStruct("mtms shared models", sizeof(SharedCtl), &found);
	if (!found)
	{
		memset(mtms_shared_ctl, 0, sizeof(SharedCtl));
		mtms_shared_ctl->tranche = LWLockNewTrancheId();
		LWLockInitialize(&mtms_shared_ctl->lock, mtms_shared_ctl->tranche);
		mtms_shared_ctl->handle = DSA_HANDLE_INVALID;
		mtms_shared_ctl->next_load_id = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
mtms_shared_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shared_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shared_shmem_startup;
}
