/*
 * wire_codec.h
 *    The byte codec of the messages mtms passes between processes and
 *    nodes (unit_wire.c, node_wire.c): raw bytes appended to a StringInfo,
 *    read back with bounds checks.  what names the message in errors
 *    ("mtms: truncated <what> message").
 */
#ifndef MTMS_WIRE_CODEC_H
#define MTMS_WIRE_CODEC_H

#include "postgres.h"

#include "lib/stringinfo.h"

static inline void
mtms_wire_put(StringInfo buf, const void *p, Size n)
{
	appendBinaryStringInfo(buf, p, (int) n);
}

static inline void
mtms_wire_get(const char **p, const char *end, void *dst, Size n, const char *what)
{
	if ((Size) (end - *p) < n)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: truncated %s message", what)));
	memcpy(dst, *p, n);
	*p += n;
}

/* An int32 in [lo, hi]. */
static inline int32
mtms_wire_get_int(const char **p, const char *end, int32 lo, int32 hi, const char *what)
{
	int32		v;

	mtms_wire_get(p, end, &v, sizeof(v), what);
	if (v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: invalid %s message", what)));
	return v;
}

#endif							/* MTMS_WIRE_CODEC_H */
