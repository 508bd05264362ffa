/* poolheap: a parallel, compacting, garbage-collected heap for multicore
 * language runtimes.
 *
 * This header is the library's one public interface and a contract: names and
 * meanings here are only ever added to.  See DESIGN.md for the architecture.
 *
 * Quick model
 * - A heap (ph_heap) is shared by several domains (ph_domain): threads that
 *   attached themselves with ph_domain_attach.  Each domain allocates from its
 *   own size-class pools without locks.
 * - Collection is stop-the-world: every running domain joins at a safepoint
 *   (ph_safepoint, or any allocation) and all of them mark and sweep in
 *   parallel.  Domains inside a blocking section are not waited for; their
 *   roots are scanned and updated by the others.
 * - ph_compact additionally moves live blocks out of sparse pools and gives the
 *   freed memory back to the operating system.
 * - Values are words: 0, an immediate integer (low bit 1) or a pointer to
 *   field 0 of a block.  A block is a header word followed by wosize fields.
 *   Tags 0..250 are scanned (every field is a value); tags >= PH_TAG_RAW hold
 *   raw bytes and are never scanned.
 * - A value the caller still needs across any call that may collect
 *   (ph_alloc, ph_safepoint, ph_collect, ph_compact, ph_verify, ph_census,
 *   ph_blocking_leave) must live in a root: a handle-scope slot (ph_root), a
 *   registered global slot (ph_root_add) or a slot visited by the embedder's
 *   scan_roots hook.  Compaction moves blocks and rewrites those slots.
 *   Report each slot through one kind of root only (not both registered
 *   with ph_root_add and visited by the hook).  A slot reported twice anyway
 *   is still updated correctly (see ph_scan_roots_fn); it only costs a
 *   second visit.
 * - Callbacks (the ph_census fn, on_event, scan_roots) run inside a
 *   stop-the-world section.  A call into poolheap from inside one, on the
 *   callback's thread, is refused in every build and changes nothing:
 *   functions returning an error code return PH_ESTATE, ph_alloc returns 0
 *   (ph_last_error PH_ESTATE when d is the calling thread's own domain),
 *   ph_root NULL, ph_scope_open (size_t)-1, and ph_safepoint,
 *   ph_blocking_enter and ph_blocking_leave return without effect.  Only
 *   ph_strerror, ph_config_init, ph_domain_index, ph_domain_heap and
 *   ph_last_error, which only read, work there; and ph_alloc on a domain
 *   of another heap may still take a free slot from that domain's cache (it
 *   is refused wherever it would wait, collect or take memory).
 */
#ifndef POOLHEAP_H
#define POOLHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PH_VERSION_MAJOR 0
#define PH_VERSION_MINOR 3

/* ---------------------------------------------------------------- values */

/* ph_value, PH_UNIT, PH_TAG_MAX, PH_MAX_WOSIZE, PH_HD_TAG_MASK,
 * PH_HD_WOSIZE_SHIFT, the value helpers (ph_val_int, ph_int_val,
 * ph_is_block, ph_hd_, ph_wosize, ph_tag, ph_field, ph_set_field, ph_raw),
 * the error codes (PH_OK, PH_EINVAL, PH_ENOMEM, PH_ESTATE, PH_ECORRUPT:
 * ph_verify found a broken invariant), ph_strerror, ph_huge_mode,
 * ph_release_mode and ph_visit_fn are defined by the pool layer's header,
 * which the managed collector is built on; their meanings are unchanged. */
#include "poolheap_pools.h"

typedef struct ph_heap ph_heap;
typedef struct ph_domain ph_domain;

/* First tag whose blocks hold raw bytes (never scanned). */
#define PH_TAG_RAW 251u

/* Header word layout: wosize << 10 | color << 8 | tag.  The color bits
 * belong to the collector; mutators never see anything but 0 there, except
 * in the header of a weak block or an ephemeron, whose color is 2. */

