/* heap/owner.c -- the owner check of a domain handle (DESIGN.md:
 * domain.owner, heap.domain.handle). */
#include "heap/heap.h"

_Thread_local struct ph_domain *ph_tl_domains
    __attribute__((tls_model("initial-exec")));

int ph_check_domain(const struct ph_domain *d) {
  if (!d)
    return PH_EINVAL;
  /* relaxed: a stale handle may be recycled by another thread meanwhile;
   * whatever the loads see, a call from this thread is refused unless the
   * handle is attached and was attached by this thread (heap.domain). */
  uint32_t sig = atomic_load_explicit(&d->sig, memory_order_relaxed);
  if (sig == PH_SIG_DEAD)
    return PH_ESTATE;
  if (sig != PH_SIG_DOMAIN)
    return PH_EINVAL;
  /* domain.owner: a domain is used only by the thread that attached it
   * (every build: this is what makes a recycled handle safe). */
  if (atomic_load_explicit(&d->owner, memory_order_relaxed) != ph_thread_tag())
    return PH_ESTATE;
  return PH_OK;
}

void ph_domain_note_error(struct ph_domain *d, int err) {
  if (!d || atomic_load_explicit(&d->sig, memory_order_relaxed) != PH_SIG_DEAD)
    return;
  /* A detached handle's fields are guarded by heap->lock (attach recycles
   * it under the lock), and its heap never changes. */
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  if (atomic_load_explicit(&d->sig, memory_order_relaxed) == PH_SIG_DEAD)
    atomic_store_explicit(&d->last_error, err, memory_order_relaxed);
  pthread_mutex_unlock(&h->lock);
}
