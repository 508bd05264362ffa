/* tests/test_os.c -- unit tests for the OS memory layer (os/os.h).
 *
 * Checks the accounting of every transition, alignment and the one-mapping-
 * per-reservation rule (against /proc/self/maps), that decommit really
 * returns pages (VmRSS), RLIMIT_AS handling (in a forked child), huge page
 * fallbacks, fault injection and argument checking.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "os/os.h"
#include "poolheap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)

/* ThreadSanitizer maps its own shadow memory when the program maps memory,
 * so the process-wide mapping count is not ours to predict there. */
#if defined(__SANITIZE_THREAD__)
#define MAPS_EXACT 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPS_EXACT 0
#endif
#endif
#ifndef MAPS_EXACT
#define MAPS_EXACT 1
#endif

/* The process has between lo and hi lines in /proc/self/maps. */
static void assert_maps(long lo, long hi) {
  long now = ph_os_process_mappings();
  assert_true(now > 0);
  if (MAPS_EXACT && (now < lo || now > hi))
    fail_msg("mappings %ld not in [%ld, %ld]", now, lo, hi);
}

static ph_os_acct oa;

static int setup(void **state) {
  ph_os_acct_init(&oa);
  ph_os_fault_set(0, 0, 0);
  return 0;
}

static int teardown(void **state) {
  ph_os_fault_set(0, 0, 0);
  /* A failed test may leave reservations; fini would abort the whole run. */
  if (atomic_load(&oa.mappings) != 0)
    return -1;
  ph_os_acct_fini(&oa);
  return 0;
}

static uint64_t get(_Atomic uint64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

static void assert_acct(uint64_t reserved, uint64_t committed,
                        uint64_t mappings) {
  assert_int_equal(get(&oa.reserved), reserved);
  assert_int_equal(get(&oa.committed), committed);
  assert_int_equal(get(&oa.mappings), mappings);
}

static void *reserve_ok(size_t size, size_t align, int huge, int *got) {
  void *p = NULL;
  assert_int_equal(ph_os_reserve(&oa, size, align, huge, &p, got), PH_OK);
  assert_non_null(p);
  return p;
}

/* ------------------------------------------------------------ accounting */

static void test_accounting(void **state) {
  size_t ps = ph_os_page_size();
  int got = -1;
  char *p = reserve_ok(8 * MiB, ps, PH_OS_HUGE_NONE, &got);
  assert_int_equal(got, PH_OS_HUGE_NONE);
  assert_acct(8 * MiB, 0, 1);
  char *q = reserve_ok(2 * MiB, ps, PH_OS_HUGE_NONE, NULL);
  assert_acct(10 * MiB, 0, 2);

  assert_int_equal(ph_os_commit(&oa, p, 4 * MiB), PH_OK);
  assert_int_equal(ph_os_commit(&oa, p + 6 * MiB, 2 * MiB), PH_OK);
  assert_int_equal(ph_os_commit(&oa, q, ps), PH_OK);
  assert_acct(10 * MiB, 6 * MiB + ps, 2);
  memset(p, 0xab, 4 * MiB); /* committed memory is usable */

  assert_int_equal(ph_os_decommit(&oa, p + MiB, MiB, PH_OS_DECOMMIT_NOW),
                   PH_OK);
  assert_acct(10 * MiB, 5 * MiB + ps, 2);
  assert_int_equal(p[MiB], 0); /* decommitted pages read as zero */
  assert_int_equal((unsigned char)p[0], 0xab);

  assert_int_equal(ph_os_release(&oa, p, 8 * MiB, 5 * MiB), PH_OK);
  assert_acct(2 * MiB, ps, 1);
  assert_int_equal(ph_os_release(&oa, q, 2 * MiB, ps), PH_OK);
  assert_acct(0, 0, 0);
  assert_int_equal(get(&oa.huge_fallbacks), 0);
}

static void test_reserved_reads_zero(void **state) {
  char *p = reserve_ok(MiB, ph_os_page_size(), PH_OS_HUGE_NONE, NULL);
  for (size_t i = 0; i < MiB; i += 4096)
    assert_int_equal(p[i], 0);
  assert_int_equal(ph_os_release(&oa, p, MiB, 0), PH_OK);
}

/* ------------------------------------------------------------- mappings */

static void test_alignment_and_mappings(void **state) {
  long base = ph_os_process_mappings();
  assert_true(base > 0);
  static const size_t aligns[] = {4096, 64 << 10, 2 << 20, 4 << 20, 64 << 20};
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
    size_t align =
        aligns[i] < ph_os_page_size() ? ph_os_page_size() : aligns[i];
    char *p = reserve_ok(3 * MiB, align, PH_OS_HUGE_NONE, NULL);
    assert_int_equal((uintptr_t)p % align, 0);
    /* At most one new line: the kernel may merge with a neighbour. */
    assert_maps(base, base + 1);
    p[0] = 1;
    p[3 * MiB - 1] = 1;
    assert_int_equal(ph_os_release(&oa, p, 3 * MiB, 0), PH_OK);
    assert_maps(base, base);
  }
}

