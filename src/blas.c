/*
 * blas.c
 *    Loading OpenBLAS with the best kernels this CPU can run (see blas.h).
 *
 * OpenBLAS built with DYNAMIC_ARCH (Debian's) picks a kernel set when it is
 * loaded, from OPENBLAS_CORETYPE or from its table of known CPUs; a CPU it
 * does not know gets a generic set (Prescott: SSE3), 3-6x slower on
 * AVX-512 hardware.  So mtms loads it itself:
 *
 *  1. OPENBLAS_CORETYPE set in the server's environment: the user's choice,
 *     always kept.
 *  2. Otherwise load it and ask which kernels it chose.  When they are of a
 *     lower class than the CPU supports (e.g. Prescott on AVX-512), unload
 *     it, set OPENBLAS_CORETYPE to the set for the CPU's class (SkylakeX or
 *     Cooperlake, Haswell, Sandybridge) and load it again.
 *  3. Check the kernels in use against a plain double-precision product on
 *     the tower shapes and on awkward ones (one row, odd sizes, every
 *     transpose; sgemv, sdot): older OpenBLAS builds compute wrong results
 *     with some kernel sets on some processors.  If mtms's choice fails,
 *     go back to OpenBLAS's own.
 *
 * Whatever cannot be done (OpenBLAS already loaded into the process by
 * something else, a failed check) keeps what works and raises one WARNING
 * per backend whose HINT names the server environment setting.
 *
 * mtms.blas_test_hook (superuser; set before the library loads, e.g. SET
 * then the first mtms call of a new session) lets tests take the paths a
 * machine may not offer: 'unknown_cpu' loads OpenBLAS as if it did not
 * know this CPU (with Prescott kernels), 'user_prescott' as if the server's
 * environment set OPENBLAS_CORETYPE=Prescott, 'fail_check' makes the check
 * of mtms's choice fail.  Several may be given, separated by commas.
 */
#define MTMS_BLAS_NO_MACROS
#include "mtms.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "blas.h"

#include "access/parallel.h"
#include "blas_state.h"

#ifndef MTMS_OPENBLAS_LIB
#define MTMS_OPENBLAS_LIB "libopenblas.so.0"
#endif

MtmsBlasState mtms_blas_state;
static bool blas_loaded = false;
char	   *mtms_blas_test_hook = NULL;

typedef char *(*corename_fn) (void);
typedef void (*set_threads_fn) (int);

static bool
hook(const char *what)
{
	return mtms_blas_test_hook && strstr(mtms_blas_test_hook, what) != NULL;
}

/* ---------------------------------------------------------------------
 * Kernel classes
 * ---------------------------------------------------------------------
 */

/* The vector class of an OpenBLAS x86 kernel set (0: SSE or generic). */
static int
kernel_class(const char *core)
{
	static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
	static const char *const avx2[] = {"Haswell", "Zen", "Excavator"};
	static const char *const avx[] = {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller"};

	for (int i = 0; i < (int) lengthof(avx512); i++)
		if (pg_strcasecmp(core, avx512[i]) == 0)
			return MTMS_CPU_AVX512;
	for (int i = 0; i < (int) lengthof(avx2); i++)
		if (pg_strcasecmp(core, avx2[i]) == 0)
			return MTMS_CPU_AVX2;
	for (int i = 0; i < (int) lengthof(avx); i++)
		if (pg_strcasecmp(core, avx[i]) == 0)
			return MTMS_CPU_AVX;
	return MTMS_CPU_BASE;
}

/* What this CPU (and its OS) can run, and the kernel set for that class. */
static void
read_cpu(MtmsBlasState *s)
{
	s->cpu_class = MTMS_CPU_BASE;
	s->cpu_family = s->cpu_model = -1;
	s->cpu_bf16 = false;
#if defined(__x86_64__) || defined(__i386__)
	{
		unsigned int eax,
					ebx,
					ecx,
					edx;

		__builtin_cpu_init();
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
			__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
			__builtin_cpu_supports("avx512cd"))
			s->cpu_class = MTMS_CPU_AVX512;
		else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
			s->cpu_class = MTMS_CPU_AVX2;
		else if (__builtin_cpu_supports("avx"))
			s->cpu_class = MTMS_CPU_AVX;
		s->cpu_bf16 = __builtin_cpu_supports("avx512bf16");
		if (__get_cpuid(1, &eax, &ebx, &ecx, &edx))
		{
			int			fam = (eax >> 8) & 0xf;
			int			mod = (eax >> 4) & 0xf;

			if (fam == 0xf)
				fam += (eax >> 20) & 0xff;
			if (fam == 0x6 || fam >= 0xf)
				mod += ((eax >> 16) & 0xf) << 4;
			s->cpu_family = fam;
			s->cpu_model = mod;
		}
	}
#endif
}

