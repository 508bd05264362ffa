/* tests/test_collect.c -- collections with several domains (1..8 domains on
 * a machine with fewer cores), concurrent ph_collect calls coalescing,
 * blocking sections, detaching with live data and adoption of its pools.
 *
 * The random-graph test keeps a model of each domain's graph (node ids,
 * sizes, edges) and after collections walks the real graph from the roots,
 * checking every reachable node against the model; live_bytes must equal
 * the bytes of the reachable blocks, recounted by the test. */
#include "test_util.h"

#include "barrier/barrier.h"
#include "gc/gc.h"

#include <sched.h>
#include <unistd.h>

/* --------------------------------------------------------- random graphs */
#define MAXF 6 /* fields of a scanned node: field 0 = id, then edges */

typedef struct node {
  uint32_t wosize;
  uint8_t raw;
  int32_t edge[MAXF]; /* field j: node id, or -1 for an immediate */
} node;

typedef struct graph {
  ph_domain *d;
  tu_rng rng;
  unsigned me;
  size_t n, cap;
  node *nodes;
  ph_value **slot; /* root slot of node i, NULL if unrooted */
  size_t *rooted;  /* ids of rooted nodes */
  size_t nrooted;
  ph_value *actual; /* scratch for checking */
  uint64_t *seen;   /* scratch: generation per node */
  uint64_t gen;
} graph;

static ph_value imm(size_t id, size_t j) {
  return ph_val_int((intptr_t)(id * 8 + j));
}

static void g_init(graph *g, ph_domain *d, unsigned me, size_t cap) {
  memset(g, 0, sizeof *g);
  g->d = d;
  g->me = me;
  g->cap = cap;
  tu_rng_init(&g->rng, 100 + me);
  g->nodes = calloc(cap, sizeof *g->nodes);
  g->slot = calloc(cap, sizeof *g->slot);
  g->rooted = calloc(cap, sizeof *g->rooted);
  g->actual = calloc(cap, sizeof *g->actual);
  g->seen = calloc(cap, sizeof *g->seen);
}

static void g_free(graph *g) {
  free(g->nodes);
  free(g->slot);
  free(g->rooted);
  free(g->actual);
  free(g->seen);
}

static void garbage(graph *g, int k) {
  for (int i = 0; i < k; i++)
    TU_CHECK(ph_is_block(ph_alloc(g->d, 1 + tu_below(&g->rng, 12),
                                  tu_below(&g->rng, 4) ? 0 : PH_TAG_RAW)));
}

/* A random rooted node id (the graph must have one). */
static size_t any_rooted(graph *g) {
  return g->rooted[tu_below(&g->rng, g->nrooted)];
}

static void set_edge(graph *g, size_t a, size_t j) {
  node *na = &g->nodes[a];
  if (g->nrooted && tu_below(&g->rng, 10) < 7) {
    size_t t = any_rooted(g);
    na->edge[j] = (int32_t)t;
    ph_set_field(*g->slot[a], j, *g->slot[t]);
  } else {
    na->edge[j] = -1;
    ph_set_field(*g->slot[a], j, imm(a, j));
  }
}

/* Add k nodes (rooted), with random edges to rooted nodes, and garbage. */
static void g_grow(graph *g, size_t k) {
  for (size_t c = 0; c < k && g->n < g->cap; c++) {
    size_t id = g->n++;
    node *nd = &g->nodes[id];
    nd->raw = tu_below(&g->rng, 8) == 0;
    nd->wosize = 2 + (uint32_t)tu_below(&g->rng, MAXF - 1);
    if (tu_below(&g->rng, 64) == 0)
      nd->wosize = 40 + (uint32_t)tu_below(&g->rng, 200); /* bigger classes */
    if (tu_below(&g->rng, 2000) == 0)
      nd->wosize = 5000; /* a large block */
    garbage(g, (int)tu_below(&g->rng, 4));
    ph_value v = ph_alloc(g->d, nd->wosize, nd->raw ? PH_TAG_RAW + 1 : 0);
    TU_CHECK(ph_is_block(v));
    if (!ph_is_block(v)) {
      g->n--;
      return;
    }
    g->slot[id] = ph_root(g->d, v);
    g->rooted[g->nrooted++] = id;
    if (nd->raw) {
      ((int64_t *)ph_raw(v))[0] = (int64_t)id;
      continue;
    }
    ph_set_field(v, 0, ph_val_int((intptr_t)id));
    size_t ne = nd->wosize < MAXF ? nd->wosize : MAXF;
    for (size_t j = 1; j < ne; j++)
      set_edge(g, id, j);
  }
}

