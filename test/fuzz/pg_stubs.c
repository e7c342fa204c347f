/*
 * pg_stubs.c
 *    Just enough of the PostgreSQL 15 backend to run mtms's own .c files in
 *    a standalone fuzzing binary (see pg_stubs.h).
 *
 * Memory contexts: every chunk is its own malloc() (so AddressSanitizer
 * sees every overflow), linked into its context; a context knows its
 * parent and children, so reset/delete/set-parent behave as in mcxt.c.
 * The word before each chunk holds its context, as GetMemoryChunkContext()
 * expects.  Request-size checks mirror mcxt.c (MaxAllocSize unless
 * MCXT_ALLOC_HUGE).
 *
 * Errors: errstart() ignores levels below ERROR; errfinish() records the
 * error and siglongjmp()s to *PG_exception_stack (FATAL and above abort:
 * the server would have lost the connection, a finding).
 *
 * Functions the fuzzed paths must never reach (files, SPI outside the
 * model-load harness, set-returning machinery) abort with their name.
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "access/parallel.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/memnodes.h"
#include "storage/fd.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "catalog.h"
#include "pg_stubs.h"

/* ----------------------------------------------------------------
 * Globals the backend would define
 * ---------------------------------------------------------------- */

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;
MemoryContext ErrorContext = NULL;
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
volatile sig_atomic_t InterruptPending = false;
int			MyProcPid = 4242;
int			ParallelWorkerNumber = -1;

/* mtms.c's GUC variables and helper (mtms.c itself is not linked) */
char	   *mtms_default_model = NULL;
int			mtms_max_memory_mb = 4096;

const char *
mtms_task_name(int task)
{
	return task == 0 ? "ctr" : "cvr";
}

/* mtms.c: our SPI runs with a safe search_path; nothing to do here */
int
mtms_guard_search_path(void)
{
	return 0;
}

void
mtms_unguard_search_path(int level)
{
}

/* progress.c (not linked): no shared memory to report rows to */
void
mtms_progress_rows(int64 n)
{
}

void
ProcessInterrupts(void)
{
	InterruptPending = false;
}

/* ----------------------------------------------------------------
 * Findings
 * ---------------------------------------------------------------- */

