/* heap/heap.h -- the pool layer: chunks, units, size classes, pools,
 * large blocks, the per-pool sweep and unit release (DESIGN.md: heap).
 *
 * Includes: the public header and os/ only.  Function suffixes (DESIGN.md,
 * top): _stw every participant of a section, _stw_single one participant
 * while the world is stopped, _locked the caller holds heap->lock, _owner
 * only the thread that owns the domain.
 *
 * struct ph_heap and struct ph_domain are declared here, at the bottom of
 * the layers that use them: their fields are the pool layer's, plus one
 * pointer per layer above, whose state struct is declared in that layer's
 * header, and the few fields the allocation fast path reads (heap.state;
 * stw_pending, a domain's cache, state and allocated). */
#ifndef PH_HEAP_HEAP_H
#define PH_HEAP_HEAP_H

#include "os/os.h"
#include "poolheap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- headers */
/* heap.block.header: wosize << 10 | color << 8 | tag.  The managed
 * collector's colors:
 *   WHITE  allocated, not (yet) marked; every block between collections
 *   BLACK  marked by the current collection (only inside stop-the-world)
 * The managed sweep clears only the BLACK bit: colour bit 1 is the managed
 * collector's kind bit (gc.weak), kept for the block's life.
 * A free slot is a header word of 0 (wosize 0; field 0 links its pool's free
 * list), and a block moved by compaction keeps its header (field 0 is the new
 * address; the map of evacuated units says it moved): the pool format of
 * the pool layer (pools.header), which uses no color itself. */
enum { PH_WHITE = 0, PH_BLACK = 1 };
#define PH_HD_COLOR_SHIFT 8
#define PH_HD_COLOR_MASK ((ph_value)3 << PH_HD_COLOR_SHIFT)
/* heap.sweep.zero: colour bit 1 and tag bit 1 in a surviving block's
 * header ask the managed sweep to zero its fields and clear that tag bit */
#define PH_HD_SWEEP_ZERO (((ph_value)2 << PH_HD_COLOR_SHIFT) | 2)
/* heap.block.watch: bit 63, above any wosize (PH_MAX_WOSIZE < 2^40): the
 * managed collector's marking sets it in a block's header inside a
 * collection only (gc.weak.watch); the managed sweep clears it with the
 * mark bit, so no header carries it outside a collection.  ph_hd_wosize
 * ignores it. */
#define PH_HD_WATCH ((ph_value)1 << 63)
_Static_assert(PH_MAX_WOSIZE < (PH_HD_WATCH >> PH_HD_WOSIZE_SHIFT),
               "the watch bit is above every wosize");
