/*
 * synthetic.c
 *    mtms_synthetic_samples(n, seed, options): deterministic synthetic ad
 *    impressions with their true click and conversion probabilities.
 *
 * Generative model
 * ----------------
 * A "universe" is built once per call from options.universe_seed (default:
 * the seed).  Effect sizes below are standard deviations on the logit scale.
 *
 *  - Users 1..U (default 20000), Zipf-like: P(rank r) ~ (r + U/2000)^-1.2;
 *    ads 1..A (default 2000): P ~ (r + A/200)^-1.1.  Popularity ranks map
 *    to the emitted ids through a random permutation.
 *  - Each ad has one advertiser (1..V, default 200, P ~ 1/(r + V/20)) and
 *    1-3 distinct tags (40/40/20 %) out of T (default 100, P ~ 1/(r + T/20));
 *    every impression of the ad carries its tags (a multi-valued field).
 *  - Latent vectors of K = 4 coordinates, each N(0,1):
 *      user click interest      x_u, shared by all scenes, plus a scene
 *                               deviation 0.5 d_{u,s}
 *      user conversion interest y_u = 0.5 x_u + sqrt(.75) z_u, plus 0.5 e_{u,s}
 *      tag vectors              tau_t (click), kappa_t (conversion)
 *      ad click vector          v_a = sqrt(.5) o_a + sqrt(.5) sum(tau_t)/sqrt(m)
 *      ad conversion vector     w_a = 0.5 v_a + sqrt(.75) (sqrt(.5) o'_a
 *                                     + sqrt(.5) sum(kappa_t)/sqrt(m))
 *    so click and conversion interests are correlated only partly.
 *  - Scalars: user click propensity b_{u,s} = 0.55 b_u + 0.2 N (b_u shared),
 *    user conversion propensity g_{u,s} = 0.4 g_u + 0.15 N with
 *    corr(b_u, g_u) = 0.3; ad quality q_a (0.5); ad conversion quality
 *    r_a = 0.3 q_a + 0.4 N; advertiser quality (0.3) and conversion quality
 *    (0.55).
 *  - Per scene s: a traffic weight; a diurnal traffic curve over hours 0-23
 *    and a mix over devices 1-3 (device 1 the most common); hour effects
 *    A cos(2 pi (h - phi) / 24) with A in [.1, .25] (CTR) and [.05, .15]
 *    (CVR); device effects N(0, .2^2) (CTR) and N(0, .35^2) (CVR);
 *    interaction strengths alpha_s = 0.65 (CTR) and 0.6 (CVR) times a
 *    factor in [.9, 1.1]; intercepts beta_s, gamma_s calibrated on a private
 *    sample of 8192 impressions so that the scene's mean CTR, and its mean
 *    CVR among clicks, hit their targets: ctr (cvr) times a scene factor
 *    (search 1.25 / 1.2, feeds 0.75 / 0.8, video 1.0 / 1.1, other scenes
 *    uniform in [.75, 1.25]), factors normalised to a traffic-weighted mean
 *    of 1.  Defaults: search 60 % of traffic, feeds 36 %, video 4 %;
 *    other scene lists get equal weights unless scene_weights is given.
 *  - Per slot (day) t and scene: a centred random walk of both intercepts,
 *    steps N(0, .03^2).
 *
 * Row i (0-based) draws, with a PRNG seeded from a hash of (seed, i) only,
 * scene ~ traffic weights, user and ad ~ Zipf, hour and device ~ the
 * scene's mix; its slot is t = floor(i * slots / n) + 1 (rows come in day
 * order), and
 *
 *   logit p_ctr = beta_s + drift_{t,s} + hour_s(h) + device_s(d) + b_{u,s}
 *                 + q_a + q_adv + alpha_s <x_u + .5 d_{u,s}, v_a> / sqrt(K)
 *   logit p_cvr = gamma_s + drift'_{t,s} + hour'_s(h) + device'_s(d) + g_{u,s}
 *                 + r_a + r_adv + alpha'_s <y_u + .5 e_{u,s}, w_a> / sqrt(K)
 *
 *   click ~ Bernoulli(p_ctr); conversion ~ Bernoulli(p_cvr) if clicked,
 *   else false.  p_cvr is P(conversion | click), reported on every row.
 *
 * The CTR logit has a standard deviation of about 1.1: ~60 % of its
 * variance is additive (field biases), the rest a user x ad interaction.
 * Oracle AUCs are about 0.78 (CTR) and 0.76 (CVR among clicks).  Clicks are
 * rare, so a model sees few per user: it learns mostly the biases, and the
 * user effects, 80-90 % shared across scenes, are what a small scene can
 * borrow from the large ones.
 */
#include "mtms.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "progress.h"
#include "nodes/nodeFuncs.h"
#include "nodes/supportnodes.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "catalog.h"

#define SYN_K				4		/* latent dimension */
#define SYN_NDEVICES		3
#define SYN_NHOURS			24
#define SYN_MAX_TAGS_PER_AD 3
#define SYN_CALIB_ROWS		8192	/* per scene, to calibrate intercepts */
#define SYN_MAX_ROWS		INT64CONST(10000000000)
#define SYN_MAX_UNIVERSE	((Size) 1 << 30)	/* bytes of user parameters */

