/* tests/example_two_domains.c -- written only against include/poolheap.h.
 *
 * Two domains each build a private linked list and a binary tree, publish
 * the tree in a shared global root, read the other domain's tree, drop half
 * of their own data and collect together.  live_bytes must equal the bytes
 * of exactly what is still reachable, computed here by the embedder. Then
 * the heap is compacted and every value is checked again.
 * Exit status 0 and a line "2 passed, 0 failed" on success. */
#include <poolheap.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static ph_heap *heap;
static ph_value shared[2]; /* global roots, one tree per domain */
static pthread_barrier_t bar;
static int failures;

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);                      \
    }                                                                          \
  } while (0)

/* A tree of depth n: tag 0 blocks of 3 fields (left, right, int). */
static ph_value tree(ph_domain *d, int n, long *bytes) {
  size_t m = ph_scope_open(d);
  ph_value *t = ph_root(d, ph_alloc(d, 3, 0));
  *bytes += 4 * 8;
  ph_set_field(*t, 2, ph_val_int(n));
  if (n > 0) {
    ph_value l = tree(d, n - 1, bytes);
    ph_set_field(*t, 0, l);
    ph_value r = tree(d, n - 1, bytes);
    ph_set_field(*t, 1, r);
  }
  ph_value res = *t;
  ph_scope_close(d, m);
  return res;
}

static long tree_sum(ph_value t) {
  if (!ph_is_block(t))
    return 0;
  return ph_int_val(ph_field(t, 2)) + tree_sum(ph_field(t, 0)) +
         tree_sum(ph_field(t, 1));
}

static void *run(void *arg) {
  int me = (int)(long)arg;
  ph_domain *d;
  CHECK(ph_domain_attach(heap, &d) == PH_OK);
  size_t m = ph_scope_open(d);
  long tree_bytes = 0;
  shared[me] = tree(d, 12, &tree_bytes);
  /* a private list of 1000 cells: (int, next) plus a raw block each */
  ph_value *list = ph_root(d, PH_UNIT);
  for (int i = 0; i < 1000; i++) {
    ph_value c = ph_alloc(d, 3, 1);
    ph_set_field(c, 0, ph_val_int(i));
    ph_set_field(c, 1, *list);
    *list = c;
    ph_value raw = ph_alloc(d, 2, PH_TAG_RAW);
    ph_set_field(*list, 2, raw);
  }
  ph_blocking_enter(d);
  pthread_barrier_wait(&bar);
  ph_blocking_leave(d);
  /* read the other domain's tree */
  long expect = 0;
  for (int n = 12, k = 1; n >= 0; n--, k *= 2)
    expect += (long)n * k;
  CHECK(tree_sum(shared[1 - me]) == expect);
  /* drop the list: only the trees stay */
  *list = PH_UNIT;
  CHECK(ph_collect(d) == PH_OK);
  ph_blocking_enter(d);
  pthread_barrier_wait(&bar);
  ph_blocking_leave(d);
  if (me == 0) {
    ph_stats st;
    CHECK(ph_stats_get(heap, &st) == PH_OK);
    CHECK(st.live_bytes == (uint64_t)(2 * tree_bytes));
    printf("live_bytes %llu, expected %ld\n", (unsigned long long)st.live_bytes,
           2 * tree_bytes);
  }
  CHECK(ph_compact(d) == PH_OK);
  CHECK(tree_sum(shared[0]) == expect && tree_sum(shared[1]) == expect);
  char why[256];
  CHECK(ph_verify(d, why, sizeof why) == PH_OK);
  ph_scope_close(d, m);
  ph_blocking_enter(d);
  pthread_barrier_wait(&bar);
  ph_blocking_leave(d);
  CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

int main(void) {
  CHECK(ph_heap_create(NULL, &heap) == PH_OK);
  CHECK(ph_root_add(heap, &shared[0]) == PH_OK);
  CHECK(ph_root_add(heap, &shared[1]) == PH_OK);
  pthread_barrier_init(&bar, NULL, 2);
  pthread_t t[2];
  for (long i = 0; i < 2; i++)
    pthread_create(&t[i], NULL, run, (void *)i);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  CHECK(ph_heap_destroy(heap) == PH_OK);
  printf("%d passed, %d failed\n", failures ? 1 : 2, failures ? 1 : 0);
  return failures != 0;
}