/* Re-point k random edges of rooted scanned nodes. */
static void g_mutate(graph *g, size_t k) {
  for (size_t c = 0; c < k && g->nrooted; c++) {
    size_t a = any_rooted(g);
    node *na = &g->nodes[a];
    if (na->raw)
      continue;
    size_t ne = na->wosize < MAXF ? na->wosize : MAXF;
    set_edge(g, a, 1 + tu_below(&g->rng, ne - 1));
  }
}

/* Unroot a fraction (num/den) of the rooted nodes. */
static void g_drop(graph *g, size_t num, size_t den) {
  size_t keep = 0;
  for (size_t i = 0; i < g->nrooted; i++) {
    size_t id = g->rooted[i];
    if (tu_below(&g->rng, den) < num) {
      *g->slot[id] = PH_UNIT;
      g->slot[id] = NULL;
    } else {
      g->rooted[keep++] = id;
    }
  }
  g->nrooted = keep;
}

/* Walk the real graph from the rooted nodes, following the model.  Returns
 * the bytes of the reachable blocks (each counted once), or UINT64_MAX
 * after reporting a mismatch. */
static uint64_t g_check(graph *g) {
  g->gen++;
  uint64_t bytes = 0;
  size_t *stack = malloc(g->n * sizeof *stack + 1);
  size_t top = 0;
  for (size_t i = 0; i < g->nrooted; i++) {
    size_t id = g->rooted[i];
    if (g->seen[id] == g->gen) {
      if (g->actual[id] != *g->slot[id])
        goto bad;
      continue;
    }
    g->seen[id] = g->gen;
    g->actual[id] = *g->slot[id];
    stack[top++] = id;
  }
  while (top) {
    size_t id = stack[--top];
    node *nd = &g->nodes[id];
    ph_value v = g->actual[id];
    if (!ph_is_block(v) || ph_wosize(v) != nd->wosize ||
        ph_tag(v) != (nd->raw ? PH_TAG_RAW + 1 : 0u)) {
      fprintf(stderr, "domain %u node %zu: bad block %#lx\n", g->me, id,
              (unsigned long)v);
      goto bad;
    }
    bytes += TU_BYTES(nd->wosize);
    if (nd->raw) {
      if (((int64_t *)ph_raw(v))[0] != (int64_t)id)
        goto bad;
      continue;
    }
    if (ph_field(v, 0) != ph_val_int((intptr_t)id)) {
      fprintf(stderr, "domain %u node %zu: id field %#lx\n", g->me, id,
              (unsigned long)ph_field(v, 0));
      goto bad;
    }
    size_t ne = nd->wosize < MAXF ? nd->wosize : MAXF;
    for (size_t j = 1; j < ne; j++) {
      ph_value x = ph_field(v, j);
      if (nd->edge[j] < 0) {
        if (x != imm(id, j))
          goto bad;
        continue;
      }
      size_t t = (size_t)nd->edge[j];
      if (g->seen[t] == g->gen) {
        if (g->actual[t] != x) {
          fprintf(stderr, "domain %u node %zu field %zu: two addresses\n",
                  g->me, id, j);
          goto bad;
        }
        continue;
      }
      g->seen[t] = g->gen;
      g->actual[t] = x;
      stack[top++] = t;
    }
    for (size_t j = ne; j < nd->wosize; j++)
      if (ph_field(v, j) != PH_UNIT)
        goto bad;
  }
  free(stack);
  return bytes;
bad:
  free(stack);
  TU_CHECK(!"graph does not match its model");
  return UINT64_MAX;
}

