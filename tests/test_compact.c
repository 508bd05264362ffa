/* tests/test_compact.c -- ph_compact keeps the graph (coverage tests).
 *
 * Every test compares a canonical walk of the reachable graph (compact_util.h:
 * node numbers, shape, immediates, raw bytes; never addresses) before and
 * after ph_compact, and runs ph_verify after every compaction.  Random tests
 * print their seed; POOLHEAP_SEED replays one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/compact_util.h"

#define NHOOK 8
#define NGLOBAL 8

/* Roots of the scan_roots hook: one domain per heap in this file. */
static ph_value hook_slots[NHOOK];
static int hook_on;

static void scan_hook(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)d;
  (void)user;
  if (!hook_on)
    return;
  for (int i = 0; i < NHOOK; i++)
    visit(&hook_slots[i], ctx);
}

static ph_value global_slots[NGLOBAL];

typedef struct env {
  ph_heap *h;
  ph_domain *d;
  size_t mark;
  size_t pool_size;
} env;

static void env_open(env *e, ph_config *cfg) {
  cfg->scan_roots = scan_hook;
  for (int i = 0; i < NHOOK; i++)
    hook_slots[i] = PH_UNIT;
  for (int i = 0; i < NGLOBAL; i++)
    global_slots[i] = PH_UNIT;
  hook_on = 1;
  assert_int_equal(ph_heap_create(cfg, &e->h), PH_OK);
  assert_int_equal(ph_domain_attach(e->h, &e->d), PH_OK);
  for (int i = 0; i < NGLOBAL; i++)
    assert_int_equal(ph_root_add(e->h, &global_slots[i]), PH_OK);
  e->mark = ph_scope_open(e->d);
  e->pool_size = cfg->pool_size;
}

static void env_close(env *e) {
  assert_int_equal(ph_scope_close(e->d, e->mark), PH_OK);
  for (int i = 0; i < NGLOBAL; i++)
    assert_int_equal(ph_root_remove(e->h, &global_slots[i]), PH_OK);
  hook_on = 0;
  assert_int_equal(ph_domain_detach(e->d), PH_OK);
  assert_int_equal(ph_heap_destroy(e->h), PH_OK);
}

/* The walk's roots: the scope slots given, then globals, then the hook. */
static cu_graph walk_all(ph_value *const *scope, size_t nscope, int addrs) {
  ph_value v[64];
  size_t n = 0;
  for (size_t i = 0; i < nscope; i++)
    v[n++] = *scope[i];
  for (int i = 0; i < NGLOBAL; i++)
    v[n++] = global_slots[i];
  for (int i = 0; i < NHOOK; i++)
    v[n++] = hook_slots[i];
  return cu_walk(v, n, addrs);
}

/* ------------------------------------------------ random graph identity */

/* Build a random graph over every size class and some large blocks (one
 * with more than 65536 fields), keep about keep_pct percent of it, and
 * root it from a table (large block, scope slot), scope slots, globals and
 * the hook.  Returns the number of allocated blocks. */
