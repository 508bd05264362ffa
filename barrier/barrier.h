/* barrier/barrier.h -- barriers and stop-the-world sections: election,
 * participation, GC helpers, blocking sections, safepoints (DESIGN.md:
 * barrier).
 *
 * Includes: heap/ (and below) only.  A section runs a body handed to
 * ph_stw_run by the layer above (gc/collect.c); the engine does not know
 * what the body does beyond the kind flags it coalesces on. */
#ifndef PH_BARRIER_BARRIER_H
#define PH_BARRIER_BARRIER_H

#include "heap/heap.h"

/* barrier.sense: a reusable barrier for n threads (mutex + condvar). */
typedef struct ph_barrier {
  pthread_mutex_t m;
  pthread_cond_t c;
  unsigned n, waiting;      /* (m) */
  unsigned sleepers;        /* (m) waiters in pthread_cond_wait */
  uint64_t slept;           /* (m) waits that slept, in all (only grows) */
  _Atomic uint32_t spin_ns; /* how long a waiter spins (barrier.sense.spin) */
  /* rounds passed: written under m by the last to arrive, read without it
   * by the waiters that spin (barrier.sense.spin) */
  _Atomic uint64_t gen;
} ph_barrier;
void ph_barrier_init(ph_barrier *b);
void ph_barrier_destroy(ph_barrier *b);
void ph_barrier_reset(ph_barrier *b, unsigned n);
/* Returns 1 in exactly one thread (the last to arrive). */
int ph_barrier_wait(ph_barrier *b);
/* barrier.sense.single: the same, and the last to arrive runs fn(arg)
 * (if fn) before any participant leaves; what fn writes happens-before
 * every read after the wait.  fn must not wait on b. */
int ph_barrier_wait_single(ph_barrier *b, void (*fn)(void *), void *arg);
/* Test knob (internal): the longest spin of a waiter, in ns, for the
 * barriers initialised after it is set (0: never spin). */
extern uint32_t ph_barrier_spin_max_ns;
/* barrier.sense.spin for other waits: spin until *word (a generation its
 * writers change with a release store) differs from old, for at most
 * *spin_ns (adapted as the barrier's); 1 if it moved, 0 at once if
 * nthreads exceed the online CPUs or *spin_ns is 0.  The caller then
 * sleeps as it would have. */
int ph_spin_wait(_Atomic uint64_t *word, uint64_t old, unsigned nthreads,
                 _Atomic uint32_t *spin_ns);

/* Kinds of sections.  COLLECT and COMPACT do heap work (helpers take part;
 * a request is satisfied by a later section of that kind); VERIFY and
 * CENSUS always lead their own.  AUTO is read by the body only. */
enum {
  PH_STW_COLLECT = 1,
  PH_STW_COMPACT = 2,
  PH_STW_VERIFY = 4,
  PH_STW_CENSUS = 8,
  PH_STW_AUTO = 16, /* triggered by pacing: may compact (compact_percent) */
};

/* The body of a section: every participant runs it, with its participant
 * index (0..nparts-1, in order of arrival) and its domain. */
typedef void (*ph_stw_body)(struct ph_heap *h, unsigned id,
                            struct ph_domain *d);

/* Run once per section by the last participant to arrive, under
 * heap->lock, before any participant runs the body (barrier.stw.prepare):
 * every participant has flushed its caches and none runs yet. */
typedef void (*ph_stw_prepare)(struct ph_heap *h);

/* One stop-the-world section (barrier.stw).  Fields marked (lock) are
 * written under heap->lock; the rest by participants, ordered by barriers. */
typedef struct ph_stw {
  uint64_t epoch;   /* (lock) */
  int kind;         /* (lock) PH_STW_* */
  unsigned nparts;  /* (lock) participants expected */
  unsigned arrived; /* (lock) */
  unsigned left;    /* (lock) participants that finished */
  struct ph_domain *leader;
  ph_stw_prepare prepare; /* (lock) run by the last to arrive */
  ph_stw_body body;       /* (lock) what every participant runs */
  const void *arg;        /* (lock) the leader's request, for the body */
  int did;     /* written by the body: PH_STW_COLLECT|PH_STW_COMPACT */
  int result;  /* written by the body: the leader's result */
  int refused; /* written by the body: PH_OK, or the error that kept a
                  compaction it attempted from happening; every
                  compaction request that took part returns it */
  ph_barrier bar;
} ph_stw;

