/*
 * feature_keys.h
 *    A feature as a (hash, field) key, and a simplehash numbering such keys
 *    (SH_PREFIX mtms_fkhash), for modules that number the distinct features
 *    of a set of rows (joined_keys.c, kept_rows.c).
 *
 * The embedding tables key rows by hash alone (the hash already covers
 * 'field=value'); numbering by (hash, field) keeps apart the (never seen)
 * case of two fields' values with one hash, whose joined-input blocks differ.
 */
#ifndef MTMS_FEATURE_KEYS_H
#define MTMS_FEATURE_KEYS_H

#include "mtms.h"
#include "common/hashfn.h"

typedef struct MtmsFeatureKey
{
	uint64		hash;
	int32		field;
} MtmsFeatureKey;

typedef struct MtmsFeatureKeyEntry
{
	MtmsFeatureKey key;
	int32		id;				/* the number given to the key */
	char		status;
} MtmsFeatureKeyEntry;

static inline uint32
mtms_feature_key_hash(MtmsFeatureKey k)
{
	return (uint32) hash_combine64(k.hash, (uint64) k.field);
}

#define SH_PREFIX		mtms_fkhash
#define SH_ELEMENT_TYPE	MtmsFeatureKeyEntry
#define SH_KEY_TYPE		MtmsFeatureKey
#define SH_KEY			key
#define SH_HASH_KEY(tb, k)	mtms_feature_key_hash(k)
#define SH_EQUAL(tb, a, b)	((a).hash == (b).hash && (a).field == (b).field)
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

#endif							/* MTMS_FEATURE_KEYS_H */
