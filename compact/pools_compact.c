/* compact/pools_compact.c -- compaction of the public pool layer, run by the
 * embedder's own stop-the-world participants (include/poolheap_pools.h:
 * php_compact_stw; DESIGN.md: pools.compact).
 *
 * Every participant calls php_compact_stw(h, part, ops); the phases are
 * separated by ops->barrier, participant 0 does the single-threaded steps:
 *
 *   1 sweep and count: units claimed in batches; pools swept with the
 *     compaction's colours (live bitmap written), partly filled pools
 *     recorded, empty pools and garbage large blocks handed to part 0, live
 *     large blocks recorded;
 *   2 plan (part 0): per class, the k = ceil(live / slots) densest pools are
 *     kept, the others evacuated; evacuation units (a kept pool and the run
 *     of source blocks that fill it); the dense map of evacuated units;
 *   3 evacuate: units claimed by any participant;
 *   4 update: each participant's roots, then units and large blocks claimed:
 *     ops->scan_block on every live block not in an evacuated pool, with a
 *     visit that forwards in O(1) (map bit, then slot arithmetic);
 *   5 free and release (part 0): evacuated and empty pools and garbage
 *     large blocks freed, owners' lists rebuilt and counters recounted,
 *     memory released per cfg.release and cfg.retain.
 */
#include "heap/pools_internal.h"
#include "compact/ranges.h"

#include <stdlib.h>
#include <string.h>

#define PHP_MAP_MAX_UNITS ((size_t)1 << 27)

/* ---------------------------------------------------------- forwarding */

/* compact.update.map: v's new address if its unit was evacuated, at the same
 * offset into the moved block (interior pointers: OCaml's infix). */
static inline ph_value fwd_value(const struct php_heap *h, const uint64_t *map,
                                 ph_value v) {
  const php_compact *cp = &h->cp;
  if (!ph_is_block(v))
    return v;
  size_t u = (size_t)(v - cp->map_lo) >> h->core->pool_shift;
  if (v < cp->map_lo || u >= cp->map_units || !(map[u / 64] >> (u % 64) & 1))
    return v;
  php_pool *p = (php_pool *)(v & h->core->pool_mask);
  size_t sb = (size_t)h->core->class_wsize[p->cls] * 8;
  ph_value slots = (ph_value)php_pool_slots(p);
  ph_value b = slots + (v - slots) / sb * sb + 8;
  PH_ASSERT(v >= slots && ((ph_value *)b)[-1] != 0);
  return *(const ph_value *)b + (v - b);
}

typedef struct vstate {
  const struct php_heap *h;
  const uint64_t *map;
} vstate;

static void visit_slot(ph_value *slot, void *ctx) {
  vstate *vs = ctx;
  ph_value v = *slot;
  ph_value n = fwd_value(vs->h, vs->map, v);
  if (n != v)
    *slot = n;
}

ph_value php_forward(php_heap *h, ph_value v) {
  if (!h || h->sig != PHP_SIG_HEAP)
    return v;
  /* relaxed: set by participant 0 before the barrier that starts the
   * update phase, whose callbacks are the only meaningful callers */
  const uint64_t *map = atomic_load_explicit(&h->cp.map, memory_order_relaxed);
  return map ? fwd_value(h, map, v) : v;
}

/* ------------------------------------------------------- unit claiming */

static void units_init(struct php_heap *h) {
  struct ph_heap *core = h->core;
  size_t t = 0;
  for (unsigned i = 0; i < core->nchunks; i++) {
    h->cp.unit_base[i] = t;
    t += core->chunks[i]->nunits;
  }
  h->cp.unit_base[core->nchunks] = t;
  h->cp.total_units = t;
}

static void unit_at(struct php_heap *h, size_t g, ph_chunk **c, uint32_t *u) {
  unsigned lo = 0, hi = h->core->nchunks;
  while (hi - lo > 1) {
    unsigned mid = (lo + hi) / 2;
    if (h->cp.unit_base[mid] <= g)
      lo = mid;
    else
      hi = mid;
  }
  *c = h->core->chunks[lo];
  *u = (uint32_t)(g - h->cp.unit_base[lo]);
}

