/* gc/gc.h -- the managed collector: the collection sequence, marking,
 * sweep policy, pacing, automatic compaction, verify, census (DESIGN.md:
 * gc).
 *
 * Includes: roots/, compact/ (and below). */
#ifndef PH_GC_GC_H
#define PH_GC_GC_H

#include "compact/compact.h"
#include "roots/roots.h"

typedef struct ph_mark_entry {
  ph_value v;   /* block */
  size_t start; /* first field still to scan */
  size_t end;   /* one past the last field to scan; 0: the whole block */
} ph_mark_entry;

typedef struct ph_mark_stack {
  ph_mark_entry *e;
  size_t n, cap;
} ph_mark_stack;
/* A stack's first capacity, in entries (96 KiB; mark.stack.scratch) */
#define PH_MARK_KEEP 4096

/* Shared packets of mark work (mark.share). */
typedef struct ph_mark_packet {
  struct ph_mark_packet *next;
  size_t n;
  ph_mark_entry e[];
} ph_mark_packet;

/* One participant's collector state in a section; its pool-layer state
 * (what it marked live, swept, recorded, moved) is h->sec.pw[id]. */
typedef struct ph_worker {
  unsigned id; /* participant index 0..nparts-1 */
  struct ph_domain *dom;
  ph_pool_worker *pw; /* &h->sec.pw[id] */
  ph_mark_stack stack;
#define PH_MARK_AHEAD 16 /* mark.prefetch ring, a power of two */
  ph_value ring[PH_MARK_AHEAD];
  unsigned ring_n; /* values queued (only the last PH_MARK_AHEAD kept) */
  uint64_t live_bytes, live_blocks; /* marked; then handed to pw */
  /* gc.weak.watch: blocks marked with the watch bit in their header (keys
   * of listed ephemerons), since the section's start or the last round's;
   * read by the others after a barrier */
  uint64_t watch_hits;
  uint64_t t_mark, t_sweep;
  /* gc.weak: the weak blocks (in slices of PH_WEAK_SLICE fields) and the
   * ephemerons whose keys were not all marked when this participant looked
   * at them (the pending ones) */
  struct ph_weak_ent *weak;
  ph_value *ephe;
  size_t nweak, weak_cap, nephe, ephe_cap;
  /* gc.weak.met.ahead: ephemerons marked, their first key's header asked
   * for, looked at PH_EPHE_MET_AHEAD ephemerons later */
#define PH_EPHE_MET_AHEAD 16 /* a power of two */
  ph_value ephe_ring[PH_EPHE_MET_AHEAD];
  unsigned ephe_ring_n;  /* queued (only the last PH_EPHE_MET_AHEAD kept) */
  uint64_t weak_cleared; /* this section's, summed by the leader (the
                          * ephemerons: the sweep's zeroed, gc.weak.pending) */
} ph_worker;

/* gc.weak.clear: one slice of a weak block, fields [start, start +
 * PH_WEAK_SLICE) (or to its end) */
typedef struct ph_weak_ent {
  ph_value v;
  size_t start;
} ph_weak_ent;
#define PH_WEAK_SLICE 4096

typedef struct ph_census_req {
  void (*fn)(const ph_census_class *c, void *user);
  void *user;
} ph_census_req;

/* What a ph_verify or ph_census caller asks of the section it leads. */
typedef struct ph_gc_req {
  char *why;
  size_t why_size;
  ph_census_req census;
} ph_gc_req;

/* gc.final: a registered finaliser, or one due to run (ready). */
typedef struct ph_final {
  ph_value v; /* the value (0 in a ready LAST entry) */
  ph_final_fn fn;
  void *user;
  uint32_t slot; /* registering domain's slot; max_domains once it left */
  uint8_t when;  /* PH_FINAL_FIRST or PH_FINAL_LAST */
  uint8_t due;   /* a collection found v unreachable: to queue */
} ph_final;
/* A FIFO of ready entries: e[head .. n). */
typedef struct ph_fqueue {
  ph_final *e;
  size_t head, n, cap;
} ph_fqueue;

/* gc.pin: a pinned block and its pin count; v 0 is a free slot,
 * PH_PIN_TOMB a removed one (an immediate: never a block). */
typedef struct ph_pin_ent {
  ph_value v;
  size_t count;
} ph_pin_ent;
#define PH_PIN_TOMB ((ph_value)1)

/* The collector's state of a heap (h->gc).  Written by participants,
 * ordered by the section's barriers, unless marked. */
