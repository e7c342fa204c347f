/*
 * unit_snapshot.c
 *    The parameters of a unit kept from its best validation (see
 *    unit_snapshot.h).
 */
#include "unit_snapshot.h"

void
mtms_unit_snapshot_free(MtmsUnitSnapshot *s)
{
	for (int i = 0; i < s->npairs; i++)
	{
		if (s->emb[i])
			mtms_emb_free(s->emb[i]);
		if (s->tower[i])
			mtms_tower_free(s->tower[i]);
		s->emb[i] = NULL;
		s->tower[i] = NULL;
	}
	s->npairs = 0;
}

/* A copy of the unit's parameters: embeddings and phase-1 towers, or fine-tune towers. */
void
mtms_unit_snapshot_take(MtmsUnitSnapshot *s, const MtmsModel *m,
						const MtmsStageInfo *si, int unit)
{
	mtms_unit_snapshot_free(s);
	s->npairs = mtms_unit_pairs(si, unit, s->pairs);
	for (int i = 0; i < s->npairs; i++)
	{
		int			p = s->pairs[i];

		if (si->trains_embeddings)
		{
			s->emb[i] = mtms_emb_copy(m->emb[p]);
			s->tower[i] = mtms_tower_copy(m->tower1[p]);
		}
		else
		{
			s->emb[i] = NULL;
			/* after the last stage its moments go anyway (unit_train.c) */
			s->tower[i] = si->last_for_towers ? mtms_tower_copy_params(m->tower2[p]) :
				mtms_tower_copy(m->tower2[p]);
		}
	}
}

/* Put the snapshot's parameters back into m (whose context owns them). */
void
mtms_unit_snapshot_restore(MtmsUnitSnapshot *s, MtmsModel *m, const MtmsStageInfo *si)
{
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int i = 0; i < s->npairs; i++)
	{
		int			p = s->pairs[i];

		if (si->trains_embeddings)
		{
			mtms_emb_free(m->emb[p]);
			m->emb[p] = mtms_emb_copy(s->emb[i]);
			mtms_tower_free(m->tower1[p]);
			m->tower1[p] = mtms_tower_copy(s->tower[i]);
		}
		else
		{
			mtms_tower_free(m->tower2[p]);
			m->tower2[p] = mtms_tower_copy(s->tower[i]);
		}
	}
	MemoryContextSwitchTo(old);
}