static inline ph_value ph_hd_make(size_t wosize, unsigned color, unsigned tag) {
  return ((ph_value)wosize << PH_HD_WOSIZE_SHIFT) |
         ((ph_value)color << PH_HD_COLOR_SHIFT) | (ph_value)tag;
}
static inline unsigned ph_hd_color(ph_value hd) {
  return (unsigned)((hd >> PH_HD_COLOR_SHIFT) & 3);
}
static inline size_t ph_hd_wosize(ph_value hd) {
  return (size_t)((hd & ~PH_HD_WATCH) >> PH_HD_WOSIZE_SHIFT);
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
/* heap.sizeclass: see heap/sizeclass.c for the rule.  Small classes, then
 * the medium ones (heap.sizeclass.medium): at most 74 in all for every pool
 * size the config accepts (4 KiB: 26 + 48; 32 KiB: 37 + 37). */
#define PH_MAX_CLASSES 80
#define PH_MAX_SMALL_WSIZE 257    /* words per slot, header included */
#define PH_MEDIUM_TOP_WSIZE 32768 /* 256 KiB slots, header included */

/* ---------------------------------------------------------------- units */
/* heap.unit: a chunk is divided into units of pool_size bytes.  A unit is
 * free (decommitted or committed), a pool, or part of a large block. */
enum {
  PH_U_FREE = 0,      /* Reserved: no pages */
  PH_U_FREE_COMM = 1, /* Committed, not in use (free pool memory) */
  PH_U_POOL = 2,
  PH_U_LARGE = 3,      /* first unit of a large block */
  PH_U_LARGE_TAIL = 4, /* further units of a large block */
  PH_U_POOL_TAIL = 5,  /* further units of a medium pool (heap.unit.lookup:
                          ucls holds the distance back to its first unit) */
  PH_U_STUCK = 6,      /* heap.pool.holes: a freed pool's unit whose holes
                          could be neither counted committed again nor
                          matched by decommits (every OS call refused): not
                          free, counted committed but for the granules of
                          its holes mask, until ph_units_release_locked
                          counts them again */
};

/* The prefix shared by pool and large-block unit headers: a block of a
 * small pool or a large block has its unit header at p & ~(pool_size-1);
 * a medium pool's block may lie in a later unit (heap.unit.lookup). */
typedef struct ph_unit_hdr {
  uint32_t sig;
  uint8_t kind;      /* PH_U_POOL or PH_U_LARGE */
  uint8_t evacuated; /* compaction: set in phase 2, read in phase 4 */
  uint16_t cls;      /* size class (pools) */
} ph_unit_hdr;

struct ph_chunk;

/* heap.pool: a pool of equal slots of one size class.
 * Invariant (outside stop-the-world, pool not cached by its owner):
 *   nlive + nfree + nhole == nslots, nfree == length(free list) == slots
 *   with a header of 0 outside the holes (heap.pool.holes).
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
  uint16_t hdr;           /* bytes before the first slot (class_hdr[cls]) */
  uint32_t live_words;    /* pool layer: sum of wosize + 1 over the
                             allocated slots (pools.counters) */
  uint32_t nhole;         /* slots that touch a hole (heap.pool.holes):
                             neither live nor free */
} ph_pool;
/* The fixed header; then the live bitmap (heap.pool.bitmap: one bit per
 * slot, written by the sweep, read by compaction), then the slots at
 * heap->class_hdr[cls] bytes from the start (heap.pool.hdr: the bitmap is
 * sized for its class's slots). */
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
  /* a pool unit's size class, written under heap->lock when the pool is
   * opened (its header is written after the lock is dropped), so a check
   * under the lock can read it (gc.pin); in the block of ustate.  For a
   * PH_U_POOL_TAIL unit: the distance back to its pool's first unit
   * (heap.unit.lookup).  For a PH_U_FREE_COMM unit: its last class with
   * PH_UCLS_CLEAN if the pool's header and free list are intact
   * (heap.unit.clean), else anything without that bit.  For a PH_U_FREE
   * unit: PH_UCLS_DIRTY if its pages may still hold what they held
   * (decommitted lazily: heap.pool.zero), else 0. */
  uint16_t *ucls;
  /* heap.pool.zero: for a pool's first unit, the byte offset from the
   * unit's start from which every free slot is zero but its header and
   * field 0 (UINT32_MAX: no slot is known so).  Written when the pool is
   * opened (heap->lock), by the owner's alloc cache when it gives the pool
   * up (outside sections: the owner alone), and forgotten by
   * ph_pools_zero_forget_stw; read by the managed collector's alloc cache
   * only.  In the block of ustate. */
  uint32_t *zero_from;
  /* heap.pool.holes: per unit, the granules of a pool that are decommitted
   * (bit g: bytes [g, g+1) << heap->hole_shift of the unit); 0 for every
   * unit that is not a pool with holes.  heap->lock or stop-the-world. */
  uint64_t *holes;
  /* heap.pool.ool: per unit, the out-of-line header of a pool whose
   * granule 0 is a hole (bit 0 of holes), NULL for every other unit;
   * allocated (nunits pointers) with the chunk's first such pool.
   * heap->lock or stop-the-world. */
  struct ph_pool **ool;
} ph_chunk;
#define PH_MAX_CHUNKS 4096

/* -------------------------------------------------------------- domains */
enum { PH_DS_FREE = 0, PH_DS_RUNNING = 1, PH_DS_BLOCKING = 2 };

typedef struct ph_alloc_cache {
  ph_value free;          /* next free block of the cached pool, 0 if none */
  uintptr_t zero;         /* heap.alloc.zero: a free block at this address or
                             above, not handed out by this cache, has every
                             field but field 0 zero */
  uint32_t nfree;         /* length of that list */
  uint32_t nfree_charged; /* nfree when pacing was last charged (heap.pacing) */
  ph_pool *pool;          /* cached pool, NULL if none */
} ph_alloc_cache;

/* A domain slot: the per-owner state that outlives a domain's attachment
 * (its pools stay owned by the slot; the next domain attached to the slot
 * adopts them).  avail lists: written by the attached domain outside
 * stop-the-world, rebuilt by the sweep (atomic pushes) inside it. */
typedef struct ph_slot {
  _Atomic(ph_pool *) avail[PH_MAX_CLASSES];
  struct ph_domain *dom; /* attached domain, NULL if none (heap->lock) */
} ph_slot;

/* ------------------------------------------------------------- sections */
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
/* every owner slot (cfg.max_domains <= 1024) fits ph_cand.owner */
_Static_assert(1024 <= UINT16_MAX, "owner fits a ph_cand");

/* One participant's pool-layer state in a stop-the-world section: what
 * the mark counted, what the sweep found and the records it hands to the
 * compactor. */
