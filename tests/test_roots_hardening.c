/* tests/test_roots_hardening.c -- roots misused the way an embedder can
 * (issue 13, items 1, 4, 9a, 9b):
 *
 * - a global root removed by a plain thread while a compaction is updating
 *   roots: once ph_root_remove has returned, the collector never writes the
 *   slot again (it is the embedder's to free or reuse);
 * - handle-scope calls inside a blocking section are refused with PH_ESTATE
 *   and leave the scope stack as it was;
 * - a slot the scan_roots hook reports twice (in one call, or also
 *   registered with ph_root_add, with GC helpers so that two participants
 *   may hold it) is updated once, to its block's new address;
 * - scope marks are unique: a stale mark never closes a newer scope at the
 *   same depth, and a mark of another domain closes nothing.
 *
 * Random parts print their seed (POOLHEAP_SEED repeats a run); threaded
 * parts are scaled down under TSan.  `test_roots_hardening PATTERN` runs
 * only the tests whose names match PATTERN. */
#include "test_util.h"

/* A cell of wosize 3 holding i in field 0, followed by `gap` garbage cells
 * of the same size class, so that survivors sit in sparse pools that the
 * compactor evacuates. */
static ph_value sparse_cell(ph_domain *d, intptr_t i, int gap) {
  ph_value v = ph_alloc(d, 3, 0);
  assert_true(ph_is_block(v));
  ph_set_field(v, 0, ph_val_int(i));
  for (int k = 0; k < gap; k++)
    assert_true(ph_is_block(ph_alloc(d, 3, 0)));
  return v;
}

static int holds(ph_value v, intptr_t i) {
  return ph_is_block(v) && ph_wosize(v) == 3 && ph_field(v, 0) == ph_val_int(i);
}

/* ------------------------------------------------ item 1: remove in update */

enum { NGS = 64 };
/* The global root slots: static, or (free_slots) the removed ones each in
 * its own malloc block, freed right after removal (ASan sees any later
 * access). */
static ph_value gstatic[NGS];
static ph_value *gs[NGS];

typedef struct remove_ctx {
  pthread_mutex_t m;
  pthread_cond_t c;
  _Atomic int in_update; /* on_event: PH_PHASE_UPDATE has begun */
  int go, done, timeout; /* (m) */
  ph_heap *h;
  int free_slots;
  ph_value after[NGS]; /* removed slots: value read right after removal */
  int remove_err;
} remove_ctx;
static remove_ctx rc = {.m = PTHREAD_MUTEX_INITIALIZER,
                        .c = PTHREAD_COND_INITIALIZER};

static void rm_event(ph_phase phase, int begin, unsigned dom, uint64_t t,
                     void *user) {
  (void)dom;
  (void)t;
  (void)user;
  if (phase == PH_PHASE_UPDATE)
    atomic_store(&rc.in_update, begin);
}

/* The hook of the update phase hands over to the plain thread and waits
 * until it has removed half of the global roots: the window a slow hook
 * opens in a real runtime. */
static void rm_hook(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)d;
  (void)visit;
  (void)ctx;
  (void)user;
  if (!atomic_load(&rc.in_update))
    return;
  pthread_mutex_lock(&rc.m);
  if (!rc.go) {
    rc.go = 1;
    pthread_cond_broadcast(&rc.c);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    while (!rc.done)
      if (pthread_cond_timedwait(&rc.c, &rc.m, &ts) != 0) {
        rc.timeout = 1;
        break;
      }
  }
  pthread_mutex_unlock(&rc.m);
}

static void *remover(void *arg) {
  (void)arg;
  pthread_mutex_lock(&rc.m);
  while (!rc.go)
    pthread_cond_wait(&rc.c, &rc.m);
  pthread_mutex_unlock(&rc.m);
  for (int i = 0; i < NGS; i += 2) {
    if (ph_root_remove(rc.h, gs[i]) != PH_OK)
      rc.remove_err++;
    /* the slot is ours again: what we read now must stay, or it goes */
    rc.after[i] = __atomic_load_n(gs[i], __ATOMIC_RELAXED);
    if (rc.free_slots) {
      free(gs[i]);
      gs[i] = NULL;
    }
  }
  pthread_mutex_lock(&rc.m);
  rc.done = 1;
  pthread_cond_broadcast(&rc.c);
  pthread_mutex_unlock(&rc.m);
  return NULL;
}

