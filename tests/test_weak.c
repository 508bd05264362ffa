/* tests/test_weak.c -- weak blocks and ephemerons (DESIGN.md: gc.weak).
 *
 * The basic semantics one by one (cleared when the target dies, never while
 * it is reachable, forwarded by compaction, ephemeron keys reachable only
 * through the data, chains that need many rounds, large blocks, bad input,
 * the strong fallback when a list cannot grow), then a random graph checked
 * against a model that computes the ephemeron fixpoint itself, with GC
 * helpers so that several participants share the rounds. */
#include "test_util.h"

#include "gc/gc.h"

extern size_t ph_weak_list_limit;
extern size_t ph_mark_stack_limit;
extern _Atomic uint64_t ph_ephe_rounds_run;

typedef struct env {
  ph_heap *h;
  ph_domain *d;
} env;

static void env_open(env *e, unsigned helpers) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0; /* collections only where the test asks */
  cfg.gc_helpers = helpers;
  assert_int_equal(ph_heap_create(&cfg, &e->h), PH_OK);
  assert_int_equal(ph_domain_attach(e->h, &e->d), PH_OK);
}

static void env_close(env *e) {
  char why[256];
  assert_int_equal(ph_verify(e->d, why, sizeof why), PH_OK);
  assert_int_equal(ph_domain_detach(e->d), PH_OK);
  assert_int_equal(ph_heap_destroy(e->h), PH_OK);
}

static void check_heap(env *e) {
  char why[256];
  int err = ph_verify(e->d, why, sizeof why);
  if (err != PH_OK)
    fail_msg("verify: %s", why);
}

/* a node: field 0 its id (immediate), then `edges` fields */
static ph_value node(env *e, intptr_t id, size_t edges) {
  ph_value v = ph_alloc(e->d, 1 + edges, 0);
  assert_true(v != 0);
  ph_set_field(v, 0, ph_val_int(id));
  return v;
}

static intptr_t id_of(ph_value v) {
  assert_true(ph_is_block(v));
  return ph_int_val(ph_field(v, 0));
}

static ph_stats stats(env *e) {
  ph_stats s;
  assert_int_equal(ph_stats_get(e->h, &s), PH_OK);
  return s;
}

/* -------------------------------------------------------------- basics */