/* Effect sizes (standard deviations on the logit scale). */
#define SYN_USER_DEV		0.5		/* scene deviation of interest vectors */
#define SYN_ALPHA_CTR		0.65	/* user x ad interaction, click */
#define SYN_ALPHA_CVR		0.6		/* user x ad interaction, conversion */
#define SYN_USER_B			0.55	/* user click propensity */
#define SYN_USER_B_DEV		0.2		/* its scene deviation */
#define SYN_USER_G			0.4		/* user conversion propensity */
#define SYN_USER_G_DEV		0.15	/* its scene deviation */
#define SYN_USER_BG_CORR	0.3		/* correlation of the two propensities */
#define SYN_AD_Q			0.5		/* ad click quality */
#define SYN_AD_R			0.4		/* ad conversion quality (own part) */
#define SYN_AD_QR			0.3		/* share of click quality in it */
#define SYN_ADV_Q			0.3		/* advertiser click quality */
#define SYN_ADV_R			0.55	/* advertiser conversion quality */
#define SYN_USER_ZIPF		1.2		/* P(rank r) ~ (r + offset)^-exponent */
#define SYN_USER_ZIPF_OFFSET 0.0005	/* times the number of users */
#define SYN_AD_ZIPF			1.1
#define SYN_AD_ZIPF_OFFSET	0.005
#define SYN_DEVICE_CTR		0.2
#define SYN_DEVICE_CVR		0.35
#define SYN_DRIFT_STEP		0.03	/* per-slot random walk of intercepts */

/* Default scenes: name, traffic weight, CTR factor, CVR factor. */
static const struct
{
	const char *name;
	double		weight;
	double		ctr_factor;
	double		cvr_factor;
}			default_scenes[] =
{
	{"search", 0.60, 1.25, 1.20},
	{"feeds", 0.36, 0.75, 0.80},
	{"video", 0.04, 1.00, 1.10},
};

#define N_DEFAULT_SCENES lengthof(default_scenes)

static const char *const known_options =
"scenes, scene_weights, users, ads, advertisers, tags, ctr, cvr, slots, universe_seed";

typedef struct SynOptions
{
	int			nscenes;
	char	  **scenes;
	double	   *weights;		/* NULL: default (or equal) weights */
	int64		users;
	int64		ads;
	int64		advertisers;
	int64		tags;
	double		ctr;
	double		cvr;
	int64		slots;
	int32		universe_seed;	/* default: the seed */
} SynOptions;

/* Per-scene parameters. */
typedef struct SynScene
{
	text	   *name;			/* as emitted */
	double		ctr_target;
	double		cvr_target;
	double		beta;			/* CTR intercept */
	double		gamma;			/* CVR intercept */
	double		alpha_ctr;		/* interaction strengths */
	double		alpha_cvr;
	double		hour_cdf[SYN_NHOURS];
	double		device_cdf[SYN_NDEVICES];
	float		hour_ctr[SYN_NHOURS];
	float		hour_cvr[SYN_NHOURS];
	float		device_ctr[SYN_NDEVICES];
	float		device_cvr[SYN_NDEVICES];
	float	   *user_click;		/* [U][K], alpha_s / sqrt(K) folded in */
	float	   *user_conv;		/* [U][K] */
	float	   *user_b;			/* [U] click propensity in this scene */
	float	   *user_g;			/* [U] conversion propensity */
} SynScene;

typedef struct SynUniverse
{
	SynOptions	o;
	int			S;
	int64		U,
				A,
				V,
				T;
	double	   *scene_cdf;		/* [S] */
	SynScene   *scenes;			/* [S] */
	double	   *user_cdf;		/* [U] Zipf over popularity ranks */
	int32	   *user_id;		/* [U] rank -> emitted id - 1 */
	double	   *ad_cdf;			/* [A] */
	int32	   *ad_id;			/* [A] */
	float	   *ad_v;			/* [A][K] click vector */
	float	   *ad_w;			/* [A][K] conversion vector */
	float	   *ad_q;			/* [A] */
	float	   *ad_r;			/* [A] */
	int32	   *ad_adv;			/* [A] advertiser rank */
	uint8	   *ad_ntags;		/* [A] */
	int32	   *ad_tags;		/* [A][3] tag ranks */
	int32	   *adv_id;			/* [V] */
	float	   *adv_q;			/* [V] */
	float	   *adv_r;			/* [V] */
	int32	   *tag_id;			/* [T] */
	float	   *drift_ctr;		/* [slots][S] */
	float	   *drift_cvr;		/* [slots][S] */
} SynUniverse;

/* What the per-call state of the SRF holds. */
typedef struct SynCall
{
	SynUniverse *u;
	int64		n;
	uint64		seed_key;
} SynCall;

/* One drawn impression (before the Bernoulli draws). */
typedef struct SynDraw
{
	int			scene;
	int64		user;			/* rank */
	int64		ad;				/* rank */
	int			hour;
	int			device;			/* 0-based */
	double		ctr_logit;		/* without intercept and drift */
	double		cvr_logit;
} SynDraw;

/* ---------------------------------------------------------------------
 * Random numbers
 * ---------------------------------------------------------------------
 */

