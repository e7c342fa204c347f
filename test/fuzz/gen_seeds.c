/*
 * gen_seeds.c
 *    Writes small valid seed inputs for every fuzz target, made by the
 *    project's own code (so they follow the real formats):
 *
 *      gen_seeds OUTDIR   ->  OUTDIR/<target>/seed_*
 *
 *   fuzz_tower        serialized towers (0, 1 and 2 hidden layers, a trained one)
 *   fuzz_embedding    serialized embedding stores (empty, with rows)
 *   fuzz_train_state  mtms_train_serialfn output of training states of the
 *                     three stages, with and without validation rows
 *   fuzz_auc          mtms_auc partial states
 *   fuzz_features     feature arrays in the harness's input layout
 *   fuzz_model_load   complete stored models in the harness's byte code
 *                     (a fresh version, a version the model has grown past)
 */
#include "pg_stubs.h"

#include <stdio.h>
#include <sys/stat.h>

#include "fmgr.h"

#include "model.h"
#include "train_state.h"

extern Datum mtms_train_serialfn(PG_FUNCTION_ARGS);

static const char *outdir;

static void
write_seed(const char *target, const char *name, const void *data, size_t len)
{
	char		path[1024];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, target);
	mkdir(path, 0777);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
	{
		perror(path);
		exit(1);
	}
}

static void
write_buf(const char *target, const char *name, StringInfo buf)
{
	write_seed(target, name, buf->data, buf->len);
}

static uint64
feature_hash(const char *s)
{
	return mtms_hash_feature(s, strlen(s));
}

static char *scenes[] = {"search", "feeds"};
static char *fields[] = {"user", "ad", "hour"};
static int32 births0[] = {0, 0, 0};

static MtmsOptions
default_options(void)
{
	MtmsOptions o;

	memset(&o, 0, sizeof(o));
	o.lr_embedding = 0.05;
	o.lr_tower = 0.001;
	o.batch_size = 16;
	o.l2 = 1e-6;
	o.max_epochs = 2;
	o.patience = 1;
	o.validation_fraction = 0.1;
	o.finetune_fraction = 0.2;
	o.seed = 42;
	o.ctcvr = true;
	o.shuffle_buffer = 1024;
	o.evals_per_epoch = 2;
	o.keep_versions = 3;
	o.max_features = 0;
	return o;
}

/* A 2-scene, 3-field model with a few embedding rows per pair. */
static MtmsModel *
small_model(void)
{
	MtmsModelMeta meta;
	MtmsModel  *m;

	memset(&meta, 0, sizeof(meta));
	meta.model_id = 1;
	meta.name = "seed";
	meta.nscenes = 2;
	meta.scenes = scenes;
	meta.nfields = 3;
	meta.fields = fields;
	meta.scene_birth = births0;
	meta.field_birth = births0;
	meta.dim = 2;
	meta.nhidden = 1;
	meta.hidden[0] = 3;
	meta.opts = default_options();
	m = mtms_model_create(&meta);
	for (int p = 0; p < m->npairs; p++)
	{
		(void) mtms_emb_find_or_create(m->emb[p], feature_hash("user=1"), 0, 0);
		(void) mtms_emb_find_or_create(m->emb[p], feature_hash("ad=7"), 1, 0);
		if (p % 2 == 0)
			(void) mtms_emb_find_or_create(m->emb[p], feature_hash("hour=13"), 2, 0);
	}
	return m;
}

static void
add_valid_rows(MtmsRowSet *rs)
{
	MtmsFeature f[3];

	f[0].field = 0;
	f[0].hash = feature_hash("user=1");
	f[1].field = 1;
	f[1].hash = feature_hash("ad=7");
	f[2].field = 2;
	f[2].hash = feature_hash("hour=13");
	mtms_rowset_add(rs, 0, MTMS_LABEL_CLICK | MTMS_LABEL_CONV, f, 3);
	mtms_rowset_add(rs, 0, 0, f, 2);
	mtms_rowset_add(rs, 1, MTMS_LABEL_CLICK, f + 1, 2);
	mtms_rowset_add(rs, 1, 0, f, 0);
}

