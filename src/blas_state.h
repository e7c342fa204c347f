/*
 * blas_state.h
 *    What src/blas.c found and chose when it loaded OpenBLAS, for
 *    mtms_blas_info() (src/blas_info.c) and the self-tests.
 */
#ifndef MTMS_BLAS_STATE_H
#define MTMS_BLAS_STATE_H

#include "blas.h"

/* Vector classes of CPUs and of OpenBLAS kernel sets. */
#define MTMS_CPU_BASE		0	/* SSE or other */
#define MTMS_CPU_AVX		1
#define MTMS_CPU_AVX2		2	/* with FMA */
#define MTMS_CPU_AVX512		3	/* F, BW, VL, DQ, CD */

typedef struct MtmsBlasState
{
	void	   *handle;
	char		path[1024];		/* the library loaded */
	char		config[256];	/* openblas_get_config() */
	char		kernels[64];	/* openblas_get_corename() of the kernels in use */
	char		openblas_choice[64];	/* what OpenBLAS chose by itself */
	char		user_coretype[64];	/* OPENBLAS_CORETYPE of the environment, or "" */
	char		rejected[64];	/* kernels that failed the check, or "" */
	const char *source;			/* how the kernels in use were chosen */
	int			cpu_class;
	bool		cpu_bf16;
	int			cpu_family;
	int			cpu_model;
	bool		check_passed;	/* the kernels in use passed the check */
	double		check_max_error;	/* their largest relative error in it */
} MtmsBlasState;

extern MtmsBlasState mtms_blas_state;

/* mtms.blas_test_hook (see src/blas.c) */
extern char *mtms_blas_test_hook;

/*
 * Compare blas's sgemm (every transpose, tower and awkward shapes), sgemv
 * and sdot with a double-precision product; false when any result is off
 * by more than 1e-5 relative to the sum of the magnitudes of its terms.
 */
extern bool mtms_blas_check(const MtmsBlas *blas, double *max_rel_error);

#endif							/* MTMS_BLAS_STATE_H */
