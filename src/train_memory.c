/*
 * train_memory.c
 *    The memory plan of a training by unit jobs (see train_memory.h).
 *
 * The model is held once, by the leader (while workers train units, the
 * leader's copies of their big parameters give way to the copies in shared
 * memory).  Each training process holds at most one unit at a time, in
 * three copies at most: its starting parameters, its best checkpoint and
 * the trained result on the way back.  The rows are parsed once into kept
 * rows, grouped into a row store (both exist for a moment), and copied
 * into the shared segment when workers help; the fine-tune's joined
 * embedding tables likewise.
 */
#include "train_memory.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "embedding_store.h"
#include "miscadmin.h"
#include "mtms.h"
#include "tower.h"

int
mtms_train_workers_for(int njobs)
{
	int			n = mtms_train_workers >= 0 ? mtms_train_workers : max_parallel_maintenance_workers;

	return Max(Min(n, njobs - 1), 0);
}

Size
mtms_pair_bytes(const MtmsModel *m, int p)
{
	return mtms_emb_bytes(m->emb[p]) + mtms_tower_bytes(m->tower1[p]);
}

/*
 * The largest unit's parameter and optimizer bytes; pair_bytes: each
 * pair's phase-1 bytes, or NULL for what m holds.
 */
static Size
largest_unit(const MtmsModel *m, const MtmsStageInfo *si, const Size *pair_bytes)
{
	Size		largest = 0;

	for (int u = 0; u < mtms_stage_nunits(si, m->nscenes); u++)
	{
		int			pairs[2];
		int			n = mtms_unit_pairs(si, u, pairs);
		Size		bytes = 0;

		for (int i = 0; i < n; i++)
		{
			int			p = pairs[i];

			/* a fine-tune tower at rest has no moments: count it training */
			if (si->trains_embeddings)
				bytes += pair_bytes ? pair_bytes[p] : mtms_pair_bytes(m, p);
			else
				bytes += mtms_model_finetune_tower_bytes(m, true);
		}
		largest = Max(largest, bytes);
	}
	return largest;
}

/*
 * The fine-tune towers a fine-tune stage will add to the model: one per
 * pair that has none yet, its parameters only once its unit is done (a
 * unit in training is counted by largest_unit).
 */
static double
towers_to_come(const MtmsModel *m, const MtmsStageInfo *si)
{
	int			missing = 0;

	if (si->trains_embeddings)
		return 0;
	for (int p = 0; p < m->npairs; p++)
		if (m->tower2[p] == NULL)
			missing++;
	return (double) missing * mtms_model_finetune_tower_bytes(m, false);
}

/*
 * The model's bytes; pair_bytes: each pair's phase-1 bytes instead of
 * what m holds now, or NULL.
 */
static double
model_bytes(const MtmsModel *m, const Size *pair_bytes)
{
	double		bytes = (double) mtms_model_bytes(m);

	if (pair_bytes)
		for (int p = 0; p < m->npairs; p++)
			bytes += (double) pair_bytes[p] - (double) mtms_pair_bytes(m, p);
	return bytes;
}

/* The model and the units' copies in every process (pair_bytes: above). */
static double
fixed_bytes(const MtmsModel *m, const MtmsStageInfo *si, int njobs, const Size *pair_bytes)
{
	int			processes = 1 + mtms_train_workers_for(njobs);

	return model_bytes(m, pair_bytes) + towers_to_come(m, si) +
		3.0 * processes * largest_unit(m, si, pair_bytes);
}

Size
mtms_rows_room(const MtmsModel *m, const MtmsStageInfo *si, Size kept_already)
{
	double		limit = (double) mtms_max_memory_mb * 1024 * 1024;
	int			njobs = mtms_stage_nunits(si, m->nscenes);
	double		room = (limit - fixed_bytes(m, si, njobs, NULL) - 2.0 * kept_already) / 3.0;

	return room > 1024 * 1024 ? (Size) room : 0;
}

void
mtms_check_units_memory(const MtmsModel *m, const Size *pair_bytes, const MtmsStageInfo *si,
						int njobs, Size rows, Size joined)
{
	double		limit = (double) mtms_max_memory_mb * 1024 * 1024;
	int			workers = mtms_train_workers_for(njobs);
	double		data = (double) rows + joined;
	double		est = fixed_bytes(m, si, njobs, pair_bytes) + data * (workers > 0 ? 2 : 1);

	if (est > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms_train %s would need about %.0f MB, more than mtms.max_memory (%d MB)",
						si->name, est / (1024 * 1024), mtms_max_memory_mb),
				 errdetail("The model holds %.0f MB of parameters and optimizer state, the rows and joined embeddings %.0f MB; %d processes train units.",
						   model_bytes(m, pair_bytes) / (1024 * 1024), data / (1024 * 1024),
						   1 + workers),
				 errhint("Raise mtms.max_memory, or cap the embedding tables with the max_features option.")));
}

void
mtms_return_freed_memory(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}
