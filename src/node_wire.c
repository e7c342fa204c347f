/*
 * node_wire.c
 *    A multi-node training's job and results as bytes (see node_wire.h).
 *
 * Sections carry their length, so that each part is read by the reader
 * that wrote it (unit_wire.c's shape and units, the towers' own format)
 * and checked to its end.  Everything read back is validated.
 */
#include "node_wire.h"

#include "miscadmin.h"
#include "unit_wire.h"
#include "wire_chunks.h"
#include "wire_codec.h"
#include "utils/memutils.h"

#define JOB_MAGIC		0x6d746a31	/* "mtj1" */
#define RESULT_MAGIC	0x6d747231	/* "mtr1" */
#define WIRE_VERSION	2	/* 2: towers without their Adam moments */

#define REC_OUTCOME		1
#define REC_PARAMS		2
#define REC_TOTALS		3

/*
 * The structures a job and a result carry as raw bytes: a node built with
 * other ones (another version of mtms, another compiler's layout) would
 * misread them, so their sizes are part of the fingerprint.
 */
static uint32
build_fingerprint(void)
{
	uint32		h = WIRE_VERSION;

	h = h * 31 + (uint32) sizeof(MtmsOptions);
	h = h * 31 + (uint32) sizeof(MtmsUnitOutcome);
	h = h * 31 + (uint32) sizeof(MtmsUnitResult);
	h = h * 31 + (uint32) sizeof(MtmsCheckpoint);
	h = h * 31 + MTMS_NMETRICS;
	return h;
}

#define put(buf, p, n)	mtms_wire_put(buf, p, n)
#define get(p, end, dst, n)	mtms_wire_get(p, end, dst, n, "multi-node")
#define get_int(p, end, lo, hi)	mtms_wire_get_int(p, end, lo, hi, "multi-node")

static void
put_int(StringInfo buf, int32 v)
{
	put(buf, &v, sizeof(v));
}

/* A section: its length, then what fill wrote. */
static int
section_begin(StringInfo buf)
{
	uint64		len = 0;
	int			at = buf->len;

	put(buf, &len, sizeof(len));
	return at;
}

static void
section_end(StringInfo buf, int at)
{
	uint64		len = buf->len - at - sizeof(uint64);

	memcpy(buf->data + at, &len, sizeof(len));
}

static const char *
get_section(const char **p, const char *end, Size *len)
{
	uint64		n;
	const char *s;

	get(p, end, &n, sizeof(n));
	if (n > (uint64) (end - *p))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: truncated multi-node message")));
	s = *p;
	*p += n;
	*len = (Size) n;
	return s;
}

/* ---------------------------------------------------------------------
 * The job
 * --------------------------------------------------------------------- */

void
mtms_node_job_write(MtmsChunks *out, const MtmsModelMeta *meta, const MtmsModel *m,
					int32 stored_npairs, const int32 *frozen_fields,
					const bool *selected)
{
	StringInfo	buf = mtms_chunks_buf(out);
	uint32		magic = JOB_MAGIC;
	uint32		fp = build_fingerprint();
	int32		len = strlen(meta->name);
	int			at;

	put(buf, &magic, sizeof(magic));
	put(buf, &fp, sizeof(fp));
	put_int(buf, len);
	put(buf, meta->name, len);
	put(buf, &meta->opts, sizeof(MtmsOptions));
	put_int(buf, meta->active_version);
	put_int(buf, stored_npairs);
	put_int(buf, m->stored_nfields);
	/* the shape, then what it sizes */
	at = section_begin(buf);
	mtms_wire_shape(buf, m);
	section_end(buf, at);
	put_int(buf, frozen_fields != NULL);
	if (frozen_fields)
		put(buf, frozen_fields, sizeof(int32) * m->npairs);
	put(buf, selected, sizeof(bool) * m->nscenes);
	/* then one record per pair: a StringInfo holds a pair, not the model */
	for (int p = 0; p < m->npairs; p++)
	{
		CHECK_FOR_INTERRUPTS();
		mtms_chunks_boundary(out);
		at = section_begin(buf);
		mtms_wire_unit_params(buf, m, &mtms_stage_embedding_info, p);
		section_end(buf, at);
		put_int(buf, m->tower2[p] != NULL);
		if (m->tower2[p])
		{
			at = section_begin(buf);
			mtms_tower_serialize_params(buf, m->tower2[p]);
			section_end(buf, at);
		}
	}
	mtms_chunks_finish(out);
}

