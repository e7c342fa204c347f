/*
 * blas.h
 *    The BLAS mtms calls, loaded at run time (src/blas.c).
 *
 * mtms.so does not link OpenBLAS: _PG_init loads Debian's serial OpenBLAS
 * with dlopen, after choosing its kernel set when OpenBLAS would fall back
 * to a generic one on this CPU (OpenBLAS reads OPENBLAS_CORETYPE once, when
 * it is loaded), checks the chosen kernels against a plain product, and
 * fills mtms_blas.  Code includes this header instead of <cblas.h> and
 * calls cblas_sgemm & co. as usual: the names below go through the table.
 */
#ifndef MTMS_BLAS_H
#define MTMS_BLAS_H

#include <cblas.h>				/* types, enums and prototypes only */

typedef void (*mtms_sgemm_fn) (const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
							   const enum CBLAS_TRANSPOSE, const blasint, const blasint,
							   const blasint, const float, const float *, const blasint,
							   const float *, const blasint, const float, float *,
							   const blasint);
typedef void (*mtms_sgemv_fn) (const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
							   const blasint, const blasint, const float, const float *,
							   const blasint, const float *, const blasint, const float,
							   float *, const blasint);
typedef float (*mtms_sdot_fn) (const blasint, const float *, const blasint,
							   const float *, const blasint);

typedef struct MtmsBlas
{
	mtms_sgemm_fn sgemm;
	mtms_sgemv_fn sgemv;
	mtms_sdot_fn sdot;
} MtmsBlas;

extern MtmsBlas mtms_blas;

#ifndef MTMS_BLAS_NO_MACROS
#define cblas_sgemm (*mtms_blas.sgemm)
#define cblas_sgemv (*mtms_blas.sgemv)
#define cblas_sdot (*mtms_blas.sdot)
#endif

/*
 * Load the BLAS (from _PG_init, unless the library is preloaded: then each
 * backend loads it at its first product, mtms_blas_info() or summary, so
 * that the postmaster never loads it and mtms.blas_test_hook is read in
 * the session).  Raises at most one WARNING per backend when it cannot use
 * the best kernels, and an ERROR when no OpenBLAS can be loaded at all.
 */
extern void mtms_blas_load(void);
extern void mtms_blas_ensure(void);	/* load it unless this process has */

/* One line for NOTICEs: "OpenBLAS 0.3.21, SkylakeX kernels (chosen by mtms)". */
extern const char *mtms_blas_summary(void);

#endif							/* MTMS_BLAS_H */
