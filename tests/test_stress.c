/* tests/test_stress.c -- multi-domain stress test (written against
 * include/poolheap.h and the tests' helpers only; meant for the tsan
 * variant, runs in all).
 *
 * NLANES lanes run on 2 cores; each lane is a succession of threads, each of
 * which attaches a domain, works for a random while, then detaches and
 * exits, and the lane starts a new thread that attaches (so domains come and
 * go mid-run).  Every domain:
 *   - mutates its own graph, kept alive by handle-scope roots: allocations of
 *     every size (small classes, medium sizes of 2-256 KiB (issue 11) and just
 *     beyond, large, raw), field sets, root drops;
 *   - mutates one shared graph (global roots) under a pthread mutex, waiting
 *     for the mutex inside a blocking section (lock while blocking, then
 *     ph_blocking_leave while holding it: a waiter never holds up a
 *     collection, and the holder is running, so it takes part in them);
 *   - at random moments calls ph_collect or ph_compact, sits in a blocking
 *     section for a while, or polls a safepoint;
 *   - hands part of its graph to the shared graph before it detaches.
 * Each graph has a model outside the heap: per node a unique id (field 0 of
 * scanned blocks, word 0 of raw ones, whose other words follow a pattern),
 * tag, wosize and every field (an immediate, 0 or an edge to a model node).
 * The whole graph is compared with its model (shape, ids, fields, sharing)
 * every time its addresses may have changed, in particular after every
 * compaction, and ph_verify must pass after every compaction.
 *
 * Every domain also keeps a side model of weak references (gc.weak, gc.final,
 * gc.pin): a weak block whose fields point at target nodes it roots or
 * drops, an ephemeron whose data only it holds, FIRST and LAST finalisers
 * on garbage, and a pinned unrooted node.  After each collection it asked
 * for: a rooted target's weak field and ephemeron are intact, a target
 * dropped before it reads 0 (ephemeron: key and data); at any time a field
 * that is not 0 holds its node (right id); the pinned node keeps its
 * address and id; every finaliser gets its own value (FIRST) or 0 (LAST),
 * outside sections, once; at the end all of them have run.  Pins are
 * handed on at detach and unpinned by a later domain.
 * The heap's configuration is drawn from the seed too, GC helper threads
 * (0..2) included.
 * Environment: POOLHEAP_SEED (replay; printed at start),
 * POOLHEAP_STRESS_SECONDS (default 8), POOLHEAP_STRESS_OPS (ops per lane,
 * instead of a duration).  Prints the number of compactions that ran. */
#include "test_util.h" /* the RNG, the seed (POOLHEAP_SEED), cmocka */

#include <poolheap.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NLANES 7
#define OWN_ROOTS 12
#define SHARED_ROOTS 8
#define OWN_MAXN 1200
#define SHARED_MAXN 800
/* words (wosizes) a graph's model holds at once; a medium block that would
 * pass it is drawn small instead, so the memory and the walks stay bounded.
 * Under TSan about half, still room for the top medium class (32767 fields)
 * and the sizes just beyond. */
#define GRAPH_MAXWORDS (TU_TSAN ? 36u * 1024 : 64u * 1024)

/* ------------------------------------------------------------ globals */

static ph_heap *heap;
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static ph_value shared_slots[SHARED_ROOTS]; /* global roots */
static atomic_int failed;
static atomic_int stop;
static atomic_uint_fast64_t next_id = 1;
static atomic_uint_fast64_t n_compact, n_collect, n_verify, n_ops, n_attach;
static atomic_uint_fast64_t n_handoff, n_blocking, n_shared;
static atomic_uint_fast64_t n_medium, n_beyond; /* blocks of 256-32767 fields,
                                                   and of more */
static uint64_t seed;
static uint64_t deadline_ns;
static long ops_per_lane;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define FAIL(...)                                                              \
  do {                                                                         \
    fprintf(stderr,                                                            \
            "test_stress: FAILURE (seed %llu): ", (unsigned long long)seed);   \
    fprintf(stderr, __VA_ARGS__);                                              \
    fprintf(stderr, "\n");                                                     \
    atomic_store(&failed, 1);                                                  \
  } while (0)

/* ------------------------------------------------------------ the model */

/* A model value: 0, an odd immediate, or (node index + 1) << 1. */
typedef uint64_t mval;
#define MNODE(i) ((mval)((i) + 1) << 1)
static int m_is_node(mval e) {
  return e != 0 && (e & 1) == 0;
}
static size_t m_node(mval e) {
  return (size_t)(e >> 1) - 1;
}

typedef struct node {
  int used;
  uint64_t id;
  size_t wosize;
  unsigned tag;
  mval *f; /* scanned nodes: f[1..wosize-1] */
  ph_value addr;
  unsigned mark;
} node;

typedef struct graph {
  const char *name;
  node *n;
  size_t cap, nlive;
  size_t words;  /* sum of the used nodes' wosizes */
  size_t *order; /* nodes reached by the last sync */
  size_t norder;
  unsigned epoch;
  int nroots;
  ph_value **slot; /* heap root slots */
  mval *root;      /* their model values */
  int fresh;       /* addresses valid (no collection since the last sync) */
} graph;