typedef struct ph_pool_worker {
  uint64_t live_bytes, live_blocks; /* counted by the marking */
  /* sweep results to hand back under the lock */
  ph_pool *empty_pools; /* pools found empty, linked by next */
  ph_large *dead_large; /* dead large blocks, linked by dead_next */
  uint64_t frag_bytes;  /* sweep: free slot bytes in partly filled pools */
  /* sweep -> compaction (compact.phase.stats) */
  ph_cand *cands;
  size_t ncands, cands_cap;
  ph_large **larges; /* surviving scanned large blocks */
  size_t nlarges, larges_cap;
  int records_lost; /* a record array could not grow: do not compact */
  uint64_t zeroed;  /* heap.sweep.zero: blocks whose fields it zeroed */
} ph_pool_worker;

/* The pool layer's view of a stop-the-world section (barrier.stw.claim):
 * its participants' records and the section's unit index space.  Claim
 * counters are named by the phase that owns them; each is reset by that
 * phase's _stw_single work before the barrier that opens the phase. */
typedef struct ph_section {
  unsigned nparts;                   /* participants of the current section */
  ph_pool_worker *pw;                /* one per possible participant */
  _Atomic size_t claim_sweep;        /* heap.sweep: units */
  _Atomic size_t claim_choose;       /* compact.phase.choose: classes */
  _Atomic size_t claim_evacuate;     /* compact.phase.evacuate: units */
  _Atomic size_t claim_update_units; /* compact.phase.update: units */
  _Atomic size_t claim_update_large; /* compact.phase.update: slices */
  /* unit index space over the chunks, fixed for the section */
  size_t total_units;
  size_t unit_base[PH_MAX_CHUNKS + 1];
} ph_section;

/* heap.domain.handle: a handle is recycled only through its heap's
 * retired list, so `heap` never changes.  A stale call may read sig, owner,
 * index and last_error while the handle is being recycled for another
 * thread: those are atomics (index through __atomic builtins); a call whose
 * owner check fails reads nothing else.
 *
 * The fields here are the pool layer's (the owner check, domain.owner; the
 * alloc caches it flushes) and the three the allocation fast path touches
 * on every call (cache, state, allocated: plain fields for one load each,
 * heap.state).  Each layer above keeps the rest of a domain's state in
 * a struct declared in its own header, reached through one pointer and
 * allocated with the handle. */
struct ph_domain_sync;  /* barrier/barrier.h */
struct ph_domain_roots; /* roots/roots.h */
struct ph_domain_api;   /* api/api.h */

struct ph_domain {
  _Atomic uint32_t sig; /* PH_SIG_DOMAIN while attached, PH_SIG_DEAD after */
  unsigned index;       /* slot index */
  struct ph_heap *heap;
  _Atomic uintptr_t owner; /* ph_thread_tag() of the attaching thread */
  int state; /* PH_DS_*: written under heap->lock (barrier/'s; heap.state) */
  _Atomic int last_error; /* owner; a detached handle's under heap->lock */
  ph_alloc_cache cache[PH_MAX_CLASSES]; /* owner, or flush at STW entry */
  /* bytes (api/'s; heap.state); owner stores (relaxed), any reads */
  _Atomic uint64_t allocated;
  /* the layers above: each one's state, declared in its own header */
  struct ph_domain_sync *sync;   /* barrier/: the section that counts on us */
  struct ph_domain_roots *roots; /* roots/: the handle stack and scopes */
  struct ph_domain_api *api;     /* api/: retired and per-thread lists */
};

/* --------------------------------------------------------------- heap */
struct ph_sync;         /* barrier/barrier.h */
struct ph_roots;        /* roots/roots.h */
struct ph_compact_plan; /* compact/compact.h */
struct ph_gc;           /* gc/gc.h */
struct ph_api;          /* api/api.h */

struct ph_heap {
  uint32_t sig;
  ph_config cfg;
  size_t pool_size;
  /* heap.pool.hdr: the header of a pool of 2-word slots (the most slots),
   * which the class rule assumes (heap.sizeclass); class_hdr[c] is class
   * c's own, at most this */
  size_t pool_hdr_max;
  unsigned pool_shift;
  uintptr_t pool_mask; /* ~(pool_size - 1) */
  /* heap.pool.holes: a hole granule is max(page, pool_size / 64) bytes */
  unsigned hole_shift;
  /* heap.sizeclass (immutable after create) */
  unsigned nclasses;
  unsigned nsmall; /* classes [0, nsmall) are small (one unit), the rest
                      medium (heap.sizeclass.medium) */
  uint32_t class_wsize[PH_MAX_CLASSES]; /* slot words, header included */
  uint32_t class_nslots[PH_MAX_CLASSES];
  uint32_t class_units[PH_MAX_CLASSES]; /* units per pool */
  /* heap.pool.hdr: bytes before the first slot (fixed header + live
   * bitmap for class_nslots bits, a multiple of 64) */
  uint32_t class_hdr[PH_MAX_CLASSES];
  size_t max_small_wosize; /* the largest wosize served by a pool (the top
                              medium class's); above it, large blocks */
  uint8_t wosize_class[PH_MEDIUM_TOP_WSIZE];

