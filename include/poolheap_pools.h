/* poolheap_pools.h: poolheap's pool layer, for runtimes that mark for
 * themselves.
 *
 * This header is a contract like poolheap.h: names and meanings here are only
 * ever added to.  It is the lower of poolheap's two public layers: it includes
 * nothing from poolheap.h (poolheap.h includes it and builds the managed
 * collector, ph_alloc / ph_collect / ph_compact, on top of it).  See
 * DESIGN.md, section "The pool layer".
 *
 * Quick model
 * - A pool heap (php_heap) is memory cut into units of pool_size bytes.  A
 *   unit is a pool of equal slots of one size class, or part of a large
 *   block (a block too big for the largest class, in whole units).
 * - An owner (php_owner) is what a runtime's domain (a thread that
 *   allocates) holds: per size class the pools it allocates from (swept
 *   pools with free slots, full pools, unswept pools), its large blocks and
 *   its counters.  Owners allocate and sweep without locks; a terminating
 *   domain orphans its pools to the heap (php_owner_orphan) and another
 *   owner adopts them (php_owner_adopt, or php_alloc one at a time).
 * - The embedder marks.  Headers are wosize << 10 | colour << 8 | tag, as in
 *   OCaml; the embedder chooses the colour (2 bits) and the tag of every
 *   block it allocates and writes colours while it marks.  The pool layer
 *   uses no colour value itself: a free slot is a header word of 0 (no
 *   allocated block has wosize 0), and compaction knows moved blocks from
 *   its map of evacuated units, not from their headers.  All four colours
 *   are the embedder's.
 * - Sweeping: after the embedder's marking, each owner sweeps its own pools
 *   incrementally (php_sweep, with a budget), concurrently with other
 *   owners' allocation and marking; a block whose colour is the garbage
 *   colour (php_set_colours) becomes free, and the heap's on_free callback
 *   sees it first.  php_cycle makes all of an owner's pools unswept again.
 * - Compaction (php_compact_stw) runs on the embedder's own stop-the-world
 *   participants, with the embedder's barrier and scanning callbacks: it
 *   sweeps, keeps the densest pools of each size class across all owners,
 *   moves the live blocks of the others into them, rewrites every pointer
 *   through the callbacks (or, with the scan rule of php_compact_ops, by
 *   the block's tag itself) and gives the freed memory back to the OS.
 *   With php_config.compact_helpers, threads of the layer's own take part
 *   in the moves and the rewriting on the CPUs the participants leave idle.
 *
 * Threads
 * - An owner is used by one thread at a time: php_alloc, php_sweep,
 *   php_cycle, php_owner_counters and the php_owner_* calls on it.
 *   Different owners run concurrently.
 * - php_visit_pool_of may run on any thread while owners allocate and sweep.
 * - php_set_colours, php_compact_stw and php_verify need the world stopped
 *   by the embedder: no owner of the heap inside any php_ call but these.
 * - php_owner_orphan and php_owner_adopt take the heap's lock; counters of
 *   orphans and php_heap_stats_get may be read from any thread.
 * - Callbacks (on_free, a php_visit_pool_of function, the compaction
 *   callbacks) must not call into the pool layer, except php_forward from
 *   the compaction's scan callbacks: such calls are refused in every build
 *   (PH_ESTATE, 0 from php_alloc, the budget from php_sweep) and change
 *   nothing.  php_config_init, php_last_error and php_owner_heap only read
 *   and work there.
 *
 * Errors: every function that can fail returns PH_OK or an error code
 * (PH_EINVAL bad argument, PH_ENOMEM memory refused or heap_limit reached,
 * PH_ESTATE not allowed now, PH_ECORRUPT an invariant is broken); bad input
 * leaves the heap intact, and out-parameters are written only on success.
 */
#ifndef POOLHEAP_POOLS_H
#define POOLHEAP_POOLS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Basics shared with poolheap.h (which includes this header).  Their names
 * and meanings are those poolheap.h has always given them. */
#ifndef POOLHEAP_BASICS_DEFINED
#define POOLHEAP_BASICS_DEFINED

/* A value is a word: 0, an immediate integer (low bit 1) or the address of
 * field 0 of a block.  The header word lies just before field 0. */