static uint64_t raw_word(uint64_t id, size_t k) {
  uint64_t x = (id + 7) * 0x9e3779b97f4a7c15ull + k * 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 31);
}

static void g_init(graph *g, const char *name, size_t cap, int nroots) {
  memset(g, 0, sizeof *g);
  g->name = name;
  g->cap = cap;
  g->n = calloc(cap, sizeof *g->n);
  g->order = calloc(cap, sizeof *g->order);
  g->nroots = nroots;
  g->slot = calloc((size_t)nroots, sizeof *g->slot);
  g->root = calloc((size_t)nroots, sizeof *g->root);
  assert_true(g->n && g->order && g->slot && g->root);
}

static void g_free_node(graph *g, size_t i) {
  g->words -= g->n[i].wosize;
  free(g->n[i].f);
  memset(&g->n[i], 0, sizeof g->n[i]);
  g->nlive--;
}

static void g_fini(graph *g) {
  for (size_t i = 0; i < g->cap; i++)
    if (g->n[i].used)
      g_free_node(g, i);
  free(g->n);
  free(g->order);
  free(g->slot);
  free(g->root);
}

static int g_reach(graph *g, ph_value v, mval e, const char *what, size_t k) {
  if (!m_is_node(e)) {
    if (v != (ph_value)e) {
      FAIL("%s graph: %s %zu is %#lx, model %#lx", g->name, what, k,
           (unsigned long)v, (unsigned long)e);
      return -1;
    }
    return 0;
  }
  size_t i = m_node(e);
  node *n = &g->n[i];
  if (!ph_is_block(v) || !n->used) {
    FAIL("%s graph: %s %zu is %#lx, model node %zu (id %llu, used %d)", g->name,
         what, k, (unsigned long)v, i, (unsigned long long)n->id, n->used);
    return -1;
  }
  if (n->mark == g->epoch) {
    if (n->addr != v) {
      FAIL("%s graph: node id %llu reached at %#lx and %#lx", g->name,
           (unsigned long long)n->id, (unsigned long)n->addr, (unsigned long)v);
      return -1;
    }
    return 0;
  }
  n->mark = g->epoch;
  n->addr = v;
  g->order[g->norder++] = i;
  return 0;
}

/* Compare the whole graph with the model, refresh addresses, free the
 * model's unreachable nodes.  Returns -1 on a mismatch. */
static int g_sync(graph *g) {
  g->epoch++;
  g->norder = 0;
  for (int r = 0; r < g->nroots; r++)
    if (g_reach(g, *g->slot[r], g->root[r], "root", (size_t)r))
      return -1;
  for (size_t q = 0; q < g->norder; q++) {
    node *n = &g->n[g->order[q]];
    ph_value v = n->addr;
    if (ph_tag(v) != n->tag || ph_wosize(v) != n->wosize) {
      FAIL("%s graph: node id %llu at %#lx has tag %u wosize %zu, model %u "
           "%zu",
           g->name, (unsigned long long)n->id, (unsigned long)v, ph_tag(v),
           ph_wosize(v), n->tag, n->wosize);
      return -1;
    }
    if (n->tag >= PH_TAG_RAW) {
      const uint64_t *w = ph_raw(v);
      for (size_t k = 0; k < n->wosize; k++)
        if (w[k] != raw_word(n->id, k)) {
          FAIL("%s graph: raw node id %llu word %zu is %#llx", g->name,
               (unsigned long long)n->id, k, (unsigned long long)w[k]);
          return -1;
        }
      continue;
    }
    if (ph_field(v, 0) != ph_val_int((intptr_t)n->id)) {
      FAIL("%s graph: node at %#lx has id field %#lx, model id %llu", g->name,
           (unsigned long)v, (unsigned long)ph_field(v, 0),
           (unsigned long long)n->id);
      return -1;
    }
    for (size_t k = 1; k < n->wosize; k++)
      if (g_reach(g, ph_field(v, k), n->f[k], "field", k))
        return -1;
  }
  for (size_t i = 0; i < g->cap; i++)
    if (g->n[i].used && g->n[i].mark != g->epoch)
      g_free_node(g, i);
  g->fresh = 1;
  return 0;
}

/* A value to store: a node reached by the last sync, an immediate or 0. */
static void g_pick(graph *g, tu_rng *r, ph_value *v, mval *e) {
  unsigned b = tu_below(r, 10);
  if (b < 7 && g->norder) {
    size_t i = g->order[tu_below(r, (unsigned)g->norder)];
    *v = g->n[i].addr;
    *e = MNODE(i);
  } else if (b < 9) {
    *v = *e = ph_val_int((intptr_t)tu_below(r, 1000) - 500);
  } else {
    *v = *e = 0;
  }
}

static void g_set_field(graph *g, tu_rng *r) {
  if (!g->norder)
    return;
  node *n = &g->n[g->order[tu_below(r, (unsigned)g->norder)]];
  if (n->tag >= PH_TAG_RAW || n->wosize < 2)
    return;
  size_t f = 1 + tu_below(r, (unsigned)n->wosize - 1);
  ph_value v;
  mval e;
  g_pick(g, r, &v, &e);
  ph_set_field(n->addr, f, v);
  n->f[f] = e;
}