static size_t build_random(env *e, tu_rng *r, unsigned keep_pct,
                           ph_value **tslot, ph_value **sslots, size_t nss) {
  ph_domain *d = e->d;
  cu_classes cs = cu_census(d);
  ph_stats st0 = tu_stats(e->h);
  size_t maxs = cs.c[cs.n - 1].max_wosize;
  assert_int_equal(st0.size_classes + st0.medium_classes, cs.n);
  /* wosizes: every class several pools' worth, then large blocks */
  size_t cap = 1024, n = 0;
  size_t *wo = malloc(cap * sizeof *wo);
  assert_non_null(wo);
  for (unsigned k = 0; k < cs.n; k++) {
    size_t lo = k ? cs.c[k - 1].max_wosize + 1 : 1, hi = cs.c[k].max_wosize;
    size_t slots = e->pool_size / 8 / cs.c[k].block_words;
    size_t cnt = slots * 3 + tu_below(r, slots + 1) + 2;
    for (size_t i = 0; i < cnt; i++) {
      if (n == cap) {
        cap *= 2;
        wo = realloc(wo, cap * sizeof *wo);
        assert_non_null(wo);
      }
      wo[n++] = lo + tu_below(r, hi - lo + 1);
    }
  }
  size_t nlarge = 6;
  wo = realloc(wo, (n + nlarge + 1) * sizeof *wo);
  assert_non_null(wo);
  for (size_t i = 0; i < nlarge; i++)
    wo[n++] = maxs + 1 + tu_below(r, 3000);
  wo[n++] = 65536 + 1 + 3000 + tu_below(r, 2000); /* sliced updates */
  for (size_t i = n; i-- > 1;) {                  /* allocation order */
    size_t j = tu_below(r, i + 1), t = wo[i];
    wo[i] = wo[j];
    wo[j] = t;
  }
  /* allocate: table[i] = block i, field 0 = its number */
  *tslot = ph_root(d, ph_alloc(d, n, 0));
  assert_true(ph_is_block(**tslot));
  for (size_t i = 0; i < n; i++) {
    unsigned tag = tu_below(r, 10) == 0 ? PH_TAG_RAW + (unsigned)tu_below(r, 5)
                                        : (unsigned)tu_below(r, 251);
    ph_value b = ph_alloc(d, wo[i], tag);
    assert_true(ph_is_block(b));
    if (tag >= PH_TAG_RAW) {
      for (size_t f = 0; f < wo[i]; f++)
        ph_set_field(b, f, tu_next(r));
    } else {
      ph_set_field(b, 0, ph_val_int((intptr_t)i));
    }
    ph_set_field(**tslot, i, b);
  }
  free(wo);
  ph_value t = **tslot;
  /* keep some: the others leave the table (their slots become ints) */
  unsigned char *keep = malloc(n);
  assert_non_null(keep);
  size_t *kept = malloc(n * sizeof *kept), nk = 0;
  assert_non_null(kept);
  for (size_t i = 0; i < n; i++) {
    keep[i] = tu_below(r, 100) < keep_pct;
    if (keep[i])
      kept[nk++] = i;
  }
  if (nk == 0)
    kept[nk++] = 0, keep[0] = 1;
  /* link the kept ones: pointers to kept blocks, self-cycles, 0, ints,
   * ints that look like addresses; raw blocks get raw addresses */
  for (size_t q = 0; q < nk; q++) {
    ph_value b = ph_field(t, kept[q]);
    size_t w = ph_wosize(b);
    size_t lim = w > 4096 ? 4096 : w; /* big blocks: a prefix and spots */
    int raw = ph_tag(b) >= PH_TAG_RAW;
    for (size_t f = raw ? 0 : 1; f < w; f++) {
      if (f >= lim && f % 509 != 0 && f != w - 1 && (f & 0xffff) > 2)
        continue;
      ph_value other = ph_field(t, kept[tu_below(r, nk)]);
      ph_value x;
      switch (tu_below(r, 10)) {
      case 0:
      case 1:
      case 2:
      case 3:
        x = other;
        break;
      case 4:
        x = b;
        break;
      case 5:
        x = 0;
        break;
      case 6:
        x = ph_val_int((intptr_t)other);
        break;
      case 7:
        x = other | 1;
        break;
      default:
        x = ph_val_int((intptr_t)tu_next(r));
      }
      if (raw && tu_below(r, 2))
        x = other; /* a raw word equal to a block address */
      ph_set_field(b, f, x);
    }
  }
  for (size_t i = 0; i < n; i++)
    if (!keep[i] || (keep_pct < 100 && tu_below(r, 2))) /* reached or not */
      ph_set_field(t, i, ph_val_int((intptr_t)i));
  for (size_t i = 0; i < nss; i++)
    *sslots[i] = ph_field(t, kept[tu_below(r, nk)]);
  free(keep);
  free(kept);
  return n;
}

/* Roots into kept blocks: chosen among the table's remaining blocks. */
static void pick_roots(ph_value t, tu_rng *r, ph_value *slots, size_t n) {
  size_t w = ph_wosize(t);
  for (size_t i = 0; i < n; i++) {
    ph_value b = PH_UNIT;
    for (int tries = 0; tries < 64 && !ph_is_block(b); tries++)
      b = ph_field(t, tu_below(r, w));
    slots[i] = b;
  }
}

typedef struct unit_move {
  uintptr_t old;
  int moved;
} unit_move;

