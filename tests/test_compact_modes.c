/* tests/test_compact_modes.c -- which pools compaction evacuates, and what
 * it gives back to the OS (coverage tests).
 *
 * - minimality: a heap where address order and density disagree; GLOBAL
 *   evacuates exactly L - (live of the k densest pools), PER_DOMAIN exactly
 *   L - (live of the first k pools in address order), which is more.
 * - release modes: VmRSS drops in DECOMMIT and UNMAP, stays in KEEP,
 *   /proc/self/maps does not grow in DECOMMIT, LAZY works; released_bytes
 *   agrees with committed_bytes; retain is honoured.
 * - compact_percent: automatic collections compact when fragmentation
 *   exceeds it and never when it is 0.
 * ph_verify runs after every compaction (cu_compact).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/compact_util.h"

/* ThreadSanitizer maps shadow memory of its own: process-wide mapping
 * counts and RSS are not ours to predict there. */
#define PROC_EXACT (!TU_TSAN)
/* AddressSanitizer's allocator maps regions of its own on first use (the
 * compactor's plan is malloc'd): the process-wide mapping count is exact
 * only without sanitizers; the heap's own count (stats.mappings) always. */
#define MAPS_EXACT (!TU_TSAN && !TU_ASAN)

/* ---------------------------------------------------------- minimality */

#define MP 24 /* pools of the class */

/* Live blocks kept in pool j (address order): sparse first, dense last,
 * never full, never empty. */
static size_t keep_of(size_t j, size_t C) {
  return 1 + j * (C - 3) / (MP - 1);
}

static int cmp_desc(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x > y ? -1 : x < y;
}

/* The evacuated blocks the rule predicts: L minus the live blocks of the
 * k = ceil(L / C) pools kept (the densest, or the first in address order). */
static size_t predicted(const size_t *live, size_t n, size_t C, int densest) {
  size_t L = 0;
  for (size_t j = 0; j < n; j++)
    L += live[j];
  size_t k = (L + C - 1) / C, kept = 0;
  size_t *v = malloc(n * sizeof *v);
  assert_non_null(v);
  memcpy(v, live, n * sizeof *v);
  if (densest)
    qsort(v, n, sizeof *v, cmp_desc);
  for (size_t j = 0; j < k && j < n; j++)
    kept += v[j];
  free(v);
  return L - kept;
}

static size_t run_minimality(ph_compact_scope scope, size_t *expect_global,
                             size_t *expect_per_domain) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = 4 << 10;
  cfg.gc_percent = 0;
  cfg.compact_scope = scope;
  const size_t wosize = 5;
  size_t C = cu_nslots(&cfg, wosize);
  assert_true(C >= 8);
  ph_heap *h;
  ph_domain *d;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, PH_UNIT);
  assert_true(cu_fill_pools(d, cfg.pool_size, wosize, MP, C, tab));
  size_t live[MP];
  for (size_t j = 0; j < MP; j++) {
    live[j] = keep_of(j, C);
    for (size_t i = live[j]; i < C; i++)
      ph_set_field(*tab, j * C + i, ph_val_int((intptr_t)i));
  }
  *expect_global = predicted(live, MP, C, 1);
  *expect_per_domain = predicted(live, MP, C, 0);
  /* the census agrees with our bookkeeping after a collection */
  assert_int_equal(ph_collect(d), PH_OK);
  cu_classes cs = cu_census(d);
  unsigned k = cu_class_of(&cs, wosize);
  size_t L = 0;
  for (size_t j = 0; j < MP; j++)
    L += live[j];
  assert_int_equal(cs.c[k].pools, MP);
  assert_int_equal(cs.c[k].live, L);
  ph_value *ids = malloc(MP * C * sizeof *ids);
  assert_non_null(ids);
  for (size_t i = 0; i < MP * C; i++)
    ids[i] = ph_field(*tab, i);
  for (size_t i = 0; i < MP * C; i++)
    if (ph_is_block(ids[i]))
      ids[i] = ph_field(ids[i], 0);
  ph_stats st = cu_compact(d);
  for (size_t i = 0; i < MP * C; i++) { /* contents kept */
    ph_value v = ph_field(*tab, i);
    assert_true(ph_is_block(v) ? ph_field(v, 0) == ids[i] : v == ids[i]);
  }
  free(ids);
  cs = cu_census(d);
  assert_int_equal(cs.c[k].live, L);
  assert_int_equal(cs.c[k].pools, (L + C - 1) / C);
  st.evacuated_bytes /= (wosize + 1) * 8;
  assert_int_equal(st.evacuated_bytes, st.evacuated_blocks);
  /* the second one moves nothing */
  ph_stats st2 = cu_compact(d);
  assert_int_equal(st2.evacuated_blocks, 0);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  printf("  scope %d: evacuated %llu (global rule %zu, per-domain rule %zu)\n",
         (int)scope, (unsigned long long)st.evacuated_blocks, *expect_global,
         *expect_per_domain);
  return (size_t)st.evacuated_blocks;
}

