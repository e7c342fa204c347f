/*
 * train_aggregate.c
 *    The training aggregates' support functions: transition (parse a
 *    sample row, split it into validation / training / other rows by a
 *    hash of its content, buffer it), combine, serialize, deserialize and
 *    final, for mtms_embedding_update and mtms_finetune alike (the state's
 *    stage tells which steps run).
 */
#include "train_state.h"
#include "train_stages.h"
#include "kept_rows.h"
#include "progress.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

static void
check_row_arg(FunctionCallInfo fcinfo, int argno, const char *column)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sample column \"%s\" is NULL", column),
				 errhint("Every sample needs a scene, a features array and a click flag; filter NULLs out in a view.")));
}

static Size
kept_bytes(const MtmsTrainState *st)
{
	Size		bytes = MemoryContextMemAllocated(st->train_cxt, true);

	if (st->ahead_lo)
		bytes += MemoryContextMemAllocated(st->ahead_cxt, true);
	return bytes;
}

/*
 * Rows past the limits: the next window's go first, then this pass's.
 * This pass's own rows are measured only where a pass without the next
 * window's would measure them (every 4096 of its rows: at_train), so it
 * keeps or drops them exactly as that pass would.
 */
static void
check_kept_limits(MtmsTrainState *st, bool at_train)
{
	if (kept_bytes(st) <= st->train_limit &&
		(!st->ahead_lo || MemoryContextMemAllocated(st->ahead_cxt, true) <= st->ahead_limit))
		return;
	if (st->ahead_lo)
	{
		/* the next window collects in its own pass */
		st->ahead_lo = NULL;
		st->ahead_rows = NULL;
		MemoryContextReset(st->ahead_cxt);
		if (!at_train || kept_bytes(st) <= st->train_limit)
			return;
	}
	/* too many to keep: this pass keeps none */
	st->collect_train = false;
	st->train_rows = NULL;
	MemoryContextReset(st->train_cxt);
}

/* The row just parsed into *rows (in cxt); true at every 4096th row. */
static bool
keep_row(MtmsTrainState *st, struct MtmsKeptRows **rows, MemoryContext cxt,
		 int scene, uint8 label, int nfeats)
{
	if (*rows == NULL)
		*rows = mtms_kept_rows_create(cxt);
	mtms_kept_rows_add(*rows, scene, label, st->parse_buf, nfeats);
	return (mtms_kept_rows_count(*rows) & 4095) == 0;
}

/* A row of this pass's training window, kept for the unit jobs. */
static void
keep_train(MtmsTrainState *st, int scene, uint8 label, int nfeats)
{
	if (keep_row(st, &st->train_rows, st->train_cxt, scene, label, nfeats))
		check_kept_limits(st, true);
}

/*
 * A row of the next window, kept in the same scan.  Its size at each
 * 4096th row is noted: the next window's own pass would have measured it
 * there against its room (mtms_check_ahead_rows compares the last one).
 */
static void
keep_ahead(MtmsTrainState *st, int scene, uint8 label, int nfeats)
{
	if (keep_row(st, &st->ahead_rows, st->ahead_cxt, scene, label, nfeats))
	{
		st->ahead_measured = MemoryContextMemAllocated(st->ahead_cxt, true);
		check_kept_limits(st, false);
	}
}

