/* tests/test_medium.c -- medium blocks (DESIGN.md: heap.sizeclass.medium,
 * heap.unit.lookup): blocks above the small classes, up to the top medium
 * class, are served from pools of several contiguous units; a block whose
 * field 0 lies in a later unit of its pool works with every API that takes
 * a value; sweeping frees the pools' units as runs; the census counts
 * them; compaction moves medium blocks out of sparse medium pools.
 *
 * Internal test: includes api/api.h to find a block's pool
 * (ph_block_unit) and to read the size-class tables. */
#include "test_util.h"

#include "api/api.h"

#include <sys/mman.h>

/* A heap of cfg with this thread attached as *d. */
static ph_heap *heap_open_cfg(const ph_config *cfg, ph_domain **d) {
  ph_heap *h;
  assert_int_equal(ph_heap_create(cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, d), PH_OK);
  return h;
}

static ph_heap *heap_open(size_t pool_size, ph_release_mode rel,
                          ph_domain **d) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.release = rel;
  if (pool_size)
    cfg.pool_size = pool_size;
  return heap_open_cfg(&cfg, d);
}

static void heap_close(ph_heap *h, ph_domain *d) {
  assert_int_equal(ph_domain_detach(d), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
}

static ph_pool *pool_of(ph_heap *h, ph_value v) {
  pthread_mutex_lock(&h->lock);
  ph_unit_hdr *u = ph_block_unit(h, v);
  pthread_mutex_unlock(&h->lock);
  assert_non_null(u);
  assert_int_equal(u->sig, PH_SIG_POOL);
  assert_int_equal(u->kind, PH_U_POOL);
  return (ph_pool *)u;
}

/* The sizes tried in a medium class: its smallest, a few between, its
 * largest. */
static size_t next_medium(ph_heap *h, size_t wo) {
  unsigned c = ph_class_of_wosize(h, wo);
  size_t hi = h->class_wsize[c] - 1;
  size_t step = (hi - h->class_wsize[c - 1]) / 4 + 1;
  return wo == hi ? wo + 1 : (wo + step < hi ? wo + step : hi);
}

/* Every request size from 1 field to the top medium class gets a slot
 * that wastes less than 1/8 and, above the small classes, comes from a
 * medium pool (not a large block): its pool header is found from any unit,
 * its class is the wosize's, and the large bytes do not move.  Every small
 * size, and in every medium class its smallest, largest and three sizes
 * between are allocated; ph_class_of_wosize is checked for all of them. */
static void test_every_size_served(void **state) {
  (void)state;
  const size_t pools[] = {4096, 32768, 256 << 10};
  for (size_t pi = 0; pi < sizeof pools / sizeof *pools; pi++) {
    ph_domain *d;
    ph_heap *h = heap_open(pools[pi], PH_RELEASE_DECOMMIT, &d);
    assert_int_equal(h->max_small_wosize, PH_MEDIUM_TOP_WSIZE - 1);
    size_t smallmax = h->class_wsize[h->nsmall - 1] - 1, served = 0;
    for (size_t wo = 1; wo <= h->max_small_wosize; wo++) {
      unsigned c = ph_class_of_wosize(h, wo);
      size_t slot = h->class_wsize[c];
      if (slot < wo + 1 || (slot - wo - 1) * 8 >= slot)
        fail_msg("pool %zu wosize %zu: slot %zu words", pools[pi], wo, slot);
      assert_true((c < h->nsmall) == (wo <= smallmax));
    }
    for (size_t wo = smallmax - 2; wo <= h->max_small_wosize;
         wo = wo > smallmax ? next_medium(h, wo) : wo + 1) {
      uint64_t large0 = tu_stats(h).large_bytes;
      size_t m = ph_scope_open(d);
      ph_value v = ph_alloc(d, wo, wo % 2 ? PH_TAG_RAW : 0);
      assert_true(ph_is_block(v));
      ph_root(d, v);
      assert_int_equal(ph_wosize(v), wo);
      ph_pool *p = pool_of(h, v);
      assert_int_equal(p->cls, ph_class_of_wosize(h, wo));
      assert_true((p->cls >= h->nsmall) == (wo > smallmax));
      assert_int_equal(tu_stats(h).large_bytes, large0);
      /* the slot is really that big */
      for (size_t i = 0; i < wo; i++)
        ph_set_field(v, i, ph_val_int((intptr_t)i));
      assert_int_equal(ph_field(v, wo - 1), ph_val_int((intptr_t)wo - 1));
      assert_int_equal(ph_scope_close(d, m), PH_OK);
      served++;
      if (served % 64 == 0)
        assert_int_equal(ph_collect(d), PH_OK);
    }
    /* one more field: a large block */
    ph_value b = ph_alloc(d, h->max_small_wosize + 1, PH_TAG_RAW);
    assert_true(ph_is_block(b));
    assert_int_equal(ph_unit_of(h, b)->kind, PH_U_LARGE);
    print_message("pool %zu: %u small + %u medium classes, %zu sizes "
                  "allocated\n",
                  pools[pi], h->nsmall, h->nclasses - h->nsmall, served);
    tu_verify_ok(d);
    heap_close(h, d);
  }
}

/* A medium class of at least two units per pool, and a full pool of it
 * whose last block's field 0 lies in a later unit. */
typedef struct tailpool {
  unsigned cls;
  size_t wo;
  ph_value *blocks; /* nslots blocks, rooted by the caller's scope */
  ph_pool *pool;
  size_t ntail; /* blocks whose field 0 lies after the first unit */
} tailpool;

static void tailpool_make(ph_heap *h, ph_domain *d, tailpool *t) {
  t->cls = h->nsmall;
  while (h->class_units[t->cls] < 2)
    t->cls++;
  t->wo = h->class_wsize[t->cls] - 1;
  uint32_t ns = h->class_nslots[t->cls];
  t->blocks = calloc(ns, sizeof *t->blocks);
  assert_non_null(t->blocks);
  t->pool = NULL;
  t->ntail = 0;
  for (uint32_t i = 0; i < ns; i++) {
    ph_value v = ph_alloc(d, t->wo, 0);
    assert_true(ph_is_block(v));
    ph_root(d, v);
    for (size_t k = 0; k < t->wo; k++)
      ph_set_field(v, k, ph_val_int((intptr_t)(i * 1000 + k)));
    ph_pool *p = pool_of(h, v);
    if (!t->pool)
      t->pool = p;
    assert_ptr_equal(p, t->pool); /* a fresh pool, filled in order */
    t->blocks[i] = v;
    if ((v & h->pool_mask) != (ph_value)p)
      t->ntail++;
  }
  assert_true(t->ntail > 0);
}

static unsigned final_calls;
static ph_value final_seen[64];
static void on_final(ph_domain *d, ph_value v, void *user) {
  (void)d;
  (void)user;
  if (final_calls < 64)
    final_seen[final_calls] = v;
  final_calls++;
}

/* Blocks whose field 0 lies in a later unit of their pool: ph_field and
 * ph_set_field, ph_pin and ph_unpin, ph_finalise, weak fields pointing to
 * them, global roots; a collection keeps what is reachable, runs the
 * finaliser and clears the weak field of what is not; the pin keeps its
 * block (and its pool) in place through a compaction; ph_verify is clean
 * throughout. */
static void test_tail_unit_blocks_every_api(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = heap_open(0, PH_RELEASE_DECOMMIT, &d);
  size_t m = ph_scope_open(d);
  tailpool t;
  tailpool_make(h, d, &t);
  uint32_t ns = h->class_nslots[t.cls];
  ph_value last = t.blocks[ns - 1], prev = t.blocks[ns - 2];
  assert_true((last & h->pool_mask) != (ph_value)t.pool);
  /* fields */
  ph_set_field(last, 0, ph_val_int(-5));
  assert_int_equal(ph_field(last, 0), ph_val_int(-5));
  ph_set_field(last, 0, ph_val_int(0));
  /* pin, finalise, weak, a global root */
  assert_int_equal(ph_pin(d, last), PH_OK);
  assert_int_equal(ph_finalise(d, prev, on_final, NULL, PH_FINAL_FIRST), PH_OK);
  ph_value *weak = ph_root(d, ph_alloc_weak(d, 2));
  assert_non_null(weak);
  ph_set_field(*weak, 0, prev);
  ph_set_field(*weak, 1, last);
  static ph_value global;
  global = t.blocks[ns - 3];
  assert_int_equal(ph_root_add(h, &global), PH_OK);
  tu_verify_ok(d);
  /* drop the scope's roots of the pool's blocks: only the pin, the global
   * and the weak block's (weak) fields are left */
  ph_value wk = *weak;
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  m = ph_scope_open(d);
  weak = ph_root(d, wk);
  final_calls = 0;
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_run_finalisers(d), PH_OK);
  assert_int_equal(final_calls, 1);
  assert_int_equal(final_seen[0], prev);
  assert_int_equal(ph_field(*weak, 1), last); /* pinned: alive */
  ph_stats st = tu_stats(h);
  assert_int_equal(st.pinned_blocks, 1);
  tu_verify_ok(d);
  /* the pool is sparse now (2 of nslots blocks, one pinned, one held by
   * the global): a compaction keeps the pinned block where it is */
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(ph_field(*weak, 1), last);
  for (size_t k = 1; k < t.wo; k++)
    assert_int_equal(ph_field(last, k),
                     ph_val_int((intptr_t)((ns - 1) * 1000 + k)));
  for (size_t k = 0; k < t.wo; k++)
    assert_int_equal(ph_field(global, k),
                     ph_val_int((intptr_t)((ns - 3) * 1000 + k)));
  tu_verify_ok(d);
  /* unpinned and unreferenced: the weak field is cleared, the pool freed */
  assert_int_equal(ph_unpin(d, last), PH_OK);
  assert_int_equal(ph_root_remove(h, &global), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_field(*weak, 1), 0);
  assert_int_equal(ph_field(*weak, 0), 0);
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  free(t.blocks);
  heap_close(h, d);
}

