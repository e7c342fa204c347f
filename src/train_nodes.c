/*
 * train_nodes.c
 *    mtms_train on the data nodes of a PL/Proxy cluster (the model option
 *    "cluster"): the coordinator's side (the nodes' is node_train.c).
 *
 * The samples live on the data nodes, each scene's rows on one node under
 * the same relation name; the coordinator keeps the catalog and writes the
 * version.  A training here:
 *
 *   1. checks every node (reachable, mtms installed, the coordinator's
 *      version in the coordinator's schema) before any work;
 *   2. ships the start model (node_wire.h, bytea chunks: in the call, or
 *      staged chunk by chunk first when it is larger than a few chunks)
 *      to every node at once (PL/Proxy RUN ON ALL) and has each train
 *      phase 1 (the embedding and CTCVR stages) for the scenes it holds;
 *   3. ships the model with its new frozen embeddings once more and has
 *      each node fine-tune its scenes;
 *   4. gathers the units: every unit from exactly one node (a disjoint
 *      union, never an average: a scene whose rows are on two nodes is an
 *      error), into cx->model, whose version train.c then writes in the
 *      caller's transaction.
 *
 * A unit's trajectory depends only on its rows, its starting parameters
 * and the seed (unit_train.h), so with each scene's rows on one node the
 * parameters are those of a single-server training of the same rows, bit
 * for bit.  The nodes write nothing; a failed or cancelled training leaves
 * the previous version active (PL/Proxy cancels the remote calls when the
 * coordinator's statement is cancelled or times out).
 *
 * The PL/Proxy functions this calls are made by mtms_cluster_setup()
 * (mtms--0.2--0.3.sql), since only a superuser may create functions in
 * PL/Proxy's language and the extension must not require PL/Proxy.
 */
#include "mtms.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "node_wire.h"
#include "progress.h"
#include "train_driver.h"
#include "unit_wire.h"
#include "wire_chunks.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

/* One node's answer to a call: its name and its result's chunks. */
typedef struct NodeReply
{
	char	   *node;
	bytea	  **chunks;			/* [nchunks], in seq order */
	Size		len;			/* their bytes */
	int32		nchunks;
	int32		got;
	char	   *data;			/* the result: the chunks joined */
} NodeReply;

typedef struct NodeCall
{
	int			nreplies;
	NodeReply  *replies;
	const char *cluster;
	Size		shipped;		/* bytes sent to the nodes */
	Size		received;
	int			staging_calls;	/* calls that staged the job (0: in the call) */
} NodeCall;

/* ---------------------------------------------------------------------
 * Which node failed
 * --------------------------------------------------------------------- */

/* A partition's connection string without secrets: host, port, dbname. */
static char *
safe_connstr(const char *connstr)
{
	StringInfoData buf;
	char	   *copy = pstrdup(connstr);
	char	   *save = NULL;

	initStringInfo(&buf);
	for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
		if (strncmp(tok, "host=", 5) == 0 || strncmp(tok, "hostaddr=", 9) == 0 ||
			strncmp(tok, "port=", 5) == 0 || strncmp(tok, "dbname=", 7) == 0)
			appendStringInfo(&buf, "%s%s", buf.len ? " " : "", tok);
	return buf.data;
}

/*
 * The cluster's partitions as "p0 (host=... port=... dbname=...)", from
 * its SQL/MED server (PL/Proxy's p0, p1, ... options); NULL when the
 * cluster is configured otherwise.
 */
static char **
cluster_partitions(const char *cluster, int *n)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	char	  **parts;

	args[0] = CStringGetTextDatum(cluster);
	*n = 0;
	if (SPI_execute_with_args("SELECT option_name, option_value FROM pg_catalog.pg_options_to_table("
							  "(SELECT srvoptions FROM pg_catalog.pg_foreign_server WHERE srvname = $1)) "
							  "WHERE option_name ~ '^p[0-9]+$' ORDER BY substr(option_name, 2)::int",
							  1, types, args, NULL, true, 0) != SPI_OK_SELECT ||
		SPI_processed == 0)
		return NULL;
	parts = palloc(sizeof(char *) * SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
		parts[i] = psprintf("%s (%s)",
							SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							safe_connstr(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2)));
	*n = (int) SPI_processed;
	return parts;
}