static void test_weak_cleared_when_dead_kept_while_reachable(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  size_t m = ph_scope_open(e.d);
  ph_value *w = ph_root(e.d, ph_alloc_weak(e.d, 4));
  assert_true(*w != 0);
  assert_int_equal(ph_tag(*w), 0);
  for (size_t i = 0; i < 4; i++)
    assert_true(ph_field(*w, i) == 0); /* fields start as 0 */
  ph_value *a = ph_root(e.d, node(&e, 1, 1));
  /* b is reachable only through a's field: alive */
  ph_set_field(*a, 1, node(&e, 2, 0));
  ph_set_field(*w, 0, *a);
  ph_set_field(*w, 1, ph_field(*a, 1));
  ph_set_field(*w, 2, node(&e, 3, 0)); /* nothing else holds it */
  ph_set_field(*w, 3, ph_val_int(42));
  uint64_t before = stats(&e).weak_cleared;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(ph_field(*w, 0) == *a);
  assert_int_equal(id_of(ph_field(*w, 1)), 2);
  assert_true(ph_field(*w, 2) == 0);
  assert_true(ph_field(*w, 3) == ph_val_int(42));
  assert_int_equal(stats(&e).weak_cleared - before, 1);
  check_heap(&e);
  /* still reachable after more collections */
  for (int k = 0; k < 3; k++)
    assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(id_of(ph_field(*w, 1)), 2);
  /* a's field dropped: b dies, the weak field clears */
  ph_set_field(*a, 1, PH_UNIT);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(ph_field(*w, 1) == 0);
  assert_true(ph_field(*w, 0) == *a);
  assert_int_equal(stats(&e).weak_cleared - before, 2);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* gc.weak.clear.groups: a weak block whose fields mix 0, immediates, live
 * and dead targets at random (a length that is not a multiple of 8: the
 * groups and the tail), with and without GC helpers: exactly the dead
 * targets' fields read 0, every other field is unchanged, weak_cleared
 * counts them; a second collection changes nothing. */
static void test_weak_fields_mixed(void **state) {
  (void)state;
  tu_rng r;
  tu_rng_init(&r, 0x3eac);
  for (unsigned helpers = 0; helpers <= 2; helpers += 2) {
    env e;
    env_open(&e, helpers);
    size_t m = ph_scope_open(e.d);
    const size_t n = 8 * 300 + 5;
    ph_value *w = ph_root(e.d, ph_alloc_weak(e.d, n));
    ph_value *keep = ph_root(e.d, ph_alloc(e.d, n, 0));
    int *kind = calloc(n, sizeof *kind); /* 0 zero, 1 imm, 2 live, 3 dead */
    assert_non_null(kind);
    size_t dead = 0;
    for (size_t i = 0; i < n; i++) {
      /* runs of one kind too, so some groups have no dead target */
      kind[i] = i % 64 < 16 ? 2 : (int)tu_below(&r, 4);
      ph_value v = kind[i] == 1 ? ph_val_int((intptr_t)i) : 0;
      if (kind[i] >= 2)
        v = node(&e, (intptr_t)i, 0);
      if (kind[i] == 2)
        ph_set_field(*keep, i, v);
      ph_set_field(*w, i, v);
      dead += kind[i] == 3;
    }
    for (int round = 0; round < 2; round++) {
      uint64_t before = stats(&e).weak_cleared;
      assert_int_equal(ph_collect(e.d), PH_OK);
      assert_int_equal(stats(&e).weak_cleared - before, round ? 0 : dead);
      for (size_t i = 0; i < n; i++) {
        ph_value x = ph_field(*w, i);
        switch (kind[i]) {
        case 0:
        case 3:
          assert_true(x == 0);
          break;
        case 1:
          assert_true(x == ph_val_int((intptr_t)i));
          break;
        default:
          assert_true(x == ph_field(*keep, i));
          assert_int_equal(id_of(x), (intptr_t)i);
        }
      }
    }
    check_heap(&e);
    free(kind);
    ph_scope_close(e.d, m);
    env_close(&e);
  }
}

/* a weak block alone does not keep a cycle alive, and a weak block that is
 * itself unreachable is simply collected */
static void test_weak_block_collected_like_any(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  size_t m = ph_scope_open(e.d);
  ph_value *w = ph_root(e.d, ph_alloc_weak(e.d, 1));
  ph_value x = node(&e, 7, 1);
  ph_set_field(x, 1, *w); /* x -> w strongly, w -> x weakly */
  ph_set_field(*w, 0, x);
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(ph_field(*w, 0) == 0);
  ph_scope_close(e.d, m);
  ph_stats s0 = stats(&e);
  assert_int_equal(ph_collect(e.d), PH_OK);
  ph_stats s1 = stats(&e);
  assert_true(s1.live_blocks == 0);
  assert_int_equal(s1.weak_cleared, s0.weak_cleared);
  env_close(&e);
}

static void test_ephemeron_semantics(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  size_t m = ph_scope_open(e.d);
  ph_value *k1 = ph_root(e.d, node(&e, 1, 0));
  ph_value *k2 = ph_root(e.d, node(&e, 2, 0));
  ph_value *eph = ph_root(e.d, ph_alloc_ephemeron(e.d, 2));
  assert_true(*eph != 0);
  assert_int_equal(ph_wosize(*eph), 3);
  assert_int_equal(ph_tag(*eph), 1);
  ph_set_field(*eph, 0, *k1);
  ph_set_field(*eph, 1, *k2);
  /* the data is reachable only through the ephemeron; it holds key 2 and
   * a block of its own */
  ph_value data = node(&e, 3, 2);
  ph_set_field(data, 1, *k2);
  ph_set_field(data, 2, node(&e, 4, 0));
  ph_set_field(*eph, 2, data);
  /* a second ephemeron whose only key is reachable only through its data:
   * the key does not keep itself alive */
  ph_value *self = ph_root(e.d, ph_alloc_ephemeron(e.d, 1));
  ph_value sk = node(&e, 5, 0);
  ph_value sd = node(&e, 6, 1);
  ph_set_field(sd, 1, sk);
  ph_set_field(*self, 0, sk);
  ph_set_field(*self, 1, sd);
  uint64_t before = stats(&e).ephemerons_cleared;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(ph_field(*eph, 0) == *k1);
  assert_true(ph_field(*eph, 1) == *k2);
  assert_int_equal(id_of(ph_field(*eph, 2)), 3);
  assert_int_equal(id_of(ph_field(ph_field(*eph, 2), 2)), 4);
  for (size_t i = 0; i < 2; i++)
    assert_true(ph_field(*self, i) == 0);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 1);
  check_heap(&e);
  /* key 1 dies: every key and the data read 0, though key 2 lives */
  *k1 = PH_UNIT;
  assert_int_equal(ph_collect(e.d), PH_OK);
  for (size_t i = 0; i < 3; i++)
    assert_true(ph_field(*eph, i) == 0);
  assert_int_equal(id_of(*k2), 2);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 2);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* gc.weak.pending, heap.sweep.zero: a listed ephemeron carries a pending
 * bit in its header during a collection, and the sweep zeroes the fields of
 * those still pending.  Afterwards every ephemeron's header is whole again
 * (tag 1, its size), whether it was cleared (by a pool's sweep or a large
 * block's), resolved in a round (key reachable only through another's data)
 * or never pending; only the ones with a dead key read 0, each counted
 * once.  With and without GC helpers (atomic header updates). */
