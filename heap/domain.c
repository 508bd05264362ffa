/* heap/domain.c -- attaching and detaching domains (DESIGN.md:
 * heap.domain).
 *
 * A domain occupies a slot.  Pools belong to slots, not to domains: when a
 * domain detaches, its pools stay with the slot (the heap adopts them: they
 * are swept, compacted and kept alive like any other), and the next domain
 * that attaches takes the lowest free slot and allocates from them.  The
 * ph_domain handle itself is never freed before the heap, so a stale handle
 * is recognised (PH_SIG_DEAD) instead of being a use-after-free. */
#include "heap/internal.h"

#include <stdlib.h>

int ph_domain_attach(ph_heap *h, ph_domain **out) {
  if (!h || h->sig != PH_SIG_HEAP || !out)
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  struct ph_domain *d = calloc(1, sizeof *d);
  if (!d)
    return PH_ENOMEM;
  pthread_mutex_lock(&h->lock);
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed))
    pthread_cond_wait(&h->cond, &h->lock);
  unsigned i = 0;
  while (i < h->cfg.max_domains && h->slots[i].dom)
    i++;
  if (i == h->cfg.max_domains) {
    pthread_mutex_unlock(&h->lock);
    free(d);
    return PH_ESTATE;
  }
  d->sig = PH_SIG_DOMAIN;
  d->index = i;
  d->heap = h;
  d->thread = pthread_self();
  d->state = PH_DS_RUNNING;
  ph_roots_domain_init(d);
  h->slots[i].dom = d;
  h->ndomains++;
  pthread_mutex_unlock(&h->lock);
  *out = d;
  return PH_OK;
}

int ph_domain_detach(ph_domain *d) {
  int err = ph_check_domain(d);
  if (err != PH_OK)
    return err;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  if (d->state == PH_DS_BLOCKING) { /* leave it first */
    while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed))
      pthread_cond_wait(&h->cond, &h->lock);
    d->state = PH_DS_RUNNING;
  }
  /* join every section that counts on us, then leave */
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed)) {
    if (d->stw_expected == h->stw.epoch) {
      pthread_mutex_unlock(&h->lock);
      ph_stw_join(d);
      pthread_mutex_lock(&h->lock);
    } else {
      pthread_cond_wait(&h->cond, &h->lock);
    }
  }
  ph_domain_flush_caches(d);
  ph_roots_domain_fini(d);
  atomic_fetch_add_explicit(
      &h->retired_allocated,
      atomic_load_explicit(&d->allocated, memory_order_relaxed),
      memory_order_relaxed);
  h->slots[d->index].dom = NULL;
  h->ndomains--;
  d->sig = PH_SIG_DEAD;
  d->state = PH_DS_FREE;
  d->retired_next = h->retired;
  h->retired = d;
  pthread_mutex_unlock(&h->lock);
  return PH_OK;
}

unsigned ph_domain_index(const ph_domain *d) {
  return d && d->sig == PH_SIG_DOMAIN ? d->index : (unsigned)-1;
}

ph_heap *ph_domain_heap(const ph_domain *d) {
  return d && (d->sig == PH_SIG_DOMAIN || d->sig == PH_SIG_DEAD) ? d->heap
                                                                 : NULL;
}