typedef uintptr_t ph_value;

/* The immediate 0 (OCaml's unit). */
#define PH_UNIT ((ph_value)1)
/* Largest tag. */
#define PH_TAG_MAX 255u
/* Largest field count a block may have (the header keeps 54 bits). */
#define PH_MAX_WOSIZE (((size_t)1 << 40) - 1)

/* Header word layout: wosize << 10 | colour << 8 | tag. */
#define PH_HD_TAG_MASK ((ph_value)0xff)
#define PH_HD_WOSIZE_SHIFT 10

static inline ph_value ph_val_int(intptr_t i) {
  return ((ph_value)i << 1) | (ph_value)1;
}
static inline intptr_t ph_int_val(ph_value v) {
  return (intptr_t)v >> 1;
}
static inline int ph_is_block(ph_value v) {
  return v != 0 && (v & 1) == 0;
}
static inline ph_value ph_hd_(ph_value v) {
  return ((const ph_value *)v)[-1];
}
static inline size_t ph_wosize(ph_value v) {
  return (size_t)(ph_hd_(v) >> PH_HD_WOSIZE_SHIFT);
}
static inline unsigned ph_tag(ph_value v) {
  return (unsigned)(ph_hd_(v) & PH_HD_TAG_MASK);
}
static inline ph_value ph_field(ph_value v, size_t i) {
  return ((const ph_value *)v)[i];
}
static inline void ph_set_field(ph_value v, size_t i, ph_value x) {
  ((ph_value *)v)[i] = x;
}
static inline void *ph_raw(ph_value v) {
  return (void *)v;
}

enum {
  PH_OK = 0,
  PH_EINVAL = 1,   /* bad argument or configuration field */
  PH_ENOMEM = 2,   /* the OS refused memory, or heap_limit was reached */
  PH_ESTATE = 3,   /* not allowed now (see each function) */
  PH_ECORRUPT = 4, /* a verifier found a broken invariant */
};
/* A static English description of an error code (never NULL). */
const char *ph_strerror(int err);

typedef enum {
  PH_HUGE_OFF = 0,         /* normal pages (default) */
  PH_HUGE_TRANSPARENT = 1, /* madvise(MADV_HUGEPAGE) on 2 MiB-aligned chunks */
  PH_HUGE_EXPLICIT = 2,    /* MAP_HUGETLB, falling back to normal pages */
} ph_huge_mode;

typedef enum {
  PH_RELEASE_DECOMMIT = 0, /* madvise(MADV_DONTNEED) inside kept chunks */
  PH_RELEASE_UNMAP = 1,    /* munmap whole free chunks; decommit the rest */
  PH_RELEASE_LAZY = 2,     /* MADV_FREE (DONTNEED where the kernel lacks it) */
  PH_RELEASE_KEEP = 3,     /* nothing is returned to the OS */
} ph_release_mode;

/* Called with the address of every slot that may hold a value. */
typedef void (*ph_visit_fn)(ph_value *slot, void *ctx);

#endif /* POOLHEAP_BASICS_DEFINED */

/* ------------------------------------------------------------- headers */

#define PHP_HD_COLOUR_SHIFT 8
#define PHP_HD_COLOUR_MASK ((ph_value)3 << PHP_HD_COLOUR_SHIFT)
/* The low ten bits of a header (colour << 8 | tag): what php_alloc takes. */
#define PHP_HD_BITS_MAX 1023u

static inline ph_value php_hd_make(size_t wosize, unsigned colour,
                                   unsigned tag) {
  return ((ph_value)wosize << PH_HD_WOSIZE_SHIFT) |
         ((ph_value)(colour & 3) << PHP_HD_COLOUR_SHIFT) |
         (ph_value)(tag & PH_HD_TAG_MASK);
}
static inline unsigned php_hd_colour(ph_value hd) {
  return (unsigned)((hd >> PHP_HD_COLOUR_SHIFT) & 3);
}
static inline size_t php_hd_wosize(ph_value hd) {
  return (size_t)(hd >> PH_HD_WOSIZE_SHIFT);
}
static inline unsigned php_hd_tag(ph_value hd) {
  return (unsigned)(hd & PH_HD_TAG_MASK);
}
/* The header of block v, read with a relaxed atomic load: the way to read a
 * header that another thread may be writing (a marker, the owner's sweep or
 * allocation). */
