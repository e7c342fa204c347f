/*
 * proj_shared.c
 *    A shared, insert-only projection cache (see proj_shared.h).
 */
#include "proj_shared.h"

#include "embedding_store.h"	/* mtms_prefetch */
#include "port/atomics.h"
#include "storage/lwlock.h"

#define PS_CHUNK		256		/* vectors per chunk */
#define PS_INITIAL		1024	/* entries of a tower's first table */
#define PS_EMPTY		0
#define PS_READY		1

typedef struct PsEntry
{
	uint64		hash;
	dsa_pointer vec;			/* InvalidDsaPointer: projects to zero */
	int32		field;
	pg_atomic_uint32 state;		/* PS_READY once the rest is written */
} PsEntry;

typedef struct PsTable
{
	uint64		size;			/* a power of 2 */
	uint64		members;
	dsa_pointer prev;			/* the table it replaced (still readable) */
	PsEntry		data[FLEXIBLE_ARRAY_MEMBER];
} PsTable;

typedef struct PsChunk
{
	dsa_pointer next;			/* chunks of a tower, newest first */
	/* then PS_CHUNK vectors, 64-byte aligned */
} PsChunk;

#define PS_CHUNK_HEADER		TYPEALIGN(64, sizeof(PsChunk))

typedef struct PsTower
{
	LWLock		lock;			/* inserts */
	pg_atomic_uint64 table;		/* dsa_pointer of the current table, or 0 */
	dsa_pointer chunks;			/* the newest chunk (under lock) */
	int64		nvec;			/* vectors in the chunks (under lock) */
} PsTower;

struct MtmsProjShared
{
	int			npairs;
	int			h1p;
	pg_atomic_uint64 bytes;
	pg_atomic_uint64 keys;
	pg_atomic_uint64 zero_keys;
	PsTower		towers[FLEXIBLE_ARRAY_MEMBER];
};

static inline uint64
ps_slot(uint64 hash)
{
	return hash ^ (hash >> 32);	/* feature hashes are well mixed already */
}

static Size
table_bytes(uint64 size)
{
	return offsetof(PsTable, data) + sizeof(PsEntry) * size;
}