static int by_old_addr(const void *x, const void *y) {
  const unit_move *p = x, *q = y;
  return p->old < q->old ? -1 : p->old > q->old;
}

static void check_identity(env *e, ph_value **scope, size_t nscope,
                           int expect_moves) {
  cu_graph a = walk_all(scope, nscope, 1);
  ph_stats st = cu_compact(e->d);
  cu_graph b = walk_all(scope, nscope, 1);
  assert_int_equal(a.nodes, b.nodes);
  assert_int_equal(a.words, b.words);
  assert_true(a.hash == b.hash);
  /* every live block is reachable from the walk's roots */
  assert_int_equal(st.live_blocks, a.nodes);
  assert_int_equal(st.live_bytes, a.words * 8);
  size_t moved = cu_moved(&a, &b);
  printf("  live %zu blocks, evacuated %llu blocks from %llu pools\n", a.nodes,
         (unsigned long long)st.evacuated_blocks,
         (unsigned long long)st.evacuated_pools);
  assert_int_equal(st.evacuated_blocks, moved);
  uint64_t mbytes = 0;
  for (size_t i = 0; i < a.nodes; i++)
    if (a.addr[i] != b.addr[i])
      mbytes += (ph_wosize(b.addr[i]) + 1) * 8;
  assert_int_equal(st.evacuated_bytes, mbytes);
  if (expect_moves) {
    assert_true(st.evacuated_blocks > 0);
    assert_true(st.evacuated_pools > 0);
    assert_true(moved < a.nodes); /* kept pools too */
  }
  /* pool granularity: a pool's blocks all moved or none did, but in the
   * pools compact.pack packed (the kept pools from the one the fill leaves
   * with room on): there the blocks that stayed lie below every one that
   * moved (the cut) */
  cu_classes cs = cu_census(e->d);
  size_t maxs = cs.c[cs.n - 1].max_wosize, nu = 0;
  unit_move *um = malloc((a.nodes + 1) * sizeof *um);
  assert_non_null(um);
  for (size_t i = 0; i < a.nodes; i++)
    if (ph_wosize(b.addr[i]) <= maxs)
      um[nu++] = (unit_move){a.addr[i], a.addr[i] != b.addr[i]};
  qsort(um, nu, sizeof *um, by_old_addr);
  for (size_t i = 0, j; i < nu; i = j) {
    uintptr_t u = cu_pool_of(um[i].old, e->pool_size);
    int cut = 0;
    for (j = i; j < nu && cu_pool_of(um[j].old, e->pool_size) == u; j++) {
      if (um[j].moved)
        cut = 1;
      else if (cut)
        fail_msg("pool %p: a block stayed above one that moved", (void *)u);
    }
  }
  free(um);
  /* a second compaction right after moves nothing */
  st = cu_compact(e->d);
  assert_int_equal(st.evacuated_blocks, 0);
  assert_int_equal(st.evacuated_bytes, 0);
  assert_int_equal(st.evacuated_pools, 0);
  cu_graph c = walk_all(scope, nscope, 1);
  assert_true(c.hash == a.hash);
  assert_int_equal(cu_moved(&b, &c), 0);
  cu_graph_free(&a);
  cu_graph_free(&b);
  cu_graph_free(&c);
}

static void random_identity(size_t pool_size, unsigned keep_pct) {
  tu_rng r = {tu_mix(tu_seed_named("random_identity"), 0)};
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = pool_size;
  cfg.gc_percent = 0;
  env e;
  env_open(&e, &cfg);
  ph_value *t, *ss[4];
  for (int i = 0; i < 4; i++)
    ss[i] = ph_root(e.d, PH_UNIT);
  build_random(&e, &r, keep_pct, &t, ss, 4);
  pick_roots(*t, &r, global_slots, NGLOBAL);
  pick_roots(*t, &r, hook_slots, NHOOK);
  ph_value *scope[5] = {t, ss[0], ss[1], ss[2], ss[3]};
  tu_verify_ok(e.d);
  check_identity(&e, scope, 5, 1);
  /* again after dropping the table: only the other roots hold the graph */
  *t = PH_UNIT;
  check_identity(&e, scope, 5, 0);
  env_close(&e);
}

