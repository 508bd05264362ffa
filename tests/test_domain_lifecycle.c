/* tests/test_domain_lifecycle.c -- domains that come and go (issue 13,
 * items 6 and 9e; DESIGN.md heap.domain).
 *
 * - churn: attach/detach cycles on one thread, and short-lived threads that
 *   each attach, allocate and detach, keep memory bounded: detached handles
 *   are recycled (resident growth per cycle, distinct handles seen).
 * - a stale handle whose memory now serves another thread's domain gets
 *   PH_ESTATE from every call and leaves that domain untouched.
 * - a thread that exits without ph_domain_detach is detached at its exit:
 *   later collections complete (a watchdog turns a hang into a failure),
 *   and the heap can be destroyed.
 * Nothing here is random.  Thread counts and cycles scale down under TSan.
 */
#include "test_util.h"

#include "api/api.h" /* PH_RETIRED_KEEP */

#include <signal.h>

static void watchdog_fired(int sig) {
  (void)sig;
  static const char msg[] =
      "domain_lifecycle: watchdog: a collection or detach hangs\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
  _exit(3);
}

static void watchdog(unsigned seconds) {
  signal(SIGALRM, watchdog_fired);
  alarm(seconds);
}

static void verify_ok(ph_domain *d) {
  char why[256];
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("heap broken: %s", why);
}

/* ------------------------------------------------------------- churn */

/* Collect, compact and give every free pool back (nothing is rooted). */
static void release_heap(ph_heap *h) {
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
}

/* One cycle: attach, allocate a rooted block and a garbage one, detach. */
static ph_domain *cycle(ph_heap *h) {
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  ph_value v = ph_alloc(d, 4, 0);
  assert_true(v != 0);
  assert_non_null(ph_root(d, v));
  assert_true(ph_alloc(d, 20, PH_TAG_RAW) != 0);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return d;
}

static void test_churn_one_thread(void **state) {
  (void)state;
  const size_t n = tu_scale(200000, 10), warm = 2000;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(NULL, &h), PH_OK);
  ph_domain *first = NULL;
  for (size_t i = 0; i < warm; i++) {
    ph_domain *d = cycle(h);
    if (!first)
      first = d;
  }
  tu_set handles = {0};
  /* The cycles' garbage fills the heap up to its pacing threshold (4 MiB)
   * between collections: measure both ends with that memory given back, so
   * what is left is what the cycles themselves keep. */
  release_heap(h);
  long kb0 = tu_vmrss_kb();
  size_t seen_first = 0;
  for (size_t i = 0; i < n; i++) {
    ph_domain *d = cycle(h);
    seen_first += d == first;
    tu_set_add(&handles, (ph_value)d);
  }
  release_heap(h);
  long kb1 = tu_vmrss_kb();
  assert_true(kb0 > 0 && kb1 > 0);
  double per_cycle = (double)(kb1 - kb0) * 1024.0 / (double)n;
  print_message("churn: %zu attach/detach cycles on one thread: RSS %+ld KiB "
                "(%.1f bytes/cycle%s); %zu distinct handles, the first came "
                "back %zu times\n",
                n, kb1 - kb0, per_cycle,
                TU_ASAN   ? ", not checked: ASan's quarantine holds freed root "
                            "segments"
                : TU_TSAN ? ", not checked: TSan keeps the shadow of pages the "
                            "heap gave back"
                          : "",
                handles.n, seen_first);
  /* 50 MB per 200,000 cycles: 262 bytes a cycle.  An unrecycled handle
   * costs more than 1.6 KB. */
  if (!TU_ASAN && !TU_TSAN)
    assert_true(per_cycle < 50e6 / 200000);
  assert_true(handles.n <= PH_RETIRED_KEEP + 1);
  assert_true(seen_first > 0);
  tu_set_free(&handles);
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  verify_ok(d);
  ph_stats st;
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  assert_int_equal(st.domains, 1);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* Short-lived threads, a few at a time, each one domain. */
typedef struct churn_ctx {
  ph_heap *h;
  pthread_mutex_t lock;
  tu_set handles; /* (lock) */
} churn_ctx;