static void eph_headers(unsigned helpers) {
  env e;
  env_open(&e, helpers);
  const size_t n = 3000, big = 300; /* big: a large block */
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n + 2, 0));
  ph_value *keys = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_alloc_ephemeron(e.d, 1);
    assert_true(x != 0);
    ph_set_field(*arr, i, x);
    ph_value k = node(&e, (intptr_t)i, 0);
    ph_set_field(ph_field(*arr, i), 0, k);
    if (i % 3 == 0) /* kept; its data holds the key of i + 2 */
      ph_set_field(*keys, i, k);
    ph_value dnode = node(&e, -(intptr_t)i - 1, 1);
    ph_set_field(ph_field(*arr, i), 1, dnode);
  }
  for (size_t i = 0; i + 2 < n; i += 3) /* i + 1: its key dies */
    ph_set_field(ph_field(ph_field(*arr, i), 1), 1,
                 ph_field(ph_field(*arr, i + 2), 0));
  for (size_t b = 0; b < 2; b++) { /* large: b = 0 a dead key, 1 all kept */
    ph_value x = ph_alloc_ephemeron(e.d, big);
    assert_true(x != 0);
    ph_set_field(*arr, n + b, x);
    for (size_t k = 0; k < big; k++) {
      ph_value kn = node(&e, 100000 + (intptr_t)k, 0);
      ph_set_field(ph_field(*arr, n + b), k, kn);
      if (b == 1 || k > 0)
        ph_set_field(*keys, (k * 3 + 1 + b * 900) % n, kn); /* unused slots */
    }
    ph_set_field(ph_field(*arr, n + b), big, node(&e, -7, 0));
  }
  size_t dead = 0;
  for (size_t i = 0; i < n; i++)
    dead += i % 3 == 1;
  uint64_t before = stats(&e).ephemerons_cleared;
  for (int round = 0; round < 3; round++) {
    if (round < 2)
      assert_int_equal(ph_collect(e.d), PH_OK);
    else
      assert_int_equal(ph_compact(e.d), PH_OK);
    for (size_t i = 0; i < n + 2; i++) {
      ph_value x = ph_field(*arr, i);
      size_t nk = i < n ? 1 : big;
      assert_int_equal(ph_tag(x), 1);
      assert_int_equal(ph_wosize(x), nk + 1);
      int cleared = i < n ? i % 3 == 1 : i == n;
      for (size_t k = 0; k <= nk; k++)
        assert_true((ph_field(x, k) == 0) == cleared);
      if (i < n && !cleared) {
        assert_int_equal(id_of(ph_field(x, 0)), (intptr_t)i);
        assert_int_equal(id_of(ph_field(x, 1)), -(intptr_t)i - 1);
      }
    }
    /* cleared once, in the first collection */
    assert_int_equal(stats(&e).ephemerons_cleared - before, dead + 1);
    check_heap(&e);
  }
  ph_scope_close(e.d, m);
  env_close(&e);
}

static void test_ephemeron_headers_after_clearing(void **state) {
  (void)state;
  eph_headers(0);
  eph_headers(2);
}

/* E_i has key k_i and data k_{i+1}; only k_0 is rooted.  The ephemerons
 * are stored in an order that makes each round resolve one link at best
 * (for a marker that goes through them in address order or the reverse),
 * so the fixpoint needs many rounds; then the chain is cut in the middle. */
