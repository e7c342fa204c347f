/*
 * model.c
 *    The MTMS model in memory: creation, growth, input assembly, prediction.
 */
#include "model.h"

#include "common/hashfn.h"
#include "utils/memutils.h"

/* Seeds of the parts of a model, derived from the model seed. */
static uint64
part_seed(uint64 seed, int kind, int pair)
{
	return hash_combine64(hash_combine64(seed, (uint64) kind + 1), (uint64) pair + 1);
}

#define SEED_EMB	0
#define SEED_TOWER1 1

static char **
copy_names(int n, char *const *names)
{
	char	  **out = palloc(sizeof(char *) * Max(n, 1));

	for (int i = 0; i < n; i++)
		out[i] = pstrdup(names[i]);
	return out;
}

static int32 *
copy_ints(int n, const int32 *v)
{
	int32	   *out = palloc(sizeof(int32) * Max(n, 1));

	memcpy(out, v, sizeof(int32) * n);
	return out;
}

typedef struct BlockKey
{
	int32		birth;
	int32		pair;
	int32		field;
} BlockKey;

static int
block_cmp(const void *a, const void *b)
{
	const BlockKey *x = a;
	const BlockKey *y = b;

	if (x->birth != y->birth)
		return x->birth < y->birth ? -1 : 1;
	if (x->pair != y->pair)
		return x->pair < y->pair ? -1 : 1;
	if (x->field != y->field)
		return x->field < y->field ? -1 : 1;
	return 0;
}

int
mtms_model_scene(const MtmsModel *m, const char *name, int len)
{
	for (int s = 0; s < m->nscenes; s++)
		if ((int) strlen(m->scenes[s]) == len && memcmp(m->scenes[s], name, len) == 0)
			return s;
	return -1;
}

void
mtms_model_layout(MtmsModel *m)
{
	int			n = m->npairs * m->nfields;
	BlockKey   *keys = palloc(sizeof(BlockKey) * n);

	for (int q = 0; q < m->npairs; q++)
		for (int f = 0; f < m->nfields; f++)
		{
			BlockKey   *k = &keys[q * m->nfields + f];

			k->birth = Max(m->scene_birth[MTMS_PAIR_SCENE(q)], m->field_birth[f]);
			k->pair = q;
			k->field = f;
		}
	qsort(keys, n, sizeof(BlockKey), block_cmp);
	if (m->block_off)
		pfree(m->block_off);
	m->block_off = palloc(sizeof(int32) * n);
	for (int i = 0; i < n; i++)
		m->block_off[keys[i].pair * m->nfields + keys[i].field] = i * m->dim;
	pfree(keys);
}

static void
alloc_pairs(MtmsModel *m)
{
	m->emb = palloc0(sizeof(MtmsEmbStore *) * m->npairs);
	m->tower1 = palloc0(sizeof(MtmsTower *) * m->npairs);
	m->tower2 = palloc0(sizeof(MtmsTower *) * m->npairs);
}

static void
init_pair(MtmsModel *m, int p)
{
	m->emb[p] = mtms_emb_create(m->dim, part_seed(m->seed, SEED_EMB, p));
	m->tower1[p] = mtms_tower_create(MTMS_INPUT1(m), m->nhidden, m->hidden,
									 part_seed(m->seed, SEED_TOWER1, p));
	m->tower2[p] = NULL;
}

void
mtms_model_reset_pair(MtmsModel *m, int p)
{
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	mtms_emb_free(m->emb[p]);
	mtms_tower_free(m->tower1[p]);
	if (m->tower2[p])
		mtms_tower_free(m->tower2[p]);
	init_pair(m, p);
	MemoryContextSwitchTo(old);
}

MtmsModel *
mtms_model_create(const MtmsModelMeta *meta)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms model",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MtmsModel  *m = palloc0(sizeof(MtmsModel));

	m->cxt = cxt;
	m->nscenes = meta->nscenes;
	m->nfields = meta->nfields;
	m->dim = meta->dim;
	m->npairs = meta->nscenes * MTMS_NTASKS;
	m->nhidden = meta->nhidden;
	memcpy(m->hidden, meta->hidden, sizeof(m->hidden));
	m->scenes = copy_names(meta->nscenes, meta->scenes);
	m->fields = copy_names(meta->nfields, meta->fields);
	m->scene_birth = copy_ints(meta->nscenes, meta->scene_birth);
	m->field_birth = copy_ints(meta->nfields, meta->field_birth);
	m->block_off = NULL;
	mtms_model_layout(m);
	m->seed = (uint64) meta->opts.seed;
	m->stored_nfields = m->nfields;
	m->stored_npairs = m->npairs;
	alloc_pairs(m);
	for (int p = 0; p < m->npairs; p++)
		init_pair(m, p);
	MemoryContextSwitchTo(old);
	return m;
}

void
mtms_model_free(MtmsModel *m)
{
	if (m)
		MemoryContextDelete(m->cxt);
}

