/* tests/test_pin.c -- pinning (DESIGN.md: gc.pin).
 *
 * A pinned block keeps its address through compactions that evacuate the
 * rest of its size class (its pool is kept, in every scope), is kept alive,
 * is counted, needs as many unpins as pins, survives its domain's detach
 * and can be unpinned from another domain; bad input changes nothing.
 * Releasing memory, a pinned pool keeps only the pages of its header and
 * pinned blocks, filled with moved blocks, and gives the others back
 * (compact.pin.holes); once unpinned, such a pool goes away whole. */
#include "test_util.h"

#include "heap/heap.h"

#include <sys/mman.h>
#include <unistd.h>

static ph_value node(ph_domain *d, intptr_t id) {
  ph_value v = ph_alloc(d, 3, 0);
  assert_true(v != 0);
  ph_set_field(v, 0, ph_val_int(id));
  return v;
}

static ph_stats stats(ph_heap *h) {
  ph_stats s;
  assert_int_equal(ph_stats_get(h, &s), PH_OK);
  return s;
}

/* Dense pools (1 block in 4 survives), then sparse ones (1 in 64): the
 * plan keeps the dense ones and evacuates the sparse ones, where 3 blocks
 * are pinned.  The other survivors there move; the pinned ones do not. */
static void pinned_do_not_move(ph_compact_scope scope) {
  tu_env e;
  tu_env_open(&e, scope, 1);
  const size_t n = tu_scale(64000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = node(e.d, (intptr_t)i);
    if (i < n / 2 ? i % 4 == 0 : i % 64 == 0)
      ph_set_field(*arr, i, x);
  }
  size_t pin_at[3];
  ph_value pinned[3];
  for (size_t k = 0; k < 3; k++) {
    pin_at[k] = n / 2 + (k * 2 + 1) * (n / 16) / 64 * 64;
    pinned[k] = ph_field(*arr, pin_at[k]);
    assert_true(ph_is_block(pinned[k]));
    assert_int_equal(ph_pin(e.d, pinned[k]), PH_OK);
  }
  assert_int_equal(stats(e.h).pinned_blocks, 3);
  ph_value *before = ph_root(e.d, ph_alloc(e.d, n, PH_TAG_RAW)); /* addrs */
  for (size_t i = n / 2; i < n; i += 64)
    ((ph_value *)*before)[i] = ph_field(*arr, i);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_true(stats(e.h).evacuated_blocks > 0);
  size_t moved = 0;
  for (size_t i = n / 2; i < n; i += 64)
    moved += ph_field(*arr, i) != ((ph_value *)*before)[i];
  assert_true(moved > 0); /* the sparse pools were evacuated */
  for (size_t k = 0; k < 3; k++)
    assert_true(ph_field(*arr, pin_at[k]) == pinned[k]);
  for (size_t i = 0; i < n; i++)
    if (i < n / 2 ? i % 4 == 0 : i % 64 == 0)
      assert_int_equal(ph_int_val(ph_field(ph_field(*arr, i), 0)), (intptr_t)i);
  tu_verify_ok(e.d);
  for (size_t k = 0; k < 3; k++)
    assert_int_equal(ph_unpin(e.d, pinned[k]), PH_OK);
  assert_int_equal(stats(e.h).pinned_blocks, 0);
  assert_int_equal(ph_compact(e.d), PH_OK);
  tu_verify_ok(e.d);
  ph_scope_close(e.d, m);
  tu_env_close(&e);
}

static void test_pinned_do_not_move_global(void **state) {
  (void)state;
  pinned_do_not_move(PH_COMPACT_GLOBAL);
}

static void test_pinned_do_not_move_per_domain(void **state) {
  (void)state;
  pinned_do_not_move(PH_COMPACT_PER_DOMAIN);
}

static void test_pin_keeps_alive_and_counts(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  ph_value x = node(e.d, 9);
  ph_set_field(x, 1, node(e.d, 10));
  assert_int_equal(ph_pin(e.d, x), PH_OK);
  assert_int_equal(ph_pin(e.d, x), PH_OK);
  assert_int_equal(stats(e.h).pinned_blocks, 1);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 2); /* x and its child */
  assert_int_equal(ph_int_val(ph_field(x, 0)), 9);
  assert_int_equal(ph_int_val(ph_field(ph_field(x, 1), 0)), 10);
  tu_verify_ok(e.d);
  assert_int_equal(ph_unpin(e.d, x), PH_OK);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 2); /* one pin left */
  assert_int_equal(ph_unpin(e.d, x), PH_OK);
  assert_int_equal(ph_unpin(e.d, x), PH_EINVAL); /* unpin without pin */
  assert_int_equal(stats(e.h).pinned_blocks, 0);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 0);
  /* large blocks too (they never move) */
  ph_value big = ph_alloc(e.d, 100000, 0);
  assert_int_equal(ph_pin(e.d, big), PH_OK);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 1);
  assert_int_equal(ph_unpin(e.d, big), PH_OK);
  /* many pins: the table grows (and reuses removed slots) */
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, 5000, 0));
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < 5000; i++) {
      ph_set_field(*arr, i, node(e.d, (intptr_t)i));
      assert_int_equal(ph_pin(e.d, ph_field(*arr, i)), PH_OK);
    }
    assert_int_equal(stats(e.h).pinned_blocks, 5000);
    for (size_t i = 0; i < 5000; i++)
      assert_int_equal(ph_unpin(e.d, ph_field(*arr, i)), PH_OK);
    assert_int_equal(stats(e.h).pinned_blocks, 0);
  }
  ph_scope_close(e.d, m);
  tu_env_close(&e);
}

