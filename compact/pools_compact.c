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
 *   2 plan (part 0): the empty pools and garbage large blocks freed; per
 *     class, the managed compactor's ph_compact_plan_group (the
 *     k = ceil(live / slots) densest pools kept, with huge pages inside the
 *     ranges that stay: compact.choose.ranges); the dense map of evacuated
 *     units;
 *   3 evacuate: units claimed by any participant, each run by the managed
 *     compactor's ph_compact_evacuate_unit;
 *   4 update: each participant's roots, then units and large blocks claimed:
 *     ops->scan_block on every live block not in an evacuated pool, with a
 *     visit that forwards in O(1) (map bit, then slot arithmetic);
 *   5 free and release (part 0): evacuated pools freed, owners' lists
 *     rebuilt and counters recounted, memory released per cfg.release and
 *     cfg.retain.
 */
#include "heap/pools_internal.h"
#include "compact/compact.h"
#include "compact/ranges.h"

#include <stdlib.h>
#include <string.h>

#define PHP_MAP_MAX_UNITS ((size_t)1 << 27)

/* One participant's records (pools.compact). */
typedef struct php_cpart {
  ph_cand *cands; /* partly filled pools (cls, pool, nlive; owner unused) */
  size_t ncands, cands_cap;
  php_large **larges; /* live large blocks */
  size_t nlarges, larges_cap;
  ph_pool *empty;  /* pools swept empty, linked by next */
  php_large *dead; /* garbage large blocks, linked by next */
  int lost;        /* a record array could not grow */
  uint64_t moved_blocks, moved_bytes;
} php_cpart;

/* The compaction's state, written by participant 0 between barriers. */
struct php_compact {
  php_cpart *parts;
  unsigned parts_cap;
  _Atomic size_t claim_sweep, claim_evac, claim_update, claim_large;
  _Atomic int bad_colour; /* phase 1: a block of no known colour */
  unsigned live_mask, garbage;
  int fail; /* ENOMEM for the scratch: nothing happens */
  size_t total_units;
  size_t unit_base[PH_MAX_CHUNKS + 1];
  /* the plan: compact.phase.choose per class (ph_compact_plan_group), the
   * arrays of every class in one allocation each */
  ph_cclass cls[PH_MAX_CLASSES];
  ph_cand *cand;
  ph_pool **keep, **evac;
  uint32_t *elive;
  ph_evac_unit *units; /* every class's units, gathered at the front */
  size_t nunits;
  php_large **larges; /* every live large block */
  size_t nlarges;
  /* compact.update.map: one bit per unit over [map_lo, map_lo + map_units),
   * set for evacuated pools; read by visit and php_forward */
  _Atomic(uint64_t *) map;
  uintptr_t map_lo;
  size_t map_units;
};
typedef struct php_compact php_compact;

/* ---------------------------------------------------------- forwarding */

/* compact.update.map: v's new address if its unit was evacuated, at the same
 * offset into the moved block (interior pointers: OCaml's infix). */
static inline ph_value fwd_value(const struct php_heap *h, const uint64_t *map,
                                 ph_value v) {
  const php_compact *cp = h->cp;
  if (!ph_is_block(v))
    return v;
  size_t u = (size_t)(v - cp->map_lo) >> h->core->pool_shift;
  if (v < cp->map_lo || u >= cp->map_units || !(map[u / 64] >> (u % 64) & 1))
    return v;
  ph_pool *p = (ph_pool *)(v & h->core->pool_mask);
  size_t sb = (size_t)h->core->class_wsize[p->cls] * 8;
  ph_value slots = (ph_value)php_slots(p);
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
  if (!h->cp)
    return v;
  const uint64_t *map = atomic_load_explicit(&h->cp->map, memory_order_relaxed);
  return map ? fwd_value(h, map, v) : v;
}

/* ------------------------------------------------------- unit claiming */

