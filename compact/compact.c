/* compact/compact.c -- the parallel compactor (DESIGN.md: compact.*).
 *
 * It runs inside the stop-the-world section of ph_compact, right after the
 * collection's sweep, on every participant:
 *
 *   Phase 1 (compact.phase.stats).  Barrier.  Participants claim unit
 *     batches and push every partly filled pool on its class's candidate
 *     list, and every scanned large block on the large list.  The counts
 *     come from the sweep: no second pass over memory.
 *   Phase 2 (compact.phase.choose).  Barrier.  Per size class (claimed), the
 *     candidates become an array.  GLOBAL scope: sorted densest first; with
 *     L live blocks and C slots per pool, the first k = ceil(L / C) are kept
 *     and the rest evacuated.  Any k pools can hold L blocks only if
 *     k * C >= L, and keeping the densest k moves the fewest blocks, so the
 *     plan is minimal.  PER_DOMAIN scope: the same per (owner, class), in
 *     address order (OCaml 5.2 keeps its pools in list order).  Each kept
 *     pool that receives blocks becomes one evacuation unit: a destination
 *     and the run of source blocks (first source, live blocks to skip in it,
 *     count) that fill it.  Evacuated pools get their `evacuated` flag.
 *   Phase 3 (compact.phase.evacuate).  Barrier.  Units are claimed by any
 *     participant (GLOBAL) or run by the pools' owner (PER_DOMAIN; the
 *     leader runs those of owners that are not participating).  Each live
 *     block is copied into a free slot of the destination; the old block
 *     gets the new address in field 0 and FWD in its header.
 *   Phase 4 (compact.phase.update).  Barrier.  Every participant claims
 *     root items (global set, each domain's stack and hook, blocking
 *     domains' too), pool units (every live block of every pool that was
 *     not evacuated) and slices of large blocks.  Whether a pointer needs
 *     forwarding is read from its unit header's `evacuated` flag (an O(1)
 *     mask), not from the target block's header.
 *   Phase 5 (compact.phase.free).  Barrier.  The leader frees the evacuated
 *     pools (poisoned first in debug builds) and rebuilds the avail lists
 *     from the kept pools, densest on top.
 *   Phase 6 (compact.phase.release).  The leader gives free memory back to
 *     the OS per cfg.release, keeping cfg.retain bytes (heap.release).
 *     Barrier.
 */
#include "heap/internal.h"

#include <stdlib.h>
#include <string.h>

#define PH_LARGE_SLICE 65536 /* fields per update work item */

struct ph_cclass;
typedef struct ph_evac_unit {
  ph_pool *dst;
  struct ph_cclass *cc; /* the class: its evac[] are the sources */
  uint32_t src_first; /* index into src */
  uint32_t src_skip;  /* live blocks of src[src_first] before ours */
  uint32_t count;     /* blocks to move into dst */
  uint32_t owner;     /* slot of the pools' owner */
} ph_evac_unit;

/* compact.update.table: for each evacuated pool e of a class, a copy of its
 * live bitmap (nwords words) with the live count before each word, and
 * fwd[base[e] + rank] = the new address of its rank-th live block.  About
 * 8 bytes per moved block plus 1/100 of the evacuated pools: a pointer is
 * forwarded from this dense table instead of from the old copy, which lies
 * somewhere in all the evacuated memory. */
typedef struct ph_cclass {
  ph_pool **keep, **evac;
  size_t nkeep, nevac;
  ph_evac_unit *units;
  size_t nunits;
  uint64_t *ebits;   /* nevac * nwords, or NULL: forward through old copies */
  uint32_t *eprefix; /* nevac * nwords */
  uint32_t *ebase;   /* nevac */
  ph_value *fwd;     /* live blocks of all evac pools */
  uint32_t slot_bytes;
} ph_cclass;

