/* tests/test_faults.c -- OS fault injection (issue 4, item 3).
 *
 * One scenario -- create a heap (pool_size 32 KiB), grow it to several
 * chunks, collect, compact, drop most data, compact (shrink), grow again,
 * compact -- is first run with injection counting but off, which gives the
 * number C of OS calls (reserve, commit, decommit, release) it makes.  It is
 * then run again once for every N in 1..C with the Nth call failing (and,
 * in the sticky variant, every later one too), for the default release mode
 * and for PH_RELEASE_UNMAP (which also releases chunks while running).
 * Every run asserts:
 *   - every public call returned PH_OK or PH_ENOMEM (ph_alloc: 0 with
 *     ph_last_error PH_ENOMEM), and the injected failure really happened;
 *   - ph_verify passes and every item the scenario still holds is intact
 *     (compared word by word with a model kept outside the heap);
 *   - after injection is turned off, ph_heap_destroy brings the process's
 *     /proc/self/maps line count back to where it was before the heap.
 * The number of injection points tried is printed.
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

#define NSLOTS 12000
#define GROW_BYTES (17 * RU_MiB)  /* first growth: 4+4+8(+8) MiB chunks */
#define REGROW_BYTES (5 * RU_MiB) /* after the shrink */
#define MAX_ENOMEM 4              /* a phase stops after this many refusals */

typedef struct run_cfg {
  int release;  /* ph_release_mode */
  uint64_t nth; /* 0: counting run */
  int sticky;
  unsigned mask; /* kinds of OS calls counted (0: all) */
} run_cfg;

typedef struct run_out {
  uint64_t calls;  /* OS calls counted before destroy */
  uint64_t hits;   /* injected failures */
  uint64_t enomem; /* public calls that returned PH_ENOMEM */
  uint64_t chunks; /* max stats.mappings seen */
  size_t live;     /* items held at the end */
} run_out;

static run_out *cur_out;
static int check_maps = 1; /* 0 while warming up */

/* A public call's result must be PH_OK or PH_ENOMEM. */
static int ok_or_enomem(int err, const char *what, uint64_t nth) {
  if (err != PH_OK && err != PH_ENOMEM)
    fail_msg("%s returned %d (%s) with fault %llu", what, err, ph_strerror(err),
             (unsigned long long)nth);
  if (err == PH_ENOMEM)
    cur_out->enomem++;
  return err;
}

static void note_chunks(ph_heap *h) {
  ph_stats st;
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  if (st.mappings > cur_out->chunks)
    cur_out->chunks = st.mappings;
}

/* Allocate items into empty slots until `bytes` more are held or the
 * phase hit MAX_ENOMEM refusals. */
static void grow(ru_table *t, tu_rng *rng, size_t bytes, uint64_t nth) {
  size_t added = 0, refused = 0;
  size_t i = 0;
  while (added < bytes && refused < MAX_ENOMEM) {
    while (i < t->n && t->items[i].wosize != 0)
      i++;
    if (i == t->n)
      break;
    size_t wosize;
    unsigned tag;
    uint64_t r = tu_next(rng);
    if (r % 256 == 0) { /* large raw: 256 KiB .. 768 KiB */
      wosize = 32768 + (size_t)(r >> 8) % 65536;
      tag = PH_TAG_RAW + (unsigned)((r >> 42) % 5);
    } else if (r % 256 == 1) { /* large scanned: 2.4 KiB .. 32 KiB */
      wosize = 300 + (size_t)(r >> 8) % 3800;
      tag = (unsigned)((r >> 44) % 4);
    } else {
      wosize = 1 + (size_t)(r >> 8) % 48;
      tag = (r >> 40) % 8 == 0 ? PH_TAG_RAW : (unsigned)((r >> 44) % 4);
    }
    int err = ru_put(t, i, wosize, tag, tu_next(rng));
    if (ok_or_enomem(err, "ph_alloc", nth) == PH_OK)
      added += (wosize + 1) * 8;
    else
      refused++;
  }
}