/*
 * Run sql (with args) in a subtransaction; on an error, return it (the
 * subtransaction rolled back), else NULL.  A cancel, a timeout or a
 * shutdown is never caught: it ends the training at once.
 */
static ErrorData *
try_execute(const char *sql, int nargs, Oid *types, Datum *args, bool read_only)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_with_args(sql, nargs, types, args, NULL, read_only, 0) < 0)
			elog(ERROR, "mtms: query on the data nodes failed");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return edata;
}

/*
 * A call to the nodes failed with edata: find the nodes that do not
 * answer (one ping per partition) and raise an error naming them, or,
 * when all answer (the error came from a node's work), the node's error.
 */
static void
report_failure(MtmsTrainCtx *cx, const char *what, ErrorData *edata)
{
	const char *cluster = cx->meta->opts.cluster;
	int			nparts;
	char	  **parts = cluster_partitions(cluster, &nparts);
	StringInfoData down;
	char	   *ping = psprintf("SELECT %s._mtms_node_ping($1, $2)", cx->schema);

	initStringInfo(&down);
	for (int p = 0; p < nparts; p++)
	{
		Oid			types[2] = {TEXTOID, INT4OID};
		Datum		args[2];
		ErrorData  *e;

		args[0] = CStringGetTextDatum(cluster);
		args[1] = Int32GetDatum(p);
		e = try_execute(ping, 2, types, args, true);
		if (e != NULL)
		{
			appendStringInfo(&down, "%s%s", down.len ? ", " : "", parts[p]);
			FreeErrorData(e);
		}
	}
	if (down.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("data node %s of cluster \"%s\" failed during %s", down.data, cluster, what),
				 errdetail("%s", edata->message),
				 errhint("The model's active version is unchanged. Start the node, or take it out of the cluster, and train again.")));
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("a data node of cluster \"%s\" failed during %s: %s", cluster, what, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 edata->hint ? errhint("%s", edata->hint) : 0));
}

/* ---------------------------------------------------------------------
 * Checking the nodes
 * --------------------------------------------------------------------- */

/* The PL/Proxy functions exist (mtms_cluster_setup() made them). */
static void
check_setup(MtmsTrainCtx *cx)
{
	char	   *sig = psprintf("%s._mtms_nodes_train(text, bytea[], text, text)", cx->schema);

	if (SPI_execute(psprintf("SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL",
							 quote_literal_cstr(sig)), true, 1) != SPI_OK_SELECT ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" trains on cluster \"%s\", but mtms's PL/Proxy functions are not set up",
						cx->meta->name, cx->meta->opts.cluster),
				 errhint("As a superuser: CREATE EXTENSION plproxy; SELECT mtms_cluster_setup();")));
}

/*
 * The cluster is defined: a SQL/MED server of PL/Proxy's wrapper, or
 * PL/Proxy's older configuration functions (plproxy.get_cluster_*).
 */
static void
check_cluster_defined(MtmsTrainCtx *cx)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];

	args[0] = CStringGetTextDatum(cx->meta->opts.cluster);
	if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM pg_catalog.pg_foreign_server s "
							  "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw "
							  "WHERE s.srvname = $1 AND w.fdwname = 'plproxy') "
							  "OR pg_catalog.to_regproc('plproxy.get_cluster_partitions') IS NOT NULL",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("PL/Proxy cluster \"%s\" of model \"%s\" does not exist",
						cx->meta->opts.cluster, cx->meta->name),
				 errhint("Define it on the coordinator: CREATE SERVER %s FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '...', ...), with a user mapping.",
						 quote_identifier(cx->meta->opts.cluster))));
}