typedef void (*unit_fn)(struct php_heap *h, ph_chunk *c, uint32_t u, void *ctx);

static void each_unit(struct php_heap *h, _Atomic size_t *claim, unit_fn fn,
                      void *ctx) {
  for (;;) {
    /* relaxed: a claim only needs atomicity; the work is published by the
     * barrier that ends the phase */
    size_t g0 = atomic_fetch_add_explicit(claim, 8, memory_order_relaxed);
    if (g0 >= h->cp.total_units)
      return;
    for (size_t g = g0; g < g0 + 8 && g < h->cp.total_units; g++) {
      ph_chunk *c;
      uint32_t u;
      unit_at(h, g, &c, &u);
      fn(h, c, u, ctx);
    }
  }
}

/* ------------------------------------------------------------- phase 1 */

static void *grow(php_cpart *me, void *arr, size_t *cap, size_t elem) {
  size_t ncap = *cap ? *cap * 2 : 256;
  void *n = realloc(arr, ncap * elem);
  if (!n) {
    me->lost = 1;
    return NULL;
  }
  *cap = ncap;
  return n;
}

static void sweep_unit(struct php_heap *h, ph_chunk *c, uint32_t u, void *ctx) {
  php_cpart *me = ctx;
  php_compact *cp = &h->cp;
  char *ua = ph_unit_addr(h->core, c, u);
  if (c->ustate[u] == PH_U_POOL) {
    php_pool *p = (php_pool *)ua;
    int bad = 0;
    php_sweep_pool_counts(h, p, cp->garbage, cp->live_mask, 1, &bad);
    if (bad)
      atomic_store_explicit(&cp->bad_colour, 1, memory_order_relaxed);
    if (p->nlive == 0) {
      p->next = me->empty;
      me->empty = p;
    } else if (p->nlive < p->nslots) {
      if (me->ncands == me->cands_cap) {
        php_cand *n = grow(me, me->cands, &me->cands_cap, sizeof *n);
        if (!n)
          return;
        me->cands = n;
      }
      me->cands[me->ncands++] = (php_cand){p, p->nlive, 1};
    }
  } else if (c->ustate[u] == PH_U_LARGE) {
    php_large *l = (php_large *)ua;
    ph_value b = php_large_block(l);
    unsigned col = php_hd_colour(php_hd_load(b));
    if (col == cp->garbage || l->base.pad) {
      if (!l->base.pad)
        php_call_on_free(h, b);
      l->next = me->dead;
      me->dead = l;
      return;
    }
    if (!(cp->live_mask >> col & 1))
      atomic_store_explicit(&cp->bad_colour, 1, memory_order_relaxed);
    if (me->nlarges == me->larges_cap) {
      php_large **n = grow(me, me->larges, &me->larges_cap, sizeof *n);
      if (!n)
        return;
      me->larges = n;
    }
    me->larges[me->nlarges++] = l;
  }
}

/* ------------------------------------------------------------- phase 2 */

static int by_class_density(const void *a, const void *b) {
  const php_cand *p = a, *q = b;
  if (p->pool->cls != q->pool->cls)
    return p->pool->cls < q->pool->cls ? -1 : 1;
  if (p->kept_range != q->kept_range) /* compact.choose.ranges */
    return p->kept_range > q->kept_range ? -1 : 1;
  if (p->nlive != q->nlive)
    return p->nlive > q->nlive ? -1 : 1;
  return p->pool < q->pool ? -1 : p->pool > q->pool;
}

static void plan_free(php_compact *cp) {
  free(cp->evac_pools);
  free(cp->units);
  free(cp->larges);
  cp->evac_pools = NULL;
  cp->units = NULL;
  cp->larges = NULL;
  cp->nevac_pools = cp->nunits = cp->nlarges = 0;
  uint64_t *map = atomic_load_explicit(&cp->map, memory_order_relaxed);
  atomic_store_explicit(&cp->map, NULL, memory_order_relaxed);
  free(map);
}