/* ---------------------------------------------------------- configuration */

typedef enum {
  PH_COMPACT_GLOBAL = 0,     /* a size class is compacted across all domains */
  PH_COMPACT_PER_DOMAIN = 1, /* each domain compacts its own pools in address
                                order (OCaml 5.2's behaviour, for comparison) */
} ph_compact_scope;

/* Phases reported to on_event, on every participating domain. */
typedef enum {
  PH_PHASE_STW = 0,      /* the whole stop-the-world section */
  PH_PHASE_MARK = 1,     /* roots and marking */
  PH_PHASE_SWEEP = 2,    /* sweeping pools and large blocks */
  PH_PHASE_EVACUATE = 3, /* compaction: choosing pools and copying blocks */
  PH_PHASE_UPDATE = 4,   /* compaction: rewriting pointers */
  PH_PHASE_RELEASE = 5,  /* compaction: freeing pools, returning memory */
  PH_PHASE_COUNT_ = 6
} ph_phase;

/* The embedder's own roots: visit every slot of domain d.  Called during
 * marking and during compaction's pointer update, for every attached domain
 * (blocking ones too, from another domain's thread).  It must not allocate
 * or call into poolheap other than through visit: such calls are refused
 * (PH_ESTATE; see Callbacks above).
 * A slot visited more than once in one pass (twice by the hook, by the hooks
 * of two domains, or by the hook and also registered with ph_root_add) is
 * harmless in every build: marking only reads it, and compaction's update
 * rewrites a root slot only while it still points into a block that moved,
 * so a repeated visit finds the new address and leaves it alone.  By the
 * time the section ends, every visited slot holds its block's new address. */
typedef void (*ph_scan_roots_fn)(ph_domain *d, ph_visit_fn visit, void *ctx,
                                 void *user);
/* Called around every phase on every participating domain; begin is 1 at the
 * start and 0 at the end; time_ns is CLOCK_MONOTONIC.  Must not call into
 * poolheap: such calls are refused (PH_ESTATE; see Callbacks above), on GC
 * helper threads too. */
typedef void (*ph_event_fn)(ph_phase phase, int begin, unsigned domain,
                            uint64_t time_ns, void *user);

typedef struct ph_config {
  unsigned max_domains;    /* 1..1024, default 64 */
  size_t pool_size;        /* power of two, 4 KiB..4 MiB, default 32 KiB */
  size_t heap_limit;       /* max committed bytes, 0 = none (default); a
                              large block counts only the pages it uses */
  unsigned gc_percent;     /* 0 = explicit only; 1..10000, default 100 */
  ph_huge_mode huge_pages; /* default PH_HUGE_OFF */
  ph_scan_roots_fn scan_roots;
  void *scan_roots_user;
  ph_event_fn on_event;
  void *on_event_user;
  /* compaction */
  ph_release_mode release; /* default PH_RELEASE_DECOMMIT */
  size_t retain;           /* free pool bytes kept committed, default 0 */
  ph_compact_scope compact_scope; /* default PH_COMPACT_GLOBAL */
  unsigned compact_percent;       /* 0 = never (default); 1..100 */
  /* GC helper threads: started by ph_heap_create, they take part in every
   * collecting or compacting section (marking, sweeping, evacuating and
   * updating beside the domains) and sleep otherwise.  They hold no roots
   * and allocate nothing.  0..64, default 0.  on_event reports a helper as
   * domain max_domains + k (k = 0 .. gc_helpers - 1).  Each runs on a
   * 256 KiB stack with a guard page that poolheap maps itself and unmaps
   * when ph_heap_destroy has joined it. */
  unsigned gc_helpers;
} ph_config;

/* Fill *cfg with the defaults. */
void ph_config_init(ph_config *cfg);

/* ------------------------------------------------------ heap and domains */