static void g_drop_root(graph *g, tu_rng *r) {
  int k = (int)tu_below(r, (unsigned)g->nroots);
  *g->slot[k] = PH_UNIT;
  g->root[k] = PH_UNIT;
}

static void g_set_root(graph *g, tu_rng *r) {
  int k = (int)tu_below(r, (unsigned)g->nroots);
  ph_value v;
  mval e;
  g_pick(g, r, &v, &e);
  *g->slot[k] = v;
  g->root[k] = e;
}

static size_t g_new_index(graph *g) {
  for (size_t i = 0; i < g->cap; i++)
    if (!g->n[i].used)
      return i;
  return (size_t)-1;
}

/* A medium size (issue 11): slot bytes of 2-256 KiB, log-uniform by octave
 * (256-511 fields, ..., 16384-32767), or one of the top medium class's 32767
 * fields and the two large sizes just above it. */
static size_t medium_wosize(tu_rng *r) {
  if (tu_below(r, 16) == 0)
    return 32767 + tu_below(r, 3);
  size_t lo = (size_t)256 << tu_below(r, 7);
  return lo + tu_below(r, (unsigned)lo);
}

/* The medium draws of the graphs: under TSan, where every field the walks
 * read costs most, half of them are of the older large band instead. */
static size_t graph_medium(tu_rng *r) {
  if (TU_TSAN && tu_below(r, 2))
    return 300 + tu_below(r, 3000);
  return medium_wosize(r);
}

static void choose_size(graph *g, tu_rng *r, size_t *wosize, unsigned *tag) {
  unsigned k = tu_below(r, 100);
  if (k < 58) {
    *wosize = 1 + tu_below(r, 12);
    *tag = tu_below(r, PH_TAG_RAW);
  } else if (k < 78) {
    *wosize = 1 + tu_below(r, 256); /* every small class */
    *tag = tu_below(r, PH_TAG_RAW);
  } else if (k < 81) {
    *wosize = 300 + tu_below(r, 3000); /* large (medium once served) */
    *tag = tu_below(r, PH_TAG_RAW);
  } else if (k < 83) {
    *wosize = graph_medium(r);
    *tag = tu_below(r, PH_TAG_RAW);
  } else if (k < 97) {
    *wosize = 1 + tu_below(r, 64);
    *tag = PH_TAG_RAW + tu_below(r, PH_TAG_MAX - PH_TAG_RAW + 1);
  } else if (k < 99) {
    *wosize = 300 + tu_below(r, 2000);
    *tag = PH_TAG_RAW + tu_below(r, PH_TAG_MAX - PH_TAG_RAW + 1);
  } else {
    *wosize = graph_medium(r);
    *tag = PH_TAG_RAW + tu_below(r, PH_TAG_MAX - PH_TAG_RAW + 1);
  }
  if (*wosize > 256 && g->words + *wosize > GRAPH_MAXWORDS)
    *wosize = 1 + *wosize % 64; /* the model's words are bounded */
}

/* Allocate a burst of nodes straight into root slots, then sync (the
 * allocations may have collected and moved everything), then link some of
 * them.  Returns -1 on failure. */
static int g_alloc_burst(graph *g, ph_domain *d, tu_rng *r) {
  unsigned burst = 1 + tu_below(r, 8);
  if (g->nlive + burst + 1 >= g->cap) {
    /* model full: drop roots until the sync frees some */
    for (int k = 0; k < g->nroots / 2; k++)
      g_drop_root(g, r);
    return g_sync(g);
  }
  for (unsigned b = 0; b < burst; b++) {
    size_t wosize;
    unsigned tag;
    choose_size(g, r, &wosize, &tag);
    ph_value v = ph_alloc(d, wosize, tag);
    g->fresh = 0;
    if (!v) {
      FAIL("ph_alloc(%zu, %u) failed: %d", wosize, tag, ph_last_error(d));
      return -1;
    }
    size_t i = g_new_index(g);
    node *n = &g->n[i];
    n->used = 1;
    n->id = atomic_fetch_add(&next_id, 1);
    n->wosize = wosize;
    n->tag = tag;
    g->nlive++;
    g->words += wosize;
    if (wosize >= 256)
      atomic_fetch_add_explicit(wosize > 32767 ? &n_beyond : &n_medium, 1,
                                memory_order_relaxed);
    if (tag >= PH_TAG_RAW) {
      uint64_t *w = ph_raw(v);
      for (size_t q = 0; q < wosize; q++)
        w[q] = raw_word(n->id, q);
    } else {
      n->f = malloc(wosize * sizeof *n->f);
      assert_non_null(n->f);
      for (size_t q = 0; q < wosize; q++)
        n->f[q] = PH_UNIT;
      ph_set_field(v, 0, ph_val_int((intptr_t)n->id));
    }
    int k = (int)tu_below(r, (unsigned)g->nroots);
    *g->slot[k] = v;
    g->root[k] = MNODE(i);
  }
  if (g_sync(g))
    return -1;
  unsigned links = tu_below(r, 2 * burst + 2);
  for (unsigned q = 0; q < links; q++)
    g_set_field(g, r);
  return 0;
}