static const char *
kernels_for_class(const MtmsBlasState *s)
{
	switch (s->cpu_class)
	{
		case MTMS_CPU_AVX512:
			return s->cpu_bf16 ? "Cooperlake" : "SkylakeX";
		case MTMS_CPU_AVX2:
			return "Haswell";
		case MTMS_CPU_AVX:
			return "Sandybridge";
		default:
			return NULL;
	}
}

/* ---------------------------------------------------------------------
 * The check against a plain product
 * ---------------------------------------------------------------------
 */

/* Deterministic values in [-1, 1). */
static void
fill(float *v, int n, uint32 seed)
{
	uint32		x = seed * 2654435761u + 1;

	for (int i = 0; i < n; i++)
	{
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		v[i] = (float) ((double) (x & 0xffffff) / 8388608.0 - 1.0);
	}
}

#define A_(i, k) (ta ? a[(k) * lda + (i)] : a[(i) * lda + (k)])
#define B_(k, j) (tb ? b[(j) * ldb + (k)] : b[(k) * ldb + (j)])

/* The relative error of c(i, j) against a double-precision product. */
static double
entry_error(const float *a, const float *b, const float *c, const float *c0,
			int n, int k, int lda, int ldb, bool ta, bool tb, int i, int j)
{
	double		ref = 0.5 * c0[i * n + j];
	double		mag = fabs(ref);

	for (int q = 0; q < k; q++)
	{
		double		p = 0.75 * (double) A_(i, q) * (double) B_(q, j);

		ref += p;
		mag += fabs(p);
	}
	return fabs(c[i * n + j] - ref) / (mag + 1e-6);
}

/*
 * One row-major sgemm of the given shape (C = 0.75 op(A) op(B) + 0.5 C)
 * against a double reference: every entry of small results, the corners,
 * middles and 32 scattered entries of large ones (a kernel that computes
 * wrongly, at an edge or in its main loop, is wrong in many entries), so
 * that the check costs about a millisecond when a backend loads mtms.
 */
static bool
check_sgemm(const MtmsBlas *blas, int m, int n, int k, bool ta, bool tb,
			double *worst)
{
	int			lda = ta ? m : k;
	int			ldb = tb ? k : n;
	float	   *a = palloc(sizeof(float) * m * k);
	float	   *b = palloc(sizeof(float) * k * n);
	float	   *c = palloc(sizeof(float) * m * n);
	float	   *c0 = palloc(sizeof(float) * m * n);
	double		err = 0;

	fill(a, m * k, m * 7 + k);
	fill(b, k * n, n * 13 + k);
	fill(c0, m * n, m + n);
	memcpy(c, c0, sizeof(float) * m * n);
	blas->sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
				m, n, k, 0.75f, a, lda, b, ldb, 0.5f, c, n);
	if (m * n <= 256)
	{
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++)
				err = Max(err, entry_error(a, b, c, c0, n, k, lda, ldb, ta, tb, i, j));
	}
	else
	{
		int			rows[3] = {0, m / 2, m - 1};
		int			cols[3] = {0, n / 2, n - 1};
		uint32		x = (uint32) (m * 31 + n * 17 + k);

		for (int r = 0; r < 3; r++)
			for (int q = 0; q < 3; q++)
				err = Max(err, entry_error(a, b, c, c0, n, k, lda, ldb, ta, tb, rows[r], cols[q]));
		for (int e = 0; e < 32; e++)
		{
			x = x * 1664525u + 1013904223u;
			err = Max(err, entry_error(a, b, c, c0, n, k, lda, ldb, ta, tb,
									   (int) ((x >> 8) % (uint32) m),
									   (int) ((x >> 20) % (uint32) n)));
		}
	}
	pfree(a);
	pfree(b);
	pfree(c);
	pfree(c0);
	*worst = Max(*worst, err);
	return err <= 1e-5;
}