/* Create a heap.  cfg NULL means defaults.  PH_EINVAL (and nothing created)
 * for any invalid field; PH_ENOMEM if the OS refused the first memory or a
 * helper thread (gc_helpers).
 * *out is written only on success. */
int ph_heap_create(const ph_config *cfg, ph_heap **out);
/* Destroy a heap and release every mapping it made.  PH_ESTATE while a domain
 * is attached; PH_EINVAL for NULL or a pointer that is not a live heap.
 * Every function taking a ph_heap* checks it against a process-wide registry
 * of live heaps before reading it: a heap already destroyed (destroyed twice,
 * attached to, asked for stats or roots afterwards) gives PH_EINVAL, unless
 * a later ph_heap_create reused its address.  Calls racing with
 * ph_heap_destroy on the same heap are not covered.  Detached domain handles
 * are freed with their heap: do not use them after ph_heap_destroy.
 * The GC helpers' stacks are mappings it made too: none is left behind
 * (what the C library's malloc keeps for its threads is its own). */
int ph_heap_destroy(ph_heap *h);

/* The calling thread becomes a domain of h.  PH_ESTATE if max_domains are
 * attached already.  A domain is used only by the thread that attached it.
 * Every build checks this: a call (other than ph_domain_index, ph_domain_heap
 * and ph_last_error) on a domain from another thread gets PH_ESTATE, and
 * ph_safepoint and ph_blocking_enter/leave ignore it.  A thread that exits
 * with domains still attached has them detached at its exit (as by
 * ph_domain_detach, from a thread-specific data destructor), so later
 * collections do not wait for it; until then scan_roots is still called for
 * such a domain, so the hook must not depend on state the thread's earlier
 * destructors (C++ thread_local, other keys) have freed. */
int ph_domain_attach(ph_heap *h, ph_domain **out);
/* Detach a domain (from its own thread).  Blocks it allocated stay alive
 * while reachable from other roots; its pools are adopted by the heap; its
 * handle-scope roots are dropped.  PH_ESTATE if already detached.
 * A stale handle (one that was detached) gets PH_ESTATE from every call that
 * returns an error (ph_last_error then says PH_ESTATE), and ph_safepoint and
 * ph_blocking_enter/leave ignore it; ph_domain_index returns (unsigned)-1.
 * Its memory is kept, not freed, so this never reads freed memory; once 64
 * more domains of the same heap have detached, it may be reused for a new
 * attachment.  Then a stale call from any thread but the new owner still
 * gets PH_ESTATE and changes nothing (ph_domain_index, ph_domain_heap and
 * ph_last_error report the new domain); from the new owner's thread the
 * pointer is that thread's live handle again (ph_domain_attach returned
 * it).  So attach/detach churn uses bounded memory.  The finalisers d
 * registered (and those ready for it) are then run by the other domains
 * (see ph_finalise); its pins stay (ph_pin). */
int ph_domain_detach(ph_domain *d);
/* A small index, unique among attached domains, < max_domains. */
unsigned ph_domain_index(const ph_domain *d);
/* The heap a domain belongs to (NULL for an invalid handle). */
ph_heap *ph_domain_heap(const ph_domain *d);

/* ------------------------------------------------------------ allocation */

/* Allocate a block of wosize >= 1 fields with the given tag (0..255).
 * Scanned fields start as PH_UNIT; raw blocks are zeroed.  May collect
 * first.  Returns 0 on failure and ph_last_error(d) says why: PH_EINVAL
 * (wosize 0 or > PH_MAX_WOSIZE, tag > 255, bad domain), PH_ENOMEM, PH_ESTATE
 * (detached domain, or called from inside a callback: see Callbacks at the
 * top).  A block that could never fit heap_limit (or, without
 * one, the machine's memory) is refused with PH_ENOMEM at once, without a
 * collection; a refused allocation reserves nothing: the heap's reserved
 * bytes and mappings are as they were.  An allocation that needs a new pool
 * or a large block first runs the finalisers ready for d (ph_finalise), so
 * it may run embedder code, and may collect, like any allocation.  Blocks
 * of up to 32767 fields come from pools (above the small classes, medium
 * pools of several contiguous units, wasting less than 1/8 of a slot
 * too); larger ones are large blocks. */