/* Bad input through a medium pool's units: an address inside a block in a
 * tail unit, a tail unit's first byte (inside a slot), the pool's unused
 * tail, a free slot: ph_pin and ph_finalise refuse with PH_EINVAL and
 * change nothing; the heap verifies. */
static void test_tail_unit_bad_input(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = heap_open(0, PH_RELEASE_DECOMMIT, &d);
  size_t m = ph_scope_open(d);
  tailpool t;
  tailpool_make(h, d, &t);
  uint32_t ns = h->class_nslots[t.cls];
  ph_value last = t.blocks[ns - 1];
  ph_value tail_unit = (ph_value)t.pool + h->pool_size;
  size_t sb = (size_t)h->class_wsize[t.cls] * 8;
  ph_value pool_end =
      (ph_value)t.pool + ((size_t)h->class_units[t.cls] << h->pool_shift);
  ph_value after_slots = (ph_value)ph_pool_slots(h, t.pool) + ns * sb + 8;
  ph_value bad[] = {last + 8, last + 64, tail_unit, tail_unit + 8,
                    pool_end - 8};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ph_value v = bad[i] & ~(ph_value)7;
    if (v == last)
      continue;
    assert_int_equal(ph_pin(d, v), PH_EINVAL);
    assert_int_equal(ph_finalise(d, v, on_final, NULL, PH_FINAL_FIRST),
                     PH_EINVAL);
  }
  if (after_slots + 8 <= pool_end) {
    assert_int_equal(ph_pin(d, after_slots), PH_EINVAL);
  }
  /* a free slot (its header 0) in a tail unit */
  ph_value freed = t.blocks[ns - 2];
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  m = ph_scope_open(d);
  ph_root(d, last);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_pin(d, freed), PH_EINVAL);
  assert_int_equal(tu_stats(h).pinned_blocks, 0);
  assert_int_equal(ph_pin(d, last), PH_OK);
  assert_int_equal(ph_unpin(d, last), PH_OK);
  tu_verify_ok(d);
  /* heap.verify checks the tails: a wrong distance back, a tail made a
   * free unit */
  ph_chunk *c = t.pool->chunk;
  uint32_t tu = t.pool->unit + 1;
  char why[256];
  c->ucls[tu] = 2;
  assert_int_equal(ph_verify(d, why, sizeof why), PH_ECORRUPT);
  assert_non_null(strstr(why, "tail"));
  c->ucls[tu] = 1;
  c->ustate[tu] = PH_U_FREE_COMM;
  assert_int_equal(ph_verify(d, why, sizeof why), PH_ECORRUPT);
  c->ustate[tu] = PH_U_POOL_TAIL;
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  free(t.blocks);
  heap_close(h, d);
}

