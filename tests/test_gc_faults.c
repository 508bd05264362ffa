/* tests/test_gc_faults.c -- the PH_ENOMEM paths of issue 12's tables
 * (DESIGN.md: tests.faults, gc.weak, gc.final, gc.pin), driven by gc/'s
 * allocation-failure hook (ph_gc_fault_set).
 *
 * Each test makes one kind of table unable to grow and checks the error
 * code the contract gives, that the heap verifies, and, against a model
 * kept outside the heap, that nothing was lost: pins, registrations,
 * finaliser calls, weak fields and the data they hold.
 * - ph_compact refused (the pinned pools' list): every caller whose request
 *   the section served gets PH_ENOMEM (the leader and a coalesced caller),
 *   none retries for ever, nothing moved; with the hook off it compacts.
 * - the pin table: the pin that needs growth is refused and changes
 *   nothing; the pins made before hold (kept alive, not moved).
 * - the finaliser table: the registration that needs growth is refused;
 *   exactly the ones registered before run, once.
 * - a ready queue: due finalisers that cannot be queued stay due and run
 *   after a later collection, once, FIRST with its value, LAST with 0
 *   (even after the LAST value's memory was reused).
 * - the orphans' queue: the ready entries of a domain that detaches reach
 *   it though no table can grow (room reserved at ph_finalise), and run
 *   once on another domain.
 * - the weak and ephemeron lists: blocks degrade to strong for that
 *   collection (targets and data kept, never less), the next collection
 *   clears them. */
#include "test_util.h"

#include "gc/gc.h"

#include <signal.h>
#include <unistd.h>

static void env_close(tu_env *e) {
  ph_gc_fault_set(0, 0, 0);
  tu_env_close(e);
}

static ph_value node(ph_domain *d, intptr_t id) {
  ph_value v = ph_alloc(d, 2, 0);
  assert_true(v != 0);
  ph_set_field(v, 0, ph_val_int(id));
  return v;
}

static intptr_t id_of(ph_value v) {
  return ph_int_val(ph_field(v, 0));
}

static ph_stats stats(ph_heap *h) {
  ph_stats s;
  assert_int_equal(ph_stats_get(h, &s), PH_OK);
  return s;
}

/* A test that would hang (a request retried for ever) fails instead. */
static void watchdog(unsigned seconds) {
  signal(SIGALRM, SIG_DFL);
  alarm(seconds);
}

/* --------------------------------------------- ph_compact refused */

/* n nodes in arr, 1 in 64 kept (sparse pools, so a compaction moves
 * them); node k*64 pinned for k < npin.  Returns the array's root. */