static void test_many_reservations_back_to_baseline(void **state) {
  enum { N = 16 };
  char *p[N];
  long base = ph_os_process_mappings();
  for (int i = 0; i < N; i++)
    p[i] = reserve_ok(MiB, 4 * MiB, PH_OS_HUGE_NONE, NULL);
  assert_maps(base, base + N);
  assert_acct(N * MiB, 0, N);
  for (int i = 0; i < N; i++)
    assert_int_equal(ph_os_release(&oa, p[i], MiB, 0), PH_OK);
  assert_maps(base, base);
  assert_acct(0, 0, 0);
}

static void test_decommit_keeps_mapping(void **state) {
  char *p = reserve_ok(4 * MiB, ph_os_page_size(), PH_OS_HUGE_NONE, NULL);
  assert_int_equal(ph_os_commit(&oa, p, 4 * MiB), PH_OK);
  memset(p, 1, 4 * MiB);
  long before = ph_os_process_mappings();
  /* Decommit a piece in the middle: no split, no new mapping. */
  assert_int_equal(ph_os_decommit(&oa, p + MiB, MiB, PH_OS_DECOMMIT_NOW),
                   PH_OK);
  assert_maps(before, before);
  assert_int_equal(ph_os_release(&oa, p, 4 * MiB, 3 * MiB), PH_OK);
  assert_acct(0, 0, 0);
}

/* ------------------------------------------------------------------ RSS */

static void test_rss_drops_after_decommit(void **state) {
  size_t len = 64 * MiB;
  char *p = reserve_ok(len, ph_os_page_size(), PH_OS_HUGE_NONE, NULL);
  assert_int_equal(ph_os_commit(&oa, p, len), PH_OK);
  memset(p, 0x5a, len);
  uint64_t touched = ph_os_process_rss();
  assert_true(touched >= len);
  assert_int_equal(ph_os_decommit(&oa, p, len, PH_OS_DECOMMIT_NOW), PH_OK);
  uint64_t after = ph_os_process_rss();
  assert_true(after + 48 * MiB <= touched);
  assert_acct(len, 0, 1);
  assert_int_equal(ph_os_release(&oa, p, len, 0), PH_OK);
}

static void test_lazy_decommit(void **state) {
  size_t len = 8 * MiB;
  char *p = reserve_ok(len, ph_os_page_size(), PH_OS_HUGE_NONE, NULL);
  assert_int_equal(ph_os_commit(&oa, p, len), PH_OK);
  memset(p, 0x5a, len);
  assert_int_equal(ph_os_decommit(&oa, p, len, PH_OS_DECOMMIT_LAZY), PH_OK);
  assert_acct(len, 0, 1);
  /* Recommit and reuse: the memory stays usable (contents undefined). */
  assert_int_equal(ph_os_commit(&oa, p, len), PH_OK);
  memset(p, 0x11, len);
  assert_int_equal(p[len - 1], 0x11);
  assert_int_equal(ph_os_release(&oa, p, len, len), PH_OK);
  assert_acct(0, 0, 0);
}

/* ------------------------------------------------------------ RLIMIT_AS */

static uint64_t vm_size(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long pages = 0;
  if (f != NULL) {
    if (fscanf(f, "%llu", &pages) != 1)
      pages = 0;
    fclose(f);
  }
  return pages * ph_os_page_size();
}