static void test_ephemeron_chain_fixpoint(void **state) {
  (void)state;
  env e;
  env_open(&e, 3);
  const size_t n = 200;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  ph_value *keys = ph_root(e.d, ph_alloc(e.d, n + 1, 0));
  for (size_t i = 0; i <= n; i++)
    ph_set_field(*keys, i, node(&e, (intptr_t)i, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value eph = ph_alloc_ephemeron(e.d, 1);
    ph_set_field(eph, 0, ph_field(*keys, i));
    ph_set_field(eph, 1, ph_field(*keys, i + 1));
    ph_set_field(*arr, (i * 7) % n, eph); /* n is not a multiple of 7 */
  }
  ph_value *k0 = ph_root(e.d, ph_field(*keys, 0));
  *keys = PH_UNIT; /* only k0 and the ephemerons are rooted now */
  for (int round = 0; round < 2; round++) {
    assert_int_equal(ph_collect(e.d), PH_OK);
    for (size_t j = 0; j < n; j++) {
      ph_value eph = ph_field(*arr, j);
      intptr_t i = id_of(ph_field(eph, 0));
      assert_int_equal(id_of(ph_field(eph, 1)), i + 1);
    }
    check_heap(&e);
    assert_int_equal(ph_compact(e.d), PH_OK); /* and forwarded */
  }
  assert_int_equal(id_of(*k0), 0);
  /* k_0 dies: nothing holds the chain any more, every ephemeron clears */
  *k0 = PH_UNIT;
  uint64_t before = stats(&e).ephemerons_cleared;
  assert_int_equal(ph_collect(e.d), PH_OK);
  for (size_t j = 0; j < n; j++) {
    ph_value eph = ph_field(*arr, j);
    assert_true(ph_field(eph, 0) == 0 && ph_field(eph, 1) == 0);
  }
  assert_int_equal(stats(&e).ephemerons_cleared - before, n);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* gc.weak.watch: a round runs only when a key of a listed ephemeron was
 * marked after the ephemeron was looked at.  A table whose kept keys are
 * roots (marked while the roots are scanned, before any ephemeron is met)
 * and whose other keys are unreachable needs no round at all, although
 * marking the kept entries' data marked blocks after the others were
 * listed; with one key reachable only through another ephemeron's data,
 * rounds run and resolve it.  One participant, so the order is known. */
static void test_ephemeron_rounds_only_when_watched(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  const size_t n = 3000;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_alloc_ephemeron(e.d, 1);
    assert_true(x != 0);
    ph_set_field(*arr, i, x);
    ph_value k = node(&e, (intptr_t)i, 0);
    ph_set_field(ph_field(*arr, i), 0, k);
    if (i % 10 == 0) {
      ph_root(e.d, k);
      kept++;
    }
    ph_set_field(ph_field(*arr, i), 1, node(&e, -(intptr_t)i - 1, 0));
  }
  uint64_t before = stats(&e).ephemerons_cleared;
  uint64_t r0 = ph_ephe_rounds_run;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(ph_ephe_rounds_run - r0, 0);
  assert_int_equal(stats(&e).ephemerons_cleared - before, n - kept);
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_field(*arr, i);
    if (i % 10 == 0)
      assert_int_equal(id_of(ph_field(x, 1)), -(intptr_t)i - 1);
    else
      assert_true(ph_field(x, 0) == 0 && ph_field(x, 1) == 0);
  }
  /* one more, whose key is only in the data of another: it is listed
   * before that data is marked (which marks a watched key): one round */
  ph_value *late = ph_root(e.d, ph_alloc_ephemeron(e.d, 1));
  ph_value *holder = ph_root(e.d, ph_alloc_ephemeron(e.d, 1));
  ph_value *hkey = ph_root(e.d, node(&e, 1, 1));
  ph_set_field(*hkey, 1, node(&e, 2, 0)); /* kept by hkey: not a key */
  ph_set_field(*holder, 0, ph_field(*hkey, 1));
  ph_set_field(*late, 0, node(&e, 3, 0));
  ph_set_field(*late, 1, node(&e, 4, 0));
  ph_set_field(*holder, 1, ph_field(*late, 0));
  before = stats(&e).ephemerons_cleared;
  r0 = ph_ephe_rounds_run;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 0);
  assert_int_equal(id_of(ph_field(*late, 1)), 4);
  assert_int_equal(ph_ephe_rounds_run - r0, 1);
  check_heap(&e);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* gc.weak.trim: a participant's ephemeron list of more than 1 MiB (here
 * 200,000 listed ephemerons, 8 bytes each) is freed after the collection;
 * a small one (100 entries) is kept for the next. */
static void test_ephemeron_list_trimmed(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, 200000, 0));
  for (size_t i = 0; i < 200000; i++) {
    ph_value x = ph_alloc_ephemeron(e.d, 1);
    assert_true(x != 0);
    ph_set_field(*arr, i, x);
    ph_set_field(ph_field(*arr, i), 0, node(&e, (intptr_t)i, 0));
  }
  const ph_worker *w0 = &e.h->gc->workers[0];
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(w0->ephe == NULL && w0->ephe_cap == 0);
  for (size_t i = 0; i < 200000; i++)
    ph_set_field(*arr, i, i < 100 ? ph_alloc_ephemeron(e.d, 1) : PH_UNIT);
  for (size_t i = 0; i < 100; i++)
    ph_set_field(ph_field(*arr, i), 0, node(&e, (intptr_t)i, 0));
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_true(w0->ephe != NULL && w0->ephe_cap >= 100);
  assert_true(w0->ephe_cap * sizeof(ph_value) <= ((size_t)1 << 20));
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* A chain of ephemerons, each the data of the one before, all with one key:
 * marking goes down the chain from the one rooted, link after link.  It
 * must do so in constant C stack (mark.share: no recursion), as it does for
 * a list of plain blocks: a marker that marks an ephemeron's data from
 * inside the marking of the ephemeron overflows the stack here.  The key is
 * rooted directly (the chain resolves as it is met), then held only by
 * another ephemeron's data (the chain starts in a round); then it dies and
 * the whole chain clears. */
