/* tests/test_list10m.c -- marking never recurses on the C stack: a linked
 * list of 10 million cells (1 million under ThreadSanitizer) is marked, by
 * one domain and by two; a wide block whose children overflow a bounded
 * mark stack is still marked completely (mark.overflow rescan); a root set
 * of many blocks does not deepen the stack (mark.roots.bounded), and the
 * stack is unmapped after the collection's marking (mark.stack.scratch), so
 * a compaction whose marking was the first to push leaves the process's
 * mappings as it found them.
 *
 * Internal test: includes api/api.h for the participants' mark stacks. */
#include "test_util.h"

#include "api/api.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* Test knob of gc/mark.c: the largest mark stack, in entries (0 = none). */
extern size_t ph_mark_stack_limit;
/* Test knob of gc/mark.c: the deepest stack a root visit leaves. */
extern size_t ph_mark_root_depth;

/* A list of n cells (tag 0, 2 fields: int, next), head in *head. */
static void build_list(ph_domain *d, ph_value *head, size_t n) {
  *head = PH_UNIT;
  for (size_t i = 0; i < n; i++) {
    ph_value c = ph_alloc(d, 2, 0);
    assert_true(ph_is_block(c));
    ph_set_field(c, 0, ph_val_int((intptr_t)i));
    ph_set_field(c, 1, *head);
    *head = c;
  }
}

static void check_list(ph_value l, size_t n) {
  size_t i = n;
  for (; ph_is_block(l); l = ph_field(l, 1)) {
    i--;
    if (ph_int_val(ph_field(l, 0)) != (intptr_t)i)
      fail_msg("cell %zu holds %ld", i, (long)ph_int_val(ph_field(l, 0)));
  }
  assert_int_equal(i, 0);
  assert_int_equal(l, PH_UNIT);
}