static inline ph_value php_hd_load(ph_value v) {
  return __atomic_load_n((const ph_value *)v - 1, __ATOMIC_RELAXED);
}

/* --------------------------------------------------------- configuration */

typedef struct php_heap php_heap;
typedef struct php_owner php_owner;

/* Sees a block the pool layer is about to free (a sweep found its colour to
 * be the garbage colour), before its header and fields are overwritten;
 * with php_config.on_free_tags set, only the blocks of those tags.  It
 * runs on the thread that sweeps (the owner's, or a compaction
 * participant's) and must not call into the pool layer (refused). */
typedef void (*php_free_fn)(ph_value block, void *user);

typedef struct php_config {
  size_t pool_size;        /* power of two, 4 KiB..4 MiB, default 32 KiB */
  size_t heap_limit;       /* max committed bytes, 0 = none (default) */
  ph_huge_mode huge_pages; /* default PH_HUGE_OFF */
  ph_release_mode release; /* how compaction returns memory; default
                              PH_RELEASE_DECOMMIT */
  size_t retain;           /* free pool bytes kept committed, default 0 */
  php_free_fn on_free;     /* NULL: nothing is told (default) */
  void *on_free_user;
  /* Fields added later: zero (php_config_init) keeps the meaning the fields
   * above always had.
   *
   * What php_alloc sweeps when its class has no swept pool with room:
   * PHP_ALLOC_SWEEP_ALL (0, default): the owner's unswept pools of the
   * class until one has room, those that had room when php_cycle made them
   * unswept first, then the full ones.  PHP_ALLOC_SWEEP_AVAIL: only those
   * that had room; the full ones are left to php_sweep, and the allocation
   * adopts an orphaned pool or takes a new one instead (OCaml 5.3's own
   * policy: its heap grows while a cycle's sweep is under way, and OCaml's
   * pacing, which scales with the heap's size, then sees the heap stock
   * OCaml would have).  PHP_ALLOC_SWEEP_BEFORE_GROW: as AVAIL, but when
   * neither a swept pool, nor an orphaned pool with room, nor the heap's free
   * committed memory can serve the class (a new pool would commit memory the
   * heap does not hold: its resident size would grow), the full unswept pools
   * of the class are swept first, until one has room or one is emptied (its
   * memory then serves the new pool).  Other values: PH_EINVAL. */
  unsigned alloc_sweep;
  /* The tags of the blocks on_free is told about: tag t is bit t % 64 of
   * on_free_tags[t / 64].  All zero (default): every freed block.  OCaml
   * sets Custom_tag alone (its finalizers): the sweep then calls nothing
   * for any other block.  The counters and php_owner_sweep_work count every
   * freed block either way. */
  uint64_t on_free_tags[4];
  /* Threads the layer may start for each compaction, beside the embedder's
   * participants, for the work any participant can claim: moving blocks and
   * updating the blocks of the heap (roots stay with the participants).  A
   * compaction starts min(compact_helpers, online CPUs at php_heap_create -
   * nparts) of them (none if that is not positive), at the start of each of
   * those two phases, and joins them before the phase ends: none outlives
   * php_compact_stw, so none is there across a fork.  Their stacks are
   * mapped once, by php_heap_create (256 KiB each, after a guard page), so a
   * compaction maps nothing (a stack the OS refuses is one helper fewer);
   * they run with every signal blocked.
   * php_compact_ops.scan_block may then run on one of them (not an
   * embedder's thread: it must not need the embedder's per-thread state).
   * 0 (default): none.  More than PHP_COMPACT_HELPERS_MAX: PH_EINVAL. */
  unsigned compact_helpers;
} php_config;

/* The most php_config.compact_helpers accepts. */
#define PHP_COMPACT_HELPERS_MAX 64

/* php_config.alloc_sweep */
enum {
  PHP_ALLOC_SWEEP_ALL = 0,
  PHP_ALLOC_SWEEP_AVAIL = 1,
  PHP_ALLOC_SWEEP_BEFORE_GROW = 2,
};

