/* tests/test_barrier.c -- the participants' barrier (barrier/barrier.c,
 * DESIGN.md: barrier.sense, barrier.sense.spin).
 *
 * - ordering: n threads (2, 3, then 8: more than this machine's CPUs, so
 *   the waits sleep without spinning) pass many rounds; in each, every
 *   thread writes its plain slot, waits, reads every slot (all must hold the
 *   round), waits again; exactly one wait per round returns 1.  Under TSan
 *   a wait that returned without ordering the others' writes is a race.
 * - single: ph_barrier_wait_single's function runs once per round, after
 *   every participant arrived and before any leaves, and its plain write
 *   is read by all of them after the wait (1, 2, 3 and 8 threads).
 * - spinning: two threads passing rounds back to back; with spinning off
 *   (ph_barrier_spin_max_ns 0) every wait but the last arriver's sleeps
 *   (counted in `slept`); with a spin bound of a second none does (a barrier
 *   that always sleeps fails here).  Skipped on a machine with one CPU (no
 *   spinning there by design).
 */
#include "test_util.h"

#include "barrier/barrier.h"

#include <unistd.h>

#define ROUNDS tu_scale(4000, 8)

typedef struct order_arg {
  ph_barrier bar;
  unsigned n, rounds;
  uint64_t slot[8]; /* plain: ordered by the barrier only */
  _Atomic unsigned ones;
} order_arg;

static void *order_thread(void *arg) {
  tu_thread_arg *ta = arg;
  order_arg *o = ta->user;
  for (uint64_t r = 1; r <= o->rounds; r++) {
    o->slot[ta->index] = r;
    if (ph_barrier_wait(&o->bar))
      atomic_fetch_add(&o->ones, 1);
    for (unsigned k = 0; k < o->n; k++)
      TU_CHECK(o->slot[k] == r);
    ph_barrier_wait(&o->bar); /* nobody writes round r + 1 before all read */
  }
  return NULL;
}

static void test_barrier_orders_writes(void **state) {
  (void)state;
  unsigned ns[] = {2, 3, 8};
  for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
    order_arg o = {.n = ns[i], .rounds = (unsigned)ROUNDS};
    ph_barrier_init(&o.bar);
    ph_barrier_reset(&o.bar, o.n);
    tu_threads_run(o.n, order_thread, &o);
    tu_assert_no_failures();
    assert_int_equal(atomic_load(&o.ones), ROUNDS);
    assert_int_equal(atomic_load(&o.bar.gen), 2 * ROUNDS);
    ph_barrier_destroy(&o.bar);
  }
}

/* 2 threads, rounds rounds (2 waits each): how many waits slept, with
 * barriers made under the spin bound max_ns */
static uint64_t slept_with(uint32_t max_ns, unsigned rounds) {
  uint32_t keep = ph_barrier_spin_max_ns;
  ph_barrier_spin_max_ns = max_ns;
  order_arg o = {.n = 2, .rounds = rounds};
  ph_barrier_init(&o.bar);
  ph_barrier_reset(&o.bar, 2);
  tu_threads_run(2, order_thread, &o);
  tu_assert_no_failures();
  pthread_mutex_lock(&o.bar.m);
  uint64_t slept = o.bar.slept;
  pthread_mutex_unlock(&o.bar.m);
  ph_barrier_destroy(&o.bar);
  ph_barrier_spin_max_ns = keep;
  printf("2 threads, spin up to %u ns: %llu of %u waits slept\n", max_ns,
         (unsigned long long)slept, 2 * rounds);
  return slept;
}

static void test_barrier_spins_before_sleeping(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    skip();
    return;
  }
  unsigned rounds = (unsigned)tu_scale(300, 3);
  /* no spin: every wait but the last arriver's sleeps */
  assert_int_equal(slept_with(0, rounds), 2 * rounds);
  /* a spin longer than any wait here (a second): the partner's arrival, or
   * the end of the round seen after a preemption, ends every wait */
  assert_int_equal(slept_with(1000000000u, rounds), 0);
}

/* barrier.sense.single: fn runs once per round, after every participant
 * arrived and before any leaves; its plain write is seen by all after. */
typedef struct single_arg {
  ph_barrier bar;
  unsigned n, rounds;
  _Atomic unsigned arrived;
  uint64_t value; /* plain: written by fn only */
  _Atomic unsigned runs;
} single_arg;

static void single_fn(void *arg) {
  single_arg *a = arg;
  unsigned runs = atomic_fetch_add(&a->runs, 1) + 1;
  TU_CHECK(atomic_load(&a->arrived) == runs * a->n);
  a->value = runs;
}

static void *single_thread(void *arg) {
  tu_thread_arg *ta = arg;
  single_arg *a = ta->user;
  for (unsigned r = 1; r <= a->rounds; r++) {
    atomic_fetch_add(&a->arrived, 1);
    ph_barrier_wait_single(&a->bar, single_fn, a);
    TU_CHECK(a->value == r);
    ph_barrier_wait(&a->bar); /* all read before the next fn writes */
  }
  return NULL;
}

static void test_barrier_single_runs_between(void **state) {
  (void)state;
  unsigned ns[] = {1, 2, 3, 8};
  for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
    single_arg a = {.n = ns[i], .rounds = (unsigned)tu_scale(2000, 8)};
    ph_barrier_init(&a.bar);
    ph_barrier_reset(&a.bar, a.n);
    tu_threads_run(a.n, single_thread, &a);
    tu_assert_no_failures();
    assert_int_equal(atomic_load(&a.runs), a.rounds);
    ph_barrier_destroy(&a.bar);
  }
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_barrier_orders_writes),
      cmocka_unit_test(test_barrier_spins_before_sleeping),
      cmocka_unit_test(test_barrier_single_runs_between),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
