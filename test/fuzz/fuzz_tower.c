/*
 * fuzz_tower.c
 *    mtms_tower_deserialize (src/tower.c) on arbitrary bytes.
 *
 * Expected: an ERROR, or a tower.  Oracles for an accepted tower:
 *   - the reader consumed at most the input, and serializing the tower
 *     again gives exactly the bytes it consumed;
 *   - the tower is usable with the shapes it claims: predict1 with the
 *     documented scratch size, a batch forward/backward/step through a
 *     work area, trim_input, copy, average, remap_input to one more input.
 * AddressSanitizer and UBSan watch every access (ref_blas.c replaces
 * OpenBLAS so the dense products are checked too).
 */
#include "pg_stubs.h"

#include "tower.h"

typedef struct Input
{
	const char *data;
	size_t		size;
} Input;

static int
tower_maxsize(const MtmsTower *t)
{
	int			m = 0;

	for (int l = 0; l <= t->nlayers; l++)
		m = Max(m, t->sizes[l]);
	return m;
}

static void
use_tower(MtmsTower *t)
{
	int			nin = t->sizes[0];
	int			B = 3;
	float	   *x = palloc0(sizeof(float) * (nin + 1));
	float	   *scratch = palloc0(sizeof(float) * 2 * (tower_maxsize(t) + 1));
	float	   *X = palloc0(sizeof(float) * B * nin);
	float	   *dX = palloc0(sizeof(float) * B * nin);
	float		logits[3];
	float		dl[3] = {0.25f, -0.5f, 0.125f};
	MtmsTowerWork *w;
	MtmsTower  *c;
	int32	   *map;

	for (int i = 0; i < nin; i++)
		x[i] = (float) ((i % 7) - 3) * 0.1f;
	for (int i = 0; i < B * nin; i++)
		X[i] = (float) ((i % 5) - 2) * 0.2f;

	(void) mtms_tower_predict1(t, x, scratch);

	w = mtms_tower_work_create(t, B);
	mtms_tower_forward(t, w, X, B, logits);
	mtms_tower_backward(t, w, dl, dX);
	mtms_tower_step(t, 0.01f, 1e-6f);
	mtms_tower_work_free(w);

	mtms_tower_trim_input(t);
	(void) mtms_tower_predict1(t, x, scratch);

	c = mtms_tower_copy(t);
	mtms_tower_average(t, 1.0, c, 2.0);
	if (mtms_tower_bytes(c) != mtms_tower_bytes(t))
		stub_finding("tower copy has a different size");

	map = palloc(sizeof(int32) * nin);
	for (int j = 0; j < nin; j++)
		map[j] = j;
	mtms_tower_remap_input(c, nin + 1, map);
	if (c->sizes[0] != nin + 1)
		stub_finding("remap_input did not grow the input");
	pfree(scratch);
	scratch = palloc0(sizeof(float) * 2 * (tower_maxsize(c) + 1));
	x[nin] = 1.0f;
	(void) mtms_tower_predict1(c, x, scratch);
	mtms_tower_free(c);
}

static void
run(void *arg)
{
	Input	   *in = arg;
	const char *p = in->data;
	const char *end = in->data + in->size;
	MtmsTower  *t;
	size_t		used;
	StringInfoData buf;

	t = mtms_tower_deserialize(&p, end);
	if (p < in->data || p > end)
		stub_finding("tower reader moved its cursor outside the input (%td of %zu)",
					 p - in->data, in->size);
	used = p - in->data;

	initStringInfo(&buf);
	mtms_tower_serialize(&buf, t);
	if ((size_t) buf.len != used || memcmp(buf.data, in->data, used) != 0)
		stub_finding("tower does not serialize back to the %zu bytes it was read from (%d bytes)",
					 used, buf.len);
	pfree(buf.data);

	use_tower(t);
	mtms_tower_free(t);
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
	Input		in;
	char	   *copy;

	stub_begin_input();
	/* a private copy so that ASan catches any read past the end */
	copy = palloc(Max(size, 1));
	memcpy(copy, data, size);
	in.data = copy;
	in.size = size;
	(void) stub_try(run, &in);
	stub_end_input();
	return 0;
}
