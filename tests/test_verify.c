/* tests/test_verify.c -- ph_verify passes on clean heaps and catches planted
 * corruption: a field pointing into the middle of a block, a field pointing
 * to a freed slot, a corrupt header (wosize, color), a bad root, a broken
 * pool counter, a free list link into the middle of a slot, a pool's zero
 * offset (heap.pool.zero) below an allocated slot.  Each corruption is
 * repaired before anything else touches the heap (debug builds verify around
 * every collection). */
#include "test_util.h"

#include "api/api.h"

static ph_heap *h;
static ph_domain *d;
static size_t mark;
static ph_value *a, *b, *big;

static int setup(void **state) {
  (void)state;
  h = tu_heap(0);
  if (ph_domain_attach(h, &d) != PH_OK)
    return -1;
  mark = ph_scope_open(d);
  a = ph_root(d, ph_alloc(d, 3, 0));
  b = ph_root(d, ph_alloc(d, 3, 0));
  big = ph_root(d, ph_alloc(d, 3 * h->max_small_wosize, 0));
  ph_set_field(*a, 0, *b);
  ph_set_field(*big, 5, *a);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char why[256];
  int v = ph_verify(d, why, sizeof why); /* repaired */
  ph_scope_close(d, mark);
  int r = ph_domain_detach(d);
  int r2 = ph_heap_destroy(h);
  return v == PH_OK && r == PH_OK && r2 == PH_OK ? 0 : -1;
}

/* ph_verify must report corruption with a non-empty reason. */
static void expect_corrupt(const char *what) {
  char why[512];
  memset(why, 'x', sizeof why);
  int r = ph_verify(d, why, sizeof why);
  if (r != PH_ECORRUPT)
    fail_msg("%s: ph_verify returned %d (%s)", what, r, ph_strerror(r));
  assert_true(why[0] != 0 && why[0] != 'x');
  assert_non_null(memchr(why, 0, sizeof why));
  printf("%s: %s\n", what, why);
}

static void test_verify_clean_heap_ok(void **state) {
  (void)state;
  tu_rng r;
  tu_rng_init(&r, 7);
  char why[256];
  memset(why, 'x', sizeof why);
  assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
  assert_int_equal(why[0], 0);
  /* a random graph, with garbage, before and after collections */
  ph_value *s[200];
  for (int i = 0; i < 200; i++) {
    s[i] = ph_root(d, ph_alloc(d, 1 + tu_below(&r, 20), 0));
    for (int k = 0; k < 3; k++)
      ph_alloc(d, 1 + tu_below(&r, 300), tu_below(&r, 2) ? 0 : PH_TAG_RAW);
    if (i)
      ph_set_field(*s[i], 0, *s[tu_below(&r, (size_t)i)]);
  }
  assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_verify(d, NULL, 0), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
}

static void test_verify_field_into_middle_of_block(void **state) {
  (void)state;
  ph_set_field(*a, 1, *b + 8);
  expect_corrupt("field into the middle of a block");
  ph_set_field(*a, 1, PH_UNIT);
  tu_verify_ok(d);
}

static void test_verify_field_to_freed_block(void **state) {
  (void)state;
  /* x dies; its pool stays in use because a and b (same class) live */
  ph_value x = ph_alloc(d, 3, 0);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_unit_of(h, x)->kind, PH_U_POOL);
  assert_int_equal(ph_hd_(x), 0); /* a free slot (pools.header) */
  ph_set_field(*a, 2, x);
  expect_corrupt("field to a freed block");
  ph_set_field(*a, 2, PH_UNIT);
  tu_verify_ok(d);
}

static void test_verify_field_outside_heap(void **state) {
  (void)state;
  static ph_value outside[4];
  ph_set_field(*a, 1, (ph_value)&outside[1]);
  expect_corrupt("field outside the heap");
  ph_set_field(*a, 1, PH_UNIT);
}

static void test_verify_corrupt_header_wosize(void **state) {
  (void)state;
  ph_value *hp = (ph_value *)*b - 1;
  ph_value saved = *hp;
  /* a wosize that does not belong to the block's size class */
  *hp = ph_hd_make(h->max_small_wosize, PH_WHITE, 0);
  expect_corrupt("header wosize of another class");
  *hp = saved;
  tu_verify_ok(d);
}