/* compact.phase.choose for the layer: densest k of each class kept. */
static void plan_stw_single(struct php_heap *h, unsigned nparts) {
  php_compact *cp = &h->cp;
  struct ph_heap *core = h->core;
  size_t n = 0, nl = 0;
  if (core->nchunks == 0)
    return;
  for (unsigned i = 0; i < nparts; i++) {
    if (cp->parts[i].lost)
      return;
    n += cp->parts[i].ncands;
    nl += cp->parts[i].nlarges;
  }
  php_cand *cand = n ? malloc(n * sizeof *cand) : NULL;
  cp->evac_pools = n ? malloc(n * sizeof *cp->evac_pools) : NULL;
  cp->units = n ? malloc(n * sizeof *cp->units) : NULL;
  cp->larges = nl ? malloc(nl * sizeof *cp->larges) : NULL;
  uintptr_t lo = (uintptr_t)core->chunks[0]->base;
  ph_chunk *last = core->chunks[core->nchunks - 1];
  size_t mu = ((uintptr_t)last->base + last->size - lo) >> core->pool_shift;
  uint64_t *map =
      mu <= PHP_MAP_MAX_UNITS ? calloc((mu + 63) / 64, sizeof *map) : NULL;
  if ((n && (!cand || !cp->evac_pools || !cp->units)) || (nl && !cp->larges) ||
      !map) {
    free(cand);
    free(map);
    plan_free(cp);
    return; /* nothing moves */
  }
  size_t k = 0, j = 0;
  for (unsigned i = 0; i < nparts; i++) {
    if (cp->parts[i].ncands)
      memcpy(cand + k, cp->parts[i].cands, cp->parts[i].ncands * sizeof *cand);
    k += cp->parts[i].ncands;
    if (cp->parts[i].nlarges)
      memcpy(cp->larges + j, cp->parts[i].larges,
             cp->parts[i].nlarges * sizeof *cp->larges);
    j += cp->parts[i].nlarges;
  }
  cp->nlarges = nl;
  /* compact.choose.ranges: with huge pages, the ranges that stay in use
   * first; each class keeps its densest pools among them */
  ph_range_rec *rec =
      n && h->cfg.release != PH_RELEASE_KEEP && h->cfg.huge_pages != PH_HUGE_OFF
          ? malloc(n * sizeof *rec)
          : NULL;
  if (rec) {
    for (size_t i = 0; i < n; i++)
      rec[i] = (ph_range_rec){cand[i].pool, cand[i].nlive, cand[i].pool->cls};
    ph_ranges rg;
    ph_ranges_choose(core, rec, n, &rg);
    if (rg.keep)
      for (size_t i = 0; i < n; i++)
        cand[i].kept_range = rg.keep[ph_range_of(core, &rg, cand[i].pool)];
    ph_ranges_free(&rg);
    free(rec);
  }
  if (n)
    qsort(cand, n, sizeof *cand, by_class_density);
  size_t a = 0;
  while (a < n) {
    unsigned cls = cand[a].pool->cls;
    size_t b = a;
    uint64_t live = 0;
    while (b < n && cand[b].pool->cls == cls)
      live += cand[b++].nlive;
    uint32_t ns = core->class_nslots[cls];
    size_t keep = (size_t)((live + ns - 1) / ns);
    if (keep > b - a)
      keep = b - a;
    size_t e0 = cp->nevac_pools;
    for (size_t i = a + keep; i < b; i++) {
      php_pool *p = cand[i].pool;
      cp->evac_pools[cp->nevac_pools++] = p;
      size_t u = ((uintptr_t)p - lo) >> core->pool_shift;
      map[u / 64] |= (uint64_t)1 << (u % 64);
    }
    /* destination units over the class's sources, in order */
    size_t si = e0;
    uint32_t skip = 0;
    uint32_t rem = si < cp->nevac_pools ? cp->evac_pools[si]->nlive : 0;
    for (size_t d = a; d < a + keep && si < cp->nevac_pools; d++) {
      uint32_t room = ns - cand[d].nlive, take = 0;
      php_evac *ev = &cp->units[cp->nunits];
      ev->dst = cand[d].pool;
      ev->src = cp->evac_pools;
      ev->src_first = (uint32_t)si;
      ev->src_skip = skip;
      while (room > 0 && si < cp->nevac_pools) {
        uint32_t t = room < rem ? room : rem;
        take += t;
        room -= t;
        rem -= t;
        skip += t;
        if (rem == 0) {
          si++;
          skip = 0;
          rem = si < cp->nevac_pools ? cp->evac_pools[si]->nlive : 0;
        }
      }
      if (take > 0) {
        ev->count = take;
        cp->nunits++;
      }
    }
    PH_ASSERT(si == cp->nevac_pools);
    a = b;
  }
  free(cand);
  cp->map_lo = lo;
  cp->map_units = mu;
  /* relaxed: read after the barriers that follow */
  atomic_store_explicit(&cp->map, map, memory_order_relaxed);
}