static inline uint64
mix64(uint64 x)
{
	/* splitmix64 finalizer */
	x += UINT64CONST(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64CONST(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64CONST(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static inline double
gauss(pg_prng_state *st)
{
	double		u1 = pg_prng_double(st);
	double		u2 = pg_prng_double(st);

	return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static inline double
uniform(pg_prng_state *st, double lo, double hi)
{
	return lo + (hi - lo) * pg_prng_double(st);
}

/* First index whose cdf value exceeds x (cdf[n-1] == 1). */
static inline int64
cdf_draw(const double *cdf, int64 n, double x)
{
	int64		lo = 0,
				hi = n - 1;

	while (lo < hi)
	{
		int64		mid = lo + (hi - lo) / 2;

		if (cdf[mid] > x)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static inline double
sigmoid(double x)
{
	return 1.0 / (1.0 + exp(-x));
}

/* Normalise weights[0..n-1] into a cdf, in place. */
static void
make_cdf(double *w, int64 n)
{
	double		total = 0.0;
	double		acc = 0.0;
	int64		i;

	for (i = 0; i < n; i++)
		total += w[i];
	for (i = 0; i < n; i++)
	{
		acc += w[i];
		w[i] = acc / total;
	}
	w[n - 1] = 1.0;
}

static double *
zipf_cdf(int64 n, double offset, double exponent)
{
	double	   *cdf = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(double) * n);
	int64		r;

	for (r = 0; r < n; r++)
		cdf[r] = pow((double) (r + 1) + offset, -exponent);
	make_cdf(cdf, n);
	return cdf;
}

/* A random permutation of 0..n-1 (Fisher-Yates). */
static int32 *
permutation(pg_prng_state *st, int64 n)
{
	int32	   *p = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * n);
	int64		i;

	for (i = 0; i < n; i++)
		p[i] = (int32) i;
	for (i = n - 1; i > 0; i--)
	{
		int64		j = (int64) pg_prng_uint64_range(st, 0, (uint64) i);
		int32		t = p[i];

		p[i] = p[j];
		p[j] = t;
	}
	return p;
}

static float *
alloc_floats(int64 n)
{
	return MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * n);
}

/* ---------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------
 */

static const char *
jbv_type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "an unexpected JSON value";
	}
}

static double
option_number(const char *key, const JsonbValue *v)
{
	Numeric		num;
	double		d;

	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be a number, not %s", key, jbv_type_name(v))));
	num = v->val.numeric;
	if (numeric_is_nan(num) || numeric_is_inf(num))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be a finite number", key)));
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(num)));
	return d;
}

static int64
option_int(const char *key, const JsonbValue *v, int64 min, int64 max)
{
	double		d = option_number(key, v);

	if (d != floor(d) || d < (double) min || d > (double) max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": %s", key,
						DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric)))),
				 errdetail("\"%s\" must be an integer between " INT64_FORMAT " and " INT64_FORMAT ".",
						   key, min, max)));
	return (int64) d;
}

static double
option_rate(const char *key, const JsonbValue *v, double max)
{
	double		d = option_number(key, v);

	if (!(d > 0.0 && d <= max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": %s", key,
						DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric)))),
				 errdetail("\"%s\" must be a number greater than 0 and at most %g.",
						   key, max)));
	return d;
}

/* The elements of a JSON array value, palloc'd; *n receives their count. */
static JsonbValue *
option_array(const char *key, const JsonbValue *v, int *n)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	elem;
	JsonbValue *res;
	int			cap = 8;
	int			cnt = 0;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must be an array, not %s", key, jbv_type_name(v))));
	res = palloc(sizeof(JsonbValue) * cap);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (cnt == cap)
		{
			cap *= 2;
			res = repalloc(res, sizeof(JsonbValue) * cap);
		}
		res[cnt++] = elem;
	}
	*n = cnt;
	return res;
}

static void
parse_options(Jsonb *jb, int32 seed, SynOptions *o)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	char	   *key = NULL;
	int			nweights = -1;
	double	   *weights = NULL;
	int			i;

	/* defaults */
	o->nscenes = N_DEFAULT_SCENES;
	o->scenes = palloc(sizeof(char *) * N_DEFAULT_SCENES);
	for (i = 0; i < (int) N_DEFAULT_SCENES; i++)
		o->scenes[i] = pstrdup(default_scenes[i].name);
	o->weights = NULL;
	o->users = 20000;
	o->ads = 2000;
	o->advertisers = 200;
	o->tags = 100;
	o->ctr = 0.04;
	o->cvr = 0.10;
	o->slots = 7;
	o->universe_seed = seed;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object"),
				 errhint("Known options: %s.", known_options)));

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;

		if (strcmp(key, "scenes") == 0)
		{
			int			n;
			JsonbValue *elems = option_array(key, &v, &n);

			if (n < 1 || n > MTMS_MAX_SCENES)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"scenes\" must list 1 to %d scenes, not %d",
								MTMS_MAX_SCENES, n)));
			o->nscenes = n;
			o->scenes = palloc(sizeof(char *) * n);
			for (i = 0; i < n; i++)
			{
				int			j;

				if (elems[i].type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"scenes\" must be an array of strings; element %d is %s",
									i + 1, jbv_type_name(&elems[i]))));
				o->scenes[i] = pnstrdup(elems[i].val.string.val, elems[i].val.string.len);
				mtms_check_name(o->scenes[i], "scene");
				for (j = 0; j < i; j++)
					if (strcmp(o->scenes[j], o->scenes[i]) == 0)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("option \"scenes\" lists scene \"%s\" twice",
										o->scenes[i])));
			}
		}
		else if (strcmp(key, "scene_weights") == 0)
		{
			JsonbValue *elems = option_array(key, &v, &nweights);

			weights = palloc(sizeof(double) * Max(nweights, 1));
			for (i = 0; i < nweights; i++)
			{
				if (elems[i].type != jbvNumeric)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"scene_weights\" must be an array of numbers; element %d is %s",
									i + 1, jbv_type_name(&elems[i]))));
				weights[i] = option_number(key, &elems[i]);
				if (!(weights[i] > 0.0) || weights[i] > 1e12)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid value for option \"scene_weights\": element %d is %g",
									i + 1, weights[i]),
							 errdetail("Scene weights must be positive numbers.")));
			}
		}
		else if (strcmp(key, "users") == 0)
			o->users = option_int(key, &v, 1, 10000000);
		else if (strcmp(key, "ads") == 0)
			o->ads = option_int(key, &v, 1, 1000000);
		else if (strcmp(key, "advertisers") == 0)
			o->advertisers = option_int(key, &v, 1, 1000000);
		else if (strcmp(key, "tags") == 0)
			o->tags = option_int(key, &v, 1, 100000);
		else if (strcmp(key, "ctr") == 0)
			o->ctr = option_rate(key, &v, 0.5);
		else if (strcmp(key, "cvr") == 0)
			o->cvr = option_rate(key, &v, 0.8);
		else if (strcmp(key, "slots") == 0)
			o->slots = option_int(key, &v, 1, 100000);
		else if (strcmp(key, "universe_seed") == 0)
			o->universe_seed = (int32) option_int(key, &v, PG_INT32_MIN, PG_INT32_MAX);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\"", key),
					 errhint("Known options: %s.", known_options)));
	}

	if (weights != NULL)
	{
		if (nweights != o->nscenes)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"scene_weights\" has %d elements but there are %d scenes",
							nweights, o->nscenes),
					 errhint("Give one weight per scene, in the order of \"scenes\".")));
		o->weights = weights;
	}
}