static bool
check_sgemv_sdot(const MtmsBlas *blas, int m, int n, double *worst)
{
	float	   *a = palloc(sizeof(float) * m * n);
	float	   *x = palloc(sizeof(float) * Max(m, n));
	float	   *y = palloc(sizeof(float) * Max(m, n));
	bool		ok = true;

	fill(a, m * n, m + 3 * n);
	fill(x, Max(m, n), 5);
	for (int trans = 0; trans < 2 && ok; trans++)
	{
		int			rows = trans ? n : m;
		int			cols = trans ? m : n;

		memset(y, 0, sizeof(float) * Max(m, n));
		blas->sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, 1.0f, a, n,
					x, 1, 0.0f, y, 1);
		for (int i = 0; i < rows; i++)
		{
			double		ref = 0,
						mag = 0,
						err;

			for (int j = 0; j < cols; j++)
			{
				double		p = (double) (trans ? a[j * n + i] : a[i * n + j]) * x[j];

				ref += p;
				mag += fabs(p);
			}
			err = fabs(y[i] - ref) / (mag + 1e-6);
			*worst = Max(*worst, err);
			if (!(err <= 1e-5))
				ok = false;
		}
	}
	{
		double		ref = 0,
					mag = 0,
					err;
		float		d = blas->sdot(n, a, 1, x, 1);

		for (int j = 0; j < n; j++)
			ref += (double) a[j] * x[j], mag += fabs((double) a[j] * x[j]);
		err = fabs(d - ref) / (mag + 1e-6);
		*worst = Max(*worst, err);
		if (!(err <= 1e-5))
			ok = false;
	}
	pfree(a);
	pfree(x);
	pfree(y);
	return ok;
}

bool
mtms_blas_check(const MtmsBlas *blas, double *max_rel_error)
{
	/* the towers' products (256-row batches, phase 1 and fine-tune inputs) */
	static const int shapes[][3] = {
		{256, 64, 48}, {256, 32, 64}, {256, 1, 32}, {256, 64, 288},
		{64, 48, 256}, {32, 64, 256},
		/* and awkward ones */
		{1, 1, 1}, {1, 64, 48}, {7, 13, 5}, {33, 17, 129}, {3, 1, 1000}, {17, 31, 1}
	};
	bool		ok = true;
	double		worst = 0;

	for (int i = 0; i < (int) lengthof(shapes); i++)
		for (int t = 0; t < 4; t++)
			ok &= check_sgemm(blas, shapes[i][0], shapes[i][1], shapes[i][2],
							  (t & 1) != 0, (t & 2) != 0, &worst);
	ok &= check_sgemv_sdot(blas, 64, 48, &worst);
	ok &= check_sgemv_sdot(blas, 1, 7, &worst);
	ok &= check_sgemv_sdot(blas, 33, 129, &worst);
	if (max_rel_error)
		*max_rel_error = worst;
	return ok;
}

/* ---------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------
 */

