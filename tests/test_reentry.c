/* tests/test_reentry.c -- calls into poolheap from inside its callbacks
 * (issue 13, item 8; DESIGN.md: barrier.reentry).
 *
 * Every callback the embedder gives (the ph_census fn, on_event, scan_roots)
 * runs inside a stop-the-world section.  From inside one, on that thread,
 * every poolheap function that takes a heap or a domain is refused:
 * PH_ESTATE (ph_alloc 0 with ph_last_error PH_ESTATE on the caller's own
 * domain, ph_root NULL, ph_scope_open (size_t)-1, the void functions
 * return without effect).  Unfixed, the first such call (ph_alloc or
 * ph_collect from the census fn, ph_alloc from on_event or scan_roots)
 * crashed the process (segfault), in release and debug builds.
 *
 * - census: the callback calls all of them on its own domain and heap;
 *   each is refused, and afterwards nothing happened: no collection was
 *   counted, the root stack, the global roots, the domain count and the
 *   domain's state are as before, the heap verifies and still allocates,
 *   collects and compacts;
 * - on_event: the same from every participant of collecting and compacting
 *   sections: two domains on their own threads and two GC helpers (which
 *   have no domain: the heap-level calls);
 * - scan_roots: the same from the hook, which is called for every attached
 *   domain, a blocking one included (from another domain's thread);
 * - another heap: from a callback of heap A, the calls on the same thread's
 *   domain of heap B that could wait for or run a section of B, or take
 *   memory, are refused too; B works afterwards.
 */
#include "test_util.h"

#define BIG ((size_t)1 << 16) /* fields: a large block */

static ph_heap *H;
static _Atomic long calls, refused;
static _Thread_local ph_domain *mine; /* the calling thread's domain of H */
/* Per domain slot: the innermost open scope of that domain, and a slot
 * registered as a global root. */
static size_t marks[8];
static ph_value groot;

static void census_noop(const ph_census_class *c, void *user) {
  (void)c;
  (void)user;
}

#define REFUSED(c)                                                             \
  do {                                                                         \
    atomic_fetch_add(&calls, 1);                                               \
    if (c)                                                                     \
      atomic_fetch_add(&refused, 1);                                           \
    else                                                                       \
      TU_CHECK(c);                                                             \
  } while (0)

/* The heap-level functions, from any thread inside a section of h. */
static void try_heap(ph_heap *h) {
  ph_stats st;
  REFUSED(ph_stats_get(h, &st) == PH_ESTATE);
  static ph_value extra;
  REFUSED(ph_root_add(h, &extra) == PH_ESTATE);
  REFUSED(ph_root_remove(h, &groot) == PH_ESTATE);
  ph_domain *x = NULL;
  REFUSED(ph_domain_attach(h, &x) == PH_ESTATE && x == NULL);
  ph_heap *y = NULL;
  REFUSED(ph_heap_create(NULL, &y) == PH_ESTATE && y == NULL);
  REFUSED(ph_heap_destroy(h) == PH_ESTATE);
}

/* Everything, on domain d (own: d is the calling thread's domain; mark:
 * d's innermost open scope). */
static void try_domain(ph_domain *d, int own, size_t mark) {
  ph_value v = ph_alloc(d, 3, 0);
  REFUSED(v == 0 && (!own || ph_last_error(d) == PH_ESTATE));
  v = ph_alloc(d, BIG, PH_TAG_RAW);
  REFUSED(v == 0 && (!own || ph_last_error(d) == PH_ESTATE));
  REFUSED(ph_collect(d) == PH_ESTATE);
  REFUSED(ph_compact(d) == PH_ESTATE);
  char why[64];
  REFUSED(ph_verify(d, why, sizeof why) == PH_ESTATE);
  REFUSED(ph_census(d, census_noop, NULL) == PH_ESTATE);
  REFUSED(ph_scope_open(d) == (size_t)-1);
  REFUSED(ph_root(d, PH_UNIT) == NULL);
  REFUSED(ph_scope_close(d, mark) == PH_ESTATE);
  REFUSED(ph_domain_detach(d) == PH_ESTATE);
  /* void: checked afterwards (the domain is still running, nothing was
   * joined twice) */
  ph_blocking_enter(d);
  ph_blocking_leave(d);
  ph_safepoint(d);
  try_heap(ph_domain_heap(d));
}

/* After the sections: d is as before (running, attached, its scope open,
 * groot registered) and the heap is whole. */
static void check_intact(ph_domain *d, uint64_t collections_before,
                         uint64_t expect_collections) {
  ph_stats st = tu_stats(H);
  assert_int_equal(st.collections, collections_before + expect_collections);
  tu_verify_ok(d);
  ph_value v = ph_alloc(d, 3, 0); /* refused if d were left blocking */
  assert_true(ph_is_block(v));
  assert_true(ph_is_block(ph_alloc(d, BIG, PH_TAG_RAW)));
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
}