  ph_os_acct os;
  size_t commit_cap; /* RAM + swap: committed bytes never exceed it */

  /* heap->lock guards: chunks and units, domain slots and states, the
   * section election, heap-level stats, and the layers' state above that
   * says so (the retired list, api/). */
  pthread_mutex_t lock;
  ph_chunk *chunks[PH_MAX_CHUNKS]; /* sorted by base */
  unsigned nchunks;
  size_t pool_units, large_units; /* units in use */
  size_t large_comm;              /* bytes committed by large blocks */
  size_t hole_bytes;  /* heap.pool.holes: bytes of pools decommitted */
  size_t holed_pools; /* pool units with holes (a medium pool's each) */
  size_t ool_pools;   /* heap.pool.ool: pools whose header is out of line */
  size_t stuck_units; /* PH_U_STUCK units, and their committed bytes */
  size_t stuck_bytes;
  int reuse_committed; /* heap.unit.reuse: pools take committed units first */
  ph_slot *slots;      /* cfg.max_domains */

  /* the current stop-the-world section as the pool layer sees it */
  ph_section sec;
  /* 1 while a section is elected or running (barrier.stw; here because
   * the allocation fast path reads it: one load) */
  _Atomic int stw_pending;

  /* pacing (heap.pacing) */
  _Atomic uint64_t alloc_since; /* bytes handed to domains since last GC */
  _Atomic uint64_t gc_threshold;

  /* stats (lock), copied out by ph_stats_get */
  ph_stats st;
  struct ph_heap *live_next; /* the live-heap registry (heap.registry) */

  /* the layers above: each one's state, declared in its own header */
  struct ph_sync *sync;         /* barrier/: sections, helpers */
  struct ph_roots *roots;       /* roots/: the global root set */
  struct ph_compact_plan *plan; /* compact/: the last plan (reused) */
  struct ph_gc *gc;             /* gc/: participants' mark state */
  struct ph_api *api;           /* api/: domains attached, retired handles */
};

/* ---------------------------------------------------------- functions */
/* heap/owner.c */
/* heap.domain.exit: the domains attached by the calling thread (a list
 * through thread_next), detached by a thread-exit destructor.  Its address
 * is the thread's tag for the owner check (unique among live threads). */
extern _Thread_local struct ph_domain *ph_tl_domains
    __attribute__((tls_model("initial-exec")));
static inline uintptr_t ph_thread_tag(void) {
  return (uintptr_t)&ph_tl_domains;
}

/* domain.owner: PH_OK if d is an attached domain of the calling thread;
 * PH_EINVAL for junk, PH_ESTATE for a detached or another thread's handle. */
int ph_check_domain(const struct ph_domain *d);
/* After a failed check: record err as d's last error if d is a detached
 * handle (a live handle belongs to its owner; junk is not written). */
void ph_domain_note_error(struct ph_domain *d, int err);

/* heap/sizeclass.c */
int ph_sizeclass_init(struct ph_heap *h);
/* heap.sizeclass.medium: the medium classes (computed by
 * ph_sizeclass_init into the class tables after the small ones). */
typedef struct ph_medium_class {
  uint32_t wsize;  /* slot words, header included */
  uint32_t units;  /* units per pool */
  uint32_t nslots; /* slots per pool */
  uint32_t hdr;    /* bytes before the first slot (heap.pool.hdr) */
} ph_medium_class;
unsigned ph_sizeclass_medium(size_t pool_size, size_t wmax_small,
                             ph_medium_class *out, unsigned max);
/* heap.pool.hdr: the slots of sb bytes a pool of `bytes` bytes holds after
 * its header, a live bitmap for exactly those slots (*hdr_out: the header's
 * bytes, a multiple of 64). */
uint32_t ph_pool_layout(size_t bytes, size_t sb, uint32_t *hdr_out);
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
/* Return n units starting at unit to the free (committed) state; a pool's
 * holes end (counted committed again: heap.pool.holes). */
void ph_units_free_locked(struct ph_heap *h, ph_chunk *c, uint32_t unit,
                          size_t n);
/* heap.pool.holes: decommit the granules of `want` (never granule 0 of a
 * pool's first unit) of pool unit u (a first unit or a medium pool's tail)
 * that are not holes yet (lazy: PH_OS_DECOMMIT_LAZY); returns
 * the unit's holes afterwards (a refused run stays committed). */
