/* tests/test_mapsoak.c -- the mapping bound (issue 4, item 5).
 *
 * Fragment-then-compact cycles: each cycle fills the heap up to a target
 * that follows a sawtooth between 30% and 100% of the peak, drops a random
 * 50% of the items (every pool becomes sparse), and compacts.  After every
 * compaction the process's /proc/self/maps line count must stay within the
 * baseline (before the heap) + 64, and stats.mappings must equal the chunks
 * the heap holds.  The same with PH_RELEASE_UNMAP, where whole chunks come
 * and go.  The mapping counts seen (min/max) are printed.
 *
 * Size: CI runs >= 30 cycles (debug) with a 100 MB peak in release builds;
 * POOLHEAP_SOAK_CYCLES and POOLHEAP_SOAK_PEAK_MB set the full size
 * (tests/soak.sh: >= 300 cycles, > 1 GB peak).
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
#include <limits.h>
#include <time.h>

#define MAPS_SLACK 64

#if TU_DEBUG || TU_TSAN || TU_ASAN
#define CI_CYCLES 30
#define CI_PEAK_MB 24
#else
#define CI_CYCLES 40
#define CI_PEAK_MB 110
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void soak(int release, long cycles, long peak_mb) {
  long base = tu_maps_lines();
  assert_true(base > 0);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.release = (ph_release_mode)release;
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t peak = (size_t)peak_mb << 20;
  /* ~112 bytes per item on average */
  size_t nslots = peak / 100 + 1000;
  ru_table t;
  tu_rng rng = {0xabcdef};
  char why[256];
  assert_int_equal(ru_table_init(&t, d, nslots), PH_OK);
  long maps_min = LONG_MAX, maps_max = 0;
  uint64_t map_lo = UINT64_MAX, map_hi = 0, heap_peak = 0;
  double t0 = now_s();
  for (long c = 0; c < cycles; c++) {
    /* sawtooth target: 30% .. 100% of the peak, period 8 cycles */
    size_t target = peak / 10 * (3 + (size_t)(c % 8));
    if (c % 8 == 7)
      target = peak;
    size_t i = 0;
    while (t.live_words * 8 < target) {
      while (i < t.n && t.items[i].wosize != 0)
        i++;
      if (i == t.n)
        break;
      uint64_t r = tu_next(&rng);
      size_t wosize = r % 1024 == 0 ? 300 + (size_t)(r >> 12) % 4000
                                    : 1 + (size_t)(r >> 12) % 20;
      unsigned tag = (r >> 40) % 8 == 0 ? PH_TAG_RAW : 0;
      if (ru_put(&t, i, wosize, tag, tu_next(&rng)) != PH_OK)
        fail_msg("cycle %ld: allocation failed: %d", c, ph_last_error(d));
    }
    ph_stats st;
    assert_int_equal(ph_stats_get(h, &st), PH_OK);
    if (st.committed_bytes > heap_peak)
      heap_peak = st.committed_bytes;
    for (size_t k = 0; k < t.n; k++)
      if (tu_below(&rng, 2) == 0)
        ru_drop(&t, k);
    assert_int_equal(ph_compact(d), PH_OK);
    long m = tu_maps_lines();
    assert_int_equal(ph_stats_get(h, &st), PH_OK);
    unsigned chunks = ru_heap_chunks(h);
    if (st.mappings != chunks)
      fail_msg("cycle %ld: stats.mappings %llu, chunks %u", c,
               (unsigned long long)st.mappings, chunks);
    if (TU_MAPS_EXACT && m > base + MAPS_SLACK)
      fail_msg("cycle %ld: %ld mappings, baseline %ld + %d", c, m, base,
               MAPS_SLACK);
    maps_min = m < maps_min ? m : maps_min;
    maps_max = m > maps_max ? m : maps_max;
    map_lo = st.mappings < map_lo ? st.mappings : map_lo;
    map_hi = st.mappings > map_hi ? st.mappings : map_hi;
    if (c % 10 == 9 || c == cycles - 1) {
      if (ph_verify(d, why, sizeof why) != PH_OK)
        fail_msg("cycle %ld: %s", c, why);
      size_t bad = ru_table_check(&t, why, sizeof why);
      if (bad)
        fail_msg("cycle %ld: %zu items broken: %s", c, bad, why);
    }
  }
  double secs = now_s() - t0;
  ru_table_fini(&t);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  static ru_ranges rr;
  ru_heap_ranges(h, &rr);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  assert_int_equal(ru_ranges_mapped(&rr), 0);
  long after = tu_maps_lines();
  if (TU_MAPS_EXACT && after != base)
    fail_msg("after destroy %ld mappings, baseline %ld", after, base);
  print_message(
      "mapsoak: release=%s: %ld cycles, peak %llu MB committed, %.1f s; "
      "process maps min %ld max %ld (baseline %ld, bound %ld); heap "
      "mappings min %llu max %llu; after destroy %ld\n",
      release == PH_RELEASE_UNMAP ? "unmap" : "decommit", cycles,
      (unsigned long long)(heap_peak >> 20), secs, maps_min, maps_max, base,
      base + MAPS_SLACK, (unsigned long long)map_lo, (unsigned long long)map_hi,
      after);
}

static long cycles(void) {
  return ru_env_long("POOLHEAP_SOAK_CYCLES", CI_CYCLES);
}
static long peak_mb(void) {
  return ru_env_long("POOLHEAP_SOAK_PEAK_MB", CI_PEAK_MB);
}

static void test_soak_decommit(void **state) {
  soak(PH_RELEASE_DECOMMIT, cycles(), peak_mb());
}

/* UNMAP at a third of the cycles: it must stay bounded too. */
static void test_soak_unmap(void **state) {
  long c = cycles() / 3;
  soak(PH_RELEASE_UNMAP, c < 10 ? 10 : c, peak_mb());
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_soak_decommit),
      cmocka_unit_test(test_soak_unmap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