ph_value ph_alloc(ph_domain *d, size_t wosize, unsigned tag);
/* Weak blocks and ephemerons (DESIGN.md: gc.weak).
 *
 * ph_alloc_weak: a block of n weak fields (n >= 1).  ph_field and
 * ph_set_field work on it as on any block; its fields start as 0 and may
 * hold any value.  A weak field does not keep its target alive: the
 * collection that finds the target unreachable (from the roots through
 * strong fields and the data of live ephemerons) sets the field to 0 before
 * the target is freed, so a weak field never holds a freed block; while the
 * target is reachable the field is never cleared, and a compaction that
 * moves it rewrites the field like any other.  A weak block itself is
 * collected like any block.  Its tag (ph_tag) is 0.
 *
 * ph_alloc_ephemeron: a block of nkeys + 1 fields (nkeys >= 1), all 0 at
 * first: fields 0 .. nkeys-1 are weak keys, field nkeys is the data.  The
 * data is kept alive only while every key is alive, and the ephemeron
 * itself is: a key reachable only through the data (its own or another
 * ephemeron's whose keys are not all alive) does not keep itself alive.
 * Ephemerons are resolved to a fixpoint, as OCaml's are.  When a key is
 * found dead, every key and the data read 0 (all in the same collection).
 * A key field holding 0 or an immediate counts as alive.  Its tag is 1.
 *
 * Both return 0 on failure with ph_last_error(d) as ph_alloc's: PH_EINVAL
 * for n or nkeys of 0 or above PH_MAX_WOSIZE - 1 (and a bad domain),
 * PH_ENOMEM, PH_ESTATE.  Under memory exhaustion inside a collection (a
 * participant's list of weak blocks cannot grow), a weak block or
 * ephemeron is treated as an ordinary block for that collection: its
 * targets stay alive one collection longer, never less. */
ph_value ph_alloc_weak(ph_domain *d, size_t n);
ph_value ph_alloc_ephemeron(ph_domain *d, size_t nkeys);

/* Finalisers (DESIGN.md: gc.final).
 *
 * ph_finalise registers fn for the block v (a block of d's heap, allocated
 * and not freed; any number of registrations per value):
 * - PH_FINAL_FIRST: fn(d, v, user) is called once v is unreachable from the
 *   roots.  The collection that finds so keeps v alive (and everything it
 *   reaches) until fn has run, and fn may resurrect v by storing it
 *   somewhere reachable.  Weak fields and ephemeron keys holding v were
 *   cleared in that same collection, before fn sees v, and resurrection
 *   does not restore them (as Java's WeakReference and Go's weak.Pointer;
 *   OCaml keeps them until the finaliser has run).
 * - PH_FINAL_LAST: fn(d, 0, user) is called once v is unreachable and no
 *   FIRST finaliser of v is left to run, after every weak field and
 *   ephemeron key that held v has been cleared.  So the FIRST finalisers of
 *   a value always run before its LAST ones.
 * Finalisers never run inside a stop-the-world section.  They run on the
 *   thread of the registering domain d (or, once d has detached, of any
 *   other attached domain of the heap), in the order they became due: at d's
 *   next allocation slow path (an allocation that needs a new pool or a
 *   large block), after a ph_safepoint of d that joined a section, when
 *   ph_collect or ph_compact returns on d, or at once with
 *   ph_run_finalisers.  fn may allocate, collect and call ph_finalise (it
 *   must not detach d, nor leave a scope or blocking section open); v is
 *   kept alive while fn runs, but fn must root it itself across a call that
 *   may collect (a compaction may move it).  A call to ph_run_finalisers
 *   (or a run point) from inside a finaliser returns at once: the outer run
 *   goes on with the rest.  Finalisers still due when the heap is destroyed
 *   never run.
 * Errors: PH_EINVAL for fn NULL, a bad `when`, or v not a block of this heap
 * (0, an immediate, an address that is not field 0 of an allocated block);
 * PH_ENOMEM if the table cannot grow; PH_ESTATE as ph_collect (stale or
 * foreign domain, inside a callback) and inside a blocking section.  A
 * refused call changes nothing.  A registration that succeeded is never
 * lost nor run twice: it also reserves the room its entry needs in the
 * queue of the detached domains' finalisers, so a detach hands every
 * finaliser due for d to the other domains without allocating.
 * ph_run_finalisers: runs every finaliser ready for d (and the orphans of
 * detached domains); PH_OK, PH_ENOMEM if d's root stack could not hold a
 * value (the rest stay ready), errors of the domain as ph_finalise's. */