uint64_t ph_pool_holes_make_locked(struct ph_heap *h, ph_chunk *c, uint32_t u,
                                   uint64_t want, int lazy);
/* n free committed units from unit of c (FREE_COMM) go back to the OS
 * (PH_OS_DECOMMIT_LAZY if lazy) and become FREE; returns their bytes, 0 if
 * the OS refused (they stay FREE_COMM: nothing is lost).  The caller rounds
 * to whole huge pages in a huge chunk (heap.release). */
size_t ph_units_decommit_locked(struct ph_heap *h, ph_chunk *c, uint32_t unit,
                                size_t n, int lazy);
/* heap.unit: the bytes of free committed units (FREE_COMM), from the
 * accounting (committed bytes are the pools', the large blocks' and these;
 * hole bytes are not counted committed); heap->lock held. */
static inline uint64_t ph_free_committed_locked(const struct ph_heap *h) {
  return atomic_load_explicit(&h->os.committed, memory_order_relaxed) +
         h->hole_bytes - ((uint64_t)h->pool_units << h->pool_shift) -
         h->large_comm - h->stuck_bytes;
}
/* Give free committed memory back (heap.release). */
void ph_units_release_locked(struct ph_heap *h, int mode, size_t retain,
                             uint64_t *released_bytes);
void ph_chunks_destroy(struct ph_heap *h);
ph_chunk *ph_chunk_find(const struct ph_heap *h, const void *p);
static inline char *ph_unit_addr(const struct ph_heap *h, const ph_chunk *c,
                                 uint32_t u) {
  return c->base + ((size_t)u << h->pool_shift);
}
/* The unit header at the start of the unit holding v: the block's own
 * for a small pool's block or a large block (field 0 lies in the first
 * unit); for a medium pool see ph_block_unit. */
static inline ph_unit_hdr *ph_unit_of(const struct ph_heap *h, ph_value v) {
  return (ph_unit_hdr *)(v & h->pool_mask);
}
/* heap.pool.ool: the header of the pool whose first unit is u of c (a
 * PH_U_POOL unit): at the unit's start, or out of line when granule 0 of
 * the unit is a hole.  Every walk over the units reads pools through it. */
static inline struct ph_pool *ph_pool_at(const struct ph_heap *h,
                                         const ph_chunk *c, uint32_t u) {
  if (__builtin_expect(c->holes[u] & 1, 0))
    return c->ool[u];
  return (struct ph_pool *)ph_unit_addr(h, c, u);
}
/* heap.unit.lookup: the first unit of the pool or large block holding unit
 * u of c (a medium pool's tail units lead back to it in O(1)). */
static inline uint32_t ph_unit_head(const ph_chunk *c, uint32_t u) {
  return c->ustate[u] == PH_U_POOL_TAIL ? u - c->ucls[u] : u;
}
/* heap.unit.lookup: the unit header of the pool or large block holding
 * address v (any unit of a medium pool), NULL if v is in no pool or large
 * block of h.  The chunk is found by a binary search over the chunk array
 * (at most log2(PH_MAX_CHUNKS) = 12 steps), the head through ustate/ucls.
 * Callers hold heap->lock or run with the world stopped. */
ph_unit_hdr *ph_block_unit(const struct ph_heap *h, ph_value v);
/* Is a block of this wosize served by a small pool (its pool header at
 * v & pool_mask)?  Else a medium pool (ph_block_unit) or a large block. */
static inline int ph_wosize_small(const struct ph_heap *h, size_t wosize) {
  return wosize <= h->max_small_wosize && h->wosize_class[wosize] < h->nsmall;
}

/* heap/sweep.c (heap.sweep.pool): the per-pool sweep by an embedder's
 * garbage color, for the pool layer: garbage slots go to on_free(ctx, b)
 * and become free; live headers are not written (a color outside live_mask,
 * if not 0, sets *bad); nlive, nfree, live_words and the free list are
 * recounted, the live bitmap written if set_bits.  on_free_tags (NULL:
 * every tag): on_free sees only the blocks whose tag t has bit t % 64 of
 * on_free_tags[t / 64] set. */
void ph_pool_sweep_garbage(struct ph_heap *h, ph_pool *p, unsigned garbage,
                           unsigned live_mask, int set_bits,
                           void (*on_free)(void *ctx, ph_value b),
                           const uint64_t *on_free_tags, void *ctx, int *bad);

/* heap.pool.holes: the granules slot i of a pool of class cls touches
 * (class_hdr[cls] bytes before the first slot). */