typedef struct ph_compact_plan {
  _Atomic(ph_pool *) cand[PH_MAX_CLASSES];
  _Atomic(ph_large *) large;
  ph_cclass cls[PH_MAX_CLASSES];
  ph_evac_unit *units; /* all classes' units */
  size_t nunits;
  ph_large **larges;
  size_t *large_first; /* first slice of each large block */
  size_t nlarges, nslices;
  int failed; /* a plan allocation failed: nothing is evacuated */
  /* compact.update.map: per unit over [map_lo, map_lo + map_units units),
   * 0 or 1 + (class << 26 | index of the evacuated pool in its class).
   * Pool headers lie at a pool_size stride and alias to a few cache sets;
   * this table is dense (4 bytes a unit).  NULL: the headers are read. */
  uintptr_t map_lo;
  size_t map_units;
  uint32_t *map;
  size_t nwords; /* bitmap words per pool */
} ph_compact_plan;

/* ------------------------------------------------------------ phase 1 */

static void push_cand(_Atomic(ph_pool *) *head, ph_pool *p) {
  ph_pool *old = atomic_load_explicit(head, memory_order_relaxed);
  do {
    p->cnext = old;
  } while (!atomic_compare_exchange_weak_explicit(
      head, &old, p, memory_order_relaxed, memory_order_relaxed));
  /* relaxed: the list is read after a barrier */
}

static void push_large(_Atomic(ph_large *) *head, ph_large *l) {
  ph_large *old = atomic_load_explicit(head, memory_order_relaxed);
  do {
    l->dead_next = old;
  } while (!atomic_compare_exchange_weak_explicit(
      head, &old, l, memory_order_relaxed, memory_order_relaxed));
}

static void stats_stw(struct ph_heap *h, ph_compact_plan *plan) {
  ph_stw *s = &h->stw;
  const size_t batch = 16;
  for (;;) {
    size_t g0 =
        atomic_fetch_add_explicit(&s->claim_units, batch, memory_order_relaxed);
    if (g0 >= s->total_units)
      break;
    for (size_t g = g0; g < g0 + batch && g < s->total_units; g++) {
      ph_chunk *c;
      uint32_t u;
      ph_stw_unit_at(h, g, &c, &u);
      if (c->ustate[u] == PH_U_POOL) {
        ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
        p->evacuated = 0;
        if (p->nlive > 0 && p->nfree > 0)
          push_cand(&plan->cand[p->cls], p);
      } else if (c->ustate[u] == PH_U_LARGE) {
        ph_large *l = (ph_large *)ph_unit_addr(h, c, u);
        ph_value hd = *(ph_value *)((char *)l + PH_LARGE_HDR);
        if (ph_hd_tag(hd) < PH_TAG_RAW)
          push_large(&plan->large, l);
      }
    }
  }
}

/* ------------------------------------------------------------ phase 2 */

static int by_density(const void *a, const void *b) {
  const ph_pool *p = *(ph_pool *const *)a, *q = *(ph_pool *const *)b;
  if (p->nlive != q->nlive)
    return p->nlive > q->nlive ? -1 : 1;
  return p < q ? -1 : p > q;
}

static int by_owner_address(const void *a, const void *b) {
  const ph_pool *p = *(ph_pool *const *)a, *q = *(ph_pool *const *)b;
  if (p->owner != q->owner)
    return p->owner < q->owner ? -1 : 1;
  return p < q ? -1 : p > q;
}

/* Plan one group (all candidates of a class, or one owner's): keep the
 * first k of cand[0..n), evacuate the rest, emit destination units. */
static void plan_group(ph_cclass *cc, ph_pool **cand, size_t n,
                       uint32_t nslots) {
  uint64_t live = 0;
  for (size_t i = 0; i < n; i++)
    live += cand[i]->nlive;
  size_t k = (size_t)((live + nslots - 1) / nslots);
  if (k >= n)
    k = n;
  size_t e0 = cc->nevac;
  for (size_t i = 0; i < k; i++)
    cc->keep[cc->nkeep++] = cand[i];
  for (size_t i = k; i < n; i++) {
    cand[i]->evacuated = 1;
    cc->evac[cc->nevac++] = cand[i];
  }
  /* destination units over the group's sources */
  size_t si = e0;
  uint32_t skip = 0;
  uint32_t rem = si < cc->nevac ? cc->evac[si]->nlive : 0;
  for (size_t j = 0; j < k && si < cc->nevac; j++) {
    ph_pool *dst = cand[j];
    uint32_t room = dst->nfree, take = 0;
    ph_evac_unit *u = &cc->units[cc->nunits];
    u->dst = dst;
    u->cc = cc;
    u->src_first = (uint32_t)si;
    u->src_skip = skip;
    u->owner = dst->owner;
    while (room > 0 && si < cc->nevac) {
      uint32_t t = room < rem ? room : rem;
      take += t;
      room -= t;
      rem -= t;
      skip += t;
      if (rem == 0) {
        si++;
        skip = 0;
        rem = si < cc->nevac ? cc->evac[si]->nlive : 0;
      }
    }
    if (take > 0) {
      u->count = take;
      cc->nunits++;
    }
  }
  PH_ASSERT(si == cc->nevac); /* every source block has a destination */
}