MtmsModel *
mtms_model_copy(const MtmsModel *src)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms model",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MtmsModel  *m = palloc(sizeof(MtmsModel));

	memcpy(m, src, sizeof(MtmsModel));
	m->cxt = cxt;
	m->scenes = copy_names(src->nscenes, src->scenes);
	m->fields = copy_names(src->nfields, src->fields);
	m->scene_birth = copy_ints(src->nscenes, src->scene_birth);
	m->field_birth = copy_ints(src->nfields, src->field_birth);
	m->block_off = copy_ints(src->npairs * src->nfields, src->block_off);
	alloc_pairs(m);
	for (int p = 0; p < m->npairs; p++)
	{
		m->emb[p] = mtms_emb_copy(src->emb[p]);
		m->tower1[p] = mtms_tower_copy(src->tower1[p]);
		m->tower2[p] = src->tower2[p] ? mtms_tower_copy(src->tower2[p]) : NULL;
	}
	MemoryContextSwitchTo(old);
	return m;
}

bool
mtms_model_has_finetune(const MtmsModel *m)
{
	for (int p = 0; p < m->npairs; p++)
		if (m->tower2[p] == NULL)
			return false;
	return true;
}

Size
mtms_model_bytes(const MtmsModel *m)
{
	Size		total = 0;

	for (int p = 0; p < m->npairs; p++)
	{
		total += mtms_emb_bytes(m->emb[p]);
		total += mtms_tower_bytes(m->tower1[p]);
		if (m->tower2[p])
			total += mtms_tower_bytes(m->tower2[p]);
	}
	return total;
}

void
mtms_model_extend(MtmsModel *m, const MtmsModelMeta *meta)
{
	int			old_f = m->nfields;
	int			old_p = m->npairs;
	int			old_in1 = MTMS_INPUT1(m);
	int			old_in2 = MTMS_INPUT2(m);
	int32	   *old_off;
	int32	   *map;
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	if (meta->nscenes < m->nscenes || meta->nfields < m->nfields)
		elog(ERROR, "mtms: model shrank from %d scenes, %d fields to %d, %d",
			 m->nscenes, m->nfields, meta->nscenes, meta->nfields);
	if (meta->nscenes == m->nscenes && meta->nfields == m->nfields)
	{
		MemoryContextSwitchTo(old);
		return;
	}

	old_off = copy_ints(old_p * old_f, m->block_off);

	/* names and births: appended */
	m->fields = repalloc(m->fields, sizeof(char *) * meta->nfields);
	m->field_birth = repalloc(m->field_birth, sizeof(int32) * meta->nfields);
	for (int f = old_f; f < meta->nfields; f++)
	{
		m->fields[f] = pstrdup(meta->fields[f]);
		m->field_birth[f] = meta->field_birth[f];
	}
	m->scenes = repalloc(m->scenes, sizeof(char *) * meta->nscenes);
	m->scene_birth = repalloc(m->scene_birth, sizeof(int32) * meta->nscenes);
	for (int s = m->nscenes; s < meta->nscenes; s++)
	{
		m->scenes[s] = pstrdup(meta->scenes[s]);
		m->scene_birth[s] = meta->scene_birth[s];
	}
	m->nfields = meta->nfields;
	m->nscenes = meta->nscenes;
	m->npairs = meta->nscenes * MTMS_NTASKS;
	mtms_model_layout(m);

	/* phase-1 towers: field f keeps its columns f*d.., new fields append */
	map = palloc(sizeof(int32) * Max(old_in1, old_in2));
	for (int j = 0; j < old_in1; j++)
		map[j] = j;
	for (int p = 0; p < old_p; p++)
		if (MTMS_INPUT1(m) > old_in1)
			mtms_tower_remap_input(m->tower1[p], MTMS_INPUT1(m), map);

	/* fine-tune towers: every old block to its new offset (the same, as blocks only append) */
	for (int q = 0; q < old_p; q++)
		for (int f = 0; f < old_f; f++)
			for (int k = 0; k < m->dim; k++)
				map[old_off[q * old_f + f] + k] = m->block_off[q * m->nfields + f] + k;
	for (int p = 0; p < old_p; p++)
		if (m->tower2[p])
			mtms_tower_remap_input(m->tower2[p], MTMS_INPUT2(m), map);
	pfree(map);
	pfree(old_off);

	/* new pairs: their own embeddings and phase-1 towers */
	if (m->npairs > old_p)
	{
		m->emb = repalloc(m->emb, sizeof(MtmsEmbStore *) * m->npairs);
		m->tower1 = repalloc(m->tower1, sizeof(MtmsTower *) * m->npairs);
		m->tower2 = repalloc(m->tower2, sizeof(MtmsTower *) * m->npairs);
		for (int p = old_p; p < m->npairs; p++)
			init_pair(m, p);
	}
	MemoryContextSwitchTo(old);
}

/*
 * A new fine-tune tower for pair p starts as the pair's phase-1 tower: the
 * first layer reads the pair's own block of the joined input with the
 * phase-1 weights and every other block with zero weights, the deeper
 * layers are copied.  So the fine-tune begins exactly at the 'separate'
 * model's predictions and learns from there what the other pairs'
 * embeddings add, instead of from a random tower.
 */
