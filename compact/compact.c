/* compact/compact.c -- the parallel compactor (DESIGN.md: compact.*).
 *
 * It runs inside the stop-the-world section of ph_compact, right after the
 * collection's sweep, on every participant:
 *
 *   Phase 1 (compact.phase.stats).  The sweep already recorded, per
 *     participant, every partly filled pool with its class, owner and live
 *     count (ph_cand) and every surviving scanned large block: the stats
 *     table costs no pass over memory and not even a pool header read.
 *     Barrier; the leader sets up the plan (and chooses the ranges, below).
 *   Phase 2 (compact.phase.choose).  Barrier.  Per size class (claimed), the
 *     records of that class become an array.  GLOBAL scope: sorted densest
 *     first; with
 *     L live blocks and C slots per pool, the first k = ceil(L / C) are kept
 *     and the rest evacuated.  Any k pools can hold L blocks only if
 *     k * C >= L, and keeping the densest k moves the fewest blocks, so the
 *     plan is minimal.  PER_DOMAIN scope: the same per (owner, class), in
 *     address order (OCaml 5.2 keeps its pools in list order).  Each kept
 *     pool that receives blocks becomes one evacuation unit: a destination
 *     and the run of source blocks (first source, live blocks to skip in it,
 *     count) that fill it.  The leader then marks the evacuated pools in a
 *     dense map (compact.update.map).  With huge pages (GLOBAL), the leader
 *     first chose, at the end of phase 1, the 2 MiB ranges that stay in
 *     use, and each class keeps its k densest pools among those ranges
 *     (compact.choose.ranges), so that the other ranges empty whole.
 *   Phase 3 (compact.phase.evacuate).  Barrier.  Units are claimed by any
 *     participant (GLOBAL) or run by the pools' owner (PER_DOMAIN; the
 *     leader runs those of owners that are not participating).  Each live
 *     block is copied into a free slot of the destination; the old block
 *     gets the new address in field 0 and keeps its header.
 *   Phase 4 (compact.phase.update).  Barrier.  Every participant claims
 *     root items (global set, each domain's stack and hook, blocking
 *     domains' too), pool units (every live block of every pool that was
 *     not evacuated) and slices of large blocks.  Whether a pointer needs
 *     forwarding is one bit of the map, found from its address (an O(1)
 *     shift), never from the target block's header.
 *   Phase 5 (compact.phase.free).  Barrier.  The leader frees the evacuated
 *     pools (poisoned first in debug builds) and rebuilds the avail lists
 *     from the kept pools, densest on top.
 *   Phase 6 (compact.phase.release).  The leader gives free memory back to
 *     the OS per cfg.release, keeping cfg.retain bytes (heap.release).
 *     Barrier.
 */
#include "compact/compact.h"

#include <stdlib.h>
#include <string.h>

#define PH_LARGE_SLICE 65536 /* fields per update work item */

/* ------------------ phase 1: the sweep's records; compact.choose.ranges */

/* compact.choose.ranges (leader, end of phase 1): the chooser of
 * compact/ranges.c, shared with the pool layer's compactor, over the
 * sweep's records, in GLOBAL scope when memory is released. */
static void choose_ranges_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  ph_section *s = &h->sec;
  if (h->cfg.huge_pages == PH_HUGE_OFF || h->cfg.release == PH_RELEASE_KEEP ||
      h->cfg.compact_scope != PH_COMPACT_GLOBAL)
    return;
  size_t nc = 0;
  for (unsigned i = 0; i < s->nparts; i++) {
    if (s->pw[i].records_lost)
      return;
    nc += s->pw[i].ncands;
  }
  ph_range_rec *rec = nc ? malloc(nc * sizeof *rec) : NULL;
  if (!rec)
    return;
  size_t j = 0;
  for (unsigned p = 0; p < s->nparts; p++)
    for (size_t k = 0; k < s->pw[p].ncands; k++, j++) {
      const ph_cand *cd = &s->pw[p].cands[k];
      rec[j] = (ph_range_rec){cd->pool, cd->nlive, cd->cls};
    }
  ph_ranges_choose(h, rec, nc, &plan->ranges);
  free(rec);
}

/* ------------------------------------------------------------ phase 2 */

static int by_density(const void *a, const void *b) {
  const ph_cand *p = a, *q = b;
  if (p->nlive != q->nlive)
    return p->nlive > q->nlive ? -1 : 1;
  return p->pool < q->pool ? -1 : p->pool > q->pool;
}