typedef void (*ph_final_fn)(ph_domain *d, ph_value v, void *user);
typedef enum {
  PH_FINAL_FIRST = 0,
  PH_FINAL_LAST = 1,
} ph_final_when;
int ph_finalise(ph_domain *d, ph_value v, ph_final_fn fn, void *user,
                ph_final_when when);
int ph_run_finalisers(ph_domain *d);

/* Pinning (DESIGN.md: gc.pin).  A pinned block does not move: compaction
 * keeps it and its pool in place, until as many
 * ph_unpin as ph_pin calls were made for it.  Pins are counted per heap,
 * not per domain: any attached domain of the heap may pin or unpin any
 * block, and pins survive the pinning domain's detach.  A pinned block is
 * also kept alive (it is a root) until unpinned.  Errors: PH_EINVAL for v
 * not a block of this heap (0, an immediate, an address that is not field 0
 * of an allocated block) and for ph_unpin of a block that is not pinned;
 * PH_ENOMEM if the pin table cannot grow; PH_ESTATE as ph_finalise.  A
 * refused call changes nothing.  With cfg.release PH_RELEASE_KEEP every
 * other block of a pinned block's pool stays in place too; with the modes
 * that release memory, a compaction may move them out of the pages that
 * hold no pinned block (the pool's other pages receive moved blocks first)
 * and give those pages back to the OS, so a pin costs about the pages it
 * lies on, not its whole pool (DESIGN.md: compact.pin.holes).  A pinned
 * block of a medium class keeps its whole pool in place (no pages are
 * given back from a medium pool).  A pointer into any unit of a medium
 * pool that is not field 0 of an allocated block gets PH_EINVAL, here and
 * in ph_finalise. */
int ph_pin(ph_domain *d, ph_value v);
int ph_unpin(ph_domain *d, ph_value v);

/* The error of the last failing call on d (PH_OK if none failed).  Calls
 * refused because d was detached record PH_ESTATE here too; calls refused
 * because d belongs to another thread leave it alone.  PH_EINVAL for NULL or
 * a pointer that is not a domain handle. */
int ph_last_error(const ph_domain *d);

/* ----------------------------------------------------------------- roots */

/* Handle scopes on the domain's root stack.  ph_scope_open returns a mark;
 * ph_root pushes v and returns its slot, which stays at the same address
 * until the scope closes and is kept up to date by the collector (NULL if the
 * stack cannot grow); ph_scope_close pops back to mark: PH_ESTATE if mark is
 * not the innermost open scope (closed twice or out of order).
 * Marks are unique for the domain's lifetime: the mark of a scope closed
 * earlier, or of another attached domain, is never the innermost open
 * scope, even when a newer scope sits at the same depth, so closing with it
 * is PH_ESTATE and closes nothing.  ph_scope_open returns (size_t)-1 if it
 * fails.
 * Inside a blocking section (between ph_blocking_enter and
 * ph_blocking_leave), where other domains scan and update this stack, all
 * three are refused as ph_alloc is: ph_scope_open returns (size_t)-1,
 * ph_root NULL, ph_scope_close PH_ESTATE, each with ph_last_error(d) ==
 * PH_ESTATE, and the stack stays as it was.  Open and fill scopes before
 * ph_blocking_enter, close them after ph_blocking_leave. */
