/* tests/fuzz_model.c -- a model-based differential fuzzer for poolheap.
 *
 * LLVMFuzzerTestOneInput decodes its bytes into operations and applies each
 * one both to a fresh poolheap and to a plain reference model of the object
 * graph kept outside the heap:
 *   attach / detach / switch domains, alloc (every small size, large, raw),
 *   set a field to a node, an immediate or 0, set or drop a root (handle-scope
 *   slots, nested scopes, global roots, scan_roots hook slots), collect,
 *   compact, verify, census, safepoint, blocking sections.
 * After every operation that may collect or move, the whole reachable graph
 * is walked in the heap and in the model side by side: every node's tag,
 * wosize, id (field 0), every field and every sharing (same node reached
 * twice = same address) must agree, and after collect and compact the heap's
 * live_blocks and live_bytes must equal the model's reachable set exactly.
 * Any difference prints a description and abort()s.
 *
 * Several domains are simulated on the fuzzing thread: each one is attached
 * by this thread and at most one of them is running at a time; the others
 * sit in blocking sections (so the collector scans and updates their roots
 * from the running one), which is what the API allows for one thread.
 *
 * Built two ways: by clang -fsanitize=fuzzer (tools/genninja.sh, target
 * `fuzz`, binary build/fuzz/fuzz_model), and included by
 * tests/test_fuzz_replay.c, which replays tests/fuzz_corpus/ and fresh
 * random inputs in every variant. */
#include <poolheap.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAXN 384  /* model nodes alive at once */
#define FZ_DOMS 4    /* max_domains of the heap */
#define FZ_ROOTS 6   /* handle-scope slots per domain (base scope) */
#define FZ_NEST 4    /* nested scopes per domain, one slot each */
#define FZ_HOOK 2    /* scan_roots hook slots per domain */
#define FZ_GLOBALS 4 /* registered global roots */
#define FZ_MAXOPS 4096

/* A model value: 0 is the word 0, an odd word is that immediate, otherwise
 * (node index + 1) << 1. */
typedef uint64_t fz_val;
#define FZ_NODE(i) ((fz_val)((i) + 1) << 1)
static inline int fz_is_node(fz_val e) {
  return e != 0 && (e & 1) == 0;
}
static inline size_t fz_node_of(fz_val e) {
  return (size_t)(e >> 1) - 1;
}

typedef struct fz_node {
  int used;
  uint64_t id;
  size_t wosize;
  unsigned tag;
  fz_val *f;     /* scanned blocks: f[1..wosize-1]; f[0] is the id */
  ph_value addr; /* heap address, valid since the last sync */
  unsigned mark; /* == fz.epoch when reached by the last sync */
} fz_node;

typedef struct fz_dom {
  ph_domain *d; /* NULL: slot free */
  size_t base;  /* base scope mark */
  ph_value *slot[FZ_ROOTS];
  fz_val root[FZ_ROOTS];
  int nnest;
  size_t nest_mark[FZ_NEST];
  ph_value *nest_slot[FZ_NEST];
  fz_val nest_root[FZ_NEST];
  ph_value hook[FZ_HOOK]; /* visited by the scan_roots hook */
  fz_val hook_root[FZ_HOOK];
} fz_dom;

static struct {
  ph_heap *h;
  fz_dom dom[FZ_DOMS];
  int cur; /* running domain, -1 if none */
  ph_value glob[FZ_GLOBALS];
  fz_val glob_root[FZ_GLOBALS];
  fz_node n[FZ_MAXN];
  size_t nlive;
  size_t order[FZ_MAXN]; /* nodes reachable at the last sync */
  size_t norder;
  unsigned epoch;
  uint64_t next_id;
  uint64_t reach_blocks, reach_bytes;
  const uint8_t *p;
  size_t left;
  unsigned op;
  const char *what;
} fz;

/* Set by a replay driver to name the input in failure messages. */
const char *fz_input_name;

