/*
 * node_train.c
 *    mtms_node_train(): a data node's share of a multi-node training
 *    (the coordinator's side is train_nodes.c).
 *
 * The coordinator calls it on every node at once through PL/Proxy, with
 * the job (node_wire.h: the model's declaration, options and every
 * parameter training starts from), the sample relation's name and the
 * phase.  The node reads its rows of that relation, trains the units of
 * the scenes it holds rows of with the same unit jobs as a single-server
 * training (train_units.c: the leader and mtms.train_workers workers),
 * and returns the units' outcomes and parameters as rows of bytea chunks.
 * It writes nothing: the coordinator commits the version.  A job too large
 * for one call is staged first, chunk by chunk (stage-begin, stage), and
 * the training call's phase then ends in "-staged".
 *
 *   phase1    the embedding stage, then the CTCVR stage (when the model
 *             runs it), for the job's selected scenes the node has rows
 *             of; returns the units' phase-1 parameters (embeddings and
 *             phase-1 towers of their pairs)
 *   finetune  the fine-tune of every scene the node has rows of, on the
 *             job's frozen embeddings; returns the fine-tune towers
 */
#include "mtms.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "node_wire.h"
#include "wire_chunks.h"
#include "samples.h"
#include "train_driver.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

/* The chunks of a bytea[] argument. */
static bytea **
array_chunks(ArrayType *arr, int *n, Size *total)
{
	Datum	   *elems;
	bool	   *nulls;
	bytea	  **chunks;

	deconstruct_array(arr, BYTEAOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	chunks = palloc(sizeof(bytea *) * Max(*n, 1));
	*total = 0;
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a multi-node training job must not contain NULL chunks")));
		chunks[i] = DatumGetByteaPP(elems[i]);
		*total += VARSIZE_ANY_EXHDR(chunks[i]);
	}
	return chunks;
}

/* ---------------------------------------------------------------------
 * A job staged in this session
 *
 * A job too large for one call (node_wire.h) comes in "stage" calls before
 * the training call, each its own transaction: the bytes wait in session
 * memory, which PL/Proxy's connection (one per node per coordinator
 * backend) keeps.  The first call announces the size (at most
 * mtms.max_memory); the training call takes the bytes, which then go with
 * its memory, error or not.  A staging that a coordinator abandons waits
 * until the next call on that connection, or its end.
 * --------------------------------------------------------------------- */

static MemoryContext staged_cxt = NULL;
static char *staged = NULL;
static Size staged_len = 0;
static Size staged_total = 0;

static void
staged_drop(void)
{
	if (staged_cxt)
		MemoryContextDelete(staged_cxt);
	staged_cxt = NULL;
	staged = NULL;
	staged_len = staged_total = 0;
}

/* "stage-begin" (the size as int8, then chunks) or "stage" (chunks). */
static void
stage_chunks(ArrayType *arr, bool begin)
{
	int			n;
	Size		total;
	bytea	  **chunks = array_chunks(arr, &n, &total);
	int			first = 0;

	if (begin)
	{
		int64		size;

		staged_drop();
		if (n < 1 || VARSIZE_ANY_EXHDR(chunks[0]) != sizeof(int64))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a staged multi-node job must begin with its size")));
		memcpy(&size, VARDATA_ANY(chunks[0]), sizeof(int64));
		if (size <= 0 || (Size) size > MaxAllocHugeSize)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid size %lld of a staged multi-node job", (long long) size)));
		if ((double) size > (double) mtms_max_memory_mb * 1024 * 1024)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("a multi-node job of %.0f MB is more than mtms.max_memory (%d MB) on this data node",
							size / (1024.0 * 1024.0), mtms_max_memory_mb),
					 errhint("Raise mtms.max_memory on the data nodes.")));
		staged_cxt = AllocSetContextCreate(TopMemoryContext, "mtms staged job",
										   ALLOCSET_DEFAULT_SIZES);
		staged = MemoryContextAllocHuge(staged_cxt, (Size) size);
		staged_total = (Size) size;
		total -= sizeof(int64);
		first = 1;
	}
	else if (staged == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no multi-node job is being staged in this session"),
				 errhint("The coordinator's connection to this node changed during the training: train again.")));
	if (total > staged_total - staged_len)
	{
		staged_drop();
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a staged multi-node job has more bytes than announced")));
	}
	for (int i = first; i < n; i++)
	{
		memcpy(staged + staged_len, VARDATA_ANY(chunks[i]), VARSIZE_ANY_EXHDR(chunks[i]));
		staged_len += VARSIZE_ANY_EXHDR(chunks[i]);
	}
}

