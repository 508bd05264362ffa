/* tests/test_final.c -- finalisers (DESIGN.md: gc.final).
 *
 * FIRST runs once, after the value became unreachable, keeps it alive and
 * lets it be resurrected; weak fields and ephemeron keys are cleared before
 * it runs and stay cleared; LAST runs with 0 after FIRST; finalisers may
 * allocate and register; they run outside sections, on the registering
 * domain (another after its detach), at the run points; compaction
 * forwards registered values; bad input changes nothing. */
#include "test_util.h"

static ph_value node(ph_domain *d, intptr_t id, size_t edges) {
  ph_value v = ph_alloc(d, 1 + edges, 0);
  assert_true(v != 0);
  ph_set_field(v, 0, ph_val_int(id));
  return v;
}

static ph_stats stats(ph_heap *h) {
  ph_stats s;
  assert_int_equal(ph_stats_get(h, &s), PH_OK);
  return s;
}

/* ----------------------------------------------------------- recorder */
#define MAXLOG 100000
typedef struct rec {
  ph_heap *h;
  size_t n;
  intptr_t id[MAXLOG]; /* the value's id, or -1 for 0 (LAST) */
  int kind[MAXLOG];    /* 0 FIRST, 1 LAST (from user) */
  int in_section_refused;
  pthread_t thread[MAXLOG];
  ph_value *resurrect; /* a global root slot, or NULL */
  ph_value *watch;     /* a weak block / ephemeron to look at, or NULL */
  ph_value watch_seen[MAXLOG];
} rec;
static rec R;

static void on_final(ph_domain *d, ph_value v, void *user) {
  (void)d;
  size_t i = R.n++;
  assert_true(i < MAXLOG);
  R.kind[i] = (int)(intptr_t)user;
  R.id[i] = v ? ph_int_val(ph_field(v, 0)) : -1;
  R.thread[i] = pthread_self();
  /* never inside a section: ph_stats_get is refused there */
  ph_stats s;
  if (ph_stats_get(R.h, &s) != PH_OK)
    R.in_section_refused++;
  R.watch_seen[i] = R.watch && *R.watch ? ph_field(*R.watch, 0) : 1;
  if (R.resurrect && v)
    *R.resurrect = v;
}

static void rec_reset(ph_heap *h) {
  memset(&R, 0, sizeof R);
  R.h = h;
}

#define FIRST_ ((void *)(intptr_t)0)
#define LAST_ ((void *)(intptr_t)1)

/* ---------------------------------------------------------------- tests */

static void test_first_runs_once_when_unreachable(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  rec_reset(e.h);
  size_t m = ph_scope_open(e.d);
  ph_value *x = ph_root(e.d, node(e.d, 11, 1));
  ph_set_field(*x, 1, node(e.d, 12, 0)); /* kept alive with x */
  assert_int_equal(ph_finalise(e.d, *x, on_final, FIRST_, PH_FINAL_FIRST),
                   PH_OK);
  for (int k = 0; k < 2; k++)
    assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, 0); /* reachable: not run */
  static ph_value keep;
  keep = 0;
  assert_int_equal(ph_root_add(e.h, &keep), PH_OK);
  R.resurrect = &keep;
  *x = PH_UNIT;
  assert_int_equal(ph_collect(e.d), PH_OK); /* a run point on return */
  assert_int_equal(R.n, 1);
  assert_int_equal(R.id[0], 11);
  assert_int_equal(R.in_section_refused, 0);
  assert_true(pthread_equal(R.thread[0], pthread_self()));
  assert_int_equal(stats(e.h).finalisers_run, 1);
  /* resurrected with what it reaches, and never run again */
  assert_true(keep != 0);
  assert_int_equal(ph_int_val(ph_field(ph_field(keep, 1), 0)), 12);
  tu_verify_ok(e.d);
  keep = 0;
  for (int k = 0; k < 3; k++)
    assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, 1);
  assert_int_equal(stats(e.h).live_blocks, 0);
  assert_int_equal(ph_root_remove(e.h, &keep), PH_OK);
  ph_scope_close(e.d, m);
  tu_env_close(&e);
}