#define FZ_FAIL(...)                                                           \
  do {                                                                         \
    fprintf(stderr, "fuzz_model: MISMATCH (input %s, op %u, %s): ",            \
            fz_input_name ? fz_input_name : "?", fz.op, fz.what);              \
    fprintf(stderr, __VA_ARGS__);                                              \
    fprintf(stderr, "\n");                                                     \
    abort();                                                                   \
  } while (0)
#define FZ_CHECK(c, ...)                                                       \
  do {                                                                         \
    if (!(c))                                                                  \
      FZ_FAIL("check failed: " #c ": " __VA_ARGS__);                           \
  } while (0)

static unsigned get8(void) {
  if (!fz.left)
    return 0;
  fz.left--;
  return *fz.p++;
}
static unsigned get16(void) {
  return get8() << 8 | get8();
}

static uint64_t raw_word(uint64_t id, size_t k) {
  uint64_t x = (id + 1) * 0x9e3779b97f4a7c15ull + k * 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 29);
}

static ph_value *fz_slot(int dom, int kind, int k) {
  fz_dom *m = &fz.dom[dom];
  switch (kind) {
  case 0:
    return m->slot[k];
  case 1:
    return m->nest_slot[k];
  default:
    return &m->hook[k];
  }
}

/* ------------------------------------------------------------ the walk */

/* where: "<kind> <a> <b>" (e.g. "node id 12 field 3"), formatted only on a
 * mismatch. */
static void check_value(ph_value v, fz_val e, const char *kind, uint64_t a,
                        size_t b) {

  if (!fz_is_node(e)) {
    if (v != (ph_value)e)
      FZ_FAIL("%s %lu %zu: heap value %#lx, model %#lx", kind, (unsigned long)a,
              b, (unsigned long)v, (unsigned long)e);
    return;
  }
  size_t i = fz_node_of(e);
  fz_node *n = &fz.n[i];
  if (!n->used)
    FZ_FAIL("%s %lu %zu: model edge to a freed node %zu", kind,
            (unsigned long)a, b, i);
  if (!ph_is_block(v))
    FZ_FAIL("%s %lu %zu: heap value %#lx is not a block, model node id %lu",
            kind, (unsigned long)a, b, (unsigned long)v, (unsigned long)n->id);
  if (n->mark == fz.epoch) {
    if (n->addr != v)
      FZ_FAIL("%s %lu %zu: node id %lu reached at %#lx and at %#lx (sharing "
              "lost)",
              kind, (unsigned long)a, b, (unsigned long)n->id,
              (unsigned long)n->addr, (unsigned long)v);
    return;
  }
  n->mark = fz.epoch;
  n->addr = v;
  fz.order[fz.norder++] = i;
}

static void check_node(size_t i) {
  fz_node *n = &fz.n[i];
  ph_value v = n->addr;
  if (ph_tag(v) != n->tag || ph_wosize(v) != n->wosize)
    FZ_FAIL("node id %lu at %#lx: tag %u wosize %zu, model tag %u wosize %zu",
            (unsigned long)n->id, (unsigned long)v, ph_tag(v), ph_wosize(v),
            n->tag, n->wosize);
  fz.reach_blocks++;
  fz.reach_bytes += (n->wosize + 1) * 8;
  if (n->tag >= PH_TAG_RAW) {
    const uint64_t *w = ph_raw(v);
    for (size_t k = 0; k < n->wosize; k++)
      if (w[k] != raw_word(n->id, k))
        FZ_FAIL("raw node id %lu at %#lx: word %zu is %#lx",
                (unsigned long)n->id, (unsigned long)v, k, (unsigned long)w[k]);
    return;
  }
  if (ph_field(v, 0) != ph_val_int((intptr_t)n->id))
    FZ_FAIL("node at %#lx: field 0 is %#lx, model id %lu", (unsigned long)v,
            (unsigned long)ph_field(v, 0), (unsigned long)n->id);
  for (size_t k = 1; k < n->wosize; k++)
    check_value(ph_field(v, k), n->f[k], "node id/field", n->id, k);
}

static void free_node(size_t i) {
  free(fz.n[i].f);
  memset(&fz.n[i], 0, sizeof fz.n[i]);
  fz.nlive--;
}

