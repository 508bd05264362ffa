/* tests/fuzz_model.c -- a model-based differential fuzzer for poolheap.
 *
 * LLVMFuzzerTestOneInput decodes its bytes into operations and applies each
 * one both to a fresh poolheap and to a plain reference model of the object
 * graph kept outside the heap:
 *   attach / detach / switch domains, alloc (every small size, medium
 *   sizes of 2-256 KiB (issue 11) and just beyond, large, raw),
 *   set a field to a node, an immediate or 0, set or drop a root (handle-scope
 *   slots, nested scopes, global roots, scan_roots hook slots), collect,
 *   compact, verify, census, safepoint, blocking sections; weak blocks,
 *   ephemerons (alloc, set fields), finalisers (FIRST, LAST; a FIRST one
 *   may resurrect its value into a global root), pins and unpins.
 * After every operation that may collect or move, the whole reachable graph
 * is walked in the heap and in the model side by side: every node's tag,
 * wosize, id (field 0), every field and every sharing (same node reached
 * twice = same address) must agree, and after collect and compact the heap's
 * live_blocks and live_bytes must equal the model's reachable set exactly.
 * Any difference prints a description and abort()s.
 *
 * Weak blocks, ephemerons, finalisers and pins: at every collection (ours,
 * or one that an allocation started: the collection counter says), the
 * model computes what the collector must do (gc.weak, gc.final): the
 * strong closure of the roots (pins and ready FIRST values included) with
 * the ephemeron fixpoint; weak fields and ephemerons cleared against it;
 * the FIRST registrations whose value is outside it become due, and their
 * values are marked (fixpoint again, then the weak blocks met by this
 * second marking are cleared); the LAST ones still outside become due.
 * The walk then checks every weak field and ephemeron against that, every
 * finaliser call checks that it was due on that domain (or an orphan), with
 * its value's id (FIRST) or 0 (LAST), and ph_collect / ph_compact must have
 * run every one due for the calling domain.  Pinned blocks are roots whose
 * address the walk checks: a pinned block that moved is a mismatch.
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
#define FZ_REGS 64 /* finaliser registrations at once */
#define FZ_PINS 8  /* pinned blocks at once */
#define FZ_RES 3   /* global roots a FIRST finaliser may resurrect into */
/* words of the model's nodes at once (their wosizes): a medium block that
 * would pass it is drawn small instead, so that the walk after every
 * operation stays about as long as before medium sizes were drawn */
#define FZ_MAXWORDS (160u * 1024)

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
  int kind;      /* 0 a block, 1 a weak block, 2 an ephemeron (f[0..]) */
  unsigned live; /* model collection: 1 in S0, 2 added by finalisers */
} fz_node;

/* A finaliser registration: its node (-1 once a LAST one is due), kind,
 * registering domain (-1: detached, an orphan), state. */
typedef struct fz_reg {
  int used;
  int node;
  int when;  /* PH_FINAL_FIRST, PH_FINAL_LAST */
  int dom;   /* fuzz domain index, -1 orphan */
  int ready; /* due: must run on dom (or any domain if orphan) */
  int res;   /* FIRST: global root to resurrect into, -1 none */
} fz_reg;

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
  ph_value res[FZ_RES];
  fz_val res_root[FZ_RES];
  fz_reg reg[FZ_REGS];
  struct {
    int node; /* -1 free */
    unsigned count;
    ph_value addr; /* never changes: pinned blocks do not move */
  } pin[FZ_PINS];
  uint64_t collections;  /* the heap's counter at the last model step */
  uint64_t model_blocks; /* the last model collection's live set */
  uint64_t model_bytes;
  fz_node n[FZ_MAXN];
  size_t nlive;
  size_t words;          /* sum of the used nodes' wosizes */
  size_t order[FZ_MAXN]; /* nodes reachable at the last sync */
  size_t stack[FZ_MAXN];
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
  if (n->kind) { /* weak block / ephemeron: every field is a value */
    for (size_t k = 0; k < n->wosize; k++)
      check_value(ph_field(v, k), n->f[k], "weak/ephemeron id/field", n->id, k);
    return;
  }
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

static void keep_node(size_t i, size_t *sp) {
  if (fz.n[i].mark == fz.epoch)
    return;
  fz.n[i].mark = fz.epoch;
  fz.stack[(*sp)++] = i;
}

