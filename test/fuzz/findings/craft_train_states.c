/*
 * craft_train_states.c
 *    Writes the hand-made training-state reproducers of the findings in
 *    test/fuzz/README.md: states the reader (deserialize_state) accepts but
 *    that are inconsistent, made by serializing a doctored model with the
 *    project's own mtms_train_serialfn.
 *
 *      build/craft_train_states OUTDIR
 *
 *   ts_valid_field_out_of_range  a validation row's feature has field
 *                                1000000 on a feature the store holds
 *   ts_tower_depths_differ       tower1 of pair 1 has two hidden layers,
 *                                pair 0's (and the model's) one
 *   ts_tower_widths_differ       tower1 of pair 1 has 64 hidden units,
 *                                pair 0's 3; 30 validation rows
 *   ts_finetune_tower_missing    fine-tune stage, pair 1 has no tower2
 *   ts_scene_name_with_nul       scene "search" written as "\0earch": read
 *                                as a name, serialized as an empty one
 */
#include "pg_stubs.h"

#include <stdio.h>

#include "fmgr.h"
#include "model.h"
#include "train_state.h"

extern Datum mtms_train_serialfn(PG_FUNCTION_ARGS);

static const char *outdir;
static char *scenes[] = {"search", "feeds"};
static char *fields[] = {"user", "ad", "hour"};
static int32 births[] = {0, 0, 0};

static uint64
fh(const char *s)
{
	return mtms_hash_feature(s, strlen(s));
}

static MtmsOptions
opts(void)
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
	return o;
}

/* 2 scenes, 3 fields, dim 2, hidden {3}; two stored features per pair */
static MtmsModel *
model(void)
{
	MtmsModelMeta meta;
	MtmsModel  *m;

	memset(&meta, 0, sizeof(meta));
	meta.nscenes = 2;
	meta.scenes = scenes;
	meta.nfields = 3;
	meta.fields = fields;
	meta.scene_birth = births;
	meta.field_birth = births;
	meta.dim = 2;
	meta.nhidden = 1;
	meta.hidden[0] = 3;
	meta.opts = opts();
	m = mtms_model_create(&meta);
	for (int p = 0; p < m->npairs; p++)
	{
		(void) mtms_emb_find_or_create(m->emb[p], fh("user=1"), 0, 0);
		(void) mtms_emb_find_or_create(m->emb[p], fh("ad=7"), 1, 0);
	}
	return m;
}

static void
emit_patched(MtmsModel *m, MtmsStage stage, const MtmsRowSet *valid,
			 const char *name, bool nul_in_scene)
{
	MtmsOptions o = opts();
	bool		active[8] = {true, true, true, true, true, true, true, true};
	MtmsTrainState *st = mtms_state_create(m, &o, stage, 1, active, NULL);
	LOCAL_FCINFO(fc, 1);
	bytea	   *out;
	char		path[1024];
	FILE	   *f;

	if (valid)
		mtms_rowset_append(&st->valid, valid);
	InitFunctionCallInfoData(*fc, NULL, 1, InvalidOid, NULL, NULL);
	fc->args[0].value = PointerGetDatum(st);
	fc->args[0].isnull = false;
	out = DatumGetByteaPP(mtms_train_serialfn(fc));
	if (nul_in_scene)
	{
		char	   *d = VARDATA_ANY(out);
		Size		n = VARSIZE_ANY_EXHDR(out);

		for (Size i = 0; i + 6 <= n; i++)
			if (memcmp(d + i, "search", 6) == 0)
			{
				d[i] = '\0';
				break;
			}
	}
	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(VARDATA_ANY(out), 1, VARSIZE_ANY_EXHDR(out), f) !=
		VARSIZE_ANY_EXHDR(out) || fclose(f) != 0)
	{
		perror(path);
		exit(1);
	}
}

static void
emit(MtmsModel *m, MtmsStage stage, const MtmsRowSet *valid, const char *name)
{
	emit_patched(m, stage, valid, name, false);
}

static void
generate(void *arg)
{
	MtmsRowSet	v;
	MtmsFeature f[2];
	MtmsModel  *m;

	f[0].field = 1000000;
	f[0].hash = fh("user=1");
	f[1].field = 1;
	f[1].hash = fh("ad=7");
	mtms_rowset_init(&v);
	mtms_rowset_add(&v, 0, MTMS_LABEL_CLICK, f, 2);
	mtms_rowset_add(&v, 0, 0, f + 1, 1);
	emit(model(), MTMS_STAGE_EMBEDDING, &v, "ts_valid_field_out_of_range");

	f[0].field = 0;
	mtms_rowset_init(&v);
	mtms_rowset_add(&v, 0, MTMS_LABEL_CLICK, f, 2);
	mtms_rowset_add(&v, 0, 0, f + 1, 1);
	{
		int32		h[2] = {3, 3};

		m = model();
		m->tower1[1] = mtms_tower_create(MTMS_INPUT1(m), 2, h, 5);
		emit(m, MTMS_STAGE_EMBEDDING, &v, "ts_tower_depths_differ");
	}
	{
		int32		h[1] = {64};
		MtmsRowSet	w;

		m = model();
		m->tower1[1] = mtms_tower_create(MTMS_INPUT1(m), 1, h, 5);
		mtms_rowset_init(&w);
		for (int i = 0; i < 30; i++)
			mtms_rowset_add(&w, 0, (i % 3) ? 0 : MTMS_LABEL_CLICK, f, 2);
		emit(m, MTMS_STAGE_EMBEDDING, &w, "ts_tower_widths_differ");
	}
	m = model();
	mtms_model_ensure_finetune(m);
	m->tower2[1] = NULL;
	emit(m, MTMS_STAGE_FINETUNE, &v, "ts_finetune_tower_missing");

	emit_patched(model(), MTMS_STAGE_EMBEDDING, NULL, "ts_scene_name_with_nul", true);
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
	stub_begin_input();
	if (!stub_try(generate, NULL))
	{
		fprintf(stderr, "craft_train_states: ERROR %s\n", stub_last_message);
		return 1;
	}
	stub_end_input();
	return 0;
}