static void eph_data_chain(unsigned helpers, int via_round, size_t n) {
  env e;
  env_open(&e, helpers);
  size_t m = ph_scope_open(e.d);
  ph_value *key = ph_root(e.d, node(&e, 7, 0));
  ph_value *head = ph_root(e.d, PH_UNIT);
  for (size_t i = n; i-- > 0;) { /* E_i's data is E_{i+1} */
    ph_value x = ph_alloc_ephemeron(e.d, 1);
    assert_true(x != 0);
    ph_set_field(x, 0, *key);
    ph_set_field(x, 1, *head == PH_UNIT ? node(&e, -1, 0) : *head);
    *head = x;
  }
  ph_value *holder = ph_root(e.d, PH_UNIT), *hkey = ph_root(e.d, PH_UNIT);
  if (via_round) { /* the key only as the data of an ephemeron */
    *hkey = node(&e, 8, 0);
    *holder = ph_alloc_ephemeron(e.d, 1);
    assert_true(*holder != 0);
    ph_set_field(*holder, 0, *hkey);
    ph_set_field(*holder, 1, *key);
    *key = PH_UNIT;
  }
  uint64_t before = stats(&e).ephemerons_cleared;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 0);
  ph_value k = via_round ? ph_field(*holder, 1) : *key;
  assert_int_equal(id_of(k), 7);
  size_t len = 0;
  for (ph_value x = *head; ph_tag(x) == 1; x = ph_field(x, 1), len++)
    assert_true(ph_field(x, 0) == k);
  assert_int_equal(len, n);
  check_heap(&e);
  /* the key dies: every ephemeron of the chain clears */
  *key = PH_UNIT;
  *hkey = PH_UNIT;
  *holder = PH_UNIT;
  assert_int_equal(ph_collect(e.d), PH_OK);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 1);
  assert_true(ph_field(*head, 0) == 0 && ph_field(*head, 1) == 0);
  ph_scope_close(e.d, m);
  env_close(&e);
}

static void test_ephemeron_data_chain_stack(void **state) {
  (void)state;
  const size_t n = tu_scale(1000000, 20);
  eph_data_chain(0, 0, n);
  eph_data_chain(0, 1, n);
  eph_data_chain(3, 0, n);
  eph_data_chain(3, 1, n);
}

/* mark.overflow: an array of ephemerons with one key each, marked with
 * mark stacks of 8 entries, so that most of the entries that would mark
 * the ephemerons' data are dropped: the rescans must scan the ephemerons
 * whose keys were found marked (no longer pending), and every data block
 * lives; the same with the key marked only in a round. */
static void eph_overflow(unsigned helpers, int via_round) {
  env e;
  env_open(&e, helpers);
  const size_t n = 2000;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  ph_value *key = ph_root(e.d, node(&e, 7, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_alloc_ephemeron(e.d, 1);
    assert_true(x != 0);
    ph_set_field(*arr, i, x);
    ph_set_field(ph_field(*arr, i), 0, *key);
    ph_value dn = node(&e, (intptr_t)i, 1);
    ph_set_field(dn, 1, node(&e, -(intptr_t)i - 1, 0));
    ph_set_field(ph_field(*arr, i), 1, dn);
  }
  ph_value *holder = ph_root(e.d, PH_UNIT), *hkey = ph_root(e.d, PH_UNIT);
  if (via_round) { /* the key only as the data of an ephemeron */
    *hkey = node(&e, 8, 0);
    *holder = ph_alloc_ephemeron(e.d, 1);
    assert_true(*holder != 0);
    ph_set_field(*holder, 0, *hkey);
    ph_set_field(*holder, 1, *key);
    *key = PH_UNIT;
  }
  uint64_t before = stats(&e).ephemerons_cleared;
  ph_mark_stack_limit = 8;
  int err = ph_collect(e.d);
  ph_mark_stack_limit = 0;
  assert_int_equal(err, PH_OK);
  assert_int_equal(stats(&e).ephemerons_cleared - before, 0);
  for (size_t i = 0; i < n; i++) {
    ph_value dn = ph_field(ph_field(*arr, i), 1);
    assert_int_equal(id_of(dn), (intptr_t)i);
    assert_int_equal(id_of(ph_field(dn, 1)), -(intptr_t)i - 1);
  }
  check_heap(&e);
  ph_scope_close(e.d, m);
  env_close(&e);
}

static void test_ephemeron_data_overflow(void **state) {
  (void)state;
  eph_overflow(0, 0);
  eph_overflow(0, 1);
  eph_overflow(2, 0);
  eph_overflow(2, 1);
}

/* 90% of the targets dropped, then compacted: the weak fields of the
 * survivors follow them to their new addresses, the rest read 0. */
static void test_weak_table_compaction(void **state) {
  (void)state;
  env e;
  env_open(&e, 1);
  const size_t n = tu_scale(20000, 4);
  size_t m = ph_scope_open(e.d);
  ph_value *tab = ph_root(e.d, ph_alloc_weak(e.d, n)); /* a large block */
  ph_value *keep = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value x = node(&e, (intptr_t)i, 0);
    ph_set_field(*tab, i, x);
    if (i % 10 == 3)
      ph_set_field(*keep, i, x);
  }
  uint64_t before = stats(&e).weak_cleared;
  ph_stats s0 = stats(&e);
  assert_int_equal(ph_compact(e.d), PH_OK);
  ph_stats s1 = stats(&e);
  assert_true(s1.evacuated_blocks > 0);
  assert_true(s1.compactions == s0.compactions + 1);
  size_t alive = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_field(*tab, i);
    if (i % 10 == 3) {
      assert_true(x == ph_field(*keep, i));
      assert_int_equal(id_of(x), (intptr_t)i);
      alive++;
    } else {
      assert_true(x == 0);
    }
  }
  assert_int_equal(s1.weak_cleared - before, n - alive);
  check_heap(&e);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* small weak blocks and ephemerons move too (they are evacuated like any
 * block), and keep their kind afterwards */
