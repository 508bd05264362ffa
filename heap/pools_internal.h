/* heap/pools_internal.h -- the public pool layer's state
 * (include/poolheap_pools.h; DESIGN.md: pools.*).
 *
 * A php_heap holds a ph_heap core for what every client of the units shares
 * (chunks, units, size classes, the OS accounting, heap->lock, unit release)
 * and the layer's own state: owners, orphans, colours and the compaction's
 * scratch.  Its pools are ph_pool and its large blocks heap.large blocks:
 * one pool format for both clients. */
#ifndef PH_HEAP_POOLS_INTERNAL_H
#define PH_HEAP_POOLS_INTERNAL_H

#include "poolheap_pools.h"
#include "heap/heap.h"

#define PHP_SIG_HEAP 0x50484850u  /* "PHHP" */
#define PHP_SIG_OWNER 0x5048574eu /* "PHWN" */

/* pools.header: the layer's pools are ph_pool (heap.pool), the one pool
 * format: a free slot is a header word of 0 whose field 0 links the free
 * list.  The layer keeps nlive, nfree and live_words exact; owner is the
 * owner's index in the heap's owner table (PHP_NO_OWNER: orphaned).
 * Written by the owner's thread (allocation, sweep), under the lock
 * (creation, orphaning, adoption) or by one compaction participant. */
#define PHP_NO_OWNER UINT32_MAX
static inline ph_value *php_slots(ph_pool *p) {
  /* heap.pool.ool: the layer pins nothing, so its headers are in line */
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
  /* pools.alloc.fast: h->core and h->slot_recip, copied at creation so
   * that the fast path reads them one load away from the owner */
  struct ph_heap *core;
  ph_pool *avail[PH_MAX_CLASSES];
  uint64_t slot_recip[PH_MAX_CLASSES];
  ph_pool *full[PH_MAX_CLASSES];
  ph_pool *unswept_avail[PH_MAX_CLASSES];
  ph_pool *unswept_full[PH_MAX_CLASSES];
  php_large *large, *unswept_large;
  unsigned next_to_sweep; /* first class that may have unswept pools */
  php_counters c;
  /* pools.counters.alloc: the blocks and words php_alloc added since they
   * were last folded into c, by class (two adds a block); the reads of c
   * add them in (php_owner_counters, php_verify) */
  uint64_t alloc_blocks[PH_MAX_CLASSES];
  uint64_t alloc_words[PH_MAX_CLASSES];
  /* pools.sweep.work: since the last php_owner_sweep_work */
  intptr_t alloc_sweep_work; /* words php_alloc's sweeps worked through */
  uint64_t freed_words;      /* words o's sweeps freed */
  uint32_t index;            /* in the heap's owner table (pools.owner) */
  struct php_owner *prev_owner, *next_owner; /* heap->owners (lock) */
};

/* The orphans (heap->lock): swept pools and large blocks of no owner. */
typedef struct php_orphans {
  /* heads are atomics so that php_alloc can test them without the lock
   * (relaxed: a hint; the pop itself is under the lock) */
  _Atomic(ph_pool *) avail[PH_MAX_CLASSES];
  ph_pool *full[PH_MAX_CLASSES];
  php_large *large;
  php_counters c;
} php_orphans;

/* The compaction's scratch (compact/pools_compact.c), allocated by its
 * first run and freed at destroy through cp_free (a call down). */
struct php_compact;

struct php_heap {
  uint32_t sig;
  php_config cfg;
  int on_free_filter;   /* cfg.on_free_tags has a bit set (pools.sweep) */
  struct ph_heap *core; /* chunks, units, size classes, lock, OS layer */
  _Atomic unsigned garbage;
  struct php_owner *owners; /* (core->lock) */
  unsigned nowners;         /* (core->lock) */
  php_orphans orph;         /* (core->lock) */
  /* pools.owner: owner index -> owner, for ph_pool.owner (core->lock) */
  struct php_owner **otab;
  uint32_t otab_cap;
  /* (core->lock) figures */
  /* pools.bits: per class, 2^PH_RECIP_SHIFT / slot bytes rounded up (a
   * slot's index from its offset by a multiplication: exact, heap.h) */
  uint64_t slot_recip[PH_MAX_CLASSES];
  uint64_t compactions, evacuated_blocks, evacuated_bytes, evacuated_pools,
      released_bytes;
  struct php_compact *cp;
  void (*cp_free)(struct php_compact *cp);
  /* pools.helpers: the stacks of up to cfg.compact_helpers threads,
   * PHP_HELPER_STACK bytes each (ph_os_stack_map, at creation: as many as
   * the OS gave), and the online CPUs then; the last compaction's helpers
   * (core->lock) */
  void **helper_stacks;
  unsigned nhelper_stacks, ncpus, last_helpers;
};

#define PHP_HELPER_STACK ((size_t)256 << 10)

/* pools.reentry: set while a callback runs on this thread. */
extern _Thread_local int php_tls_callback;

/* heap/pools.c, for compact/pools_compact.c */
void php_sweep_pool_counts(struct php_heap *h, ph_pool *p, unsigned garbage,
                           unsigned live_mask, int set_bits, int *bad);
/* The owner of a pool (NULL: orphaned); lock held. */
static inline struct php_owner *php_pool_owner(const struct php_heap *h,
                                               const ph_pool *p) {
  return p->owner == PHP_NO_OWNER ? NULL : h->otab[p->owner];
}
void php_rebuild_lists_locked(struct php_heap *h);
uint64_t php_pool_frag_const(const struct php_heap *h, unsigned cls);
void php_call_on_free(struct php_heap *h, ph_value b);
/* Free a garbage large block's units (lock held); 0 if the OS refused. */
int php_large_free_locked(struct php_heap *h, php_large *l);

#endif
