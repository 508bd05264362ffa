/* tests/test_sizeclass.c -- the size-class rule (heap/sizeclass.c), for every
 * pool size from 4 KiB to 4 MiB.
 *
 * The rule is recomputed here independently (w_0 = 2, w_{k+1} = max(w_k + 1,
 * floor(8 w_k / 7)) while below wmax, then wmax = min(257, slot words / 8),
 * slot words being the pool's words after the largest header
 * h->pool_hdr_max) and compared with the heap's tables; and the property
 * the rule promises is checked directly for every small wosize: its class
 * is the smallest that fits and wastes less than 1/8 of the slot.
 *
 * heap.pool.hdr: each class's header is the fixed part and a live bitmap
 * for its own slots in 64-byte lines, and its slot count the most that fit
 * with that header (recomputed here by hdr_for; a header sized for the
 * smallest slot in every class fails it: 32 KiB pools of 24-byte slots
 * hold 1354 slots, not 1352).
 *
 * The medium classes (heap.sizeclass.medium, served after the small ones
 * in the same tables) likewise: recomputed here and compared, and for
 * every request from 1 field to the top of the medium range
 * (PH_MEDIUM_TOP_WSIZE - 1 fields) the heap's class is the smallest small
 * or medium class that fits and wastes less than 1/8 of its slot; every
 * medium pool is the fewest units holding at least 8 slots. */
#include "test_util.h"

#include "api/api.h"

static ph_heap *heap_with_pool(size_t pool_size) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = pool_size;
  cfg.gc_percent = 0;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(h->pool_size, pool_size);
  return h;
}

/* heap.pool.hdr, recomputed: the header of a pool of n slots. */
static size_t hdr_for(size_t n) {
  size_t lines = 0;
  while (lines * 512 < n)
    lines++;
  return PH_POOL_HDR + lines * 64;
}

/* The class's slot count and header are the most slots of sb bytes that
 * fit in `bytes` with the header of that many. */
static void check_layout(size_t bytes, size_t sb, uint32_t nslots,
                         uint32_t hdr) {
  if (hdr != hdr_for(nslots) || hdr + (size_t)nslots * sb > bytes ||
      hdr_for(nslots + 1) + (size_t)(nslots + 1) * sb <= bytes)
    fail_msg("%zu bytes of %zu-byte slots: %u slots after %u header bytes, "
             "not the most that fit",
             bytes, sb, nslots, hdr);
}

/* Independent computation of the rule; returns the class count. */
static unsigned rule_classes(size_t pool_size, size_t pool_hdr,
                             uint32_t *w_out) {
  size_t pool_words = (pool_size - pool_hdr) / 8;
  size_t wmax = pool_words / 8;
  if (wmax > PH_MAX_SMALL_WSIZE)
    wmax = PH_MAX_SMALL_WSIZE;
  unsigned n = 0;
  for (size_t w = 2; w < wmax;) {
    w_out[n++] = (uint32_t)w;
    size_t next = w * 8 / 7;
    w = next > w + 1 ? next : w + 1;
  }
  w_out[n++] = (uint32_t)wmax;
  return n;
}

