/* heap/internal.h -- poolheap's internal structures (DESIGN.md: heap.*).
 *
 * Naming: functions say how they may be called.
 *   _stw         every participant of a stop-the-world section calls it
 *   _stw_single  one participant calls it while the world is stopped
 *   _locked      the caller holds heap->lock
 *   _owner       only the thread that owns the domain calls it
 * Prefixes: ph_os_ (heap/os*), ph_chunk_/ph_unit_ (heap/chunk.c), ph_pool_
 * (heap/pool.c), ph_mark_, ph_sweep_, ph_stw_/ph_barrier_ (barrier/),
 * ph_roots_ (roots/), ph_compact_ (compact/).
 */
#ifndef PH_HEAP_INTERNAL_H
#define PH_HEAP_INTERNAL_H

#include "poolheap.h"
#include "os/os.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------- assertions */
/* PH_DEBUG 0: release (bad input returns errors, no internal asserts).
 * PH_DEBUG 1: cheap assertions.  PH_DEBUG 2: also expensive whole-structure
 * checks (heap verification around every collection) and poisoning. */
#ifndef PH_DEBUG
#define PH_DEBUG 0
#endif
void ph_assert_fail(const char *cond, const char *file, int line);
#if PH_DEBUG
#define PH_ASSERT(c) ((c) ? (void)0 : ph_assert_fail(#c, __FILE__, __LINE__))
#else
#define PH_ASSERT(c) ((void)0)
#endif
#define PH_EXPENSIVE (PH_DEBUG >= 2)
#define PH_POISON (PH_DEBUG >= 1)
#define PH_POISON_WORD ((ph_value)0xdeadbeefdeadbee0ull)

/* ------------------------------------------------------------- headers */
/* heap.block.header: wosize << 10 | color << 8 | tag.  Colors belong to the
 * collector:
 *   WHITE  allocated, not (yet) marked; every block between collections
 *   BLACK  marked by the current collection (only inside stop-the-world)
 *   BLUE   a free slot on its pool's free list; field 0 links the list
 *   FWD    evacuated by compaction; field 0 is the new address */
enum { PH_WHITE = 0, PH_BLACK = 1, PH_BLUE = 2, PH_FWD = 3 };
#define PH_HD_COLOR_SHIFT 8
#define PH_HD_COLOR_MASK ((ph_value)3 << PH_HD_COLOR_SHIFT)
static inline ph_value ph_hd_make(size_t wosize, unsigned color, unsigned tag) {
  return ((ph_value)wosize << PH_HD_WOSIZE_SHIFT) |
         ((ph_value)color << PH_HD_COLOR_SHIFT) | (ph_value)tag;
}
static inline unsigned ph_hd_color(ph_value hd) {
  return (unsigned)((hd >> PH_HD_COLOR_SHIFT) & 3);
}
static inline size_t ph_hd_wosize(ph_value hd) {
  return (size_t)(hd >> PH_HD_WOSIZE_SHIFT);
}
static inline unsigned ph_hd_tag(ph_value hd) {
  return (unsigned)(hd & PH_HD_TAG_MASK);
}
static inline ph_value *ph_hp(ph_value v) {
  return (ph_value *)v - 1;
}
/* Header reads inside parallel phases, where another participant may be
 * setting the mark bit of the same word with an atomic RMW. */
