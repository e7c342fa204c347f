/*
 * fuzz_model_load.c
 *    Validation of stored parameters: mtms_model_load (src/model_store.c)
 *    reading hand-edited rows of mtms_version, mtms_embedding and
 *    mtms_tower, served by fake_spi.c.  Its static helpers read_floats
 *    (real[] -> exactly n finite floats) and text_array_names (text[] ->
 *    names) are exercised through it on every array.
 *
 * The model's catalog entry (MtmsModelMeta) is trusted (mtms_model_lookup
 * validates it); everything read from the parameter tables is not.  Only
 * what the table definitions guarantee is kept: columns are NOT NULL and
 * of their declared types; array contents, lengths, element types (within
 * a real[] column a value is float4, but the harness also tries others),
 * dimensions, NULL elements, names, numbers and shapes are all fuzzed.
 *
 * Input: a byte code read by the rd_* functions below (missing bytes read
 * as 0):
 *   u8 shape: meta scenes 1 + b % 3, meta fields 1 + (b / 3) % 4
 *   u8 dims:  embedding dim 1 + b % 4, hidden layers 1 + (b / 4) % 2
 *   u8 u8     hidden sizes 1 + b % 6
 *   u8 flags: 0x01 the version row is missing; 0x02 / 0x04 the last
 *             scene / field was added later (birth > 0)
 *   version scenes, version fields: a count code, then a name selector
 *             per name (see version_names and name_sel)
 *   records until the input ends: u8 kind, even = embedding row, odd =
 *             tower row (see emb_row / tower_row)
 *
 * Expected: an ERROR (data_corrupted for bad rows), or a model.  Oracle for
 * a loaded model: every (scene, task) predicts, with the scratch size the
 * model asks for, a probability in [0, 1] (NaN tolerated: finite but huge
 * weights may overflow), from features that hit the stored rows.
 */
#include "pg_stubs.h"

#include <math.h>

#include "access/tupmacs.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "fake_spi.h"
#include "model.h"
#include "model_store.h"

#define MAX_RECORDS		4096
#define MAX_ARRAY_LEN	(1 << 20)

typedef struct Rd
{
	const uint8 *p;
	const uint8 *end;
} Rd;

static uint8
rd_u8(Rd *r)
{
	return r->p < r->end ? *r->p++ : 0;
}

static void
rd_bytes(Rd *r, void *dst, size_t n)
{
	size_t		have = Min(n, (size_t) (r->end - r->p));

	memset(dst, 0, n);
	memcpy(dst, r->p, have);
	r->p += have;
}

static int32
rd_i32(Rd *r)
{
	int32		v;

	rd_bytes(r, &v, sizeof(v));
	return v;
}

static int64
rd_i64(Rd *r)
{
	int64		v;

	rd_bytes(r, &v, sizeof(v));
	return v;
}

static float
rd_f32(Rd *r)
{
	float		v;

	rd_bytes(r, &v, sizeof(v));
	return v;
}

typedef struct Setup
{
	MtmsModelMeta meta;
	int			v_nscenes;		/* names in the version row */
	int			v_nfields;
	FakeRow		version;
	FakeRow    *emb;
	int			nemb;
	FakeRow    *tower;
	int			ntower;
	MtmsFeature feats[16];		/* features that hit stored rows */
	int			nfeats;
	MtmsModel  *model;
} Setup;

static const char *scene_names[] = {"s0", "s1", "s2"};
static const char *field_names[] = {"f0", "f1", "f2", "f3"};

/*
 * A name: sel < 0xC0 the declared name at position pos (names[sel % n]
 * when pos < 0), 0xC0..0xEF names[sel % n], 0xF0..0xFD a string of sel & 7
 * raw bytes (NUL becomes 'x'), 0xFE an empty string, 0xFF NULL (only
 * inside arrays; a NOT NULL column gets "").  *idx receives the declared
 * index or -1.
 */
static char *
name_sel(Rd *r, const char **names, int n, int pos, int *idx, bool *isnull)
{
	uint8		sel = rd_u8(r);

	*idx = -1;
	*isnull = false;
	if (sel < 0xF0)
	{
		*idx = (sel < 0xC0 && pos >= 0) ? pos % n : sel % n;
		return pstrdup(names[*idx]);
	}
	if (sel == 0xFF)
	{
		*isnull = true;
		return pstrdup("");
	}
	if (sel == 0xFE)
		return pstrdup("");
	{
		int			len = sel & 7;
		char	   *s = palloc(len + 1);

		rd_bytes(r, s, len);
		for (int i = 0; i < len; i++)
			if (s[i] == '\0')
				s[i] = 'x';
		s[len] = '\0';
		return s;
	}
}

static const char *
task_sel(Rd *r)
{
	static const char *tasks[] = {"ctr", "cvr", "ctr", "cvr", "CTR", "", "cvr "};

	return tasks[rd_u8(r) % lengthof(tasks)];
}