/* The weak field and the ephemeron key are cleared before FIRST sees the
 * value, and resurrection does not restore them; LAST runs after FIRST,
 * with 0, whatever the order of registration. */
static void test_weak_cleared_first_then_last(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 2);
  rec_reset(e.h);
  static ph_value w, eph, keep;
  w = eph = keep = 0;
  assert_int_equal(ph_root_add(e.h, &w), PH_OK);
  assert_int_equal(ph_root_add(e.h, &eph), PH_OK);
  assert_int_equal(ph_root_add(e.h, &keep), PH_OK);
  w = ph_alloc_weak(e.d, 1);
  eph = ph_alloc_ephemeron(e.d, 1);
  ph_value x = node(e.d, 5, 0);
  ph_set_field(w, 0, x);
  ph_set_field(eph, 0, x);
  ph_set_field(eph, 1, node(e.d, 6, 0));
  assert_int_equal(ph_finalise(e.d, x, on_final, LAST_, PH_FINAL_LAST), PH_OK);
  assert_int_equal(ph_finalise(e.d, x, on_final, FIRST_, PH_FINAL_FIRST),
                   PH_OK);
  R.watch = &w;
  R.resurrect = &keep;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, 1);
  assert_int_equal(R.kind[0], 0);
  assert_int_equal(R.id[0], 5);
  assert_true(R.watch_seen[0] == 0); /* cleared before FIRST saw it */
  assert_true(ph_field(eph, 0) == 0 && ph_field(eph, 1) == 0);
  assert_true(keep != 0); /* resurrected, but the weak field stays 0 */
  R.resurrect = NULL;
  ph_set_field(w, 0, keep); /* a new weak reference to it */
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, 1); /* reachable: LAST waits */
  assert_true(ph_field(w, 0) == keep);
  keep = 0;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, 2);
  assert_int_equal(R.kind[1], 1);
  assert_int_equal(R.id[1], -1);     /* LAST gets 0 */
  assert_true(R.watch_seen[1] == 0); /* the weak field was cleared */
  assert_int_equal(stats(e.h).finalisers_run, 2);
  assert_int_equal(ph_root_remove(e.h, &w), PH_OK);
  assert_int_equal(ph_root_remove(e.h, &eph), PH_OK);
  assert_int_equal(ph_root_remove(e.h, &keep), PH_OK);
  tu_env_close(&e);
}

/* a finaliser that allocates (enough to collect) and registers another */
static int chain_left;
static void on_chain(ph_domain *d, ph_value v, void *user) {
  (void)user;
  size_t m = ph_scope_open(d);
  ph_value *s = ph_root(d, v);
  for (int i = 0; i < 2000; i++)
    assert_true(ph_alloc(d, 8, 0) != 0);
  assert_int_equal(ph_collect(d), PH_OK); /* nested run point: no re-entry */
  assert_int_equal(ph_int_val(ph_field(*s, 0)), chain_left);
  ph_scope_close(d, m);
  if (chain_left-- > 0) {
    ph_value n = node(d, chain_left, 0);
    assert_int_equal(ph_finalise(d, n, on_chain, NULL, PH_FINAL_FIRST), PH_OK);
  }
}

static void test_finaliser_allocates_and_registers(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  chain_left = 5;
  ph_value x = node(e.d, 5, 0);
  assert_int_equal(ph_finalise(e.d, x, on_chain, NULL, PH_FINAL_FIRST), PH_OK);
  for (int k = 0; k < 10 && chain_left >= 0; k++)
    assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(chain_left, -1);
  assert_int_equal(stats(e.h).finalisers_run, 6);
  tu_env_close(&e);
}

/* registered values move with compaction; each finaliser gets its own */
static void test_compaction_forwards_registered(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 1);
  rec_reset(e.h);
  const size_t n = tu_scale(20000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = node(e.d, (intptr_t)i, 0);
    if (i % 10 == 0) {
      ph_set_field(*arr, i, x);
      assert_int_equal(ph_finalise(e.d, x, on_final, FIRST_, PH_FINAL_FIRST),
                       PH_OK);
    }
  }
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_true(stats(e.h).evacuated_blocks > 0);
  assert_int_equal(R.n, 0);
  tu_verify_ok(e.d);
  for (size_t i = 0; i < n; i += 20)
    ph_set_field(*arr, i, PH_UNIT); /* half of them die */
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(R.n, (n + 19) / 20);
  for (size_t k = 0; k < R.n; k++)
    assert_int_equal(R.id[k] % 20, 0);
  ph_scope_close(e.d, m);
  tu_env_close(&e);
}