/* Walk heap and model from every root side by side; refresh every reachable
 * node's address; free the model's unreachable nodes (they are dead). */
static void fz_sync(const char *what) {
  fz.what = what;
  fz.epoch++;
  fz.norder = 0;
  fz.reach_blocks = fz.reach_bytes = 0;
  for (int g = 0; g < FZ_GLOBALS; g++)
    check_value(fz.glob[g], fz.glob_root[g], "global root", 0, (size_t)g);
  for (int di = 0; di < FZ_DOMS; di++) {
    fz_dom *m = &fz.dom[di];
    if (!m->d)
      continue;
    for (int k = 0; k < FZ_ROOTS; k++)
      check_value(*m->slot[k], m->root[k], "domain/root", (uint64_t)di,
                  (size_t)k);
    for (int k = 0; k < m->nnest; k++)
      check_value(*m->nest_slot[k], m->nest_root[k], "domain/nested root",
                  (uint64_t)di, (size_t)k);
    for (int k = 0; k < FZ_HOOK; k++)
      check_value(m->hook[k], m->hook_root[k], "domain/hook root", (uint64_t)di,
                  (size_t)k);
  }
  for (size_t q = 0; q < fz.norder; q++)
    check_node(fz.order[q]);
  for (size_t i = 0; i < FZ_MAXN; i++)
    if (fz.n[i].used && fz.n[i].mark != fz.epoch)
      free_node(i);
}

static void check_live_stats(void) {
  ph_stats st;
  FZ_CHECK(ph_stats_get(fz.h, &st) == PH_OK, "stats");
  if (st.live_blocks != fz.reach_blocks || st.live_bytes != fz.reach_bytes)
    FZ_FAIL("heap live %lu blocks %lu bytes, model %lu blocks %lu bytes",
            (unsigned long)st.live_blocks, (unsigned long)st.live_bytes,
            (unsigned long)fz.reach_blocks, (unsigned long)fz.reach_bytes);
}

/* ------------------------------------------------------------ helpers */

static void hook(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)user;
  for (int i = 0; i < FZ_DOMS; i++)
    if (fz.dom[i].d == d)
      for (int k = 0; k < FZ_HOOK; k++)
        visit(&fz.dom[i].hook[k], ctx);
}

static void clear_dom(fz_dom *m) {
  memset(m, 0, sizeof *m);
}

static int attach(void) {
  int free_slot = -1;
  for (int i = 0; i < FZ_DOMS; i++)
    if (!fz.dom[i].d) {
      free_slot = i;
      break;
    }
  if (fz.cur >= 0)
    ph_blocking_enter(fz.dom[fz.cur].d);
  ph_domain *d = NULL;
  int err = ph_domain_attach(fz.h, &d);
  if (free_slot < 0) {
    FZ_CHECK(err == PH_ESTATE, "attach beyond max_domains returned %d", err);
    if (fz.cur >= 0)
      ph_blocking_leave(fz.dom[fz.cur].d);
    return -1;
  }
  FZ_CHECK(err == PH_OK, "attach returned %d", err);
  fz_dom *m = &fz.dom[free_slot];
  clear_dom(m);
  m->d = d;
  m->base = ph_scope_open(d);
  FZ_CHECK(m->base != (size_t)-1, "scope_open");
  for (int k = 0; k < FZ_ROOTS; k++) {
    m->slot[k] = ph_root(d, PH_UNIT);
    FZ_CHECK(m->slot[k] != NULL, "ph_root");
    m->root[k] = PH_UNIT;
  }
  for (int k = 0; k < FZ_HOOK; k++)
    m->hook[k] = m->hook_root[k] = PH_UNIT;
  fz.cur = free_slot;
  return free_slot;
}

static void detach(int i) {
  fz_dom *m = &fz.dom[i];
  FZ_CHECK(ph_domain_detach(m->d) == PH_OK, "detach domain %d", i);
  clear_dom(m);
  if (fz.cur == i)
    fz.cur = -1;
}