static void *churn_thread(void *arg) {
  tu_thread_arg *a = arg;
  churn_ctx *c = a->user;
  ph_domain *d = cycle(c->h);
  pthread_mutex_lock(&c->lock);
  tu_set_add(&c->handles, (ph_value)d);
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

static void test_churn_threads(void **state) {
  (void)state;
  const unsigned rounds = (unsigned)tu_scale(1000, 10), width = 3;
  churn_ctx c;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  assert_int_equal(ph_heap_create(NULL, &c.h), PH_OK);
  ph_domain *main_d = NULL;
  assert_int_equal(ph_domain_attach(c.h, &main_d), PH_OK);
  ph_blocking_enter(main_d); /* the threads collect without us */
  for (unsigned r = 0; r < rounds; r++)
    tu_threads_run(width, churn_thread, &c);
  ph_blocking_leave(main_d);
  size_t distinct = c.handles.n;
  print_message("churn: %u short-lived threads (%u at a time): %zu distinct "
                "handles (bound %u)\n",
                rounds * width, width, distinct, PH_RETIRED_KEEP + 1 + width);
  /* every retired handle beyond PH_RETIRED_KEEP is recycled */
  assert_true(distinct <= PH_RETIRED_KEEP + 1 + width);
  verify_ok(main_d);
  ph_stats st;
  assert_int_equal(ph_stats_get(c.h, &st), PH_OK);
  assert_int_equal(st.domains, 1);
  assert_int_equal(ph_domain_detach(main_d), PH_OK);
  assert_int_equal(ph_heap_destroy(c.h), PH_OK);
  tu_set_free(&c.handles);
  pthread_mutex_destroy(&c.lock);
}

/* ----------------------------------------------------- stale handles */

typedef struct stale_ctx {
  ph_heap *h;
  ph_domain *stale; /* detached by another thread */
  size_t cycles;    /* attach/detach cycles until stale came back */
  int got_it;
  pthread_barrier_t ready, done;
  int last_error_after;
  int alloc_after;
} stale_ctx;

static void *detach_once(void *arg) {
  stale_ctx *s = arg;
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(s->h, &d), PH_OK);
  assert_true(ph_alloc(d, 3, 0) != 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  s->stale = d;
  return NULL;
}

/* Cycles until its attach returns the stale handle, keeps it, and lets the
 * main thread try the stale pointer while it waits in a blocking section. */
static void *reuser(void *arg) {
  stale_ctx *s = arg;
  ph_domain *d = NULL;
  for (s->cycles = 0; s->cycles < 100 * (size_t)PH_RETIRED_KEEP; s->cycles++) {
    assert_int_equal(ph_domain_attach(s->h, &d), PH_OK);
    if (d == s->stale)
      break;
    assert_int_equal(ph_domain_detach(d), PH_OK);
    d = NULL;
  }
  s->got_it = d != NULL;
  if (s->got_it) {
    assert_true(ph_alloc(d, 5, 0) != 0);
    ph_blocking_enter(d);
  }
  pthread_barrier_wait(&s->ready);
  pthread_barrier_wait(&s->done);
  if (s->got_it) {
    ph_blocking_leave(d);
    s->last_error_after = ph_last_error(d);
    s->alloc_after = ph_alloc(d, 7, 0) != 0;
    verify_ok(d);
    assert_int_equal(ph_domain_detach(d), PH_OK);
  }
  return NULL;
}

static void census_noop(const ph_census_class *c, void *u) {
  (void)c;
  (void)u;
}

static void test_stale_handle_recycled(void **state) {
  (void)state;
  stale_ctx s;
  memset(&s, 0, sizeof s);
  assert_int_equal(ph_heap_create(NULL, &s.h), PH_OK);
  pthread_barrier_init(&s.ready, NULL, 2);
  pthread_barrier_init(&s.done, NULL, 2);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, detach_once, &s), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  ph_domain *h = s.stale;
  /* not yet reused: PH_ESTATE, and the handle records it */
  assert_true(ph_alloc(h, 1, 0) == 0);
  assert_int_equal(ph_last_error(h), PH_ESTATE);

  assert_int_equal(pthread_create(&t, NULL, reuser, &s), 0);
  pthread_barrier_wait(&s.ready);
  print_message("stale: handle reused after %zu attach/detach cycles\n",
                s.cycles);
  if (s.got_it) {
    /* h is now another thread's live domain: every call from here is
     * refused, and none of them touches that domain. */
    unsigned idx = ph_domain_index(h);
    assert_true(idx < 64);
    assert_ptr_equal(ph_domain_heap(h), s.h);
    assert_true(ph_alloc(h, 1, 0) == 0);
    assert_true(ph_alloc(h, 100000, 0) == 0);
    assert_int_equal(ph_collect(h), PH_ESTATE);
    assert_int_equal(ph_compact(h), PH_ESTATE);
    assert_int_equal(ph_verify(h, NULL, 0), PH_ESTATE);
    assert_int_equal(ph_census(h, census_noop, NULL), PH_ESTATE);
    assert_true(ph_scope_open(h) == (size_t)-1);
    assert_null(ph_root(h, PH_UNIT));
    assert_int_equal(ph_scope_close(h, 0), PH_ESTATE);
    ph_safepoint(h);
    ph_blocking_leave(h); /* would let it run while it blocks */
    ph_blocking_enter(h);
    assert_int_equal(ph_domain_detach(h), PH_ESTATE);
    assert_int_equal(ph_domain_index(h), idx);
  }
  pthread_barrier_wait(&s.done);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_true(s.got_it); /* the handle was recycled */
  assert_int_equal(s.last_error_after, PH_OK);
  assert_true(s.alloc_after);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  pthread_barrier_destroy(&s.ready);
  pthread_barrier_destroy(&s.done);
}

