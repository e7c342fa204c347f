/*
 * fuzz_auc.c
 *    The mtms_auc aggregate's partial-state reader, mtms_auc_deserialize
 *    (src/auc.c), on arbitrary bytes, called as the executor calls it.
 *
 * Expected: an ERROR, or a state.  Oracles for an accepted state:
 *   - mtms_auc_serialize gives back exactly the input;
 *   - combine (copying it into a new state) and the final function run,
 *     and the AUC is NULL or within [0, 1].
 */
#include "pg_stubs.h"

#include <math.h>

#include "fmgr.h"

extern Datum mtms_auc_deserialize(PG_FUNCTION_ARGS);
extern Datum mtms_auc_serialize(PG_FUNCTION_ARGS);
extern Datum mtms_auc_combine(PG_FUNCTION_ARGS);
extern Datum mtms_auc_final(PG_FUNCTION_ARGS);

typedef struct Input
{
	const char *data;
	size_t		size;
} Input;

static Datum
call2(PGFunction fn, Datum a, bool anull, Datum b, bool bnull, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum		r;

	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = a;
	fcinfo->args[0].isnull = anull;
	fcinfo->args[1].value = b;
	fcinfo->args[1].isnull = bnull;
	r = fn(fcinfo);
	*isnull = fcinfo->isnull;
	return r;
}

static void
check_final(Datum st)
{
	bool		isnull;
	Datum		r = call2(mtms_auc_final, st, false, (Datum) 0, true, &isnull);

	if (!isnull)
	{
		double		auc = DatumGetFloat8(r);

		if (!(auc >= 0.0 && auc <= 1.0))
			stub_finding("mtms_auc_final returned %g", auc);
	}
}

static void
run(void *arg)
{
	Input	   *in = arg;
	bytea	   *b = palloc(VARHDRSZ + in->size);
	bytea	   *again;
	Datum		st;
	Datum		st2;
	bool		isnull;

	SET_VARSIZE(b, VARHDRSZ + in->size);
	memcpy(VARDATA(b), in->data, in->size);

	st = call2(mtms_auc_deserialize, PointerGetDatum(b), false, (Datum) 0, true, &isnull);
	if (isnull)
		stub_finding("mtms_auc_deserialize returned NULL");

	again = DatumGetByteaPP(call2(mtms_auc_serialize, st, false, (Datum) 0, true, &isnull));
	if (VARSIZE_ANY_EXHDR(again) != in->size ||
		memcmp(VARDATA_ANY(again), in->data, in->size) != 0)
		stub_finding("mtms_auc state does not serialize back to its %zu input bytes",
					 in->size);

	/* the final function first: a later combine may rightly ERROR */
	check_final(st);
	st2 = call2(mtms_auc_combine, (Datum) 0, true, st, false, &isnull);
	check_final(st2);
	st2 = call2(mtms_auc_combine, st2, false, st, false, &isnull);
	check_final(st2);
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

	stub_begin_input();
	in.data = (const char *) data;
	in.size = size;
	(void) stub_try(run, &in);
	stub_end_input();
	return 0;
}