static void test_pin_bad_input(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  tu_env o; /* another heap */
  tu_env_open(&o, PH_COMPACT_GLOBAL, 0);
  size_t m = ph_scope_open(e.d);
  ph_value *x = ph_root(e.d, node(e.d, 1));
  ph_value freed = node(e.d, 2);
  ph_value other = node(o.d, 3);
  assert_int_equal(ph_collect(e.d), PH_OK); /* freed is freed */
  assert_int_equal(ph_pin(e.d, *x), PH_OK);
  ph_stats s0 = stats(e.h);
  ph_value bad[] = {0,      ph_val_int(5), *x + 8, *x - 8,
                    *x + 2, freed,         other,  (ph_value)&s0};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(ph_pin(e.d, bad[i]), PH_EINVAL);
    assert_int_equal(ph_last_error(e.d), PH_EINVAL);
    assert_int_equal(ph_unpin(e.d, bad[i]), PH_EINVAL);
  }
  ph_value *y = ph_root(e.d, node(e.d, 4));
  assert_int_equal(ph_unpin(e.d, *y), PH_EINVAL); /* never pinned */
  assert_int_equal(ph_pin(NULL, *x), PH_EINVAL);
  ph_blocking_enter(e.d);
  assert_int_equal(ph_pin(e.d, *y), PH_ESTATE);
  assert_int_equal(ph_unpin(e.d, *x), PH_ESTATE);
  ph_blocking_leave(e.d);
  ph_stats s1 = stats(e.h);
  assert_int_equal(s1.pinned_blocks, s0.pinned_blocks);
  assert_int_equal(ph_unpin(e.d, *x), PH_OK);
  assert_int_equal(ph_unpin(e.d, *x), PH_EINVAL);
  tu_verify_ok(e.d);
  ph_scope_close(e.d, m);
  tu_env_close(&o);
  tu_env_close(&e);
}

/* a pin made by a domain that detaches stays; another domain unpins */
typedef struct detach_ctx {
  ph_heap *h;
  ph_value v;
} detach_ctx;

static void *pin_and_leave(void *arg) {
  detach_ctx *c = arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(c->h, &d), PH_OK);
  c->v = node(d, 77);
  for (int i = 0; i < 3000; i++) /* garbage beside it */
    (void)node(d, -1);
  assert_int_equal(ph_pin(d, c->v), PH_OK);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void test_pin_survives_detach(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  detach_ctx c = {.h = e.h};
  pthread_t t;
  ph_blocking_enter(e.d);
  pthread_create(&t, NULL, pin_and_leave, &c);
  pthread_join(t, NULL);
  ph_blocking_leave(e.d);
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 1);
  assert_int_equal(ph_int_val(ph_field(c.v, 0)), 77);
  tu_verify_ok(e.d);
  assert_int_equal(ph_unpin(e.d, c.v), PH_OK);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(e.h).live_blocks, 0);
  tu_env_close(&e);
}

/* ph_pin, ph_unpin and ph_finalise on bogus in-heap pointers -- every
 * word-aligned address just past the block another domain allocated last
 * (slots it is about to allocate into) and at the start of the next unit
 * (a pool it may be opening) -- while it allocates: each call is refused
 * with PH_EINVAL or, for a slot allocated meanwhile, accepted; nothing else.
 * The check reads slot headers being written: the TSan variant fails on a
 * plain read (gc.pin). */
typedef struct race {
  ph_heap *h;
  _Atomic ph_value last; /* the allocator's last block */
  _Atomic int stop;
  size_t n; /* blocks to allocate at most */
} race;

static void *race_alloc(void *arg) {
  race *r = arg;
  ph_domain *d;
  assert_int_equal(ph_domain_attach(r->h, &d), PH_OK);
  for (size_t i = 0;
       i < r->n && !atomic_load_explicit(&r->stop, memory_order_relaxed); i++) {
    ph_value v = ph_alloc(d, 1 + i % 5, 0); /* a few classes */
    assert_true(v != 0);
    atomic_store_explicit(&r->last, v, memory_order_relaxed);
  }
  atomic_store_explicit(&r->stop, 1, memory_order_relaxed);
  assert_int_equal(ph_domain_detach(d), PH_OK);
  return NULL;
}