/* compact.update.table for one class (its evac[] is final). */
static void build_table(struct ph_heap *h, ph_compact_plan *plan,
                        ph_cclass *cc) {
  size_t nw = plan->nwords, n = cc->nevac;
  if (n == 0)
    return;
  uint64_t live = 0;
  for (size_t e = 0; e < n; e++)
    live += cc->evac[e]->nlive;
  cc->ebits = malloc(n * nw * sizeof *cc->ebits);
  cc->eprefix = malloc(n * nw * sizeof *cc->eprefix);
  cc->ebase = malloc(n * sizeof *cc->ebase);
  cc->fwd = malloc(live * sizeof *cc->fwd);
  if (!cc->ebits || !cc->eprefix || !cc->ebase || !cc->fwd) {
    free(cc->ebits);
    free(cc->eprefix);
    free(cc->ebase);
    free(cc->fwd);
    cc->ebits = NULL;
    cc->eprefix = NULL;
    cc->ebase = NULL;
    cc->fwd = NULL;
    return;
  }
  cc->slot_bytes = h->class_wsize[cc->evac[0]->cls] * 8;
  uint32_t base = 0;
  for (size_t e = 0; e < n; e++) {
    const uint64_t *b = ph_pool_bits(cc->evac[e]);
    uint32_t words = (cc->evac[e]->nslots + 63) / 64;
    uint32_t before = 0;
    cc->ebase[e] = base;
    for (size_t k = 0; k < nw; k++) {
      uint64_t word = k < words ? b[k] : 0;
      cc->ebits[e * nw + k] = word;
      cc->eprefix[e * nw + k] = before;
      before += (uint32_t)__builtin_popcountll(word);
    }
    base += cc->evac[e]->nlive;
  }
}

static void plan_class(struct ph_heap *h, ph_compact_plan *plan, unsigned cls) {
  ph_cclass *cc = &plan->cls[cls];
  size_t n = 0;
  for (ph_pool *p =
           atomic_load_explicit(&plan->cand[cls], memory_order_relaxed);
       p; p = p->cnext)
    n++;
  if (n == 0)
    return;
  ph_pool **cand = malloc(n * sizeof *cand);
  cc->keep = malloc(n * sizeof *cc->keep);
  cc->evac = malloc(n * sizeof *cc->evac);
  cc->units = malloc(n * sizeof *cc->units);
  if (!cand || !cc->keep || !cc->evac || !cc->units) {
    /* nothing moves in this class: its pools need their free lists */
    for (ph_pool *p = atomic_load_explicit(&plan->cand[cls],
                                           memory_order_relaxed);
         p; p = p->cnext)
      if (p->unbuilt)
        ph_pool_build_free(h, p);
    free(cand);
    free(cc->keep);
    free(cc->evac);
    free(cc->units);
    memset(cc, 0, sizeof *cc);
    plan->failed = 1; /* benign race: every writer writes 1 */
    return;
  }
  size_t i = 0;
  for (ph_pool *p =
           atomic_load_explicit(&plan->cand[cls], memory_order_relaxed);
       p; p = p->cnext)
    cand[i++] = p;
  uint32_t nslots = h->class_nslots[cls];
  if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    qsort(cand, n, sizeof *cand, by_density);
    plan_group(cc, cand, n, nslots);
  } else {
    qsort(cand, n, sizeof *cand, by_owner_address);
    size_t a = 0;
    while (a < n) {
      size_t b = a;
      while (b < n && cand[b]->owner == cand[a]->owner)
        b++;
      plan_group(cc, cand + a, b - a, nslots);
      a = b;
    }
  }
  free(cand);
  /* heap.sweep.lazy: the kept pools get their free lists (destinations
   * need them in phase 3); evacuated pools are never written again */
  for (size_t k = 0; k < cc->nkeep; k++)
    if (cc->keep[k]->unbuilt)
      ph_pool_build_free(h, cc->keep[k]);
  build_table(h, plan, cc);
}