/* Copy the model subgraph reached from model value e of src into dst (the
 * heap nodes are the same; only the models change hands).  Returns the
 * value in dst's terms, or 1 (PH_UNIT) if dst has no room. */
static mval g_import(graph *dst, graph *src, mval e, size_t *map) {
  if (!m_is_node(e))
    return e;
  size_t i = m_node(e);
  if (map[i] != (size_t)-1)
    return MNODE(map[i]);
  node *s = &src->n[i];
  size_t j = g_new_index(dst);
  node *t = &dst->n[j];
  *t = *s;
  t->f = NULL;
  t->mark = 0;
  dst->nlive++;
  dst->words += t->wosize;
  map[i] = j;
  if (s->f) {
    t->f = malloc(s->wosize * sizeof *t->f);
    assert_non_null(t->f);
    for (size_t k = 0; k < s->wosize; k++)
      t->f[k] = k ? g_import(dst, src, s->f[k], map) : PH_UNIT;
  }
  return MNODE(j);
}

static size_t g_count_from(graph *g, mval e, unsigned ep) {
  if (!m_is_node(e))
    return 0;
  node *n = &g->n[m_node(e)];
  if (n->mark == ep)
    return 0;
  n->mark = ep;
  size_t c = 1;
  for (size_t k = 1; n->f && k < n->wosize; k++)
    c += g_count_from(g, n->f[k], ep);
  return c;
}

/* ------------------------------------------------------------ domains */

/* ------------------------------------------------ the side model */
#define SIDE_N 6
#define MAX_IDS (1u << 22)

static atomic_uint_fast64_t n_fin_reg, n_fin_run, n_weak_checks, n_pins;
static _Atomic unsigned char fin_seen[MAX_IDS]; /* by id: finaliser ran */
static ph_value handed_pins[64]; /* pinned by a domain gone (shared_mu) */
static uint64_t handed_ids[64];
static int nhanded;

typedef struct side {
  ph_value *w;          /* root: a weak block of SIDE_N fields */
  ph_value *t[SIDE_N];  /* roots of the targets (PH_UNIT once dropped) */
  uint64_t tid[SIDE_N]; /* their ids (0: none) */
  int state[SIDE_N];    /* 0 none, 1 rooted, 2 dropped, 3 dropped before a
                           collection we asked for: must read 0 */
  ph_value *e;          /* root: an ephemeron (key, data) */
  ph_value *ek;         /* root of its key */
  uint64_t ekid, edid;  /* key and data ids */
  int estate;           /* as state[] for the key */
  ph_value pin;         /* a pinned, unrooted node (0 none) */
  uint64_t pin_id;
} side;

typedef struct worker {
  int lane, gen;
  tu_rng r;
  ph_domain *d;
  graph own;
  long done; /* operations run */
  side sd;
} worker;

static graph shared; /* guarded by shared_mu */
static long shared_ids_ok;

static void lock_shared(ph_domain *d) {
  /* Waiting for the mutex must not hold up a collection: wait while
   * blocking.  Once we hold it we are running again and take part in any
   * section like everyone else (the holder never waits for anything but the
   * collector). */
  ph_blocking_enter(d);
  pthread_mutex_lock(&shared_mu);
  ph_blocking_leave(d);
}

/* A node of the side model: 2 fields, or one time in 8 a medium size (so
 * weak fields, ephemerons, finalisers and pins meet medium blocks too). */
static ph_value side_node(ph_domain *d, tu_rng *r, uint64_t id) {
  ph_value v = ph_alloc(d, tu_below(r, 8) ? 2 : medium_wosize(r), 0);
  if (v)
    ph_set_field(v, 0, ph_val_int((intptr_t)id));
  return v;
}

static int id_is(ph_value v, uint64_t id) {
  return ph_is_block(v) && ph_field(v, 0) == ph_val_int((intptr_t)id);
}

static void side_final(ph_domain *d, ph_value v, void *user) {
  uint64_t id = (uint64_t)(uintptr_t)user;
  ph_stats st;
  if (ph_stats_get(heap, &st) != PH_OK) /* refused inside a section */
    FAIL("finaliser %llu ran inside a section", (unsigned long long)id);
  if (ph_domain_heap(d) != heap)
    FAIL("finaliser %llu: bad domain", (unsigned long long)id);
  if (id & 1) { /* LAST */
    if (v != 0)
      FAIL("LAST finaliser %llu got a value", (unsigned long long)id);
  } else if (!id_is(v, id)) {
    FAIL("FIRST finaliser %llu got another value", (unsigned long long)id);
  }
  if (atomic_fetch_add(&fin_seen[id % MAX_IDS], 1) != 0)
    FAIL("finaliser %llu ran twice", (unsigned long long)id);
  atomic_fetch_add(&n_fin_run, 1);
}

