/*
 * catalog_tables.h
 *    The extension's catalog tables as relations: where they are, what the
 *    installed schema version has, when they changed, and acting as their
 *    owner.  The lowest layer of the catalog modules (catalog.c, access.c,
 *    catalog_guard.c build on it).
 */
#ifndef MTMS_CATALOG_TABLES_H
#define MTMS_CATALOG_TABLES_H

#include "mtms.h"

/*
 * OID of @extschema@.mtms_model.  Cached per backend and revalidated with a
 * syscache lookup, so it stays right across DROP/CREATE EXTENSION.  It reads
 * catalogs: call it from ordinary code, never from an invalidation callback.
 */
extern Oid	mtms_model_relid(void);

/* OID of another table of the extension ("mtms_tower", ...); ERROR if missing. */
extern Oid	mtms_catalog_relid(const char *table);

/* The extension's schema name, quoted for SQL text.  palloc'd. */
extern char *mtms_schema_quoted(void);

/* The role that owns the catalog tables (the extension's owner). */
extern Oid	mtms_catalog_owner(void);

/*
 * Whether the installed schema has per-model ACLs, row security and the
 * parameter revision (extension version 0.2 and later).  The library keeps
 * working on a database still at 0.1 until ALTER EXTENSION mtms UPDATE:
 * there, reading a model needs SELECT on the tables, as 0.1 documented.
 */
extern bool mtms_catalog_has_acl(void);

/*
 * Whether the installed schema keeps feature statistics (extension version
 * 0.3 and later): mtms_embedding.seen and last_seen, and the candidate
 * table mtms_feature_count.  On an older schema models train and score as
 * before, and the feature hygiene options (min_count, ttl_slots) are
 * refused.  Checked afresh on every call (a syscache lookup): ALTER
 * EXTENSION UPDATE does not touch mtms_model, so no invalidation says so.
 */
extern bool mtms_catalog_has_feature_stats(void);

/*
 * Whether the installed schema has the experiments table (extension
 * version 0.3 and later).  Until ALTER EXTENSION mtms UPDATE there are no
 * experiments: every key is served by the active version.
 */
extern bool mtms_catalog_has_experiments(void);

/*
 * Whether the installed schema has the training history table (0.3 and
 * later).  Looked up on every call (no relcache event announces the table
 * of an ALTER EXTENSION mtms UPDATE): call it once per training, not per row.
 */
extern bool mtms_catalog_has_history(void);
extern bool mtms_catalog_at_least(const char *version);

/*
 * Tell every backend that a model changed: a relcache invalidation of
 * mtms_model, sent at commit (and WAL-logged, so hot standbys see it too).
 */
extern void mtms_catalog_changed(void);

/*
 * A number that changes whenever mtms_model may have changed (any relcache
 * invalidation of it, or a reset); caches compare it before trusting what
 * they read.  Cheap: no catalog access unless an invalidation arrived.
 */
extern uint64 mtms_catalog_generation(void);

/*
 * Running the extension's own catalog SQL as the tables' owner, the way
 * PostgreSQL's foreign-key triggers act as the referenced table's owner:
 * after the caller's rights on the model were checked in C, reads and
 * writes of the catalog rows need no table privilege of the caller and are
 * not filtered by row security.  Never run user SQL (sample relations)
 * inside such a scope.  With writes true the catalog triggers treat the
 * statements as mtms's own (no guard, no revision bump).  Scopes nest; an
 * error unwinds the user id with the (sub)transaction, and the write flag
 * is cleared at every abort.
 */
typedef struct MtmsCatalogScope
{
	Oid			save_userid;
	int			save_sec_context;
	bool		writes;
} MtmsCatalogScope;

extern void mtms_catalog_scope_begin(MtmsCatalogScope *scope, bool writes);
extern void mtms_catalog_scope_end(MtmsCatalogScope *scope);

/* Inside a writing scope (for the catalog triggers). */
extern bool mtms_catalog_internal_write(void);

#endif							/* MTMS_CATALOG_TABLES_H */