/* Are these the default scenes (so their fixed factors apply)? */
static int
default_scene_index(const SynOptions *o, int s)
{
	int			i;

	for (i = 0; i < (int) N_DEFAULT_SCENES; i++)
		if (strcmp(o->scenes[s], default_scenes[i].name) == 0)
			return i;
	return -1;
}

/* ---------------------------------------------------------------------
 * The universe
 * ---------------------------------------------------------------------
 */

static void
draw_unit_vector(pg_prng_state *st, double *x)
{
	int			k;

	for (k = 0; k < SYN_K; k++)
		x[k] = gauss(st);
}

/*
 * Draw the context and entities of one impression of scene s (or of a scene
 * drawn from the traffic weights when s < 0), and its logits without
 * intercept and drift.
 */
static inline void
draw_impression(const SynUniverse *u, pg_prng_state *st, int s, SynDraw *d)
{
	const SynScene *sc;
	const float *uc,
			   *ucv,
			   *av,
			   *aw;
	double		dot_c = 0.0,
				dot_v = 0.0;
	int32		adv;
	int			k;

	if (s < 0)
		s = (int) cdf_draw(u->scene_cdf, u->S, pg_prng_double(st));
	sc = &u->scenes[s];
	d->scene = s;
	d->user = cdf_draw(u->user_cdf, u->U, pg_prng_double(st));
	d->ad = cdf_draw(u->ad_cdf, u->A, pg_prng_double(st));
	d->hour = (int) cdf_draw(sc->hour_cdf, SYN_NHOURS, pg_prng_double(st));
	d->device = (int) cdf_draw(sc->device_cdf, SYN_NDEVICES, pg_prng_double(st));

	uc = sc->user_click + d->user * SYN_K;
	ucv = sc->user_conv + d->user * SYN_K;
	av = u->ad_v + d->ad * SYN_K;
	aw = u->ad_w + d->ad * SYN_K;
	for (k = 0; k < SYN_K; k++)
	{
		dot_c += (double) uc[k] * av[k];
		dot_v += (double) ucv[k] * aw[k];
	}
	adv = u->ad_adv[d->ad];
	d->ctr_logit = sc->hour_ctr[d->hour] + sc->device_ctr[d->device]
		+ sc->user_b[d->user] + u->ad_q[d->ad] + u->adv_q[adv] + dot_c;
	d->cvr_logit = sc->hour_cvr[d->hour] + sc->device_cvr[d->device]
		+ sc->user_g[d->user] + u->ad_r[d->ad] + u->adv_r[adv] + dot_v;
}

/*
 * Solve for the intercept c with  sum_i w_i sigmoid(c + l_i) / sum_i w_i
 * = target (safeguarded Newton; the left side increases with c).
 */
static double
solve_intercept(const double *l, const double *w, int n, double target)
{
	double		lo = -40.0,
				hi = 40.0;
	double		c = log(target / (1.0 - target));
	double		wsum = 0.0;
	int			i,
				iter;

	for (i = 0; i < n; i++)
		wsum += w ? w[i] : 1.0;
	for (iter = 0; iter < 100; iter++)
	{
		double		f = 0.0,
					df = 0.0;
		double		next;

		for (i = 0; i < n; i++)
		{
			double		p = sigmoid(c + l[i]);
			double		wi = w ? w[i] : 1.0;

			f += wi * p;
			df += wi * p * (1.0 - p);
		}
		f = f / wsum - target;
		df /= wsum;
		if (fabs(f) < 1e-12)
			break;
		if (f > 0)
			hi = c;
		else
			lo = c;
		next = df > 0 ? c - f / df : (lo + hi) / 2;
		if (!(next > lo && next < hi))
			next = (lo + hi) / 2;
		if (fabs(next - c) < 1e-12)
			break;
		c = next;
	}
	return c;
}

