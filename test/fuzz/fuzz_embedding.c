/*
 * fuzz_embedding.c
 *    mtms_emb_deserialize (src/embedding_store.c) on arbitrary bytes.
 *
 * Expected: an ERROR, or a store.  Oracles for an accepted store:
 *   - the reader stayed inside the input, and serializing the store again
 *     gives the bytes it consumed (except the reserved header word, which
 *     is written as 0 and not checked on reading);
 *   - every row is found again by its key at its index;
 *   - the store is usable: copy, merge into the copy, gradients and an
 *     Adagrad step on some rows, creation of a new row, reset of counts.
 */
#include "pg_stubs.h"

#include "embedding_store.h"

typedef struct Input
{
	const char *data;
	size_t		size;
} Input;

/* offset of the reserved int32 in the header (magic, version, dim, zero) */
#define EMB_RESERVED_OFFSET 12

static void
use_store(MtmsEmbStore *s)
{
	int			dim = mtms_emb_dim(s);
	int64		n = mtms_emb_count(s);
	MtmsEmbStore *c;
	float	   *g = palloc(sizeof(float) * dim);
	int64		idx;

	for (int64 i = 0; i < n; i++)
	{
		if (mtms_emb_find(s, mtms_emb_key(s, i)) != i)
			stub_finding("row %lld is not found by its key", (long long) i);
		(void) mtms_emb_vector(s, i)[dim - 1];
		(void) *mtms_emb_accum(s, i);
	}

	c = mtms_emb_copy(s);
	if (mtms_emb_count(c) != n)
		stub_finding("copy has %lld rows instead of %lld",
					 (long long) mtms_emb_count(c), (long long) n);
	mtms_emb_merge(c, s);

	for (int k = 0; k < dim; k++)
		g[k] = 0.01f * (float) (k + 1);
	for (int64 i = 0; i < Min(n, 8); i++)
		mtms_emb_add_grad(s, i, g);
	idx = mtms_emb_find_or_create(s, UINT64CONST(0x1234567890abcdef), 0, 0);
	if (idx >= 0)
		mtms_emb_add_grad(s, idx, g);
	mtms_emb_apply(s, 0.05f, 1e-6f);
	mtms_emb_reset_counts(s);
	(void) mtms_emb_bytes(s);
	mtms_emb_free(c);
}

static void
run(void *arg)
{
	Input	   *in = arg;
	const char *p = in->data;
	const char *end = in->data + in->size;
	MtmsEmbStore *s;
	size_t		used;
	StringInfoData buf;

	s = mtms_emb_deserialize(&p, end);
	if (p < in->data || p > end)
		stub_finding("embedding reader moved its cursor outside the input");
	used = p - in->data;

	initStringInfo(&buf);
	mtms_emb_serialize(&buf, s);
	if (used >= 8 && in->data[4] == 1 && in->data[5] == 0 && in->data[6] == 0 && in->data[7] == 0)
	{
		/*
		 * A version-1 state is written back as the current version (its
		 * rows gain accum0): that one must read and write back identically.
		 */
		const char *q = buf.data;
		MtmsEmbStore *s2 = mtms_emb_deserialize(&q, buf.data + buf.len);
		StringInfoData buf2;

		if (q != buf.data + buf.len)
			stub_finding("an upgraded version-1 store does not read back whole");
		initStringInfo(&buf2);
		mtms_emb_serialize(&buf2, s2);
		if (buf2.len != buf.len || memcmp(buf2.data, buf.data, buf.len) != 0)
			stub_finding("an upgraded version-1 store does not serialize back to itself");
		pfree(buf2.data);
		mtms_emb_free(s2);
	}
	else
	{
		if ((size_t) buf.len != used)
			stub_finding("store serializes to %d bytes, was read from %zu", buf.len, used);
		if (used >= EMB_RESERVED_OFFSET + 4)
			memcpy(buf.data + EMB_RESERVED_OFFSET, in->data + EMB_RESERVED_OFFSET, 4);
		if (memcmp(buf.data, in->data, used) != 0)
			stub_finding("store does not serialize back to the bytes it was read from");
	}
	pfree(buf.data);

	use_store(s);
	mtms_emb_free(s);
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
	copy = palloc(Max(size, 1));
	memcpy(copy, data, size);
	in.data = copy;
	in.size = size;
	(void) stub_try(run, &in);
	stub_end_input();
	return 0;
}