/* Make sure some domain is running. */
static ph_domain *need_dom(void) {
  if (fz.cur >= 0)
    return fz.dom[fz.cur].d;
  for (int i = 0; i < FZ_DOMS; i++)
    if (fz.dom[i].d) {
      ph_blocking_leave(fz.dom[i].d);
      fz.cur = i;
      return fz.dom[i].d;
    }
  attach();
  return fz.dom[fz.cur].d;
}

/* A value chosen by the input: a node reached by the last sync (its address
 * is still good: nothing collected since), an immediate or 0. */
static void pick_value(ph_value *v, fz_val *e) {
  unsigned b = get8();
  if (b % 8 < 5 && fz.norder) {
    size_t i = fz.order[get16() % fz.norder];
    *v = fz.n[i].addr;
    *e = FZ_NODE(i);
  } else if (b % 8 < 7) {
    *v = *e = ph_val_int((intptr_t)(get8() % 64) - 32);
  } else {
    *v = *e = 0;
  }
}

/* A root slot of the running domain or a global one. */
static void pick_root(ph_value **slot, fz_val **model) {
  fz_dom *m = &fz.dom[fz.cur];
  unsigned b = get8();
  switch (b % 4) {
  case 0:
    *slot = &fz.glob[b / 4 % FZ_GLOBALS];
    *model = &fz.glob_root[b / 4 % FZ_GLOBALS];
    return;
  case 1:
    if (m->nnest) {
      *slot = fz_slot(fz.cur, 1, (int)(b / 4 % (unsigned)m->nnest));
      *model = &m->nest_root[b / 4 % (unsigned)m->nnest];
      return;
    }
    /* fall through */
  case 2:
    if (b & 64) {
      *slot = fz_slot(fz.cur, 2, (int)(b / 4 % FZ_HOOK));
      *model = &m->hook_root[b / 4 % FZ_HOOK];
      return;
    }
    /* fall through */
  default:
    *slot = m->slot[b / 4 % FZ_ROOTS];
    *model = &m->root[b / 4 % FZ_ROOTS];
  }
}

static size_t new_node_slot(void) {
  for (size_t i = 0; i < FZ_MAXN; i++)
    if (!fz.n[i].used)
      return i;
  return (size_t)-1;
}

/* ------------------------------------------------------------ operations */

static void op_alloc(void) {
  ph_domain *d = need_dom();
  unsigned k = get8();
  size_t wosize;
  unsigned tag;
  switch (k % 8) {
  case 0:
  case 1:
  case 2:
    wosize = 1 + get8() % 8;
    tag = get8() % PH_TAG_RAW;
    break;
  case 3:
    wosize = 1 + get16() % 300; /* every small class, the largest ones too */
    tag = get8() % PH_TAG_RAW;
    break;
  case 4:
    wosize = 200 + get16() % 5000; /* large */
    tag = get8() % PH_TAG_RAW;
    break;
  case 5:
    wosize = 1 + get8() % 64;
    tag = PH_TAG_RAW + get8() % (PH_TAG_MAX - PH_TAG_RAW + 1);
    break;
  case 6:
    wosize = 250 + get16() % 3000;
    tag = PH_TAG_RAW + get8() % (PH_TAG_MAX - PH_TAG_RAW + 1);
    break;
  default:
    wosize = 1 + get8() % 40;
    tag = 0;
    break;
  }
  ph_value *slot;
  fz_val *model;
  pick_root(&slot, &model);
  size_t i = new_node_slot();
  if (i == (size_t)-1)
    return;
  fz.what = "alloc";
  ph_value v = ph_alloc(d, wosize, tag);
  FZ_CHECK(v != 0, "ph_alloc(%zu, %u) failed with %d", wosize, tag,
           ph_last_error(d));
  FZ_CHECK(ph_tag(v) == tag && ph_wosize(v) == wosize, "new block header");
  fz_node *n = &fz.n[i];
  n->used = 1;
  n->id = fz.next_id++;
  n->wosize = wosize;
  n->tag = tag;
  fz.nlive++;
  if (tag >= PH_TAG_RAW) {
    uint64_t *w = ph_raw(v);
    for (size_t q = 0; q < wosize; q++) {
      FZ_CHECK(w[q] == 0, "raw block not zeroed at word %zu", q);
      w[q] = raw_word(n->id, q);
    }
  } else {
    n->f = calloc(wosize, sizeof *n->f);
    FZ_CHECK(n->f != NULL, "out of memory");
    for (size_t q = 0; q < wosize; q++) {
      FZ_CHECK(ph_field(v, q) == PH_UNIT, "new field %zu is not unit", q);
      n->f[q] = PH_UNIT;
    }
    ph_set_field(v, 0, ph_val_int((intptr_t)n->id));
  }
  *slot = v;
  *model = FZ_NODE(i);
  fz_sync("after alloc");
  /* fill a few fields of the new node right away */
  if (tag < PH_TAG_RAW && wosize > 1) {
    unsigned nf = get8() % 4;
    for (unsigned q = 0; q < nf; q++) {
      size_t f = 1 + get16() % (wosize - 1);
      ph_value x;
      fz_val xe;
      pick_value(&x, &xe);
      ph_set_field(n->addr, f, x);
      n->f[f] = xe;
    }
  }
}