static ph_value *sparse(tu_env *e, size_t n, size_t npin) {
  ph_value *arr = ph_root(e->d, ph_alloc(e->d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = node(e->d, (intptr_t)i);
    if (i % 64 == 0)
      ph_set_field(*arr, i, x);
  }
  for (size_t k = 0; k < npin; k++)
    assert_int_equal(ph_pin(e->d, ph_field(*arr, k * 64)), PH_OK);
  return arr;
}

/* The addresses of the kept nodes, outside the heap. */
static ph_value *addresses(ph_value arr, size_t n) {
  ph_value *a = calloc(n, sizeof *a);
  assert_non_null(a);
  for (size_t i = 0; i < n; i += 64)
    a[i] = ph_field(arr, i);
  return a;
}

static void check_sparse(ph_value arr, size_t n, const ph_value *addr,
                         int moved_ok) {
  for (size_t i = 0; i < n; i += 64) {
    ph_value x = ph_field(arr, i);
    assert_int_equal(id_of(x), (intptr_t)i);
    if (!moved_ok)
      assert_true(x == addr[i]);
  }
}

/* One domain: its ph_compact is refused and says so, once (no retry). */
static void test_compact_refused_leader(void **state) {
  (void)state;
  watchdog(120);
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 1);
  const size_t n = tu_scale(32000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = sparse(&e, n, 3);
  ph_value *addr = addresses(*arr, n);
  ph_stats s0 = stats(e.h);
  ph_gc_fault_set(PH_GC_OP_PINNED_POOLS, 1, 1);
  assert_int_equal(ph_compact(e.d), PH_ENOMEM);
  assert_int_equal(ph_last_error(e.d), PH_ENOMEM);
  assert_true(ph_gc_fault_hits() >= 1);
  ph_stats s1 = stats(e.h);
  assert_int_equal(s1.collections, s0.collections + 1); /* it collected */
  assert_int_equal(s1.compactions, s0.compactions);     /* and no more */
  check_sparse(*arr, n, addr, 0);
  tu_verify_ok(e.d);
  ph_gc_fault_set(0, 0, 0);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_int_equal(stats(e.h).compactions, s0.compactions + 1);
  assert_true(stats(e.h).evacuated_blocks > 0);
  check_sparse(*arr, n, addr, 1);
  for (size_t k = 0; k < 3; k++) /* pinned ones stayed */
    assert_true(ph_field(*arr, k * 64) == addr[k * 64]);
  free(addr);
  ph_scope_close(e.d, m);
  alarm(0);
  env_close(&e);
}

/* Two domains call ph_compact at once: both are RUNNING when the first
 * section is elected, so the other one's call joins it (coalesces).  Both
 * must get PH_ENOMEM. */
typedef struct two {
  ph_heap *h;
  pthread_barrier_t go, done;
  int err;
  int rounds;
} two;

static void *second(void *arg) {
  two *t = arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(t->h, &d), PH_OK);
  for (int r = 0; r < t->rounds; r++) {
    pthread_barrier_wait(&t->go); /* RUNNING: no section can be pending */
    t->err = ph_compact(d);
    tu_dbarrier(d, &t->done);
  }
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void test_compact_refused_coalesced(void **state) {
  (void)state;
  watchdog(120);
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  const size_t n = tu_scale(32000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = sparse(&e, n, 3);
  ph_value *addr = addresses(*arr, n);
  two t = {.h = e.h, .rounds = 4};
  pthread_barrier_init(&t.go, NULL, 2);
  pthread_barrier_init(&t.done, NULL, 2);
  pthread_t th;
  /* attach inside a blocking section: a section of ours would wait */
  ph_blocking_enter(e.d);
  assert_int_equal(pthread_create(&th, NULL, second, &t), 0);
  ph_blocking_leave(e.d);
  ph_gc_fault_set(PH_GC_OP_PINNED_POOLS, 1, 1);
  for (int r = 0; r < t.rounds; r++) {
    ph_stats s0 = stats(e.h);
    pthread_barrier_wait(&t.go);
    int err = ph_compact(e.d);
    tu_dbarrier(e.d, &t.done);
    ph_stats s1 = stats(e.h);
    assert_int_equal(err, PH_ENOMEM);
    assert_int_equal(t.err, PH_ENOMEM);
    /* one section served both calls (coalesced), and it did not compact */
    assert_int_equal(s1.collections, s0.collections + 1);
    assert_int_equal(s1.compactions, s0.compactions);
    check_sparse(*arr, n, addr, 0);
  }
  ph_gc_fault_set(0, 0, 0);
  tu_djoin(e.d, th);
  tu_verify_ok(e.d);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_true(stats(e.h).evacuated_blocks > 0);
  check_sparse(*arr, n, addr, 1);
  pthread_barrier_destroy(&t.go);
  pthread_barrier_destroy(&t.done);
  free(addr);
  ph_scope_close(e.d, m);
  alarm(0);
  env_close(&e);
}

/* ------------------------------------------------------- pin table */

static void test_pin_table_cannot_grow(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  const size_t n = tu_scale(32000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = sparse(&e, n, 0);
  /* the table starts at 64 entries, at most half full: 32 pins fit */
  size_t pinned = 0;
  for (; pinned < 32; pinned++)
    assert_int_equal(ph_pin(e.d, ph_field(*arr, pinned * 64)), PH_OK);
  ph_gc_fault_set(PH_GC_OP_PINS, 1, 1);
  ph_value x = ph_field(*arr, 32 * 64);
  assert_int_equal(ph_pin(e.d, x), PH_ENOMEM);
  assert_int_equal(ph_last_error(e.d), PH_ENOMEM);
  assert_int_equal(ph_gc_fault_hits(), 1);
  assert_int_equal(stats(e.h).pinned_blocks, 32);
  assert_int_equal(ph_unpin(e.d, x), PH_EINVAL); /* it was not pinned */
  /* a block pinned already needs no growth */
  assert_int_equal(ph_pin(e.d, ph_field(*arr, 0)), PH_OK);
  assert_int_equal(ph_unpin(e.d, ph_field(*arr, 0)), PH_OK);
  tu_verify_ok(e.d);
  /* the pins made before hold: kept alive and in place */
  ph_value keep[32];
  for (size_t k = 0; k < 32; k++) {
    keep[k] = ph_field(*arr, k * 64);
    ph_set_field(*arr, k * 64, 0);
  }
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_true(stats(e.h).evacuated_blocks > 0);
  for (size_t k = 0; k < 32; k++) /* alive, and at the same address */
    assert_int_equal(id_of(keep[k]), (intptr_t)(k * 64));
  tu_verify_ok(e.d);
  ph_gc_fault_set(0, 0, 0);
  /* x was not pinned: the compaction may have moved it out of its pool,
   * which a pinned block keeps (compact.pin.holes) */
  x = ph_field(*arr, 32 * 64);
  assert_int_equal(ph_pin(e.d, x), PH_OK);
  assert_int_equal(stats(e.h).pinned_blocks, 33);
  for (size_t k = 0; k < 32; k++)
    assert_int_equal(ph_unpin(e.d, keep[k]), PH_OK);
  assert_int_equal(ph_unpin(e.d, x), PH_OK);
  assert_int_equal(stats(e.h).pinned_blocks, 0);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* ------------------------------------------------------- finalisers */

typedef struct log {
  size_t n;
  intptr_t id[256]; /* the value's id, -1 for 0 */
  int kind[256];
} log_t;

static void fin_first(ph_domain *d, ph_value v, void *user) {
  (void)d;
  log_t *l = user;
  assert_true(l->n < 256);
  l->kind[l->n] = 0;
  l->id[l->n++] = v ? id_of(v) : -1;
}

static void test_final_table_cannot_grow(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  static log_t l;
  memset(&l, 0, sizeof l);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, 65, 0));
  for (size_t i = 0; i < 65; i++)
    ph_set_field(*arr, i, node(e.d, (intptr_t)i));
  /* the table starts at 64 entries */
  for (size_t i = 0; i < 64; i++)
    assert_int_equal(
        ph_finalise(e.d, ph_field(*arr, i), fin_first, &l, PH_FINAL_FIRST),
        PH_OK);
  ph_gc_fault_set(PH_GC_OP_FINAL, 1, 1);
  assert_int_equal(
      ph_finalise(e.d, ph_field(*arr, 64), fin_first, &l, PH_FINAL_FIRST),
      PH_ENOMEM);
  assert_int_equal(ph_last_error(e.d), PH_ENOMEM);
  assert_int_equal(ph_gc_fault_hits(), 1);
  tu_verify_ok(e.d);
  for (size_t i = 0; i < 65; i++)
    ph_set_field(*arr, i, 0);
  assert_int_equal(ph_collect(e.d), PH_OK); /* runs them on return */
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(l.n, 64); /* every one registered, once; not the 65th */
  int seen[65] = {0};
  for (size_t k = 0; k < l.n; k++) {
    assert_true(l.id[k] >= 0 && l.id[k] < 64);
    assert_int_equal(seen[l.id[k]]++, 0);
  }
  assert_int_equal(stats(e.h).finalisers_run, 64);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* The log of n finalisers (even ids FIRST, odd ids LAST) holds each once:
 * every FIRST one with its value, every LAST one with 0 (id -1). */
static void check_each_once(const log_t *l, size_t n) {
  int seen[8] = {0};
  size_t last = 0;
  assert_true(n <= 8);
  for (size_t k = 0; k < l->n; k++) {
    if (l->id[k] == -1) {
      last++;
    } else {
      assert_true(l->id[k] >= 0 && l->id[k] < (intptr_t)n);
      assert_int_equal(l->id[k] % 2, 0); /* FIRST ones see their value */
      assert_int_equal(seen[l->id[k]]++, 0);
    }
  }
  assert_int_equal(last, n / 2);
}

/* Due finalisers meet a ready queue that cannot grow: they stay due and
 * run after a later collection, once each, FIRST with its value and LAST
 * with 0 after it; the LAST value's memory is reused in between. */
static void test_final_queue_cannot_grow(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  static log_t l;
  memset(&l, 0, sizeof l);
  size_t m = ph_scope_open(e.d);
  const size_t n = 8;
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = node(e.d, (intptr_t)i);
    ph_set_field(*arr, i, x);
    assert_int_equal(ph_finalise(e.d, x, fin_first, &l,
                                 i % 2 ? PH_FINAL_LAST : PH_FINAL_FIRST),
                     PH_OK);
  }
  for (size_t i = 0; i < n; i++)
    ph_set_field(*arr, i, 0);
  ph_gc_fault_set(PH_GC_OP_QUEUE, 1, 1);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_true(ph_gc_fault_hits() >= 1);
  assert_int_equal(l.n, 0); /* nothing could be queued */
  tu_verify_ok(e.d);
  /* reuse the freed slots (the LAST values'): new live nodes of the size */
  ph_value *fill = ph_root(e.d, ph_alloc(e.d, 4096, 0));
  for (size_t i = 0; i < 4096; i++)
    ph_set_field(*fill, i, node(e.d, 1000 + (intptr_t)i));
  assert_int_equal(ph_compact(e.d), PH_OK); /* still refused: kept due */
  assert_int_equal(l.n, 0);
  tu_verify_ok(e.d);
  ph_gc_fault_set(0, 0, 0);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(l.n, n); /* each once */
  check_each_once(&l, n);
  for (size_t i = 0; i < 4096; i++)
    assert_int_equal(id_of(ph_field(*fill, i)), 1000 + (intptr_t)i);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(l.n, n); /* and never again */
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* Domain A's due finalisers are in its ready queue when it detaches,
 * with every table unable to grow: they go to the orphans' queue all the
 * same (its room was reserved at ph_finalise, gc.final.reserve) and run
 * on B, once each, FIRST with its value and LAST with 0. */
static void test_final_orphan_queue_cannot_grow(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  static log_t l;
  memset(&l, 0, sizeof l);
  ph_domain *a;
  assert_int_equal(ph_domain_attach(e.h, &a), PH_OK); /* this thread too */
  const size_t n = 8;
  for (size_t i = 0; i < n; i++)
    assert_int_equal(ph_finalise(a, node(a, (intptr_t)i), fin_first, &l,
                                 i % 2 ? PH_FINAL_LAST : PH_FINAL_FIRST),
                     PH_OK);
  ph_blocking_enter(a); /* B's collection goes on without A */
  assert_int_equal(ph_collect(e.d), PH_OK);
  ph_blocking_leave(a);
  assert_int_equal(l.n, 0); /* ready for A, which ran none */
  ph_gc_fault_set(PH_GC_OP_QUEUE | PH_GC_OP_FINAL, 1, 1);
  assert_int_equal(ph_domain_detach(a), PH_OK);
  ph_gc_fault_set(0, 0, 0);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(l.n, n); /* none lost */
  check_each_once(&l, n);
  tu_verify_ok(e.d);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_run_finalisers(e.d), PH_OK);
  assert_int_equal(l.n, n); /* and never again */
  assert_int_equal(stats(e.h).finalisers_run, n);
  env_close(&e);
}

/* ----------------------------------------------- weak and ephemerons */

/* n weak blocks (op PH_GC_OP_WEAK) or ephemerons (PH_GC_OP_EPHE), each
 * holding an otherwise unreachable node (an ephemeron: as its key, with a
 * data node reachable only from it).  The list cannot grow: the collection
 * keeps every target and data (strong, never less), the next clears them. */
static void weak_cannot_grow(unsigned op, unsigned helpers) {
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, helpers);
  const size_t n = 1000;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value w = op == PH_GC_OP_WEAK ? ph_alloc_weak(e.d, 1)
                                     : ph_alloc_ephemeron(e.d, 1);
    ph_set_field(*arr, i, w);
    ph_set_field(w, 0, node(e.d, (intptr_t)i));
    if (op == PH_GC_OP_EPHE)
      ph_set_field(ph_field(*arr, i), 1, node(e.d, -(intptr_t)i - 1));
  }
  ph_stats s0 = stats(e.h);
  ph_gc_fault_set(op, 1, 1);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(ph_gc_fault_hits() >= 1);
  ph_gc_fault_set(0, 0, 0);
  for (size_t i = 0; i < n; i++) {
    ph_value w = ph_field(*arr, i);
    assert_int_equal(id_of(ph_field(w, 0)), (intptr_t)i);
    if (op == PH_GC_OP_EPHE)
      assert_int_equal(id_of(ph_field(w, 1)), -(intptr_t)i - 1);
  }
  ph_stats s1 = stats(e.h);
  assert_int_equal(s1.weak_cleared, s0.weak_cleared);
  assert_int_equal(s1.ephemerons_cleared, s0.ephemerons_cleared);
  tu_verify_ok(e.d);
  assert_int_equal(ph_compact(e.d), PH_OK);
  for (size_t i = 0; i < n; i++) {
    ph_value w = ph_field(*arr, i);
    assert_true(ph_field(w, 0) == 0);
    if (op == PH_GC_OP_EPHE)
      assert_true(ph_field(w, 1) == 0);
  }
  tu_verify_ok(e.d);
  ph_scope_close(e.d, m);
  env_close(&e);
}

static void test_weak_list_cannot_grow(void **state) {
  (void)state;
  weak_cannot_grow(PH_GC_OP_WEAK, 0);
  weak_cannot_grow(PH_GC_OP_WEAK, 2);
}

static void test_ephe_list_cannot_grow(void **state) {
  (void)state;
  weak_cannot_grow(PH_GC_OP_EPHE, 0);
  weak_cannot_grow(PH_GC_OP_EPHE, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compact_refused_leader),
      cmocka_unit_test(test_compact_refused_coalesced),
      cmocka_unit_test(test_pin_table_cannot_grow),
      cmocka_unit_test(test_final_table_cannot_grow),
      cmocka_unit_test(test_final_queue_cannot_grow),
      cmocka_unit_test(test_final_orphan_queue_cannot_grow),
      cmocka_unit_test(test_weak_list_cannot_grow),
      cmocka_unit_test(test_ephe_list_cannot_grow),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
