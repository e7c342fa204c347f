/*
 * blas_table.c
 *    The fuzz targets' mtms_blas (src/blas.h): in the server src/blas.c
 *    fills it from the OpenBLAS it loads; here it points at whatever
 *    cblas_* the target links (ref_blas.c, or OpenBLAS with
 *    FUZZ_BLAS=openblas).
 */
#include "postgres.h"

#define MTMS_BLAS_NO_MACROS
#include "blas.h"

MtmsBlas	mtms_blas = {cblas_sgemm, cblas_sgemv, cblas_sdot};
