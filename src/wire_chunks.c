/*
 * wire_chunks.c
 *    Messages cut into bytea chunks and joined back (see wire_chunks.h).
 */
#include "wire_chunks.h"

#include "mtms.h"
#include "utils/memutils.h"

Size
mtms_node_chunk_bytes(void)
{
	return (Size) mtms_node_chunk_kb * 1024;
}

MtmsChunks *
mtms_chunks_create(Size chunk)
{
	MtmsChunks *c = palloc0(sizeof(MtmsChunks));

	c->cxt = CurrentMemoryContext;
	initStringInfo(&c->buf);
	c->chunk = Max(chunk, 1);
	c->cap = 16;
	c->chunks = palloc(sizeof(bytea *) * c->cap);
	return c;
}

/* Move buf into chunks of at most c->chunk bytes; buf is then empty. */
static void
cut(MtmsChunks *c)
{
	Size		off = 0;

	while (off < (Size) c->buf.len)
	{
		Size		n = Min(c->chunk, (Size) c->buf.len - off);
		bytea	   *b = MemoryContextAlloc(c->cxt, VARHDRSZ + n);

		SET_VARSIZE(b, VARHDRSZ + n);
		memcpy(VARDATA(b), c->buf.data + off, n);
		if (c->nchunks == c->cap)
		{
			c->cap *= 2;
			c->chunks = repalloc(c->chunks, sizeof(bytea *) * c->cap);	/* in c->cxt */
		}
		c->chunks[c->nchunks++] = b;
		c->len += n;
		off += n;
	}
	resetStringInfo(&c->buf);
}

void
mtms_chunks_boundary(MtmsChunks *c)
{
	if ((Size) c->buf.len >= c->chunk)
		cut(c);
}

void
mtms_chunks_finish(MtmsChunks *c)
{
	cut(c);
	pfree(c->buf.data);
	c->buf.data = NULL;
}

char *
mtms_chunks_join(bytea *const *chunks, int n, Size total)
{
	char	   *out = MemoryContextAllocHuge(CurrentMemoryContext, Max(total, 1));
	Size		off = 0;

	for (int i = 0; i < n; i++)
	{
		Size		len = VARSIZE_ANY_EXHDR(chunks[i]);

		if (len > total - off)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: a multi-node message has more bytes than announced")));
		memcpy(out + off, VARDATA_ANY(chunks[i]), len);
		off += len;
	}
	if (off != total)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: a multi-node message has %zu of its %zu bytes", off, total)));
	return out;
}
