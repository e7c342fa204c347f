/*
 * feature_parser.c
 *    'field=value' feature strings -> (field index, 64-bit hash).
 *
 * This is on the hot path of training and scoring (millions of rows per
 * second), so mtms_parse_features() walks the text[] in place: no detoast
 * or palloc per element, short (1-byte) varlena headers and the null bitmap
 * handled directly.  The field of an element is the text before its FIRST
 * '=' (a value may itself contain '='); it is looked up among the model's
 * fields by a linear scan for a few fields and through a small
 * open-addressing table (built once and cached) when there are many.
 *
 * The hash of a feature is hash_bytes_extended() of the whole 'field=value'
 * bytes with MTMS_FEATURE_HASH_SEED: it is part of the storage format
 * (mtms_embedding.feature) and must never change.
 *
 * SQL:
 *   mtms_feature_hash(text) -> bigint
 *   mtms_parse_features(model text, features text[]) -> TABLE(field, feature)
 */
#include "mtms.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "access.h"
#include "catalog.h"
#include "feature_parser.h"

/* Error messages quote at most this many bytes of an offending element. */
#define FEATURE_QUOTE_MAX	64

/* Up to this many fields a linear scan beats hashing the field name. */
#define FIELD_LINEAR_MAX	12

/*
 * Field lookup table for models with many fields: open addressing on
 * hash_bytes() of the name, power-of-two size, at most half full.
 * The cache keeps a private copy of the names so that it can tell whether
 * the caller's fields[] still are the ones it was built from.
 */
typedef struct FieldMap
{
	int			nfields;
	char	  **names;			/* private copies */
	int		   *lens;
	uint32		mask;
	int16	   *slots;			/* field index, or -1 */
} FieldMap;

static FieldMap *field_map_cache = NULL;

uint64
mtms_hash_feature(const char *s, int len)
{
	return hash_bytes_extended((const unsigned char *) s, len,
							   MTMS_FEATURE_HASH_SEED);
}

/*
 * Quote an element for an error message: at most FEATURE_QUOTE_MAX bytes,
 * cut on a character boundary, "..." appended when cut.
 */
static char *
quote_feature(const char *s, int len)
{
	int			cut;

	if (len <= FEATURE_QUOTE_MAX)
		return pnstrdup(s, len);
	cut = pg_mbcliplen(s, len, FEATURE_QUOTE_MAX);
	return psprintf("%.*s...", cut, s);
}

/* "a, b, c" from a field array, for hints. */
static char *
field_list(int nfields, char *const *fields)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < nfields; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, fields[i]);
	}
	if (nfields == 0)
		appendStringInfoString(&buf, "(none)");
	return buf.data;
}

/*
 * Validate the shape 'field=value' of one element (len bytes at s) and
 * return the length of its field part.  Also enforces the length limit.
 */
static inline int
check_feature_shape(const char *s, int len)
{
	const char *eq;

	if (unlikely(len > MTMS_MAX_FEATURE_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("feature \"%s\" is too long (%d bytes)",
						quote_feature(s, len), len),
				 errdetail("A feature may have at most %d bytes.",
						   MTMS_MAX_FEATURE_LEN)));

	eq = memchr(s, '=', len);
	if (unlikely(eq == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid feature \"%s\": missing \"=\"",
						quote_feature(s, len)),
				 errhint("Write features as 'field=value', for example 'user=42'.")));
	if (unlikely(eq == s))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid feature \"%s\": empty field name",
						quote_feature(s, len)),
				 errhint("Write features as 'field=value', for example 'user=42'.")));
	if (unlikely(eq == s + len - 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid feature \"%s\": empty value",
						quote_feature(s, len)),
				 errhint("Write features as 'field=value', for example 'user=42'; "
						 "leave a missing feature out of the array.")));
	return (int) (eq - s);
}

/* Build the hashed field map (in TopMemoryContext, it is cached). */
static FieldMap *
field_map_build(int nfields, char *const *fields)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	FieldMap   *map = palloc(sizeof(FieldMap));
	uint32		size = 16;
	int			i;

	while (size < (uint32) nfields * 2)
		size <<= 1;
	map->nfields = nfields;
	map->names = palloc(sizeof(char *) * nfields);
	map->lens = palloc(sizeof(int) * nfields);
	map->mask = size - 1;
	map->slots = palloc(sizeof(int16) * size);
	memset(map->slots, -1, sizeof(int16) * size);
	for (i = 0; i < nfields; i++)
	{
		uint32		h;

		map->names[i] = pstrdup(fields[i]);
		map->lens[i] = strlen(fields[i]);
		h = hash_bytes((const unsigned char *) fields[i], map->lens[i]) & map->mask;
		while (map->slots[h] >= 0)
			h = (h + 1) & map->mask;
		map->slots[h] = (int16) i;
	}
	MemoryContextSwitchTo(old);
	return map;
}

static void
field_map_free(FieldMap *map)
{
	int			i;

	for (i = 0; i < map->nfields; i++)
		pfree(map->names[i]);
	pfree(map->names);
	pfree(map->lens);
	pfree(map->slots);
	pfree(map);
}

/* The cached map for these fields, rebuilt when the fields differ. */
static FieldMap *
field_map_get(int nfields, char *const *fields)
{
	FieldMap   *map = field_map_cache;

	if (map != NULL && map->nfields == nfields)
	{
		int			i;

		for (i = 0; i < nfields; i++)
			if (strcmp(map->names[i], fields[i]) != 0)
				break;
		if (i == nfields)
			return map;
	}
	if (map != NULL)
		field_map_free(map);
	field_map_cache = NULL;
	field_map_cache = field_map_build(nfields, fields);
	return field_map_cache;
}