static void op_set_field(void) {
  if (!fz.norder)
    return;
  fz_node *n = &fz.n[fz.order[get16() % fz.norder]];
  size_t f = get16();
  ph_value x;
  fz_val xe;
  pick_value(&x, &xe);
  if (n->tag >= PH_TAG_RAW || n->wosize < 2)
    return;
  f = 1 + f % (n->wosize - 1);
  ph_set_field(n->addr, f, x);
  n->f[f] = xe;
}

static void op_set_root(void) {
  need_dom();
  ph_value *slot;
  fz_val *model;
  pick_root(&slot, &model);
  ph_value x;
  fz_val xe;
  pick_value(&x, &xe);
  *slot = x;
  *model = xe;
}

static void op_drop_root(void) {
  need_dom();
  ph_value *slot;
  fz_val *model;
  pick_root(&slot, &model);
  *slot = PH_UNIT;
  *model = PH_UNIT;
}

static void op_collect(int compact) {
  ph_domain *d = need_dom();
  fz.what = compact ? "compact" : "collect";
  int err = compact ? ph_compact(d) : ph_collect(d);
  FZ_CHECK(err == PH_OK, "returned %d", err);
  fz_sync(compact ? "after compact" : "after collect");
  check_live_stats();
}

static void op_verify(void) {
  ph_domain *d = need_dom();
  char why[256];
  fz.what = "verify";
  int err = ph_verify(d, why, sizeof why);
  if (err != PH_OK)
    FZ_FAIL("ph_verify returned %d: %s", err, why);
  fz_sync("after verify");
}

static void census_fn(const ph_census_class *c, void *user) {
  size_t *sum = user;
  *sum += c->live_blocks;
  FZ_CHECK(c->block_words >= c->max_wosize + 1, "census class %u",
           c->size_class);
}

static void op_census(void) {
  ph_domain *d = need_dom();
  size_t sum = 0;
  fz.what = "census";
  FZ_CHECK(ph_census(d, census_fn, &sum) == PH_OK, "census");
  fz_sync("after census");
}

static void op_domain(void) {
  unsigned b = get8();
  switch (b % 5) {
  case 0: /* attach another domain; it becomes the running one */
    attach();
    break;
  case 1: /* detach the running domain */
    if (fz.cur >= 0)
      detach(fz.cur);
    need_dom();
    break;
  case 2: { /* detach a domain sitting in a blocking section */
    int i = (int)(b / 5 % FZ_DOMS);
    if (fz.dom[i].d && i != fz.cur)
      detach(i);
    break;
  }
  case 3: { /* switch to another domain */
    int i = (int)(b / 5 % FZ_DOMS);
    if (!fz.dom[i].d || i == fz.cur)
      break;
    if (fz.cur >= 0)
      ph_blocking_enter(fz.dom[fz.cur].d);
    ph_blocking_leave(fz.dom[i].d);
    fz.cur = i;
    break;
  }
  default: /* a blocking section with nothing in it, and a safepoint */
    if (fz.cur >= 0) {
      ph_blocking_enter(fz.dom[fz.cur].d);
      ph_blocking_leave(fz.dom[fz.cur].d);
      ph_safepoint(fz.dom[fz.cur].d);
    }
    break;
  }
  fz_sync("after domain operation");
}

