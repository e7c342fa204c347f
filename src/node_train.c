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
 * It writes nothing: the coordinator commits the version.
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
#include "samples.h"
#include "train_driver.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

/* The job's chunks, joined. */
static StringInfo
job_bytes(ArrayType *arr)
{
	StringInfo	buf = makeStringInfo();
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(arr, BYTEAOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		bytea	   *b;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a multi-node training job must not contain NULL chunks")));
		b = DatumGetByteaPP(elems[i]);
		appendBinaryStringInfo(buf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
	}
	return buf;
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
emit_chunks(ReturnSetInfo *rsinfo, const char *node, StringInfo out)
{
	int32		nchunks = (int32) ((out->len + MTMS_NODE_CHUNK - 1) / MTMS_NODE_CHUNK);

	for (int32 i = 0; i < nchunks; i++)
	{
		Size		off = (Size) i * MTMS_NODE_CHUNK;
		Size		len = Min(MTMS_NODE_CHUNK, out->len - off);
		bytea	   *b = palloc(VARHDRSZ + len);
		Datum		values[4];
		bool		nulls[4] = {0};

		SET_VARSIZE(b, VARHDRSZ + len);
		memcpy(VARDATA(b), out->data + off, len);
		values[0] = CStringGetTextDatum(node);
		values[1] = Int32GetDatum(i);
		values[2] = Int32GetDatum(nchunks);
		values[3] = PointerGetDatum(b);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		pfree(b);
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

PG_FUNCTION_INFO_V1(mtms_node_train);
Datum
mtms_node_train(PG_FUNCTION_ARGS)
{
	MtmsTrainCtx cx;
	MtmsNodeJob job;
	StringInfo	in;
	char	   *phase;
	bool		phase1;
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
	if (strcmp(phase, "phase1") != 0 && strcmp(phase, "finetune") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phase \"%s\"", phase),
				 errhint("Valid values are 'phase1' and 'finetune'.")));
	phase1 = strcmp(phase, "phase1") == 0;

	InitMaterializedSRF(fcinfo, 0);
	memset(&cx, 0, sizeof(cx));
	cx.cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms_node_train",
								   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cx.cxt);

	in = job_bytes(PG_GETARG_ARRAYTYPE_P(0));
	memset(&job, 0, sizeof(job));
	mtms_node_job_read(in->data, in->len, &job);
	pfree(in->data);

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
	cx.node_out = makeStringInfo();
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