static void graph_identity_random_every_class_32k(void **state) {
  (void)state;
  random_identity(32 << 10, 30);
}

static void graph_identity_random_every_class_4k(void **state) {
  (void)state;
  random_identity(4 << 10, 20);
}

static void graph_identity_random_every_class_256k(void **state) {
  (void)state;
  random_identity(256 << 10, 40);
}

/* -------------------------------------- roots, large blocks, immediates */

/* 20 whole pools of wosize 3: pools 0..9 keep 2 blocks, 10..19 keep all
 * but one.  GLOBAL keeps the 10 dense and the lowest sparse pool, so the
 * sparse pools 1..9 are evacuated (18 blocks).  Roots of every kind, a
 * large block of 70000 fields, immediates and raw words that look like
 * addresses all point at blocks of pools 5..9. */
static void roots_all_kinds_large_immediates_self_cycles(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.pool_size = 4 << 10;
  cfg.gc_percent = 0;
  size_t C = cu_nslots(&cfg, 3);
  assert_true(C > 10);
  env e;
  env_open(&e, &cfg);
  ph_domain *d = e.d;
  ph_value *tab = ph_root(d, PH_UNIT);
  assert_true(cu_fill_pools(d, e.pool_size, 3, 20, C, tab));
  for (size_t j = 0; j < 20; j++) {
    size_t keep = j < 10 ? 2 : C - 1;
    for (size_t i = keep; i < C; i++)
      ph_set_field(*tab, j * C + i, PH_UNIT);
  }
  ph_value tgt[10], ids[10];
  for (int i = 0; i < 10; i++) {
    tgt[i] = ph_field(*tab, (5 + (size_t)i / 2) * C + (size_t)i % 2);
    ids[i] = ph_field(tgt[i], 0);
  }
  ph_value dense = ph_field(*tab, 15 * C);
  ph_value dense_id = ph_field(dense, 0);
  /* roots: scope slots, globals, hook; one root holds an address as int */
  ph_value *sr[4];
  for (int i = 0; i < 4; i++)
    sr[i] = ph_root(d, tgt[i]);
  for (int i = 0; i < 3; i++) {
    global_slots[i] = tgt[4 + i];
    hook_slots[i] = tgt[7 + i];
  }
  ph_value *iroot = ph_root(d, ph_val_int((intptr_t)tgt[0]));
  global_slots[3] = tgt[1] | 1;
  hook_slots[3] = ph_val_int((intptr_t)tgt[2]);
  /* self-cycle; sparse -> dense -> sparse */
  ph_set_field(tgt[2], 1, tgt[2]);
  ph_set_field(tgt[3], 1, dense);
  ph_set_field(dense, 1, tgt[3]);
  ph_set_field(tgt[4], 1, tgt[5]);
  ph_set_field(tgt[4], 2, tgt[4]);
  /* a large block: pointers around the 65536-field slice boundaries */
  const size_t LW = 70000;
  ph_value *big = ph_root(d, ph_alloc(d, LW, 0));
  assert_true(ph_is_block(*big));
  static const size_t spots[] = {0,     1,     65534, 65535, 65536,
                                 65537, 65538, 69998, 69999};
  for (size_t i = 0; i < LW; i++)
    ph_set_field(*big, i, ph_val_int((intptr_t)tgt[i % 10]));
  for (size_t s = 0; s < sizeof spots / sizeof *spots; s++)
    ph_set_field(*big, spots[s], tgt[spots[s] % 10]);
  for (size_t i = 0; i < LW; i += 997)
    ph_set_field(*big, i, tgt[i % 10]);
  /* immediates and raw words that look like addresses */
  ph_value *x = ph_root(d, ph_alloc(d, 8, 0));
  ph_value *raw = ph_root(d, ph_alloc(d, 4, PH_TAG_RAW));
  ph_value xi[8] = {ph_val_int((intptr_t)tgt[0]),
                    tgt[0] | 1,
                    ph_val_int((intptr_t)tgt[1] >> 1),
                    ph_val_int((intptr_t)dense),
                    ph_val_int(-1),
                    0,
                    *x,
                    tgt[1]};
  xi[6] = *x; /* self-cycle */
  for (int i = 0; i < 8; i++)
    ph_set_field(*x, (size_t)i, xi[i]);
  ph_value rawv[4] = {tgt[0], tgt[1], dense, tgt[9] + 8};
  for (int i = 0; i < 4; i++)
    ph_set_field(*raw, (size_t)i, rawv[i]);

  ph_value *scope[7] = {tab, sr[0], sr[1], sr[2], sr[3], big, x};
  cu_graph a = walk_all(scope, 7, 1);
  ph_stats st = cu_compact(d);
  assert_int_equal(st.evacuated_blocks, 18);
  assert_int_equal(st.evacuated_pools, 9);
  assert_int_equal(st.evacuated_bytes, 18 * 4 * 8);
  cu_graph b = walk_all(scope, 7, 1);
  assert_true(a.hash == b.hash);
  assert_int_equal(a.nodes, b.nodes);
  assert_int_equal(cu_moved(&a, &b), 18);
  /* every root kind was rewritten and reaches the same block */
  ph_value now[10];
  for (int i = 0; i < 4; i++)
    now[i] = *sr[i];
  for (int i = 0; i < 3; i++) {
    now[4 + i] = global_slots[i];
    now[7 + i] = hook_slots[i];
  }
  for (int i = 0; i < 10; i++) {
    assert_true(ph_is_block(now[i]));
    assert_true(now[i] != tgt[i]);
    assert_true(ph_field(now[i], 0) == ids[i]);
    assert_int_equal(ph_wosize(now[i]), 3);
  }
  /* immediates and raw words untouched */
  assert_true(*iroot == ph_val_int((intptr_t)tgt[0]));
  assert_true(global_slots[3] == (tgt[1] | 1));
  assert_true(hook_slots[3] == ph_val_int((intptr_t)tgt[2]));
  xi[6] = *x;
  xi[7] = now[1];
  for (int i = 0; i < 8; i++)
    assert_true(ph_field(*x, (size_t)i) == xi[i]);
  for (int i = 0; i < 4; i++)
    assert_true(ph_field(*raw, (size_t)i) == rawv[i]);
  /* cycles */
  assert_true(ph_field(now[2], 1) == now[2]);
  assert_true(ph_field(now[4], 2) == now[4]);
  assert_true(ph_field(now[4], 1) == now[5]);
  assert_true(ph_field(now[3], 1) == dense); /* dense pools are kept */
  assert_true(ph_field(dense, 0) == dense_id);
  assert_true(ph_field(dense, 1) == now[3]);
  /* the large block: every slice updated, ints left alone */
  for (size_t i = 0; i < LW; i++) {
    ph_value v = ph_field(*big, i);
    int ptr = i % 997 == 0;
    for (size_t s = 0; s < sizeof spots / sizeof *spots; s++)
      ptr |= spots[s] == i;
    if (ptr) {
      if (v != now[i % 10])
        fail_msg("large block field %zu not updated", i);
    } else if (v != ph_val_int((intptr_t)tgt[i % 10])) {
      fail_msg("large block field %zu (an int) changed", i);
    }
  }
  /* nothing left to do */
  st = cu_compact(d);
  assert_int_equal(st.evacuated_blocks, 0);
  cu_graph c = walk_all(scope, 7, 0);
  assert_true(c.hash == a.hash);
  cu_graph_free(&a);
  cu_graph_free(&b);
  env_close(&e);
}