/* Runs in the child; returns an exit code, 0 for success. */
static int rlimit_child(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0)
    return 10;
  uint64_t vm = vm_size();
  if (vm == 0)
    return 11;
  rl.rlim_cur = vm + 64 * MiB;
  if (setrlimit(RLIMIT_AS, &rl) != 0)
    return 12;
  size_t avail = ph_os_as_available();
  if (avail < 32 * MiB || avail > 64 * MiB)
    return 13;
  ph_os_acct a;
  ph_os_acct_init(&a);
  void *p = (void *)1;
  if (ph_os_reserve(&a, 1024 * MiB, 4096, PH_OS_HUGE_NONE, &p, NULL) !=
      PH_ENOMEM)
    return 14;
  if (p != (void *)1)
    return 15; /* out-param written on failure */
  if (ph_os_reserve(&a, 16 * MiB, 4096, PH_OS_HUGE_NONE, &p, NULL) != PH_OK)
    return 16;
  if (ph_os_release(&a, p, 16 * MiB, 0) != PH_OK)
    return 17;
  ph_os_acct_fini(&a);
  return 0;
}

static void test_rlimit_as(void **state) {
  assert_true(ph_os_as_available() > 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(rlimit_child());
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* ----------------------------------------------------------- huge pages */

static void test_explicit_huge_falls_back(void **state) {
  int got = -1;
  /* 3 MiB: the huge attempt rounds it to 4 MiB. */
  char *p = reserve_ok(3 * MiB, ph_os_page_size(), PH_OS_HUGE_EXPLICIT, &got);
  assert_true(got == PH_OS_HUGE_EXPLICIT ||
              (got == PH_OS_HUGE_NONE && get(&oa.huge_fallbacks) == 1));
  if (got == PH_OS_HUGE_EXPLICIT)
    assert_int_equal((uintptr_t)p % PH_HUGE_PAGE_SIZE, 0);
  assert_acct(3 * MiB, 0, 1);
  assert_int_equal(ph_os_commit(&oa, p, 3 * MiB), PH_OK);
  memset(p, 7, 3 * MiB);
  assert_int_equal(ph_os_release(&oa, p, 3 * MiB, 3 * MiB), PH_OK);
  assert_acct(0, 0, 0);
}

/* 1 if the mapping holding p has VmFlags flag (e.g. "hg" for
 * MADV_HUGEPAGE) in /proc/self/smaps, 0 if not, -1 if unknown. */
static int vma_has_flag(const void *p, const char *flag) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (f == NULL)
    return -1;
  char line[512];
  int in = 0, found = -1;
  while (found < 0 && fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    /* Field lines start with a capitalised name, headers with an address. */
    if (!(line[0] >= 'A' && line[0] <= 'Z') &&
        sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
      in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
    else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      char pat[8];
      snprintf(pat, sizeof pat, " %s", flag);
      found = strstr(line, pat) != NULL;
    }
  }
  fclose(f);
  return found;
}

static void test_thp(void **state) {
  long base = ph_os_process_mappings();
  int got = -1;
  char *p = reserve_ok(8 * MiB, ph_os_page_size(), PH_OS_HUGE_THP, &got);
  assert_int_equal(got, PH_OS_HUGE_THP);
  assert_int_equal((uintptr_t)p % PH_HUGE_PAGE_SIZE, 0);
  assert_maps(base, base + 1);
  assert_int_equal(ph_os_commit(&oa, p, 8 * MiB), PH_OK);
  memset(p, 3, 8 * MiB);
  assert_int_equal(ph_os_decommit(&oa, p, 8 * MiB, PH_OS_DECOMMIT_NOW), PH_OK);
  assert_int_equal(ph_os_release(&oa, p, 8 * MiB, 0), PH_OK);
  assert_maps(base, base);
  assert_acct(0, 0, 0);
  assert_int_equal(get(&oa.huge_fallbacks), 0);
}

/* The THP hint really reaches the kernel (reading smaps allocates, so this is
 * kept apart from the mapping counts above). */
static void test_thp_flag(void **state) {
  if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0)
    skip();
  char *p = reserve_ok(4 * MiB, ph_os_page_size(), PH_OS_HUGE_THP, NULL);
  int hg = vma_has_flag(p, "hg");
  assert_int_equal(ph_os_release(&oa, p, 4 * MiB, 0), PH_OK);
  assert_int_equal(hg, 1);
}