typedef struct rows {
  unsigned n;
  ph_census_class r[PH_MAX_CLASSES];
} rows;

static void census_row(const ph_census_class *c, void *user) {
  rows *r = user;
  if (r->n < PH_MAX_CLASSES)
    r->r[r->n] = *c;
  r->n++;
}

/* The census has a row per medium class (after the small ones) counting
 * its pools and blocks; the sweep frees dead medium pools and their units
 * come back (pool bytes to 0, the free units committed, then given back by
 * a compaction's release). */
static void test_census_and_sweep(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = heap_open(0, PH_RELEASE_DECOMMIT, &d);
  ph_stats st0 = tu_stats(h);
  size_t m = ph_scope_open(d);
  size_t count[PH_MAX_CLASSES] = {0};
  uint64_t units = 0;
  for (unsigned c = h->nsmall; c < h->nclasses; c++) {
    size_t n = h->class_nslots[c] + 1; /* two pools */
    for (size_t i = 0; i < n; i++) {
      ph_value v = ph_alloc(d, h->class_wsize[c] - 1 - i % 2, PH_TAG_RAW);
      assert_true(ph_is_block(v));
      ph_root(d, v);
    }
    count[c] = n;
    units += 2 * h->class_units[c];
  }
  rows r = {0};
  assert_int_equal(ph_census(d, census_row, &r), PH_OK);
  ph_stats st = tu_stats(h);
  assert_int_equal(r.n, st.size_classes + st.medium_classes);
  assert_int_equal(st.medium_classes, h->nclasses - h->nsmall);
  for (unsigned c = h->nsmall; c < h->nclasses; c++) {
    assert_int_equal(r.r[c].size_class, c);
    assert_int_equal(r.r[c].block_words, h->class_wsize[c]);
    assert_int_equal(r.r[c].pools, 2);
    assert_int_equal(r.r[c].live_blocks, count[c]);
    assert_int_equal(r.r[c].free_blocks, h->class_nslots[c] - 1);
  }
  assert_int_equal(st.pool_bytes - st0.pool_bytes, units * h->pool_size);
  assert_int_equal(st.large_bytes, 0);
  /* the rows' committed bytes count a medium pool's every unit */
  uint64_t committed = 0;
  for (unsigned c = 0; c < h->nclasses; c++) {
    committed += r.r[c].committed_bytes;
    if (c >= h->nsmall)
      assert_int_equal(r.r[c].committed_bytes,
                       2 * (uint64_t)h->class_units[c] * h->pool_size);
  }
  assert_int_equal(committed, st.pool_bytes);
  tu_verify_ok(d);
  /* all dead: the sweep frees every medium pool */
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats s1 = tu_stats(h);
  assert_int_equal(s1.pool_bytes, st0.pool_bytes);
  memset(&r, 0, sizeof r);
  assert_int_equal(ph_census(d, census_row, &r), PH_OK);
  for (unsigned c = h->nsmall; c < h->nclasses; c++)
    assert_int_equal(r.r[c].pools, 0);
  tu_verify_ok(d);
  /* their units are free runs: a compaction releases them */
  assert_int_equal(ph_compact(d), PH_OK);
  ph_stats s2 = tu_stats(h);
  assert_true(s2.committed_bytes + units * h->pool_size / 2 <=
              st.committed_bytes);
  /* and they are reused: the same again takes no more reservation */
  m = ph_scope_open(d);
  for (unsigned c = h->nsmall; c < h->nclasses; c++)
    for (size_t i = 0; i < count[c]; i++)
      ph_root(d, ph_alloc(d, h->class_wsize[c] - 1, PH_TAG_RAW));
  assert_true(tu_stats(h).reserved_bytes <= st.reserved_bytes);
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

/* A sparse heap of medium blocks (every class, one block in eight kept),
 * each holding a checksum of its index and pointers to other kept blocks
 * (medium and small): a compaction moves blocks out of the sparse medium
 * pools (evacuated blocks > 0, pools freed), the committed bytes drop, the
 * mappings do not grow, every block's contents and the graph's pointers
 * survive, ph_verify is clean, and a second compaction moves nothing. */
static void sparse_case(ph_release_mode rel, size_t pool_size) {
  ph_domain *d;
  ph_heap *h = heap_open(pool_size, rel, &d);
  tu_rng r;
  tu_rng_init(&r, 71);
  size_t per = tu_scale(12, 3), nm = h->nclasses - h->nsmall;
  size_t n = nm * per;
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, ph_alloc(d, n + 1, 0)); /* medium or large */
  size_t k = 0;
  for (size_t round = 0; round < per * 8; round++)
    for (unsigned c = h->nsmall; c < h->nclasses; c++) {
      size_t wo = h->class_wsize[c] - 1 - tu_below(&r, 4);
      ph_value v = ph_alloc(d, wo, 0);
      assert_true(ph_is_block(v));
      if (round % 8 != 3 || k >= n)
        continue; /* garbage */
      ph_set_field(v, 0, ph_val_int((intptr_t)k));
      for (size_t f = 3; f < wo; f++)
        ph_set_field(v, f, ph_val_int((intptr_t)(tu_mix(k, f) >> 2)));
      /* a small block pointing back at it */
      ph_value s = ph_alloc(d, 2, 0);
      ph_set_field(s, 0, v);
      ph_set_field(s, 1, ph_val_int((intptr_t)k));
      ph_set_field(v, 1, s);
      ph_set_field(v, 2, k ? ph_field(*tab, tu_below(&r, k)) : PH_UNIT);
      ph_set_field(*tab, k++, v);
    }
  assert_int_equal(k, n);
  assert_int_equal(ph_collect(d), PH_OK);
  tu_verify_ok(d);
  ph_stats s0 = tu_stats(h);
  ph_value old[8];
  for (int i = 0; i < 8; i++)
    old[i] = ph_field(*tab, (size_t)i * (n / 8));
  assert_int_equal(ph_compact(d), PH_OK);
  ph_stats s1 = tu_stats(h);
  print_message("release %d pool %zu: %zu medium blocks kept (live %llu "
                "bytes), moved %llu blocks (%llu bytes), %llu pools freed, "
                "committed %llu -> %llu\n",
                (int)rel, h->pool_size, n, (unsigned long long)s1.live_bytes,
                (unsigned long long)s1.evacuated_blocks,
                (unsigned long long)s1.evacuated_bytes,
                (unsigned long long)s1.evacuated_pools,
                (unsigned long long)s0.committed_bytes,
                (unsigned long long)s1.committed_bytes);
  assert_true(s1.evacuated_blocks > 0);
  assert_true(s1.evacuated_pools > 0);
  if (rel != PH_RELEASE_KEEP)
    assert_true(s1.committed_bytes < s0.committed_bytes);
  assert_true(s1.mappings <= s0.mappings);
  assert_int_equal(s1.live_blocks, s0.live_blocks);
  int moved = 0;
  for (int i = 0; i < 8; i++)
    moved += ph_field(*tab, (size_t)i * (n / 8)) != old[i];
  assert_true(moved > 0);
  /* contents and pointers */
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_field(*tab, i);
    size_t wo = ph_wosize(v);
    assert_int_equal(ph_field(v, 0), ph_val_int((intptr_t)i));
    for (size_t f = 3; f < wo; f++)
      if (ph_field(v, f) != ph_val_int((intptr_t)(tu_mix(i, f) >> 2)))
        fail_msg("block %zu field %zu changed", i, f);
    ph_value s = ph_field(v, 1);
    assert_int_equal(ph_field(s, 0), v);
    assert_int_equal(ph_field(s, 1), ph_val_int((intptr_t)i));
    ph_value o = ph_field(v, 2);
    if (i)
      assert_true(ph_is_block(o) &&
                  ph_wosize(o) > h->class_wsize[h->nsmall - 1] - 1 &&
                  ph_field(ph_field(o, 1), 0) == o);
  }
  tu_verify_ok(d);
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(tu_stats(h).evacuated_blocks, 0);
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

