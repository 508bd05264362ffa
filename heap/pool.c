/* heap/pool.c -- pools of one size class (DESIGN.md: heap.pool).
 *
 * A pool is one unit (a medium pool: class_units[cls] contiguous units,
 * heap.sizeclass.medium): a 64-byte header, then nslots slots of
 * class_wsize[cls] words.  A slot is a block header word then its fields; a
 * free slot is a header word of 0 (pools.header) and field 0 links the
 * pool's free list, which is kept in address order when built.  Pools with
 * free slots sit on their owner slot's avail list for that class; full pools
 * are on no list (the sweep finds every pool through the unit tables). */
#include "heap/heap.h"

#include <stdlib.h>
#include <string.h>

/* Build the free list of a fresh pool: every slot free, in address order. */
void ph_pool_init_free(struct ph_heap *h, ph_pool *p) {
  uint32_t wsize = h->class_wsize[p->cls];
  ph_value hd = 0; /* a free slot (pools.header) */
  ph_value *s = (ph_value *)ph_pool_slots(h, p);
  ph_value next = 0;
  for (uint32_t i = p->nslots; i-- > 0;) {
    ph_value *slot = s + (size_t)i * wsize;
    /* relaxed atomic: gc.pin's value check may read it meanwhile */
    __atomic_store_n(&slot[0], hd, __ATOMIC_RELAXED);
    slot[1] = next;
    next = (ph_value)(slot + 1);
  }
  p->free = next;
  p->nfree = p->nslots;
  p->nlive = 0;
}

uint32_t ph_pool_hole_slots(const struct ph_heap *h, unsigned cls,
                            uint64_t holes, uint64_t *out) {
  uint32_t ns = h->class_nslots[cls], nw = (ns + 63) / 64, n = 0;
  memset(out, 0, nw * sizeof *out);
  /* per granule, not per slot: the slots touching granule g
   * (ph_slots_touching) */
  for (uint64_t m = holes; m; m &= m - 1) {
    size_t a = (size_t)__builtin_ctzll(m) << h->hole_shift;
    uint32_t lo, hi;
    if (!ph_slots_touching(h, cls, a, a + ((size_t)1 << h->hole_shift) - 1, &lo,
                           &hi))
      continue;
    for (uint32_t w = lo / 64; w <= hi / 64; w++) {
      uint64_t r = ~(uint64_t)0;
      if (w == lo / 64)
        r &= ~(uint64_t)0 << (lo % 64);
      if (w == hi / 64 && hi % 64 != 63)
        r &= ((uint64_t)2 << (hi % 64)) - 1;
      out[w] |= r;
    }
  }
  for (uint32_t w = 0; w < nw; w++)
    n += (uint32_t)__builtin_popcountll(out[w]);
#if PH_DEBUG >= 2
  for (uint32_t i = 0; i < ns; i++) /* the rule, slot by slot */
    PH_ASSERT((int)(out[i / 64] >> (i % 64) & 1) ==
              ph_slot_in_hole(h, holes, cls, i));
#endif
  return n;
}

/* A fresh pool of class cls for owner: the unit is taken under heap->lock,
 * its memory (header, then every slot: the first touch of its pages) is
 * written after the lock is dropped, so domains that open pools at the same
 * time do not wait for each other's page faults.  Safe because the caller
 * is a running domain: no section can start, so nothing walks the units,
 * before it reaches a safepoint. */
ph_pool *ph_pool_new(struct ph_heap *h, unsigned cls, unsigned owner) {
  ph_chunk *c;
  uint32_t u, n = h->class_units[cls];
  pthread_mutex_lock(&h->lock);
  /* heap.unit.lookup: a medium pool's further units are PH_U_POOL_TAIL,
   * their ucls the distance back to the first */
  int err = ph_units_take_locked(h, n, PH_U_POOL, &c, &u);
  int clean = 0;
  if (err == PH_OK) {
    h->pool_units += n;
    /* heap.unit.clean: a unit freed by a sweep that emptied a pool of this
     * class, untouched since */
    clean = n == 1 && c->ucls[u] == (PH_UCLS_CLEAN | cls);
    c->ucls[u] = (uint16_t)cls;
  }
  pthread_mutex_unlock(&h->lock);
  if (err != PH_OK)
    return NULL;
  ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
  ph_value clean_free = clean ? p->free : 0;
  memset(p, 0, h->class_hdr[cls]);
  p->hdr = (uint16_t)h->class_hdr[cls]; /* heap.pool.hdr */
  p->sig = PH_SIG_POOL;
  p->kind = PH_U_POOL;
  p->cls = (uint16_t)cls;
  p->owner = owner;
  p->nslots = h->class_nslots[cls];
  p->chunk = c;
  p->unit = u;
  if (clean) { /* every slot free, linked in address order: as init_free */
    p->free = clean_free;
    p->nfree = p->nslots;
  } else {
    ph_pool_init_free(h, p);
  }
  return p;
}

