/*
 * model_shared.h
 *    Loaded model versions in shared memory, one copy for every session.
 *
 * With mtms in shared_preload_libraries (and mtms.shared_models on), the
 * first session that scores a version loads it once into a dynamic shared
 * memory area (DSA), as a flat, pointer-free block (model_flat.h) that
 * nobody writes after the load; every session then scores from a small
 * per-backend view of it.  Which version a session uses is decided exactly
 * as without sharing, from the catalog (model_cache.c): a version is found
 * in shared memory by its identity (database, catalog table, model id,
 * version, scenes, fields, params_revision), never by name.
 *
 * Loading: one loader per version, holding a heavyweight lock on it (an
 * advisory lock tag of mtms's own class, 77) while it loads; the others
 * wait for that lock, and a session never sees a half-loaded version (an
 * entry is published, under the registry's lock, only once its block is
 * written).
 * A load that fails leaves nothing behind; one that does not fit in
 * mtms.shared_models_memory (or finds no free entry) gives the session its
 * own copy, with a WARNING saying so once per backend and version.
 *
 * Lifetime: a session pins the entries it scores from until the end of its
 * transaction.  An entry whose version is no longer served (some session
 * found another active version, and no experiment's candidate is it) is
 * freed when its last pin goes; an unpinned
 * entry may also be evicted when a new version needs the room: of a
 * dropped model first, then the one used longest ago.  A view is only valid while its
 * entry is pinned: mtms_shared_repin says whether it still is the same.
 *
 * A transaction that changed the model's row (a training, rollback, edit
 * not yet committed) never shares what it loads: another transaction
 * could commit different parameters under the same identity.
 */
#ifndef MTMS_MODEL_SHARED_H
#define MTMS_MODEL_SHARED_H

#include "catalog.h"
#include "model.h"
#include "utils/dsa.h"

typedef struct MtmsSharedRef MtmsSharedRef;

/* mtms is preloaded and mtms.shared_models is on. */
extern bool mtms_shared_enabled(void);

/*
 * Version version of meta's model (its active version, or its
 * experiment's candidate) from shared memory, loading it there if needed:
 * a view (in a new child of cxt) with *ref set, the entry pinned for this
 * transaction.  When the version cannot be shared, NULL with *ref NULL;
 * or, when this session loaded it but it did not fit, the session's own
 * copy (in a child of cxt) with *ref NULL.
 */
extern MtmsModel *mtms_shared_model(const MtmsModelMeta *meta, int32 version,
									MemoryContext cxt, MtmsSharedRef **ref);

/*
 * The catalog (as a statement snapshot sees it) serves these versions of
 * meta's model: the model's other versions in shared memory are freed
 * once unpinned.  Called when a session re-reads a model's catalog row.
 */
extern void mtms_shared_served(const MtmsModelMeta *meta);

/*
 * Pin ref's entry for the current transaction (again); false when its
 * version left shared memory meanwhile (its view must not be used).
 */
extern bool mtms_shared_repin(MtmsSharedRef *ref);

/*
 * The version's shared projection cache (proj_shared.h), Invalid when
 * there was no room for it; ref must be pinned.
 */
extern dsa_pointer mtms_shared_proj(const MtmsSharedRef *ref);

/* The DSA area the shared entries live in (attached). */
extern dsa_area *mtms_shared_area(void);

/*
 * This transaction drops the model (mtms_drop_model): when it commits, its
 * versions in shared memory are the first evicted when room is needed.
 */
extern void mtms_shared_forget_model(int32 model_id);

#endif							/* MTMS_MODEL_SHARED_H */