/* Fill *cfg with the defaults (nothing if cfg is NULL). */
void php_config_init(php_config *cfg);

/* Create a pool heap.  cfg NULL means defaults.  PH_EINVAL (nothing
 * created) for an invalid field or out NULL; PH_ENOMEM if the OS refused
 * the first memory.  The garbage colour starts as 2 (php_set_colours). */
int php_heap_create(const php_config *cfg, php_heap **out);
/* Destroy a pool heap and release every mapping it made.  PH_ESTATE while
 * an owner of it exists (php_owner_destroy them first; their blocks, and
 * orphaned ones, go with the heap); PH_EINVAL for NULL or a pointer that is
 * not a live pool heap. */
int php_heap_destroy(php_heap *h);

/* The colour that sweeps free from now on (0..3; PH_EINVAL otherwise).
 * Call it while no owner sweeps, typically when the embedder's cycle
 * rotates its colours (OCaml: GARBAGE := the old UNMARKED), before
 * php_cycle. */
int php_set_colours(php_heap *h, unsigned garbage);

/* ----------------------------------------------------------------- owners */

/* A new owner with no pools.  PH_EINVAL for a bad heap or out NULL;
 * PH_ENOMEM. */
int php_owner_create(php_heap *h, php_owner **out);
/* Orphan the owner's pools and large blocks (php_owner_orphan), then free
 * the owner.  The handle must not be used again. */
int php_owner_destroy(php_owner *o);
/* A terminating domain gives its memory to the heap: the owner first
 * finishes sweeping its unswept pools and large blocks (on_free sees what
 * they free), then every pool and large block moves to the heap's orphan
 * lists, with its counters.  Orphaned blocks stay allocated; nobody
 * allocates from or sweeps orphans until an owner adopts them.  The owner
 * is empty and usable afterwards. */
int php_owner_orphan(php_owner *o);
/* Take every orphaned pool and large block into o (swept ones stay swept:
 * php_cycle makes them unswept with the rest), with their counters.  OCaml
 * adopts at every cycle.  php_alloc also adopts an orphaned pool with free
 * slots of the class it needs, one at a time, before taking a new pool. */
int php_owner_adopt(php_owner *o);
/* The heap of an owner (NULL for NULL). */
php_heap *php_owner_heap(const php_owner *o);

/* ------------------------------------------------------------ allocation */

/* Allocate a block of wosize >= 1 fields with header
 * wosize << 10 | header_bits, header_bits = colour << 8 | tag (0..1023): the
 * colour is the embedder's (OCaml allocates with its current MARKED
 * colour).  The fields are not initialised: the embedder writes them before
 * the block can be seen by a marker or a scan callback.  Blocks of more than
 * php_heap_stats.max_small_wosize fields are large blocks; below, the
 * small size classes (one-unit pools) then the medium ones (pools of
 * several contiguous units, compacted like the small ones: an interior
 * pointer into any unit of a medium pool is forwarded by php_forward and
 * found by php_visit_pool_of), none wasting 1/8 of its slot.  Returns the
 * address of field 0, or 0 and php_last_error(o) says why: PH_EINVAL
 * (wosize 0 or > PH_MAX_WOSIZE, header_bits > 1023, o NULL), PH_ENOMEM (the
 * OS refused, or heap_limit), PH_ESTATE (from a callback).  With no swept
 * pool with room in the class, it first sweeps o's unswept pools of that
 * class until one has room (as OCaml does: on_free sees what they free;
 * with php_config.alloc_sweep PHP_ALLOC_SWEEP_AVAIL only those that had
 * room; php_owner_sweep_work tells the work), then adopts an orphaned pool
 * with free slots, then takes a new unit. */
ph_value php_alloc(php_owner *o, size_t wosize, unsigned header_bits);
/* The error of the last failing php_alloc on o (PH_OK if none failed). */
int php_last_error(const php_owner *o);