static void fin_noop(ph_domain *d, ph_value v, void *user) {
  (void)d;
  (void)v;
  (void)user;
}

static int try_bogus(ph_domain *d, ph_value c) {
  int err = ph_pin(d, c);
  if (err == PH_OK) /* a slot allocated meanwhile: a block now */
    assert_int_equal(ph_unpin(d, c), PH_OK);
  else
    assert_int_equal(err, PH_EINVAL);
  int e2 = ph_finalise(d, c, fin_noop, NULL, PH_FINAL_FIRST);
  if (e2 != PH_OK)
    assert_int_equal(e2, PH_EINVAL);
  return err == PH_OK;
}

static void test_bogus_while_allocating(void **state) {
  (void)state;
  tu_env e;
  tu_env_open(&e, PH_COMPACT_GLOBAL, 0);
  race r = {.h = e.h, .n = tu_scale(4000000, 8)};
  pthread_t t;
  ph_blocking_enter(e.d);
  assert_int_equal(pthread_create(&t, NULL, race_alloc, &r), 0);
  ph_blocking_leave(e.d);
  const size_t ps = 32 * 1024; /* the default pool size */
  size_t tries = 0, accepted = 0;
  while (!atomic_load_explicit(&r.stop, memory_order_relaxed)) {
    ph_value v = atomic_load_explicit(&r.last, memory_order_relaxed);
    if (!v)
      continue;
    for (size_t k = 1; k <= 16; k++, tries++)
      accepted += try_bogus(e.d, v + 8 * k);
    ph_value next = (v & ~(ph_value)(ps - 1)) + ps;
    for (size_t k = 0; k < 64; k++, tries++)
      accepted += try_bogus(e.d, next + 8 * k);
  }
  tu_djoin(e.d, t);
  printf("bogus calls: %zu, accepted (allocated meanwhile): %zu\n", tries,
         accepted);
  assert_true(tries > 0);
  assert_int_equal(stats(e.h).pinned_blocks, 0);
  assert_int_equal(ph_collect(e.d), PH_OK); /* runs the no-op finalisers */
  tu_verify_ok(e.d);
  tu_env_close(&e);
}

/* ------------------------------------------- compact.pin.holes */

/* Resident bytes of the pool units at pools[0..n) (mincore). */
static size_t resident_units(const ph_value *pools, size_t n,
                             size_t pool_size) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), res = 0;
  unsigned char *vec = malloc(pool_size / pg);
  assert_non_null(vec);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(mincore((void *)pools[i], pool_size, vec), 0);
    for (size_t k = 0; k < pool_size / pg; k++)
      res += (vec[k] & 1) ? pg : 0;
  }
  free(vec);
  return res;
}

/* The block of survivor j: fields j, a mix of j, and j's pool number. */
static ph_value holes_node(ph_domain *d, intptr_t j) {
  ph_value v = ph_alloc(d, 3, 0);
  assert_true(v != 0);
  ph_set_field(v, 0, ph_val_int(j));
  ph_set_field(v, 1, ph_val_int(j * 7919 % 1000003));
  ph_set_field(v, 2, ph_val_int(-j));
  return v;
}

static void holes_check(ph_value *arr, size_t ns) {
  for (size_t j = 0; j < ns; j++) {
    ph_value v = ph_field(*arr, j);
    assert_int_equal(ph_int_val(ph_field(v, 0)), (intptr_t)j);
    assert_int_equal(ph_int_val(ph_field(v, 1)), (intptr_t)j * 7919 % 1000003);
    assert_int_equal(ph_int_val(ph_field(v, 2)), -(intptr_t)j);
  }
}

/* A sparse heap for compact.pin.holes: n blocks of 3 fields (holes_node),
 * 1 in 5 survives into arr (a new root array of ns = n / 5); with pin, the
 * at(k)-th survivor of the k-th pool (k from 1) is pinned.  Then pools and
 * pins (and pin_j, the survivor's index) hold the np pools with a pinned
 * block, of npools; per survivor, old is its address and in_pinned whether
 * its pool holds a pinned block. */
typedef struct sparse_pins {
  ph_value *arr;
  size_t ns, np, npools;
  ph_value *pins, *pools, *old;
  size_t *pin_j, *in_pinned;
} sparse_pins;

static size_t at_rotating(size_t k) {
  return (k * 37) % 140 + 30;
}
static size_t at_100(size_t k) {
  (void)k;
  return 100;
}