static void *
open_blas(MtmsBlasState *s, int flags)
{
	void	   *h = dlopen(s->path, flags);

	if (h == NULL && !(flags & RTLD_NOLOAD))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("could not load OpenBLAS \"%s\": %s", s->path, dlerror()),
				 errhint("Install Debian's libopenblas0-serial package.")));
	return h;
}

static void *
symbol(void *h, const char *name)
{
	void	   *p = dlsym(h, name);

	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("OpenBLAS has no function %s", name)));
	return p;
}

/* Take the loaded library's functions and facts. */
static void
adopt(MtmsBlasState *s, void *h)
{
	corename_fn corename = (corename_fn) symbol(h, "openblas_get_corename");
	corename_fn config = (corename_fn) symbol(h, "openblas_get_config");

	s->handle = h;
	mtms_blas.sgemm = (mtms_sgemm_fn) symbol(h, "cblas_sgemm");
	mtms_blas.sgemv = (mtms_sgemv_fn) symbol(h, "cblas_sgemv");
	mtms_blas.sdot = (mtms_sdot_fn) symbol(h, "cblas_sdot");
	strlcpy(s->kernels, corename(), sizeof(s->kernels));
	strlcpy(s->config, config(), sizeof(s->config));

	/*
	 * We load the serial build; should another one be found, keep it to one
	 * thread anyway: PostgreSQL's workers give the parallelism, and no BLAS
	 * thread may ever call back into PostgreSQL.
	 */
	((set_threads_fn) symbol(h, "openblas_set_num_threads")) (1);
}

/* Unload and load again with OPENBLAS_CORETYPE = core (NULL: unset). */
static bool
reload(MtmsBlasState *s, const char *core)
{
	dlclose(s->handle);
	s->handle = NULL;
	if (open_blas(s, RTLD_NOW | RTLD_NOLOAD) != NULL)
		return false;			/* someone else holds it: cannot switch */
	if (core)
		setenv("OPENBLAS_CORETYPE", core, 1);
	else
		unsetenv("OPENBLAS_CORETYPE");
	adopt(s, open_blas(s, RTLD_NOW | RTLD_LOCAL));
	return true;
}

static bool
check_in_use(MtmsBlasState *s)
{
	s->check_passed = mtms_blas_check(&mtms_blas, &s->check_max_error);
	return s->check_passed;
}

static void
warn(const char *what)
{
	/* a parallel worker loads what its leader loaded, which has said so */
	if (IsParallelWorker())
		return;
	ereport(WARNING,
			(errmsg("mtms: %s", what),
			 errhint("Set OPENBLAS_CORETYPE for the server, in /etc/postgresql/%s/<cluster>/environment "
					 "on Debian or with Environment= in the server's systemd unit, and restart it.",
					 PG_MAJORVERSION)));
}