/* Stale calls racing with the recycling of the same handles: one thread
 * churns attach/detach on a small heap (its handles cycle through the
 * retired list), another calls every function on handles it saw detached.
 * Each stale call must be refused, the churning domain must never see an
 * error it did not cause, and TSan must see no race. */
typedef struct race_ctx {
  ph_heap *h;
  _Atomic(ph_domain *) seen[PH_RETIRED_KEEP + 4];
  _Atomic int stop;
  size_t cycles, stale_calls, accepted, foreign_errors;
} race_ctx;

static void *race_churn(void *arg) {
  race_ctx *c = arg;
  const size_t n = tu_scale(20000, 10);
  for (size_t i = 0; i < n; i++) {
    ph_domain *d = NULL;
    assert_int_equal(ph_domain_attach(c->h, &d), PH_OK);
    assert_true(ph_alloc(d, 2, 0) != 0);
    size_t m = ph_scope_open(d);
    assert_non_null(ph_root(d, PH_UNIT));
    assert_int_equal(ph_scope_close(d, m), PH_OK);
    ph_safepoint(d);
    if (ph_last_error(d) != PH_OK)
      c->foreign_errors++;
    assert_int_equal(ph_domain_detach(d), PH_OK);
    atomic_store(&c->seen[i % (PH_RETIRED_KEEP + 4)], d);
  }
  c->cycles = n;
  atomic_store(&c->stop, 1);
  return NULL;
}

static void *race_stale(void *arg) {
  race_ctx *c = arg;
  size_t k = 0;
  while (!atomic_load(&c->stop)) {
    ph_domain *d = atomic_load(&c->seen[k++ % (PH_RETIRED_KEEP + 4)]);
    if (!d)
      continue;
    c->stale_calls++;
    c->accepted += ph_alloc(d, 1, 0) != 0;
    c->accepted += ph_collect(d) != PH_ESTATE;
    c->accepted += ph_scope_open(d) != (size_t)-1;
    c->accepted += ph_root(d, PH_UNIT) != NULL;
    c->accepted += ph_scope_close(d, 0) != PH_ESTATE;
    c->accepted += ph_domain_detach(d) != PH_ESTATE;
    ph_safepoint(d);
    ph_blocking_enter(d);
    ph_blocking_leave(d);
    (void)ph_last_error(d);
    (void)ph_domain_index(d);
    c->accepted += ph_domain_heap(d) != c->h;
  }
  return NULL;
}