static void sparse_pins_build(ph_domain *d, size_t n, ph_value mask, int pin,
                              size_t (*at)(size_t k), sparse_pins *s) {
  size_t ns = n / 5;
  s->ns = ns;
  s->arr = ph_root(d, ph_alloc(d, ns, 0));
  s->pins = calloc(ns, sizeof *s->pins);
  s->pools = calloc(ns, sizeof *s->pools);
  s->pin_j = calloc(ns, sizeof *s->pin_j);
  s->in_pinned = calloc(ns, sizeof *s->in_pinned);
  s->old = calloc(ns, sizeof *s->old);
  assert_true(s->pins && s->pools && s->pin_j && s->in_pinned && s->old);
  size_t npin = 0, in_pool = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value x = holes_node(d, (intptr_t)(i / 5));
    if (i % 5)
      continue;
    ph_set_field(*s->arr, i / 5, x);
    s->old[i / 5] = x;
    if (npin == 0 || (x & mask) != s->pools[npin - 1]) {
      s->pools[npin++] = x & mask; /* a new pool */
      s->pins[npin - 1] = 0;
      in_pool = 0;
    }
    s->in_pinned[i / 5] = npin - 1;
    if (pin && in_pool++ == at(npin)) {
      s->pins[npin - 1] = x;
      s->pin_j[npin - 1] = i / 5;
      assert_int_equal(ph_pin(d, x), PH_OK);
    }
  }
  for (size_t j = 0; j < ns; j++) /* 1: in a pool with a pinned block */
    s->in_pinned[j] = s->pins[s->in_pinned[j]] != 0;
  size_t np = 0; /* the pools with a pinned block */
  for (size_t k = 0; k < npin; k++)
    if (s->pins[k]) {
      s->pins[np] = s->pins[k];
      s->pin_j[np] = s->pin_j[k];
      s->pools[np++] = s->pools[k];
    }
  s->np = np;
  s->npools = npin;
}

static void sparse_pins_free(sparse_pins *s) {
  free(s->pins);
  free(s->pools);
  free(s->pin_j);
  free(s->in_pinned);
  free(s->old);
}

/* ph_census's rows of a heap with one class of pools. */
/* The census rows of the small classes with pools (the survivors'); the
 * root array of sparse_pins_build is a medium block when the test is scaled
 * down (TSan) and a large one otherwise: all_committed counts every row. */
/* Unpinned, with room: 3 in 4 of more's nmore blocks dropped, every
 * pinned block of s unpinned, a compaction (ph_verify, holes_check);
 * returns how many of the pinned blocks left their pool. */
static size_t unpin_compact(ph_domain *d, const sparse_pins *s, ph_value more,
                            size_t nmore, ph_value mask) {
  for (size_t i = 0; i < nmore; i++)
    if (i % 4)
      ph_set_field(more, i, ph_val_int(0));
  for (size_t k = 0; k < s->np; k++)
    assert_int_equal(ph_unpin(d, s->pins[k]), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(s->arr, s->ns);
  size_t gone = 0;
  for (size_t k = 0; k < s->np; k++)
    gone += (ph_field(*s->arr, s->pin_j[k]) & mask) != s->pools[k];
  return gone;
}

typedef struct census_sum {
  size_t rows, pools, holed, live, free, hole, committed, slot_bytes;
  size_t row, nsmall, all_committed;
} census_sum;
static void census_add(const ph_census_class *c, void *user) {
  census_sum *t = user;
  t->all_committed += c->committed_bytes;
  size_t row = t->row++;
  if (c->pools == 0 || row >= t->nsmall)
    return;
  t->rows++;
  t->pools += c->pools;
  t->holed += c->holed_pools;
  t->live += c->live_blocks;
  t->free += c->free_blocks;
  t->hole += c->hole_blocks;
  t->committed += c->committed_bytes;
  t->slot_bytes = c->block_words * 8;
}

/* After the first compaction of sparse_heap: each pinned pool (one pinned
 * block of 3 fields each) kept whole or exactly the pages of its pinned
 * block's slot (compact.pin.floor; the header's page too only when that
 * slot touches it, heap.pool.ool; where the mode returns them at once),
 * and
 * ph_census counts the pools with holes, their slots in holes and their
 * committed bytes (which add up to ph_stats' pool_bytes). */
static size_t census_floor(ph_heap *h, ph_domain *d, const ph_value *pools,
                           const ph_value *pins, size_t np, int now) {
  ph_config cfg;
  ph_config_init(&cfg);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), kept = 0, holed = 0;
  if (cfg.pool_size / 64 > pg)
    return 0; /* granules of more than a page */
  for (size_t k = 0; k < np; k++) {
    size_t a = (pins[k] - sizeof(ph_value) - pools[k]) / pg,
           b = (pins[k] + 3 * sizeof(ph_value) - 1 - pools[k]) / pg;
    /* heap.pool.ool: the header's page goes too unless the pinned slot
     * touches it */
    size_t want = (1 + (b != a)) * pg;
    size_t res = resident_units(&pools[k], 1, cfg.pool_size);
    /* a pool kept whole for room keeps its header's page and the pages of
     * its pinned slot and evacuees; compact.holes.free gives back the
     * others */
    if (now)
      assert_true(res >= want && res <= cfg.pool_size);
    if (res < cfg.pool_size) {
      kept += res;
      holed++;
    }
  }
  ph_stats st = stats(h);
  census_sum t = {.nsmall = st.size_classes};
  assert_int_equal(ph_census(d, census_add, &t), PH_OK);
  assert_int_equal(t.rows, 1); /* the survivors' class */
  assert_int_equal(t.all_committed, st.pool_bytes);
  assert_true(t.holed > 0 && t.holed <= np && t.hole > 0);
  assert_true(t.hole * t.slot_bytes <= t.holed * cfg.pool_size);
  printf("census: %zu pools, %zu with holes, %zu pinned\n", t.pools, t.holed,
         np);
  if (now) {
    /* the pools of the class that hold no pinned block may have holes too
     * (compact.holes.free: the class's last, partly filled pool) */
    assert_true(t.holed >= holed);
    assert_true(holed * 10 >= np * 9); /* nearly every pinned pool */
    assert_true(t.committed <= (t.pools - holed) * cfg.pool_size + kept);
  }
  /* at least this many pinned pools have holes: the census's pools with
   * holes but those holding no pinned block (one pinned block per pool) */
  return t.holed - (t.pools > np ? t.pools - np : 0);
}

