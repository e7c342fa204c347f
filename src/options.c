/*
 * options.c
 *    Training options of a model: defaults, validation of the user's jsonb,
 *    and the normalized jsonb (every key) stored in mtms_model.options.
 *
 * Every option is described once in option_table below: its key, its JSON
 * kind (number, integer, boolean), where it lives in MtmsOptions and its
 * valid range.  Parsing, error messages and the normalized output are all
 * driven by that table, so adding an option is one line there plus its
 * default in mtms_options_default().
 */
#include "mtms.h"

#include "options.h"

#include <math.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

typedef enum MtmsOptionKind
{
	OPT_NUMBER,					/* any JSON number, stored as double */
	OPT_INTEGER,				/* an integral JSON number, int32 or int64 */
	OPT_BOOLEAN,				/* JSON true / false */
	OPT_FLAG,					/* JSON true / false, false by default and then
								 * left out of the normalized options */
	OPT_NAME					/* a JSON string, an identifier (char[NAMEDATALEN]);
								 * "" is the default and is left out of the
								 * normalized options */
} MtmsOptionKind;

typedef struct MtmsOptionDesc
{
	const char *key;
	MtmsOptionKind kind;
	size_t		offset;			/* in MtmsOptions */
	int			size;			/* bytes of the field (integers: 4 or 8) */
	/* OPT_NUMBER: dmin < v (or <= v when !min_exclusive) and v <= dmax */
	double		dmin;
	bool		min_exclusive;
	double		dmax;
	/* OPT_INTEGER: imin <= v <= imax */
	int64		imin;
	int64		imax;
	const char *expect;			/* "an integer between 1 and 65536", ... */
	const char *hint;			/* errhint of a bad value, or NULL */
} MtmsOptionDesc;

#define NUM_OPT(key, field, lo, excl, hi, expect) \
	{key, OPT_NUMBER, offsetof(MtmsOptions, field), sizeof(double), \
	 lo, excl, hi, 0, 0, expect, NULL}
#define INT_OPT(key, field, lo, hi, expect) \
	{key, OPT_INTEGER, offsetof(MtmsOptions, field), \
	 sizeof(((MtmsOptions *) 0)->field), 0, false, 0, lo, hi, expect, NULL}
#define INT_OPT_HINT(key, field, lo, hi, expect, hint) \
	{key, OPT_INTEGER, offsetof(MtmsOptions, field), \
	 sizeof(((MtmsOptions *) 0)->field), 0, false, 0, lo, hi, expect, hint}
#define NAME_OPT(key, field, expect) \
	{key, OPT_NAME, offsetof(MtmsOptions, field), NAMEDATALEN, \
	 0, false, 0, 0, 0, expect, NULL}
#define BOOL_OPT(key, field, expect) \
	{key, OPT_BOOLEAN, offsetof(MtmsOptions, field), sizeof(bool), \
	 0, false, 0, 0, 0, expect, NULL}
#define FLAG_OPT(key, field, expect) \
	{key, OPT_FLAG, offsetof(MtmsOptions, field), sizeof(bool), \
	 0, false, 0, 0, 0, expect, NULL}