/* The sweeping done on o since the last call, then set back to 0 (a NULL
 * pointer skips that figure, which is reset all the same): *alloc_work, the
 * words of work php_alloc did sweeping pools to find room (a pool's words
 * per pool swept, as php_sweep counts its work; OCaml adds it to its
 * major_work_done_between_slices, as its own allocator does, so that its
 * pacing counts it); *freed_words, the words (wosize + 1) of the pool
 * blocks and the words of the large blocks' units that o's sweeps freed
 * (php_sweep's, php_alloc's, php_owner_orphan's; OCaml's swept_words).
 * PH_EINVAL for a bad owner; PH_ESTATE from a callback. */
int php_owner_sweep_work(php_owner *o, intptr_t *alloc_work,
                         uint64_t *freed_words);

/* -------------------------------------------------------------- sweeping */

/* Sweep o's unswept pools, then its unswept large blocks, until budget words
 * of work are done or nothing is unswept.  Work: a pool's words, a large
 * block's words.  In a pool, a block whose colour is the garbage colour is
 * given to on_free and becomes a free slot; other allocated blocks are kept
 * as they are (no header is rewritten); a pool left empty goes back to the
 * heap's free units.  A garbage large block is given to on_free and its
 * units freed.  Runs concurrently with other owners' allocation and
 * sweeping and with any thread's marking (headers are read and written with
 * relaxed atomics; a marker never turns a block into the garbage colour).
 * Returns budget minus the work done: a result > 0 means nothing is left
 * unswept.  A budget <= 0 sweeps nothing and returns it. */
intptr_t php_sweep(php_owner *o, intptr_t budget);

/* Make all of o's pools and large blocks unswept again, for the next cycle
 * (after the embedder's single-threaded cycle step, php_set_colours).
 * PH_ESTATE if o still has unswept memory (the previous cycle's sweep is not
 * finished: OCaml asserts the same). */
int php_cycle(php_owner *o);

/* -------------------------------------------------------------- visiting */

/* Called for every allocated block of a pool (header != 0), with the header
 * as read (relaxed atomic load). */
typedef void (*php_block_fn)(ph_value block, ph_value header, void *user);

/* Visit every allocated block of the pool that holds addr (any address
 * inside one of its slots: an interior pointer works), in address order; if
 * addr is inside a large block, visit that block.  For OCaml's re-darkening
 * of a pool after a mark stack overflow.  Any thread, while owners allocate
 * and sweep: a block allocated or freed during the visit may or may not be
 * seen; addr must lie in a block that is not garbage (so the pool cannot be
 * freed meanwhile).  fn must not call into the pool layer (refused).
 * PH_EINVAL if addr is not inside an allocated unit of h or fn is NULL
 * (nothing visited).  Any unit of a medium pool leads to the whole pool
 * (found in O(1) from the unit, DESIGN.md: heap.unit.lookup). */
int php_visit_pool_of(php_heap *h, ph_value addr, php_block_fn fn, void *user);

/* -------------------------------------------------------------- counters */

/* OCaml's heap_stats, in words (8 bytes). */
typedef struct php_counters {
  uint64_t pool_words;       /* words of the pools held */
  uint64_t pool_max_words;   /* the most pool_words ever held */
  uint64_t pool_live_words;  /* sum of wosize + 1 over allocated blocks */
  uint64_t pool_live_blocks; /* allocated blocks in pools (garbage not yet
                                swept included) */
  uint64_t pool_frag_words;  /* words in pools that are neither free slots
                                nor blocks: pool headers and the slack of
                                slots larger than their block */
  uint64_t large_words;      /* words of the units of large blocks */
  uint64_t large_max_words;  /* the most large_words ever held */
  uint64_t large_blocks;     /* large blocks */
  /* Added later: the medium pools' share of pool_words and of
   * pool_live_words (the classes above the small ones: php_alloc).  OCaml
   * mallocs blocks of those sizes and counts their words alone in its heap
   * size; its binding paces with these. */
  uint64_t medium_pool_words; /* words of the medium pools held */
  uint64_t medium_live_words; /* sum of wosize + 1 over their blocks */
} php_counters;
/* Free words of pools = pool_words - pool_live_words - pool_frag_words. */

/* The owner's counters (from its thread, or while it is stopped). */
int php_owner_counters(const php_owner *o, php_counters *out);
/* The counters of the orphaned pools and large blocks (any thread). */
int php_orphan_counters(php_heap *h, php_counters *out);

