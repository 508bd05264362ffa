/* tests/test_alloc.c -- allocation: every size class, pool free lists, large
 * blocks, the statistics that allocation moves, and the census.
 *
 * Internal test: includes api/api.h to find the pool of a block and to
 * read the size-class tables. */
#include "test_util.h"

#include "api/api.h"

static ph_heap *h;
static ph_domain *d;

static int setup(void **state) {
  (void)state;
  h = tu_heap(0);
  return ph_domain_attach(h, &d) == PH_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  int r = ph_domain_detach(d);
  int r2 = ph_heap_destroy(h);
  return r == PH_OK && r2 == PH_OK ? 0 : -1;
}

static ph_pool *pool_of(ph_value v) {
  ph_unit_hdr *u = ph_block_unit(h, v); /* heap.unit.lookup */
  assert_non_null(u);
  assert_int_equal(u->sig, PH_SIG_POOL);
  assert_int_equal(u->kind, PH_U_POOL);
  return (ph_pool *)u;
}

/* The next wosize to try after wo: every small one; in the medium
 * classes each class's smallest, middle and largest wosize. */
static size_t next_wosize(size_t wo) {
  if (wo + 1 > h->max_small_wosize)
    return wo + 1;
  unsigned c = ph_class_of_wosize(h, wo + 1);
  if (c < h->nsmall)
    return wo + 1;
  size_t lo = h->class_wsize[c - 1], hi = h->class_wsize[c] - 1;
  if (wo < (lo + hi) / 2)
    return (lo + hi) / 2;
  return wo < hi ? hi : wo + 1;
}

/* Every wosize of every small class, three of every medium class: header
 * (wosize, tag, color 0), initial field contents, and the pool the block
 * landed in has the right class. */
static void test_alloc_every_size_class(void **state) {
  (void)state;
  size_t m = ph_scope_open(d);
  for (size_t wo = 1; wo <= h->max_small_wosize; wo = next_wosize(wo)) {
    unsigned tags[] = {0, (unsigned)(wo % PH_TAG_RAW), 250, PH_TAG_RAW, 255};
    for (unsigned t = 0; t < sizeof tags / sizeof *tags; t++) {
      ph_value v = ph_alloc(d, wo, tags[t]);
      assert_true(ph_is_block(v));
      assert_int_equal(v % 8, 0);
      assert_int_equal(ph_wosize(v), wo);
      assert_int_equal(ph_tag(v), tags[t]);
      assert_int_equal(ph_hd_color(ph_hd_(v)), PH_WHITE);
      for (size_t i = 0; i < wo; i++)
        assert_int_equal(ph_field(v, i), tags[t] >= PH_TAG_RAW ? 0 : PH_UNIT);
      ph_pool *p = pool_of(v);
      assert_int_equal(p->cls, ph_class_of_wosize(h, wo));
      assert_int_equal(p->owner, ph_domain_index(d));
      /* write every field: the slot must really be that big */
      for (size_t i = 0; i < wo; i++)
        ph_set_field(v, i, ph_val_int((intptr_t)i));
      if (wo % 7 == 0)
        ph_root(d, v);
    }
  }
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
}

/* Raw blocks are zeroed even in slots that held data before (scanned
 * fields filled with junk, freed by a collection, reused). */
static void test_raw_blocks_zeroed_on_reuse(void **state) {
  (void)state;
  size_t nslots = h->class_nslots[ph_class_of_wosize(h, 5)];
  tu_set addrs = {0};
  for (size_t i = 0; i < nslots * 3; i++) {
    ph_value v = ph_alloc(d, 5, 0);
    assert_true(ph_is_block(v));
    for (size_t k = 0; k < 5; k++)
      ph_set_field(v, k, ph_val_int(-1));
    tu_set_add(&addrs, v);
  }
  assert_int_equal(ph_collect(d), PH_OK);
  size_t reused = 0;
  for (size_t i = 0; i < nslots * 3; i++) {
    ph_value v = ph_alloc(d, 5, PH_TAG_RAW + (unsigned)(i % 5));
    assert_true(ph_is_block(v));
    reused += tu_set_has(&addrs, v);
    const unsigned char *b = ph_raw(v);
    for (size_t k = 0; k < 5 * 8; k++)
      assert_int_equal(b[k], 0);
  }
  /* the test is only meaningful if freed slots were handed out again */
  assert_true(reused > 0);
  tu_set_free(&addrs);
}

/* Fill one pool exactly: every slot is handed out once, inside the pool, at
 * slot boundaries; the next allocation opens a second pool.  Then free every
 * other block and check that exactly those slots come back. */
