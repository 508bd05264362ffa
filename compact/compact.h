/* compact/compact.h -- the parallel compactor: plan, evacuate, update,
 * free, release (DESIGN.md: compact).
 *
 * Includes: heap/ (and below) only.  It runs inside a stop-the-world
 * section it does not own: the layer above hands it, per participant, a
 * barrier, a root scanner and the owner rule of PER_DOMAIN scope
 * (ph_compact_part). */
#ifndef PH_COMPACT_COMPACT_H
#define PH_COMPACT_COMPACT_H

#include "compact/ranges.h"
#include "heap/heap.h"

typedef struct ph_evac_unit {
  ph_pool *dst;
  ph_pool **src;      /* the class's evacuated pools */
  uint32_t src_first; /* index into src */
  uint32_t src_skip;  /* live blocks of src[src_first] before ours */
  uint32_t count;     /* blocks to move into dst */
  uint32_t owner;     /* slot of the pools' owner */
} ph_evac_unit;

typedef struct ph_cclass {
  ph_pool **keep, **evac;
  uint32_t *elive; /* live blocks of each evac pool (from the sweep) */
  size_t nkeep, nevac;
  ph_evac_unit *units;
  size_t nunits;
} ph_cclass;

typedef struct ph_compact_plan {
  ph_cclass cls[PH_MAX_CLASSES];
  ph_evac_unit *units; /* all classes' units */
  size_t nunits;
  ph_large **larges;
  size_t *large_first; /* first slice of each large block */
  size_t nlarges, nslices;
  /* a plan allocation failed: nothing is evacuated.  Written by any
   * participant in phase 2 (relaxed: read by the leader after a barrier) */
  _Atomic int failed;
  /* compact.update.map: one bit per unit over [map_lo, map_lo + map_units
   * units), set for evacuated pools.  Pool headers lie at a pool_size
   * stride and alias to a few cache sets; this map stays in L1. */
  uintptr_t map_lo;
  size_t map_units;
  uint64_t *map;
  /* compact.choose.ranges (compact/ranges.h): with huge pages, the release
   * ranges chosen to stay in use; ranges.keep NULL: the normal plan. */
  ph_ranges ranges;
  /* compact.pin: the pools holding pinned blocks (from ph_compact_part) */
  ph_pool *const *pinned;
  size_t npinned;
} ph_compact_plan;

/* One participant of a compaction, as the caller describes it.  Every
 * participant of the section calls ph_compact_stw with its own part;
 * h->sec.nparts and h->sec.pw hold every participant's sweep records. */
typedef struct ph_compact_part {
  unsigned id;  /* participant index: h->sec.pw[id] is its record */
  unsigned dom; /* domain index, for cfg.on_event */
  int leader;   /* exactly one participant: does the single-threaded work */
  /* Wait for every participant; returns 1 in exactly one of them. */
  int (*barrier)(void *arg);
  /* Make every root claimable again (called by one participant). */
  void (*roots_rewind)(void *arg);
  /* Visit the roots this participant claims; done(ctx) after each item
   * (roots.global.done). */
  void (*scan_roots)(void *arg, ph_visit_fn visit, void (*done)(void *ctx),
                     void *ctx);
  /* PER_DOMAIN: does this participant evacuate the pools of owner slot? */
  int (*evacuates_slot)(void *arg, unsigned owner);
  void *arg;
  /* compact.pin: pools that must not be evacuated (they hold pinned
   * blocks), sorted by address; the same array in every participant's
   * part (the one that sets up the plan reads its own).  Each is kept by the
   * plan and counted in its class's kept pools. */
  ph_pool *const *pinned;
  size_t npinned;
} ph_compact_part;

/* Shared with the pool layer's compactor (compact/pools_compact.c):
 * compact.phase.choose for one group of records (cc's arrays hold n each),
 * and compact.phase.evacuate for one unit (*blocks, *bytes count what it
 * moved; the destination's nlive, nfree, live_words and free list follow). */
void ph_compact_plan_group(ph_cclass *cc, ph_cand *cand, size_t n,
                           uint32_t nslots);
/* The same, keeping at least the first min_keep candidates (compact.pin). */
void ph_compact_plan_group_keep(ph_cclass *cc, ph_cand *cand, size_t n,
                                uint32_t nslots, size_t min_keep);
void ph_compact_evacuate_unit(struct ph_heap *h, const ph_evac_unit *u,
                              uint64_t *blocks, uint64_t *bytes);

/* compact/compact.c: the six phases (the first barrier included). */
void ph_compact_stw(struct ph_heap *h, const ph_compact_part *part);
void ph_compact_fini(struct ph_heap *h);

#endif