void
stub_finding(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "\n==mtms-fuzz== FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

static void pg_attribute_noreturn()
stub_trap(const char *what)
{
	stub_finding("unexpected call of backend function %s", what);
}

/* ----------------------------------------------------------------
 * Memory contexts
 * ---------------------------------------------------------------- */

#define STUB_CHUNK_MAGIC	0x6d63786cU

typedef struct StubChunk
{
	struct StubChunk *prev;
	struct StubChunk *next;
	Size		size;
	uint32		magic;
	uint32		pad;
	MemoryContext cxt;			/* must be the last word before the data */
} StubChunk;

StaticAssertDecl(sizeof(StubChunk) % MAXIMUM_ALIGNOF == 0,
				 "chunk header keeps data MAXALIGNed");

typedef struct StubContext
{
	MemoryContextData hdr;
	StubChunk	head;			/* circular list sentinel */
} StubContext;

Size		stub_alloc_limit = (Size) 256 * 1024 * 1024;
long		stub_big_allocs = 0;
MemoryContext stub_agg_context = NULL;
static MemoryContext input_context = NULL;

static MemoryContext
stub_context_new(MemoryContext parent, const char *name)
{
	StubContext *c = calloc(1, sizeof(StubContext));

	if (c == NULL)
		abort();
	c->hdr.type = T_AllocSetContext;
	c->hdr.isReset = true;
	c->hdr.name = name;
	c->hdr.parent = parent;
	c->head.prev = c->head.next = &c->head;
	if (parent)
	{
		c->hdr.nextchild = parent->firstchild;
		if (parent->firstchild)
			parent->firstchild->prevchild = &c->hdr;
		parent->firstchild = &c->hdr;
	}
	return &c->hdr;
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name,
							  Size minContextSize, Size initBlockSize,
							  Size maxBlockSize)
{
	return stub_context_new(parent, name);
}

static void
stub_unlink_child(MemoryContext c)
{
	MemoryContext parent = c->parent;

	if (parent == NULL)
		return;
	if (c->prevchild)
		c->prevchild->nextchild = c->nextchild;
	else
		parent->firstchild = c->nextchild;
	if (c->nextchild)
		c->nextchild->prevchild = c->prevchild;
	c->parent = c->prevchild = c->nextchild = NULL;
}

static void
stub_call_callbacks(MemoryContext c)
{
	MemoryContextCallback *cb;

	while ((cb = c->reset_cbs) != NULL)
	{
		c->reset_cbs = cb->next;
		cb->func(cb->arg);
	}
}

static void
stub_free_chunks(MemoryContext c)
{
	StubContext *sc = (StubContext *) c;
	StubChunk  *ch = sc->head.next;

	while (ch != &sc->head)
	{
		StubChunk  *next = ch->next;

		ch->magic = 0;
		free(ch);
		ch = next;
	}
	sc->head.prev = sc->head.next = &sc->head;
	c->mem_allocated = 0;
	c->isReset = true;
}

void
MemoryContextDelete(MemoryContext c)
{
	if (c == NULL)
		stub_trap("MemoryContextDelete(NULL)");
	if (c == TopMemoryContext)
		stub_trap("MemoryContextDelete(TopMemoryContext)");
	if (c == CurrentMemoryContext)
		stub_finding("MemoryContextDelete of the current memory context \"%s\"",
					 c->name);
	while (c->firstchild)
		MemoryContextDelete(c->firstchild);
	stub_call_callbacks(c);
	stub_free_chunks(c);
	stub_unlink_child(c);
	c->type = T_Invalid;
	free(c);
}

void
MemoryContextDeleteChildren(MemoryContext c)
{
	while (c->firstchild)
		MemoryContextDelete(c->firstchild);
}

void
MemoryContextReset(MemoryContext c)
{
	MemoryContextDeleteChildren(c);
	stub_call_callbacks(c);
	stub_free_chunks(c);
}

void
MemoryContextResetOnly(MemoryContext c)
{
	stub_call_callbacks(c);
	stub_free_chunks(c);
}

void
MemoryContextSetParent(MemoryContext c, MemoryContext newparent)
{
	if (c->parent == newparent)
		return;
	stub_unlink_child(c);
	if (newparent)
	{
		c->parent = newparent;
		c->nextchild = newparent->firstchild;
		if (newparent->firstchild)
			newparent->firstchild->prevchild = c;
		newparent->firstchild = c;
	}
}

MemoryContext
MemoryContextGetParent(MemoryContext c)
{
	return c->parent;
}

Size
MemoryContextMemAllocated(MemoryContext c, bool recurse)
{
	Size		total = c->mem_allocated;

	if (recurse)
		for (MemoryContext ch = c->firstchild; ch; ch = ch->nextchild)
			total += MemoryContextMemAllocated(ch, true);
	return total;
}

void
MemoryContextRegisterResetCallback(MemoryContext c, MemoryContextCallback *cb)
{
	cb->next = c->reset_cbs;
	c->reset_cbs = cb;
}

void
MemoryContextSetIdentifier(MemoryContext c, const char *id)
{
	c->ident = id;
}

static void
stub_check_size(Size size, int flags)
{
	if (!((flags & MCXT_ALLOC_HUGE) ? AllocHugeSizeIsValid(size) : AllocSizeIsValid(size)))
		elog(ERROR, "invalid memory alloc request size %zu", size);
}

static void *
stub_alloc(MemoryContext c, Size size, int flags)
{
	StubContext *sc = (StubContext *) c;
	StubChunk  *ch;

	if (c == NULL || c->type != T_AllocSetContext)
		stub_finding("allocation in an invalid memory context");
	stub_check_size(size, flags);
	if (size > stub_alloc_limit)
	{
		stub_big_allocs++;
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on request of size %zu in memory context \"%s\" (fuzz limit).",
						   size, c->name)));
	}
	ch = malloc(sizeof(StubChunk) + size);
	if (ch == NULL)
		abort();
	ch->size = size;
	ch->magic = STUB_CHUNK_MAGIC;
	ch->pad = 0;
	ch->cxt = c;
	ch->next = sc->head.next;
	ch->prev = &sc->head;
	sc->head.next->prev = ch;
	sc->head.next = ch;
	c->mem_allocated += size;
	c->isReset = false;
	if (flags & MCXT_ALLOC_ZERO)
		memset(ch + 1, 0, size);
	return ch + 1;
}