static int by_owner_address(const void *a, const void *b) {
  const ph_cand *p = a, *q = b;
  if (p->owner != q->owner)
    return p->owner < q->owner ? -1 : 1;
  return p->pool < q->pool ? -1 : p->pool > q->pool;
}

/* Plan one group (all candidates of a class, or one owner's): keep the
 * first k of cand[0..n), evacuate the rest, emit destination units.  Only
 * the records are read; evacuated pools' live counts go to cc->elive.
 * Shared with the pool layer's compactor (compact/pools_compact.c). */
void ph_compact_plan_group(ph_cclass *cc, ph_cand *cand, size_t n,
                           uint32_t nslots) {
  ph_compact_plan_group_keep(cc, cand, n, nslots, 0);
}

/* compact.pin: any k >= ceil(L / C) pools can hold the L live blocks, so
 * keeping the min_keep pinned pools first (then the densest) is still a
 * valid plan. */
void ph_compact_plan_group_keep(ph_cclass *cc, ph_cand *cand, size_t n,
                                uint32_t nslots, size_t min_keep) {
  uint64_t live = 0;
  for (size_t i = 0; i < n; i++)
    live += cand[i].nlive;
  size_t k = (size_t)((live + nslots - 1) / nslots);
  if (k < min_keep)
    k = min_keep;
  if (k >= n)
    k = n;
  size_t e0 = cc->nevac;
  for (size_t i = 0; i < k; i++)
    cc->keep[cc->nkeep++] = cand[i].pool;
  for (size_t i = k; i < n; i++) {
    cc->elive[cc->nevac] = cand[i].nlive;
    cc->evac[cc->nevac++] = cand[i].pool;
  }
  /* destination units over the group's sources */
  size_t si = e0;
  uint32_t skip = 0;
  uint32_t rem = si < cc->nevac ? cc->elive[si] : 0;
  for (size_t j = 0; j < k && si < cc->nevac; j++) {
    uint32_t room = nslots - cand[j].nlive, take = 0;
    ph_evac_unit *u = &cc->units[cc->nunits];
    u->dst = cand[j].pool;
    u->src = cc->evac;
    u->src_first = (uint32_t)si;
    u->src_skip = skip;
    u->owner = cand[j].owner;
    while (room > 0 && si < cc->nevac) {
      uint32_t t = room < rem ? room : rem;
      take += t;
      room -= t;
      rem -= t;
      skip += t;
      if (rem == 0) {
        si++;
        skip = 0;
        rem = si < cc->nevac ? cc->elive[si] : 0;
      }
    }
    if (take > 0) {
      u->count = take;
      cc->nunits++;
    }
  }
  PH_ASSERT(si == cc->nevac); /* every source block has a destination */
}

static int by_pool(const void *a, const void *b) {
  const ph_pool *p = a, *q = *(ph_pool *const *)b;
  return p < q ? -1 : p > q;
}

/* compact.pin: move the pinned pools of cand[0..n) to the front, the
 * others keeping their order; returns how many there are. */
static size_t pinned_first(const ph_compact_plan *plan, ph_cand *cand,
                           size_t n) {
  if (plan->npinned == 0)
    return 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (bsearch(cand[i].pool, plan->pinned, plan->npinned, sizeof *plan->pinned,
                by_pool)) {
      ph_cand t = cand[i];
      memmove(cand + k + 1, cand + k, (i - k) * sizeof *cand);
      cand[k++] = t;
    }
  return k;
}