/* Free pool p's units (an empty pool, or one evacuated), heap->lock held:
 * a medium pool's units go back as one run. */
void ph_pool_free_locked(struct ph_heap *h, ph_pool *p) {
  uint32_t n = h->class_units[p->cls];
  p->sig = PH_SIG_DEAD;
  ph_units_free_locked(h, p->chunk, p->unit, n);
  h->pool_units -= n;
}

void ph_pool_free_clean_locked(struct ph_heap *h, ph_pool *p) {
  ph_chunk *c = p->chunk;
  uint32_t u = p->unit;
  int clean = h->class_units[p->cls] == 1 && p->nhole == 0 &&
              c->holes[u] == 0 && (!c->ool || !c->ool[u]) &&
              (char *)p == ph_unit_addr(h, c, u);
  PH_ASSERT(p->nlive == 0 && p->nfree == p->nslots - p->nhole);
  unsigned cls = p->cls;
  ph_pool_free_locked(h, p);
  if (clean)
    c->ucls[u] = (uint16_t)(PH_UCLS_CLEAN | cls);
}

static ph_fault_site heap_faults; /* tests.faults: os/'s engine */

void ph_heap_fault_set(unsigned op_mask, uint64_t nth, int sticky) {
  ph_fault_site_set(&heap_faults, op_mask, nth, sticky);
}

uint64_t ph_heap_fault_hits(void) {
  return ph_fault_site_hits(&heap_faults);
}

/* heap.pool.ool: the side copy is the header and the live bitmap (the
 * class's class_hdr bytes, 64-aligned like the unit's); the pool pointer
 * changes, so the caller holds no other copy of it but the plan's (the
 * avail lists are rebuilt from the unit tables after compact.pin.holes,
 * compact.phase.free). */
ph_pool *ph_pool_header_out_locked(struct ph_heap *h, ph_pool *p) {
  ph_chunk *c = p->chunk;
  uint32_t u = p->unit;
  PH_ASSERT(c->ustate[u] == PH_U_POOL && p->cls < h->nsmall &&
            !(c->holes[u] & 1) && (char *)p == ph_unit_addr(h, c, u));
  if (!c->ool && !(c->ool = calloc(c->nunits, sizeof *c->ool)))
    return NULL;
  size_t n = h->class_hdr[p->cls];
  ph_pool *q = ph_fault_site_hit(&heap_faults, PH_HEAP_OP_POOL_HDR)
                   ? NULL
                   : aligned_alloc(64, n);
  if (!q)
    return NULL;
  memcpy(q, p, n);
  c->ool[u] = q;
  h->ool_pools++;
  return q;
}

ph_pool *ph_pool_header_home_locked(struct ph_heap *h, ph_pool *q) {
  ph_chunk *c = q->chunk;
  uint32_t u = q->unit;
  PH_ASSERT(c->ool && c->ool[u] == q && !(c->holes[u] & 1));
  ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
  memcpy(p, q, h->class_hdr[q->cls]);
  free(q);
  c->ool[u] = NULL;
  h->ool_pools--;
  return p;
}

size_t ph_slot_trim_locked(struct ph_heap *h, uintptr_t slot, size_t sb,
                           int lazy) {
  uintptr_t pg = (uintptr_t)ph_os_page_size();
  uintptr_t a = (slot + 2 * sizeof(ph_value) + pg - 1) & ~(pg - 1);
  uintptr_t b = (slot + sb) & ~(pg - 1);
  if (b <= a || ph_os_discard(&h->os, (void *)a, b - a, lazy) != PH_OK)
    return 0;
  return b - a;
}