static void minimality_global_keeps_densest(void **state) {
  (void)state;
  size_t eg, ep;
  size_t got = run_minimality(PH_COMPACT_GLOBAL, &eg, &ep);
  assert_true(eg < ep); /* the heap really makes the orders disagree */
  assert_int_equal(got, eg);
}

static void per_domain_keeps_first_k_in_address_order(void **state) {
  (void)state;
  size_t eg, ep;
  size_t got = run_minimality(PH_COMPACT_PER_DOMAIN, &eg, &ep);
  assert_int_equal(got, ep);
  assert_true(got > eg);
}

/* ------------------------------------------------------- release modes */

/* A heap of `mb` MiB of 8-word blocks, one in `every` kept (a chain from a
 * scope slot: field 0 next, field 1 number). */
typedef struct frag {
  ph_heap *h;
  ph_domain *d;
  size_t mark;
  ph_value *chain;
  size_t kept;
} frag;

static void frag_build(frag *f, ph_config *cfg, size_t mb, size_t every) {
  assert_int_equal(ph_heap_create(cfg, &f->h), PH_OK);
  assert_int_equal(ph_domain_attach(f->h, &f->d), PH_OK);
  f->mark = ph_scope_open(f->d);
  f->chain = ph_root(f->d, PH_UNIT);
  size_t n = (mb << 20) / 64;
  f->kept = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_alloc(f->d, 7, 0);
    assert_true(ph_is_block(b));
    ph_set_field(b, 1, ph_val_int((intptr_t)i));
    if (i % every == 0) {
      ph_set_field(b, 0, *f->chain);
      *f->chain = b;
      f->kept++;
    }
  }
}

static void frag_check(frag *f) {
  size_t n = 0;
  intptr_t last = -1;
  for (ph_value v = *f->chain; ph_is_block(v); v = ph_field(v, 0), n++) {
    intptr_t id = ph_int_val(ph_field(v, 1));
    assert_true(last < 0 || id < last);
    last = id;
  }
  assert_int_equal(n, f->kept);
}

static void frag_close(frag *f) {
  assert_int_equal(ph_scope_close(f->d, f->mark), PH_OK);
  assert_int_equal(ph_domain_detach(f->d), PH_OK);
  assert_int_equal(ph_heap_destroy(f->h), PH_OK);
}

typedef struct measure {
  long rss0, rss1, maps0, maps1;
  ph_stats s0, s1;
} measure;

static void compact_measured(frag *f, measure *m) {
  m->s0 = tu_stats(f->h);
  m->maps0 = tu_maps_lines();
  m->rss0 = tu_vmrss_kb();
  assert_int_equal(ph_compact(f->d), PH_OK);
  m->rss1 = tu_vmrss_kb();
  m->maps1 = tu_maps_lines();
  m->s1 = tu_stats(f->h);
  tu_verify_ok(f->d);
  frag_check(f);
  printf("  rss %ld -> %ld kB, maps %ld -> %ld, committed %llu -> "
         "%llu, released %llu, evacuated %llu pools\n",
         m->rss0, m->rss1, m->maps0, m->maps1,
         (unsigned long long)m->s0.committed_bytes,
         (unsigned long long)m->s1.committed_bytes,
         (unsigned long long)m->s1.released_bytes,
         (unsigned long long)m->s1.evacuated_pools);
}

#define FRAG_MB tu_scale(48, 4)

static void release_mode(ph_release_mode mode, measure *m, frag *f) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.release = mode;
  frag_build(f, &cfg, FRAG_MB, 64);
  assert_int_equal(ph_collect(f->d), PH_OK); /* nothing empty: no release */
  compact_measured(f, m);
  ph_stats s = m->s1;
  size_t pool = cfg.pool_size;
  assert_true(s.evacuated_pools * pool >= (FRAG_MB << 20) * 9 / 10);
  assert_int_equal(s.compactions, 1);
  /* released_bytes: what left committed_bytes; nothing free stays
   * committed unless KEEP */
  assert_int_equal(m->s0.committed_bytes - m->s1.committed_bytes,
                   s.released_bytes);
  if (mode == PH_RELEASE_KEEP) {
    assert_int_equal(s.released_bytes, 0);
    assert_true(s.free_pool_bytes >= s.evacuated_pools * pool);
  } else {
    assert_int_equal(s.free_pool_bytes, 0);
    assert_true(s.released_bytes >= s.evacuated_pools * pool);
  }
  assert_true(s.mappings <= m->s0.mappings);
  /* a second compaction: nothing moves, nothing more to release */
  ph_stats s2 = cu_compact(f->d);
  assert_int_equal(s2.evacuated_blocks, 0);
  if (mode != PH_RELEASE_KEEP)
    assert_int_equal(s2.released_bytes, 0);
}