typedef struct ph_gc {
  ph_worker *workers;  /* one per possible participant */
  unsigned nparts;     /* participants of the current section */
  int do_compact;      /* leader decides after the sweep (auto compaction) */
  int compact_refused; /* gc.pin: the pinned pools could not be listed */
  _Atomic size_t claim_rescan; /* mark.overflow: units of the rescan */
  /* mark termination (mark.share) */
  pthread_mutex_t mark_lock;
  pthread_cond_t mark_cond;
  ph_mark_packet *shared;  /* (mark_lock) */
  unsigned idle;           /* (mark_lock) */
  int mark_done;           /* (mark_lock) */
  _Atomic unsigned hungry; /* participants waiting for work */
  /* mark.share.spin: advanced under mark_lock (release) at each packet
   * shared and at the end of marking; the idle spin on it */
  _Atomic uint64_t mark_events;
  _Atomic uint32_t mark_spin_ns; /* ph_spin_wait's adaptive bound */
  uint64_t mark_slept;           /* (mark_lock) idle waits that slept, in all */
  _Atomic int mark_overflow;     /* a stack could not grow: rescan needed */
  _Atomic size_t claim_weak;     /* gc.weak.clear: list entries, all lists */
  /* gc.final: registrations and the ready queues (one per domain slot,
   * then the orphans'), under final_lock outside sections */
  pthread_mutex_t final_lock;
  int final_inited;
  ph_final *regs;
  size_t nregs, regs_cap;
  ph_fqueue *ready;            /* max_domains + 1 */
  size_t nqueued;              /* entries in all ready queues */
  _Atomic size_t *nready;      /* entries in each ready queue (hint) */
  unsigned char *fin_running;  /* per slot: its domain is running them */
  _Atomic size_t claim_groots; /* the collector's roots: one claimer */
  /* gc.pin: the pin table (pin_lock), and the pools holding pinned
   * blocks, sorted, built by the leader before a compaction */
  pthread_mutex_t pin_lock;
  ph_pin_ent *pins;
  size_t pins_cap, pins_used; /* used: entries and tombstones */
  _Atomic size_t npins;       /* distinct pinned blocks */
  ph_pool **pinned_pools;
  size_t npinned_pools, pinned_pools_cap;
  /* compact.pin.holes: the pinned blocks in pools, sorted (same cap) */
  ph_value *pinned_blocks;
  size_t npinned_blocks;
} ph_gc;

/* gc.weak: colour bit 1 of a header (kept by the sweep, copied by the
 * compactor) marks a weak block (tag PH_WEAK_TAG) or an ephemeron (tag
 * PH_EPHE_TAG); the mark bit is bit 0 (PH_BLACK), so a marked one has
 * colour 3. */
#define PH_HD_SPECIAL ((ph_value)2 << PH_HD_COLOR_SHIFT)
#define PH_HD_BLACK ((ph_value)PH_BLACK << PH_HD_COLOR_SHIFT)
#define PH_WEAK_TAG 0u
#define PH_EPHE_TAG 1u
/* gc.weak.pending: tag bit 1 of a marked ephemeron whose data is not known
 * to live (queued or listed), inside a collection only (its tag reads 3
 * until a round marks its data or the sweep zeroes its fields and clears
 * the bit: heap.sweep.zero) */
#define PH_HD_EPHE_PENDING ((ph_value)2)
/* mark.overflow: a marked ephemeron that is not pending has its data
 * marked (or all its fields: the strong fallback), so a rescan scans its
 * fields like any block's */
static inline int ph_hd_ephe_resolved(ph_value hd) {
  return ph_hd_color(hd) == (PH_BLACK | 2) && ph_hd_tag(hd) == PH_EPHE_TAG;
}
_Static_assert(((PH_HD_SPECIAL | PH_HD_EPHE_PENDING) & PH_HD_SWEEP_ZERO) ==
                   PH_HD_SWEEP_ZERO,
               "a pending ephemeron is what the sweep zeroes");

/* gc/collect.c: ph_stw_run with the collector's sequence as the body. */
int ph_gc_run(struct ph_domain *d, int kind, const ph_gc_req *req);

/* gc/mark.c (heap.mark) */
void ph_mark_stw(struct ph_heap *h, ph_worker *w);
void ph_mark_value(struct ph_heap *h, ph_worker *w, ph_value v);
void ph_mark_slot_visit(ph_value *slot, void *ctx);
/* Scan the fields [from, to) of the marked block v later (a mark stack
 * entry: no recursion); on overflow, the rescan's (mark.overflow). */
void ph_mark_fields_later(struct ph_heap *h, ph_worker *w, ph_value v,
                          size_t from, size_t to);