typedef struct php_heap_stats {
  size_t pool_size;         /* bytes of a unit: a small pool is one unit,
                               a medium pool several (heap.unit) */
  unsigned size_classes;    /* number of size classes */
  size_t max_small_wosize;  /* largest wosize served by a pool */
  uint64_t committed_bytes; /* bytes committed (may be resident) */
  uint64_t reserved_bytes;  /* address space reserved */
  uint64_t mappings;        /* kernel mappings the heap holds now */
  uint64_t pool_bytes;      /* bytes of pools in use */
  uint64_t large_bytes;     /* bytes of units holding large blocks */
  uint64_t free_bytes;      /* committed bytes of free units */
  /* compaction */
  uint64_t compactions;      /* completed php_compact_stw runs */
  uint64_t evacuated_blocks; /* last compaction: blocks moved */
  uint64_t evacuated_bytes;  /* last compaction: bytes moved */
  uint64_t evacuated_pools;  /* last compaction: pools emptied and freed */
  uint64_t released_bytes;   /* last compaction: given back to the OS */
  /* heap.pool.holes: bytes given back to the OS inside pools (a
   * compaction's packed and partly filled pools): in pool_bytes, not in
   * committed_bytes */
  uint64_t hole_bytes;
  /* php_config.compact_helpers: threads the last compaction started (the
   * most in one phase) */
  unsigned compact_helpers;
} php_heap_stats;

/* Copy the heap's figures (any thread; not from a callback). */
int php_heap_stats_get(php_heap *h, php_heap_stats *out);

/* ------------------------------------------------------------ compaction */

typedef struct php_compact_ops {
  /* Participants: every one calls php_compact_stw with the same ops and its
   * own part index 0..nparts-1.  1..1024. */
  unsigned nparts;
  /* The embedder's barrier over the nparts participants: returns when all
   * have called it, and everything written before it on any participant
   * happens-before everything read after it on any other (a pthread
   * barrier, OCaml's caml_global_barrier).  poolheap's phases are separated
   * by calls to it, so they run inside the embedder's stop-the-world
   * section. */
  void (*barrier)(void *user);
  /* Visit the root slots of participant part (called once per part, on
   * that participant).  A slot must be visited once in all (by one part):
   * visit rewrites it (before it returns).  NULL: no roots. */
  void (*scan_roots)(unsigned part, ph_visit_fn visit, void *ctx, void *user);
  /* Visit the slots of block that hold values (a closure's environment
   * after its code pointers; a continuation's stack; nothing for raw data).
   * Called once for every live block of the heap, pools and large blocks, by
   * any participant or helper (php_config.compact_helpers; with no_scan_tag
   * set: only for the blocks of the scan_tags; see below).  visit rewrites the
   * slot before it returns. May be NULL only with no_scan_tag set and scan_tags
   * empty. */
  void (*scan_block)(ph_value block, ph_visit_fn visit, void *ctx, void *user);
  /* Colours of live blocks, one bit per colour (bit c: colour c).  Every
   * allocated block must have a live colour or the garbage colour
   * (php_set_colours), which is not live.  OCaml compacts at the cycle
   * boundary: live = 1 << UNMARKED. */
  unsigned live_colours;
  void *user;
  /* Fields added later: zero (a zeroed or designated-initialised struct)
   * keeps the meaning the fields above always had.
   *
   * The scan rule from the header, for embedders whose blocks are "every
   * field is a value unless the tag says otherwise".  0 (default): every
   * live block goes through scan_block.  1..256: a block whose tag is in
   * scan_tags goes through scan_block; otherwise a block of tag >=
   * no_scan_tag holds no values and is not visited, and every field of a
   * block of any other tag is a value, which the layer updates itself
   * (inline, with its loads in flight together: no call per field or per
   * block).  OCaml: No_scan_tag (251), scan_tags = {Closure_tag,
   * Cont_tag}. */
  unsigned no_scan_tag;
  /* Tags whose blocks go through scan_block when no_scan_tag is set: tag t
   * is bit t % 64 of scan_tags[t / 64].  All zero when no_scan_tag is 0.
   * scan_block may be NULL when no_scan_tag is set and scan_tags is empty. */
  uint64_t scan_tags[4];
  /* Called on each participant, on its thread, when a phase of the
   * compaction begins (begin 1) and ends (begin 0): PHP_COMPACT_EVACUATE
   * (sweep, plan and moves), PHP_COMPACT_UPDATE (roots and blocks
   * rewritten), PHP_COMPACT_RELEASE (pools freed, memory given back), in
   * that order, each once.  For the embedder's own events (OCaml's runtime
   * events).  NULL: none.  It must not call into the pool layer. */
  void (*on_phase)(unsigned phase, int begin, unsigned part, void *user);
} php_compact_ops;

