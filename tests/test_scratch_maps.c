/* tests/test_scratch_maps.c -- a compaction leaves the process's mappings as
 * it found them when one of its participants is a thread whose first malloc
 * would come inside it (compact.scratch): glibc then maps a new arena (two
 * mappings, 64 MiB reserved) that stays after the compaction.
 *
 * - GC helpers (cfg.gc_helpers) are poolheap's own threads: without
 *   ph_os_thread_malloc_init at their start, their first malloc is a sweep
 *   record or, for the one that leads, the compaction's plan.
 * - A fresh thread that attaches a recycled domain handle (attach mallocs
 *   nothing then) and compacts.
 *
 * glibc keeps an exited thread's arena for the next new thread, so each case
 * runs in a forked child of a process that has started no thread yet (this
 * binary's tests start none in the parent).  The checks need an exact
 * mapping count: none under the sanitizers (TU_MAPS_EXACT), where the cases
 * still run. */
#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

static tu_maps before, after;
static long lines0, lines1;

/* A fragmented heap: n blocks of 3 fields, 1 in 50 kept on a chain rooted
 * in *root. */
static void build(ph_domain *d, ph_value *root, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_alloc(d, 3, 0);
    if (!ph_is_block(b))
      _exit(10);
    if (i % 50 == 0) {
      ph_set_field(b, 0, *root);
      *root = b;
    }
  }
}

/* In the child: compact, snapshot around it; the exit status says what
 * went wrong (0: nothing). */
static int compact_measured(ph_heap *h, ph_domain *d) {
  ph_stats s0, s1;
  ph_stats_get(h, &s0);
  lines0 = tu_maps_lines();
  tu_maps_read(&before);
  int e = ph_compact(d);
  tu_maps_read(&after);
  lines1 = tu_maps_lines();
  ph_stats_get(h, &s1);
  if (e != PH_OK)
    return 11;
  if (s1.evacuated_pools == s0.evacuated_pools)
    return 12; /* the compaction must have planned and moved */
  if (!TU_MAPS_EXACT)
    return 0;
  long k = tu_maps_new_range(&before, &after);
  if (k >= 0) {
    fprintf(stderr, "  the compaction mapped %#lx-%#lx %s (lines %ld -> %ld)\n",
            (unsigned long)after.lo[k], (unsigned long)after.hi[k],
            after.what[k], lines0, lines1);
    return 13;
  }
  return lines1 <= lines0 ? 0 : 14;
}

static void run_child(int (*fn)(int), int arg) {
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(fn(arg));
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) != 0)
    fail_msg("child exit %d (13: a new mapping, 14: more lines)",
             WEXITSTATUS(st));
}

/* arg: helpers * 2 + (1 if a collection runs before the compaction) */
static int helpers_child(int arg) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.gc_helpers = (unsigned)arg / 2;
  ph_heap *h;
  ph_domain *d;
  if (ph_heap_create(&cfg, &h) != PH_OK || ph_domain_attach(h, &d) != PH_OK)
    return 20;
  if (ph_scope_open(d) == (size_t)-1)
    return 21;
  ph_value *root = ph_root(d, PH_UNIT);
  if (!root)
    return 22;
  build(d, root, tu_scale(400000, 10));
  if ((arg & 1) && ph_collect(d) != PH_OK)
    return 23;
  int r = compact_measured(h, d);
  if (ph_domain_detach(d) != PH_OK || ph_heap_destroy(h) != PH_OK)
    return r ? r : 24;
  return r;
}

static void helpers_first_malloc_not_in_compaction(void **state) {
  (void)state;
  for (int arg = 2; arg < 6; arg++) { /* 1 or 2 helpers, collected or not */
    printf("  %d helper(s), %s\n", arg / 2,
           arg & 1 ? "a collection first" : "the compaction first");
    run_child(helpers_child, arg);
  }
}

/* A fresh thread attaches a recycled handle (PH_RETIRED_KEEP + 1 handles
 * retired first) and compacts the heap the main thread built. */
static ph_heap *fresh_h;
static int fresh_r;

static void *fresh_main(void *arg) {
  (void)arg;
  ph_domain *d;
  if (ph_domain_attach(fresh_h, &d) != PH_OK) {
    fresh_r = 30;
    return NULL;
  }
  fresh_r = compact_measured(fresh_h, d);
  if (ph_domain_detach(d) != PH_OK && !fresh_r)
    fresh_r = 31;
  return NULL;
}

static int fresh_child(int arg) {
  (void)arg;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  ph_heap *h;
  ph_domain *d;
  if (ph_heap_create(&cfg, &h) != PH_OK)
    return 40;
  for (int i = 0; i < 70; i++) /* retire handles: the next attach recycles */
    if (ph_domain_attach(h, &d) != PH_OK || ph_domain_detach(d) != PH_OK)
      return 41;
  static ph_value root = PH_UNIT;
  if (ph_root_add(h, &root) != PH_OK || ph_domain_attach(h, &d) != PH_OK)
    return 42;
  build(d, &root, tu_scale(400000, 10));
  if (ph_domain_detach(d) != PH_OK)
    return 43;
  fresh_h = h;
  pthread_t t;
  if (pthread_create(&t, NULL, fresh_main, NULL) != 0)
    return 44;
  pthread_join(t, NULL);
  if (ph_root_remove(h, &root) != PH_OK || ph_heap_destroy(h) != PH_OK)
    return fresh_r ? fresh_r : 45;
  return fresh_r;
}

static void fresh_thread_recycled_domain_compacts(void **state) {
  (void)state;
  run_child(fresh_child, 0);
}

int main(void) {
  if (!TU_MAPS_EXACT)
    printf("sanitizer build: the cases run, the mapping checks do not\n");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(helpers_first_malloc_not_in_compaction),
      cmocka_unit_test(fresh_thread_recycled_domain_compacts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