static void test_list_10m_cells_marked(void **state) {
  (void)state;
  size_t n = TU_TSAN ? (size_t)1000000 : (size_t)10000000;
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *head = ph_root(d, PH_UNIT);
  build_list(d, head, n);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats st = tu_stats(h);
  assert_int_equal(st.live_blocks, n);
  assert_int_equal(st.live_bytes, n * TU_BYTES(2));
  check_list(*head, n);
  /* drop the second half of the list: exactly the first half stays */
  ph_value l = *head;
  for (size_t i = 1; i < n / 2; i++)
    l = ph_field(l, 1);
  ph_set_field(l, 1, PH_UNIT);
  assert_int_equal(ph_collect(d), PH_OK);
  st = tu_stats(h);
  assert_int_equal(st.live_bytes, (n / 2) * TU_BYTES(2));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* Two domains take part in marking one long list built by one of them. */
typedef struct two {
  ph_heap *h;
  _Atomic int done;
} two;

static void *idle_domain(void *arg) {
  two *t = ((tu_thread_arg *)arg)->user;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(t->h, &d) == PH_OK);
  while (!atomic_load(&t->done))
    ph_safepoint(d); /* joins every collection */
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void *builder_domain(void *arg) {
  two *t = ((tu_thread_arg *)arg)->user;
  size_t n = tu_scale(2000000, 2);
  ph_domain *d;
  TU_CHECK(ph_domain_attach(t->h, &d) == PH_OK);
  size_t m = ph_scope_open(d);
  ph_value *head = ph_root(d, PH_UNIT);
  for (size_t i = 0; i < n; i++) {
    ph_value c = ph_alloc(d, 2, 0);
    ph_set_field(c, 0, ph_val_int((intptr_t)i));
    ph_set_field(c, 1, *head);
    *head = c;
  }
  for (int k = 0; k < 2; k++) {
    TU_CHECK(ph_collect(d) == PH_OK);
    TU_CHECK(tu_stats(t->h).live_bytes == n * TU_BYTES(2));
  }
  size_t i = n;
  for (ph_value l = *head; ph_is_block(l); l = ph_field(l, 1))
    TU_CHECK(ph_int_val(ph_field(l, 0)) == (intptr_t)--i);
  TU_CHECK(i == 0);
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  atomic_store(&t->done, 1);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void *two_dispatch(void *arg) {
  tu_thread_arg *a = arg;
  return a->index == 0 ? builder_domain(arg) : idle_domain(arg);
}

static void test_long_list_marked_by_two_domains(void **state) {
  (void)state;
  two t;
  t.h = tu_heap(0);
  atomic_store(&t.done, 0);
  tu_threads_run(2, two_dispatch, &t);
  tu_assert_no_failures();
  assert_true(tu_stats(t.h).collections >= 2);
  assert_int_equal(ph_heap_destroy(t.h), PH_OK);
}

/* A block of many fields, each pointing to a two-cell chain: with the mark
 * stack bounded, entries are dropped and the overflow rescan must still
 * find every block, and finish.  Runs in a forked child with an alarm so
 * that a rescan that never converges fails the test instead of hanging. */
static int overflow_child(size_t pool_size, size_t limit) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.pool_size = pool_size;
  ph_heap *h;
  if (ph_heap_create(&cfg, &h) != PH_OK)
    return 2;
  ph_domain *d;
  if (ph_domain_attach(h, &d) != PH_OK)
    return 3;
  size_t m = ph_scope_open(d);
  const size_t w = 20000;
  ph_value *arr = ph_root(d, ph_alloc(d, w, 0));
  if (!ph_is_block(*arr))
    return 4;
  for (size_t i = 0; i < w; i++) {
    ph_value b = ph_alloc(d, 2, 0);
    ph_set_field(b, 0, ph_val_int((intptr_t)i));
    ph_set_field(*arr, i, b);
    ph_value c = ph_alloc(d, 1, 0);
    ph_set_field(c, 0, ph_val_int(-(intptr_t)i));
    ph_set_field(ph_field(*arr, i), 1, c);
  }
  uint64_t expect = TU_BYTES(w) + w * (TU_BYTES(2) + TU_BYTES(1));
  ph_mark_stack_limit = limit;
  int r = ph_collect(d);
  ph_mark_stack_limit = 0;
  if (r != PH_OK)
    return 5;
  ph_stats st;
  ph_stats_get(h, &st);
  if (st.live_bytes != expect || tu_reach_bytes(arr, 1) != expect) {
    fprintf(stderr, "live_bytes %llu, expected %llu\n",
            (unsigned long long)st.live_bytes, (unsigned long long)expect);
    return 6;
  }
  for (size_t i = 0; i < w; i++) {
    ph_value b = ph_field(*arr, i);
    if (ph_int_val(ph_field(b, 0)) != (intptr_t)i ||
        ph_int_val(ph_field(ph_field(b, 1), 0)) != -(intptr_t)i)
      return 7;
  }
  char why[256];
  if (ph_verify(d, why, sizeof why) != PH_OK) {
    fprintf(stderr, "verify: %s\n", why);
    return 8;
  }
  ph_scope_close(d, m);
  if (ph_domain_detach(d) != PH_OK || ph_heap_destroy(h) != PH_OK)
    return 9;
  return 0;
}

static void run_overflow(size_t pool_size, size_t limit) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(TU_TSAN ? 40 : 12);
    _exit(overflow_child(pool_size, limit));
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status))
    fail_msg("pool %zu, mark stack limit %zu: child killed by signal %d%s",
             pool_size, limit, WTERMSIG(status),
             WTERMSIG(status) == SIGALRM ? " (the collection never ended)"
                                         : "");
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0)
    fail_msg("pool %zu, mark stack limit %zu: child failed with %d", pool_size,
             limit, WEXITSTATUS(status));
}

/* The stack is bounded below the fan-out of one block but above the slots
 * of one pool. */
static void test_mark_stack_overflow_rescan(void **state) {
  (void)state;
  run_overflow(4096, 256);
}