/* Unmaps a stack (mark.stack.scratch): at the end of every collection's
 * marking, and at heap_free.  Its entries are dropped. */
void ph_mark_stack_free(ph_mark_stack *s);
/* Drain every participant's stack, then rescan after an overflow, until
 * marking is done; ends with a barrier. */
void ph_mark_finish_stw(struct ph_heap *h, ph_worker *w);

/* gc/weak.c (gc.weak) */
/* Marking met the special block v (header hd, just marked by w). */
void ph_weak_met(struct ph_heap *h, ph_worker *w, ph_value v, ph_value hd);
/* gc.weak.met.ahead: look at every ephemeron w has queued (before w goes
 * idle; may push mark work). */
void ph_ephe_ring_flush(struct ph_heap *h, ph_worker *w);
/* gc.weak.rounds: resolve the ephemerons to a fixpoint (every participant;
 * starts and ends with a barrier). */
void ph_ephe_rounds_stw(struct ph_heap *h, ph_worker *w);
/* gc.weak.clear: every participant claims entries of every participant's
 * lists (claim_weak) and clears the weak fields whose targets are not
 * marked and the pending ephemerons; after the barrier that ends it, each
 * forgets its own lists (ph_weak_forget). */
void ph_weak_clear_stw(struct ph_heap *h, ph_worker *w);
void ph_weak_forget(ph_worker *w);
/* gc.weak.trim: after the sweep, free w's lists if they are big. */
void ph_weak_trim(ph_worker *w);

/* Did any participant meet a weak block or pending ephemeron (after a
 * barrier: every participant gets the same answer)? */
int ph_weak_any_stw(struct ph_heap *h);
void ph_weak_worker_free(ph_worker *w);

/* gc/final.c (gc.final) and the collector's roots */
int ph_final_init(struct ph_heap *h);
void ph_final_fini(struct ph_heap *h);
int ph_gc_block_check_locked(struct ph_heap *h, ph_value v);
int ph_gc_value_enter(ph_domain *d, ph_value v);
/* Visit the collector's roots: the ready values, and the pinned blocks
 * (marking) or the registered values (update, for compaction). */
void ph_gc_roots_visit_stw(struct ph_heap *h, ph_visit_fn visit, void *ctx,
                           int update);
int ph_gc_roots_any_stw(struct ph_heap *h);
/* Flag (due) the registrations of kind `when` of w's share whose value is
 * not marked; mark the values of w's share of the due ones. */
void ph_final_flag_stw(struct ph_heap *h, ph_worker *w, unsigned when);
void ph_final_mark_due_stw(struct ph_heap *h, ph_worker *w);
void ph_final_queue_stw_single(struct ph_heap *h);
void ph_final_detach_locked(struct ph_heap *h, unsigned slot);
/* A run point: run what is ready for d (its owner's thread, running,
 * outside sections); two loads when nothing is. */
void ph_final_poll(struct ph_domain *d);

/* gc/pin.c (gc.pin) */
int ph_pin_pools_stw_single(struct ph_heap *h);

/* gc/fault.c: allocation-failure injection in gc/'s tables, for tests
 * (DESIGN.md: tests.faults).  The malloc that would grow a table of the
 * kinds in op_mask is counted; the nth one (1-based) fails as if malloc had
 * returned NULL, and so does every later one if sticky.  nth = 0 turns it
 * off.  Process-wide; every build has it; off, it costs one relaxed load
 * where a table grows (never on the allocation fast path). */
enum {
  PH_GC_OP_PINS = 1,          /* the pin table (ph_pin) */
  PH_GC_OP_FINAL = 2,         /* the finaliser registrations (ph_finalise) */
  PH_GC_OP_WEAK = 4,          /* a participant's weak list (marking) */
  PH_GC_OP_EPHE = 8,          /* a participant's ephemeron list (marking) */
  PH_GC_OP_PINNED_POOLS = 16, /* the pinned pools' list (compaction) */
  PH_GC_OP_QUEUE = 32,        /* a ready queue of finalisers */
  PH_GC_OP_ALL = 63
};
void ph_gc_fault_set(unsigned op_mask, uint64_t nth, int sticky);
/* Injected failures since the last ph_gc_fault_set. */
uint64_t ph_gc_fault_hits(void);
/* 1 if this growth of a table of kind op must fail. */
int ph_gc_fault(unsigned op);

/* gc/verify.c */
int ph_verify_stw_single(struct ph_heap *h, char *why, size_t why_size);
/* gc/census.c */
void ph_census_stw_single(struct ph_heap *h, const ph_census_req *req);

#endif