/* A text[] of names (NULL elements allowed) as array_in would build it. */
static Datum
text_array(char **names, bool *nulls, int n)
{
	bool		hasnull = false;
	Size		datasize = 0;
	Size		overhead;
	ArrayType  *a;
	char	   *p;

	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			hasnull = true;
		else
			datasize = INTALIGN(datasize + VARHDRSZ + strlen(names[i]));
	}
	overhead = hasnull ? ARR_OVERHEAD_WITHNULLS(1, n) : ARR_OVERHEAD_NONULLS(1);
	a = palloc0(overhead + datasize);
	SET_VARSIZE(a, overhead + datasize);
	a->ndim = n > 0 ? 1 : 0;
	a->dataoffset = hasnull ? (int32) overhead : 0;
	a->elemtype = TEXTOID;
	if (n > 0)
	{
		ARR_DIMS(a)[0] = n;
		ARR_LBOUND(a)[0] = 1;
	}
	p = ARR_DATA_PTR(a);
	for (int i = 0; i < n; i++)
	{
		int			len;

		if (nulls[i])
			continue;
		if (hasnull)
			ARR_NULLBITMAP(a)[i / 8] |= (bits8) (1 << (i % 8));
		len = strlen(names[i]);
		SET_VARSIZE(p, VARHDRSZ + len);
		memcpy(p + VARHDRSZ, names[i], len);
		p = (char *) att_align_nominal(p + VARHDRSZ + len, TYPALIGN_INT);
	}
	return PointerGetDatum(a);
}

/*
 * A real[] column value meant to hold `exact` floats, mutated by a shape
 * byte: length (exact, +1, -1, 0, raw u16), element type (float4, float8,
 * int4), form (1-D, 2-D, a NULL element, 1-byte varlena header, lower
 * bound 0), then a values byte (smooth values, raw floats, one NaN, one
 * infinity).
 */
static Datum
float_array(Rd *r, int64 exact)
{
	uint8		shape = rd_u8(r);
	uint8		vals = rd_u8(r);
	int			lenmode = shape & 7;
	int			typ = (shape >> 3) & 3;
	int			form = shape >> 5;
	int64		len;
	Oid			elemtype = typ == 2 ? FLOAT8OID : typ == 3 ? INT4OID : FLOAT4OID;
	int			elsize = typ == 2 ? 8 : 4;
	int			ndim;
	bool		hasnull;
	int			nullpos = -1;
	int			bad = -1;
	Size		overhead;
	Size		size;
	ArrayType  *a;
	char	   *p;

	if (exact < 0 || exact > MAX_ARRAY_LEN)
		exact = 1;
	switch (lenmode)
	{
		case 4:
			len = exact + 1;
			break;
		case 5:
			len = Max(exact - 1, 0);
			break;
		case 6:
			len = 0;
			break;
		case 7:
			len = (uint16) rd_i32(r);
			break;
		default:
			len = exact;
	}
	ndim = len == 0 ? 0 : (form == 4 ? 2 : 1);
	hasnull = form == 5 && len > 0;
	if (hasnull)
		nullpos = rd_u8(r) % len;
	if ((vals == 2 || vals == 3) && len > 0)
		bad = rd_u8(r) % len;

	overhead = hasnull ? ARR_OVERHEAD_WITHNULLS(Max(ndim, 1), len)
		: ARR_OVERHEAD_NONULLS(Max(ndim, 1));
	size = overhead + (Size) (len - (hasnull ? 1 : 0)) * elsize;
	a = palloc0(size);
	SET_VARSIZE(a, size);
	a->ndim = ndim;
	a->dataoffset = hasnull ? (int32) overhead : 0;
	a->elemtype = elemtype;
	if (ndim == 2)
	{
		ARR_DIMS(a)[0] = 1;
		ARR_DIMS(a)[1] = (int) len;
		ARR_LBOUND(a)[0] = ARR_LBOUND(a)[1] = 1;
	}
	else if (ndim == 1)
	{
		ARR_DIMS(a)[0] = (int) len;
		ARR_LBOUND(a)[0] = form == 7 ? 0 : 1;
	}
	p = ARR_DATA_PTR(a);
	for (int64 i = 0; i < len; i++)
	{
		float		f;

		if (i == nullpos)
			continue;
		if (hasnull)
			ARR_NULLBITMAP(a)[i / 8] |= (bits8) (1 << (i % 8));
		if (vals == 1)
			f = rd_f32(r);
		else if (i == bad)
			f = vals == 2 ? NAN : INFINITY;
		else
			f = 0.01f * (float) ((i % 7) - 3);
		if (typ == 2)
		{
			double		d = f;

			memcpy(p, &d, 8);
		}
		else if (typ == 3)
		{
			int32		v = (int32) i;

			memcpy(p, &v, 4);
		}
		else
			memcpy(p, &f, 4);
		p += elsize;
	}
	if (form == 6 && size - VARHDRSZ + VARHDRSZ_SHORT <= VARATT_SHORT_MAX)
	{
		/* as stored in a tuple: 1-byte header, unaligned contents */
		char	   *s = palloc(size - VARHDRSZ + VARHDRSZ_SHORT);

		SET_VARSIZE_SHORT(s, size - VARHDRSZ + VARHDRSZ_SHORT);
		memcpy(s + VARHDRSZ_SHORT, (char *) a + VARHDRSZ, size - VARHDRSZ);
		return PointerGetDatum(s);
	}
	return PointerGetDatum(a);
}

