/* tests/test_pools.c -- the pool layer through its own header only
 * (include/poolheap_pools.h), with a small test collector of its own.
 *
 * The collector marks like OCaml 5: three colours rotate at every cycle
 * (MARKED, UNMARKED, GARBAGE; the fourth stays unused); blocks are allocated
 * MARKED; at a cycle the leader rotates the colours (GARBAGE := UNMARKED)
 * and every owner calls php_cycle; the roots are darkened; then each thread
 * marks (atomic CAS UNMARKED -> MARKED in the header), sweeps its own owner
 * with a budget (php_sweep) and mutates (allocation, stores with a deletion
 * barrier: snapshot at the beginning), all concurrently.
 *
 * Block kinds, as in OCaml:
 *   T_TUPLE   every field a value
 *   T_CLOS    f0 a raw code word (here: an address inside the heap, which
 *             must never be forwarded), f1 the first environment field (an
 *             immediate), f2 an infix header, f3 a raw code word, f4.. values.
 *             A value may point at f3 (an infix pointer): its block is found
 *             from the infix header, as OCaml does.
 *   T_RAW     raw words (random bits; never scanned)
 *   large T_TUPLE blocks beyond the largest size class
 *
 * After every compaction the hash of the reachable graph (a canonical walk:
 * node numbers and offsets, never addresses) is unchanged, php_verify is
 * clean, a second compaction moves nothing, and memory was released.
 * Random tests print their seed; POOLHEAP_SEED repeats a run.  Under
 * ThreadSanitizer the sizes are scaled down.  The layer is used only through
 * include/poolheap_pools.h; tests/test_util.h gives the tests' shared RNG,
 * seed reader, scaling and thread-safe checks.
 */
#include "tests/pools_util.h" /* test_util.h's RNG, seeds, TSan scaling, checks */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* The same from any thread. */
static void verify_ok_mt(php_heap *h) {
  char why[512];
  why[0] = 0;
  int e = php_verify(h, why, sizeof why);
  if (e != PH_OK)
    fprintf(stderr, "php_verify: %s: %s\n", ph_strerror(e), why);
  TU_CHECK(e == PH_OK);
}

static php_heap_stats hstats(php_heap *h) {
  php_heap_stats st;
  int e = php_heap_stats_get(h, &st);
  TU_CHECK(e == PH_OK);
  return st;
}

/* ------------------------------------------------------ block kinds */
enum { T_TUPLE = 0, T_CLOS = 247, T_INFIX = 249, T_RAW = 251 };
#define CLOS_ENV 4   /* first environment field of a T_CLOS */
#define CLOS_INFIX 3 /* field an infix pointer points at */

/* The block an (interior) value belongs to: an infix pointer is moved back
 * by its infix header's wosize, as in OCaml. */
static ph_value block_of(ph_value v) {
  ph_value hd = php_hd_load(v);
  if (php_hd_tag(hd) == T_INFIX)
    return v - php_hd_wosize(hd) * sizeof(ph_value);
  return v;
}

/* Calls of scan_block from a compaction, by tag (T_TUPLE, T_CLOS, other),
 * and those on a thread that is no participant (pools.helpers). */
static atomic_uint_least64_t cb_tuple, cb_clos, cb_other, cb_helper;
static _Thread_local int tl_participant;

/* The slots of b that hold values (the scan_block of the embedder). */
static void scan_block(ph_value b, ph_visit_fn visit, void *ctx, void *user) {
  ph_value hd = php_hd_load(b);
  if (user) { /* from a compaction */
    unsigned t = php_hd_tag(hd);
    atomic_fetch_add(t == T_TUPLE  ? &cb_tuple
                     : t == T_CLOS ? &cb_clos
                                   : &cb_other,
                     1);
    if (!tl_participant)
      atomic_fetch_add(&cb_helper, 1);
  }
  ph_value *f = (ph_value *)b;
  size_t wo = php_hd_wosize(hd), i = 0;
  switch (php_hd_tag(hd)) {
  case T_TUPLE:
    break;
  case T_CLOS:
    i = (size_t)ph_int_val(f[1]);
    break;
  default:
    return;
  }
  for (; i < wo; i++)
    visit(&f[i], ctx);
}

/* ------------------------------------------------------------ colours */
/* Written by one thread while the others wait at a barrier. */
typedef struct colours {
  unsigned marked, unmarked, garbage;
} colours;
static colours col;

static void colours_reset(php_heap *h) {
  col = (colours){0, 1, 2};
  assert_int_equal(php_set_colours(h, col.garbage), PH_OK);
}

/* OCaml's cycle: UNMARKED := MARKED, GARBAGE := UNMARKED, MARKED := the old
 * GARBAGE (no block has it: it was swept). */
static void colours_rotate(php_heap *h) {
  colours n = {col.garbage, col.marked, col.unmarked};
  col = n;
  TU_CHECK(php_set_colours(h, col.garbage) == PH_OK);
}

/* ------------------------------------------------- the allocation model */
/* What the test itself allocated and saw freed (on_free), for the recount
 * of the layer's counters. */
static atomic_uint_least64_t m_small_blocks, m_small_words, m_large_blocks;
static atomic_uint_least64_t m_freed;
static size_t max_small; /* php_heap_stats.max_small_wosize */

static void on_free(ph_value b, void *user) {
  (void)user;
  ph_value hd = php_hd_load(b);
  size_t wo = php_hd_wosize(hd);
  TU_CHECK(wo > 0);
  TU_CHECK(php_hd_colour(hd) == col.garbage);
  if (wo > max_small) {
    atomic_fetch_sub(&m_large_blocks, 1);
  } else {
    atomic_fetch_sub(&m_small_blocks, 1);
    atomic_fetch_sub(&m_small_words, wo + 1);
  }
  atomic_fetch_add(&m_freed, 1);
}

static void model_reset(void) {
  atomic_store(&m_small_blocks, 0);
  atomic_store(&m_small_words, 0);
  atomic_store(&m_large_blocks, 0);
  atomic_store(&m_freed, 0);
}

static ph_value alloc_counted(php_owner *o, size_t wo, unsigned tag) {
  ph_value v = php_alloc(o, wo, (col.marked << PHP_HD_COLOUR_SHIFT) | tag);
  TU_CHECK(v != 0);
  if (!v)
    return 0;
  TU_CHECK(((ph_value *)v)[-1] == php_hd_make(wo, col.marked, tag));
  if (wo > max_small) {
    atomic_fetch_add(&m_large_blocks, 1);
  } else {
    atomic_fetch_add(&m_small_blocks, 1);
    atomic_fetch_add(&m_small_words, wo + 1);
  }
  return v;
}

/* A random value among src[0..n) (an infix pointer for a closure, half the
 * time), or an immediate. */
static ph_value pick(tu_rng *r, const ph_value *src, size_t n) {
  if (n == 0 || tu_below(r, 8) == 0)
    return ph_val_int((intptr_t)tu_below(r, 1000));
  ph_value v = __atomic_load_n(&src[tu_below(r, n)], __ATOMIC_ACQUIRE);
  if (ph_is_block(v) && php_hd_tag(php_hd_load(v)) == T_CLOS &&
      tu_below(r, 2) == 0)
    v += CLOS_INFIX * sizeof(ph_value);
  return v;
}

/* A new block of a random kind whose value fields come from src (read with
 * acquire loads: src may be shared).  Its fields are written before it is
 * returned; the caller publishes it with a release store. */
static ph_value make_block(php_owner *o, tu_rng *r, const ph_value *src,
                           size_t n, int allow_large) {
  size_t k = tu_below(r, 100);
  if (allow_large && k == 0) {
    /* a large block, or (3 in 4) a medium one (above 256 fields: every
     * small class is below, for every pool size) */
    size_t wo = tu_below(r, 4) ? 257 + tu_below(r, 6000)
                               : max_small + 1 + tu_below(r, 3000);
    ph_value v = alloc_counted(o, wo, T_TUPLE);
    if (v)
      for (size_t i = 0; i < wo; i++)
        ((ph_value *)v)[i] = i % 64 == 0 ? pick(r, src, n) : ph_val_int(7);
    return v;
  }
  if (allow_large && k == 1) { /* a medium closure: interior pointers */
    size_t wo = 300 + tu_below(r, 3000);
    ph_value v = alloc_counted(o, wo, T_CLOS);
    if (!v)
      return 0;
    ph_value *f = (ph_value *)v;
    f[0] = (ph_value)0x1000;
    f[1] = ph_val_int(CLOS_ENV);
    f[2] = php_hd_make(CLOS_INFIX, 0, T_INFIX);
    f[3] = v; /* itself, raw */
    for (size_t i = CLOS_ENV; i < wo; i++)
      f[i] = i % 16 == 0 ? pick(r, src, n) : ph_val_int(3);
    return v;
  }
  if (k < 55) {
    size_t wo = 1 + tu_below(r, k < 40 ? 6 : 60);
    ph_value v = alloc_counted(o, wo, T_TUPLE);
    if (v)
      for (size_t i = 0; i < wo; i++)
        ((ph_value *)v)[i] = pick(r, src, n);
    return v;
  }
  if (k < 80) {
    size_t wo = CLOS_ENV + 1 + tu_below(r, 12);
    ph_value v = alloc_counted(o, wo, T_CLOS);
    if (!v)
      return 0;
    ph_value *f = (ph_value *)v;
    /* raw code words that look like heap pointers: never forwarded */
    ph_value any =
        n ? __atomic_load_n(&src[tu_below(r, n)], __ATOMIC_ACQUIRE) : 0;
    f[0] = ph_is_block(any) ? any : (ph_value)0x1000;
    f[1] = ph_val_int(CLOS_ENV);
    f[2] = php_hd_make(CLOS_INFIX, 0, T_INFIX);
    f[3] = v; /* itself, raw */
    for (size_t i = CLOS_ENV; i < wo; i++)
      f[i] = pick(r, src, n);
    return v;
  }
  size_t wo = 1 + tu_below(r, 40);
  ph_value v = alloc_counted(o, wo, T_RAW);
  if (v)
    for (size_t i = 0; i < wo; i++)
      ((ph_value *)v)[i] = (ph_value)tu_next(r) & ~(ph_value)1; /* even: looks
                                                                 like a ptr */
  return v;
}

/* --------------------------------------------------- graph identity */
typedef struct nmap {
  ph_value *k;
  size_t *n;
  size_t cap, used;
} nmap;

static size_t nm_slot(const nmap *m, ph_value v) {
  size_t j = (size_t)((v >> 3) * 0x9e3779b97f4a7c15ull >> 17) & (m->cap - 1);
  while (m->k[j] && m->k[j] != v)
    j = (j + 1) & (m->cap - 1);
  return j;
}

/* The number of v, adding it (as `next`) if new; *added says which. */
static size_t nm_get(nmap *m, ph_value v, size_t next, int *added) {
  if ((m->used + 1) * 2 > m->cap) {
    nmap g = {calloc(m->cap ? m->cap * 2 : 4096, sizeof(ph_value)),
              calloc(m->cap ? m->cap * 2 : 4096, sizeof(size_t)),
              m->cap ? m->cap * 2 : 4096, m->used};
    assert_non_null(g.k);
    assert_non_null(g.n);
    for (size_t i = 0; i < m->cap; i++)
      if (m->k[i]) {
        size_t j = nm_slot(&g, m->k[i]);
        g.k[j] = m->k[i];
        g.n[j] = m->n[i];
      }
    free(m->k);
    free(m->n);
    *m = g;
  }
  size_t j = nm_slot(m, v);
  *added = !m->k[j];
  if (*added) {
    m->k[j] = v;
    m->n[j] = next;
    m->used++;
  }
  return m->n[j];
}

typedef struct graph {
  uint64_t hash;
  size_t blocks;
  int all_marked; /* every reachable block has colour `want` */
} graph;

/* A canonical walk from roots: nodes numbered in discovery order, a pointer
 * hashed as (number of its block, offset), raw words by their bits.  Equal
 * for the same graph at other addresses.  want: the colour every reachable
 * block must have (or 4: none). */
static graph walk(ph_value *const *rootsets, const size_t *nroots, size_t nsets,
                  unsigned want) {
  nmap m = {0};
  size_t cap = 4096, top = 0, next = 0;
  ph_value *stack = malloc(cap * sizeof *stack);
  assert_non_null(stack);
  graph g = {0, 0, 1};
  for (size_t s = 0; s < nsets; s++)
    for (size_t i = 0; i < nroots[s]; i++) {
      ph_value v = rootsets[s][i];
      if (!ph_is_block(v)) {
        g.hash = tu_mix(g.hash, v);
        continue;
      }
      ph_value b = block_of(v);
      int added;
      size_t n = nm_get(&m, b, next, &added);
      g.hash = tu_mix(tu_mix(g.hash, n), v - b);
      if (!added)
        continue;
      next++;
      stack[top++] = b;
      while (top) {
        ph_value x = stack[--top];
        ph_value hd = php_hd_load(x);
        g.blocks++;
        if (want < 4 && php_hd_colour(hd) != want)
          g.all_marked = 0;
        size_t wo = php_hd_wosize(hd);
        unsigned tag = php_hd_tag(hd);
        g.hash = tu_mix(tu_mix(g.hash, wo), tag);
        ph_value *f = (ph_value *)x;
        size_t first = tag == T_TUPLE  ? 0
                       : tag == T_CLOS ? (size_t)ph_int_val(f[1])
                                       : wo;
        for (size_t k = 0; k < wo; k++) {
          ph_value y = f[k];
          if (k < first || !ph_is_block(y)) {
            /* raw words: the code words of a closure keep their bits */
            g.hash = tu_mix(g.hash, y);
            continue;
          }
          ph_value yb = block_of(y);
          size_t yn = nm_get(&m, yb, next, &added);
          g.hash = tu_mix(tu_mix(g.hash, yn + 1), y - yb);
          if (added) {
            next++;
            if (top == cap) {
              cap *= 2;
              stack = realloc(stack, cap * sizeof *stack);
              assert_non_null(stack);
            }
            stack[top++] = yb;
          }
        }
      }
    }
  free(stack);
  free(m.k);
  free(m.n);
  return g;
}

/* The same through closures' code words: they must equal what the test
 * wrote (f3 == the closure itself, raw). */
static int closures_intact(ph_value *roots, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ph_value v = roots[i];
    if (!ph_is_block(v))
      continue;
    ph_value b = block_of(v);
    ph_value hd = php_hd_load(b);
    if (php_hd_tag(hd) == T_CLOS) {
      const ph_value *f = (const ph_value *)b;
      if (f[2] != php_hd_make(CLOS_INFIX, 0, T_INFIX) ||
          f[1] != ph_val_int(CLOS_ENV))
        return 0;
    }
  }
  return 1;
}