static void test_weak_blocks_move(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  const size_t n = 2000;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  ph_value *tg = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value w = i % 2 ? ph_alloc_weak(e.d, 2) : ph_alloc_ephemeron(e.d, 1);
    ph_set_field(*arr, i, w);
    ph_value t = node(&e, (intptr_t)i, 0);
    ph_set_field(*tg, i, t);
    ph_set_field(w, 0, t);
    ph_set_field(w, 1, node(&e, (intptr_t)(n + i), 0));
    (void)ph_alloc(e.d, 3, 0); /* garbage between them */
  }
  for (size_t i = 0; i < n; i++)
    if (i % 4 >= 2)
      ph_set_field(*arr, i, PH_UNIT); /* sparse pools: compaction moves */
  assert_int_equal(ph_compact(e.d), PH_OK);
  assert_true(stats(&e).evacuated_blocks > 0);
  /* a second collection: the moved ones are still weak (their targets
   * only weakly held die now), and the kept ones' targets live */
  for (size_t i = 0; i < n; i++)
    if (i % 4 < 2 && i % 8 < 4)
      ph_set_field(*tg, i, PH_UNIT);
  assert_int_equal(ph_collect(e.d), PH_OK);
  for (size_t i = 0; i < n; i++) {
    if (i % 4 >= 2)
      continue;
    ph_value w = ph_field(*arr, i);
    int target_alive = i % 8 >= 4;
    if (i % 2) { /* weak: field 1's target had no other holder */
      assert_true(ph_field(w, 1) == 0);
      if (target_alive)
        assert_int_equal(id_of(ph_field(w, 0)), (intptr_t)i);
      else
        assert_true(ph_field(w, 0) == 0);
    } else if (target_alive) { /* ephemeron: data kept by the key */
      assert_int_equal(id_of(ph_field(w, 0)), (intptr_t)i);
      assert_int_equal(id_of(ph_field(w, 1)), (intptr_t)(n + i));
    } else {
      assert_true(ph_field(w, 0) == 0 && ph_field(w, 1) == 0);
    }
  }
  check_heap(&e);
  ph_scope_close(e.d, m);
  env_close(&e);
}

static void test_weak_bad_input(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  assert_true(ph_alloc_weak(e.d, 0) == 0);
  assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  assert_true(ph_alloc_weak(e.d, PH_MAX_WOSIZE + 1) == 0);
  assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  assert_true(ph_alloc_ephemeron(e.d, 0) == 0);
  assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  assert_true(ph_alloc_ephemeron(e.d, PH_MAX_WOSIZE) == 0);
  assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  assert_true(ph_alloc_ephemeron(e.d, (size_t)-1) == 0);
  assert_int_equal(ph_last_error(e.d), PH_EINVAL);
  assert_true(ph_alloc_weak(NULL, 1) == 0);
  assert_true(ph_alloc_ephemeron(NULL, 1) == 0);
  ph_stats s = stats(&e);
  assert_int_equal(s.live_blocks, 0);
  assert_int_equal(s.allocated_bytes, 0);
  check_heap(&e);
  env_close(&e);
}

/* A list that cannot grow: the weak blocks past the limit hold their
 * targets strongly for that collection (never a freed block), and the next
 * collection without the limit clears them. */