static int side_init(worker *w) {
  side *sd = &w->sd;
  memset(sd, 0, sizeof *sd);
  sd->w = ph_root(w->d, ph_alloc_weak(w->d, SIDE_N));
  sd->e = ph_root(w->d, ph_alloc_ephemeron(w->d, 1));
  sd->ek = ph_root(w->d, PH_UNIT);
  for (int k = 0; k < SIDE_N; k++)
    sd->t[k] = ph_root(w->d, PH_UNIT);
  if (!sd->w || !*sd->w || !sd->e || !*sd->e || !sd->ek) {
    FAIL("side init");
    return -1;
  }
  return 0;
}

/* after_own: a collection we asked for has run since the last call */
static int side_check(worker *w, int after_own) {
  side *sd = &w->sd;
  if (!sd->w) /* its roots are gone (the worker is leaving) */
    return 0;
  atomic_fetch_add_explicit(&n_weak_checks, 1, memory_order_relaxed);
  for (int k = 0; k < SIDE_N; k++) {
    ph_value x = ph_field(*sd->w, (size_t)k);
    if (after_own && sd->state[k] == 2)
      sd->state[k] = 3;
    switch (sd->state[k]) {
    case 1:
      if (x != *sd->t[k] || !id_is(x, sd->tid[k])) {
        FAIL("weak field %d of a live target changed", k);
        return -1;
      }
      break;
    case 2:
      if (x != 0 && !id_is(x, sd->tid[k])) {
        FAIL("weak field %d holds a freed block", k);
        return -1;
      }
      break;
    case 3:
      if (x != 0) {
        FAIL("weak field %d not cleared by the collection", k);
        return -1;
      }
      break;
    }
  }
  ph_value key = ph_field(*sd->e, 0), data = ph_field(*sd->e, 1);
  if (after_own && sd->estate == 2)
    sd->estate = 3;
  if (sd->estate == 1 &&
      (key != *sd->ek || !id_is(key, sd->ekid) || !id_is(data, sd->edid))) {
    FAIL("ephemeron with a live key changed");
    return -1;
  }
  if (sd->estate == 2 && !((key == 0 && data == 0) ||
                           (id_is(key, sd->ekid) && id_is(data, sd->edid)))) {
    FAIL("ephemeron half cleared or freed");
    return -1;
  }
  if (sd->estate == 3 && (key != 0 || data != 0)) {
    FAIL("ephemeron not cleared by the collection");
    return -1;
  }
  if (sd->pin && !id_is(sd->pin, sd->pin_id)) {
    FAIL("pinned block moved or freed");
    return -1;
  }
  return 0;
}

static int side_op(worker *w) {
  side *sd = &w->sd;
  unsigned o = tu_below(&w->r, 6);
  int k = (int)tu_below(&w->r, SIDE_N);
  if (o == 0) { /* a new rooted target */
    uint64_t id = atomic_fetch_add(&next_id, 1);
    ph_value v = side_node(w->d, &w->r, id);
    if (!v)
      return -1;
    *sd->t[k] = v;
    ph_set_field(*sd->w, (size_t)k, v);
    sd->tid[k] = id;
    sd->state[k] = 1;
  } else if (o == 1) { /* drop it */
    if (sd->state[k] == 1) {
      *sd->t[k] = PH_UNIT;
      sd->state[k] = 2;
    }
  } else if (o == 2) { /* a new ephemeron key and data, or drop the key */
    if (sd->estate == 1 && tu_below(&w->r, 2)) {
      *sd->ek = PH_UNIT;
      sd->estate = 2;
    } else {
      uint64_t kid = atomic_fetch_add(&next_id, 1);
      uint64_t did = atomic_fetch_add(&next_id, 1);
      ph_value key = side_node(w->d, &w->r, kid);
      if (!key)
        return -1;
      *sd->ek = key;
      ph_value data = side_node(w->d, &w->r, did);
      if (!data)
        return -1;
      ph_set_field(*sd->e, 0, *sd->ek);
      ph_set_field(*sd->e, 1, data);
      sd->ekid = kid;
      sd->edid = did;
      sd->estate = 1;
    }
  } else if (o == 3) { /* finalisers on garbage: FIRST ids even, LAST odd */
    for (int q = 0; q < 2; q++) {
      uint64_t id = atomic_fetch_add(&next_id, 1);
      ph_value v = side_node(w->d, &w->r, id);
      if (!v)
        return -1;
      int last = (int)(id & 1);
      if ((id % MAX_IDS) != id) /* beyond the seen table: skip */
        continue;
      if (ph_finalise(w->d, v, side_final, (void *)(uintptr_t)id,
                      last ? PH_FINAL_LAST : PH_FINAL_FIRST) != PH_OK) {
        FAIL("ph_finalise");
        return -1;
      }
      atomic_fetch_add(&n_fin_reg, 1);
    }
  } else if (o == 4) { /* pin an unrooted node, or unpin ours */
    if (sd->pin) {
      if (ph_unpin(w->d, sd->pin) != PH_OK) {
        FAIL("ph_unpin");
        return -1;
      }
      sd->pin = 0;
    } else {
      uint64_t id = atomic_fetch_add(&next_id, 1);
      ph_value v = side_node(w->d, &w->r, id);
      if (!v || ph_pin(w->d, v) != PH_OK) {
        FAIL("ph_pin");
        return -1;
      }
      sd->pin = v;
      sd->pin_id = id;
      atomic_fetch_add(&n_pins, 1);
    }
  } else { /* unpin one a domain gone pinned */
    lock_shared(w->d);
    if (nhanded > 0) {
      nhanded--;
      if (!id_is(handed_pins[nhanded], handed_ids[nhanded]))
        FAIL("a pin handed on moved or died");
      if (ph_unpin(w->d, handed_pins[nhanded]) != PH_OK)
        FAIL("ph_unpin of a handed pin");
    }
    pthread_mutex_unlock(&shared_mu);
  }
  return side_check(w, 0);
}

