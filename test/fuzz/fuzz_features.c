/*
 * fuzz_features.c
 *    The feature parser (src/feature_parser.c): mtms_parse_features on
 *    arbitrary text[] contents and field lists, mtms_hash_feature, and the
 *    SQL function mtms_feature_hash(text).
 *
 * Input layout (everything is derived from the fuzz bytes):
 *   byte 0   flags: 0x01 the array has a null bitmap, and elements whose
 *            bytes start with 0xFF are NULL; 0x02 two-dimensional (1 x n);
 *            0x04 repeat the elements up to 65537 of them (over the limit);
 *            0x08 1-byte varlena headers where they fit, 0x10 only on
 *            every other element; 0x20 element type is not text; 0x40 a
 *            zero-dimensional (empty) array
 *   byte 1   number of model fields, modulo 40 (the parser switches from a
 *            linear scan to a hash map above 12)
 *   rest     '\n'-separated: first the field names, then the elements.
 * Field names are made valid as the catalog would have them (1-63 bytes of
 * [A-Za-z0-9_] then [A-Za-z0-9_.-], distinct); elements can contain any
 * byte but NUL, as text can.  The array is built by hand as PostgreSQL
 * lays it out (ARR_OVERHEAD, null bitmap, int-aligned elements, 1- or
 * 4-byte headers).
 *
 * Oracle: a straightforward re-implementation of the rules in
 * feature_parser.h decides whether the array is valid and, if not, which
 * SQLSTATE the first offending element must give; the parser must agree,
 * and on success return every element's field index and
 * hash_bytes_extended hash (and the order-sensitive content hash).  The
 * parse is done twice, first on the first half of the elements, to
 * exercise the reuse and growth of the caller's output buffer.
 */
#include "pg_stubs.h"

#include "access/tupmacs.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "utils/array.h"

#include "feature_parser.h"

extern Datum mtms_feature_hash(PG_FUNCTION_ARGS);

#define MAX_FIELDS_MOD	40
#define REPLICATE_TO	(MTMS_MAX_FEATURES_PER_ROW + 1)

typedef struct Elem
{
	const char *s;				/* NULL for a NULL element */
	int			len;
} Elem;

typedef struct Case
{
	uint8		flags;
	int			nfields;
	char	  **fields;
	int			nelems;
	Elem	   *elems;
	/* results */
	MtmsFeature *out;
	int			cap;
	int			n;
	uint64		chash;
	ArrayType  *arr;
	int			hash_elem;		/* element for mtms_feature_hash */
	int64		sql_hash;
} Case;

static bool
name_char_ok(unsigned char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_')
		return true;
	return !first && (c == '-' || c == '.');
}

/* A valid, distinct field name from raw bytes. */
static char *
make_field_name(const char *s, int len, int idx, char **prev, int nprev)
{
	char		buf[MTMS_NAME_MAXLEN + 1];
	int			n = 0;

	for (int i = 0; i < len && n < MTMS_NAME_MAXLEN; i++)
	{
		unsigned char c = (unsigned char) s[i];

		buf[n] = name_char_ok(c, n == 0) ? (char) c : (char) ('a' + c % 26);
		n++;
	}
	if (n == 0)
		n = snprintf(buf, sizeof(buf), "f%d", idx);
	buf[n] = '\0';
	for (int j = 0; j < nprev; j++)
		if (strcmp(prev[j], buf) == 0)
		{
			char		suffix[16];
			int			sl = snprintf(suffix, sizeof(suffix), "_%d", idx);

			n = Min(n, MTMS_NAME_MAXLEN - sl);
			memcpy(buf + n, suffix, sl + 1);
			j = -1;				/* check again: the new name may collide too */
			idx += 1000;
		}
	return pstrdup(buf);
}

