/* tests/test_roots.c -- the three kinds of roots keep blocks alive, and
 * nothing else does: handle scopes (nested, and with more roots than one
 * segment holds), global roots registered from a thread that is not a
 * domain, and the embedder's scan_roots hook.  Every check of "what is
 * alive" is exact, against live_bytes. */
#include "test_util.h"

static ph_heap *h;
static ph_domain *d;

static int setup(void **state) {
  (void)state;
  h = tu_heap(0);
  return ph_domain_attach(h, &d) == PH_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  int r = ph_domain_detach(d);
  int r2 = ph_heap_destroy(h);
  return r == PH_OK && r2 == PH_OK ? 0 : -1;
}

/* A block of wosize 3 holding i in field 0, plus garbage around it. */
static ph_value cell(intptr_t i) {
  for (int k = 0; k < 3; k++) /* garbage: unreachable */
    assert_true(ph_is_block(ph_alloc(d, 1 + (size_t)k * 5, k ? 0 : 252)));
  ph_value v = ph_alloc(d, 3, 0);
  assert_true(ph_is_block(v));
  ph_set_field(v, 0, ph_val_int(i));
  return v;
}

static uint64_t live(void) {
  assert_int_equal(ph_collect(d), PH_OK);
  return tu_stats(h).live_bytes;
}

static void test_scope_roots_keep_alive_rest_dies(void **state) {
  (void)state;
  size_t m = ph_scope_open(d);
  ph_value *s[100];
  for (int i = 0; i < 100; i++) {
    s[i] = ph_root(d, PH_UNIT);
    assert_non_null(s[i]);
    *s[i] = cell(i);
  }
  /* a child reachable only through a rooted block is alive too */
  ph_value child = ph_alloc(d, 10, PH_TAG_RAW);
  ph_set_field(*s[0], 1, child);
  assert_int_equal(live(), 100 * TU_BYTES(3) + TU_BYTES(10));
  assert_int_equal(tu_stats(h).live_blocks, 101);
  for (int i = 0; i < 100; i++)
    assert_int_equal(ph_int_val(ph_field(*s[i], 0)), i);
  /* unrooting half kills exactly that half */
  for (int i = 0; i < 100; i += 2)
    *s[i] = PH_UNIT;
  assert_int_equal(live(), 50 * TU_BYTES(3));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(live(), 0);
}

static void test_nested_scopes(void **state) {
  (void)state;
  size_t outer = ph_scope_open(d);
  ph_value *a = ph_root(d, cell(1));
  size_t inner = ph_scope_open(d);
  ph_value *b = ph_root(d, cell(2));
  size_t inner2 = ph_scope_open(d);
  ph_value *c = ph_root(d, cell(3));
  assert_int_equal(live(), 3 * TU_BYTES(3));
  assert_int_equal(ph_scope_close(d, inner2), PH_OK);
  assert_int_equal(live(), 2 * TU_BYTES(3));
  (void)c;
  /* a scope opened after closing one reuses the stack */
  size_t again = ph_scope_open(d);
  ph_value *e = ph_root(d, cell(5));
  assert_int_equal(live(), 3 * TU_BYTES(3));
  assert_int_equal(ph_int_val(ph_field(*e, 0)), 5);
  assert_int_equal(ph_scope_close(d, again), PH_OK);
  assert_int_equal(ph_int_val(ph_field(*b, 0)), 2);
  assert_int_equal(ph_scope_close(d, inner), PH_OK);
  assert_int_equal(live(), TU_BYTES(3));
  assert_int_equal(ph_int_val(ph_field(*a, 0)), 1);
  assert_int_equal(ph_scope_close(d, outer), PH_OK);
  assert_int_equal(live(), 0);
}

/* More roots than one segment (1022 slots) holds: slots keep their address,
 * every one is scanned, closing an inner scope in the middle of a segment
 * chain drops exactly its roots. */