/* The bytes reachable from the rooted nodes, by a plain walk of the heap
 * (not the model). */
static uint64_t g_recount(graph *g) {
  ph_value *r = malloc((g->nrooted + 1) * sizeof *r);
  for (size_t i = 0; i < g->nrooted; i++)
    r[i] = *g->slot[g->rooted[i]];
  uint64_t b = tu_reach_bytes(r, g->nrooted);
  free(r);
  return b;
}

typedef struct multi {
  ph_heap *h;
  pthread_barrier_t bar;
  unsigned n;
  size_t per_round, rounds;
  _Atomic uint64_t reach[8];
  _Atomic long calls;
} multi;

static void *graph_domain(void *arg) {
  tu_thread_arg *ta = arg;
  multi *m = ta->user;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(m->h, &d) == PH_OK);
  size_t mark = ph_scope_open(d);
  graph g;
  g_init(&g, d, ta->index, m->per_round * m->rounds);
  for (size_t r = 0; r < m->rounds; r++) {
    /* build, mutate, drop, with collections requested at random times by
     * random domains */
    for (int step = 0; step < 4; step++) {
      g_grow(&g, m->per_round / 4);
      g_mutate(&g, m->per_round / 8);
      if (tu_below(&g.rng, 3) == 0) {
        uint64_t c0 = tu_stats(m->h).collections;
        TU_CHECK(ph_collect(d) == PH_OK);
        atomic_fetch_add(&m->calls, 1);
        TU_CHECK(tu_stats(m->h).collections >= c0 + 1);
        TU_CHECK(g_check(&g) != UINT64_MAX);
      }
      ph_safepoint(d);
    }
    g_drop(&g, 2, 5);
    /* every domain collects at once: the requests coalesce */
    tu_dbarrier(d, &m->bar);
    uint64_t c0 = tu_stats(m->h).collections;
    TU_CHECK(ph_collect(d) == PH_OK);
    atomic_fetch_add(&m->calls, 1);
    TU_CHECK(tu_stats(m->h).collections >= c0 + 1);
    uint64_t model = g_check(&g);
    TU_CHECK(model != UINT64_MAX);
    /* quiescent: exact live bytes against the recount */
    tu_dbarrier(d, &m->bar);
    uint64_t rec = g_recount(&g);
    TU_CHECK(rec == model);
    atomic_store(&m->reach[ta->index], rec);
    tu_dbarrier(d, &m->bar);
    if (ta->index == 0) {
      TU_CHECK(ph_collect(d) == PH_OK);
      uint64_t sum = 0;
      for (unsigned i = 0; i < m->n; i++)
        sum += atomic_load(&m->reach[i]);
      ph_stats st = tu_stats(m->h);
      if (st.live_bytes != sum)
        fprintf(stderr, "round %zu: live_bytes %llu, recount %llu\n", r,
                (unsigned long long)st.live_bytes, (unsigned long long)sum);
      TU_CHECK(st.live_bytes == sum);
      TU_CHECK(st.mark_ns > 0 && st.sweep_ns > 0);
      char why[256];
      int vr = ph_verify(d, why, sizeof why);
      if (vr != PH_OK)
        fprintf(stderr, "verify: %s\n", why);
      TU_CHECK(vr == PH_OK);
    }
    tu_dbarrier(d, &m->bar);
    TU_CHECK(g_check(&g) == model);
  }
  TU_CHECK(ph_scope_close(d, mark) == PH_OK);
  g_free(&g);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void test_collect_1_to_8_domains_random_graphs(void **state) {
  (void)state;
  tu_seed();
  for (unsigned n = 1; n <= 8; n++) {
    multi m;
    memset(&m, 0, sizeof m);
    m.h = tu_heap(100);
    m.n = n;
    m.per_round = tu_scale(2000, 2);
    m.rounds = TU_TSAN ? 3 : 5;
    pthread_barrier_init(&m.bar, NULL, n);
    ph_stats st0 = tu_stats(m.h);
    tu_threads_run(n, graph_domain, &m);
    tu_assert_no_failures();
    ph_stats st = tu_stats(m.h);
    assert_true(st.collections > st0.collections);
    assert_true(st.collections <=
                (uint64_t)atomic_load(&m.calls) + m.rounds * 2 + 64);
    assert_true(st.allocated_bytes > 0);
    assert_int_equal(st.domains, 0);
    printf("%u domains: %llu collections for %ld requests\n", n,
           (unsigned long long)st.collections, atomic_load(&m.calls));
    pthread_barrier_destroy(&m.bar);
    assert_int_equal(ph_heap_destroy(m.h), PH_OK);
  }
}