/* Build a text[] (or other element type) the way PostgreSQL lays it out. */
static ArrayType *
build_array(const Case *c, int nelems, bool with_nulls)
{
	int			ndim = (c->flags & 0x40) ? 0 : ((c->flags & 0x02) ? 2 : 1);
	Size		datasize = 0;
	Size		overhead;
	ArrayType  *a;
	char	   *p;
	bits8	   *bitmap;

	if (ndim == 0)
		nelems = 0;
	for (int i = 0; i < nelems; i++)
	{
		const Elem *e = &c->elems[i % c->nelems];

		if (e->s == NULL && with_nulls)
			continue;
		datasize += VARHDRSZ + (e->s ? e->len : 0);
		datasize = INTALIGN(datasize);
	}
	overhead = with_nulls ? ARR_OVERHEAD_WITHNULLS(Max(ndim, 1), nelems)
		: ARR_OVERHEAD_NONULLS(Max(ndim, 1));
	a = palloc0(overhead + datasize);
	SET_VARSIZE(a, overhead + datasize);
	a->ndim = ndim;
	a->dataoffset = with_nulls ? (int32) overhead : 0;
	a->elemtype = (c->flags & 0x20) ? VARCHAROID : TEXTOID;
	if (ndim == 0)
		return a;
	if (ndim == 2)
	{
		ARR_DIMS(a)[0] = 1;
		ARR_DIMS(a)[1] = nelems;
		ARR_LBOUND(a)[0] = ARR_LBOUND(a)[1] = 1;
	}
	else
	{
		ARR_DIMS(a)[0] = nelems;
		ARR_LBOUND(a)[0] = 1;
	}
	p = ARR_DATA_PTR(a);
	bitmap = ARR_NULLBITMAP(a);
	for (int i = 0; i < nelems; i++)
	{
		const Elem *e = &c->elems[i % c->nelems];
		const char *s = e->s ? e->s : "";
		int			len = e->s ? e->len : 0;
		bool		shorthdr;

		if (e->s == NULL && with_nulls)
			continue;			/* bitmap bit stays 0 */
		if (bitmap)
			bitmap[i / 8] |= (bits8) (1 << (i % 8));
		shorthdr = (c->flags & 0x08) && len + 1 <= VARATT_SHORT_MAX &&
			(!(c->flags & 0x10) || (i % 2) == 0);
		if (shorthdr)
		{
			SET_VARSIZE_SHORT(p, len + 1);
			memcpy(p + 1, s, len);
			p += len + 1;
		}
		else
		{
			SET_VARSIZE(p, len + VARHDRSZ);
			memcpy(p + VARHDRSZ, s, len);
			p += len + VARHDRSZ;
		}
		p = (char *) att_align_nominal(p, TYPALIGN_INT);
	}
	return a;
}

/* The rules of feature_parser.h: SQLSTATE of the first bad element, or 0. */
static int
ref_element_error(const Case *c, const Elem *e)
{
	const char *eq;
	int			flen;

	if (e->s == NULL)
		return ERRCODE_NULL_VALUE_NOT_ALLOWED;
	if (e->len > MTMS_MAX_FEATURE_LEN)
		return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
	eq = memchr(e->s, '=', e->len);
	if (eq == NULL || eq == e->s || eq == e->s + e->len - 1)
		return ERRCODE_INVALID_TEXT_REPRESENTATION;
	flen = eq - e->s;
	for (int f = 0; f < c->nfields; f++)
		if ((int) strlen(c->fields[f]) == flen && memcmp(c->fields[f], e->s, flen) == 0)
			return 0;
	return ERRCODE_UNDEFINED_OBJECT;
}

static int
ref_field(const Case *c, const Elem *e)
{
	int			flen = (const char *) memchr(e->s, '=', e->len) - e->s;

	for (int f = 0; f < c->nfields; f++)
		if ((int) strlen(c->fields[f]) == flen && memcmp(c->fields[f], e->s, flen) == 0)
			return f;
	return -1;
}

static int
ref_array_error(const Case *c, int nelems)
{
	if (c->flags & 0x20)
		return ERRCODE_DATATYPE_MISMATCH;
	if (c->flags & 0x40)
		return 0;
	if (c->flags & 0x02)
		return ERRCODE_ARRAY_SUBSCRIPT_ERROR;
	if (nelems > MTMS_MAX_FEATURES_PER_ROW)
		return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
	for (int i = 0; i < nelems; i++)
	{
		int			err = ref_element_error(c, &c->elems[i % c->nelems]);

		if (err)
			return err;
	}
	return 0;
}

static void
parse_it(void *arg)
{
	Case	   *c = arg;

	c->n = mtms_parse_features(c->arr, c->nfields, c->fields, &c->out, &c->cap,
							   &c->chash);
}

static void
sql_hash_it(void *arg)
{
	Case	   *c = arg;
	const Elem *e = &c->elems[c->hash_elem];
	text	   *t = palloc(VARHDRSZ + e->len);
	LOCAL_FCINFO(fcinfo, 1);

	SET_VARSIZE(t, VARHDRSZ + e->len);
	memcpy(VARDATA(t), e->s, e->len);
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(t);
	fcinfo->args[0].isnull = false;
	c->sql_hash = DatumGetInt64(mtms_feature_hash(fcinfo));
}

