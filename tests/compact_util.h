/* tests/compact_util.h -- helpers of the compaction tests (test_compact*.c),
 * written only against include/poolheap.h.  Include after <cmocka.h>.
 *
 * The seed reader, the RNG and the /proc readers are test_util.h's.
 * - cu_walk: a canonical serialisation of the graph reachable from a list of
 *   root values: nodes are numbered in the order a depth-first walk (explicit
 *   stack, fields in order) discovers them, and the hash covers every node's
 *   wosize and tag, every scanned field (a pointer as the number of its
 *   target, an immediate as its bits) and every raw byte.  Two heaps with
 *   equal walks hold the same graph whatever the addresses.
 * The checks (TU_CHECK, tu_verify_ok, tu_verify_mt), the stats reader and
 * the TSan scaling (tu_scale) are test_util.h's too.
 */
#ifndef TESTS_COMPACT_UTIL_H
#define TESTS_COMPACT_UTIL_H

#include "test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ph_compact, then ph_verify; returns the stats after. */
static inline ph_stats cu_compact(ph_domain *d) {
  int e = ph_compact(d);
  if (e != PH_OK)
    fail_msg("ph_compact: %s", ph_strerror(e));
  tu_verify_ok(d);
  return tu_stats(ph_domain_heap(d));
}

/* ----------------------------------------------------------- size classes */
typedef struct cu_class {
  size_t block_words, max_wosize, pools, live, free;
} cu_class;

typedef struct cu_classes {
  unsigned n;
  cu_class c[96];
} cu_classes;

static inline void cu_census_fn(const ph_census_class *c, void *user) {
  cu_classes *cs = user;
  if (c->size_class < 96) {
    cu_class *x = &cs->c[c->size_class];
    x->block_words = c->block_words;
    x->max_wosize = c->max_wosize;
    x->pools = c->pools;
    x->live = c->live_blocks;
    x->free = c->free_blocks;
    if (c->size_class + 1 > cs->n)
      cs->n = c->size_class + 1;
  }
}

static inline cu_classes cu_census(ph_domain *d) {
  cu_classes cs;
  memset(&cs, 0, sizeof cs);
  if (ph_census(d, cu_census_fn, &cs) != PH_OK)
    fail_msg("ph_census failed");
  return cs;
}

/* The class of a wosize (small blocks only). */
static inline unsigned cu_class_of(const cu_classes *cs, size_t wosize) {
  unsigned k = 0;
  while (k + 1 < cs->n && cs->c[k].max_wosize < wosize)
    k++;
  return k;
}

/* ------------------------------------------------------- canonical walk */
typedef struct cu_map {
  uintptr_t *key;
  size_t *val;
  size_t cap, n;
} cu_map;

static inline size_t cu_map_hash(uintptr_t k, size_t cap) {
  uint64_t x = (uint64_t)k * 0x9e3779b97f4a7c15ull;
  return (size_t)(x >> 17) & (cap - 1);
}

static inline void cu_map_grow(cu_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 1024;
  uintptr_t *nk = calloc(ncap, sizeof *nk);
  size_t *nv = calloc(ncap, sizeof *nv);
  if (!nk || !nv)
    abort();
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->key[i])
      continue;
    size_t j = cu_map_hash(m->key[i], ncap);
    while (nk[j])
      j = (j + 1) & (ncap - 1);
    nk[j] = m->key[i];
    nv[j] = m->val[i];
  }
  free(m->key);
  free(m->val);
  m->key = nk;
  m->val = nv;
  m->cap = ncap;
}

/* The number of k, or (size_t)-1 after inserting it with number v. */
static inline size_t cu_map_get_or_put(cu_map *m, uintptr_t k, size_t v) {
  if ((m->n + 1) * 2 > m->cap)
    cu_map_grow(m);
  size_t j = cu_map_hash(k, m->cap);
  while (m->key[j]) {
    if (m->key[j] == k)
      return m->val[j];
    j = (j + 1) & (m->cap - 1);
  }
  m->key[j] = k;
  m->val[j] = v;
  m->n++;
  return (size_t)-1;
}

static inline void cu_map_free(cu_map *m) {
  free(m->key);
  free(m->val);
  memset(m, 0, sizeof *m);
}

typedef struct cu_graph {
  uint64_t hash;
  size_t nodes;
  size_t words;   /* header + fields over all nodes */
  ph_value *addr; /* addr[i]: address of node i (if asked for) */
} cu_graph;

/* Walk the graph from roots[0..n) (values, not slots).  Must not run while
 * a collection may: no allocation here, the caller holds no other locks. */
