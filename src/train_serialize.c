/*
 * train_serialize.c
 *    Training states as bytes and back (parallel workers' partial states,
 *    the snapshot files they start from), and the combination of partial
 *    states by sample-weighted parameter averaging.  Everything read back
 *    is validated: a corrupt or truncated state is an ERROR, never a crash.
 */
#include "train_state.h"
#include "train_stages.h"

#include "utils/memutils.h"

#define STATE_MAGIC		0x6d747331	/* "mts1" */

void
mtms_state_combine(MtmsTrainState *a, MtmsTrainState *b)
{
	MtmsModel  *ma = a->model;
	MtmsModel  *mb = b->model;
	int			n = ma->nscenes * MTMS_NMETRICS;
	MemoryContext old = MemoryContextSwitchTo(a->cxt);

	if (ma->npairs != mb->npairs || ma->dim != mb->dim || ma->nfields != mb->nfields ||
		ma->nhidden != mb->nhidden || a->stage != b->stage)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: cannot combine training states of different shapes")));
	for (int s = 0; s < ma->nscenes; s++)
		if (strcmp(ma->scenes[s], mb->scenes[s]) != 0 ||
			ma->scene_birth[s] != mb->scene_birth[s])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: cannot combine training states of different models")));
	for (int f = 0; f < ma->nfields; f++)
		if (strcmp(ma->fields[f], mb->fields[f]) != 0 ||
			ma->field_birth[f] != mb->field_birth[f])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: cannot combine training states of different models")));

	for (int p = 0; p < ma->npairs; p++)
	{
		int64		na = ma->tower1[p]->nsamples;
		int64		nb = mb->tower1[p]->nsamples;

		mtms_emb_merge(ma->emb[p], mb->emb[p]);
		if (na + nb > 0)
			mtms_tower_average(ma->tower1[p], (double) na, mb->tower1[p], (double) nb);
		ma->tower1[p]->nsamples = na + nb;
		if (ma->tower2[p] && mb->tower2[p])
		{
			na = ma->tower2[p]->nsamples;
			nb = mb->tower2[p]->nsamples;
			if (na + nb > 0)
				mtms_tower_average(ma->tower2[p], (double) na, mb->tower2[p], (double) nb);
			ma->tower2[p]->nsamples = na + nb;
		}
	}
	for (int i = 0; i < n; i++)
	{
		a->loss_sum[i] += b->loss_sum[i];
		a->loss_n[i] += b->loss_n[i];
	}
	a->combined = true;
	a->rows_in += b->rows_in;
	a->rows_trained += b->rows_trained;
	a->bad_conversions += b->bad_conversions;
	if (a->collect_valid)
		mtms_rowset_append(&a->valid, &b->valid);
	MemoryContextSwitchTo(old);
}

/* serialization primitives */
static void
put(StringInfo buf, const void *data, Size len)
{
	if (len > 0)
		appendBinaryStringInfo(buf, data, (int) len);
}

static void
put_rowset(StringInfo buf, const MtmsRowSet *rs)
{
	put(buf, &rs->nrows, sizeof(int64));
	put(buf, &rs->nfeats, sizeof(int64));
	if (rs->nrows > 0)
	{
		put(buf, rs->scene, sizeof(int32) * rs->nrows);
		put(buf, rs->label, sizeof(uint8) * rs->nrows);
		put(buf, rs->start, sizeof(int64) * (rs->nrows + 1));
		put(buf, rs->feats, sizeof(MtmsFeature) * rs->nfeats);
	}
}

static void
put_name(StringInfo buf, const char *s)
{
	int32		len = strlen(s);

	put(buf, &len, sizeof(int32));
	put(buf, s, len);
}

