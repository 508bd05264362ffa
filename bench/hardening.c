/* bench/hardening.c -- the figures of issue 13's items 2, 3 and 9c, through
 * the public API only (the tests assert the properties; this prints the
 * costs).
 *   build/bench/hardening [2|3|9c|all]
 * 2:  a refused huge request under heap_limit = 64 MiB: reserved bytes and
 *     the cost of the next ph_collect, ph_compact and ph_stats_get.
 * 3:  pacing: collections to allocate 16 MiB with 32 KiB, 1 MiB and 4 MiB
 *     pools (8 classes), and per MiB with 256 KiB pools, 16 classes, 1 and 4
 *     domains allocating in lockstep rounds (cut off after 20 s).
 * 9c: what one 2.4 KB large block commits with 4 MiB pools, and how many
 *     fit a 32 MiB heap_limit. */
#include <poolheap.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static ph_stats st(ph_heap *h) {
  ph_stats s;
  ph_stats_get(h, &s);
  return s;
}
static void item2(size_t wosize) {
  ph_config c;
  ph_config_init(&c);
  c.heap_limit = 64 << 20;
  ph_heap *h;
  ph_heap_create(&c, &h);
  ph_domain *d;
  ph_domain_attach(h, &d);
  for (int i = 0; i < 1000; i++)
    ph_alloc(d, 10, 0);
  ph_value v = ph_alloc(d, wosize, 0);
  double t0 = ms();
  ph_collect(d);
  double t1 = ms();
  ph_compact(d);
  double t2 = ms();
  ph_stats s = st(h);
  double t3 = ms();
  printf("item2 wosize %zu: ret %lu err %d reserved %llu collect %.3f ms "
         "compact %.3f ms stats %.3f ms\n",
         wosize, (unsigned long)v, ph_last_error(d),
         (unsigned long long)s.reserved_bytes, t1 - t0, t2 - t1, t3 - t2);
  ph_domain_detach(d);
  ph_heap_destroy(h);
}
static void item3(size_t pool, int ncls, double limit_s) {
  ph_config c;
  ph_config_init(&c);
  c.pool_size = pool;
  ph_heap *h;
  ph_heap_create(&c, &h);
  ph_domain *d;
  ph_domain_attach(h, &d);
  size_t wo[8] = {1, 3, 7, 15, 31, 63, 127, 250};
  unsigned long long done = 0;
  double t0 = ms();
  int cut = 0;
  for (size_t k = 0; done < (16ull << 20); k++) {
    size_t w = wo[k % ncls];
    ph_alloc(d, w, 251);
    done += (w + 1) * 8;
    if ((k & 1023) == 0 && ms() - t0 > limit_s * 1e3) {
      cut = 1;
      break;
    }
  }
  ph_stats s = st(h);
  printf("item3 pool %zu KiB, %d classes, 1 domain: %llu collections for %.2f "
         "MiB in %.1f ms%s\n",
         pool >> 10, ncls, (unsigned long long)s.collections, done / 1048576.0,
         ms() - t0, cut ? " (cut off)" : "");
  ph_domain_detach(d);
  ph_heap_destroy(h);
}
static ph_heap *H;
static pthread_barrier_t B;
static void bwait(ph_domain *d) {
  ph_blocking_enter(d);
  pthread_barrier_wait(&B);
  ph_blocking_leave(d);
}
static size_t cw[16];
static void *w4(void *a) {
  (void)a;
  ph_domain *d;
  ph_domain_attach(H, &d);
  bwait(d);
  for (int r = 0; r < 128; r++) {
    for (int k = 0; k < 16; k++)
      for (int j = 0; j < 64; j++)
        ph_alloc(d, cw[k], 251);
    bwait(d);
  }
  ph_domain_detach(d);
  return 0;
}
static void item3mt(int nd) {
  ph_config c;
  ph_config_init(&c);
  c.pool_size = 256 << 10;
  ph_heap_create(&c, &H);
  ph_census_class rows[64];
  (void)rows;
  static const size_t w16[16] = {
      1,  2,  3,  4,  5,  6,  7, 8, 9,
      10, 11, 12, 13, 15, 17, 19}; /* the 16 smallest classes (slot
                                      words 2..14,16,18,20) */
  memcpy(cw, w16, sizeof cw);
  pthread_barrier_init(&B, 0, nd);
  pthread_t t[8];
  double t0 = ms();
  for (int i = 0; i < nd; i++)
    pthread_create(&t[i], 0, w4, 0);
  for (int i = 0; i < nd; i++)
    pthread_join(t[i], 0);
  ph_stats s = st(H);
  printf("item3 pool 256 KiB, 16 classes, %d domains (lockstep rounds): %llu "
         "collections for %.2f MiB (%.2f per MiB) in %.1f ms\n",
         nd, (unsigned long long)s.collections, s.allocated_bytes / 1048576.0,
         s.collections / (s.allocated_bytes / 1048576.0), ms() - t0);
  ph_heap_destroy(H);
  pthread_barrier_destroy(&B);
}
static void item9c(void) {
  ph_config c;
  ph_config_init(&c);
  c.pool_size = 4 << 20;
  c.heap_limit = 32 << 20;
  ph_heap *h;
  ph_heap_create(&c, &h);
  ph_domain *d;
  ph_domain_attach(h, &d);
  ph_stats s0 = st(h);
  size_t m = ph_scope_open(d);
  ph_root(d, ph_alloc(d, 300, 251));
  ph_stats s1 = st(h);
  int n = 1;
  while (n < 1000) {
    ph_value v = ph_alloc(d, 300, 251);
    if (!v)
      break;
    ph_root(d, v);
    n++;
  }
  printf("item9c pool 4 MiB, heap_limit 32 MiB: one 2.4 KB large block commits "
         "%llu bytes; %d such blocks fit\n",
         (unsigned long long)(s1.committed_bytes - s0.committed_bytes), n);
  ph_scope_close(d, m);
  ph_domain_detach(d);
  ph_heap_destroy(h);
}
int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "all";
  if (!strcmp(what, "all") || !strcmp(what, "2")) {
    item2(PH_MAX_WOSIZE);
    item2((size_t)2 << 30);
  }
  if (!strcmp(what, "all") || !strcmp(what, "3")) {
    item3(32 << 10, 8, 20);
    item3(1 << 20, 8, 20);
    item3(4 << 20, 8, 20);
    item3mt(1);
    item3mt(4);
  }
  if (!strcmp(what, "all") || !strcmp(what, "9c"))
    item9c();
  return 0;
}