/* The node's meta for the job's model: its declaration, no catalog row. */
static MtmsModelMeta *
job_meta(const MtmsModel *m, const char *name, const MtmsOptions *opts,
		 int32 active_version)
{
	MtmsModelMeta *meta = palloc0(sizeof(MtmsModelMeta));

	meta->name = pstrdup(name);
	meta->owner = GetUserId();
	meta->nscenes = m->nscenes;
	meta->scenes = m->scenes;
	meta->nfields = m->nfields;
	meta->fields = m->fields;
	meta->scene_birth = m->scene_birth;
	meta->field_birth = m->field_birth;
	meta->dim = m->dim;
	meta->nhidden = m->nhidden;
	memcpy(meta->hidden, m->hidden, sizeof(meta->hidden));
	meta->opts = *opts;
	meta->active_version = active_version;
	return meta;
}

static void
job_check_end(const char *p, const char *end)
{
	if (p != end)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: trailing bytes after a multi-node training job")));
}

void
mtms_node_job_read(const char *data, Size len, MtmsNodeJob *job)
{
	const char *p = data;
	const char *end = data + len;
	uint32		magic;
	uint32		fp;
	char	   *name;
	int32		nlen;
	MtmsOptions opts;
	int32		active_version;
	int32		stored_nfields;
	const char *s;
	Size		slen;
	MtmsModel  *m;

	get(&p, end, &magic, sizeof(magic));
	if (magic != JOB_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: not a multi-node training job")));
	get(&p, end, &fp, sizeof(fp));
	if (fp != build_fingerprint())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mtms on this data node is not the build of the coordinator"),
				 errdetail("The job's fingerprint is %08x, this node's %08x.",
						   fp, build_fingerprint()),
				 errhint("Install the same mtms on every node of the cluster.")));
	nlen = get_int(&p, end, 1, MTMS_NAME_MAXLEN);
	name = palloc(nlen + 1);
	get(&p, end, name, nlen);
	name[nlen] = '\0';
	get(&p, end, &opts, sizeof(opts));
	opts.cluster[NAMEDATALEN - 1] = '\0';
	active_version = get_int(&p, end, 0, PG_INT32_MAX);
	job->stored_npairs = get_int(&p, end, 0, MTMS_MAX_SCENES * MTMS_NTASKS);
	stored_nfields = get_int(&p, end, 0, MTMS_MAX_FIELDS);
	s = get_section(&p, end, &slen);
	m = mtms_wire_read_shape(s, slen);
	m->seed = (uint64) opts.seed;
	m->stored_nfields = Min(stored_nfields, m->nfields);
	m->stored_npairs = Min(job->stored_npairs, m->npairs);
	job->frozen_fields = NULL;
	if (get_int(&p, end, 0, 1))
	{
		job->frozen_fields = palloc(sizeof(int32) * m->npairs);
		get(&p, end, job->frozen_fields, sizeof(int32) * m->npairs);
	}
	job->selected = palloc(sizeof(bool) * m->nscenes);
	get(&p, end, job->selected, sizeof(bool) * m->nscenes);
	for (int q = 0; q < m->npairs; q++)
	{
		CHECK_FOR_INTERRUPTS();
		s = get_section(&p, end, &slen);
		mtms_wire_read_unit(s, slen, m, &mtms_stage_embedding_info, q);
		if (get_int(&p, end, 0, 1))
		{
			const char *t;
			MemoryContext old;

			s = get_section(&p, end, &slen);
			t = s;
			old = MemoryContextSwitchTo(m->cxt);
			m->tower2[q] = mtms_tower_deserialize(&t, s + slen);
			MemoryContextSwitchTo(old);
			if (t != s + slen || m->tower2[q]->sizes[0] != MTMS_INPUT2(m))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: a fine-tune tower of the wrong shape")));
		}
	}
	job_check_end(p, end);
	job->model = m;
	job->meta = job_meta(m, name, &opts, active_version);
}

/* ---------------------------------------------------------------------
 * The result
 * --------------------------------------------------------------------- */

void
mtms_node_result_begin(MtmsChunks *out)
{
	uint32		magic = RESULT_MAGIC;

	put(mtms_chunks_buf(out), &magic, sizeof(magic));
}