/* ------------------------------------------------------------- phase 3 */

typedef struct bit_iter {
  const uint64_t *bits;
  uint64_t word, flip; /* flip = ~0: the clear bits */
  uint32_t wi;
} bit_iter;

static inline uint32_t bit_next(bit_iter *it) {
  while (it->word == 0)
    it->word = it->bits[++it->wi] ^ it->flip;
  uint32_t i = it->wi * 64 + (uint32_t)__builtin_ctzll(it->word);
  it->word &= it->word - 1;
  return i;
}

/* The index of the live slot of src with `skip` live slots before it. */
static uint32_t nth_live(php_pool *src, uint32_t skip) {
  const uint64_t *bits = php_pool_bits(src);
  for (uint32_t wi = 0;; wi++) {
    uint64_t w = bits[wi];
    uint32_t n = (uint32_t)__builtin_popcountll(w);
    if (skip < n) {
      while (skip--)
        w &= w - 1;
      return wi * 64 + (uint32_t)__builtin_ctzll(w);
    }
    skip -= n;
  }
}

static void relink_free(struct php_heap *h, php_pool *p) {
  uint32_t ws = h->core->class_wsize[p->cls];
  ph_value *base = php_pool_slots(p), next = 0;
  const uint64_t *bits = php_pool_bits(p);
  for (uint32_t wi = (p->nslots + 63) / 64; wi-- > 0;) {
    uint64_t fr = ~bits[wi];
    if (wi == p->nslots / 64)
      fr &= ((uint64_t)1 << (p->nslots % 64)) - 1;
    while (fr) {
      uint32_t si = wi * 64 + 63 - (uint32_t)__builtin_clzll(fr);
      fr &= ~((uint64_t)1 << (si % 64));
      ph_value *slot = base + (size_t)si * ws;
      PH_ASSERT(slot[0] == 0);
      slot[1] = next;
      next = (ph_value)(slot + 1);
    }
  }
  p->free = next;
}