static void test_many_roots_several_segments(void **state) {
  (void)state;
  const int n = 3500, half = 1700;
  ph_value **s = calloc((size_t)n, sizeof *s);
  assert_non_null(s);
  size_t outer = ph_scope_open(d);
  size_t inner = 0;
  int gaps = 0;
  for (int i = 0; i < n; i++) {
    if (i == half)
      inner = ph_scope_open(d);
    s[i] = ph_root(d, cell(i));
    assert_non_null(s[i]);
    if (i && s[i] != s[i - 1] + 1)
      gaps++; /* a new segment */
  }
  assert_true(gaps >= 2); /* at least three segments in use */
  assert_int_equal(live(), (uint64_t)n * TU_BYTES(3));
  for (int i = 0; i < n; i++)
    assert_int_equal(ph_int_val(ph_field(*s[i], 0)), i);
  assert_int_equal(ph_scope_close(d, inner), PH_OK);
  assert_int_equal(live(), (uint64_t)half * TU_BYTES(3));
  for (int i = 0; i < half; i++)
    assert_int_equal(ph_int_val(ph_field(*s[i], 0)), i);
  /* grow again past the segment boundary */
  size_t inner3 = ph_scope_open(d);
  for (int i = 0; i < 2000; i++)
    assert_non_null(ph_root(d, cell(-i)));
  assert_int_equal(live(), (uint64_t)(half + 2000) * TU_BYTES(3));
  assert_int_equal(ph_scope_close(d, inner3), PH_OK);
  assert_int_equal(ph_scope_close(d, outer), PH_OK);
  assert_int_equal(live(), 0);
  free(s);
}

/* Handle-scope slots are updated when compaction moves their blocks. */
static void test_scope_roots_updated_by_compaction(void **state) {
  (void)state;
  size_t m = ph_scope_open(d);
  enum { N = 4000 };
  ph_value *s[N / 16];
  int k = 0;
  ph_value *tmp = ph_root(d, PH_UNIT);
  for (int i = 0; i < N; i++) {
    *tmp = cell(i);
    if (i % 16 == 0)
      s[k++] = ph_root(d, *tmp); /* sparse survivors */
  }
  *tmp = PH_UNIT;
  assert_int_equal(ph_compact(d), PH_OK);
  for (int i = 0; i < k; i++)
    assert_int_equal(ph_int_val(ph_field(*s[i], 0)), i * 16);
  tu_verify_ok(d);
  assert_int_equal(live(), (uint64_t)k * TU_BYTES(3));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
}

/* ---------------------------------------------------------- global roots */
enum { NG = 300 };
static ph_value groots[NG];

typedef struct gjob {
  int add; /* 1: register all; 0: unregister the even ones */
  int err;
} gjob;

static void *global_worker(void *arg) {
  gjob *j = arg;
  for (int i = 0; i < NG; i++) {
    if (j->add) {
      if (ph_root_add(h, &groots[i]) != PH_OK)
        j->err++;
    } else if (i % 2 == 0) {
      if (ph_root_remove(h, &groots[i]) != PH_OK)
        j->err++;
    }
  }
  return NULL;
}

static void run_global_job(int add) {
  gjob j = {add, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, global_worker, &j), 0);
  tu_djoin(d, t);
  assert_int_equal(j.err, 0);
}

static void test_global_roots_from_non_domain_thread(void **state) {
  (void)state;
  for (int i = 0; i < NG; i++)
    groots[i] = PH_UNIT;
  run_global_job(1); /* registered by a thread that is not a domain */
  for (int i = 0; i < NG; i++)
    groots[i] = cell(i);
  assert_int_equal(live(), NG * TU_BYTES(3));
  for (int i = 0; i < NG; i++)
    assert_int_equal(ph_int_val(ph_field(groots[i], 0)), i);
  run_global_job(0); /* the even ones unregistered, from that thread */
  assert_int_equal(live(), (NG / 2) * TU_BYTES(3));
  for (int i = 1; i < NG; i += 2)
    assert_int_equal(ph_int_val(ph_field(groots[i], 0)), i);
  /* compaction updates global slots too */
  assert_int_equal(ph_compact(d), PH_OK);
  for (int i = 1; i < NG; i += 2)
    assert_int_equal(ph_int_val(ph_field(groots[i], 0)), i);
  tu_verify_ok(d);
  for (int i = 1; i < NG; i += 2)
    assert_int_equal(ph_root_remove(h, &groots[i]), PH_OK);
  assert_int_equal(live(), 0);
}

/* A non-domain thread registers and unregisters roots while the domain
 * collects: no race (TSan), and the domain's own global root stays. */
static _Atomic int churn_stop;
static ph_value churn_slots[64];