static StubChunk *
stub_chunk_of(void *p, const char *what)
{
	StubChunk  *ch;

	if (p == NULL)
		stub_finding("%s(NULL)", what);
	ch = ((StubChunk *) p) - 1;
	if (ch->magic != STUB_CHUNK_MAGIC)
		stub_finding("%s of a pointer that is not a palloc'd chunk", what);
	return ch;
}

void
pfree(void *p)
{
	StubChunk  *ch = stub_chunk_of(p, "pfree");

	ch->prev->next = ch->next;
	ch->next->prev = ch->prev;
	ch->cxt->mem_allocated -= ch->size;
	ch->magic = 0;
	free(ch);
}

static void *
stub_realloc(void *p, Size size, int flags)
{
	StubChunk  *ch = stub_chunk_of(p, "repalloc");
	MemoryContext c = ch->cxt;
	Size		old = ch->size;

	stub_check_size(size, flags);
	if (size > stub_alloc_limit)
	{
		stub_big_allocs++;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on request of size %zu in memory context \"%s\" (fuzz limit).",
						   size, c->name)));
	}
	/* unlink, realloc, relink: the neighbours point at the old address */
	ch->prev->next = ch->next;
	ch->next->prev = ch->prev;
	ch = realloc(ch, sizeof(StubChunk) + size);
	if (ch == NULL)
		abort();
	{
		StubContext *sc = (StubContext *) c;

		ch->next = sc->head.next;
		ch->prev = &sc->head;
		sc->head.next->prev = ch;
		sc->head.next = ch;
	}
	ch->size = size;
	c->mem_allocated += size - old;
	return ch + 1;
}

