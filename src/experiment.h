/*
 * experiment.h
 *    Online experiments between versions of a model: a candidate version
 *    serves a deterministic share of request keys next to the active one.
 *
 * A key goes to the candidate when u(key) < share, where u(key) is
 * hash_bytes_extended(key, experiment_id) mapped to [0,1).  The same key
 * stays on its arm while the experiment runs; re-declaring the share keeps
 * the experiment_id, so a ramp from s to s' moves only the keys with u
 * between the two; a new experiment (another candidate, or after a stop)
 * has a new id and re-randomises the keys.  The experiment is one row of
 * mtms_experiment (src/sql/mtms--0.2--0.3.sql), read with the model's row
 * (catalog.h: experiment_id, candidate_version, candidate_share).
 */
#ifndef MTMS_EXPERIMENT_H
#define MTMS_EXPERIMENT_H

#include "catalog.h"

/* The key's uniform number in [0,1) for an experiment. */
extern double mtms_experiment_unit(const char *key, int len, int64 experiment_id);

/* Whether the key goes to the model's candidate (false without an experiment). */
extern bool mtms_experiment_routes_candidate(const MtmsModelMeta *meta,
											 const char *key, int len);

#endif							/* MTMS_EXPERIMENT_H */
