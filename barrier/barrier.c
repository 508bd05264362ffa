/* barrier/barrier.c -- a reusable barrier for the participants of a
 * stop-the-world section (DESIGN.md: barrier.sense).
 *
 * Mutex + condition variable with a generation counter: correct with more
 * domains than cores (waiters sleep instead of spinning), and every write
 * made before ph_barrier_wait happens-before every read made after it in any
 * participant (the mutex orders them), which is what the phases rely on. */
#include "barrier/barrier.h"

/* barrier.sense.spin: the bounds of a waiter's spin; the maximum is a
 * variable only so that a test can set it (0: never spin) before
 * ph_barrier_init */
uint32_t ph_barrier_spin_max_ns = 50000;
#define PH_BARRIER_SPIN_MIN_NS 1000u

void ph_barrier_init(ph_barrier *b) {
  pthread_mutex_init(&b->m, NULL);
  pthread_cond_init(&b->c, NULL);
  b->n = 1;
  b->waiting = 0;
  b->sleepers = 0;
  b->slept = 0;
  atomic_init(&b->spin_ns, ph_barrier_spin_max_ns);
  atomic_init(&b->gen, 0);
}

void ph_barrier_destroy(ph_barrier *b) {
  pthread_mutex_destroy(&b->m);
  pthread_cond_destroy(&b->c);
}

/* Only while nobody waits (between sections). */
void ph_barrier_reset(ph_barrier *b, unsigned n) {
  pthread_mutex_lock(&b->m);
  PH_ASSERT(b->waiting == 0);
  b->n = n;
  pthread_mutex_unlock(&b->m);
}

/* barrier.sense.spin: a waiter spins up to spin_ns before it sleeps, not
 * at all with more participants than online CPUs (the one it waits for may
 * need this CPU).  spin_ns adapts: doubled (up to the maximum) when a spin
 * saw the round end, halved (down to the minimum) when it gave up, so on a
 * machine whose CPUs are busy with other work the waits soon sleep at once
 * (the others are not running), and on an idle one they rarely sleep. */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield" ::: "memory");
#endif
}

/* Spin until *word differs from old or about limit ns pass; 1 if it
 * moved.  Acquire: pairs with the writer's release store. */
static int spin_for(_Atomic uint64_t *word, uint64_t old, uint32_t limit) {
  uint64_t t0 = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(word, memory_order_acquire) != old)
      return 1;
    cpu_relax();
    if ((i & 15) == 0) {
      uint64_t t = ph_now_ns();
      if (t0 == 0)
        t0 = t;
      else if (t - t0 > limit)
        return 0;
    }
  }
}

int ph_spin_wait(_Atomic uint64_t *word, uint64_t old, unsigned nthreads,
                 _Atomic uint32_t *spin_ns) {
  /* relaxed: a heuristic; a stale value only spins longer or shorter */
  uint32_t lim = atomic_load_explicit(spin_ns, memory_order_relaxed);
  if (!lim || nthreads > ph_os_ncpus())
    return 0;
  int ok = spin_for(word, old, lim);
  uint32_t max = ph_barrier_spin_max_ns;
  uint32_t min = max < PH_BARRIER_SPIN_MIN_NS ? max : PH_BARRIER_SPIN_MIN_NS;
  uint32_t next =
      ok ? (lim < max / 2 ? 2 * lim : max) : (lim / 2 > min ? lim / 2 : min);
  atomic_store_explicit(spin_ns, next, memory_order_relaxed);
  return ok;
}

int ph_barrier_wait(ph_barrier *b) {
  return ph_barrier_wait_single(b, NULL, NULL);
}

int ph_barrier_wait_single(ph_barrier *b, void (*fn)(void *), void *arg) {
  pthread_mutex_lock(&b->m);
  /* relaxed: gen changes only under m */
  uint64_t gen = atomic_load_explicit(&b->gen, memory_order_relaxed);
  if (++b->waiting == b->n) {
    /* barrier.sense.single: the others are held until fn returns (all n
     * are in this round, so nobody else takes m meanwhile but a spinner
     * going to sleep); m is not held, so fn may take other locks */
    if (fn) {
      pthread_mutex_unlock(&b->m);
      fn(arg);
      pthread_mutex_lock(&b->m);
    }
    b->waiting = 0;
    /* release: for the spinners (spin_for) */
    atomic_store_explicit(&b->gen, gen + 1, memory_order_release);
    if (b->sleepers)
      pthread_cond_broadcast(&b->c);
    pthread_mutex_unlock(&b->m);
    return 1;
  }
  if (b->n <= ph_os_ncpus() &&
      atomic_load_explicit(&b->spin_ns, memory_order_relaxed)) {
    pthread_mutex_unlock(&b->m);
    /* the last arriver's release store of gen comes after it took m,
     * itself after every other arriver released m: every write made
     * before any participant's wait is visible */
    if (ph_spin_wait(&b->gen, gen, b->n, &b->spin_ns))
      return 0;
    pthread_mutex_lock(&b->m);
  }
  b->sleepers++;
  b->slept++;
  while (atomic_load_explicit(&b->gen, memory_order_relaxed) == gen)
    pthread_cond_wait(&b->c, &b->m);
  b->sleepers--;
  pthread_mutex_unlock(&b->m);
  return 0;
}