static void test_finalise_bad_input(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  rec_reset(e.h);
  size_t m = ph_scope_open(e.d);
  ph_value *x = ph_root(e.d, node(e.d, 1, 3));
  ph_value *y = ph_root(e.d, node(e.d, 2, 0));
  ph_value freed = node(e.d, 3, 0); /* dies at the collection below */
  assert_int_equal(ph_collect(e.d), PH_OK);
  ph_stats s0 = stats(e.h);
  ph_value bad[] = {0,     ph_val_int(7), *x + 8, *x - 8,
                    freed, (ph_value)&R,  *x + 4};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(ph_finalise(e.d, bad[i], on_final, FIRST_, PH_FINAL_FIRST),
                     PH_EINVAL);
    assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  }
  assert_int_equal(ph_finalise(e.d, *x, NULL, FIRST_, PH_FINAL_FIRST),
                   PH_EINVAL);
  assert_int_equal(ph_finalise(e.d, *x, on_final, FIRST_, (ph_final_when)7),
                   PH_EINVAL);
  assert_int_equal(ph_finalise(NULL, *x, on_final, FIRST_, PH_FINAL_FIRST),
                   PH_EINVAL);
  ph_blocking_enter(e.d);
  assert_int_equal(ph_finalise(e.d, *y, on_final, FIRST_, PH_FINAL_FIRST),
                   PH_ESTATE);
  assert_int_equal(ph_run_finalisers(e.d), PH_ESTATE);
  ph_blocking_leave(e.d);
  /* nothing was registered: dropping them runs nothing */
  *x = *y = PH_UNIT;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(R.n, 0);
  ph_stats s1 = stats(e.h);
  assert_int_equal(s1.finalisers_run, s0.finalisers_run);
  ph_scope_close(e.d, m);
  tu_env_close(&e);
}

/* ------------------------------------------------ two domains, threads */

typedef struct two {
  ph_heap *h;
  pthread_barrier_t bar;
  pthread_t a_thread;
  int a_detach; /* A detaches before B collects */
  ph_domain *b;
} two;

static void tb_wait(ph_domain *d, pthread_barrier_t *b) {
  if (d)
    ph_blocking_enter(d);
  pthread_barrier_wait(b);
  if (d)
    ph_blocking_leave(d);
}

static void *domain_a(void *arg) {
  two *t = arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(t->h, &d), PH_OK);
  for (int i = 0; i < 10; i++)
    assert_int_equal(
        ph_finalise(d, node(d, i, 0), on_final, FIRST_, PH_FINAL_FIRST), PH_OK);
  if (t->a_detach) {
    assert_int_equal(ph_domain_detach(d), PH_OK);
    tb_wait(NULL, &t->bar); /* 1: registered and gone */
    tb_wait(NULL, &t->bar); /* 2: B collected */
    return NULL;
  }
  tb_wait(d, &t->bar); /* 1: registered */
  tb_wait(d, &t->bar); /* 2: B collected (we were blocking) */
  /* ready for us, not run on B's thread; the allocation slow path runs
   * them (a large block always takes it) */
  assert_int_equal(R.n, 0);
  assert_true(ph_alloc(d, 100000, 0) != 0);
  assert_int_equal(R.n, 10);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void run_two(int a_detach) {
  two t = {.a_detach = a_detach};
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  assert_int_equal(ph_heap_create(&cfg, &t.h), PH_OK);
  rec_reset(t.h);
  pthread_barrier_init(&t.bar, NULL, 2);
  assert_int_equal(ph_domain_attach(t.h, &t.b), PH_OK);
  pthread_create(&t.a_thread, NULL, domain_a, &t);
  tb_wait(t.b, &t.bar); /* 1 */
  assert_int_equal(ph_collect(t.b), PH_OK);
  if (a_detach) {
    /* orphans: run by the collecting domain at once */
    assert_int_equal(R.n, 10);
    for (size_t i = 0; i < R.n; i++)
      assert_true(pthread_equal(R.thread[i], pthread_self()));
  } else {
    assert_int_equal(R.n, 0); /* A's, not ours */
    assert_int_equal(ph_run_finalisers(t.b), PH_OK);
    assert_int_equal(R.n, 0);
  }
  tb_wait(t.b, &t.bar); /* 2 */
  pthread_join(t.a_thread, NULL);
  if (!a_detach)
    for (size_t i = 0; i < R.n; i++)
      assert_true(pthread_equal(R.thread[i], t.a_thread));
  assert_int_equal(R.in_section_refused, 0);
  assert_int_equal(stats(t.h).finalisers_run, 10);
  assert_int_equal(ph_domain_detach(t.b), PH_OK);
  assert_int_equal(ph_heap_destroy(t.h), PH_OK);
  pthread_barrier_destroy(&t.bar);
}