/* ----------------------------------------------- concurrent collections */
typedef struct storm {
  ph_heap *h;
  int iters;
  pthread_barrier_t bar;
} storm;

static void *storm_domain(void *arg) {
  tu_thread_arg *ta = arg;
  storm *s = ta->user;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(s->h, &d) == PH_OK);
  size_t mark = ph_scope_open(d);
  ph_value *keep = ph_root(d, PH_UNIT);
  *keep = ph_alloc(d, 3, 0);
  ph_set_field(*keep, 0, ph_val_int((intptr_t)ta->index));
  tu_dbarrier(d, &s->bar);
  for (int i = 0; i < s->iters; i++) {
    uint64_t c0 = tu_stats(s->h).collections;
    TU_CHECK(ph_collect(d) == PH_OK);
    /* a whole collection that started after the call has finished */
    TU_CHECK(tu_stats(s->h).collections >= c0 + 1);
    TU_CHECK(ph_int_val(ph_field(*keep, 0)) == (intptr_t)ta->index);
    for (int k = 0; k < 20; k++)
      TU_CHECK(ph_is_block(ph_alloc(d, 2, 0)));
  }
  tu_dbarrier(d, &s->bar);
  TU_CHECK(ph_scope_close(d, mark) == PH_OK);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void test_concurrent_collect_coalesces(void **state) {
  (void)state;
  for (unsigned n = 2; n <= 8; n *= 2) {
    storm s;
    s.h = tu_heap(0);
    s.iters = (int)tu_scale(60, 2);
    pthread_barrier_init(&s.bar, NULL, n);
    tu_threads_run(n, storm_domain, &s);
    tu_assert_no_failures();
    ph_stats st = tu_stats(s.h);
    /* at least as many as one domain's requests, at most all of them */
    assert_true(st.collections >= (uint64_t)s.iters);
    assert_true(st.collections <= (uint64_t)s.iters * n);
    printf("%u domains x %d requests: %llu collections\n", n, s.iters,
           (unsigned long long)st.collections);
    pthread_barrier_destroy(&s.bar);
    assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  }
}

/* ----------------------------------------------------- blocking sections */
static _Atomic unsigned mark_participants; /* bit per domain index */

static void on_event(ph_phase phase, int begin, unsigned domain,
                     uint64_t time_ns, void *user) {
  (void)time_ns;
  (void)user;
  if (phase == PH_PHASE_MARK && begin)
    atomic_fetch_or(&mark_participants, 1u << (domain & 31));
}

typedef struct blk {
  ph_heap *h;
  pthread_barrier_t bar;
  unsigned b_index;
  uint64_t b_bytes;
  int n;
} blk;