static void choose_stw(struct ph_heap *h, ph_compact_plan *plan) {
  ph_stw *s = &h->stw;
  for (;;) {
    size_t c = atomic_fetch_add_explicit(&s->claim_a, 1, memory_order_relaxed);
    if (c >= h->nclasses)
      break;
    plan_class(h, plan, (unsigned)c);
  }
}

#define PH_MAP_MAX_UNITS ((size_t)1 << 22)

static void build_map_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  plan->map = NULL;
  if (h->nchunks == 0 || plan->failed)
    return;
  uintptr_t lo = (uintptr_t)h->chunks[0]->base;
  ph_chunk *last = h->chunks[h->nchunks - 1];
  uintptr_t hi = (uintptr_t)last->base + last->size;
  size_t n = (hi - lo) >> h->pool_shift;
  if (n > PH_MAP_MAX_UNITS)
    return; /* chunks spread too far apart: headers are read instead */
  plan->map = calloc(n, sizeof *plan->map);
  if (!plan->map)
    return;
  plan->map_lo = lo;
  plan->map_units = n;
  for (unsigned c = 0; c < h->nclasses; c++)
    for (size_t i = 0; i < plan->cls[c].nevac; i++) {
      size_t u = ((uintptr_t)plan->cls[c].evac[i] - lo) >> h->pool_shift;
      plan->map[u] = 1 + (((uint32_t)c << 26) | (uint32_t)i);
    }
}

/* Leader, between phases 2 and 3: one array of units, the large slices,
 * and the claim counters of phases 3 and 4. */