/* The staged job, now owned by cxt. */
static char *
staged_take(MemoryContext cxt, Size *len)
{
	char	   *data = staged;

	if (staged == NULL || staged_len != staged_total)
	{
		Size		got = staged_len,
					want = staged_total;

		staged_drop();
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the multi-node job staged in this session is incomplete: %zu of %zu bytes",
						got, want),
				 errhint("The coordinator's connection to this node changed during the training: train again.")));
	}
	MemoryContextSetParent(staged_cxt, cxt);
	*len = staged_len;
	staged_cxt = NULL;
	staged = NULL;
	staged_len = staged_total = 0;
	return data;
}

/* This node, as the coordinator's messages name it. */
static char *
node_name(void)
{
	char	   *name;

	if (SPI_execute("SELECT coalesce(host(inet_server_addr()), 'local') || ':' || "
					"coalesce(inet_server_port()::text, current_setting('port')) || '/' || "
					"current_database()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not name this data node");
	name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return name;
}

/* The result's chunks as rows (node, seq, nchunks, chunk). */
static void
emit_chunks(ReturnSetInfo *rsinfo, const char *node, const MtmsChunks *out)
{
	for (int32 i = 0; i < out->nchunks; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {0};

		values[0] = CStringGetTextDatum(node);
		values[1] = Int32GetDatum(i);
		values[2] = Int32GetDatum(out->nchunks);
		values[3] = PointerGetDatum(out->chunks[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/* The scenes this node trains: those it holds rows of (and selected). */
static bool
local_scenes(MtmsTrainCtx *cx, const bool *selected, bool *local, int64 *rows_total)
{
	int64	   *rows = mtms_samples_scene_rows(cx->relname, cx->model);
	bool		any = false;

	*rows_total = 0;
	for (int s = 0; s < cx->model->nscenes; s++)
	{
		local[s] = rows[s] > 0 && (selected == NULL || selected[s]);
		any |= local[s];
		*rows_total += rows[s];
	}
	pfree(rows);
	return any;
}

/* Train the phase's stages for the local scenes, outcomes into cx->node_out. */
static void
train_phase(MtmsTrainCtx *cx, bool phase1, const bool *local)
{
	const MtmsStageInfo *si;

	mtms_plan_finetune_share(cx);
	if (phase1)
	{
		mtms_train_stage(cx, MTMS_STAGE_EMBEDDING, local);
		if (cx->meta->opts.ctcvr)
			mtms_train_stage(cx, MTMS_STAGE_CTCVR, local);
		si = &mtms_stage_embedding_info;
	}
	else
	{
		mtms_train_stage(cx, MTMS_STAGE_FINETUNE, local);
		si = &mtms_stage_finetune_info;
	}
	/* the units' final parameters (after the CTCVR stage, in phase 1) */
	for (int u = 0; u < mtms_stage_nunits(si, cx->model->nscenes); u++)
	{
		CHECK_FOR_INTERRUPTS();
		if (local[mtms_unit_scene(si, u)])
			mtms_node_put_params(cx->node_out, cx->model, si, u);
	}
}

/* The call's phase: phase1, finetune, or staging (stage-begin, stage). */
static void
check_phase(const char *phase, bool *phase1, bool *staged_job)
{
	static const char *const valid[] = {"phase1", "finetune", "phase1-staged",
	"finetune-staged", "stage-begin", "stage"};
	bool		ok = false;

	for (int i = 0; i < lengthof(valid); i++)
		ok |= strcmp(phase, valid[i]) == 0;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phase \"%s\"", phase),
				 errhint("Valid values are 'phase1' and 'finetune', either with '-staged', and 'stage-begin' and 'stage'.")));
	*phase1 = strncmp(phase, "phase1", 6) == 0;
	*staged_job = strstr(phase, "-staged") != NULL;
}

/* The job: the call's chunks joined, or the one staged in this session. */
static void
read_job(MtmsNodeJob *job, ArrayType *arr, bool staged_job, MemoryContext cxt)
{
	char	   *data;
	Size		len;

	if (staged_job)
		data = staged_take(cxt, &len);
	else
	{
		int			n;
		bytea	  **chunks = array_chunks(arr, &n, &len);

		data = mtms_chunks_join(chunks, n, len);
		pfree(chunks);
	}
	memset(job, 0, sizeof(*job));
	mtms_node_job_read(data, len, job);
	pfree(data);
}

PG_FUNCTION_INFO_V1(mtms_node_train);
Datum
mtms_node_train(PG_FUNCTION_ARGS)
{
	MtmsTrainCtx cx;
	MtmsNodeJob job;
	char	   *phase;
	bool		phase1;
	bool		staged_job;
	bool	   *local;
	int64		rows_total;
	char	   *node;
	int			guard;
	MemoryContext old;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the arguments of mtms_node_train must not be NULL")));
	phase = text_to_cstring(PG_GETARG_TEXT_PP(2));
	check_phase(phase, &phase1, &staged_job);
	InitMaterializedSRF(fcinfo, 0);
	if (strncmp(phase, "stage", 5) == 0)
	{
		stage_chunks(PG_GETARG_ARRAYTYPE_P(0), strcmp(phase, "stage-begin") == 0);
		return (Datum) 0;
	}

	if (!staged_job)
		staged_drop();			/* a staging its coordinator abandoned */
	memset(&cx, 0, sizeof(cx));
	cx.cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms_node_train",
								   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cx.cxt);
	read_job(&job, PG_GETARG_ARRAYTYPE_P(0), staged_job, cx.cxt);

	cx.meta = job.meta;
	cx.model = job.model;
	cx.stored_npairs = job.stored_npairs;
	cx.frozen_fields = job.frozen_fields;
	cx.relname = mtms_samples_check(DatumGetObjectId(DirectFunctionCall1(regclassin,
																		 CStringGetDatum(text_to_cstring(PG_GETARG_TEXT_PP(1))))));
	cx.schema = mtms_schema_quoted();
	cx.metric_loss = palloc(sizeof(double) * cx.model->nscenes * MTMS_NMETRICS);
	cx.metric_auc = palloc(sizeof(double) * cx.model->nscenes * MTMS_NMETRICS);
	cx.history = mtms_history_create();
	cx.node_out = mtms_chunks_create(mtms_node_chunk_bytes());
	mtms_node_result_begin(cx.node_out);
	local = palloc(sizeof(bool) * cx.model->nscenes);

	SPI_connect();
	guard = mtms_guard_search_path();
	MemoryContextSwitchTo(cx.cxt);
	node = node_name();
	if (local_scenes(&cx, phase1 ? job.selected : NULL, local, &rows_total))
		train_phase(&cx, phase1, local);
	mtms_node_put_totals(cx.node_out, cx.samples > 0 ? cx.samples : rows_total,
						 cx.bad_conversions);
	mtms_unguard_search_path(guard);
	SPI_finish();

	MemoryContextSwitchTo(old);
	emit_chunks((ReturnSetInfo *) fcinfo->resultinfo, node, cx.node_out);
	MemoryContextDelete(cx.cxt);
	return (Datum) 0;
}