/* Runs the scenario; returns through *out. */
static void scenario(const run_cfg *rc, run_out *out) {
  memset(out, 0, sizeof *out);
  cur_out = out;
  tu_rng rng = {0x5eed0001u};
  char why[256];
  long base = tu_maps_lines();
  assert_true(base > 0);

  ph_os_fault_set(rc->mask ? rc->mask : PH_OS_OP_ALL, rc->nth, rc->sticky);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = 32 << 10;
  cfg.release = (ph_release_mode)rc->release;
  ph_heap *h = NULL;
  int err = ok_or_enomem(ph_heap_create(&cfg, &h), "ph_heap_create", rc->nth);
  if (err != PH_OK) {
    out->calls = ph_os_fault_calls();
    out->hits = ph_os_fault_hits();
    ph_os_fault_set(0, 0, 0);
    if (TU_MAPS_EXACT && check_maps && tu_maps_lines() != base)
      fail_msg("failed create left %ld mappings (was %ld)", tu_maps_lines(),
               base);
    return;
  }
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  ru_table t;
  err = ok_or_enomem(ru_table_init(&t, d, NSLOTS), "ph_alloc(table)", rc->nth);
  if (err == PH_OK) {
    /* 1. grow to several chunks */
    grow(&t, &rng, GROW_BYTES, rc->nth);
    note_chunks(h);
    /* 2. collect, compact */
    ok_or_enomem(ph_collect(d), "ph_collect", rc->nth);
    ok_or_enomem(ph_compact(d), "ph_compact", rc->nth);
    /* 3. drop most data, compact: the heap shrinks.  Everything allocated
     * in the second half goes (its chunks become free and are unmapped in
     * PH_RELEASE_UNMAP mode); 85% of the first half, at random, goes too
     * (its pools become sparse and are evacuated). */
    size_t used = 0;
    while (used < t.n && t.items[used].wosize != 0)
      used++;
    for (size_t i = 0; i < t.n; i++)
      if (i >= used / 2 || tu_below(&rng, 100) < 85)
        ru_drop(&t, i);
    ok_or_enomem(ph_compact(d), "ph_compact(shrink)", rc->nth);
    note_chunks(h);
    /* 4. grow again, collect, compact */
    grow(&t, &rng, REGROW_BYTES, rc->nth);
    note_chunks(h);
    ok_or_enomem(ph_collect(d), "ph_collect", rc->nth);
    ok_or_enomem(ph_compact(d), "ph_compact", rc->nth);
    note_chunks(h);
  }
  /* Still under injection: the heap must verify and the data be intact. */
  err = ph_verify(d, why, sizeof why);
  if (err != PH_OK)
    fail_msg("ph_verify: %s (fault %llu%s)", why, (unsigned long long)rc->nth,
             rc->sticky ? " sticky" : "");
  if (t.items != NULL) {
    size_t bad = ru_table_check(&t, why, sizeof why);
    if (bad != 0)
      fail_msg("%zu items broken, first: %s (fault %llu%s)", bad, why,
               (unsigned long long)rc->nth, rc->sticky ? " sticky" : "");
    out->live = t.live;
  }
  out->calls = ph_os_fault_calls();
  out->hits = ph_os_fault_hits();
  ph_os_fault_set(0, 0, 0);
  /* Injection off: the heap is fully usable again. */
  if (t.items != NULL) {
    err = ph_compact(d);
    assert_int_equal(err, PH_OK);
    assert_int_equal(ru_table_check(&t, why, sizeof why), 0);
    ru_table_fini(&t);
  }
  err = ph_verify(d, why, sizeof why);
  if (err != PH_OK)
    fail_msg("ph_verify after injection: %s (fault %llu)", why,
             (unsigned long long)rc->nth);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  static ru_ranges rr;
  ru_heap_ranges(h, &rr);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  long left = ru_ranges_mapped(&rr);
  if (left != 0)
    fail_msg("%ld of the heap's %u reservations still mapped after destroy",
             left, rr.n);
  long now = tu_maps_lines();
  if (TU_MAPS_EXACT && check_maps && now != base)
    fail_msg("after destroy %ld mappings, before create %ld (fault %llu%s)",
             now, base, (unsigned long long)rc->nth,
             rc->sticky ? " sticky" : "");
}