static void test_pool_free_list_every_slot(void **state) {
  (void)state;
  const size_t wo = 3;
  unsigned cls = ph_class_of_wosize(h, wo);
  size_t nslots = h->class_nslots[cls];
  size_t slot_bytes = (size_t)h->class_wsize[cls] * 8;
  ph_stats st0 = tu_stats(h);
  assert_int_equal(st0.pool_bytes, 0);

  ph_value *v = calloc(nslots + 1, sizeof *v);
  assert_non_null(v);
  size_t m = ph_scope_open(d);
  ph_value **slot = calloc(nslots + 1, sizeof *slot);
  assert_non_null(slot);
  tu_set seen = {0};
  ph_pool *p = NULL;
  for (size_t i = 0; i < nslots; i++) {
    v[i] = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v[i]));
    ph_set_field(v[i], 0, ph_val_int((intptr_t)i));
    if (!p)
      p = pool_of(v[i]);
    assert_ptr_equal(pool_of(v[i]), p);
    char *slots = ph_pool_slots(h, p);
    assert_true((char *)v[i] >= slots + 8);
    assert_true((char *)v[i] + wo * 8 <= (char *)p + h->pool_size);
    assert_int_equal(((char *)v[i] - 8 - slots) % slot_bytes, 0);
    assert_true(tu_set_add(&seen, v[i])); /* distinct */
    slot[i] = ph_root(d, v[i]);
  }
  assert_int_equal(p->nslots, nslots);
  ph_stats st = tu_stats(h);
  assert_int_equal(st.pool_bytes, h->pool_size);
  /* the pool is exhausted: the next block comes from a new pool */
  v[nslots] = ph_alloc(d, wo, 0);
  assert_true(ph_is_block(v[nslots]));
  assert_ptr_not_equal(pool_of(v[nslots]), p);
  assert_false(tu_set_has(&seen, v[nslots]));
  st = tu_stats(h);
  assert_int_equal(st.pool_bytes, 2 * h->pool_size);
  assert_int_equal(st.allocated_bytes - st0.allocated_bytes,
                   (nslots + 1) * TU_BYTES(wo));

  /* keep the odd blocks, drop the even ones (and the second pool's) */
  tu_set freed = {0};
  for (size_t i = 0; i < nslots; i += 2) {
    *slot[i] = PH_UNIT;
    tu_set_add(&freed, v[i]);
  }
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  size_t kept = nslots / 2;
  assert_int_equal(st.live_bytes, kept * TU_BYTES(wo));
  assert_int_equal(st.live_blocks, kept);
  assert_int_equal(st.pool_bytes, h->pool_size); /* the second one is empty */
  assert_int_equal(p->nlive, kept);
  assert_int_equal(p->nfree, nslots - kept);
  tu_verify_ok(d);
  /* the freed slots, and only those, are handed out again */
  for (size_t i = 0; i < freed.n; i++) {
    ph_value x = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(x));
    if (!tu_set_has(&freed, x))
      fail_msg("allocation %zu got %p, not a freed slot of the pool", i,
               (void *)x);
    assert_false(tu_set_has(&seen, x) && !tu_set_has(&freed, x));
  }
  /* the kept blocks are untouched */
  for (size_t i = 1; i < nslots; i += 2)
    assert_int_equal(ph_int_val(ph_field(*slot[i], 0)), (intptr_t)i);
  /* now the pool is full again */
  ph_value x = ph_alloc(d, wo, 0);
  assert_ptr_not_equal(pool_of(x), p);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  assert_int_equal(st.live_bytes, 0);
  assert_int_equal(st.pool_bytes, 0);
  tu_set_free(&seen);
  tu_set_free(&freed);
  free(v);
  free(slot);
}

/* heap.sweep.branchless: after a collection, a swept pool's free list goes
 * up through exactly its free slots (header 0), in address order, and ends
 * with 0; its live bits are exactly its allocated slots (none past nslots);
 * survivors are WHITE with their fields intact; nlive and nfree add up.  For
 * pools of a small, a middle and the largest pool class, each slot kept
 * at random (the first and the last slot each way across the cases), then
 * a second collection that frees nothing must give the same list and bits. */