static void
set_text(FakeRow *row, int att, const char *s)
{
	row->values[att] = CStringGetTextDatum(s);
	row->varlena[att] = true;
}

static void
emb_row(Rd *r, Setup *st, FakeRow *row)
{
	int			s,
				f;
	bool		isnull;
	uint8		fsel;
	int64		feature;
	uint8		asel;
	float		accum;

	row->natts = 6;
	set_text(row, 0, name_sel(r, scene_names, st->meta.nscenes, -1, &s, &isnull));
	set_text(row, 1, task_sel(r));
	set_text(row, 2, name_sel(r, field_names, st->meta.nfields, -1, &f, &isnull));
	fsel = rd_u8(r);
	feature = fsel < 0x80 ? fsel : rd_i64(r);
	row->values[3] = Int64GetDatum(feature);
	row->values[4] = float_array(r, st->meta.dim);
	row->varlena[4] = true;
	asel = rd_u8(r);
	accum = asel == 0 ? 0.0f : asel == 1 ? rd_f32(r) : asel == 2 ? -1.0f :
		asel == 3 ? NAN : 0.5f;
	row->values[5] = Float4GetDatum(accum);
	if (f >= 0 && st->nfeats < (int) lengthof(st->feats))
	{
		st->feats[st->nfeats].field = f;
		st->feats[st->nfeats].hash = (uint64) feature;
		st->nfeats++;
	}
}

/* n_in / n_out: mostly the expected value, sometimes off */
static int32
size_sel(Rd *r, int32 exact)
{
	switch (rd_u8(r) % 16)
	{
		case 10:
			return exact + 1;
		case 11:
			return exact - 1;
		case 12:
			return 0;
		case 13:
			return -1;
		case 14:
			return PG_INT32_MAX;
		case 15:
			return rd_i32(r);
		default:
			return exact;
	}
}

static void
tower_row(Rd *r, Setup *st, FakeRow *row)
{
	static const char *phases[] = {"embedding", "finetune", "embedding", "finetune", "", "Embedding"};
	const char *phase = phases[rd_u8(r) % lengthof(phases)];
	bool		fine = strcmp(phase, "finetune") == 0;
	int			s,
				f;
	bool		isnull;
	int			layer;
	int32		sizes[MTMS_TOWER_MAX_LAYERS + 1];
	int			nlayers = st->meta.nhidden + 1;
	int32		n_in,
				n_out;

	row->natts = 8;
	set_text(row, 0, phase);
	set_text(row, 1, name_sel(r, scene_names, st->meta.nscenes, -1, &s, &isnull));
	set_text(row, 2, task_sel(r));
	layer = (int8) rd_u8(r);
	row->values[3] = Int32GetDatum(layer);

	/* the shape a tower of the version has */
	sizes[0] = (fine ? MTMS_NTASKS * st->v_nscenes : 1) * st->v_nfields * st->meta.dim;
	for (int l = 0; l < st->meta.nhidden; l++)
		sizes[l + 1] = st->meta.hidden[l];
	sizes[nlayers] = 1;
	if (layer >= 0 && layer < nlayers)
	{
		n_in = size_sel(r, sizes[layer]);
		n_out = size_sel(r, sizes[layer + 1]);
	}
	else
	{
		n_in = size_sel(r, 1);
		n_out = size_sel(r, 1);
	}
	row->values[4] = Int32GetDatum(n_in);
	row->values[5] = Int32GetDatum(n_out);
	row->values[6] = float_array(r, (int64) n_in * n_out);
	row->values[7] = float_array(r, n_out);
	row->varlena[6] = row->varlena[7] = true;
	(void) f;
}

/*
 * The names of the version row: u8 count code (% 8: 0-3 all n declared
 * names, 4 one fewer (the model grew since), 5 none, 6 one more, 7 one),
 * then a name selector per position.
 */