/*
 * Every node answers and has the coordinator's mtms (version and schema):
 * refused before any work otherwise.  Returns the number of nodes.
 */
static int
check_nodes(MtmsTrainCtx *cx)
{
	const char *cluster = cx->meta->opts.cluster;
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	ErrorData  *e;
	char	   *version;
	char	   *schema;
	int			n;

	if (SPI_execute("SELECT extversion, extnamespace::regnamespace::text FROM pg_catalog.pg_extension "
					"WHERE extname = 'mtms'", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "mtms: could not read the extension's version");
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	schema = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

	args[0] = CStringGetTextDatum(cluster);
	e = try_execute(psprintf("SELECT node, extversion, extschema FROM %s._mtms_nodes_check($1)",
							 cx->schema), 1, types, args, true);
	if (e != NULL)
		report_failure(cx, "the check of the data nodes", e);
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		char	   *node = SPI_getvalue(t, d, 1);
		char	   *v = SPI_getvalue(t, d, 2);
		char	   *sc = SPI_getvalue(t, d, 3);

		if (v == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data node %s of cluster \"%s\" does not have the extension mtms", node, cluster),
					 errhint("On every data node: CREATE EXTENSION mtms VERSION '%s' SCHEMA %s (the coordinator's).",
							 version, schema)));
		if (strcmp(v, version) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data node %s of cluster \"%s\" has mtms %s, the coordinator mtms %s",
							node, cluster, v, version),
					 errhint("Install the same mtms everywhere, then ALTER EXTENSION mtms UPDATE TO '%s' where it is older.",
							 version)));
		if (strcmp(sc, schema) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data node %s of cluster \"%s\" has mtms in schema %s, the coordinator in %s",
							node, cluster, sc, schema)));
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cluster \"%s\" has no data nodes", cluster)));
	return n;
}

/* ---------------------------------------------------------------------
 * Calling the nodes
 * --------------------------------------------------------------------- */

/* chunks[0..n) (after an int8 size when size >= 0) as a bytea[]. */
static Datum
chunk_array(bytea *const *chunks, int n, int64 size)
{
	Datum	   *elems = palloc(sizeof(Datum) * (n + 1));
	int			k = 0;

	if (size >= 0)
	{
		bytea	   *b = palloc(VARHDRSZ + sizeof(int64));

		SET_VARSIZE(b, VARHDRSZ + sizeof(int64));
		memcpy(VARDATA(b), &size, sizeof(int64));
		elems[k++] = PointerGetDatum(b);
	}
	for (int i = 0; i < n; i++)
		elems[k++] = PointerGetDatum(chunks[i]);
	return PointerGetDatum(construct_array(elems, k, BYTEAOID, -1, false, TYPALIGN_INT));
}

/*
 * A job of more than MTMS_NODE_INLINE_CHUNKS chunks, staged on every node
 * one chunk a call (node_train.c keeps it in the session of PL/Proxy's
 * connection): no value passes 1 GB however large the model is.
 */
static void
stage_job(MtmsTrainCtx *cx, const MtmsChunks *job, const char *what, NodeCall *call)
{
	Oid			types[4] = {TEXTOID, BYTEAARRAYOID, TEXTOID, TEXTOID};
	Datum		args[4];
	char	   *sql = psprintf("SELECT count(*) FROM %s._mtms_nodes_train($1, $2, $3, $4)",
							   cx->schema);

	args[0] = CStringGetTextDatum(cx->meta->opts.cluster);
	args[2] = CStringGetTextDatum(cx->relname);
	for (int i = 0; i < job->nchunks; i++)
	{
		ErrorData  *e;

		CHECK_FOR_INTERRUPTS();
		args[1] = chunk_array(&job->chunks[i], 1, i == 0 ? (int64) job->len : -1);
		args[3] = CStringGetTextDatum(i == 0 ? "stage-begin" : "stage");
		e = try_execute(sql, 4, types, args, true);
		if (e != NULL)
			report_failure(cx, what, e);
		pfree(DatumGetPointer(args[1]));
		call->staging_calls++;
	}
}
/* The reply of node, added on first sight. */
static NodeReply *
reply_of(NodeCall *call, char *node, int32 nchunks)
{
	NodeReply  *r;

	for (int k = 0; k < call->nreplies; k++)
		if (strcmp(call->replies[k].node, node) == 0)
			return &call->replies[k];
	if (nchunks < 1 || (uint64) nchunks > SPI_processed)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: data node %s announces %d chunks", node, nchunks)));
	r = &call->replies[call->nreplies++];
	r->node = node;
	r->nchunks = nchunks;
	r->chunks = palloc0(sizeof(bytea *) * nchunks);
	return r;
}