static void *blocked_domain(void *arg) {
  blk *b = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(b->h, &d) == PH_OK);
  b->b_index = ph_domain_index(d);
  size_t mark = ph_scope_open(d);
  ph_value **s = calloc((size_t)b->n, sizeof *s);
  ph_value *old = calloc((size_t)b->n, sizeof *old);
  uint64_t bytes = 0;
  for (int i = 0; i < b->n; i++) {
    for (int k = 0; k < 7; k++) /* garbage, so pools end up sparse */
      TU_CHECK(ph_is_block(ph_alloc(d, 3, 0)));
    ph_value v = ph_alloc(d, 3, 0);
    ph_set_field(v, 0, ph_val_int(i));
    s[i] = ph_root(d, v);
    if (i > 0)
      ph_set_field(*s[i], 1, *s[i - 1]);
    bytes += TU_BYTES(3);
  }
  for (int i = 0; i < b->n; i++)
    old[i] = *s[i];
  b->b_bytes = bytes;
  ph_blocking_enter(d);
  pthread_barrier_wait(&b->bar); /* 1: A may collect now */
  pthread_barrier_wait(&b->bar); /* 2: A is done */
  ph_blocking_leave(d);
  int moved = 0;
  for (int i = 0; i < b->n; i++) {
    TU_CHECK(ph_int_val(ph_field(*s[i], 0)) == i);
    if (i > 0)
      TU_CHECK(ph_field(*s[i], 1) == *s[i - 1]);
    moved += *s[i] != old[i];
  }
  TU_CHECK(moved > 0); /* compaction moved some and updated the roots */
  TU_CHECK(ph_scope_close(d, mark) == PH_OK);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  free(s);
  free(old);
  return NULL;
}

static void test_blocking_domain_roots_kept_and_updated(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.on_event = on_event;
  blk b;
  memset(&b, 0, sizeof b);
  b.n = (int)tu_scale(3000, 3);
  assert_int_equal(ph_heap_create(&cfg, &b.h), PH_OK);
  pthread_barrier_init(&b.bar, NULL, 2);
  ph_domain *a;
  assert_int_equal(ph_domain_attach(b.h, &a), PH_OK);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_domain, &b), 0);
  tu_dbarrier(a, &b.bar); /* 1 */
  /* B is inside a blocking section: collections do not wait for it */
  atomic_store(&mark_participants, 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ph_collect(a), PH_OK);
    assert_int_equal(tu_stats(b.h).live_bytes, b.b_bytes);
  }
  assert_int_equal(ph_compact(a), PH_OK);
  ph_stats st = tu_stats(b.h);
  assert_true(st.evacuated_blocks > 0);
  assert_int_equal(ph_collect(a), PH_OK);
  assert_int_equal(tu_stats(b.h).live_bytes, b.b_bytes);
  tu_verify_ok(a);
  unsigned parts = atomic_load(&mark_participants);
  assert_true(parts & (1u << ph_domain_index(a)));
  assert_false(parts & (1u << b.b_index)); /* B did not take part */
  tu_dbarrier(a, &b.bar);                  /* 2 */
  tu_djoin(a, t);
  tu_assert_no_failures();
  assert_int_equal(ph_collect(a), PH_OK);
  assert_int_equal(tu_stats(b.h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(a), PH_OK);
  pthread_barrier_destroy(&b.bar);
  assert_int_equal(ph_heap_destroy(b.h), PH_OK);
}

/* ---------------------------------------------------------------- detach */
typedef struct det {
  ph_heap *h;
  ph_value list; /* global root */
  int n;
  unsigned index;
  size_t pool_size;
  uintptr_t units[64];
  int nunits;
  int adopted;
} det;

static void *detaching_domain(void *arg) {
  det *x = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(x->h, &d) == PH_OK);
  x->index = ph_domain_index(d);
  for (int i = 0; i < x->n; i++) {
    TU_CHECK(ph_is_block(ph_alloc(d, 2, 0))); /* garbage */
    ph_value c = ph_alloc(d, 2, 0);
    ph_set_field(c, 0, ph_val_int(i));
    ph_set_field(c, 1, x->list);
    x->list = c;
    uintptr_t u = c & ~(uintptr_t)(x->pool_size - 1);
    int found = 0;
    for (int k = 0; k < x->nunits; k++)
      found |= x->units[k] == u;
    if (!found && x->nunits < 64)
      x->units[x->nunits++] = u;
  }
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void *adopting_domain(void *arg) {
  det *x = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(x->h, &d) == PH_OK);
  TU_CHECK(ph_domain_index(d) == x->index); /* the freed slot */
  /* the same size class: served from the detached domain's pools, whose
   * garbage slots were freed by the collection */
  for (int i = 0; i < 50; i++) {
    ph_value v = ph_alloc(d, 2, 0);
    uintptr_t u = v & ~(uintptr_t)(x->pool_size - 1);
    for (int k = 0; k < x->nunits; k++)
      x->adopted += x->units[k] == u;
  }
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static int list_ok(ph_value l, int n) {
  for (int i = n - 1; i >= 0; i--, l = ph_field(l, 1))
    if (!ph_is_block(l) || ph_int_val(ph_field(l, 0)) != i)
      return 0;
  return l == PH_UNIT;
}