/* ------------------------------------------------------ fault injection */

static void test_fault_nth(void **state) {
  char *p = reserve_ok(MiB, 4096, PH_OS_HUGE_NONE, NULL);
  ph_os_fault_set(PH_OS_OP_COMMIT, 3, 0);
  assert_int_equal(ph_os_commit(&oa, p, 4096), PH_OK);
  assert_int_equal(ph_os_commit(&oa, p + 4096, 4096), PH_OK);
  assert_acct(MiB, 8192, 1);
  assert_int_equal(ph_os_commit(&oa, p + 8192, 4096), PH_ENOMEM);
  assert_acct(MiB, 8192, 1); /* unchanged by the injected failure */
  assert_int_equal(ph_os_commit(&oa, p + 8192, 4096), PH_OK);
  /* Other kinds are neither counted nor failed. */
  assert_int_equal(ph_os_decommit(&oa, p, 4096, 0), PH_OK);
  assert_int_equal(ph_os_fault_calls(), 4);
  assert_int_equal(ph_os_fault_hits(), 1);
  assert_acct(MiB, 8192, 1);
  ph_os_fault_set(0, 0, 0);
  assert_int_equal(ph_os_fault_calls(), 0);
  assert_int_equal(ph_os_fault_hits(), 0);
  assert_int_equal(ph_os_release(&oa, p, MiB, 8192), PH_OK);
  assert_acct(0, 0, 0);
}

static void test_fault_sticky_reserve(void **state) {
  void *p = NULL, *q = (void *)1;
  int got = 42;
  ph_os_fault_set(PH_OS_OP_RESERVE | PH_OS_OP_RELEASE, 2, 1);
  assert_int_equal(ph_os_reserve(&oa, MiB, 4096, 0, &p, NULL), PH_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(
        ph_os_reserve(&oa, MiB, 4096, PH_OS_HUGE_EXPLICIT, &q, &got),
        PH_ENOMEM);
    assert_ptr_equal(q, (void *)1); /* out-params untouched */
    assert_int_equal(got, 42);
  }
  assert_acct(MiB, 0, 1);
  assert_int_equal(get(&oa.huge_fallbacks), 0);
  long maps = ph_os_process_mappings();
  assert_int_equal(ph_os_release(&oa, p, MiB, 0), PH_ENOMEM);
  assert_maps(maps, maps); /* still mapped */
  assert_acct(MiB, 0, 1);
  ((char *)p)[0] = 1;
  assert_int_equal(ph_os_fault_calls(), 5);
  assert_int_equal(ph_os_fault_hits(), 4);
  ph_os_fault_set(PH_OS_OP_ALL, 0, 1); /* nth 0: off, but still counting */
  assert_int_equal(ph_os_release(&oa, p, MiB, 0), PH_OK);
  assert_int_equal(ph_os_fault_calls(), 1);
  assert_int_equal(ph_os_fault_hits(), 0);
  assert_acct(0, 0, 0);
}

static void test_fault_decommit(void **state) {
  char *p = reserve_ok(MiB, 4096, PH_OS_HUGE_NONE, NULL);
  assert_int_equal(ph_os_commit(&oa, p, MiB), PH_OK);
  memset(p, 9, MiB);
  ph_os_fault_set(PH_OS_OP_DECOMMIT, 1, 0);
  assert_int_equal(ph_os_decommit(&oa, p, MiB, 0), PH_ENOMEM);
  assert_int_equal(p[0], 9); /* the kernel was not asked */
  assert_acct(MiB, MiB, 1);
  assert_int_equal(ph_os_decommit(&oa, p, MiB, 0), PH_OK);
  assert_int_equal(ph_os_fault_hits(), 1);
  assert_int_equal(ph_os_release(&oa, p, MiB, 0), PH_OK);
}

enum { THREAD_CALLS = 200 };

static void *commit_thread(void *arg) {
  ph_os_acct *a = arg;
  void *p = NULL;
  uintptr_t fails = 0;
  if (ph_os_reserve(a, MiB, 4096, 0, &p, NULL) != PH_OK)
    return (void *)(uintptr_t)1000;
  for (int i = 0; i < THREAD_CALLS; i++)
    fails += ph_os_commit(a, p, 4096) == PH_ENOMEM;
  uint64_t c = atomic_load_explicit(&a->committed, memory_order_relaxed);
  if (ph_os_release(a, p, MiB, (size_t)c) != PH_OK)
    return (void *)(uintptr_t)1000;
  return (void *)fails;
}