/*
 * The replies' chunks per node in seq order, whatever the row order, then
 * joined (a node's result may pass 1 GB).
 */
static void
collect_replies(NodeCall *call)
{
	TupleDesc	d = SPI_tuptable->tupdesc;

	call->replies = palloc0(sizeof(NodeReply) * Max(SPI_processed, 1));
	call->nreplies = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		bool		nulls[4];
		Datum		seq_d = SPI_getbinval(t, d, 2, &nulls[1]);
		Datum		n_d = SPI_getbinval(t, d, 3, &nulls[2]);
		Datum		chunk_d = SPI_getbinval(t, d, 4, &nulls[3]);
		char	   *node = SPI_getvalue(t, d, 1);
		int32		seq;
		NodeReply  *r;
		bytea	   *b;

		if (node == NULL || nulls[1] || nulls[2] || nulls[3])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: a data node of cluster \"%s\" sent a result row with NULLs",
							call->cluster)));
		seq = DatumGetInt32(seq_d);
		r = reply_of(call, node, DatumGetInt32(n_d));

		if (seq < 0 || seq >= r->nchunks)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: data node %s sent chunk %d of %d", node, seq, r->nchunks)));
		if (r->chunks[seq] != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("data node %s is more than one partition of cluster \"%s\"",
							node, call->cluster),
					 errdetail("Its scenes would be trained twice."),
					 errhint("Give each data node one partition (PL/Proxy wants 1, 2, 4, ... of them).")));
		b = DatumGetByteaPP(chunk_d);
		r->chunks[seq] = b;
		r->len += VARSIZE_ANY_EXHDR(b);
		r->got++;
	}
	for (int k = 0; k < call->nreplies; k++)
	{
		NodeReply  *r = &call->replies[k];

		CHECK_FOR_INTERRUPTS();
		if (r->got != r->nchunks)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("mtms: data node %s's result has %d of its %d chunks",
							r->node, r->got, r->nchunks)));
		r->data = mtms_chunks_join(r->chunks, r->nchunks, r->len);
		call->received += r->len;
		pfree(r->chunks);
		r->chunks = NULL;
	}
	/* the rows are joined: a model's worth of memory less */
	SPI_freetuptable(SPI_tuptable);
}

/* A phase's replies, once gathered. */
static void
free_replies(NodeCall *call)
{
	for (int k = 0; k < call->nreplies; k++)
		if (call->replies[k].data)
			pfree(call->replies[k].data);
	if (call->replies)
		pfree(call->replies);
	call->replies = NULL;
	call->nreplies = 0;
}