static void test_detach_live_data_and_adoption(void **state) {
  (void)state;
  det x;
  memset(&x, 0, sizeof x);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  x.pool_size = cfg.pool_size;
  x.n = 5000;
  x.list = PH_UNIT;
  assert_int_equal(ph_heap_create(&cfg, &x.h), PH_OK);
  assert_int_equal(ph_root_add(x.h, &x.list), PH_OK);
  ph_domain *main_d;
  assert_int_equal(ph_domain_attach(x.h, &main_d), PH_OK);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, detaching_domain, &x), 0);
  tu_djoin(main_d, t);
  tu_assert_no_failures();
  assert_int_equal(tu_stats(x.h).domains, 1);
  /* the detached domain's blocks stay alive while reachable */
  assert_int_equal(ph_collect(main_d), PH_OK);
  ph_stats st = tu_stats(x.h);
  assert_int_equal(st.live_bytes, (uint64_t)x.n * TU_BYTES(2));
  assert_true(list_ok(x.list, x.n));
  tu_verify_ok(main_d);
  assert_int_equal(ph_compact(main_d), PH_OK);
  assert_true(list_ok(x.list, x.n));
  assert_int_equal(tu_stats(x.h).live_bytes, (uint64_t)x.n * TU_BYTES(2));
  /* refresh the pool set after compaction, then check adoption */
  x.nunits = 0;
  for (ph_value l = x.list; l != PH_UNIT; l = ph_field(l, 1)) {
    uintptr_t u = l & ~(uintptr_t)(x.pool_size - 1);
    int found = 0;
    for (int k = 0; k < x.nunits; k++)
      found |= x.units[k] == u;
    if (!found && x.nunits < 64)
      x.units[x.nunits++] = u;
  }
  /* drop every other cell: the pools get free slots */
  for (ph_value l = x.list; l != PH_UNIT && ph_field(l, 1) != PH_UNIT;
       l = ph_field(l, 1))
    ph_set_field(l, 1, ph_field(ph_field(l, 1), 1));
  assert_int_equal(ph_collect(main_d), PH_OK);
  assert_int_equal(tu_stats(x.h).live_bytes,
                   (uint64_t)(x.n + 1) / 2 * TU_BYTES(2));
  assert_int_equal(pthread_create(&t, NULL, adopting_domain, &x), 0);
  tu_djoin(main_d, t);
  tu_assert_no_failures();
  assert_true(x.adopted > 0);
  assert_int_equal(ph_root_remove(x.h, &x.list), PH_OK);
  assert_int_equal(ph_collect(main_d), PH_OK);
  assert_int_equal(tu_stats(x.h).live_bytes, 0);
  assert_int_equal(ph_domain_detach(main_d), PH_OK);
  assert_int_equal(ph_heap_destroy(x.h), PH_OK);
}

/* mark.scan.skip: marking skips a group of a long range's fields when
 * all of them hold immediates.  One pointer (the only path to its target)
 * at each position around the 8-field steps, the 64-field groups and the
 * 512-field slices, in blocks whose field counts end anywhere in a group,
 * with or without fields of 0 (not immediates, not blocks) beside it:
 * every target survives the collection with its contents, and live_bytes
 * equals the test's recount. */
