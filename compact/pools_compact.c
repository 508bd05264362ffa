/* compact/pools_compact.c -- compaction of the public pool layer, run by the
 * embedder's own stop-the-world participants (include/poolheap_pools.h:
 * php_compact_stw; DESIGN.md: pools.compact).
 *
 * A thin adapter over the one driver of compact/compact.c (ph_compact_stw,
 * the managed collector's too).  Every participant calls
 * php_compact_stw(h, part, ops); participant 0 is the driver's leader and
 * ops->barrier separates the steps:
 *
 *   checks: bad ops refused before any barrier;
 *   setup (part 0): the scratch, the section's unit index space;
 *   sweep by colour (the layer's own step): units claimed in batches; pools
 *     swept with the compaction's colours (live bitmap written), partly
 *     filled pools recorded, empty pools and garbage large blocks handed to
 *     part 0 (which frees them, so that their ranges can be chosen empty),
 *     live large blocks recorded;
 *   the driver: plan, evacuate, update (the rule of ops->no_scan_tag or
 *     ops->scan_block, interior pointers forwarded at their offset),
 *     free, release; the layer's hooks rebuild every owner's lists and
 *     counters, and write its statistics.
 */
#include "heap/pools_internal.h"
#include "compact/compact.h"

#include <stdlib.h>
#include <string.h>

/* pools.helpers: every helper count the config accepts has its slot in the
 * driver's assist table. */
_Static_assert(PHP_COMPACT_HELPERS_MAX <= PH_ASSIST_MAX,
               "compact_helpers above the driver's PH_ASSIST_MAX");

/* One participant's records (pools.compact). */
typedef struct php_cpart {
  struct php_heap *h;
  ph_cand *cands; /* partly filled pools (cls, pool, nlive; owner unused) */
  size_t ncands, cands_cap;
  ph_large **larges; /* live large blocks (php_large, base first) */
  size_t nlarges, larges_cap;
  ph_pool *empty;  /* pools swept empty, linked by next */
  php_large *dead; /* garbage large blocks, linked by next */
  int lost;        /* a record array could not grow */
} php_cpart;

/* The compaction's state, written by participant 0 between barriers. */
struct php_compact {
  struct ph_heap *core; /* whose plan goes with the scratch */
  php_cpart *parts;
  unsigned parts_cap;
  _Atomic int bad_colour; /* the sweep: a block of no known colour */
  unsigned live_mask, garbage;
  int fail; /* ENOMEM for the scratch: nothing happens */
};
typedef struct php_compact php_compact;

/* What the driver's callbacks need, per participant. */
typedef struct php_cctx {
  struct php_heap *h;
  const php_compact_ops *ops;
  unsigned part;
  int bad;
} php_cctx;

ph_value php_forward(php_heap *h, ph_value v) {
  if (!h || h->sig != PHP_SIG_HEAP)
    return v;
  /* the driver's map is published before the barrier that opens the update
   * phase, whose callbacks are the only meaningful callers; outside a
   * compaction there is none */
  return ph_compact_forward(h->core, v);
}

/* ---------------------------------------------------- sweep by colour */

/* The records are scratch arrays of the OS layer (os.scratch.gone). */
static void *grow(php_cpart *me, void *arr, size_t *cap, size_t elem) {
  size_t ncap = *cap ? *cap * 2 : 256;
  void *n = ph_os_scratch_realloc(arr, ncap * elem);
  if (!n) {
    me->lost = 1;
    return NULL;
  }
  *cap = ncap;
  return n;
}

static void sweep_unit(struct ph_heap *core, ph_chunk *c, uint32_t u,
                       void *ctx) {
  php_cpart *me = ctx;
  struct php_heap *h = me->h;
  php_compact *cp = h->cp;
  char *ua = ph_unit_addr(core, c, u);
  if (c->ustate[u] == PH_U_POOL) {
    ph_pool *p = (ph_pool *)ua;
    int bad = 0;
    php_sweep_pool_counts(h, p, cp->garbage, cp->live_mask, 1, &bad);
    if (bad)
      atomic_store_explicit(&cp->bad_colour, 1, memory_order_relaxed);
    if (p->nlive == 0) {
      p->next = me->empty;
      me->empty = p;
    } else if (p->nlive < p->nslots) {
      if (me->ncands == me->cands_cap) {
        ph_cand *n = grow(me, me->cands, &me->cands_cap, sizeof *n);
        if (!n)
          return;
        me->cands = n;
      }
      me->cands[me->ncands++] = (ph_cand){p, p->nlive, p->cls, 0};
    }
  } else if (c->ustate[u] == PH_U_LARGE) {
    php_large *l = (php_large *)ua;
    ph_value b = php_large_block(l);
    unsigned col = php_hd_colour(php_hd_load(b));
    if (col == cp->garbage || l->base.pad) {
      if (!l->base.pad)
        php_call_on_free(h, b);
      l->next = me->dead;
      me->dead = l;
      return;
    }
    if (!(cp->live_mask >> col & 1))
      atomic_store_explicit(&cp->bad_colour, 1, memory_order_relaxed);
    if (me->nlarges == me->larges_cap) {
      ph_large **n = grow(me, me->larges, &me->larges_cap, sizeof *n);
      if (!n)
        return;
      me->larges = n;
    }
    me->larges[me->nlarges++] = &l->base;
  }
}

