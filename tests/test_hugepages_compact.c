/* tests/test_hugepages_compact.c -- compaction gives memory back with huge
 * pages on (issue 13, item 5; DESIGN.md compact.choose.ranges).
 *
 * With huge pages the release returns only whole 2 MiB ranges.  A W1-like
 * heap (N small blocks of 1..16 fields, 10% kept at random, linked to each
 * other) is built, collected and compacted once with PH_HUGE_OFF and once
 * with PH_HUGE_TRANSPARENT, from the same seed (printed; POOLHEAP_SEED
 * repeats it).  With transparent huge pages the compaction must release at
 * least 70% of what it releases with normal pages (released_bytes and the
 * drop of committed bytes), the graph must be intact (checksum over every
 * kept block, its fields and the ids of the blocks it points to), ph_verify
 * must pass, and a second compaction must move nothing.  When no huge page
 * is reserved, PH_HUGE_EXPLICIT falls back to normal pages and its plan
 * must be the normal one: the same bytes moved and released as PH_HUGE_OFF.
 */
#include "test_util.h"

#define KEEP_PER_MILLE 100
#define MAX_FIELDS 16

typedef struct run_result {
  uint64_t released, committed_drop, evacuated, evacuated_blocks;
  uint64_t second_evacuated;
  uint64_t committed_before, committed_after;
  long rss_before_kb, rss_after_kb;
  uint64_t sum_before, sum_after;
} run_result;

/* Every kept block in root order: its size, its id (field 0) and, for each
 * other field, the id of the block it points to or the immediate. */
static uint64_t checksum(ph_value r, size_t n) {
  uint64_t h = 0x243f6a8885a308d3ull;
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_field(r, i);
    if (!ph_is_block(b))
      continue;
    size_t w = ph_wosize(b);
    h = (h ^ w) * 0x100000001b3ull;
    for (size_t j = 0; j < w; j++) {
      ph_value f = ph_field(b, j);
      uint64_t x = ph_is_block(f) ? (uint64_t)ph_int_val(ph_field(f, 0)) << 1
                                  : (uint64_t)f;
      h = (h ^ x) * 0x100000001b3ull;
    }
  }
  return h;
}

static run_result run(ph_huge_mode mode, size_t n) {
  run_result res = {0};
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.huge_pages = mode;
  cfg.gc_percent = 0; /* only the collections of the test */
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  char why[256];
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t mark = ph_scope_open(d);
  ph_value *R = ph_root(d, ph_alloc(d, n, 0));
  assert_non_null(R);
  assert_true(ph_is_block(*R));
  size_t *kept = malloc(n * sizeof *kept);
  assert_non_null(kept);
  size_t nkept = 0;
  tu_rng rng;
  tu_rng_init(&rng, 5); /* the same draws in every mode */
  for (size_t i = 0; i < n; i++) {
    size_t w = 1 + tu_below(&rng, MAX_FIELDS);
    int keep = tu_below(&rng, 1000) < KEEP_PER_MILLE;
    ph_value b = ph_alloc(d, w, 0);
    assert_true(b != 0);
    ph_set_field(b, 0, ph_val_int((intptr_t)i));
    for (size_t j = 1; j < w; j++)
      if (nkept > 0 && tu_below(&rng, 2))
        ph_set_field(b, j, ph_field(*R, kept[tu_below(&rng, nkept)]));
      else
        ph_set_field(b, j, ph_val_int((intptr_t)j));
    ph_set_field(*R, i, b);
    if (keep)
      kept[nkept++] = i;
  }
  /* drop the others (kept blocks point only to kept blocks) */
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (k < nkept && kept[k] == i)
      k++;
    else
      ph_set_field(*R, i, ph_val_int(0));
  free(kept);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats st;
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  res.committed_before = st.committed_bytes;
  res.rss_before_kb = tu_vmrss_kb();
  res.sum_before = checksum(*R, n);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  res.released = st.released_bytes;
  res.evacuated = st.evacuated_bytes;
  res.evacuated_blocks = st.evacuated_blocks;
  res.committed_after = st.committed_bytes;
  res.committed_drop = res.committed_before - res.committed_after;
  res.rss_after_kb = tu_vmrss_kb();
  res.sum_after = checksum(*R, n);
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("verify (huge_pages %d): %s", (int)mode, why);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  res.second_evacuated = st.evacuated_bytes;
  assert_int_equal(checksum(*R, n), res.sum_before);
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  print_message("huge_pages %d: committed %.1f -> %.1f MiB, released %.1f "
                "MiB, moved %.2f MiB, RSS %.1f -> %.1f MiB\n",
                (int)mode, res.committed_before / 1048576.0,
                res.committed_after / 1048576.0, res.released / 1048576.0,
                res.evacuated / 1048576.0, res.rss_before_kb / 1024.0,
                res.rss_after_kb / 1024.0);
  return res;
}