/* Before detach: the pin goes to a later domain. */
static void side_leave(worker *w) {
  side *sd = &w->sd;
  if (!sd->pin)
    return;
  lock_shared(w->d);
  if (nhanded < 64) {
    handed_pins[nhanded] = sd->pin;
    handed_ids[nhanded++] = sd->pin_id;
  } else if (ph_unpin(w->d, sd->pin) != PH_OK) {
    FAIL("ph_unpin");
  }
  pthread_mutex_unlock(&shared_mu);
  sd->pin = 0;
}

static int check_compaction(worker *w) {
  if (g_sync(&w->own))
    return -1;
  char why[512];
  int err = ph_verify(w->d, why, sizeof why);
  atomic_fetch_add(&n_verify, 1);
  if (err != PH_OK) {
    FAIL("ph_verify after compaction: %d %s", err, why);
    return -1;
  }
  w->own.fresh = 0;
  return g_sync(&w->own);
}

static int do_compact(worker *w) {
  int err = ph_compact(w->d);
  w->own.fresh = 0;
  if (err != PH_OK) {
    FAIL("ph_compact: %d", err);
    return -1;
  }
  atomic_fetch_add(&n_compact, 1);
  if (side_check(w, 1))
    return -1;
  return check_compaction(w);
}

/* Work on the shared graph while holding its mutex. */
static int shared_section(worker *w, int handoff) {
  int rc = 0;
  lock_shared(w->d);
  atomic_fetch_add(&n_shared, 1);
  w->own.fresh = 0;
  if (g_sync(&shared)) {
    rc = -1;
    goto out;
  }
  if (handoff) {
    /* give one of our roots' subgraphs to the shared graph */
    if (g_sync(&w->own)) {
      rc = -1;
      goto out;
    }
    int k = (int)tu_below(&w->r, OWN_ROOTS);
    size_t need = g_count_from(&w->own, w->own.root[k], ++w->own.epoch);
    /* (the shared graph's words stay below twice GRAPH_MAXWORDS: it takes
     * a subgraph, of at most that many words, only while below it) */
    if (need && shared.nlive + need + 8 < shared.cap &&
        shared.words < GRAPH_MAXWORDS) {
      size_t *map = malloc(w->own.cap * sizeof *map);
      assert_non_null(map);
      memset(map, 0xff, w->own.cap * sizeof *map);
      int s = (int)tu_below(&w->r, SHARED_ROOTS);
      shared.root[s] = g_import(&shared, &w->own, w->own.root[k], map);
      *shared.slot[s] = *w->own.slot[k];
      free(map);
      atomic_fetch_add(&n_handoff, 1);
    }
    /* our graph is about to go: forget its roots (the shared graph now owns
     * part of its nodes and may change them) */
    for (int q = 0; q < OWN_ROOTS; q++)
      *w->own.slot[q] = PH_UNIT;
    w->own.nroots = 0;
    if (g_sync(&w->own) || g_sync(&shared)) {
      rc = -1;
      goto out;
    }
  }
  unsigned nops = 1 + tu_below(&w->r, 6);
  for (unsigned q = 0; q < nops && rc == 0; q++) {
    unsigned o = tu_below(&w->r, 100);
    if (o < 35) {
      rc = g_alloc_burst(&shared, w->d, &w->r);
      w->own.fresh = 0;
    } else if (o < 80) {
      g_set_field(&shared, &w->r);
    } else if (o < 88) {
      g_drop_root(&shared, &w->r);
    } else if (o < 97) {
      g_set_root(&shared, &w->r);
    } else if (o < 99) {
      ph_safepoint(w->d);
      w->own.fresh = 0;
      rc = g_sync(&shared);
    } else {
      /* compact while holding the mutex: the waiters are blocking */
      rc = do_compact(w);
      if (rc == 0)
        rc = g_sync(&shared);
    }
  }
  if (rc == 0 && ++shared_ids_ok % 64 == 0)
    rc = g_sync(&shared);
out:
  pthread_mutex_unlock(&shared_mu);
  return rc;
}

static int sit_blocking(worker *w) {
  ph_blocking_enter(w->d);
  struct timespec ts = {0, (long)(200000 + tu_below(&w->r, 3000000))};
  nanosleep(&ts, NULL);
  ph_blocking_leave(w->d);
  atomic_fetch_add(&n_blocking, 1);
  w->own.fresh = 0;
  return g_sync(&w->own);
}