/* heap.pool.take: the one way both clients get a pool with a free slot.
 * A list popped by its owner alone (the managed collector's slot lists:
 * pushes happen inside stop-the-world sections, ordered by their locks and
 * barriers) is read relaxed; a shared one (the pool layer's orphans) is
 * tested relaxed, as a hint, and popped under heap->lock. */
ph_pool *ph_pool_take(struct ph_heap *h, _Atomic(ph_pool *) *head, int shared,
                      unsigned cls, unsigned owner, int *fresh) {
  ph_pool *p = NULL;
  if (head && atomic_load_explicit(head, memory_order_relaxed)) {
    if (shared)
      pthread_mutex_lock(&h->lock);
    while ((p = atomic_load_explicit(head, memory_order_relaxed))) {
      atomic_store_explicit(head, p->next, memory_order_relaxed);
      p->next = NULL;
      if (p->nfree > 0)
        break; /* a full pool is on no list (heap.pool) */
    }
    if (p)
      p->owner = owner;
    if (shared)
      pthread_mutex_unlock(&h->lock);
  }
  if (fresh)
    *fresh = !p;
  return p ? p : ph_pool_new(h, cls, owner);
}

/* Push p on its owner's avail list.  Inside stop-the-world several
 * participants push concurrently (CAS; pops never race with pushes because
 * only the owner pops, outside stop-the-world).  Release on success so the
 * pool header written before is visible to whoever pops it after the
 * section; relaxed on failure (we retry with the fresh head). */
void ph_pool_push_avail(struct ph_heap *h, ph_pool *p) {
  _Atomic(ph_pool *) *head = &h->slots[p->owner].avail[p->cls];
  ph_pool *old = atomic_load_explicit(head, memory_order_relaxed);
  do {
    p->next = old;
  } while (!atomic_compare_exchange_weak_explicit(
      head, &old, p, memory_order_release, memory_order_relaxed));
}

/* Give the pool of one alloc cache back (heap.alloc): its free list
 * and counts as the cache leaves them, pacing charged for the slots handed
 * out since the last charge, the pool on its owner slot's avail list if it
 * has free slots left; the cache is empty after. */
void ph_alloc_cache_return(struct ph_heap *h, ph_alloc_cache *ac,
                           unsigned cls) {
  ph_pool *p = ac->pool;
  if (!p)
    return;
  /* heap.pacing: charge the slots handed out since the last charge */
  ph_pacing_add(h, (uint64_t)(ac->nfree_charged - ac->nfree) *
                       h->class_wsize[cls] * 8);
  p->free = ac->free;
  p->nfree = ac->nfree;
  p->nlive = p->nslots - p->nhole - ac->nfree;
  p->cached = 0;
  /* heap.alloc.zero: the list is in address order, so every slot handed
   * out lies below its head */
  ph_pool_zero_set(h, p,
                   !ac->free             ? UINTPTR_MAX
                   : ac->free > ac->zero ? (uintptr_t)ac->free
                                         : ac->zero);
  if (p->nfree > 0)
    ph_pool_push_avail(h, p);
  ac->pool = NULL;
  ac->zero = UINTPTR_MAX;
  ac->free = 0;
  ac->nfree = 0;
  ac->nfree_charged = 0;
}

/* Write the alloc caches back into their pools (on entry to every
 * stop-the-world section, and at detach).  Cached pools with free slots go
 * back on the avail list, so the invariants of heap.pool hold again. */
void ph_domain_flush_caches(struct ph_domain *d) {
  for (unsigned c = 0; c < d->heap->nclasses; c++)
    ph_alloc_cache_return(d->heap, &d->cache[c], c);
}

#define PH_MIN_GC_BYTES ((uint64_t)4 << 20)

void ph_pacing_reset_locked(struct ph_heap *h) {
  uint64_t t = h->st.live_bytes / 100 * h->cfg.gc_percent;
  if (t < PH_MIN_GC_BYTES)
    t = PH_MIN_GC_BYTES;
  /* relaxed: pacing counters (heap.pacing) */
  atomic_store_explicit(&h->gc_threshold, t, memory_order_relaxed);
  atomic_store_explicit(&h->alloc_since, 0, memory_order_relaxed);
}