static size_t blocks(void) {
  return tu_scale(400000, 4);
}

static void transparent_releases_like_normal_pages(void **state) {
  (void)state;
  size_t n = blocks();
  run_result off = run(PH_HUGE_OFF, n);
  run_result thp = run(PH_HUGE_TRANSPARENT, n);
  assert_int_equal(off.sum_after, off.sum_before);
  assert_int_equal(thp.sum_after, thp.sum_before);
  assert_int_equal(thp.sum_before, off.sum_before); /* the same heap */
  assert_int_equal(off.second_evacuated, 0);
  assert_int_equal(thp.second_evacuated, 0);
  assert_true(off.released > 0);
  print_message("transparent / off: released %.0f%%, committed drop %.0f%%, "
                "moved %.0f%%\n",
                100.0 * thp.released / off.released,
                100.0 * thp.committed_drop / off.committed_drop,
                100.0 * thp.evacuated / off.evacuated);
  assert_true(thp.released * 10 >= off.released * 7);
  assert_true(thp.committed_drop * 10 >= off.committed_drop * 7);
}

static void explicit_fallback_plans_like_normal_pages(void **state) {
  (void)state;
  if (tu_meminfo("HugePages_Free") != 0) {
    print_message("skipped: %ld huge pages are free, PH_HUGE_EXPLICIT would "
                  "not fall back\n",
                  tu_meminfo("HugePages_Free"));
    skip();
  }
  size_t n = blocks() / 4;
  run_result off = run(PH_HUGE_OFF, n);
  run_result ex = run(PH_HUGE_EXPLICIT, n);
  assert_int_equal(ex.sum_after, off.sum_before);
  /* equally dense pools may be ordered differently (other addresses), so
   * the blocks moved, not their bytes, are equal */
  assert_int_equal(ex.evacuated_blocks, off.evacuated_blocks);
  assert_int_equal(ex.released, off.released);
}

/* ------------------------------------------- two domains, several rounds */
/* Two domains (and a GC helper) churn their own root arrays with small and
 * large blocks under transparent huge pages, compacting at random points;
 * between rounds, with both stopped, domain 0 hashes both graphs, compacts
 * twice and checks the hash, ph_verify, and that the second compaction
 * moved nothing (a plan chosen from ranges is stable). */
#define CH_DOMAINS 2
#define CH_LARGE 5000 /* fields: more than a 32 KiB pool */

typedef struct churn {
  ph_heap *h;
  pthread_barrier_t bar;
  ph_value *R[CH_DOMAINS];
  size_t n, rounds;
  uint64_t released;
} churn;