static void evacuate_unit(struct php_heap *h, php_cpart *me, php_evac *ev) {
  php_pool *dst = ev->dst;
  uint32_t ws = h->core->class_wsize[dst->cls];
  ph_value *dbase = php_pool_slots(dst);
  uint64_t *dbits = php_pool_bits(dst);
  bit_iter di = {.bits = dbits, .word = ~dbits[0], .flip = ~(uint64_t)0};
  uint32_t i = ev->src_first;
  php_pool *src = ev->src[i];
  uint32_t k = nth_live(src, ev->src_skip);
  bit_iter si = {.bits = php_pool_bits(src),
                 .word =
                     php_pool_bits(src)[k / 64] & (~(uint64_t)0 << (k % 64)),
                 .wi = k / 64};
  uint32_t src_left = src->nlive - ev->src_skip;
  uint64_t words = 0;
  for (uint32_t left = ev->count; left > 0; left--) {
    if (src_left == 0) {
      src = ev->src[++i];
      si.bits = php_pool_bits(src);
      si.wi = 0;
      si.word = si.bits[0];
      src_left = src->nlive;
    }
    ph_value *from = php_pool_slots(src) + (size_t)bit_next(&si) * ws;
    src_left--;
    uint32_t d = bit_next(&di);
    PH_ASSERT(d < dst->nslots);
    dbits[d / 64] |= (uint64_t)1 << (d % 64);
    ph_value *to = dbase + (size_t)d * ws;
    ph_value hd = from[0];
    size_t wo = php_hd_wosize(hd);
    PH_ASSERT(hd != 0 && to[0] == 0);
    memcpy(to, from, (wo + 1) * sizeof(ph_value));
    from[1] = (ph_value)(to + 1); /* the forwarding address; header kept */
    words += wo + 1;
  }
  me->moved_blocks += ev->count;
  me->moved_bytes += words * 8;
  dst->nlive += ev->count;
  dst->live_words += words;
  relink_free(h, dst);
}

/* ------------------------------------------------------------- phase 4 */

typedef struct ustate {
  vstate vs;
  const php_compact_ops *ops;
} ustate;

static void update_unit(struct php_heap *h, ph_chunk *c, uint32_t u,
                        void *ctx) {
  ustate *us = ctx;
  if (c->ustate[u] != PH_U_POOL)
    return;
  char *ua = ph_unit_addr(h->core, c, u);
  size_t m = (size_t)((uintptr_t)ua - h->cp.map_lo) >> h->core->pool_shift;
  if (us->vs.map[m / 64] >> (m % 64) & 1)
    return; /* evacuated: not even its header is read */
  php_pool *p = (php_pool *)ua;
  uint32_t ws = h->core->class_wsize[p->cls];
  ph_value *slot = php_pool_slots(p);
  for (uint32_t i = 0; i < p->nslots; i++, slot += ws)
    if (slot[0] != 0)
      us->ops->scan_block((ph_value)(slot + 1), visit_slot, &us->vs,
                          us->ops->user);
}

/* ----------------------------------------------------------- phase 5 */

static void free_release_stw_single(struct php_heap *h, unsigned nparts,
                                    int ok) {
  php_compact *cp = &h->cp;
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  for (size_t i = 0; i < cp->nevac_pools; i++) {
    php_pool *p = cp->evac_pools[i];
#if PH_POISON
    {
      ph_value *q = php_pool_slots(p);
      size_t nw = (core->pool_size - core->pool_hdr) / 8;
      for (size_t k = 0; k < nw; k++)
        q[k] = PH_POISON_WORD;
    }
#endif
    p->sig = PH_SIG_DEAD;
    ph_units_free_locked(core, p->chunk, p->unit, 1);
    core->pool_units--;
  }
  uint64_t blocks = 0, bytes = 0;
  for (unsigned i = 0; i < nparts; i++) {
    php_cpart *pt = &cp->parts[i];
    for (php_pool *p = pt->empty, *n; p; p = n) {
      n = p->next;
      p->sig = PH_SIG_DEAD;
      ph_units_free_locked(core, p->chunk, p->unit, 1);
      core->pool_units--;
    }
    for (php_large *l = pt->dead, *n; l; l = n) {
      n = l->next;
      php_large_free_locked(h, l); /* refused: it stays, swept again later */
    }
    blocks += pt->moved_blocks;
    bytes += pt->moved_bytes;
  }
  php_rebuild_lists_locked(h);
  uint64_t rel = 0;
  ph_units_release_locked(core, (int)h->cfg.release, h->cfg.retain, &rel);
  if (ok) {
    h->compactions++;
    h->evacuated_blocks = blocks;
    h->evacuated_bytes = bytes;
    h->evacuated_pools = cp->nevac_pools;
    h->released_bytes = rel;
  }
  pthread_mutex_unlock(&core->lock);
  plan_free(cp);
}

/* --------------------------------------------------------------- driver */