static void test_compact_sparse_medium(void **state) {
  (void)state;
  sparse_case(PH_RELEASE_DECOMMIT, 0);
  sparse_case(PH_RELEASE_UNMAP, 0);
  sparse_case(PH_RELEASE_KEEP, 0);
  sparse_case(PH_RELEASE_DECOMMIT, 4096);
}

/* Pages of [a, b) resident (mincore). */
static size_t resident_pages(uintptr_t a, uintptr_t b) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (b - a) / pg, res = 0;
  unsigned char vec[64];
  for (size_t i = 0; i < n; i += sizeof vec) {
    size_t k = n - i < sizeof vec ? n - i : sizeof vec;
    assert_int_equal(mincore((void *)(a + i * pg), k * pg, vec), 0);
    for (size_t j = 0; j < k; j++)
      res += vec[j] & 1;
  }
  return res;
}

/* heap.release.trim and compact.holes.free: in every medium class whose
 * slots span two pages or more, one pool filled with blocks that touch
 * every page, one block of it kept: after the compaction (nothing to move:
 * the pool is kept) the pages lying wholly inside its other slots, past
 * each slot's header and field 0, are not resident (DECOMMIT, UNMAP), every
 * one still is with KEEP.  In the managed heap those pages hold no live
 * byte, so they are holes (no longer counted committed: pool_bytes drops
 * by the hole bytes, and the slots touching them are neither free nor
 * live); the pool layer's compaction trims them instead
 * (tests/test_pools.c, test_medium_pools).  The kept blocks are intact,
 * ph_verify is clean, and blocks of every class are served again, each
 * written and read back whole (with KEEP in the free slots of the same
 * pool). */
static void trim_case(ph_release_mode rel) {
  ph_domain *d;
  ph_heap *h = heap_open(0, rel, &d);
  uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, ph_alloc(d, h->nclasses, 0));
  size_t ncls = 0;
  for (unsigned c = h->nsmall; c < h->nclasses; c++) {
    size_t wo = h->class_wsize[c] - 1;
    if (h->class_wsize[c] * 8 < 2 * pg)
      continue;
    for (uint32_t i = 0; i < h->class_nslots[c]; i++) {
      ph_value v = ph_alloc(d, wo, PH_TAG_RAW);
      assert_true(ph_is_block(v));
      memset(ph_raw(v), (int)(c + i), wo * 8); /* every page resident */
      if (i == 0)
        ph_set_field(*tab, c, v);
    }
    ncls++;
  }
  assert_true(ncls > 20);
  assert_int_equal(ph_collect(d), PH_OK);
  ph_stats s0 = tu_stats(h);
  assert_int_equal(ph_compact(d), PH_OK);
  ph_stats s1 = tu_stats(h);
  tu_verify_ok(d);
  /* the trimmed pages stay counted; only the small pool of tab gets holes
   * (compact.holes.free), which are not */
  pthread_mutex_lock(&h->lock);
  size_t hole_bytes = h->hole_bytes;
  pthread_mutex_unlock(&h->lock);
  assert_int_equal(s1.pool_bytes + hole_bytes, s0.pool_bytes);
  assert_true(s1.committed_bytes >= s1.pool_bytes);
  size_t pages = 0, res = 0;
  for (unsigned c = h->nsmall; c < h->nclasses; c++) {
    if (h->class_wsize[c] * 8 < 2 * pg)
      continue;
    ph_value v = ph_field(*tab, c);
    size_t wo = h->class_wsize[c] - 1;
    for (size_t f = 0; f < wo * 8; f++)
      if (((unsigned char *)ph_raw(v))[f] != (unsigned char)c)
        fail_msg("class %u: byte %zu of the kept block changed", c, f);
    ph_pool *p = pool_of(h, v);
    assert_int_equal(p->nfree + p->nhole, h->class_nslots[c] - 1);
    if (rel == PH_RELEASE_KEEP)
      assert_int_equal(p->nhole, 0);
    size_t nf = 0;
    for (ph_value f = p->free; f; f = *(ph_value *)f)
      nf++;
    assert_int_equal(nf, p->nfree);
    for (uint32_t i = 1; i < h->class_nslots[c]; i++) {
      uintptr_t s = (uintptr_t)v - 8 + (uintptr_t)i * h->class_wsize[c] * 8;
      uintptr_t a = (s + 16 + pg - 1) & ~(pg - 1);
      uintptr_t b = (s + h->class_wsize[c] * 8) & ~(pg - 1);
      assert_true(b > a);
      pages += (b - a) / pg;
      res += resident_pages(a, b);
    }
  }
  print_message("release %d: %zu classes, %zu pages inside other slots, %zu "
                "resident after the compaction; pool bytes %llu -> %llu\n",
                (int)rel, ncls, pages, res, (unsigned long long)s0.pool_bytes,
                (unsigned long long)s1.pool_bytes);
  if (rel == PH_RELEASE_KEEP)
    assert_int_equal(res, pages);
  else if (rel != PH_RELEASE_LAZY) /* MADV_FREE pages read resident */
    assert_int_equal(res, 0);
  /* the free slots serve blocks again, whole */
  ph_value *again = ph_root(d, ph_alloc(d, h->nclasses, 0));
  for (int round = 0; round < 2; round++)
    for (unsigned c = h->nsmall; c < h->nclasses; c++) {
      if (h->class_wsize[c] * 8 < 2 * pg)
        continue;
      size_t wo = h->class_wsize[c] - 1;
      ph_value v = round ? ph_field(*again, c) : ph_alloc(d, wo, PH_TAG_RAW);
      if (!round) {
        assert_true(ph_is_block(v));
        if (rel == PH_RELEASE_KEEP)
          assert_true(pool_of(h, v) == pool_of(h, ph_field(*tab, c)));
        memset(ph_raw(v), (int)(c + 7), wo * 8);
        ph_set_field(*again, c, v);
        continue;
      }
      for (size_t f = 0; f < wo * 8; f++)
        if (((unsigned char *)ph_raw(v))[f] != (unsigned char)(c + 7))
          fail_msg("class %u: byte %zu of a new block changed", c, f);
    }
  tu_verify_ok(d);
  assert_int_equal(ph_collect(d), PH_OK);
  tu_verify_ok(d);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

