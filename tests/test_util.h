/* tests/test_util.h -- helpers shared by the cmocka tests.
 *
 * - TU_TSAN: 1 under ThreadSanitizer (sizes are scaled down there with
 *   tu_scale), TU_ASAN likewise for AddressSanitizer.
 * - TU_MAPS_EXACT: whether the process's mapping count is predictable
 *   (neither sanitizer maps memory behind the program's back).
 * - The tests' one seed reader and RNG: tu_seed / tu_seed_named print the
 *   seed and honour the environment variable POOLHEAP_SEED, so a failing run
 *   can be repeated (tu_seed_from: with a fixed default instead of the
 *   clock); tu_rng (xorshift*) with tu_next / tu_below, seeded by
 *   tu_rng_init (a stream of the process seed) or with a state of the
 *   caller's; tu_mix, a word mixer (splitmix64's finalizer).
 * - tu_vmrss_kb (VmRSS of the process) and tu_maps_lines (lines of
 *   /proc/self/maps), read by the library's ph_os_process_rss and
 *   ph_os_process_mappings; tu_maps_read / tu_maps_new_range (a snapshot
 *   of /proc/self/maps taken without malloc, and an address range that a
 *   later one maps and an earlier one did not); tu_meminfo (a /proc/meminfo
 *   field).
 * - tu_in_child: a function run in a forked child, its exit code (-1 if a
 *   signal killed it).
 * - Threads: tu_threads_run starts n threads and joins them; tu_dbarrier is
 *   a pthread barrier wait for a thread attached as a domain (done inside a
 *   blocking section, or collections would wait for it forever).
 * - tu_reach_bytes: the bytes of every block reachable from a set of values,
 *   recounted by the test itself ((wosize + 1) * 8 each, as live_bytes).
 *
 * - Checks: TU_CHECK counts a failure from any thread, the test thread
 *   asserts none with tu_assert_no_failures (tu_failures_reset starts
 *   afresh); tu_verify_ok (ph_verify must pass, the test thread) and
 *   tu_verify_mt (any thread, counted); tu_stats, tu_heap.
 *
 * compact_util.h, reliability_util.h and pools_util.h include this header
 * and add only what their tests share.  Every helper is static inline.
 */
#ifndef POOLHEAP_TEST_UTIL_H
#define POOLHEAP_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "os/os.h"
#include "poolheap.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ sanitizers */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* ThreadSanitizer maps shadow memory whenever the program maps memory, and
 * AddressSanitizer's allocator maps its regions lazily, so the process-wide
 * mapping count is only predictable without them.  With them, the exact
 * check is ru_ranges_gone: none of the heap's reservations is mapped. */
#define TU_MAPS_EXACT (!TU_TSAN && !TU_ASAN)

#if defined(PH_DEBUG) && PH_DEBUG
#define TU_DEBUG 1
#else
#define TU_DEBUG 0
#endif

/* n, divided by div under ThreadSanitizer (at least 1). */
static inline size_t tu_scale(size_t n, size_t div) {
  if (!TU_TSAN)
    return n;
  return n / div ? n / div : 1;
}

/* ------------------------------------------------------------------ rng */
typedef struct tu_rng {
  uint64_t s;
} tu_rng;

/* The seed of this process: POOLHEAP_SEED if set, else from the clock
 * (or def, if fixed: a test whose inputs are the same on every run unless
 * a seed is given).  Printed, with how to repeat it: on the first call, and
 * on every call that names what it seeds (what != NULL). */
static inline uint64_t tu_seed_from(const char *what, int fixed, uint64_t def) {
  static uint64_t seed;
  static int have; /* written once, by the first call (the main thread) */
  int first = !have;
  if (first) {
    const char *e = getenv("POOLHEAP_SEED");
    if (e && *e) {
      seed = strtoull(e, NULL, 0);
    } else if (fixed) {
      seed = def;
    } else {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
             ((uint64_t)getpid() << 40);
    }
    have = 1;
  }
  if (first || what) {
    printf("%s%sseed %" PRIu64 " (repeat with POOLHEAP_SEED=%" PRIu64 ")\n",
           what ? what : "", what ? ": " : "", seed, seed);
    fflush(stdout);
  }
  return seed;
}