static void release_decommit_rss_drops_maps_stable(void **state) {
  (void)state;
  measure m;
  frag f;
  release_mode(PH_RELEASE_DECOMMIT, &m, &f);
  long freed_kb = (long)(m.s1.released_bytes >> 10);
  if (PROC_EXACT) {
    assert_true(m.rss0 - m.rss1 >= freed_kb * 3 / 4);
  }
  if (MAPS_EXACT)
    assert_true(m.maps1 <= m.maps0);
  assert_true(m.s1.mappings <= m.s0.mappings);
  frag_close(&f);
}

static void release_unmap_rss_drops(void **state) {
  (void)state;
  measure m;
  frag f;
  release_mode(PH_RELEASE_UNMAP, &m, &f);
  long freed_kb = (long)(m.s1.released_bytes >> 10);
  if (PROC_EXACT)
    assert_true(m.rss0 - m.rss1 >= freed_kb * 3 / 4);
  frag_close(&f);
}

static void release_lazy_works(void **state) {
  (void)state;
  measure m;
  frag f;
  release_mode(PH_RELEASE_LAZY, &m, &f);
  /* MADV_FREE pages leave RSS only under memory pressure: no claim */
  assert_true(m.s1.released_bytes > 0);
  frag_close(&f);
}

static void release_keep_rss_stays(void **state) {
  (void)state;
  measure m;
  frag f;
  release_mode(PH_RELEASE_KEEP, &m, &f);
  if (PROC_EXACT)
    assert_true(m.rss1 >= m.rss0 - 2048); /* within 2 MiB of noise */
  assert_int_equal(m.s1.committed_bytes, m.s0.committed_bytes);
  frag_close(&f);
}

static void retain_honoured(void **state) {
  (void)state;
  const ph_release_mode modes[2] = {PH_RELEASE_DECOMMIT, PH_RELEASE_UNMAP};
  for (int i = 0; i < 2; i++) {
    ph_config cfg;
    ph_config_init(&cfg);
    cfg.gc_percent = 0;
    cfg.release = modes[i];
    cfg.retain = (size_t)5 << 20 | 12345; /* not a multiple of pool_size */
    frag f;
    frag_build(&f, &cfg, FRAG_MB, 64);
    measure m;
    compact_measured(&f, &m);
    /* enough was free: at least retain stays committed, at most one
     * pool more */
    assert_true(m.s1.evacuated_pools * cfg.pool_size > 2 * cfg.retain);
    assert_true(m.s1.free_pool_bytes >= cfg.retain);
    assert_true(m.s1.free_pool_bytes < cfg.retain + cfg.pool_size);
    assert_true(m.s1.committed_bytes >= m.s1.pool_bytes + cfg.retain);
    frag_close(&f);
  }
}

/* ------------------------------------------------------ compact_percent */

/* A fragmented heap, then garbage allocation that triggers automatic
 * collections; returns the stats after. */
static ph_stats auto_run(unsigned percent) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 100;
  cfg.compact_percent = percent;
  frag f;
  frag_build(&f, &cfg, tu_scale(16, 4), 10);
  ph_stats s0 = tu_stats(f.h);
  for (size_t i = 0; i < tu_scale(((size_t)24 << 20) / 64, 4); i++)
    assert_true(ph_is_block(ph_alloc(f.d, 7, 0)));
  ph_stats s = tu_stats(f.h);
  printf("  compact_percent %u: collections %llu -> %llu, compactions %llu\n",
         percent, (unsigned long long)s0.collections,
         (unsigned long long)s.collections, (unsigned long long)s.compactions);
  assert_true(s.collections > s0.collections);
  tu_verify_ok(f.d);
  frag_check(&f);
  frag_close(&f);
  return s;
}

static void compact_percent_auto_compacts(void **state) {
  (void)state;
  ph_stats s = auto_run(20);
  assert_true(s.compactions > 0);
}

static void compact_percent_zero_never(void **state) {
  (void)state;
  ph_stats s = auto_run(0);
  assert_int_equal(s.compactions, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(minimality_global_keeps_densest),
      cmocka_unit_test(per_domain_keeps_first_k_in_address_order),
      cmocka_unit_test(release_decommit_rss_drops_maps_stable),
      cmocka_unit_test(release_unmap_rss_drops),
      cmocka_unit_test(release_lazy_works),
      cmocka_unit_test(release_keep_rss_stays),
      cmocka_unit_test(retain_honoured),
      cmocka_unit_test(compact_percent_auto_compacts),
      cmocka_unit_test(compact_percent_zero_never),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