static void test_compact_trims_free_medium_slots(void **state) {
  (void)state;
  trim_case(PH_RELEASE_DECOMMIT);
  trim_case(PH_RELEASE_UNMAP);
  trim_case(PH_RELEASE_KEEP);
  trim_case(PH_RELEASE_LAZY);
}

/* compact.holes.free, the small pools' counterpart of heap.release.trim:
 * after a compaction, the granules (heap.pool.holes) of a kept small pool
 * that hold no live slot (nor the header) are holes, given back to the OS
 * in every mode but KEEP.  One small class, the first medium class (pools
 * of one unit) and the first of several units (holes in the masks of its
 * units), each over four pools: the first kept
 * full, the first quarter of the second, one block in 64 of the third
 * (evacuated into the second), none of the fourth.  Every
 * such granule is a hole and not resident (LAZY: a hole, its MADV_FREE
 * pages may still read resident); with KEEP none is a hole and all are
 * resident; the census counts the holes; the survivors are intact; new
 * blocks of the class are served (never in a hole) and a second round of
 * collection and compaction verifies. */
static void census_holes(const ph_census_class *c, void *user) {
  size_t *u = user;
  if (c->size_class == u[0]) {
    u[1] = c->holed_pools;
    u[2] = c->hole_blocks;
  }
}

static void holes_case(ph_release_mode rel, int medium) {
  ph_domain *d;
  ph_heap *h = heap_open(0, rel, &d);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  /* a small class, the first medium one (pools of one unit), the first
   * medium one of several units */
  unsigned mc = h->nsmall;
  while (medium == 2 && h->class_units[mc] < 2)
    mc++;
  size_t gsz = (size_t)1 << h->hole_shift,
         wo = medium ? h->class_wsize[mc] - 1 : 3;
  unsigned cls = ph_class_of_wosize(h, wo);
  size_t ng = h->pool_size / gsz, nu = h->class_units[cls];
  assert_true(nu * ng <= 64);
  uint32_t ns = h->class_nslots[cls];
  size_t sb = (size_t)h->class_wsize[cls] * 8, n = 4 * (size_t)ns, nk = 0;
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, ph_alloc(d, n, 0));
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v));
    for (size_t f = 0; f < wo; f++)
      ph_set_field(v, f, ph_val_int((intptr_t)(i * 8 + f)));
    int keep = i < (size_t)ns * 5 / 4 ||
               (i >= 2 * (size_t)ns && i < 3 * (size_t)ns && i % 64 == 0);
    ph_set_field(*tab, i, keep ? v : ph_val_int(0));
    nk += (size_t)keep;
  }
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  /* the kept pools and, per granule, whether a survivor's slot touches it */
  ph_pool *pools[8];
  uint64_t used[8] = {0};
  size_t np = 0;
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_field(*tab, i);
    if (!ph_is_block(v))
      continue;
    for (size_t f = 0; f < wo; f++)
      assert_true(ph_field(v, f) == ph_val_int((intptr_t)(i * 8 + f)));
    ph_pool *p = pool_of(h, v);
    size_t k = 0;
    while (k < np && pools[k] != p)
      k++;
    if (k == np) {
      assert_true(np < 8);
      pools[np++] = p;
    }
    size_t a = (size_t)(v - 8 - (ph_value)p);
    for (size_t g = a / gsz; g <= (a + sb - 1) / gsz; g++)
      used[k] |= (uint64_t)1 << g;
  }
  assert_int_equal(np, (nk + ns - 1) / ns); /* k = ceil(L / C) pools kept */
  size_t want = 0, holes = 0, res = 0, hdrg = (h->class_hdr[cls] - 1) / gsz;
  for (size_t k = 0; k < np; k++) {
    ph_pool *p = pools[k];
    uint64_t ph = 0; /* the masks of its units, side by side */
    for (size_t u = 0; u < nu; u++)
      ph |= p->chunk->holes[p->unit + u] << (u * ng);
    assert_int_equal(ph & used[k], 0); /* no survivor in a hole */
    for (size_t g = hdrg + 1; g < nu * ng; g++) {
      if (used[k] >> g & 1)
        continue;
      want++;
      holes += ph >> g & 1;
      uintptr_t a = (uintptr_t)p + g * gsz;
      res += resident_pages(a, a + gsz) * pg == gsz;
    }
  }
  size_t cu[3] = {cls, 0, 0};
  assert_int_equal(ph_census(d, census_holes, cu), PH_OK);
  print_message("release %d, class %u: %zu pools kept, %zu granules without "
                "a survivor, %zu holes, %zu wholly resident; census: %zu "
                "pools with holes, %zu slots in them\n",
                (int)rel, cls, np, want, holes, res, cu[1], cu[2]);
  assert_true(want >= 4); /* the second pool is mostly free */
  if (rel == PH_RELEASE_KEEP) {
    assert_int_equal(holes, 0);
    assert_int_equal(res, want);
    assert_int_equal(cu[1], 0);
  } else {
    assert_int_equal(holes, want);
    assert_int_equal(cu[1], 1);
    assert_true(cu[2] > 0);
    if (rel != PH_RELEASE_LAZY) /* MADV_FREE pages may read resident */
      assert_int_equal(res, 0);
  }
  /* new blocks of the class are served, never in a hole (ph_verify) */
  ph_value *again = ph_root(d, ph_alloc(d, 2 * (size_t)ns, 0));
  for (size_t i = 0; i < 2 * (size_t)ns; i++) {
    ph_value v = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v));
    ph_set_field(v, 0, ph_val_int((intptr_t)i));
    ph_set_field(*again, i, v);
  }
  tu_verify_ok(d);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  for (size_t i = 0; i < 2 * (size_t)ns; i++)
    assert_true(ph_field(ph_field(*again, i), 0) == ph_val_int((intptr_t)i));
  for (size_t i = 0; i < n; i++)
    if (ph_is_block(ph_field(*tab, i)))
      assert_true(ph_field(ph_field(*tab, i), 1) ==
                  ph_val_int((intptr_t)(i * 8 + 1)));
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

