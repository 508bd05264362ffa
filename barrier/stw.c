/* barrier/stw.c -- stop-the-world sections, safepoints and blocking
 * sections (DESIGN.md: barrier.stw, barrier.blocking).
 *
 * Election.  A domain that wants a section takes heap->lock.  If a section
 * is pending it joins it (if that section counts on it) and re-checks
 * afterwards; otherwise it becomes the leader: it numbers the section
 * (epoch), snapshots every RUNNING domain as an expected participant
 * (d->sync->stw_expected = epoch) and publishes stw_pending = 1.
 *
 * Participation.  Each participant flushes its alloc caches, takes a
 * participant index on arrival, and waits at the section's barrier until
 * all nparts have arrived (the last to arrive runs the section's prepare
 * function first); then all run the section's body (a function pointer the
 * leader stored: gc/collect.c's sequence), which separates its phases with
 * ph_barrier_wait; at the end each one leaves under heap->lock and the last
 * to leave clears stw_pending and wakes every waiter.
 *
 * Domains in a blocking section are not participants: the leader flushes
 * their caches and the participants scan and update their roots.  Leaving a
 * blocking section waits until no section is pending; entering one first
 * joins a section that counts on the domain.  Attach waits likewise.
 *
 * Coalescing.  ph_collect returns after a collecting section that started
 * after the call: either one whose epoch is later than the number of
 * sections started at the call, or one the caller took part in from its
 * first barrier (marking starts only once every participant has arrived, so
 * it began after the call).  Concurrent requests thus share one section.
 * A compaction the body attempted but could not do (it sets refused, e.g.
 * PH_ENOMEM) ends every compaction request that took part in that section
 * with that error, the leader's included: none retries. */
#include "barrier/barrier.h"

#include <stdio.h>
#include <stdlib.h>

_Thread_local struct ph_heap *ph_tls_section;

static void prepare_fn(void *arg) {
  struct ph_heap *h = arg;
  h->sync->stw.prepare(h);
}

/* Take part in the current section.  Returns the section's result for its
 * leader.  *did (if not NULL) gets what the section did: PH_STW_COLLECT
 * and/or PH_STW_COMPACT; *refused (if not NULL) why a compaction it
 * attempted did not happen (PH_OK if none was refused). */
static int participate_did(struct ph_domain *d, int *did, int *refused) {
  struct ph_heap *h = d->heap;
  ph_stw *s = &h->sync->stw;
  ph_domain_flush_caches(d);
  pthread_mutex_lock(&h->lock);
  unsigned id = s->arrived++;
  pthread_mutex_unlock(&h->lock);
  /* barrier.stw.prepare: the arrival is the section's first barrier round;
   * the last to arrive runs the prepare function before any leaves */
  ph_barrier_wait_single(&s->bar, prepare_fn, h);

  ph_tls_section = h; /* barrier.reentry: callbacks run in the body */
  s->body(h, id, d);
  ph_tls_section = NULL;
  int result = d == s->leader ? s->result : PH_OK;
  if (did)
    *did = s->did;
  if (refused)
    *refused = s->refused;

  pthread_mutex_lock(&h->lock);
  d->sync->stw_expected = 0;
  if (++s->left == s->nparts) {
    if (s->did & PH_STW_COLLECT)
      h->sync->last_collect_epoch = s->epoch;
    if (s->did & PH_STW_COMPACT)
      h->sync->last_compact_epoch = s->epoch;
    /* release: pairs with the acquire in ph_safepoint's slow path */
    atomic_store_explicit(&h->stw_pending, 0, memory_order_release);
    pthread_cond_broadcast(&h->sync->cond);
  }
  pthread_mutex_unlock(&h->lock);
  return result;
}

static int participate(struct ph_domain *d) {
  return participate_did(d, NULL, NULL);
}

static int satisfied_locked(struct ph_heap *h, int kind, uint64_t start) {
  if (kind & (PH_STW_VERIFY | PH_STW_CENSUS))
    return 0;
  if (kind & PH_STW_COMPACT)
    return h->sync->last_compact_epoch > start;
  return h->sync->last_collect_epoch > start;
}