static void remove_during_update(int free_slots) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = rm_hook;
  cfg.on_event = rm_event;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  rc.h = h;
  rc.free_slots = free_slots;
  rc.go = rc.done = rc.timeout = rc.remove_err = 0;
  for (int i = 0; i < NGS; i++) {
    gs[i] = free_slots && i % 2 == 0 ? malloc(sizeof(ph_value)) : &gstatic[i];
    assert_non_null(gs[i]);
    *gs[i] = PH_UNIT;
    assert_int_equal(ph_root_add(h, gs[i]), PH_OK);
  }
  ph_value before[NGS];
  for (int i = 0; i < NGS; i++)
    before[i] = *gs[i] = sparse_cell(d, i, 200);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, remover, NULL), 0);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_djoin(d, t);
  assert_int_equal(rc.timeout, 0);
  assert_int_equal(rc.remove_err, 0);
  assert_true(tu_stats(h).evacuated_blocks > 0);
  int moved = 0, written_after_remove = 0, stale = 0;
  for (int i = 0; i < NGS; i += 2) {
    if (!free_slots)
      written_after_remove += *gs[i] != rc.after[i];
    stale += !holds(rc.after[i], i); /* not updated before the removal */
  }
  for (int i = 1; i < NGS; i += 2) { /* the others are still updated */
    assert_true(holds(*gs[i], i));
    moved += *gs[i] != before[i];
  }
  printf("removed slots%s: %d written after removal, %d stale at removal; "
         "%d of %d kept slots moved\n",
         free_slots ? " (freed)" : "", written_after_remove, stale, moved,
         NGS / 2);
  assert_true(moved >= NGS / 4); /* the scenario happened */
  assert_int_equal(written_after_remove, 0);
  assert_int_equal(stale, 0);
  tu_verify_ok(d);
  for (int i = 1; i < NGS; i += 2)
    assert_int_equal(ph_root_remove(h, gs[i]), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* The removed slots keep the value they held at removal. */
static void test_root_remove_during_update(void **state) {
  (void)state;
  remove_during_update(0);
}

/* The removed slots are freed at once (ASan: no use after free). */
static void test_root_remove_and_free_during_update(void **state) {
  (void)state;
  remove_during_update(1);
}

/* ------------------------------------------ item 4: scopes while blocking */

static void test_scope_calls_refused_while_blocking(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  assert_true(m != (size_t)-1);
  ph_value *r = ph_root(d, sparse_cell(d, 7, 0));
  assert_non_null(r);
  ph_blocking_enter(d);
  assert_true(ph_scope_open(d) == (size_t)-1);
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  assert_null(ph_root(d, PH_UNIT));
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  assert_int_equal(ph_scope_close(d, m), PH_ESTATE);
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  ph_blocking_leave(d);
  /* nothing changed: the scope is open and its root alive */
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, TU_BYTES(3));
  assert_true(holds(*r, 7));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* A domain sits in blocking sections and tries the scope calls while
 * another compacts: every call is refused, and the roots it opened before
 * are kept up to date (TSan: no race with the domain scan). */
typedef struct blk_job {
  ph_heap *h;
  pthread_barrier_t start;
  _Atomic int stop;
  _Atomic long tried, accepted;
} blk_job;

static void *blocking_scoper(void *arg) {
  blk_job *j = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(j->h, &d) == PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *r[16];
  for (int i = 0; i < 16; i++) {
    r[i] = ph_root(d, sparse_cell(d, i, 50));
    TU_CHECK(r[i] != NULL);
  }
  tu_dbarrier(d, &j->start);
  while (!atomic_load(&j->stop)) {
    ph_blocking_enter(d);
    for (int k = 0; k < 50; k++) {
      size_t mk = ph_scope_open(d);
      ph_value *s = ph_root(d, PH_UNIT);
      int e = ph_scope_close(d, m);
      atomic_fetch_add(&j->tried, 3);
      atomic_fetch_add(&j->accepted,
                       (mk != (size_t)-1) + (s != NULL) + (e == PH_OK));
    }
    ph_blocking_leave(d);
    for (int i = 0; i < 16; i++)
      TU_CHECK(holds(*r[i], i));
  }
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void test_scope_calls_while_blocking_concurrent(void **state) {
  (void)state;
  static blk_job j;
  memset(&j, 0, sizeof j);
  j.h = tu_heap(0);
  assert_int_equal(pthread_barrier_init(&j.start, NULL, 2), 0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(j.h, &d), PH_OK);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocking_scoper, &j), 0);
  tu_dbarrier(d, &j.start);
  /* at least `rounds` compactions, and until the other domain has tried
   * the calls many times */
  int rounds = (int)tu_scale(40, 4);
  for (int i = 0; i < rounds || (atomic_load(&j.tried) < 600 && i < 100000);
       i++) {
    for (int k = 0; k < 200; k++) /* garbage, so that pools move */
      assert_true(ph_is_block(ph_alloc(d, 3, 0)));
    assert_int_equal(ph_compact(d), PH_OK);
  }
  atomic_store(&j.stop, 1);
  tu_djoin(d, t);
  tu_assert_no_failures();
  assert_true(atomic_load(&j.tried) > 0);
  assert_int_equal(atomic_load(&j.accepted), 0);
  tu_verify_ok(d);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(j.h), PH_OK);
  pthread_barrier_destroy(&j.start);
}

