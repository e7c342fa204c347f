/*
 * fuzz_train_state.c
 *    The training aggregates' partial-state reader (deserialize_state in
 *    src/train_state.c, static) through its public entry point
 *    mtms_train_deserialfn(bytea, internal), called as the executor calls
 *    it when a parallel worker's state reaches the leader.  The same reader
 *    loads the leader's snapshot file in the workers.
 *
 * Expected: an ERROR, or a state.  What the executor and the driver then
 * do with an accepted state is done too, so a state that is accepted but
 * inconsistent shows up as a memory error instead of passing silently:
 *   - mtms_state_validate (the final function's validation pass over the
 *     state's validation rows, with its model and work area);
 *   - mtms_train_combinefn with a second copy (parameter averaging,
 *     embedding merge, appending validation rows);
 *   - mtms_train_serialfn of the result, whose output must be accepted by
 *     the reader again (round trip).
 */
#include "pg_stubs.h"

#include "fmgr.h"

#include "train_state.h"

extern Datum mtms_train_deserialfn(PG_FUNCTION_ARGS);
extern Datum mtms_train_serialfn(PG_FUNCTION_ARGS);
extern Datum mtms_train_combinefn(PG_FUNCTION_ARGS);

typedef struct Input
{
	const char *data;
	size_t		size;
	MtmsTrainState *st;
	bytea	   *again;
} Input;

static Datum
call2(PGFunction fn, Datum a, bool anull, Datum b, bool bnull)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum		r;

	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = a;
	fcinfo->args[0].isnull = anull;
	fcinfo->args[1].value = b;
	fcinfo->args[1].isnull = bnull;
	r = fn(fcinfo);
	if (fcinfo->isnull)
		stub_finding("aggregate support function returned NULL");
	return r;
}

static MtmsTrainState *
deserialize(const char *data, size_t size)
{
	bytea	   *b = palloc(VARHDRSZ + size);

	SET_VARSIZE(b, VARHDRSZ + size);
	memcpy(VARDATA(b), data, size);
	return (MtmsTrainState *)
		DatumGetPointer(call2(mtms_train_deserialfn, PointerGetDatum(b), false,
							  (Datum) 0, true));
}

static void
read_it(void *arg)
{
	Input	   *in = arg;

	in->st = deserialize(in->data, in->size);
}

static void
use_it(void *arg)
{
	Input	   *in = arg;
	MtmsTrainState *a = in->st;
	MtmsTrainState *b;

	mtms_state_validate(a);
	b = deserialize(in->data, in->size);
	a = (MtmsTrainState *)
		DatumGetPointer(call2(mtms_train_combinefn, PointerGetDatum(a), false,
							  PointerGetDatum(b), false));
	in->again = DatumGetByteaPP(call2(mtms_train_serialfn, PointerGetDatum(a), false,
									  (Datum) 0, true));
}

static void
reread_it(void *arg)
{
	Input	   *in = arg;

	(void) deserialize(VARDATA_ANY(in->again), VARSIZE_ANY_EXHDR(in->again));
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
	memset(&in, 0, sizeof(in));
	in.data = (const char *) data;
	in.size = size;
	if (stub_try(read_it, &in))
	{
		/*
		 * Errors raised while using an accepted state are counted as
		 * expected (e.g. combine refusing two shapes); memory errors are
		 * not.
		 */
		if (stub_try(use_it, &in) && !stub_try(reread_it, &in))
			stub_finding("a state written by mtms_train_serialfn is rejected by the reader: %s",
						 stub_last_message);
	}
	stub_end_input();
	return 0;
}