static void plan_class(struct ph_heap *h, ph_compact_plan *plan, unsigned cls) {
  ph_section *s = &h->sec;
  ph_cclass *cc = &plan->cls[cls];
  size_t n = 0;
  for (unsigned i = 0; i < s->nparts; i++)
    for (size_t k = 0; k < s->pw[i].ncands; k++)
      n += s->pw[i].cands[k].cls == cls;
  if (n == 0)
    return;
  ph_cand *cand = malloc(n * sizeof *cand);
  cc->keep = malloc(n * sizeof *cc->keep);
  cc->evac = malloc(n * sizeof *cc->evac);
  cc->elive = malloc(n * sizeof *cc->elive);
  cc->units = malloc(n * sizeof *cc->units);
  if (!cand || !cc->keep || !cc->evac || !cc->elive || !cc->units) {
    free(cand);
    free(cc->keep);
    free(cc->evac);
    free(cc->elive);
    free(cc->units);
    memset(cc, 0, sizeof *cc);
    atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
    return;
  }
  size_t i = 0;
  for (unsigned p = 0; p < s->nparts; p++)
    for (size_t k = 0; k < s->pw[p].ncands; k++)
      if (s->pw[p].cands[k].cls == cls)
        cand[i++] = s->pw[p].cands[k];
  uint32_t nslots = h->class_nslots[cls];
  if (plan->ranges.keep) {
    /* compact.choose.ranges: the densest of the pools in ranges that
     * stay in use (there are at least k of them), then the rest */
    size_t nin = 0;
    for (size_t j = 0; j < n; j++)
      if (plan->ranges.keep[ph_range_of(h, &plan->ranges, cand[j].pool)]) {
        ph_cand t = cand[nin];
        cand[nin++] = cand[j];
        cand[j] = t;
      }
#if PH_DEBUG
    uint64_t live = 0;
    for (size_t j = 0; j < n; j++)
      live += cand[j].nlive;
    PH_ASSERT(nin >= n || nin >= (live + nslots - 1) / nslots);
#endif
    qsort(cand, nin, sizeof *cand, by_density);
    qsort(cand + nin, n - nin, sizeof *cand, by_density);
    size_t np = pinned_first(plan, cand, n);
    ph_compact_plan_group_keep(cc, cand, n, nslots, np);
  } else if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    qsort(cand, n, sizeof *cand, by_density);
    size_t np = pinned_first(plan, cand, n);
    ph_compact_plan_group_keep(cc, cand, n, nslots, np);
  } else {
    qsort(cand, n, sizeof *cand, by_owner_address);
    size_t a = 0;
    while (a < n) {
      size_t b = a;
      while (b < n && cand[b].owner == cand[a].owner)
        b++;
      size_t np = pinned_first(plan, cand + a, b - a);
      ph_compact_plan_group_keep(cc, cand + a, b - a, nslots, np);
      a = b;
    }
  }
  free(cand);
}

static void choose_stw(struct ph_heap *h, ph_compact_plan *plan) {
  ph_section *s = &h->sec;
  for (;;) {
    size_t c =
        atomic_fetch_add_explicit(&s->claim_choose, 1, memory_order_relaxed);
    if (c >= h->nclasses)
      break;
    plan_class(h, plan, (unsigned)c);
  }
}

#define PH_MAP_MAX_UNITS ((size_t)1 << 27)

static void build_map_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  plan->map = NULL;
  if (h->nchunks == 0 ||
      atomic_load_explicit(&plan->failed, memory_order_relaxed))
    return;
  uintptr_t lo = (uintptr_t)h->chunks[0]->base;
  ph_chunk *last = h->chunks[h->nchunks - 1];
  uintptr_t hi = (uintptr_t)last->base + last->size;
  size_t n = (hi - lo) >> h->pool_shift;
  if (n > PH_MAP_MAX_UNITS)
    return; /* chunks spread too far apart: headers are read instead */
  plan->map = calloc((n + 63) / 64, sizeof(uint64_t));
  if (!plan->map)
    return;
  plan->map_lo = lo;
  plan->map_units = n;
  for (unsigned c = 0; c < h->nclasses; c++)
    for (size_t i = 0; i < plan->cls[c].nevac; i++) {
      size_t u = ((uintptr_t)plan->cls[c].evac[i] - lo) >> h->pool_shift;
      plan->map[u / 64] |= (uint64_t)1 << (u % 64);
    }
}

/* Leader, between phases 2 and 3: one array of units, the large slices,
 * the evacuation map (or, if it cannot be had, the `evacuated` flags in the
 * pool headers), and the claim counters of phases 3 and 4. */