static void test_compact_holes_free_pages(void **state) {
  (void)state;
  for (int medium = 0; medium < 3; medium++) {
    holes_case(PH_RELEASE_DECOMMIT, medium);
    holes_case(PH_RELEASE_UNMAP, medium);
    holes_case(PH_RELEASE_KEEP, medium);
    holes_case(PH_RELEASE_LAZY, medium);
  }
}

/* pack_case's survivors: every block of tab[0..ns) chained through field
 * 0 (tab[2 ns] the chain's head), its other fields numbered; with pool,
 * also all in one pool (*pool, found) and the highest slot index among
 * them in *top. */
static void pack_survivors(ph_heap *h, ph_value tab, size_t ns, size_t wo,
                           ph_pool **pool, uint32_t *top) {
  size_t sb = (size_t)h->class_wsize[ph_class_of_wosize(h, wo)] * 8;
  ph_value want = PH_UNIT;
  for (size_t i = 0; i < ns; i++) {
    ph_value v = ph_field(tab, i);
    if (!ph_is_block(v))
      continue;
    assert_true(ph_field(v, 0) == want);
    want = v;
    for (size_t f = 1; f < wo; f++)
      assert_true(ph_field(v, f) == ph_val_int((intptr_t)(i * 8 + f)));
    if (!pool)
      continue;
    if (!*pool)
      *pool = pool_of(h, v);
    assert_ptr_equal(pool_of(h, v), *pool); /* the class keeps one pool */
    uint32_t k = (uint32_t)((v - 8 - (ph_value)ph_pool_slots(h, *pool)) / sb);
    if (k > *top)
      *top = k;
  }
  assert_true(ph_field(tab, 2 * ns) == want);
}

/* compact.pack: a class whose blocks fit in one pool keeps that pool; a
 * few survivors scattered over it are packed into its first slots, so that
 * compact.holes.free gives its tail back.  One pool of the class filled,
 * every `step`-th block kept (chained through field 0, the rest of the
 * fields numbered; a root table of another class), a collection and a
 * compaction: the survivors are in the pool's first slots, intact, the
 * chain forwarded, and (but with MADV_FREE, whose pages may read
 * resident) the pool's resident pages are at most its header's plus
 * ceil(live bytes / page) + 1.  Without compact.pack they stay where they
 * were, a page or more each.  Then the class fills again, and a second
 * collection and compaction keep everything intact. */
static void pack_case(ph_release_mode rel, ph_compact_scope scope, int kind) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  cfg.release = rel;
  cfg.compact_scope = scope;
  ph_domain *d;
  ph_heap *h = heap_open_cfg(&cfg, &d);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  /* a small class, the first medium one (one unit), the first medium one
   * of several units */
  unsigned mc = h->nsmall;
  while (kind == 2 && h->class_units[mc] < 2)
    mc++;
  size_t wo = kind ? h->class_wsize[mc] - 1 : 3;
  unsigned cls = ph_class_of_wosize(h, wo);
  uint32_t ns = h->class_nslots[cls];
  size_t sb = (size_t)h->class_wsize[cls] * 8;
  size_t step = kind ? 4 : ns / 8, nk = 0;
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, ph_alloc(d, 2 * (size_t)ns + 1, 0));
  assert_true(ph_class_of_wosize(h, 2 * (size_t)ns + 1) != cls);
  ph_pool *p0 = NULL;
  ph_value prev = PH_UNIT;
  for (size_t i = 0; i < ns; i++) {
    ph_value v = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v));
    if (!p0)
      p0 = pool_of(h, v);
    assert_ptr_equal(pool_of(h, v), p0); /* one pool, filled in order */
    for (size_t f = 1; f < wo; f++)
      ph_set_field(v, f, ph_val_int((intptr_t)(i * 8 + f)));
    int keep = i % step == 1;
    ph_set_field(v, 0, keep ? prev : PH_UNIT);
    ph_set_field(*tab, i, keep ? v : ph_val_int(0));
    if (keep) {
      prev = v;
      nk++;
    }
  }
  ph_set_field(*tab, 2 * (size_t)ns, prev); /* the chain's head */
  assert_true(nk >= 3);
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  /* the survivors: intact, chained, and where */
  ph_pool *p = NULL;
  uint32_t top = 0;
  pack_survivors(h, *tab, ns, wo, &p, &top);
  uintptr_t a = (uintptr_t)ph_pool_base(h, p);
  size_t res = resident_pages(a, a + (h->class_units[cls] << h->pool_shift));
  size_t bound =
      (h->class_hdr[cls] + pg - 1) / pg + (nk * sb + pg - 1) / pg + 1;
  print_message("release %d, scope %d, class %u: %zu survivors of %u slots, "
                "highest slot %u, %zu pages resident (bound %zu)\n",
                (int)rel, (int)scope, cls, nk, ns, top, res, bound);
  if (rel != PH_RELEASE_KEEP) {
    assert_true(top < nk); /* packed: the first nk slots */
    if (rel != PH_RELEASE_LAZY)
      assert_true(res <= bound);
  } else {
    assert_true(top == (nk - 1) * step + 1); /* nothing moved */
  }
  /* compact.pack: a second compaction right after moves nothing */
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(tu_stats(h).evacuated_blocks, 0);
  /* the class fills again (outside the holes), and all stays intact */
  ph_value *again = ph_root(d, ph_alloc(d, 2 * (size_t)ns, 0));
  for (size_t i = 0; i < 2 * (size_t)ns; i++) {
    ph_value v = ph_alloc(d, wo, 0);
    assert_true(ph_is_block(v));
    ph_set_field(v, 1, ph_val_int((intptr_t)i));
    ph_set_field(*again, i, i % 3 ? v : ph_val_int(0));
  }
  assert_int_equal(ph_collect(d), PH_OK);
  assert_int_equal(ph_compact(d), PH_OK);
  tu_verify_ok(d);
  /* and again: a compaction after the refill's moves nothing either */
  assert_int_equal(ph_compact(d), PH_OK);
  assert_int_equal(tu_stats(h).evacuated_blocks, 0);
  for (size_t i = 0; i < 2 * (size_t)ns; i++)
    if (i % 3)
      assert_true(ph_field(ph_field(*again, i), 1) == ph_val_int((intptr_t)i));
  pack_survivors(h, *tab, ns, wo, NULL, NULL);
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

