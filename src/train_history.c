/*
 * train_history.c
 *    The training history (see train_history.h): the units' checkpoints as
 *    rows, kept in memory while the stages run and written with the
 *    version in one INSERT ... SELECT FROM unnest(arrays).
 */
#include "train_history.h"

#include <math.h>

#include "catalog_tables.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* One row of mtms_training_history. */
typedef struct HistoryRow
{
	const char *stage;			/* the stage's name (static) */
	int32		scene;
	int32		slot;			/* metric slot: its task */
	int32		epoch;
	int32		checkpoint;
	int64		rows;
	double		seconds;
	double		train_loss;
	double		valid_loss;
	double		valid_auc;
	bool		kept;
} HistoryRow;

struct MtmsHistory
{
	MemoryContext cxt;
	int			n;
	int			cap;
	HistoryRow *rows;
};

static const char *const task_names[MTMS_NMETRICS] = {"ctr", "cvr", "ctcvr"};

MtmsHistory *
mtms_history_create(void)
{
	MtmsHistory *h = palloc0(sizeof(MtmsHistory));

	h->cxt = CurrentMemoryContext;
	return h;
}

static HistoryRow *
next_row(MtmsHistory *h)
{
	if (h->n == h->cap)
	{
		h->cap = Max(64, h->cap * 2);
		h->rows = h->rows ?
			repalloc_huge(h->rows, sizeof(HistoryRow) * h->cap) :
			MemoryContextAllocHuge(h->cxt, sizeof(HistoryRow) * h->cap);
	}
	return &h->rows[h->n++];
}

void
mtms_history_forget(MtmsHistory *h, const MtmsStageInfo *si, int scene)
{
	int			n = 0;

	for (int i = 0; i < h->n; i++)
		if (h->rows[i].scene != scene || strcmp(h->rows[i].stage, si->name) != 0)
			h->rows[n++] = h->rows[i];
	h->n = n;
}

int
mtms_history_kept(const MtmsHistory *h, const MtmsStageInfo *si, int scene)
{
	for (int i = 0; i < h->n; i++)
		if (h->rows[i].kept && h->rows[i].scene == scene && strcmp(h->rows[i].stage, si->name) == 0)
			return h->rows[i].checkpoint;
	return -1;
}

void
mtms_history_add_unit(MtmsHistory *h, const MtmsStageInfo *si, int unit,
					  const MtmsCheckpoint *cps, int n)
{
	int			slots[MTMS_NMETRICS];
	int			nslots = 0;

	if (si->unit_is_pair)
		slots[nslots++] = MTMS_PAIR_TASK(unit) == MTMS_TASK_CTR ? MTMS_M_CTR : MTMS_M_CVR;
	else
		for (int t = 0; t < MTMS_NMETRICS; t++)
			slots[nslots++] = t;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < nslots; k++)
		{
			HistoryRow *r = next_row(h);
			int			t = slots[k];

			r->stage = si->name;
			r->scene = mtms_unit_scene(si, unit);
			r->slot = t;
			r->epoch = cps[i].epoch;
			r->checkpoint = cps[i].checkpoint;
			r->rows = cps[i].rows;
			r->seconds = cps[i].seconds;
			r->train_loss = cps[i].train_loss[t];
			r->valid_loss = cps[i].valid_loss[t];
			r->valid_auc = cps[i].valid_auc[t];
			r->kept = cps[i].kept;
		}
}

/* The columns, in the order of the INSERT's unnest. */
#define NCOLS 11
static const Oid col_type[NCOLS] = {
	TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID,
	FLOAT8OID, FLOAT8OID, FLOAT8OID, INT8OID, FLOAT8OID, BOOLOID
};

static inline Datum
float_or_null(double x, bool *isnull)
{
	*isnull = isnan(x);
	return Float8GetDatum(x);
}

/* Row i into element i of the column arrays. */
static void
row_values(const HistoryRow *r, const MtmsModel *m, int i, Datum **v, bool **nulls)
{
	v[0][i] = CStringGetTextDatum(r->stage);
	v[1][i] = CStringGetTextDatum(m->scenes[r->scene]);
	v[2][i] = CStringGetTextDatum(task_names[r->slot]);
	v[3][i] = Int32GetDatum(r->epoch);
	v[4][i] = Int32GetDatum(r->checkpoint);
	v[5][i] = float_or_null(r->train_loss, &nulls[5][i]);
	v[6][i] = float_or_null(r->valid_loss, &nulls[6][i]);
	v[7][i] = float_or_null(r->valid_auc, &nulls[7][i]);
	v[8][i] = Int64GetDatum(r->rows);
	v[9][i] = Float8GetDatum(r->seconds);
	v[10][i] = BoolGetDatum(r->kept);
}

static Datum
column_array(Datum *values, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

void
mtms_history_write(const MtmsHistory *h, const MtmsModel *m, const char *schema,
				   int32 model_id, int32 version)
{
	Datum	   *v[NCOLS];
	bool	   *nulls[NCOLS];
	Oid			types[NCOLS + 2] = {INT4OID, INT4OID};
	Datum		args[NCOLS + 2];

	if (h->n == 0 || !mtms_catalog_has_history())
		return;
	for (int c = 0; c < NCOLS; c++)
	{
		v[c] = palloc_extended(sizeof(Datum) * h->n, MCXT_ALLOC_HUGE);
		nulls[c] = palloc_extended(sizeof(bool) * h->n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	}
	for (int i = 0; i < h->n; i++)
		row_values(&h->rows[i], m, i, v, nulls);
	args[0] = Int32GetDatum(model_id);
	args[1] = Int32GetDatum(version);
	for (int c = 0; c < NCOLS; c++)
	{
		types[c + 2] = get_array_type(col_type[c]);
		args[c + 2] = column_array(v[c], nulls[c], h->n, col_type[c]);
	}
	if (SPI_execute_with_args(psprintf("INSERT INTO %s.mtms_training_history (model_id, version, seq, "
									   "stage, scene, task, epoch, checkpoint, train_loss, valid_loss, "
									   "valid_auc, rows, seconds, kept) "
									   "SELECT $1, $2, u.seq::int, u.stage, u.scene, u.task, u.epoch, "
									   "u.checkpoint, u.train_loss, u.valid_loss, u.valid_auc, u.rows, "
									   "u.seconds, u.kept "
									   "FROM unnest($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
									   "WITH ORDINALITY AS u(stage, scene, task, epoch, checkpoint, "
									   "train_loss, valid_loss, valid_auc, rows, seconds, kept, seq)",
									   schema),
							  NCOLS + 2, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the training history");
}