/* Phases of php_compact_ops.on_phase. */
enum {
  PHP_COMPACT_EVACUATE = 0,
  PHP_COMPACT_UPDATE = 1,
  PHP_COMPACT_RELEASE = 2,
};

/* Compact the whole heap: every participant calls it (the embedder's world
 * is stopped: no owner allocates or sweeps).  In order, separated by
 * ops->barrier: every pool and large block is swept (garbage freed, on_free
 * first) and counted; per size class, across all owners and orphans, the
 * k = ceil(live / slots per pool) densest pools are kept and the live
 * blocks of the others are moved into their free slots (any participant
 * claims the work); every root (scan_roots) and every live block
 * (scan_block) is updated: visit forwards a slot that points anywhere into
 * a moved block (an interior pointer too) in O(1); the emptied pools are
 * freed, and free memory beyond cfg.retain goes back to the OS in one pass
 * on participant 0 (cfg.release; with PH_RELEASE_DECOMMIT the mappings
 * never grow; except with PH_RELEASE_KEEP, the pages lying wholly inside
 * the free slots of the medium pools kept go back too, past each slot's
 * first two words, and stay counted committed: an allocation takes them
 * again without a commit).  Afterwards every pool and large block is
 * swept: php_sweep finds nothing to do until the next php_cycle; a block
 * may now sit in another owner's pool.  A second compaction moves nothing.
 * Returns PH_OK on every participant, or:
 * With ops->no_scan_tag set, the blocks are updated by the scan rule
 * (php_compact_ops.no_scan_tag): scan_block is called only for blocks of
 * the scan_tags, and an interior pointer is forwarded at its offset
 * wherever it is found.
 * PH_EINVAL on every participant, before any barrier, for bad ops (nparts 0
 * or > 1024, barrier NULL, scan_block NULL (unless no_scan_tag is set and
 * scan_tags is empty), live_colours 0 or including the garbage colour,
 * no_scan_tag > 256, a scan_tags bit set with no_scan_tag 0) or part >=
 * nparts (on that participant: the others then
 * wait in the barrier forever, as with any participant that does not come);
 * PH_EINVAL on every participant, with nothing moved, if an allocated block
 * has neither a live colour nor the garbage colour (the garbage is swept as
 * php_sweep would: freed, on_free first; the graph is intact);
 * PH_ENOMEM on every participant, with nothing changed, if the scratch
 * state for nparts participants cannot be allocated.  If memory for the
 * plan itself is refused, nothing moves and PH_OK is returned
 * (php_heap_stats: 0 blocks moved). */
int php_compact_stw(php_heap *h, unsigned part, const php_compact_ops *ops);

/* The current address of v: inside php_compact_stw's callbacks, a value that
 * points anywhere into a block that has moved is returned at the same
 * offset into the block's new copy; any other value (immediates, pointers
 * outside the heap, blocks that did not move) is returned unchanged, as it
 * is outside a compaction.  For values the embedder keeps outside the slots
 * it visits. */
ph_value php_forward(php_heap *h, ph_value v);

/* ----------------------------------------------------------- verification */

/* Check the layer's invariants while the world is stopped: chunks and
 * units, every pool header and slot header (0, or a wosize of its class),
 * free lists, every pool and large block on exactly one list of its owner
 * or of the orphans, owners' and orphans' counters against a recount, and
 * the OS accounting.  PH_OK, or PH_ECORRUPT with a description written to
 * why (if why_size > 0); PH_EINVAL for a bad heap. */
int php_verify(php_heap *h, char *why, size_t why_size);

#ifdef __cplusplus
}
#endif
#endif /* POOLHEAP_POOLS_H */
