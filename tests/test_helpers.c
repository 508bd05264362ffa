/* tests/test_helpers.c -- GC helper threads (ph_config.gc_helpers).
 *
 * - config: 0..64 helpers are accepted, 65 is PH_EINVAL; a heap with
 *   helpers is destroyed cleanly (threads joined: LeakSanitizer and TSan
 *   see no thread left), and destroy refused while a domain is attached
 *   leaves the helpers working;
 * - marking with helpers: a root array much larger than one mark slice is
 *   shared out in ranges; live_bytes is exactly the model's and equals the
 *   same heap's without helpers;
 * - compaction with helpers: the graph is identical before and after, the
 *   heap verifies, a second compaction moves nothing, and the evacuated
 *   bytes equal those of the same heap without helpers (the plan does not
 *   depend on who executes it);
 * - events: helpers report their phases as domains max_domains + k, only in
 *   collecting sections (a ph_verify section runs without them);
 * - with two domains, one of them blocking, and helpers: its roots are
 *   updated;
 * - mappings: after ph_heap_destroy the process has exactly the kernel
 *   mappings it had before ph_heap_create, whatever the helpers did (their
 *   stacks are unmapped; glibc's stack cache kept 2 mappings per helper).
 *   Measured in a fresh process (this binary re-executed): a process that
 *   already joined threads may reuse a cached stack and hide the leak.
 * Random tests print their seed; POOLHEAP_SEED replays one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/compact_util.h"

#include "os/os.h"

#include <malloc.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#define NROOT tu_scale(300000, 4) /* fields of the root array */

static void config_limits(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  assert_int_equal(cfg.gc_helpers, 0);
  ph_heap *h = NULL;
  cfg.gc_helpers = 65;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_EINVAL);
  assert_null(h);
  unsigned ns[] = {0, 1, 4, 64};
  for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
    cfg.gc_helpers = ns[i];
    assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
    ph_domain *d;
    assert_int_equal(ph_domain_attach(h, &d), PH_OK);
    assert_int_equal(ph_domain_index(d), 0); /* helpers take no slot */
    assert_int_equal(ph_heap_destroy(h), PH_ESTATE);
    ph_value b = ph_alloc(d, 3, 0);
    assert_true(ph_is_block(b));
    assert_int_equal(ph_collect(d), PH_OK);
    assert_int_equal(ph_compact(d), PH_OK);
    tu_verify_ok(d);
    ph_stats st = tu_stats(h);
    assert_int_equal(st.domains, 1);
    assert_int_equal(ph_domain_detach(d), PH_OK);
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  }
}

/* A frag-like heap: a root array (a scanned block of NROOT fields, held in
 * a root slot) whose fields point at blocks of assorted sizes, one in
 * `keep` kept, the kept ones linked to earlier kept ones. */
typedef struct built {
  ph_value *root; /* slot of the array */
  uint64_t live_bytes;
} built;

static built build(ph_domain *d, tu_rng *r, size_t keep) {
  built b = {0, 0};
  ph_value arr = ph_alloc(d, NROOT, 0);
  assert_true(ph_is_block(arr));
  b.root = ph_root(d, arr);
  assert_non_null(b.root);
  b.live_bytes = (NROOT + 1) * 8;
  ph_value prev = PH_UNIT;
  for (size_t i = 0; i < NROOT; i++) {
    size_t wo = 1 + tu_below(r, tu_below(r, 8) == 0 ? 60 : 5);
    ph_value x = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(x));
    ph_value arr_now = *b.root; /* nothing moves here: no compaction */
    ph_set_field(x, 0, ph_val_int((intptr_t)i));
    if (tu_below(r, keep) == 0) {
      if (wo > 1)
        ph_set_field(x, 1, prev);
      prev = x;
      ph_set_field(arr_now, i, x);
      b.live_bytes += (wo + 1) * 8;
    } else {
      ph_set_field(arr_now, i, ph_val_int(-1));
    }
  }
  return b;
}

/* One heap, built from `seed`; returns live_bytes after a collection and
 * the evacuated bytes and graph hash of a compaction. */
typedef struct outcome {
  uint64_t live, model, evacuated, second;
  uint64_t hash_before, hash_after;
} outcome;

