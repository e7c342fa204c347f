/*
 * pg_stubs.h
 *    What the fuzz harnesses need from test/fuzz/pg_stubs.c: a per-input
 *    memory context, running a function under a PostgreSQL-style ERROR
 *    catcher, and statistics of the ERRORs seen.
 *
 * The stubs replace just enough of the backend (memory contexts on top of
 * malloc, ereport/elog that siglongjmp back to the harness, StringInfo,
 * detoasting of plain varlenas, a few array and fmgr helpers) to run the
 * project's own .c files unchanged in a standalone binary.  An ERROR is an
 * expected outcome for corrupt input; a sanitizer report, an abort() from
 * a stub (FATAL, an unexpected backend call) or a harness oracle failure is
 * a finding.
 */
#ifndef MTMS_FUZZ_PG_STUBS_H
#define MTMS_FUZZ_PG_STUBS_H

#include "postgres.h"

#include "utils/memutils.h"

/* Called once (idempotent): TopMemoryContext, atexit statistics. */
extern void stub_init(void);

/*
 * Per input: a fresh context below TopMemoryContext, made current;
 * stub_end_input deletes it (and everything made under it).
 */
extern MemoryContext stub_begin_input(void);
extern void stub_end_input(void);

/* The context AggCheckCallContext() reports (default: the input context). */
extern MemoryContext stub_agg_context;

/*
 * Run fn(arg) with PG_exception_stack set.  Returns true if it returned,
 * false if it raised an ERROR (then stub_last_sqlstate/stub_last_message
 * describe it).  CurrentMemoryContext is restored either way, as
 * PostgreSQL's error recovery would.
 */
extern bool stub_try(void (*fn) (void *), void *arg);

extern int	stub_last_sqlerrcode;
extern char stub_last_message[1024];

/* "22P02" from an ERRCODE */
extern const char *stub_sqlstate(int sqlerrcode);

/*
 * Allocations larger than this fail like an out-of-memory malloc would
 * (ERROR 53200), so that an input asking for absurd amounts of memory is
 * an error, not a libFuzzer out-of-memory report.  Default 256 MB,
 * FUZZ_ALLOC_LIMIT_MB to change.  stub_big_allocs counts such refusals.
 */
extern Size stub_alloc_limit;
extern long stub_big_allocs;

/* A finding of the harness itself (oracle mismatch): print and abort. */
extern void stub_finding(const char *fmt,...) pg_attribute_printf(1, 2) pg_attribute_noreturn();

#endif							/* MTMS_FUZZ_PG_STUBS_H */