dsa_pointer
mtms_proj_shared_create(dsa_area *area, int npairs, int h1p, int tranche)
{
	Size		size = offsetof(MtmsProjShared, towers) + sizeof(PsTower) * npairs;
	dsa_pointer dp = dsa_allocate_extended(area, size, DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
	MtmsProjShared *ps;

	if (!DsaPointerIsValid(dp))
		return dp;
	ps = dsa_get_address(area, dp);
	ps->npairs = npairs;
	ps->h1p = h1p;
	pg_atomic_init_u64(&ps->bytes, size);
	pg_atomic_init_u64(&ps->keys, 0);
	pg_atomic_init_u64(&ps->zero_keys, 0);
	for (int p = 0; p < npairs; p++)
	{
		LWLockInitialize(&ps->towers[p].lock, tranche);
		pg_atomic_init_u64(&ps->towers[p].table, InvalidDsaPointer);
		ps->towers[p].chunks = InvalidDsaPointer;
		ps->towers[p].nvec = 0;
	}
	return dp;
}

/* Nobody uses the version any more: no lock needed. */
void
mtms_proj_shared_free(dsa_area *area, dsa_pointer dp)
{
	MtmsProjShared *ps = dsa_get_address(area, dp);

	for (int p = 0; p < ps->npairs; p++)
	{
		dsa_pointer t = pg_atomic_read_u64(&ps->towers[p].table);
		dsa_pointer c = ps->towers[p].chunks;

		while (DsaPointerIsValid(t))
		{
			dsa_pointer prev = ((PsTable *) dsa_get_address(area, t))->prev;

			dsa_free(area, t);
			t = prev;
		}
		while (DsaPointerIsValid(c))
		{
			dsa_pointer next = ((PsChunk *) dsa_get_address(area, c))->next;

			dsa_free(area, c);
			c = next;
		}
	}
	dsa_free(area, dp);
}

static inline PsTable *
current_table(dsa_area *area, PsTower *tw)
{
	dsa_pointer t = pg_atomic_read_u64(&tw->table);

	if (!DsaPointerIsValid(t))
		return NULL;
	pg_read_barrier();			/* the table's contents after its pointer */
	return dsa_get_address(area, t);
}

/* The published entry of (hash, field) in tab, or NULL. */
static inline PsEntry *
table_find(PsTable *tab, uint64 hash, int32 field)
{
	uint64		mask = tab->size - 1;

	for (uint64 i = ps_slot(hash) & mask;; i = (i + 1) & mask)
	{
		PsEntry    *e = &tab->data[i];

		if (pg_atomic_read_u32(&e->state) != PS_READY)
			return NULL;
		pg_read_barrier();		/* the entry's fields after its state */
		if (e->hash == hash && e->field == field)
			return e;
	}
}

bool
mtms_proj_shared_lookup(dsa_area *area, MtmsProjShared *ps, int p,
						uint64 hash, int32 field, const float **vec)
{
	PsTable    *tab = current_table(area, &ps->towers[p]);
	PsEntry    *e;

	if (tab == NULL || (e = table_find(tab, hash, field)) == NULL)
		return false;
	*vec = DsaPointerIsValid(e->vec) ? dsa_get_address(area, e->vec) : NULL;
	return true;
}

void
mtms_proj_shared_prefetch(dsa_area *area, MtmsProjShared *ps, int p, uint64 hash)
{
	PsTable    *tab = current_table(area, &ps->towers[p]);

	if (tab)
		mtms_prefetch(&tab->data[ps_slot(hash) & (tab->size - 1)]);
}

/* Reserve bytes within cap; false when they do not fit. */
static bool
reserve(MtmsProjShared *ps, Size bytes, Size cap)
{
	uint64		now = pg_atomic_fetch_add_u64(&ps->bytes, bytes);

	if (now + bytes <= cap)
		return true;
	pg_atomic_fetch_sub_u64(&ps->bytes, bytes);
	return false;
}

/* Put a published entry into tab (the tower's lock held, tab not full). */
static void
table_put(PsTable *tab, uint64 hash, int32 field, dsa_pointer vec)
{
	uint64		mask = tab->size - 1;
	uint64		i = ps_slot(hash) & mask;

	while (pg_atomic_read_u32(&tab->data[i].state) == PS_READY)
		i = (i + 1) & mask;
	tab->data[i].hash = hash;
	tab->data[i].field = field;
	tab->data[i].vec = vec;
	pg_write_barrier();			/* the fields before the state */
	pg_atomic_write_u32(&tab->data[i].state, PS_READY);
	tab->members++;
}

/* A table with room for one more entry (the tower's lock held), or NULL. */
static PsTable *
table_with_room(dsa_area *area, MtmsProjShared *ps, PsTower *tw, Size cap)
{
	PsTable    *old = current_table(area, tw);
	uint64		size = old ? old->size * 2 : PS_INITIAL;
	dsa_pointer dp;
	PsTable    *tab;

	if (old && (old->members + 1) * 4 <= old->size * 3)
		return old;
	if (!reserve(ps, table_bytes(size), cap))
		return NULL;
	dp = dsa_allocate_extended(area, table_bytes(size),
							   DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO | DSA_ALLOC_HUGE);
	if (!DsaPointerIsValid(dp))
	{
		pg_atomic_fetch_sub_u64(&ps->bytes, table_bytes(size));
		return NULL;
	}
	tab = dsa_get_address(area, dp);
	tab->size = size;
	tab->members = 0;
	tab->prev = pg_atomic_read_u64(&tw->table);
	for (uint64 i = 0; i < size; i++)
		pg_atomic_init_u32(&tab->data[i].state, PS_EMPTY);
	if (old)
		for (uint64 i = 0; i < old->size; i++)
			if (pg_atomic_read_u32(&old->data[i].state) == PS_READY)
				table_put(tab, old->data[i].hash, old->data[i].field, old->data[i].vec);
	pg_write_barrier();			/* the table before its pointer */
	pg_atomic_write_u64(&tw->table, dp);
	return tab;
}

/* Room for the tower's next vector (its lock held), or Invalid. */
static dsa_pointer
vector_slot(dsa_area *area, MtmsProjShared *ps, PsTower *tw, Size cap)
{
	Size		vbytes = sizeof(float) * ps->h1p;
	int64		k = tw->nvec % PS_CHUNK;

	if (k == 0)
	{
		Size		bytes = PS_CHUNK_HEADER + vbytes * PS_CHUNK;
		dsa_pointer dp;

		if (!reserve(ps, bytes, cap))
			return InvalidDsaPointer;
		dp = dsa_allocate_extended(area, bytes, DSA_ALLOC_NO_OOM);
		if (!DsaPointerIsValid(dp))
		{
			pg_atomic_fetch_sub_u64(&ps->bytes, bytes);
			return InvalidDsaPointer;
		}
		((PsChunk *) dsa_get_address(area, dp))->next = tw->chunks;
		tw->chunks = dp;
	}
	tw->nvec++;
	return tw->chunks + PS_CHUNK_HEADER + vbytes * k;
}

const float *
mtms_proj_shared_insert(dsa_area *area, MtmsProjShared *ps, int p,
						uint64 hash, int32 field, bool known,
						const float *vec, Size cap, bool *kept)
{
	PsTower    *tw = &ps->towers[p];
	PsTable    *tab;
	PsEntry    *e;
	dsa_pointer vdp = InvalidDsaPointer;
	const float *result = known ? vec : NULL;

	*kept = false;
	LWLockAcquire(&tw->lock, LW_EXCLUSIVE);
	tab = current_table(area, tw);
	if (tab && (e = table_find(tab, hash, field)) != NULL)
	{
		/* another session kept it meanwhile: the same bits */
		*kept = true;
		LWLockRelease(&tw->lock);
		return DsaPointerIsValid(e->vec) ? dsa_get_address(area, e->vec) : NULL;
	}
	tab = table_with_room(area, ps, tw, cap);
	if (tab != NULL && known)
		vdp = vector_slot(area, ps, tw, cap);
	if (tab != NULL && (!known || DsaPointerIsValid(vdp)))
	{
		if (known)
		{
			float	   *dst = dsa_get_address(area, vdp);

			memcpy(dst, vec, sizeof(float) * ps->h1p);
			result = dst;
		}
		table_put(tab, hash, field, vdp);
		pg_atomic_fetch_add_u64(&ps->keys, 1);
		if (!known)
			pg_atomic_fetch_add_u64(&ps->zero_keys, 1);
		*kept = true;
	}
	LWLockRelease(&tw->lock);
	return result;
}

void
mtms_proj_shared_stats(MtmsProjShared *ps, int64 *keys, int64 *zero_keys,
					   int64 *bytes)
{
	*keys = (int64) pg_atomic_read_u64(&ps->keys);
	*zero_keys = (int64) pg_atomic_read_u64(&ps->zero_keys);
	*bytes = (int64) pg_atomic_read_u64(&ps->bytes);
}