static outcome run_heap(unsigned helpers, uint64_t seed) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_helpers = helpers;
  cfg.gc_percent = 0; /* explicit collections only: the same plan */
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  tu_rng r = {tu_mix(seed, 0)};
  size_t mark = ph_scope_open(d);
  built b = build(d, &r, 10);
  outcome o;
  memset(&o, 0, sizeof o);
  o.model = b.live_bytes;
  assert_int_equal(ph_collect(d), PH_OK);
  o.live = tu_stats(h).live_bytes;
  tu_verify_ok(d);
  o.hash_before = cu_walk(b.root, 1, 0).hash;
  ph_stats st = cu_compact(d);
  o.evacuated = st.evacuated_bytes;
  o.hash_after = cu_walk(b.root, 1, 0).hash;
  st = cu_compact(d);
  o.second = st.evacuated_bytes;
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  return o;
}

static void mark_and_compact_with_helpers(void **state) {
  (void)state;
  uint64_t seed = tu_seed_named("mark_and_compact_with_helpers");
  outcome base = run_heap(0, seed);
  assert_int_equal(base.live, base.model);
  for (unsigned n = 1; n <= 3; n += 2) {
    outcome o = run_heap(n, seed);
    assert_int_equal(o.live, o.model);
    assert_int_equal(o.live, base.live);
    assert_true(o.evacuated > 0);
    assert_int_equal(o.evacuated, base.evacuated);
    assert_true(o.hash_before == o.hash_after);
    assert_true(o.hash_after == base.hash_after);
    assert_int_equal(o.second, 0);
  }
}

/* ----------------------------------------------------------------- events */
#define MAXEV 4096
static struct {
  pthread_mutex_t m;
  unsigned dom[MAXEV];
  int phase[MAXEV];
  size_t n;
} ev = {PTHREAD_MUTEX_INITIALIZER, {0}, {0}, 0};

static void on_event(ph_phase phase, int begin, unsigned domain,
                     uint64_t time_ns, void *user) {
  (void)time_ns;
  (void)user;
  if (!begin)
    return;
  pthread_mutex_lock(&ev.m);
  if (ev.n < MAXEV) {
    ev.dom[ev.n] = domain;
    ev.phase[ev.n] = (int)phase;
    ev.n++;
  }
  pthread_mutex_unlock(&ev.m);
}

static void helper_events(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.max_domains = 4;
  cfg.gc_helpers = 2;
  cfg.on_event = on_event;
  ph_heap *h;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t mark = ph_scope_open(d);
  for (int i = 0; i < 1000; i++)
    assert_non_null(ph_root(d, ph_alloc(d, 1 + (size_t)(i % 7), 0)));
  ev.n = 0;
  assert_int_equal(ph_compact(d), PH_OK);
  pthread_mutex_lock(&ev.m);
  int seen[3][PH_PHASE_RELEASE + 1];
  memset(seen, 0, sizeof seen);
  for (size_t i = 0; i < ev.n; i++) {
    assert_true(ev.dom[i] == 0 || ev.dom[i] == 4 || ev.dom[i] == 5);
    unsigned who = ev.dom[i] == 0 ? 0 : ev.dom[i] - 3;
    seen[who][ev.phase[i]]++;
  }
  for (int who = 0; who < 3; who++)
    for (int p = PH_PHASE_STW; p <= PH_PHASE_RELEASE; p++)
      assert_int_equal(seen[who][p], 1); /* every phase, once each */
  ev.n = 0;
  pthread_mutex_unlock(&ev.m);
  tu_verify_ok(d); /* not a collecting section: no helper */
  pthread_mutex_lock(&ev.m);
  assert_true(ev.n > 0);
  for (size_t i = 0; i < ev.n; i++)
    assert_int_equal(ev.dom[i], 0);
  pthread_mutex_unlock(&ev.m);
  assert_int_equal(ph_scope_close(d, mark), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* ------------------------------------------------------- blocking domain */
static ph_heap *bheap;
static pthread_barrier_t bbar;
static ph_value *bslot;
static uint64_t bhash;

static void *blocked_main(void *arg) {
  (void)arg;
  ph_domain *d;
  if (ph_domain_attach(bheap, &d) != PH_OK) {
    TU_CHECK(!"attach");
    pthread_barrier_wait(&bbar);
    pthread_barrier_wait(&bbar);
    return NULL;
  }
  size_t mark = ph_scope_open(d);
  ph_value prev = PH_UNIT;
  for (int i = 0; i < 20000; i++) {
    ph_value x = ph_alloc(d, 2 + (size_t)(i % 5), 0);
    ph_set_field(x, 0, ph_val_int(i));
    if (i % 9 == 0) {
      ph_set_field(x, 1, prev);
      prev = x;
    }
  }
  bslot = ph_root(d, prev);
  bhash = cu_walk(bslot, 1, 0).hash;
  ph_blocking_enter(d);
  pthread_barrier_wait(&bbar); /* built; the main thread compacts */
  pthread_barrier_wait(&bbar); /* compacted */
  ph_blocking_leave(d);
  TU_CHECK(cu_walk(bslot, 1, 0).hash == bhash);
  TU_CHECK(ph_scope_close(d, mark) == PH_OK);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void blocking_domain_with_helpers(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_helpers = 1;
  assert_int_equal(ph_heap_create(&cfg, &bheap), PH_OK);
  pthread_barrier_init(&bbar, NULL, 2);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_main, NULL), 0);
  pthread_barrier_wait(&bbar);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(bheap, &d), PH_OK);
  ph_stats st = cu_compact(d);
  assert_true(st.evacuated_blocks > 0);
  assert_true(cu_walk(bslot, 1, 0).hash == bhash);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  pthread_barrier_wait(&bbar);
  pthread_join(t, NULL);
  tu_assert_no_failures();
  pthread_barrier_destroy(&bbar);
  assert_int_equal(ph_heap_destroy(bheap), PH_OK);
}