static void check_swept_pool(ph_pool *p, const ph_value *v, const int *keep,
                             size_t n) {
  size_t sb = (size_t)h->class_wsize[p->cls] * 8;
  char *slots = ph_pool_slots(h, p);
  const uint64_t *bits = ph_pool_bits(p);
  size_t live = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value hd = *(ph_value *)(slots + i * sb);
    int bit = (int)(bits[i / 64] >> (i % 64) & 1);
    assert_int_equal(bit, keep[i]);
    assert_int_equal(hd != 0, keep[i]);
    if (keep[i]) {
      assert_int_equal(ph_hd_color(hd), PH_WHITE);
      assert_ptr_equal((char *)v[i] - 8, slots + i * sb);
      assert_int_equal(ph_int_val(ph_field(v[i], 0)), (intptr_t)i);
      live++;
    }
  }
  if (n % 64)
    assert_int_equal(bits[n / 64] >> (n % 64), 0);
  assert_int_equal(p->nlive, live);
  assert_int_equal(p->nfree, n - live);
  /* the free list: every free slot once, going up */
  size_t k = 0, next = 0;
  for (ph_value f = p->free; f; f = *(ph_value *)f, k++) {
    while (next < n && keep[next])
      next++;
    assert_true(next < n);
    assert_ptr_equal((char *)f - 8, slots + next * sb);
    next++;
  }
  while (next < n && keep[next])
    next++;
  assert_int_equal(next, n);
  assert_int_equal(k, n - live);
}

static void test_sweep_free_list_and_bits(void **state) {
  (void)state;
  tu_rng rng;
  tu_rng_init(&rng, 0x5eeb);
  const size_t wos[] = {1, 3, h->max_small_wosize};
  for (unsigned c = 0; c < 4; c++) {
    size_t wo = wos[c % 3];
    unsigned cls = ph_class_of_wosize(h, wo);
    size_t n = h->class_nslots[cls];
    size_t m = ph_scope_open(d);
    ph_value **slot = calloc(n, sizeof *slot);
    ph_value *v = calloc(n, sizeof *v);
    int *keep = calloc(n, sizeof *keep);
    assert_true(slot && v && keep);
    ph_pool *p = NULL;
    for (size_t i = 0; i < n; i++) {
      ph_value x = ph_alloc(d, wo, 0);
      assert_true(ph_is_block(x));
      ph_set_field(x, 0, ph_val_int((intptr_t)i));
      if (!p)
        p = pool_of(x);
      assert_ptr_equal(pool_of(x), p); /* one whole pool, in slot order */
      slot[i] = ph_root(d, x);
      /* the first and last slot kept when c is odd, dropped when even */
      keep[i] = i == 0 || i == n - 1 ? (int)(c & 1) : tu_below(&rng, 3) == 0;
    }
    /* one survivor at least: a pool with none is freed by the sweep (the
     * top class's pool has only 8 slots) */
    keep[n / 2] = 1;
    for (size_t i = 0; i < n; i++)
      if (!keep[i])
        *slot[i] = PH_UNIT;
    assert_int_equal(ph_collect(d), PH_OK);
    for (size_t i = 0; i < n; i++)
      v[i] = keep[i] ? *slot[i] : 0;
    check_swept_pool(p, v, keep, n);
    assert_int_equal(ph_collect(d), PH_OK); /* nothing dies: the same */
    check_swept_pool(p, v, keep, n);
    tu_verify_ok(d);
    assert_int_equal(ph_scope_close(d, m), PH_OK);
    assert_int_equal(ph_collect(d), PH_OK); /* the pool empties */
    free(slot);
    free(v);
    free(keep);
  }
  assert_int_equal(tu_stats(h).pool_bytes, 0);
}

/* The largest pool wosize (the top medium class) is in a pool; one more
 * field is a large block. */
static void test_small_large_boundary(void **state) {
  (void)state;
  size_t max = h->max_small_wosize;
  ph_value a = ph_alloc(d, max, 0);
  ph_value b = ph_alloc(d, max + 1, 0);
  assert_true(ph_is_block(a) && ph_is_block(b));
  assert_int_equal(pool_of(a)->cls, h->nclasses - 1);
  assert_int_equal(ph_unit_of(h, b)->kind, PH_U_LARGE);
  assert_int_equal(ph_wosize(b), max + 1);
  ph_stats st = tu_stats(h);
  assert_true(st.large_bytes >= TU_BYTES(max + 1));
  /* heap.large.commit: its pages are committed, not its whole unit */
  assert_true(st.large_bytes % ph_os_page_size() == 0);
  assert_true(st.large_bytes <
              PH_LARGE_HDR + TU_BYTES(max + 1) + ph_os_page_size());
}

/* Large blocks of several sizes and tags: header, initial contents, every
 * byte writable, accounted in large_bytes; when they die, a collection frees
 * them and gives their memory back (committed_bytes and VmRSS drop). */