/* ------------------------------------------------------ 0, 1, all live */

static void zero_live_blocks(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  env e;
  env_open(&e, &cfg);
  ph_stats st = cu_compact(e.d); /* empty heap */
  assert_int_equal(st.compactions, 1);
  assert_int_equal(st.evacuated_blocks, 0);
  assert_int_equal(st.live_blocks, 0);
  for (int i = 0; i < 20000; i++) /* garbage only */
    assert_true(ph_is_block(ph_alloc(e.d, 1 + (size_t)i % 40, 0)));
  st = cu_compact(e.d);
  assert_int_equal(st.compactions, 2);
  assert_int_equal(st.evacuated_blocks, 0);
  assert_int_equal(st.live_blocks, 0);
  assert_int_equal(st.pool_bytes, 0);
  env_close(&e);
}

static void one_live_block(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  env e;
  env_open(&e, &cfg);
  ph_value *one = ph_root(e.d, PH_UNIT);
  for (int i = 0; i < 20000; i++) {
    ph_value b = ph_alloc(e.d, 5, 0);
    assert_true(ph_is_block(b));
    ph_set_field(b, 0, ph_val_int(i));
    if (i == 10007) {
      *one = b;
      ph_set_field(b, 1, b);
    }
  }
  ph_value before = *one;
  ph_value *scope[1] = {one};
  cu_graph a = walk_all(scope, 1, 0);
  ph_stats st = cu_compact(e.d);
  assert_int_equal(st.live_blocks, 1);
  /* its pool is kept; compact.pack moves the block to the first slot */
  assert_int_equal(st.evacuated_blocks, 1);
  assert_int_equal(st.evacuated_pools, 0); /* the sweep freed the others */
  assert_true(cu_pool_of(*one, e.pool_size) == cu_pool_of(before, e.pool_size));
  assert_true(*one < before);
  assert_true(ph_field(*one, 0) == ph_val_int(10007));
  assert_true(ph_field(*one, 1) == *one);
  cu_graph b = walk_all(scope, 1, 0);
  assert_true(a.hash == b.hash);
  env_close(&e);
}