/* ------------------------------------------- counters against a recount */
static php_counters counters_sum(php_owner **owners, size_t n, php_heap *h) {
  php_counters sum = {0}, c;
  for (size_t i = 0; i < n + 1; i++) {
    int e =
        i < n ? php_owner_counters(owners[i], &c) : php_orphan_counters(h, &c);
    TU_CHECK(e == PH_OK);
    sum.pool_words += c.pool_words;
    sum.pool_live_words += c.pool_live_words;
    sum.pool_live_blocks += c.pool_live_blocks;
    sum.pool_frag_words += c.pool_frag_words;
    sum.large_words += c.large_words;
    sum.large_blocks += c.large_blocks;
    TU_CHECK(c.pool_max_words >= c.pool_words);
    TU_CHECK(c.large_max_words >= c.large_words);
    TU_CHECK(c.pool_live_words + c.pool_frag_words <= c.pool_words);
  }
  return sum;
}

/* The layer's counters (owners and orphans) equal the test's own model and
 * the heap's unit figures. */
static void check_counters(php_owner **owners, size_t n, php_heap *h) {
  php_counters s = counters_sum(owners, n, h);
  php_heap_stats st = hstats(h);
  TU_CHECK(s.pool_live_blocks == atomic_load(&m_small_blocks));
  TU_CHECK(s.pool_live_words == atomic_load(&m_small_words));
  TU_CHECK(s.large_blocks == atomic_load(&m_large_blocks));
  TU_CHECK(s.pool_words * 8 == st.pool_bytes);
  TU_CHECK(s.large_words * 8 == st.large_bytes);
  if (s.pool_live_blocks != atomic_load(&m_small_blocks) ||
      s.pool_live_words != atomic_load(&m_small_words))
    fprintf(stderr,
            "counters: blocks %" PRIu64 "/%" PRIu64 " words %" PRIu64
            "/%" PRIu64 "\n",
            (uint64_t)s.pool_live_blocks,
            (uint64_t)atomic_load(&m_small_blocks), (uint64_t)s.pool_live_words,
            (uint64_t)atomic_load(&m_small_words));
}

/* ------------------------------------------------ marking (single thread) */
typedef struct mstack {
  ph_value *e;
  size_t n, cap;
} mstack;

static void ms_push(mstack *s, ph_value v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->e = realloc(s->e, s->cap * sizeof *s->e);
    if (!s->e)
      abort();
  }
  s->e[s->n++] = v;
}

/* Darken: UNMARKED -> MARKED with a CAS (other markers race), push the
 * winner.  A reachable block never has the garbage colour. */
static void darken(mstack *s, ph_value v) {
  if (!ph_is_block(v))
    return;
  ph_value b = block_of(v);
  ph_value *hp = (ph_value *)b - 1;
  ph_value hd = __atomic_load_n(hp, __ATOMIC_RELAXED);
  for (;;) {
    unsigned c = php_hd_colour(hd);
    TU_CHECK(c != col.garbage);
    TU_CHECK(hd != 0);
    if (c != col.unmarked)
      return;
    ph_value nh = (hd & ~PHP_HD_COLOUR_MASK) |
                  ((ph_value)col.marked << PHP_HD_COLOUR_SHIFT);
    if (__atomic_compare_exchange_n(hp, &hd, nh, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
      ms_push(s, b);
      return;
    }
  }
}

static void darken_slot(ph_value *slot, void *ctx) {
  darken(ctx, __atomic_load_n(slot, __ATOMIC_ACQUIRE));
}

/* Pop up to n blocks and darken their fields. */
static void mark_some(mstack *s, size_t n) {
  while (s->n && n--) {
    ph_value b = s->e[--s->n];
    scan_block(b, darken_slot, s, NULL);
  }
}

/* One whole cycle on a quiescent heap (single thread): sweep what is left,
 * rotate, cycle every owner, mark from roots to the end. */
static void full_cycle(php_heap *h, php_owner **owners, size_t no,
                       ph_value *roots, size_t nr) {
  for (size_t i = 0; i < no; i++)
    while (php_sweep(owners[i], 1 << 20) <= 0)
      ;
  colours_rotate(h);
  for (size_t i = 0; i < no; i++)
    assert_int_equal(php_cycle(owners[i]), PH_OK);
  mstack s = {0};
  for (size_t i = 0; i < nr; i++)
    darken(&s, roots[i]);
  while (s.n)
    mark_some(&s, SIZE_MAX);
  free(s.e);
}

/* --------------------------------------------------------- compaction */
typedef struct cenv {
  php_heap *h;
  pthread_barrier_t bar;
  unsigned nparts;
  ph_value **roots; /* roots[part][0..nroots[part]) */
  size_t *nroots;
  /* a value kept outside every visited slot: forwarded with php_forward by
   * participant 0 from its scan_roots */
  ph_value side;
  ph_value side_fwd;
  php_compact_ops ops;
  int result[16];
} cenv;

/* compact_run with the scan rule (compact.update.rule): T_RAW and above
 * hold no values, T_CLOS goes through scan_block, the rest is updated by
 * the layer itself. */
static int rule_on;

static void c_barrier(void *user) {
  cenv *c = user;
  pthread_barrier_wait(&c->bar);
}

static void c_scan_roots(unsigned part, ph_visit_fn visit, void *ctx,
                         void *user) {
  cenv *c = user;
  for (size_t i = 0; i < c->nroots[part]; i++)
    visit(&c->roots[part][i], ctx);
  if (part == 0) {
    c->side_fwd = php_forward(c->h, c->side);
    /* pools.reentry: only php_forward works from a compaction callback */
    php_heap_stats st;
    TU_CHECK(php_heap_stats_get(c->h, &st) == PH_ESTATE);
    TU_CHECK(php_verify(c->h, NULL, 0) == PH_ESTATE);
    TU_CHECK(php_compact_stw(c->h, 0, &c->ops) == PH_ESTATE);
  }
}

typedef struct cpart {
  cenv *c;
  unsigned part;
} cpart;

static void *c_part_main(void *arg) {
  cpart *p = arg;
  tl_participant = 1;
  p->c->result[p->part] = php_compact_stw(p->c->h, p->part, &p->c->ops);
  tl_participant = 0;
  return NULL;
}

/* Run a compaction with nparts participants (this thread is part 0). */
static int compact_run(cenv *c) {
  pthread_t t[16];
  cpart parts[16];
  assert_true(c->nparts >= 1 && c->nparts <= 16);
  pthread_barrier_init(&c->bar, NULL, c->nparts);
  c->ops = (php_compact_ops){.nparts = c->nparts,
                             .barrier = c_barrier,
                             .scan_roots = c_scan_roots,
                             .scan_block = scan_block,
                             .live_colours = 1u << col.unmarked,
                             .user = c};
  if (rule_on) {
    c->ops.no_scan_tag = T_RAW;
    c->ops.scan_tags[T_CLOS / 64] = (uint64_t)1 << (T_CLOS % 64);
  }
  atomic_store(&cb_tuple, 0);
  atomic_store(&cb_clos, 0);
  atomic_store(&cb_other, 0);
  atomic_store(&cb_helper, 0);
  for (unsigned i = 1; i < c->nparts; i++) {
    parts[i] = (cpart){c, i};
    assert_int_equal(pthread_create(&t[i], NULL, c_part_main, &parts[i]), 0);
  }
  parts[0] = (cpart){c, 0};
  c_part_main(&parts[0]);
  for (unsigned i = 1; i < c->nparts; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&c->bar);
  for (unsigned i = 1; i < c->nparts; i++)
    assert_int_equal(c->result[i], c->result[0]);
  return c->result[0];
}

/* ====================================================================== */

/* The set-up the tests start from: a heap of cfg with the model and the
 * colours reset (heap_new: the default cfg, on_free, pool_size if not 0),
 * its owners (owner_new), and the end of both (heap_end). */
static php_heap *heap_cfg(const php_config *cfg) {
  php_heap *h = NULL;
  assert_int_equal(php_heap_create(cfg, &h), PH_OK);
  assert_non_null(h);
  max_small = hstats(h).max_small_wosize;
  model_reset();
  colours_reset(h);
  return h;
}

static php_heap *heap_new(size_t pool_size) {
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  if (pool_size)
    cfg.pool_size = pool_size;
  return heap_cfg(&cfg);
}

static php_owner *owner_new(php_heap *h) {
  php_owner *o = NULL;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  return o;
}

/* Destroy o (if not NULL), then h. */
static void heap_end(php_heap *h, php_owner *o) {
  if (o)
    assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
}

/* Bad input is refused with its code and changes nothing. */
static void test_errors(void **state) {
  (void)state;
  php_config cfg;
  php_config_init(&cfg);
  php_heap *h = (php_heap *)0x1;
  cfg.pool_size = 3000;
  assert_int_equal(php_heap_create(&cfg, &h), PH_EINVAL);
  assert_ptr_equal(h, (php_heap *)0x1);
  php_config_init(&cfg);
  cfg.huge_pages = (ph_huge_mode)7;
  assert_int_equal(php_heap_create(&cfg, &h), PH_EINVAL);
  php_config_init(&cfg);
  cfg.release = (ph_release_mode)9;
  assert_int_equal(php_heap_create(&cfg, &h), PH_EINVAL);
  php_config_init(&cfg);
  assert_int_equal(PHP_COMPACT_HELPERS_MAX, 64); /* the header's contract */
  cfg.compact_helpers = PHP_COMPACT_HELPERS_MAX + 1;
  assert_int_equal(php_heap_create(&cfg, &h), PH_EINVAL);
  assert_ptr_equal(h, (php_heap *)0x1);
  cfg.compact_helpers = PHP_COMPACT_HELPERS_MAX; /* the bound itself is valid */
  assert_int_equal(php_heap_create(&cfg, &h), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
  h = (php_heap *)0x1;
  assert_int_equal(php_heap_create(NULL, NULL), PH_EINVAL);
  assert_int_equal(php_heap_destroy(NULL), PH_EINVAL);

  h = heap_new(0);
  php_owner *o = (php_owner *)0x1;
  assert_int_equal(php_owner_create(NULL, &o), PH_EINVAL);
  assert_int_equal(php_owner_create(h, NULL), PH_EINVAL);
  assert_ptr_equal(o, (php_owner *)0x1);
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  assert_ptr_equal(php_owner_heap(o), h);
  assert_null(php_owner_heap(NULL));
  assert_int_equal(php_last_error(o), PH_OK);

  assert_int_equal(php_alloc(o, 0, 0), 0);
  assert_int_equal(php_last_error(o), PH_EINVAL);
  assert_int_equal(php_alloc(o, 1, 1024), 0);
  assert_int_equal(php_last_error(o), PH_EINVAL);
  assert_int_equal(php_alloc(o, PH_MAX_WOSIZE + 1, 0), 0);
  assert_int_equal(php_last_error(o), PH_EINVAL);
  assert_int_equal(php_alloc(NULL, 1, 0), 0);
  assert_int_equal(php_set_colours(h, 4), PH_EINVAL);
  assert_int_equal(php_set_colours(NULL, 1), PH_EINVAL);
  assert_int_equal(php_sweep(NULL, 100), 100);

  /* every header bit combination is the embedder's, colour 3 included */
  ph_value v = php_alloc(o, 3, (3u << PHP_HD_COLOUR_SHIFT) | 200);
  assert_true(v != 0);
  assert_int_equal(php_last_error(o), PH_EINVAL); /* not cleared */
  assert_int_equal(((ph_value *)v)[-1], php_hd_make(3, 3, 200));
  ((ph_value *)v)[-1] = php_hd_make(3, col.marked, 0);

  /* more than the machine can back: refused, nothing kept */
  php_heap_stats st = hstats(h);
  assert_int_equal(php_alloc(o, (size_t)1 << 39, 0), 0);
  assert_int_equal(php_last_error(o), PH_ENOMEM);
  php_heap_stats st2 = hstats(h);
  assert_int_equal(st2.committed_bytes, st.committed_bytes);
  assert_int_equal(st2.mappings, st.mappings);

  php_counters c = {.pool_words = 12345};
  assert_int_equal(php_owner_counters(NULL, &c), PH_EINVAL);
  assert_int_equal(php_owner_counters(o, NULL), PH_EINVAL);
  assert_int_equal(c.pool_words, 12345);
  assert_int_equal(php_orphan_counters(NULL, &c), PH_EINVAL);
  assert_int_equal(php_heap_stats_get(NULL, &st), PH_EINVAL);

  /* visiting: not an address of the heap */
  static ph_value outside[4];
  assert_int_equal(php_visit_pool_of(h, (ph_value)&outside[1], NULL, NULL),
                   PH_EINVAL);
  assert_int_equal(php_visit_pool_of(h, 0, NULL, NULL), PH_EINVAL);

  /* compaction with bad ops: refused before any barrier */
  php_compact_ops ops = {.nparts = 1, .barrier = NULL};
  assert_int_equal(php_compact_stw(h, 0, &ops), PH_EINVAL);
  cenv ce = {.h = h};
  ops = (php_compact_ops){.nparts = 1,
                          .barrier = c_barrier,
                          .scan_block = scan_block,
                          .live_colours = 1u << col.garbage,
                          .user = &ce};
  assert_int_equal(php_compact_stw(h, 0, &ops), PH_EINVAL);
  ops.live_colours = 1u << col.unmarked;
  assert_int_equal(php_compact_stw(h, 1, &ops), PH_EINVAL);
  ops.nparts = 0;
  assert_int_equal(php_compact_stw(h, 0, &ops), PH_EINVAL);
  assert_int_equal(php_compact_stw(h, 0, NULL), PH_EINVAL);
  assert_int_equal(php_compact_stw(NULL, 0, &ops), PH_EINVAL);

  /* outside a compaction php_forward changes nothing */
  assert_int_equal(php_forward(h, v), v);
  assert_int_equal(php_forward(h, v + 8), v + 8);
  assert_int_equal(php_forward(h, PH_UNIT), PH_UNIT);

  /* php_cycle with memory left unswept */
  assert_int_equal(php_cycle(o), PH_OK);
  assert_int_equal(php_cycle(o), PH_ESTATE);
  while (php_sweep(o, 1000) <= 0)
    ;
  assert_int_equal(php_cycle(o), PH_OK);
  while (php_sweep(o, 1000) <= 0)
    ;

  assert_int_equal(php_heap_destroy(h), PH_ESTATE);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_owner_destroy(NULL), PH_EINVAL);
  assert_int_equal(php_heap_destroy(h), PH_OK);
  tu_assert_no_failures();
}

/* Allocation in every class and large: header, counters, a sweep that
 * frees the garbage colour and keeps every other colour. */
static void test_alloc_sweep(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  tu_rng r;
  tu_rng_init(&r, 1);
  enum { N = 20000 };
  ph_value *b = malloc(N * sizeof *b);
  size_t *wos = malloc(N * sizeof *wos);
  assert_non_null(b);
  assert_non_null(wos);
  uint64_t words = 0, blocks = 0, large = 0;
  for (size_t i = 0; i < N; i++) {
    size_t wo = i % 997 == 0 ? max_small + 1 + tu_below(&r, 5000)
                             : 1 + tu_below(&r, max_small);
    wos[i] = wo;
    unsigned c = (unsigned)tu_below(&r, 4);
    b[i] = php_alloc(o, wo, (c << PHP_HD_COLOUR_SHIFT) | (unsigned)(i & 255));
    assert_true(b[i] != 0);
    assert_int_equal(((ph_value *)b[i])[-1], php_hd_make(wo, c, i & 255));
    assert_int_equal(b[i] & 7, 0);
    for (size_t k = 0; k < (wo < 8 ? wo : 8); k++)
      ((ph_value *)b[i])[k] = (ph_value)i;
    if (wo > max_small) {
      large++;
    } else {
      blocks++;
      words += wo + 1;
    }
  }
  php_counters c;
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_live_blocks, blocks);
  assert_int_equal(c.pool_live_words, words);
  assert_int_equal(c.large_blocks, large);
  assert_true(c.pool_words >= words);
  assert_true(c.pool_max_words >= c.pool_words);
  tu_pools_verify_ok(h);
  /* no two blocks overlap: field 0 still holds its own index */
  for (size_t i = 0; i < N; i++)
    assert_int_equal(((ph_value *)b[i])[0], (ph_value)i);

  /* a sweep frees exactly the garbage colour, with on_free first */
  assert_int_equal(php_cycle(o), PH_OK);
  uint64_t g_blocks = 0, g_words = 0, g_large = 0;
  for (size_t i = 0; i < N; i++) {
    ph_value hd = ((ph_value *)b[i])[-1];
    if (php_hd_colour(hd) != col.garbage)
      continue;
    if (php_hd_wosize(hd) > max_small) {
      g_large++;
    } else {
      g_blocks++;
      g_words += php_hd_wosize(hd) + 1;
    }
  }
  atomic_store(&m_small_blocks, blocks);
  atomic_store(&m_small_words, words);
  atomic_store(&m_large_blocks, large);
  atomic_store(&m_freed, 0);
  /* incrementally, with a small budget: every call does some work and
   * returns what is left of it; a result > 0 means done */
  size_t calls = 0;
  intptr_t left;
  while ((left = php_sweep(o, 100)) <= 0)
    calls++;
  assert_true(calls > 10);
  assert_true(left <= 100);
  assert_int_equal(php_sweep(o, 100), 100); /* nothing left */
  assert_int_equal(php_sweep(o, 0), 0);
  assert_int_equal(atomic_load(&m_freed), g_blocks + g_large);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_live_blocks, blocks - g_blocks);
  assert_int_equal(c.pool_live_words, words - g_words);
  assert_int_equal(c.large_blocks, large - g_large);
  /* the survivors are intact; the small garbage slots are free (0) */
  for (size_t i = 0; i < N; i++) {
    if (wos[i] > max_small)
      continue;
    ph_value hd = ((ph_value *)b[i])[-1];
    if (hd != 0)
      assert_int_equal(((ph_value *)b[i])[0], (ph_value)i);
  }
  tu_pools_verify_ok(h);
  php_heap_stats st = hstats(h);
  assert_int_equal(c.pool_words * 8, st.pool_bytes);
  assert_int_equal(c.large_words * 8, st.large_bytes);
  free(b);
  free(wos);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* php_config.alloc_sweep and on_free_tags, php_owner_sweep_work: two full
 * pools of one class, each with one live block and the rest garbage, are
 * unswept after php_cycle.  An allocation of that class then sweeps a full
 * pool (PHP_ALLOC_SWEEP_ALL: the pool words stay, one pool's words of work
 * and its garbage's words reported) or leaves them to php_sweep and takes a
 * new pool (PHP_ALLOC_SWEEP_AVAIL: no work, nothing freed until php_sweep).
 * on_free sees only the tags of on_free_tags; freed_words counts every
 * freed block. */
enum { T_SEEN = 6, T_UNSEEN = 5 };

static void alloc_sweep_case(unsigned mode) {
  php_config cfg;
  php_config_init(&cfg);
  assert_int_equal(cfg.alloc_sweep, PHP_ALLOC_SWEEP_ALL);
  cfg.on_free = on_free;
  cfg.alloc_sweep = mode;
  cfg.on_free_tags[T_SEEN / 64] = (uint64_t)1 << (T_SEEN % 64);
  php_heap *h = heap_cfg(&cfg);
  php_owner *o = owner_new(h);
  const size_t wo = 3;
  uint64_t pw = hstats(h).pool_size / 8;
  php_counters c;
  /* fill two pools: the first block of each live, the rest garbage */
  uint64_t garbage = 0, seen = 0;
  for (size_t i = 0;; i++) {
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    uint64_t pools_before = c.pool_words / pw;
    unsigned tag = (i & 1) ? T_SEEN : T_UNSEEN;
    ph_value v = php_alloc(o, wo, (col.garbage << PHP_HD_COLOUR_SHIFT) | tag);
    assert_true(v != 0);
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    if (c.pool_words / pw != pools_before) {
      /* the first block of a pool: live (the embedder marks it) */
      ((ph_value *)v)[-1] = php_hd_make(wo, col.marked, tag);
      if (c.pool_words / pw == 3)
        break; /* the third pool holds this one block */
      continue;
    }
    garbage++;
    seen += tag == T_SEEN;
  }
  assert_true(garbage > 10);
  /* the third pool has room, the first two are full */
  intptr_t work = -1;
  uint64_t freed = 1;
  assert_int_equal(php_owner_sweep_work(o, &work, &freed), PH_OK);
  assert_int_equal(work, 0);
  assert_int_equal(freed, 0);
  assert_int_equal(php_cycle(o), PH_OK);
  atomic_store(&m_freed, 0);
  /* use up the third pool (swept by the allocation: it had room), then one
   * block more: a new pool taken, or a full pool swept */
  uint64_t extra = 0;
  for (;;) {
    ph_value v = php_alloc(o, wo, col.marked << PHP_HD_COLOUR_SHIFT);
    assert_true(v != 0);
    extra++;
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    /* (the garbage counts as live until it is swept) */
    if (c.pool_words != 3 * pw || c.pool_live_blocks != 3 + garbage + extra)
      break;
    assert_true(extra < 100000);
  }
  assert_int_equal(php_owner_sweep_work(o, &work, &freed), PH_OK);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  uint64_t swept_now = 0;
  /* the third pool's sweep (it had room: both policies sweep it) */
  if (mode == PHP_ALLOC_SWEEP_AVAIL) { /* (BEFORE_GROW: as ALL here) */
    assert_int_equal(c.pool_words, 4 * pw);
    assert_int_equal(work, (intptr_t)pw);
    assert_int_equal(freed, 0);
    assert_int_equal(atomic_load(&m_freed), 0);
  } else {
    /* one full pool swept: the pool words stay, its garbage is freed */
    assert_int_equal(c.pool_words, 3 * pw);
    assert_int_equal(work, 2 * (intptr_t)pw);
    assert_true(freed > 0 && freed % (wo + 1) == 0);
    assert_true(freed < garbage * (wo + 1));
    swept_now = freed / (wo + 1);
  }
  /* php_sweep frees the rest; nothing it does is the allocation's work */
  while (php_sweep(o, 1000) <= 0)
    ;
  uint64_t freed2 = 0;
  assert_int_equal(php_owner_sweep_work(o, &work, &freed2), PH_OK);
  assert_int_equal(work, 0);
  assert_int_equal(swept_now * (wo + 1) + freed2, garbage * (wo + 1));
  /* on_free saw the T_SEEN garbage only */
  assert_int_equal(atomic_load(&m_freed), seen);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_live_blocks, 3 + extra);
  tu_pools_verify_ok(h);
  /* a NULL pointer skips a figure; bad owner */
  assert_int_equal(php_owner_sweep_work(o, NULL, NULL), PH_OK);
  assert_int_equal(php_owner_sweep_work(NULL, &work, &freed2), PH_EINVAL);
  heap_end(h, o);
}

