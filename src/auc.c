/*
 * auc.c
 *    Exact ROC AUC: the mtms_auc(score float8, label boolean) aggregate and
 *    mtms_auc_compute(), shared with training validation and mtms_evaluate.
 *
 * AUC = P(score of a random positive > score of a random negative), a tie
 * counting one half (the Mann-Whitney U statistic over npos * nneg).  The
 * scores of the two classes are kept apart, sorted, and merged: for every
 * group of equal positive scores, count the negatives strictly below and
 * the negatives equal.  Sums are kept as integers (twice the U statistic),
 * so the result is exact up to the final division.
 *
 * The aggregate state is two growing float8 arrays (8 bytes per row, huge
 * allocations past 1 GB).  It is parallel safe: partial states are
 * serialized as bytea and appended by the combine function.  The final
 * function sorts the arrays in place; that keeps the state's value (a
 * multiset of scores per class), so the state may still be shared or
 * extended afterwards.
 */
#include "mtms.h"

#include <math.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends left postgres.h in 16 */
#endif

#include "auc.h"

/* float8 order as in PostgreSQL: NaN above everything, NaN = NaN. */
static inline int
auc_cmp(double a, double b)
{
	if (isnan(a))
		return isnan(b) ? 0 : 1;
	if (isnan(b))
		return -1;
	return (a > b) - (a < b);
}

#define ST_SORT sort_scores
#define ST_ELEMENT_TYPE double
#define ST_COMPARE(a, b) auc_cmp(*(a), *(b))
#define ST_CHECK_FOR_INTERRUPTS
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

double
mtms_auc_compute_split(double *pos, int64 npos, double *neg, int64 nneg)
{
	uint64		twice_u = 0;	/* 2 * (#pairs pos > neg) + #ties */
	int64		i = 0;
	int64		j = 0;

	if (npos <= 0 || nneg <= 0)
		return get_float8_nan();

	sort_scores(pos, (size_t) npos);
	sort_scores(neg, (size_t) nneg);

	while (i < npos)
	{
		double		v = pos[i];
		int64		k = 1;
		int64		e;

		CHECK_FOR_INTERRUPTS();

		while (i + k < npos && auc_cmp(pos[i + k], v) == 0)
			k++;
		while (j < nneg && auc_cmp(neg[j], v) < 0)
			j++;
		e = j;
		while (e < nneg && auc_cmp(neg[e], v) == 0)
			e++;
		/* j negatives below v, (e - j) tied with it */
		twice_u += (uint64) k * (uint64) (2 * j + (e - j));
		i += k;
	}
	return (double) twice_u / (2.0 * (double) npos * (double) nneg);
}

double
mtms_auc_compute(const double *scores, const bool *labels, int64 n)
{
	int64		npos = 0;
	int64		nneg = 0;
	int64		i;
	double	   *pos;
	double	   *neg;
	double		auc;

	for (i = 0; i < n; i++)
		npos += labels[i] ? 1 : 0;
	nneg = n - npos;
	if (npos == 0 || nneg == 0)
		return get_float8_nan();

	pos = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(double) * npos);
	neg = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(double) * nneg);
	npos = nneg = 0;
	for (i = 0; i < n; i++)
	{
		if (labels[i])
			pos[npos++] = scores[i];
		else
			neg[nneg++] = scores[i];
	}
	auc = mtms_auc_compute_split(pos, npos, neg, nneg);
	pfree(pos);
	pfree(neg);
	return auc;
}

/* ---------------------------------------------------------------------
 * The aggregate
 * ---------------------------------------------------------------------
 */

typedef struct AucState
{
	int64		n[2];			/* [0] negatives, [1] positives */
	int64		cap[2];
	double	   *scores[2];
} AucState;

#define AUC_INITIAL_CAP 64

/* Header of the serialized state, followed by the negatives' then the
 * positives' scores. */
typedef struct AucSerialHeader
{
	int64		n[2];
} AucSerialHeader;

static AucState *
auc_state_new(MemoryContext cxt, int64 cap0, int64 cap1)
{
	AucState   *st = MemoryContextAllocZero(cxt, sizeof(AucState));

	if (cap0 < 0 || cap1 < 0 ||
		(Size) cap0 > MaxAllocHugeSize / sizeof(double) ||
		(Size) cap1 > MaxAllocHugeSize / sizeof(double))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms_auc state too large")));
	st->cap[0] = Max(cap0, AUC_INITIAL_CAP);
	st->cap[1] = Max(cap1, AUC_INITIAL_CAP);
	st->scores[0] = MemoryContextAllocHuge(cxt, sizeof(double) * st->cap[0]);
	st->scores[1] = MemoryContextAllocHuge(cxt, sizeof(double) * st->cap[1]);
	return st;
}

/* Make room for extra more scores of class c (repalloc keeps the context). */
static void
auc_state_reserve(AucState *st, int c, int64 extra)
{
	int64		need = st->n[c] + extra;
	int64		cap = st->cap[c];

	if (need <= cap)
		return;
	while (cap < need)
		cap *= 2;
	if ((Size) cap > MaxAllocHugeSize / sizeof(double))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms_auc cannot hold " INT64_FORMAT " scores", need)));
	st->scores[c] = repalloc_huge(st->scores[c], sizeof(double) * cap);
	st->cap[c] = cap;
}