static SynUniverse *
build_universe(const SynOptions *o)
{
	int32		seed = o->universe_seed;
	SynUniverse *u = palloc0(sizeof(SynUniverse));
	pg_prng_state st;
	double		x[SYN_K],
				y[SYN_K],
				z[SYN_K];
	double		inv_sqrt_k = 1.0 / sqrt((double) SYN_K);
	double		ctr_norm = 0.0,
				cvr_norm = 0.0;
	double	   *ctr_factor,
			   *cvr_factor;
	double	   *tau,
			   *kappa;
	Size		bytes;
	int64		i;
	int			s,
				k,
				t;

	u->o = *o;
	u->S = o->nscenes;
	u->U = o->users;
	u->A = o->ads;
	u->V = o->advertisers;
	u->T = o->tags;

	/* per user: cdf, id, and per scene two vectors and two propensities */
	bytes = (Size) u->U * (sizeof(double) + sizeof(int32) +
						   sizeof(float) * (Size) u->S * (2 * SYN_K + 2));
	if (bytes > SYN_MAX_UNIVERSE)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("synthetic universe of " INT64_FORMAT " users and %d scenes is too large",
						u->U, u->S),
				 errdetail("The users' parameters would take %zu MB; the limit is %zu MB.",
						   bytes >> 20, SYN_MAX_UNIVERSE >> 20),
				 errhint("Lower option \"users\" or the number of scenes.")));

	pg_prng_seed(&st, mix64(hash_combine64(UINT64CONST(0x756e697665727365),	/* "universe" */
										   (uint64) (uint32) seed)));

	/* scenes: traffic, factors, context effects */
	u->scene_cdf = palloc(sizeof(double) * u->S);
	u->scenes = palloc0(sizeof(SynScene) * u->S);
	ctr_factor = palloc(sizeof(double) * u->S);
	cvr_factor = palloc(sizeof(double) * u->S);
	for (s = 0; s < u->S; s++)
	{
		SynScene   *sc = &u->scenes[s];
		int			def = default_scene_index(o, s);
		double		traffic_peak = uniform(&st, 9.0, 22.0);
		double		ctr_peak = uniform(&st, 0.0, 24.0);
		double		cvr_peak = uniform(&st, 0.0, 24.0);
		double		ctr_amp = uniform(&st, 0.10, 0.25);
		double		cvr_amp = uniform(&st, 0.05, 0.15);
		double		dev_w[SYN_NDEVICES];
		double		alpha_ctr = SYN_ALPHA_CTR * uniform(&st, 0.9, 1.1);
		double		alpha_cvr = SYN_ALPHA_CVR * uniform(&st, 0.9, 1.1);
		double		cf = uniform(&st, 0.75, 1.25);
		double		vf = uniform(&st, 0.75, 1.25);
		int			h;

		sc->name = cstring_to_text(o->scenes[s]);
		if (o->weights)
			u->scene_cdf[s] = o->weights[s];
		else if (def >= 0 && o->nscenes == (int) N_DEFAULT_SCENES)
			u->scene_cdf[s] = default_scenes[def].weight;
		else
			u->scene_cdf[s] = 1.0;
		ctr_factor[s] = def >= 0 ? default_scenes[def].ctr_factor : cf;
		cvr_factor[s] = def >= 0 ? default_scenes[def].cvr_factor : vf;

		for (h = 0; h < SYN_NHOURS; h++)
		{
			sc->hour_cdf[h] = 1.0 + 0.6 * cos(2.0 * M_PI * (h - traffic_peak) / 24.0);
			sc->hour_ctr[h] = (float) (ctr_amp * cos(2.0 * M_PI * (h - ctr_peak) / 24.0));
			sc->hour_cvr[h] = (float) (cvr_amp * cos(2.0 * M_PI * (h - cvr_peak) / 24.0));
		}
		make_cdf(sc->hour_cdf, SYN_NHOURS);
		dev_w[0] = uniform(&st, 2.0, 5.0);
		dev_w[1] = uniform(&st, 0.5, 2.5);
		dev_w[2] = uniform(&st, 0.2, 0.8);
		for (k = 0; k < SYN_NDEVICES; k++)
		{
			sc->device_cdf[k] = dev_w[k];
			sc->device_ctr[k] = (float) (SYN_DEVICE_CTR * gauss(&st));
			sc->device_cvr[k] = (float) (SYN_DEVICE_CVR * gauss(&st));
		}
		make_cdf(sc->device_cdf, SYN_NDEVICES);

		/* per-scene user vectors get alpha / sqrt(K) folded in */
		sc->user_click = alloc_floats(u->U * SYN_K);
		sc->user_conv = alloc_floats(u->U * SYN_K);
		sc->user_b = alloc_floats(u->U);
		sc->user_g = alloc_floats(u->U);
		sc->alpha_ctr = alpha_ctr;
		sc->alpha_cvr = alpha_cvr;
	}
	/* traffic-weighted factors average to one */
	{
		double		wsum = 0.0;

		for (s = 0; s < u->S; s++)
			wsum += u->scene_cdf[s];
		for (s = 0; s < u->S; s++)
		{
			ctr_norm += u->scene_cdf[s] / wsum * ctr_factor[s];
			cvr_norm += u->scene_cdf[s] / wsum * cvr_factor[s];
		}
		for (s = 0; s < u->S; s++)
		{
			u->scenes[s].ctr_target = Min(o->ctr * ctr_factor[s] / ctr_norm, 0.95);
			u->scenes[s].cvr_target = Min(o->cvr * cvr_factor[s] / cvr_norm, 0.95);
		}
		make_cdf(u->scene_cdf, u->S);
	}

	/* users */
	u->user_cdf = zipf_cdf(u->U, SYN_USER_ZIPF_OFFSET * u->U, SYN_USER_ZIPF);
	u->user_id = permutation(&st, u->U);
	for (i = 0; i < u->U; i++)
	{
		double		b,
					g;

		if ((i & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		draw_unit_vector(&st, x);	/* click interest */
		draw_unit_vector(&st, z);
		for (k = 0; k < SYN_K; k++)
			y[k] = 0.5 * x[k] + sqrt(0.75) * z[k];	/* conversion interest */
		b = gauss(&st);
		g = SYN_USER_BG_CORR * b + sqrt(1.0 - SYN_USER_BG_CORR * SYN_USER_BG_CORR) * gauss(&st);
		for (s = 0; s < u->S; s++)
		{
			SynScene   *sc = &u->scenes[s];
			double		ac = sc->alpha_ctr * inv_sqrt_k;
			double		av = sc->alpha_cvr * inv_sqrt_k;

			for (k = 0; k < SYN_K; k++)
			{
				sc->user_click[i * SYN_K + k] = (float) (ac * (x[k] + SYN_USER_DEV * gauss(&st)));
				sc->user_conv[i * SYN_K + k] = (float) (av * (y[k] + SYN_USER_DEV * gauss(&st)));
			}
			sc->user_b[i] = (float) (SYN_USER_B * b + SYN_USER_B_DEV * gauss(&st));
			sc->user_g[i] = (float) (SYN_USER_G * g + SYN_USER_G_DEV * gauss(&st));
		}
	}

	/* tags, advertisers */
	tau = palloc(sizeof(double) * u->T * SYN_K);
	kappa = palloc(sizeof(double) * u->T * SYN_K);
	for (i = 0; i < u->T * SYN_K; i++)
	{
		tau[i] = gauss(&st);
		kappa[i] = gauss(&st);
	}
	u->tag_id = permutation(&st, u->T);
	u->adv_id = permutation(&st, u->V);
	u->adv_q = alloc_floats(u->V);
	u->adv_r = alloc_floats(u->V);
	for (i = 0; i < u->V; i++)
	{
		u->adv_q[i] = (float) (SYN_ADV_Q * gauss(&st));
		u->adv_r[i] = (float) (SYN_ADV_R * gauss(&st));
	}

	/* ads */
	{
		double	   *adv_cdf = zipf_cdf(u->V, 0.05 * u->V, 1.0);
		double	   *tag_cdf = zipf_cdf(u->T, 0.05 * u->T, 1.0);

		u->ad_cdf = zipf_cdf(u->A, SYN_AD_ZIPF_OFFSET * u->A, SYN_AD_ZIPF);
		u->ad_id = permutation(&st, u->A);
		u->ad_v = alloc_floats(u->A * SYN_K);
		u->ad_w = alloc_floats(u->A * SYN_K);
		u->ad_q = alloc_floats(u->A);
		u->ad_r = alloc_floats(u->A);
		u->ad_adv = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * u->A);
		u->ad_ntags = MemoryContextAllocHuge(CurrentMemoryContext, u->A);
		u->ad_tags = MemoryContextAllocHuge(CurrentMemoryContext,
											sizeof(int32) * u->A * SYN_MAX_TAGS_PER_AD);
		for (i = 0; i < u->A; i++)
		{
			double		pt = pg_prng_double(&st);
			int			m = pt < 0.4 ? 1 : pt < 0.8 ? 2 : 3;
			double		ts[SYN_K] = {0},
						ks[SYN_K] = {0};
			double		q;

			if ((i & 4095) == 0)
				CHECK_FOR_INTERRUPTS();
			if (m > u->T)
				m = (int) u->T;
			u->ad_ntags[i] = (uint8) m;
			for (t = 0; t < m; t++)
			{
				int32		tag;
				int			tries = 0,
							j;

				/* distinct tags within an ad */
				for (;;)
				{
					tag = (int32) cdf_draw(tag_cdf, u->T, pg_prng_double(&st));
					for (j = 0; j < t; j++)
						if (u->ad_tags[i * SYN_MAX_TAGS_PER_AD + j] == tag)
							break;
					if (j == t || ++tries > 20)
						break;
				}
				if (j < t)
				{
					/* give up on a duplicate: scan for a free tag */
					for (tag = 0;; tag++)
					{
						for (j = 0; j < t; j++)
							if (u->ad_tags[i * SYN_MAX_TAGS_PER_AD + j] == tag)
								break;
						if (j == t)
							break;
					}
				}
				u->ad_tags[i * SYN_MAX_TAGS_PER_AD + t] = tag;
				for (k = 0; k < SYN_K; k++)
				{
					ts[k] += tau[tag * SYN_K + k];
					ks[k] += kappa[tag * SYN_K + k];
				}
			}
			u->ad_adv[i] = (int32) cdf_draw(adv_cdf, u->V, pg_prng_double(&st));
			draw_unit_vector(&st, x);
			draw_unit_vector(&st, z);
			for (k = 0; k < SYN_K; k++)
			{
				double		v = sqrt(0.5) * x[k] + sqrt(0.5) * ts[k] / sqrt((double) m);
				double		w = sqrt(0.5) * z[k] + sqrt(0.5) * ks[k] / sqrt((double) m);

				u->ad_v[i * SYN_K + k] = (float) v;
				u->ad_w[i * SYN_K + k] = (float) (0.5 * v + sqrt(0.75) * w);
			}
			q = SYN_AD_Q * gauss(&st);
			u->ad_q[i] = (float) q;
			u->ad_r[i] = (float) (SYN_AD_QR * q + SYN_AD_R * gauss(&st));
		}
		pfree(adv_cdf);
		pfree(tag_cdf);
	}
	pfree(tau);
	pfree(kappa);

	/* slot drift: centred random walks */
	u->drift_ctr = alloc_floats(o->slots * u->S);
	u->drift_cvr = alloc_floats(o->slots * u->S);
	for (s = 0; s < u->S; s++)
	{
		double		wc = 0.0,
					wv = 0.0,
					mc = 0.0,
					mv = 0.0;

		for (i = 0; i < o->slots; i++)
		{
			if (i > 0)
			{
				wc += SYN_DRIFT_STEP * gauss(&st);
				wv += SYN_DRIFT_STEP * gauss(&st);
			}
			u->drift_ctr[i * u->S + s] = (float) wc;
			u->drift_cvr[i * u->S + s] = (float) wv;
			mc += wc;
			mv += wv;
		}
		mc /= o->slots;
		mv /= o->slots;
		for (i = 0; i < o->slots; i++)
		{
			u->drift_ctr[i * u->S + s] -= (float) mc;
			u->drift_cvr[i * u->S + s] -= (float) mv;
		}
	}

	/* intercepts, calibrated per scene on a private sample */
	{
		double	   *lc = palloc(sizeof(double) * SYN_CALIB_ROWS);
		double	   *lv = palloc(sizeof(double) * SYN_CALIB_ROWS);
		double	   *pc = palloc(sizeof(double) * SYN_CALIB_ROWS);

		for (s = 0; s < u->S; s++)
		{
			SynScene   *sc = &u->scenes[s];
			pg_prng_state cst;
			SynDraw		d;
			int			r;

			CHECK_FOR_INTERRUPTS();
			pg_prng_seed(&cst, mix64(hash_combine64((uint64) (uint32) seed,
													UINT64CONST(0x63616c6962) + s)));	/* "calib" */
			for (r = 0; r < SYN_CALIB_ROWS; r++)
			{
				draw_impression(u, &cst, s, &d);
				lc[r] = d.ctr_logit;
				lv[r] = d.cvr_logit;
			}
			sc->beta = solve_intercept(lc, NULL, SYN_CALIB_ROWS, sc->ctr_target);
			for (r = 0; r < SYN_CALIB_ROWS; r++)
				pc[r] = sigmoid(sc->beta + lc[r]);
			sc->gamma = solve_intercept(lv, pc, SYN_CALIB_ROWS, sc->cvr_target);
		}
		pfree(lc);
		pfree(lv);
		pfree(pc);
	}
	pfree(ctr_factor);
	pfree(cvr_factor);
	return u;
}