static int stopping(void) {
  if (atomic_load(&failed) || atomic_load(&stop))
    return 1;
  if (ops_per_lane > 0)
    return 0;
  return now_ns() >= deadline_ns;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  if (ph_domain_attach(heap, &w->d) != PH_OK) {
    FAIL("lane %d: attach failed", w->lane);
    return NULL;
  }
  atomic_fetch_add(&n_attach, 1);
  g_init(&w->own, "own", OWN_MAXN, OWN_ROOTS);
  size_t mark = ph_scope_open(w->d);
  for (int k = 0; k < OWN_ROOTS; k++) {
    w->own.slot[k] = ph_root(w->d, PH_UNIT);
    w->own.root[k] = PH_UNIT;
    if (!w->own.slot[k])
      FAIL("ph_root returned NULL");
  }
  long life = 300 + tu_below(&w->r, 3000);
  int rc = side_init(w);
  if (rc == 0)
    rc = g_sync(&w->own);
  for (long op = 0; rc == 0 && op < life && !stopping(); op++) {
    w->done++;
    atomic_fetch_add_explicit(&n_ops, 1, memory_order_relaxed);
    if (!w->own.fresh)
      rc = g_sync(&w->own);
    if (rc)
      break;
    unsigned o = tu_below(&w->r, 1000);
    if (o < 380) {
      rc = g_alloc_burst(&w->own, w->d, &w->r);
    } else if (o < 650) {
      for (unsigned q = 0, n = 1 + tu_below(&w->r, 6); q < n; q++)
        g_set_field(&w->own, &w->r);
    } else if (o < 700) {
      g_drop_root(&w->own, &w->r);
    } else if (o < 730) {
      g_set_root(&w->own, &w->r);
    } else if (o < 830) {
      rc = shared_section(w, 0);
    } else if (o < 836) {
      rc = ph_collect(w->d);
      atomic_fetch_add(&n_collect, 1);
      if (rc != PH_OK)
        FAIL("ph_collect: %d", rc);
      w->own.fresh = 0;
      if (rc == 0)
        rc = side_check(w, 1);
    } else if (o < 841) {
      rc = do_compact(w);
    } else if (o < 846) {
      rc = sit_blocking(w);
    } else if (o < 900) {
      ph_safepoint(w->d);
      w->own.fresh = 0;
    } else if (o < 940) {
      rc = side_op(w);
      w->own.fresh = 0;
    } else {
      g_set_field(&w->own, &w->r);
    }
  }
  if (rc == 0 && !atomic_load(&failed))
    rc = side_check(w, 0);
  side_leave(w);
  if (rc == 0 && !atomic_load(&failed))
    rc = shared_section(w, 1);
  w->sd.w = NULL; /* the side model's roots go with the scope */
  if (ph_scope_close(w->d, mark) != PH_OK)
    FAIL("scope close");
  w->own.nroots = 0; /* the slots are gone */
  /* one more check of the shared graph with our roots gone (our handed-off
   * nodes must survive) */
  if (rc == 0 && tu_below(&w->r, 4) == 0)
    rc = shared_section(w, 0);
  if (ph_domain_detach(w->d) != PH_OK)
    FAIL("detach");
  g_fini(&w->own);
  return NULL;
}

typedef struct lane {
  int id;
  pthread_t t;
} lane;

static void *lane_main(void *arg) {
  lane *l = arg;
  long ops_done = 0;
  for (int gen = 0;; gen++) {
    if (atomic_load(&failed) || atomic_load(&stop))
      break;
    if (ops_per_lane > 0 ? ops_done >= ops_per_lane : now_ns() >= deadline_ns)
      break;
    worker *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->lane = l->id;
    w->gen = gen;
    /* a stream per (lane, generation) of the process seed */
    tu_rng_init(&w->r, (uint64_t)l->id * 7919u + (uint64_t)gen + 1);
    pthread_t t;
    if (pthread_create(&t, NULL, worker_main, w) != 0) {
      FAIL("pthread_create");
      free(w);
      break;
    }
    pthread_join(t, NULL);
    ops_done += w->done + 1;
    free(w);
  }
  return NULL;
}

static void pin_two_cores(void) {
  cpu_set_t set, two;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return;
  CPU_ZERO(&two);
  int n = 0;
  for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
    if (CPU_ISSET(c, &set)) {
      CPU_SET(c, &two);
      n++;
    }
  if (n == 2)
    sched_setaffinity(0, sizeof two, &two);
}