static void gather_stw_single(struct ph_heap *h, ph_compact_plan *plan,
                              const ph_compact_part *part) {
  ph_section *s = &h->sec;
  size_t n = 0, nl = 0;
  for (unsigned c = 0; c < h->nclasses; c++)
    n += plan->cls[c].nunits;
  for (unsigned i = 0; i < s->nparts; i++)
    nl += s->pw[i].nlarges;
  plan->units = n ? malloc(n * sizeof *plan->units) : NULL;
  plan->larges = nl ? malloc(nl * sizeof *plan->larges) : NULL;
  plan->large_first = malloc((nl + 1) * sizeof *plan->large_first);
  if ((n && !plan->units) || (nl && !plan->larges) || !plan->large_first)
    atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
  if (atomic_load_explicit(&plan->failed,
                           memory_order_relaxed)) { /* nothing moves */
    for (unsigned c = 0; c < h->nclasses; c++) {
      plan->cls[c].nevac = 0;
      plan->cls[c].nunits = 0;
    }
    plan->nunits = 0;
    plan->nlarges = plan->nslices = 0;
  } else {
    size_t k = 0;
    for (unsigned c = 0; c < h->nclasses; c++) {
      if (plan->cls[c].nunits)
        memcpy(plan->units + k, plan->cls[c].units,
               plan->cls[c].nunits * sizeof *plan->units);
      k += plan->cls[c].nunits;
    }
    plan->nunits = k;
    size_t i = 0, slices = 0;
    for (unsigned p = 0; p < s->nparts; p++)
      for (size_t j = 0; j < s->pw[p].nlarges; j++) {
        ph_large *l = s->pw[p].larges[j];
        plan->larges[i] = l;
        plan->large_first[i] = slices;
        ph_value hd = *(ph_value *)((char *)l + PH_LARGE_HDR);
        slices += (ph_hd_wosize(hd) + PH_LARGE_SLICE - 1) / PH_LARGE_SLICE;
        i++;
      }
    plan->large_first[nl] = slices;
    plan->nlarges = nl;
    plan->nslices = slices;
  }
  build_map_stw_single(h, plan);
  if (!plan->map) /* fall back to the flags in the headers */
    for (unsigned c = 0; c < h->nclasses; c++)
      for (size_t i = 0; i < plan->cls[c].nevac; i++)
        plan->cls[c].evac[i]->evacuated = 1;
  atomic_store_explicit(&s->claim_evacuate, 0, memory_order_relaxed);
  part->roots_rewind(part->arg);
  atomic_store_explicit(&s->claim_update_units, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_update_large, 0, memory_order_relaxed);
  ph_units_index_stw_single(h);
}

/* Was the unit holding address x evacuated?  One bit of the map
 * (compact.update.map), or the header flag when there is no map. */
static inline int unit_evacuated(const struct ph_heap *h,
                                 const ph_compact_plan *plan, uintptr_t x) {
  if (!plan->map)
    return ph_unit_of(h, x)->evacuated;
  size_t u = (x - plan->map_lo) >> h->pool_shift;
  return u < plan->map_units && (plan->map[u / 64] >> (u % 64) & 1);
}

/* ------------------------------------------------------------ phase 3 */

/* Index of the first live slot of src at or after the one that has `skip`
 * live slots before it (heap.pool.bitmap). */
static uint32_t nth_live(ph_pool *src, uint32_t skip) {
  const uint64_t *bits = ph_pool_bits(src);
  uint32_t wi = 0;
  for (;;) {
    uint64_t w = bits[wi];
    uint32_t n = (uint32_t)__builtin_popcountll(w);
    if (skip < n) {
      while (skip--)
        w &= w - 1;
      return wi * 64 + (uint32_t)__builtin_ctzll(w);
    }
    skip -= n;
    wi++;
  }
}

/* compact.evacuate.batch: a unit is copied in batches.  The addresses of
 * a batch's sources (live bits of the evacuated pools) and destinations
 * (clear bits of the kept pool) come from the bitmaps, not from a free
 * list whose next link is known only when the previous slot has arrived,
 * so the loads and stores of a batch are all in flight at once; sources
 * and destinations PH_EV_AHEAD blocks ahead are prefetched. */
#define PH_EV_BATCH 128
#define PH_EV_AHEAD 8

typedef struct bit_iter {
  const uint64_t *bits;
  uint64_t word, flip; /* flip = ~0: iterate the clear bits */
  uint32_t wi;
} bit_iter;

static inline uint32_t bit_next(bit_iter *it) {
  while (it->word == 0)
    it->word = it->bits[++it->wi] ^ it->flip;
  uint32_t i = it->wi * 64 + (uint32_t)__builtin_ctzll(it->word);
  it->word &= it->word - 1;
  return i;
}