/* The stack is bounded below the number of marked blocks in one pool (the
 * default 32 KiB pools hold over a thousand small blocks), as when malloc
 * refuses to grow it in a large heap. */
static void test_mark_stack_overflow_rescan_small_stack(void **state) {
  (void)state;
  run_overflow((size_t)32 << 10, 64);
}

/* mark.roots.bounded, mark.stack.scratch: the embedder's hook roots many
 * blocks of two immediates (each one a stack entry when marked). */
#define ROOTED 100000
static ph_value *rooted;
static ph_heap *rooted_heap;
static size_t
    mark_end_cap;        /* worker 0's stack capacity at the end of marking */
static void *mark_end_e; /* and its address */

static void scan_rooted(ph_domain *d, ph_visit_fn visit, void *ctx,
                        void *user) {
  (void)d;
  (void)user;
  for (size_t i = 0; i < ROOTED; i++)
    visit(&rooted[i], ctx);
}

static void on_mark_end(ph_phase phase, int begin, unsigned domain,
                        uint64_t time_ns, void *user) {
  (void)domain;
  (void)time_ns;
  (void)user;
  ph_heap *h = rooted_heap;
  if (phase == PH_PHASE_MARK && !begin) {
    assert_int_equal(h->gc->nparts, 1); /* worker 0 is the caller */
    mark_end_cap = h->gc->workers[0].stack.cap;
    mark_end_e = h->gc->workers[0].stack.e;
  }
}

/* Builds the heap, collects once with the given root bound, checks every
 * rooted block survived intact, and returns the heap (one domain: *dp). */
static ph_heap *collect_rooted(size_t root_depth, ph_domain **dp) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.scan_roots = scan_rooted;
  cfg.on_event = on_mark_end;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  rooted_heap = h;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  rooted = calloc(ROOTED, sizeof *rooted);
  assert_non_null(rooted);
  for (size_t i = 0; i < ROOTED; i++)
    rooted[i] = PH_UNIT;
  for (size_t i = 0; i < ROOTED; i++) {
    ph_value b = ph_alloc(d, 2, 0);
    assert_true(ph_is_block(b));
    ph_set_field(b, 0, ph_val_int((intptr_t)i));
    ph_set_field(b, 1, ph_val_int(-(intptr_t)i));
    rooted[i] = b;
  }
  mark_end_cap = 0;
  ph_mark_root_depth = root_depth;
  int r = ph_collect(d);
  ph_mark_root_depth = 1024;
  assert_int_equal(r, PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, (uint64_t)ROOTED * TU_BYTES(2));
  for (size_t i = 0; i < ROOTED; i++)
    if (ph_int_val(ph_field(rooted[i], 0)) != (intptr_t)i ||
        ph_int_val(ph_field(rooted[i], 1)) != -(intptr_t)i)
      fail_msg("rooted block %zu changed", i);
  *dp = d;
  return h;
}

static void drop_rooted(ph_heap *h, ph_domain *d) {
  char why[256] = "";
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("ph_verify: %s", why);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  free(rooted);
  rooted = NULL;
}

/* mark.roots.bounded: 100000 rooted blocks never hold the stack past its
 * first capacity (unbounded, it grew to hold them all: 131072 entries). */
static void test_many_roots_keep_the_stack_shallow(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = collect_rooted(1024, &d);
  if (mark_end_cap == 0 || mark_end_cap > PH_MARK_KEEP)
    fail_msg("mark stack capacity %zu at the end of marking (at most %d)",
             mark_end_cap, PH_MARK_KEEP);
  drop_rooted(h, d);
}

/* mark.stack.scratch: with the root bound lifted the stack grows to hold
 * every rooted block (3 MiB), and once the collection is over it is no longer
 * mapped (mincore: ENOMEM over its range); the next collection maps it again
 * and still marks everything. */
