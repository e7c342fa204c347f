/*
 * model_flat.c
 *    A loaded model as one pointer-free block (see model_flat.h).
 *
 * Layout, every part 64-byte aligned, offsets from the block's start:
 *   ModelFlat header, then the scene and field names (NUL-terminated, one
 *   after the other), the births, block_off, then per pair its embedding
 *   table (embedding_store.h), its phase-1 tower and its fine-tune tower
 *   (tower.h), located by the offsets in pair_off[].
 */
#include "model_flat.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#define MODEL_FLAT_MAGIC	0x4C464D4D	/* "MMFL" */
#define FALIGN(x)			TYPEALIGN(64, (x))

typedef struct PairOff
{
	Size		emb;
	Size		tower1;
	Size		tower2;			/* 0: none */
} PairOff;

typedef struct ModelFlat
{
	uint32		magic;
	int32		nscenes;
	int32		nfields;
	int32		dim;
	int32		npairs;
	int32		nhidden;
	int32		hidden[MTMS_MAX_HIDDEN_LAYERS];
	int32		stored_nfields;
	int32		stored_npairs;
	uint64		seed;
	Size		size;			/* of the whole block */
	Size		off_names;		/* scenes, then fields */
	Size		off_births;		/* scene_birth, then field_birth */
	Size		off_block;		/* block_off */
	Size		off_pairs;		/* PairOff[npairs] */
} ModelFlat;

static Size
names_bytes(int n, char *const *names)
{
	Size		b = 0;

	for (int i = 0; i < n; i++)
		b += strlen(names[i]) + 1;
	return b;
}

/* The parts' offsets; returns the total size. */
static Size
flat_layout(const MtmsModel *m, ModelFlat *h, PairOff *po)
{
	Size		off = FALIGN(sizeof(ModelFlat));

	h->off_names = off;
	off += FALIGN(names_bytes(m->nscenes, m->scenes) + names_bytes(m->nfields, m->fields));
	h->off_births = off;
	off += FALIGN(sizeof(int32) * (m->nscenes + m->nfields));
	h->off_block = off;
	off += FALIGN(sizeof(int32) * m->npairs * m->nfields);
	h->off_pairs = off;
	off += FALIGN(sizeof(PairOff) * m->npairs);
	for (int p = 0; p < m->npairs; p++)
	{
		po[p].emb = off;
		off = add_size(off, mtms_emb_flat_size(m->emb[p]));
		po[p].tower1 = off;
		off = add_size(off, mtms_tower_flat_size(m->tower1[p]));
		po[p].tower2 = 0;
		if (m->tower2[p])
		{
			po[p].tower2 = off;
			off = add_size(off, mtms_tower_flat_size(m->tower2[p]));
		}
	}
	h->size = off;
	return off;
}

Size
mtms_model_flat_size(const MtmsModel *m)
{
	ModelFlat	h;
	PairOff    *po = palloc(sizeof(PairOff) * m->npairs);
	Size		size = flat_layout(m, &h, po);

	pfree(po);
	return size;
}

static char *
put_names(char *dst, int n, char *const *names)
{
	for (int i = 0; i < n; i++)
	{
		Size		len = strlen(names[i]) + 1;

		memcpy(dst, names[i], len);
		dst += len;
	}
	return dst;
}

void
mtms_model_flat_write(const MtmsModel *m, char *dst, Size size)
{
	ModelFlat  *h = (ModelFlat *) dst;
	PairOff    *po;
	char	   *names;
	int32	   *births;

	memset(h, 0, sizeof(ModelFlat));
	po = (PairOff *) palloc(sizeof(PairOff) * m->npairs);
	if (flat_layout(m, h, po) != size)
		elog(ERROR, "mtms: flat model size changed while writing it");
	h->magic = MODEL_FLAT_MAGIC;
	h->nscenes = m->nscenes;
	h->nfields = m->nfields;
	h->dim = m->dim;
	h->npairs = m->npairs;
	h->nhidden = m->nhidden;
	memcpy(h->hidden, m->hidden, sizeof(h->hidden));
	h->stored_nfields = m->stored_nfields;
	h->stored_npairs = m->stored_npairs;
	h->seed = m->seed;

	names = put_names(dst + h->off_names, m->nscenes, m->scenes);
	put_names(names, m->nfields, m->fields);
	births = (int32 *) (dst + h->off_births);
	memcpy(births, m->scene_birth, sizeof(int32) * m->nscenes);
	memcpy(births + m->nscenes, m->field_birth, sizeof(int32) * m->nfields);
	memcpy(dst + h->off_block, m->block_off, sizeof(int32) * m->npairs * m->nfields);
	memcpy(dst + h->off_pairs, po, sizeof(PairOff) * m->npairs);
	for (int p = 0; p < m->npairs; p++)
	{
		CHECK_FOR_INTERRUPTS();
		mtms_emb_flat_write(m->emb[p], dst + po[p].emb);
		mtms_tower_flat_write(m->tower1[p], dst + po[p].tower1);
		if (m->tower2[p])
			mtms_tower_flat_write(m->tower2[p], dst + po[p].tower2);
	}
	pfree(po);
}

MtmsModel *
mtms_model_flat_view(const char *src, MemoryContext parent)
{
	const ModelFlat *h = (const ModelFlat *) src;
	const PairOff *po;
	const char *name;
	const int32 *births;
	MemoryContext cxt;
	MemoryContext old;
	MtmsModel  *m;

	if (h->magic != MODEL_FLAT_MAGIC)
		elog(ERROR, "mtms: corrupt shared model");
	cxt = AllocSetContextCreate(parent, "mtms shared model view", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	m = palloc0(sizeof(MtmsModel));
	m->cxt = cxt;
	m->nscenes = h->nscenes;
	m->nfields = h->nfields;
	m->dim = h->dim;
	m->npairs = h->npairs;
	m->nhidden = h->nhidden;
	memcpy(m->hidden, h->hidden, sizeof(m->hidden));
	m->stored_nfields = h->stored_nfields;
	m->stored_npairs = h->stored_npairs;
	m->seed = h->seed;

	/* the names and small arrays point into the block too: read only */
	m->scenes = palloc(sizeof(char *) * m->nscenes);
	m->fields = palloc(sizeof(char *) * m->nfields);
	name = src + h->off_names;
	for (int i = 0; i < m->nscenes; i++, name += strlen(name) + 1)
		m->scenes[i] = unconstify(char *, name);
	for (int i = 0; i < m->nfields; i++, name += strlen(name) + 1)
		m->fields[i] = unconstify(char *, name);
	births = (const int32 *) (src + h->off_births);
	m->scene_birth = unconstify(int32 *, births);
	m->field_birth = unconstify(int32 *, births + m->nscenes);
	m->block_off = unconstify(int32 *, (const int32 *) (src + h->off_block));

	po = (const PairOff *) (src + h->off_pairs);
	m->emb = palloc(sizeof(MtmsEmbStore *) * m->npairs);
	m->tower1 = palloc(sizeof(MtmsTower *) * m->npairs);
	m->tower2 = palloc0(sizeof(MtmsTower *) * m->npairs);
	for (int p = 0; p < m->npairs; p++)
	{
		m->emb[p] = mtms_emb_flat_view(src + po[p].emb);
		m->tower1[p] = mtms_tower_flat_view(src + po[p].tower1);
		if (po[p].tower2 != 0)
			m->tower2[p] = mtms_tower_flat_view(src + po[p].tower2);
	}
	MemoryContextSwitchTo(old);
	return m;
}