/* One phase on every node at once; their replies. */
static void
call_nodes(MtmsTrainCtx *cx, const char *phase, const bool *selected, int nnodes,
		   NodeCall *call)
{
	MtmsChunks *job = mtms_chunks_create(mtms_node_chunk_bytes());
	Oid			types[4] = {TEXTOID, BYTEAARRAYOID, TEXTOID, TEXTOID};
	Datum		args[4];
	const char *what = strcmp(phase, "phase1") == 0 ?
		"phase 1 (the embedding and CTCVR stages)" : "the fine-tune";
	bool		staged;
	ErrorData  *e;

	mtms_node_job_write(job, cx->meta, cx->model, cx->stored_npairs, cx->frozen_fields,
						selected);
	memset(call, 0, sizeof(*call));
	call->cluster = cx->meta->opts.cluster;
	call->shipped = mtms_chunks_len(job) * nnodes;
	mtms_progress_stage(strcmp(phase, "phase1") == 0 ? "embedding" : "finetune", 0, -1, -1, 0);
	staged = job->nchunks > MTMS_NODE_INLINE_CHUNKS ||
		mtms_chunks_len(job) > MTMS_NODE_INLINE_BYTES;
	if (staged)
		stage_job(cx, job, what, call);
	args[0] = CStringGetTextDatum(cx->meta->opts.cluster);
	args[1] = chunk_array(job->chunks, staged ? 0 : job->nchunks, -1);
	args[2] = CStringGetTextDatum(cx->relname);
	args[3] = CStringGetTextDatum(staged ? psprintf("%s-staged", phase) : phase);
	for (int i = 0; i < job->nchunks; i++)
		pfree(job->chunks[i]);
	e = try_execute(psprintf("SELECT node, seq, nchunks, chunk FROM %s._mtms_nodes_train($1, $2, $3, $4)",
							 cx->schema), 4, types, args, true);
	if (e != NULL)
		report_failure(cx, what, e);
	collect_replies(call);
	mtms_progress_pause();
}

/* ---------------------------------------------------------------------
 * Gathering the units
 * --------------------------------------------------------------------- */

/*
 * The stage's units from every node's result: each from exactly one node,
 * reported (mtms_train's rows, metrics, history) in unit order.
 */
static void
gather_outcomes(MtmsTrainCtx *cx, MtmsStage stage, const NodeCall *call,
				const MtmsNodeResult *res)
{
	const MtmsStageInfo *si = mtms_stage_info(stage);
	int			nunits = mtms_stage_nunits(si, cx->model->nscenes);
	int		   *from_node = palloc(sizeof(int) * nunits);
	int		   *from_rec = palloc(sizeof(int) * nunits);

	for (int u = 0; u < nunits; u++)
		from_node[u] = -1;
	for (int k = 0; k < call->nreplies; k++)
		for (int i = 0; i < res[k].noutcomes; i++)
		{
			const MtmsNodeOutcome *o = &res[k].outcomes[i];

			if (o->stage != (int32) stage)
				continue;
			if (o->unit >= nunits)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: data node %s returned an unknown unit", call->replies[k].node)));
			if (from_node[o->unit] >= 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("scene \"%s\" has rows on data nodes %s and %s",
								cx->model->scenes[mtms_unit_scene(si, o->unit)],
								call->replies[from_node[o->unit]].node, call->replies[k].node),
						 errdetail("A multi-node training trains each scene on the one node that holds its rows; "
								   "it does not average a unit trained on two nodes."),
						 errhint("Move all of the scene's rows to one data node.")));
			from_node[o->unit] = k;
			from_rec[o->unit] = i;
		}
	for (int u = 0; u < nunits; u++)
	{
		const MtmsNodeOutcome *o;

		if (from_node[u] < 0)
			continue;
		o = &res[from_node[u]].outcomes[from_rec[u]];
		mtms_unit_report(cx, si, u, &o->outcome.best, o->seconds);
		mtms_history_add_unit(cx->history, si, u, o->outcome.history, o->outcome.nhistory);
	}
	pfree(from_node);
	pfree(from_rec);
}