static void test_grown_stack_given_back_after_collection(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = collect_rooted(SIZE_MAX, &d);
  if (mark_end_cap < ROOTED)
    fail_msg("mark stack capacity %zu: the roots did not deepen it",
             mark_end_cap);
  ph_mark_stack *st = &h->gc->workers[0].stack;
  assert_null(st->e);
  assert_int_equal(st->cap, 0);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  size_t len = (mark_end_cap * sizeof *st->e + pg - 1) / pg * pg;
  unsigned char *vec = malloc(len / pg);
  assert_non_null(vec);
  errno = 0;
  int r = mincore(mark_end_e, len, vec);
  int err = errno;
  free(vec);
  if (r != -1 || err != ENOMEM)
    fail_msg("the mark stack's %zu pages are still mapped after the "
             "collection (mincore %d, errno %d)",
             len / pg, r, err);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(tu_stats(h).live_bytes, (uint64_t)ROOTED * TU_BYTES(2));
  drop_rooted(h, d);
}

/* mark.stack.scratch: a compaction leaves the process's mappings as it found
 * them even when its collection is the first to push on a participant's mark
 * stack.  bench/compact --skew under load saw the second domain's stack (96
 * KiB) appear during the compaction: 37 -> 38 lines of /proc/self/maps.
 * Here the first collection marks only raw blocks (roots: marked, never
 * pushed), then one scanned block is rooted, so the compaction's marking
 * is the first to push.  Without the unmap the stack stays mapped after it. */
static void test_compaction_leaves_no_stack_mapping(void **state) {
  (void)state;
  static tu_maps before, after;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  unsigned nworkers = cfg.max_domains + cfg.gc_helpers;
  size_t mark = ph_scope_open(d);
  assert_true(mark != (size_t)-1);
  size_t n = tu_scale(200000, 10);
  ph_value raw = PH_UNIT;
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_alloc(d, 3, PH_TAG_RAW);
    assert_true(ph_is_block(b));
    if (i % 16 == 0) /* sparse pools: the compaction evacuates */
      assert_non_null(ph_root(d, raw = b));
  }
  assert_int_equal(ph_collect(d), PH_OK);
  for (unsigned i = 0; i < nworkers; i++) /* the scenario: nothing pushed */
    assert_null(h->gc->workers[i].stack.e);
  ph_value s = ph_alloc(d, 1, 0);
  assert_true(ph_is_block(s));
  ph_set_field(s, 0, raw);
  assert_non_null(ph_root(d, s));

  long lines0 = tu_maps_lines();
  tu_maps_read(&before);
  ph_stats s0 = tu_stats(h);
  assert_int_equal(ph_compact(d), PH_OK);
  ph_stats s1 = tu_stats(h);
  tu_maps_read(&after);
  long lines1 = tu_maps_lines();
  assert_true(s1.evacuated_pools > s0.evacuated_pools);
  for (unsigned i = 0; i < nworkers; i++)
    if (h->gc->workers[i].stack.e)
      fail_msg("worker %u's mark stack (%zu entries) is mapped after the "
               "compaction",
               i, h->gc->workers[i].stack.cap);
  if (TU_MAPS_EXACT) {
    long k = tu_maps_new_range(&before, &after);
    if (k >= 0)
      fail_msg("the compaction mapped %#lx-%#lx %s (lines %ld -> %ld)",
               (unsigned long)after.lo[k], (unsigned long)after.hi[k],
               after.what[k], lines0, lines1);
    assert_true(lines1 <= lines0);
  }
  char why[256] = "";
  if (ph_verify(d, why, sizeof why) != PH_OK)
    fail_msg("ph_verify: %s", why);
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_list_10m_cells_marked),
      cmocka_unit_test(test_long_list_marked_by_two_domains),
      cmocka_unit_test(test_mark_stack_overflow_rescan),
      cmocka_unit_test(test_mark_stack_overflow_rescan_small_stack),
      cmocka_unit_test(test_many_roots_keep_the_stack_shallow),
      cmocka_unit_test(test_grown_stack_given_back_after_collection),
      cmocka_unit_test(test_compaction_leaves_no_stack_mapping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