static const MtmsOptionDesc option_table[] = {
	NUM_OPT("lr_embedding", lr_embedding, 0.0, true, 10.0,
			"a number greater than 0 and at most 10"),
	NUM_OPT("lr_tower", lr_tower, 0.0, true, 1.0,
			"a number greater than 0 and at most 1"),
	INT_OPT("batch_size", batch_size, 1, 65536,
			"an integer between 1 and 65536"),
	NUM_OPT("l2", l2, 0.0, false, 1.0,
			"a number between 0 and 1"),
	INT_OPT("max_epochs", max_epochs, 1, 1000,
			"an integer between 1 and 1000"),
	INT_OPT("patience", patience, 1, 1000,
			"an integer between 1 and 1000"),
	NUM_OPT("validation_fraction", validation_fraction, 0.0, true, 0.5,
			"a number greater than 0 and at most 0.5"),
	NUM_OPT("finetune_fraction", finetune_fraction, 0.0, false, 0.45,
			"a number between 0 and 0.45"),
	INT_OPT("finetune_rows", finetune_rows, 0, PG_INT64_MAX,
			"an integer >= 0 (0 means no cap)"),
	INT_OPT("seed", seed, PG_INT64_MIN, PG_INT64_MAX,
			"a 64-bit integer"),
	BOOL_OPT("ctcvr", ctcvr, "a boolean"),
	INT_OPT("shuffle_buffer", shuffle_buffer, 1, 16777216,
			"an integer between 1 and 16777216"),
	INT_OPT("evals_per_epoch", evals_per_epoch, 1, 100,
			"an integer between 1 and 100"),
	INT_OPT("keep_versions", keep_versions, 1, 1000,
			"an integer between 1 and 1000"),
	INT_OPT("max_features", max_features, 0, PG_INT64_MAX,
			"an integer >= 0 (0 means unlimited)"),
	NUM_OPT("min_delta", min_delta, 0.0, false, 0.1,
			"a number between 0 and 0.1"),
	INT_OPT_HINT("min_count", min_count, 0, 1000000,
				 "an integer between 0 and 1000000 (0 means off)",
				 "A feature gets embedding rows once seen that many times in training, e.g. 3."),
	INT_OPT_HINT("ttl_slots", ttl_slots, 0, 100000,
				 "an integer between 0 and 100000 (0 means off)",
				 "A feature unseen in that many trainings is dropped, e.g. 30 for daily training."),
	FLAG_OPT("refit", refit, "a boolean"),
	NAME_OPT("cluster", cluster,
			 "the name of a PL/Proxy cluster (a non-empty string of at most 63 bytes)"),
};

#define NUM_OPTIONS lengthof(option_table)

/* Longest rendering of a user value we put into an error message. */
#define MAX_SHOWN_VALUE 64

void
mtms_options_default(MtmsOptions *o)
{
	memset(o, 0, sizeof(*o));
	o->lr_embedding = 0.05;
	o->lr_tower = 0.001;
	o->batch_size = 256;
	o->l2 = 1e-6;
	o->max_epochs = 10;
	o->patience = 4;
	o->validation_fraction = 0.1;
	o->finetune_fraction = 0.2;
	o->finetune_rows = 5000;
	o->seed = 42;
	o->ctcvr = true;
	o->shuffle_buffer = 65536;
	o->evals_per_epoch = 4;
	o->keep_versions = 2;
	o->max_features = 0;
	o->min_delta = 0.0;
	o->min_count = 0;
	o->ttl_slots = 0;
}

/* "lr_embedding, lr_tower, ..." for hints. */
static char *
known_keys(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < (int) NUM_OPTIONS; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", option_table[i].key);
	return buf.data;
}

/* The user's value as JSON text, shortened for an error message. */
static char *
show_value(JsonbValue *v)
{
	char	   *s;

	switch (v->type)
	{
		case jbvNull:
			s = pstrdup("null");
			break;
		case jbvBool:
			s = pstrdup(v->val.boolean ? "true" : "false");
			break;
		case jbvNumeric:
			s = DatumGetCString(DirectFunctionCall1(numeric_out,
													NumericGetDatum(v->val.numeric)));
			if (strlen(s) > 24)
				s = numeric_out_sci(v->val.numeric, 6);
			break;
		case jbvString:
			{
				StringInfoData buf;
				char	   *raw = pnstrdup(v->val.string.val, v->val.string.len);

				initStringInfo(&buf);
				escape_json(&buf, raw);
				s = buf.data;
				break;
			}
		case jbvBinary:
			s = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
			break;
		default:
			s = pstrdup("?");
			break;
	}

	if (strlen(s) > MAX_SHOWN_VALUE)
	{
		int			len = pg_mbcliplen(s, strlen(s), MAX_SHOWN_VALUE);

		s = psprintf("%.*s...", len, s);
	}
	return s;
}

static void
option_error(const MtmsOptionDesc *d, JsonbValue *v)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("option \"%s\" must be %s, got %s",
					d->key, d->expect, show_value(v)),
			 d->hint ? errhint("%s", d->hint) : 0));
}

static bool
numeric_is_integral(Numeric num)
{
	Datum		t = DirectFunctionCall2(numeric_trunc, NumericGetDatum(num),
										Int32GetDatum(0));

	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(num), t)) == 0;
}

static int
numeric_cmp_int64(Numeric num, int64 i)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(num),
											 NumericGetDatum(int64_to_numeric(i))));
}