static void free_node(size_t i) {
  fz.words -= fz.n[i].wosize;
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
  for (int g = 0; g < FZ_RES; g++)
    check_value(fz.res[g], fz.res_root[g], "resurrection root", 0, (size_t)g);
  for (int k = 0; k < FZ_PINS; k++)
    if (fz.pin[k].node >= 0) /* a pinned block has not moved */
      check_value(fz.pin[k].addr, FZ_NODE((size_t)fz.pin[k].node),
                  "pinned block", (uint64_t)k, 0);
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
  /* nodes the walk cannot reach but the heap keeps: registered values and
   * ready FIRST ones, with what they reach (their addresses are unknown
   * after a compaction; the walk never hands them out) */
  size_t sp = 0;
  for (int r = 0; r < FZ_REGS; r++)
    if (fz.reg[r].used && fz.reg[r].node >= 0)
      keep_node((size_t)fz.reg[r].node, &sp);
  while (sp) {
    fz_node *n = &fz.n[fz.stack[--sp]];
    if (n->tag < PH_TAG_RAW)
      for (size_t k = n->kind ? 0 : 1; k < n->wosize; k++)
        if (fz_is_node(n->f[k]))
          keep_node(fz_node_of(n->f[k]), &sp);
  }
  for (size_t i = 0; i < FZ_MAXN; i++)
    if (fz.n[i].used && fz.n[i].mark != fz.epoch)
      free_node(i);
}

/* After a collection: the heap's live set is the model's (the walk reaches
 * less when ready FIRST values wait for their domain). */
static void check_live_stats(void) {
  ph_stats st;
  FZ_CHECK(ph_stats_get(fz.h, &st) == PH_OK, "stats");
  if (st.live_blocks != fz.model_blocks || st.live_bytes != fz.model_bytes)
    FZ_FAIL("heap live %lu blocks %lu bytes, model %lu blocks %lu bytes",
            (unsigned long)st.live_blocks, (unsigned long)st.live_bytes,
            (unsigned long)fz.model_blocks, (unsigned long)fz.model_bytes);
}

/* ------------------------------------------- the model of a collection */

static void mc_mark(fz_val e, unsigned lvl, size_t *sp) {
  if (!fz_is_node(e))
    return;
  size_t i = fz_node_of(e);
  FZ_CHECK(fz.n[i].used, "model edge to a freed node %zu", i);
  if (fz.n[i].live)
    return;
  fz.n[i].live = lvl;
  fz.stack[(*sp)++] = i;
}

/* Strong closure from the stack, then the ephemerons to a fixpoint. */
static void mc_closure(unsigned lvl, size_t *sp) {
  for (int changed = 1; changed;) {
    while (*sp) {
      fz_node *n = &fz.n[fz.stack[--*sp]];
      if (n->kind == 0 && n->tag < PH_TAG_RAW)
        for (size_t k = 1; k < n->wosize; k++)
          mc_mark(n->f[k], lvl, sp);
    }
    changed = 0;
    for (size_t i = 0; i < FZ_MAXN; i++) {
      fz_node *n = &fz.n[i];
      if (!n->used || n->kind != 2 || !n->live)
        continue;
      fz_val d = n->f[n->wosize - 1];
      if (!fz_is_node(d) || fz.n[fz_node_of(d)].live)
        continue;
      int ok = 1;
      for (size_t k = 0; k + 1 < n->wosize; k++)
        ok &= !fz_is_node(n->f[k]) || fz.n[fz_node_of(n->f[k])].live != 0;
      if (ok) {
        mc_mark(d, lvl, sp);
        changed = 1;
      }
    }
  }
}

static int mc_dead(fz_val e) {
  return fz_is_node(e) && !fz.n[fz_node_of(e)].live;
}

/* gc.weak.clear on the weak blocks and ephemerons marked at level lvl */
static void mc_clear(unsigned lvl) {
  for (size_t i = 0; i < FZ_MAXN; i++) {
    fz_node *n = &fz.n[i];
    if (!n->used || !n->kind || n->live != lvl)
      continue;
    if (n->kind == 1) {
      for (size_t k = 0; k < n->wosize; k++)
        if (mc_dead(n->f[k]))
          n->f[k] = 0;
    } else {
      int dead = 0;
      for (size_t k = 0; k + 1 < n->wosize; k++)
        dead |= mc_dead(n->f[k]);
      if (dead)
        for (size_t k = 0; k < n->wosize; k++)
          n->f[k] = 0;
    }
  }
}