/* Process-global counters: exactly one call across threads is the nth. */
static void test_fault_threads(void **state) {
  ph_os_acct a[2];
  pthread_t t[2];
  ph_os_fault_set(PH_OS_OP_COMMIT, THREAD_CALLS, 0);
  for (int i = 0; i < 2; i++) {
    ph_os_acct_init(&a[i]);
    assert_int_equal(pthread_create(&t[i], NULL, commit_thread, &a[i]), 0);
  }
  uintptr_t fails = 0;
  for (int i = 0; i < 2; i++) {
    void *r;
    assert_int_equal(pthread_join(t[i], &r), 0);
    fails += (uintptr_t)r;
    ph_os_acct_fini(&a[i]);
  }
  assert_int_equal(fails, 1);
  assert_int_equal(ph_os_fault_calls(), 2 * THREAD_CALLS);
  assert_int_equal(ph_os_fault_hits(), 1);
}

/* ------------------------------------------------------------ bad input */

static void test_bad_reserve_args(void **state) {
  void *p = (void *)1;
  int got = 42;
  size_t ps = ph_os_page_size();
  assert_int_equal(ph_os_reserve(NULL, MiB, ps, 0, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, MiB, ps, 0, NULL, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, 0, ps, 0, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, MiB + 1, ps, 0, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, MiB, 3 * ps, 0, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, MiB, 0, 0, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, MiB, ps, 7, &p, &got), PH_EINVAL);
  assert_int_equal(ph_os_reserve(&oa, SIZE_MAX - ps + 1, 1u << 30, 0, &p, &got),
                   PH_ENOMEM);
  assert_ptr_equal(p, (void *)1);
  assert_int_equal(got, 42);
  assert_acct(0, 0, 0);
}

static void test_bad_range_args(void **state) {
  size_t ps = ph_os_page_size();
  char *p = reserve_ok(MiB, ps, PH_OS_HUGE_NONE, NULL);
  assert_int_equal(ph_os_commit(NULL, p, ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, NULL, ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p, 0), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p + 1, ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p, ps + 1), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p, ps), PH_OK);
  assert_int_equal(ph_os_decommit(&oa, NULL, ps, 0), PH_EINVAL);
  assert_int_equal(ph_os_decommit(&oa, p, 0, 0), PH_EINVAL);
  assert_int_equal(ph_os_decommit(&oa, p + 8, ps, 0), PH_EINVAL);
  /* More than is committed would break the accounting. */
  assert_int_equal(ph_os_decommit(&oa, p, 2 * ps, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(NULL, p, MiB, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, NULL, MiB, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p, 0, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p, MiB, 2 * MiB), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p, MiB, 2 * ps), PH_EINVAL);
  assert_acct(MiB, ps, 1);
  assert_int_equal(ph_os_release(&oa, p, MiB, ps), PH_OK);
  assert_acct(0, 0, 0);
}

/* The debug registry rejects ranges the layer did not hand out. */
static void test_registry(void **state) {
#if defined(PH_DEBUG) && PH_DEBUG > 0
  size_t ps = ph_os_page_size();
  char *p = reserve_ok(MiB, 4 * MiB, PH_OS_HUGE_NONE, NULL);
  assert_non_null(oa.reg);
  assert_int_equal(ph_os_commit(&oa, p + MiB, ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p + MiB - ps, 2 * ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p - ps, 2 * ps), PH_EINVAL);
  assert_int_equal(ph_os_commit(&oa, p + MiB - ps, ps), PH_OK);
  assert_int_equal(ph_os_decommit(&oa, p + MiB, ps, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p, MiB / 2, 0), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p + ps, MiB - ps, 0), PH_EINVAL);
  assert_acct(MiB, ps, 1);
  assert_int_equal(ph_os_release(&oa, p, MiB, ps), PH_OK);
  /* Released twice: no longer registered. */
  assert_int_equal(ph_os_commit(&oa, p, ps), PH_EINVAL);
  assert_int_equal(ph_os_release(&oa, p, MiB, 0), PH_EINVAL);
  assert_acct(0, 0, 0);