int ph_stw_run(struct ph_domain *d, int kind, ph_stw_prepare prepare,
               ph_stw_body body, const void *arg) {
  struct ph_heap *h = d->heap;
  ph_stw *s = &h->sync->stw;
  int result = PH_OK;
  pthread_mutex_lock(&h->lock);
  if (d->state != PH_DS_RUNNING) {
    pthread_mutex_unlock(&h->lock);
    return PH_ESTATE;
  }
  uint64_t start = h->sync->stw_started;
  for (;;) {
    if (atomic_load_explicit(&h->stw_pending, memory_order_relaxed)) {
      if (d->sync->stw_expected == s->epoch) {
        /* We take part from its first barrier, after our call: a whole
         * collection (or compaction) that started after the call, even if
         * it was elected before (barrier.stw coalescing). */
        int did = 0, refused = PH_OK;
        pthread_mutex_unlock(&h->lock);
        participate_did(d, &did, &refused);
        pthread_mutex_lock(&h->lock);
        if (!(kind & (PH_STW_VERIFY | PH_STW_CENSUS)) &&
            (did & ((kind & PH_STW_COMPACT) ? PH_STW_COMPACT : PH_STW_COLLECT)))
          break;
        /* a compaction refused in a section we took part in from its
         * first barrier: our request failed with it (barrier.stw) */
        if ((kind & PH_STW_COMPACT) && refused != PH_OK) {
          result = refused;
          break;
        }
      } else {
        pthread_cond_wait(&h->sync->cond, &h->lock);
      }
      continue;
    }
    if (satisfied_locked(h, kind, start))
      break;
    /* lead a new section */
    s->epoch = ++h->sync->stw_started;
    s->kind = kind;
    s->prepare = prepare;
    s->body = body;
    s->did = 0;
    s->refused = PH_OK;
    s->leader = d;
    s->arg = arg;
    unsigned n = 0;
    for (unsigned i = 0; i < h->cfg.max_domains; i++) {
      struct ph_domain *o = h->slots[i].dom;
      if (o && o->state == PH_DS_RUNNING) {
        o->sync->stw_expected = s->epoch;
        n++;
      }
    }
    /* barrier.helpers: they help only where there is heap work */
    if (kind & (PH_STW_COLLECT | PH_STW_COMPACT))
      for (unsigned i = 0; i < h->sync->nhelpers; i++) {
        h->sync->helpers[i]->sync->stw_expected = s->epoch;
        n++;
      }
    s->nparts = n;
    s->arrived = 0;
    s->left = 0;
    ph_barrier_reset(&s->bar, n);
    atomic_store_explicit(&h->stw_pending, 1, memory_order_release);
    if (h->sync->nhelpers)
      pthread_cond_broadcast(&h->sync->helper_cond);
    pthread_mutex_unlock(&h->lock);
    int refused = PH_OK;
    result = participate_did(d, NULL, &refused);
    pthread_mutex_lock(&h->lock);
    if (kind & (PH_STW_VERIFY | PH_STW_CENSUS))
      break;
    /* our own compaction was refused: report it, do not retry */
    if ((kind & PH_STW_COMPACT) && refused != PH_OK) {
      result = refused;
      break;
    }
  }
  pthread_mutex_unlock(&h->lock);
  return result;
}

/* barrier.helpers: a helper sleeps until a section counts on it, takes
 * part, and sleeps again; it leaves when destroy sets helpers_stop. */
static void *helper_main(void *arg) {
  struct ph_domain *d = arg;
  struct ph_heap *h = d->heap;
  ph_os_thread_malloc_init(); /* compact.scratch: no arena in a section */
  pthread_mutex_lock(&h->lock);
  for (;;) {
    if (atomic_load_explicit(&h->stw_pending, memory_order_relaxed) &&
        d->sync->stw_expected == h->sync->stw.epoch) {
      pthread_mutex_unlock(&h->lock);
      participate(d);
      pthread_mutex_lock(&h->lock);
      continue;
    }
    if (h->sync->helpers_stop)
      break;
    pthread_cond_wait(&h->sync->helper_cond, &h->lock);
  }
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

/* barrier.helpers: usable bytes of a helper's stack (glibc puts the
 * thread's descriptor and TLS at its top), above a guard page. */
#define PH_HELPER_STACK ((size_t)256 << 10)

int ph_stw_helpers_start(struct ph_heap *h) {
  unsigned n = h->cfg.gc_helpers;
  if (n == 0)
    return PH_OK;
  h->sync->helpers = calloc(n, sizeof *h->sync->helpers);
  h->sync->helper_threads = calloc(n, sizeof *h->sync->helper_threads);
  h->sync->helper_stacks = calloc(n, sizeof *h->sync->helper_stacks);
  if (!h->sync->helpers || !h->sync->helper_threads || !h->sync->helper_stacks)
    return PH_ENOMEM;
  /* A small stack: the phases keep their work on the heap, and the default
   * 8 MiB reservation per thread would count against RLIMIT_AS.  We map it
   * ourselves (with a guard page) and unmap it after the join: glibc would
   * keep a stack it made in its cache, two mappings per helper after
   * ph_heap_destroy. */
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0)
    return PH_ENOMEM;
  int err = PH_OK;
  for (unsigned i = 0; i < n && err == PH_OK; i++) {
    /* a helper is a domain with the barrier layer's state only */
    struct helper_domain {
      struct ph_domain d; /* first: freed through &d */
      ph_domain_sync sync;
    } *hd = calloc(1, sizeof *hd);
    if (!hd) {
      err = PH_ENOMEM;
      break;
    }
    struct ph_domain *d = &hd->d;
    d->sync = &hd->sync;
    d->sig = PH_SIG_DOMAIN;
    d->index = h->cfg.max_domains + i; /* outside the slots */
    d->heap = h;
    d->state = PH_DS_RUNNING;
    void *stack = NULL;
    if (ph_os_stack_map(PH_HELPER_STACK, &stack) != PH_OK) {
      free(d);
      err = PH_ENOMEM;
      break;
    }
    h->sync->helpers[i] = d;
    if (pthread_attr_setstack(&attr, stack, PH_HELPER_STACK) != 0 ||
        pthread_create(&h->sync->helper_threads[i], &attr, helper_main, d) !=
            0) {
      h->sync->helpers[i] = NULL;
      free(d);
      ph_os_stack_unmap(stack, PH_HELPER_STACK);
      err = PH_ENOMEM;
      break;
    }
    h->sync->helper_stacks[i] = stack;
    pthread_mutex_lock(&h->lock);
    h->sync->nhelpers = i + 1;
    pthread_mutex_unlock(&h->lock);
  }
  pthread_attr_destroy(&attr);
  return err;
}