/* The free list of p from its clear live bits, lowest slot first. */
static void relink_free(struct ph_heap *h, ph_pool *p) {
  uint32_t wsize = h->class_wsize[p->cls];
  ph_value *base = (ph_value *)ph_pool_slots(p);
  const uint64_t *bits = ph_pool_bits(p);
  ph_value next = 0;
  for (uint32_t wi = (p->nslots + 63) / 64; wi-- > 0;) {
    uint64_t free = ~bits[wi];
    if (wi == p->nslots / 64)
      free &= ((uint64_t)1 << (p->nslots % 64)) - 1;
    while (free) {
      uint32_t si = wi * 64 + 63 - (uint32_t)__builtin_clzll(free);
      free &= ~((uint64_t)1 << (si % 64));
      ph_value *slot = base + (size_t)si * wsize;
      PH_ASSERT(slot[0] == 0);
      slot[1] = next;
      next = (ph_value)(slot + 1);
    }
  }
  p->free = next;
}

/* compact.phase.evacuate: move u->count live blocks, in order, from the
 * sources into u->dst; *blocks and *bytes count them.  Shared with the pool
 * layer's compactor. */
void ph_compact_evacuate_unit(struct ph_heap *h, const ph_evac_unit *u,
                              uint64_t *blocks, uint64_t *moved) {
  ph_pool *dst = u->dst;
  uint32_t wsize = h->class_wsize[dst->cls];
  ph_value *dbase = (ph_value *)ph_pool_slots(dst);
  uint64_t *dbits = ph_pool_bits(dst);
  bit_iter di = {.bits = dbits, .word = ~dbits[0], .flip = ~(uint64_t)0};
  uint32_t i = u->src_first, left = u->count;
  uint32_t k = nth_live(u->src[i], u->src_skip);
  ph_pool *src = u->src[i];
  bit_iter si = {.bits = ph_pool_bits(src),
                 .word = ph_pool_bits(src)[k / 64] & (~(uint64_t)0 << (k % 64)),
                 .wi = k / 64};
  uint32_t src_left = src->nlive - u->src_skip; /* live blocks not yet ours */
  ph_value *from[PH_EV_BATCH], *to[PH_EV_BATCH];
  uint64_t bytes = 0;
  while (left > 0) {
    uint32_t n = left < PH_EV_BATCH ? left : PH_EV_BATCH;
    for (uint32_t j = 0; j < n; j++) {
      if (src_left == 0) { /* next source pool */
        src = u->src[++i];
        si.bits = ph_pool_bits(src);
        si.wi = 0;
        si.word = si.bits[0];
        src_left = src->nlive;
      }
      from[j] = (ph_value *)ph_pool_slots(src) + (size_t)bit_next(&si) * wsize;
      src_left--;
      uint32_t d = bit_next(&di);
      PH_ASSERT(d < dst->nslots);
      dbits[d / 64] |= (uint64_t)1 << (d % 64);
      to[j] = dbase + (size_t)d * wsize;
    }
    for (uint32_t j = 0; j < n && j < PH_EV_AHEAD; j++) {
      __builtin_prefetch(from[j]);
      __builtin_prefetch(to[j], 1);
    }
    for (uint32_t j = 0; j < n; j++) {
      if (j + PH_EV_AHEAD < n) {
        __builtin_prefetch(from[j + PH_EV_AHEAD]);
        __builtin_prefetch(to[j + PH_EV_AHEAD], 1);
      }
      ph_value *slot = from[j], *nv = to[j];
      ph_value hd = slot[0];
      PH_ASSERT(hd != 0); /* allocated; its color is the client's */
      PH_ASSERT(nv[0] == 0);
      size_t wo = ph_hd_wosize(hd);
      nv[0] = hd;
      for (size_t f = 1; f <= wo; f++)
        nv[f] = slot[f];
      /* the new address in field 0; the old header stays: a moved block
       * is known from the map (compact.update.map), not from a colour */
      slot[1] = (ph_value)(nv + 1);
      bytes += (wo + 1) * 8;
    }
    left -= n;
  }
  *blocks += u->count;
  *moved += bytes;
  dst->nfree -= u->count;
  dst->nlive += u->count;
  dst->live_words += (uint32_t)(bytes / 8);
  relink_free(h, dst);
}