static void *churn(void *arg) {
  (void)arg;
  long rounds = 0;
  while (!atomic_load(&churn_stop) || rounds < 10) {
    for (int i = 0; i < 64; i++)
      if (ph_root_add(h, &churn_slots[i]) != PH_OK)
        return (void *)1;
    for (int i = 0; i < 64; i++)
      if (ph_root_remove(h, &churn_slots[i]) != PH_OK)
        return (void *)1;
    rounds++;
  }
  return NULL;
}

static void test_global_roots_concurrent_with_collect(void **state) {
  (void)state;
  for (int i = 0; i < 64; i++)
    churn_slots[i] = ph_val_int(i); /* immediates: never written by us */
  ph_value mine = PH_UNIT;
  assert_int_equal(ph_root_add(h, &mine), PH_OK);
  mine = cell(7);
  atomic_store(&churn_stop, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, churn, NULL), 0);
  int n = (int)tu_scale(200, 4);
  for (int i = 0; i < n; i++) {
    assert_int_equal(live(), TU_BYTES(3));
    assert_int_equal(ph_int_val(ph_field(mine, 0)), 7);
  }
  atomic_store(&churn_stop, 1);
  void *ret;
  ph_blocking_enter(d);
  assert_int_equal(pthread_join(t, &ret), 0);
  ph_blocking_leave(d);
  assert_null(ret);
  assert_int_equal(ph_root_remove(h, &mine), PH_OK);
  assert_int_equal(live(), 0);
}

/* ----------------------------------------------------------- scan hook */
typedef struct hook_roots {
  ph_domain *dom;
  size_t n;
  ph_value slot[64];
  _Atomic long calls, wrong_domain;
} hook_roots;

static void scan_hook(ph_domain *dd, ph_visit_fn visit, void *ctx, void *user) {
  hook_roots *r = user;
  atomic_fetch_add(&r->calls, 1);
  if (dd != r->dom) {
    atomic_fetch_add(&r->wrong_domain, 1);
    return;
  }
  for (size_t i = 0; i < r->n; i++)
    visit(&r->slot[i], ctx);
}

static void test_scan_roots_hook(void **state) {
  (void)state;
  static hook_roots r;
  memset(&r, 0, sizeof r);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = scan_hook;
  cfg.scan_roots_user = &r;
  ph_heap *hh;
  assert_int_equal(ph_heap_create(&cfg, &hh), PH_OK);
  ph_domain *dd;
  assert_int_equal(ph_domain_attach(hh, &dd), PH_OK);
  r.dom = dd;
  r.n = 64;
  for (size_t i = 0; i < 64; i++) {
    r.slot[i] = PH_UNIT;
    ph_value v = ph_alloc(dd, 4, 0);
    assert_true(ph_is_block(v));
    ph_set_field(v, 0, ph_val_int((intptr_t)i));
    r.slot[i] = v;
    assert_true(ph_is_block(ph_alloc(dd, 4, 0))); /* garbage */
  }
  assert_int_equal(ph_collect(dd), PH_OK);
  assert_true(atomic_load(&r.calls) >= 1);
  assert_int_equal(atomic_load(&r.wrong_domain), 0);
  assert_int_equal(tu_stats(hh).live_bytes, 64 * TU_BYTES(4));
  for (size_t i = 0; i < 64; i++)
    assert_int_equal(ph_int_val(ph_field(r.slot[i], 0)), (intptr_t)i);
  /* the hook's slots are updated by compaction */
  r.n = 8;
  assert_int_equal(ph_compact(dd), PH_OK);
  for (size_t i = 0; i < 8; i++)
    assert_int_equal(ph_int_val(ph_field(r.slot[i], 0)), (intptr_t)i);
  assert_int_equal(tu_stats(hh).live_bytes, 8 * TU_BYTES(4));
  char why[256];
  assert_int_equal(ph_verify(dd, why, sizeof why), PH_OK);
  r.n = 0;
  assert_int_equal(ph_collect(dd), PH_OK);
  assert_int_equal(tu_stats(hh).live_bytes, 0);
  assert_int_equal(ph_domain_detach(dd), PH_OK);
  assert_int_equal(ph_heap_destroy(hh), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_scope_roots_keep_alive_rest_dies,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_nested_scopes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_roots_several_segments, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_scope_roots_updated_by_compaction,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_global_roots_from_non_domain_thread,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_global_roots_concurrent_with_collect,
                                      setup, teardown),
      cmocka_unit_test(test_scan_roots_hook),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