/* Participant 0, after the sweep: the pools it emptied and the garbage
 * large blocks go back to the free units now, before the plan, so that
 * the ranges they held can be chosen empty (compact.choose.ranges). */
static void free_swept_stw_single(struct php_heap *h, unsigned nparts) {
  php_compact *cp = h->cp;
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  for (unsigned i = 0; i < nparts; i++) {
    php_cpart *pt = &cp->parts[i];
    for (ph_pool *p = pt->empty, *n; p; p = n) {
      n = p->next;
      ph_pool_free_locked(core, p);
    }
    for (php_large *l = pt->dead, *n; l; l = n) {
      n = l->next;
      php_large_free_locked(h, l); /* refused: it stays, swept again later */
    }
    pt->empty = NULL;
    pt->dead = NULL;
  }
  pthread_mutex_unlock(&core->lock);
}

/* ------------------------------------------------- the driver's hooks */

static int cb_barrier(void *arg) {
  php_cctx *c = arg;
  c->ops->barrier(c->ops->user);
  return c->part == 0;
}

static void cb_scan_roots(void *arg, ph_visit_fn visit, void (*done)(void *),
                          void *ctx) {
  php_cctx *c = arg;
  c->ops->scan_roots(c->part, visit, ctx, c->ops->user);
  done(ctx);
}

static void cb_records(void *arg, unsigned i, ph_compact_recs *out) {
  php_cctx *c = arg;
  const php_cpart *pt = &c->h->cp->parts[i];
  /* a block of no known colour: nothing is planned, nothing moves */
  *out = (ph_compact_recs){pt->cands, pt->ncands, pt->larges, pt->nlarges,
                           pt->lost || c->bad};
}

static void cb_relist_locked(void *arg, int planned) {
  php_cctx *c = arg;
  (void)planned; /* the sweep by colour changed the lists in any case */
  php_rebuild_lists_locked(c->h);
}

static void cb_finish_stw_single(void *arg, const ph_compact_result *r) {
  php_cctx *c = arg;
  struct php_heap *h = c->h;
  if (c->bad)
    return;
  pthread_mutex_lock(&h->core->lock);
  h->compactions++;
  h->evacuated_blocks = r->blocks;
  h->evacuated_bytes = r->bytes;
  h->evacuated_pools = r->pools;
  h->released_bytes = r->released;
  h->last_helpers = r->assisted;
  pthread_mutex_unlock(&h->core->lock);
}

static void cb_event(void *arg, ph_phase ph, int begin) {
  php_cctx *c = arg;
  if (!c->ops->on_phase)
    return;
  if (ph == PH_PHASE_EVACUATE && begin)
    return; /* begun before the sweep by colour */
  unsigned p = ph == PH_PHASE_EVACUATE ? PHP_COMPACT_EVACUATE
               : ph == PH_PHASE_UPDATE ? PHP_COMPACT_UPDATE
                                       : PHP_COMPACT_RELEASE;
  c->ops->on_phase(p, begin, c->part, c->ops->user);
}

/* pools.helpers: a helper runs the callbacks as a participant
 * does (pools.reentry). */
static void helper_enter(int begin) {
  php_tls_callback = begin;
}

/* How many helpers this compaction starts (pools.helpers). */
static unsigned helpers_for(const struct php_heap *h, unsigned nparts) {
  unsigned free_cpus = h->ncpus > nparts ? h->ncpus - nparts : 0;
  return h->nhelper_stacks < free_cpus ? h->nhelper_stacks : free_cpus;
}

static void scan_block_cb(ph_value block, ph_visit_fn visit, void *ctx,
                          void *user) {
  const php_compact_ops *ops = user;
  ops->scan_block(block, visit, ctx, ops->user);
}

/* --------------------------------------------------------------- driver */

/* ops->on_phase outside the driver (pools.reentry: refused inside) */
static void on_phase(const php_compact_ops *ops, unsigned ph, int begin,
                     unsigned part) {
  if (!ops->on_phase)
    return;
  php_tls_callback = 1;
  ops->on_phase(ph, begin, part, ops->user);
  php_tls_callback = 0;
}

/* A participant's records go (compact.phase.stats); the next sweep grows
 * them again. */
static void cpart_records_free(php_cpart *me) {
  ph_os_scratch_free(me->cands);
  ph_os_scratch_free(me->larges);
  me->cands = NULL;
  me->larges = NULL;
  me->ncands = me->cands_cap = me->nlarges = me->larges_cap = 0;
}

static void cp_free(php_compact *cp) {
  ph_compact_fini(cp->core);
  for (unsigned i = 0; i < cp->parts_cap; i++)
    cpart_records_free(&cp->parts[i]);
  free(cp->parts);
  free(cp);
}