void *
MemoryContextAlloc(MemoryContext c, Size size)
{
	return stub_alloc(c, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext c, Size size)
{
	return stub_alloc(c, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocZeroAligned(MemoryContext c, Size size)
{
	return stub_alloc(c, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocExtended(MemoryContext c, Size size, int flags)
{
	return stub_alloc(c, size, flags);
}

void *
MemoryContextAllocHuge(MemoryContext c, Size size)
{
	return stub_alloc(c, size, MCXT_ALLOC_HUGE);
}

void *
palloc(Size size)
{
	return stub_alloc(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return stub_alloc(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return stub_alloc(CurrentMemoryContext, size, flags);
}

void *
repalloc(void *p, Size size)
{
	return stub_realloc(p, size, 0);
}

void *
repalloc_huge(void *p, Size size)
{
	return stub_realloc(p, size, MCXT_ALLOC_HUGE);
}

Size
GetMemoryChunkSpace(void *p)
{
	return stub_chunk_of(p, "GetMemoryChunkSpace")->size + sizeof(StubChunk);
}

/*
 * The backend's overflow-checked size arithmetic (shmem.c).  Defined here:
 * PostgreSQL 15.20's frontend libpgcommon puts its own add_size and
 * mul_size into fe_memutils.o, whose palloc and friends would then clash
 * with the stubs above.
 */
Size
add_size(Size s1, Size s2)
{
	Size		result = s1 + s2;

	if (result < s1 || result < s2)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("requested shared memory size overflows size_t")));
	return result;
}

Size
mul_size(Size s1, Size s2)
{
	Size		result;

	if (s1 == 0 || s2 == 0)
		return 0;
	result = s1 * s2;
	if (result / s2 != s1)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("requested shared memory size overflows size_t")));
	return result;
}

char *
MemoryContextStrdup(MemoryContext c, const char *s)
{
	Size		len = strlen(s) + 1;
	char	   *r = stub_alloc(c, len, 0);

	memcpy(r, s, len);
	return r;
}

char *
pstrdup(const char *s)
{
	return MemoryContextStrdup(CurrentMemoryContext, s);
}

char *
pnstrdup(const char *s, Size len)
{
	char	   *r;

	len = strnlen(s, len);
	r = palloc(len + 1);
	memcpy(r, s, len);
	r[len] = '\0';
	return r;
}

size_t
pvsnprintf(char *buf, size_t len, const char *fmt, va_list args)
{
	int			n = vsnprintf(buf, len, fmt, args);

	if (n < 0)
		elog(ERROR, "vsnprintf failed with format \"%s\"", fmt);
	if ((size_t) n >= len)
		return (size_t) n + 1;
	return (size_t) n;
}

char *
psprintf(const char *fmt,...)
{
	size_t		len = 128;

	for (;;)
	{
		char	   *buf = palloc(len);
		va_list		ap;
		size_t		need;

		va_start(ap, fmt);
		need = pvsnprintf(buf, len, fmt, ap);
		va_end(ap);
		if (need < len)
			return buf;
		pfree(buf);
		len = need;
	}
}

/* ----------------------------------------------------------------
 * Harness side of memory and errors
 * ---------------------------------------------------------------- */

int			stub_last_sqlerrcode = 0;
char		stub_last_message[1024];

typedef struct ErrStat
{
	const char *file;
	int			line;
	int			sqlerrcode;
	long		count;
	char		sample[160];
} ErrStat;

#define MAX_ERRSTATS 512
static ErrStat errstats[MAX_ERRSTATS];
static int	nerrstats = 0;
static long nerrors_total = 0;
static long nerrors_lost = 0;

const char *
stub_sqlstate(int code)
{
	static char buf[6];

	for (int i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(code);
		code >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

static int
errstat_cmp(const void *a, const void *b)
{
	const ErrStat *x = a;
	const ErrStat *y = b;
	int			c = strcmp(x->file, y->file);

	if (c != 0)
		return c;
	if (x->line != y->line)
		return x->line - y->line;
	return strcmp(x->sample, y->sample);
}

static void
stub_print_errstats(void)
{
	if (getenv("FUZZ_ERROR_STATS") == NULL)
		return;
	qsort(errstats, nerrstats, sizeof(ErrStat), errstat_cmp);
	fprintf(stderr, "==mtms-fuzz== %ld ERRORs raised (expected outcomes), by origin:\n",
			nerrors_total);
	for (int i = 0; i < nerrstats; i++)
	{
		const char *base = strrchr(errstats[i].file, '/');

		fprintf(stderr, "==mtms-fuzz==   %s:%d %s x%ld  %s\n",
				base ? base + 1 : errstats[i].file, errstats[i].line,
				stub_sqlstate(errstats[i].sqlerrcode), errstats[i].count,
				errstats[i].sample);
	}
	if (nerrors_lost)
		fprintf(stderr, "==mtms-fuzz==   (%ld from further origins)\n", nerrors_lost);
	fprintf(stderr, "==mtms-fuzz== allocations refused by the fuzz size limit: %ld\n",
			stub_big_allocs);
}

void
stub_init(void)
{
	const char *lim;

	if (TopMemoryContext != NULL)
		return;
	TopMemoryContext = stub_context_new(NULL, "TopMemoryContext");
	ErrorContext = stub_context_new(TopMemoryContext, "ErrorContext");
	CurrentMemoryContext = TopMemoryContext;
	lim = getenv("FUZZ_ALLOC_LIMIT_MB");
	if (lim && atol(lim) > 0)
		stub_alloc_limit = (Size) atol(lim) * 1024 * 1024;
	atexit(stub_print_errstats);
}

MemoryContext
stub_begin_input(void)
{
	stub_init();
	if (input_context != NULL)
		stub_end_input();
	input_context = stub_context_new(TopMemoryContext, "fuzz input");
	stub_agg_context = input_context;
	CurrentMemoryContext = input_context;
	return input_context;
}

void
stub_end_input(void)
{
	CurrentMemoryContext = TopMemoryContext;
	if (input_context)
		MemoryContextDelete(input_context);
	input_context = NULL;
	stub_agg_context = NULL;
}

bool
stub_try(void (*fn) (void *), void *arg)
{
	sigjmp_buf	jb;
	sigjmp_buf *volatile save_stack = PG_exception_stack;
	MemoryContext volatile save_cxt = CurrentMemoryContext;

	if (sigsetjmp(jb, 0) == 0)
	{
		PG_exception_stack = &jb;
		fn(arg);
		PG_exception_stack = save_stack;
		if (CurrentMemoryContext != save_cxt)
			stub_finding("memory context \"%s\" left current instead of \"%s\"",
						 CurrentMemoryContext->name, save_cxt->name);
		return true;
	}
	PG_exception_stack = save_stack;
	CurrentMemoryContext = save_cxt;
	error_context_stack = NULL;
	return false;
}

/* ----------------------------------------------------------------
 * ereport / elog
 * ---------------------------------------------------------------- */

static struct
{
	bool		active;
	int			elevel;
	int			sqlerrcode;
	char		message[1024];
} cur_error;

static bool
stub_errstart(int elevel)
{
	if (elevel < ERROR)
		return false;
	/* a nested ERROR (e.g. out of memory formatting the message) wins */
	cur_error.active = true;
	cur_error.elevel = elevel;
	cur_error.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	cur_error.message[0] = '\0';
	return true;
}

bool
errstart(int elevel, const char *domain)
{
	return stub_errstart(elevel);
}

bool
errstart_cold(int elevel, const char *domain)
{
	return stub_errstart(elevel);
}

int
errcode(int sqlerrcode)
{
	cur_error.sqlerrcode = sqlerrcode;
	return 0;
}

int
errcode_for_file_access(void)
{
	cur_error.sqlerrcode = ERRCODE_IO_ERROR;
	return 0;
}

#define FORMAT_INTO(dst, fmt) \
	do { \
		va_list		ap_; \
		va_start(ap_, fmt); \
		vsnprintf((dst), sizeof(dst), (fmt), ap_); \
		va_end(ap_); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	FORMAT_INTO(cur_error.message, fmt);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	FORMAT_INTO(cur_error.message, fmt);
	return 0;
}

int
errmsg_plural(const char *fmt_singular, const char *fmt_plural,
			  unsigned long n,...)
{
	snprintf(cur_error.message, sizeof(cur_error.message), "%s", fmt_singular);
	return 0;
}

/* details, hints and context are checked for formatting only */
static char scratch_text[1024];

int
errdetail(const char *fmt,...)
{
	FORMAT_INTO(scratch_text, fmt);
	return 0;
}

int
errdetail_internal(const char *fmt,...)
{
	FORMAT_INTO(scratch_text, fmt);
	return 0;
}

int
errhint(const char *fmt,...)
{
	FORMAT_INTO(scratch_text, fmt);
	return 0;
}

int
errcontext_msg(const char *fmt,...)
{
	FORMAT_INTO(scratch_text, fmt);
	return 0;
}

int
set_errcontext_domain(const char *domain)
{
	return 0;
}

int
errposition(int cursorpos)
{
	return 0;
}

/* message class: numbers become #, quoted and parenthesised values "..." (...) */
static void
normalize_message(const char *msg, char *out, size_t outlen)
{
	size_t		n = 0;
	bool		inquote = false;

	int			paren = 0;

	for (const char *p = msg; *p && n + 5 < outlen; p++)
	{
		if (*p == '(' && !inquote)
		{
			if (paren++ == 0)
			{
				memcpy(out + n, "(...", 4);
				n += 4;
			}
		}
		else if (*p == ')' && paren > 0 && !inquote)
		{
			if (--paren == 0)
				out[n++] = ')';
		}
		else if (paren > 0)
			continue;
		else if (*p == '"')
		{
			if (!inquote)
			{
				memcpy(out + n, "\"...", 4);
				n += 4;
			}
			inquote = !inquote;
			if (!inquote)
				out[n++] = '"';
		}
		else if (inquote)
			continue;
		else if ((*p >= '0' && *p <= '9') || (*p == '-' && p[1] >= '0' && p[1] <= '9'))
		{
			if (n == 0 || out[n - 1] != '#')
				out[n++] = '#';
		}
		else
			out[n++] = *p;
	}
	out[n] = '\0';
}

static void
stub_count_error(const char *file, int line, int sqlerrcode, const char *msg)
{
	char		key[160];

	normalize_message(msg, key, sizeof(key));
	nerrors_total++;
	for (int i = 0; i < nerrstats; i++)
		if (errstats[i].line == line && strcmp(errstats[i].file, file) == 0 &&
			strcmp(errstats[i].sample, key) == 0)
		{
			errstats[i].count++;
			return;
		}
	if (nerrstats == MAX_ERRSTATS)
	{
		nerrors_lost++;
		return;
	}
	errstats[nerrstats].file = file;
	errstats[nerrstats].line = line;
	errstats[nerrstats].sqlerrcode = sqlerrcode;
	errstats[nerrstats].count = 1;
	snprintf(errstats[nerrstats].sample, sizeof(errstats[nerrstats].sample),
			 "%s", key);
	nerrstats++;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	cur_error.active = false;
	if (cur_error.elevel >= FATAL)
		stub_finding("%s at %s:%d: %s",
					 cur_error.elevel == FATAL ? "FATAL" : "PANIC",
					 filename, lineno, cur_error.message);
	stub_last_sqlerrcode = cur_error.sqlerrcode;
	snprintf(stub_last_message, sizeof(stub_last_message), "%s", cur_error.message);
	stub_count_error(filename, lineno, cur_error.sqlerrcode, cur_error.message);
	if (PG_exception_stack == NULL)
		stub_finding("ERROR outside any handler at %s:%d: %s",
					 filename, lineno, cur_error.message);
	siglongjmp(*PG_exception_stack, 1);
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
		stub_finding("pg_re_throw outside any handler");
	siglongjmp(*PG_exception_stack, 1);
}

/* ----------------------------------------------------------------
 * StringInfo (as src/common/stringinfo.c, backend flavour)
 * ---------------------------------------------------------------- */

void
initStringInfo(StringInfo str)
{
	str->maxlen = 1024;
	str->data = palloc(str->maxlen);
	resetStringInfo(str);
}

StringInfo
makeStringInfo(void)
{
	StringInfo	s = palloc(sizeof(StringInfoData));

	initStringInfo(s);
	return s;
}

void
resetStringInfo(StringInfo str)
{
	str->data[0] = '\0';
	str->len = 0;
	str->cursor = 0;
}

void
enlargeStringInfo(StringInfo str, int needed)
{
	int			newlen;

	if (needed < 0)
		elog(ERROR, "invalid string enlargement request size: %d", needed);
	if (((Size) needed) >= (MaxAllocSize - (Size) str->len))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("out of memory"),
				 errdetail("Cannot enlarge string buffer containing %d bytes by %d more bytes.",
						   str->len, needed)));
	needed += str->len + 1;
	if (needed <= str->maxlen)
		return;
	newlen = 2 * str->maxlen;
	while (needed > newlen)
		newlen = 2 * newlen;
	if (newlen > (int) MaxAllocSize)
		newlen = (int) MaxAllocSize;
	str->data = repalloc(str->data, newlen);
	str->maxlen = newlen;
}

void
appendBinaryStringInfo(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
	str->data[str->len] = '\0';
}

void
appendBinaryStringInfoNT(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
}

void
appendStringInfoString(StringInfo str, const char *s)
{
	appendBinaryStringInfo(str, s, strlen(s));
}

void
appendStringInfoChar(StringInfo str, char ch)
{
	enlargeStringInfo(str, 1);
	str->data[str->len++] = ch;
	str->data[str->len] = '\0';
}

void
appendStringInfoSpaces(StringInfo str, int count)
{
	if (count > 0)
	{
		enlargeStringInfo(str, count);
		memset(str->data + str->len, ' ', count);
		str->len += count;
		str->data[str->len] = '\0';
	}
}

int
appendStringInfoVA(StringInfo str, const char *fmt, va_list args)
{
	int			avail = str->maxlen - str->len;
	size_t		nprinted;

	if (avail < 16)
		return 32;
	nprinted = pvsnprintf(str->data + str->len, (size_t) avail, fmt, args);
	if (nprinted < (size_t) avail)
	{
		str->len += (int) nprinted;
		return 0;
	}
	str->data[str->len] = '\0';
	return (int) nprinted;
}

void
appendStringInfo(StringInfo str, const char *fmt,...)
{
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(str, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(str, needed);
	}
}

/* ----------------------------------------------------------------
 * varlena, text, encoding
 * ---------------------------------------------------------------- */

struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	/* a 1-byte header (a small value read from a tuple): 4-byte copy */
	if (VARATT_IS_SHORT(datum))
	{
		Size		data_size = VARSIZE_SHORT(datum) - VARHDRSZ_SHORT;
		struct varlena *r = palloc(data_size + VARHDRSZ);

		SET_VARSIZE(r, data_size + VARHDRSZ);
		memcpy(VARDATA(r), VARDATA_SHORT(datum), data_size);
		return r;
	}
	if (VARATT_IS_EXTENDED(datum))
		stub_trap("pg_detoast_datum of a toasted value");
	return datum;
}

struct varlena *
pg_detoast_datum_packed(struct varlena *datum)
{
	if (VARATT_IS_COMPRESSED(datum) || VARATT_IS_EXTERNAL(datum))
		stub_trap("pg_detoast_datum_packed of a toasted value");
	return datum;
}

struct varlena *
pg_detoast_datum_copy(struct varlena *datum)
{
	struct varlena *r = pg_detoast_datum(datum);
	struct varlena *c = palloc(VARSIZE(r));

	memcpy(c, r, VARSIZE(r));
	return c;
}

text *
cstring_to_text_with_len(const char *s, int len)
{
	text	   *t = palloc(len + VARHDRSZ);

	SET_VARSIZE(t, len + VARHDRSZ);
	memcpy(VARDATA(t), s, len);
	return t;
}

text *
cstring_to_text(const char *s)
{
	return cstring_to_text_with_len(s, strlen(s));
}

char *
text_to_cstring(const text *t)
{
	text	   *tunpacked = (text *) pg_detoast_datum_packed(unconstify(text *, t));
	int			len = VARSIZE_ANY_EXHDR(tunpacked);
	char	   *r = palloc(len + 1);

	memcpy(r, VARDATA_ANY(tunpacked), len);
	r[len] = '\0';
	return r;
}

/* The server encoding is UTF8: length of the character at s, as pg_utf_mblen. */
static int
utf8_mblen(const unsigned char *s)
{
	if ((*s & 0x80) == 0)
		return 1;
	if ((*s & 0xe0) == 0xc0)
		return 2;
	if ((*s & 0xf0) == 0xe0)
		return 3;
	if ((*s & 0xf8) == 0xf0)
		return 4;
	return 1;
}

int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	/* as pg_encoding_mbcliplen() for a multibyte server encoding */
	int			clen = 0;
	int			l;

	while (len > 0 && *mbstr)
	{
		l = utf8_mblen((const unsigned char *) mbstr);
		if ((clen + l) > limit)
			break;
		clen += l;
		if (clen == limit)
			break;
		len -= l;
		mbstr += l;
	}
	return clen;
}

int
pg_mblen(const char *mbstr)
{
	return utf8_mblen((const unsigned char *) mbstr);
}

int
GetDatabaseEncoding(void)
{
	return PG_UTF8;
}

char *
format_type_be(Oid type_oid)
{
	return psprintf("type %u", type_oid);
}

/* ----------------------------------------------------------------
 * Arrays (1-D and n-D, fixed or variable length elements)
 * ---------------------------------------------------------------- */

int
ArrayGetNItems(int ndim, const int *dims)
{
	int32		ret;

	if (ndim <= 0)
		return 0;
	ret = 1;
	for (int i = 0; i < ndim; i++)
	{
		int64		prod;

		if (dims[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("array size exceeds the maximum allowed (%d)",
							(int) MaxArraySize)));
		prod = (int64) ret * (int64) dims[i];
		ret = (int32) prod;
		if ((int64) ret != prod)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("array size exceeds the maximum allowed (%d)",
							(int) MaxArraySize)));
	}
	if ((Size) ret > MaxArraySize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("array size exceeds the maximum allowed (%d)",
						(int) MaxArraySize)));
	return (int) ret;
}

