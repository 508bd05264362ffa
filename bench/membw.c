/* bench/membw.c -- what this machine's memory does for one core, to read
 * the benchmark's figures against: sequential read bandwidth over 32 MiB
 * (the W1 root array's size) and the cost of independent random 8-byte
 * reads over 200 MiB (the W1 heap's size).  Medians of 5 runs.
 *   build/bench/membw */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  size_t n = ((size_t)32 << 20) / 8, big = ((size_t)200 << 20) / 8;
  size_t reads = 2000000;
  uint64_t *a = malloc(n * 8), *b = malloc(big * 8), *idx = malloc(reads * 8);
  if (!a || !b || !idx)
    return 1;
  memset(a, 1, n * 8);
  for (size_t i = 0; i < big; i++)
    b[i] = i;
  uint64_t s = 88172645463325252ull, sink = 0;
  for (size_t i = 0; i < reads; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    idx[i] = s % big;
  }
  double seq[5], rnd[5];
  for (int r = 0; r < 5; r++) {
    double t0 = now_ms();
    for (size_t i = 0; i < n; i++)
      sink += a[i];
    double t1 = now_ms();
    for (size_t i = 0; i < reads; i++)
      sink += b[idx[i]];
    double t2 = now_ms();
    seq[r] = (double)(n * 8) / ((t1 - t0) / 1e3) / 1e9;
    rnd[r] = (t2 - t1) * 1e6 / (double)reads;
  }
  qsort(seq, 5, sizeof seq[0], cmp);
  qsort(rnd, 5, sizeof rnd[0], cmp);
  printf("{\"seq_read_gb_s\":%.1f,\"random_read_ns\":%.1f,\"runs\":5,"
         "\"sink\":%llu}\n",
         seq[2], rnd[2], (unsigned long long)(sink & 1));
  return 0;
}