static inline cu_graph cu_walk(const ph_value *roots, size_t n,
                               int keep_addrs) {
  cu_graph g;
  memset(&g, 0, sizeof g);
  cu_map m;
  memset(&m, 0, sizeof m);
  size_t scap = 1024, sn = 0, acap = 0;
  ph_value *stack = malloc(scap * sizeof *stack);
  if (!stack)
    abort();
  uint64_t h = 0x12345;
  for (size_t r = 0; r < n; r++) {
    ph_value v = roots[r];
    if (!ph_is_block(v)) {
      h = tu_mix(h, 0x1000 + v);
      continue;
    }
    size_t num = cu_map_get_or_put(&m, v, g.nodes);
    if (num == (size_t)-1) {
      num = g.nodes++;
      if (keep_addrs) {
        if (num >= acap) {
          acap = acap ? acap * 2 : 1024;
          g.addr = realloc(g.addr, acap * sizeof *g.addr);
          if (!g.addr)
            abort();
        }
        g.addr[num] = v;
      }
      stack[sn++] = v;
    }
    h = tu_mix(h, 0x2000 + num);
    while (sn > 0) {
      ph_value b = stack[--sn];
      size_t wo = ph_wosize(b);
      unsigned tag = ph_tag(b);
      h = tu_mix(h, (uint64_t)wo << 8 | tag);
      g.words += wo + 1;
      if (tag >= PH_TAG_RAW) {
        for (size_t i = 0; i < wo; i++)
          h = tu_mix(h, ph_field(b, i));
        continue;
      }
      for (size_t i = 0; i < wo; i++) {
        ph_value x = ph_field(b, i);
        if (!ph_is_block(x)) {
          h = tu_mix(h, 0x1000 + x);
          continue;
        }
        size_t t = cu_map_get_or_put(&m, x, g.nodes);
        if (t == (size_t)-1) {
          t = g.nodes++;
          if (keep_addrs) {
            if (t >= acap) {
              acap = acap ? acap * 2 : 1024;
              g.addr = realloc(g.addr, acap * sizeof *g.addr);
              if (!g.addr)
                abort();
            }
            g.addr[t] = x;
          }
          if (sn == scap) {
            scap *= 2;
            stack = realloc(stack, scap * sizeof *stack);
            if (!stack)
              abort();
          }
          stack[sn++] = x;
        }
        h = tu_mix(h, 0x2000 + t);
      }
    }
  }
  free(stack);
  cu_map_free(&m);
  g.hash = h;
  return g;
}

static inline void cu_graph_free(cu_graph *g) {
  free(g->addr);
  g->addr = NULL;
}

/* Nodes whose address differs between two walks of the same graph. */
static inline size_t cu_moved(const cu_graph *a, const cu_graph *b) {
  size_t n = 0;
  for (size_t i = 0; i < a->nodes && i < b->nodes; i++)
    n += a->addr[i] != b->addr[i];
  return n;
}

/* Pool base of a small block. */
static inline uintptr_t cu_pool_of(ph_value v, size_t pool_size) {
  return (uintptr_t)v & ~(uintptr_t)(pool_size - 1);
}

/* Slots per pool of the class serving wosize under cfg, measured on a
 * throwaway heap (the calling thread attaches to it briefly). */
static inline size_t cu_nslots(const ph_config *cfg, size_t wosize) {
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  if (ph_heap_create(cfg, &h) != PH_OK || ph_domain_attach(h, &d) != PH_OK)
    fail_msg("probe heap");
  size_t m = ph_scope_open(d);
  ph_root(d, ph_alloc(d, wosize, 0));
  cu_classes cs = cu_census(d);
  unsigned k = cu_class_of(&cs, wosize);
  size_t n = cs.c[k].pools ? (cs.c[k].live + cs.c[k].free) / cs.c[k].pools : 0;
  ph_scope_close(d, m);
  ph_domain_detach(d);
  ph_heap_destroy(h);
  return n;
}

static inline int cu_cmp_value(const void *a, const void *b) {
  ph_value x = *(const ph_value *)a, y = *(const ph_value *)b;
  return x < y ? -1 : x > y;
}

/* Fill npools whole pools with blocks of wosize (tag 0, field 0 the block's
 * number) and return them in *table_slot: a large scanned block whose
 * fields, sorted by address, are the blocks, pool j holding fields
 * [j*nslots, (j+1)*nslots).  Needs gc_percent 0 (no collection moves
 * anything anyway, but a full pool list needs no interference) and a fresh
 * class (no other blocks of that class).  Returns 0 if the pools did not
 * come out as whole distinct pools. */
static inline int cu_fill_pools(ph_domain *d, size_t pool_size, size_t wosize,
                                size_t npools, size_t nslots,
                                ph_value *table_slot) {
  size_t n = npools * nslots;
  *table_slot = ph_alloc(d, n, 0);
  if (!*table_slot)
    return 0;
  for (size_t i = 0; i < n; i++) {
    ph_value b = ph_alloc(d, wosize, 0);
    if (!b)
      return 0;
    ph_set_field(b, 0, ph_val_int((intptr_t)i));
    ph_set_field(*table_slot, i, b);
  }
  qsort((ph_value *)*table_slot, n, sizeof(ph_value), cu_cmp_value);
  for (size_t j = 0; j < npools; j++) {
    ph_value first = ph_field(*table_slot, j * nslots);
    ph_value last = ph_field(*table_slot, j * nslots + nslots - 1);
    if (cu_pool_of(first, pool_size) != cu_pool_of(last, pool_size))
      return 0;
    if (j > 0 && cu_pool_of(ph_field(*table_slot, j * nslots - 1), pool_size) ==
                     cu_pool_of(first, pool_size))
      return 0;
  }
  return 1;
}

#endif