/* The barrier layer's state of a heap (h->sync). */
typedef struct ph_sync {
  pthread_cond_t cond;         /* section start/end, arrivals (heap->lock) */
  uint64_t stw_started;        /* (lock) sections started */
  uint64_t last_collect_epoch; /* (lock) epoch of the last collecting one */
  uint64_t last_compact_epoch; /* (lock) epoch of the last compacting one */
  ph_stw stw;
  /* barrier.helpers: cfg.gc_helpers threads, each a domain outside the
   * slots; they sleep on helper_cond (with lock) between sections. */
  struct ph_domain **helpers;
  pthread_t *helper_threads;
  void **helper_stacks; /* mapped by us (ph_os_stack_map), unmapped at stop */
  unsigned nhelpers;    /* started */
  int helpers_stop;     /* (lock) destroy asks them to leave */
  pthread_cond_t helper_cond;
  /* Set by the layer above at creation (gc.final): called on a domain's
   * thread after its ph_safepoint joined a section, outside it. */
  void (*after_join)(struct ph_domain *d);
} ph_sync;

/* The barrier layer's state of a domain (d->sync); its state (PH_DS_*)
 * stays in struct ph_domain, where the allocation fast path reads it
 * (heap.state). */
typedef struct ph_domain_sync {
  /* (lock) epoch of the section that counts on us, 0 if none; written
   * under heap->lock, atomic so that the owner may test it for 0 without
   * the lock (barrier.stw.left) */
  _Atomic uint64_t stw_expected;
} ph_domain_sync;

/* barrier/stw.c */
/* Run (or join, and coalesce with) a stop-the-world section of the given
 * kind whose participants run body; arg is kept for the body of a section
 * d leads (VERIFY and CENSUS sections are always led by their caller). */
int ph_stw_run(struct ph_domain *d, int kind, ph_stw_prepare prepare,
               ph_stw_body body, const void *arg);
void ph_stw_join(struct ph_domain *d);
int ph_stw_helpers_start(struct ph_heap *h);
void ph_stw_helpers_stop(struct ph_heap *h);
/* barrier.reentry: the heap whose section the calling thread takes part in
 * (NULL outside sections).  Every embedder callback (census fn, on_event,
 * scan_roots) runs inside a section, so a public entry point that finds it
 * set was called from a callback and refuses (PH_ESTATE).  initial-exec:
 * one %fs-relative load, also in libpoolheap.so. */
extern _Thread_local struct ph_heap *ph_tls_section
    __attribute__((tls_model("initial-exec")));
static inline int ph_in_section(void) {
  return ph_tls_section != NULL;
}
/* The checks a public call on a domain starts with, other than ph_alloc
 * (whose fast path leaves barrier.reentry to its slow path): the owner check
 * (domain.owner; a detached handle records the error, ph_domain_note_error),
 * then barrier.reentry.  PH_OK, or the error to return. */
static inline int ph_domain_enter(struct ph_domain *d) {
  int err = ph_check_domain(d);
  if (err != PH_OK) {
    ph_domain_note_error(d, err);
    return err;
  }
  return ph_in_section() ? PH_ESTATE : PH_OK;
}
/* ph_safepoint for a domain already checked by its owner: one load when
 * nothing is pending (relaxed; ph_stw_join re-reads under the lock).
 * barrier.reentry on the slow path only: PH_ESTATE from inside a callback
 * (its section is pending), and nothing joined. */
static inline int ph_safepoint_owner(struct ph_domain *d) {
  if (__builtin_expect(
          atomic_load_explicit(&d->heap->stw_pending, memory_order_relaxed),
          0)) {
    if (ph_in_section())
      return PH_ESTATE;
    ph_stw_join(d);
  }
  return PH_OK;
}

#endif