size_t ph_scope_open(ph_domain *d);
ph_value *ph_root(ph_domain *d, ph_value v);
int ph_scope_close(ph_domain *d, size_t mark);

/* Global roots: slots owned by the embedder, callable from any thread.
 * ph_root_add: PH_EINVAL if slot is NULL or already registered.
 * ph_root_remove: PH_EINVAL if slot is not registered.  Once it has
 * returned PH_OK, poolheap never reads or writes *slot again (a collection
 * or compaction that is scanning or updating the global roots finishes with
 * them before the removal takes effect), so the slot may be freed or reused
 * at once, even while another domain collects. */
int ph_root_add(ph_heap *h, ph_value *slot);
int ph_root_remove(ph_heap *h, ph_value *slot);

/* ------------------------------------------------------- stop-the-world */

/* Join a pending stop-the-world section; one load when none is pending.
 * NULL, a detached handle, another thread's domain and junk (a pointer to
 * readable memory that is not a domain handle, told apart by its signature
 * word) are ignored; that check costs a few more loads, no lock.  After
 * it joined a section it runs the finalisers ready for d (ph_finalise),
 * outside the section. */
void ph_safepoint(ph_domain *d);
/* Around code that does not touch the heap (a system call, a lock wait):
 * collections run without waiting for this domain.  NULL, junk, detached
 * and other threads' handles are ignored.  Allocation and the
 * handle-scope calls are refused in between (PH_ESTATE, see ph_scope_open). */
void ph_blocking_enter(ph_domain *d);
void ph_blocking_leave(ph_domain *d);

/* A full collection with every running domain taking part.  Returns after a
 * whole collection that started after the call; concurrent requests from
 * several domains coalesce.  On success, before returning, it runs the
 * finalisers ready for d (ph_finalise); so does ph_compact. */
int ph_collect(ph_domain *d);
/* A full collection, then compaction, then release of free pools to the OS,
 * with every running domain taking part.  Coalesces like ph_collect.  With
 * huge pages, memory goes back only in whole 2 MiB ranges; in
 * PH_COMPACT_GLOBAL scope the pools kept are then chosen inside the ranges
 * that stay in use, so that the other ranges empty whole.  Pools holding a
 * pinned block (ph_pin) are always kept; if their list cannot be
 * allocated, the collection runs but nothing moves and ph_compact returns
 * PH_ENOMEM.  It does so on every domain whose ph_compact that section
 * served (concurrent calls coalesced into it, the caller that led it
 * included), and none of them retries: PH_ENOMEM from ph_compact always
 * means that no compaction happened for that call (the collection did).
 * Releasing memory (cfg.release not PH_RELEASE_KEEP), a compaction may move
 * the unpinned blocks of a pool holding a pinned block out of the pages
 * that hold none, and give those pages back to the OS (ph_pin).  It also
 * gives back the pages lying wholly inside the free slots of the medium
 * pools it keeps (slots of two pages or more, in chunks of normal pages;
 * PH_RELEASE_LAZY: MADV_FREE): they stay counted in committed_bytes, since
 * an allocation takes them again without a commit. */
int ph_compact(ph_domain *d);
/* Stop the world and check every invariant.  PH_OK, or PH_ECORRUPT with a
 * description written to why (if why_size > 0). */
int ph_verify(ph_domain *d, char *why, size_t why_size);

/* ----------------------------------------------------------- observation */