static void test_large_blocks_alloc_and_release(void **state) {
  (void)state;
  const size_t sizes[] = {h->max_small_wosize + 1, 40000, 100000,
                          (size_t)1 << 20, (size_t)8 << 20};
  const size_t n = sizeof sizes / sizeof *sizes;
  size_t m = ph_scope_open(d);
  ph_value *slots[5];
  uint64_t total = 0;
  ph_stats st0 = tu_stats(h);
  for (size_t i = 0; i < n; i++) {
    unsigned tag = i % 2 ? PH_TAG_RAW + 2 : (unsigned)i;
    ph_value v = ph_alloc(d, sizes[i], tag);
    assert_true(ph_is_block(v));
    assert_int_equal(ph_unit_of(h, v)->kind, PH_U_LARGE);
    assert_int_equal(ph_wosize(v), sizes[i]);
    assert_int_equal(ph_tag(v), tag);
    for (size_t k = 0; k < sizes[i]; k++)
      if (ph_field(v, k) != (tag >= PH_TAG_RAW ? 0 : PH_UNIT))
        fail_msg("large block %zu field %zu = %#lx", i, k,
                 (unsigned long)ph_field(v, k));
    if (tag >= PH_TAG_RAW)
      memset(ph_raw(v), 0xab, sizes[i] * 8);
    else
      for (size_t k = 0; k < sizes[i]; k++)
        ph_set_field(v, k, ph_val_int((intptr_t)k));
    slots[i] = ph_root(d, v);
    total += TU_BYTES(sizes[i]);
  }
  ph_stats st = tu_stats(h);
  assert_true(st.large_bytes >= total);
  assert_true(st.large_bytes - st0.large_bytes < total + n * 2 * h->pool_size);
  assert_int_equal(st.allocated_bytes - st0.allocated_bytes, total);
  assert_true(st.committed_bytes >= st.large_bytes + st.pool_bytes);
  /* alive across a collection, contents intact */
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  assert_int_equal(st.live_bytes, total);
  assert_int_equal(st.live_blocks, n);
  for (size_t i = 0; i < n; i++) {
    ph_value v = *slots[i];
    if (ph_tag(v) >= PH_TAG_RAW)
      assert_int_equal(((unsigned char *)ph_raw(v))[sizes[i] * 8 - 1], 0xab);
    else
      assert_int_equal(ph_int_val(ph_field(v, sizes[i] - 1)),
                       (intptr_t)sizes[i] - 1);
  }
  tu_verify_ok(d);
  long rss_before = tu_vmrss_kb();
  uint64_t committed_before = st.committed_bytes;
  uint64_t large_before = st.large_bytes;
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  assert_int_equal(st.live_bytes, 0);
  assert_int_equal(st.large_bytes, 0);
  /* the large blocks' memory is no longer committed */
  if (st.committed_bytes + large_before > committed_before)
    fail_msg("committed %llu before, %llu after freeing %llu large bytes",
             (unsigned long long)committed_before,
             (unsigned long long)st.committed_bytes,
             (unsigned long long)large_before);
  long rss_after = tu_vmrss_kb();
  if (!TU_TSAN && rss_before > 0 && rss_after > 0 &&
      rss_before - rss_after < (long)(total / 2 / 1024))
    fail_msg("VmRSS %ld kB before, %ld kB after freeing %llu bytes", rss_before,
             rss_after, (unsigned long long)total);
  tu_verify_ok(d);
}

/* Many large blocks do not multiply kernel mappings. */
static void test_large_blocks_few_mappings(void **state) {
  (void)state;
  long maps0 = tu_maps_lines();
  size_t m = ph_scope_open(d);
  for (int i = 0; i < 64; i++) {
    ph_value v = ph_alloc(d, 20000 + (size_t)i * 1000, PH_TAG_RAW);
    assert_true(ph_is_block(v));
    ph_root(d, v);
  }
  ph_stats st = tu_stats(h);
  assert_true(st.large_bytes >= 64 * 20000 * 8);
  /* O(log heap): a handful of chunks for ~15 MiB */
  if (st.mappings > 12)
    fail_msg("%llu mappings for %llu large bytes",
             (unsigned long long)st.mappings,
             (unsigned long long)st.large_bytes);
  long maps1 = tu_maps_lines();
  if (!TU_TSAN && maps1 - maps0 > 16)
    fail_msg("/proc/self/maps grew by %ld lines", maps1 - maps0);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  assert_int_equal(st.large_bytes, 0);
}

/* allocated_bytes grows by (wosize + 1) * 8 per block; collections counts
 * every collection; committed/reserved/mappings are consistent; mark_ns and
 * sweep_ns are measured. */