static void test_verify_corrupt_header_color(void **state) {
  (void)state;
  ph_value *hp = (ph_value *)*b - 1;
  ph_value saved = *hp;
  *hp = saved | ((ph_value)PH_BLACK << PH_HD_COLOR_SHIFT);
  expect_corrupt("black header outside a collection");
  *hp = saved;
  tu_verify_ok(d);
}

static void test_verify_large_block_field(void **state) {
  (void)state;
  ph_set_field(*big, 7, *big + 16);
  expect_corrupt("large block field into a large block");
  ph_set_field(*big, 7, PH_UNIT);
  tu_verify_ok(d);
}

static void test_verify_bad_roots(void **state) {
  (void)state;
  ph_value saved = *b;
  *b = saved + 8;
  expect_corrupt("handle root into the middle of a block");
  *b = saved;
  static ph_value g;
  g = PH_UNIT;
  assert_int_equal(ph_root_add(h, &g), PH_OK);
  g = *a + 16;
  expect_corrupt("global root into the middle of a block");
  g = *a;
  tu_verify_ok(d);
  assert_int_equal(ph_root_remove(h, &g), PH_OK);
}

static void test_verify_pool_counter(void **state) {
  (void)state;
  ph_pool *p = (ph_pool *)ph_unit_of(h, *a);
  tu_verify_ok(d); /* flushes the alloc cache into the pool */
  uint32_t saved = p->nlive;
  p->nlive = saved + 1;
  expect_corrupt("pool live count");
  p->nlive = saved;
  tu_verify_ok(d);
}

/* heap.verify: the pool layer's structural walk, shared with php_verify
 * (tests/test_pools.c, test_verify_free_list), follows a free list only
 * through slot starts: a link 8 bytes into the last free slot finds a 0
 * word before it (that slot's end of list), a 0 link (set here) and the
 * right count, but is not a slot. */
static void test_verify_free_list_into_a_slot(void **state) {
  (void)state;
  ph_pool *p = (ph_pool *)ph_unit_of(h, *a);
  tu_verify_ok(d); /* flushes the alloc cache into the pool */
  assert_true(p->nfree >= 2);
  ph_value *link = &p->free; /* the link to the last free slot */
  while (*(ph_value *)*link != 0)
    link = (ph_value *)*link;
  ph_value last = *link, saved = ((ph_value *)last)[1];
  ((ph_value *)last)[1] = 0;
  *link = last + 8;
  expect_corrupt("free list link into the middle of a slot");
  *link = last;
  ((ph_value *)last)[1] = saved;
  tu_verify_ok(d);
}

/* heap.pool.zero: after a flush the pool's zero offset is its free list's
 * head (every slot handed out lies below it); the walk refuses an offset
 * with an allocated slot at or above it, and one that is no slot's field 0,
 * as either would let a raw block skip zeroing over old contents. */
static void test_verify_zero_offset(void **state) {
  (void)state;
  ph_pool *p = (ph_pool *)ph_unit_of(h, *a);
  tu_verify_ok(d); /* flushes the alloc cache into the pool */
  assert_true(p->free != 0);
  assert_true(ph_pool_zero_addr(h, p) == (uintptr_t)p->free);
  uint32_t *z = &p->chunk->zero_from[p->unit], saved = *z;
  uintptr_t base = (uintptr_t)p;
  *z = (uint32_t)(*a - base); /* an allocated slot's field 0 */
  expect_corrupt("zero offset below an allocated slot");
  *z = (uint32_t)(p->free + 8 - base);
  expect_corrupt("zero offset inside a slot");
  *z = saved;
  tu_verify_ok(d);
}

static void test_verify_without_buffer(void **state) {
  (void)state;
  ph_set_field(*a, 1, *b + 8);
  assert_int_equal(ph_verify(d, NULL, 0), PH_ECORRUPT);
  char one[1] = {'x'};
  assert_int_equal(ph_verify(d, one, 1), PH_ECORRUPT);
  assert_int_equal(one[0], 0);
  ph_set_field(*a, 1, PH_UNIT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_verify_clean_heap_ok, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_field_into_middle_of_block,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_field_to_freed_block, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_field_outside_heap, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_corrupt_header_wosize, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_corrupt_header_color, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_large_block_field, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_bad_roots, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_pool_counter, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_free_list_into_a_slot, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_verify_zero_offset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_without_buffer, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