static void
blas_load(void)
{
	MtmsBlasState *s = &mtms_blas_state;
	const char *user = getenv("OPENBLAS_CORETYPE");
	const char *better;
	void	   *h;

	memset(s, 0, sizeof(*s));
	strlcpy(s->path, MTMS_OPENBLAS_LIB, sizeof(s->path));
	read_cpu(s);
	if (hook("user_prescott") && user == NULL)
		setenv("OPENBLAS_CORETYPE", user = "Prescott", 1);
	if (user)
		strlcpy(s->user_coretype, user, sizeof(s->user_coretype));

	/* 0. someone else loaded it first: it is what it is */
	h = open_blas(s, RTLD_NOW | RTLD_NOLOAD);
	if (h)
	{
		adopt(s, h);
		strlcpy(s->openblas_choice, s->kernels, sizeof(s->openblas_choice));
		s->source = "already loaded in this process";
		if (!check_in_use(s))
			warn(psprintf("OpenBLAS kernels %s fail mtms's check of their products", s->kernels));
		else if (!user && kernels_for_class(s) && kernel_class(s->kernels) < s->cpu_class)
			warn(psprintf("OpenBLAS was loaded before mtms with generic kernels (%s) on a CPU that runs %s",
						  s->kernels, kernels_for_class(s)));
		return;
	}

	/* 1. the user's choice */
	if (hook("unknown_cpu") && user == NULL)
		setenv("OPENBLAS_CORETYPE", "Prescott", 1);
	adopt(s, open_blas(s, RTLD_NOW | RTLD_LOCAL));
	strlcpy(s->openblas_choice, s->kernels, sizeof(s->openblas_choice));
	if (user)
	{
		s->source = "OPENBLAS_CORETYPE in the server's environment";
		if (!check_in_use(s))
			warn(psprintf("OpenBLAS kernels %s (OPENBLAS_CORETYPE=%s) fail mtms's check of their products",
						  s->kernels, user));
		return;
	}

	/* 2. OpenBLAS's own choice, unless it fell back below the CPU's class */
	better = kernels_for_class(s);
	s->source = "OpenBLAS's choice";
	if (better && kernel_class(s->kernels) < s->cpu_class)
	{
		if (!reload(s, better))
		{
			warn(psprintf("OpenBLAS chose generic kernels (%s) on a CPU that runs %s, and cannot be reloaded",
						  s->openblas_choice, better));
			adopt(s, open_blas(s, RTLD_NOW | RTLD_LOCAL));
		}
		else if (check_in_use(s) && !hook("fail_check"))
			s->source = "chosen by mtms";
		else
		{
			char	   *what = psprintf("OpenBLAS kernels %s fail mtms's check of their products; "
										"using OpenBLAS's own choice %s",
										s->kernels, s->openblas_choice);

			strlcpy(s->rejected, s->kernels, sizeof(s->rejected));
			/* back to what OpenBLAS chose (the hook's Prescott, too) */
			reload(s, hook("unknown_cpu") ? "Prescott" : NULL);
			s->source = "OpenBLAS's choice (mtms's choice failed the check)";
			warn(what);
		}
		unsetenv("OPENBLAS_CORETYPE");
	}
	else
		unsetenv("OPENBLAS_CORETYPE");	/* only the hook may have set it */
	if (strcmp(s->source, "chosen by mtms") != 0 && !check_in_use(s))
		warn(psprintf("OpenBLAS kernels %s fail mtms's check of their products", s->kernels));
}

void
mtms_blas_load(void)
{
	blas_load();
	blas_loaded = true;
}

void
mtms_blas_ensure(void)
{
	if (!blas_loaded)
		mtms_blas_load();
}

/*
 * Until a backend has loaded the BLAS, the table points here: the first
 * product loads it (reading mtms.blas_test_hook and the environment then)
 * and goes on with the real function.
 */
static void
lazy_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
		   const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
		   const blasint k, const float alpha, const float *a, const blasint lda,
		   const float *b, const blasint ldb, const float beta, float *c,
		   const blasint ldc)
{
	mtms_blas_ensure();
	mtms_blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void
lazy_sgemv(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
		   const blasint m, const blasint n, const float alpha, const float *a,
		   const blasint lda, const float *x, const blasint incx, const float beta,
		   float *y, const blasint incy)
{
	mtms_blas_ensure();
	mtms_blas.sgemv(order, ta, m, n, alpha, a, lda, x, incx, beta, y, incy);
}

static float
lazy_sdot(const blasint n, const float *x, const blasint incx, const float *y,
		  const blasint incy)
{
	mtms_blas_ensure();
	return mtms_blas.sdot(n, x, incx, y, incy);
}

MtmsBlas	mtms_blas = {lazy_sgemm, lazy_sgemv, lazy_sdot};

const char *
mtms_blas_summary(void)
{
	MtmsBlasState *s = &mtms_blas_state;
	const char *version;

	mtms_blas_ensure();
	version = s->config;

	if (strncmp(version, "OpenBLAS ", 9) == 0)
		version += 9;
	return psprintf("OpenBLAS %.*s, %s kernels (%s)",
					(int) strcspn(version, " "), version, s->kernels, s->source);
}