/* A heap that collects only when asked (gc_percent 0), release mode rel,
 * and a domain attached to it; cfg gets the configuration. */
static ph_heap *heap_gc0(ph_config *cfg, ph_release_mode rel, ph_domain **d) {
  ph_config_init(cfg);
  cfg->gc_percent = 0;
  cfg->release = rel;
  ph_heap *h;
  assert_int_equal(ph_heap_create(cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, d), PH_OK);
  return h;
}

/* n blocks of 3 fields, 1 in 5 survives (a fifth of every pool); with
 * pins, one survivor in the middle part of every pool is pinned.  Returns
 * the committed bytes after the first compaction (release mode rel); with
 * pins, then goes on: allocation, a second collection and compaction,
 * unpinning and a third compaction.  Resident pages are checked where the
 * mode returns them at once (DECOMMIT, UNMAP); with KEEP, no pinned pool
 * gives anything: every block of it stays in place. */
static size_t sparse_heap(int pin, ph_release_mode rel) {
  ph_config cfg;
  ph_domain *d;
  ph_heap *h = heap_gc0(&cfg, rel, &d);
  int now = rel == PH_RELEASE_DECOMMIT || rel == PH_RELEASE_UNMAP;
  const size_t n = tu_scale(200000, 4);
  const ph_value mask = ~(ph_value)(cfg.pool_size - 1);
  size_t m = ph_scope_open(d);
  sparse_pins s;
  sparse_pins_build(d, n, mask, pin, at_rotating, &s);
  ph_value *arr = s.arr, *pins = s.pins, *pools = s.pools, *old = s.old;
  size_t *pin_j = s.pin_j, *pool_of = s.in_pinned, ns = s.ns, np = s.np;
  assert_true(!pin || np * 10 >= s.npools * 9); /* nearly every pool */
  ph_stats st;
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_stats_get(h, &st), PH_OK);
  size_t committed = st.committed_bytes;
  holes_check(arr, ns);
  tu_verify_ok(d);
  if (!pin || rel == PH_RELEASE_KEEP) {
    for (size_t j = 0; pin && j < ns; j++) /* KEEP: the pools stay whole */
      assert_true(!pool_of[j] || ph_field(*arr, j) == old[j]);
    if (pin)
      assert_int_equal(resident_units(pools, np, cfg.pool_size),
                       np * cfg.pool_size);
    ph_scope_close(d, m);
    sparse_pins_free(&s);
    tu_env_close(&(tu_env){h, d});
    return committed;
  }
  /* the pinned blocks stayed; their pools gave the pages left without a
   * block: at most the pinned block's two (heap.pool.ool: not the header's) */
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*arr, pin_j[k]) == pins[k]);
  size_t res = resident_units(pools, np, cfg.pool_size);
  printf("pinned pools %zu: resident %zu KiB of %zu KiB; committed %zu KiB\n",
         np, res / 1024, np * cfg.pool_size / 1024, committed / 1024);
  assert_true(!now || res <= np * 2 * pg);
  size_t holed = census_floor(h, d, pools, pins, np, now);
  /* allocation, a second collection and compaction */
  ph_value *more = ph_root(d, ph_alloc(d, n / 2, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = holes_node(d, (intptr_t)i);
    if (i % 2 == 0)
      ph_set_field(*more, i / 2, x);
  }
  assert_int_equal(ph_collect(d), PH_OK);
  tu_verify_ok(d);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(arr, ns);
  for (size_t i = 0; i < n / 2; i++)
    assert_int_equal(ph_int_val(ph_field(ph_field(*more, i), 0)),
                     (intptr_t)(2 * i));
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*arr, pin_j[k]) == pins[k]);
  assert_true(!now || resident_units(pools, np, cfg.pool_size) <= np * 2 * pg);
  /* unpinned, the pools with holes go away whole (into the room that 3 in
   * 4 of the other blocks leave); the pinned pools kept whole for room
   * (compact.pin.holes), filled with evacuees, may stay */
  size_t gone = unpin_compact(d, &s, *more, n / 2, mask);
  for (size_t i = 0; i < n / 2; i += 4)
    assert_int_equal(ph_int_val(ph_field(ph_field(*more, i), 0)),
                     (intptr_t)(2 * i));
  assert_true(gone >= holed && gone * 10 >= np * 9);
  assert_true(!now || resident_units(pools, np, cfg.pool_size) <=
                          (np - gone) * cfg.pool_size);
  ph_scope_close(d, m);
  sparse_pins_free(&s);
  tu_env_close(&(tu_env){h, d});
  return committed;
}