static inline ph_value ph_hd_load(ph_value v) {
  return __atomic_load_n(ph_hp(v), __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------- signatures */
#define PH_SIG_HEAP 0x48454150u   /* "HEAP" */
#define PH_SIG_DOMAIN 0x444f4d4eu /* "DOMN" */
#define PH_SIG_POOL 0x504f4f4cu   /* "POOL" */
#define PH_SIG_LARGE 0x4c415247u  /* "LARG" */
#define PH_SIG_DEAD 0xdeadd00du

/* --------------------------------------------------------- size classes */
/* heap.sizeclass: see heap/sizeclass.c for the rule. */
#define PH_MAX_CLASSES 64
_Static_assert(1024 <= UINT16_MAX, "owner fits a ph_cand");
#define PH_MAX_SMALL_WSIZE 257 /* words per slot, header included */

/* ---------------------------------------------------------------- units */
/* heap.unit: a chunk is divided into units of pool_size bytes.  A unit is
 * free (decommitted or committed), a pool, or part of a large block. */
enum {
  PH_U_FREE = 0,      /* Reserved: no pages */
  PH_U_FREE_COMM = 1, /* Committed, not in use (free pool memory) */
  PH_U_POOL = 2,
  PH_U_LARGE = 3,      /* first unit of a large block */
  PH_U_LARGE_TAIL = 4, /* further units of a large block */
};

/* The prefix shared by pool and large-block unit headers: every block
 * pointer p has its unit header at p & ~(pool_size-1) (heap.unit.lookup). */
typedef struct ph_unit_hdr {
  uint32_t sig;
  uint8_t kind;      /* PH_U_POOL or PH_U_LARGE */
  uint8_t evacuated; /* compaction: set in phase 2, read in phase 4 */
  uint16_t cls;      /* size class (pools) */
} ph_unit_hdr;

struct ph_chunk;

/* heap.pool: a pool of equal slots of one size class.
 * Invariant (outside stop-the-world, pool not cached by its owner):
 *   nlive + nfree == nslots, nfree == length(free list) == BLUE slots.
 * While cached (owner's alloc cache holds its free list), nlive/nfree/free
 * are stale and the cache is the truth; caches are flushed on entry to every
 * stop-the-world section.
 * Who writes: the owner (allocation), under heap->lock (creation), or any
 * participant inside stop-the-world (sweep, compaction), each pool by one
 * participant at a time (claimed with an atomic counter). */
typedef struct ph_pool {
  uint32_t sig;
  uint8_t kind;
  uint8_t evacuated;
  uint16_t cls;
  uint32_t owner; /* domain slot index */
  uint32_t nslots;
  uint32_t nlive;
  uint32_t nfree;
  ph_value free;          /* first free block (field 0 address), 0 if none */
  struct ph_pool *next;   /* owner's avail list (pools with free slots) */
  struct ph_chunk *chunk; /* chunk holding this unit */
  uint32_t unit;          /* unit index within chunk */
  uint16_t cached;        /* 1 while an owner's alloc cache holds it */
  uint16_t hdr;           /* bytes before the first slot (heap->pool_hdr) */
} ph_pool;
/* The fixed header; then the live bitmap (heap.pool.bitmap: one bit per
 * slot, written by the sweep, read by compaction), then the slots at
 * heap->pool_hdr bytes from the start. */
#define PH_POOL_HDR 64u
_Static_assert(sizeof(ph_pool) <= PH_POOL_HDR, "pool header too big");
static inline uint64_t *ph_pool_bits(ph_pool *p) {
  return (uint64_t *)((char *)p + PH_POOL_HDR);
}

/* heap.large: a block too big for a size class, in nunits whole units. */
typedef struct ph_large {
  uint32_t sig;
  uint8_t kind;
  uint8_t evacuated; /* always 0: large blocks never move */
  uint16_t pad;
  uint32_t nunits;
  uint32_t unit;
  struct ph_chunk *chunk;
  struct ph_large *dead_next; /* sweep: dead large blocks of one worker */
  size_t comm; /* heap.large.commit: bytes committed from this unit's start
                  (the block's pages); the rest of its units is Reserved */
} ph_large;
#define PH_LARGE_HDR 64u /* then the block header word, then field 0 */
_Static_assert(sizeof(ph_large) <= PH_LARGE_HDR, "large header too big");

/* heap.chunk: one reservation (one kernel mapping).
 * Invariant: nfree == count of PH_U_FREE + PH_U_FREE_COMM in ustate.
 * All fields are written under heap->lock or by one participant inside
 * stop-the-world (release phase). */
typedef struct ph_chunk {
  char *base;
  size_t size;
  uint32_t nunits;
  uint32_t nfree;
  uint32_t hint; /* no free unit below this index */
  int huge;      /* PH_OS_HUGE_* obtained */
  uint8_t *ustate;
} ph_chunk;
#define PH_MAX_CHUNKS 4096

/* -------------------------------------------------------------- domains */
enum { PH_DS_FREE = 0, PH_DS_RUNNING = 1, PH_DS_BLOCKING = 2 };

typedef struct ph_alloc_cache {
  ph_value free;          /* next free block of the cached pool, 0 if none */
  uint32_t nfree;         /* length of that list */
  uint32_t nfree_charged; /* nfree when pacing was last charged (heap.pacing) */
  ph_pool *pool;          /* cached pool, NULL if none */
} ph_alloc_cache;

/* roots.stack: segments that never move, so ph_root's slots stay put. */
#define PH_ROOTSEG_SLOTS 1022
typedef struct ph_rootseg {
  struct ph_rootseg *prev;
  size_t used;
  ph_value slot[PH_ROOTSEG_SLOTS];
} ph_rootseg;
/* roots.mark: an open scope, its mark and the depth to pop back to. */
typedef struct ph_scope_rec {
  size_t mark;
  size_t depth;
} ph_scope_rec;

/* A domain slot: the per-owner state that outlives a domain's attachment
 * (its pools stay owned by the slot; the next domain attached to the slot
 * adopts them).  avail lists: written by the attached domain outside
 * stop-the-world, rebuilt by the sweep (atomic pushes) inside it. */
typedef struct ph_slot {
  _Atomic(ph_pool *) avail[PH_MAX_CLASSES];
  struct ph_domain *dom; /* attached domain, NULL if none (heap->lock) */
} ph_slot;

/* heap.domain.handle: a handle is recycled only through its heap's
 * retired list, so `heap` never changes.  A stale call may read sig, owner,
 * index and last_error while the handle is being recycled for another
 * thread: those are atomics (index through __atomic builtins); a call whose
 * owner check fails reads nothing else. */
struct ph_domain {
  _Atomic uint32_t sig; /* PH_SIG_DOMAIN while attached, PH_SIG_DEAD after */
  unsigned index;       /* slot index */
  struct ph_heap *heap;
  _Atomic uintptr_t owner; /* ph_thread_tag() of the attaching thread */
  int state;               /* PH_DS_*: written under heap->lock */
  _Atomic int last_error;  /* owner; a detached handle's under heap->lock */
  uint64_t stw_expected;   /* epoch of the STW that counts on us (lock) */
  ph_alloc_cache cache[PH_MAX_CLASSES]; /* owner, or flush at STW entry */
  /* roots.stack (owner; read and updated by stop-the-world participants) */
  ph_rootseg *roots;
  size_t depth;         /* slots pushed in all segments */
  ph_scope_rec *scopes; /* open scopes, innermost last */
  size_t nscopes, scopes_cap;
  uint64_t scope_serial;          /* scopes opened so far (roots.mark) */
  _Atomic uint64_t allocated;     /* bytes; owner stores (relaxed), any reads */
  struct ph_domain *retired_next; /* heap->retired list after detach */
  struct ph_domain *thread_next;  /* owner: ph_tl_domains list */
};

/* heap.domain.exit: the domains attached by the calling thread (a list
 * through thread_next), detached by a thread-exit destructor.  Its address
 * is the thread's tag for the owner check (unique among live threads). */
extern _Thread_local struct ph_domain *ph_tl_domains
    __attribute__((tls_model("initial-exec")));
static inline uintptr_t ph_thread_tag(void) {
  return (uintptr_t)&ph_tl_domains;
}
/* Detached handles kept before the oldest is recycled (heap.domain). */
#define PH_RETIRED_KEEP 64u

/* ------------------------------------------------------------- barriers */
/* barrier.sense: a reusable barrier for n threads (mutex + condvar). */
typedef struct ph_barrier {
  pthread_mutex_t m;
  pthread_cond_t c;
  unsigned n, waiting;
  uint64_t gen;
} ph_barrier;
void ph_barrier_init(ph_barrier *b);
void ph_barrier_destroy(ph_barrier *b);
void ph_barrier_reset(ph_barrier *b, unsigned n);
/* Returns 1 in exactly one thread (the last to arrive). */
int ph_barrier_wait(ph_barrier *b);

/* ----------------------------------------------------------- marking */
typedef struct ph_mark_entry {
  ph_value v;   /* block */
  size_t start; /* first field still to scan */
  size_t end;   /* one past the last field to scan; 0: the whole block */
} ph_mark_entry;

typedef struct ph_mark_stack {
  ph_mark_entry *e;
  size_t n, cap;
} ph_mark_stack;

/* compact.phase.stats: a partly filled pool as the sweep saw it.  The
 * compactor plans from these dense records and never reads the pool
 * headers to plan (they lie at a pool_size stride: each one is a TLB and
 * cache miss). */
typedef struct ph_cand {
  ph_pool *pool;
  uint32_t nlive;
  uint16_t cls;
  uint16_t owner;
} ph_cand;

/* One participant's scratch state in a stop-the-world section. */
typedef struct ph_worker {
  unsigned id; /* participant index 0..nparts-1 */
  struct ph_domain *dom;
  ph_mark_stack stack;
#define PH_MARK_AHEAD 16 /* mark.prefetch ring, a power of two */
  ph_value ring[PH_MARK_AHEAD];
  unsigned ring_n; /* values queued (only the last PH_MARK_AHEAD kept) */
  uint64_t live_bytes, live_blocks;
  uint64_t t_mark, t_sweep, t_evac, t_update, t_release;
  /* sweep results to hand back under the lock */
  ph_pool *empty_pools; /* pools found empty, linked by next */
  ph_large *dead_large; /* dead large blocks, linked by dead_next */
  /* compaction */
  uint64_t evac_blocks, evac_bytes;
  uint64_t frag_bytes; /* sweep: free slot bytes in partly filled pools */
  /* sweep -> compaction (compact.phase.stats) */
  ph_cand *cands;
  size_t ncands, cands_cap;
  ph_large **larges; /* surviving scanned large blocks */
  size_t nlarges, larges_cap;
  int records_lost; /* a record array could not grow: do not compact */
} ph_worker;

/* Shared packets of mark work (mark.share). */
typedef struct ph_mark_packet {
  struct ph_mark_packet *next;
  size_t n;
  ph_mark_entry e[];
} ph_mark_packet;

/* -------------------------------------------------------------- STW */
enum {
  PH_STW_COLLECT = 1,
  PH_STW_COMPACT = 2,
  PH_STW_VERIFY = 4,
  PH_STW_CENSUS = 8,
  PH_STW_AUTO = 16, /* triggered by pacing: may compact (compact_percent) */
};

typedef struct ph_census_req {
  void (*fn)(const ph_census_class *c, void *user);
  void *user;
} ph_census_req;

struct ph_worker;
/* The body of a section: every participant runs it (barrier.stw). */
typedef void (*ph_stw_body)(struct ph_heap *h, struct ph_worker *w);

/* One stop-the-world section (barrier.stw).  Fields marked (lock) are
 * written under heap->lock; the rest by participants, ordered by barriers. */
typedef struct ph_stw {
  uint64_t epoch;   /* (lock) */
  int kind;         /* (lock) */
  unsigned nparts;  /* (lock) participants expected */
  unsigned arrived; /* (lock) */
  unsigned left;    /* (lock) participants that finished */
  struct ph_domain *leader;
  ph_worker *workers; /* nparts entries */
  ph_barrier bar;
  /* results of verify/census, written by the leader */
  char *why;
  size_t why_size;
  int result;
  int do_compact; /* leader decides after the sweep (auto compaction) */
  int did;        /* PH_STW_COLLECT|PH_STW_COMPACT: what the body did */
  ph_stw_body body; /* (lock) what every participant runs */
  ph_census_req census;
  /* work distribution: claimed with atomic fetch_add */
  _Atomic size_t claim_roots;
  _Atomic size_t claim_units;
  _Atomic size_t claim_large;
  _Atomic size_t claim_a, claim_b, claim_c;
  /* mark termination (mark.share) */
  pthread_mutex_t mark_lock;
  pthread_cond_t mark_cond;
  ph_mark_packet *shared;    /* (mark_lock) */
  unsigned idle;             /* (mark_lock) */
  int mark_done;             /* (mark_lock) */
  _Atomic unsigned hungry;   /* participants waiting for work */
  _Atomic int mark_overflow; /* a stack could not grow: rescan needed */
  /* unit index space over the chunks, fixed for the section */
  size_t total_units;
  size_t unit_base[PH_MAX_CHUNKS + 1];
  /* compaction plan (compact/) */
  struct ph_compact_plan *plan;
} ph_stw;

/* --------------------------------------------------------------- heap */
struct ph_heap {
  uint32_t sig;
  ph_config cfg;
  size_t pool_size;
  size_t pool_hdr; /* pool header + live bitmap, a multiple of 64 */
  unsigned pool_shift;
  uintptr_t pool_mask; /* ~(pool_size - 1) */
  /* heap.sizeclass (immutable after create) */
  unsigned nclasses;
  uint32_t class_wsize[PH_MAX_CLASSES]; /* slot words, header included */
  uint32_t class_nslots[PH_MAX_CLASSES];
  size_t max_small_wosize;
  uint8_t wosize_class[PH_MAX_SMALL_WSIZE + 1];

  ph_os_acct os;
  size_t commit_cap; /* RAM + swap: committed bytes never exceed it */

  /* heap->lock guards: chunks and units, domain slots and states, the STW
   * election, the retired list, heap-level stats. */
  pthread_mutex_t lock;
  pthread_cond_t cond;             /* STW start/end, arrivals */
  ph_chunk *chunks[PH_MAX_CHUNKS]; /* sorted by base */
  unsigned nchunks;
  size_t pool_units, large_units; /* units in use */
  size_t large_comm;              /* bytes committed by large blocks */
  ph_slot *slots;                 /* cfg.max_domains */
  unsigned ndomains;
  struct ph_domain *retired; /* detached handles, oldest first (FIFO) */
  struct ph_domain *retired_tail;
  unsigned nretired;
  struct ph_heap *live_next; /* the live-heap registry (heap/heap.c) */

  /* roots.global: open-addressing set of slots, guarded by roots_lock. */
  pthread_mutex_t roots_lock;
  ph_value **groots;
  size_t groots_cap, groots_n; /* n: live entries */
  size_t groots_used;          /* live entries + tombstones */

  /* barrier.stw */
  _Atomic int stw_pending;     /* 1 while a section is elected or running */
  uint64_t stw_started;        /* (lock) sections started */
  uint64_t last_collect_epoch; /* (lock) epoch of the last collecting one */
  uint64_t last_compact_epoch; /* (lock) epoch of the last compacting one */
  ph_stw stw;
  /* barrier.helpers: cfg.gc_helpers threads, each a domain outside the
   * slots; they sleep on helper_cond (with lock) between sections. */
  struct ph_domain **helpers;
  pthread_t *helper_threads;
  void **helper_stacks; /* mapped by us (ph_os_stack_map), unmapped at stop */
  unsigned nhelpers;    /* started */
  int helpers_stop;     /* (lock) destroy asks them to leave */
  pthread_cond_t helper_cond;

  /* pacing (heap.pacing) */
  _Atomic uint64_t alloc_since; /* bytes handed to domains since last GC */
  _Atomic uint64_t gc_threshold;

  /* stats (lock), copied out by ph_stats_get */
  ph_stats st;
  _Atomic uint64_t retired_allocated; /* allocated by detached domains */
};

/* ---------------------------------------------------------- functions */
/* heap/sizeclass.c */
int ph_sizeclass_init(struct ph_heap *h);
static inline unsigned ph_class_of_wosize(const struct ph_heap *h,
                                          size_t wosize) {
  return h->wosize_class[wosize];
}

/* heap/chunk.c (heap.chunk): units and reservations, all _locked or
 * _stw_single. */
int ph_chunk_grow_locked(struct ph_heap *h, size_t min_units);
/* Find n contiguous free units, commit them, mark them with state. */
int ph_units_take_locked(struct ph_heap *h, size_t n, int state,
                         ph_chunk **chunk_out, uint32_t *unit_out);
/* The same for a large block of `bytes` bytes (header included) in n units:
 * only its pages are committed (heap.large.commit); *comm_out gets how many
 * bytes from its first unit's start are. */
int ph_units_take_large_locked(struct ph_heap *h, size_t n, size_t bytes,
                               ph_chunk **chunk_out, uint32_t *unit_out,
                               size_t *comm_out);
/* Free a dead large block's units (updates large_units and large_comm);
 * 0 if the OS refused, leaving the block in place. */
int ph_large_free_locked(struct ph_heap *h, ph_large *l);
/* Return n units starting at unit to the free (committed) state. */
void ph_units_free_locked(struct ph_heap *h, ph_chunk *c, uint32_t unit,
                          size_t n);
/* Give free committed memory back (heap.release). */
void ph_units_release_locked(struct ph_heap *h, int mode, size_t retain,
                             uint64_t *released_bytes);
void ph_chunks_destroy(struct ph_heap *h);
ph_chunk *ph_chunk_find(const struct ph_heap *h, const void *p);
static inline char *ph_unit_addr(const struct ph_heap *h, const ph_chunk *c,
                                 uint32_t u) {
  return c->base + ((size_t)u << h->pool_shift);
}
static inline ph_unit_hdr *ph_unit_of(const struct ph_heap *h, ph_value v) {
  return (ph_unit_hdr *)(v & h->pool_mask);
}

/* heap/pool.c */
ph_pool *ph_pool_new(struct ph_heap *h, unsigned cls, unsigned owner);
void ph_pool_init_free(struct ph_heap *h, ph_pool *p);
static inline char *ph_pool_slots(ph_pool *p) {
  return (char *)p + p->hdr;
}
static inline ph_value ph_pool_block(const struct ph_heap *h, ph_pool *p,
                                     uint32_t i) {
  return (ph_value)(ph_pool_slots(p) + (size_t)i * h->class_wsize[p->cls] * 8 +
                    8);
}
void ph_pool_push_avail(struct ph_heap *h, ph_pool *p);
/* heap.pacing: charge bytes allocated (slots handed out, large blocks). */
static inline void ph_pacing_add(struct ph_heap *h, uint64_t bytes) {
  /* relaxed: a counter; the decision it feeds tolerates being late */
  atomic_fetch_add_explicit(&h->alloc_since, bytes, memory_order_relaxed);
}
void ph_domain_flush_caches(struct ph_domain *d);

/* heap/alloc.c */
int ph_check_domain(const struct ph_domain *d);
/* After a failed check: record err as d's last error if d is a detached
 * handle (a live handle belongs to its owner; junk is not written). */
void ph_domain_note_error(struct ph_domain *d, int err);
ph_value ph_large_alloc(struct ph_domain *d, size_t wosize, unsigned tag);

/* heap/mark.c, heap/sweep.c */
void ph_mark_stw(struct ph_heap *h, ph_worker *w);
void ph_mark_value(struct ph_heap *h, ph_worker *w, ph_value v);
void ph_mark_slot_visit(ph_value *slot, void *ctx);
void ph_sweep_stw(struct ph_heap *h, ph_worker *w);
void ph_sweep_finish_stw_single(struct ph_heap *h);
void ph_mark_stack_free(ph_mark_stack *s);

/* heap/heap.c */
/* The live-heap registry: PH_OK with h->lock held if h is a live heap,
 * else PH_EINVAL (h is never dereferenced then). */
int ph_heap_lock_live(struct ph_heap *h);
int ph_heap_is_live(const struct ph_heap *h);
uint64_t ph_now_ns(void);
void ph_event(struct ph_heap *h, ph_phase ph, int begin, unsigned dom);
void ph_pacing_reset_locked(struct ph_heap *h);
void ph_census_stw_single(struct ph_heap *h, ph_census_req *req);

/* heap/verify.c */
int ph_verify_stw_single(struct ph_heap *h, char *why, size_t why_size);

/* barrier/stw.c */
/* Run (or join, and coalesce with) a stop-the-world section of the given
 * kind; payload fields (why, census) are copied for VERIFY and CENSUS. */
typedef struct ph_stw_req {
  char *why;
  size_t why_size;
  ph_census_req census;
} ph_stw_req;
int ph_stw_run(struct ph_domain *d, int kind, ph_stw_body body,
               const ph_stw_req *req);
/* gc/collect.c: ph_stw_run with the collector's sequence as the body. */
int ph_gc_run(struct ph_domain *d, int kind, const ph_stw_req *req);
void ph_stw_join(struct ph_domain *d);
/* barrier.reentry: the heap whose section the calling thread takes part in
 * (NULL outside sections).  Every embedder callback (census fn, on_event,
 * scan_roots) runs inside a section, so a public entry point that finds it
 * set was called from a callback and refuses (PH_ESTATE).  initial-exec:
 * one %fs-relative load, also in libpoolheap.so. */
extern _Thread_local struct ph_heap *ph_tls_section
    __attribute__((tls_model("initial-exec")));
static inline int ph_in_section(void) {
  return ph_tls_section != NULL;
}
/* ph_safepoint for a domain already checked by its owner: one load when
 * nothing is pending (relaxed; ph_stw_join re-reads under the lock).
 * barrier.reentry on the slow path only: PH_ESTATE from inside a callback
 * (its section is pending), and nothing joined. */
static inline int ph_safepoint_owner(struct ph_domain *d) {
  if (__builtin_expect(
          atomic_load_explicit(&d->heap->stw_pending, memory_order_relaxed),
          0)) {
    if (ph_in_section())
      return PH_ESTATE;
    ph_stw_join(d);
  }
  return PH_OK;
}
int ph_stw_helpers_start(struct ph_heap *h);
void ph_stw_helpers_stop(struct ph_heap *h);
/* The unit index space of the current section: global unit -> chunk. */
void ph_stw_units_init_stw_single(struct ph_heap *h);
int ph_stw_unit_at(struct ph_heap *h, size_t gu, ph_chunk **c, uint32_t *u);
/* Claim batches of the section's unit index space with *claim until none
 * is left, calling fn for each unit claimed (barrier.stw.claim). */
typedef void (*ph_unit_fn)(struct ph_heap *h, ph_chunk *c, uint32_t u,
                           void *ctx);
void ph_stw_each_unit_stw(struct ph_heap *h, _Atomic size_t *claim,
                          size_t batch, ph_unit_fn fn, void *ctx);

/* roots/roots.c */
void ph_roots_scan_stw(struct ph_heap *h, ph_worker *w, ph_visit_fn visit,
                       void *ctx);
/* The same, calling done(ctx) at the end of each root item: for the global
 * set before roots_lock is released (roots.global.done), so a visitor that
 * defers its work on slots finishes it while the slots are still roots. */
void ph_roots_scan_done_stw(struct ph_heap *h, ph_worker *w, ph_visit_fn visit,
                            void (*done)(void *ctx), void *ctx);
void ph_roots_domain_init(struct ph_domain *d);
void ph_roots_domain_fini(struct ph_domain *d);
void ph_roots_global_fini(struct ph_heap *h);
void ph_roots_visit_domain(struct ph_heap *h, unsigned slot, ph_visit_fn visit,
                           void *ctx);
void ph_roots_visit_global(struct ph_heap *h, ph_visit_fn visit,
                           void (*done)(void *ctx), void *ctx);

/* compact/compact.c */
void ph_compact_stw(struct ph_heap *h, ph_worker *w);
void ph_compact_fini(struct ph_heap *h);

#endif
