/*
 * options.h
 *    Training options of a model (the jsonb 'options' of mtms_create_model):
 *    validation, defaults, and the normalized jsonb stored in the catalog.
 */
#ifndef MTMS_OPTIONS_H
#define MTMS_OPTIONS_H

#include "mtms.h"
#include "utils/jsonb.h"

typedef struct MtmsOptions
{
	double		lr_embedding;	/* row-wise Adagrad step for embedding rows */
	double		lr_tower;		/* Adam step for tower weights */
	int32		batch_size;		/* rows per mini-batch and per pair */
	double		l2;				/* L2 penalty (embeddings touched, tower weights) */
	int32		max_epochs;		/* per stage */
	int32		patience;		/* validations without improvement before a unit stops */
	double		validation_fraction;	/* of rows, chosen by content hash */
	double		finetune_fraction;	/* rows phase 1 leaves to the fine-tune */
	int64		finetune_rows;	/* at most about this many per scene; 0 = no cap */
	int64		seed;			/* initialisation, shuffling */
	bool		ctcvr;			/* run the CTCVR stage of phase 1 */
	int32		shuffle_buffer; /* rows buffered and shuffled before SGD */
	int32		evals_per_epoch;	/* validations per pass over a unit's rows */
	int32		keep_versions;	/* versions kept per model */
	int64		max_features;	/* per embedding table; 0 = unlimited */
	double		min_delta;		/* relative drop of validation loss that counts */
	int32		min_count;		/* sightings before a feature gets rows; 0 = off */
	int32		ttl_slots;		/* trainings unseen before rows go; 0 = off */
	bool		refit;			/* small scenes: phase 1 again on all their
								 * rows, kept where it validates better than
								 * the fine-tune (train_refit.c) */
	char		cluster[NAMEDATALEN];	/* PL/Proxy cluster of data nodes to
										 * train on ("": train here) */
} MtmsOptions;

/* Whether feature hygiene (min_count or ttl_slots) is on. */
static inline bool
mtms_options_hygiene(const MtmsOptions *o)
{
	return o->min_count > 0 || o->ttl_slots > 0;
}

/*
 * Whether a validation loss crit improves on best: it must drop by more than
 * min_delta of best (and by more than rounding noise), so that a unit on a
 * plateau stops instead of "improving" in the fifth decimal.
 */
static inline bool
mtms_improved(double crit, double best, double min_delta)
{
	double		need;

	if (crit != crit)			/* NaN: nothing to compare */
		return false;
	if (best != best || best > 1e300)	/* nothing kept yet */
		return true;
	need = Max(1e-7, min_delta * (best < 0 ? -best : best));
	return crit < best - need;
}

/* Fill defaults. */
extern void mtms_options_default(MtmsOptions *o);

/*
 * Parse and validate user options over the defaults already in *o.
 * Unknown key: invalid_parameter_value listing the known keys.  Wrong JSON
 * type or out-of-range value: an error naming the key and the value.
 */
extern void mtms_options_parse(Jsonb *json, MtmsOptions *o);

/* Every option, defaults included, as jsonb (stored in mtms_model.options). */
extern Jsonb *mtms_options_to_jsonb(const MtmsOptions *o);

#endif							/* MTMS_OPTIONS_H */