/* compact.pin.holes: one pinned block in every pool of a sparse heap costs
 * about what the unpinned heap keeps (each pinned pool keeps its header's
 * page and its pinned block's, filled with evacuees), not every pool. */
static void pools_give_pages(ph_release_mode rel) {
  size_t unpinned = sparse_heap(0, rel), pinned = sparse_heap(1, rel);
  printf("committed after compaction: unpinned %zu KiB, pinned %zu KiB\n",
         unpinned / 1024, pinned / 1024);
  assert_true(pinned * 4 <= unpinned * 5);
}

static void test_pinned_pools_give_pages(void **state) {
  (void)state;
  pools_give_pages(PH_RELEASE_DECOMMIT);
}

static void test_pinned_pools_give_pages_lazy_unmap(void **state) {
  (void)state;
  pools_give_pages(PH_RELEASE_LAZY);
  pools_give_pages(PH_RELEASE_UNMAP);
}

/* compact.pin.floor: the blocks to move fill the pinned pools' kept pages
 * first, then as few other pools as hold the rest.  Half the pools of a
 * sparse heap (1 in 5 survives) hold a pinned block: their kept pages
 * cannot take every survivor, so some unpinned pools are kept whole, and
 * then every free slot is in the last one filled (fewer than a pool's
 * slots in all).  ph_census tells the pools with holes from the others. */
static size_t at_even(size_t k) {
  return k % 2 ? SIZE_MAX : (k * 37) % 140 + 30;
}

static void test_pinned_pools_filled_first(void **state) {
  (void)state;
  ph_config cfg;
  ph_domain *d;
  ph_heap *h = heap_gc0(&cfg, PH_RELEASE_DECOMMIT, &d);
  const size_t n = tu_scale(200000, 4);
  size_t m = ph_scope_open(d);
  sparse_pins s;
  sparse_pins_build(d, n, ~(ph_value)(cfg.pool_size - 1), 1, at_even, &s);
  assert_true(s.np * 3 >= s.npools && s.np * 3 <= s.npools * 2);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(s.arr, s.ns);
  for (size_t k = 0; k < s.np; k++)
    assert_true(ph_field(*s.arr, s.pin_j[k]) == s.pins[k]);
  census_sum t = {.nsmall = stats(h).size_classes};
  assert_int_equal(ph_census(d, census_add, &t), PH_OK);
  size_t nslots = (t.live + t.free + t.hole) / t.pools;
  printf("%zu pools (%zu pinned): %zu kept, %zu with holes; %zu free slots "
         "of %zu per pool\n",
         s.npools, s.np, t.pools, t.holed, t.free, nslots);
  assert_int_equal(t.rows, 1);
  assert_int_equal((t.live + t.free + t.hole) % t.pools, 0);
  assert_true(t.holed * 10 >= s.np * 9); /* nearly every pinned pool */
  assert_true(t.pools > t.holed);        /* others had to be kept */
  assert_true(t.free < nslots);
  ph_scope_close(d, m);
  sparse_pins_free(&s);
  tu_env_close(&(tu_env){h, d});
}

/* With PH_RELEASE_KEEP a pinned block's pool is kept whole (ph_pin). */
static void test_pinned_pools_keep_whole(void **state) {
  (void)state;
  sparse_heap(1, PH_RELEASE_KEEP);
}

static void count_pools(const ph_census_class *c, void *user) {
  *(size_t *)user += c->pools;
}

/* The pools of sp whose first page is resident (mincore): with
 * heap.pool.ool none, since no pinned block lies in it (at_100). */
static size_t first_pages_resident(const sparse_pins *sp) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = 0;
  for (size_t k = 0; k < sp->np; k++)
    n += resident_units(&sp->pools[k], 1, pg) != 0;
  return n;
}

static void fin_count(ph_domain *d, ph_value v, void *user) {
  (void)d;
  (void)v;
  ++*(int *)user;
}