void
deconstruct_array(ArrayType *array, Oid elmtype, int elmlen, bool elmbyval,
				  char elmalign, Datum **elemsp, bool **nullsp, int *nelemsp)
{
	int			nelems;
	Datum	   *elems;
	bool	   *nulls;
	char	   *p;
	bits8	   *bitmap;
	int			bitmask;

	if (ARR_ELEMTYPE(array) != elmtype)
		elog(ERROR, "cannot deconstruct an array of type %u as %u",
			 ARR_ELEMTYPE(array), elmtype);
	nelems = ArrayGetNItems(ARR_NDIM(array), ARR_DIMS(array));
	*elemsp = elems = palloc(Max(nelems, 1) * sizeof(Datum));
	nulls = palloc0(Max(nelems, 1) * sizeof(bool));
	if (nullsp)
		*nullsp = nulls;
	*nelemsp = nelems;
	p = ARR_DATA_PTR(array);
	bitmap = ARR_NULLBITMAP(array);
	bitmask = 1;
	for (int i = 0; i < nelems; i++)
	{
		if (bitmap && (*bitmap & bitmask) == 0)
		{
			elems[i] = (Datum) 0;
			if (nullsp == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("null array element not allowed in this context")));
			nulls[i] = true;
		}
		else
		{
			elems[i] = fetch_att(p, elmbyval, elmlen);
			p = att_addlength_pointer(p, elmlen, p);
			p = (char *) att_align_nominal(p, elmalign);
		}
		if (bitmap)
		{
			bitmask <<= 1;
			if (bitmask == 0x100)
			{
				bitmap++;
				bitmask = 1;
			}
		}
	}
}