/* Stop and join the helpers (no section may be pending). */
void ph_stw_helpers_stop(struct ph_heap *h) {
  pthread_mutex_lock(&h->lock);
  h->sync->helpers_stop = 1;
  pthread_cond_broadcast(&h->sync->helper_cond);
  unsigned n = h->sync->nhelpers;
  pthread_mutex_unlock(&h->lock);
  for (unsigned i = 0; i < n; i++) {
    pthread_join(h->sync->helper_threads[i], NULL);
    free(h->sync->helpers[i]);
    ph_os_stack_unmap(h->sync->helper_stacks[i], PH_HELPER_STACK); /* joined */
  }
  free(h->sync->helpers);
  free(h->sync->helper_threads);
  free(h->sync->helper_stacks);
  h->sync->helpers = NULL;
  h->sync->helper_threads = NULL;
  h->sync->helper_stacks = NULL;
  h->sync->nhelpers = 0;
}

void ph_stw_join(struct ph_domain *d) {
  struct ph_heap *h = d->heap;
  /* barrier.stw.left: a domain no section counts on (it has left the
   * pending one, or was not running when it was elected) does not take
   * heap->lock at each of its safepoints until the last participant
   * leaves.  Acquire: if stw_pending is a new section's store, the leader's
   * stw_expected store before it is seen; a stale one gives 0 and a later
   * safepoint looks again. */
  if (!atomic_load_explicit(&h->stw_pending, memory_order_acquire) ||
      atomic_load_explicit(&d->sync->stw_expected, memory_order_relaxed) == 0)
    return;
  pthread_mutex_lock(&h->lock);
  int join = atomic_load_explicit(&h->stw_pending, memory_order_relaxed) &&
             d->sync->stw_expected == h->sync->stw.epoch &&
             d->state == PH_DS_RUNNING;
  pthread_mutex_unlock(&h->lock);
  if (join)
    participate(d);
}

/* ------------------------------------------------------------- public */

void ph_safepoint(ph_domain *d) {
  /* NULL, junk, detached or another thread's handle: ignored (d->heap is
   * read only once d is known to be this thread's domain) */
  if (__builtin_expect(ph_check_domain(d) != PH_OK, 0))
    return;
  /* as ph_safepoint_owner (barrier.reentry on its slow path), then the
   * layer above's after_join */
  if (__builtin_expect(
          atomic_load_explicit(&d->heap->stw_pending, memory_order_relaxed),
          0)) {
    if (ph_in_section())
      return;
    ph_stw_join(d);
    if (d->heap->sync->after_join)
      d->heap->sync->after_join(d);
  }
}

void ph_blocking_enter(ph_domain *d) {
  if (ph_check_domain(d) != PH_OK || ph_in_section())
    return;
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  if (d->state != PH_DS_RUNNING) { /* nested or unbalanced: ignored */
    pthread_mutex_unlock(&h->lock);
    PH_ASSERT(!"ph_blocking_enter while not running");
    return;
  }
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed) &&
         d->sync->stw_expected == h->sync->stw.epoch) {
    pthread_mutex_unlock(&h->lock);
    participate(d);
    pthread_mutex_lock(&h->lock);
  }
  d->state = PH_DS_BLOCKING;
  pthread_mutex_unlock(&h->lock);
}

void ph_blocking_leave(ph_domain *d) {
  if (ph_check_domain(d) != PH_OK || ph_in_section())
    return;
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  if (d->state != PH_DS_BLOCKING) {
    pthread_mutex_unlock(&h->lock);
    PH_ASSERT(!"ph_blocking_leave without ph_blocking_enter");
    return;
  }
  while (atomic_load_explicit(&h->stw_pending, memory_order_relaxed))
    pthread_cond_wait(&h->sync->cond, &h->lock);
  d->state = PH_DS_RUNNING;
  pthread_mutex_unlock(&h->lock);
}