/* heap.pool.ool: a pinned pool whose first page holds no pinned block
 * gives that page back too, its header and live bitmap moved out of line.
 * The page stays out of RSS through the next collection, an allocation
 * burst, a second compaction and a third one; the pinned blocks never
 * move and keep their fields, ph_pin, ph_finalise and weak fields work on
 * blocks of those pools, ph_verify is clean after each step.  Unpinned,
 * the pools go away whole (the copies freed with them); with
 * free_pinned, the heap is destroyed while the copies live (ASan's leak
 * check sees them freed).  Without heap.pool.ool every first page is
 * resident. */
/* heap.pool.ool's heaps: DECOMMIT, collecting only when asked, n blocks
 * of which each pool's 100th survivor is pinned (sparse_pins_build, a
 * handle scope opened at *m); 0 (the heap closed) where granules are
 * larger than a page. */
static int ool_heap(size_t n, ph_config *cfg, ph_heap **h, ph_domain **d,
                    size_t *m, sparse_pins *sp) {
  *h = heap_gc0(cfg, PH_RELEASE_DECOMMIT, d);
  if (cfg->pool_size / 64 > (size_t)sysconf(_SC_PAGESIZE)) {
    tu_env_close(&(tu_env){*h, *d});
    return 0;
  }
  *m = ph_scope_open(*d);
  sparse_pins_build(*d, n, ~(ph_value)(cfg->pool_size - 1), 1, at_100, sp);
  return 1;
}

static void header_out_of_line(int free_pinned) {
  ph_config cfg;
  ph_heap *h;
  ph_domain *d;
  size_t m;
  sparse_pins sp;
  const size_t n = tu_scale(200000, 4);
  if (!ool_heap(n, &cfg, &h, &d, &m, &sp))
    return;
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  const ph_value mask = ~(ph_value)(cfg.pool_size - 1);
  ph_value *arr = sp.arr, *pins = sp.pins;
  size_t ns = sp.ns, np = sp.np;
  assert_true(np > 8);
  for (size_t k = 0; k < np; k++) /* the 100th survivor: past page 0 */
    assert_true(pins[k] - sp.pools[k] >= pg);
  assert_int_equal(first_pages_resident(&sp), np);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(arr, ns);
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*arr, sp.pin_j[k]) == pins[k]);
  /* a few pools may be kept whole for room (compact.pin.holes) */
  size_t kept = first_pages_resident(&sp);
  printf("first pages resident after compaction: %zu of %zu\n", kept, np);
  assert_true(kept * 4 <= np);
  /* the next collection reads and writes none of them */
  assert_int_equal(ph_collect(d), PH_OK);
  tu_verify_ok(d);
  assert_int_equal(first_pages_resident(&sp), kept);
  /* the block check and the tables on blocks of those pools */
  ph_value *w = ph_root(d, ph_alloc_weak(d, 2));
  ph_set_field(*w, 0, pins[0]);
  ph_set_field(*w, 1, ph_field(*arr, sp.pin_j[1] - 1));
  int ran = 0;
  for (size_t k = 0; k < np; k++) {
    assert_int_equal(ph_pin(d, pins[k]), PH_OK); /* count 2 */
    assert_int_equal(ph_unpin(d, pins[k]), PH_OK);
  }
  assert_int_equal(ph_finalise(d, ph_field(*arr, sp.pin_j[1] - 1), fin_count,
                               &ran, PH_FINAL_FIRST),
                   PH_OK);
  ph_set_field(*arr, sp.pin_j[1] - 1, ph_val_int(0));
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_run_finalisers(d), PH_OK);
  assert_int_equal(ran, 1);
  assert_true(ph_field(*w, 0) == pins[0]); /* pinned: alive */
  assert_true(ph_field(*w, 1) == 0);       /* dead after its finaliser */
  ph_set_field(*arr, sp.pin_j[1] - 1, holes_node(d, (intptr_t)sp.pin_j[1] - 1));
  tu_verify_ok(d);
  /* allocation fills the kept pages' free slots, then new pools */
  ph_value *more = ph_root(d, ph_alloc(d, n / 2, 0));
  for (size_t i = 0; i < n / 2; i++)
    ph_set_field(*more, i, holes_node(d, (intptr_t)i));
  assert_int_equal(ph_collect(d), PH_OK);
  tu_verify_ok(d);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(arr, ns);
  for (size_t i = 0; i < n / 2; i++)
    assert_int_equal(ph_int_val(ph_field(ph_field(*more, i), 0)), (intptr_t)i);
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*arr, sp.pin_j[k]) == pins[k]);
  assert_true(first_pages_resident(&sp) <= kept);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_true(first_pages_resident(&sp) <= kept);
  if (!free_pinned) {
    /* unpinned, with room: the pools with holes are evacuated whole */
    size_t gone = unpin_compact(d, &sp, *more, n / 2, mask);
    assert_true(gone >= np - kept);
  }
  ph_scope_close(d, m);
  sparse_pins_free(&sp);
  tu_env_close(&(tu_env){h, d});
}

static void test_pinned_pool_header_out_of_line(void **state) {
  (void)state;
  header_out_of_line(0);
  header_out_of_line(1);
}

