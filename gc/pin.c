/* gc/pin.c -- pinning (DESIGN.md: gc.pin).
 *
 * A per-heap table of pinned blocks and their pin counts (open addressing,
 * keyed by the block's address, guarded by pin_lock), usable from any
 * attached domain and independent of domains (a pin survives its domain's
 * detach).  A pinned block is a root (gc/final.c visits the table when
 * marking), so an entry never names a freed block.  Before a compaction the
 * leader hands the compactor the sorted set of pools holding pinned blocks
 * (ph_compact_part.pinned) and the sorted pinned blocks: the plan keeps
 * every one of those pools (large blocks never move anyway), and may move
 * their other blocks out of the pages that hold no pinned block
 * (compact.pin.holes), so a pinned block keeps its address and the table
 * needs no update. */
#include "gc/gc.h"

#include <stdlib.h>

static size_t pin_hash(ph_value v, size_t cap) {
  uint64_t x = (uint64_t)v >> 3;
  x *= 0x9e3779b97f4a7c15ull;
  return (size_t)(x >> 17) & (cap - 1);
}

/* The slot of v, or of the first free/tombstone slot where it would go. */
static ph_pin_ent *pin_find(ph_gc *g, ph_value v, int for_insert) {
  size_t cap = g->pins_cap, i = pin_hash(v, cap);
  ph_pin_ent *tomb = NULL;
  for (size_t n = 0; n < cap; n++, i = (i + 1) & (cap - 1)) {
    ph_pin_ent *e = &g->pins[i];
    if (e->v == v)
      return e;
    if (e->v == PH_PIN_TOMB) {
      if (!tomb)
        tomb = e;
    } else if (e->v == 0) {
      return for_insert ? (tomb ? tomb : e) : NULL;
    }
  }
  return for_insert ? tomb : NULL;
}

static int pin_grow_locked(ph_gc *g) {
  size_t ncap = g->pins_cap ? g->pins_cap * 2 : 64;
  if (g->npins * 2 < g->pins_cap) /* many tombstones: rehash in place */
    ncap = g->pins_cap;
  ph_pin_ent *ne = ph_gc_fault(PH_GC_OP_PINS) ? NULL : calloc(ncap, sizeof *ne);
  if (!ne)
    return PH_ENOMEM;
  ph_pin_ent *old = g->pins;
  size_t ocap = g->pins_cap;
  g->pins = ne;
  g->pins_cap = ncap;
  g->pins_used = 0;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].v > PH_PIN_TOMB) {
      *pin_find(g, old[i].v, 1) = old[i];
      g->pins_used++;
    }
  free(old);
  return PH_OK;
}

int ph_pin(ph_domain *d, ph_value v) {
  int err = ph_gc_value_enter(d, v);
  if (err != PH_OK)
    return err;
  ph_gc *g = d->heap->gc;
  pthread_mutex_lock(&g->pin_lock);
  ph_pin_ent *e = g->pins_cap ? pin_find(g, v, 0) : NULL;
  if (!e) {
    /* keep the load (entries and tombstones) at most 1/2 */
    if ((g->pins_used + 1) * 2 > g->pins_cap &&
        (err = pin_grow_locked(g)) != PH_OK) {
      pthread_mutex_unlock(&g->pin_lock);
      d->last_error = err;
      return err;
    }
    e = pin_find(g, v, 1);
    if (e->v == 0)
      g->pins_used++;
    e->v = v;
    e->count = 0;
    /* relaxed: a counter for ph_stats_get; the table is under pin_lock */
    atomic_fetch_add_explicit(&g->npins, 1, memory_order_relaxed);
  }
  if (e->count == SIZE_MAX) {
    pthread_mutex_unlock(&g->pin_lock);
    d->last_error = PH_EINVAL;
    return PH_EINVAL;
  }
  e->count++;
  pthread_mutex_unlock(&g->pin_lock);
  return PH_OK;
}

int ph_unpin(ph_domain *d, ph_value v) {
  int err = ph_gc_value_enter(d, v);
  if (err != PH_OK)
    return err;
  ph_gc *g = d->heap->gc;
  pthread_mutex_lock(&g->pin_lock);
  ph_pin_ent *e = g->pins_cap ? pin_find(g, v, 0) : NULL;
  if (!e) {
    pthread_mutex_unlock(&g->pin_lock);
    d->last_error = PH_EINVAL; /* unpin without pin */
    return PH_EINVAL;
  }
  if (--e->count == 0) {
    e->v = PH_PIN_TOMB;
    atomic_fetch_sub_explicit(&g->npins, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&g->pin_lock);
  return PH_OK;
}

static int by_address(const void *a, const void *b) {
  const ph_pool *p = *(ph_pool *const *)a, *q = *(ph_pool *const *)b;
  return p < q ? -1 : p > q;
}

static int by_value(const void *a, const void *b) {
  ph_value p = *(const ph_value *)a, q = *(const ph_value *)b;
  return p < q ? -1 : p > q;
}

/* Leader, before a compaction: the sorted set of pools holding pinned
 * blocks, in g->pinned_pools.  PH_ENOMEM if it cannot be had (then nothing
 * may move). */
int ph_pin_pools_stw_single(struct ph_heap *h) {
  ph_gc *g = h->gc;
  g->npinned_pools = 0;
  g->npinned_blocks = 0;
  /* relaxed: pins change only outside sections */
  size_t n = atomic_load_explicit(&g->npins, memory_order_relaxed);
  if (n == 0)
    return PH_OK;
  if (n > g->pinned_pools_cap) {
    ph_pool **a = ph_gc_fault(PH_GC_OP_PINNED_POOLS)
                      ? NULL
                      : realloc(g->pinned_pools, n * sizeof *a);
    if (!a)
      return PH_ENOMEM;
    g->pinned_pools = a;
    ph_value *b = ph_gc_fault(PH_GC_OP_PINNED_POOLS)
                      ? NULL
                      : realloc(g->pinned_blocks, n * sizeof *b);
    if (!b)
      return PH_ENOMEM;
    g->pinned_blocks = b;
    g->pinned_pools_cap = n;
  }
  size_t k = 0;
  for (size_t i = 0; i < g->pins_cap; i++) {
    ph_value v = g->pins[i].v;
    if (v <= PH_PIN_TOMB)
      continue;
    ph_unit_hdr *u = ph_block_unit(h, v); /* heap.unit.lookup */
    if (u && u->kind == PH_U_POOL) {
      g->pinned_blocks[k] = v;
      g->pinned_pools[k++] = (ph_pool *)u;
    }
  }
  /* compact.pin.holes: the blocks too, so that a pinned pool may keep
   * them and give its others */
  qsort(g->pinned_blocks, k, sizeof *g->pinned_blocks, by_value);
  g->npinned_blocks = k;
  qsort(g->pinned_pools, k, sizeof *g->pinned_pools, by_address);
  size_t j = 0;
  for (size_t i = 0; i < k; i++)
    if (j == 0 || g->pinned_pools[j - 1] != g->pinned_pools[i])
      g->pinned_pools[j++] = g->pinned_pools[i];
  g->npinned_pools = j;
  return PH_OK;
}