static void gather_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  ph_stw *s = &h->stw;
  size_t n = 0;
  for (unsigned c = 0; c < h->nclasses; c++)
    n += plan->cls[c].nunits;
  plan->units = n ? malloc(n * sizeof *plan->units) : NULL;
  size_t nl = 0;
  for (ph_large *l = atomic_load_explicit(&plan->large, memory_order_relaxed);
       l; l = l->dead_next)
    nl++;
  plan->larges = nl ? malloc(nl * sizeof *plan->larges) : NULL;
  plan->large_first = malloc((nl + 1) * sizeof *plan->large_first);
  if ((n && !plan->units) || (nl && !plan->larges) || !plan->large_first)
    plan->failed = 1;
  if (plan->failed) {
    /* Nothing moves: undo the evacuation flags. */
    for (unsigned c = 0; c < h->nclasses; c++) {
      for (size_t i = 0; i < plan->cls[c].nevac; i++) {
        ph_pool *p = plan->cls[c].evac[i];
        p->evacuated = 0;
        if (p->unbuilt)
          ph_pool_build_free(h, p);
      }
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
    for (ph_large *l = atomic_load_explicit(&plan->large, memory_order_relaxed);
         l; l = l->dead_next) {
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
  atomic_store_explicit(&s->claim_b, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_roots, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_c, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_large, 0, memory_order_relaxed);
  ph_stw_units_init_stw_single(h);
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

/* Move u->count live blocks, in order, from the sources into u->dst.  The
 * live bitmap written by the sweep says which slots to copy, so only live
 * blocks are touched. */
static void evacuate_unit(struct ph_heap *h, ph_compact_plan *plan,
                          ph_worker *w, ph_evac_unit *u) {
  ph_pool *dst = u->dst;
  ph_cclass *cc = u->cc;
  /* Old copies get FWD and the new address when pointers will be forwarded
   * through them (no table), and always in debug builds, where the update
   * asserts it. */
  int in_place = PH_DEBUG || !plan->map || !cc->fwd;
  uint32_t i = u->src_first, left = u->count;
  uint32_t rank = u->src_skip;
  uint32_t k = nth_live(cc->evac[i], u->src_skip);
  while (left > 0) {
    ph_pool *src = cc->evac[i];
    uint32_t wsize = h->class_wsize[src->cls];
    const uint64_t *bits = ph_pool_bits(src);
    ph_value *base = (ph_value *)ph_pool_slots(src);
    ph_value *fwd = cc->fwd ? cc->fwd + cc->ebase[i] : NULL;
    uint32_t nwords = (src->nslots + 63) / 64;
    for (uint32_t wi = k / 64; wi < nwords && left > 0; wi++) {
      uint64_t word = bits[wi];
      if (wi == k / 64)
        word &= ~(uint64_t)0 << (k & 63);
      while (word && left > 0) {
        uint32_t si = wi * 64 + (uint32_t)__builtin_ctzll(word);
        word &= word - 1;
        ph_value *slot = base + (size_t)si * wsize;
        ph_value hd = slot[0];
        PH_ASSERT(ph_hd_color(hd) == PH_WHITE);
        ph_value nv = dst->free;
        PH_ASSERT(nv != 0);
        dst->free = *(ph_value *)nv;
        size_t wo = ph_hd_wosize(hd);
        memcpy((ph_value *)nv - 1, slot, (wo + 1) * sizeof(ph_value));
        if (fwd)
          fwd[rank] = nv;
        rank++;
        if (in_place) {
          slot[1] = nv;
          slot[0] = (hd & ~PH_HD_COLOR_MASK) |
                    ((ph_value)PH_FWD << PH_HD_COLOR_SHIFT);
        }
        w->evac_blocks++;
        w->evac_bytes += (wo + 1) * 8;
        left--;
      }
    }
    i++;
    k = 0;
    rank = 0;
  }
  dst->nfree -= u->count;
  dst->nlive += u->count;
}

static void evacuate_stw(struct ph_heap *h, ph_worker *w,
                         ph_compact_plan *plan) {
  ph_stw *s = &h->stw;
  if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    for (;;) {
      size_t k =
          atomic_fetch_add_explicit(&s->claim_b, 1, memory_order_relaxed);
      if (k >= plan->nunits)
        break;
      evacuate_unit(h, plan, w, &plan->units[k]);
    }
    return;
  }
  /* PER_DOMAIN: a domain evacuates its own pools; the leader also those
   * whose owner does not take part. */
  for (size_t k = 0; k < plan->nunits; k++) {
    ph_evac_unit *u = &plan->units[k];
    struct ph_domain *o = h->slots[u->owner].dom;
    int mine =
        o ? o == w->dom || (o->stw_expected != s->epoch && w->dom == s->leader)
          : w->dom == s->leader;
    if (mine)
      evacuate_unit(h, plan, w, u);
  }
}

/* ------------------------------------------------------------ phase 4 */

/* compact.update.batch: a pointer needs forwarding iff its unit header
 * says evacuated (O(1), and pool headers stay in cache).  The forwarding
 * address is field 0 of the old copy: a cache miss per moved target.  So
 * slots to fix are gathered with a prefetch of their target and fixed a
 * batch later, when the loads have arrived: many misses in flight instead
 * of one at a time. */
#define PH_FWD_BATCH 32
typedef struct fwd_batch {
  const struct ph_heap *h;
  const ph_compact_plan *plan;
  uintptr_t map_lo;
  size_t map_units;
  unsigned shift;
  unsigned n;
  ph_value *slot[PH_FWD_BATCH];
  const ph_value *src[PH_FWD_BATCH]; /* where the new address is */
} fwd_batch;

static void fb_flush(fwd_batch *b) {
  for (unsigned i = 0; i < b->n; i++)
    *b->slot[i] = *b->src[i];
  b->n = 0;
}

/* Where the new address of x is, or NULL if x did not move. */
static inline const ph_value *fwd_source(const fwd_batch *b, ph_value x) {
  const ph_compact_plan *plan = b->plan;
  if (!plan->map) {
    if (!ph_unit_of(b->h, x)->evacuated)
      return NULL;
    PH_ASSERT(ph_hd_color(*ph_hp(x)) == PH_FWD);
    return (const ph_value *)x;
  }
  size_t u = (x - b->map_lo) >> b->shift;
  if (u >= b->map_units || plan->map[u] == 0)
    return NULL;
  uint32_t code = plan->map[u] - 1;
  const ph_cclass *cc = &plan->cls[code >> 26];
  uint32_t e = code & ((1u << 26) - 1);
  PH_ASSERT(ph_hd_color(*ph_hp(x)) == PH_FWD);
  if (!cc->fwd)
    return (const ph_value *)x;
  uint32_t off =
      (uint32_t)(x & ~b->h->pool_mask) - (uint32_t)b->h->pool_hdr - 8;
  uint32_t slot = off / cc->slot_bytes;
  size_t wi = e * plan->nwords + slot / 64;
  uint64_t below = cc->ebits[wi] & (((uint64_t)1 << (slot % 64)) - 1);
  uint32_t rank = cc->eprefix[wi] + (uint32_t)__builtin_popcountll(below);
  PH_ASSERT(cc->fwd[cc->ebase[e] + rank] == *(const ph_value *)x);
  return &cc->fwd[cc->ebase[e] + rank];
}

static inline void fb_add(fwd_batch *b, ph_value *slot) {
  ph_value x = *slot;
  if (!ph_is_block(x))
    return;
  const ph_value *src = fwd_source(b, x);
  if (!src)
    return;
  __builtin_prefetch(src);
  b->slot[b->n] = slot;
  b->src[b->n++] = src;
  if (b->n == PH_FWD_BATCH)
    fb_flush(b);
}

static void update_slot(ph_value *slot, void *ctx) {
  fb_add(ctx, slot);
}

static void update_fields(fwd_batch *b, ph_value *f, size_t n) {
  for (size_t i = 0; i < n; i++)
    fb_add(b, &f[i]);
}

static void update_pool(fwd_batch *b, ph_pool *p) {
  uint32_t wsize = b->h->class_wsize[p->cls];
  ph_value *slot = (ph_value *)ph_pool_slots(p);
  for (uint32_t k = 0; k < p->nslots; k++, slot += wsize) {
    ph_value hd = slot[0];
    if (ph_hd_color(hd) == PH_WHITE && ph_hd_tag(hd) < PH_TAG_RAW)
      update_fields(b, slot + 1, ph_hd_wosize(hd));
  }
}

static void update_stw(struct ph_heap *h, ph_worker *w, ph_compact_plan *plan) {
  ph_stw *s = &h->stw;
  fwd_batch fb = {.h = h,
                  .plan = plan,
                  .map_lo = plan->map_lo,
                  .map_units = plan->map_units,
                  .shift = h->pool_shift,
                  .n = 0};
  ph_roots_scan_stw(h, w, update_slot, &fb);
  fb_flush(&fb);
  const size_t batch = 8;
  for (;;) {
    size_t g0 =
        atomic_fetch_add_explicit(&s->claim_c, batch, memory_order_relaxed);
    if (g0 >= s->total_units)
      break;
    for (size_t g = g0; g < g0 + batch && g < s->total_units; g++) {
      ph_chunk *c;
      uint32_t u;
      ph_stw_unit_at(h, g, &c, &u);
      if (c->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
      if (!p->evacuated)
        update_pool(&fb, p);
    }
  }
  for (;;) {
    size_t k =
        atomic_fetch_add_explicit(&s->claim_large, 1, memory_order_relaxed);
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
  fb_flush(&fb);
}

/* --------------------------------------------------------- phases 5, 6 */

static void free_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  pthread_mutex_lock(&h->lock);
  uint64_t pools = 0;
  for (unsigned c = 0; c < h->nclasses; c++) {
    ph_cclass *cc = &plan->cls[c];
    for (size_t i = 0; i < cc->nevac; i++) {
      ph_pool *p = cc->evac[i];
#if PH_POISON
      {
        ph_value *q = (ph_value *)ph_pool_slots(p);
        size_t nw = (h->pool_size - h->pool_hdr) / 8;
        for (size_t k = 0; k < nw; k++)
          q[k] = PH_POISON_WORD;
      }
#endif
      p->sig = PH_SIG_DEAD;
      p->evacuated = 0;
      ph_units_free_locked(h, p->chunk, p->unit, 1);
      h->pool_units--;
      pools++;
    }
  }
  h->st.evacuated_pools = pools;
  pthread_mutex_unlock(&h->lock);
}

/* Phase 5, leader: every pool with room goes back on its owner's avail
 * list, sparser pools first so the densest are on top and used first.
 * Pools the sweep left without a free list (no plan could be made) get
 * one here. */
static void relist_stw_single(struct ph_heap *h) {
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = 0; u < ch->nunits; u++) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, ch, u);
      if (p->unbuilt)
        ph_pool_build_free(h, p);
    }
  }
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    for (unsigned c = 0; c < h->nclasses; c++)
      atomic_store_explicit(&h->slots[i].avail[c], NULL, memory_order_relaxed);
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = ch->nunits; u-- > 0;) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, ch, u);
      if (p->nfree > 0 && p->nlive * 2 < p->nslots)
        ph_pool_push_avail(h, p);
    }
  }
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = ch->nunits; u-- > 0;) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, ch, u);
      if (p->nfree > 0 && p->nlive * 2 >= p->nslots)
        ph_pool_push_avail(h, p);
    }
  }
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
    free(plan->cls[c].ebits);
    free(plan->cls[c].eprefix);
    free(plan->cls[c].ebase);
    free(plan->cls[c].fwd);
  }
  free(plan->units);
  free(plan->larges);
  free(plan->large_first);
  free(plan->map);
  memset(plan, 0, sizeof *plan);
}

