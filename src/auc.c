/* auc.c: placeholder until the module lands */
#include "postgres.h"
