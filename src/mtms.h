/*
 * mtms.h
 *    Constants and small types shared by every mtms module.
 *
 * A model has S scenes and two tasks per scene (CTR, CVR).  Every
 * (scene, task) pair owns its embeddings and its towers; pairs are numbered
 * pair = scene * MTMS_NTASKS + task.
 */
#ifndef MTMS_H
#define MTMS_H

#include "postgres.h"

#define MTMS_NTASKS				2
#define MTMS_TASK_CTR			0
#define MTMS_TASK_CVR			1
#define MTMS_PAIR(scene, task)	((scene) * MTMS_NTASKS + (task))
#define MTMS_PAIR_SCENE(pair)	((pair) / MTMS_NTASKS)
#define MTMS_PAIR_TASK(pair)	((pair) % MTMS_NTASKS)

/* Catalog limits (validated by mtms_create_model and friends). */
#define MTMS_NAME_MAXLEN		63		/* model, scene and field names */
#define MTMS_MAX_SCENES			1024
#define MTMS_MAX_FIELDS			256
#define MTMS_MAX_DIM			512
#define MTMS_MAX_HIDDEN_LAYERS	8
#define MTMS_MAX_HIDDEN_SIZE	4096

/* Feature parsing limits. */
#define MTMS_MAX_FEATURES_PER_ROW	65536
#define MTMS_MAX_FEATURE_LEN		4096	/* bytes of one 'field=value' */

/* Seed mixed into every feature hash (part of the storage format). */
#define MTMS_FEATURE_HASH_SEED	UINT64CONST(0x6d746d73)		/* "mtms" */

/* GUCs, defined in mtms.c */
extern char *mtms_default_model;	/* mtms.model */
extern int	mtms_max_memory_mb;		/* mtms.max_memory */
extern bool mtms_keep_training_rows;	/* mtms.keep_training_rows */
extern int	mtms_score_cache_mb;	/* mtms.score_cache, -1: max_memory / 16 */
extern int	mtms_node_chunk_kb;		/* mtms.node_chunk_size */
extern bool mtms_read_windows_once;	/* mtms.read_windows_once */
extern int	mtms_train_workers;		/* mtms.train_workers, -1: max_parallel_maintenance_workers */

extern const char *mtms_task_name(int task);	/* "ctr" / "cvr" */

/*
 * Our own SQL (SPI) runs with search_path = pg_catalog, pg_temp, so a
 * hostile search_path cannot put its functions or operators in the way.
 * mtms_guard_search_path() returns a GUC nest level for
 * mtms_unguard_search_path(); both do nothing in parallel mode, where
 * settings cannot change (the queries that run there only use exact-match
 * pg_catalog operators).  An error unwinds the setting with the
 * (sub)transaction.
 */
extern int	mtms_guard_search_path(void);
extern void mtms_unguard_search_path(int level);

#endif							/* MTMS_H */
