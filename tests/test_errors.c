/* tests/test_errors.c -- every error code is reached, and ph_strerror
 * describes each: PH_EINVAL (each bad config field, NULL arguments, wosize
 * 0, tag 256, bad root slots), PH_ENOMEM (heap_limit), PH_ESTATE (destroy
 * with a domain attached, detach twice, more than max_domains, scopes
 * closed twice or out of order, a detached domain), PH_ECORRUPT (verify). */
#include "test_util.h"

typedef void (*cfg_edit)(ph_config *c);
static void bad_domains0(ph_config *c) {
  c->max_domains = 0;
}
static void bad_domains_big(ph_config *c) {
  c->max_domains = 1025;
}
static void bad_pool0(ph_config *c) {
  c->pool_size = 0;
}
static void bad_pool_small(ph_config *c) {
  c->pool_size = 2048;
}
static void bad_pool_big(ph_config *c) {
  c->pool_size = (size_t)8 << 20;
}
static void bad_pool_pow2(ph_config *c) {
  c->pool_size = 3 * 4096;
}
static void bad_gc(ph_config *c) {
  c->gc_percent = 10001;
}
static void bad_huge(ph_config *c) {
  c->huge_pages = (ph_huge_mode)3;
}
static void bad_release(ph_config *c) {
  c->release = (ph_release_mode)4;
}
static void bad_scope(ph_config *c) {
  c->compact_scope = (ph_compact_scope)2;
}
static void bad_compact_pct(ph_config *c) {
  c->compact_percent = 101;
}
static void bad_limit(ph_config *c) {
  c->heap_limit = 100;
}

static void test_einval_each_config_field(void **state) {
  (void)state;
  const struct {
    const char *name;
    cfg_edit edit;
  } bad[] = {
      {"max_domains 0", bad_domains0},
      {"max_domains 1025", bad_domains_big},
      {"pool_size 0", bad_pool0},
      {"pool_size 2 KiB", bad_pool_small},
      {"pool_size 8 MiB", bad_pool_big},
      {"pool_size 12 KiB", bad_pool_pow2},
      {"gc_percent 10001", bad_gc},
      {"huge_pages 3", bad_huge},
      {"release 4", bad_release},
      {"compact_scope 2", bad_scope},
      {"compact_percent 101", bad_compact_pct},
      {"heap_limit below one pool", bad_limit},
  };
  long maps0 = tu_maps_lines();
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ph_config cfg;
    ph_config_init(&cfg);
    bad[i].edit(&cfg);
    ph_heap *h = (ph_heap *)&cfg; /* sentinel: must not be written */
    int r = ph_heap_create(&cfg, &h);
    if (r != PH_EINVAL)
      fail_msg("%s: ph_heap_create returned %d", bad[i].name, r);
    assert_ptr_equal(h, (ph_heap *)&cfg);
  }
  /* nothing was created: no mapping left behind */
  if (!TU_TSAN)
    assert_int_equal(tu_maps_lines(), maps0);
  /* the limits themselves are valid */
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.max_domains = 1024;
  cfg.pool_size = 4096;
  cfg.gc_percent = 10000;
  cfg.compact_percent = 100;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  cfg.max_domains = 1;
  cfg.pool_size = (size_t)4 << 20;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_einval_null_and_bad_args(void **state) {
  (void)state;
  ph_heap *h;
  assert_int_equal(ph_heap_create(NULL, NULL), PH_EINVAL);
  assert_int_equal(ph_heap_destroy(NULL), PH_EINVAL);
  assert_int_equal(ph_heap_create(NULL, &h), PH_OK); /* defaults */
  ph_domain *d;
  assert_int_equal(ph_domain_attach(NULL, &d), PH_EINVAL);
  assert_int_equal(ph_domain_attach(h, NULL), PH_EINVAL);
  assert_int_equal(ph_alloc(NULL, 1, 0), 0);
  assert_int_equal(ph_last_error(NULL), PH_EINVAL);
  assert_int_equal(ph_collect(NULL), PH_EINVAL);
  assert_int_equal(ph_compact(NULL), PH_EINVAL);
  assert_int_equal(ph_verify(NULL, NULL, 0), PH_EINVAL);
  assert_int_equal(ph_scope_close(NULL, 0), PH_EINVAL);
  assert_null(ph_root(NULL, PH_UNIT));
  assert_int_equal(ph_domain_detach(NULL), PH_EINVAL);
  assert_int_equal(ph_domain_index(NULL), (unsigned)-1);
  assert_null(ph_domain_heap(NULL));
  ph_stats st;
  assert_int_equal(ph_stats_get(NULL, &st), PH_EINVAL);
  assert_int_equal(ph_stats_get(h, NULL), PH_EINVAL);
  /* roots */
  static ph_value slot, other;
  char buf[16];
  assert_int_equal(ph_root_add(NULL, &slot), PH_EINVAL);
  assert_int_equal(ph_root_add(h, NULL), PH_EINVAL);
  assert_int_equal(ph_root_add(h, (ph_value *)(buf + 1)), PH_EINVAL);
  assert_int_equal(ph_root_remove(h, &slot), PH_EINVAL); /* never added */
  assert_int_equal(ph_root_add(h, &slot), PH_OK);
  assert_int_equal(ph_root_add(h, &slot), PH_EINVAL); /* twice */
  assert_int_equal(ph_root_remove(h, &other), PH_EINVAL);
  assert_int_equal(ph_root_remove(NULL, &slot), PH_EINVAL);
  assert_int_equal(ph_root_remove(h, NULL), PH_EINVAL);
  assert_int_equal(ph_root_remove(h, &slot), PH_OK);
  assert_int_equal(ph_root_remove(h, &slot), PH_EINVAL); /* twice */
  /* census without a function */
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_int_equal(ph_census(d, NULL, NULL), PH_EINVAL);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  /* a destroyed heap is recognised (its handle is freed: not touched) */
}