static void
seed_state(MtmsModel *m, MtmsStage stage, bool with_valid, const char *name)
{
	MtmsOptions o = default_options();
	bool		active[8] = {true, true, true, true, true, true, true, true};
	MtmsTrainState *st;
	LOCAL_FCINFO(fcinfo, 1);
	bytea	   *out;

	/* valid == NULL: the state collects its validation rows itself */
	st = mtms_state_create(m, &o, stage, 1, active, NULL);
	if (with_valid)
		add_valid_rows(&st->valid);
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(st);
	fcinfo->args[0].isnull = false;
	out = DatumGetByteaPP(mtms_train_serialfn(fcinfo));
	write_seed("fuzz_train_state", name, VARDATA_ANY(out), VARSIZE_ANY_EXHDR(out));
}

static void
towers(void)
{
	int32		h2[2] = {6, 5};
	int32		h1[1] = {4};
	StringInfoData buf;
	MtmsTower  *t;

	initStringInfo(&buf);
	t = mtms_tower_create(4, 2, h2, 1);		/* the selftest's 4-6-5-1 */
	mtms_tower_serialize(&buf, t);
	write_buf("fuzz_tower", "seed_4_6_5_1", &buf);

	resetStringInfo(&buf);
	t = mtms_tower_create(3, 0, NULL, 2);
	mtms_tower_serialize(&buf, t);
	write_buf("fuzz_tower", "seed_3_1", &buf);

	resetStringInfo(&buf);
	t = mtms_tower_create(2, 1, h1, 3);
	{
		/* one Adam step, so moments and step are non-zero */
		MtmsTowerWork *w = mtms_tower_work_create(t, 2);
		float		X[4] = {0.5f, -1.0f, 0.25f, 2.0f};
		float		z[2];
		float		dz[2] = {0.3f, -0.2f};

		mtms_tower_forward(t, w, X, 2, z);
		mtms_tower_backward(t, w, dz, NULL);
		mtms_tower_step(t, 0.01f, 1e-6f);
		t->nsamples = 2;
	}
	mtms_tower_serialize(&buf, t);
	write_buf("fuzz_tower", "seed_2_4_1_trained", &buf);
}

static void
embeddings(void)
{
	StringInfoData buf;
	MtmsEmbStore *s;
	float		g[4] = {0.1f, -0.2f, 0.3f, -0.4f};

	initStringInfo(&buf);
	s = mtms_emb_create(4, 7);
	mtms_emb_serialize(&buf, s);
	write_buf("fuzz_embedding", "seed_empty", &buf);

	for (int i = 0; i < 3; i++)
		(void) mtms_emb_find_or_create(s, feature_hash(i == 0 ? "user=1" : i == 1 ? "ad=7" : "hour=13"), i, 0);
	mtms_emb_add_grad(s, 1, g);
	mtms_emb_apply(s, 0.05f, 1e-6f);
	resetStringInfo(&buf);
	mtms_emb_serialize(&buf, s);
	write_buf("fuzz_embedding", "seed_3rows", &buf);
}

static void
auc_states(void)
{
	struct
	{
		int64		n[2];
		double		v[5];
	}			st = {{2, 3}, {0.1, 0.7, 0.4, 0.9, 0.4}};
	int64		empty[2] = {0, 0};

	write_seed("fuzz_auc", "seed_2neg_3pos", &st, sizeof(st));
	write_seed("fuzz_auc", "seed_empty", empty, sizeof(empty));
}

static void
features(void)
{
	static const char f1[] = "\x00\x03user\nad\nhour\nuser=1\nad=7\nhour=13";
	static const char f2[] = "\x08\x03user\nad\nhour\nuser=1\nad=a=b\nhour=13\nuser=2";
	static const char f3[] = "\x19\x02user\nad\nuser=1\n\xff\nad=7";
	static const char f4[] = "\x00\x0e" "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n"
		"a=1\nn=2\ng=x\nm=yy";
	static const char f5[] = "\x00\x02user\nad\nuser=\xc3\xa9t\xc3\xa9\nad=\xe2\x82\xac";

	write_seed("fuzz_features", "seed_basic", f1, sizeof(f1) - 1);
	write_seed("fuzz_features", "seed_short_headers", f2, sizeof(f2) - 1);
	write_seed("fuzz_features", "seed_nulls", f3, sizeof(f3) - 1);
	write_seed("fuzz_features", "seed_many_fields", f4, sizeof(f4) - 1);
	write_seed("fuzz_features", "seed_utf8", f5, sizeof(f5) - 1);
}

/* ---- fuzz_model_load byte code (see the comment in fuzz_model_load.c) ---- */

static void
put_u8(StringInfo b, int v)
{
	appendStringInfoChar(b, (char) v);
}