static inline uint64_t tu_seed_named(const char *what) {
  return tu_seed_from(what, 0, 0);
}

static inline uint64_t tu_seed(void) {
  return tu_seed_named(NULL);
}

/* A word mixer (splitmix64's finalizer of a + golden * (b + 1)). */
static inline uint64_t tu_mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A stream derived from the process seed and a stream number (one per
 * thread or test), so threads do not share state. */
static inline void tu_rng_init(tu_rng *r, uint64_t stream) {
  uint64_t x = tu_mix(tu_seed(), stream);
  r->s = x ? x : 1;
}

/* xorshift*; a zero state (a caller's seed) starts from a constant. */
static inline uint64_t tu_next(tu_rng *r) {
  uint64_t x = r->s ? r->s : 0x9e3779b97f4a7c15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n) (n > 0). */
static inline size_t tu_below(tu_rng *r, size_t n) {
  return (size_t)(tu_next(r) % n);
}

/* --------------------------------------------------------------- /proc */
/* VmRSS of this process in KiB, -1 if unknown. */
static inline long tu_vmrss_kb(void) {
  uint64_t b = ph_os_process_rss();
  return b ? (long)(b / 1024) : -1;
}

/* Runs fn in a forked child: its exit code, or -1 if a signal killed it
 * (printed).  A crash kills the child: cmocka's handlers, which would report
 * it as a test of the child's, are reset there. */