/* Parse the first nelems elements; check against the reference. */
static void
check_parse(Case *c, int nelems, bool with_nulls)
{
	int			want = ref_array_error(c, nelems);
	bool		ok;

	c->arr = build_array(c, nelems, with_nulls);
	ok = stub_try(parse_it, c);
	if (ok && want != 0)
		stub_finding("parser accepted an array the rules reject with %s",
					 stub_sqlstate(want));
	if (!ok && want == 0)
		stub_finding("parser rejected a valid array: %s %s",
					 stub_sqlstate(stub_last_sqlerrcode), stub_last_message);
	if (!ok)
	{
		if (stub_last_sqlerrcode != want)
		{
			char		wantstate[6];

			memcpy(wantstate, stub_sqlstate(want), 6);
			stub_finding("parser error %s (%s), the rules say %s",
						 stub_sqlstate(stub_last_sqlerrcode), stub_last_message,
						 wantstate);
		}
		return;
	}
	if (c->flags & 0x40)
	{
		if (c->n != 0 || c->chash != 0)
			stub_finding("empty array gave %d features", c->n);
		return;
	}
	if (c->n != nelems)
		stub_finding("parser returned %d features for %d elements", c->n, nelems);
	if (c->cap < c->n)
		stub_finding("capacity %d below the %d features returned", c->cap, c->n);
	{
		uint64		chash = 0;

		for (int i = 0; i < nelems; i++)
		{
			const Elem *e = &c->elems[i % c->nelems];
			uint64		h = mtms_hash_feature(e->s, e->len);

			if (c->out[i].field != ref_field(c, e))
				stub_finding("element %d: field %d, expected %d", i,
							 c->out[i].field, ref_field(c, e));
			if (c->out[i].hash != h)
				stub_finding("element %d: hash differs from mtms_hash_feature", i);
			if (h != hash_bytes_extended((const unsigned char *) e->s, e->len,
										 MTMS_FEATURE_HASH_SEED))
				stub_finding("mtms_hash_feature is not hash_bytes_extended with the seed");
			chash = hash_combine64(chash, h);
		}
		if (chash != c->chash)
			stub_finding("content hash differs");
	}
}

static void
check_sql_hash(Case *c)
{
	for (int i = 0; i < Min(c->nelems, 3); i++)
	{
		const Elem *e = &c->elems[i];
		int			want;
		bool		ok;

		if (e->s == NULL)
			continue;
		/* mtms_feature_hash checks the shape only, not the field */
		want = ref_element_error(c, e);
		if (want == ERRCODE_UNDEFINED_OBJECT)
			want = 0;
		c->hash_elem = i;
		ok = stub_try(sql_hash_it, c);
		if (ok != (want == 0))
			stub_finding("mtms_feature_hash %s an element the rules %s",
						 ok ? "accepted" : "rejected", ok ? "reject" : "accept");
		if (!ok && stub_last_sqlerrcode != want)
			stub_finding("mtms_feature_hash error %s, the rules say otherwise",
						 stub_sqlstate(stub_last_sqlerrcode));
		if (ok && (uint64) c->sql_hash != mtms_hash_feature(e->s, e->len))
			stub_finding("mtms_feature_hash differs from mtms_hash_feature");
	}
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
	Case		c;
	const char *p;
	const char *end;
	int			nseg = 0;
	char	   *buf;
	int			maxseg;
	Elem	   *segs;
	bool		with_nulls;

	if (size < 2)
		return 0;
	stub_begin_input();
	memset(&c, 0, sizeof(c));
	c.flags = data[0];
	with_nulls = (c.flags & 0x01) != 0;

	/* split the rest on '\n'; NUL bytes become spaces (text has none) */
	buf = palloc(size);
	memcpy(buf, data + 2, size - 2);
	for (size_t i = 0; i < size - 2; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	maxseg = (int) (size - 2) + 1;
	segs = palloc(sizeof(Elem) * maxseg);
	p = buf;
	end = buf + (size - 2);
	for (;;)
	{
		const char *nl = memchr(p, '\n', end - p);
		const char *stop = nl ? nl : end;

		segs[nseg].s = p;
		segs[nseg].len = stop - p;
		nseg++;
		if (nl == NULL)
			break;
		p = nl + 1;
	}

	c.nfields = Min(data[1] % MAX_FIELDS_MOD, nseg);
	c.fields = palloc(sizeof(char *) * Max(c.nfields, 1));
	for (int f = 0; f < c.nfields; f++)
		c.fields[f] = make_field_name(segs[f].s, segs[f].len, f, c.fields, f);

	c.nelems = nseg - c.nfields;
	c.elems = segs + c.nfields;
	for (int i = 0; i < c.nelems; i++)
		if (with_nulls && c.elems[i].len > 0 && (unsigned char) c.elems[i].s[0] == 0xFF)
			c.elems[i].s = NULL;

	if (c.nelems == 0)
	{
		/* an empty one-dimensional array is not possible: use ndim 0 */
		c.flags |= 0x40;
		c.nelems = 1;
		c.elems = palloc0(sizeof(Elem));
		c.elems[0].s = "";
		check_parse(&c, 0, false);
	}
	else
	{
		int			total = (c.flags & 0x04) ? REPLICATE_TO : c.nelems;

		/* half first, then all with the same output buffer */
		if (total > 1)
			check_parse(&c, total / 2, with_nulls);
		check_parse(&c, total, with_nulls);
		check_sql_hash(&c);
	}
	stub_end_input();
	return 0;
}