/* Check one value against its descriptor and store it into *o. */
static void
set_option(const MtmsOptionDesc *d, JsonbValue *v, MtmsOptions *o)
{
	char	   *field = (char *) o + d->offset;

	switch (d->kind)
	{
		case OPT_NUMBER:
			{
				double		x;

				if (v->type != jbvNumeric)
					option_error(d, v);
				/* huge values become +-Infinity, which the range rejects */
				x = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
													   NumericGetDatum(v->val.numeric)));
				if (isnan(x) ||
					(d->min_exclusive ? !(x > d->dmin) : !(x >= d->dmin)) ||
					!(x <= d->dmax))
					option_error(d, v);
				*(double *) field = x;
				break;
			}
		case OPT_INTEGER:
			{
				int64		x;

				if (v->type != jbvNumeric ||
					!numeric_is_integral(v->val.numeric) ||
					numeric_cmp_int64(v->val.numeric, d->imin) < 0 ||
					numeric_cmp_int64(v->val.numeric, d->imax) > 0)
					option_error(d, v);
				x = DatumGetInt64(DirectFunctionCall1(numeric_int8,
													  NumericGetDatum(v->val.numeric)));
				if (d->size == sizeof(int32))
					*(int32 *) field = (int32) x;
				else
					*(int64 *) field = x;
				break;
			}
		case OPT_BOOLEAN:
		case OPT_FLAG:
			if (v->type != jbvBool)
				option_error(d, v);
			*(bool *) field = v->val.boolean;
			break;
		case OPT_NAME:
			if (v->type != jbvString || v->val.string.len == 0 ||
				v->val.string.len >= NAMEDATALEN ||
				memchr(v->val.string.val, '\0', v->val.string.len) != NULL)
				option_error(d, v);
			memcpy(field, v->val.string.val, v->val.string.len);
			field[v->val.string.len] = '\0';
			break;
	}
}

void
mtms_options_parse(Jsonb *json, MtmsOptions *o)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;

	if (json == NULL)
		return;

	if (!JB_ROOT_IS_OBJECT(json) || JB_ROOT_IS_SCALAR(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object, got %s",
						JB_ROOT_IS_SCALAR(json) ? "a scalar" : "an array"),
				 errhint("For example '{\"batch_size\": 512}'; known options: %s.",
						 known_keys())));

	it = JsonbIteratorInit(&json->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		const MtmsOptionDesc *d = NULL;

		if (tok != WJB_KEY)
			continue;

		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (int i = 0; i < (int) NUM_OPTIONS; i++)
		{
			if (strcmp(option_table[i].key, key) == 0)
			{
				d = &option_table[i];
				break;
			}
		}
		if (d == NULL)
		{
			if (strlen(key) > MAX_SHOWN_VALUE)
				key = psprintf("%.*s...",
							   pg_mbcliplen(key, strlen(key), MAX_SHOWN_VALUE),
							   key);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\"", key),
					 errhint("Known options: %s.", known_keys())));
		}

		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		set_option(d, &v, o);
	}
}

Jsonb *
mtms_options_to_jsonb(const MtmsOptions *o)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < (int) NUM_OPTIONS; i++)
	{
		const MtmsOptionDesc *d = &option_table[i];
		const char *field = (const char *) o + d->offset;
		JsonbValue	k;
		JsonbValue	v;

		if ((d->kind == OPT_NAME && field[0] == '\0') ||
			(d->kind == OPT_FLAG && !*(const bool *) field))
			continue;			/* unset: as before the option existed */
		k.type = jbvString;
		k.val.string.val = (char *) d->key;
		k.val.string.len = strlen(d->key);
		pushJsonbValue(&state, WJB_KEY, &k);

		switch (d->kind)
		{
			case OPT_NUMBER:
				v.type = jbvNumeric;
				v.val.numeric =
					DatumGetNumeric(DirectFunctionCall1(float8_numeric,
														Float8GetDatum(*(const double *) field)));
				break;
			case OPT_INTEGER:
				v.type = jbvNumeric;
				v.val.numeric = int64_to_numeric(d->size == sizeof(int32) ?
												 (int64) *(const int32 *) field :
												 *(const int64 *) field);
				break;
			case OPT_BOOLEAN:
			case OPT_FLAG:
				v.type = jbvBool;
				v.val.boolean = *(const bool *) field;
				break;
			case OPT_NAME:
				v.type = jbvString;
				v.val.string.val = (char *) field;
				v.val.string.len = strlen(field);
				break;
		}
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	return JsonbValueToJsonb(res);
}