static void test_mark_one_pointer_among_immediates(void **state) {
  (void)state;
  static const size_t sizes[] = {33,  40,  63,  64,  65,  71,  72,  127,
                                 128, 129, 200, 511, 512, 513, 700, 1500};
  static const size_t near[] = {0,  1,  6,  7,  8,  9,  15, 16,  31,
                                32, 56, 57, 62, 63, 64, 65, 511, 512};
  ph_heap *h = tu_heap(0);
  ph_domain *d;
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  size_t mark = ph_scope_open(d);
  size_t cap =
      sizeof sizes / sizeof *sizes * 2 * (sizeof near / sizeof *near + 4);
  ph_value **slot = calloc(cap, sizeof *slot);
  size_t *at = calloc(cap, sizeof *at);
  ph_value *roots = calloc(cap, sizeof *roots);
  assert_true(slot && at && roots);
  size_t n = 0;
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    size_t wo = sizes[s];
    size_t pos[sizeof near / sizeof *near + 4], np = 0;
    for (size_t k = 0; k < sizeof near / sizeof *near; k++)
      if (near[k] < wo)
        pos[np++] = near[k];
    pos[np++] = wo - 1;
    pos[np++] = wo - 2;
    pos[np++] = wo - 8;
    pos[np++] = wo / 2;
    for (int zeros = 0; zeros < 2; zeros++)
      for (size_t k = 0; k < np; k++) {
        ph_value big = ph_alloc(d, wo, 0);
        assert_true(ph_is_block(big));
        slot[n] = ph_root(d, big);
        if (zeros) /* a 0 field: an even word that is not a block */
          for (size_t f = 3; f < wo; f += 11)
            ph_set_field(big, f, 0);
        ph_value t = ph_alloc(d, 2, 0);
        assert_true(ph_is_block(t));
        ph_set_field(t, 0, ph_val_int((intptr_t)n));
        ph_set_field(*slot[n], pos[k], t);
        at[n++] = pos[k];
      }
  }
  assert_true(n <= cap);
  assert_int_equal(ph_collect(d), PH_OK);
  for (size_t i = 0; i < n; i++) {
    roots[i] = *slot[i];
    ph_value t = ph_field(roots[i], at[i]);
    assert_true(ph_is_block(t));
    assert_int_equal(ph_wosize(t), 2);
    assert_int_equal(ph_int_val(ph_field(t, 0)), (intptr_t)i);
  }
  assert_int_equal(tu_stats(h).live_bytes, tu_reach_bytes(roots, n));
  tu_verify_ok(d);
  free(slot);
  free(at);
  free(roots);
  ph_scope_close(d, mark);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

/* ------------------------------------------------------ section barriers */
/* gc.stw.barriers: a collecting section of two domains (no weak block, no
 * finaliser, no mark overflow) passes 3 rounds of its barrier: the arrival
 * (the last to arrive runs the prepare step, barrier.stw.prepare), the end
 * of marking, the end of the sweep (its last arriver runs the finish,
 * barrier.sense.single), and no final round follows (one more in debug
 * builds: the heap check after the sweep).  A verify section passes two
 * (the arrival; the others wait for the leader's check). */
typedef struct rounds_arg {
  ph_heap *h;
  _Atomic int attached, stop;
} rounds_arg;

static void *rounds_domain(void *arg) {
  rounds_arg *r = arg;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(r->h, &d) == PH_OK);
  atomic_store(&r->attached, 1);
  while (!atomic_load(&r->stop))
    ph_safepoint(d); /* joins the other's sections */
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

/* A fresh heap with the caller attached as *d and a partner domain that
 * only joins sections (rounds_domain), attached before this returns. */
static void partner_start(rounds_arg *r, pthread_t *t, ph_domain **d) {
  r->h = tu_heap(0);
  atomic_init(&r->attached, 0);
  atomic_init(&r->stop, 0);
  assert_int_equal(ph_domain_attach(r->h, d), PH_OK);
  assert_int_equal(pthread_create(t, NULL, rounds_domain, r), 0);
  while (!atomic_load(&r->attached))
    sched_yield();
}