static void op_scope(void) {
  ph_domain *d = need_dom();
  fz_dom *m = &fz.dom[fz.cur];
  if (get8() % 2 == 0) {
    if (m->nnest == FZ_NEST)
      return;
    ph_value x;
    fz_val xe;
    pick_value(&x, &xe);
    m->nest_mark[m->nnest] = ph_scope_open(d);
    m->nest_slot[m->nnest] = ph_root(d, x);
    FZ_CHECK(m->nest_slot[m->nnest] != NULL, "ph_root");
    m->nest_root[m->nnest] = xe;
    m->nnest++;
  } else if (m->nnest) {
    m->nnest--;
    size_t mark = m->nest_mark[m->nnest];
    FZ_CHECK(ph_scope_close(d, mark) == PH_OK, "scope close");
    /* closing it again is refused */
    FZ_CHECK(ph_scope_close(d, mark) == PH_ESTATE, "scope closed twice");
  }
}

/* ------------------------------------------------------------ entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&fz, 0, sizeof fz);
  fz.p = data;
  fz.left = size;
  fz.cur = -1;
  fz.what = "setup";
  ph_config cfg;
  ph_config_init(&cfg);
  unsigned c0 = get8(), c1 = get8();
  cfg.max_domains = FZ_DOMS;
  cfg.pool_size = (size_t)4096 << (c0 % 4);
  cfg.gc_percent = c0 / 4 % 4 == 0 ? 0 : 1 + c1 % 150;
  cfg.compact_percent = c0 / 16 % 2 ? 1 + c1 % 100 : 0;
  cfg.release = (ph_release_mode)(c0 / 32 % 4);
  cfg.compact_scope = (ph_compact_scope)(c0 / 128);
  cfg.retain = c1 % 2 ? cfg.pool_size * (c1 % 8) : 0;
  cfg.scan_roots = hook;
  FZ_CHECK(ph_heap_create(&cfg, &fz.h) == PH_OK, "heap create");
  for (int g = 0; g < FZ_GLOBALS; g++) {
    fz.glob[g] = fz.glob_root[g] = PH_UNIT;
    FZ_CHECK(ph_root_add(fz.h, &fz.glob[g]) == PH_OK, "root add");
  }
  attach();
  while (fz.left && fz.op < FZ_MAXOPS) {
    fz.op++;
    unsigned o = get8();
    switch (o % 16) {
    case 0:
    case 1:
    case 2:
    case 3:
      op_alloc();
      break;
    case 4:
    case 5:
    case 6:
      op_set_field();
      break;
    case 7:
      op_set_root();
      break;
    case 8:
      op_drop_root();
      break;
    case 9:
      op_collect(0);
      break;
    case 10:
    case 11:
      op_collect(1);
      break;
    case 12:
      op_verify();
      break;
    case 13:
      op_domain();
      break;
    case 14:
      op_scope();
      break;
    default:
      if (o & 16)
        op_census();
      else
        op_verify();
      break;
    }
  }
  /* the end: a last compaction checked like the others, then teardown */
  op_collect(1);
  op_verify();
  for (int i = 0; i < FZ_DOMS; i++)
    if (fz.dom[i].d)
      detach(i);
  for (int g = 0; g < FZ_GLOBALS; g++)
    FZ_CHECK(ph_root_remove(fz.h, &fz.glob[g]) == PH_OK, "root remove");
  FZ_CHECK(ph_heap_destroy(fz.h) == PH_OK, "heap destroy");
  for (size_t i = 0; i < FZ_MAXN; i++)
    if (fz.n[i].used)
      free_node(i);
  return 0;
}