/* ---------------------------------------------------------------------
 * Rows
 * ---------------------------------------------------------------------
 */

#define FEATURE_BUF		256
#define MAX_ROW_FEATURES (5 + SYN_MAX_TAGS_PER_AD)

/* Append 'name=<value>' to buf at *pos, recording its length. */
static inline void
put_feature(char *buf, int *pos, int *lens, int *nf, const char *name,
			int namelen, uint32 value)
{
	int			p = *pos;

	memcpy(buf + p, name, namelen);
	p += namelen;
	p += pg_ultoa_n(value, buf + p);
	lens[(*nf)++] = p - *pos;
	*pos = p;
}

/*
 * A one-dimensional text[] from nf strings laid end to end in buf, built
 * in one allocation (no per-element palloc).
 */
static ArrayType *
make_text_array(const char *buf, const int *lens, int nf)
{
	Size		size = ARR_OVERHEAD_NONULLS(1);
	ArrayType  *arr;
	char	   *p;
	int			i;

	for (i = 0; i < nf; i++)
		size = att_align_nominal(size + VARHDRSZ + lens[i], TYPALIGN_INT);
	arr = palloc0(size);
	SET_VARSIZE(arr, size);
	arr->ndim = 1;
	arr->dataoffset = 0;
	arr->elemtype = TEXTOID;
	ARR_DIMS(arr)[0] = nf;
	ARR_LBOUND(arr)[0] = 1;
	p = ARR_DATA_PTR(arr);
	for (i = 0; i < nf; i++)
	{
		SET_VARSIZE(p, VARHDRSZ + lens[i]);
		memcpy(VARDATA(p), buf, lens[i]);
		buf += lens[i];
		p = (char *) att_align_nominal(p + VARHDRSZ + lens[i], TYPALIGN_INT);
	}
	return arr;
}