/* The partner detaches and ends; the caller keeps its domain and heap. */
static void partner_stop(rounds_arg *r, pthread_t t) {
  atomic_store(&r->stop, 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  tu_assert_no_failures();
}

static uint64_t bar_rounds(ph_heap *h) {
  return atomic_load_explicit(&h->sync->stw.bar.gen, memory_order_acquire);
}

static void test_section_barrier_rounds(void **state) {
  (void)state;
  rounds_arg r;
  ph_domain *d;
  pthread_t t;
  partner_start(&r, &t, &d);
  size_t mark = ph_scope_open(d);
  ph_value *keep = ph_root(d, ph_alloc(d, 100, 0));
  for (int i = 0; i < 5; i++) {
    uint64_t b0 = bar_rounds(r.h), c0 = tu_stats(r.h).collections;
    assert_int_equal(ph_collect(d), PH_OK);
    uint64_t b1 = bar_rounds(r.h);
    /* one section, unless the other joined late and led its own */
    uint64_t n = tu_stats(r.h).collections - c0;
    assert_true(n >= 1);
    /* PH_EXPENSIVE: the heap check after the sweep has its barrier */
    assert_int_equal(b1 - b0, (3 + PH_EXPENSIVE) * n);
    char why[128];
    assert_int_equal(ph_verify(d, why, sizeof why), PH_OK);
    assert_int_equal(bar_rounds(r.h) - b1, 2);
  }
  assert_int_equal(ph_wosize(*keep), 100);
  partner_stop(&r, t);
  ph_scope_close(d, mark);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(r.h), PH_OK);
}

/* mark.share.spin: two domains, one holding a big array of small blocks,
 * the other nothing: the other runs out of work at once.  Without spinning
 * (ph_barrier_spin_max_ns 0 meanwhile) its idle waits sleep;
 * with a spin bound of a second none does (it spins until a shared range
 * or the end of marking).  Both mark the same live bytes. */
static uint64_t mark_sleeps_with(uint32_t max_ns, uint64_t *live) {
  uint32_t keep = ph_barrier_spin_max_ns;
  ph_barrier_spin_max_ns = max_ns;
  rounds_arg r;
  ph_domain *d;
  pthread_t t;
  partner_start(&r, &t, &d);
  size_t mark = ph_scope_open(d);
  size_t n = tu_scale(60000, 8);
  ph_value *arr = ph_root(d, ph_alloc(d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_alloc(d, 2, 0);
    assert_true(ph_is_block(b));
    ph_set_field(*arr, i, b);
  }
  for (int i = 0; i < 4; i++)
    assert_int_equal(ph_collect(d), PH_OK);
  *live = tu_stats(r.h).live_bytes;
  partner_stop(&r, t);
  pthread_mutex_lock(&r.h->gc->mark_lock);
  uint64_t slept = r.h->gc->mark_slept;
  pthread_mutex_unlock(&r.h->gc->mark_lock);
  ph_scope_close(d, mark);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(r.h), PH_OK);
  ph_barrier_spin_max_ns = keep;
  printf("spin up to %u ns: %llu idle waits slept in 4 collections\n", max_ns,
         (unsigned long long)slept);
  return slept;
}

static void test_mark_idle_spins_before_sleeping(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    skip();
    return;
  }
  uint64_t live0, live1;
  assert_true(mark_sleeps_with(0, &live0) > 0);
  assert_int_equal(mark_sleeps_with(1000000000u, &live1), 0);
  assert_int_equal(live0, live1);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_collect_1_to_8_domains_random_graphs),
      cmocka_unit_test(test_concurrent_collect_coalesces),
      cmocka_unit_test(test_blocking_domain_roots_kept_and_updated),
      cmocka_unit_test(test_detach_live_data_and_adoption),
      cmocka_unit_test(test_mark_one_pointer_among_immediates),
      cmocka_unit_test(test_section_barrier_rounds),
      cmocka_unit_test(test_mark_idle_spins_before_sleeping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