static void test_weak_list_cannot_grow(void **state) {
  (void)state;
  env e;
  env_open(&e, 0);
  const size_t n = 1000;
  size_t m = ph_scope_open(e.d);
  ph_value *arr = ph_root(e.d, ph_alloc(e.d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value w = i % 2 ? ph_alloc_weak(e.d, 1) : ph_alloc_ephemeron(e.d, 1);
    ph_set_field(*arr, i, w);
    ph_set_field(w, 0, node(&e, (intptr_t)i, 0));
  }
  ph_weak_list_limit = 256;
  assert_int_equal(ph_collect(e.d), PH_OK);
  ph_weak_list_limit = 0;
  size_t cleared = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value x = ph_field(ph_field(*arr, i), 0);
    if (x == 0)
      cleared++;
    else
      assert_int_equal(id_of(x), (intptr_t)i);
  }
  assert_true(cleared >= 256 && cleared < n);
  check_heap(&e);
  assert_int_equal(ph_collect(e.d), PH_OK);
  for (size_t i = 0; i < n; i++)
    assert_true(ph_field(ph_field(*arr, i), 0) == 0);
  ph_scope_close(e.d, m);
  env_close(&e);
}

/* ------------------------------------------------------- random model */

#define RK 3 /* keys per ephemeron, at most */

typedef struct mnode {
  int32_t edge[2]; /* strong fields 1, 2: node ids or -1 */
} mnode;
typedef struct mweak {
  int32_t f[4];
} mweak;
typedef struct meph {
  unsigned nkeys;
  int32_t key[RK];
  int32_t data;
  int cleared;
} meph;

typedef struct model {
  size_t nn, nw, ne;
  mnode *n;
  mweak *w;
  meph *e;
  uint8_t *rooted, *live;
  int32_t *stack;
} model;

static void m_mark(model *m, int32_t x, size_t *sp) {
  if (x < 0 || m->live[x])
    return;
  m->live[x] = 1;
  m->stack[(*sp)++] = x;
}

static void m_closure(model *m, size_t *sp) {
  while (*sp) {
    int32_t x = m->stack[--*sp];
    for (int j = 0; j < 2; j++)
      m_mark(m, m->n[x].edge[j], sp);
  }
}

/* the expected live set: roots, then ephemerons to a fixpoint */
static void m_live(model *m) {
  size_t sp = 0;
  memset(m->live, 0, m->nn);
  for (size_t i = 0; i < m->nn; i++)
    if (m->rooted[i])
      m_mark(m, (int32_t)i, &sp);
  m_closure(m, &sp);
  for (int changed = 1; changed;) {
    changed = 0;
    for (size_t i = 0; i < m->ne; i++) {
      meph *q = &m->e[i];
      if (q->cleared || q->data < 0 || m->live[q->data])
        continue;
      int ok = 1;
      for (unsigned k = 0; k < q->nkeys; k++)
        ok &= q->key[k] < 0 || m->live[q->key[k]];
      if (ok) {
        m_mark(m, q->data, &sp);
        m_closure(m, &sp);
        changed = 1;
      }
    }
  }
}

