/* tests/test_compact_mt.c -- compaction with several domains (threaded
 * tests).
 *
 * - blocking domains: domains parked in ph_blocking_enter while others
 *   compact have their root-stack and hook slots rewritten;
 * - PER_DOMAIN with two owners, one of them blocking: each owner keeps its
 *   first k pools in address order (the leader evacuates the blocking
 *   owner's pools);
 * - every domain compacting at once, with allocation in between: each
 *   domain's graph survives every round.
 * Threads wait for each other only inside blocking sections.  Checks in
 * threads count failures (TU_CHECK); the main thread asserts none.
 * Random tests print their seed; POOLHEAP_SEED replays one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/compact_util.h"

#include <pthread.h>

#define MAXD 16
#define NHOOK 4

static ph_value hook_slots[MAXD][NHOOK];

static void scan_hook(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)user;
  unsigned i = ph_domain_index(d);
  if (i < MAXD)
    for (int k = 0; k < NHOOK; k++)
      visit(&hook_slots[i][k], ctx);
}

static ph_heap *heap;
static pthread_barrier_t bar;
static uint64_t seed;

static void bwait(ph_domain *d) {
  ph_blocking_enter(d);
  pthread_barrier_wait(&bar);
  ph_blocking_leave(d);
}

static void reset_hooks(void) {
  for (int i = 0; i < MAXD; i++)
    for (int k = 0; k < NHOOK; k++)
      hook_slots[i][k] = PH_UNIT;
}

/* A domain's data: chains of blocks of assorted small sizes, one in
 * `every` allocated block kept, heads in nroots scope slots and the hook.
 * Field 0 links, field 1 numbers, the rest cross-link or hold ints. */
typedef struct dom_data {
  ph_domain *d;
  ph_value *slot[8];
  size_t nslot;
} dom_data;

static void build(dom_data *x, tu_rng *r, size_t n, size_t every) {
  ph_domain *d = x->d;
  unsigned me = ph_domain_index(d);
  x->nslot = 8;
  for (size_t i = 0; i < x->nslot; i++)
    x->slot[i] = ph_root(d, PH_UNIT);
  for (size_t i = 0; i < n; i++) {
    size_t wo = 2 + tu_below(r, 12);
    ph_value b = ph_alloc(d, wo, (unsigned)tu_below(r, 4));
    if (!ph_is_block(b)) {
      TU_CHECK(!"ph_alloc failed");
      return;
    }
    ph_set_field(b, 1, ph_val_int((intptr_t)i));
    if (i % every)
      continue;
    size_t c = tu_below(r, x->nslot + NHOOK);
    ph_value *head = c < x->nslot ? x->slot[c] : &hook_slots[me][c - x->nslot];
    ph_set_field(b, 0, *head);
    if (wo > 2 && ph_is_block(*head))
      ph_set_field(b, 2, tu_below(r, 2) ? b : ph_field(*head, 0));
    if (wo > 3)
      ph_set_field(b, 3, ph_val_int((intptr_t)*head));
    *head = b;
  }
}

static cu_graph walk(dom_data *x, int addrs) {
  ph_value v[8 + NHOOK];
  unsigned me = ph_domain_index(x->d);
  size_t n = 0;
  for (size_t i = 0; i < x->nslot; i++)
    v[n++] = *x->slot[i];
  for (int k = 0; k < NHOOK; k++)
    v[n++] = hook_slots[me][k];
  return cu_walk(v, n, addrs);
}

static void root_values(dom_data *x, ph_value *out) {
  unsigned me = ph_domain_index(x->d);
  for (size_t i = 0; i < x->nslot; i++)
    out[i] = *x->slot[i];
  for (int k = 0; k < NHOOK; k++)
    out[x->nslot + (size_t)k] = hook_slots[me][k];
}

/* ---------------------------------------------------- blocking domains */

#define NBLOCK 2
#define NCOMP 2
static size_t blocked_roots_moved, blocked_blocks_moved;

