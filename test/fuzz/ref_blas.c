/*
 * ref_blas.c
 *    Plain C cblas_sgemm / cblas_sgemv (row-major only, the layout tower.c
 *    uses) and cblas_sdot for the fuzz targets.
 *
 * OpenBLAS is not compiled with AddressSanitizer, so an operand that is
 * too short for the shape passed to it (a work area sized for another
 * tower, say) would be read or written by OpenBLAS unnoticed.  These loops
 * are compiled with the sanitizers like the rest of the harness, and touch
 * exactly the elements the BLAS specification says the call touches (C and
 * y are not read when beta is 0).  build.sh links OpenBLAS instead when
 * FUZZ_BLAS=openblas.
 */
#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>

static void
ref_unsupported(const char *what)
{
	fprintf(stderr, "ref_blas: unsupported %s\n", what);
	abort();
}

void
cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER Order,
			OPENBLAS_CONST enum CBLAS_TRANSPOSE TransA,
			OPENBLAS_CONST enum CBLAS_TRANSPOSE TransB,
			OPENBLAS_CONST blasint M, OPENBLAS_CONST blasint N,
			OPENBLAS_CONST blasint K, OPENBLAS_CONST float alpha,
			OPENBLAS_CONST float *A, OPENBLAS_CONST blasint lda,
			OPENBLAS_CONST float *B, OPENBLAS_CONST blasint ldb,
			OPENBLAS_CONST float beta, float *C, OPENBLAS_CONST blasint ldc)
{
	if (Order != CblasRowMajor)
		ref_unsupported("column-major sgemm");
	if (M < 0 || N < 0 || K < 0)
		ref_unsupported("negative sgemm dimension");
	/* the leading dimensions must cover a row, as BLAS requires */
	if (lda < (TransA == CblasNoTrans ? (K > 0 ? K : 1) : (M > 0 ? M : 1)) ||
		ldb < (TransB == CblasNoTrans ? (N > 0 ? N : 1) : (K > 0 ? K : 1)) ||
		ldc < (N > 0 ? N : 1))
		ref_unsupported("sgemm leading dimension");
	for (long i = 0; i < M; i++)
		for (long j = 0; j < N; j++)
		{
			float		sum = 0.0f;

			for (long k = 0; k < K; k++)
			{
				float		a = TransA == CblasNoTrans ? A[i * lda + k] : A[k * lda + i];
				float		b = TransB == CblasNoTrans ? B[k * ldb + j] : B[j * ldb + k];

				sum += a * b;
			}
			if (beta == 0.0f)
				C[i * ldc + j] = alpha * sum;
			else
				C[i * ldc + j] = alpha * sum + beta * C[i * ldc + j];
		}
}

void
cblas_sgemv(OPENBLAS_CONST enum CBLAS_ORDER order,
			OPENBLAS_CONST enum CBLAS_TRANSPOSE trans,
			OPENBLAS_CONST blasint m, OPENBLAS_CONST blasint n,
			OPENBLAS_CONST float alpha, OPENBLAS_CONST float *a,
			OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *x,
			OPENBLAS_CONST blasint incx, OPENBLAS_CONST float beta,
			float *y, OPENBLAS_CONST blasint incy)
{
	long		leny = trans == CblasNoTrans ? m : n;
	long		lenx = trans == CblasNoTrans ? n : m;

	if (order != CblasRowMajor)
		ref_unsupported("column-major sgemv");
	if (m < 0 || n < 0 || incx <= 0 || incy <= 0 || lda < (n > 0 ? n : 1))
		ref_unsupported("sgemv shape");
	for (long i = 0; i < leny; i++)
	{
		float		sum = 0.0f;

		for (long j = 0; j < lenx; j++)
		{
			float		aij = trans == CblasNoTrans ? a[i * lda + j] : a[j * lda + i];

			sum += aij * x[j * incx];
		}
		if (beta == 0.0f)
			y[i * incy] = alpha * sum;
		else
			y[i * incy] = alpha * sum + beta * y[i * incy];
	}
}

float
cblas_sdot(OPENBLAS_CONST blasint n, OPENBLAS_CONST float *x, OPENBLAS_CONST blasint incx,
		   OPENBLAS_CONST float *y, OPENBLAS_CONST blasint incy)
{
	float		s = 0.0f;

	for (blasint i = 0; i < n; i++)
		s += x[(size_t) i * incx] * y[(size_t) i * incy];
	return s;
}