ArrayType *
construct_array(Datum *elems, int nelems, Oid elmtype, int elmlen,
				bool elmbyval, char elmalign)
{
	Size		nbytes = 0;
	ArrayType  *a;
	char	   *p;

	for (int i = 0; i < nelems; i++)
	{
		nbytes = att_addlength_datum(nbytes, elmlen, elems[i]);
		nbytes = att_align_nominal(nbytes, elmalign);
	}
	nbytes += ARR_OVERHEAD_NONULLS(1);
	a = palloc0(nbytes);
	SET_VARSIZE(a, nbytes);
	a->ndim = nelems > 0 ? 1 : 0;
	a->dataoffset = 0;
	a->elemtype = elmtype;
	if (nelems > 0)
	{
		ARR_DIMS(a)[0] = nelems;
		ARR_LBOUND(a)[0] = 1;
	}
	p = ARR_DATA_PTR(a);
	for (int i = 0; i < nelems; i++)
	{
		if (elmbyval)
			store_att_byval(p, elems[i], elmlen);
		else if (elmlen == -1)
			memcpy(p, DatumGetPointer(elems[i]), VARSIZE_ANY(DatumGetPointer(elems[i])));
		else
			memcpy(p, DatumGetPointer(elems[i]), elmlen);
		p = att_addlength_datum(p, elmlen, elems[i]);
		p = (char *) att_align_nominal(p, elmalign);
	}
	return a;
}