static void evacuate_stw(struct ph_heap *h, const ph_compact_part *part,
                         ph_compact_plan *plan) {
  ph_section *s = &h->sec;
  ph_pool_worker *w = &s->pw[part->id];
  if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    for (;;) {
      size_t k = atomic_fetch_add_explicit(&s->claim_evacuate, 1,
                                           memory_order_relaxed);
      if (k >= plan->nunits)
        break;
      ph_compact_evacuate_unit(h, &plan->units[k], &w->evac_blocks,
                               &w->evac_bytes);
    }
    return;
  }
  /* PER_DOMAIN: a domain evacuates its own pools; the caller's rule says
   * who runs those whose owner does not take part. */
  for (size_t k = 0; k < plan->nunits; k++) {
    ph_evac_unit *u = &plan->units[k];
    if (part->evacuates_slot(part->arg, u->owner))
      ph_compact_evacuate_unit(h, u, &w->evac_blocks, &w->evac_bytes);
  }
}

/* ------------------------------------------------------------ phase 4 */

/* compact.update.batch: a pointer needs forwarding iff its unit was
 * evacuated (unit_evacuated: O(1)).  The forwarding address is field 0 of
 * the old copy: a cache miss per moved target.  So
 * a slot to fix is queued in a ring with a prefetch of its target and fixed
 * PH_FWD_AHEAD slots later, when the load has arrived: many misses in
 * flight instead of one at a time.  The ring is emptied at the end of every
 * root item, for the global set before roots_lock is released
 * (roots.global.done): a root slot is never written after its item ends.
 * compact.update.once: the fix of a root slot re-reads it and forwards it
 * only if it still points into an evacuated unit (new addresses never do),
 * so a slot reported twice is rewritten once; root slots are read and
 * written with relaxed atomics, as two participants may hold the same one.
 * Fields of blocks are visited once, by the claimer of their unit or slice,
 * and keep the plain fix. */
#define PH_FWD_AHEAD 32 /* a power of two */
typedef struct fwd_batch {
  const struct ph_heap *h;
  const struct ph_compact_plan *plan;
  unsigned n; /* slots queued so far (mod 2^32) */
  ph_value *slot[PH_FWD_AHEAD];
} fwd_batch;

/* root: a root slot (compact.update.once); otherwise a field of a block,
 * which only the participant that claimed the block visits, once. */
static inline void fwd_fix(const fwd_batch *b, ph_value *s, int root) {
  if (root) {
    ph_value x = __atomic_load_n(s, __ATOMIC_RELAXED);
    if (!unit_evacuated(b->h, b->plan, x))
      return;                  /* fixed already: the slot was reported twice */
    PH_ASSERT(*ph_hp(x) != 0); /* a moved block keeps its header */
    __atomic_store_n(s, *(const ph_value *)x, __ATOMIC_RELAXED);
    return;
  }
  PH_ASSERT(unit_evacuated(b->h, b->plan, *s) && *ph_hp(*s) != 0);
  *s = *(const ph_value *)*s;
}

static inline void fb_flush(fwd_batch *b, int root) {
  unsigned n = b->n < PH_FWD_AHEAD ? b->n : PH_FWD_AHEAD;
  for (unsigned i = b->n - n; i != b->n; i++)
    fwd_fix(b, b->slot[i & (PH_FWD_AHEAD - 1)], root);
  b->n = 0;
}

/* x: the value *slot held when it was read.  The ring holds only root
 * slots or only fields: it is emptied at the end of every root item. */
static inline void fb_add(fwd_batch *b, ph_value *slot, ph_value x, int root) {
  if (!ph_is_block(x) || !unit_evacuated(b->h, b->plan, x))
    return;
  __builtin_prefetch((const void *)x);
  unsigned i = b->n++ & (PH_FWD_AHEAD - 1);
  if (b->n > PH_FWD_AHEAD)
    fwd_fix(b, b->slot[i], root);
  b->slot[i] = slot;
}

static void update_slot(ph_value *slot, void *ctx) {
  fb_add(ctx, slot, __atomic_load_n(slot, __ATOMIC_RELAXED), 1);
}

static void update_root_item_done(void *ctx) {
  fb_flush(ctx, 1);
}

static void update_fields(fwd_batch *b, ph_value *f, size_t n) {
  for (size_t i = 0; i < n; i++)
    fb_add(b, &f[i], f[i], 0);
}