static void
ml_emb(StringInfo b, int scene, int task, int field, int feature)
{
	put_u8(b, 0);				/* embedding row */
	put_u8(b, scene);
	put_u8(b, task);
	put_u8(b, field);
	put_u8(b, feature);			/* < 0x80: the feature id itself */
	put_u8(b, 0);				/* vector: exact length, float4, 1-D */
	put_u8(b, 0);				/* smooth values */
	put_u8(b, 4);				/* accum 0.5 */
}

static void
ml_tower(StringInfo b, int phase, int scene, int task, int layer)
{
	put_u8(b, 1);				/* tower row */
	put_u8(b, phase);			/* 0 embedding, 1 finetune */
	put_u8(b, scene);
	put_u8(b, task);
	put_u8(b, layer);
	put_u8(b, 0);				/* n_in as expected */
	put_u8(b, 0);				/* n_out as expected */
	put_u8(b, 0);				/* weights: exact length, float4, 1-D */
	put_u8(b, 0);
	put_u8(b, 0);				/* bias */
	put_u8(b, 0);
}

/*
 * A complete version: vs scenes, vf fields, nlayers layers, fine-tune for
 * scene 0.  grown: the version has one scene and one field fewer than the
 * model (count code 4), else all of them (code 0).
 */
static void
ml_model(StringInfo b, int vs, int vf, int nlayers, bool finetune, bool grown)
{
	put_u8(b, grown ? 4 : 0);
	for (int s = 0; s < vs; s++)
		put_u8(b, s);			/* < 0xC0: the declared name at s */
	put_u8(b, grown ? 4 : 0);
	for (int f = 0; f < vf; f++)
		put_u8(b, f);
	for (int s = 0; s < vs; s++)
		for (int t = 0; t < 2; t++)
		{
			for (int f = 0; f < vf; f++)
				for (int k = 0; k < 2; k++)
					ml_emb(b, s, t, f, 1 + f * 10 + k);
			for (int l = 0; l < nlayers; l++)
				ml_tower(b, 0, s, t, l);
			if (finetune && s == 0)
				for (int l = 0; l < nlayers; l++)
					ml_tower(b, 1, s, t, l);
		}
}

static void
model_loads(void)
{
	StringInfoData b;

	/* 2 scenes, 2 fields (shape 4), dim 2, 1 hidden layer of 3 */
	initStringInfo(&b);
	put_u8(&b, 4);
	put_u8(&b, 1);
	put_u8(&b, 2);
	put_u8(&b, 0);
	put_u8(&b, 0);
	ml_model(&b, 2, 2, 2, true, false);
	write_buf("fuzz_model_load", "seed_2x2_finetuned", &b);

	/* 3 scenes, 3 fields (shape 8), dim 3, hidden 4-2; version has 2 x 2 */
	resetStringInfo(&b);
	put_u8(&b, 8);
	put_u8(&b, 2 + 4);
	put_u8(&b, 3);
	put_u8(&b, 1);
	put_u8(&b, 0x06);
	ml_model(&b, 2, 2, 3, true, true);
	write_buf("fuzz_model_load", "seed_grown", &b);

	/* 1 scene, 1 field (shape 0), dim 1, hidden 1, phase 1 only */
	resetStringInfo(&b);
	put_u8(&b, 0);
	put_u8(&b, 0);
	put_u8(&b, 0);
	put_u8(&b, 0);
	put_u8(&b, 0);
	ml_model(&b, 1, 1, 2, false, false);
	write_buf("fuzz_model_load", "seed_1x1", &b);
}

static void
generate(void *arg)
{
	MtmsModel  *m;

	towers();
	embeddings();
	auc_states();
	features();
	model_loads();

	m = small_model();
	seed_state(m, MTMS_STAGE_EMBEDDING, false, "seed_embedding");
	seed_state(m, MTMS_STAGE_EMBEDDING, true, "seed_embedding_valid");
	seed_state(m, MTMS_STAGE_CTCVR, true, "seed_ctcvr_valid");
	mtms_model_ensure_finetune(m);
	seed_state(m, MTMS_STAGE_FINETUNE, false, "seed_finetune");
	seed_state(m, MTMS_STAGE_FINETUNE, true, "seed_finetune_valid");
}

int
main(int argc, char **argv)
{
	if (argc != 2)
	{
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	mkdir(outdir, 0777);
	stub_begin_input();
	if (!stub_try(generate, NULL))
	{
		fprintf(stderr, "gen_seeds: ERROR %s\n", stub_last_message);
		return 1;
	}
	stub_end_input();
	return 0;
}
