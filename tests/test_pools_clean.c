/* tests/test_pools_clean.c -- heap.unit.clean, white-box (the pool header
 * and the layer's core through heap/heap.h and heap/pools_internal.h).
 *
 * A small pool that an owner's sweep empties leaves its unit free and
 * committed with every slot on its free list; a pool of the same class
 * opened there keeps that list instead of writing every slot again.  The
 * tests make the kept list observable by reordering its first two slots
 * (a list the sweep would never leave, which ph_pool_init_free would
 * rewrite), and check that whatever writes over or discards a clean unit's
 * memory (a release that decommits it, a large block taking it) makes the
 * next pool write its list afresh. */
#include "tests/pools_util.h"

#include "heap/heap.h"
#include "heap/pools_internal.h"

enum { MARKED = 0, GARBAGE = 2 };

static php_heap *heap_new(void) {
  php_config cfg;
  php_config_init(&cfg);
  php_heap *h = NULL;
  assert_int_equal(php_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(php_set_colours(h, GARBAGE), PH_OK);
  return h;
}

static ph_pool *pool_of(php_heap *h, ph_value b) {
  return (ph_pool *)(b & h->core->pool_mask);
}

/* k pools of the 1-field class filled with garbage, then swept empty:
 * returns the lowest (their units consecutive, free, committed and marked
 * clean). */
static ph_pool *empty_pools(php_heap *h, php_owner *o, uint32_t k) {
  ph_value b0 = php_alloc(o, 1, GARBAGE << PHP_HD_COLOUR_SHIFT);
  assert_true(b0 != 0);
  ph_pool *p = pool_of(h, b0), *lo = p;
  uint32_t n = p->nslots;
  for (uint32_t i = 1; i < n * k; i++) {
    ph_value b = php_alloc(o, 1, GARBAGE << PHP_HD_COLOUR_SHIFT);
    assert_true(b != 0);
    if (pool_of(h, b) < lo)
      lo = pool_of(h, b);
  }
  assert_int_equal(php_cycle(o), PH_OK);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  struct ph_heap *core = h->core;
  php_heap_stats st;
  assert_int_equal(php_heap_stats_get(h, &st), PH_OK);
  assert_int_equal(st.free_bytes, k * st.pool_size); /* free, committed */
  ph_chunk *c = ph_chunk_find(core, lo);
  assert_non_null(c);
  pthread_mutex_lock(&core->lock);
  uint32_t u = (uint32_t)(((char *)lo - c->base) >> core->pool_shift);
  for (uint32_t i = 0; i < k; i++) {
    assert_int_equal(c->ustate[u + i], PH_U_FREE_COMM);
    assert_int_equal(c->ucls[u + i], PH_UCLS_CLEAN | lo->cls);
  }
  pthread_mutex_unlock(&core->lock);
  return lo;
}

/* The unit's first slot (field 0's address), as ph_pool_init_free links
 * it first. */
static ph_value first_slot(php_heap *h, ph_pool *p) {
  return (ph_value)((char *)p + h->core->class_hdr[p->cls]) + 8;
}

/* The next pool of the class keeps the freed pool's list: with its first
 * two slots swapped, the first allocation takes the second slot. */
static void test_clean_unit_keeps_list(void **state) {
  (void)state;
  php_heap *h = heap_new();
  php_owner *o = NULL;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  ph_pool *p = empty_pools(h, o, 1);
  ph_value s0 = p->free, s1 = *(ph_value *)s0, s2 = *(ph_value *)s1;
  assert_true(s0 == first_slot(h, p));
  p->free = s1;
  *(ph_value *)s1 = s0;
  *(ph_value *)s0 = s2;
  ph_value v = php_alloc(o, 1, MARKED << PHP_HD_COLOUR_SHIFT);
  assert_true(v == s1); /* ph_pool_init_free would have given s0 */
  assert_true(pool_of(h, v) == p && p->sig == PH_SIG_POOL);
  assert_int_equal(p->nlive, 1);
  assert_int_equal(p->nfree, p->nslots - 1);
  /* the whole list is there: the pool fills to nslots, then a new one */
  for (uint32_t i = 1; i < p->nslots; i++)
    assert_true(pool_of(h, php_alloc(o, 1, MARKED << PHP_HD_COLOUR_SHIFT)) ==
                p);
  assert_true(p->free == 0);
  tu_pools_verify_ok(h);
  assert_true(pool_of(h, php_alloc(o, 1, MARKED << PHP_HD_COLOUR_SHIFT)) != p);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

/* A release decommits the clean unit: its pages read as zeros, and the
 * next pool there writes its list. */
static void test_clean_unit_released(void **state) {
  (void)state;
  php_heap *h = heap_new();
  php_owner *o = NULL;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  ph_pool *p = empty_pools(h, o, 1);
  struct ph_heap *core = h->core;
  uint64_t released = 0;
  pthread_mutex_lock(&core->lock);
  ph_units_release_locked(core, PH_RELEASE_DECOMMIT, 0, &released);
  pthread_mutex_unlock(&core->lock);
  assert_true(released >= core->pool_size);
  ph_value v = php_alloc(o, 1, MARKED << PHP_HD_COLOUR_SHIFT);
  assert_true(v != 0);
  assert_true(pool_of(h, v) == p && v == first_slot(h, p));
  assert_int_equal(p->nfree, p->nslots - 1);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

/* A large block takes clean units and writes over them; once it is freed
 * (its units free and committed again) the next pool there writes its
 * list. */
static void test_clean_unit_large(void **state) {
  (void)state;
  php_heap *h = heap_new();
  php_owner *o = NULL;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  size_t ps = h->core->pool_size;
  /* the smallest large block (beyond the medium classes) in whole units */
  uint32_t k = (uint32_t)((PH_MEDIUM_TOP_WSIZE * 8 + ps - 1) / ps) + 1;
  ph_pool *p = empty_pools(h, o, k);
  size_t wo = (k * ps - PH_LARGE_HDR - 8) / 8;
  assert_true(wo >= PH_MEDIUM_TOP_WSIZE);
  ph_value l = php_alloc(o, wo, GARBAGE << PHP_HD_COLOUR_SHIFT);
  assert_true(l != 0);
  assert_true((ph_value)pool_of(h, l) == (ph_value)p); /* the clean units */
  memset((void *)l, 0xa5, wo * 8);
  php_heap_stats st;
  assert_int_equal(php_heap_stats_get(h, &st), PH_OK);
  assert_int_equal(st.free_bytes, 0);
  assert_int_equal(php_cycle(o), PH_OK);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  assert_int_equal(php_heap_stats_get(h, &st), PH_OK);
  assert_int_equal(st.free_bytes, k * ps); /* free, committed */
  ph_value v = php_alloc(o, 1, MARKED << PHP_HD_COLOUR_SHIFT);
  assert_true(v != 0);
  assert_true(pool_of(h, v) == p && v == first_slot(h, p));
  assert_int_equal(p->nfree, p->nslots - 1);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_clean_unit_keeps_list),
      cmocka_unit_test(test_clean_unit_released),
      cmocka_unit_test(test_clean_unit_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
