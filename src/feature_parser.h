/*
 * feature_parser.h
 *    'field=value' feature strings -> (field index, 64-bit hash).
 *
 * The hash of a feature is hash_bytes_extended() of the whole 'field=value'
 * string with MTMS_FEATURE_HASH_SEED; mtms_feature_hash(text) exposes it so
 * users can find a feature's rows in mtms_embedding.
 */
#ifndef MTMS_FEATURE_PARSER_H
#define MTMS_FEATURE_PARSER_H

#include "mtms.h"
#include "utils/array.h"

typedef struct MtmsFeature
{
	int32		field;			/* index into the model's fields */
	uint64		hash;			/* hash of 'field=value' */
} MtmsFeature;

/* hash of one 'field=value' string (len bytes, no terminator needed) */
extern uint64 mtms_hash_feature(const char *s, int len);

/*
 * Parse a text[] of 'field=value'.  fields[0..nfields-1] are the model's
 * field names.  Returns the number of features; *out is palloc'd in
 * CurrentMemoryContext (may be reused: pass *out and *capacity from the
 * previous call, or NULL/0).  Features keep array order.
 *
 * If content_hash is not NULL it receives a hash of the whole array (order
 * sensitive), used with the scene to pick the validation split.
 *
 * arr must be detoasted (DatumGetArrayTypeP); elements are read in place.
 * The field is the text before the FIRST '=' (a value may contain '=').
 * With more than a dozen fields the lookup uses a hash table cached per
 * backend and rebuilt whenever fields[] changes content.
 *
 * Errors (ereport ERROR): NULL array or element (null_value_not_allowed),
 * multi-dimensional array (array_subscript_error), missing '=', empty field
 * or value (invalid_text_representation), undeclared field
 * (undefined_object, hint listing the model's fields), element longer than
 * MTMS_MAX_FEATURE_LEN or more than MTMS_MAX_FEATURES_PER_ROW elements
 * (program_limit_exceeded).  An empty array gives 0 features.
 */
extern int	mtms_parse_features(ArrayType *arr, int nfields, char *const *fields,
								MtmsFeature **out, int *capacity,
								uint64 *content_hash);

#endif							/* MTMS_FEATURE_PARSER_H */
