/* gc/verify.c -- the whole-heap check run by ph_verify inside
 * stop-the-world (DESIGN.md: heap.verify).  Single-threaded and thorough:
 * the pool layer's structural walk (heap/verify.c: chunk tables, unit
 * states, every pool header and slot, every free list, every large block,
 * the accounting counters against a recount) with the managed collector's
 * colours and owners as its hooks, then what is the collector's own: every
 * scanned field and root, the avail lists. */
#include "gc/gc.h"

#include <stdarg.h>
#include <stdio.h>

/* The check's state: the pool layer's walk (ph_check) and the heap. */
typedef struct vctx {
  ph_check k;
  struct ph_heap *h;
} vctx;

static int fail(vctx *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(vctx *v, const char *fmt, ...) {
  if (!v->k.bad && v->k.why && v->k.why_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->k.why, v->k.why_size, fmt, ap);
    va_end(ap);
  }
  v->k.bad = 1;
  return 0;
}

/* Is x the address of field 0 of a live (allocated, unmarked) block of this
 * heap?  The allocated-block check is gc.pin's (ph_gc_block_check_locked);
 * the caller holds heap->lock. */
static int valid_block_locked(vctx *v, ph_value x) {
  return ph_gc_block_check_locked(v->h, x) &&
         !(ph_hd_color(*ph_hp(x)) & PH_BLACK);
}

static void check_fields(vctx *v, ph_value b) {
  ph_value hd = *ph_hp(b);
  if (ph_hd_tag(hd) >= PH_TAG_RAW)
    return;
  size_t wo = ph_hd_wosize(hd);
  for (size_t i = 0; i < wo && !v->k.bad; i++) {
    ph_value x = ((ph_value *)b)[i];
    if (ph_is_block(x) && !valid_block_locked(v, x))
      fail(v, "block %p field %zu = %p is not a live block", (void *)b, i,
           (void *)x);
  }
}

/* The walk's hooks: the managed collector's colours and owners. */
static void block_white(ph_check *k, ph_value b) {
  ph_value hd = *ph_hp(b);
  if (hd & PH_HD_WATCH) /* heap.block.watch */
    ph_check_fail(k, "block %p: watch bit outside a collection", (void *)b);
  if (ph_hd_color(hd) == PH_HD_SPECIAL >> PH_HD_COLOR_SHIFT) { /* gc.weak */
    if (ph_hd_tag(hd) != PH_WEAK_TAG &&
        (ph_hd_tag(hd) != PH_EPHE_TAG || ph_hd_wosize(hd) < 2))
      ph_check_fail(k, "block %p: weak kind with tag %u", (void *)b,
                    ph_hd_tag(hd));
    return;
  }
  if (ph_hd_color(hd) != PH_WHITE)
    ph_check_fail(k, "block %p: color %u outside a collection", (void *)b,
                  ph_hd_color(hd));
}
static void pool_owned(ph_check *k, ph_pool *p, uint64_t words) {
  (void)words; /* the managed collector keeps no live_words */
  const struct ph_heap *h = k->ctx;
  if (p->owner >= h->cfg.max_domains)
    ph_check_fail(k, "pool %p: owner %u not a slot", (void *)p, p->owner);
}
static void large_white(ph_check *k, ph_large *l, ph_value b) {
  if (*ph_hp(b) & PH_HD_WATCH) /* heap.block.watch */
    ph_check_fail(k, "large block at %p: watch bit outside a collection",
                  (void *)l);
  if (ph_hd_color(*ph_hp(b)) & PH_BLACK)
    ph_check_fail(k, "large block at %p: color %u outside a collection",
                  (void *)l, ph_hd_color(*ph_hp(b)));
}

int ph_verify_stw_single(struct ph_heap *h, char *why, size_t why_size) {
  vctx v = {.h = h};
  v.k.why = why;
  v.k.why_size = why_size;
  v.k.block = block_white;
  v.k.pool = pool_owned;
  v.k.large = large_white;
  v.k.ctx = h;
  v.k.zero = 1; /* heap.pool.zero: the alloc cache keeps it */
  /* heap.verify: the pool layer's structural walk, then what is ours */
  pthread_mutex_lock(&h->lock);
  ph_check_heap_locked(h, &v.k);
  uint64_t pools = v.k.pools;
  /* every scanned field of every block */
  for (unsigned i = 0; i < h->nchunks && !v.k.bad; i++) {
    ph_chunk *c = h->chunks[i];
    for (uint32_t u = 0; u < c->nunits && !v.k.bad; u++) {
      if (c->ustate[u] == PH_U_POOL) {
        ph_pool *p = ph_pool_at(h, c, u);
        for (uint32_t k = 0; k < p->nslots && !v.k.bad; k++) {
          if (ph_pool_slot_in_hole(h, c, u, p->cls, k))
            continue; /* heap.pool.holes */
          ph_value b = ph_pool_block(h, p, k);
          if (*ph_hp(b) != 0 && !(ph_hd_color(*ph_hp(b)) & PH_BLACK))
            check_fields(&v, b);
        }
      } else if (c->ustate[u] == PH_U_LARGE) {
        check_fields(&v, (ph_value)(ph_unit_addr(h, c, u) + PH_LARGE_HDR + 8));
      }
    }
  }
  if (v.k.bad) {
    pthread_mutex_unlock(&h->lock);
    return PH_ECORRUPT;
  }
  /* avail lists */
  for (unsigned s = 0; s < h->cfg.max_domains && !v.k.bad; s++)
    for (unsigned c = 0; c < h->nclasses && !v.k.bad; c++) {
      size_t n = 0;
      for (ph_pool *p = atomic_load_explicit(&h->slots[s].avail[c],
                                             memory_order_relaxed);
           p && !v.k.bad; p = p->next) {
        /* the pool itself, not a stale copy of its header (heap.pool.ool) */
        if (p->sig != PH_SIG_POOL || p->owner != s || p->cls != c ||
            p != ph_pool_at(h, p->chunk, p->unit) || ++n > pools)
          fail(&v, "avail list %u/%u broken at %p", s, c, (void *)p);
      }
    }
  /* roots */
  for (unsigned s = 0; s < h->cfg.max_domains && !v.k.bad; s++) {
    struct ph_domain *d = h->slots[s].dom;
    if (!d)
      continue;
    for (ph_rootseg *sg = d->roots->segs; sg && !v.k.bad; sg = sg->prev)
      for (size_t i = 0; i < sg->used && !v.k.bad; i++)
        if (ph_is_block(sg->slot[i]) && !valid_block_locked(&v, sg->slot[i]))
          fail(&v, "domain %u root %zu = %p is not a live block", s, i,
               (void *)sg->slot[i]);
  }
  pthread_mutex_unlock(&h->lock);
  if (!v.k.bad) {
    /* roots_lock, then heap->lock: no path takes them the other way */
    pthread_mutex_lock(&h->roots->roots_lock);
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->roots->groots_cap && !v.k.bad; i++) {
      ph_value *slot = h->roots->groots[i];
      if (slot && slot != (ph_value *)1 && ph_is_block(*slot) &&
          !valid_block_locked(&v, *slot))
        fail(&v, "global root %p = %p is not a live block", (void *)slot,
             (void *)*slot);
    }
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&h->roots->roots_lock);
  }
  return v.k.bad ? PH_ECORRUPT : PH_OK;
}