/* pools.alloc.grow, PHP_ALLOC_SWEEP_BEFORE_GROW: two full pools of one
 * class (the first block of each live, the rest garbage), a third with room,
 * and a pool of the 1-field class holding garbage only.  After php_cycle,
 * php_sweep's first pool is that one (classes go in order): emptied, its
 * unit is free and committed.  Allocations of the first class then use up
 * the third pool and take the free committed unit for a fourth, sweeping no
 * full pool (AVAIL's policy while the heap need not grow); once that one is
 * full too, with no committed room left, they sweep a full pool and reuse
 * its garbage's slots instead of committing a fifth unit.  The committed
 * bytes never grow.  (AVAIL commits the fifth unit.) */
static void test_alloc_sweep_before_grow(void **state) {
  (void)state;
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  cfg.alloc_sweep = PHP_ALLOC_SWEEP_BEFORE_GROW;
  php_heap *h = heap_cfg(&cfg);
  php_owner *o = owner_new(h);
  const size_t wo = 3;
  uint64_t pw = hstats(h).pool_size / 8;
  php_counters c;
  for (int i = 0; i < 10; i++)
    assert_true(php_alloc(o, 1, col.garbage << PHP_HD_COLOUR_SHIFT) != 0);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_words, pw);
  uint64_t garbage = 0;
  for (;;) {
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    uint64_t pools_before = c.pool_words / pw;
    ph_value v = php_alloc(o, wo, col.garbage << PHP_HD_COLOUR_SHIFT);
    assert_true(v != 0);
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    if (c.pool_words / pw != pools_before) {
      ((ph_value *)v)[-1] = php_hd_make(wo, col.marked, 0); /* live */
      if (c.pool_words / pw == 4)
        break; /* the third pool of the class holds this one block */
      continue;
    }
    garbage++;
  }
  assert_int_equal(php_cycle(o), PH_OK);
  assert_true(php_sweep(o, 1) <= 0); /* the 1-field pool: emptied */
  assert_int_equal(php_owner_sweep_work(o, NULL, NULL), PH_OK);
  php_heap_stats hs = hstats(h);
  uint64_t committed = hs.committed_bytes;
  assert_int_equal(hs.free_bytes, hs.pool_size);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_words, 3 * pw);
  /* the third pool, then a fourth on the free committed unit */
  uint64_t live = c.pool_live_blocks, extra = 0;
  while (c.pool_words == 3 * pw) {
    assert_true(php_alloc(o, wo, col.marked << PHP_HD_COLOUR_SHIFT) != 0);
    extra++;
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    assert_true(extra < 100000);
  }
  intptr_t work = -1;
  uint64_t freed = 1;
  assert_int_equal(php_owner_sweep_work(o, &work, &freed), PH_OK);
  assert_int_equal(work, (intptr_t)pw); /* the third pool only */
  assert_int_equal(freed, 0);
  assert_int_equal(c.pool_words, 4 * pw);
  assert_int_equal(c.pool_live_blocks, live + extra);
  hs = hstats(h);
  assert_int_equal(hs.committed_bytes, committed);
  assert_int_equal(hs.free_bytes, 0);
  /* fill the fourth; the next block comes from a full pool's garbage */
  while (c.pool_live_blocks == live + extra && c.pool_words == 4 * pw) {
    assert_true(php_alloc(o, wo, col.marked << PHP_HD_COLOUR_SHIFT) != 0);
    extra++;
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    assert_true(extra < 100000);
  }
  assert_int_equal(c.pool_words, 4 * pw);
  assert_int_equal(hstats(h).committed_bytes, committed);
  assert_int_equal(php_owner_sweep_work(o, &work, &freed), PH_OK);
  assert_int_equal(work, (intptr_t)pw); /* one full pool swept */
  assert_true(freed > 0 && freed % (wo + 1) == 0);
  assert_true(freed < garbage * (wo + 1)); /* the other one is not */
  assert_int_equal(c.pool_live_blocks, live + extra - freed / (wo + 1));
  while (php_sweep(o, 1000) <= 0)
    ;
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

static void test_alloc_sweep_policy(void **state) {
  (void)state;
  alloc_sweep_case(PHP_ALLOC_SWEEP_ALL);
  alloc_sweep_case(PHP_ALLOC_SWEEP_AVAIL);
  /* no free committed memory in that heap: it sweeps a full pool as ALL */
  alloc_sweep_case(PHP_ALLOC_SWEEP_BEFORE_GROW);
  /* an unknown policy is refused */
  php_config cfg;
  php_config_init(&cfg);
  cfg.alloc_sweep = PHP_ALLOC_SWEEP_BEFORE_GROW + 1;
  php_heap *h = (php_heap *)0x1;
  assert_int_equal(php_heap_create(&cfg, &h), PH_EINVAL);
  assert_ptr_equal(h, (php_heap *)0x1);
  tu_assert_no_failures();
}

/* heap.unit.reuse: pools freed by a sweep are taken again before units
 * never committed.  Round 0 fills some 90 MB of pools (several chunks),
 * all garbage, and sweeps them free; each later round does the same: the
 * committed bytes must not grow past round 0's, however the chunks lie
 * (first fit alone took a lower, newer chunk's fresh units first: 136 MB
 * committed after round 1 for 92 MB of pools).  The same with medium
 * blocks, whose pools are runs of units. */
static void unit_reuse_case(size_t wo, size_t n) {
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  uint64_t comm0 = 0;
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < n; i++) {
      ph_value v = php_alloc(o, wo, col.garbage << PHP_HD_COLOUR_SHIFT);
      assert_true(v != 0);
      for (size_t f = 0; f < wo; f++)
        ((ph_value *)v)[f] = PH_UNIT;
    }
    php_heap_stats st = hstats(h);
    if (round == 0)
      comm0 = st.committed_bytes;
    else if (st.committed_bytes > comm0)
      fail_msg("round %d: %llu bytes committed, round 0 %llu", round,
               (unsigned long long)st.committed_bytes,
               (unsigned long long)comm0);
    assert_int_equal(php_cycle(o), PH_OK);
    while (php_sweep(o, INTPTR_MAX) <= 0)
      ;
    php_counters c;
    assert_int_equal(php_owner_counters(o, &c), PH_OK);
    assert_int_equal(c.pool_live_blocks, 0);
  }
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* heap.unit.reuse for large blocks: once the pools are freed (their units
 * free but committed, resident), large blocks of k units (the fewest that
 * hold a block above the medium classes) take runs of those units before
 * fresh ones, as pools do, so nothing more is committed.
 * Before, first fit took the lowest free run, and new chunks are usually
 * mapped below the old ones: the newest chunk's uncommitted units were
 * committed (touched) while the freed pools' units stayed resident. */