static void random_model_round(env *e, tu_rng *r, size_t nn, size_t nw,
                               size_t ne) {
  model m = {.nn = nn, .nw = nw, .ne = ne};
  m.n = calloc(nn, sizeof *m.n);
  m.w = calloc(nw, sizeof *m.w);
  m.e = calloc(ne, sizeof *m.e);
  m.rooted = calloc(nn, 1);
  m.live = calloc(nn, 1);
  m.stack = calloc(nn, sizeof *m.stack);
  size_t mark = ph_scope_open(e->d);
  /* every node, weak block and ephemeron stays reachable from the test
   * through these arrays, but `nodes` is a weak block: only rooted[] and
   * the graph keep nodes alive */
  ph_value *nodes = ph_root(e->d, ph_alloc_weak(e->d, nn));
  ph_value *roots = ph_root(e->d, ph_alloc(e->d, nn, 0));
  ph_value *ws = ph_root(e->d, ph_alloc(e->d, nw, 0));
  ph_value *es = ph_root(e->d, ph_alloc(e->d, ne, 0));
  for (size_t i = 0; i < nn; i++)
    ph_set_field(*nodes, i, node(e, (intptr_t)i, 2));
  for (size_t i = 0; i < nn; i++) {
    for (int j = 0; j < 2; j++) {
      int32_t t = tu_below(r, 3) ? (int32_t)tu_below(r, nn) : -1;
      m.n[i].edge[j] = t;
      if (t >= 0)
        ph_set_field(ph_field(*nodes, i), 1 + j, ph_field(*nodes, t));
    }
    m.rooted[i] = tu_below(r, 100) < 4;
    if (m.rooted[i])
      ph_set_field(*roots, i, ph_field(*nodes, i));
  }
  for (size_t i = 0; i < nw; i++) {
    ph_value w = ph_alloc_weak(e->d, 4);
    ph_set_field(*ws, i, w);
    for (int j = 0; j < 4; j++) {
      int32_t t = tu_below(r, 4) ? (int32_t)tu_below(r, nn) : -1;
      m.w[i].f[j] = t;
      if (t >= 0)
        ph_set_field(w, (size_t)j, ph_field(*nodes, t));
    }
  }
  for (size_t i = 0; i < ne; i++) {
    meph *q = &m.e[i];
    q->nkeys = 1 + (unsigned)tu_below(r, RK);
    ph_value x = ph_alloc_ephemeron(e->d, q->nkeys);
    ph_set_field(*es, i, x);
    for (unsigned k = 0; k < q->nkeys; k++) {
      q->key[k] = (int32_t)tu_below(r, nn);
      ph_set_field(x, k, ph_field(*nodes, q->key[k]));
    }
    q->data = (int32_t)tu_below(r, nn);
    ph_set_field(x, q->nkeys, ph_field(*nodes, q->data));
  }
  for (int step = 0; step < 4; step++) {
    if (step == 2)
      assert_int_equal(ph_compact(e->d), PH_OK);
    else
      assert_int_equal(ph_collect(e->d), PH_OK);
    m_live(&m);
    for (size_t i = 0; i < nn; i++) {
      ph_value x = ph_field(*nodes, i);
      if (m.live[i])
        assert_int_equal(id_of(x), (intptr_t)i);
      else if (x != 0)
        fail_msg("node %zu should be dead but its weak field is %p", i,
                 (void *)x);
    }
    for (size_t i = 0; i < nw; i++) {
      ph_value w = ph_field(*ws, i);
      for (int j = 0; j < 4; j++) {
        int32_t t = m.w[i].f[j];
        ph_value x = ph_field(w, (size_t)j);
        if (t >= 0 && m.live[t]) {
          assert_int_equal(id_of(x), t);
        } else {
          assert_true(x == 0);
          m.w[i].f[j] = -1;
        }
      }
    }
    for (size_t i = 0; i < ne; i++) {
      meph *q = &m.e[i];
      ph_value x = ph_field(*es, i);
      int alive = !q->cleared;
      for (unsigned k = 0; k < q->nkeys && alive; k++)
        alive = m.live[q->key[k]];
      if (alive) {
        for (unsigned k = 0; k < q->nkeys; k++)
          assert_int_equal(id_of(ph_field(x, k)), q->key[k]);
        assert_true(m.live[q->data]);
        assert_int_equal(id_of(ph_field(x, q->nkeys)), q->data);
      } else {
        for (unsigned k = 0; k <= q->nkeys; k++)
          assert_true(ph_field(x, k) == 0);
        q->cleared = 1;
      }
    }
    check_heap(e);
    /* unroot some nodes for the next step */
    for (size_t i = 0; i < nn; i++)
      if (m.rooted[i] && tu_below(r, 3) == 0) {
        m.rooted[i] = 0;
        ph_set_field(*roots, i, PH_UNIT);
      }
  }
  ph_scope_close(e->d, mark);
  free(m.n);
  free(m.w);
  free(m.e);
  free(m.rooted);
  free(m.live);
  free(m.stack);
}

static void test_weak_random_model(void **state) {
  (void)state;
  uint64_t seed = tu_seed_named("test_weak_random_model");
  tu_rng r = {.s = seed | 1};
  for (unsigned helpers = 0; helpers <= 3; helpers += 3) {
    env e;
    env_open(&e, helpers);
    for (int k = 0; k < 3; k++)
      random_model_round(&e, &r, tu_scale(6000, 4), tu_scale(2000, 4),
                         tu_scale(3000, 4));
    env_close(&e);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_weak_cleared_when_dead_kept_while_reachable),
      cmocka_unit_test(test_weak_block_collected_like_any),
      cmocka_unit_test(test_weak_fields_mixed),
      cmocka_unit_test(test_ephemeron_semantics),
      cmocka_unit_test(test_ephemeron_chain_fixpoint),
      cmocka_unit_test(test_ephemeron_data_chain_stack),
      cmocka_unit_test(test_ephemeron_list_trimmed),
      cmocka_unit_test(test_ephemeron_rounds_only_when_watched),
      cmocka_unit_test(test_ephemeron_data_overflow),
      cmocka_unit_test(test_ephemeron_headers_after_clearing),
      cmocka_unit_test(test_weak_table_compaction),
      cmocka_unit_test(test_weak_blocks_move),
      cmocka_unit_test(test_weak_bad_input),
      cmocka_unit_test(test_weak_list_cannot_grow),
      cmocka_unit_test(test_weak_random_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
