/* api/alloc.c -- allocation (DESIGN.md: heap.alloc).
 *
 * Fast path: pop the domain's alloc cache for the size class (no lock, no
 * atomic read-modify-write).  Slow path, when the cache is empty: retire the
 * cached pool (it is full), take the next pool from the owner slot's avail
 * list, or a new pool under heap->lock (ph_pool_take, heap.pool.take).  Pacing
 * is checked on the slow path only (heap.pacing).  Large blocks take whole
 * units under heap->lock and commit only their pages (heap.large.commit). */
#include "api/api.h"

#include <pthread.h>
#include <string.h>

static void count_alloc(struct ph_domain *d, uint64_t bytes) {
  /* Only the owner writes `allocated`; relaxed because readers
   * (ph_stats_get) only want an approximate, monotone figure. */
  uint64_t a = atomic_load_explicit(&d->allocated, memory_order_relaxed);
  atomic_store_explicit(&d->allocated, a + bytes, memory_order_relaxed);
}

/* heap.pacing: collect when bytes allocated since the last collection
 * exceed the threshold (checked before taking memory, on slow paths).  Slots
 * are charged when a cache gives up its pool (exhausted here, or flushed),
 * only those handed out since the last charge, so the fast path stays free
 * of read-modify-writes and a pool's unused room is never charged. */
static void pacing_poll(struct ph_domain *d) {
  struct ph_heap *h = d->heap;
  if (h->cfg.gc_percent == 0)
    return;
  /* relaxed: counters; the decision tolerates being a little late */
  if (atomic_load_explicit(&h->alloc_since, memory_order_relaxed) <=
      atomic_load_explicit(&h->gc_threshold, memory_order_relaxed))
    return;
  ph_gc_run(d, PH_STW_COLLECT | PH_STW_AUTO, NULL);
}

static int refill(struct ph_domain *d, unsigned cls) {
  struct ph_heap *h = d->heap;
  ph_alloc_cache *ac = &d->cache[cls];
  if (ph_in_section()) /* barrier.reentry: a callback, another heap */
    return PH_ESTATE;
  ph_alloc_cache_return(h, ac, cls); /* exhausted: it is full now */
  pacing_poll(d);
  /* heap.pool.take: the next pool of the slot's avail list (only this
   * thread pops it), or a fresh one */
  _Atomic(ph_pool *) *avail = &h->slots[d->index].avail[cls];
  ph_pool *p = ph_pool_take(h, avail, 0, cls, d->index, NULL);
  if (!p) {
    /* Out of memory: a collection may free whole pools. */
    ph_gc_run(d, PH_STW_COLLECT, NULL);
    p = ph_pool_take(h, avail, 0, cls, d->index, NULL);
    if (!p)
      return PH_ENOMEM;
  }
  p->cached = 1;
  ac->pool = p;
  ac->free = p->free;
  ac->nfree = p->nfree;
  ac->nfree_charged = p->nfree;
  ac->zero = ph_pool_zero_addr(h, p); /* heap.pool.zero */
  return PH_OK;
}

/* heap.alloc.fill: scanned fields start as PH_UNIT, raw ones as 0.  The
 * PH_UNIT loop goes four words per step, which the compiler makes two
 * 16-byte stores (a word-by-word loop stays one 8-byte store per field:
 * the bulk of a medium block's allocation time), then the rest one by
 * one.  On x86-64, blocks of PH_FILL_STOS_MIN fields or more are filled by
 * `rep stosq`, the string store memset uses for big sizes (whole cache
 * lines without reading them first); not under the sanitizers, which do
 * not see stores made by assembly. */
#define PH_FILL_STOS_MIN 1024
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) &&                   \
    !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if !__has_feature(address_sanitizer) && !__has_feature(thread_sanitizer)
#define PH_FILL_STOS 1
#endif
#else
#define PH_FILL_STOS 1
#endif
#endif

static inline __attribute__((always_inline)) void
init_fields(ph_value v, size_t wosize, unsigned tag, int zero) {
  ph_value *f = (ph_value *)v;
  if (tag >= PH_TAG_RAW) {
    if (zero) /* heap.pool.zero: only field 0 (the free list's link) */
      f[0] = 0;
    else
      memset(f, 0, wosize * sizeof(ph_value));
    return;
  }
#ifdef PH_FILL_STOS
  if (wosize >= PH_FILL_STOS_MIN) {
    __asm__ volatile("rep stosq"
                     : "+D"(f), "+c"(wosize)
                     : "a"((ph_value)PH_UNIT)
                     : "memory");
    return;
  }
#endif
  size_t i = 0;
  for (; i + 4 <= wosize; i += 4) {
    f[i] = PH_UNIT;
    f[i + 1] = PH_UNIT;
    f[i + 2] = PH_UNIT;
    f[i + 3] = PH_UNIT;
  }
  for (; i < wosize; i++)
    f[i] = PH_UNIT;
}