static inline int
field_map_find(const FieldMap *map, const char *s, int len)
{
	uint32		h = hash_bytes((const unsigned char *) s, len) & map->mask;

	for (;;)
	{
		int			f = map->slots[h];

		if (f < 0)
			return -1;
		if (map->lens[f] == len && memcmp(map->names[f], s, len) == 0)
			return f;
		h = (h + 1) & map->mask;
	}
}

/* Linear lookup: field names are NUL-terminated, s is not. */
static inline int
field_linear_find(int nfields, char *const *fields, const char *s, int len)
{
	int			i;

	for (i = 0; i < nfields; i++)
	{
		const char *f = fields[i];

		/* text never contains NUL, so strncmp stops within f */
		if (f[0] == s[0] && strncmp(f, s, len) == 0 && f[len] == '\0')
			return i;
	}
	return -1;
}

int
mtms_parse_features(ArrayType *arr, int nfields, char *const *fields,
					MtmsFeature **out, int *capacity, uint64 *content_hash)
{
	int			nitems;
	char	   *ptr;
	bits8	   *bitmap;
	int			bitmask;
	FieldMap   *map = NULL;
	MtmsFeature *res;
	uint64		chash = 0;
	int			i;

	if (arr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("feature array must not be NULL"),
				 errhint("Pass an empty array for a sample without features.")));
	if (ARR_ELEMTYPE(arr) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("features must be a text array, not %s[]",
						format_type_be(ARR_ELEMTYPE(arr)))));
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("feature array must be one-dimensional, not %d-dimensional",
						ARR_NDIM(arr))));
	if (ARR_NDIM(arr) == 0)
	{
		if (content_hash)
			*content_hash = 0;
		return 0;
	}
	nitems = ARR_DIMS(arr)[0];
	if (nitems > MTMS_MAX_FEATURES_PER_ROW)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("feature array has %d elements", nitems),
				 errdetail("A sample may have at most %d features.",
						   MTMS_MAX_FEATURES_PER_ROW)));

	if (*out == NULL || *capacity < nitems)
	{
		int			newcap = Max(nitems, 16);

		if (*out != NULL && *capacity > 0)
		{
			newcap = Max(newcap, *capacity * 2);
			newcap = Min(newcap, MTMS_MAX_FEATURES_PER_ROW);
			newcap = Max(newcap, nitems);
			*out = repalloc(*out, sizeof(MtmsFeature) * newcap);
		}
		else
			*out = palloc(sizeof(MtmsFeature) * newcap);
		*capacity = newcap;
	}
	res = *out;

	if (nfields > FIELD_LINEAR_MAX)
		map = field_map_get(nfields, fields);

	ptr = ARR_DATA_PTR(arr);
	bitmap = ARR_NULLBITMAP(arr);
	bitmask = 1;
	for (i = 0; i < nitems; i++)
	{
		struct varlena *elem;
		const char *s;
		int			len;
		int			flen;
		int			f;
		uint64		h;

		if (bitmap && (*bitmap & bitmask) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("feature array contains a NULL element"),
					 errdetail("Element %d is NULL.", i + 1),
					 errhint("Leave a missing feature out of the array.")));

		elem = (struct varlena *) ptr;
		ptr = att_addlength_pointer(ptr, -1, ptr);
		ptr = (char *) att_align_nominal(ptr, TYPALIGN_INT);
		if (bitmap)
		{
			bitmask <<= 1;
			if (bitmask == 0x100)
			{
				bitmap++;
				bitmask = 1;
			}
		}

		if (unlikely(VARATT_IS_EXTENDED(elem) && !VARATT_IS_SHORT(elem)))
			elem = pg_detoast_datum_packed(elem);	/* never seen in practice */
		s = VARDATA_ANY(elem);
		len = VARSIZE_ANY_EXHDR(elem);

		flen = check_feature_shape(s, len);
		if (map)
			f = field_map_find(map, s, flen);
		else
			f = field_linear_find(nfields, fields, s, flen);
		if (unlikely(f < 0))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("feature \"%s\" has field \"%s\" that the model does not declare",
							quote_feature(s, len), quote_feature(s, flen)),
					 errhint("The model's fields are: %s.  Add one with mtms_add_field().",
							 field_list(nfields, fields))));

		h = mtms_hash_feature(s, len);
		res[i].field = f;
		res[i].hash = h;
		chash = hash_combine64(chash, h);
	}

	if (content_hash)
		*content_hash = chash;
	return nitems;
}

/*
 * mtms_feature_hash(feature text) -> bigint
 */
PG_FUNCTION_INFO_V1(mtms_feature_hash);
Datum
mtms_feature_hash(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	check_feature_shape(s, len);
	PG_RETURN_INT64((int64) mtms_hash_feature(s, len));
}

/*
 * mtms_parse_features(model text, features text[])
 *     -> TABLE(field text, feature bigint)
 *
 * For users debugging their feature arrays: one row per element, in order.
 */
PG_FUNCTION_INFO_V1(mtms_parse_features_sql);
Datum
mtms_parse_features_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *model;
	ArrayType  *arr;
	MtmsModelMeta *meta;
	MtmsFeature *feats = NULL;
	int			cap = 0;
	int			n;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("model name must not be NULL")));
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	arr = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);

	meta = mtms_model_lookup(model, false, false);
	mtms_check_privilege(meta, MTMS_PRIV_SCORE);
	n = mtms_parse_features(arr, meta->nfields, meta->fields, &feats, &cap, NULL);

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(meta->fields[feats[i].field]);
		values[1] = Int64GetDatum((int64) feats[i].hash);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