void
mtms_state_serialize(StringInfo buf, const MtmsTrainState *st, bool with_valid)
{
	const MtmsModel *m = st->model;
	uint32		magic = STATE_MAGIC;
	int32		stage = st->stage;
	int			n = m->nscenes * MTMS_NMETRICS;
	bool		has_valid = with_valid && st->valid.nrows > 0;

	put(buf, &magic, sizeof(uint32));
	put(buf, &stage, sizeof(int32));
	put(buf, &st->epoch, sizeof(int32));
	put(buf, &st->opts, sizeof(MtmsOptions));
	put(buf, &m->nscenes, sizeof(int32));
	put(buf, &m->nfields, sizeof(int32));
	put(buf, &m->dim, sizeof(int32));
	put(buf, &m->nhidden, sizeof(int32));
	put(buf, m->hidden, sizeof(m->hidden));
	put(buf, &m->seed, sizeof(uint64));
	for (int s = 0; s < m->nscenes; s++)
		put_name(buf, m->scenes[s]);
	for (int f = 0; f < m->nfields; f++)
		put_name(buf, m->fields[f]);
	put(buf, m->scene_birth, sizeof(int32) * m->nscenes);
	put(buf, m->field_birth, sizeof(int32) * m->nfields);
	for (int p = 0; p < m->npairs; p++)
	{
		bool		has2 = m->tower2[p] != NULL;

		mtms_emb_serialize(buf, m->emb[p]);
		mtms_tower_serialize(buf, m->tower1[p]);
		put(buf, &has2, sizeof(bool));
		if (has2)
			mtms_tower_serialize(buf, m->tower2[p]);
	}
	put(buf, st->unit_active, sizeof(bool) * st->nunits);
	put(buf, &st->collect_valid, sizeof(bool));
	put(buf, &st->expected_rows, sizeof(int64));
	put(buf, st->train_lo, sizeof(double) * m->nscenes);
	put(buf, st->train_hi, sizeof(double) * m->nscenes);
	{
		bool		has_frozen = st->frozen_fields != NULL;

		put(buf, &has_frozen, sizeof(bool));
		if (has_frozen)
			put(buf, st->frozen_fields, sizeof(int32) * m->npairs);
	}
	put(buf, &has_valid, sizeof(bool));
	if (has_valid)
		put_rowset(buf, &st->valid);
	put(buf, st->loss_sum, sizeof(double) * n);
	put(buf, st->loss_n, sizeof(int64) * n);
	put(buf, &st->rows_in, sizeof(int64));
	put(buf, &st->rows_trained, sizeof(int64));
	put(buf, &st->bad_conversions, sizeof(int64));
}