static ph_heap *heap_with(ph_config *cfg) {
  cfg->max_domains = 8;
  cfg->gc_percent = 0;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(cfg, &h), PH_OK);
  return h;
}

/* The set-up of the tests on H: H of cfg, this thread's domain d of it
 * (mine), groot registered, a scope open (marks[d]) holding keep, a block
 * of 5 fields; and its end: keep intact, the scope closed, groot removed,
 * d detached, H destroyed. */
typedef struct fixture {
  ph_domain *d;
  size_t mark;
  ph_value *keep;
} fixture;

static fixture fixture_open(ph_config *cfg) {
  fixture f;
  H = heap_with(cfg);
  assert_int_equal(ph_domain_attach(H, &f.d), PH_OK);
  mine = f.d;
  groot = PH_UNIT;
  assert_int_equal(ph_root_add(H, &groot), PH_OK);
  f.mark = marks[ph_domain_index(f.d)] = ph_scope_open(f.d);
  f.keep = ph_root(f.d, ph_alloc(f.d, 5, 0));
  return f;
}

static void fixture_close(fixture *f) {
  assert_int_equal(ph_wosize(*f->keep), 5);
  assert_int_equal(ph_scope_close(f->d, f->mark), PH_OK);
  assert_int_equal(ph_root_remove(H, &groot), PH_OK);
  assert_int_equal(ph_domain_detach(f->d), PH_OK);
  assert_int_equal(ph_heap_destroy(H), PH_OK);
  mine = NULL;
}

static void reset_counts(void) {
  atomic_store(&calls, 0);
  atomic_store(&refused, 0);
}

/* ----------------------------------------------------------------- census */
static int census_rows;

static void census_cb(const ph_census_class *c, void *user) {
  (void)user;
  census_rows++;
  if (c->size_class == 0 || c->size_class == 5)
    try_domain(mine, 1, marks[ph_domain_index(mine)]);
}

static void census_reentry(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  fixture f = fixture_open(&cfg);
  ph_domain *d = f.d;
  marks[ph_domain_index(d)] = ph_scope_open(d);
  ph_value *inner = ph_root(d, ph_alloc(d, 7, 0));
  groot = ph_alloc(d, 2, 0);
  ph_stats before = tu_stats(H);
  reset_counts();
  census_rows = 0;
  assert_int_equal(ph_census(d, census_cb, NULL), PH_OK);
  assert_int_equal(census_rows,
                   (int)(before.size_classes + before.medium_classes));
  tu_assert_no_failures();
  assert_true(atomic_load(&calls) >= 2 * 16);
  assert_int_equal(atomic_load(&refused), atomic_load(&calls));
  assert_int_equal(tu_stats(H).domains, 1);
  check_intact(d, before.collections, 0);
  /* the roots are the ones we made, all still in place */
  assert_int_equal(ph_wosize(*inner), 7);
  assert_int_equal(ph_wosize(groot), 2);
  assert_int_equal(ph_scope_close(d, marks[ph_domain_index(d)]), PH_OK);
  fixture_close(&f);
}

/* --------------------------------------------------------------- on_event */
static _Atomic long helper_events;

static void on_event(ph_phase phase, int begin, unsigned domain,
                     uint64_t time_ns, void *user) {
  (void)time_ns;
  (void)user;
  if (!begin || (phase != PH_PHASE_STW && phase != PH_PHASE_UPDATE))
    return;
  if (domain >= 8) { /* a GC helper: no domain of its own */
    atomic_fetch_add(&helper_events, 1);
    try_heap(H);
  } else {
    TU_CHECK(mine && ph_domain_index(mine) == domain);
    if (mine)
      try_domain(mine, 1, marks[ph_domain_index(mine)]);
  }
}

static pthread_barrier_t ebar;
static _Atomic int estop;

static void *event_peer(void *arg) {
  (void)arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(H, &d) == PH_OK);
  mine = d;
  size_t m = ph_scope_open(d);
  marks[ph_domain_index(d)] = m;
  tu_dbarrier(d, &ebar);
  long n = 0;
  while (!atomic_load(&estop)) { /* allocates: joins sections */
    TU_CHECK(ph_is_block(ph_alloc(d, 1 + (size_t)(n++ % 9), 0)));
    ph_safepoint(d);
  }
  tu_dbarrier(d, &ebar);
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  TU_CHECK(ph_alloc(d, 3, 0) != 0); /* running, not left blocking */
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void event_reentry(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.on_event = on_event;
  cfg.gc_helpers = 2;
  fixture f = fixture_open(&cfg);
  ph_domain *d = f.d;
  pthread_barrier_init(&ebar, NULL, 2);
  atomic_store(&estop, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, event_peer, NULL), 0);
  tu_dbarrier(d, &ebar); /* the peer is attached and running */
  ph_stats before = tu_stats(H);
  reset_counts();
  atomic_store(&helper_events, 0);
  int rounds = (int)tu_scale(6, 3);
  for (int i = 0; i < rounds; i++)
    assert_int_equal(i % 2 ? ph_compact(d) : ph_collect(d), PH_OK);
  atomic_store(&estop, 1);
  tu_dbarrier(d, &ebar);
  tu_djoin(d, t);
  tu_assert_no_failures();
  assert_true(atomic_load(&helper_events) >= 2 * rounds);
  assert_true(atomic_load(&calls) > 0);
  assert_int_equal(atomic_load(&refused), atomic_load(&calls));
  assert_int_equal(tu_stats(H).domains, 1);
  check_intact(d, before.collections, (uint64_t)rounds);
  pthread_barrier_destroy(&ebar);
  fixture_close(&f);
  tu_assert_no_failures();
}

