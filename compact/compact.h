/* compact/compact.h -- the parallel compactor: plan, evacuate, update,
 * free, release (DESIGN.md: compact).
 *
 * Includes: heap/ (and below) only.  One driver for two clients (the
 * managed collector's gc/collect.c and the pool layer's
 * compact/pools_compact.c).  It runs inside a stop-the-world section it
 * does not own: the client hands it, per participant, a barrier, a root
 * scanner, the owner rule of PER_DOMAIN scope, the records of its sweep,
 * the scan rule and its hooks (ph_compact_part). */
#ifndef PH_COMPACT_COMPACT_H
#define PH_COMPACT_COMPACT_H

#include "compact/ranges.h"
#include "heap/heap.h"

typedef struct ph_evac_unit {
  ph_pool *dst;
  ph_pool **src;             /* the class's evacuated pools */
  const uint32_t *src_live;  /* the blocks each of them gives */
  uint64_t *const *src_bits; /* which (NULL: its live bitmap) */
  uint32_t src_first;        /* index into src */
  uint32_t src_skip;         /* live blocks of src[src_first] before ours */
  uint32_t count;            /* blocks to move into dst */
  uint32_t owner;            /* slot of the pools' owner */
} ph_evac_unit;

/* compact.pin.holes: a pool the plan treats specially, a pinned pool
 * whose unpinned blocks leave the granules that will become holes
 * (partial), or a pool with holes already. */
typedef struct ph_cspec {
  ph_pool *pool;
  uint64_t holes; /* the granules that are (partial: will be) holes */
  uint64_t *t;    /* the slots touching them, set in the live bitmap
                     while the plan runs (so no block is moved there) */
  uint64_t *m;    /* the live blocks among them: they move out */
  uint32_t room;  /* free slots outside t */
  uint32_t mv;    /* blocks in m */
  uint32_t cut;   /* compact.pack: the slots from it are in t (0: none) */
  uint8_t pinned, partial, evacuated;
} ph_cspec;

typedef struct ph_cclass {
  ph_pool **keep, **evac;
  uint32_t *elive;  /* blocks each evac pool gives (from the sweep) */
  uint64_t **ebits; /* compact.pin.holes: which (NULL: its live bitmap) */
  size_t nkeep, nevac;
  ph_evac_unit *units;
  size_t nunits;
  ph_cspec *spec; /* compact.pin.holes: the class's special pools */
  size_t nspec;
  uint64_t *specbits; /* their t and m bitmaps */
} ph_cclass;

/* compact.phase.stats: one participant's records, as its client's sweep
 * left them (the managed sweep: h->sec.pw[i]; the pool layer's: its own). */
typedef struct ph_compact_recs {
  const ph_cand *cands; /* partly filled pools */
  size_t ncands;
  ph_large *const *larges; /* live large blocks that may hold values */
  size_t nlarges;
  int lost; /* the records are incomplete (or must not be planned from) */
} ph_compact_recs;

/* compact.update.rule: how the update finds the values of a block, from its
 * header's tag.  A block whose tag is in cb_tags goes through scan_block
 * (with a visit that fixes the slot at once); otherwise a block of tag >=
 * no_scan_tag holds no values and is not visited, and every field of any
 * other block is a value, updated inline (compact.update.batch).
 * no_scan_tag 0: every block goes through scan_block. */
typedef struct ph_compact_rule {
  unsigned no_scan_tag; /* 0..256 */
  uint64_t cb_tags[4];
  void (*scan_block)(ph_value block, ph_visit_fn visit, void *ctx, void *user);
  void *user;
  /* values may point anywhere inside a block (the pool layer's embedders:
   * OCaml's infix pointers): forwarded at the same offset */
  int interior;
} ph_compact_rule;

/* What a compaction did, for the client's statistics. */
typedef struct ph_compact_result {
  uint64_t blocks, bytes;               /* moved */
  uint64_t pools;                       /* evacuated pools freed */
  uint64_t released;                    /* bytes given back to the OS */
  uint64_t t_evac, t_update, t_release; /* longest over the participants */
  int planned;                          /* a plan was made (maybe empty) */
  unsigned assisted; /* compact.assist: threads started, most in a phase */
} ph_compact_result;