static void units_init(struct php_heap *h) {
  struct ph_heap *core = h->core;
  size_t t = 0;
  for (unsigned i = 0; i < core->nchunks; i++) {
    h->cp->unit_base[i] = t;
    t += core->chunks[i]->nunits;
  }
  h->cp->unit_base[core->nchunks] = t;
  h->cp->total_units = t;
}

static void unit_at(struct php_heap *h, size_t g, ph_chunk **c, uint32_t *u) {
  unsigned lo = 0, hi = h->core->nchunks;
  while (hi - lo > 1) {
    unsigned mid = (lo + hi) / 2;
    if (h->cp->unit_base[mid] <= g)
      lo = mid;
    else
      hi = mid;
  }
  *c = h->core->chunks[lo];
  *u = (uint32_t)(g - h->cp->unit_base[lo]);
}

typedef void (*unit_fn)(struct php_heap *h, ph_chunk *c, uint32_t u, void *ctx);

static void each_unit(struct php_heap *h, _Atomic size_t *claim, unit_fn fn,
                      void *ctx) {
  for (;;) {
    /* relaxed: a claim only needs atomicity; the work is published by the
     * barrier that ends the phase */
    size_t g0 = atomic_fetch_add_explicit(claim, 8, memory_order_relaxed);
    if (g0 >= h->cp->total_units)
      return;
    for (size_t g = g0; g < g0 + 8 && g < h->cp->total_units; g++) {
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
  php_compact *cp = h->cp;
  char *ua = ph_unit_addr(h->core, c, u);
  if (c->ustate[u] == PH_U_POOL) {
    ph_pool *p = (ph_pool *)ua;
    int bad = 0;
    php_sweep_pool_counts(h, p, cp->garbage, cp->live_mask, 1, &bad);
    if (bad)
      atomic_store_explicit(&cp->bad_colour, 1, memory_order_relaxed);
    if (p->nlive == 0) {
      p->next = me->empty;
      me->empty = p;
    } else if (p->nlive < p->nslots) {
      if (me->ncands == me->cands_cap) {
        ph_cand *n = grow(me, me->cands, &me->cands_cap, sizeof *n);
        if (!n)
          return;
        me->cands = n;
      }
      me->cands[me->ncands++] = (ph_cand){p, p->nlive, p->cls, 0};
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

/* Candidates while sorting: a record and whether its range stays in use
 * (compact.choose.ranges; 1 for all without huge pages). */
typedef struct ccand {
  ph_cand c;
  uint32_t kept_range;
} ccand;

static int by_class_density(const void *a, const void *b) {
  const ccand *p = a, *q = b;
  if (p->c.cls != q->c.cls)
    return p->c.cls < q->c.cls ? -1 : 1;
  if (p->kept_range != q->kept_range)
    return p->kept_range > q->kept_range ? -1 : 1;
  if (p->c.nlive != q->c.nlive)
    return p->c.nlive > q->c.nlive ? -1 : 1;
  return p->c.pool < q->c.pool ? -1 : p->c.pool > q->c.pool;
}

static void plan_free(php_compact *cp) {
  free(cp->cand);
  free(cp->keep);
  free(cp->evac);
  free(cp->elive);
  free(cp->units);
  free(cp->larges);
  memset(cp->cls, 0, sizeof cp->cls);
  cp->cand = NULL;
  cp->keep = cp->evac = NULL;
  cp->elive = NULL;
  cp->units = NULL;
  cp->larges = NULL;
  cp->nunits = cp->nlarges = 0;
  uint64_t *map = atomic_load_explicit(&cp->map, memory_order_relaxed);
  atomic_store_explicit(&cp->map, NULL, memory_order_relaxed);
  free(map);
}

/* compact.phase.choose for the layer: the records of all participants,
 * sorted by class, then (with huge pages) the ranges that stay in use,
 * then density; each class planned by the managed compactor's own
 * ph_compact_plan_group (the densest k kept, evacuation units). */
static void plan_stw_single(struct php_heap *h, unsigned nparts) {
  php_compact *cp = h->cp;
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
  ccand *cc = n ? malloc(n * sizeof *cc) : NULL;
  if (n) {
    cp->cand = malloc(n * sizeof *cp->cand);
    cp->keep = malloc(n * sizeof *cp->keep);
    cp->evac = malloc(n * sizeof *cp->evac);
    cp->elive = malloc(n * sizeof *cp->elive);
    cp->units = malloc(n * sizeof *cp->units);
  }
  cp->larges = nl ? malloc(nl * sizeof *cp->larges) : NULL;
  uintptr_t lo = (uintptr_t)core->chunks[0]->base;
  ph_chunk *last = core->chunks[core->nchunks - 1];
  size_t mu = ((uintptr_t)last->base + last->size - lo) >> core->pool_shift;
  uint64_t *map =
      mu <= PHP_MAP_MAX_UNITS ? calloc((mu + 63) / 64, sizeof *map) : NULL;
  if ((n && (!cc || !cp->cand || !cp->keep || !cp->evac || !cp->elive ||
             !cp->units)) ||
      (nl && !cp->larges) || !map) {
    free(cc);
    free(map);
    plan_free(cp);
    return; /* nothing moves */
  }
  size_t k = 0, j = 0;
  for (unsigned i = 0; i < nparts; i++) {
    for (size_t q = 0; q < cp->parts[i].ncands; q++)
      cc[k++] = (ccand){cp->parts[i].cands[q], 1};
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
      rec[i] = (ph_range_rec){cc[i].c.pool, cc[i].c.nlive, cc[i].c.cls};
    ph_ranges rg;
    ph_ranges_choose(core, rec, n, &rg);
    if (rg.keep)
      for (size_t i = 0; i < n; i++)
        cc[i].kept_range = rg.keep[ph_range_of(core, &rg, cc[i].c.pool)];
    ph_ranges_free(&rg);
    free(rec);
  }
  if (n)
    qsort(cc, n, sizeof *cc, by_class_density);
  for (size_t i = 0; i < n; i++)
    cp->cand[i] = cc[i].c;
  free(cc);
  size_t a = 0;
  while (a < n) {
    unsigned c = cp->cand[a].cls;
    size_t b = a;
    while (b < n && cp->cand[b].cls == c)
      b++;
    ph_cclass *cl = &cp->cls[c];
    cl->keep = cp->keep + a;
    cl->evac = cp->evac + a;
    cl->elive = cp->elive + a;
    cl->units = cp->units + a;
    ph_compact_plan_group(cl, cp->cand + a, b - a, core->class_nslots[c]);
    for (size_t i = 0; i < cl->nevac; i++) {
      size_t u = ((uintptr_t)cl->evac[i] - lo) >> core->pool_shift;
      map[u / 64] |= (uint64_t)1 << (u % 64);
    }
    /* the class's units to the front (they never overlap a later class's) */
    memmove(cp->units + cp->nunits, cl->units, cl->nunits * sizeof *cl->units);
    cp->nunits += cl->nunits;
    a = b;
  }
  cp->map_lo = lo;
  cp->map_units = mu;
  /* relaxed: read after the barriers that follow */
  atomic_store_explicit(&cp->map, map, memory_order_relaxed);
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
  size_t m = (size_t)((uintptr_t)ua - h->cp->map_lo) >> h->core->pool_shift;
  if (us->vs.map[m / 64] >> (m % 64) & 1)
    return; /* evacuated: not even its header is read */
  ph_pool *p = (ph_pool *)ua;
  uint32_t ws = h->core->class_wsize[p->cls];
  ph_value *slot = php_slots(p);
  for (uint32_t i = 0; i < p->nslots; i++, slot += ws)
    if (slot[0] != 0)
      us->ops->scan_block((ph_value)(slot + 1), visit_slot, &us->vs,
                          us->ops->user);
}

/* Participant 0, after the sweep: the pools it emptied and the garbage
 * large blocks go back to the free units now, before the plan, so that
 * the ranges they held can be chosen empty (compact.choose.ranges). */
static void free_swept_stw_single(struct php_heap *h, unsigned nparts) {
  php_compact *cp = h->cp;
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  for (unsigned i = 0; i < nparts; i++) {
    php_cpart *pt = &cp->parts[i];
    for (ph_pool *p = pt->empty, *n; p; p = n) {
      n = p->next;
      p->sig = PH_SIG_DEAD;
      ph_units_free_locked(core, p->chunk, p->unit, 1);
      core->pool_units--;
    }
    for (php_large *l = pt->dead, *n; l; l = n) {
      n = l->next;
      php_large_free_locked(h, l); /* refused: it stays, swept again later */
    }
    pt->empty = NULL;
    pt->dead = NULL;
  }
  pthread_mutex_unlock(&core->lock);
}

/* ----------------------------------------------------------- phase 5 */

static void free_release_stw_single(struct php_heap *h, unsigned nparts,
                                    int ok) {
  php_compact *cp = h->cp;
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  uint64_t pools = 0;
  for (unsigned c = 0; c < core->nclasses; c++)
    for (size_t i = 0; i < cp->cls[c].nevac; i++, pools++) {
      ph_pool *p = cp->cls[c].evac[i];
#if PH_POISON
      {
        ph_value *q = php_slots(p);
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
    blocks += cp->parts[i].moved_blocks;
    bytes += cp->parts[i].moved_bytes;
  }
  php_rebuild_lists_locked(h);
  uint64_t rel = 0;
  ph_units_release_locked(core, (int)h->cfg.release, h->cfg.retain, &rel);
  if (ok) {
    h->compactions++;
    h->evacuated_blocks = blocks;
    h->evacuated_bytes = bytes;
    h->evacuated_pools = pools;
    h->released_bytes = rel;
  }
  pthread_mutex_unlock(&core->lock);
  plan_free(cp);
}

/* --------------------------------------------------------------- driver */

static void cp_free(php_compact *cp) {
  plan_free(cp);
  for (unsigned i = 0; i < cp->parts_cap; i++) {
    free(cp->parts[i].cands);
    free(cp->parts[i].larges);
  }
  free(cp->parts);
  free(cp);
}

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
  unsigned np = ops->nparts;
  int lead = part == 0;
  ops->barrier(ops->user);
  if (lead && !h->cp) { /* the scratch, kept for the next compactions */
    h->cp = calloc(1, sizeof *h->cp);
    h->cp_free = cp_free;
  }
  /* the others read h->cp after the next barrier */
  php_compact *cp = lead ? h->cp : NULL;
  if (cp) { /* setup */
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
  cp = h->cp; /* as participant 0 left it */
  if (!cp || cp->fail)
    return PH_ENOMEM;
  php_cpart *me = &cp->parts[part];
  /* 1: sweep and count (on_free runs here) */
  each_unit(h, &cp->claim_sweep, sweep_unit, me);
  ops->barrier(ops->user);
  /* 2: plan */
  int bad = atomic_load_explicit(&cp->bad_colour, memory_order_relaxed);
  if (lead) {
    free_swept_stw_single(h, np);
    if (!bad)
      plan_stw_single(h, np);
  }
  ops->barrier(ops->user);
  const uint64_t *map = atomic_load_explicit(&cp->map, memory_order_relaxed);
  /* 3: evacuate */
  if (map)
    for (;;) {
      size_t k =
          atomic_fetch_add_explicit(&cp->claim_evac, 1, memory_order_relaxed);
      if (k >= cp->nunits)
        break;
      ph_compact_evacuate_unit(h->core, &cp->units[k], &me->moved_blocks,
                               &me->moved_bytes);
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