/* One collection as the model sees it (gc.weak, gc.final). */
static void model_collect(void) {
  size_t sp = 0;
  for (size_t i = 0; i < FZ_MAXN; i++)
    fz.n[i].live = 0;
  for (int g = 0; g < FZ_GLOBALS; g++)
    mc_mark(fz.glob_root[g], 1, &sp);
  for (int g = 0; g < FZ_RES; g++)
    mc_mark(fz.res_root[g], 1, &sp);
  for (int k = 0; k < FZ_PINS; k++)
    if (fz.pin[k].node >= 0)
      mc_mark(FZ_NODE((size_t)fz.pin[k].node), 1, &sp);
  for (int r = 0; r < FZ_REGS; r++)
    if (fz.reg[r].used && fz.reg[r].ready && fz.reg[r].node >= 0)
      mc_mark(FZ_NODE((size_t)fz.reg[r].node), 1, &sp);
  for (int di = 0; di < FZ_DOMS; di++) {
    fz_dom *m = &fz.dom[di];
    if (!m->d)
      continue;
    for (int k = 0; k < FZ_ROOTS; k++)
      mc_mark(m->root[k], 1, &sp);
    for (int k = 0; k < m->nnest; k++)
      mc_mark(m->nest_root[k], 1, &sp);
    for (int k = 0; k < FZ_HOOK; k++)
      mc_mark(m->hook_root[k], 1, &sp);
  }
  mc_closure(1, &sp);
  mc_clear(1);
  /* FIRST: flagged against S0, then their values marked */
  int due[FZ_REGS] = {0};
  for (int r = 0; r < FZ_REGS; r++) {
    fz_reg *g = &fz.reg[r];
    if (g->used && !g->ready && g->when == PH_FINAL_FIRST &&
        !fz.n[g->node].live)
      due[r] = 1;
  }
  for (int r = 0; r < FZ_REGS; r++)
    if (due[r]) {
      fz.reg[r].ready = 1;
      mc_mark(FZ_NODE((size_t)fz.reg[r].node), 2, &sp);
    }
  mc_closure(2, &sp);
  mc_clear(2);
  for (int r = 0; r < FZ_REGS; r++) {
    fz_reg *g = &fz.reg[r];
    if (g->used && !g->ready && g->when == PH_FINAL_LAST &&
        !fz.n[g->node].live) {
      g->ready = 1;
      g->node = -1;
    }
  }
  fz.model_blocks = fz.model_bytes = 0;
  for (size_t i = 0; i < FZ_MAXN; i++) {
    if (!fz.n[i].used)
      continue;
    if (fz.n[i].live) {
      fz.model_blocks++;
      fz.model_bytes += (fz.n[i].wosize + 1) * 8;
    } else {
      free_node(i); /* dead: nothing live points to it any more */
    }
  }
}

/* Apply the model to every collection the heap ran since the last call. */
static void model_catch_up(void) {
  ph_stats st;
  FZ_CHECK(ph_stats_get(fz.h, &st) == PH_OK, "stats");
  while (fz.collections < st.collections) {
    fz.collections++;
    model_collect();
  }
}

/* The finaliser: it must be due, on its domain, with its value. */
static void fz_final(ph_domain *d, ph_value v, void *user) {
  int r = (int)(uintptr_t)user - 1;
  model_catch_up();
  fz_reg *g = &fz.reg[r];
  FZ_CHECK(g->used && g->ready, "finaliser %d ran but is not due", r);
  FZ_CHECK(fz.cur >= 0 && fz.dom[fz.cur].d == d,
           "finaliser %d ran on a domain that is not running", r);
  FZ_CHECK(g->dom < 0 || g->dom == fz.cur,
           "finaliser %d of domain %d ran on domain %d", r, g->dom, fz.cur);
  if (g->when == PH_FINAL_LAST) {
    FZ_CHECK(v == 0, "LAST finaliser %d got %#lx", r, (unsigned long)v);
  } else {
    fz_node *n = &fz.n[g->node];
    FZ_CHECK(ph_is_block(v) && ph_field(v, 0) == ph_val_int((intptr_t)n->id),
             "FIRST finaliser %d: value %#lx is not node id %lu", r,
             (unsigned long)v, (unsigned long)n->id);
    if (g->res >= 0) { /* resurrect it */
      fz.res[g->res] = v;
      fz.res_root[g->res] = FZ_NODE((size_t)g->node);
    }
  }
  memset(g, 0, sizeof *g);
}