static void test_unit_reuse_large(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  size_t n = tu_scale(4000000, 8);
  for (size_t i = 0; i < n; i++) {
    ph_value v = php_alloc(o, 2, col.garbage << PHP_HD_COLOUR_SHIFT);
    assert_true(v != 0);
    ((ph_value *)v)[0] = PH_UNIT;
    ((ph_value *)v)[1] = PH_UNIT;
  }
  php_heap_stats st = hstats(h);
  uint64_t comm0 = st.committed_bytes;
  assert_int_equal(php_cycle(o), PH_OK);
  while (php_sweep(o, INTPTR_MAX) <= 0)
    ;
  /* every pool is free now; about as many bytes again in large blocks of
   * k units (the block ends inside its k-th unit), less k - 1 units per
   * chunk (a chunk's committed units may end in a run too short) */
  size_t ps = st.pool_size, k = st.max_small_wosize * 8 / ps + 2;
  size_t wo = k * ps / 8 - 64;
  assert_true(wo > st.max_small_wosize);
  size_t nl = (size_t)((st.pool_bytes / ps - (k - 1) * st.mappings) / k);
  for (size_t i = 0; i < nl; i++) {
    ph_value v = php_alloc(o, wo, col.garbage << PHP_HD_COLOUR_SHIFT);
    assert_true(v != 0);
    ((ph_value *)v)[0] = PH_UNIT;
    ((ph_value *)v)[wo - 1] = PH_UNIT;
  }
  st = hstats(h);
  if (st.committed_bytes > comm0)
    fail_msg("%zu large blocks: %llu bytes committed, %llu before (pools)", nl,
             (unsigned long long)st.committed_bytes, (unsigned long long)comm0);
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

static void test_unit_reuse(void **state) {
  (void)state;
  unit_reuse_case(2, tu_scale(4000000, 8));
  unit_reuse_case(2000, tu_scale(5600, 8)); /* 5-unit pools of 9 slots */
}

/* php_visit_pool_of: every allocated block of the pool, any interior
 * address, a large block alone. */
typedef struct vctx {
  ph_value want;
  int found;
  size_t n;
  ph_value last;
  int ordered;
} vctx;

static void visit_count(ph_value b, ph_value hd, void *user) {
  vctx *v = user;
  /* the header as read: allocated (marking may have changed its colour
   * since, a concurrent sweep freed it, or the owner reused the slot) */
  TU_CHECK(hd != 0 && php_hd_wosize(hd) >= 1);
  v->found |= b == v->want;
  if (b <= v->last)
    v->ordered = 0;
  v->last = b;
  v->n++;
}

static ph_value unit_of(php_heap *h, ph_value v) {
  return v & ~(ph_value)(hstats(h).pool_size - 1);
}

static void test_visit(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  enum { N = 3000 };
  ph_value b[N];
  for (size_t i = 0; i < N; i++)
    b[i] = alloc_counted(o, 7, T_TUPLE);
  /* every block is visited from any address inside it; the pools (filled
   * one after the other) partition the blocks */
  size_t total = 0;
  for (size_t i = 0; i < N; i++) {
    vctx v = {.want = b[i], .ordered = 1};
    assert_int_equal(php_visit_pool_of(h, b[i] + 3 * 8, visit_count, &v),
                     PH_OK);
    assert_true(v.found);
    assert_true(v.ordered);
    if (i == 0 || unit_of(h, b[i]) != unit_of(h, b[i - 1]))
      total += v.n;
  }
  assert_int_equal(total, N);
  /* free the even ones: the visit sees exactly the odd ones of the pool */
  assert_int_equal(php_cycle(o), PH_OK);
  for (size_t i = 0; i < N; i += 2)
    ((ph_value *)b[i])[-1] = php_hd_make(7, col.garbage, T_TUPLE);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  size_t odd = 0;
  for (size_t i = 1; i < N; i += 2)
    odd += unit_of(h, b[i]) == unit_of(h, b[1]);
  vctx v = {.want = b[1], .ordered = 1};
  assert_int_equal(php_visit_pool_of(h, b[1], visit_count, &v), PH_OK);
  assert_true(v.found);
  assert_int_equal(v.n, odd);
  /* a large block: only itself, from any address inside it */
  ph_value l = alloc_counted(o, max_small + 100, T_TUPLE);
  vctx vl = {.want = l, .ordered = 1};
  assert_int_equal(php_visit_pool_of(h, l + 8 * 50, visit_count, &vl), PH_OK);
  assert_true(vl.found);
  assert_int_equal(vl.n, 1);
  assert_int_equal(php_visit_pool_of(h, l, NULL, NULL), PH_EINVAL);
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* A medium closure (heap.sizeclass.medium) of wo fields: code word, env
 * start, an infix header and itself (raw), then env fields i of value
 * x(i, k) but for env field 0, a value given. */
static ph_value medium_clos_fill(ph_value v, size_t wo, size_t k,
                                 ph_value env0) {
  ph_value *f = (ph_value *)v;
  f[0] = (ph_value)0x1000;
  f[1] = ph_val_int(CLOS_ENV);
  f[2] = php_hd_make(CLOS_INFIX, 0, T_INFIX);
  f[3] = v;
  f[CLOS_ENV] = env0;
  for (size_t i = CLOS_ENV + 1; i < wo; i++)
    f[i] = ph_val_int((intptr_t)(tu_mix(k, i) >> 2));
  return v;
}

/* heap.release.trim seen from the public API: the pools of the blocks
 * vs[0..n) (one medium class of nslots slots a pool), their slots' stride
 * from the full pools' neighbours, slot 0's offset in its pool's first
 * unit from a full pool's lowest block; in every pool with free slots, the
 * pages wholly inside a free slot past its first two words are counted,
 * and how many of them are resident (mincore). */
typedef struct pblocks {
  ph_value b[64];
  size_t n;
} pblocks;

static void visit_collect(ph_value b, ph_value hd, void *user) {
  pblocks *p = user;
  (void)hd;
  if (p->n < 64)
    p->b[p->n++] = b;
}

static void free_slot_pages(php_heap *h, const ph_value *vs, size_t n,
                            size_t nslots, size_t ps, size_t *pages,
                            size_t *res) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = 0;
  pblocks *pl = calloc(n, sizeof *pl);
  assert_non_null(pl);
  for (size_t k = 0; k < n; k++) { /* each pool once (by its lowest block) */
    pblocks t = {.n = 0};
    assert_int_equal(php_visit_pool_of(h, vs[k], visit_collect, &t), PH_OK);
    assert_true(t.n >= 1 && t.n <= nslots);
    size_t j = 0;
    while (j < np && pl[j].b[0] != t.b[0])
      j++;
    if (j == np)
      pl[np++] = t;
  }
  size_t stride = 0, off0 = 0;
  for (size_t j = 0; j < np; j++)
    for (size_t i = 1; i < pl[j].n; i++)
      if (!stride || pl[j].b[i] - pl[j].b[i - 1] < stride)
        stride = pl[j].b[i] - pl[j].b[i - 1];
  for (size_t j = 0; j < np; j++)
    if (pl[j].n == nslots)
      off0 = (pl[j].b[0] - 8) & (ps - 1);
  assert_true(stride >= 2 * pg && off0 > 0);
  *pages = *res = 0;
  for (size_t j = 0; j < np; j++) {
    if (pl[j].n == nslots)
      continue;
    uintptr_t start = 0;
    for (size_t i = 0; i < nslots && !start; i++) {
      uintptr_t st = pl[j].b[0] - 8 - off0 - i * stride;
      if ((st & (ps - 1)) == 0)
        start = st;
    }
    assert_true(start != 0);
    for (size_t i = 0, q = 0; i < nslots; i++) {
      uintptr_t sl = start + off0 + i * stride;
      if (q < pl[j].n && pl[j].b[q] == sl + 8) {
        q++;
        continue; /* allocated */
      }
      uintptr_t a = (sl + 16 + pg - 1) & ~(uintptr_t)(pg - 1);
      uintptr_t e = (sl + stride) & ~(uintptr_t)(pg - 1);
      unsigned char vec[64];
      size_t k = (e - a) / pg;
      assert_true(e > a && k <= sizeof vec);
      assert_int_equal(mincore((void *)a, e - a, vec), 0);
      *pages += k;
      for (size_t m = 0; m < k; m++)
        *res += vec[m] & 1;
    }
  }
  free(pl);
}

/* Medium blocks on the pool layer: served from pools of several units
 * (pool_bytes grows by whole medium pools, no large bytes); a visit from an
 * address in a later unit of a pool sees its whole pool; a sparse medium
 * heap compacts: blocks move, the committed bytes drop, the mappings do not
 * grow, every field survives and interior pointers (closures' infix
 * pointers, some into blocks whose field 0 lies in a later unit of their
 * pool: kept in the heap, in a root and outside, through php_forward) are
 * forwarded; php_verify is clean; a second compaction moves nothing.  The
 * pages lying wholly inside the free slots of the kept pools, past each
 * slot's first two words, are not resident after the compaction
 * (heap.release.trim: cfg.release is PH_RELEASE_DECOMMIT). */
static void test_medium_pools(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  php_heap_stats hs = hstats(h);
  size_t ps = hs.pool_size, wo = 2000; /* 5-unit pools of 9 slots (32 KiB) */
  size_t nb = tu_scale(9 * 60, 3), keep = 0;
  ph_value *all = calloc(nb, sizeof *all);
  ph_value *roots = calloc(nb, sizeof *roots);
  assert_non_null(all);
  assert_non_null(roots);
  ph_value prev = PH_UNIT, tailblk = 0;
  for (size_t i = 0; i < nb; i++) {
    ph_value v = alloc_counted(o, wo, T_CLOS);
    assert_true(v != 0);
    all[i] = v;
    if (i % 9 == 4 || i % 9 == 8) { /* kept: two in nine */
      medium_clos_fill(v, wo, keep, prev);
      prev = v + CLOS_INFIX * 8; /* an interior pointer */
      roots[keep++] = v;
      if (!tailblk &&
          (v & ~(ph_value)(ps - 1)) != (all[i - i % 9] & ~(ph_value)(ps - 1)))
        tailblk = v; /* field 0 in a later unit than its pool's first */
    } else {
      medium_clos_fill(v, wo, ~(size_t)0, PH_UNIT);
    }
  }
  assert_true(tailblk != 0);
  php_heap_stats s0 = hstats(h);
  assert_int_equal(s0.large_bytes, 0);
  assert_true(s0.pool_bytes >= nb * (wo + 1) * 8);
  /* the visit from a tail unit's address inside tailblk: its whole pool */
  vctx vv = {.want = tailblk, .ordered = 1};
  assert_int_equal(
      php_visit_pool_of(h, tailblk + 8 * (wo - 1), visit_count, &vv), PH_OK);
  assert_true(vv.found && vv.ordered);
  assert_int_equal(vv.n, 9);
  /* garbage: everything not kept */
  full_cycle(h, &o, 1, roots, keep);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  colours_rotate(h);
  assert_int_equal(php_cycle(o), PH_OK);
  ph_value *rs[1] = {roots};
  size_t ns[1] = {keep};
  graph g0 = walk(rs, ns, 1, col.unmarked);
  assert_true(g0.all_marked);
  ph_value *pr[2] = {roots, roots + keep / 2}; /* two participants */
  size_t pn[2] = {keep / 2, keep - keep / 2};
  cenv c = {.h = h, .nparts = 2, .roots = pr, .nroots = pn};
  c.side = tailblk + CLOS_INFIX * 8;
  php_heap_stats s1 = hstats(h);
  assert_int_equal(compact_run(&c), PH_OK);
  php_heap_stats s2 = hstats(h);
  print_message("medium: %zu of %zu closures kept; moved %llu blocks, %llu "
                "pools freed, committed %llu -> %llu\n",
                keep, nb, (unsigned long long)s2.evacuated_blocks,
                (unsigned long long)s2.evacuated_pools,
                (unsigned long long)s1.committed_bytes,
                (unsigned long long)s2.committed_bytes);
  assert_true(s2.evacuated_blocks > 0 && s2.evacuated_pools > 0);
  assert_true(s2.committed_bytes < s1.committed_bytes);
  assert_true(s2.mappings <= s1.mappings);
  size_t tpages, tres;
  free_slot_pages(h, roots, keep, 9, ps, &tpages, &tres);
  print_message("medium: %zu pages inside free slots, %zu resident\n", tpages,
                tres);
  assert_true(tpages > 0);
  assert_int_equal(tres, 0);
  graph g1 = walk(rs, ns, 1, col.unmarked);
  assert_int_equal(g1.hash, g0.hash);
  assert_int_equal(g1.blocks, g0.blocks);
  /* every field, and the interior pointers */
  size_t moved = 0, kk = 0;
  for (size_t k = 0; k < keep; k++) {
    ph_value *f = (ph_value *)roots[k];
    assert_int_equal(php_hd_wosize(php_hd_load(roots[k])), wo);
    while (kk % 9 != 4 && kk % 9 != 8)
      kk++;
    /* raw, its old address: copied, not fixed */
    assert_int_equal(f[3], all[kk++]);
    moved += roots[k] != f[3];
    assert_int_equal(f[CLOS_ENV], k ? roots[k - 1] + CLOS_INFIX * 8 : PH_UNIT);
    for (size_t i = CLOS_ENV + 1; i < wo; i++)
      if (f[i] != ph_val_int((intptr_t)(tu_mix(k, i) >> 2)))
        fail_msg("closure %zu field %zu changed", k, i);
  }
  assert_true(moved > 0);
  assert_true(closures_intact(roots, keep));
  /* the value kept outside: forwarded at its offset */
  size_t ti = 0;
  while (all[ti] != tailblk)
    ti++;
  size_t tk = 0;
  for (size_t i = 0; i < ti; i++)
    tk += i % 9 == 4 || i % 9 == 8;
  assert_int_equal(c.side_fwd, roots[tk] + CLOS_INFIX * 8);
  tu_pools_verify_ok(h);
  c.side = c.side_fwd;
  assert_int_equal(compact_run(&c), PH_OK);
  assert_int_equal(hstats(h).evacuated_blocks, 0);
  assert_int_equal(c.side_fwd, c.side);
  tu_pools_verify_ok(h);
  /* all dead: the sweeps by colour free every medium pool, whose units
   * go back to the OS (heap.release.sweep) */
  full_cycle(h, &o, 1, roots, 0);
  full_cycle(h, &o, 1, roots, 0);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  php_heap_stats s3 = hstats(h);
  assert_int_equal(s3.pool_bytes, 0);
  /* heap.pool.holes: the compaction's holes were not committed */
  assert_true(s3.committed_bytes + s2.pool_bytes <=
              s2.committed_bytes + s2.hole_bytes);
  tu_pools_verify_ok(h);
  free(all);
  free(roots);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* heap.release.sweep: an owner's sweep gives back the pages inside the
 * medium slots it frees (past each slot's header and link) and the units of
 * the medium pools it empties, in every release mode but KEEP; the slots
 * serve whole blocks again.  Pools of 9 slots of 16 KiB (32 KiB units): the
 * first pool kept whole, one block in nine kept after it, then pools that
 * die whole. */
static void sweep_trim_run(ph_release_mode mode) {
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  cfg.release = mode;
  php_heap *h = heap_cfg(&cfg);
  php_owner *o = owner_new(h);
  size_t ps = hstats(h).pool_size, wo = 2000, pools = tu_scale(24, 3);
  size_t nb = 9 * pools, keep = 0;
  ph_value *all = calloc(nb, sizeof *all), *roots = calloc(nb, sizeof *roots);
  assert_non_null(all);
  assert_non_null(roots);
  for (size_t i = 0; i < nb; i++) {
    ph_value v = alloc_counted(o, wo, T_RAW);
    assert_true(v != 0);
    for (size_t k = 0; k < wo; k++) /* every page of the slot resident */
      ((ph_value *)v)[k] = (ph_value)tu_mix(i, k);
    all[i] = v;
    if (i < 9 || (i < nb / 2 && i % 9 == 4))
      roots[keep++] = v;
  }
  php_heap_stats s0 = hstats(h);
  /* the medium pools' share of the counters (all of them here) */
  php_counters c0, c1;
  assert_int_equal(php_owner_counters(o, &c0), PH_OK);
  assert_int_equal(c0.medium_pool_words, c0.pool_words);
  assert_int_equal(c0.medium_live_words, nb * (wo + 1));
  assert_int_equal(c0.medium_live_words, c0.pool_live_words);
  /* two cycles: the second's sweep frees what no root holds */
  full_cycle(h, &o, 1, roots, keep);
  full_cycle(h, &o, 1, roots, keep);
  uint64_t freed0 = atomic_load(&m_freed);
  /* pools.sweep.work: a medium pool's work is its blocks' words */
  intptr_t budget = (intptr_t)1 << 40;
  assert_int_equal(php_sweep(o, budget), budget - (intptr_t)(nb * (wo + 1)));
  assert_int_equal(atomic_load(&m_freed) - freed0, nb - keep);
  assert_int_equal(php_owner_counters(o, &c1), PH_OK);
  assert_int_equal(c1.medium_live_words, keep * (wo + 1));
  assert_int_equal(c1.medium_pool_words, c1.pool_words);
  php_heap_stats s1 = hstats(h);
  size_t tpages, tres;
  free_slot_pages(h, roots, keep, 9, ps, &tpages, &tres);
  print_message("sweep trim (release %d): %zu pages inside free slots, %zu "
                "resident; committed %llu -> %llu, pools %llu -> %llu\n",
                (int)mode, tpages, tres, (unsigned long long)s0.committed_bytes,
                (unsigned long long)s1.committed_bytes,
                (unsigned long long)s0.pool_bytes,
                (unsigned long long)s1.pool_bytes);
  assert_true(tpages > 0);
  assert_true(s1.pool_bytes < s0.pool_bytes);
  if (mode == PH_RELEASE_KEEP) {
    assert_int_equal(tres, tpages);
    assert_int_equal(s1.committed_bytes, s0.committed_bytes);
  } else {
    assert_int_equal(tres, 0);
    /* the emptied pools' units went back: only the kept pools stay
     * committed */
    assert_int_equal(s1.free_bytes, 0);
    assert_int_equal(s1.committed_bytes, s1.pool_bytes);
  }
  tu_pools_verify_ok(h);
  /* the kept blocks are intact, the freed slots serve whole blocks again */
  for (size_t k = 0; k < keep; k++)
    for (size_t i = 0; i < nb; i++)
      if (all[i] == roots[k])
        for (size_t f = 0; f < wo; f++)
          if (((ph_value *)roots[k])[f] != (ph_value)tu_mix(i, f))
            fail_msg("kept block %zu field %zu changed", i, f);
  for (size_t i = 0; i < nb - keep; i++) {
    ph_value v = alloc_counted(o, wo, T_RAW);
    assert_true(v != 0);
    for (size_t k = 0; k < wo; k++)
      ((ph_value *)v)[k] = (ph_value)tu_mix(k, i);
    for (size_t k = 0; k < wo; k++)
      assert_int_equal(((ph_value *)v)[k], (ph_value)tu_mix(k, i));
  }
  tu_pools_verify_ok(h);
  free(all);
  free(roots);
  heap_end(h, o);
  tu_assert_no_failures();
}

static void test_sweep_trims_medium(void **state) {
  (void)state;
  sweep_trim_run(PH_RELEASE_DECOMMIT);
  sweep_trim_run(PH_RELEASE_UNMAP);
  sweep_trim_run(PH_RELEASE_KEEP);
}

/* The end of the two-owner tests: the counters checked against the model
 * and the recount, owner gone destroyed, the heap ended with last. */
static void counters_end(php_heap *h, php_owner *gone, php_owner *last) {
  php_owner *all[2] = {gone, last};
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(gone), PH_OK);
  heap_end(h, last);
  tu_assert_no_failures();
}

/* Orphan and adopt: counters travel, blocks stay, allocation adopts an
 * orphaned pool with room before taking a new one. */
static void test_orphan_adopt(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *a = owner_new(h), *b = owner_new(h);
  enum { N = 5000 };
  ph_value *v = malloc(N * sizeof *v);
  assert_non_null(v);
  for (size_t i = 0; i < N; i++) {
    v[i] = alloc_counted(a, 1 + i % 30, T_TUPLE);
    ((ph_value *)v[i])[0] = ph_val_int((intptr_t)i);
  }
  alloc_counted(a, max_small + 10, T_RAW);
  /* make some garbage and leave it unswept: orphaning sweeps it first */
  assert_int_equal(php_cycle(a), PH_OK);
  for (size_t i = 0; i < N; i += 3)
    ((ph_value *)v[i])[-1] = php_hd_make(1 + i % 30, col.garbage, T_TUPLE);
  php_counters ca, cb, co;
  assert_int_equal(php_owner_orphan(a), PH_OK);
  assert_int_equal(php_owner_counters(a, &ca), PH_OK);
  assert_int_equal(ca.pool_words, 0);
  assert_int_equal(ca.pool_live_blocks, 0);
  assert_int_equal(ca.large_blocks, 0);
  assert_int_equal(php_orphan_counters(h, &co), PH_OK);
  assert_int_equal(co.pool_live_blocks, atomic_load(&m_small_blocks));
  assert_int_equal(co.pool_live_words, atomic_load(&m_small_words));
  assert_int_equal(co.large_blocks, 1);
  tu_pools_verify_ok(h);
  /* allocation by b adopts orphaned pools with room, class by class */
  php_heap_stats st0 = hstats(h);
  ph_value x = alloc_counted(b, 2, T_TUPLE); /* its class has room */
  php_heap_stats st1 = hstats(h);
  assert_int_equal(st1.pool_bytes, st0.pool_bytes); /* no new pool */
  assert_int_equal(php_owner_counters(b, &cb), PH_OK);
  assert_true(cb.pool_words > 0);
  /* adopt everything else */
  assert_int_equal(php_owner_adopt(b), PH_OK);
  assert_int_equal(php_orphan_counters(h, &co), PH_OK);
  assert_int_equal(co.pool_words, 0);
  assert_int_equal(co.large_words, 0);
  assert_int_equal(co.pool_live_blocks, 0);
  php_owner *all[2] = {a, b};
  check_counters(all, 2, h);
  for (size_t i = 0; i < N; i++)
    if (i % 3)
      assert_int_equal(((ph_value *)v[i])[0], ph_val_int((intptr_t)i));
  assert_true(x != 0);
  tu_pools_verify_ok(h);
  /* b sweeps the adopted pools in its next cycle */
  colours_rotate(h);
  assert_int_equal(php_cycle(b), PH_OK);
  while (php_sweep(b, 1 << 20) <= 0)
    ;
  free(v);
  counters_end(h, a, b);
}

/* pools.counters.alloc: the owner's counters are exact (against the model,
 * and against the verifier's recount of every field, fragmentation and
 * medium live words included) while some classes' allocations are folded
 * (their pools swept) and others are not: allocations of small and medium
 * classes, a sweep stopped part way, more allocations, the sweep finished,
 * then orphaning and adoption. */
static void test_counters_by_class(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h), *b = owner_new(h);
  php_owner *all[2] = {o, b};
  /* small and medium sizes (the medium ones above 256 fields) */
  const size_t sizes[] = {1, 7, 60, 300, 1200};
  enum { NS = sizeof sizes / sizeof sizes[0], N = 3000 };
  ph_value *v = calloc(2 * N, sizeof *v);
  assert_non_null(v);
  size_t n = 0;
  for (size_t i = 0; i < N; i++)
    v[n++] = alloc_counted(o, sizes[i % NS], T_RAW);
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  /* a cycle: every third block of sizes 7 and 300 is garbage */
  colours_rotate(h);
  assert_int_equal(php_cycle(o), PH_OK);
  for (size_t i = 0; i < n; i++) {
    size_t wo = sizes[i % NS];
    if ((wo == 7 || wo == 300) && i % 3 == 0)
      ((ph_value *)v[i])[-1] = php_hd_make(wo, col.garbage, T_RAW);
  }
  /* part of the sweep: some classes folded, the others not */
  assert_true(php_sweep(o, 2000) <= 0);
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  /* more allocations, in every class, before the sweep ends */
  for (size_t i = 0; i < N; i++)
    v[n++] = alloc_counted(o, sizes[(i + 2) % NS], T_RAW);
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  php_counters c;
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_true(c.medium_live_words > 0);
  assert_true(c.medium_live_words < c.pool_live_words);
  assert_true(c.pool_live_words + c.pool_frag_words <= c.pool_words);
  /* allocations after the sweep, then orphaning folds them all */
  for (size_t i = 0; i < 50; i++)
    alloc_counted(o, sizes[i % NS], T_RAW);
  php_counters before;
  assert_int_equal(php_owner_counters(o, &before), PH_OK);
  assert_int_equal(php_owner_orphan(o), PH_OK);
  php_counters co;
  assert_int_equal(php_orphan_counters(h, &co), PH_OK);
  assert_int_equal(co.pool_live_blocks, before.pool_live_blocks);
  assert_int_equal(co.pool_live_words, before.pool_live_words);
  assert_int_equal(co.pool_frag_words, before.pool_frag_words);
  assert_int_equal(co.medium_live_words, before.medium_live_words);
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_live_blocks, 0);
  assert_int_equal(c.pool_live_words, 0);
  assert_int_equal(c.pool_frag_words, 0);
  assert_int_equal(c.medium_live_words, 0);
  check_counters(all, 2, h);
  tu_pools_verify_ok(h);
  /* b allocates (its own counts pending) and adopts */
  for (size_t i = 0; i < 50; i++)
    alloc_counted(b, sizes[i % NS], T_RAW);
  assert_int_equal(php_owner_adopt(b), PH_OK);
  free(v);
  counters_end(h, o, b);
}