static inline uint64_t ph_slot_granules(const struct ph_heap *h, unsigned cls,
                                        uint32_t i) {
  size_t sb = (size_t)h->class_wsize[cls] * 8;
  size_t a = h->class_hdr[cls] + (size_t)i * sb, b = a + sb - 1;
  unsigned g0 = (unsigned)(a >> h->hole_shift),
           g1 = (unsigned)(b >> h->hole_shift);
  uint64_t hi = g1 >= 63 ? ~(uint64_t)0 : ((uint64_t)2 << g1) - 1;
  return hi & ~(((uint64_t)1 << g0) - 1);
}
/* heap.pool.holes, the other way round: the slots of a pool of class cls
 * that touch its bytes [a, b] (offsets from the pool's start, its units
 * one after the other), [*lo, *hi]; 0 if none does (the range is inside
 * the header or past the last slot). */
static inline int ph_slots_touching(const struct ph_heap *h, unsigned cls,
                                    size_t a, size_t b, uint32_t *lo,
                                    uint32_t *hi) {
  size_t sb = (size_t)h->class_wsize[cls] * 8, hdr = h->class_hdr[cls];
  uint32_t ns = h->class_nslots[cls];
  if (b < hdr)
    return 0;
  size_t l = a < hdr ? 0 : (a - hdr) / sb, u = (b - hdr) / sb;
  if (l >= ns)
    return 0;
  *lo = (uint32_t)l;
  *hi = (uint32_t)(u >= ns ? ns - 1 : u);
  return 1;
}
/* Does slot i touch a hole of `holes` (a unit's granule mask)? */
static inline int ph_slot_in_hole(const struct ph_heap *h, uint64_t holes,
                                  unsigned cls, uint32_t i) {
  return holes != 0 && (holes & ph_slot_granules(h, cls, i)) != 0;
}
/* The holes of pool p (its chunk's side table); of a pool of several
 * units, those of its first unit only (ph_pool_holes_any). */
static inline uint64_t ph_pool_holes(const ph_pool *p) {
  return p->chunk->holes[p->unit];
}
/* heap.pool.holes: the pool at unit u of c (class cls) has holes: the OR
 * of its units' masks (nonzero if any). */
static inline uint64_t ph_pool_holes_any(const struct ph_heap *h,
                                         const ph_chunk *c, uint32_t u,
                                         unsigned cls) {
  uint64_t m = c->holes[u];
  for (uint32_t k = 1; k < h->class_units[cls]; k++)
    m |= c->holes[u + k];
  return m;
}
/* Does slot i of the pool at unit u of c (class cls) touch a hole?  A pool
 * of several units has its holes in the masks of its units, each from its
 * own unit's start (heap.pool.holes). */
static inline int ph_pool_slot_in_hole(const struct ph_heap *h,
                                       const ph_chunk *c, uint32_t u,
                                       unsigned cls, uint32_t i) {
  if (h->class_units[cls] == 1)
    return ph_slot_in_hole(h, c->holes[u], cls, i);
  size_t sb = (size_t)h->class_wsize[cls] * 8, m = h->pool_size - 1;
  size_t a = h->class_hdr[cls] + (size_t)i * sb, b = a + sb - 1;
  for (size_t k = a >> h->pool_shift; k <= b >> h->pool_shift; k++) {
    uint64_t hm = c->holes[u + k];
    if (!hm)
      continue;
    size_t lo = k == a >> h->pool_shift ? a & m : 0;
    size_t hi = k == b >> h->pool_shift ? b & m : m;
    unsigned g0 = (unsigned)(lo >> h->hole_shift),
             g1 = (unsigned)(hi >> h->hole_shift);
    uint64_t top = g1 >= 63 ? ~(uint64_t)0 : ((uint64_t)2 << g1) - 1;
    if (hm & top & ~(((uint64_t)1 << g0) - 1))
      return 1;
  }
  return 0;
}
/* ph_pool_slot_in_hole of pool p */
static inline int ph_pool_slot_holed(const struct ph_heap *h, const ph_pool *p,
                                     uint32_t i) {
  return ph_pool_slot_in_hole(h, p->chunk, p->unit, p->cls, i);
}
/* The slots of a pool of class cls touching `holes`, as a bitmap of
 * (nslots + 63) / 64 words written to out; returns how many. */
uint32_t ph_pool_hole_slots(const struct ph_heap *h, unsigned cls,
                            uint64_t holes, uint64_t *out);

/* heap/pool.c */
ph_pool *ph_pool_new(struct ph_heap *h, unsigned cls, unsigned owner);
void ph_pool_init_free(struct ph_heap *h, ph_pool *p);
/* Free pool p's units (all class_units of them, one run) and count them
 * out of pool_units; heap->lock held. */
void ph_pool_free_locked(struct ph_heap *h, ph_pool *p);
/* heap.unit.clean: as ph_pool_free_locked, for a pool a sweep just emptied
 * (nlive 0, every slot on its free list): a one-unit pool whose header is
 * in its unit and which has no holes is marked clean (PH_UCLS_CLEAN), so
 * that a pool of the same class opened there keeps its free list. */