#else
  assert_null(oa.reg);
  skip();
#endif
}

/* ------------------------------------------------------------- probes */

static int is_pow2_size(size_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

static void test_probes(void **state) {
  assert_true(is_pow2_size(ph_os_page_size()));
  assert_true(ph_os_process_mappings() > 5);
  assert_true(ph_os_process_rss() > 0);
  assert_int_equal(ph_os_process_rss() % 1024, 0);
}

/* os.scratch.gone: malloc's interface; an array of a page or more is a
 * mapping of its own, gone at the free; contents survive every realloc
 * (across the page boundary both ways, grown in place or moved); zalloc
 * zeroes even memory malloc hands back dirty; bad sizes are refused. */
static void test_scratch_arrays(void **state) {
  (void)state;
  /* AddressSanitizer's allocator maps its regions lazily: no exact count */
#if defined(__SANITIZE_ADDRESS__)
  const int exact = 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  const int exact = 0;
#else
  const int exact = MAPS_EXACT;
#endif
#else
  const int exact = MAPS_EXACT;
#endif
  size_t pg = ph_os_page_size();
  long maps0 = ph_os_process_mappings();
  unsigned char *a = ph_os_scratch_alloc(100);
  assert_non_null(a);
  assert_int_equal((uintptr_t)a % 16, 0);
  for (size_t i = 0; i < 100; i++)
    a[i] = (unsigned char)i;
  a = ph_os_scratch_realloc(a, 4 * pg); /* small -> mapped */
  assert_non_null(a);
  assert_int_equal((uintptr_t)a % 16, 0);
  for (size_t i = 100; i < 4 * pg; i++)
    a[i] = (unsigned char)i;
  a = ph_os_scratch_realloc(a, MiB); /* mapped -> mapped (mremap) */
  assert_non_null(a);
  for (size_t i = 0; i < 4 * pg; i++)
    assert_int_equal(a[i], (unsigned char)i);
  a = ph_os_scratch_realloc(a, 50); /* mapped -> small */
  assert_non_null(a);
  for (size_t i = 0; i < 50; i++)
    assert_int_equal(a[i], (unsigned char)i);
  if (exact) /* the mapping went with the shrink */
    assert_int_equal(ph_os_process_mappings(), maps0);
  ph_os_scratch_free(a);

  /* zalloc: a small array from memory malloc had handed out dirty */
  for (int round = 0; round < 2; round++) {
    unsigned char *d = ph_os_scratch_alloc(200);
    assert_non_null(d);
    memset(d, 0xa5, 200);
    ph_os_scratch_free(d);
    unsigned char *z = ph_os_scratch_zalloc(25, 8);
    assert_non_null(z);
    for (size_t i = 0; i < 200; i++)
      assert_int_equal(z[i], 0);
    ph_os_scratch_free(z);
  }
  uint64_t *big = ph_os_scratch_zalloc(MiB / 8, 8);
  assert_non_null(big);
  assert_int_equal(big[MiB / 8 - 1], 0);
  big[MiB / 8 - 1] = 1;
  ph_os_scratch_free(big);
  if (exact)
    assert_int_equal(ph_os_process_mappings(), maps0);

  assert_null(ph_os_scratch_alloc(SIZE_MAX));
  assert_null(ph_os_scratch_zalloc(SIZE_MAX / 4, 8));
  unsigned char *k = ph_os_scratch_alloc(10);
  assert_non_null(k);
  k[9] = 7;
  assert_null(ph_os_scratch_realloc(k, SIZE_MAX)); /* k unchanged */
  assert_int_equal(k[9], 7);
  ph_os_scratch_free(k);
  ph_os_scratch_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_accounting, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reserved_reads_zero, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_alignment_and_mappings, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_many_reservations_back_to_baseline,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_decommit_keeps_mapping, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_rss_drops_after_decommit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_lazy_decommit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rlimit_as, setup, teardown),
      cmocka_unit_test_setup_teardown(test_explicit_huge_falls_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_thp, setup, teardown),
      cmocka_unit_test_setup_teardown(test_thp_flag, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fault_nth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fault_sticky_reserve, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_fault_decommit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fault_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_reserve_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_range_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
      cmocka_unit_test(test_probes),
      cmocka_unit_test(test_scratch_arrays),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
