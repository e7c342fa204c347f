#!/usr/bin/env bash
# test/sanitize.sh: the whole mtms test suite with the extension built under
# AddressSanitizer + UndefinedBehaviorSanitizer, in one command:
#
#     bash test/sanitize.sh     # KEEP=1: keep the temporary directory
#                               # RECOVER=1: report and go on (see below)
#                               # PORT=n: the private server's port (54390)
#                               # ONLY=regex: only the tests whose step name
#                               #   (e.g. shell/parallel_identity_test.sh)
#                               #   matches
#
# Touches neither the system's PostgreSQL nor its installed mtms.so nor any
# running cluster:
#  1. copies the PostgreSQL installation (/usr/lib/postgresql/$MTMS_PG and
#     /usr/share/postgresql/$MTMS_PG, test/pg-env.sh) into a temporary directory; the binaries find
#     their share and lib directories relative to themselves, so the copy's
#     pg_config, server and "make install" all stay inside it;
#  2. copies the working tree (without .git and build products) and builds
#     it there with -fsanitize=address,undefined, then installs it into the
#     private copy;
#  3. starts a private cluster from the copy (as the postgres OS user when
#     run as root), listening only on a Unix socket in the temporary
#     directory, with libasan preloaded into the server;
#  4. runs the tests test/run-all.sh runs (every pg_regress test and
#     isolation test of the Makefile, every pgTAP file test/*_test.sql), one
#     by one, then test/sanitize_workload.sql, once with serial and once
#     with forced parallel plans; after each test it waits for the server
#     (a sanitizer abort makes it restart) and charges every new sanitizer
#     report or server crash to that test;
#  5. prints every report with its stack, a per-test summary, and last
#     "N passed, N failed" (a test with a report or a crash has failed);
#     the exit status is non-zero when anything failed.
#
# By default a report aborts the backend (-fno-sanitize-recover), so each
# backend shows only its first finding; RECOVER=1 builds with
# -fsanitize-recover=all and halt_on_error=0 to see all of them in one run.
#
# Only the extension is instrumented: ASan sees heap errors on malloc'd
# memory (palloc chunks above 8 kB get their own malloc block, so overruns
# of large arrays are caught; an overrun inside a palloc block of small
# chunks is not), stack and global errors in mtms code, and UBSan checks
# mtms code (signed overflow is defined: PostgreSQL builds with -fwrapv).
# Leak detection is off: PostgreSQL frees by memory context.
set -uo pipefail
shopt -s nullglob

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=$(pwd)

# shellcheck source=test/pg-env.sh
. test/pg-env.sh
PG_MAJOR=$MTMS_PG
SYS_LIB=/usr/lib/postgresql/$PG_MAJOR
SYS_SHARE=/usr/share/postgresql/$PG_MAJOR
PORT=${PORT:-54390}
# RECOVER=1: keep running after a report (-fsanitize-recover=all,
# halt_on_error=0), so that one run shows every finding, not only the first
# of each backend; the default stops the backend at the first report.
# PLAIN=1: the same run without sanitizers (normal flags, nothing
# preloaded), to tell failures caused by the sanitized build from others.
if [ "${PLAIN:-0}" = 1 ]; then
    SAN_FLAGS=""
    HALT=1
    MODE_NOTE="PLAIN=1: no sanitizers"
elif [ "${RECOVER:-0}" = 1 ]; then
    SAN_FLAGS="-fsanitize=address,undefined -fsanitize-recover=all -fno-omit-frame-pointer -O1 -g"
    HALT=0
    MODE_NOTE="RECOVER=1: reports do not stop the backend"
else
    SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
    HALT=1
    MODE_NOTE="a report aborts the backend"
fi
start_time=$(date +%s)

for need in "$SYS_LIB/bin/postgres" "$SYS_LIB/bin/pg_config" /usr/include/postgresql/$PG_MAJOR/server/postgres.h; do
    if [ ! -e "$need" ]; then
        echo "sanitize.sh: $need is missing; run test/setup.sh first" >&2
        exit 1
    fi
done
LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize.sh: gcc has no libasan.so (install libasan8 / gcc)" >&2
    exit 1
fi
SYMBOLIZER=$(command -v llvm-symbolizer || true)