static MemoryContext
auc_aggcontext(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcontext;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s called in non-aggregate context", fname)));
	return aggcontext;
}

PG_FUNCTION_INFO_V1(mtms_auc_trans);
Datum
mtms_auc_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = auc_aggcontext(fcinfo, "mtms_auc_trans");
	AucState   *st = PG_ARGISNULL(0) ? NULL : (AucState *) PG_GETARG_POINTER(0);
	int			c;

	/* NULL score or label: the row is skipped */
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
	{
		if (st == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st);
	}

	if (st == NULL)
		st = auc_state_new(aggcontext, 0, 0);
	c = PG_GETARG_BOOL(2) ? 1 : 0;
	if (st->n[c] == st->cap[c])
		auc_state_reserve(st, c, 1);
	st->scores[c][st->n[c]++] = PG_GETARG_FLOAT8(1);
	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(mtms_auc_combine);
Datum
mtms_auc_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = auc_aggcontext(fcinfo, "mtms_auc_combine");
	AucState   *st1 = PG_ARGISNULL(0) ? NULL : (AucState *) PG_GETARG_POINTER(0);
	AucState   *st2 = PG_ARGISNULL(1) ? NULL : (AucState *) PG_GETARG_POINTER(1);
	int			c;

	if (st2 == NULL)
	{
		if (st1 == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st1);
	}
	/* st2 belongs to someone else: copy it into the aggregate's context */
	if (st1 == NULL)
		st1 = auc_state_new(aggcontext, st2->n[0], st2->n[1]);
	for (c = 0; c < 2; c++)
	{
		auc_state_reserve(st1, c, st2->n[c]);
		memcpy(st1->scores[c] + st1->n[c], st2->scores[c],
			   sizeof(double) * st2->n[c]);
		st1->n[c] += st2->n[c];
	}
	PG_RETURN_POINTER(st1);
}

PG_FUNCTION_INFO_V1(mtms_auc_serialize);
Datum
mtms_auc_serialize(PG_FUNCTION_ARGS)
{
	AucState   *st;
	AucSerialHeader hdr;
	Size		size;
	bytea	   *result;
	char	   *p;

	if (!AggCheckCallContext(fcinfo, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mtms_auc_serialize called in non-aggregate context")));
	st = (AucState *) PG_GETARG_POINTER(0);

	hdr.n[0] = st->n[0];
	hdr.n[1] = st->n[1];
	size = VARHDRSZ + sizeof(hdr) + sizeof(double) * (Size) (st->n[0] + st->n[1]);
	if (size > MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("mtms_auc partial state of " INT64_FORMAT " scores is too large to pass between parallel processes",
						st->n[0] + st->n[1]),
				 errhint("Run this aggregate without parallel query (SET max_parallel_workers_per_gather = 0).")));
	result = palloc(size);
	SET_VARSIZE(result, size);
	p = VARDATA(result);
	memcpy(p, &hdr, sizeof(hdr));
	p += sizeof(hdr);
	memcpy(p, st->scores[0], sizeof(double) * st->n[0]);
	p += sizeof(double) * st->n[0];
	memcpy(p, st->scores[1], sizeof(double) * st->n[1]);
	PG_RETURN_BYTEA_P(result);
}

PG_FUNCTION_INFO_V1(mtms_auc_deserialize);
Datum
mtms_auc_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *b;
	AucSerialHeader hdr;
	AucState   *st;
	const char *p;
	Size		len;

	if (!AggCheckCallContext(fcinfo, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mtms_auc_deserialize called in non-aggregate context")));
	b = PG_GETARG_BYTEA_PP(0);
	p = VARDATA_ANY(b);
	len = VARSIZE_ANY_EXHDR(b);
	if (len < sizeof(hdr))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid mtms_auc state: %zu bytes", len)));
	memcpy(&hdr, p, sizeof(hdr));
	p += sizeof(hdr);
	/* each count against the bytes left, before any multiplication can wrap */
	if (hdr.n[0] < 0 || hdr.n[1] < 0 ||
		(Size) hdr.n[0] > (len - sizeof(hdr)) / sizeof(double) ||
		(Size) hdr.n[1] > (len - sizeof(hdr)) / sizeof(double) - (Size) hdr.n[0] ||
		len != sizeof(hdr) + sizeof(double) * ((Size) hdr.n[0] + (Size) hdr.n[1]))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid mtms_auc state: %zu bytes for " INT64_FORMAT " scores",
						len, hdr.n[0] + hdr.n[1])));

	st = auc_state_new(CurrentMemoryContext, hdr.n[0], hdr.n[1]);
	memcpy(st->scores[0], p, sizeof(double) * hdr.n[0]);
	p += sizeof(double) * hdr.n[0];
	memcpy(st->scores[1], p, sizeof(double) * hdr.n[1]);
	st->n[0] = hdr.n[0];
	st->n[1] = hdr.n[1];
	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(mtms_auc_final);
Datum
mtms_auc_final(PG_FUNCTION_ARGS)
{
	AucState   *st;
	double		auc;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (AucState *) PG_GETARG_POINTER(0);
	/* sorts in place: same multiset, so the state stays valid */
	auc = mtms_auc_compute_split(st->scores[1], st->n[1], st->scores[0], st->n[0]);
	if (isnan(auc))
		PG_RETURN_NULL();		/* a class is absent */
	PG_RETURN_FLOAT8(auc);
}
