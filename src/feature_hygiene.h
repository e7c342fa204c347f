/*
 * feature_hygiene.h
 *    Feature admission and eviction over daily trainings (the model
 *    options min_count and ttl_slots), as parameter servers do it.
 *
 * A slot is a training: the number of the version it writes (versions
 * are numbered max + 1, so slots only grow).  For each (scene, task) pair
 * a training counts the sightings of every feature in the rows that train
 * the pair's embeddings (phase 1's training rows of the scene: every
 * impression for CTR; for CVR the clicked ones, or every impression when
 * the CTCVR stage runs, since it trains the CVR embeddings on them).
 *
 *  - min_count: a feature gets embedding rows in a pair once its sightings,
 *    this training's plus what earlier trainings counted, reach min_count;
 *    until then it pools as zero, as an unseen feature does.  Features not
 *    admitted yet are candidates: their counts are kept between trainings
 *    in mtms_feature_count, one row per (version, pair, feature).
 *  - ttl_slots: a pair's row whose feature no training saw in the last
 *    ttl_slots slots is dropped before the training's stages (so the
 *    fine-tune trains on what the version keeps).
 *
 * Memory: candidates are forgotten once unseen for ttl_slots slots (or
 * MTMS_CANDIDATE_SLOTS when ttl_slots is 0), and with max_features a pair
 * keeps at most max_features of them (the most recently seen, then the
 * most counted), so they are bounded by the distinct features of a window
 * of trainings: about 40 bytes each in memory while a training runs.
 *
 * Counting needs phase 1's rows in memory (mtms.keep_training_rows); a
 * training that falls back to scanning admits no feature and evicts none
 * (a NOTICE says so) and carries the counts over unchanged.
 */
#ifndef MTMS_FEATURE_HYGIENE_H
#define MTMS_FEATURE_HYGIENE_H

#include "mtms.h"
#include "catalog.h"
#include "kept_rows.h"
#include "model.h"
#include "row_store.h"

/* slots a candidate stays unseen before it is forgotten, without ttl_slots */
#define MTMS_CANDIDATE_SLOTS	30

typedef struct MtmsHygiene MtmsHygiene;

/*
 * The hygiene of a training of meta that starts from m (loaded from
 * from_version, 0 for a fresh model), in the current memory context; NULL
 * when min_count and ttl_slots are both off.  ERROR on a schema older than
 * 0.3 (no place to keep the statistics).  Reads the candidates of
 * from_version and numbers the slot.
 */
extern MtmsHygiene *mtms_hygiene_begin(const MtmsModelMeta *meta, const MtmsModel *m,
									   int32 from_version);

/*
 * Before phase 1's stages, with its training rows (kr, or when already
 * grouped, rs): count the selected scenes' pairs, drop their expired rows
 * (ttl_slots) and gate their tables to the admitted features (min_count).
 */
extern void mtms_hygiene_prepare(MtmsHygiene *h, MtmsModel *m, const MtmsKeptRows *kr,
								 const MtmsRowStore *rs, const bool *selected);

/*
 * Phase 1 scans its samples (its rows are not kept in memory): nothing is
 * counted, so with min_count the selected scenes' tables are gated with
 * nothing admitted (existing rows train, no feature gets new rows), and
 * nothing is evicted.
 */
extern void mtms_hygiene_skip(MtmsHygiene *h, MtmsModel *m, const bool *selected);

/*
 * After the stages, before the version is written: every row's statistics
 * (sightings, last slot), the candidates' counts, expiry and cap; the
 * tables are ungated.
 */
extern void mtms_hygiene_finish(MtmsHygiene *h, MtmsModel *m);

/* The candidates as rows of version (whose mtms_version row exists). */
extern void mtms_hygiene_save(MtmsHygiene *h, const MtmsModelMeta *meta,
							  const MtmsModel *m, int32 version);

#endif							/* MTMS_FEATURE_HYGIENE_H */