void ph_pool_free_clean_locked(struct ph_heap *h, ph_pool *p);
/* heap.unit.clean: the flag in a free unit's ucls entry */
#define PH_UCLS_CLEAN 0x8000u
/* heap.pool.zero: the flag in a PH_U_FREE unit's ucls entry (its pages may
 * hold their old contents: decommitted lazily, MADV_FREE) */
#define PH_UCLS_DIRTY 0x4000u
/* heap.pool.zero: forget every pool's zero slots (a compaction writes
 * blocks into free slots without the alloc caches); stop-the-world. */
void ph_pools_zero_forget_stw(struct ph_heap *h);
/* heap.release.trim: give back the pages lying wholly inside the free slot
 * at address slot (sb bytes) past its first 16 bytes (its header of 0 and
 * field 0, the free list's link); they stay counted committed
 * (ph_os_discard).  heap->lock held (the OS layer's debug registry); the
 * caller checked that the chunk has normal pages.  Returns the bytes given
 * back (0 if none lie there or the OS refused: nothing is lost). */
size_t ph_slot_trim_locked(struct ph_heap *h, uintptr_t slot, size_t sb,
                           int lazy);
/* heap.pool.ool: the address of pool p's first unit (p itself unless
 * its header is out of line) and of its first slot. */
static inline char *ph_pool_base(const struct ph_heap *h, const ph_pool *p) {
  return ph_unit_addr(h, p->chunk, p->unit);
}
static inline char *ph_pool_slots(const struct ph_heap *h, ph_pool *p) {
  return ph_pool_base(h, p) + p->hdr;
}
/* heap.pool.zero: the address from which pool p's free slots read zero
 * (but their header and field 0), UINTPTR_MAX if none; and the store of
 * the alloc cache's figure back (owner, outside sections). */
static inline uintptr_t ph_pool_zero_addr(const struct ph_heap *h,
                                          const ph_pool *p) {
  uint32_t z = p->chunk->zero_from[p->unit];
  return z == UINT32_MAX ? UINTPTR_MAX : (uintptr_t)ph_pool_base(h, p) + z;
}
static inline void ph_pool_zero_set(const struct ph_heap *h, ph_pool *p,
                                    uintptr_t zero) {
  uintptr_t b = (uintptr_t)ph_pool_base(h, p);
  p->chunk->zero_from[p->unit] =
      zero == UINTPTR_MAX ? UINT32_MAX : (uint32_t)(zero - b);
}
/* The same from a pool pointer without reading the header while no header
 * is out of line (compact.phase.stats plans from records; an out-of-line
 * copy lies in no chunk). */
static inline char *ph_pool_addr(const struct ph_heap *h, ph_pool *p) {
  if (__builtin_expect(h->ool_pools != 0, 0) && !ph_chunk_find(h, p))
    return ph_pool_base(h, p);
  return (char *)p;
}
/* heap.pool.ool: move pool p's header and live bitmap (class_hdr bytes)
 * into a side allocation found through its chunk's ool table, so that
 * granule 0 may become a hole (ph_pool_holes_make_locked); returns the copy
 * (the pool from now on), NULL if no memory (p stays as it was).  The
 * caller makes granule 0 a hole next, or calls ph_pool_header_home_locked. */
ph_pool *ph_pool_header_out_locked(struct ph_heap *h, ph_pool *p);
/* tests.faults: heap/'s allocation-failure hook (one ph_fault_site, like
 * gc/'s): PH_HEAP_OP_POOL_HDR fails the side copy of a pool header. */
enum { PH_HEAP_OP_POOL_HDR = 1 };
void ph_heap_fault_set(unsigned op_mask, uint64_t nth, int sticky);
uint64_t ph_heap_fault_hits(void);
/* heap.pool.ool: the header back at its unit's start (granule 0 must be
 * committed: it never became a hole); returns the pool. */
ph_pool *ph_pool_header_home_locked(struct ph_heap *h, ph_pool *p);
/* A slot's index from its byte offset o in a pool: o * recip >>
 * PH_RECIP_SHIFT with recip = 2^PH_RECIP_SHIFT / slot bytes rounded up
 * (compact.update.interior, pools.bits).  Exact while o * slot bytes <
 * 2^42: offsets are below 2^23 (a pool spans at most 8 MiB: a medium pool
 * of 4 MiB units) and slots at most 2^18 bytes; o * recip < 2^23 * 2^38. */