static MtmsTower *
finetune_tower_from(const MtmsModel *m, int p)
{
	const MtmsTower *t1 = m->tower1[p];
	MtmsTower  *t2 = mtms_tower_create_zero(MTMS_INPUT2(m), m->nhidden, m->hidden);
	int			in1 = MTMS_INPUT1(m);
	int			in2 = MTMS_INPUT2(m);
	int			h1 = t1->sizes[1];

	for (int j = 0; j < h1; j++)
		for (int f = 0; f < m->nfields; f++)
			memcpy(t2->W[0] + (Size) j * in2 + m->block_off[p * m->nfields + f],
				   t1->W[0] + (Size) j * in1 + (Size) f * m->dim,
				   sizeof(float) * m->dim);
	memcpy(t2->b[0], t1->b[0], sizeof(float) * h1);
	for (int l = 1; l < t1->nlayers; l++)
	{
		memcpy(t2->W[l], t1->W[l], sizeof(float) * (Size) t1->sizes[l] * t1->sizes[l + 1]);
		memcpy(t2->b[l], t1->b[l], sizeof(float) * t1->sizes[l + 1]);
	}
	/* gradients come when it trains */
	return t2;
}

Size
mtms_model_finetune_tower_bytes(const MtmsModel *m, bool training)
{
	int64		nparams = 0;
	int			in = MTMS_INPUT2(m);

	for (int l = 0; l <= m->nhidden; l++)
	{
		int			out = l < m->nhidden ? m->hidden[l] : 1;

		nparams += (int64) in * out + out;
		in = out;
	}
	/* parameters; training adds gradients and both Adam moments */
	return (Size) ((training ? 4 : 1) * nparams) * sizeof(float);
}

void
mtms_model_ensure_finetune_pair(MtmsModel *m, int p)
{
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	if (m->tower2[p] == NULL)
		m->tower2[p] = finetune_tower_from(m, p);
	MemoryContextSwitchTo(old);
}

void
mtms_model_ensure_finetune(MtmsModel *m)
{
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int p = 0; p < m->npairs; p++)
		if (m->tower2[p] == NULL)
			m->tower2[p] = finetune_tower_from(m, p);
	MemoryContextSwitchTo(old);
}

/* Add pair p's embeddings of feats into x (laid out field-major, d each). */
static inline void
pool_into(const MtmsModel *m, const MtmsEmbStore *emb, const MtmsFeature *feats,
		  int nfeats, float *x)
{
	int			d = m->dim;

	for (int i = 0; i < nfeats; i++)
	{
		int64		idx = mtms_emb_find(emb, feats[i].hash);

		if (idx >= 0)
		{
			const float *v = mtms_emb_vector(emb, idx);
			float	   *dst = x + (Size) feats[i].field * d;

			for (int k = 0; k < d; k++)
				dst[k] += v[k];
		}
	}
}

void
mtms_input1(const MtmsModel *m, int pair, const MtmsFeature *feats, int nfeats,
			float *x)
{
	memset(x, 0, sizeof(float) * MTMS_INPUT1(m));
	pool_into(m, m->emb[pair], feats, nfeats, x);
}

void
mtms_input2(const MtmsModel *m, const MtmsFeature *feats, int nfeats, float *x)
{
	int			d = m->dim;

	memset(x, 0, sizeof(float) * MTMS_INPUT2(m));
	for (int q = 0; q < m->npairs; q++)
	{
		const MtmsEmbStore *emb = m->emb[q];
		const int32 *off = m->block_off + q * m->nfields;

		for (int i = 0; i < nfeats; i++)
		{
			int64		idx = mtms_emb_find(emb, feats[i].hash);

			if (idx >= 0)
			{
				const float *v = mtms_emb_vector(emb, idx);
				float	   *dst = x + off[feats[i].field];

				for (int k = 0; k < d; k++)
					dst[k] += v[k];
			}
		}
	}
}

Size
mtms_model_scratch_size(const MtmsModel *m)
{
	int			widest = MTMS_INPUT2(m);

	for (int l = 0; l < m->nhidden; l++)
		widest = Max(widest, m->hidden[l]);
	/* the input, then predict1's two activation buffers */
	return (Size) MTMS_INPUT2(m) + 2 * (Size) widest + 16;
}

double
mtms_model_predict(const MtmsModel *m, int scene, int task,
				   const MtmsFeature *feats, int nfeats, float *scratch)
{
	int			p = MTMS_PAIR(scene, task);
	float	   *x = scratch;
	float	   *work = scratch + MTMS_INPUT2(m);
	float		logit;

	if (m->tower2[p])
	{
		mtms_input2(m, feats, nfeats, x);
		logit = mtms_tower_predict1(m->tower2[p], x, work);
	}
	else
	{
		mtms_input1(m, p, feats, nfeats, x);
		logit = mtms_tower_predict1(m->tower1[p], x, work);
	}
	return mtms_sigmoid(logit);
}
