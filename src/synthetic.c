/* synthetic.c: placeholder until the module lands */
#include "postgres.h"
