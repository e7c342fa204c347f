/*
 * bench/speed_sgemm.c: the single-core sgemm rate of this machine with the
 * serial OpenBLAS mtms links, at the shapes of mtms's tower products
 * (256-row mini-batches; 48 inputs in phase 1, 288 in the fine-tune) and at
 * a large square shape (the peak).  Used by bench/speed_run.py for the
 * "limit" table: FLOPs per sample / this rate = a floor on the time per
 * sample.
 *
 *   gcc -O2 bench/speed_sgemm.c $(pkg-config --cflags --libs openblas) -o speed_sgemm
 *   ./speed_sgemm        -> one JSON object on stdout
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *
randv(size_t n)
{
	float	   *v = malloc(n * sizeof(float));

	for (size_t i = 0; i < n; i++)
		v[i] = (float) rand() / RAND_MAX - 0.5f;
	return v;
}

/*
 * GFLOP/s of the three products of one dense layer on a B-row batch:
 * forward out(B x nout) = in(B x nin) W^T, weight gradient
 * gW(nout x nin) += delta^T in, input gradient dX(B x nin) = delta W.
 */
static double
layer_rate(int B, int nin, int nout, double seconds)
{
	float	   *in = randv((size_t) B * nin);
	float	   *W = randv((size_t) nout * nin);
	float	   *out = randv((size_t) B * nout);
	float	   *gW = randv((size_t) nout * nin);
	float	   *dX = randv((size_t) B * nin);
	long		iters = 0;
	double		t0 = now();
	double		t;

	do
	{
		for (int k = 0; k < 100; k++)
		{
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, nout, nin,
						1.0f, in, nin, W, nin, 0.0f, out, nout);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, nin, B,
						1.0f, out, nout, in, nin, 1.0f, gW, nin);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, nin, nout,
						1.0f, out, nout, W, nin, 0.0f, dX, nin);
		}
		iters += 100;
		t = now() - t0;
	} while (t < seconds);
	free(in);
	free(W);
	free(out);
	free(gW);
	free(dX);
	return 3.0 * 2.0 * B * nin * nout * iters / t / 1e9;
}

static double
square_rate(int n, double seconds)
{
	float	   *a = randv((size_t) n * n);
	float	   *b = randv((size_t) n * n);
	float	   *c = randv((size_t) n * n);
	long		iters = 0;
	double		t0 = now();
	double		t;

	do
	{
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
					1.0f, a, n, b, n, 0.0f, c, n);
		iters++;
		t = now() - t0;
	} while (t < seconds);
	free(a);
	free(b);
	free(c);
	return 2.0 * n * n * (double) n * iters / t / 1e9;
}

int
main(void)
{
	srand(1);
	printf("{\"peak_2048\": %.2f, \"b256_48x64\": %.2f, \"b256_64x32\": %.2f, "
		   "\"b256_288x64\": %.2f, \"b512_288x64\": %.2f}\n",
		   square_rate(2048, 1.0),
		   layer_rate(256, 48, 64, 0.5),
		   layer_rate(256, 64, 32, 0.5),
		   layer_rate(256, 288, 64, 0.5),
		   layer_rate(512, 288, 64, 0.5));
	return 0;
}
