/* tests/test_large_pages.c -- heap.large.commit for every large size (issue
 * 11: large blocks rounded to pages, not units).
 *
 * For every wosize from the smallest large one to three units' worth, on
 * the managed API and on the pool layer: the block's committed bytes (the
 * heap's large_bytes / committed_bytes) are its bytes (large header, block
 * header, fields) rounded up to a page, and no page of its units beyond
 * that is resident (mincore), even where its units were resident before
 * (pools freed in PH_RELEASE_KEEP mode, and the earlier large blocks, whose
 * whole units stay committed when they die). */
#include "test_util.h"

#include "api/api.h"

#include <sys/mman.h>

static size_t page(void) {
  return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t bound(size_t wosize) {
  size_t bytes = PH_LARGE_HDR + 8 * (wosize + 1), pg = page();
  return (bytes + pg - 1) / pg * pg;
}

/* Resident pages of the units of the large block v (n units from v's
 * unit), in bytes. */
static size_t resident(ph_value v, size_t pool_size, size_t n) {
  char *base = (char *)(v & ~(ph_value)(pool_size - 1));
  size_t len = n * pool_size, pg = page(), res = 0;
  unsigned char *vec = malloc(len / pg);
  assert_non_null(vec);
  assert_int_equal(mincore(base, len, vec), 0);
  for (size_t i = 0; i < len / pg; i++)
    res += (vec[i] & 1) ? pg : 0;
  free(vec);
  return res;
}

static size_t units_of(size_t wosize, size_t pool_size) {
  return (PH_LARGE_HDR + 8 * (wosize + 1) + pool_size - 1) / pool_size;
}

/* Every wosize from the first large one on, 3 units' worth (every 5th under
 * TSan). */
static size_t step(void) {
  return TU_TSAN ? 5 : 1;
}

static void test_managed_every_large_size(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.release = PH_RELEASE_KEEP;
  ph_heap *h;
  ph_domain *d;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  /* 2 MiB of pools, resident, then freed: FREE_COMM units */
  size_t m = ph_scope_open(d);
  for (int i = 0; i < 2 * 1024 * 1024 / 512; i++) {
    ph_value v = ph_alloc(d, 63, PH_TAG_RAW);
    assert_true(ph_is_block(v));
    memset(ph_raw(v), 1, 63 * 8);
  }
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  size_t first = h->max_small_wosize + 1;
  size_t last = first + 3 * h->pool_size / 8; /* up to three units more */
  size_t checked = 0;
  for (size_t wo = first; wo <= last; wo += step()) {
    ph_stats st0 = tu_stats(h);
    assert_int_equal(st0.large_bytes, 0);
    ph_value v = ph_alloc(d, wo, PH_TAG_RAW);
    assert_true(ph_is_block(v));
    ph_stats st = tu_stats(h);
    size_t b = bound(wo);
    if (st.large_bytes > b || st.large_bytes < b - page() + 1)
      fail_msg("wosize %zu: large_bytes %llu, its pages %zu", wo,
               (unsigned long long)st.large_bytes, b);
    if (st.committed_bytes > st0.committed_bytes + b)
      fail_msg("wosize %zu: committed %llu -> %llu, more than its pages %zu",
               wo, (unsigned long long)st0.committed_bytes,
               (unsigned long long)st.committed_bytes, b);
    memset(ph_raw(v), 0xab, wo * 8); /* every page of the block resident */
    size_t res = resident(v, h->pool_size, units_of(wo, h->pool_size));
    if (res > b)
      fail_msg("wosize %zu: %zu bytes of its units resident, its pages %zu", wo,
               res, b);
    assert_int_equal(ph_collect(d), PH_OK); /* no root: it dies */
    checked++;
  }
  print_message("managed: %zu large sizes checked (wosize %zu..%zu)\n", checked,
                first, last);
  tu_verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static void test_pools_every_large_size(void **state) {
  (void)state;
  php_config cfg;
  php_config_init(&cfg);
  cfg.release = PH_RELEASE_KEEP;
  php_heap *h;
  php_owner *o;
  assert_int_equal(php_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  php_heap_stats hs;
  assert_int_equal(php_heap_stats_get(h, &hs), PH_OK);
  size_t first = hs.max_small_wosize + 1;
  size_t last = first + 3 * hs.pool_size / 8; /* three units more */
  size_t checked = 0;
  /* colour 1 is live; setting the garbage colour to 1 and sweeping frees.
   * First 2 MiB of pools, resident, then freed: free committed units. */
  for (int i = 0; i < 2 * 1024 * 1024 / 512; i++) {
    ph_value v = php_alloc(o, 63, 1u << PHP_HD_COLOUR_SHIFT | PH_TAG_RAW);
    assert_true(v != 0);
    memset((void *)v, 1, 63 * 8);
  }
  assert_int_equal(php_cycle(o), PH_OK);
  assert_int_equal(php_set_colours(h, 1), PH_OK);
  assert_true(php_sweep(o, INTPTR_MAX / 2) > 0);
  assert_int_equal(php_set_colours(h, 2), PH_OK);
  php_heap_stats fs;
  assert_int_equal(php_heap_stats_get(h, &fs), PH_OK);
  assert_true(fs.free_bytes >= 1024 * 1024);
  for (size_t wo = first; wo <= last; wo += step()) {
    php_heap_stats a, b2;
    assert_int_equal(php_heap_stats_get(h, &a), PH_OK);
    ph_value v = php_alloc(o, wo, 1u << PHP_HD_COLOUR_SHIFT | PH_TAG_RAW);
    assert_true(v != 0);
    assert_int_equal(php_heap_stats_get(h, &b2), PH_OK);
    size_t b = bound(wo);
    if (b2.committed_bytes > a.committed_bytes + b)
      fail_msg("wosize %zu: committed %llu -> %llu, more than its pages %zu",
               wo, (unsigned long long)a.committed_bytes,
               (unsigned long long)b2.committed_bytes, b);
    memset((void *)v, 0xcd, wo * 8);
    size_t res = resident(v, hs.pool_size, units_of(wo, hs.pool_size));
    if (res > b)
      fail_msg("wosize %zu: %zu bytes of its units resident, its pages %zu", wo,
               res, b);
    /* free it: make it unswept, its colour the garbage one, sweep */
    assert_int_equal(php_cycle(o), PH_OK);
    assert_int_equal(php_set_colours(h, 1), PH_OK);
    assert_true(php_sweep(o, INTPTR_MAX / 2) > 0);
    assert_int_equal(php_set_colours(h, 2), PH_OK);
    php_counters c;
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    assert_int_equal(c.large_blocks, 0);
    checked++;
  }
  print_message("pool layer: %zu large sizes checked (wosize %zu..%zu)\n",
                checked, first, last);
  char why[256];
  assert_int_equal(php_verify(h, why, sizeof why), PH_OK);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_managed_every_large_size),
      cmocka_unit_test(test_pools_every_large_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
