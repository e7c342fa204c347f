/*
 * feature_hygiene.c
 *    Feature admission (min_count) and eviction (ttl_slots) over daily
 *    trainings; see feature_hygiene.h.
 *
 * Per pair the training holds two simplehash tables keyed by the feature
 * hash: this training's sightings (filled from phase 1's kept rows before
 * its stages) and the candidates, features counted by earlier trainings
 * that have no rows yet (read from and written to mtms_feature_count).
 * Admission is decided once, before the stages, and handed to the
 * embedding store as its gate (mtms_emb_admit), which travels with the
 * store to parallel workers, so every participant creates exactly the
 * same rows: training stays deterministic whatever mtms.train_workers is.
 */
#include "feature_hygiene.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "catalog_tables.h"
#include "train_rowset.h"

#define SAVE_BATCH	20000

typedef struct HygEntry
{
	uint64		key;
	int64		seen;			/* sightings */
	int32		last_seen;		/* slot */
	int32		field;
	char		status;
} HygEntry;

#define SH_PREFIX		mtms_hyghash
#define SH_ELEMENT_TYPE	HygEntry
#define SH_KEY_TYPE		uint64
#define SH_KEY			key
#define SH_HASH_KEY(tb, k)	mtms_emb_hash_key(k)
#define SH_EQUAL(tb, a, b)	((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

struct MtmsHygiene
{
	MemoryContext cxt;
	int32		min_count;
	int32		ttl_slots;
	int64		max_features;
	bool		ctcvr;			/* the CTCVR stage trains CVR rows on every row */
	int32		slot;			/* this training's slot (its version) */
	int32		from_version;	/* what rows without a recorded slot date from */
	int32		npairs;
	mtms_hyghash_hash **seen;	/* [npairs] this training's sightings, or NULL */
	mtms_hyghash_hash **cand;	/* [npairs] candidates */
	int64	   *nstart;			/* [npairs] rows before the stages */
	int64		evicted;
	int64		admitted;
	bool		skipped;
};

/* The slot of a row: recorded, or (before 0.3) the version it came from. */
static inline int32
row_slot(const MtmsHygiene *h, const MtmsEmbStore *emb, int64 idx)
{
	int32		ls = mtms_emb_last_seen(emb, idx);

	return ls > 0 ? ls : h->from_version;
}

static inline int64
add_sat(int64 a, int64 b)
{
	return (a > PG_INT64_MAX - b) ? PG_INT64_MAX : a + b;
}

/* ---------------------------------------------------------------------
 * Beginning: the slot and the candidates carried from the last version
 * --------------------------------------------------------------------- */

static void
check_schema(const MtmsModelMeta *meta)
{
	if (!mtms_catalog_has_feature_stats())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("model \"%s\" uses min_count or ttl_slots, which need extension mtms 0.3",
						meta->name),
				 errhint("Run ALTER EXTENSION mtms UPDATE in this database.")));
}

/* The number the new version will get (mtms_train holds the model's lock). */
static int32
next_slot(const MtmsModelMeta *meta, const char *schema)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	bool		isnull;

	args[0] = Int32GetDatum(meta->model_id);
	if (SPI_execute_with_args(psprintf("SELECT COALESCE(max(version), 0) + 1 FROM %s.mtms_version "
									   "WHERE model_id = $1", schema),
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not number the training's slot");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull));
}

static void
load_candidate(MtmsHygiene *h, const MtmsModelMeta *meta, HeapTuple tup, TupleDesc td)
{
	bool		sn,
				tn,
				fn,
				isnull;
	int			s = DatumGetInt32(SPI_getbinval(tup, td, 1, &sn)) - 1;
	int			t = DatumGetInt32(SPI_getbinval(tup, td, 2, &tn));
	int			f = DatumGetInt32(SPI_getbinval(tup, td, 3, &fn)) - 1;
	uint64		key = (uint64) DatumGetInt64(SPI_getbinval(tup, td, 4, &isnull));
	int64		seen = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
	int32		last = DatumGetInt32(SPI_getbinval(tup, td, 6, &isnull));
	HygEntry   *e;
	bool		found;

	if (sn || tn || fn || MTMS_PAIR(s, t) >= h->npairs || seen < 0 || last < 1 ||
		last >= h->slot)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored feature counts of model \"%s\" version %d are invalid",
						meta->name, h->from_version),
				 errhint("Roll back to another version with mtms_rollback(), or retrain.")));
	e = mtms_hyghash_insert(h->cand[MTMS_PAIR(s, t)], key, &found);
	if (found)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored feature counts of model \"%s\" version %d are invalid: feature %lld appears twice",
						meta->name, h->from_version, (long long) key)));
	e->seen = seen;
	e->last_seen = last;
	e->field = f;
}