static void test_stale_race(void **state) {
  (void)state;
  race_ctx c;
  memset(&c, 0, sizeof c);
  assert_int_equal(ph_heap_create(NULL, &c.h), PH_OK);
  pthread_t a, b;
  assert_int_equal(pthread_create(&a, NULL, race_stale, &c), 0);
  assert_int_equal(pthread_create(&b, NULL, race_churn, &c), 0);
  assert_int_equal(pthread_join(b, NULL), 0);
  assert_int_equal(pthread_join(a, NULL), 0);
  print_message("stale race: %zu cycles, %zu rounds of stale calls, %zu "
                "accepted, %zu errors seen by the live domain\n",
                c.cycles, c.stale_calls, c.accepted, c.foreign_errors);
  assert_int_equal(c.accepted, 0);
  assert_int_equal(c.foreign_errors, 0);
  assert_int_equal(ph_heap_destroy(c.h), PH_OK);
}

/* ------------------------------------------- threads that do not detach */

typedef struct exit_ctx {
  ph_heap *h;
  ph_domain *d; /* the exiting thread's domain */
  pthread_barrier_t attached;
  int how; /* 0 idle, 1 in a blocking section, 2 running (no safepoint) */
} exit_ctx;

static ph_value exit_global;

static void *exit_without_detach(void *arg) {
  exit_ctx *c = arg;
  assert_int_equal(ph_domain_attach(c->h, &c->d), PH_OK);
  size_t m = ph_scope_open(c->d);
  (void)m; /* left open: the scope dies with the domain */
  for (int i = 0; i < 1000; i++)
    assert_non_null(ph_root(c->d, ph_alloc(c->d, 2, 0)));
  exit_global = ph_alloc(c->d, 3, 0); /* survives through a global root */
  assert_true(exit_global != 0);
  if (c->how == 1)
    ph_blocking_enter(c->d);
  pthread_barrier_wait(&c->attached);
  if (c->how == 2) /* the collection below is elected while we run */
    usleep(20000);
  return NULL; /* no ph_domain_detach */
}

static void run_exit_case(int how) {
  exit_ctx c;
  memset(&c, 0, sizeof c);
  c.how = how;
  assert_int_equal(ph_heap_create(NULL, &c.h), PH_OK);
  assert_int_equal(ph_root_add(c.h, &exit_global), PH_OK);
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(c.h, &d), PH_OK);
  pthread_barrier_init(&c.attached, NULL, 2);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, exit_without_detach, &c), 0);
  tu_dbarrier(d, &c.attached);
  if (how != 2)
    tu_djoin(d, t);
  watchdog(60);
  assert_int_equal(ph_collect(d), PH_OK);
  if (how == 2)
    tu_djoin(d, t);
  assert_int_equal(ph_compact(d), PH_OK);
  alarm(0);
  ph_stats st;
  assert_int_equal(ph_stats_get(c.h, &st), PH_OK);
  assert_int_equal(st.domains, 1);
  assert_int_equal(ph_tag(exit_global), 0);
  assert_int_equal(ph_wosize(exit_global), 3);
  verify_ok(d);
  /* the dead thread's handle is detached */
  assert_int_equal(ph_domain_index(c.d), (unsigned)-1);
  assert_int_equal(ph_domain_detach(c.d), PH_ESTATE);
  print_message("exit (%s): collection completed, %" PRIu64
                " live blocks, domains %" PRIu64 "\n",
                how == 0   ? "idle"
                : how == 1 ? "blocking"
                           : "running",
                st.live_blocks, st.domains);
  assert_int_equal(ph_root_remove(c.h, &exit_global), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(c.h), PH_OK);
  pthread_barrier_destroy(&c.attached);
}

