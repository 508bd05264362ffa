/* tests/test_compact_scratch.c -- a compaction gives its scratch back
 * (os.scratch.gone): the C allocator's heap is as large after it as before.
 *
 * OCaml's programs free big malloc'd blocks (a 16 MiB Bigarray in
 * bench/peers/frag.ml W1) before Gc.compact; glibc then raises its mmap
 * threshold to that size and its trim threshold to twice it, so every array
 * of a compaction's plan and records came from its brk heap, and what the
 * compaction freed stayed there, resident (W1: about 250 KB of RSS after
 * Gc.compact that stock OCaml does not have).  This case does the same: it
 * frees a 16 MiB block, builds a fragmented pool heap (1 block in 16 kept),
 * compacts it with one participant and compares glibc's heap size
 * (mallinfo2's arena) before and after.  What a compaction keeps for the
 * next one (the participants' state, the plan's header: under 16 KiB) may
 * still come from malloc.
 *
 * Under the sanitizers malloc is theirs and mallinfo2 says nothing: the case
 * runs, the check on arena does not. */
#include "tests/pools_util.h"

#include <malloc.h>

enum { RAW = 251 }; /* no_scan_tag: no block holds a value */

static void one_barrier(void *user) {
  (void)user; /* one participant */
}

static void compaction_leaves_malloc_heap(void **state) {
  (void)state;
  /* glibc's dynamic thresholds go up as in an OCaml program that freed a
   * Bigarray (a chunk it mapped for itself, <= 32 MiB) */
  void *volatile big = malloc((size_t)16 << 20);
  assert_non_null(big);
  free(big);

  php_config cfg;
  php_config_init(&cfg);
  php_heap *h = NULL;
  php_owner *o = NULL;
  assert_int_equal(php_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  /* colours: unmarked 0 (live at the compaction), garbage 2 */
  assert_int_equal(php_set_colours(h, 2), PH_OK);
  size_t n = tu_scale((size_t)1 << 21, 16); /* 3-word blocks: 64 MiB */
  for (size_t i = 0; i < n; i++) {
    unsigned colour = i % 16 == 0 ? 0 : 2;
    ph_value v = php_alloc(o, 3, (colour << PHP_HD_COLOUR_SHIFT) | RAW);
    assert_true(v != 0);
  }

  php_compact_ops ops = {.nparts = 1,
                         .barrier = one_barrier,
                         .live_colours = 1u << 0,
                         .no_scan_tag = RAW};
  struct mallinfo2 m0 = mallinfo2();
  assert_int_equal(php_compact_stw(h, 0, &ops), PH_OK);
  struct mallinfo2 m1 = mallinfo2();

  php_heap_stats st;
  assert_int_equal(php_heap_stats_get(h, &st), PH_OK);
  assert_true(st.evacuated_pools > 0); /* it planned and moved */
  tu_pools_verify_ok(h);
  if (!TU_ASAN && !TU_TSAN) {
    size_t grew = m1.arena > m0.arena ? m1.arena - m0.arena : 0;
    if (grew > 16384)
      fail_msg("the compaction grew malloc's heap by %zu bytes "
               "(arena %zu -> %zu)",
               grew, m0.arena, m1.arena);
  }
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(compaction_leaves_malloc_heap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