ph_value ph_large_alloc(struct ph_domain *d, size_t wosize, unsigned tag) {
  struct ph_heap *h = d->heap;
  size_t bytes = PH_LARGE_HDR + 8 + wosize * 8;
  size_t n = (bytes + h->pool_size - 1) >> h->pool_shift;
  if (ph_in_section()) { /* barrier.reentry: a callback, another heap */
    d->last_error = PH_ESTATE;
    return 0;
  }
  /* heap.large.refuse: a block whose pages could never be committed
   * (heap_limit, or what the machine has) is refused before anything is
   * reserved or collected: the heap stays as it was. */
  size_t cap = h->cfg.heap_limit ? h->cfg.heap_limit : h->commit_cap;
  size_t page = ph_os_page_size();
  if (n >= UINT32_MAX || (bytes + page - 1) / page > cap / page) {
    d->last_error = PH_ENOMEM;
    return 0;
  }
  pacing_poll(d);
  ph_chunk *c = NULL;
  uint32_t u = 0;
  size_t comm = 0;
  int err = PH_ENOMEM;
  for (int attempt = 0; attempt < 2 && err != PH_OK; attempt++) {
    if (attempt == 1)
      ph_gc_run(d, PH_STW_COLLECT, NULL);
    pthread_mutex_lock(&h->lock);
    err = ph_units_take_large_locked(h, n, bytes, &c, &u, &comm);
    if (err == PH_OK) {
      ph_large *l = (ph_large *)ph_unit_addr(h, c, u);
      memset(l, 0, PH_LARGE_HDR);
      l->sig = PH_SIG_LARGE;
      l->kind = PH_U_LARGE;
      l->nunits = (uint32_t)n;
      l->unit = u;
      l->chunk = c;
      l->comm = comm;
      h->large_units += n;
      h->large_comm += comm;
    }
    pthread_mutex_unlock(&h->lock);
  }
  if (err != PH_OK) {
    d->last_error = err;
    return 0;
  }
  ph_pacing_add(h, (wosize + 1) * 8);
  ph_value *hp = (ph_value *)(ph_unit_addr(h, c, u) + PH_LARGE_HDR);
  *hp = ph_hd_make(wosize, PH_WHITE, tag);
  ph_value v = (ph_value)(hp + 1);
  init_fields(v, wosize, tag, 0);
  count_alloc(d, (wosize + 1) * 8);
  return v;
}

ph_value ph_alloc(ph_domain *d, size_t wosize, unsigned tag) {
  int err = ph_check_domain(d);
  if (err != PH_OK) {
    ph_domain_note_error(d, err); /* a detached handle stays readable */
    return 0;
  }
  if (wosize == 0 || wosize > PH_MAX_WOSIZE || tag > PH_TAG_MAX) {
    d->last_error = PH_EINVAL;
    return 0;
  }
  struct ph_heap *h = d->heap;
  if (d->state != PH_DS_RUNNING) {
    d->last_error = PH_ESTATE;
    return 0;
  }
  /* d was checked above (its owner's thread); barrier.reentry on the slow
   * path: from a callback (the section is pending) refuse */
  if (ph_safepoint_owner(d) != PH_OK) {
    d->last_error = PH_ESTATE;
    return 0;
  }
  if (wosize > h->max_small_wosize) {
    ph_final_poll(d); /* gc.final: a run point */
    return ph_large_alloc(d, wosize, tag);
  }
  unsigned cls = ph_class_of_wosize(h, wosize);
  ph_alloc_cache *ac = &d->cache[cls];
  ph_value b = ac->free;
  if (__builtin_expect(b == 0, 0)) {
    /* gc.final: a run point, before this allocation holds anything (a
     * finaliser may allocate from this very cache) */
    ph_final_poll(d);
    b = ac->free;
  }
  if (__builtin_expect(b == 0, 0)) {
    err = refill(d, cls);
    if (err != PH_OK) {
      d->last_error = err;
      return 0;
    }
    b = ac->free;
  }
  ac->free = *(ph_value *)b;
  /* pools.alloc.prefetch, as the pool layer's: the next free slot, whose
   * link the next allocation reads */
  __builtin_prefetch((const void *)ac->free, 1);
  ac->nfree--;
  /* heap.alloc.zero: a raw block in a slot at or above ac->zero (never
   * handed out since its pages were fresh) needs only field 0 zeroed */
  int zero = tag >= PH_TAG_RAW && b >= ac->zero;
  /* relaxed atomic (the same one store): ph_pin or ph_finalise on a bogus
   * pointer may read this header meanwhile (gc.pin) */
  __atomic_store_n(ph_hp(b), ph_hd_make(wosize, PH_WHITE, tag),
                   __ATOMIC_RELAXED);
  init_fields(b, wosize, tag, zero);
  count_alloc(d, (wosize + 1) * 8);
  return b;
}

int ph_last_error(const ph_domain *d) {
  if (!d)
    return PH_EINVAL;
  uint32_t sig = atomic_load_explicit(&d->sig, memory_order_relaxed);
  if (sig != PH_SIG_DOMAIN && sig != PH_SIG_DEAD)
    return PH_EINVAL;
  return atomic_load_explicit(&d->last_error, memory_order_relaxed);
}

/* gc.weak: a block allocated as usual, then given the kind bit; its fields
 * start as 0.  No collection can come between (this thread allocated it and
 * has not reached a safepoint since). */
static ph_value alloc_special(ph_domain *d, size_t wosize, unsigned tag) {
  ph_value v = ph_alloc(d, wosize, tag);
  if (!v)
    return 0;
  /* relaxed atomic, as ph_alloc's header store (gc.pin) */
  __atomic_store_n(ph_hp(v), ph_hp(v)[0] | PH_HD_SPECIAL, __ATOMIC_RELAXED);
  memset((void *)v, 0, wosize * sizeof(ph_value));
  return v;
}

ph_value ph_alloc_weak(ph_domain *d, size_t n) {
  return alloc_special(d, n, PH_WEAK_TAG);
}

ph_value ph_alloc_ephemeron(ph_domain *d, size_t nkeys) {
  /* a wosize of 0 gets ph_alloc's checks and PH_EINVAL */
  size_t wo = nkeys == 0 || nkeys >= PH_MAX_WOSIZE ? 0 : nkeys + 1;
  return alloc_special(d, wo, PH_EPHE_TAG);
}