static void test_exit_idle(void **state) {
  (void)state;
  run_exit_case(0);
}
static void test_exit_blocking(void **state) {
  (void)state;
  run_exit_case(1);
}
static void test_exit_while_collecting(void **state) {
  (void)state;
  run_exit_case(2);
}

/* ------------------------------------------------- left the section */
/* barrier.stw.left: a domain that has left a section allocates without
 * heap->lock while another participant is still in it.  The leader (B)
 * holds the section open in its on_event (its end of PH_PHASE_STW); the
 * joiner (the test's thread) has left it; a third thread holds heap->lock
 * while the joiner allocates from a pool with room (no refill under the
 * lock).  Before, every ph_alloc of the joiner took heap->lock until the
 * last participant left: it waited for the third thread, which gives up
 * after 2 s. */
static struct {
  ph_heap *h;
  _Atomic unsigned leader; /* B's domain index, or -1 */
  _Atomic int hold, inside, done, locked, allocated, seen;
} left;

static void left_on_event(ph_phase phase, int begin, unsigned domain,
                          uint64_t time_ns, void *user) {
  (void)time_ns;
  (void)user;
  if (phase != PH_PHASE_STW || begin || domain != atomic_load(&left.leader) ||
      !atomic_load(&left.hold))
    return;
  atomic_store(&left.inside, 1);
  while (atomic_load(&left.hold))
    usleep(1000);
}

static void *left_leader(void *arg) {
  (void)arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(left.h, &d), PH_OK);
  atomic_store(&left.leader, ph_domain_index(d));
  assert_int_equal(ph_collect(d), PH_OK);
  atomic_store(&left.done, 1);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void *left_locker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&left.h->lock);
  atomic_store(&left.locked, 1);
  for (int k = 0; k < 2000 && !atomic_load(&left.allocated); k++)
    usleep(1000);
  atomic_store(&left.seen, atomic_load(&left.allocated));
  pthread_mutex_unlock(&left.h->lock);
  return NULL;
}

static void test_alloc_after_leaving_section(void **state) {
  (void)state;
  watchdog(60);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.on_event = left_on_event;
  memset(&left, 0, sizeof left);
  atomic_store(&left.leader, (unsigned)-1);
  assert_int_equal(ph_heap_create(&cfg, &left.h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(left.h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  /* one survivor: its pool has room after the sweep (on the avail list) */
  ph_root(d, ph_alloc(d, 4, 0));
  atomic_store(&left.hold, 1);
  pthread_t b, c;
  assert_int_equal(pthread_create(&b, NULL, left_leader, NULL), 0);
  /* join B's section at a safepoint; return once B holds it open */
  while (!atomic_load(&left.inside))
    ph_safepoint(d);
  assert_int_equal(atomic_load(&left.done), 0);
  assert_true(atomic_load(&left.h->stw_pending));
  assert_int_equal(pthread_create(&c, NULL, left_locker, NULL), 0);
  while (!atomic_load(&left.locked))
    usleep(100);
  ph_value v = ph_alloc(d, 4, 0);
  atomic_store(&left.allocated, 1);
  assert_int_equal(pthread_join(c, NULL), 0);
  atomic_store(&left.hold, 0);
  tu_djoin(d, b);
  assert_true(ph_is_block(v));
  if (!atomic_load(&left.seen))
    fail_msg("ph_alloc after leaving a section waited for heap->lock");
  ph_scope_close(d, m);
  verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(left.h), PH_OK);
  alarm(0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_churn_one_thread),
      cmocka_unit_test(test_churn_threads),
      cmocka_unit_test(test_stale_handle_recycled),
      cmocka_unit_test(test_stale_race),
      cmocka_unit_test(test_exit_idle),
      cmocka_unit_test(test_exit_blocking),
      cmocka_unit_test(test_exit_while_collecting),
      cmocka_unit_test(test_alloc_after_leaving_section),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