static void
version_names(Rd *r, const char **names, int n, int *count, Datum *out)
{
	static const int delta[] = {0, 0, 0, 0, -1, 0, 1, 0};
	uint8		code = rd_u8(r) % 8;
	int			k = code == 5 ? 0 : code == 7 ? 1 : Max(n + delta[code], 1);
	char	  **v = palloc(sizeof(char *) * Max(k, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(k, 1));

	for (int i = 0; i < k; i++)
	{
		int			idx;

		v[i] = name_sel(r, names, n, i, &idx, &nulls[i]);
	}
	*count = k;
	*out = text_array(v, nulls, k);
}

static void
decode(Rd *r, Setup *st)
{
	MtmsModelMeta *m = &st->meta;
	uint8		b;
	uint8		flags;
	int			cap = 64;
	int			ecap = 64;
	int			birth = 1;

	memset(st, 0, sizeof(*st));
	b = rd_u8(r);
	m->model_id = 1;
	m->name = "fuzz";
	m->nscenes = 1 + b % 3;
	m->nfields = 1 + (b / 3) % 4;
	b = rd_u8(r);
	m->dim = 1 + b % 4;
	m->nhidden = 1 + (b / 4) % 2;
	m->hidden[0] = 1 + rd_u8(r) % 6;
	m->hidden[1] = 1 + rd_u8(r) % 6;
	m->opts.seed = 42;
	m->opts.batch_size = 16;
	m->scenes = (char **) scene_names;
	m->fields = (char **) field_names;
	flags = rd_u8(r);
	m->scene_birth = palloc0(sizeof(int32) * m->nscenes);
	m->field_birth = palloc0(sizeof(int32) * m->nfields);
	if ((flags & 0x02) && m->nscenes > 1)
		m->scene_birth[m->nscenes - 1] = birth++;
	if ((flags & 0x04) && m->nfields > 1)
		m->field_birth[m->nfields - 1] = birth++;
	m->active_version = 1;

	st->version.natts = 2;
	version_names(r, scene_names, m->nscenes, &st->v_nscenes, &st->version.values[0]);
	version_names(r, field_names, m->nfields, &st->v_nfields, &st->version.values[1]);
	st->version.varlena[0] = st->version.varlena[1] = true;
	fake_spi_set_rows(FAKE_VERSION, &st->version, (flags & 0x01) ? 0 : 1);

	st->emb = palloc0(sizeof(FakeRow) * ecap);
	st->tower = palloc0(sizeof(FakeRow) * cap);
	for (int i = 0; i < MAX_RECORDS && r->p < r->end; i++)
	{
		if ((rd_u8(r) & 1) == 0)
		{
			if (st->nemb == ecap)
			{
				ecap *= 2;
				st->emb = repalloc(st->emb, sizeof(FakeRow) * ecap);
			}
			memset(&st->emb[st->nemb], 0, sizeof(FakeRow));
			emb_row(r, st, &st->emb[st->nemb++]);
		}
		else
		{
			if (st->ntower == cap)
			{
				cap *= 2;
				st->tower = repalloc(st->tower, sizeof(FakeRow) * cap);
			}
			memset(&st->tower[st->ntower], 0, sizeof(FakeRow));
			tower_row(r, st, &st->tower[st->ntower++]);
		}
	}
	fake_spi_set_rows(FAKE_EMBEDDING, st->emb, st->nemb);
	fake_spi_set_rows(FAKE_TOWER, st->tower, st->ntower);
}

static void
load_it(void *arg)
{
	Setup	   *st = arg;

	st->model = mtms_model_load(&st->meta, 1);
}

static void
use_it(void *arg)
{
	Setup	   *st = arg;
	MtmsModel  *m = st->model;
	float	   *scratch = palloc(sizeof(float) * mtms_model_scratch_size(m));

	if (m->nscenes != st->meta.nscenes || m->nfields != st->meta.nfields)
		stub_finding("loaded model has %d scenes, %d fields; the model declares %d, %d",
					 m->nscenes, m->nfields, st->meta.nscenes, st->meta.nfields);
	for (int s = 0; s < m->nscenes; s++)
		for (int t = 0; t < MTMS_NTASKS; t++)
		{
			double		pr = mtms_model_predict(m, s, t, st->feats, st->nfeats, scratch);

			if (pr < 0.0 || pr > 1.0)
				stub_finding("prediction %g outside [0, 1]", pr);
		}
	(void) mtms_model_bytes(m);
	mtms_model_free(m);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	stub_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Rd			r;
	Setup		st;

	stub_begin_input();
	fake_spi_reset();
	r.p = data;
	r.end = data + size;
	decode(&r, &st);
	if (stub_try(load_it, &st))
	{
		if (fake_spi_depth() != 0)
			stub_finding("mtms_model_load returned without SPI_finish");
		if (!stub_try(use_it, &st))
			stub_finding("a loaded model raised an ERROR when used: %s",
						 stub_last_message);
	}
	stub_end_input();
	return 0;
}
