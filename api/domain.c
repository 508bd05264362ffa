/* api/domain.c -- attaching and detaching domains (DESIGN.md:
 * heap.domain).
 *
 * A domain occupies a slot.  Pools belong to slots, not to domains: when a
 * domain detaches, its pools stay with the slot (the heap adopts them: they
 * are swept, compacted and kept alive like any other), and the next domain
 * that attaches takes the lowest free slot and allocates from them.
 *
 * heap.domain.handle: a detached ph_domain handle goes to the tail of its
 * heap's retired list and is never freed before the heap, so a stale handle
 * is recognised (PH_SIG_DEAD) instead of being a use-after-free.  Once more
 * than PH_RETIRED_KEEP handles are retired, attach recycles the oldest, so
 * attach/detach churn uses bounded memory.  A recycled handle belongs to
 * the thread that attached it: the owner check (ph_check_domain) gives
 * PH_ESTATE to a stale call from any other thread.
 *
 * heap.domain.exit: a thread-specific key's destructor detaches every
 * domain a thread still has attached when it exits, so a thread that ends
 * without ph_domain_detach cannot hang later collections. */
#include "api/api.h"

#include <stdlib.h>

static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static int exit_key_err;

/* Runs on the exiting thread itself, so the domain's owner detaches it. */
static void thread_exit(void *arg) {
  (void)arg;
  while (ph_tl_domains) {
    struct ph_domain *d = ph_tl_domains;
    if (ph_domain_detach(d) != PH_OK) /* cannot happen: never loop */
      ph_tl_domains = d->api->thread_next;
  }
}

static void exit_key_init(void) {
  exit_key_err = pthread_key_create(&exit_key, thread_exit);
}

int ph_domain_attach(ph_heap *h, ph_domain **out) {
  if (!h || !out)
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  /* compact.scratch: a recycled handle mallocs nothing, and the thread's
   * first malloc must not come inside a section */
  ph_os_thread_malloc_init();
  /* a non-NULL value makes the destructor run at thread exit */
  pthread_once(&exit_once, exit_key_init);
  if (exit_key_err != 0 || pthread_setspecific(exit_key, &ph_tl_domains) != 0)
    return PH_ENOMEM;
  int err = ph_heap_lock_live(h); /* takes h->lock */
  if (err != PH_OK)
    return err;
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed))
    pthread_cond_wait(&h->sync->cond, &h->lock);
  unsigned i = 0;
  while (i < h->cfg.max_domains && h->slots[i].dom)
    i++;
  if (i == h->cfg.max_domains) {
    pthread_mutex_unlock(&h->lock);
    return PH_ESTATE;
  }
  struct ph_domain *d;
  if (h->api->nretired > PH_RETIRED_KEEP) { /* recycle the oldest */
    d = h->api->retired;
    h->api->retired = d->api->retired_next;
    if (!h->api->retired)
      h->api->retired_tail = NULL;
    h->api->nretired--;
  } else {
    /* a handle and every layer's state of it, in one allocation */
    ph_domain_all *all = calloc(1, sizeof *all);
    if (!all) {
      pthread_mutex_unlock(&h->lock);
      return PH_ENOMEM;
    }
    d = &all->d;
    d->sync = &all->sync;
    d->roots = &all->roots;
    d->api = &all->api;
    d->heap = h;
  }
  /* Detach left the caches flushed and the root stack empty.  A stale
   * call may be reading sig, owner, index and last_error: atomic stores. */
  __atomic_store_n(&d->index, i, __ATOMIC_RELAXED);
  d->state = PH_DS_RUNNING;
  d->sync->stw_expected = 0;
  d->api->retired_next = NULL;
  atomic_store_explicit(&d->last_error, PH_OK, memory_order_relaxed);
  atomic_store_explicit(&d->allocated, 0, memory_order_relaxed);
  ph_roots_domain_init(d);
  atomic_store_explicit(&d->owner, ph_thread_tag(), memory_order_relaxed);
  atomic_store_explicit(&d->sig, PH_SIG_DOMAIN, memory_order_relaxed);
  h->slots[i].dom = d;
  h->api->ndomains++;
  pthread_mutex_unlock(&h->lock);
  d->api->thread_next = ph_tl_domains;
  ph_tl_domains = d;
  *out = d;
  return PH_OK;
}

int ph_domain_detach(ph_domain *d) {
  int err = ph_domain_enter(d);
  if (err != PH_OK)
    return err;
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  if (d->state == PH_DS_BLOCKING) { /* leave it first */
    while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed))
      pthread_cond_wait(&h->sync->cond, &h->lock);
    d->state = PH_DS_RUNNING;
  }
  /* join every section that counts on us, then leave */
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed)) {
    if (d->sync->stw_expected == h->sync->stw.epoch) {
      pthread_mutex_unlock(&h->lock);
      ph_stw_join(d);
      pthread_mutex_lock(&h->lock);
    } else {
      pthread_cond_wait(&h->sync->cond, &h->lock);
    }
  }
  ph_domain_flush_caches(d);
  ph_roots_domain_fini(d);
  ph_final_detach_locked(h, d->index); /* gc.final: to the orphans */
  atomic_fetch_add_explicit(
      &h->api->retired_allocated,
      atomic_load_explicit(&d->allocated, memory_order_relaxed),
      memory_order_relaxed);
  h->slots[d->index].dom = NULL;
  h->api->ndomains--;
  atomic_store_explicit(&d->sig, PH_SIG_DEAD, memory_order_relaxed);
  d->state = PH_DS_FREE;
  d->api->retired_next = NULL;
  if (h->api->retired_tail)
    h->api->retired_tail->api->retired_next = d;
  else
    h->api->retired = d;
  h->api->retired_tail = d;
  h->api->nretired++;
  pthread_mutex_unlock(&h->lock);
  /* off this thread's list (only this thread touches it) */
  for (struct ph_domain **p = &ph_tl_domains; *p; p = &(*p)->api->thread_next)
    if (*p == d) {
      *p = d->api->thread_next;
      break;
    }
  d->api->thread_next = NULL;
  return PH_OK;
}

unsigned ph_domain_index(const ph_domain *d) {
  return d && atomic_load_explicit(&d->sig, memory_order_relaxed) ==
                     PH_SIG_DOMAIN
             ? __atomic_load_n(&d->index, __ATOMIC_RELAXED)
             : (unsigned)-1;
}

ph_heap *ph_domain_heap(const ph_domain *d) {
  if (!d)
    return NULL;
  uint32_t sig = atomic_load_explicit(&d->sig, memory_order_relaxed);
  return sig == PH_SIG_DOMAIN || sig == PH_SIG_DEAD ? d->heap : NULL;
}