enum { PH_KIND_INLINE = 0, PH_KIND_CB = 1, PH_KIND_SKIP = 2 };
/* compact.pin.holes: a unit of a pool that keeps its pinned blocks and
 * gives its others: its planned holes and class (no pool header is read);
 * compact.pack: a unit of a packed pool: the address of the pool's cut
 * (the blocks below it stay) and its class | PH_HCUT. */
typedef struct ph_cpart {
  uint64_t mask;
  uint32_t unit; /* map unit */
  uint8_t cls;
} ph_cpart;
enum { PH_HCUT = 0x80 }; /* above every class (PH_MAX_CLASSES) */
_Static_assert(PH_MAX_CLASSES <= PH_HCUT, "a class fits below PH_HCUT");

typedef struct ph_compact_plan {
  ph_cclass cls[PH_MAX_CLASSES];
  ph_evac_unit *units; /* all classes' units */
  size_t nunits;
  ph_large **larges;
  size_t *large_first; /* first slice of each large block */
  size_t nlarges, nslices;
  /* phase 1 (leader): every participant's records */
  ph_compact_recs *recs;
  unsigned nrecs;
  /* phase 1 (leader): the records' partly filled pools by class, those of
   * class c at cands[cfirst[c] .. cfirst[c + 1]) (phase 2 reorders each
   * class's in place: one participant a class; freed once phase 2 is
   * over) */
  ph_cand *cands;
  size_t cfirst[PH_MAX_CLASSES + 1];
  /* a plan allocation failed: nothing is evacuated.  Written by any
   * participant in phase 2 (relaxed: read by the leader after a barrier) */
  _Atomic int failed;
  /* compact.update.rule: PH_KIND_* of each tag, and the rule's callback */
  uint8_t kind[256];
  const ph_compact_rule *rule;
  int roots_direct; /* root slots fixed at once (no ring) */
  /* compact.update.map: one bit per unit over [map_lo, map_lo + map_units
   * units), set for evacuated pools (of a packed pool, compact.pack: its
   * first unit and those that hold its cut or lie past it).  Pool headers lie
   * at a pool_size stride and alias to a few cache sets; this map stays in L1.
   * Read with relaxed atomics by ph_compact_forward (php_forward). */
  uintptr_t map_lo;
  size_t map_units;
  uint64_t *map;
  /* rule->interior: the class of each evacuated unit, and per class the
   * slot bytes and their reciprocal (2^PH_RECIP_SHIFT / bytes, rounded up:
   * exact for every offset inside a pool, heap.h) */
  uint8_t *map_cls;
  /* rule->interior and a medium pool evacuated: per unit of such a pool,
   * the distance back to its first unit (heap.unit.lookup); else NULL */
  uint16_t *map_back;
  unsigned nsmall; /* classes below it are one unit: no map_back read */
  uint32_t slot_bytes[PH_MAX_CLASSES];
  uint64_t recip[PH_MAX_CLASSES];
  /* compact.choose.ranges (compact/ranges.h): with huge pages, the release
   * ranges chosen to stay in use; ranges.keep NULL: the normal plan. */
  ph_ranges ranges;
  /* compact.pin: the pools holding pinned blocks (from ph_compact_part) */
  ph_pool *const *pinned;
  size_t npinned;
  const ph_value *pinned_blocks; /* compact.pin.holes */
  size_t npinned_blocks;
  /* compact.pin.holes, compact.pack: the map units of pools that give
   * only some of their blocks (evacuated in the map too): one bit each in
   * pmap, read only for a pointer whose unit was evacuated, and their
   * records in a hash table of nparts (a power of two) entries, at most
   * half full, by unit (UINT32_MAX: empty; NULL if there are none).  The
   * pmap is the second half of the map's allocation: there (maybe all 0)
   * whenever the map is, so the update never tests for it */
  uint64_t *pmap;
  ph_cpart *parts;
  size_t nparts;
  int holes; /* compact.holes.free (from ph_compact_part) */
  /* compact.pack: the plan packs each group's last kept pool (pack_on,
   * derived once by the leader in phase 1) */
  int pack;
  /* results, summed (or the longest time) over the participants */
  _Atomic uint64_t r_blocks, r_bytes, r_t_evac, r_t_update, r_t_release;
  uint64_t r_pools, r_released;
  unsigned r_assisted; /* compact.assist (the leader's) */
} ph_compact_plan;