static void update_pool(fwd_batch *b, ph_pool *p) {
  uint32_t wsize = b->h->class_wsize[p->cls];
  ph_value *slot = (ph_value *)ph_pool_slots(p);
  for (uint32_t k = 0; k < p->nslots; k++, slot += wsize) {
    ph_value hd = slot[0];
    if (!(ph_hd_color(hd) & PH_BLACK) && ph_hd_tag(hd) < PH_TAG_RAW)
      update_fields(b, slot + 1, ph_hd_wosize(hd));
  }
}

static void update_unit(struct ph_heap *h, ph_chunk *c, uint32_t u, void *ctx) {
  fwd_batch *fb = ctx;
  const ph_compact_plan *plan = fb->plan;
  if (c->ustate[u] != PH_U_POOL)
    return;
  char *ua = ph_unit_addr(h, c, u);
  if (unit_evacuated(h, plan, (uintptr_t)ua))
    return; /* evacuated: not even its header is read */
  update_pool(fb, (ph_pool *)ua);
}

static void update_stw(struct ph_heap *h, const ph_compact_part *part,
                       ph_compact_plan *plan) {
  ph_section *s = &h->sec;
  fwd_batch fb = {.h = h, .plan = plan, .n = 0};
  part->scan_roots(part->arg, update_slot, update_root_item_done, &fb);
  ph_units_each_stw(h, &s->claim_update_units, 8, update_unit, &fb);
  for (;;) {
    size_t k = atomic_fetch_add_explicit(&s->claim_update_large, 1,
                                         memory_order_relaxed);
    if (k >= plan->nslices)
      break;
    size_t lo = 0, hi = plan->nlarges;
    while (hi - lo > 1) { /* the block holding slice k */
      size_t mid = (lo + hi) / 2;
      if (plan->large_first[mid] <= k)
        lo = mid;
      else
        hi = mid;
    }
    ph_large *l = plan->larges[lo];
    ph_value *hp = (ph_value *)((char *)l + PH_LARGE_HDR);
    size_t wo = ph_hd_wosize(*hp);
    size_t a = (k - plan->large_first[lo]) * PH_LARGE_SLICE;
    size_t n = wo - a < PH_LARGE_SLICE ? wo - a : PH_LARGE_SLICE;
    update_fields(&fb, hp + 1 + a, n);
  }
  fb_flush(&fb, 0);
}

/* --------------------------------------------------------- phases 5, 6 */

/* Push every pool with room that is at least half full (dense) or less
 * than half full (!dense) on its owner's avail list. */
static void push_pools_locked(struct ph_heap *h, int dense) {
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = ch->nunits; u-- > 0;) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, ch, u);
      if (p->nfree > 0 && (p->nlive * 2 >= p->nslots) == dense)
        ph_pool_push_avail(h, p);
    }
  }
}

static void free_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  pthread_mutex_lock(&h->lock);
  uint64_t pools = 0;
  for (unsigned c = 0; c < h->nclasses; c++) {
    ph_cclass *cc = &plan->cls[c];
    for (size_t i = 0; i < cc->nevac; i++) {
      ph_pool *p = cc->evac[i];
      /* chunk and unit from the address: the header is not read */
      ph_chunk *ch = ph_chunk_find(h, p);
      uint32_t u = (uint32_t)((size_t)((char *)p - ch->base) >> h->pool_shift);
#if PH_POISON
      {
        ph_value *q = (ph_value *)ph_pool_slots(p);
        size_t nw = (h->pool_size - h->pool_hdr) / 8;
        for (size_t k = 0; k < nw; k++)
          q[k] = PH_POISON_WORD;
        p->sig = PH_SIG_DEAD;
      }
#endif
      if (!plan->map)
        p->evacuated = 0; /* the fallback flag */
      ph_units_free_locked(h, ch, u, 1);
      h->pool_units--;
      pools++;
    }
  }
  /* avail lists: the kept pools with room, densest on top */
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    for (unsigned c = 0; c < h->nclasses; c++)
      atomic_store_explicit(&h->slots[i].avail[c], NULL, memory_order_relaxed);
  push_pools_locked(h, 0);
  push_pools_locked(h, 1);
  h->st.evacuated_pools = pools;
  pthread_mutex_unlock(&h->lock);
}