/* ------------------------------------------------------------- scan_roots */
static _Atomic long hook_foreign;

static void scan_hook(ph_domain *dd, ph_visit_fn visit, void *ctx, void *user) {
  (void)visit;
  (void)ctx;
  (void)user;
  if (dd != mine)
    atomic_fetch_add(&hook_foreign, 1);
  try_domain(dd, dd == mine, marks[ph_domain_index(dd)]);
}

static void *blocked_peer(void *arg) {
  (void)arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(H, &d) == PH_OK);
  mine = d;
  size_t m = ph_scope_open(d);
  marks[ph_domain_index(d)] = m;
  TU_CHECK(ph_root(d, ph_alloc(d, 4, 0)) != NULL);
  tu_dbarrier(d, &ebar); /* attached */
  tu_dbarrier(d, &ebar); /* the main thread collected (we were blocking) */
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  TU_CHECK(ph_alloc(d, 3, 0) != 0);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void scan_roots_reentry(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.scan_roots = scan_hook;
  cfg.gc_helpers = 1;
  fixture f = fixture_open(&cfg);
  ph_domain *d = f.d;
  pthread_barrier_init(&ebar, NULL, 2);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_peer, NULL), 0);
  tu_dbarrier(d, &ebar);
  ph_stats before = tu_stats(H);
  reset_counts();
  atomic_store(&hook_foreign, 0);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  tu_assert_no_failures();
  assert_true(atomic_load(&hook_foreign) > 0); /* the blocking peer's */
  assert_true(atomic_load(&calls) > 0);
  assert_int_equal(atomic_load(&refused), atomic_load(&calls));
  assert_int_equal(tu_stats(H).domains, 2);
  tu_dbarrier(d, &ebar);
  tu_djoin(d, t);
  check_intact(d, before.collections, 2);
  pthread_barrier_destroy(&ebar);
  fixture_close(&f);
  tu_assert_no_failures();
}

/* ----------------------------------------------------------- another heap */
static ph_domain *other; /* this thread's domain of heap B */
static size_t other_mark;

static void census_other(const ph_census_class *c, void *user) {
  (void)user;
  if (c->size_class == 0)
    try_domain(other, 1, other_mark); /* B's cache for wosize 3 is empty */
}

static void other_heap_reentry(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  H = heap_with(&cfg);
  ph_config_init(&cfg);
  ph_heap *b = heap_with(&cfg);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(H, &d), PH_OK);
  assert_int_equal(ph_domain_attach(b, &other), PH_OK);
  mine = d;
  other_mark = ph_scope_open(other);
  ph_value *keep = ph_root(other, ph_alloc(other, 6, 0));
  groot = PH_UNIT;
  assert_int_equal(ph_root_add(b, &groot), PH_OK);
  ph_stats before = tu_stats(b);
  reset_counts();
  assert_int_equal(ph_census(d, census_other, NULL), PH_OK);
  tu_assert_no_failures();
  assert_true(atomic_load(&calls) > 0);
  assert_int_equal(atomic_load(&refused), atomic_load(&calls));
  ph_stats after = tu_stats(b);
  assert_int_equal(after.collections, before.collections);
  assert_int_equal(after.domains, 1);
  tu_verify_ok(other);
  assert_true(ph_is_block(ph_alloc(other, 3, 0)));
  assert_int_equal(ph_collect(other), PH_OK);
  assert_int_equal(ph_wosize(*keep), 6);
  assert_int_equal(ph_scope_close(other, other_mark), PH_OK);
  assert_int_equal(ph_root_remove(b, &groot), PH_OK);
  assert_int_equal(ph_domain_detach(other), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(b), PH_OK);
  assert_int_equal(ph_heap_destroy(H), PH_OK);
  mine = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(census_reentry),
      cmocka_unit_test(event_reentry),
      cmocka_unit_test(scan_roots_reentry),
      cmocka_unit_test(other_heap_reentry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