static void test_stress(void **state) {
  (void)state;
  seed = tu_seed(); /* POOLHEAP_SEED, or the clock */
  const char *sec = getenv("POOLHEAP_STRESS_SECONDS");
  double seconds = sec ? atof(sec) : 8.0;
  const char *ops = getenv("POOLHEAP_STRESS_OPS");
  ops_per_lane = ops ? atol(ops) : 0;
  tu_rng r;
  tu_rng_init(&r, 0);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.max_domains = 16;
  cfg.pool_size = (size_t)4096 << (2 * tu_below(&r, 3)); /* 4K, 16K, 64K */
  cfg.gc_percent = 30 + tu_below(&r, 150);
  cfg.compact_percent = tu_below(&r, 2) ? 0 : 20 + tu_below(&r, 60);
  cfg.release = (ph_release_mode)tu_below(&r, 4);
  cfg.compact_scope = (ph_compact_scope)tu_below(&r, 2);
  cfg.gc_helpers = (unsigned)tu_below(&r, 3);
  printf("test_stress: seed %llu (POOLHEAP_SEED), %d lanes on 2 cores, %s; "
         "pool %zu gc_percent %u compact_percent %u release %d scope %d "
         "gc_helpers %u\n",
         (unsigned long long)seed, NLANES,
         ops_per_lane ? "ops per lane" : "timed", cfg.pool_size, cfg.gc_percent,
         cfg.compact_percent, (int)cfg.release, (int)cfg.compact_scope,
         cfg.gc_helpers);
  fflush(stdout);
  pin_two_cores();
  assert_int_equal(ph_heap_create(&cfg, &heap), PH_OK);
  g_init(&shared, "shared", SHARED_MAXN, SHARED_ROOTS);
  for (int k = 0; k < SHARED_ROOTS; k++) {
    shared_slots[k] = PH_UNIT;
    shared.slot[k] = &shared_slots[k];
    shared.root[k] = PH_UNIT;
    assert_int_equal(ph_root_add(heap, &shared_slots[k]), PH_OK);
  }
  uint64_t t0 = now_ns();
  deadline_ns = t0 + (uint64_t)(seconds * 1e9);
  lane lanes[NLANES];
  for (int i = 0; i < NLANES; i++) {
    lanes[i].id = i;
    assert_int_equal(pthread_create(&lanes[i].t, NULL, lane_main, &lanes[i]),
                     0);
  }
  for (int i = 0; i < NLANES; i++)
    pthread_join(lanes[i].t, NULL);

  /* the end: the shared graph, checked from a fresh domain */
  ph_domain *d;
  assert_int_equal(ph_domain_attach(heap, &d), PH_OK);
  if (!atomic_load(&failed)) {
    assert_int_equal(ph_compact(d), PH_OK);
    atomic_fetch_add(&n_compact, 1);
    char why[512];
    int err = ph_verify(d, why, sizeof why);
    if (err != PH_OK)
      FAIL("final verify: %s", why);
    pthread_mutex_lock(&shared_mu);
    if (g_sync(&shared) == 0)
      printf("test_stress: shared graph %zu nodes intact\n", shared.norder);
    /* the pins handed on: still in place; unpinned from this domain */
    for (int k = 0; k < nhanded; k++) {
      if (!id_is(handed_pins[k], handed_ids[k]))
        FAIL("a pin handed on moved or died");
      if (ph_unpin(d, handed_pins[k]) != PH_OK)
        FAIL("final unpin");
    }
    nhanded = 0;
    pthread_mutex_unlock(&shared_mu);
    /* every finaliser registered has run: their values are all garbage
     * (FIRST ones run at the first collection, LAST ones at the next) */
    for (int k = 0; k < 3; k++)
      assert_int_equal(ph_collect(d), PH_OK);
    assert_int_equal(ph_run_finalisers(d), PH_OK);
    if (atomic_load(&n_fin_run) != atomic_load(&n_fin_reg))
      FAIL("%llu finalisers registered, %llu ran",
           (unsigned long long)n_fin_reg, (unsigned long long)n_fin_run);
    ph_stats fs;
    assert_int_equal(ph_stats_get(heap, &fs), PH_OK);
    if (fs.finalisers_run != n_fin_run || fs.pinned_blocks != 0)
      FAIL("stats: %llu finalisers run, %llu pinned",
           (unsigned long long)fs.finalisers_run,
           (unsigned long long)fs.pinned_blocks);
    printf("test_stress: %llu finalisers run, %llu pins, %llu weak checks, "
           "%llu weak fields and %llu ephemerons cleared\n",
           (unsigned long long)n_fin_run, (unsigned long long)n_pins,
           (unsigned long long)n_weak_checks,
           (unsigned long long)fs.weak_cleared,
           (unsigned long long)fs.ephemerons_cleared);
  }
  ph_stats st;
  assert_int_equal(ph_stats_get(heap, &st), PH_OK);
  printf("test_stress: %.1f s, %llu ops, %llu domains attached, %llu "
         "ph_compact calls (%llu compactions ran in the heap, %llu "
         "collections), %llu ph_collect calls, %llu verifies, %llu shared "
         "sections, %llu blocking sits, %llu hand-offs, %llu blocks of "
         "2-256 KiB and %llu beyond\n",
         (double)(now_ns() - t0) / 1e9, (unsigned long long)n_ops,
         (unsigned long long)n_attach, (unsigned long long)n_compact,
         (unsigned long long)st.compactions, (unsigned long long)st.collections,
         (unsigned long long)n_collect, (unsigned long long)n_verify,
         (unsigned long long)n_shared, (unsigned long long)n_blocking,
         (unsigned long long)n_handoff, (unsigned long long)n_medium,
         (unsigned long long)n_beyond);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  for (int k = 0; k < SHARED_ROOTS; k++)
    assert_int_equal(ph_root_remove(heap, &shared_slots[k]), PH_OK);
  g_fini(&shared);
  assert_int_equal(ph_heap_destroy(heap), PH_OK);
  assert_int_equal(atomic_load(&failed), 0);
  assert_true(st.compactions > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