/* The trained units' parameters into cx->model. */
static void
gather_params(MtmsTrainCtx *cx, const NodeCall *call, const MtmsNodeResult *res)
{
	for (int k = 0; k < call->nreplies; k++)
		for (int i = 0; i < res[k].nparams; i++)
		{
			const MtmsNodeParams *q = &res[k].params[i];
			const MtmsStageInfo *si = mtms_stage_info((MtmsStage) q->stage);

			if (q->unit >= mtms_stage_nunits(si, cx->model->nscenes))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: data node %s returned an unknown unit", call->replies[k].node)));
			CHECK_FOR_INTERRUPTS();
			mtms_wire_read_unit(q->data, q->len, cx->model, si, q->unit);
		}
}

/* A phase's replies: results read, units gathered, totals summed. */
static void
gather_phase(MtmsTrainCtx *cx, const char *what, const NodeCall *call, const MtmsStage *stages,
			 int nstages, double seconds)
{
	MtmsNodeResult *res = palloc0(sizeof(MtmsNodeResult) * Max(call->nreplies, 1));
	int64		samples = 0;
	int64		bad = 0;

	for (int k = 0; k < call->nreplies; k++)
	{
		mtms_node_result_read(call->replies[k].data, call->replies[k].len, &res[k]);
		samples += res[k].samples;
		bad += res[k].bad_conversions;
	}
	for (int i = 0; i < nstages; i++)
		gather_outcomes(cx, stages[i], call, res);
	gather_params(cx, call, res);
	for (int i = 0; i < nstages; i++)
		mtms_prepare_units(cx, mtms_stage_info(stages[i]));
	cx->samples = samples;
	cx->bad_conversions = Max(cx->bad_conversions, bad);
	ereport(NOTICE,
			(errmsg("mtms_train %s on %d data nodes of cluster \"%s\": %.2f s, %.1f MB shipped to the nodes%s, %.1f MB back",
					what, call->nreplies, cx->meta->opts.cluster, seconds,
					call->shipped / (1024.0 * 1024.0),
					call->staging_calls > 0 ? psprintf(" (staged in %d calls)", call->staging_calls) : "",
					call->received / (1024.0 * 1024.0))));
}

void
mtms_train_on_nodes(MtmsTrainCtx *cx, const bool *selected, bool do_embedding,
					bool do_finetune)
{
	int			nnodes;
	NodeCall	call;
	TimestampTz start;
	MemoryContext old = MemoryContextSwitchTo(cx->cxt);

	if (mtms_options_hygiene(&cx->meta->opts))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("model \"%s\" trains on cluster \"%s\" and uses feature hygiene, which a multi-node training does not support",
						cx->meta->name, cx->meta->opts.cluster),
				 errdetail("The options min_count and ttl_slots count features on the server that trains; the data nodes do not send their counts back."),
				 errhint("Create the model without min_count and ttl_slots, or without the cluster option.")));
	if (cx->meta->opts.refit && do_embedding && do_finetune)
		ereport(NOTICE,
				(errmsg("mtms_train: model \"%s\" trains on cluster \"%s\" without its refit option, which a multi-node training does not run",
						cx->meta->name, cx->meta->opts.cluster)));
	check_setup(cx);
	check_cluster_defined(cx);
	nnodes = check_nodes(cx);
	if (do_embedding)
	{
		MtmsStage	stages[2] = {MTMS_STAGE_EMBEDDING, MTMS_STAGE_CTCVR};

		start = GetCurrentTimestamp();
		call_nodes(cx, "phase1", selected, nnodes, &call);
		gather_phase(cx, "phase 1", &call, stages, cx->meta->opts.ctcvr ? 2 : 1,
					 (double) (GetCurrentTimestamp() - start) / 1e6);
		free_replies(&call);
	}
	if (do_finetune)
	{
		MtmsStage	stages[1] = {MTMS_STAGE_FINETUNE};

		start = GetCurrentTimestamp();
		call_nodes(cx, "finetune", selected, nnodes, &call);
		gather_phase(cx, "fine-tune", &call, stages, 1, (double) (GetCurrentTimestamp() - start) / 1e6);
		free_replies(&call);
	}
	MemoryContextSwitchTo(old);
}
