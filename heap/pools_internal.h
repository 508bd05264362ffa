/* heap/pools_internal.h -- the public pool layer's state
 * (include/poolheap_pools.h; DESIGN.md: pools.*).
 *
 * A php_heap holds a ph_heap core for what every client of the units shares
 * (chunks, units, size classes, the OS accounting, heap->lock, unit release)
 * and the layer's own state: owners, orphans, colours and the compaction's
 * scratch.  Pools and large blocks of the layer use the unit header prefix
 * of heap.unit (signature, kind) so that unit lookups work alike. */
#ifndef PH_HEAP_POOLS_INTERNAL_H
#define PH_HEAP_POOLS_INTERNAL_H

#include "poolheap_pools.h"
#include "heap/heap.h"

#define PHP_SIG_HEAP 0x50484850u  /* "PHHP" */
#define PHP_SIG_OWNER 0x5048574eu /* "PHWN" */
#define PHP_SIG_POOL 0x50485050u  /* "PHPP" */

/* pools.header: a pool of the layer.  Same place and size as ph_pool (one
 * unit: this header, the live bitmap, then the slots at hdr bytes); a free
 * slot is a header word of 0 whose field 0 links the free list.
 * Written by the owner's thread (allocation, sweep), under heap->lock
 * (creation, orphaning, adoption) or by one compaction participant. */
typedef struct php_pool {
  uint32_t sig;
  uint8_t kind; /* PH_U_POOL */
  uint8_t pad0;
  uint16_t cls;
  uint32_t nslots;
  uint32_t nlive;          /* allocated slots (header != 0) */
  uint64_t live_words;     /* sum of wosize + 1 over them */
  ph_value free;           /* first free slot's field 0, 0 if none */
  struct php_pool *next;   /* the list the pool is on */
  struct php_owner *owner; /* NULL: orphaned */
  struct ph_chunk *chunk;
  uint32_t unit;
  uint16_t hdr; /* bytes before the first slot */
  uint16_t pad1;
} php_pool;
_Static_assert(sizeof(php_pool) <= PH_POOL_HDR, "php_pool too big");

static inline uint64_t *php_pool_bits(php_pool *p) {
  return (uint64_t *)((char *)p + PH_POOL_HDR);
}
static inline ph_value *php_pool_slots(php_pool *p) {
  return (ph_value *)((char *)p + p->hdr);
}

/* A large block of the layer: a heap.large header (PH_SIG_LARGE; only its
 * pages committed, heap.large.commit) followed by the layer's links, then
 * the block header word at PH_LARGE_HDR, then field 0.  base.pad is 1 for a
 * garbage block whose units the OS would not take back (ph_large_free_locked
 * refused): on_free has seen it, it is freed again at its next sweep. */
typedef struct php_large {
  ph_large base;
  struct php_large *next;
  struct php_owner *owner; /* NULL: orphaned */
} php_large;
_Static_assert(sizeof(php_large) <= PH_LARGE_HDR, "php_large too big");

static inline ph_value php_large_block(php_large *l) {
  return (ph_value)((char *)l + PH_LARGE_HDR + 8);
}

/* pools.owner: per size class, swept pools with room (avail), swept full
 * pools (full), unswept ones that had room or were full when cycled; swept
 * and unswept large blocks; counters.  Written by the owner's thread only
 * (or with the world stopped), except the heap's list links (heap->lock). */
struct php_owner {
  uint32_t sig;
  int last_error;
  struct php_heap *h;
  php_pool *avail[PH_MAX_CLASSES];
  php_pool *full[PH_MAX_CLASSES];
  php_pool *unswept_avail[PH_MAX_CLASSES];
  php_pool *unswept_full[PH_MAX_CLASSES];
  php_large *large, *unswept_large;
  unsigned next_to_sweep; /* first class that may have unswept pools */
  php_counters c;
  struct php_owner *prev_owner, *next_owner; /* heap->owners (lock) */
};

/* The orphans (heap->lock): swept pools and large blocks of no owner. */
typedef struct php_orphans {
  /* heads are atomics so that php_alloc can test them without the lock
   * (relaxed: a hint; the pop itself is under the lock) */
  _Atomic(php_pool *) avail[PH_MAX_CLASSES];
  php_pool *full[PH_MAX_CLASSES];
  php_large *large;
  php_counters c;
} php_orphans;

/* One compaction participant's records (pools.compact). */
typedef struct php_cand {
  php_pool *pool;
  uint32_t nlive;
  uint32_t kept_range; /* compact.choose.ranges: in a range that stays */
} php_cand;

typedef struct php_cpart {
  php_cand *cands;
  size_t ncands, cands_cap;
  php_large **larges; /* live large blocks */
  size_t nlarges, larges_cap;
  php_pool *empty; /* pools swept empty, linked by next */
  php_large *dead; /* garbage large blocks, linked by next */
  int lost;        /* a record array could not grow */
  uint64_t moved_blocks, moved_bytes;
} php_cpart;

typedef struct php_evac {
  php_pool *dst;
  php_pool **src;     /* the class's evacuated pools */
  uint32_t src_first; /* index into src */
  uint32_t src_skip;  /* live blocks of src[src_first] moved by others */
  uint32_t count;     /* blocks to move into dst */
} php_evac;

/* The compaction's state, written by participant 0 between barriers. */
typedef struct php_compact {
  const php_compact_ops *ops;
  php_cpart *parts;
  unsigned parts_cap;
  _Atomic size_t claim_sweep, claim_evac, claim_update, claim_large;
  _Atomic int bad_colour; /* phase 1: a block of no known colour */
  unsigned live_mask, garbage;
  int fail; /* ENOMEM for the scratch: nothing happens */
  size_t total_units;
  size_t unit_base[PH_MAX_CHUNKS + 1];
  /* plan */
  php_pool **evac_pools; /* all evacuated pools */
  size_t nevac_pools;
  php_evac *units;
  size_t nunits;
  php_large **larges; /* every live large block */
  size_t nlarges;
  /* compact.update.map: one bit per unit over [map_lo, map_lo + map_units),
   * set for evacuated pools; read by visit and php_forward */
  _Atomic(uint64_t *) map;
  uintptr_t map_lo;
  size_t map_units;
} php_compact;

struct php_heap {
  uint32_t sig;
  php_config cfg;
  struct ph_heap *core; /* chunks, units, size classes, lock, OS layer */
  _Atomic unsigned garbage;
  struct php_owner *owners; /* (core->lock) */
  unsigned nowners;         /* (core->lock) */
  php_orphans orph;         /* (core->lock) */
  /* (core->lock) figures */
  uint64_t compactions, evacuated_blocks, evacuated_bytes, evacuated_pools,
      released_bytes;
  php_compact cp;
};

/* pools.reentry: set while a callback runs on this thread. */
extern _Thread_local int php_tls_callback;

/* heap/pools.c, for compact/pools_compact.c */
void php_sweep_pool_counts(struct php_heap *h, php_pool *p, unsigned garbage,
                           unsigned live_mask, int set_bits, int *bad);
void php_rebuild_lists_locked(struct php_heap *h);
uint64_t php_pool_frag_const(const struct php_heap *h, unsigned cls);
void php_call_on_free(struct php_heap *h, ph_value b);
/* Free a garbage large block's units (lock held); 0 if the OS refused. */
int php_large_free_locked(struct php_heap *h, php_large *l);

#endif