static int ops_valid(const struct php_heap *h, unsigned part,
                     const php_compact_ops *ops) {
  if (!h || h->sig != PHP_SIG_HEAP || !ops || ops->nparts == 0 ||
      ops->nparts > 1024 || !ops->barrier || !ops->scan_block ||
      part >= ops->nparts)
    return 0;
  unsigned g = atomic_load_explicit(&h->garbage, memory_order_relaxed);
  return ops->live_colours != 0 && ops->live_colours <= 15 &&
         !(ops->live_colours >> g & 1);
}

int php_compact_stw(php_heap *h, unsigned part, const php_compact_ops *ops) {
  if (!ops_valid(h, part, ops))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  php_compact *cp = &h->cp;
  unsigned np = ops->nparts;
  int lead = part == 0;
  ops->barrier(ops->user);
  if (lead) { /* setup */
    cp->fail = 0;
    if (cp->parts_cap < np) {
      php_cpart *n = realloc(cp->parts, np * sizeof *n);
      if (n) {
        memset(n + cp->parts_cap, 0, (np - cp->parts_cap) * sizeof *n);
        cp->parts = n;
        cp->parts_cap = np;
      } else {
        cp->fail = 1;
      }
    }
    for (unsigned i = 0; i < np && !cp->fail; i++) {
      php_cpart *pt = &cp->parts[i];
      pt->ncands = pt->nlarges = 0;
      pt->empty = NULL;
      pt->dead = NULL;
      pt->lost = 0;
      pt->moved_blocks = pt->moved_bytes = 0;
    }
    cp->ops = ops;
    cp->garbage = atomic_load_explicit(&h->garbage, memory_order_relaxed);
    cp->live_mask = ops->live_colours;
    atomic_store_explicit(&cp->bad_colour, 0, memory_order_relaxed);
    atomic_store_explicit(&cp->claim_sweep, 0, memory_order_relaxed);
    atomic_store_explicit(&cp->claim_evac, 0, memory_order_relaxed);
    atomic_store_explicit(&cp->claim_update, 0, memory_order_relaxed);
    atomic_store_explicit(&cp->claim_large, 0, memory_order_relaxed);
    units_init(h);
  }
  ops->barrier(ops->user);
  if (cp->fail)
    return PH_ENOMEM;
  php_cpart *me = &cp->parts[part];
  /* 1: sweep and count (on_free runs here) */
  each_unit(h, &cp->claim_sweep, sweep_unit, me);
  ops->barrier(ops->user);
  /* 2: plan */
  int bad = atomic_load_explicit(&cp->bad_colour, memory_order_relaxed);
  if (lead && !bad)
    plan_stw_single(h, np);
  ops->barrier(ops->user);
  const uint64_t *map = atomic_load_explicit(&cp->map, memory_order_relaxed);
  /* 3: evacuate */
  if (map)
    for (;;) {
      size_t k =
          atomic_fetch_add_explicit(&cp->claim_evac, 1, memory_order_relaxed);
      if (k >= cp->nunits)
        break;
      evacuate_unit(h, me, &cp->units[k]);
    }
  ops->barrier(ops->user);
  /* 4: update, through the embedder's callbacks */
  if (map && cp->nunits > 0) {
    ustate us = {{h, map}, ops};
    php_tls_callback = 1;
    if (ops->scan_roots)
      ops->scan_roots(part, visit_slot, &us.vs, ops->user);
    each_unit(h, &cp->claim_update, update_unit, &us);
    for (;;) {
      size_t k =
          atomic_fetch_add_explicit(&cp->claim_large, 1, memory_order_relaxed);
      if (k >= cp->nlarges)
        break;
      ops->scan_block(php_large_block(cp->larges[k]), visit_slot, &us.vs,
                      ops->user);
    }
    php_tls_callback = 0;
  }
  ops->barrier(ops->user);
  /* 5: free and release */
  if (lead)
    free_release_stw_single(h, np, !bad);
  ops->barrier(ops->user);
  return bad ? PH_EINVAL : PH_OK;
}
