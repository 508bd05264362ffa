/* tests/test_limit_reuse.c -- at heap_limit, free committed pool memory is
 * reused though a reserved (uncommitted) unit lies at a lower address
 * (DESIGN.md: heap.unit).
 *
 * Allocating until heap_limit makes the heap reserve one more chunk whose
 * commit is refused; the kernel often places it below the others.  Before
 * the fix, the first-fit search stopped at that chunk's refused commit, so
 * an allocation failed with PH_ENOMEM even after a collection had freed
 * every pool: committed, free memory was never looked at (with
 * PH_RELEASE_KEEP, where the collection does not decommit it). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "poolheap.h"

static void test_managed_reuse_at_limit(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.heap_limit = (size_t)8 << 20;
  cfg.gc_percent = 0;
  /* nothing goes back to the OS: the pools a collection frees stay
   * committed (with decommit, the collection's release would lower the
   * committed bytes and hide the bug) */
  cfg.release = PH_RELEASE_KEEP;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t mark = ph_scope_open(d);
  ph_value *head = ph_root(d, PH_UNIT);
  assert_non_null(head);
  for (int round = 0; round < 4; round++) {
    /* a rooted chain until the limit refuses (ph_alloc collected before
     * giving up: the chain is live) */
    size_t n = 0;
    for (;;) {
      ph_value v = ph_alloc(d, 10, 0);
      if (!v)
        break;
      ph_set_field(v, 0, *head);
      *head = v;
      n++;
    }
    assert_int_equal(ph_last_error(d), PH_ENOMEM);
    assert_true(n > 1000);
    /* drop it: a collection frees every pool, committed memory that the
     * same allocation must now get */
    *head = PH_UNIT;
    assert_int_equal(ph_collect(d), PH_OK);
    assert_true(ph_alloc(d, 10, 0) != 0);
    assert_true(ph_alloc(d, 5000, PH_TAG_RAW) != 0); /* a large block */
    char why[256];
    assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
  }
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_managed_reuse_at_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