void
mtms_node_put_outcome(MtmsChunks *out, MtmsStage stage, int unit,
					  const MtmsUnitOutcome *o, double seconds)
{
	StringInfo	buf = mtms_chunks_buf(out);
	MtmsUnitOutcome copy = *o;

	copy.history = NULL;
	put_int(buf, REC_OUTCOME);
	put_int(buf, (int32) stage);
	put_int(buf, unit);
	put(buf, &seconds, sizeof(seconds));
	put(buf, &copy, sizeof(copy));
	if (o->nhistory > 0)
		put(buf, o->history, sizeof(MtmsCheckpoint) * o->nhistory);
	mtms_chunks_boundary(out);
}

void
mtms_node_put_params(MtmsChunks *out, const MtmsModel *m, const MtmsStageInfo *si,
					 int unit)
{
	StringInfo	buf = mtms_chunks_buf(out);
	int			at;

	put_int(buf, REC_PARAMS);
	put_int(buf, (int32) si->stage);
	put_int(buf, unit);
	at = section_begin(buf);
	mtms_wire_unit_params(buf, m, si, unit);
	section_end(buf, at);
	mtms_chunks_boundary(out);
}

/* The last record. */
void
mtms_node_put_totals(MtmsChunks *out, int64 samples, int64 bad_conversions)
{
	StringInfo	buf = mtms_chunks_buf(out);

	put_int(buf, REC_TOTALS);
	put(buf, &samples, sizeof(samples));
	put(buf, &bad_conversions, sizeof(bad_conversions));
	mtms_chunks_finish(out);
}

void
mtms_node_result_read(const char *data, Size len, MtmsNodeResult *res)
{
	const char *p = data;
	const char *end = data + len;
	uint32		magic;
	int			cap_o = 16;
	int			cap_p = 16;
	bool		totals = false;

	memset(res, 0, sizeof(*res));
	get(&p, end, &magic, sizeof(magic));
	if (magic != RESULT_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: not a data node's training result")));
	res->outcomes = palloc(sizeof(MtmsNodeOutcome) * cap_o);
	res->params = palloc(sizeof(MtmsNodeParams) * cap_p);
	while (p < end)
	{
		int32		kind = get_int(&p, end, REC_OUTCOME, REC_TOTALS);

		if (kind == REC_TOTALS)
		{
			get(&p, end, &res->samples, sizeof(int64));
			get(&p, end, &res->bad_conversions, sizeof(int64));
			totals = true;
			continue;
		}
		if (kind == REC_OUTCOME)
		{
			MtmsNodeOutcome *o;

			if (res->noutcomes == cap_o)
				res->outcomes = repalloc(res->outcomes, sizeof(MtmsNodeOutcome) * (cap_o *= 2));
			o = &res->outcomes[res->noutcomes++];
			o->stage = get_int(&p, end, MTMS_STAGE_EMBEDDING, MTMS_STAGE_FINETUNE);
			o->unit = get_int(&p, end, 0, MTMS_MAX_SCENES * MTMS_NTASKS - 1);
			get(&p, end, &o->seconds, sizeof(double));
			get(&p, end, &o->outcome, sizeof(MtmsUnitOutcome));
			if (o->outcome.nhistory < 0 ||
				(Size) o->outcome.nhistory > (Size) (end - p) / sizeof(MtmsCheckpoint))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("mtms: truncated multi-node message")));
			o->outcome.history = palloc(sizeof(MtmsCheckpoint) * Max(o->outcome.nhistory, 1));
			get(&p, end, o->outcome.history, sizeof(MtmsCheckpoint) * o->outcome.nhistory);
		}
		else
		{
			MtmsNodeParams *q;

			if (res->nparams == cap_p)
				res->params = repalloc(res->params, sizeof(MtmsNodeParams) * (cap_p *= 2));
			q = &res->params[res->nparams++];
			q->stage = get_int(&p, end, MTMS_STAGE_EMBEDDING, MTMS_STAGE_FINETUNE);
			q->unit = get_int(&p, end, 0, MTMS_MAX_SCENES * MTMS_NTASKS - 1);
			q->data = get_section(&p, end, &q->len);
		}
	}
	if (!totals)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mtms: a data node's training result without its totals")));
}