static void test_compact_packs_last_pool(void **state) {
  (void)state;
  for (int kind = 0; kind < 3; kind++) {
    pack_case(PH_RELEASE_DECOMMIT, PH_COMPACT_GLOBAL, kind);
    pack_case(PH_RELEASE_UNMAP, PH_COMPACT_GLOBAL, kind);
    pack_case(PH_RELEASE_LAZY, PH_COMPACT_GLOBAL, kind);
    pack_case(PH_RELEASE_KEEP, PH_COMPACT_GLOBAL, kind);
    pack_case(PH_RELEASE_DECOMMIT, PH_COMPACT_PER_DOMAIN, kind);
  }
}

/* compact.phase.stats: the sweep's records (partly filled pools, scanned
 * large blocks) are the compaction's scratch: a collection leaves them
 * for a compaction to plan from, and a compaction frees them (they are
 * 16 bytes a partly filled pool: 128 KiB for W1's heap), so a compacted
 * heap keeps none; the next collection records again and the next
 * compaction plans from them.  A small and a medium class, 1 block in 8
 * kept, in both rounds. */
static void test_compact_frees_records(void **state) {
  (void)state;
  ph_domain *d;
  ph_heap *h = heap_open(0, PH_RELEASE_DECOMMIT, &d);
  size_t m = ph_scope_open(d);
  size_t wos[2] = {2, h->class_wsize[h->nsmall + 2] - 1}, n = 4096;
  /* a large block (above the top medium class): a large record */
  ph_value *tab = ph_root(d, ph_alloc(d, PH_MEDIUM_TOP_WSIZE + 2 * n, 0));
  for (int round = 0; round < 2; round++) {
    for (size_t i = 0; i < 2 * n; i++) {
      ph_value v = ph_alloc(d, wos[i % 2], PH_TAG_RAW);
      assert_true(ph_is_block(v));
      ph_set_field(*tab, i, i % 16 < 2 ? v : ph_val_int(0));
    }
    assert_int_equal(ph_collect(d), PH_OK);
    ph_pool_worker *pw = &h->sec.pw[0];
    assert_non_null(pw->cands);
    assert_true(pw->ncands > 2 && pw->cands_cap >= pw->ncands);
    assert_non_null(pw->larges); /* tab */
    ph_stats s0 = tu_stats(h);
    assert_int_equal(ph_compact(d), PH_OK);
    ph_stats s1 = tu_stats(h);
    tu_verify_ok(d);
    assert_true(s1.pool_bytes < s0.pool_bytes); /* it moved blocks */
    assert_null(pw->cands);
    assert_null(pw->larges);
    assert_int_equal(pw->cands_cap, 0);
    assert_int_equal(pw->larges_cap, 0);
  }
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
}

static void mt_fill(ph_value v, size_t id);
static int mt_intact(ph_value v, size_t id);

/* Without the map of compact.update.map (chunks more than 2^27 units
 * apart: 512 GiB with 4 KiB pools, made here by an inaccessible
 * reservation between two chunks) the update finds moved blocks from the
 * pool headers' flags: a medium block's pool header through the chunk
 * (heap.unit.lookup).  A sparse medium heap spread over both chunks still
 * compacts, with every block's contents and every pointer intact.  Not run
 * under the sanitizers (their shadow memory owns such address ranges). */