static void
get(const char **p, const char *end, void *dst, Size len)
{
	if ((Size) (end - *p) < len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state is truncated")));
	if (len == 0)
		return;
	memcpy(dst, *p, len);
	*p += len;
}

/* a bool written by put(): exactly 0 or 1 (any other byte is not a bool) */
static bool
get_bool(const char **p, const char *end)
{
	uint8		b;

	get(p, end, &b, 1);
	if (b > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid boolean")));
	return b == 1;
}

/* A tower of the model's shape: in inputs, the model's hidden layers, 1 output. */
static bool
tower_fits(const MtmsTower *t, const MtmsModel *m, int in)
{
	if (t->nlayers != m->nhidden + 1 || t->sizes[0] != in || t->sizes[t->nlayers] != 1)
		return false;
	for (int l = 0; l < m->nhidden; l++)
		if (t->sizes[l + 1] != m->hidden[l])
			return false;
	return true;
}

static int32
get_count(const char **p, const char *end, int32 lo, int32 hi, const char *what)
{
	int32		v;

	get(p, end, &v, sizeof(int32));
	if (v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid %s: %d", what, v)));
	return v;
}

static char *
get_name(const char **p, const char *end)
{
	int32		len = get_count(p, end, 1, MTMS_NAME_MAXLEN, "name length");
	char	   *s = palloc(len + 1);

	get(p, end, s, len);
	s[len] = '\0';
	if ((int32) strlen(s) != len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has a name with a NUL byte")));
	return s;
}

static void
get_rowset(const char **p, const char *end, MtmsRowSet *rs, int nscenes, int nfields)
{
	int64		nrows;
	int64		nfeats;

	get(p, end, &nrows, sizeof(int64));
	get(p, end, &nfeats, sizeof(int64));
	if (nrows < 0 || nfeats < 0 || nrows > (int64) (end - *p) || nfeats > (int64) (end - *p))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid row counts")));
	mtms_rowset_init(rs);
	if (nrows == 0)
		return;
	mtms_rowset_reserve(rs, nrows, nfeats);
	get(p, end, rs->scene, sizeof(int32) * nrows);
	get(p, end, rs->label, sizeof(uint8) * nrows);
	get(p, end, rs->start, sizeof(int64) * (nrows + 1));
	get(p, end, rs->feats, sizeof(MtmsFeature) * nfeats);
	rs->nrows = nrows;
	rs->nfeats = nfeats;
	for (int64 i = 0; i < nrows; i++)
		if (rs->scene[i] < 0 || rs->scene[i] >= nscenes ||
			rs->start[i] < 0 || rs->start[i] > rs->start[i + 1])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has an invalid row")));
	for (int64 i = 0; i < nfeats; i++)
		if (rs->feats[i].field < 0 || rs->feats[i].field >= nfields)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has a feature of an unknown field")));
	if (rs->start[0] != 0 || rs->start[nrows] != nfeats)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid feature offsets")));
}

MtmsTrainState *
mtms_state_deserialize(const char *data, Size len, MemoryContext parent)
{
	MtmsTrainState *st = mtms_state_alloc(parent);
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	MemoryContext mcxt;
	const char *p = data;
	const char *end = data + len;
	uint32		magic;
	int32		stage;
	MtmsModel  *m;
	bool		has_valid;
	int			n;

	get(&p, end, &magic, sizeof(uint32));
	if (magic != STATE_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("not an mtms training state (bad magic number)")));
	get(&p, end, &stage, sizeof(int32));
	if (stage < MTMS_STAGE_EMBEDDING || stage > MTMS_STAGE_REFIT)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has an invalid stage %d", stage)));
	st->stage = (MtmsStage) stage;
	get(&p, end, &st->epoch, sizeof(int32));
	get(&p, end, &st->opts, sizeof(MtmsOptions));
	if (st->opts.batch_size < 1 || st->opts.batch_size > 65536 ||
		st->opts.shuffle_buffer < 1 || st->opts.shuffle_buffer > 16777216)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has invalid options")));

	mcxt = AllocSetContextCreate(st->cxt, "mtms model", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(mcxt);
	m = palloc0(sizeof(MtmsModel));
	m->cxt = mcxt;
	m->nscenes = get_count(&p, end, 1, MTMS_MAX_SCENES, "scene count");
	m->nfields = get_count(&p, end, 1, MTMS_MAX_FIELDS, "field count");
	m->dim = get_count(&p, end, 1, MTMS_MAX_DIM, "embedding dimension");
	m->nhidden = get_count(&p, end, 1, MTMS_MAX_HIDDEN_LAYERS, "layer count");
	get(&p, end, m->hidden, sizeof(m->hidden));
	get(&p, end, &m->seed, sizeof(uint64));
	m->npairs = m->nscenes * MTMS_NTASKS;
	m->scenes = palloc(sizeof(char *) * m->nscenes);
	m->fields = palloc(sizeof(char *) * m->nfields);
	for (int s = 0; s < m->nscenes; s++)
		m->scenes[s] = get_name(&p, end);
	for (int f = 0; f < m->nfields; f++)
		m->fields[f] = get_name(&p, end);
	m->scene_birth = palloc(sizeof(int32) * m->nscenes);
	m->field_birth = palloc(sizeof(int32) * m->nfields);
	get(&p, end, m->scene_birth, sizeof(int32) * m->nscenes);
	get(&p, end, m->field_birth, sizeof(int32) * m->nfields);
	mtms_model_layout(m);
	m->emb = palloc0(sizeof(MtmsEmbStore *) * m->npairs);
	m->tower1 = palloc0(sizeof(MtmsTower *) * m->npairs);
	m->tower2 = palloc0(sizeof(MtmsTower *) * m->npairs);
	for (int pi = 0; pi < m->npairs; pi++)
	{
		bool		has2;

		m->emb[pi] = mtms_emb_deserialize(&p, end);
		m->tower1[pi] = mtms_tower_deserialize(&p, end);
		has2 = get_bool(&p, end);
		if (has2)
			m->tower2[pi] = mtms_tower_deserialize(&p, end);
		if (mtms_emb_dim(m->emb[pi]) != m->dim ||
			!tower_fits(m->tower1[pi], m, MTMS_INPUT1(m)) ||
			(m->tower2[pi] && !tower_fits(m->tower2[pi], m, MTMS_INPUT2(m))) ||
			(!mtms_stage_info((MtmsStage) stage)->trains_embeddings && m->tower2[pi] == NULL))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms training state has inconsistent shapes")));
	}
	MemoryContextSwitchTo(st->cxt);
	st->model = m;
	st->nunits = mtms_stage_nunits(mtms_stage_info(st->stage), m->nscenes);
	st->unit_active = palloc(sizeof(bool) * st->nunits);
	for (int u = 0; u < st->nunits; u++)
		st->unit_active[u] = get_bool(&p, end);
	st->collect_valid = get_bool(&p, end);
	get(&p, end, &st->expected_rows, sizeof(int64));
	st->train_lo = palloc(sizeof(double) * m->nscenes);
	st->train_hi = palloc(sizeof(double) * m->nscenes);
	get(&p, end, st->train_lo, sizeof(double) * m->nscenes);
	get(&p, end, st->train_hi, sizeof(double) * m->nscenes);
	{
		bool		has_frozen;

		has_frozen = get_bool(&p, end);
		if (has_frozen)
		{
			st->frozen_fields = palloc(sizeof(int32) * m->npairs);
			get(&p, end, st->frozen_fields, sizeof(int32) * m->npairs);
			for (int i = 0; i < m->npairs; i++)
				if (st->frozen_fields[i] < 0 || st->frozen_fields[i] > m->nfields)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_CORRUPTED),
							 errmsg("mtms training state has an invalid frozen field count")));
		}
	}
	has_valid = get_bool(&p, end);
	if (has_valid)
		get_rowset(&p, end, &st->valid, m->nscenes, m->nfields);
	else
		mtms_rowset_init(&st->valid);
	mtms_state_alloc_stats(st);
	n = m->nscenes * MTMS_NMETRICS;
	get(&p, end, st->loss_sum, sizeof(double) * n);
	get(&p, end, st->loss_n, sizeof(int64) * n);
	get(&p, end, &st->rows_in, sizeof(int64));
	get(&p, end, &st->rows_trained, sizeof(int64));
	get(&p, end, &st->bad_conversions, sizeof(int64));
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms training state has %d trailing bytes", (int) (end - p))));
	MemoryContextSwitchTo(old);
	return st;
}

