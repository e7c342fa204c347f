/*
 * blas_info.c
 *    mtms_blas_info(): the BLAS in use, how its kernels were chosen, the
 *    CPU, and the sgemm rate at the towers' shapes (measured once per
 *    backend, on the first call).
 */
#include "mtms.h"

#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "blas.h"
#include "blas_state.h"

#define NCOLS 18

static double measured_gflops = -1;

static double
seconds_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * GFLOP/s of a dense layer's three products on 256-row batches (forward,
 * weight gradient, input gradient), over the towers' layers: phase 1
 * (6 fields x 8 = 48 inputs, hidden 64, 32, 1) and the fine-tune's first
 * layer (288 joined inputs).
 */
static double
measure_gflops(void)
{
	static const int layers[][2] = {{48, 64}, {64, 32}, {32, 1}, {288, 64}};
	const int	B = 256;
	double		flops = 0,
				secs = 0;

	for (int l = 0; l < (int) lengthof(layers); l++)
	{
		int			nin = layers[l][0],
					nout = layers[l][1];
		float	   *x = palloc0(sizeof(float) * B * nin);
		float	   *w = palloc0(sizeof(float) * nout * nin);
		float	   *y = palloc0(sizeof(float) * B * nout);
		float	   *gw = palloc0(sizeof(float) * nout * nin);
		float	   *gx = palloc0(sizeof(float) * B * nin);
		double		t0 = seconds_now(),
					t;
		int			reps = 0;

		for (int i = 0; i < B * nin; i++)
			x[i] = (float) ((i * 37) % 101) / 101.0f - 0.5f;
		for (int i = 0; i < nout * nin; i++)
			w[i] = (float) ((i * 53) % 97) / 97.0f - 0.5f;
		do
		{
			for (int r = 0; r < 8; r++)
			{
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, nout, nin,
							1.0f, x, nin, w, nin, 0.0f, y, nout);
				cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, nin, B,
							1.0f, y, nout, x, nin, 1.0f, gw, nin);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, nin, nout,
							1.0f, y, nout, w, nin, 0.0f, gx, nin);
			}
			reps += 8;
			t = seconds_now() - t0;
			CHECK_FOR_INTERRUPTS();
		} while (t < 0.04);
		flops += 3.0 * 2.0 * B * nin * nout * reps;
		secs += t;
		pfree(x);
		pfree(w);
		pfree(y);
		pfree(gw);
		pfree(gx);
	}
	return flops / secs / 1e9;
}

/* "model name" of the first CPU, and the vector features mtms cares about. */
static void
read_cpuinfo(char *model, size_t len, ArrayBuildState **features)
{
	static const char *const wanted[] = {"sse4_2", "avx", "avx2", "fma", "avx512f",
		"avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16",
	"amx_tile", "amx_bf16", "amx_int8", "asimd", "sve"};
	FILE	   *f = fopen("/proc/cpuinfo", "r");
	char		line[8192];
	bool		have_model = false,
				have_flags = false;

	strlcpy(model, "unknown", len);
	*features = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) && !(have_model && have_flags))
	{
		char	   *colon = strchr(line, ':');

		if (colon == NULL)
			continue;
		if (!have_model && strncmp(line, "model name", 10) == 0)
		{
			strlcpy(model, colon + 2, len);
			model[strcspn(model, "\n")] = '\0';
			have_model = true;
		}
		else if (!have_flags && (strncmp(line, "flags", 5) == 0 || strncmp(line, "Features", 8) == 0))
		{
			for (int i = 0; i < (int) lengthof(wanted); i++)
			{
				char		pat[64];

				snprintf(pat, sizeof(pat), " %s ", wanted[i]);
				line[strcspn(line, "\n")] = ' ';
				if (strstr(colon, pat))
					accumArrayResult(*features, CStringGetTextDatum(wanted[i]), false,
									 TEXTOID, CurrentMemoryContext);
			}
			have_flags = true;
		}
	}
	fclose(f);
}

static const char *
class_name(int c)
{
	static const char *const names[] = {"sse", "avx", "avx2", "avx512"};

	return names[Max(0, Min(c, 3))];
}

/*
 * mtms_blas_info() -> one row: library, version, config, path, kernels,
 * kernels_source, openblas_choice, rejected_kernels, environment_coretype,
 * cpu, cpu_family, cpu_model, cpu_class, cpu_features, threads,
 * check_passed, check_max_error, gflops.
 */
PG_FUNCTION_INFO_V1(mtms_blas_info);
Datum
mtms_blas_info(PG_FUNCTION_ARGS)
{
	const MtmsBlasState *s = &mtms_blas_state;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[NCOLS];
	bool		nulls[NCOLS] = {0};
	char		cpu[256];
	ArrayBuildState *features;
	const char *version = s->config;
	int			(*threads) (void);

	mtms_blas_ensure();
	InitMaterializedSRF(fcinfo, 0);
	if (measured_gflops < 0)
		measured_gflops = measure_gflops();
	read_cpuinfo(cpu, sizeof(cpu), &features);
	if (strncmp(version, "OpenBLAS ", 9) == 0)
		version += 9;
	threads = (int (*) (void)) dlsym(s->handle, "openblas_get_num_threads");

	values[0] = CStringGetTextDatum("OpenBLAS");
	values[1] = CStringGetTextDatum(pnstrdup(version, strcspn(version, " ")));
	values[2] = CStringGetTextDatum(s->config);
	values[3] = CStringGetTextDatum(s->path);
	values[4] = CStringGetTextDatum(s->kernels);
	values[5] = CStringGetTextDatum(s->source ? s->source : "");
	values[6] = CStringGetTextDatum(s->openblas_choice);
	values[7] = CStringGetTextDatum(s->rejected);
	nulls[7] = s->rejected[0] == '\0';
	values[8] = CStringGetTextDatum(s->user_coretype);
	nulls[8] = s->user_coretype[0] == '\0';
	values[9] = CStringGetTextDatum(cpu);
	values[10] = Int32GetDatum(s->cpu_family);
	values[11] = Int32GetDatum(s->cpu_model);
	nulls[10] = s->cpu_family < 0;
	nulls[11] = s->cpu_model < 0;
	values[12] = CStringGetTextDatum(class_name(s->cpu_class));
	values[13] = makeArrayResult(features, CurrentMemoryContext);
	values[14] = Int32GetDatum(threads ? threads() : 1);
	values[15] = BoolGetDatum(s->check_passed);
	values[16] = Float8GetDatum(s->check_max_error);
	values[17] = Float8GetDatum(measured_gflops);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