static void test_compact_without_map(void **state) {
  (void)state;
  if (TU_TSAN || TU_ASAN) {
    print_message("skipped under a sanitizer\n");
    return;
  }
  ph_domain *d;
  ph_heap *h = heap_open(4096, PH_RELEASE_DECOMMIT, &d);
  size_t m = ph_scope_open(d);
  enum { N = 400 };
  ph_value *tab = ph_root(d, ph_alloc(d, N, 0));
  size_t gap = (size_t)600 << 30;
  void *hole = mmap(NULL, gap, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(hole != MAP_FAILED);
  size_t k = 0;
  for (size_t i = 0; k < N; i++) {
    ph_value v = ph_alloc(d, 1000 + i % 700, 0);
    assert_true(ph_is_block(v));
    if (i % 5)
      continue; /* garbage */
    mt_fill(v, k + 1);
    ph_set_field(v, 1, k ? ph_field(*tab, k - 1) : PH_UNIT);
    ph_set_field(*tab, k++, v);
  }
  /* chunks at both ends of the gap: no map */
  pthread_mutex_lock(&h->lock);
  ph_chunk *c0 = h->chunks[0], *c1 = h->chunks[h->nchunks - 1];
  size_t span = (size_t)(c1->base + c1->size - c0->base) >> h->pool_shift;
  pthread_mutex_unlock(&h->lock);
  print_message("%u chunks over %zu units\n", h->nchunks, span);
  if (span <= ((size_t)1 << 27)) {
    print_message("the kernel put the chunks together: not tested\n");
  } else {
    ph_stats s0 = tu_stats(h);
    assert_int_equal(ph_compact(d), PH_OK);
    ph_stats s1 = tu_stats(h);
    assert_true(s1.evacuated_blocks > 0);
    assert_true(s1.committed_bytes < s0.committed_bytes);
    for (size_t i = 0; i < N; i++) {
      ph_value v = ph_field(*tab, i);
      ph_value keep1 = ph_field(v, 1);
      ph_set_field(v, 1, ph_val_int((intptr_t)(tu_mix(i + 1, 1) >> 2)));
      assert_true(mt_intact(v, i + 1));
      ph_set_field(v, 1, keep1);
      assert_int_equal(keep1, i ? ph_field(*tab, i - 1) : PH_UNIT);
    }
    tu_verify_ok(d);
  }
  assert_int_equal(ph_scope_close(d, m), PH_OK);
  heap_close(h, d);
  munmap(hole, gap);
}

/* heap_limit covers medium pools: kept medium blocks under a 4 MiB limit
 * are refused with PH_ENOMEM once their pools would pass it (committed
 * bytes never above it), the heap verifies, and after they die the same
 * allocations succeed again. */
static void test_heap_limit(void **state) {
  (void)state;
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.heap_limit = 4 << 20;
  ph_heap *h;
  ph_domain *d;
  assert_int_equal(ph_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(ph_domain_attach(h, &d), PH_OK);
  for (int pass = 0; pass < 2; pass++) {
    size_t m = ph_scope_open(d), n = 0;
    for (;;) {
      ph_value v = ph_alloc(d, 3000, PH_TAG_RAW);
      if (!v)
        break;
      ph_root(d, v);
      n++;
      assert_true(tu_stats(h).committed_bytes <= cfg.heap_limit);
      assert_true(n < 1000);
    }
    assert_int_equal(ph_last_error(d), PH_ENOMEM);
    ph_stats st = tu_stats(h);
    assert_true(st.committed_bytes <= cfg.heap_limit);
    assert_true(n * 3001 * 8 > cfg.heap_limit / 2);
    assert_int_equal(st.large_bytes, 0);
    print_message("pass %d: %zu blocks of 3000 fields under a 4 MiB limit\n",
                  pass, n);
    tu_verify_ok(d);
    assert_int_equal(ph_scope_close(d, m), PH_OK);
    assert_int_equal(ph_collect(d), PH_OK);
  }
  heap_close(h, d);
}

/* Two domains allocating medium and small blocks at once (pools of several
 * units opened concurrently, collections started by allocation), each
 * keeping a table of checksummed medium blocks and dropping the rest; in
 * turn one of them compacts (both take part: evacuation and update in
 * parallel).  After every round each domain checks every kept block's
 * contents; ph_verify is clean at the end. */
typedef struct mt_ctx {
  ph_heap *h;
  pthread_barrier_t bar;
  uint64_t moved; /* blocks evacuated, summed over the compactions */
} mt_ctx;

static void mt_fill(ph_value v, size_t id) {
  size_t wo = ph_wosize(v);
  ph_set_field(v, 0, ph_val_int((intptr_t)id));
  for (size_t f = 1; f < wo; f++)
    ph_set_field(v, f, ph_val_int((intptr_t)(tu_mix(id, f) >> 2)));
}

static int mt_intact(ph_value v, size_t id) {
  size_t wo = ph_wosize(v);
  if (ph_field(v, 0) != ph_val_int((intptr_t)id))
    return 0;
  for (size_t f = 1; f < wo; f++)
    if (ph_field(v, f) != ph_val_int((intptr_t)(tu_mix(id, f) >> 2)))
      return 0;
  return 1;
}

static void *mt_main(void *arg) {
  tu_thread_arg *a = arg;
  mt_ctx *x = a->user;
  ph_domain *d;
  TU_CHECK(ph_domain_attach(x->h, &d) == PH_OK);
  tu_rng r;
  tu_rng_init(&r, 100 + a->index);
  enum { T = 48 };
  size_t m = ph_scope_open(d);
  ph_value *tab = ph_root(d, ph_alloc(d, T, 0));
  size_t ids[T], next = (size_t)a->index << 32;
  for (int i = 0; i < T; i++)
    ids[i] = 0;
  size_t per = tu_scale(300, 6), rounds = 6;
  for (size_t round = 0; round < rounds; round++) {
    for (size_t i = 0; i < per; i++) {
      size_t wo =
          tu_below(&r, 4) ? 300 + tu_below(&r, 6000) : 1 + tu_below(&r, 40);
      ph_value v = ph_alloc(d, wo, 0);
      TU_CHECK(ph_is_block(v));
      if (!ph_is_block(v) || wo < 300 || tu_below(&r, 3))
        continue; /* garbage */
      size_t k = tu_below(&r, T);
      mt_fill(v, ++next);
      ph_set_field(*tab, k, v);
      ids[k] = next;
    }
    tu_dbarrier(d, &x->bar);
    if (round % a->n == a->index) {
      TU_CHECK(ph_compact(d) == PH_OK);
      ph_stats st;
      TU_CHECK(ph_stats_get(x->h, &st) == PH_OK);
      x->moved += st.evacuated_blocks;
    }
    for (int k = 0; k < T; k++)
      if (ids[k])
        TU_CHECK(mt_intact(ph_field(*tab, k), ids[k]));
    tu_dbarrier(d, &x->bar);
  }
  tu_verify_mt(d);
  TU_CHECK(ph_scope_close(d, m) == PH_OK);
  tu_dbarrier(d, &x->bar);
  TU_CHECK(ph_domain_detach(d) == PH_OK);
  return NULL;
}

static void test_two_domains_compact(void **state) {
  (void)state;
  mt_ctx x = {.h = tu_heap(100)};
  pthread_barrier_init(&x.bar, NULL, 2);
  tu_failures_reset();
  tu_threads_run(2, mt_main, &x);
  tu_assert_no_failures();
  print_message("two domains: %llu medium blocks moved by the compactions\n",
                (unsigned long long)x.moved);
  assert_true(x.moved > 0);
  pthread_barrier_destroy(&x.bar);
  assert_int_equal(ph_heap_destroy(x.h), PH_OK);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_size_served),
      cmocka_unit_test(test_tail_unit_blocks_every_api),
      cmocka_unit_test(test_tail_unit_bad_input),
      cmocka_unit_test(test_census_and_sweep),
      cmocka_unit_test(test_compact_sparse_medium),
      cmocka_unit_test(test_compact_without_map),
      cmocka_unit_test(test_compact_trims_free_medium_slots),
      cmocka_unit_test(test_compact_holes_free_pages),
      cmocka_unit_test(test_compact_packs_last_pool),
      cmocka_unit_test(test_compact_frees_records),
      cmocka_unit_test(test_heap_limit),
      cmocka_unit_test(test_two_domains_compact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