static void *blocking_thread(void *arg) {
  long id = (long)arg;
  tu_rng r = {tu_mix(seed + (uint64_t)id * 7919, 0)};
  dom_data x;
  if (ph_domain_attach(heap, &x.d) != PH_OK) {
    TU_CHECK(!"attach");
    return NULL;
  }
  size_t m = ph_scope_open(x.d);
  int blocker = id < NBLOCK;
  /* blockers: sparse (1 in 16); compactors: everything kept */
  build(&x, &r, tu_scale(40000, 4), blocker ? 16 : 1);
  cu_graph a = walk(&x, 1);
  ph_value ra[8 + NHOOK], rb[8 + NHOOK];
  root_values(&x, ra);
  bwait(x.d); /* B1: everybody built */
  if (blocker) {
    ph_blocking_enter(x.d);
    pthread_barrier_wait(&bar); /* B2: the compactors are done */
    ph_blocking_leave(x.d);
  } else {
    TU_CHECK(ph_compact(x.d) == PH_OK);
    tu_verify_mt(x.d);
    bwait(x.d); /* B2 */
  }
  cu_graph b = walk(&x, 1);
  TU_CHECK(a.hash == b.hash && a.nodes == b.nodes);
  root_values(&x, rb);
  if (blocker) {
    size_t changed = 0;
    for (size_t i = 0; i < x.nslot + NHOOK; i++)
      changed += ra[i] != rb[i];
    __atomic_fetch_add(&blocked_roots_moved, changed, __ATOMIC_RELAXED);
    __atomic_fetch_add(&blocked_blocks_moved, cu_moved(&a, &b),
                       __ATOMIC_RELAXED);
  }
  cu_graph_free(&a);
  cu_graph_free(&b);
  tu_verify_mt(x.d);
  ph_scope_close(x.d, m);
  for (int k = 0; k < NHOOK; k++)
    hook_slots[ph_domain_index(x.d)][k] = PH_UNIT;
  bwait(x.d); /* B3: nobody detaches before the others verified */
  TU_CHECK(ph_domain_detach(x.d) == PH_OK);
  return NULL;
}

static void blocking_domains_roots_updated(void **state) {
  (void)state;
  seed = tu_seed_named("blocking_domains_roots_updated");
  reset_hooks();
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = scan_hook;
  assert_int_equal(ph_heap_create(&cfg, &heap), PH_OK);
  pthread_barrier_init(&bar, NULL, NBLOCK + NCOMP);
  tu_failures_reset();
  blocked_roots_moved = blocked_blocks_moved = 0;
  pthread_t t[NBLOCK + NCOMP];
  for (long i = 0; i < NBLOCK + NCOMP; i++)
    pthread_create(&t[i], NULL, blocking_thread, (void *)i);
  for (int i = 0; i < NBLOCK + NCOMP; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&bar);
  ph_stats st = tu_stats(heap);
  printf("  compactions %llu; blocking domains: %zu blocks, %zu root slots "
         "moved\n",
         (unsigned long long)st.compactions, blocked_blocks_moved,
         blocked_roots_moved);
  tu_assert_no_failures();
  assert_true(st.compactions >= 1);
  assert_true(blocked_blocks_moved > 0);
  assert_true(blocked_roots_moved > 0);
  assert_int_equal(ph_heap_destroy(heap), PH_OK);
}

/* ----------------------------------------- PER_DOMAIN with two owners */

#define MP 16
static size_t pd_C;
static const size_t pd_wosize = 5;

/* Live blocks of pool j of owner o: owner 0 sparse first, owner 1 dense
 * first; never full, never empty. */
static size_t keep_of(int o, size_t j, size_t C) {
  size_t jj = o == 0 ? j : MP - 1 - j;
  return 1 + jj * (C - 3) / (MP - 1);
}

static int cmp_desc(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x > y ? -1 : x < y;
}

/* L - live of the kept k = ceil(L / C): the first k, or the densest k. */
static size_t predicted(const size_t *live, size_t n, size_t C, int densest) {
  size_t L = 0, kept = 0;
  for (size_t j = 0; j < n; j++)
    L += live[j];
  size_t k = (L + C - 1) / C;
  size_t *v = malloc(n * sizeof *v);
  if (!v)
    abort();
  memcpy(v, live, n * sizeof *v);
  if (densest)
    qsort(v, n, sizeof *v, cmp_desc);
  for (size_t j = 0; j < k && j < n; j++)
    kept += v[j];
  free(v);
  return L - kept;
}

static size_t pd_evacuated;

