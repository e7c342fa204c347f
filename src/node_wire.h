/*
 * node_wire.h
 *    What a coordinator and its data nodes exchange (train_nodes.c,
 *    node_train.c), as bytes: the job (the model's declaration, options
 *    and full parameters, the scenes to train) and the result (per unit its
 *    outcome and history, and the trained units' parameters, in
 *    unit_wire.c's form).  Towers travel without their Adam moments (a
 *    third of the bytes): the coordinator only stores the finished units,
 *    a stored version has no moments either, and a fine-tune tower starts
 *    from its phase-1 tower's weights alone.  Both ends must be the same
 *    build of mtms: the job starts with a fingerprint of the structures it
 *    carries raw, and a node refuses a job whose fingerprint is not its own.
 */
#ifndef MTMS_NODE_WIRE_H
#define MTMS_NODE_WIRE_H

#include "mtms.h"
#include "catalog.h"
#include "lib/stringinfo.h"
#include "model.h"
#include "train_stages.h"
#include "unit_train.h"
#include "wire_chunks.h"

/*
 * A job of at most this many chunks (mtms.node_chunk_size) and bytes
 * travels in the training call itself; a larger one is staged on the nodes
 * chunk by chunk first (train_nodes.c).  PL/Proxy passes a bytea array as
 * hex text in one value of at most 1 GB: 256 MB is half of that, and so is
 * the largest chunk a staging call carries.
 */
#define MTMS_NODE_INLINE_CHUNKS	4
#define MTMS_NODE_INLINE_BYTES	((Size) 256 * 1024 * 1024)

/* A job as a node reads it. */
typedef struct MtmsNodeJob
{
	MtmsModelMeta *meta;		/* declaration and options, no catalog row */
	MtmsModel  *model;			/* every parameter training starts from */
	int32		stored_npairs;
	int32	   *frozen_fields;	/* [npairs] or NULL (see train_step.h) */
	bool	   *selected;		/* [nscenes] scenes phase 1 trains */
} MtmsNodeJob;

/* The job for meta's model m (all its parameters), written and finished. */
extern void mtms_node_job_write(MtmsChunks *out, const MtmsModelMeta *meta,
								const MtmsModel *m, int32 stored_npairs,
								const int32 *frozen_fields, const bool *selected);

/* Read a job; an error (data_corrupted or a build mismatch) if invalid. */
extern void mtms_node_job_read(const char *data, Size len, MtmsNodeJob *job);

/* One unit's outcome, as the node's result carries it. */
typedef struct MtmsNodeOutcome
{
	int32		stage;
	int32		unit;
	double		seconds;		/* the stage's wall time on the node */
	MtmsUnitOutcome outcome;	/* history points into the result's bytes */
} MtmsNodeOutcome;

/* A trained unit's parameters, as the node's result carries them. */
typedef struct MtmsNodeParams
{
	int32		stage;
	int32		unit;
	const char *data;
	Size		len;
} MtmsNodeParams;

typedef struct MtmsNodeResult
{
	int64		samples;		/* rows of the node's relation */
	int64		bad_conversions;
	int			noutcomes;
	MtmsNodeOutcome *outcomes;
	int			nparams;
	MtmsNodeParams *params;
} MtmsNodeResult;

/* A result under construction: the header, then records, totals last. */
extern void mtms_node_result_begin(MtmsChunks *out);
extern void mtms_node_put_outcome(MtmsChunks *out, MtmsStage stage, int unit,
								  const MtmsUnitOutcome *o, double seconds);
extern void mtms_node_put_params(MtmsChunks *out, const MtmsModel *m,
								 const MtmsStageInfo *si, int unit);
extern void mtms_node_put_totals(MtmsChunks *out, int64 samples, int64 bad_conversions);

/* Read a node's result (it points into data, which must outlive it). */
extern void mtms_node_result_read(const char *data, Size len, MtmsNodeResult *res);

#endif							/* MTMS_NODE_WIRE_H */