#define PH_RECIP_SHIFT 42
static inline ph_value ph_pool_block(const struct ph_heap *h, ph_pool *p,
                                     uint32_t i) {
  return (ph_value)(ph_pool_slots(h, p) +
                    (size_t)i * h->class_wsize[p->cls] * 8 + 8);
}
void ph_pool_push_avail(struct ph_heap *h, ph_pool *p);
/* heap.pool.take: a pool of class cls with a free slot for owner (a slot
 * index, or the pool layer's owner index; written into the pool): the
 * first pool with free slots popped off *head (if head; pools without one
 * are dropped from the list), under heap->lock if shared (several threads
 * pop that list), else a fresh pool (ph_pool_new).  *fresh (if not NULL)
 * says which.  NULL: no memory.  The caller owns the pool's allocation. */
ph_pool *ph_pool_take(struct ph_heap *h, _Atomic(ph_pool *) *head, int shared,
                      unsigned cls, unsigned owner, int *fresh);
/* Give one alloc cache's pool back (an exhausted list at a refill, or a
 * flush); charges pacing for the slots handed out. */
void ph_alloc_cache_return(struct ph_heap *h, ph_alloc_cache *ac, unsigned cls);
/* Give a domain's cached pools back (section entry, detach). */
void ph_domain_flush_caches(struct ph_domain *d);
/* heap.pacing: charge bytes allocated (slots handed out, large blocks). */
static inline void ph_pacing_add(struct ph_heap *h, uint64_t bytes) {
  /* relaxed: a counter; the decision it feeds tolerates being late */
  atomic_fetch_add_explicit(&h->alloc_since, bytes, memory_order_relaxed);
}
/* heap.pacing: restart from the live size the last sweep counted. */
void ph_pacing_reset_locked(struct ph_heap *h);
/* cfg.on_event, if set. */
static inline void ph_event(struct ph_heap *h, ph_phase ph, int begin,
                            unsigned dom) {
  if (h->cfg.on_event)
    h->cfg.on_event(ph, begin, dom, ph_now_ns(), h->cfg.on_event_user);
}

/* heap/registry.c: the live-heap registry (heap.registry): PH_OK with
 * h->lock held if h is a live heap, else PH_EINVAL (h is never dereferenced
 * then). */
int ph_heap_lock_live(struct ph_heap *h);
int ph_heap_is_live(const struct ph_heap *h);
void ph_registry_add(struct ph_heap *h);
/* PH_OK: h was live with no domain attached and is now off the registry
 * (PH_SIG_DEAD); PH_EINVAL not a live heap; PH_ESTATE domains attached. */
int ph_registry_remove(struct ph_heap *h);

/* heap/verify.c (heap.verify): the pool layer's structural check, one walk
 * for both clients.  The client zeroes a ph_check, sets why/why_size and
 * its hooks (NULL: none), and runs it; a hook is called only for what
 * passed the walk's own checks and fails through ph_check_fail. */
typedef struct ph_check {
  char *why; /* the first failure's description (why_size bytes) */
  size_t why_size;
  int bad;
  /* hooks: an allocated block of a pool (header not 0); a pool, with the
   * words of its allocated blocks (wosize + 1 each); a large block */
  void (*block)(struct ph_check *k, ph_value b);
  void (*pool)(struct ph_check *k, ph_pool *p, uint64_t words);
  void (*large)(struct ph_check *k, ph_large *l, ph_value b);
  void *ctx;              /* the client's */
  uint64_t pools, larges; /* counted by the walk */
  /* heap.pool.zero: check each pool's zero offset (the managed
   * collector's; the pool layer keeps none up to date) */
  int zero;
} ph_check;
void ph_check_fail(ph_check *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ph_check_heap_locked(struct ph_heap *h, ph_check *k);

/* heap/section.c: the section's unit index space (barrier.stw.claim). */
void ph_units_index_stw_single(struct ph_heap *h);
void ph_unit_at(struct ph_heap *h, size_t gu, ph_chunk **c, uint32_t *u);
/* Claim batches of the section's unit index space with *claim until none
 * is left, calling fn for each unit claimed (barrier.stw.claim). */
typedef void (*ph_unit_fn)(struct ph_heap *h, ph_chunk *c, uint32_t u,
                           void *ctx);
void ph_units_each_stw(struct ph_heap *h, _Atomic size_t *claim, size_t batch,
                       ph_unit_fn fn, void *ctx);

/* heap/sweep.c (heap.sweep): every participant sweeps the units it claims
 * with h->sec.claim_sweep; the leader then frees what died. */
void ph_sweep_stw(struct ph_heap *h, ph_pool_worker *pw);
/* Free pw's sweep records (cands, larges): the next sweep grows them again
 * (compact.phase.stats; also the heap's teardown). */
void ph_sweep_records_free(ph_pool_worker *pw);
void ph_sweep_finish_stw_single(struct ph_heap *h);

#endif