static void test_einval_wosize_and_tag(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_int_equal(ph_last_error(d), PH_OK);
  assert_int_equal(ph_alloc(d, 0, 0), 0);
  assert_int_equal(ph_last_error(d), PH_EINVAL);
  assert_true(ph_is_block(ph_alloc(d, 1, 255))); /* the largest tag */
  assert_int_equal(ph_alloc(d, 1, 256), 0);
  assert_int_equal(ph_last_error(d), PH_EINVAL);
  assert_int_equal(ph_alloc(d, 1, 1000), 0);
  assert_int_equal(ph_last_error(d), PH_EINVAL);
  assert_int_equal(ph_alloc(d, PH_MAX_WOSIZE + 1, 0), 0);
  assert_int_equal(ph_last_error(d), PH_EINVAL);
  /* nothing was allocated by the failing calls */
  assert_int_equal(tu_stats(h).allocated_bytes, TU_BYTES(1));
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_enomem_heap_limit(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.heap_limit = (size_t)2 << 20;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  /* a list kept alive until the limit refuses more */
  ph_value *head = ph_root(d, PH_UNIT);
  size_t n = 0;
  for (;;) {
    ph_value c = ph_alloc(d, 6, 0);
    if (!c)
      break;
    ph_set_field(c, 0, *head);
    *head = c;
    n++;
    assert_true(n < ((size_t)2 << 20) / 56 + 1);
  }
  assert_int_equal(ph_last_error(d), PH_ENOMEM);
  ph_stats st = tu_stats(h);
  assert_true(st.committed_bytes <= cfg.heap_limit);
  assert_true(n * TU_BYTES(6) > cfg.heap_limit / 2); /* most of it used */
  /* a large block beyond the limit fails too, and the heap stays valid */
  assert_int_equal(ph_alloc(d, (size_t)1 << 20, PH_TAG_RAW), 0);
  assert_int_equal(ph_last_error(d), PH_ENOMEM);
  tu_verify_ok(d);
  /* dropping the list makes room again */
  *head = PH_UNIT;
  assert_int_equal(ph_collect(d), PH_OK);
  assert_true(ph_is_block(ph_alloc(d, 6, 0)));
  assert_true(ph_is_block(ph_alloc(d, (size_t)1 << 17, PH_TAG_RAW)));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_estate_destroy_with_domain_attached(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_ESTATE);
  /* the heap still works */
  assert_true(ph_is_block(ph_alloc(d, 2, 0)));
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_estate_detach_twice_and_detached_use(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_ESTATE);
  assert_int_equal(ph_alloc(d, 2, 0), 0);
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  assert_int_equal(ph_collect(d), PH_ESTATE);
  assert_ptr_equal(ph_domain_heap(d), h);
  assert_int_equal(tu_stats(h).domains, 0);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static ph_heap *limit_heap;
static void *try_attach(void *arg) {
  int *res = arg;
  ph_domain *d;
  *res = ph_domain_attach(limit_heap, &d);
  if (*res == PH_OK)
    *res = ph_domain_detach(d) == PH_OK ? PH_OK : -1;
  return NULL;
}

static int attach_from_thread(void) {
  int res = -2;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, try_attach, &res), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  return res;
}

static void test_estate_more_than_max_domains(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.max_domains = 1;
  assert_int_equal(ph_heap_create(&cfg, &limit_heap), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(limit_heap, &d), PH_OK);
  /* (the helper does not touch the heap: no blocking section needed for a
   * failed attach, but be correct anyway) */
  ph_blocking_enter(d);
  int r = attach_from_thread();
  ph_blocking_leave(d);
  assert_int_equal(r, PH_ESTATE);
  assert_int_equal(tu_stats(limit_heap).domains, 1);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(attach_from_thread(), PH_OK); /* room again */
  assert_int_equal(ph_heap_destroy(limit_heap), PH_OK);
}

static void test_estate_scopes_unbalanced(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m1 = ph_scope_open(d);
  ph_root(d, ph_alloc(d, 2, 0));
  size_t m2 = ph_scope_open(d);
  ph_root(d, ph_alloc(d, 2, 0));
  assert_int_equal(ph_scope_close(d, m1), PH_ESTATE); /* out of order */
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  assert_int_equal(ph_scope_close(d, m2), PH_OK);
  assert_int_equal(ph_scope_close(d, m2), PH_ESTATE); /* twice */
  /* the failed closes changed nothing: m1's root is still there */
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, TU_BYTES(2));
  assert_int_equal(ph_scope_close(d, m1), PH_OK);
  assert_int_equal(ph_scope_close(d, m1), PH_ESTATE);
  assert_int_equal(ph_scope_close(d, 12345), PH_ESTATE); /* never opened */
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* Debug builds refuse a domain used from a thread that did not attach it. */
static ph_domain *foreign;
static void *use_foreign(void *arg) {
  int *res = arg;
  res[0] = ph_alloc(foreign, 2, 0) == 0;
  res[1] = ph_collect(foreign);
  return NULL;
}

static void test_estate_domain_from_other_thread(void **state) {
  (void)state;
  if (!TU_DEBUG) {
    skip();
    return;
  }
  ph_heap *h = tu_heap(0);
  assert_int_equal(ph_domain_attach(h, &foreign), PH_OK);
  int res[2] = {0, 0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, use_foreign, res), 0);
  tu_djoin(foreign, t);
  assert_int_equal(res[0], 1);
  assert_int_equal(res[1], PH_ESTATE);
  assert_int_equal(ph_domain_detach(foreign), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_ecorrupt_from_verify(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *a = ph_root(d, ph_alloc(d, 4, 0));
  ph_value *b = ph_root(d, ph_alloc(d, 4, 0));
  ph_set_field(*a, 0, *b + 16);
  char why[256] = "";
  assert_int_equal(ph_verify(d, why, sizeof why), PH_ECORRUPT);
  assert_true(strlen(why) > 0);
  ph_set_field(*a, 0, *b);
  assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_strerror_each_code(void **state) {
  (void)state;
  const int codes[] = {PH_OK, PH_EINVAL, PH_ENOMEM, PH_ESTATE, PH_ECORRUPT};
  const size_t n = sizeof codes / sizeof *codes;
  for (size_t i = 0; i < n; i++) {
    const char *s = ph_strerror(codes[i]);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(s, ph_strerror(codes[j]));
  }
  const int unknown[] = {-1, 5, 99, 1 << 30};
  for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
    const char *s = ph_strerror(unknown[i]);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (size_t j = 1; j < n; j++)
      assert_string_not_equal(s, ph_strerror(codes[j]));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_einval_each_config_field),
      cmocka_unit_test(test_einval_null_and_bad_args),
      cmocka_unit_test(test_einval_wosize_and_tag),
      cmocka_unit_test(test_enomem_heap_limit),
      cmocka_unit_test(test_estate_destroy_with_domain_attached),
      cmocka_unit_test(test_estate_detach_twice_and_detached_use),
      cmocka_unit_test(test_estate_more_than_max_domains),
      cmocka_unit_test(test_estate_scopes_unbalanced),
      cmocka_unit_test(test_estate_domain_from_other_thread),
      cmocka_unit_test(test_ecorrupt_from_verify),
      cmocka_unit_test(test_strerror_each_code),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