/* Warm up the allocator and the sanitizers' own mappings so that the
 * baseline measured by each run is stable. */
static int group_setup(void **state) {
  run_cfg rc = {PH_RELEASE_DECOMMIT, 0, 0, 0};
  run_out out;
  check_maps = 0;
  scenario(&rc, &out);
  rc.sticky = 1;
  rc.nth = 100;
  scenario(&rc, &out);
  check_maps = 1;
  return 0;
}

static uint64_t points_tried;

static void sweep_all(int release, int sticky) {
  run_cfg rc = {release, 0, 0, 0};
  run_out out;
  uint64_t kinds[4];
  for (int k = 0; k < 4; k++) {
    rc.mask = 1u << k;
    scenario(&rc, &out);
    kinds[k] = out.calls;
  }
  rc.mask = 0;
  scenario(&rc, &out);
  uint64_t count = out.calls;
  assert_int_equal(count, kinds[0] + kinds[1] + kinds[2] + kinds[3]);
  if (!sticky)
    print_message("faults: release=%s: %llu reserve, %llu commit, %llu "
                  "decommit, %llu release calls\n",
                  release == PH_RELEASE_UNMAP ? "unmap" : "decommit",
                  (unsigned long long)kinds[0], (unsigned long long)kinds[1],
                  (unsigned long long)kinds[2], (unsigned long long)kinds[3]);
  assert_true(count > 0);
  assert_int_equal(out.hits, 0);
  assert_int_equal(out.enomem, 0);
  /* the scenario really grows to several chunks */
  assert_true(out.chunks >= 4);
  /* Every point in release builds.  PH_DEBUG builds verify the whole heap
   * around every collection, and the sanitizers slow every run down, so
   * there the sticky sweeps (whose neighbouring points behave alike) take
   * every third point, and under ThreadSanitizer the single ones every
   * second. */
  uint64_t step = 1;
  if (TU_DEBUG && sticky)
    step = 3;
  if (TU_TSAN)
    step *= 2;
  uint64_t runs = 0, enomems = 0, min_live = SIZE_MAX;
  for (uint64_t n = 1; n <= count; n += step) {
    rc.nth = n;
    rc.sticky = sticky;
    scenario(&rc, &out);
    if (out.hits == 0)
      fail_msg("fault %llu of %llu never happened", (unsigned long long)n,
               (unsigned long long)count);
    if (!sticky)
      assert_int_equal(out.hits, 1);
    runs++;
    enomems += out.enomem;
    if (out.live < min_live)
      min_live = out.live;
  }
  points_tried += runs;
  print_message("faults: release=%s %s: %llu OS calls, %llu injection points "
                "tried, %llu public calls returned PH_ENOMEM, peak %llu "
                "chunks\n",
                release == PH_RELEASE_UNMAP ? "unmap" : "decommit",
                sticky ? "sticky" : "single", (unsigned long long)count,
                (unsigned long long)runs, (unsigned long long)enomems,
                (unsigned long long)out.chunks);
}

static void test_faults_decommit_single(void **state) {
  sweep_all(PH_RELEASE_DECOMMIT, 0);
}
static void test_faults_decommit_sticky(void **state) {
  sweep_all(PH_RELEASE_DECOMMIT, 1);
}
static void test_faults_unmap_single(void **state) {
  sweep_all(PH_RELEASE_UNMAP, 0);
}
static void test_faults_unmap_sticky(void **state) {
  sweep_all(PH_RELEASE_UNMAP, 1);
}

static int group_teardown(void **state) {
  ph_os_fault_set(0, 0, 0);
  print_message("faults: %llu injection points tried in total\n",
                (unsigned long long)points_tried);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_faults_decommit_single),
      cmocka_unit_test(test_faults_decommit_sticky),
      cmocka_unit_test(test_faults_unmap_single),
      cmocka_unit_test(test_faults_unmap_sticky),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