static void all_live_blocks_nothing_moves(void **state) {
  (void)state;
  tu_rng r = {tu_mix(tu_seed_named("all_live_blocks_nothing_moves"), 0)};
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  env e;
  env_open(&e, &cfg);
  ph_value *t, *ss[1];
  ss[0] = ph_root(e.d, PH_UNIT);
  build_random(&e, &r, 100, &t, ss, 1);
  /* every block stays in the table: all live */
  for (size_t i = 0; i < ph_wosize(*t); i++)
    assert_true(ph_is_block(ph_field(*t, i)));
  ph_value *scope[2] = {t, ss[0]};
  cu_graph a = walk_all(scope, 2, 0);
  ph_stats st = cu_compact(e.d);
  /* one domain: each class has at most one partly filled pool */
  assert_int_equal(st.evacuated_blocks, 0);
  assert_int_equal(st.live_blocks, a.nodes);
  cu_graph b = walk_all(scope, 2, 0);
  assert_true(a.hash == b.hash);
  env_close(&e);
}

static void all_pools_full_nothing_to_do(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.pool_size = 8 << 10;
  size_t wos[3] = {1, 6, 30};
  size_t C[3];
  for (int k = 0; k < 3; k++)
    C[k] = cu_nslots(&cfg, wos[k]);
  env e;
  env_open(&e, &cfg);
  ph_value *tab[3];
  for (int k = 0; k < 3; k++) {
    tab[k] = ph_root(e.d, PH_UNIT);
    assert_true(cu_fill_pools(e.d, e.pool_size, wos[k], 7, C[k], tab[k]));
  }
  /* the blocks' classes are full (the tables are medium blocks, in pools
   * of their own with room) */
  cu_classes cs = cu_census(e.d);
  for (int k = 0; k < 3; k++)
    assert_int_equal(cs.c[cu_class_of(&cs, wos[k])].free, 0);
  ph_value *scope[3] = {tab[0], tab[1], tab[2]};
  cu_graph a = walk_all(scope, 3, 1);
  ph_stats st = cu_compact(e.d);
  assert_int_equal(st.evacuated_blocks, 0);
  assert_int_equal(st.evacuated_pools, 0);
  assert_int_equal(st.live_blocks, 3 + 7 * (C[0] + C[1] + C[2]));
  cu_graph b = walk_all(scope, 3, 1);
  assert_true(a.hash == b.hash);
  assert_int_equal(cu_moved(&a, &b), 0);
  cu_graph_free(&a);
  cu_graph_free(&b);
  env_close(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(graph_identity_random_every_class_32k),
      cmocka_unit_test(graph_identity_random_every_class_4k),
      cmocka_unit_test(graph_identity_random_every_class_256k),
      cmocka_unit_test(roots_all_kinds_large_immediates_self_cycles),
      cmocka_unit_test(zero_live_blocks),
      cmocka_unit_test(one_live_block),
      cmocka_unit_test(all_live_blocks_nothing_moves),
      cmocka_unit_test(all_pools_full_nothing_to_do),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