/* The candidates of from_version, streamed through a cursor. */
static void
load_candidates(MtmsHygiene *h, const MtmsModelMeta *meta, const MtmsModel *m,
				const char *schema)
{
	Oid			types[4] = {INT4OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[4];
	Datum	   *sd = palloc(sizeof(Datum) * m->nscenes);
	Datum	   *fd = palloc(sizeof(Datum) * m->nfields);
	SPIPlanPtr	plan;
	Portal		portal;

	for (int s = 0; s < m->nscenes; s++)
		sd[s] = CStringGetTextDatum(m->scenes[s]);
	for (int f = 0; f < m->nfields; f++)
		fd[f] = CStringGetTextDatum(m->fields[f]);
	args[0] = Int32GetDatum(meta->model_id);
	args[1] = Int32GetDatum(h->from_version);
	args[2] = PointerGetDatum(construct_array(sd, m->nscenes, TEXTOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(fd, m->nfields, TEXTOID, -1, false, TYPALIGN_INT));
	plan = SPI_prepare(psprintf("SELECT pg_catalog.array_position($3, scene), "
								"CASE task WHEN 'ctr' THEN %d WHEN 'cvr' THEN %d END, "
								"pg_catalog.array_position($4, field), feature, seen, last_seen "
								"FROM %s.mtms_feature_count WHERE model_id = $1 AND version = $2",
								MTMS_TASK_CTR, MTMS_TASK_CVR, schema), 4, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
			load_candidate(h, meta, SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
}

MtmsHygiene *
mtms_hygiene_begin(const MtmsModelMeta *meta, const MtmsModel *m, int32 from_version)
{
	const MtmsOptions *o = &meta->opts;
	MtmsHygiene *h;
	MtmsCatalogScope scope;
	MemoryContext old;
	char	   *schema;
	int			guard;

	if (!mtms_options_hygiene(o))
		return NULL;
	check_schema(meta);
	h = palloc0(sizeof(MtmsHygiene));
	h->cxt = AllocSetContextCreate(CurrentMemoryContext, "mtms feature hygiene",
								   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(h->cxt);
	h->min_count = o->min_count;
	h->ttl_slots = o->ttl_slots;
	h->max_features = o->max_features;
	h->ctcvr = o->ctcvr;
	h->from_version = from_version;
	h->npairs = m->npairs;
	h->seen = palloc0(sizeof(mtms_hyghash_hash *) * m->npairs);
	h->cand = palloc0(sizeof(mtms_hyghash_hash *) * m->npairs);
	h->nstart = palloc0(sizeof(int64) * m->npairs);
	for (int p = 0; p < m->npairs; p++)
	{
		h->cand[p] = mtms_hyghash_create(h->cxt, 256, NULL);
		h->nstart[p] = mtms_emb_count(m->emb[p]);
	}

	schema = mtms_schema_quoted();
	mtms_catalog_scope_begin(&scope, false);
	SPI_connect();
	guard = mtms_guard_search_path();
	h->slot = next_slot(meta, schema);
	if (from_version > 0 && h->min_count > 0)
		load_candidates(h, meta, m, schema);
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
	MemoryContextSwitchTo(old);
	return h;
}

/* ---------------------------------------------------------------------
 * Before the stages: counting, eviction, admission
 * --------------------------------------------------------------------- */

static void
count_one(mtms_hyghash_hash *tab, const MtmsFeatureKey *k)
{
	bool		found;
	HygEntry   *e = mtms_hyghash_insert(tab, k->hash, &found);

	if (!found)
	{
		e->seen = 0;
		e->field = k->field;
	}
	e->seen++;
}

/* One training row of scene s: its features' sightings in its pairs. */
static void
count_row(MtmsHygiene *h, int s, uint8 label, const int32 *occ, int n,
		  const MtmsFeatureKey *keys)
{
	mtms_hyghash_hash *ctr = h->seen[MTMS_PAIR(s, MTMS_TASK_CTR)];
	mtms_hyghash_hash *cvr = h->seen[MTMS_PAIR(s, MTMS_TASK_CVR)];
	bool		cvr_row = h->ctcvr || (label & MTMS_LABEL_CLICK) != 0;

	if (ctr == NULL)
		return;					/* scene not trained in phase 1 */
	for (int j = 0; j < n; j++)
	{
		count_one(ctr, &keys[occ[j]]);
		if (cvr_row)
			count_one(cvr, &keys[occ[j]]);
	}
}

static void
count_rows(MtmsHygiene *h, const MtmsKeptRows *kr, const MtmsRowStore *rs)
{
	if (rs != NULL)
	{
		const int64 *first = mtms_rs_scene_first(rs);
		const uint8 *label = mtms_rs_labels(rs);
		const int64 *start = mtms_rs_row_start(rs);
		const int32 *occ = mtms_rs_occ(rs);
		const MtmsFeatureKey *keys = mtms_rs_keys(rs);

		for (int s = 0; s < rs->nscenes; s++)
			for (int64 i = first[s]; i < first[s + 1]; i++)
			{
				if ((i & 0xFFFF) == 0xFFFF)
					CHECK_FOR_INTERRUPTS();
				count_row(h, s, label[i], occ + start[i], (int) (start[i + 1] - start[i]),
						  keys);
			}
	}
	else
	{
		int64		nkeys;
		const MtmsFeatureKey *keys = mtms_kept_rows_keys(kr, &nkeys);
		int64		n = mtms_kept_rows_count(kr);

		for (int64 i = 0; i < n; i++)
		{
			int32		scene;
			uint8		label;
			const int32 *occ;
			int			nf = mtms_kept_rows_raw(kr, i, &scene, &label, &occ);

			if ((i & 0xFFFF) == 0xFFFF)
				CHECK_FOR_INTERRUPTS();
			count_row(h, scene, label, occ, nf, keys);
		}
	}
}

/* ttl_slots: drop pair p's rows no training saw in the last ttl_slots slots. */
static void
evict_rows(MtmsHygiene *h, MtmsModel *m, int p)
{
	MtmsEmbStore *emb = m->emb[p];
	int64		n = mtms_emb_count(emb);
	bool	   *keep = palloc_extended(sizeof(bool) * Max(n, 1), MCXT_ALLOC_HUGE);
	int64		dropped = 0;

	for (int64 i = 0; i < n; i++)
	{
		keep[i] = mtms_hyghash_lookup(h->seen[p], mtms_emb_key(emb, i)) != NULL ||
			h->slot - row_slot(h, emb, i) < h->ttl_slots;
		dropped += !keep[i];
	}
	if (dropped > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(m->cxt);

		m->emb[p] = mtms_emb_copy_kept(emb, keep);
		MemoryContextSwitchTo(old);
		mtms_emb_free(emb);
		h->evicted += dropped;
	}
	pfree(keep);
}

/* min_count: pair p creates rows only for features counted often enough. */
static void
admit_features(MtmsHygiene *h, MtmsModel *m, int p)
{
	MtmsEmbStore *emb = m->emb[p];
	mtms_hyghash_iterator it;
	HygEntry   *e;

	mtms_emb_set_gated(emb, true);
	mtms_hyghash_start_iterate(h->seen[p], &it);
	while ((e = mtms_hyghash_iterate(h->seen[p], &it)) != NULL)
	{
		HygEntry   *c = mtms_hyghash_lookup(h->cand[p], e->key);
		int64		total = add_sat(e->seen, c ? c->seen : 0);

		if (total >= h->min_count && mtms_emb_find(emb, e->key) < 0)
		{
			mtms_emb_admit(emb, e->key);
			h->admitted++;
		}
	}
}

void
mtms_hygiene_prepare(MtmsHygiene *h, MtmsModel *m, const MtmsKeptRows *kr,
					 const MtmsRowStore *rs, const bool *selected)
{
	MemoryContext old;

	if (h == NULL)
		return;
	old = MemoryContextSwitchTo(h->cxt);
	for (int p = 0; p < h->npairs; p++)
		if (selected[MTMS_PAIR_SCENE(p)])
			h->seen[p] = mtms_hyghash_create(h->cxt, 1024, NULL);
	count_rows(h, kr, rs);
	MemoryContextSwitchTo(old);
	for (int p = 0; p < h->npairs; p++)
	{
		if (h->seen[p] == NULL)
			continue;
		if (h->ttl_slots > 0)
			evict_rows(h, m, p);
		if (h->min_count > 0)
			admit_features(h, m, p);
		h->nstart[p] = mtms_emb_count(m->emb[p]);
	}
	ereport(NOTICE,
			(errmsg("mtms_train: feature hygiene in slot %d: %lld rows evicted (ttl_slots %d), %lld features admitted (min_count %d); counts and candidates in %.1f MB",
					h->slot, (long long) h->evicted, h->ttl_slots,
					(long long) h->admitted, h->min_count,
					(double) MemoryContextMemAllocated(h->cxt, true) / (1024.0 * 1024.0))));
}

void
mtms_hygiene_skip(MtmsHygiene *h, MtmsModel *m, const bool *selected)
{
	if (h == NULL || h->skipped)
		return;
	h->skipped = true;

	/* nothing counted, nothing admitted: existing rows train, no new ones */
	if (h->min_count > 0)
		for (int p = 0; p < h->npairs; p++)
			if (selected[MTMS_PAIR_SCENE(p)])
				mtms_emb_set_gated(m->emb[p], true);
	ereport(NOTICE,
			(errmsg("mtms_train: phase 1 scans its samples, so this training counts no features: it admits none (min_count) and evicts none (ttl_slots)"),
			 errhint("Feature hygiene counts the rows kept in memory: see mtms.keep_training_rows and mtms.max_memory.")));
}

/* ---------------------------------------------------------------------
 * After the stages: statistics, candidates
 * --------------------------------------------------------------------- */

/* Pair p's rows: sightings and last slot, from this training's counts. */
static void
update_rows(MtmsHygiene *h, MtmsEmbStore *emb, int p)
{
	int64		n = mtms_emb_count(emb);

	for (int64 i = 0; i < n; i++)
	{
		uint64		key = mtms_emb_key(emb, i);
		HygEntry   *e = h->seen[p] ? mtms_hyghash_lookup(h->seen[p], key) : NULL;
		bool		is_new = i >= h->nstart[p];
		int64		seen = mtms_emb_seen(emb, i);

		if (e == NULL && !is_new)
			continue;
		if (is_new)
		{
			/* a new row takes over its candidate's count */
			HygEntry   *c = mtms_hyghash_lookup(h->cand[p], key);

			seen = c ? c->seen : 0;
			if (c)
				mtms_hyghash_delete_item(h->cand[p], c);
		}
		if (e)
			seen = add_sat(seen, e->seen);
		mtms_emb_set_stats(emb, i, (int32) Min(seen, (int64) PG_INT32_MAX), h->slot);
	}
}

/* This training's sightings of features without rows: candidates. */
static void
update_candidates(MtmsHygiene *h, const MtmsEmbStore *emb, int p)
{
	mtms_hyghash_iterator it;
	HygEntry   *e;

	if (h->seen[p] == NULL || h->min_count == 0)
		return;
	mtms_hyghash_start_iterate(h->seen[p], &it);
	while ((e = mtms_hyghash_iterate(h->seen[p], &it)) != NULL)
	{
		HygEntry   *c;
		bool		found;

		if (mtms_emb_find(emb, e->key) >= 0)
			continue;
		c = mtms_hyghash_insert(h->cand[p], e->key, &found);
		if (!found)
		{
			c->seen = 0;
			c->field = e->field;
		}
		c->seen = add_sat(c->seen, e->seen);
		c->last_seen = h->slot;
	}
}

static int
cand_cmp(const void *a, const void *b)
{
	const HygEntry *x = *(HygEntry *const *) a;
	const HygEntry *y = *(HygEntry *const *) b;

	if (x->last_seen != y->last_seen)
		return x->last_seen > y->last_seen ? -1 : 1;
	if (x->seen != y->seen)
		return x->seen > y->seen ? -1 : 1;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return 0;
}

/* Forget candidates unseen too long; with max_features keep that many. */
static void
expire_candidates(MtmsHygiene *h, int p)
{
	int32		window = h->ttl_slots > 0 ? h->ttl_slots : MTMS_CANDIDATE_SLOTS;
	mtms_hyghash_hash *tab = h->cand[p];
	HygEntry  **all;
	int64		n = 0;
	mtms_hyghash_iterator it;
	HygEntry   *e;

	all = palloc_extended(sizeof(HygEntry *) * Max(tab->members, 1), MCXT_ALLOC_HUGE);
	mtms_hyghash_start_iterate(tab, &it);
	while ((e = mtms_hyghash_iterate(tab, &it)) != NULL)
		all[n++] = e;
	if (h->max_features > 0 && n > h->max_features)
		qsort(all, n, sizeof(HygEntry *), cand_cmp);
	/* collect the keys first: deleting moves entries */
	{
		uint64	   *gone = palloc_extended(sizeof(uint64) * Max(n, 1), MCXT_ALLOC_HUGE);
		int64		ngone = 0;

		for (int64 i = 0; i < n; i++)
			if (h->slot - all[i]->last_seen >= window ||
				(h->max_features > 0 && i >= h->max_features))
				gone[ngone++] = all[i]->key;
		for (int64 i = 0; i < ngone; i++)
			mtms_hyghash_delete(tab, gone[i]);
		pfree(gone);
	}
	pfree(all);
}

void
mtms_hygiene_finish(MtmsHygiene *h, MtmsModel *m)
{
	if (h == NULL)
		return;
	for (int p = 0; p < h->npairs; p++)
	{
		CHECK_FOR_INTERRUPTS();
		mtms_emb_set_gated(m->emb[p], false);
		update_rows(h, m->emb[p], p);
		update_candidates(h, m->emb[p], p);
		expire_candidates(h, p);
		if (h->seen[p])
			mtms_hyghash_destroy(h->seen[p]);
		h->seen[p] = NULL;
	}
}

/* ---------------------------------------------------------------------
 * Saving the candidates
 * --------------------------------------------------------------------- */

static void
save_batch(SPIPlanPtr plan, Datum *args, Datum *fi, Datum *ft, Datum *sn, Datum *ls, int n)
{
	int			rc;

	args[5] = PointerGetDatum(construct_array(fi, n, INT4OID, 4, true, TYPALIGN_INT));
	args[6] = PointerGetDatum(construct_array(ft, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[7] = PointerGetDatum(construct_array(sn, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[8] = PointerGetDatum(construct_array(ls, n, INT4OID, 4, true, TYPALIGN_INT));
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not store feature counts: %s", SPI_result_code_string(rc));
	for (int i = 5; i < 9; i++)
		pfree(DatumGetPointer(args[i]));
	CHECK_FOR_INTERRUPTS();
}

static void
save_pair(MtmsHygiene *h, SPIPlanPtr plan, Datum *args, const MtmsModel *m, int p)
{
	Datum	   *fi = palloc(sizeof(Datum) * SAVE_BATCH);
	Datum	   *ft = palloc(sizeof(Datum) * SAVE_BATCH);
	Datum	   *sn = palloc(sizeof(Datum) * SAVE_BATCH);
	Datum	   *ls = palloc(sizeof(Datum) * SAVE_BATCH);
	int			n = 0;
	mtms_hyghash_iterator it;
	HygEntry   *e;

	args[2] = CStringGetTextDatum(m->scenes[MTMS_PAIR_SCENE(p)]);
	args[3] = CStringGetTextDatum(mtms_task_name(MTMS_PAIR_TASK(p)));
	mtms_hyghash_start_iterate(h->cand[p], &it);
	while ((e = mtms_hyghash_iterate(h->cand[p], &it)) != NULL)
	{
		fi[n] = Int32GetDatum(e->field + 1);
		ft[n] = Int64GetDatum((int64) e->key);
		sn[n] = Int64GetDatum(e->seen);
		ls[n] = Int32GetDatum(e->last_seen);
		if (++n == SAVE_BATCH)
		{
			save_batch(plan, args, fi, ft, sn, ls, n);
			n = 0;
		}
	}
	if (n > 0)
		save_batch(plan, args, fi, ft, sn, ls, n);
	pfree(fi);
	pfree(ft);
	pfree(sn);
	pfree(ls);
}

void
mtms_hygiene_save(MtmsHygiene *h, const MtmsModelMeta *meta, const MtmsModel *m,
				  int32 version)
{
	Oid			types[9] = {INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID,
		INT4ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID};
	Datum		args[9];
	Datum	   *fd;
	SPIPlanPtr	plan;
	MtmsCatalogScope scope;
	int			guard;

	if (h == NULL || h->min_count == 0)
		return;
	if (version != h->slot)
		elog(ERROR, "feature hygiene counted slot %d, but the version written is %d",
			 h->slot, version);
	fd = palloc(sizeof(Datum) * m->nfields);
	for (int f = 0; f < m->nfields; f++)
		fd[f] = CStringGetTextDatum(m->fields[f]);
	args[0] = Int32GetDatum(meta->model_id);
	args[1] = Int32GetDatum(version);
	args[4] = PointerGetDatum(construct_array(fd, m->nfields, TEXTOID, -1, false, TYPALIGN_INT));
	mtms_catalog_scope_begin(&scope, true);
	SPI_connect();
	guard = mtms_guard_search_path();
	plan = SPI_prepare(psprintf("INSERT INTO %s.mtms_feature_count "
								"(model_id, version, scene, task, field, feature, seen, last_seen) "
								"SELECT $1, $2, $3, $4, $5[($6)[i]], ($7)[i], ($8)[i], ($9)[i] "
								"FROM generate_series(1, cardinality($7)) AS i",
								mtms_schema_quoted()), 9, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	for (int p = 0; p < h->npairs; p++)
		save_pair(h, plan, args, m, p);
	mtms_unguard_search_path(guard);
	SPI_finish();
	mtms_catalog_scope_end(&scope);
}
