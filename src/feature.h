/*
 * feature.h — Personalizer-style JSON features for the linear model:
 * a list of JSON objects flattened into namespaced features and hashed into
 * a fixed-size vector (the user/context slot u or the action slot e of
 * linear.h). The design note is at the top of features.c.
 */
#ifndef ADB_FEATURE_H
#define ADB_FEATURE_H

#include <jansson.h>

#include "linear.h"

#define ADB_FEAT_DIM ADB_LIN_P /* the hashed vector's length */
#define ADB_FEAT_MAX 4096      /* features read from one list at most */

/* Hashes a list of feature objects (NULL or an empty list: zeros) into
 * out. Returns the number of features hashed, or -1 when list is not an
 * array of objects (what is then written to *bad, at most badlen bytes). */
int adb__features_hash(const json_t *list, float out[ADB_FEAT_DIM], char *bad,
                       size_t badlen);

/* The hash of one feature name (FNV-1a 64, then a finaliser): its slot is
 * h % ADB_FEAT_DIM and its sign bit 63. Exposed for tests. */
uint64_t adb__features_name_hash(const char *name, size_t len);

#endif /* ADB_FEATURE_H */