static void test_stats_fields(void **state) {
  (void)state;
  ph_stats st0 = tu_stats(h);
  assert_int_equal(st0.collections, 0);
  assert_int_equal(st0.domains, 1);
  assert_true(st0.mappings >= 1);
  assert_true(st0.reserved_bytes >= h->pool_size);
  uint64_t expect = 0;
  for (size_t wo = 1; wo < 300; wo += 7) {
    assert_true(ph_is_block(ph_alloc(d, wo, 0)));
    expect += TU_BYTES(wo);
    ph_stats st = tu_stats(h);
    assert_int_equal(st.allocated_bytes - st0.allocated_bytes, expect);
  }
  for (uint64_t k = 1; k <= 3; k++) {
    assert_int_equal(ph_collect(d), PH_OK);
    ph_stats st = tu_stats(h);
    assert_int_equal(st.collections, st0.collections + k);
    assert_true(st.mark_ns > 0);
    assert_true(st.sweep_ns > 0);
    assert_true(st.stw_ns >= st.mark_ns);
    assert_int_equal(st.live_bytes, 0);
    /* collections do not count as allocation */
    assert_int_equal(st.allocated_bytes - st0.allocated_bytes, expect);
  }
  ph_stats st = tu_stats(h);
  assert_true(st.reserved_bytes >= st.committed_bytes);
  assert_int_equal(st.reserved_bytes % h->pool_size, 0);
  assert_int_equal(st.committed_bytes % h->pool_size, 0);
  assert_int_equal(st.committed_bytes,
                   st.pool_bytes + st.large_bytes + st.free_pool_bytes);
  assert_true(st.mappings >= 1 && st.mappings <= 8);
  assert_int_equal(st.size_classes, h->nsmall);
  assert_int_equal(st.size_classes + st.medium_classes, h->nclasses);
  assert_int_equal(st.huge_fallbacks, 0);
}

/* The census rows add up to what was allocated, class by class. */
typedef struct census_acc {
  size_t n;
  ph_census_class r[PH_MAX_CLASSES];
} census_acc;

static void census_row(const ph_census_class *c, void *user) {
  census_acc *a = user;
  if (a->n < PH_MAX_CLASSES)
    a->r[a->n] = *c;
  a->n++;
}

static void test_census_sums(void **state) {
  (void)state;
  tu_rng r;
  tu_rng_init(&r, 11);
  size_t count[PH_MAX_CLASSES] = {0};
  size_t m = ph_scope_open(d);
  size_t total = 0;
  for (int i = 0; i < 20000; i++) {
    size_t wo = 1 + tu_below(&r, h->class_wsize[h->nsmall - 1] - 1);
    if (tu_below(&r, 4))
      wo = 1 + tu_below(&r, 8);
    else if (i % 64 == 0) /* a medium block */
      wo =
          h->class_wsize[h->nsmall - 1] +
          tu_below(&r, h->max_small_wosize + 1 - h->class_wsize[h->nsmall - 1]);
    ph_value v = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v));
    count[ph_class_of_wosize(h, wo)]++;
    total++;
  }
  census_acc a = {0};
  assert_int_equal(ph_census(d, census_row, &a), PH_OK);
  assert_int_equal(a.n, h->nclasses);
  size_t sum = 0, pools = 0;
  for (unsigned c = 0; c < a.n; c++) {
    assert_int_equal(a.r[c].size_class, c);
    if (c)
      assert_true(a.r[c].block_words > a.r[c - 1].block_words);
    assert_int_equal(a.r[c].live_blocks, count[c]);
    assert_int_equal(a.r[c].live_blocks + a.r[c].free_blocks,
                     a.r[c].pools * h->class_nslots[c]);
    sum += a.r[c].live_blocks;
    pools += a.r[c].pools * h->class_units[c];
  }
  assert_int_equal(sum, total);
  ph_stats st = tu_stats(h);
  assert_int_equal(st.pool_bytes, pools * h->pool_size);
  /* nothing rooted: after a collection the census is empty */
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  memset(&a, 0, sizeof a);
  assert_int_equal(ph_census(d, census_row, &a), PH_OK);
  for (unsigned c = 0; c < a.n; c++) {
    assert_int_equal(a.r[c].live_blocks, 0);
    assert_int_equal(a.r[c].pools, 0);
  }
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_alloc_every_size_class, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_raw_blocks_zeroed_on_reuse, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pool_free_list_every_slot, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sweep_free_list_and_bits, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_small_large_boundary, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_large_blocks_alloc_and_release,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_large_blocks_few_mappings, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stats_fields, setup, teardown),
      cmocka_unit_test_setup_teardown(test_census_sums, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