/* ----------------------------------------------------------------
 * fmgr, aggregates
 * ---------------------------------------------------------------- */

int
AggCheckCallContext(FunctionCallInfo fcinfo, MemoryContext *aggcontext)
{
	if (aggcontext)
		*aggcontext = stub_agg_context ? stub_agg_context : CurrentMemoryContext;
	return AGG_CONTEXT_AGGREGATE;
}

/* ----------------------------------------------------------------
 * Never reached by the fuzzed paths
 * ---------------------------------------------------------------- */

void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	stub_trap("InitMaterializedSRF");
}

void
tuplestore_putvalues(Tuplestorestate *state, TupleDesc tdesc,
					 Datum *values, bool *isnull)
{
	stub_trap("tuplestore_putvalues");
}

MtmsModelMeta *
mtms_model_lookup(const char *name, bool missing_ok, bool lock)
{
	stub_trap("mtms_model_lookup");
}

/* access.c */
void
mtms_check_privilege(const MtmsModelMeta *m, MtmsPrivilege privilege)
{
	stub_trap("mtms_check_privilege");
}

int
OpenTransientFile(const char *fileName, int fileFlags)
{
	stub_trap("OpenTransientFile");
}

int
CloseTransientFile(int fd)
{
	stub_trap("CloseTransientFile");
}

int
MakePGDirectory(const char *directoryName)
{
	stub_trap("MakePGDirectory");
}