/* ------------------------------------------------------------- mappings */
/* The child: heaps with 1, 4 and 2 helpers, each built, collected,
 * compacted and destroyed; the mapping count must come back each time.
 * One malloc arena: the helpers' first mallocs would otherwise create
 * glibc arenas (kept for the process, reused by later threads; not the
 * heap's). */
/* Stacks with a guard page: a read-write mapping of PH stack size right
 * above a one-page PROT_NONE one, in /proc/self/maps. */
static long guarded_stacks(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f)
    return -1;
  unsigned long pg = (unsigned long)sysconf(_SC_PAGESIZE), pend = 0, a, b;
  int pguard = 0;
  char perm[8], line[512];
  long n = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%lx-%lx %7s", &a, &b, perm) != 3)
      continue;
    if (pguard && a == pend && strcmp(perm, "rw-p") == 0 &&
        b - a == (256ul << 10))
      n++;
    pguard = strcmp(perm, "---p") == 0 && b - a == pg;
    pend = b;
  }
  fclose(f);
  return n;
}

static int maps_child(void) {
  mallopt(M_ARENA_MAX, 1);
  uint64_t seed = tu_seed_named("helper_stacks_unmapped");
  free(malloc(1 << 20)); /* the process's malloc state exists already */
  long m0 = ph_os_process_mappings();
  unsigned ns[] = {1, 4, 2};
  int bad = 0;
  for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
    outcome o = run_heap(ns[i], seed);
    long m = ph_os_process_mappings();
    printf("helpers %u: process mappings %ld before the heap, %ld after "
           "destroy\n",
           ns[i], m0, m);
    bad |= m != m0 || o.live != o.model;
  }
  /* while a heap lives, each helper's stack has its guard page */
  long g0 = guarded_stacks();
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_helpers = 3;
  ph_heap *h;
  if (ph_heap_create(&cfg, &h) != PH_OK)
    return 1;
  long g1 = guarded_stacks();
  printf("256 KiB stacks above a guard page: %ld without the heap, %ld with "
         "3 helpers\n",
         g0, g1);
  bad |= g1 - g0 != 3;
  bad |= ph_heap_destroy(h) != PH_OK || ph_os_process_mappings() != m0;
  fflush(stdout);
  return bad ? 1 : 0;
}

static void helper_stacks_unmapped(void **state) {
  (void)state;
  if (TU_TSAN || TU_ASAN) {
    print_message("helper_stacks_unmapped: skipped: the sanitizer's runtime "
                  "maps memory of its own for every thread\n");
    skip();
  }
  char *argv[] = {"test_helpers", "--maps-child", NULL};
  extern char **environ;
  pid_t pid;
  assert_int_equal(
      posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ), 0);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--maps-child") == 0)
    return maps_child();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(config_limits),
      cmocka_unit_test(mark_and_compact_with_helpers),
      cmocka_unit_test(helper_events),
      cmocka_unit_test(blocking_domain_with_helpers),
      cmocka_unit_test(helper_stacks_unmapped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