typedef struct ph_stats {
  uint64_t collections;     /* completed collections (compactions included) */
  uint64_t live_bytes;      /* sum of (wosize+1)*8 over blocks found live by
                               the last collection */
  uint64_t live_blocks;     /* blocks found live by the last collection */
  uint64_t pool_bytes;      /* bytes of pools in use (holding blocks);
                               pages a compaction gave back from pools that
                               keep pinned blocks are not counted */
  uint64_t free_pool_bytes; /* bytes of committed pool memory not in use */
  uint64_t large_bytes;     /* bytes of memory holding large blocks (their
                               committed pages, not whole units) */
  uint64_t committed_bytes; /* bytes committed (may be resident) */
  uint64_t reserved_bytes;  /* address space reserved */
  uint64_t mappings;        /* kernel mappings the heap holds now */
  uint64_t allocated_bytes; /* bytes allocated since the heap was created */
  uint64_t mark_ns;         /* last collection: marking (longest domain) */
  uint64_t sweep_ns;        /* last collection: sweeping */
  uint64_t stw_ns;          /* last stop-the-world section, whole */
  uint64_t huge_fallbacks;  /* PH_HUGE_EXPLICIT reservations that fell back */
  uint64_t domains;         /* domains attached now */
  uint64_t size_classes;    /* number of small size classes */
  /* compaction */
  uint64_t compactions;
  uint64_t evacuated_blocks; /* last compaction */
  uint64_t evacuated_bytes;
  uint64_t evacuated_pools;
  uint64_t released_bytes; /* last compaction: returned to the OS */
  uint64_t evacuate_ns;
  uint64_t update_ns;
  uint64_t release_ns;
  /* weak blocks and ephemerons (ph_alloc_weak, ph_alloc_ephemeron), since
   * the heap was created */
  uint64_t weak_cleared;       /* weak fields cleared (their target died) */
  uint64_t ephemerons_cleared; /* ephemerons cleared (a key died) */
  uint64_t finalisers_run;     /* finalisers called (ph_finalise) */
  uint64_t pinned_blocks;      /* blocks pinned now (ph_pin) */
  /* medium size classes (after the small ones: blocks of up to 32767
   * fields, in pools of several contiguous units; larger blocks are large
   * blocks); ph_census reports size_classes + medium_classes rows */
  uint64_t medium_classes;
} ph_stats;

/* Copy the heap's statistics.  Callable from any thread.  PH_EINVAL for a
 * NULL out or a pointer that is not a live heap; PH_ESTATE from inside a
 * callback. */
int ph_stats_get(ph_heap *h, ph_stats *out);

/* One row of the fragmentation map. */
typedef struct ph_census_class {
  unsigned size_class; /* 0 .. size_classes-1 */
  size_t block_words;  /* words per block slot, header included */
  size_t max_wosize;   /* largest wosize served by this class */
  size_t pools;        /* pools of this class in use */
  size_t live_blocks;  /* blocks allocated (not free) */
  size_t free_blocks;  /* free slots in those pools */
  /* pages given back around pinned blocks (ph_pin, ph_compact) and, after
   * ph_compact, the pages of kept pools that hold no block: */
  size_t holed_pools;     /* pools of this class with such holes */
  size_t hole_blocks;     /* slots touching a hole: neither live nor free */
  size_t committed_bytes; /* bytes of the pools that are committed (whole
                             pools, header included, less their holes) */
} ph_census_class;

/* Stop the world and call fn once per size class, in order of size: the
 * ph_stats.size_classes small classes, then the medium_classes medium ones
 * (a medium class's pools span several units; rows count pools, not
 * units).  fn runs on the calling thread inside the section: a call into
 * poolheap from fn is refused (PH_ESTATE; see Callbacks at the top).  The
 * rows' committed_bytes add up to ph_stats' pool_bytes; in each row
 * live_blocks + free_blocks + hole_blocks is the slot count of its pools. */
int ph_census(ph_domain *d, void (*fn)(const ph_census_class *c, void *user),
              void *user);

#ifdef __cplusplus
}
#endif
#endif /* POOLHEAP_H */