static inline int tu_in_child(int (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    _exit(fn());
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (WIFSIGNALED(st)) {
    print_message("child died of signal %d\n", WTERMSIG(st));
    return -1;
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Lines of /proc/self/maps (kernel mappings of the process), -1 if unknown. */
static inline long tu_maps_lines(void) {
  return ph_os_process_mappings();
}

/* A snapshot of /proc/self/maps: each line's range and name ([heap], a path,
 * or ""), read with open/read into a static buffer, so that taking one
 * mallocs nothing (a thread's first malloc may map a glibc arena). */
#define TU_MAPS_MAX 4096
typedef struct tu_maps {
  size_t n;
  uintptr_t lo[TU_MAPS_MAX], hi[TU_MAPS_MAX];
  char what[TU_MAPS_MAX][48];
} tu_maps;

static inline void tu_maps_read(tu_maps *m) {
  static char buf[1 << 20];
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  size_t len = 0;
  ssize_t k;
  while (fd >= 0 && len < sizeof buf - 1 &&
         (k = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)k;
  if (fd >= 0)
    close(fd);
  buf[len] = 0;
  m->n = 0;
  for (char *line = buf; *line && m->n < TU_MAPS_MAX;) {
    char *end = strchr(line, '\n');
    if (end)
      *end = 0;
    char *s = line;
    m->lo[m->n] = (uintptr_t)strtoull(s, &s, 16);
    m->hi[m->n] = (uintptr_t)strtoull(s + 1, &s, 16);
    for (int f = 0; f < 4; f++) { /* perms, offset, device, inode */
      while (*s == ' ')
        s++;
      while (*s && *s != ' ')
        s++;
    }
    while (*s == ' ')
      s++;
    snprintf(m->what[m->n], sizeof m->what[0], "%s", s);
    m->n++;
    if (!end)
      break;
    line = end + 1;
  }
}

/* The first line of b holding an address that no line of a holds (the
 * kernel merges neighbouring mappings, so a new one may add no line), or
 * -1.  [heap] (malloc's brk) and [stack] (the main thread's, grown on touch)
 * are not ours to predict. */
static inline long tu_maps_new_range(const tu_maps *a, const tu_maps *b) {
  for (size_t i = 0; i < b->n; i++) {
    if (!strcmp(b->what[i], "[heap]") || !strcmp(b->what[i], "[stack]"))
      continue;
    uintptr_t p = b->lo[i];
    while (p < b->hi[i]) {
      size_t j = 0;
      while (j < a->n && !(a->lo[j] <= p && p < a->hi[j]))
        j++;
      if (j == a->n)
        return (long)i;
      p = a->hi[j];
    }
  }
  return -1;
}

/* The number after "key:" in /proc/meminfo (HugePages_Free, ...), -1 if
 * absent. */
static inline long tu_meminfo(const char *key) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  long v = -1;
  size_t n = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0 && line[n] == ':')
      v = strtol(line + n + 1, NULL, 10);
  if (f)
    fclose(f);
  return v;
}

/* ------------------------------------------------------------- threads */
typedef void *(*tu_thread_fn)(void *);

typedef struct tu_thread_arg {
  unsigned index, n;
  void *user;
} tu_thread_arg;

/* Run fn in n threads (arg: a tu_thread_arg) and join them all. */
static inline void tu_threads_run(unsigned n, tu_thread_fn fn, void *user) {
  pthread_t *t = calloc(n, sizeof *t);
  tu_thread_arg *a = calloc(n, sizeof *a);
  assert_non_null(t);
  assert_non_null(a);
  for (unsigned i = 0; i < n; i++) {
    a[i].index = i;
    a[i].n = n;
    a[i].user = user;
    assert_int_equal(pthread_create(&t[i], NULL, fn, &a[i]), 0);
  }
  for (unsigned i = 0; i < n; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  free(t);
  free(a);
}

/* A pthread barrier wait by a domain's thread: inside a blocking section, so
 * that a collection started by another domain does not wait for us. */
static inline void tu_dbarrier(ph_domain *d, pthread_barrier_t *b) {
  ph_blocking_enter(d);
  pthread_barrier_wait(b);
  ph_blocking_leave(d);
}

/* Join a thread from a domain's thread (inside a blocking section). */
static inline void tu_djoin(ph_domain *d, pthread_t t) {
  ph_blocking_enter(d);
  assert_int_equal(pthread_join(t, NULL), 0);
  ph_blocking_leave(d);
}

/* ------------------------------------------------- reachability recount */
/* An open-addressing set of block addresses. */
typedef struct tu_set {
  ph_value *t;
  size_t cap, n;
} tu_set;

static inline size_t tu_set_hash(ph_value v, size_t cap) {
  return (size_t)(((uint64_t)v >> 3) * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
}

/* Returns 1 if v was added, 0 if it was there. */
static inline int tu_set_add(tu_set *s, ph_value v) {
  if ((s->n + 1) * 2 > s->cap) {
    size_t ncap = s->cap ? s->cap * 2 : 1024;
    ph_value *nt = calloc(ncap, sizeof *nt);
    assert_non_null(nt);
    for (size_t i = 0; i < s->cap; i++)
      if (s->t[i]) {
        size_t j = tu_set_hash(s->t[i], ncap);
        while (nt[j])
          j = (j + 1) & (ncap - 1);
        nt[j] = s->t[i];
      }
    free(s->t);
    s->t = nt;
    s->cap = ncap;
  }
  size_t j = tu_set_hash(v, s->cap);
  while (s->t[j]) {
    if (s->t[j] == v)
      return 0;
    j = (j + 1) & (s->cap - 1);
  }
  s->t[j] = v;
  s->n++;
  return 1;
}

static inline int tu_set_has(const tu_set *s, ph_value v) {
  if (!s->cap)
    return 0;
  size_t j = tu_set_hash(v, s->cap);
  while (s->t[j]) {
    if (s->t[j] == v)
      return 1;
    j = (j + 1) & (s->cap - 1);
  }
  return 0;
}

static inline void tu_set_free(tu_set *s) {
  free(s->t);
  s->t = NULL;
  s->cap = s->n = 0;
}

/* Walk everything reachable from roots[0..n) (iteratively), adding each
 * block to *seen (which may already hold blocks: those are not counted
 * again).  Returns the bytes of the newly seen blocks. */
static inline uint64_t tu_reach_bytes_into(tu_set *seen, const ph_value *roots,
                                           size_t n) {
  size_t cap = 1024, top = 0;
  ph_value *stack = malloc(cap * sizeof *stack);
  assert_non_null(stack);
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    if (!ph_is_block(roots[i]) || !tu_set_add(seen, roots[i]))
      continue;
    stack[top++] = roots[i];
    while (top) {
      ph_value v = stack[--top];
      bytes += (ph_wosize(v) + 1) * 8;
      if (ph_tag(v) >= PH_TAG_RAW)
        continue;
      for (size_t k = 0; k < ph_wosize(v); k++) {
        ph_value x = ph_field(v, k);
        if (!ph_is_block(x) || !tu_set_add(seen, x))
          continue;
        if (top == cap) {
          cap *= 2;
          stack = realloc(stack, cap * sizeof *stack);
          assert_non_null(stack);
        }
        stack[top++] = x;
      }
    }
  }
  free(stack);
  return bytes;
}

static inline uint64_t tu_reach_bytes(const ph_value *roots, size_t n) {
  tu_set s = {0};
  uint64_t b = tu_reach_bytes_into(&s, roots, n);
  tu_set_free(&s);
  return b;
}

/* ------------------------------------------------- checks in threads */
/* cmocka's assertions may only fail in the test's own thread (they
 * longjmp); other threads count failures with TU_CHECK and the test thread
 * asserts the count with tu_assert_no_failures. */
static inline int *tu_failures_p(void) {
  static int failures;
  return &failures;
}
#define TU_CHECK(c)                                                            \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      __atomic_fetch_add(tu_failures_p(), 1, __ATOMIC_RELAXED);                \
    }                                                                          \
  } while (0)
static inline void tu_assert_no_failures(void) {
  int f = __atomic_exchange_n(tu_failures_p(), 0, __ATOMIC_RELAXED);
  assert_int_equal(f, 0);
}
/* Start a test's count afresh (before its threads start). */
static inline void tu_failures_reset(void) {
  __atomic_store_n(tu_failures_p(), 0, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------- misc */
static inline ph_stats tu_stats(ph_heap *h) {
  ph_stats st;
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  return st;
}

/* ph_verify must pass; prints the reason otherwise. */
static inline void tu_verify_ok(ph_domain *d) {
  char why[512];
  int r = ph_verify(d, why, sizeof why);
  if (r != PH_OK)
    fail_msg("ph_verify: %s (%s)", ph_strerror(r), why);
}

/* One attached domain on a fresh heap that collects only when asked
 * (gc_percent 0), with the given compaction scope and GC helpers; closed
 * with the heap verified, the domain detached and the heap destroyed. */
typedef struct tu_env {
  ph_heap *h;
  ph_domain *d;
} tu_env;

static inline void tu_env_open(tu_env *e, ph_compact_scope scope,
                               unsigned helpers) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.compact_scope = scope;
  cfg.gc_helpers = helpers;
  assert_int_equal(ph_heap_create(&cfg, &e->h), PH_OK);
  assert_int_equal(ph_domain_attach(e->h, &e->d), PH_OK);
}

static inline void tu_env_close(tu_env *e) {
  tu_verify_ok(e->d);
  assert_int_equal(ph_domain_detach(e->d), PH_OK);
  assert_int_equal(ph_heap_destroy(e->h), PH_OK);
}

/* The same from any thread: counts a failure (TU_CHECK) instead. */
static inline int tu_verify_mt(ph_domain *d) {
  char why[512];
  int r = ph_verify(d, why, sizeof why);
  if (r != PH_OK)
    fprintf(stderr, "ph_verify: %s (%s)\n", ph_strerror(r), why);
  TU_CHECK(r == PH_OK);
  return r;
}

/* A heap with defaults except gc_percent (0 = explicit collections only). */
static inline ph_heap *tu_heap(unsigned gc_percent) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = gc_percent;
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_non_null(h);
  return h;
}

#define TU_BYTES(wosize) ((uint64_t)((wosize) + 1) * 8)

#endif