/* ----------------------------------------- item 9a: a slot reported twice */

enum { NDUP = 96 };
typedef struct dup_roots {
  ph_value slot[NDUP];
  int twice; /* report every slot twice in a row */
} dup_roots;

static void dup_hook(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)d;
  dup_roots *r = user;
  for (int i = 0; i < NDUP; i++) {
    visit(&r->slot[i], ctx);
    if (r->twice)
      visit(&r->slot[i], ctx);
  }
}

static void test_hook_reports_slot_twice(void **state) {
  (void)state;
  static dup_roots r;
  memset(&r, 0, sizeof r);
  r.twice = 1;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = dup_hook;
  cfg.scan_roots_user = &r;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  for (int i = 0; i < NDUP; i++)
    r.slot[i] = PH_UNIT;
  for (int i = 0; i < NDUP; i++)
    r.slot[i] = sparse_cell(d, i, 100);
  ph_value before[NDUP];
  memcpy(before, r.slot, sizeof before);
  assert_int_equal(ph_compact(d), PH_OK);
  int moved = 0, wrong = 0;
  for (int i = 0; i < NDUP; i++) {
    moved += r.slot[i] != before[i];
    wrong += !holds(r.slot[i], i);
  }
  printf("reported twice: %d of %d moved, %d wrong\n", moved, NDUP, wrong);
  assert_int_equal(wrong, 0);
  assert_true(moved >= NDUP / 2);
  tu_verify_ok(d);
  assert_int_equal(tu_stats(h).live_bytes, NDUP * TU_BYTES(3));
  r.twice = 0;
  for (int i = 0; i < NDUP; i++)
    r.slot[i] = PH_UNIT;
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* The same slots also registered with ph_root_add, with GC helpers: the
 * global set and the hook may be claimed by different participants, which
 * then both hold a slot.  Each round moves fresh sparse cells. */
static void test_slot_reported_by_hook_and_global(void **state) {
  (void)state;
  static dup_roots r;
  memset(&r, 0, sizeof r);
  tu_rng rng;
  tu_rng_init(&rng, 9);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = dup_hook;
  cfg.scan_roots_user = &r;
  cfg.gc_helpers = 2;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  for (int i = 0; i < NDUP; i++) {
    r.slot[i] = PH_UNIT;
    assert_int_equal(ph_root_add(h, &r.slot[i]), PH_OK);
  }
  int rounds = (int)tu_scale(20, 4);
  for (int k = 0; k < rounds; k++) {
    r.twice = (int)tu_below(&rng, 2);
    for (int i = 0; i < NDUP; i++)
      r.slot[i] = sparse_cell(d, k * NDUP + i, 20 + (int)tu_below(&rng, 100));
    assert_int_equal(ph_compact(d), PH_OK);
    for (int i = 0; i < NDUP; i++)
      assert_true(holds(r.slot[i], k * NDUP + i));
    assert_int_equal(tu_stats(h).live_bytes, NDUP * TU_BYTES(3));
  }
  tu_verify_ok(d);
  for (int i = 0; i < NDUP; i++)
    assert_int_equal(ph_root_remove(h, &r.slot[i]), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* --------------------------------------------------- item 9b: stale marks */

static void test_stale_mark_refused(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t outer = ph_scope_open(d);
  size_t m1 = ph_scope_open(d);
  assert_non_null(ph_root(d, PH_UNIT));
  assert_int_equal(ph_scope_close(d, m1), PH_OK);
  /* a newer scope at the same nesting level and depth */
  size_t m2 = ph_scope_open(d);
  ph_value *r = ph_root(d, sparse_cell(d, 5, 0));
  assert_non_null(r);
  assert_true(m2 != m1);
  assert_int_equal(ph_scope_close(d, m1), PH_ESTATE);
  assert_int_equal(ph_last_error(d), PH_ESTATE);
  /* m2 is still open and its root alive */
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, TU_BYTES(3));
  assert_true(holds(*r, 5));
  assert_int_equal(ph_scope_close(d, m2), PH_OK);
  assert_int_equal(ph_scope_close(d, m2), PH_ESTATE);
  /* the outermost scope too: close, reopen, the old mark is stale */
  assert_int_equal(ph_scope_close(d, outer), PH_OK);
  size_t again = ph_scope_open(d);
  assert_true(again != outer);
  assert_int_equal(ph_scope_close(d, outer), PH_ESTATE);
  assert_int_equal(ph_scope_close(d, again), PH_OK);
  /* many open/close cycles never repeat a mark of this domain */
  tu_set seen = {0};
  for (int i = 0; i < 10000; i++) {
    size_t m = ph_scope_open(d);
    assert_true(m != 0 && m != (size_t)-1);
    assert_true(tu_set_add(&seen, (ph_value)m));
    assert_int_equal(ph_scope_close(d, m), PH_OK);
  }
  tu_set_free(&seen);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* A mark of one domain does not close a scope of another. */
typedef struct mark_job {
  ph_heap *h;
  size_t mark; /* the other domain's first mark */
  int close_err;
} mark_job;

static void *other_domain(void *arg) {
  mark_job *j = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(j->h, &d) == PH_OK);
  size_t m = ph_scope_open(d);
  j->close_err = ph_scope_close(d, j->mark);
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void test_mark_of_other_domain_refused(void **state) {
  (void)state;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  mark_job j = {.h = h};
  j.mark = ph_scope_open(d); /* the first scope of each domain */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, other_domain, &j), 0);
  tu_djoin(d, t);
  tu_assert_no_failures();
  assert_int_equal(j.close_err, PH_ESTATE);
  assert_int_equal(ph_scope_close(d, j.mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* argv[1], if given, runs only the tests whose names match that pattern
 * (cmocka's filter: '*' and '?' wildcards). */
int main(int argc, char **argv) {
  tu_seed();
  if (argc > 1)
    cmocka_set_test_filter(argv[1]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_root_remove_during_update),
      cmocka_unit_test(test_root_remove_and_free_during_update),
      cmocka_unit_test(test_scope_calls_refused_while_blocking),
      cmocka_unit_test(test_scope_calls_while_blocking_concurrent),
      cmocka_unit_test(test_hook_reports_slot_twice),
      cmocka_unit_test(test_slot_reported_by_hook_and_global),
      cmocka_unit_test(test_stale_mark_refused),
      cmocka_unit_test(test_mark_of_other_domain_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