static void test_classes_follow_rule_all_pool_sizes(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 2) {
    ph_heap *h = heap_with_pool(ps);
    uint32_t w[PH_MAX_CLASSES + 8];
    /* the pool header (with its live bitmap) is at least the fixed part,
     * 64-byte aligned, and leaves most of the pool for slots */
    assert_true(h->pool_hdr_max >= PH_POOL_HDR && h->pool_hdr_max % 64 == 0);
    assert_true(h->pool_hdr_max * 8 <= ps);
    assert_int_equal(h->pool_hdr_max, hdr_for((ps - PH_POOL_HDR) / 16));
    unsigned n = rule_classes(ps, h->pool_hdr_max, w);
    assert_true(n <= PH_MAX_CLASSES);
    assert_int_equal(h->nsmall, n);
    for (unsigned k = 0; k < n; k++) {
      assert_int_equal(h->class_wsize[k], w[k]);
      assert_int_equal(h->class_units[k], 1);
    }
    /* pools serve up to the top medium class, then large blocks */
    assert_int_equal(h->max_small_wosize, PH_MEDIUM_TOP_WSIZE - 1);
    assert_true(h->nclasses > n && h->nclasses <= PH_MAX_CLASSES);
    assert_int_equal(h->class_wsize[h->nclasses - 1], PH_MEDIUM_TOP_WSIZE);
    ph_stats st = tu_stats(h);
    assert_int_equal(st.size_classes, n);
    assert_int_equal(st.medium_classes, h->nclasses - n);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

static void test_classes_strictly_increasing(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 2) {
    ph_heap *h = heap_with_pool(ps);
    assert_true(h->nclasses >= 2);
    assert_int_equal(h->class_wsize[0], 2); /* one field + header */
    for (unsigned k = 1; k < h->nclasses; k++)
      if (h->class_wsize[k] <= h->class_wsize[k - 1])
        fail_msg("pool %zu: class %u has %u words, class %u has %u", ps, k,
                 h->class_wsize[k], k - 1, h->class_wsize[k - 1]);
    assert_true(h->class_wsize[h->nsmall - 1] <= PH_MAX_SMALL_WSIZE);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

static void test_waste_below_one_eighth_every_wosize(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 2) {
    ph_heap *h = heap_with_pool(ps);
    size_t checked = 0;
    for (size_t wo = 1; wo <= h->max_small_wosize; wo++) {
      unsigned c = ph_class_of_wosize(h, wo);
      assert_true(c < h->nclasses);
      size_t need = wo + 1, slot = h->class_wsize[c];
      if (slot < need)
        fail_msg("pool %zu wosize %zu: class %u of %zu words too small", ps, wo,
                 c, slot);
      if (c > 0 && h->class_wsize[c - 1] >= need)
        fail_msg("pool %zu wosize %zu: class %u is not the smallest fit", ps,
                 wo, c);
      /* waste (slot - need) / slot < 1/8 */
      if ((slot - need) * 8 >= slot)
        fail_msg("pool %zu wosize %zu: slot %zu wastes %zu words (>= 1/8)", ps,
                 wo, slot, slot - need);
      checked++;
    }
    assert_int_equal(checked, h->max_small_wosize);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

static void test_pools_hold_at_least_eight_slots(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 2) {
    ph_heap *h = heap_with_pool(ps);
    size_t pool_words = (ps - h->pool_hdr_max) / 8;
    for (unsigned k = 0; k < h->nsmall; k++) {
      /* heap.pool.hdr: the class's own header, no fewer slots than with
       * the largest one, and the most that fit */
      assert_true(h->class_nslots[k] >= pool_words / h->class_wsize[k]);
      assert_true(h->class_hdr[k] <= h->pool_hdr_max);
      assert_true(h->class_nslots[k] >= 8);
      check_layout(ps, (size_t)h->class_wsize[k] * 8, h->class_nslots[k],
                   h->class_hdr[k]);
    }
    if (ps == 32768) { /* the 24-byte class: two more slots per pool */
      assert_int_equal(h->class_wsize[1], 3);
      assert_int_equal(h->class_nslots[1], 1354);
      assert_int_equal(h->class_hdr[1], 256);
    }
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

/* Independent computation of the medium rule; returns the class count. */
#define MAX_MEDIUM 128
static unsigned rule_medium(size_t ps, size_t wmax, ph_medium_class *out) {
  unsigned n = 0;
  size_t w = wmax;
  do {
    size_t next = w * 8 / 7;
    w = next > w + 1 ? next : w + 1;
    if (w > PH_MEDIUM_TOP_WSIZE)
      w = PH_MEDIUM_TOP_WSIZE;
    size_t units = 1, ns;
    for (;; units++) { /* the most slots with their own header */
      for (ns = 0; hdr_for(ns + 1) + (ns + 1) * w * 8 <= units * ps; ns++)
        ;
      if (ns >= 8)
        break;
    }
    assert_true(n < MAX_MEDIUM);
    out[n].wsize = (uint32_t)w;
    out[n].units = (uint32_t)units;
    out[n].nslots = (uint32_t)ns;
    out[n].hdr = (uint32_t)hdr_for(ns);
    n++;
  } while (w < PH_MEDIUM_TOP_WSIZE);
  return n;
}

static void test_medium_classes_every_request(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 2) {
    ph_heap *h = heap_with_pool(ps);
    size_t wmax = h->class_wsize[h->nsmall - 1];
    ph_medium_class m[MAX_MEDIUM], r[MAX_MEDIUM];
    unsigned n = ph_sizeclass_medium(ps, wmax, m, MAX_MEDIUM);
    assert_true(n >= 1 && n <= MAX_MEDIUM);
    /* the count is returned whatever max is */
    assert_int_equal(ph_sizeclass_medium(ps, wmax, r, 1), n);
    assert_int_equal(rule_medium(ps, wmax, r), n);
    for (unsigned k = 0; k < n; k++) {
      if (m[k].wsize != r[k].wsize || m[k].units != r[k].units ||
          m[k].nslots != r[k].nslots || m[k].hdr != r[k].hdr)
        fail_msg("pool %zu medium class %u: %u words %u units %u slots, the "
                 "rule gives %u %u %u",
                 ps, k, m[k].wsize, m[k].units, m[k].nslots, r[k].wsize,
                 r[k].units, r[k].nslots);
      /* at least 8 slots, in the fewest units */
      size_t slot = (size_t)m[k].wsize * 8, bytes = (size_t)m[k].units * ps;
      assert_true(m[k].nslots >= 8);
      check_layout(bytes, slot, m[k].nslots, m[k].hdr);
      assert_true(m[k].units == 1 || hdr_for(8) + 8 * slot > bytes - ps);
    }
    assert_true(m[0].wsize > wmax);
    assert_int_equal(m[n - 1].wsize, PH_MEDIUM_TOP_WSIZE);
    /* served: the heap's classes after the small ones are these */
    assert_int_equal(h->nclasses, h->nsmall + n);
    for (unsigned k = 0; k < n; k++) {
      assert_int_equal(h->class_wsize[h->nsmall + k], m[k].wsize);
      assert_int_equal(h->class_units[h->nsmall + k], m[k].units);
      assert_int_equal(h->class_nslots[h->nsmall + k], m[k].nslots);
      assert_int_equal(h->class_hdr[h->nsmall + k], m[k].hdr);
    }
    /* every request from 1 field to the top: the smallest class that fits
     * (small, then medium) wastes less than 1/8 of its slot */
    unsigned c = 0, mc = 0;
    size_t checked = 0;
    for (size_t wo = 1; wo < PH_MEDIUM_TOP_WSIZE; wo++) {
      size_t need = wo + 1, slot, prev;
      if (need <= wmax) {
        while (h->class_wsize[c] < need)
          c++;
        slot = h->class_wsize[c];
        prev = c ? h->class_wsize[c - 1] : 1;
        assert_int_equal(ph_class_of_wosize(h, wo), c);
      } else {
        while (m[mc].wsize < need)
          mc++; /* m[n - 1] is the top: never beyond */
        slot = m[mc].wsize;
        prev = mc ? m[mc - 1].wsize : wmax;
        assert_int_equal(ph_class_of_wosize(h, wo), h->nsmall + mc);
      }
      assert_true(slot >= need && prev < need);
      if ((slot - need) * 8 >= slot)
        fail_msg("pool %zu wosize %zu: slot %zu wastes %zu words (>= 1/8)", ps,
                 wo, slot, slot - need);
      checked++;
    }
    assert_int_equal(checked, PH_MEDIUM_TOP_WSIZE - 1);
    if (ps == 32768)
      print_message("32 KiB pools: %u small and %u medium classes, the last "
                    "medium pool %u units\n",
                    h->nsmall, n, m[n - 1].units);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

/* The census reports the same classes, in order. */
typedef struct rows {
  unsigned n;
  ph_census_class r[PH_MAX_CLASSES];
} rows;

static void collect_row(const ph_census_class *c, void *user) {
  rows *r = user;
  if (r->n < PH_MAX_CLASSES)
    r->r[r->n] = *c;
  r->n++;
}

static void test_census_rows_match_classes(void **state) {
  (void)state;
  for (size_t ps = 4096; ps <= ((size_t)4 << 20); ps *= 4) {
    ph_heap *h = heap_with_pool(ps);
    ph_domain *d;
    assert_int_equal(ph_domain_attach(h, &d), PH_OK);
    rows r = {0};
    assert_int_equal(ph_census(d, collect_row, &r), PH_OK);
    assert_int_equal(r.n, h->nclasses);
    for (unsigned k = 0; k < r.n; k++) {
      assert_int_equal(r.r[k].size_class, k);
      assert_int_equal(r.r[k].block_words, h->class_wsize[k]);
      assert_int_equal(r.r[k].max_wosize, h->class_wsize[k] - 1);
      assert_int_equal(r.r[k].pools, 0);
      assert_int_equal(r.r[k].live_blocks, 0);
    }
    assert_int_equal(ph_domain_detach(d), PH_OK);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_classes_follow_rule_all_pool_sizes),
      cmocka_unit_test(test_classes_strictly_increasing),
      cmocka_unit_test(test_waste_below_one_eighth_every_wosize),
      cmocka_unit_test(test_pools_hold_at_least_eight_slots),
      cmocka_unit_test(test_medium_classes_every_request),
      cmocka_unit_test(test_census_rows_match_classes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
