/* model_cache.c: placeholder until the module lands */
#include "postgres.h"
