/*
 * fake_spi.h
 *    A table-less SPI for fuzz_model_load: the harness decides what rows
 *    the three queries of mtms_model_load() return.
 */
#ifndef MTMS_FUZZ_FAKE_SPI_H
#define MTMS_FUZZ_FAKE_SPI_H

#include "postgres.h"

#define FAKE_MAX_ATTS 12

typedef struct FakeRow
{
	int			natts;
	Datum		values[FAKE_MAX_ATTS];
	bool		nulls[FAKE_MAX_ATTS];
	bool		varlena[FAKE_MAX_ATTS]; /* copy VARSIZE bytes per fetch */
} FakeRow;

typedef enum FakeQuery
{
	FAKE_VERSION = 0,			/* SELECT scenes, fields FROM mtms_version */
	FAKE_EMBEDDING = 1,			/* cursor over mtms_embedding */
	FAKE_TOWER = 2,				/* SELECT ... FROM mtms_tower */
	FAKE_NQUERIES
} FakeQuery;

/* Forget rows and SPI state (at the start of each input). */
extern void fake_spi_reset(void);
/* Rows the query will return (the array is used, not copied). */
extern void fake_spi_set_rows(FakeQuery q, FakeRow *rows, int nrows);
/* SPI_connect without SPI_finish (left by an ERROR) is fine; nesting is not. */
extern int	fake_spi_depth(void);

#endif							/* MTMS_FUZZ_FAKE_SPI_H */