static Datum
transition(FunctionCallInfo fcinfo, const char *aggregate)
{
	MtmsTrainState *base;
	MemoryContext aggcxt;
	MtmsTrainState *st;
	text	   *scene_txt;
	int			scene;
	int			nfeats;
	uint64		content;
	uint8		label = 0;
	bool		click;
	bool		conv;
	double		u;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms training transition called in non-aggregate context");

	if (PG_ARGISNULL(0))
	{
		char	   *token;

		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("mtms training token is NULL"),
					 errhint("The training aggregates are driven by mtms_train(); call that instead.")));
		token = text_to_cstring(PG_GETARG_TEXT_PP(1));
		base = mtms_registry_base(token);
		if (base)
			st = mtms_state_start_from_base(base, aggcxt, base->train_in_place);
		else
			st = mtms_state_load_snapshot(token, aggcxt);
		if (strcmp(mtms_stage_info(st->stage)->aggregate, aggregate) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("training token \"%s\" is for the %s aggregate", token,
							mtms_stage_info(st->stage)->aggregate)));
		mtms_state_prepare(st);
		st->token = MemoryContextStrdup(st->cxt, token);
	}
	else
		st = (MtmsTrainState *) PG_GETARG_POINTER(0);

	check_row_arg(fcinfo, 2, "scene");
	check_row_arg(fcinfo, 3, "features");
	check_row_arg(fcinfo, 4, "click");
	if ((++st->rows_in & 1023) == 0)
		mtms_progress_rows(1024);

	scene_txt = PG_GETARG_TEXT_PP(2);
	scene = mtms_model_scene(st->model, VARDATA_ANY(scene_txt), VARSIZE_ANY_EXHDR(scene_txt));
	if (scene < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample scene \"%s\" is not a scene of the model",
						text_to_cstring(scene_txt)),
				 errhint("Add it with mtms_add_scene(), or filter the samples in a view.")));
	if (!mtms_state_scene_active(st, scene) && !st->collect_valid && !st->ahead_lo)
		PG_RETURN_POINTER(st);

	{
		/* detoast in the per-row context: a copy in st->cxt lives all pass */
		ArrayType  *features = PG_GETARG_ARRAYTYPE_P(3);
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		nfeats = mtms_parse_features(features, st->model->nfields,
									 st->model->fields, &st->parse_buf,
									 &st->parse_cap, &content);
		MemoryContextSwitchTo(old);
	}

	click = PG_GETARG_BOOL(4);
	conv = !PG_ARGISNULL(5) && PG_GETARG_BOOL(5);
	if (conv && !click)
	{
		st->bad_conversions++;
		conv = false;
	}
	if (click)
		label |= MTMS_LABEL_CLICK;
	if (conv)
		label |= MTMS_LABEL_CONV;

	/* the validation split: a deterministic function of the row's content */
	content = hash_combine64(content, hash_bytes_extended((const unsigned char *) st->model->scenes[scene],
														  strlen(st->model->scenes[scene]), 0));
	u = (double) (content >> 11) * (1.0 / 9007199254740992.0);
	if (u < st->opts.validation_fraction)
	{
		if (st->collect_valid)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			mtms_rowset_add(&st->valid, scene, label, st->parse_buf, nfeats);
			MemoryContextSwitchTo(old);
		}
		PG_RETURN_POINTER(st);
	}

	if (st->ahead_lo && u >= st->ahead_lo[scene] && u < st->ahead_hi[scene])
		keep_ahead(st, scene, label, nfeats);
	if (!mtms_state_scene_active(st, scene) || u < st->train_lo[scene] || u >= st->train_hi[scene])
		PG_RETURN_POINTER(st);	/* not a training row of this pass */
	if (st->collect_train)
		keep_train(st, scene, label, nfeats);
	if (!st->collect_only)
		mtms_state_buffer_row(st, scene, label, st->parse_buf, nfeats);

	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(mtms_train_combinefn);
Datum
mtms_train_combinefn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MtmsTrainState *a;
	MtmsTrainState *b;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms_train_combinefn called in non-aggregate context");
	a = PG_ARGISNULL(0) ? NULL : (MtmsTrainState *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (MtmsTrainState *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		/* b was built under aggcxt by the deserializer: adopt it */
		PG_RETURN_POINTER(b);
	}
	mtms_state_combine(a, b);
	mtms_state_free(b);
	PG_RETURN_POINTER(a);
}

PG_FUNCTION_INFO_V1(mtms_train_serialfn);
Datum
mtms_train_serialfn(PG_FUNCTION_ARGS)
{
	MtmsTrainState *st = (MtmsTrainState *) PG_GETARG_POINTER(0);
	StringInfoData buf;
	bytea	   *out;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "mtms_train_serialfn called in non-aggregate context");
	/* train on what is still buffered: the leader never sees these rows */
	mtms_state_process_buffer(st);
	mtms_state_restore_best(st);
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	mtms_state_serialize(&buf, st, st->collect_valid);
	out = (bytea *) buf.data;
	SET_VARSIZE(out, buf.len);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(mtms_train_deserialfn);
Datum
mtms_train_deserialfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	bytea	   *in;
	MtmsTrainState *st;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "mtms_train_deserialfn called in non-aggregate context");
	in = PG_GETARG_BYTEA_PP(0);
	st = mtms_state_deserialize(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), aggcxt);
	/* the work area, for the final function's validation pass */
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->work = mtms_batch_work_create(st->model, st->opts.batch_size);
		mtms_rowset_init(&st->buf);
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(mtms_train_finalfn);
Datum
mtms_train_finalfn(PG_FUNCTION_ARGS)
{
	MtmsTrainState *st;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "mtms_train_finalfn called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (MtmsTrainState *) PG_GETARG_POINTER(0);
	if (!mtms_registry_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("mtms training aggregates can only run inside mtms_train()")));
	mtms_state_finish_pass(st, st->collect_valid ? &st->valid : mtms_registry_valid());
	mtms_registry_set_result(st);
	PG_RETURN_INT64(st->rows_trained);
}

PG_FUNCTION_INFO_V1(mtms_embedding_update_transfn);
Datum
mtms_embedding_update_transfn(PG_FUNCTION_ARGS)
{
	return transition(fcinfo, "mtms_embedding_update");
}

PG_FUNCTION_INFO_V1(mtms_finetune_transfn);
Datum
mtms_finetune_transfn(PG_FUNCTION_ARGS)
{
	return transition(fcinfo, "mtms_finetune");
}