/* ------------------------------------------------------------- driver */

void ph_compact_stw(struct ph_heap *h, ph_worker *w) {
  ph_stw *s = &h->stw;
  int leader = w->dom == s->leader;
  uint64_t t0 = ph_now_ns();
  ph_event(h, PH_PHASE_EVACUATE, 1, w->dom->index);
  w->evac_blocks = w->evac_bytes = 0;
  /* Phase 1 */
  if (ph_barrier_wait(&s->bar)) {
    if (!s->plan)
      s->plan = calloc(1, sizeof *s->plan);
    else
      memset(s->plan, 0, sizeof *s->plan);
    if (s->plan)
      s->plan->nwords = (h->pool_hdr - PH_POOL_HDR) / 8;
    ph_stw_units_init_stw_single(h);
    atomic_store_explicit(&s->claim_units, 0, memory_order_relaxed);
    atomic_store_explicit(&s->claim_a, 0, memory_order_relaxed);
  }
  ph_barrier_wait(&s->bar);
  ph_compact_plan *plan = s->plan;
  if (plan) {
    stats_stw(h, plan);
    /* Phase 2 */
    ph_barrier_wait(&s->bar);
    choose_stw(h, plan);
    if (ph_barrier_wait(&s->bar))
      gather_stw_single(h, plan);
    /* Phase 3 */
    ph_barrier_wait(&s->bar);
    evacuate_stw(h, w, plan);
  }
  w->t_evac = ph_now_ns() - t0;
  ph_event(h, PH_PHASE_EVACUATE, 0, w->dom->index);
  /* Phase 4 */
  ph_barrier_wait(&s->bar);
  uint64_t t1 = ph_now_ns();
  ph_event(h, PH_PHASE_UPDATE, 1, w->dom->index);
  if (plan)
    update_stw(h, w, plan);
  w->t_update = ph_now_ns() - t1;
  ph_event(h, PH_PHASE_UPDATE, 0, w->dom->index);
  /* Phase 5 */
  ph_barrier_wait(&s->bar);
  uint64_t t2 = ph_now_ns();
  ph_event(h, PH_PHASE_RELEASE, 1, w->dom->index);
  if (leader) {
    if (plan)
      free_stw_single(h, plan);
    relist_stw_single(h);
    /* Phase 6 */
    release_stw_single(h);
  }
  w->t_release = ph_now_ns() - t2;
  ph_event(h, PH_PHASE_RELEASE, 0, w->dom->index);
  if (ph_barrier_wait(&s->bar)) {
    uint64_t ev = 0, up = 0, re = 0, blocks = 0, bytes = 0;
    for (unsigned i = 0; i < s->nparts; i++) {
      ph_worker *x = &s->workers[i];
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
  ph_barrier_wait(&s->bar);
}

void ph_compact_fini(struct ph_heap *h) {
  free(h->stw.plan);
  h->stw.plan = NULL;
}