static HeapTuple
make_row(FuncCallContext *funcctx, const SynCall *call, int64 i)
{
	const SynUniverse *u = call->u;
	pg_prng_state st;
	SynDraw		d;
	const SynScene *sc;
	int64		slot;
	double		p_ctr,
				p_cvr;
	bool		click,
				conversion;
	double		uc,
				uv;
	char		buf[FEATURE_BUF];
	int			lens[MAX_ROW_FEATURES];
	int			pos = 0,
				nf = 0,
				t;
	Datum		values[7];
	bool		nulls[7] = {false, false, false, false, false, false, false};

	pg_prng_seed(&st, mix64(call->seed_key ^ mix64((uint64) i)));
	draw_impression(u, &st, -1, &d);
	sc = &u->scenes[d.scene];
	slot = i * u->o.slots / call->n;	/* i < 1e10, slots <= 1e5 */

	p_ctr = sigmoid(sc->beta + u->drift_ctr[slot * u->S + d.scene] + d.ctr_logit);
	p_cvr = sigmoid(sc->gamma + u->drift_cvr[slot * u->S + d.scene] + d.cvr_logit);
	uc = pg_prng_double(&st);
	uv = pg_prng_double(&st);
	click = uc < p_ctr;
	conversion = click && uv < p_cvr;

	put_feature(buf, &pos, lens, &nf, "user=", 5, (uint32) u->user_id[d.user] + 1);
	put_feature(buf, &pos, lens, &nf, "ad=", 3, (uint32) u->ad_id[d.ad] + 1);
	put_feature(buf, &pos, lens, &nf, "advertiser=", 11,
				(uint32) u->adv_id[u->ad_adv[d.ad]] + 1);
	put_feature(buf, &pos, lens, &nf, "hour=", 5, (uint32) d.hour);
	put_feature(buf, &pos, lens, &nf, "device=", 7, (uint32) d.device + 1);
	for (t = 0; t < u->ad_ntags[d.ad]; t++)
		put_feature(buf, &pos, lens, &nf, "tag=", 4,
					(uint32) u->tag_id[u->ad_tags[d.ad * SYN_MAX_TAGS_PER_AD + t]] + 1);

	values[0] = Int32GetDatum((int32) slot + 1);
	values[1] = PointerGetDatum(sc->name);
	values[2] = PointerGetDatum(make_text_array(buf, lens, nf));
	values[3] = BoolGetDatum(click);
	values[4] = BoolGetDatum(conversion);
	values[5] = Float8GetDatum(p_ctr);
	values[6] = Float8GetDatum(p_cvr);
	return heap_form_tuple(funcctx->tuple_desc, values, nulls);
}