static void release_stw_single(struct ph_heap *h) {
  pthread_mutex_lock(&h->lock);
  uint64_t rel = 0;
  ph_units_release_locked(h, (int)h->cfg.release, h->cfg.retain, &rel);
  h->st.released_bytes = rel;
  ph_pacing_reset_locked(h);
  pthread_mutex_unlock(&h->lock);
}

static void plan_free(struct ph_heap *h, ph_compact_plan *plan) {
  for (unsigned c = 0; c < h->nclasses; c++) {
    free(plan->cls[c].keep);
    free(plan->cls[c].evac);
    free(plan->cls[c].units);
    free(plan->cls[c].elive);
  }
  free(plan->units);
  free(plan->larges);
  free(plan->large_first);
  free(plan->map);
  ph_ranges_free(&plan->ranges);
  memset(plan, 0, sizeof *plan);
}

/* ------------------------------------------------------------- driver */

void ph_compact_stw(struct ph_heap *h, const ph_compact_part *part) {
  ph_section *s = &h->sec;
  ph_pool_worker *w = &s->pw[part->id];
  int leader = part->leader;
  uint64_t t0 = ph_now_ns();
  ph_event(h, PH_PHASE_EVACUATE, 1, part->dom);
  w->evac_blocks = w->evac_bytes = 0;
  /* Phase 1 */
  if (part->barrier(part->arg)) {
    if (!h->plan)
      h->plan = calloc(1, sizeof *h->plan);
    else
      memset(h->plan, 0, sizeof *h->plan);
    ph_units_index_stw_single(h);
    atomic_store_explicit(&s->claim_choose, 0, memory_order_relaxed);
    if (h->plan) {
      h->plan->pinned = part->pinned;
      h->plan->npinned = part->npinned;
      choose_ranges_stw_single(h, h->plan);
    }
  }
  part->barrier(part->arg);
  ph_compact_plan *plan = h->plan;
  int lost = 0;
  for (unsigned i = 0; i < s->nparts; i++)
    lost |= s->pw[i].records_lost;
  if (plan && !lost) {
    /* Phase 2 (phase 1's records came from the sweep) */
    choose_stw(h, plan);
    if (part->barrier(part->arg))
      gather_stw_single(h, plan, part);
    /* Phase 3 */
    part->barrier(part->arg);
    evacuate_stw(h, part, plan);
  }
  w->t_evac = ph_now_ns() - t0;
  ph_event(h, PH_PHASE_EVACUATE, 0, part->dom);
  /* Phase 4 */
  part->barrier(part->arg);
  uint64_t t1 = ph_now_ns();
  ph_event(h, PH_PHASE_UPDATE, 1, part->dom);
  if (plan && plan->nunits > 0) /* nothing moved: nothing to forward */
    update_stw(h, part, plan);
  w->t_update = ph_now_ns() - t1;
  ph_event(h, PH_PHASE_UPDATE, 0, part->dom);
  /* Phase 5 */
  part->barrier(part->arg);
  uint64_t t2 = ph_now_ns();
  ph_event(h, PH_PHASE_RELEASE, 1, part->dom);
  if (leader) {
    if (plan)
      free_stw_single(h, plan);
    /* Phase 6 */
    release_stw_single(h);
  }
  w->t_release = ph_now_ns() - t2;
  ph_event(h, PH_PHASE_RELEASE, 0, part->dom);
  if (part->barrier(part->arg)) {
    uint64_t ev = 0, up = 0, re = 0, blocks = 0, bytes = 0;
    for (unsigned i = 0; i < s->nparts; i++) {
      ph_pool_worker *x = &s->pw[i];
      ev = x->t_evac > ev ? x->t_evac : ev;
      up = x->t_update > up ? x->t_update : up;
      re = x->t_release > re ? x->t_release : re;
      blocks += x->evac_blocks;
      bytes += x->evac_bytes;
    }
    pthread_mutex_lock(&h->lock);
    h->st.compactions++;
    h->st.evacuate_ns = ev;
    h->st.update_ns = up;
    h->st.release_ns = re;
    h->st.evacuated_blocks = blocks;
    h->st.evacuated_bytes = bytes;
    if (!plan)
      h->st.evacuated_pools = 0;
    pthread_mutex_unlock(&h->lock);
    if (plan)
      plan_free(h, plan);
  }
  part->barrier(part->arg);
}

void ph_compact_fini(struct ph_heap *h) {
  free(h->plan);
  h->plan = NULL;
}