static int ops_valid(const struct php_heap *h, unsigned part,
                     const php_compact_ops *ops) {
  if (!h || h->sig != PHP_SIG_HEAP || !ops || ops->nparts == 0 ||
      ops->nparts > 1024 || !ops->barrier || part >= ops->nparts)
    return 0;
  int tags = (ops->scan_tags[0] | ops->scan_tags[1] | ops->scan_tags[2] |
              ops->scan_tags[3]) != 0;
  if (ops->no_scan_tag > 256 || (ops->no_scan_tag == 0 && tags))
    return 0;
  if (!ops->scan_block && (ops->no_scan_tag == 0 || tags))
    return 0;
  unsigned g = atomic_load_explicit(&h->garbage, memory_order_relaxed);
  return ops->live_colours != 0 && ops->live_colours <= 15 &&
         !(ops->live_colours >> g & 1);
}

int php_compact_stw(php_heap *h, unsigned part, const php_compact_ops *ops) {
  if (!ops_valid(h, part, ops))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  unsigned np = ops->nparts;
  int lead = part == 0;
  on_phase(ops, PHP_COMPACT_EVACUATE, 1, part);
  ops->barrier(ops->user);
  if (lead && !h->cp) { /* the scratch, kept for the next compactions */
    h->cp = calloc(1, sizeof *h->cp);
    if (h->cp)
      h->cp->core = h->core;
    h->cp_free = cp_free;
  }
  /* the others read h->cp after the next barrier */
  php_compact *cp = lead ? h->cp : NULL;
  if (cp) { /* setup */
    cp->fail = 0;
    if (cp->parts_cap < np) {
      php_cpart *n = realloc(cp->parts, np * sizeof *n);
      if (n) {
        memset(n + cp->parts_cap, 0, (np - cp->parts_cap) * sizeof *n);
        cp->parts = n;
        cp->parts_cap = np;
      } else {
        cp->fail = 1;
      }
    }
    for (unsigned i = 0; i < np && !cp->fail; i++) {
      php_cpart *pt = &cp->parts[i];
      pt->h = h;
      pt->ncands = pt->nlarges = 0;
      pt->empty = NULL;
      pt->dead = NULL;
      pt->lost = 0;
    }
    cp->garbage = atomic_load_explicit(&h->garbage, memory_order_relaxed);
    cp->live_mask = ops->live_colours;
    atomic_store_explicit(&cp->bad_colour, 0, memory_order_relaxed);
    ph_units_index_stw_single(h->core);
    atomic_store_explicit(&h->core->sec.claim_sweep, 0, memory_order_relaxed);
  }
  ops->barrier(ops->user);
  cp = h->cp; /* as participant 0 left it */
  if (!cp || cp->fail) {
    on_phase(ops, PHP_COMPACT_EVACUATE, 0, part);
    return PH_ENOMEM;
  }
  /* the sweep by colour (on_free runs here) */
  ph_units_each_stw(h->core, &h->core->sec.claim_sweep, 8, sweep_unit,
                    &cp->parts[part]);
  ops->barrier(ops->user);
  if (lead)
    free_swept_stw_single(h, np);
  /* the driver's first barrier publishes it */
  php_cctx c = {h, ops, part,
                atomic_load_explicit(&cp->bad_colour, memory_order_relaxed)};
  ph_compact_rule rule = {
      .no_scan_tag = ops->no_scan_tag,
      .scan_block = ops->scan_block ? scan_block_cb : NULL,
      .user = (void *)ops,
      .interior = 1,
  };
  memcpy(rule.cb_tags, ops->scan_tags, sizeof rule.cb_tags);
  ph_compact_part dp = {
      .id = part,
      .nparts = np,
      .dom = part,
      .leader = lead,
      .barrier = cb_barrier,
      .scan_roots = ops->scan_roots ? cb_scan_roots : NULL,
      .roots_direct = 1,
      .records = cb_records,
      .relist_locked = cb_relist_locked,
      .finish_stw_single = cb_finish_stw_single,
      .event = cb_event,
      .rule = &rule,
      .arg = &c,
      .holes = 1, /* compact.holes.free, compact.pack */
      .nassist = helpers_for(h, np),
      .assist_stacks = h->helper_stacks,
      .assist_stack = PHP_HELPER_STACK,
      .assist_enter = helper_enter,
  };
  php_tls_callback = 1; /* pools.reentry: the callbacks run inside */
  ph_compact_stw(h->core, &dp);
  php_tls_callback = 0;
  /* compact.phase.stats: past the driver's last barrier nothing reads this
   * participant's records; they go back with the compaction's other scratch
   * (OCaml's W1 heap's are 128 KiB, Wbig's 512 KiB, resident until freed)
   * and the next compaction's sweep grows them again */
  cpart_records_free(&cp->parts[part]);
  return c.bad ? PH_EINVAL : PH_OK;
}