/* The verifier sees a broken slot header. */
static void test_verify_detects(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  ph_value v = alloc_counted(o, 3, T_TUPLE);
  for (int i = 0; i < 3; i++)
    ((ph_value *)v)[i] = PH_UNIT;
  tu_pools_verify_ok(h);
  ph_value saved = ((ph_value *)v)[-1];
  ((ph_value *)v)[-1] = php_hd_make(max_small + 50, col.marked, T_TUPLE);
  char why[256] = "";
  assert_int_equal(php_verify(h, why, sizeof why), PH_ECORRUPT);
  assert_true(why[0] != 0);
  /* why_size 0: nothing written */
  char none[4] = "xyz";
  assert_int_equal(php_verify(h, none, 0), PH_ECORRUPT);
  assert_string_equal(none, "xyz");
  ((ph_value *)v)[-1] = saved;
  tu_pools_verify_ok(h);
  assert_int_equal(php_verify(NULL, why, sizeof why), PH_EINVAL);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* Callbacks' calls into the layer are refused and change nothing. */
/* heap.verify: php_verify and ph_verify share the pool layer's structural
 * walk, which follows a free list only through slot starts.  A fresh
 * pool's free slots follow its allocated ones in address order (a free
 * slot: a header of 0, field 0 the next link); a link 8 bytes into the
 * last free slot finds a 0 word before it, a 0 link (set here) and the
 * right count, but is not a slot (tests/test_verify.c: the managed path). */
static void test_verify_free_list(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  ph_value v = alloc_counted(o, 3, T_TUPLE), w = alloc_counted(o, 3, T_TUPLE);
  for (int i = 0; i < 3; i++)
    ((ph_value *)v)[i] = ((ph_value *)w)[i] = PH_UNIT;
  tu_pools_verify_ok(h);
  ph_value f = w + (w - v); /* the next free slot */
  assert_true(((ph_value *)f)[-1] == 0);
  ph_value *link = (ph_value *)f; /* the link to the last free slot */
  assert_true(*link != 0);
  while (*(ph_value *)*link != 0)
    link = (ph_value *)*link;
  ph_value last = *link, saved = ((ph_value *)last)[1];
  ((ph_value *)last)[1] = 0;
  *link = last + 8;
  char why[256] = "";
  assert_int_equal(php_verify(h, why, sizeof why), PH_ECORRUPT);
  printf("free list link into the middle of a slot: %s\n", why);
  *link = last;
  ((ph_value *)last)[1] = saved;
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

static php_owner *reentry_owner;
static php_heap *reentry_heap;
static atomic_int reentry_seen;

static void on_free_reenter(ph_value b, void *user) {
  (void)b;
  (void)user;
  php_heap_stats st;
  php_counters c;
  php_owner *o2 = NULL;
  TU_CHECK(php_alloc(reentry_owner, 2, 0) == 0);
  TU_CHECK(php_heap_stats_get(reentry_heap, &st) == PH_ESTATE);
  TU_CHECK(php_sweep(reentry_owner, 100) == 100);
  TU_CHECK(php_cycle(reentry_owner) == PH_ESTATE);
  TU_CHECK(php_owner_adopt(reentry_owner) == PH_ESTATE);
  TU_CHECK(php_owner_orphan(reentry_owner) == PH_ESTATE);
  TU_CHECK(php_owner_create(reentry_heap, &o2) == PH_ESTATE);
  TU_CHECK(o2 == NULL);
  TU_CHECK(php_owner_counters(reentry_owner, &c) == PH_ESTATE);
  TU_CHECK(php_verify(reentry_heap, NULL, 0) == PH_ESTATE);
  TU_CHECK(php_set_colours(reentry_heap, 1) == PH_ESTATE);
  atomic_fetch_add(&reentry_seen, 1);
}

static void test_reentry(void **state) {
  (void)state;
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free_reenter;
  php_heap *h = reentry_heap = heap_cfg(&cfg); /* colours {0, 1, 2} */
  php_owner *o = owner_new(h);
  reentry_owner = o;
  for (int i = 0; i < 100; i++) {
    ph_value v = php_alloc(o, 4, (2u << PHP_HD_COLOUR_SHIFT) | T_TUPLE);
    assert_true(v != 0);
  }
  ph_value keep = php_alloc(o, 4, T_TUPLE); /* colour 0: lives */
  assert_true(keep != 0);
  assert_int_equal(php_cycle(o), PH_OK);
  assert_true(php_sweep(o, 1 << 20) > 0);
  assert_int_equal(atomic_load(&reentry_seen), 100);
  tu_assert_no_failures();
  /* nothing changed by the refused calls */
  php_counters c;
  assert_int_equal(php_owner_counters(o, &c), PH_OK);
  assert_int_equal(c.pool_live_blocks, 1);
  assert_int_equal(c.pool_live_words, 5);
  tu_pools_verify_ok(h);
  heap_end(h, o);
}

/* ------------------------------------------ compaction, one thread's graph */

/* heap.pool.holes: resident pages of the units holding the
 * small blocks of roots[0..n) (each unit once, mincore), and how many pages
 * those units have in all. */
static void visit_nop(ph_value b, ph_value hd, void *user) {
  (void)b;
  (void)hd;
  (void)user;
}
static size_t roots_units_resident(php_heap *h, const ph_value *roots, size_t n,
                                   size_t *pages, int visit) {
  php_heap_stats st = hstats(h);
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = st.pool_size / pg, res = 0;
  ph_value *seen = calloc(n + 1, sizeof *seen);
  size_t ns = 0;
  unsigned char vec[256];
  *pages = 0;
  for (size_t i = 0; i < n; i++) {
    if (!ph_is_block(roots[i]))
      continue;
    ph_value b = block_of(roots[i]);
    if (php_hd_wosize(php_hd_load(b)) > st.max_small_wosize)
      continue;
    ph_value u = b & ~(ph_value)(st.pool_size - 1);
    size_t j = 0;
    while (j < ns && seen[j] != u)
      j++;
    if (j < ns)
      continue;
    seen[ns++] = u;
    if (visit)
      assert_int_equal(php_visit_pool_of(h, b, visit_nop, NULL), PH_OK);
    assert_int_equal(mincore((void *)u, st.pool_size, vec), 0);
    for (size_t k = 0; k < np; k++)
      res += vec[k] & 1;
    *pages += np;
  }
  free(seen);
  return res;
}

/* Build a fragmented graph over several owners, mark it with the test
 * collector, compact with nparts participants, and check graph identity,
 * php_forward of an outside value, verify, a stable second compaction and
 * the memory released. */
/* php_config.compact_helpers of compact_case's heap (pools.helpers) */
static unsigned helpers_on;

static void compact_case(unsigned nparts, size_t pool_size, uint64_t stream) {
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  if (pool_size)
    cfg.pool_size = pool_size;
  cfg.compact_helpers = helpers_on;
  php_heap *h = heap_cfg(&cfg);
  enum { NO = 3 };
  php_owner *own[NO];
  for (int i = 0; i < NO; i++)
    own[i] = owner_new(h);
  tu_rng r;
  tu_rng_init(&r, stream);
  size_t nroots = tu_scale(4000, 4);
  ph_value *roots = calloc(nroots, sizeof *roots);
  assert_non_null(roots);
  size_t nblocks = tu_scale(120000, 8);
  for (size_t i = 0; i < nroots; i++)
    roots[i] = PH_UNIT;
  for (size_t i = 0; i < nblocks; i++) {
    ph_value v = make_block(own[i % NO], &r, roots, nroots, 1);
    assert_true(v != 0);
    roots[tu_below(&r, nroots)] = v; /* most blocks die */
  }
  /* a closure in root 0 and an infix pointer to it kept outside */
  ph_value cl = make_block(own[0], &r, roots, nroots, 0);
  while (php_hd_tag(php_hd_load(cl)) != T_CLOS)
    cl = make_block(own[0], &r, roots, nroots, 0);
  roots[0] = cl;
  /* two cycles: the second marks what is reachable; its GARBAGE is what
   * died, its UNMARKED is what lives (OCaml's state at a compaction) */
  full_cycle(h, own, NO, roots, nroots);
  for (int i = 0; i < NO; i++)
    while (php_sweep(own[i], 1 << 20) <= 0)
      ;
  colours_rotate(h);
  for (int i = 0; i < NO; i++)
    assert_int_equal(php_cycle(own[i]), PH_OK);
  ph_value *rs[1] = {roots};
  size_t ns[1] = {nroots};
  graph g0 = walk(rs, ns, 1, col.unmarked);
  assert_true(g0.all_marked);
  php_heap_stats s0 = hstats(h);
  uint64_t blocks0 =
      atomic_load(&m_small_blocks) + atomic_load(&m_large_blocks);
  assert_true(g0.blocks < blocks0); /* there is garbage */

  cenv c = {.h = h, .nparts = nparts};
  ph_value **pr = calloc(nparts, sizeof *pr);
  size_t *pn = calloc(nparts, sizeof *pn);
  for (unsigned p = 0; p < nparts; p++) { /* roots split among participants */
    size_t a = nroots * p / nparts, b = nroots * (p + 1) / nparts;
    pr[p] = roots + a;
    pn[p] = b - a;
  }
  c.roots = pr;
  c.nroots = pn;
  c.side = cl + CLOS_INFIX * 8;
  atomic_store(&m_freed, 0);
  long maps0 = tu_maps_lines();
  assert_int_equal(compact_run(&c), PH_OK);
  long maps1 = tu_maps_lines();
  /* pools.helpers: min(compact_helpers, CPUs - participants)
   * started; their stacks were mapped with the heap, so the process maps
   * nothing more (with the sanitizers the count is not the program's; the
   * test's own participant threads may map their stacks) */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned idle = cpus > (long)nparts ? (unsigned)(cpus - nparts) : 0;
  assert_int_equal(hstats(h).compact_helpers,
                   helpers_on < idle ? helpers_on : idle);
  print_message("helpers %u of %u: %lu closures and tuples of %lu scanned on "
                "them; mappings %ld -> %ld\n",
                hstats(h).compact_helpers, helpers_on,
                (unsigned long)atomic_load(&cb_helper),
                (unsigned long)(atomic_load(&cb_tuple) + atomic_load(&cb_clos) +
                                atomic_load(&cb_other)),
                maps0, maps1);
  if (TU_MAPS_EXACT && nparts == 1)
    assert_true(maps1 <= maps0);
  if (!helpers_on)
    assert_int_equal(atomic_load(&cb_helper), 0);
  /* the garbage was freed by the compaction's sweep, on_free first */
  assert_int_equal(atomic_load(&m_freed), blocks0 - g0.blocks);
  graph g1 = walk(rs, ns, 1, col.unmarked);
  assert_int_equal(g1.hash, g0.hash);
  assert_int_equal(g1.blocks, g0.blocks);
  assert_true(closures_intact(roots, nroots));
  assert_int_equal(c.side_fwd, roots[0] + CLOS_INFIX * 8);
  {
    /* heap.pool.holes (compact.pack, compact.holes.free): the kept pools'
     * free granules are not resident, and neither a visit nor php_verify
     * faults them back.  (8 KiB pools have two granules of a page, the
     * first holding the header: a pool gives back only a free second
     * half, which this graph may not leave.) */
    size_t pages, r0 = roots_units_resident(h, roots, nroots, &pages, 0);
    tu_pools_verify_ok(h);
    size_t pages1, r1 = roots_units_resident(h, roots, nroots, &pages1, 1);
    print_message("holes: %zu of %zu pages resident, %zu after verify+visit\n",
                  r0, pages, r1);
    if (pool_size == 0)
      assert_true(r0 < pages);
    assert_int_equal(r1, r0);
  }
  /* the rule: closures through scan_block, tuples and raw blocks never;
   * without it every live block (tuples among them) */
  assert_true(atomic_load(&cb_clos) > 0);
  if (rule_on)
    assert_int_equal(atomic_load(&cb_tuple) + atomic_load(&cb_other), 0);
  else
    assert_true(atomic_load(&cb_tuple) > 0 && atomic_load(&cb_other) > 0);
  tu_pools_verify_ok(h);
  php_heap_stats s1 = hstats(h);
  assert_int_equal(s1.compactions, s0.compactions + 1);
  assert_true(s1.evacuated_blocks > 0);
  assert_true(s1.evacuated_pools > 0);
  assert_true(s1.released_bytes > 0);
  assert_true(s1.committed_bytes < s0.committed_bytes);
  assert_true(s1.mappings <= s0.mappings);
  check_counters(own, NO, h);
  /* every owner's sweep has nothing left to do */
  for (int i = 0; i < NO; i++)
    assert_int_equal(php_sweep(own[i], 10), 10);

  /* a second compaction moves nothing */
  c.side = c.side_fwd = roots[0];
  assert_int_equal(compact_run(&c), PH_OK);
  php_heap_stats s2 = hstats(h);
  assert_int_equal(s2.evacuated_blocks, 0);
  assert_int_equal(s2.evacuated_pools, 0);
  assert_int_equal(s2.pool_bytes, s1.pool_bytes);
  assert_int_equal(c.side_fwd, roots[0]);
  graph g2 = walk(rs, ns, 1, col.unmarked);
  assert_int_equal(g2.hash, g0.hash);
  tu_pools_verify_ok(h);

  /* life goes on on the compacted heap: this cycle's marking (the roots
   * and what they reach), allocation, the next cycle, its sweep */
  mstack ms = {0};
  for (size_t i = 0; i < nroots; i++)
    darken(&ms, roots[i]);
  while (ms.n)
    mark_some(&ms, SIZE_MAX);
  free(ms.e);
  for (size_t i = 0; i < nblocks / 4; i++) {
    ph_value v = make_block(own[i % NO], &r, roots, nroots, 1);
    assert_true(v != 0);
    roots[tu_below(&r, nroots)] = v;
  }
  full_cycle(h, own, NO, roots, nroots);
  for (int i = 0; i < NO; i++)
    while (php_sweep(own[i], 1 << 20) <= 0)
      ;
  check_counters(own, NO, h);
  tu_pools_verify_ok(h);
  free(pr);
  free(pn);
  free(roots);
  for (int i = 0; i < NO; i++)
    assert_int_equal(php_owner_destroy(own[i]), PH_OK);
  heap_end(h, NULL);
  tu_assert_no_failures();
}

static void test_compact_one(void **state) {
  (void)state;
  compact_case(1, 0, 10);
}

static void test_compact_parallel(void **state) {
  (void)state;
  compact_case(3, 0, 11);
  compact_case(4, 8192, 12);
}

/* The same graphs with the scan rule: tuples (and the infix pointers they
 * hold) updated by the layer inline, closures through scan_block. */
static void test_compact_rule(void **state) {
  (void)state;
  rule_on = 1;
  compact_case(1, 0, 13);
  compact_case(3, 8192, 14);
  rule_on = 0;
}

/* pools.helpers: the same graphs moved and updated with the layer's
 * helper threads beside one participant and beside two, with and without
 * the scan rule; every property compact_case checks holds, and as many
 * helpers start as the CPUs the participants leave allow. */
static void test_compact_helpers(void **state) {
  (void)state;
  helpers_on = 3;
  compact_case(1, 0, 15);
  compact_case(2, 8192, 16);
  rule_on = 1;
  compact_case(1, 0, 17);
  rule_on = 0;
  helpers_on = 0;
}

/* pools.helpers under RLIMIT_AS, in a forked child (exit code 0: as
 * expected): a helper stack the OS refuses is one helper fewer, not a
 * refused heap.  The stacks are seen as the kernel mappings a heap's
 * creation adds beyond those of a heap without helpers. */
static int helpers_rlimit_child(void) {
  php_config cfg;
  php_config_init(&cfg);
  php_heap *h = NULL;
  long m0 = tu_maps_lines();
  if (php_heap_create(&cfg, &h) != PH_OK)
    return 2;
  long plain = tu_maps_lines() - m0; /* a heap's own mappings */
  if (php_heap_destroy(h) != PH_OK)
    return 3;
  cfg.compact_helpers = 4;
  m0 = tu_maps_lines();
  if (php_heap_create(&cfg, &h) != PH_OK)
    return 4;
  if (tu_maps_lines() - m0 < plain + 4) /* four stacks, a guard page each */
    return 5;
  if (php_heap_destroy(h) != PH_OK)
    return 6;
  if (tu_maps_lines() != m0)
    return 7;
  /* 192 KiB of address space: the heap reserves half of what is left
   * (heap.chunk), which leaves no room for a 260 KiB stack */
  unsigned long long pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%llu", &pages) != 1)
    return 8;
  fclose(f);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0)
    return 9;
  rl.rlim_cur = pages * (uint64_t)sysconf(_SC_PAGESIZE) + (192u << 10);
  if (setrlimit(RLIMIT_AS, &rl) != 0)
    return 10;
  m0 = tu_maps_lines();
  if (php_heap_create(&cfg, &h) != PH_OK)
    return 11;
  if (tu_maps_lines() - m0 > plain) { /* no stack */
    fprintf(stderr, "mappings: a heap's %ld, under the limit %ld\n", plain,
            tu_maps_lines() - m0);
    return 12;
  }
  php_owner *o = NULL;
  if (php_owner_create(h, &o) != PH_OK || php_alloc(o, 4, 0) == 0)
    return 13;
  if (php_owner_destroy(o) != PH_OK || php_heap_destroy(h) != PH_OK)
    return 14;
  return 0;
}

static void test_helpers_rlimit(void **state) {
  (void)state;
  if (!TU_MAPS_EXACT) {
    print_message("skipped: the sanitizers' own mappings\n");
    return;
  }
  assert_int_equal(tu_in_child(helpers_rlimit_child), 0);
}

/* ------------------------------------------------ the scan rule */
enum { R_INLINE = 5, R_SPECIAL = 200, R_NOSCAN = 252 };

typedef struct rule_env {
  ph_value *roots;
  size_t nroots;
  unsigned barriers;
  uint64_t calls[256]; /* scan_block calls by tag */
  int phases[16];      /* on_phase: phase * 2 + begin, in order */
  unsigned nphases;
} rule_env;

static void r_barrier(void *user) {
  ((rule_env *)user)->barriers++;
}

static void r_scan_roots(unsigned part, ph_visit_fn visit, void *ctx,
                         void *user) {
  rule_env *e = user;
  (void)part;
  for (size_t i = 0; i < e->nroots; i++)
    visit(&e->roots[i], ctx);
}

/* R_SPECIAL: only field 1 holds a value; R_INLINE, T_TUPLE: every field;
 * R_NOSCAN: none. */
static void r_scan_block(ph_value b, ph_visit_fn visit, void *ctx, void *user) {
  rule_env *e = user;
  ph_value hd = php_hd_load(b);
  unsigned t = php_hd_tag(hd);
  e->calls[t]++;
  ph_value *f = (ph_value *)b;
  if (t == R_SPECIAL)
    visit(&f[1], ctx);
  else if (t < T_RAW)
    for (size_t i = 0; i < php_hd_wosize(hd); i++)
      visit(&f[i], ctx);
}

static void r_on_phase(unsigned phase, int begin, unsigned part, void *user) {
  rule_env *e = user;
  assert_int_equal(part, 0);
  if (e->nphases < 16)
    e->phases[e->nphases++] = (int)(phase * 2 + (begin ? 1 : 0));
}

/* One heap whose block X (wosize 2) lies alone in its pool, so that it
 * moves, pointed at by one block of each kind of the rule, small and large;
 * then one compaction with the rule (mode 1) or without it (mode 0: every
 * block through scan_block, as before the rule existed). */
static void rule_case(int mode) {
  php_heap *h = heap_new(0);
  php_owner *o;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  size_t psz = hstats(h).pool_size;
  /* tuples of 2 fields until 5 pools are in use; X: the first of the 5th */
  enum { MAXB = 1 << 16 };
  ph_value *all = calloc(MAXB, sizeof *all);
  unsigned *pool_no = calloc(MAXB, sizeof *pool_no);
  assert_true(all && pool_no);
  size_t n = 0;
  unsigned np = 0;
  ph_value last_unit = 0;
  for (;;) {
    assert_true(n < MAXB);
    ph_value v = alloc_counted(o, 2, T_TUPLE);
    ((ph_value *)v)[0] = ph_val_int(1);
    ((ph_value *)v)[1] = ph_val_int(2);
    ph_value u = v & ~(ph_value)(psz - 1);
    if (u != last_unit) {
      np++;
      last_unit = u;
    }
    if (np == 6)
      break;
    all[n] = v;
    pool_no[n++] = np;
  }
  ph_value *roots = calloc(n + 8, sizeof *roots);
  assert_non_null(roots);
  size_t nr = 0, ix = 0;
  for (size_t i = 0; i < n; i++) {
    if (pool_no[i] < 5 && i % 2 == 0)
      roots[nr++] = all[i]; /* pools 1..4: half full */
    else if (pool_no[i] == 5 && (i == 0 || pool_no[i - 1] == 4)) {
      ix = nr;
      roots[nr++] = all[i]; /* X: alone in pool 5 */
    }
  }
  ph_value x = roots[ix];
  size_t big = max_small + 10;
  ph_value a = alloc_counted(o, 3, R_INLINE);
  ph_value sp = alloc_counted(o, 2, R_SPECIAL);
  ph_value raw = alloc_counted(o, 1, R_NOSCAN);
  ph_value la = alloc_counted(o, big, T_TUPLE);
  ph_value ls = alloc_counted(o, big, R_SPECIAL);
  ph_value lr = alloc_counted(o, big, R_NOSCAN);
  ph_value *f = (ph_value *)a;
  f[0] = x;
  f[1] = x + 8; /* an interior pointer, found by the layer's own loop */
  f[2] = ph_val_int(3);
  f = (ph_value *)sp;
  f[0] = x; /* not a value for R_SPECIAL: never forwarded */
  f[1] = x;
  ((ph_value *)raw)[0] = x;
  for (size_t i = 0; i < big; i++) {
    ((ph_value *)la)[i] = i % 2 ? x + 8 : x;
    ((ph_value *)ls)[i] = x;
    ((ph_value *)lr)[i] = x;
  }
  size_t first_extra = nr;
  roots[nr++] = a;
  roots[nr++] = sp;
  roots[nr++] = raw;
  roots[nr++] = la;
  roots[nr++] = ls;
  roots[nr++] = lr;
  /* what is not a root dies: OCaml's state at a compaction */
  full_cycle(h, &o, 1, roots, nr);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  colours_rotate(h);
  assert_int_equal(php_cycle(o), PH_OK);

  rule_env e = {.roots = roots, .nroots = nr};
  php_compact_ops ops = {.nparts = 1,
                         .barrier = r_barrier,
                         .scan_roots = r_scan_roots,
                         .scan_block = r_scan_block,
                         .live_colours = 1u << col.unmarked,
                         .user = &e,
                         .on_phase = r_on_phase};
  if (mode) {
    ops.no_scan_tag = T_RAW;
    ops.scan_tags[R_SPECIAL / 64] = (uint64_t)1 << (R_SPECIAL % 64);
  }
  php_heap_stats s0 = hstats(h);
  assert_int_equal(php_compact_stw(h, 0, &ops), PH_OK);
  php_heap_stats s1 = hstats(h);
  assert_true(s1.evacuated_blocks > 0);
  ph_value nx = roots[ix];
  assert_true(nx != x); /* X moved */
  a = roots[first_extra];
  sp = roots[first_extra + 1];
  raw = roots[first_extra + 2];
  assert_int_equal(roots[first_extra + 3], la); /* large blocks stay */
  assert_int_equal(((ph_value *)a)[0], nx);
  assert_int_equal(((ph_value *)a)[1], nx + 8);
  assert_int_equal(((ph_value *)a)[2], ph_val_int(3));
  assert_int_equal(((ph_value *)sp)[0], x); /* went through scan_block */
  assert_int_equal(((ph_value *)sp)[1], nx);
  assert_int_equal(((ph_value *)raw)[0], x); /* not visited */
  for (size_t i = 0; i < big; i++) {
    assert_int_equal(((ph_value *)la)[i], i % 2 ? nx + 8 : nx);
    assert_int_equal(((ph_value *)ls)[i], i == 1 ? nx : x);
    assert_int_equal(((ph_value *)lr)[i], x);
  }
  uint64_t other = 0;
  for (unsigned t = 0; t < 256; t++)
    if (t != R_SPECIAL)
      other += e.calls[t];
  /* the rule: only R_SPECIAL blocks (one small, one large) through
   * scan_block, once each; without it every live block, once */
  assert_int_equal(e.calls[R_SPECIAL], 2);
  if (mode)
    assert_int_equal(other, 0);
  else
    assert_int_equal(other + 2, nr);
  /* on_phase: evacuate, update, release, each begun and ended, in order */
  int want[6] = {1, 0, 3, 2, 5, 4};
  assert_int_equal(e.nphases, 6);
  for (int i = 0; i < 6; i++)
    assert_int_equal(e.phases[i], want[i]);
  assert_int_equal(s1.compactions, s0.compactions + 1);
  tu_pools_verify_ok(h);

  /* the rule without scan_block (no tag goes through it) is accepted; a
   * second compaction moves nothing */
  rule_env e2 = {.roots = roots, .nroots = nr};
  php_compact_ops ops2 = {.nparts = 1,
                          .barrier = r_barrier,
                          .scan_roots = r_scan_roots,
                          .live_colours = 1u << col.unmarked,
                          .user = &e2,
                          .no_scan_tag = T_RAW};
  assert_int_equal(php_compact_stw(h, 0, &ops2), PH_OK);
  assert_int_equal(hstats(h).evacuated_blocks, 0);
  assert_int_equal(roots[ix], nx);
  tu_pools_verify_ok(h);
  free(all);
  free(pool_no);
  free(roots);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
  tu_assert_no_failures();
}

static void test_scan_rule(void **state) {
  (void)state;
  rule_case(1);
}

/* no_scan_tag 0 and no scan_tags: every live block through scan_block, as
 * before the rule existed. */
static void test_scan_rule_zero(void **state) {
  (void)state;
  rule_case(0);
}

/* Bad rule values: PH_EINVAL before any barrier, nothing changed. */
static void test_scan_rule_bad(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o;
  assert_int_equal(php_owner_create(h, &o), PH_OK);
  ph_value v = alloc_counted(o, 2, T_TUPLE);
  ((ph_value *)v)[0] = ph_val_int(1);
  ((ph_value *)v)[1] = ph_val_int(2);
  rule_env e = {.roots = &v, .nroots = 1};
  php_compact_ops good = {.nparts = 1,
                          .barrier = r_barrier,
                          .scan_roots = r_scan_roots,
                          .scan_block = r_scan_block,
                          .live_colours = 1u << col.marked,
                          .user = &e};
  php_heap_stats s0 = hstats(h);
  php_compact_ops bad = good;
  bad.no_scan_tag = 257; /* beyond every tag */
  assert_int_equal(php_compact_stw(h, 0, &bad), PH_EINVAL);
  bad = good;
  bad.scan_tags[2] = 1; /* a scan tag without the rule */
  assert_int_equal(php_compact_stw(h, 0, &bad), PH_EINVAL);
  bad = good;
  bad.no_scan_tag = T_RAW;
  bad.scan_tags[3] = (uint64_t)1 << 63;
  bad.scan_block = NULL; /* a scan tag and no scan_block */
  assert_int_equal(php_compact_stw(h, 0, &bad), PH_EINVAL);
  bad = good;
  bad.scan_block = NULL; /* no rule and no scan_block */
  assert_int_equal(php_compact_stw(h, 0, &bad), PH_EINVAL);
  assert_int_equal(e.barriers, 0);
  assert_int_equal(e.nphases, 0);
  php_heap_stats s1 = hstats(h);
  assert_int_equal(s1.compactions, s0.compactions);
  assert_int_equal(php_hd_load(v), php_hd_make(2, col.marked, T_TUPLE));
  assert_int_equal(((ph_value *)v)[1], ph_val_int(2));
  tu_pools_verify_ok(h);
  /* 256: every tag holds values; accepted */
  bad = good;
  bad.no_scan_tag = 256;
  assert_int_equal(php_compact_stw(h, 0, &bad), PH_OK);
  assert_true(e.barriers > 0);
  tu_pools_verify_ok(h);
  assert_int_equal(php_owner_destroy(o), PH_OK);
  assert_int_equal(php_heap_destroy(h), PH_OK);
  tu_assert_no_failures();
}

/* A block that has neither a live colour nor the garbage colour: the
 * compaction refuses on every participant, moves nothing. */
static void test_compact_bad_colour(void **state) {
  (void)state;
  php_heap *h = heap_new(0);
  php_owner *o = owner_new(h);
  tu_rng r;
  tu_rng_init(&r, 20);
  enum { NR = 500 };
  ph_value roots[NR];
  for (size_t i = 0; i < NR; i++)
    roots[i] = PH_UNIT;
  for (size_t i = 0; i < 20000; i++)
    roots[tu_below(&r, NR)] = make_block(o, &r, roots, NR, 0);
  full_cycle(h, &o, 1, roots, NR);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  colours_rotate(h);
  assert_int_equal(php_cycle(o), PH_OK);
  /* one block with the MARKED colour (neither live nor garbage now) */
  ph_value odd = make_block(o, &r, roots, NR, 0);
  roots[0] = odd;
  ph_value *rs[1] = {roots};
  size_t ns[1] = {NR};
  graph g0 = walk(rs, ns, 1, 4);
  php_heap_stats s0 = hstats(h);
  ph_value *pr[2] = {roots, roots + NR / 2};
  size_t pn[2] = {NR / 2, NR - NR / 2};
  cenv c = {.h = h, .nparts = 2, .roots = pr, .nroots = pn};
  assert_int_equal(compact_run(&c), PH_EINVAL);
  graph g1 = walk(rs, ns, 1, 4);
  assert_int_equal(g1.hash, g0.hash);
  php_heap_stats s1 = hstats(h);
  assert_int_equal(s1.evacuated_blocks, 0);
  assert_int_equal(s1.compactions, s0.compactions);
  tu_pools_verify_ok(h);
  heap_end(h, o);
  tu_assert_no_failures();
}

/* Release modes, retain, huge pages and heap_limit through a compaction:
 * the graph is kept every time; what goes back to the OS follows cfg. */
static void release_case(ph_release_mode mode, size_t retain, ph_huge_mode huge,
                         uint64_t stream) {
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  cfg.release = mode;
  cfg.retain = retain;
  cfg.huge_pages = huge;
  php_heap *h = heap_cfg(&cfg);
  php_owner *o = owner_new(h);
  tu_rng r;
  tu_rng_init(&r, stream);
  /* Without huge pages, the random graph.  With them, a sparse heap of
   * small blocks (one in eight kept, fields immediate): no large block and
   * no full pool pins a 2 MiB range, so ranges can empty whole if the pools
   * kept are chosen inside the ranges that stay (compact.choose.ranges;
   * without that choice this case releases nothing). */
  size_t NR = huge == PH_HUGE_OFF ? 2000 : 24000;
  ph_value *roots = calloc(NR, sizeof *roots);
  assert_non_null(roots);
  for (size_t i = 0; i < NR; i++)
    roots[i] = PH_UNIT;
  if (huge == PH_HUGE_OFF) {
    size_t n = tu_scale(60000, 4);
    for (size_t i = 0; i < n; i++)
      roots[tu_below(&r, NR)] = make_block(o, &r, roots, NR, 1);
  } else {
    for (size_t i = 0; i < NR * 8; i++) {
      size_t wo = 1 + tu_below(&r, 4);
      ph_value v = alloc_counted(o, wo, T_TUPLE);
      assert_true(v != 0);
      for (size_t k = 0; k < wo; k++)
        ((ph_value *)v)[k] = ph_val_int((intptr_t)i);
      if (tu_below(&r, 8) == 0)
        roots[i / 8] = v;
    }
  }
  full_cycle(h, &o, 1, roots, NR);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  colours_rotate(h);
  assert_int_equal(php_cycle(o), PH_OK);
  ph_value *rs[1] = {roots};
  size_t ns[1] = {NR};
  graph g0 = walk(rs, ns, 1, col.unmarked);
  php_heap_stats s0 = hstats(h);
  ph_value *pr[1] = {roots};
  size_t pn[1] = {NR};
  cenv c = {.h = h, .nparts = 2, .roots = pr, .nroots = pn};
  ph_value *pr2[2] = {roots, roots + NR};
  size_t pn2[2] = {NR, 0};
  c.roots = pr2;
  c.nroots = pn2;
  (void)pr;
  (void)pn;
  assert_int_equal(compact_run(&c), PH_OK);
  graph g1 = walk(rs, ns, 1, col.unmarked);
  assert_int_equal(g1.hash, g0.hash);
  tu_pools_verify_ok(h);
  php_heap_stats s1 = hstats(h);
  assert_true(s1.evacuated_blocks > 0);
  if (mode == PH_RELEASE_KEEP) {
    /* every pool freed stays committed (a freed large block gives back
     * the part of a page it did not fill: heap.large.commit) */
    assert_int_equal(s1.released_bytes, 0);
    assert_true(s1.free_bytes >=
                s0.free_bytes + (s0.pool_bytes - s1.pool_bytes));
  } else {
    /* (with huge pages only whole 2 MiB ranges go back: the pools kept are
     * chosen in the ranges that stay, compact.choose.ranges) */
    assert_true(s1.committed_bytes <= s0.committed_bytes);
    /* free committed memory beyond retain goes back (in whole units): what
     * stays is less than retain + a unit, and at least retain if any free
     * unit was released (with huge pages, free units of a range in use
     * stay).  released_bytes also counts the kept pools' granules made
     * holes (compact.holes.free), which retain does not hold back: they
     * are not free units */
    if (huge == PH_HUGE_OFF)
      assert_true(s1.free_bytes < retain + s1.pool_size);
    uint64_t holed =
        s1.hole_bytes > s0.hole_bytes ? s1.hole_bytes - s0.hole_bytes : 0;
    assert_true(s1.released_bytes >= holed);
    if (s1.released_bytes > holed)
      assert_true(s1.free_bytes >= retain);
    if (retain == 0) {
      assert_true(s1.released_bytes > 0);
      assert_true(s1.committed_bytes < s0.committed_bytes);
    }
  }
  if (mode != PH_RELEASE_UNMAP)
    assert_true(s1.mappings <= s0.mappings);
  free(roots);
  heap_end(h, o);
  tu_assert_no_failures();
}

static void test_release_modes(void **state) {
  (void)state;
  release_case(PH_RELEASE_DECOMMIT, 0, PH_HUGE_OFF, 30);
  release_case(PH_RELEASE_DECOMMIT, (size_t)1 << 20, PH_HUGE_OFF, 31);
  release_case(PH_RELEASE_KEEP, 0, PH_HUGE_OFF, 32);
  release_case(PH_RELEASE_UNMAP, 0, PH_HUGE_OFF, 33);
  release_case(PH_RELEASE_LAZY, 0, PH_HUGE_OFF, 34);
  release_case(PH_RELEASE_DECOMMIT, 0, PH_HUGE_TRANSPARENT, 35);
}

/* heap_limit: allocation is refused with PH_ENOMEM at the limit, the heap
 * stays intact and usable, and sweeping makes room again. */
static void test_heap_limit(void **state) {
  (void)state;
  php_config cfg;
  php_config_init(&cfg);
  cfg.on_free = on_free;
  cfg.heap_limit = (size_t)8 << 20;
  php_heap *h = heap_cfg(&cfg);
  php_owner *o = owner_new(h);
  size_t n = 0;
  ph_value v;
  while ((v = php_alloc(o, 10, (col.marked << PHP_HD_COLOUR_SHIFT) | T_RAW)))
    n++;
  assert_int_equal(php_last_error(o), PH_ENOMEM);
  assert_true(n > 1000);
  php_heap_stats st = hstats(h);
  assert_true(st.committed_bytes <= cfg.heap_limit);
  assert_int_equal(php_alloc(o, max_small + 10, T_RAW), 0);
  assert_int_equal(php_last_error(o), PH_ENOMEM);
  tu_pools_verify_ok(h);
  /* everything becomes garbage: the allocation that was refused works
   * after the sweep of the next cycle (php_alloc sweeps its class, and the
   * pools it frees are committed memory a new pool takes under the limit,
   * though a reserved, uncommitted unit lies at a lower address) */
  colours_rotate(h);
  colours_rotate(h); /* garbage = the colour the blocks were given */
  assert_int_equal(php_cycle(o), PH_OK);
  assert_true(php_alloc(o, 10, T_RAW) != 0);
  while (php_sweep(o, 1 << 20) <= 0)
    ;
  assert_true(php_alloc(o, max_small + 10, T_RAW) != 0);
  tu_pools_verify_ok(h);
  heap_end(h, o);
}

/* ------------------------------------------- the concurrent collector */
#define MT_MAX 8
#define MT_ROOTS 256
#define MT_SHARED 64

typedef struct mt {
  php_heap *h;
  unsigned n;
  size_t cycles, steps;
  pthread_barrier_t bar;
  ph_value shared[MT_SHARED]; /* any thread reads and writes (atomics) */
  struct mtw {
    struct mt *m;
    unsigned idx;
    php_owner *o;
    ph_value roots[MT_ROOTS];
    mstack st;
    tu_rng r;
    size_t orphans, visits;
  } w[MT_MAX];
  cenv ce;
  ph_value *croots[MT_MAX + 1];
  size_t cn[MT_MAX + 1];
  uint64_t released, moved;
} mt;

/* Mutate: allocate blocks from any reachable values, store them in our
 * roots, in shared slots, or in a field of a reachable tuple, with a
 * deletion barrier (the old value is darkened). */
static void mt_mutate(struct mtw *w) {
  mt *m = w->m;
  tu_rng *r = &w->r;
  for (int k = 0; k < 4; k++) {
    const ph_value *src = tu_below(r, 3) ? w->roots : m->shared;
    size_t ns = src == w->roots ? MT_ROOTS : MT_SHARED;
    ph_value v = make_block(w->o, r, src, ns, 1);
    if (!v)
      return;
    switch (tu_below(r, 4)) {
    case 0: { /* a shared slot */
      ph_value old = __atomic_exchange_n(&m->shared[tu_below(r, MT_SHARED)], v,
                                         __ATOMIC_ACQ_REL);
      darken(&w->st, old);
      break;
    }
    case 1: { /* a field of a tuple reachable from our roots */
      ph_value t = w->roots[tu_below(r, MT_ROOTS)];
      if (ph_is_block(t) && php_hd_tag(php_hd_load(block_of(t))) == T_TUPLE) {
        t = block_of(t);
        size_t wo = php_hd_wosize(php_hd_load(t));
        ph_value *f = (ph_value *)t + tu_below(r, wo);
        ph_value old = __atomic_exchange_n(f, v, __ATOMIC_ACQ_REL);
        darken(&w->st, old);
        break;
      }
    }
      /* fall through */
    default: /* our own roots were darkened at the cycle */
      __atomic_store_n(&w->roots[tu_below(r, MT_ROOTS)], v, __ATOMIC_RELEASE);
    }
  }
}

/* Visit the pool of b from an address inside it. */
static void mt_visit(struct mtw *w, ph_value b, ph_value v) {
  vctx c = {.want = b, .ordered = 1};
  int e = php_visit_pool_of(w->m->h, v, visit_count, &c);
  TU_CHECK(e == PH_OK);
  TU_CHECK(c.found);
  TU_CHECK(c.ordered);
  w->visits++;
}

static void mt_stw_check(mt *m) {
  php_owner *own[MT_MAX];
  for (unsigned i = 0; i < m->n; i++)
    own[i] = m->w[i].o;
  check_counters(own, m->n, m->h);
  /* every reachable block was marked in this cycle (snapshot at the
   * beginning + allocation MARKED): none is free or garbage */
  graph g = walk(m->croots, m->cn, m->n + 1, col.marked);
  TU_CHECK(g.all_marked);
  TU_CHECK(g.blocks <=
           atomic_load(&m_small_blocks) + atomic_load(&m_large_blocks));
  verify_ok_mt(m->h);
}

static void mt_compact(mt *m, unsigned idx) {
  static graph g0;
  static php_heap_stats s0;
  if (idx == 0) {
    m->ce.ops.live_colours = 1u << col.unmarked;
    g0 = walk(m->croots, m->cn, m->n + 1, col.unmarked);
    TU_CHECK(g0.all_marked);
    s0 = hstats(m->h);
  }
  pthread_barrier_wait(&m->bar);
  for (int round = 0; round < 2; round++) {
    int e = php_compact_stw(m->h, idx, &m->ce.ops);
    TU_CHECK(e == PH_OK);
    pthread_barrier_wait(&m->bar);
    if (idx == 0) {
      graph g = walk(m->croots, m->cn, m->n + 1, col.unmarked);
      TU_CHECK(g.hash == g0.hash);
      TU_CHECK(g.blocks == g0.blocks);
      verify_ok_mt(m->h);
      php_heap_stats s = hstats(m->h);
      TU_CHECK(s.mappings <= s0.mappings);
      if (round == 0) {
        m->moved += s.evacuated_blocks;
        if (s.released_bytes > 0 && s.committed_bytes < s0.committed_bytes)
          m->released++;
      } else {
        TU_CHECK(s.evacuated_blocks == 0);
      }
      php_owner *own[MT_MAX];
      for (unsigned i = 0; i < m->n; i++)
        own[i] = m->w[i].o;
      check_counters(own, m->n, m->h);
    }
    pthread_barrier_wait(&m->bar);
  }
}

static void *mt_main(void *arg) {
  struct mtw *w = arg;
  mt *m = w->m;
  for (size_t cyc = 0; cyc < m->cycles; cyc++) {
    /* the concurrent phase: mark, sweep, mutate, visit, orphan */
    for (size_t s = 0; s < m->steps; s++) {
      mt_mutate(w);
      if (w->st.n && tu_below(&w->r, 32) == 0) {
        ph_value b = w->st.e[w->st.n - 1]; /* marked: not garbage */
        mt_visit(w, b, b + 8 * tu_below(&w->r, php_hd_wosize(php_hd_load(b))));
      }
      mark_some(&w->st, 16);
      php_sweep(w->o, 300);
      if (s == m->steps / 2 && cyc % m->n == w->idx && cyc % 2 == 1) {
        /* this domain terminates and a new one takes its place: its roots
         * still reach blocks in the orphaned pools */
        TU_CHECK(php_owner_destroy(w->o) == PH_OK);
        TU_CHECK(php_owner_create(m->h, &w->o) == PH_OK);
        w->orphans++;
      }
    }
    while (w->st.n)
      mark_some(&w->st, SIZE_MAX);
    while (php_sweep(w->o, 1 << 20) <= 0)
      ;
    pthread_barrier_wait(&m->bar);
    if (w->idx == 0)
      mt_stw_check(m);
    pthread_barrier_wait(&m->bar);
    /* the cycle: colours rotate (one thread), orphans adopted, php_cycle */
    if (w->idx == 0)
      colours_rotate(m->h);
    pthread_barrier_wait(&m->bar);
    if (w->idx == cyc % m->n)
      TU_CHECK(php_owner_adopt(w->o) == PH_OK);
    pthread_barrier_wait(&m->bar);
    TU_CHECK(php_cycle(w->o) == PH_OK);
    pthread_barrier_wait(&m->bar);
    if (cyc % 3 == 2)
      mt_compact(m, w->idx);
    /* roots of the new cycle */
    for (size_t i = 0; i < MT_ROOTS; i++)
      darken(&w->st, w->roots[i]);
    if (w->idx == 0)
      for (size_t i = 0; i < MT_SHARED; i++)
        darken(&w->st, m->shared[i]);
    pthread_barrier_wait(&m->bar);
  }
  return NULL;
}

static void mt_compact_scan_roots(unsigned part, ph_visit_fn visit, void *ctx,
                                  void *user) {
  mt *m = user;
  for (size_t i = 0; i < MT_ROOTS; i++)
    visit(&m->w[part].roots[i], ctx);
  if (part == 0)
    for (size_t i = 0; i < MT_SHARED; i++)
      visit(&m->shared[i], ctx);
}

static void mt_barrier(void *user) {
  mt *m = user;
  pthread_barrier_wait(&m->bar);
}

static void test_concurrent(void **state) {
  (void)state;
  mt *m = calloc(1, sizeof *m);
  assert_non_null(m);
  m->h = heap_new(0);
  m->n = TU_TSAN ? 3 : 4;
  m->cycles = tu_scale(12, 2);
  m->steps = tu_scale(3000, 3);
  pthread_barrier_init(&m->bar, NULL, m->n);
  for (size_t i = 0; i < MT_SHARED; i++)
    m->shared[i] = PH_UNIT;
  for (unsigned i = 0; i < m->n; i++) {
    struct mtw *w = &m->w[i];
    w->m = m;
    w->idx = i;
    tu_rng_init(&w->r, 100 + i);
    for (size_t k = 0; k < MT_ROOTS; k++)
      w->roots[k] = PH_UNIT;
    assert_int_equal(php_owner_create(m->h, &w->o), PH_OK);
    m->croots[i] = w->roots;
    m->cn[i] = MT_ROOTS;
  }
  m->croots[m->n] = m->shared;
  m->cn[m->n] = MT_SHARED;
  m->ce.ops = (php_compact_ops){.nparts = m->n,
                                .barrier = mt_barrier,
                                .scan_roots = mt_compact_scan_roots,
                                .scan_block = scan_block,
                                .live_colours = 0, /* set by mt_compact */
                                .user = m};
  pthread_t t[MT_MAX];
  for (unsigned i = 1; i < m->n; i++)
    assert_int_equal(pthread_create(&t[i], NULL, mt_main, &m->w[i]), 0);
  mt_main(&m->w[0]);
  for (unsigned i = 1; i < m->n; i++)
    pthread_join(t[i], NULL);
  tu_assert_no_failures();
  size_t orphans = 0, visits = 0;
  for (unsigned i = 0; i < m->n; i++) {
    orphans += m->w[i].orphans;
    visits += m->w[i].visits;
    free(m->w[i].st.e);
  }
  printf("concurrent: %u threads, %zu cycles, %zu orphanings, %zu visits, "
         "%" PRIu64 " blocks moved, %" PRIu64 " compactions released\n",
         m->n, m->cycles, orphans, visits, m->moved, m->released);
  assert_true(orphans > 0);
  assert_true(visits > 0);
  assert_true(m->moved > 0);
  assert_true(m->released > 0);
  for (unsigned i = 0; i < m->n; i++)
    assert_int_equal(php_owner_destroy(m->w[i].o), PH_OK);
  assert_int_equal(php_heap_destroy(m->h), PH_OK);
  pthread_barrier_destroy(&m->bar);
  free(m);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_alloc_sweep),
      cmocka_unit_test(test_alloc_sweep_policy),
      cmocka_unit_test(test_alloc_sweep_before_grow),
      cmocka_unit_test(test_unit_reuse),
      cmocka_unit_test(test_unit_reuse_large),
      cmocka_unit_test(test_visit),
      cmocka_unit_test(test_medium_pools),
      cmocka_unit_test(test_sweep_trims_medium),
      cmocka_unit_test(test_orphan_adopt),
      cmocka_unit_test(test_counters_by_class),
      cmocka_unit_test(test_verify_detects),
      cmocka_unit_test(test_verify_free_list),
      cmocka_unit_test(test_reentry),
      cmocka_unit_test(test_compact_one),
      cmocka_unit_test(test_compact_parallel),
      cmocka_unit_test(test_compact_rule),
      cmocka_unit_test(test_compact_helpers),
      cmocka_unit_test(test_helpers_rlimit),
      cmocka_unit_test(test_scan_rule),
      cmocka_unit_test(test_scan_rule_zero),
      cmocka_unit_test(test_scan_rule_bad),
      cmocka_unit_test(test_compact_bad_colour),
      cmocka_unit_test(test_release_modes),
      cmocka_unit_test(test_heap_limit),
      cmocka_unit_test(test_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