export LC_ALL=C.UTF-8
unset LANGUAGE

ROOT=$(mktemp -d -t mtms-sanitize.XXXXXX)
chmod 755 "$ROOT"
PRIV_LIB=$ROOT/usr/lib/postgresql/$PG_MAJOR
PRIV_BIN=$PRIV_LIB/bin
PG_CONFIG=$PRIV_BIN/pg_config
DATA=$ROOT/data
SOCK=$ROOT/sock
LOGS=$ROOT/logs          # sanitizer logs (written by the server's user)
SERVER_LOG=$ROOT/server.log
BUILD=$ROOT/build

# Run as the cluster's owner: postgres when we are root, else ourselves.
if [ "$(id -u)" -eq 0 ]; then
    as_owner() { runuser -u postgres -- "$@"; }
    OWNER=postgres
else
    as_owner() { "$@"; }
    OWNER=$(id -un)
fi

server_started=0
cleanup() {
    if [ "$server_started" -eq 1 ]; then
        as_owner "$PRIV_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_owner "$PRIV_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
        server_started=0
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "sanitize.sh: kept $ROOT (server log $SERVER_LOG, sanitizer logs $LOGS)"
    else
        rm -rf "$ROOT"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_setup() {
    echo "sanitize.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

echo "=== private PostgreSQL $PG_MAJOR copy in $ROOT"
mkdir -p "$ROOT/usr/lib/postgresql" "$ROOT/usr/share/postgresql" "$ROOT/usr/include"
cp -a "$SYS_LIB" "$ROOT/usr/lib/postgresql/" || fail_setup "cannot copy $SYS_LIB"
cp -a "$SYS_SHARE" "$ROOT/usr/share/postgresql/" || fail_setup "cannot copy $SYS_SHARE"
ln -s /usr/include/postgresql "$ROOT/usr/include/postgresql"
# the system's mtms must not stand in for the sanitized one
rm -f "$PRIV_LIB/lib/mtms.so" "$ROOT/usr/share/postgresql/$PG_MAJOR/extension/mtms"[-.]*
rm -rf "$PRIV_LIB/lib/bitcode/mtms" "$PRIV_LIB/lib/bitcode/mtms.index.bc"
if [ "$("$PG_CONFIG" --pkglibdir)" != "$PRIV_LIB/lib" ]; then
    fail_setup "the copied pg_config does not relocate: $("$PG_CONFIG" --pkglibdir)"
fi

echo "=== build with COPT='$SAN_FLAGS'"
mkdir -p "$BUILD"
tar -C "$SRC" -cf - --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./results --exclude=./output_iso --exclude=./tmp_check --exclude=./log \
    --exclude=./regression.diffs --exclude=./regression.out . |
    tar -C "$BUILD" -xf - || fail_setup "cannot copy the source tree"
rm -f "$BUILD/mtms--0.1.sql"
# with_llvm=no: no JIT bitcode (the server runs with jit=off anyway)
if ! make -s -C "$BUILD" PG_CONFIG="$PG_CONFIG" with_llvm=no COPT="$SAN_FLAGS" ||
    ! make -s -C "$BUILD" PG_CONFIG="$PG_CONFIG" with_llvm=no COPT="$SAN_FLAGS" install; then
    fail_setup "the sanitized build failed"
fi
if [ "${PLAIN:-0}" != 1 ] && ! nm -D "$PRIV_LIB/lib/mtms.so" | grep __asan_report >/dev/null; then
    fail_setup "$PRIV_LIB/lib/mtms.so is not instrumented"
fi
# the tests run as this user and write results/ into the build copy
chmod -R a+rX "$ROOT/usr" "$BUILD"

echo "=== private cluster on socket $SOCK port $PORT (owner $OWNER)"
mkdir -p "$DATA" "$SOCK" "$LOGS"
chown "$OWNER" "$DATA" "$SOCK" "$LOGS"
chmod 700 "$DATA"
touch "$SERVER_LOG" && chown "$OWNER" "$SERVER_LOG"
as_owner "$PRIV_BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$ROOT/initdb.log" 2>&1 || { cat "$ROOT/initdb.log"; fail_setup "initdb failed"; }
cat >>"$DATA/postgresql.conf" <<EOF
# test/sanitize.sh
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
jit = off
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = log
log_min_error_statement = panic
shared_preload_libraries = 'mtms'
EOF

# The sanitizer runtime must come first in the server's library list: only
# mtms.so is instrumented, the postgres binary is not.  A small preloaded
# helper library works around two problems of that set-up:
#
# 1. Preloaded, libasan initialises itself lazily at the first malloc(), and
#    in postgres that is inside newlocale() called by libp11-kit's
#    constructor (postgres -> libldap -> libgnutls -> libp11-kit), which
#    holds glibc's setlocale lock.  The initialisation looks up the optional
#    symbol swift_demangle; the failed dlsym() is followed by dlerror(),
#    whose gettext call takes and releases that same lock: newlocale() later
#    unlocks a lock it no longer holds, and the next setlocale() or
#    bindtextdomain() (in "postgres -V", run by pg_ctl) waits forever.
#    Defining swift_demangle (always "cannot demangle") makes the lookup
#    succeed: no dlerror(), no hang.
# 2. libubsan initialises itself at its first report and reads
#    UBSAN_OPTIONS from /proc/self/environ, which a PostgreSQL backend has
#    overwritten with its process title by then: the options would be lost
#    (no stack trace, exit(1) instead of abort).  The helper copies
#    UBSAN_OPTIONS at process start and hands it over through
#    __ubsan_default_options().  (libubsan ignores log_path: its reports go
#    to the server's stderr, the server log, which is scanned below.)
# 3. OpenBLAS is not instrumented: a cblas_sgemm/cblas_sgemv call whose
#    sizes or leading dimensions do not fit its buffers would read or write
#    out of bounds unseen.  The helper interposes both functions, asks ASan
#    whether every byte each matrix and vector argument spans is
#    addressable (__asan_region_is_poisoned), reports an ASan-style error
#    with the caller's stack if not, and then calls OpenBLAS.
SHIM=$ROOT/preload/mtms_sanitizer_preload.so
mkdir -p "$ROOT/preload"
cat >"$ROOT/preload/mtms_sanitizer_preload.c" <<'END_OF_C'
#include <stddef.h>
#include <stdlib.h>

char	   *swift_demangle(const char *mangled, size_t len, char *out,
						   size_t *outlen, unsigned flags);
const char *__ubsan_default_options(void);

char *
swift_demangle(const char *mangled, size_t len, char *out, size_t *outlen,
			   unsigned flags)
{
	(void) mangled;
	(void) len;
	(void) out;
	(void) outlen;
	(void) flags;
	return NULL;
}

static char ubsan_options[4096];

__attribute__((constructor))
static void
save_ubsan_options(void)
{
	const char *s = getenv("UBSAN_OPTIONS");
	size_t		i;

	/* no libc string functions: they may be intercepted by libasan */
	for (i = 0; s != NULL && s[i] != '\0' && i < sizeof(ubsan_options) - 1; i++)
		ubsan_options[i] = s[i];
	ubsan_options[i] = '\0';
}

const char *
__ubsan_default_options(void)
{
	return ubsan_options;
}

/* ---- bounds checks of the BLAS calls of mtms ---- */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

/*
 * libasan's public interface (libasan is preloaded before this library).
 * __sanitizer_report_error_summary() prints a line where ASan prints its
 * reports (log_path), so the whole report lands in one file.
 */
void	   *__asan_region_is_poisoned(void *beg, size_t size);
void		__asan_describe_address(void *addr);
void		__sanitizer_print_stack_trace(void);
void		__sanitizer_report_error_summary(const char *error_summary);

/* CBLAS enumerations (cblas.h) */
#define ROW_MAJOR 101
#define NO_TRANS 111

static int	halt_on_error = 1;

__attribute__((constructor))
static void
save_halt(void)
{
	const char *h = getenv("MTMS_SAN_HALT");

	halt_on_error = !(h != NULL && h[0] == '0');
}

static void
blas_report(const char *fn, const char *shape, const char *what,
			const float *p, const void *bad)
{
	char		line[600];
	int			pid = (int) getpid();

	snprintf(line, sizeof(line),
			 "=================================================================\n"
			 "==%d==ERROR: AddressSanitizer: BLAS argument out of bounds: %s(%s): %s "
			 "(base %p, first bad byte %p)",
			 pid, fn, shape, what, (const void *) p, bad);
	__sanitizer_report_error_summary(line);
	__sanitizer_print_stack_trace();
	if (bad != NULL)
		__asan_describe_address((void *) bad);
	snprintf(line, sizeof(line), "SUMMARY: AddressSanitizer: BLAS argument out of bounds in %s\n==%d==%s",
			 fn, pid, halt_on_error ? "ABORTING" : "END OF REPORT");
	__sanitizer_report_error_summary(line);
	if (halt_on_error)
		abort();
}

/* a matrix of 'outer' runs of 'inner' floats, 'ld' floats apart */
static void
check_matrix(const char *fn, const char *shape, const char *name,
			 const float *p, long outer, long inner, long ld)
{
	char		what[160];
	void	   *bad;
	long		r;

	if (outer <= 0 || inner <= 0)
		return;
	if (p == NULL || ld < inner)
	{
		snprintf(what, sizeof(what), "matrix %s is %s (%ld x %ld, leading dimension %ld)",
				 name, p == NULL ? "NULL" : "given a leading dimension below its row length",
				 outer, inner, ld);
		blas_report(fn, shape, what, p, NULL);
		return;
	}
	for (r = 0; r < outer; r++)
	{
		const float *row = p + (size_t) r * ld;
		size_t		n = (ld == inner) ? (size_t) (outer - r) * inner : (size_t) inner;

		bad = __asan_region_is_poisoned((void *) row, n * sizeof(float));
		if (bad != NULL)
		{
			snprintf(what, sizeof(what),
					 "matrix %s (%ld x %ld, leading dimension %ld) is not addressable",
					 name, outer, inner, ld);
			blas_report(fn, shape, what, p, bad);
			return;
		}
		if (ld == inner)
			break;
	}
}

static void
check_vector(const char *fn, const char *shape, const char *name,
			 const float *p, long n, long inc)
{
	char		what[160];
	long		i;
	long		step = inc < 0 ? -inc : inc;

	if (n <= 0)
		return;
	for (i = 0; i < n; i++)
	{
		void	   *bad = (p == NULL || step == 0) ? NULL :
			__asan_region_is_poisoned((void *) (p + (size_t) i * step), sizeof(float));

		if (p == NULL || step == 0 || bad != NULL)
		{
			snprintf(what, sizeof(what), "vector %s (%ld elements, increment %ld) is %s",
					 name, n, inc, p == NULL ? "NULL" : step == 0 ? "given increment 0" :
					 "not addressable");
			blas_report(fn, shape, what, p, bad);
			return;
		}
	}
}

static void *
real_function(const char *name)
{
	void	   *f = dlsym(RTLD_NEXT, name);

	if (f == NULL)
	{
		fprintf(stderr, "mtms_sanitizer_preload: %s not found: %s\n", name, dlerror());
		abort();
	}
	return f;
}

typedef void (*sgemm_fn) (int, int, int, int, int, int, float, const float *, int,
						  const float *, int, float, float *, int);
typedef void (*sgemv_fn) (int, int, int, int, float, const float *, int,
						  const float *, int, float, float *, int);

void		cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha,
						const float *A, int lda, const float *B, int ldb, float beta,
						float *C, int ldc);
void		cblas_sgemv(int order, int trans, int M, int N, float alpha,
						const float *A, int lda, const float *X, int incX, float beta,
						float *Y, int incY);

void
cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha,
			const float *A, int lda, const float *B, int ldb, float beta,
			float *C, int ldc)
{
	static sgemm_fn real;
	char		shape[200];
	int			row = (order == ROW_MAJOR);

	snprintf(shape, sizeof(shape),
			 "%s, trans %c%c, M=%d N=%d K=%d, lda=%d ldb=%d ldc=%d",
			 row ? "row-major" : "column-major",
			 ta == NO_TRANS ? 'N' : 'T', tb == NO_TRANS ? 'N' : 'T',
			 M, N, K, lda, ldb, ldc);
	if (M > 0 && N > 0 && K > 0 && alpha != 0.0f)
	{
		/* op(A) is M x K, op(B) is K x N */
		if ((ta == NO_TRANS) == row)
			check_matrix("cblas_sgemm", shape, "A", A, M, K, lda);
		else
			check_matrix("cblas_sgemm", shape, "A", A, K, M, lda);
		if ((tb == NO_TRANS) == row)
			check_matrix("cblas_sgemm", shape, "B", B, K, N, ldb);
		else
			check_matrix("cblas_sgemm", shape, "B", B, N, K, ldb);
	}
	if (row)
		check_matrix("cblas_sgemm", shape, "C", C, M, N, ldc);
	else
		check_matrix("cblas_sgemm", shape, "C", C, N, M, ldc);
	if (real == NULL)
		real = (sgemm_fn) real_function("cblas_sgemm");
	real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void
cblas_sgemv(int order, int trans, int M, int N, float alpha,
			const float *A, int lda, const float *X, int incX, float beta,
			float *Y, int incY)
{
	static sgemv_fn real;
	char		shape[200];
	int			row = (order == ROW_MAJOR);
	int			notrans = (trans == NO_TRANS);

	snprintf(shape, sizeof(shape), "%s, trans %c, M=%d N=%d, lda=%d incX=%d incY=%d",
			 row ? "row-major" : "column-major", notrans ? 'N' : 'T',
			 M, N, lda, incX, incY);
	if (M > 0 && N > 0 && alpha != 0.0f)
	{
		if (row)
			check_matrix("cblas_sgemv", shape, "A", A, M, N, lda);
		else
			check_matrix("cblas_sgemv", shape, "A", A, N, M, lda);
		check_vector("cblas_sgemv", shape, "X", X, notrans ? N : M, incX);
	}
	if (M > 0 && N > 0)
		check_vector("cblas_sgemv", shape, "Y", Y, notrans ? M : N, incY);
	if (real == NULL)
		real = (sgemv_fn) real_function("cblas_sgemv");
	real(order, trans, M, N, alpha, A, lda, X, incX, beta, Y, incY);
}
END_OF_C
gcc -shared -fPIC -O1 -fno-omit-frame-pointer -Wall -Werror -o "$SHIM" \
    "$ROOT/preload/mtms_sanitizer_preload.c" -ldl ||
    fail_setup "cannot build $SHIM"
chmod -R a+rX "$ROOT/preload"
if ! timeout 60 env LD_PRELOAD="$LIBASAN:$SHIM" ASAN_OPTIONS=detect_leaks=0 \
    "$PRIV_BIN/postgres" -V >/dev/null; then
    fail_setup "postgres -V does not run with $LIBASAN preloaded"
fi

if [ "${PLAIN:-0}" = 1 ]; then
    preload=""
    asan_check=false
else
    preload="$LIBASAN:$SHIM"
    asan_check=true
fi
asan_options="detect_leaks=0:abort_on_error=1:halt_on_error=$HALT:detect_odr_violation=0:log_path=$LOGS/asan"
ubsan_options="print_stacktrace=1:halt_on_error=$HALT:abort_on_error=1"
san_env=(
    LD_PRELOAD="$preload"
    ASAN_OPTIONS="$asan_options"
    UBSAN_OPTIONS="$ubsan_options"
    MTMS_SAN_HALT="$HALT"
    PATH="$PRIV_BIN:$PATH"
)
if [ -n "$SYMBOLIZER" ]; then
    san_env+=(ASAN_SYMBOLIZER_PATH="$SYMBOLIZER")
fi
if ! as_owner env "${san_env[@]}" "$PRIV_BIN/pg_ctl" -D "$DATA" -l "$SERVER_LOG" -w -t 120 start \
    >/dev/null; then
    cat "$SERVER_LOG"
    fail_setup "the private server did not start"
fi
server_started=1

export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGPASSWORD PGSERVICE PGOPTIONS
export PATH="$PRIV_BIN:$PATH"
export PG_CONFIG

# The server really runs the instrumented library, under ASan, with the
# helper library.
loaded=$(psql -X -q -At -v ON_ERROR_STOP=1 -c "LOAD 'mtms'" \
    -c "SELECT strpos(m, '$PRIV_LIB/lib/mtms.so') > 0
               AND (strpos(m, 'libasan') > 0) = $asan_check
               AND (strpos(m, 'mtms_sanitizer_preload') > 0) = $asan_check
          FROM pg_read_file('/proc/self/maps') m")
if [ "$loaded" != t ]; then
    fail_setup "the private server did not load $PRIV_LIB/lib/mtms.so (libasan expected: $asan_check; got $loaded)"
fi

# ---------------------------------------------------------------------------
# The tests.  Each pg_regress test, isolation test, pgTAP file and workload
# run is one step; after each step the script waits until the server accepts
# connections again (a sanitizer abort makes the postmaster restart) and
# attributes every new sanitizer report and server crash to that step.
# ---------------------------------------------------------------------------
passed=0
failed=0
summary=()
declare -A seen_size=()
log_offset=0

# New sanitizer reports and crashes since the last call: sets new_reports,
# new_crashes and appends the reports' text to $ROOT/reports.
collect_new() {
    local f size seen n
    new_reports=0
    new_crashes=0
    for f in "$LOGS"/*; do
        size=$(stat -c %s "$f")
        seen=${seen_size[$f]:-0}
        [ "$size" -gt "$seen" ] || continue
        tail -c +$((seen + 1)) "$f" | head -c $((size - seen)) >"$ROOT/file-part"
        seen_size[$f]=$size
        n=$(grep -c '==ERROR: AddressSanitizer' "$ROOT/file-part" || true)
        new_reports=$((new_reports + (n > 0 ? n : 1)))
        { echo "----- $(basename "$f") (during $current_step)"; cat "$ROOT/file-part"; } >>"$ROOT/reports"
    done
    size=$(stat -c %s "$SERVER_LOG")
    tail -c +$((log_offset + 1)) "$SERVER_LOG" | head -c $((size - log_offset)) >"$ROOT/log-part"
    log_offset=$size
    # UBSan writes to stderr, i.e. the server log (so does ASan when it
    # cannot open its log file): each report with its stack.
    awk '
        /runtime error:/ { print; rep = 1; next }
        /^==[0-9]+==ERROR: AddressSanitizer/ { print; rep = 2; next }
        rep == 1 && /^ +#[0-9]/ { print; next }
        rep == 2 { print; if (/==ABORTING|==END OF REPORT/) rep = 0; next }
        { rep = 0 }
    ' "$ROOT/log-part" >"$ROOT/log-reports"
    if [ -s "$ROOT/log-reports" ]; then
        new_reports=$((new_reports + $(grep -cE 'runtime error:|==ERROR: AddressSanitizer' "$ROOT/log-reports")))
        { echo "----- server log (during $current_step)"; cat "$ROOT/log-reports"; } >>"$ROOT/reports"
    fi
    new_crashes=$(grep -cE 'terminated by signal|terminated by exception|PANIC:' "$ROOT/log-part" || true)
    if [ "$new_crashes" -gt 0 ]; then
        { echo "----- server crash (during $current_step)"
          grep -A1 -E 'terminated by signal|terminated by exception|PANIC:' "$ROOT/log-part"; } >>"$ROOT/reports"
    fi
}

# After a crash the server restarts (crash recovery); wait until it accepts
# connections again so that one crash does not fail every later step.
wait_ready() {
    local i
    for i in $(seq 180); do
        pg_isready -q && return 0
        sleep 1
    done
    return 1
}

# step NAME COMMAND...: run one test, print its verdict, count it.
step() {
    local name=$1 rc t0 verdict
    shift
    if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then
        return 0
    fi
    current_step=$name
    wait_ready
    t0=$(date +%s)
    "$@"
    rc=$?
    wait_ready
    sleep 0.3  # let the postmaster log a dying backend
    collect_new
    verdict=ok
    if [ "$rc" -ne 0 ]; then
        verdict=FAILED
    fi
    if [ "$new_reports" -gt 0 ] || [ "$new_crashes" -gt 0 ]; then
        verdict="FAILED (sanitizer reports: $new_reports, server crashes: $new_crashes)"
    fi
    if [ "$verdict" = ok ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    summary+=("$(printf '%-40s %4ss  %s' "$name" "$(($(date +%s) - t0))" "$verdict")")
    echo "--- $name: $verdict"
}

# The test lists exactly as the Makefile defines them.
printf 'sanitize-print-%%:\n\t@echo $($*)\n' >"$ROOT/print.mk"
make_var() {
    make -s --no-print-directory -C "$BUILD" PG_CONFIG="$PG_CONFIG" \
        -f Makefile -f "$ROOT/print.mk" "sanitize-print-$1"
}
read -r -a regress_tests <<<"$(make_var REGRESS)"
read -r -a isolation_tests <<<"$(make_var ISOLATION)"

pg_regress_one() {
    local kind=$1 t=$2 diffs
    if [ "$kind" = regress ]; then
        diffs=$BUILD/regression.diffs
        rm -f "$diffs"
        make -s --no-print-directory -C "$BUILD" PG_CONFIG="$PG_CONFIG" installcheck \
            REGRESS="$t" ISOLATION= >"$ROOT/step.out" 2>&1
    else
        diffs=$BUILD/output_iso/regression.diffs
        rm -f "$diffs"
        make -s --no-print-directory -C "$BUILD" PG_CONFIG="$PG_CONFIG" installcheck \
            REGRESS= ISOLATION="$t" >"$ROOT/step.out" 2>&1
    fi
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        grep -vE '^(SET|DROP DATABASE|CREATE DATABASE|ALTER DATABASE|CREATE EXTENSION)$' "$ROOT/step.out"
        if [ -s "$diffs" ]; then
            echo "=== $diffs (first 200 lines)"
            head -200 "$diffs"
        fi
    fi
    return "$rc"
}

echo "=== pg_regress: ${regress_tests[*]}"
for t in "${regress_tests[@]}"; do
    step "regress/$t" pg_regress_one regress "$t"
done
echo "=== isolation: ${isolation_tests[*]}"
for t in "${isolation_tests[@]}"; do
    step "isolation/$t" pg_regress_one isolation "$t"
done

echo "=== pgTAP (pg_prove test/*_test.sql)"
wait_ready
if createdb mtms_tap &&
    psql -X -q -v ON_ERROR_STOP=1 -d mtms_tap \
        -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION mtms'; then
    for f in "$BUILD"/test/*_test.sql; do
        step "pgtap/$(basename "$f")" pg_prove -d mtms_tap "$f"
    done
else
    echo "could not create the pgTAP database"
    failed=$((failed + 1))
fi

echo "=== shell tests (prove test/*_test.sh)"
# the build copy is elsewhere: the real logs stay where they are
export MTMS_KUAIRAND=${MTMS_KUAIRAND:-$SRC/../shared/data/kuairand}
# a test that starts servers of its own (test/standby_test.sh) starts them
# the way this one runs: sanitized, reporting into the same logs
export MTMS_SAN_LD_PRELOAD="$preload"
export MTMS_SAN_ASAN_OPTIONS="$asan_options"
export MTMS_SAN_UBSAN_OPTIONS="$ubsan_options"
for f in "$BUILD"/test/*_test.sh; do
    step "shell/$(basename "$f")" prove --exec bash "$f"
done

echo "=== heavier training (test/sanitize_workload.sql)"
wait_ready
createdb mtms_sanitize || failed=$((failed + 1))
for parallel in off on; do
    step "workload/parallel=$parallel" \
        psql -X -d mtms_sanitize -v parallel=$parallel -f "$BUILD/test/sanitize_workload.sql"
done

# Stop the server so that every process has finished writing its logs, and
# pick up anything reported after the last step.
as_owner "$PRIV_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
    as_owner "$PRIV_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
server_started=0
current_step="shutdown"
collect_new
if [ "$new_reports" -gt 0 ] || [ "$new_crashes" -gt 0 ]; then
    failed=$((failed + 1))
    summary+=("$(printf '%-40s %4s   %s' "shutdown" "" "FAILED (sanitizer reports: $new_reports, server crashes: $new_crashes)")")
fi

echo
echo "=== sanitizer reports and server crashes"
if [ -s "$ROOT/reports" ]; then
    cat "$ROOT/reports"
else
    echo "none"
fi
echo
echo "=== summary ($MODE_NOTE, $(($(date +%s) - start_time)) s)"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