/* One participant of a compaction, as its client describes it.  Every
 * participant of the section calls ph_compact_stw with its own part; the
 * two clients are gc/collect.c (the managed collector) and
 * compact/pools_compact.c (the pool layer's php_compact_stw). */
typedef struct ph_compact_part {
  unsigned id;     /* participant index 0..nparts-1 */
  unsigned nparts; /* participants */
  unsigned dom;    /* domain index, for events */
  int leader;      /* exactly one participant: free and release */
  /* Wait for every participant; returns 1 in exactly one of them. */
  int (*barrier)(void *arg);
  /* Make every root claimable again (called by one participant); NULL:
   * nothing to rewind. */
  void (*roots_rewind)(void *arg);
  /* Visit the roots this participant claims; done(ctx) after each item
   * (roots.global.done).  NULL: no roots. */
  void (*scan_roots)(void *arg, ph_visit_fn visit, void (*done)(void *ctx),
                     void *ctx);
  /* root slots are fixed as they are visited (no ring): the visit of
   * php_compact_ops.scan_roots rewrites the slot before it returns */
  int roots_direct;
  /* PER_DOMAIN: does this participant evacuate the pools of owner slot? */
  int (*evacuates_slot)(void *arg, unsigned owner);
  /* Participant i's records (called by one participant, in phase 1). */
  void (*records)(void *arg, unsigned i, ph_compact_recs *out);
  /* Under heap->lock, after the evacuated pools are freed, before the
   * release: rebuild the client's lists of pools (moved: a plan was run). */
  void (*relist_locked)(void *arg, int moved);
  /* One participant, after every phase: the client's statistics. */
  void (*finish_stw_single)(void *arg, const ph_compact_result *r);
  /* A phase begins or ends on this participant (cfg.on_event). */
  void (*event)(void *arg, ph_phase ph, int begin);
  const ph_compact_rule *rule;
  void *arg;
  /* compact.pin: pools that must not be evacuated (they hold pinned
   * blocks), sorted by address; the same array in every participant's
   * part (the one that sets up the plan reads its own).  Each is kept by the
   * plan and counted in its class's kept pools. */
  ph_pool *const *pinned;
  size_t npinned;
  /* compact.pin.holes: the pinned blocks of those pools, sorted by
   * address (NULL: unknown, and each pinned pool is kept whole).  With
   * them, a pinned pool in a chunk of normal pages keeps its pinned
   * blocks in place and gives its others like an evacuated pool when
   * memory is released (cfg.release not PH_RELEASE_KEEP); the granules
   * left with no block become holes (heap.pool.holes). */
  const ph_value *pinned_blocks;
  size_t npinned_blocks;
  /* compact.holes.free: the client's pools may have holes
   * (heap.pool.holes: its sweep, allocation and verifier skip them): the
   * kept small pools' granules that hold no live slot become holes when
   * memory is released.  The managed collector's; the pool layer's pools
   * never have holes. */
  int holes;
  /* compact.assist: threads the client lends for phases 3 and 4 beside the
   * participants (nassist of them, 0: none).  The leader starts one on each
   * of assist_stacks (assist_stack bytes each, mapped by the client, used by
   * no other thread meanwhile) at the start of each phase, and joins them
   * before it reaches the barrier that ends the phase.  They claim
   * evacuation units (GLOBAL scope only), then pool units and slices of
   * large blocks, as a participant does; they visit no root.  rule's
   * scan_block may run on them.  assist_enter(1) / (0) runs on each, first
   * and last (NULL: nothing). */
  unsigned nassist;
  void *const *assist_stacks;
  size_t assist_stack;
  void (*assist_enter)(int begin);
} ph_compact_part;

/* compact.assist: at most this many threads per phase. */
#define PH_ASSIST_MAX 64

/* compact/compact.c: the one driver of both clients: plan, evacuate,
 * update, free, release (DESIGN.md: compact), the first barrier included. */
void ph_compact_stw(struct ph_heap *h, const ph_compact_part *part);
/* The current address of v inside the update phase (interior pointers
 * forwarded at their offset; rule->interior); v itself otherwise. */
ph_value ph_compact_forward(const struct ph_heap *h, ph_value v);
void ph_compact_fini(struct ph_heap *h);

#endif