static uint64_t graph_hash(ph_value *const *R, size_t nr, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t r = 0; r < nr; r++)
    for (size_t i = 0; i < n; i++) {
      ph_value b = ph_field(*R[r], i);
      if (!ph_is_block(b))
        continue;
      size_t w = ph_wosize(b);
      h = (h ^ w) * 0x100000001b3ull;
      for (size_t j = 0; j < w; j++) {
        ph_value f = ph_field(b, j);
        uint64_t x = ph_is_block(f)
                         ? (uint64_t)ph_int_val(ph_field(f, 0)) << 1 |
                               (uint64_t)ph_wosize(f) << 40
                         : (uint64_t)f;
        h = (h ^ x) * 0x100000001b3ull;
      }
    }
  return h;
}

static void *churn_main(void *arg) {
  tu_thread_arg *a = arg;
  churn *c = a->user;
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(c->h, &d), PH_OK);
  size_t mark = ph_scope_open(d);
  ph_value *R = ph_root(d, ph_alloc(d, c->n, 0));
  assert_non_null(R);
  c->R[a->index] = R;
  tu_rng rng;
  tu_rng_init(&rng, 100 + a->index);
  intptr_t id = (intptr_t)a->index << 40;
  for (size_t round = 0; round < c->rounds; round++) {
    for (size_t k = 0; k < c->n; k++) {
      size_t i = tu_below(&rng, c->n);
      unsigned what = (unsigned)tu_below(&rng, 1000);
      if (what < (round % 2 ? 950u : 300u)) { /* drop: grow, shrink, ... */
        ph_set_field(*R, i, ph_val_int(0));
        continue;
      }
      size_t w =
          round == 0 && what == 999 ? CH_LARGE : 1 + tu_below(&rng, MAX_FIELDS);
      ph_value b = ph_alloc(d, w, 0);
      assert_true(b != 0);
      ph_set_field(b, 0, ph_val_int(id++));
      for (size_t j = 1; j < w && j < 64; j++) { /* one in 8 may point */
        ph_value t = tu_below(&rng, 8) ? 0 : ph_field(*R, tu_below(&rng, c->n));
        ph_set_field(b, j, ph_is_block(t) ? t : ph_val_int((intptr_t)j));
      }
      ph_set_field(*R, i, b);
      if (tu_below(&rng, c->n / 4) == 0)
        assert_int_equal(ph_compact(d), PH_OK);
    }
    tu_dbarrier(d, &c->bar); /* both arrays are still */
    if (a->index == 0) {
      char why[256];
      uint64_t before = graph_hash(c->R, CH_DOMAINS, c->n);
      assert_int_equal(ph_compact(d), PH_OK);
      ph_stats st;
      assert_int_equal(ph_stats_get(c->h, &st), PH_OK);
      c->released += st.released_bytes;
      assert_int_equal(ph_compact(d), PH_OK);
      assert_int_equal(ph_stats_get(c->h, &st), PH_OK);
      assert_int_equal(st.evacuated_bytes, 0);
      if (ph_verify(d, why, sizeof why) != PH_OK)
        fail_msg("verify: %s", why);
      assert_int_equal(graph_hash(c->R, CH_DOMAINS, c->n), before);
    }
    tu_dbarrier(d, &c->bar);
  }
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void transparent_churn_two_domains(void **state) {
  (void)state;
  churn c = {.n = tu_scale(60000, 4), .rounds = 4};
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.huge_pages = PH_HUGE_TRANSPARENT;
  cfg.gc_helpers = 1;
  assert_int_equal(ph_heap_create(&cfg, &c.h), PH_OK);
  assert_int_equal(pthread_barrier_init(&c.bar, NULL, CH_DOMAINS), 0);
  tu_threads_run(CH_DOMAINS, churn_main, &c);
  pthread_barrier_destroy(&c.bar);
  assert_int_equal(ph_heap_destroy(c.h), PH_OK);
  print_message("churn: %zu rounds, %.1f MiB released\n", c.rounds,
                c.released / 1048576.0);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(transparent_releases_like_normal_pages),
      cmocka_unit_test(explicit_fallback_plans_like_normal_pages),
      cmocka_unit_test(transparent_churn_two_domains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
