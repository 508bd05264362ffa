/* bench/madvise_mt.c -- why the compactor's release phase is done by one
 * participant while the others sleep in the barrier (DESIGN.md:
 * compact.phase.release).  A 200 MiB mapping of 6400 32 KiB units is
 * touched, a random 90% of the units are released with
 * madvise(MADV_DONTNEED), one call per run of free units (as W1 after a
 * compaction), in four ways:
 *   alone     one thread, no other thread in the process;
 *   split     two threads claiming runs from a shared counter;
 *   sleeping  one thread, while a second one waits on a condition variable
 *             (the barrier's state during phase 6);
 *   spinning  one thread, while a second one spins (a sibling that works).
 * Prints one JSON line: medians of 5 rounds in ms, and the runs per round.
 *   build/bench/madvise_mt */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define UNIT ((size_t)32 << 10)
#define NU 6400
#define ROUNDS 5

static char *base;
static uint32_t runs[NU][2];
static int nruns;
static size_t nfree_units;
static atomic_int claim, stop;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void *release_runs(void *arg) {
  (void)arg;
  for (;;) {
    int k = atomic_fetch_add(&claim, 1);
    if (k >= nruns)
      return NULL;
    madvise(base + runs[k][0] * UNIT, (runs[k][1] - runs[k][0]) * UNIT,
            MADV_DONTNEED);
  }
}

static void *sibling(void *arg) {
  if (arg) { /* sleeping */
    pthread_mutex_lock(&m);
    while (!atomic_load(&stop))
      pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
  } else {
    while (!atomic_load(&stop))
      ;
  }
  return NULL;
}

static void prepare(uint64_t *rng) {
  memset(base, 1, NU * UNIT);
  static int keep[NU];
  for (int i = 0; i < NU; i++) {
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    keep[i] = *rng % 10 == 0;
  }
  nruns = 0;
  nfree_units = 0;
  for (int i = 0; i < NU;) {
    if (keep[i]) {
      i++;
      continue;
    }
    int e = i;
    while (e < NU && !keep[e])
      e++;
    runs[nruns][0] = (uint32_t)i;
    runs[nruns][1] = (uint32_t)e;
    nruns++;
    nfree_units += (size_t)(e - i);
    i = e;
  }
  atomic_store(&claim, 0);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  base = mmap(NULL, NU * UNIT, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return 1;
  static const char *names[] = {"alone", "split", "sleeping", "spinning"};
  double med[4];
  int nr = 0;
  size_t nf = 0;
  uint64_t rng = 88172645463325252ull;
  for (int mode = 0; mode < 4; mode++) {
    double t[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
      prepare(&rng);
      nr = nruns;
      nf = nfree_units;
      pthread_t th;
      int other = mode != 0;
      atomic_store(&stop, 0);
      if (mode == 1)
        pthread_create(&th, NULL, release_runs, NULL);
      else if (other)
        pthread_create(&th, NULL, sibling, mode == 2 ? (void *)1 : NULL);
      if (mode >= 2) { /* let the sibling settle into its state */
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
      }
      double t0 = now_ms();
      release_runs(NULL);
      if (mode == 1)
        pthread_join(th, NULL);
      t[r] = now_ms() - t0;
      if (mode >= 2) {
        pthread_mutex_lock(&m);
        atomic_store(&stop, 1);
        pthread_cond_broadcast(&c);
        pthread_mutex_unlock(&m);
        pthread_join(th, NULL);
      }
    }
    qsort(t, ROUNDS, sizeof t[0], cmp);
    med[mode] = t[ROUNDS / 2];
  }
  printf("{\"released_mb\":%.1f,\"runs\":%d", (double)(nf * UNIT) / 1048576,
         nr);
  for (int mode = 0; mode < 4; mode++)
    printf(",\"%s_ms\":%.2f", names[mode], med[mode]);
  printf(",\"rounds\":%d}\n", ROUNDS);
  return 0;
}
