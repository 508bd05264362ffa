/* tests/test_pacing_limits.c -- refused requests leave the heap as it was,
 * pacing charges what is allocated, large blocks commit only their pages
 * (DESIGN.md: heap.chunk.refuse, heap.pacing, heap.large.commit).
 *
 * Internal test: includes api/api.h for the OS layer's fault
 * injection and page size. */
#include "test_util.h"

#include "api/api.h"

static ph_heap *mk(size_t pool_size, size_t heap_limit, unsigned gc_percent,
                   ph_release_mode release) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = pool_size;
  cfg.heap_limit = heap_limit;
  cfg.gc_percent = gc_percent;
  cfg.release = release;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  return h;
}

static ph_stats stats(ph_heap *h) {
  ph_stats s;
  assert_int_equal(ph_stats_get(h, &s), PH_OK);
  return s;
}

static void verify_ok(ph_domain *d) {
  char why[256] = "";
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("ph_verify: %s", why);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The heap's footprint must not change across a refused request. */
static void same_footprint(const ph_stats *a, const ph_stats *b,
                           const char *what) {
  if (a->reserved_bytes != b->reserved_bytes || a->mappings != b->mappings ||
      a->committed_bytes != b->committed_bytes ||
      a->large_bytes != b->large_bytes)
    fail_msg(
        "%s: reserved %llu -> %llu, mappings %llu -> %llu, committed "
        "%llu -> %llu, large %llu -> %llu",
        what, (unsigned long long)a->reserved_bytes,
        (unsigned long long)b->reserved_bytes, (unsigned long long)a->mappings,
        (unsigned long long)b->mappings, (unsigned long long)a->committed_bytes,
        (unsigned long long)b->committed_bytes,
        (unsigned long long)a->large_bytes, (unsigned long long)b->large_bytes);
}

/* Under heap_limit, requests that can never fit (8 TiB, 16 GiB) fail with
 * PH_ENOMEM and reserve nothing: reserved_bytes and mappings are as before,
 * and the heap still allocates and verifies. */
static void test_refused_large_reserves_nothing(void **state) {
  (void)state;
  ph_heap *h = mk(32 << 10, 64 << 20, 100, PH_RELEASE_DECOMMIT);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  assert_true(ph_is_block(ph_alloc(d, 1000, 0)));
  const size_t sizes[] = {PH_MAX_WOSIZE, (size_t)2 << 30 /* 16 GiB */,
                          (size_t)9 << 20 /* 72 MiB */};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    ph_stats s0 = stats(h);
    assert_int_equal(ph_alloc(d, sizes[i], PH_TAG_RAW), 0);
    assert_int_equal(ph_last_error(d), PH_ENOMEM);
    ph_stats s1 = stats(h);
    char what[64];
    snprintf(what, sizeof what, "refused %zu words", sizes[i]);
    same_footprint(&s0, &s1, what);
  }
  uint64_t t0 = now_ns();
  assert_int_equal(ph_collect(d), PH_OK);
  uint64_t t1 = now_ns();
  ph_stats s;
  assert_int_equal(ph_stats_get(h, &s), PH_OK);
  uint64_t t2 = now_ns();
  print_message("after the refusals: reserved %llu bytes, collect %.3f ms, "
                "stats %.3f ms\n",
                (unsigned long long)s.reserved_bytes, (t1 - t0) / 1e6,
                (t2 - t1) / 1e6);
  assert_true(s.reserved_bytes <= (64u << 20));
  /* what fits still works */
  ph_value v = ph_alloc(d, (size_t)4 << 20, PH_TAG_RAW); /* 32 MiB */
  assert_true(ph_is_block(v));
  verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* Without heap_limit, a request beyond what the machine can commit is
 * refused the same way. */
static void test_refused_beyond_machine(void **state) {
  (void)state;
  ph_heap *h = mk(32 << 10, 0, 100, PH_RELEASE_DECOMMIT);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  ph_stats s0 = stats(h);
  assert_int_equal(ph_alloc(d, PH_MAX_WOSIZE, PH_TAG_RAW), 0);
  assert_int_equal(ph_last_error(d), PH_ENOMEM);
  ph_stats s1 = stats(h);
  same_footprint(&s0, &s1, "refused PH_MAX_WOSIZE without heap_limit");
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* A chunk reserved for a request whose commit the OS then refuses is
 * released again (here: every commit refused by fault injection). */
static void test_failed_commit_releases_reservation(void **state) {
  (void)state;
  const size_t sizes[] = {(size_t)8 << 20 /* 64 MiB large */, 1 /* pool */};
  for (size_t i = 0; i < 2; i++) {
    ph_heap *h = mk(32 << 10, 0, 100, PH_RELEASE_DECOMMIT);
    ph_domain *d;
    assert_int_equal(ph_domain_attach(h, &d), PH_OK);
    if (sizes[i] == 1) { /* every unit of the first chunk a pool */
      while (stats(h).pool_bytes < stats(h).reserved_bytes) {
        ph_value v = ph_alloc(d, 200, PH_TAG_RAW);
        assert_true(ph_is_block(v));
        ph_root(d, v);
      }
    }
    ph_stats s0 = stats(h);
    ph_os_fault_set(PH_OS_OP_COMMIT, 1, 1);
    ph_value v = 0;
    for (int k = 0; k < 100000; k++) {
      v = ph_alloc(d, sizes[i] == 1 ? 200 : sizes[i], PH_TAG_RAW);
      if (!v)
        break;
      ph_root(d, v);
    }
    uint64_t hits = ph_os_fault_hits();
    ph_os_fault_set(0, 0, 0);
    assert_true(hits > 0);
    assert_int_equal(v, 0);
    assert_int_equal(ph_last_error(d), PH_ENOMEM);
    ph_stats s1 = stats(h);
    if (s1.reserved_bytes != s0.reserved_bytes || s1.mappings != s0.mappings)
      fail_msg("refused commit (%s): reserved %llu -> %llu, mappings %llu -> "
               "%llu",
               sizes[i] == 1 ? "pool" : "large",
               (unsigned long long)s0.reserved_bytes,
               (unsigned long long)s1.reserved_bytes,
               (unsigned long long)s0.mappings,
               (unsigned long long)s1.mappings);
    verify_ok(d);
    assert_int_equal(ph_domain_detach(d), PH_OK);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

/* Allocate `bytes` of garbage in the given wosizes, round robin; stop early
 * once more than max_collections happened.  Returns the collections. */
static uint64_t churn(ph_heap *h, ph_domain *d, const size_t *wo, size_t nwo,
                      uint64_t bytes, uint64_t max_collections) {
  uint64_t c0 = stats(h).collections, done = 0;
  for (size_t k = 0; done < bytes; k++) {
    size_t w = wo[k % nwo];
    assert_true(ph_is_block(ph_alloc(d, w, PH_TAG_RAW)));
    done += (w + 1) * 8;
    if ((k & 1023) == 0 && stats(h).collections - c0 > max_collections)
      break;
  }
  return stats(h).collections - c0;
}

/* heap.pacing: with 8 size classes in use, the collections per allocated
 * MiB do not depend on the pool size (at most one per MiB with a 4 MiB
 * threshold), and pacing still collects. */
static void test_pacing_independent_of_pool_size(void **state) {
  (void)state;
  const size_t wo[8] = {1, 3, 7, 15, 31, 63, 127, 250};
  const size_t pools[] = {32 << 10, 256 << 10, 1 << 20, 4 << 20};
  const uint64_t mib = 16;
  for (size_t i = 0; i < sizeof pools / sizeof *pools; i++) {
    ph_heap *h = mk(pools[i], 0, 100, PH_RELEASE_DECOMMIT);
    ph_domain *d;
    assert_int_equal(ph_domain_attach(h, &d), PH_OK);
    uint64_t t0 = now_ns();
    uint64_t n = churn(h, d, wo, 8, mib << 20, mib);
    print_message("pool %zu KiB: %llu collections for %llu MiB (%.1f ms)\n",
                  pools[i] >> 10, (unsigned long long)n,
                  (unsigned long long)mib, (now_ns() - t0) / 1e6);
    if (n > mib || n < 1)
      fail_msg("pool %zu KiB: %llu collections for %llu MiB", pools[i] >> 10,
               (unsigned long long)n, (unsigned long long)mib);
    assert_int_equal(ph_domain_detach(d), PH_OK);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

typedef struct mt_ctx {
  ph_heap *h;
  uint64_t bytes; /* per domain */
  pthread_barrier_t round;
} mt_ctx;

/* Domains allocate in lockstep rounds (64 blocks in each of the 16 smallest
 * classes, then a barrier), so that they really interleave even on a
 * machine with fewer cores than domains. */
static void *mt_worker(void *arg) {
  tu_thread_arg *a = arg;
  mt_ctx *x = a->user;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(x->h, &d), PH_OK);
  uint64_t per_round = 0;
  for (unsigned k = 0; k < 16; k++)
    per_round += (uint64_t)64 * x->h->class_wsize[k] * 8;
  tu_dbarrier(d, &x->round);
  for (uint64_t done = 0; done < x->bytes; done += per_round) {
    for (unsigned k = 0; k < 16; k++)
      for (unsigned j = 0; j < 64; j++)
        assert_true(
            ph_is_block(ph_alloc(d, x->h->class_wsize[k] - 1, PH_TAG_RAW)));
    tu_dbarrier(d, &x->round);
  }
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

/* heap.pacing: 4 domains with 256 KiB pools and 16 classes each collect no
 * more often per allocated MiB than one domain does (at most one per MiB). */
static void test_pacing_independent_of_domains(void **state) {
  (void)state;
  const unsigned nd = 4;
  ph_heap *h = mk(256 << 10, 0, 100, PH_RELEASE_DECOMMIT);
  /* not scaled down under TSan: the domains' caches hold 16 MiB of room,
   * and the figure needs more allocated than that (about 0.3 s there) */
  mt_ctx x = {.h = h, .bytes = (uint64_t)8 << 20};
  pthread_barrier_init(&x.round, NULL, nd);
  uint64_t t0 = now_ns();
  tu_threads_run(nd, mt_worker, &x);
  ph_stats s = stats(h);
  uint64_t mib = s.allocated_bytes >> 20;
  print_message("%u domains: %llu collections for %llu MiB (%.1f ms)\n", nd,
                (unsigned long long)s.collections, (unsigned long long)mib,
                (now_ns() - t0) / 1e6);
  if (s.collections > mib || s.collections < 1)
    fail_msg("%u domains: %llu collections for %llu MiB", nd,
             (unsigned long long)s.collections, (unsigned long long)mib);
  pthread_barrier_destroy(&x.round);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static size_t page_round(size_t b) {
  size_t pg = ph_os_page_size();
  return (b + pg - 1) / pg * pg;
}

/* heap.large.commit: with 4 MiB pools a 256 KiB large block (the smallest:
 * one field above the top medium class) commits (and charges against
 * heap_limit) its pages, not its 4 MiB unit: 64 of them fit a 32 MiB
 * heap_limit, the heap verifies, and when they die their pages go back. */
static void test_large_commits_its_pages(void **state) {
  (void)state;
  const size_t pool = 4 << 20, wo = PH_MEDIUM_TOP_WSIZE;
  const size_t pages = page_round(PH_LARGE_HDR + 8 + wo * 8);
  ph_heap *h = mk(pool, 32 << 20, 100, PH_RELEASE_DECOMMIT);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  ph_stats s0 = stats(h);
  size_t m = ph_scope_open(d);
  ph_value v = ph_alloc(d, wo, PH_TAG_RAW);
  assert_true(ph_is_block(v));
  ph_root(d, v);
  ph_stats s1 = stats(h);
  print_message("one %zu-word large block: committed +%llu bytes\n", wo,
                (unsigned long long)(s1.committed_bytes - s0.committed_bytes));
  assert_int_equal(s1.committed_bytes - s0.committed_bytes, pages);
  assert_int_equal(s1.large_bytes, pages);
  for (int i = 1; i < 64; i++) {
    ph_value b = ph_alloc(d, wo, i % 2 ? PH_TAG_RAW : 0);
    if (!ph_is_block(b))
      fail_msg("large block %d refused (error %d) under a 32 MiB heap_limit", i,
               ph_last_error(d));
    ph_root(d, b);
  }
  ph_stats s2 = stats(h);
  assert_int_equal(s2.large_bytes, 64 * pages);
  assert_int_equal(s2.committed_bytes,
                   s2.pool_bytes + s2.large_bytes + s2.free_pool_bytes);
  verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats s3 = stats(h);
  assert_int_equal(s3.large_bytes, 0);
  assert_int_equal(s3.committed_bytes, s0.committed_bytes);
  verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* heap.large.commit: a large block placed in a free committed unit gives
 * the unit's tail back; when it dies, the unit's pages go back too. */
static void test_large_in_committed_unit(void **state) {
  (void)state;
  /* the smallest large block (above the top medium class) in one unit */
  const size_t pool = 1 << 20, wo = PH_MEDIUM_TOP_WSIZE;
  const size_t pages = page_round(PH_LARGE_HDR + 8 + wo * 8);
  ph_heap *h = mk(pool, 0, 0, PH_RELEASE_KEEP);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  for (int i = 0; i < 4000; i++) /* garbage: a few pools */
    assert_true(ph_is_block(ph_alloc(d, 100, PH_TAG_RAW)));
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats s0 = stats(h);
  assert_true(s0.free_pool_bytes >= pool);
  size_t m = ph_scope_open(d);
  ph_value v = ph_alloc(d, wo, 0);
  assert_true(ph_is_block(v));
  ph_root(d, v);
  ph_stats s1 = stats(h);
  /* it took the lowest free unit, which was committed */
  assert_int_equal(s1.committed_bytes, s0.committed_bytes - pool + pages);
  assert_int_equal(s1.large_bytes, pages);
  assert_int_equal(s1.free_pool_bytes, s0.free_pool_bytes - pool);
  verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats s2 = stats(h);
  assert_int_equal(s2.large_bytes, 0);
  assert_int_equal(s2.committed_bytes, s0.committed_bytes - pool);
  verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* heap.large.commit: if the OS refuses to take back a dead large block's
 * partly committed unit, the block stays (its fields, which point at blocks
 * freed by the same sweep, are no longer scanned: the heap verifies), and a
 * later collection frees it. */
static void test_large_free_refused_keeps_block(void **state) {
  (void)state;
  const size_t wo = PH_MEDIUM_TOP_WSIZE; /* the smallest large block */
  const size_t pages = page_round(PH_LARGE_HDR + 8 + wo * 8);
  ph_heap *h = mk(4 << 20, 0, 0, PH_RELEASE_KEEP);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *big = ph_root(d, ph_alloc(d, wo, 0));
  assert_true(ph_is_block(*big));
  for (size_t i = 0; i < wo; i++) /* every field points at a small block */
    ph_set_field(*big, i, ph_alloc(d, 3, 0));
  assert_int_equal(stats(h).large_bytes, pages);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  ph_os_fault_set(PH_OS_OP_DECOMMIT, 1, 1);
  assert_int_equal(ph_collect(d), PH_OK);
  uint64_t hits = ph_os_fault_hits();
  ph_os_fault_set(0, 0, 0);
  assert_true(hits > 0);
  ph_stats s = stats(h);
  assert_int_equal(s.large_bytes, pages); /* kept */
  assert_int_equal(s.live_bytes, 0);
  verify_ok(d);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(stats(h).large_bytes, 0);
  verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refused_large_reserves_nothing),
      cmocka_unit_test(test_refused_beyond_machine),
      cmocka_unit_test(test_failed_commit_releases_reservation),
      cmocka_unit_test(test_pacing_independent_of_pool_size),
      cmocka_unit_test(test_pacing_independent_of_domains),
      cmocka_unit_test(test_large_commits_its_pages),
      cmocka_unit_test(test_large_in_committed_unit),
      cmocka_unit_test(test_large_free_refused_keeps_block),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
