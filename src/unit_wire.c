/*
 * unit_wire.c
 *    A model's shape and a unit's parameters as bytes (see unit_wire.h).
 */
#include "unit_wire.h"

#include "catalog.h"
#include "wire_codec.h"
#include "utils/memutils.h"

#define WIRE_MAGIC	0x6d747731	/* "mtw1" */

#define put(buf, p, n)	mtms_wire_put(buf, p, n)
#define get(p, end, dst, n)	mtms_wire_get(p, end, dst, n, "unit")
#define get_int(p, end, lo, hi)	mtms_wire_get_int(p, end, lo, hi, "unit")

static char *
get_name(const char **p, const char *end)
{
	int32		len = get_int(p, end, 1, MTMS_NAME_MAXLEN);
	char	   *s = palloc(len + 1);

	get(p, end, s, len);
	s[len] = '\0';
	return s;
}

void
mtms_wire_shape(StringInfo buf, const MtmsModel *m)
{
	uint32		magic = WIRE_MAGIC;

	put(buf, &magic, sizeof(magic));
	put(buf, &m->nscenes, sizeof(int32));
	put(buf, &m->nfields, sizeof(int32));
	put(buf, &m->dim, sizeof(int32));
	put(buf, &m->nhidden, sizeof(int32));
	put(buf, m->hidden, sizeof(m->hidden));
	put(buf, &m->seed, sizeof(uint64));
	for (int s = 0; s < m->nscenes; s++)
	{
		int32		len = strlen(m->scenes[s]);

		put(buf, &len, sizeof(len));
		put(buf, m->scenes[s], len);
	}
	for (int f = 0; f < m->nfields; f++)
	{
		int32		len = strlen(m->fields[f]);

		put(buf, &len, sizeof(len));
		put(buf, m->fields[f], len);
	}
	put(buf, m->scene_birth, sizeof(int32) * m->nscenes);
	put(buf, m->field_birth, sizeof(int32) * m->nfields);
}

MtmsModel *
mtms_wire_read_shape(const char *data, Size len)
{
	const char *p = data;
	const char *end = data + len;
	MtmsModelMeta meta;
	uint32		magic;
	uint64		seed;

	memset(&meta, 0, sizeof(meta));
	get(&p, end, &magic, sizeof(magic));
	if (magic != WIRE_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: not a model shape")));
	meta.nscenes = get_int(&p, end, 1, MTMS_MAX_SCENES);
	meta.nfields = get_int(&p, end, 1, MTMS_MAX_FIELDS);
	meta.dim = get_int(&p, end, 1, MTMS_MAX_DIM);
	meta.nhidden = get_int(&p, end, 1, MTMS_MAX_HIDDEN_LAYERS);
	get(&p, end, meta.hidden, sizeof(meta.hidden));
	for (int l = 0; l < meta.nhidden; l++)
		if (meta.hidden[l] < 1 || meta.hidden[l] > MTMS_MAX_HIDDEN_SIZE)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: invalid model shape")));
	get(&p, end, &seed, sizeof(seed));
	mtms_options_default(&meta.opts);
	meta.opts.seed = (int64) seed;
	meta.scenes = palloc(sizeof(char *) * meta.nscenes);
	meta.fields = palloc(sizeof(char *) * meta.nfields);
	for (int s = 0; s < meta.nscenes; s++)
		meta.scenes[s] = get_name(&p, end);
	for (int f = 0; f < meta.nfields; f++)
		meta.fields[f] = get_name(&p, end);
	meta.scene_birth = palloc(sizeof(int32) * meta.nscenes);
	meta.field_birth = palloc(sizeof(int32) * meta.nfields);
	get(&p, end, meta.scene_birth, sizeof(int32) * meta.nscenes);
	get(&p, end, meta.field_birth, sizeof(int32) * meta.nfields);
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: trailing bytes after a model shape")));
	return mtms_model_create(&meta);
}

static void
wire_unit(StringInfo buf, const MtmsModel *m, const MtmsStageInfo *si, int unit,
		  void (*tower_out) (StringInfo, const MtmsTower *))
{
	int			pairs[2];
	int			n = mtms_unit_pairs(si, unit, pairs);

	for (int i = 0; i < n; i++)
	{
		if (si->trains_embeddings)
		{
			mtms_emb_serialize(buf, m->emb[pairs[i]]);
			tower_out(buf, m->tower1[pairs[i]]);
		}
		else
			tower_out(buf, m->tower2[pairs[i]]);
	}
}

void
mtms_wire_unit(StringInfo buf, const MtmsModel *m, const MtmsStageInfo *si, int unit)
{
	wire_unit(buf, m, si, unit, mtms_tower_serialize);
}

void
mtms_wire_unit_params(StringInfo buf, const MtmsModel *m, const MtmsStageInfo *si, int unit)
{
	wire_unit(buf, m, si, unit, mtms_tower_serialize_params);
}

void
mtms_wire_read_unit(const char *data, Size len, MtmsModel *m, const MtmsStageInfo *si,
					int unit)
{
	const char *p = data;
	const char *end = data + len;
	int			pairs[2];
	int			n = mtms_unit_pairs(si, unit, pairs);
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int i = 0; i < n; i++)
	{
		int			q = pairs[i];

		if (si->trains_embeddings)
		{
			MtmsEmbStore *emb = mtms_emb_deserialize(&p, end);
			MtmsTower  *t = mtms_tower_deserialize(&p, end);

			if (mtms_emb_dim(emb) != m->dim || t->sizes[0] != MTMS_INPUT1(m))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: unit parameters of the wrong shape")));
			mtms_emb_free(m->emb[q]);
			mtms_tower_free(m->tower1[q]);
			m->emb[q] = emb;
			m->tower1[q] = t;
		}
		else
		{
			MtmsTower  *t = mtms_tower_deserialize(&p, end);

			if (t->sizes[0] != MTMS_INPUT2(m))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: unit parameters of the wrong shape")));
			if (m->tower2[q])
				mtms_tower_free(m->tower2[q]);
			m->tower2[q] = t;
		}
	}
	MemoryContextSwitchTo(old);
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: trailing bytes after unit parameters")));
}

void
mtms_wire_drop_unit(MtmsModel *m, const MtmsStageInfo *si, int unit)
{
	int			pairs[2];
	int			n = mtms_unit_pairs(si, unit, pairs);
	MemoryContext old = MemoryContextSwitchTo(m->cxt);

	for (int i = 0; i < n; i++)
	{
		int			q = pairs[i];

		if (si->trains_embeddings)
		{
			uint64		seed = m->emb[q]->seed;

			mtms_emb_free(m->emb[q]);
			m->emb[q] = mtms_emb_create(m->dim, seed);
		}
		else
		{
			mtms_tower_free(m->tower2[q]);
			m->tower2[q] = NULL;
		}
	}
	MemoryContextSwitchTo(old);
}
