/* tests/test_hugepages.c -- huge page modes (issue 4, item 6).
 *
 * - PH_HUGE_EXPLICIT with no huge pages reserved: works (allocate, collect,
 *   compact, verify, data intact) and counts the fallback.
 * - PH_HUGE_TRANSPARENT: works, no fallback counted.
 * - If running as root and /proc/sys/vm/nr_hugepages can be raised (by 64
 *   pages; the old value is restored in the teardown, also on failure), the
 *   explicit path is used for real: huge_fallbacks stays 0 and every chunk
 *   is a MAP_HUGETLB one.  Otherwise that case is skipped, saying why.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "reliability_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NR_PATH "/proc/sys/vm/nr_hugepages"

static long read_long(const char *path) {
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f) {
    if (fscanf(f, "%ld", &v) != 1)
      v = -1;
    fclose(f);
  }
  return v;
}

static int write_long(const char *path, long v) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  int ok = fprintf(f, "%ld\n", v) > 0;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Allocate ~12 MB (three chunks), collect, drop, compact, verify. */
static ph_stats workload(ph_huge_mode mode, int *all_explicit) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.huge_pages = mode;
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  ru_table t;
  tu_rng rng = {3};
  char why[256];
  assert_int_equal(ru_table_init(&t, d, 120000), PH_OK);
  for (size_t i = 0; i < t.n; i++)
    assert_int_equal(ru_put(&t, i, 1 + tu_below(&rng, 12),
                            tu_below(&rng, 6) ? 0 : PH_TAG_RAW, tu_next(&rng)),
                     PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  for (size_t i = 0; i < t.n; i++)
    if (tu_below(&rng, 3) != 0)
      ru_drop(&t, i);
  assert_int_equal(ph_compact(d), PH_OK);
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("verify: %s", why);
  assert_int_equal(ru_table_check(&t, why, sizeof why), 0);
  ph_stats st;
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  pthread_mutex_lock(&h->lock);
  *all_explicit = 1;
  for (unsigned i = 0; i < h->nchunks; i++)
    if (h->chunks[i]->huge != PH_OS_HUGE_EXPLICIT)
      *all_explicit = 0;
  pthread_mutex_unlock(&h->lock);
  ru_table_fini(&t);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  return st;
}

static void test_explicit_fallback(void **state) {
  if (tu_meminfo("HugePages_Free") != 0) {
    print_message("hugepages: skipped: %ld huge pages are free, the "
                  "fallback would not happen\n",
                  tu_meminfo("HugePages_Free"));
    skip();
  }
  int all;
  ph_stats st = workload(PH_HUGE_EXPLICIT, &all);
  assert_true(st.huge_fallbacks > 0);
  assert_false(all);
  print_message("hugepages: explicit without reserved pages: %llu "
                "fallbacks, %llu mappings\n",
                (unsigned long long)st.huge_fallbacks,
                (unsigned long long)st.mappings);
}

static void test_transparent(void **state) {
  int all;
  ph_stats st = workload(PH_HUGE_TRANSPARENT, &all);
  assert_int_equal(st.huge_fallbacks, 0);
  print_message("hugepages: transparent: %llu mappings\n",
                (unsigned long long)st.mappings);
}

static long old_nr = -1;

static int restore_nr(void **state) {
  if (old_nr >= 0) {
    if (write_long(NR_PATH, old_nr) != 0)
      fprintf(stderr, "hugepages: could not restore %s to %ld\n", NR_PATH,
              old_nr);
    old_nr = -1;
  }
  return 0;
}

static void test_explicit_real(void **state) {
  if (TU_TSAN || TU_ASAN) {
    print_message("hugepages: real explicit case skipped under a sanitizer "
                  "(the variants share this machine's huge page pool)\n");
    skip();
  }
  if (geteuid() != 0) {
    print_message("hugepages: real explicit case skipped: not root\n");
    skip();
  }
  long nr = read_long(NR_PATH);
  if (nr < 0 || write_long(NR_PATH, nr + 64) != 0) {
    print_message("hugepages: real explicit case skipped: cannot write %s\n",
                  NR_PATH);
    skip();
  }
  old_nr = nr;
  long free_pages = tu_meminfo("HugePages_Free");
  if (free_pages < 16) {
    print_message("hugepages: real explicit case skipped: the kernel gave "
                  "only %ld free huge pages\n",
                  free_pages);
    skip();
  }
  int all;
  ph_stats st = workload(PH_HUGE_EXPLICIT, &all);
  assert_int_equal(st.huge_fallbacks, 0);
  assert_true(all);
  print_message("hugepages: explicit with %ld reserved pages: 0 fallbacks, "
                "%llu mappings, all MAP_HUGETLB\n",
                free_pages, (unsigned long long)st.mappings);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_explicit_fallback),
      cmocka_unit_test(test_transparent),
      cmocka_unit_test_teardown(test_explicit_real, restore_nr),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