/*
 * mtms_synthetic_samples(n bigint, seed int, options jsonb)
 *   -> TABLE(slot int, scene text, features text[], click boolean,
 *            conversion boolean, p_ctr float8, p_cvr float8)
 *
 * Value-per-call: rows are produced one at a time.
 */
PG_FUNCTION_INFO_V1(mtms_synthetic_samples);
Datum
mtms_synthetic_samples(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	SynCall    *call;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	tupdesc;
		SynOptions	o;
		int64		n;
		int32		seed;

		if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("mtms_synthetic_samples: %s must not be NULL",
							PG_ARGISNULL(0) ? "n" : PG_ARGISNULL(1) ? "seed" : "options")));
		n = PG_GETARG_INT64(0);
		seed = PG_GETARG_INT32(1);
		if (n < 0 || n > SYN_MAX_ROWS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid number of samples: " INT64_FORMAT, n),
					 errdetail("n must be between 0 and " INT64_FORMAT ".", SYN_MAX_ROWS)));

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("mtms_synthetic_samples must be called where a row type is accepted")));
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);

		parse_options(PG_GETARG_JSONB_P(2), seed, &o);
		call = palloc(sizeof(SynCall));
		call->n = n;
		call->seed_key = mix64(hash_combine64(UINT64CONST(0x726f7773),	/* "rows" */
											  (uint64) (uint32) seed));
		call->u = n > 0 ? build_universe(&o) : NULL;
		funcctx->user_fctx = call;
		funcctx->max_calls = (uint64) n;
		if (mtms_progress_begin("synthetic", NULL))
		{
			mtms_progress_stage("generating", 0, -1, n, 0);
			mtms_progress_end_with(funcctx->multi_call_memory_ctx);
		}
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	call = (SynCall *) funcctx->user_fctx;
	if (funcctx->call_cntr < funcctx->max_calls)
	{
		HeapTuple	tuple = make_row(funcctx, call, (int64) funcctx->call_cntr);

		if (((funcctx->call_cntr + 1) & 1023) == 0)
		{
			mtms_progress_rows(1024);
			mtms_progress_pause();
		}

		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(tuple));
	}
	SRF_RETURN_DONE(funcctx);
}

/*
 * Planner support: the row count is n when n is a constant.
 */
PG_FUNCTION_INFO_V1(mtms_synthetic_samples_support);
Datum
mtms_synthetic_samples_support(PG_FUNCTION_ARGS)
{
	Node	   *rawreq = (Node *) PG_GETARG_POINTER(0);

	if (IsA(rawreq, SupportRequestRows))
	{
		SupportRequestRows *req = (SupportRequestRows *) rawreq;

		if (is_funcclause(req->node))
		{
			List	   *args = ((FuncExpr *) req->node)->args;
			Node	   *arg = args != NIL ? estimate_expression_value(req->root,
																	  linitial(args)) : NULL;

			if (arg && IsA(arg, Const) && !((Const *) arg)->constisnull)
			{
				int64		n = DatumGetInt64(((Const *) arg)->constvalue);

				req->rows = (double) Max(n, 1);
				PG_RETURN_POINTER(req);
			}
		}
	}
	PG_RETURN_POINTER(NULL);
}
