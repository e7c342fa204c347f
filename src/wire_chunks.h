/*
 * wire_chunks.h
 *    Messages larger than one value: a multi-node training's job and
 *    results (node_wire.h) written record by record and cut into bytea
 *    chunks of at most mtms.node_chunk_size bytes, then joined back into one
 *    buffer that may pass 1 GB (a huge allocation).
 *
 * A StringInfo holds at most 1 GB, so the writer fills one and, at the end
 * of a record (mtms_chunks_boundary), moves it into chunks once it holds a
 * chunk's worth.  One record (a pair's embeddings, a tower) must still fit
 * in a StringInfo; a whole message need not.
 */
#ifndef MTMS_WIRE_CHUNKS_H
#define MTMS_WIRE_CHUNKS_H

#include "postgres.h"

#include "lib/stringinfo.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends left postgres.h in 16 */
#endif

typedef struct MtmsChunks
{
	MemoryContext cxt;			/* where the chunks go */
	StringInfoData buf;			/* the records since the last cut */
	Size		chunk;			/* largest chunk, in bytes */
	bytea	  **chunks;			/* finished chunks, in order */
	int			nchunks;
	int			cap;
	Size		len;			/* bytes in chunks[] */
} MtmsChunks;

/* mtms.node_chunk_size in bytes. */
extern Size mtms_node_chunk_bytes(void);

/* A new message in CurrentMemoryContext, cut at chunk bytes. */
extern MtmsChunks *mtms_chunks_create(Size chunk);

/* Where the next record goes. */
static inline StringInfo
mtms_chunks_buf(MtmsChunks *c)
{
	return &c->buf;
}

/* A record ends here: cut what is written when it makes a chunk. */
extern void mtms_chunks_boundary(MtmsChunks *c);

/* The last record is written: cut the rest too. */
extern void mtms_chunks_finish(MtmsChunks *c);

/* Bytes of the whole message (finished). */
static inline Size
mtms_chunks_len(const MtmsChunks *c)
{
	return c->len;
}

/*
 * Chunks joined into one buffer of total bytes, in CurrentMemoryContext
 * (a huge allocation: it may pass 1 GB).  Errors unless they add up to
 * total exactly.
 */
extern char *mtms_chunks_join(bytea *const *chunks, int n, Size total);

#endif							/* MTMS_WIRE_CHUNKS_H */