/* heap.pool.ool when the side copy cannot be had (tests.faults): the
 * compaction keeps every pinned pool's first page (and header) and gives
 * the other pages as before; the next compaction, with memory, moves the
 * headers out and gives the first pages too (their slots' evacuees move
 * again).  ph_verify is clean and the blocks intact throughout. */
static void test_pool_header_copy_refused(void **state) {
  (void)state;
  ph_config cfg;
  ph_heap *h;
  ph_domain *d;
  size_t m;
  sparse_pins sp;
  if (!ool_heap(tu_scale(100000, 4), &cfg, &h, &d, &m, &sp))
    return;
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = sp.np;
  ph_heap_fault_set(PH_HEAP_OP_POOL_HDR, 1, 1);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_true(ph_heap_fault_hits() > 0);
  ph_heap_fault_set(0, 0, 0);
  tu_verify_ok(d);
  holes_check(sp.arr, sp.ns);
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*sp.arr, sp.pin_j[k]) == sp.pins[k]);
  assert_int_equal(first_pages_resident(&sp), np);
  assert_true(resident_units(sp.pools, np, cfg.pool_size) <= np * 3 * pg);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(sp.arr, sp.ns);
  for (size_t k = 0; k < np; k++)
    assert_true(ph_field(*sp.arr, sp.pin_j[k]) == sp.pins[k]);
  size_t kept = first_pages_resident(&sp);
  printf("first pages resident: %zu of %zu\n", kept, np);
  assert_true(kept * 4 <= np);
  ph_scope_close(d, m);
  sparse_pins_free(&sp);
  tu_env_close(&(tu_env){h, d});
}

/* compact.pin.holes under OS refusals: a compaction whose decommits are all
 * refused makes no hole (the blocks that left are gone from the pools all
 * the same, their slots free); a pool with holes freed while commits are
 * refused gives its other pages back instead (heap.pool.holes).  The heap
 * stays consistent (ph_verify recounts the committed bytes) throughout. */
static void test_pinned_pools_os_refusals(void **state) {
  (void)state;
  ph_config cfg;
  ph_domain *d;
  ph_heap *h = heap_gc0(&cfg, PH_RELEASE_DECOMMIT, &d);
  const size_t n = tu_scale(100000, 4);
  const ph_value mask = ~(ph_value)(cfg.pool_size - 1);
  size_t m = ph_scope_open(d);
  sparse_pins sp;
  sparse_pins_build(d, n, mask, 1, at_100, &sp);
  ph_value *arr = sp.arr, *pins = sp.pins, *pools = sp.pools;
  size_t ns = sp.ns, np = sp.np;
  /* every decommit refused: no hole, nothing lost */
  ph_os_fault_set(PH_OS_OP_DECOMMIT, 1, 1);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_true(ph_os_fault_hits() > 0);
  ph_os_fault_set(0, 0, 0);
  tu_verify_ok(d);
  holes_check(arr, ns);
  assert_int_equal(resident_units(pools, np, cfg.pool_size),
                   np * cfg.pool_size);
  /* then holes */
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  holes_check(arr, ns);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  assert_true(resident_units(pools, np, cfg.pool_size) <= np * 3 * pg);
  /* every block dies, every commit refused: the pools with holes are freed
   * all the same */
  for (size_t i = 0; i < np; i++)
    assert_int_equal(ph_unpin(d, pins[i]), PH_OK);
  for (size_t j = 0; j < ns; j++)
    ph_set_field(*arr, j, ph_val_int(0));
  ph_os_fault_set(PH_OS_OP_COMMIT, 1, 1);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_true(ph_os_fault_hits() > 0);
  ph_os_fault_set(0, 0, 0);
  tu_verify_ok(d);
  /* counted in pools: the array may be a medium block, whose pool (the
   * one left besides a few) is several units */
  size_t npools = 0;
  assert_int_equal(ph_census(d, count_pools, &npools), PH_OK);
  assert_true(npools < np / 8 + 1);
  ph_scope_close(d, m);
  sparse_pins_free(&sp);
  tu_env_close(&(tu_env){h, d});
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pinned_do_not_move_global),
      cmocka_unit_test(test_pinned_do_not_move_per_domain),
      cmocka_unit_test(test_pin_keeps_alive_and_counts),
      cmocka_unit_test(test_pin_bad_input),
      cmocka_unit_test(test_pin_survives_detach),
      cmocka_unit_test(test_bogus_while_allocating),
      cmocka_unit_test(test_pinned_pools_give_pages),
      cmocka_unit_test(test_pinned_pool_header_out_of_line),
      cmocka_unit_test(test_pool_header_copy_refused),
      cmocka_unit_test(test_pinned_pools_give_pages_lazy_unmap),
      cmocka_unit_test(test_pinned_pools_keep_whole),
      cmocka_unit_test(test_pinned_pools_filled_first),
      cmocka_unit_test(test_pinned_pools_os_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