static void test_runs_on_registering_domain(void **state) {
  (void)state;
  run_two(0);
}

static void test_orphans_run_on_another_domain(void **state) {
  (void)state;
  run_two(1);
}

/* The safepoint run point: A registers and polls ph_safepoint while B
 * collects; A joins the section at a safepoint and runs its own finalisers
 * right after it, on its thread (B's ph_collect does not run them). */
typedef struct sp_ctx {
  ph_heap *h;
  atomic_int registered, b_done;
  pthread_t a;
} sp_ctx;

static void *sp_domain_a(void *arg) {
  sp_ctx *c = arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(c->h, &d), PH_OK);
  for (int i = 0; i < 10; i++)
    assert_int_equal(
        ph_finalise(d, node(d, i, 0), on_final, FIRST_, PH_FINAL_FIRST), PH_OK);
  atomic_store(&c->registered, 1);
  /* only safepoints from here: no allocation, no ph_collect */
  while (R.n < 10 || !atomic_load(&c->b_done))
    ph_safepoint(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void test_runs_at_safepoint(void **state) {
  (void)state;
  sp_ctx c;
  memset(&c, 0, sizeof c);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  assert_int_equal(ph_heap_create(&cfg, &c.h), PH_OK);
  rec_reset(c.h);
  ph_domain *b;
  assert_int_equal(ph_domain_attach(c.h, &b), PH_OK);
  pthread_create(&c.a, NULL, sp_domain_a, &c);
  while (!atomic_load(&c.registered))
    ph_safepoint(b);
  assert_int_equal(ph_collect(b), PH_OK); /* A joins at a safepoint */
  atomic_store(&c.b_done, 1);
  ph_blocking_enter(b);
  pthread_join(c.a, NULL);
  ph_blocking_leave(b);
  assert_int_equal(R.n, 10);
  for (size_t i = 0; i < R.n; i++)
    assert_true(pthread_equal(R.thread[i], c.a));
  assert_int_equal(R.in_section_refused, 0);
  assert_int_equal(ph_domain_detach(b), PH_OK);
  assert_int_equal(ph_heap_destroy(c.h), PH_OK);
}

/* pending finalisers at destroy never run and leak nothing (ASan) */
static void test_pending_at_destroy(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  rec_reset(e.h);
  for (int i = 0; i < 100; i++)
    assert_int_equal(
        ph_finalise(e.d, node(e.d, i, 0), on_final, LAST_, PH_FINAL_LAST),
        PH_OK);
  ph_blocking_enter(e.d); /* no run point */
  ph_blocking_leave(e.d);
  assert_int_equal(ph_domain_detach(e.d), PH_OK);
  assert_int_equal(ph_heap_destroy(e.h), PH_OK);
  assert_int_equal(R.n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_runs_once_when_unreachable),
      cmocka_unit_test(test_weak_cleared_first_then_last),
      cmocka_unit_test(test_finaliser_allocates_and_registers),
      cmocka_unit_test(test_compaction_forwards_registered),
      cmocka_unit_test(test_finalise_bad_input),
      cmocka_unit_test(test_runs_on_registering_domain),
      cmocka_unit_test(test_orphans_run_on_another_domain),
      cmocka_unit_test(test_runs_at_safepoint),
      cmocka_unit_test(test_pending_at_destroy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