/* After ph_collect / ph_compact on the running domain: every finaliser
 * due for it (or an orphan) has run. */
static void check_finalisers_ran(void) {
  for (int r = 0; r < FZ_REGS; r++) {
    fz_reg *g = &fz.reg[r];
    if (g->used && g->ready && (g->dom < 0 || g->dom == fz.cur))
      FZ_FAIL("finaliser %d (domain %d) due but not run", r, g->dom);
  }
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

/* A domain detaches: its registrations become orphans. */
static void orphan_regs(int dom) {
  for (int r = 0; r < FZ_REGS; r++)
    if (fz.reg[r].used && fz.reg[r].dom == dom)
      fz.reg[r].dom = -1;
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
  orphan_regs(i);
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

/* A medium size (issue 11): slot bytes of 2-256 KiB, log-uniform by octave
 * (256-511 fields, 512-1023, ..., 16384-32767), or one of the top medium
 * class's 32767 fields and the two large sizes just above it. */
static size_t medium_wosize(void) {
  unsigned b = get8();
  if (b % 16 == 15)
    return 32767 + b / 16 % 3;
  size_t lo = (size_t)256 << (b % 7);
  size_t w = lo + get16() % lo;
  return w > 32767 ? 32767 : w;
}

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
    if (k / 8 % 2) { /* medium, scanned or raw */
      wosize = medium_wosize();
      tag = k / 16 % 2 ? PH_TAG_RAW : get8() % PH_TAG_RAW;
    } else {
      wosize = 200 + get16() % 5000; /* large (medium once served) */
      tag = get8() % PH_TAG_RAW;
    }
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
  if (wosize > 256 && fz.words + wosize > FZ_MAXWORDS)
    wosize = 1 + wosize % 64; /* the model's words are bounded */
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
  model_catch_up(); /* the allocation may have collected */
  FZ_CHECK(ph_tag(v) == tag && ph_wosize(v) == wosize, "new block header");
  fz_node *n = &fz.n[i];
  n->used = 1;
  n->id = fz.next_id++;
  n->wosize = wosize;
  n->tag = tag;
  fz.nlive++;
  fz.words += wosize;
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
  if (n->kind) { /* any field of a weak block or an ephemeron */
    f %= n->wosize;
    ph_set_field(n->addr, f, x);
    n->f[f] = xe;
    return;
  }
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
  model_catch_up();
  check_finalisers_ran();
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

/* A weak block (1..6 fields) or an ephemeron (1..3 keys), all fields 0,
 * into a root; then a few fields set. */
static void op_alloc_special(void) {
  ph_domain *d = need_dom();
  unsigned k = get8();
  int kind = 1 + (int)(k % 2);
  size_t n = 1 + get8() % (kind == 1 ? 6 : 3);
  ph_value *slot;
  fz_val *model;
  pick_root(&slot, &model);
  size_t i = new_node_slot();
  if (i == (size_t)-1)
    return;
  fz.what = "alloc weak/ephemeron";
  ph_value v = kind == 1 ? ph_alloc_weak(d, n) : ph_alloc_ephemeron(d, n);
  FZ_CHECK(v != 0, "failed with %d", ph_last_error(d));
  model_catch_up();
  size_t wo = kind == 1 ? n : n + 1;
  FZ_CHECK(ph_wosize(v) == wo && ph_tag(v) == (unsigned)(kind - 1), "header");
  fz_node *m = &fz.n[i];
  m->used = 1;
  m->id = fz.next_id++;
  m->wosize = wo;
  m->tag = (unsigned)(kind - 1);
  m->kind = kind;
  m->f = calloc(wo, sizeof *m->f);
  FZ_CHECK(m->f != NULL, "out of memory");
  fz.nlive++;
  fz.words += wo;
  for (size_t q = 0; q < wo; q++)
    FZ_CHECK(ph_field(v, q) == 0, "field %zu is not 0", q);
  *slot = v;
  *model = FZ_NODE(i);
  fz_sync("after alloc weak/ephemeron");
  unsigned nf = get8() % 4;
  for (unsigned q = 0; q < nf && m->used; q++) {
    size_t f = get8() % wo;
    ph_value x;
    fz_val xe;
    pick_value(&x, &xe);
    ph_set_field(m->addr, f, x);
    m->f[f] = xe;
  }
}

/* Register a finaliser on a reachable scanned block; bad input first. */
static void op_finalise(void) {
  ph_domain *d = need_dom();
  unsigned b = get8();
  fz.what = "finalise";
  FZ_CHECK(ph_finalise(d, ph_val_int(3), fz_final, NULL, PH_FINAL_FIRST) ==
               PH_EINVAL,
           "an immediate accepted");
  if (!fz.norder)
    return;
  size_t i = fz.order[get16() % fz.norder];
  fz_node *n = &fz.n[i];
  if (n->kind || n->tag >= PH_TAG_RAW)
    return;
  int r = -1;
  for (int k = 0; k < FZ_REGS && r < 0; k++)
    if (!fz.reg[k].used)
      r = k;
  if (r < 0)
    return;
  fz_reg *g = &fz.reg[r];
  g->used = 1;
  g->node = (int)i;
  g->when = b % 2 ? PH_FINAL_LAST : PH_FINAL_FIRST;
  g->dom = fz.cur;
  g->ready = 0;
  g->res = b / 2 % 4 < FZ_RES ? (int)(b / 2 % 4) : -1;
  int err = ph_finalise(d, n->addr, fz_final, (void *)(uintptr_t)(r + 1),
                        (ph_final_when)g->when);
  FZ_CHECK(err == PH_OK, "returned %d", err);
}

/* Pin a reachable block (again), unpin one, or unpin one never pinned. */
static void op_pin(void) {
  ph_domain *d = need_dom();
  unsigned b = get8();
  fz.what = "pin";
  if (b % 3 == 0) {
    for (int k = 0; k < FZ_PINS; k++)
      if (fz.pin[k].node >= 0 && (b / 3) % 2) {
        FZ_CHECK(ph_unpin(d, fz.pin[k].addr) == PH_OK, "unpin");
        if (--fz.pin[k].count == 0)
          fz.pin[k].node = -1;
        return;
      }
    return;
  }
  if (!fz.norder)
    return;
  size_t i = fz.order[get16() % fz.norder];
  int at = -1, free_at = -1;
  for (int k = 0; k < FZ_PINS; k++) {
    if (fz.pin[k].node == (int)i)
      at = k;
    if (fz.pin[k].node < 0 && free_at < 0)
      free_at = k;
  }
  if (b % 3 == 1 && at < 0) { /* not pinned: unpin is refused */
    FZ_CHECK(ph_unpin(d, fz.n[i].addr) == PH_EINVAL, "unpin without pin");
    return;
  }
  if (at < 0 && free_at < 0)
    return;
  FZ_CHECK(ph_pin(d, fz.n[i].addr) == PH_OK, "pin");
  if (at < 0) {
    at = free_at;
    fz.pin[at].node = (int)i;
    fz.pin[at].count = 0;
    fz.pin[at].addr = fz.n[i].addr;
  }
  fz.pin[at].count++;
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
  for (int g = 0; g < FZ_RES; g++) {
    fz.res[g] = fz.res_root[g] = PH_UNIT;
    FZ_CHECK(ph_root_add(fz.h, &fz.res[g]) == PH_OK, "root add");
  }
  for (int k = 0; k < FZ_PINS; k++)
    fz.pin[k].node = -1;
  attach();
  while (fz.left && fz.op < FZ_MAXOPS) {
    fz.op++;
    unsigned o = get8();
    switch (o % 20) {
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
    case 15:
      if (o & 16)
        op_census();
      else
        op_verify();
      break;
    case 16:
    case 17:
      op_alloc_special();
      break;
    case 18:
      op_finalise();
      break;
    default:
      op_pin();
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
  for (int g = 0; g < FZ_RES; g++)
    FZ_CHECK(ph_root_remove(fz.h, &fz.res[g]) == PH_OK, "root remove");
  FZ_CHECK(ph_heap_destroy(fz.h) == PH_OK, "heap destroy");
  for (size_t i = 0; i < FZ_MAXN; i++)
    if (fz.n[i].used)
      free_node(i);
  return 0;
}