/* Owner 1 fills and thins its pools, then blocks while owner 0 compacts. */
static void *pd_thread(void *arg) {
  int o = (int)(long)arg;
  ph_domain *d;
  if (ph_domain_attach(heap, &d) != PH_OK) {
    TU_CHECK(!"attach");
    return NULL;
  }
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, PH_UNIT);
  int ok = cu_fill_pools(d, 4 << 10, pd_wosize, MP, pd_C, tab);
  TU_CHECK(ok);
  size_t n = MP * pd_C;
  ph_value *ids = malloc(n * sizeof *ids);
  if (!ids)
    abort();
  for (size_t j = 0; ok && j < MP; j++)
    for (size_t i = keep_of(o, j, pd_C); i < pd_C; i++)
      ph_set_field(*tab, j * pd_C + i, ph_val_int((intptr_t)i));
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_field(*tab, i);
    ids[i] = ph_is_block(v) ? ph_field(v, 0) : v;
  }
  bwait(d); /* B1: both built */
  if (o == 1) {
    ph_blocking_enter(d);
    pthread_barrier_wait(&bar); /* B2: owner 0 compacted */
    ph_blocking_leave(d);
  } else {
    TU_CHECK(ph_compact(d) == PH_OK);
    tu_verify_mt(d);
    ph_stats st;
    ph_stats_get(heap, &st);
    pd_evacuated = (size_t)st.evacuated_blocks;
    bwait(d); /* B2 */
  }
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_field(*tab, i);
    TU_CHECK(ph_is_block(v) ? ph_field(v, 0) == ids[i] : v == ids[i]);
  }
  free(ids);
  ph_scope_close(d, m);
  bwait(d); /* B3 */
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void per_domain_two_owners_one_blocking(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.pool_size = 4 << 10;
  cfg.compact_scope = PH_COMPACT_PER_DOMAIN;
  pd_C = cu_nslots(&cfg, pd_wosize);
  assert_true(pd_C >= 8);
  size_t live[2][MP], all[2 * MP];
  size_t expect = 0;
  for (int o = 0; o < 2; o++) {
    for (size_t j = 0; j < MP; j++)
      all[o * MP + j] = live[o][j] = keep_of(o, j, pd_C);
    expect += predicted(live[o], MP, pd_C, 0);
  }
  size_t global = predicted(all, 2 * MP, pd_C, 1);
  assert_int_equal(ph_heap_create(&cfg, &heap), PH_OK);
  pthread_barrier_init(&bar, NULL, 2);
  tu_failures_reset();
  pd_evacuated = 0;
  pthread_t t[2];
  for (long i = 0; i < 2; i++)
    pthread_create(&t[i], NULL, pd_thread, (void *)i);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&bar);
  printf("  per-domain: evacuated %zu, rule %zu, global rule %zu\n",
         pd_evacuated, expect, global);
  tu_assert_no_failures();
  assert_int_equal(pd_evacuated, expect);
  assert_true(pd_evacuated > global);
  assert_int_equal(ph_heap_destroy(heap), PH_OK);
}

/* -------------------------------------------- everybody compacts at once */

#define NALL 4

static void *storm_thread(void *arg) {
  long id = (long)arg;
  tu_rng r = {tu_mix(seed + (uint64_t)id * 104729, 0)};
  dom_data x;
  if (ph_domain_attach(heap, &x.d) != PH_OK) {
    TU_CHECK(!"attach");
    return NULL;
  }
  size_t m = ph_scope_open(x.d);
  build(&x, &r, tu_scale(20000, 4), 2 + (size_t)id * 3);
  for (int round = 0; round < 3; round++) {
    cu_graph a = walk(&x, 0);
    /* garbage between, so that collections interleave */
    for (size_t i = 0; i < tu_scale(5000, 4); i++)
      TU_CHECK(ph_is_block(ph_alloc(x.d, 1 + tu_below(&r, 20), 0)));
    TU_CHECK(ph_compact(x.d) == PH_OK);
    cu_graph b = walk(&x, 0);
    TU_CHECK(a.hash == b.hash && a.nodes == b.nodes);
    if (round == 1)
      tu_verify_mt(x.d);
    /* drop one chain and grow another: new fragmentation */
    *x.slot[tu_below(&r, x.nslot)] = PH_UNIT;
    size_t mm = ph_scope_open(x.d);
    dom_data y = {x.d, {0}, 0};
    build(&y, &r, tu_scale(3000, 4), 3);
    *x.slot[tu_below(&r, x.nslot)] = *y.slot[0];
    ph_scope_close(x.d, mm);
  }
  ph_scope_close(x.d, m);
  for (int k = 0; k < NHOOK; k++)
    hook_slots[ph_domain_index(x.d)][k] = PH_UNIT;
  bwait(x.d);
  TU_CHECK(ph_domain_detach(x.d) == PH_OK);
  return NULL;
}

static void all_domains_compact_at_once(void **state) {
  (void)state;
  seed = tu_seed_named("all_domains_compact_at_once");
  reset_hooks();
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.scan_roots = scan_hook;
  cfg.pool_size = 8 << 10;
  assert_int_equal(ph_heap_create(&cfg, &heap), PH_OK);
  pthread_barrier_init(&bar, NULL, NALL);
  tu_failures_reset();
  pthread_t t[NALL];
  for (long i = 0; i < NALL; i++)
    pthread_create(&t[i], NULL, storm_thread, (void *)i);
  for (int i = 0; i < NALL; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&bar);
  ph_stats st = tu_stats(heap);
  printf("  compactions %llu, collections %llu\n",
         (unsigned long long)st.compactions,
         (unsigned long long)st.collections);
  tu_assert_no_failures();
  assert_true(st.compactions >= 3);
  assert_int_equal(ph_heap_destroy(heap), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(blocking_domains_roots_updated),
      cmocka_unit_test(per_domain_two_owners_one_blocking),
      cmocka_unit_test(all_domains_compact_at_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
