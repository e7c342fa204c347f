/* model_store.c: placeholder until the module lands */
#include "postgres.h"
