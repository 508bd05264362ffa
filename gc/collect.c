/* gc/collect.c -- the managed collector's sequence: every step of a
 * collection and a compaction, in order (DESIGN.md: gc.sequence).
 *
 * The stop-the-world engine (barrier/stw.c) elects a leader, gathers the
 * participants and runs body_stw on each of them.  Everything a collection
 * does is here, top to bottom; a step that says "single" is done by the one
 * participant the barrier before it returns 1 to:
 *
 *   1. prepare   single, the last participant to arrive, in the arrival
 *                round, before any body runs (barrier.stw.prepare): flush
 *                blocking domains' caches, clear the avail lists, build
 *                the section's unit index space, reset the claim counters
 *                of marking and sweeping
 *   2. mark      roots, then the mark stacks (gc/mark.c), then the
 *                ephemeron rounds (gc/weak.c); ends with a barrier; if
 *                marking met weak blocks or ephemerons, the participants
 *                clear the weak fields, sharing the lists (gc.weak.clear;
 *                the sweep zeroes the pending ephemerons: gc.weak.pending);
 *                barrier;
 *                with finalisers registered, their flagging and marking
 *                (gc.final)
 *   3. sweep     per pool (heap/sweep.c); one barrier round whose last
 *                arriver frees what died, stats, decides automatic
 *                compaction, releases per heap.release.collect, resets
 *                pacing (barrier.sense.single)
 *   4. compact   for ph_compact or an automatic compaction: the six phases
 *                of compact/compact.c, with this file's barrier, root
 *                scanner and PER_DOMAIN owner rule
 *   5. verify / census on the leader, when requested, then a barrier
 *                (steps 2-4 end with one: no other; gc.stw.barriers)
 *
 * PH_DEBUG >= 2 verifies the whole heap after steps 3 and 4. */
#include "gc/gc.h"

#include <stdio.h>
#include <stdlib.h>

static void phase_begin(struct ph_heap *h, ph_worker *w, ph_phase ph,
                        uint64_t *t) {
  *t = ph_now_ns();
  ph_event(h, ph, 1, w->dom->index);
}

static uint64_t phase_end(struct ph_heap *h, ph_worker *w, ph_phase ph,
                          uint64_t t0) {
  ph_event(h, ph, 0, w->dom->index);
  return ph_now_ns() - t0;
}

/* PH_DEBUG >= 2: the whole heap is verified on the leader (the others wait
 * at the barrier); a broken invariant aborts with its description.  This is
 * also the compactor's precondition check (DESIGN.md: compact). */
static void expensive_check_stw(struct ph_heap *h, ph_worker *w,
                                const char *when) {
#if PH_EXPENSIVE
  ph_stw *s = &h->sync->stw;
  if (w->dom == s->leader) {
    char why[256];
    if (ph_verify_stw_single(h, why, sizeof why) != PH_OK) {
      fprintf(stderr, "poolheap: heap broken %s: %s\n", when, why);
      abort();
    }
  }
  ph_barrier_wait(&s->bar);
#else
  (void)h;
  (void)w;
  (void)when;
#endif
}

/* ---------------------------------------------------------- 1. prepare */

static void prepare_stw_single(struct ph_heap *h) {
  ph_stw *s = &h->sync->stw;
  ph_gc *g = h->gc;
  /* blocking domains do not flush their own caches (barrier.blocking) */
  for (unsigned i = 0; i < h->cfg.max_domains; i++) {
    struct ph_domain *d = h->slots[i].dom;
    if (d && d->state == PH_DS_BLOCKING)
      ph_domain_flush_caches(d);
  }
  h->sec.nparts = s->nparts;
  g->nparts = s->nparts;
  g->do_compact = 0;
  g->compact_refused = 0;
  s->did = 0;
  s->result = PH_OK;
  s->refused = PH_OK;
  if (!(s->kind & (PH_STW_COLLECT | PH_STW_COMPACT)))
    return;
  /* avail lists are rebuilt by the sweep */
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    for (unsigned c = 0; c < h->nclasses; c++)
      atomic_store_explicit(&h->slots[i].avail[c], NULL, memory_order_relaxed);
  ph_units_index_stw_single(h);
  ph_roots_rewind_stw_single(h);
  atomic_store_explicit(&h->sec.claim_sweep, 0, memory_order_relaxed);
  atomic_store_explicit(&g->claim_rescan, 0, memory_order_relaxed);
  atomic_store_explicit(&g->mark_overflow, 0, memory_order_relaxed);
  atomic_store_explicit(&g->claim_groots, 0, memory_order_relaxed);
  atomic_store_explicit(&g->claim_weak, 0, memory_order_relaxed);
  g->idle = 0;
  g->mark_done = 0;
}

/* ---------------------------------------------------- 2. mark, 3. sweep */

static void finish_collect_stw_single(struct ph_heap *h) {
  ph_stw *s = &h->sync->stw;
  ph_gc *g = h->gc;
  ph_sweep_finish_stw_single(h);
  if (g->nregs)
    ph_final_queue_stw_single(h); /* gc.final: due ones to the queues */
  uint64_t mark = 0, sweep = 0, frag = 0, wcl = 0, ecl = 0;
  for (unsigned i = 0; i < s->nparts; i++) {
    ph_worker *w = &g->workers[i];
    mark = w->t_mark > mark ? w->t_mark : mark;
    sweep = w->t_sweep > sweep ? w->t_sweep : sweep;
    frag += h->sec.pw[i].frag_bytes;
    wcl += w->weak_cleared;
    ecl += h->sec.pw[i].zeroed; /* gc.weak.pending */
    w->weak_cleared = 0;
  }
  pthread_mutex_lock(&h->lock);
  h->st.weak_cleared += wcl;
  h->st.ephemerons_cleared += ecl;
  h->st.mark_ns = mark;
  h->st.sweep_ns = sweep;
  h->st.collections++;
  /* automatic compaction (cfg.compact_percent) */
  uint64_t pool_bytes = (uint64_t)h->pool_units << h->pool_shift;
  if ((s->kind & PH_STW_AUTO) && h->cfg.compact_percent &&
      frag * 100 > (uint64_t)h->cfg.compact_percent * pool_bytes)
    g->do_compact = 1;
  /* gc.pin: the pools holding pinned blocks; without them nothing may
   * move, so no compaction: every ph_compact that took part in this section
   * returns PH_ENOMEM (barrier.stw) */
  if (((s->kind & PH_STW_COMPACT) || g->do_compact) &&
      ph_pin_pools_stw_single(h) != PH_OK) {
    g->do_compact = 0;
    g->compact_refused = 1;
    s->refused = PH_ENOMEM;
  }
  if (!(s->kind & PH_STW_COMPACT) && !g->do_compact &&
      h->cfg.release != PH_RELEASE_KEEP) {
    /* heap.release.collect: keep a quarter of the heap in use (or retain)
     * committed for the next burst; give the rest back. */
    uint64_t inuse = (uint64_t)(h->pool_units + h->large_units)
                     << h->pool_shift;
    size_t keep = h->cfg.retain > inuse / 4 ? h->cfg.retain : inuse / 4;
    uint64_t rel;
    ph_units_release_locked(h,
                            h->cfg.release == PH_RELEASE_UNMAP
                                ? PH_RELEASE_DECOMMIT
                                : (int)h->cfg.release,
                            keep, &rel);
  }
  ph_pacing_reset_locked(h);
  pthread_mutex_unlock(&h->lock);
  /* what the section did, for coalescing (barrier.stw) */
  s->did = PH_STW_COLLECT |
           (((s->kind & PH_STW_COMPACT) || g->do_compact) && !g->compact_refused
                ? PH_STW_COMPACT
                : 0);
}

static void finish_collect_fn(void *arg) {
  finish_collect_stw_single(arg);
}

/* gc.weak.clear: before the sweep frees the targets; nothing (not even a
 * barrier) when marking met no weak block or pending ephemeron.  Called
 * right after a barrier. */
static void weak_clear_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  if (!ph_weak_any_stw(h))
    return;
  ph_weak_clear_stw(h, w);
  if (ph_barrier_wait(&h->sync->stw.bar)) {
    /* relaxed: the next marking (resurrection) comes after a barrier */
    atomic_store_explicit(&g->claim_weak, 0, memory_order_relaxed);
  }
  ph_weak_forget(w); /* nobody reads the lists any more */
}

/* gc.final: after the weak clearing, the FIRST finalisers' unreachable
 * values are flagged (all of them before any is marked again), then marked
 * with what they reach (and the ephemeron rounds again); then the LAST
 * ones' values still unmarked are flagged (barrier: the sweep clears the
 * marks), and the weak blocks met by this marking are cleared.  The leader
 * queues the flagged ones after the sweep.  Nothing when no finaliser is
 * registered. */
static void final_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  ph_barrier *bar = &h->sync->stw.bar;
  if (g->nregs == 0) /* changes only outside sections */
    return;
  ph_final_flag_stw(h, w, PH_FINAL_FIRST);
  if (ph_barrier_wait(bar)) {
    g->idle = 0;
    g->mark_done = 0;
    atomic_store_explicit(&g->claim_rescan, 0, memory_order_relaxed);
  }
  ph_barrier_wait(bar);
  ph_final_mark_due_stw(h, w);
  ph_mark_finish_stw(h, w); /* ends with a barrier */
  ph_ephe_rounds_stw(h, w);
  ph_final_flag_stw(h, w, PH_FINAL_LAST); /* reads marks: before the sweep */
  ph_barrier_wait(bar);
  weak_clear_stw(h, w);
}

static void collect_stw(struct ph_heap *h, ph_worker *w) {
  ph_stw *s = &h->sync->stw;
  uint64_t t;
  w->live_bytes = w->live_blocks = w->watch_hits = 0;
  phase_begin(h, w, PH_PHASE_MARK, &t);
  ph_mark_stw(h, w); /* ends with a barrier */
  weak_clear_stw(h, w);
  final_stw(h, w);
  w->t_mark = phase_end(h, w, PH_PHASE_MARK, t);
  PH_ASSERT(w->stack.n == 0);        /* marking is over */
  ph_mark_stack_free(&w->stack);     /* mark.stack.scratch */
  w->pw->live_bytes = w->live_bytes; /* summed by the sweep's finish */
  w->pw->live_blocks = w->live_blocks;
  phase_begin(h, w, PH_PHASE_SWEEP, &t);
  ph_sweep_stw(h, w->pw);
  ph_weak_trim(w); /* gc.weak.trim: the lists were forgotten */
  w->t_sweep = phase_end(h, w, PH_PHASE_SWEEP, t);
  /* gc.stw.barriers: one round, the finish run by its last arriver */
  ph_barrier_wait_single(&s->bar, finish_collect_fn, h);
}

/* ---------------------------------------------------------- 4. compact */
/* What compact/ needs from the section, for one participant (arg: its
 * ph_worker). */

static int compact_barrier(void *arg) {
  ph_worker *w = arg;
  return ph_barrier_wait(&w->dom->heap->sync->stw.bar);
}

static void compact_roots_rewind(void *arg) {
  ph_worker *w = arg;
  ph_roots_rewind_stw_single(w->dom->heap);
  atomic_store_explicit(&w->dom->heap->gc->claim_groots, 0,
                        memory_order_relaxed);
}

static void compact_scan_roots(void *arg, ph_visit_fn visit,
                               void (*done)(void *ctx), void *ctx) {
  ph_worker *w = arg;
  struct ph_heap *h = w->dom->heap;
  ph_roots_scan_done_stw(h, visit, done, ctx);
  /* the collector's own (gc.final): one participant */
  if (ph_gc_roots_any_stw(h) &&
      atomic_fetch_add_explicit(&h->gc->claim_groots, 1,
                                memory_order_relaxed) == 0) {
    ph_gc_roots_visit_stw(h, visit, ctx, 1);
    done(ctx);
  }
}

/* PER_DOMAIN: a domain evacuates its own pools; the leader also those
 * whose owner does not take part. */
static int compact_evacuates_slot(void *arg, unsigned owner) {
  ph_worker *w = arg;
  struct ph_heap *h = w->dom->heap;
  ph_stw *s = &h->sync->stw;
  struct ph_domain *o = h->slots[owner].dom;
  return o ? o == w->dom ||
                 (o->sync->stw_expected != s->epoch && w->dom == s->leader)
           : w->dom == s->leader;
}

/* compact.phase.stats: participant i's records, from the sweep. */
static void compact_records(void *arg, unsigned i, ph_compact_recs *out) {
  ph_worker *w = arg;
  const ph_pool_worker *pw = &w->dom->heap->sec.pw[i];
  *out = (ph_compact_recs){pw->cands, pw->ncands, pw->larges, pw->nlarges,
                           pw->records_lost};
}

/* Push every pool with room that is at least half full (dense) or less
 * than half full (!dense) on its owner's avail list. */
static void push_pools_locked(struct ph_heap *h, int dense) {
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = ch->nunits; u-- > 0;) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = ph_pool_at(h, ch, u);
      if (p->nfree > 0 && (p->nlive * 2 >= p->nslots) == dense)
        ph_pool_push_avail(h, p);
    }
  }
}

/* compact.phase.free: the avail lists from the kept pools with room,
 * densest on top (the sweep's lists stand if no plan was made). */
static void compact_relist_locked(void *arg, int planned) {
  ph_worker *w = arg;
  struct ph_heap *h = w->dom->heap;
  if (!planned)
    return;
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    for (unsigned c = 0; c < h->nclasses; c++)
      atomic_store_explicit(&h->slots[i].avail[c], NULL, memory_order_relaxed);
  push_pools_locked(h, 0);
  push_pools_locked(h, 1);
}

static void compact_finish_stw_single(void *arg, const ph_compact_result *r) {
  ph_worker *w = arg;
  struct ph_heap *h = w->dom->heap;
  pthread_mutex_lock(&h->lock);
  /* heap.pool.zero: evacuation wrote blocks into free slots */
  ph_pools_zero_forget_stw(h);
  h->st.compactions++;
  h->st.evacuate_ns = r->t_evac;
  h->st.update_ns = r->t_update;
  h->st.release_ns = r->t_release;
  h->st.evacuated_blocks = r->blocks;
  h->st.evacuated_bytes = r->bytes;
  h->st.evacuated_pools = r->pools;
  h->st.released_bytes = r->released;
  ph_pacing_reset_locked(h);
  pthread_mutex_unlock(&h->lock);
}

static void compact_event(void *arg, ph_phase ph, int begin) {
  ph_worker *w = arg;
  ph_event(w->dom->heap, ph, begin, w->dom->index);
}

/* compact.update.rule: tags below PH_TAG_RAW hold values in every field;
 * no block goes through a callback. */
static const ph_compact_rule managed_rule = {.no_scan_tag = PH_TAG_RAW};

static void compact_stw(struct ph_heap *h, ph_worker *w) {
  ph_compact_part part = {
      .id = w->id,
      .nparts = h->sec.nparts,
      .dom = w->dom->index,
      .leader = w->dom == h->sync->stw.leader,
      .barrier = compact_barrier,
      .roots_rewind = compact_roots_rewind,
      .scan_roots = compact_scan_roots,
      .evacuates_slot = compact_evacuates_slot,
      .records = compact_records,
      .relist_locked = compact_relist_locked,
      .finish_stw_single = compact_finish_stw_single,
      .event = compact_event,
      .rule = &managed_rule,
      .arg = w,
      .pinned = h->gc->pinned_pools,
      .npinned = h->gc->npinned_pools,
      .pinned_blocks = h->gc->pinned_blocks,
      .npinned_blocks = h->gc->npinned_blocks,
      .holes = 1, /* compact.holes.free */
  };
  ph_compact_stw(h, &part);
  /* compact.phase.stats: past the driver's last barrier nothing reads this
   * participant's records; they go back with the compaction's other scratch
   * (a W1 heap's are 128 KiB, Wbig's 512 KiB, resident until freed) and the
   * next sweep grows them again */
  ph_sweep_records_free(w->pw);
}

/* ---------------------------------------------------------------- body */

/* The body every participant runs (barrier.stw), steps 1 to 5. */
static void body_stw(struct ph_heap *h, unsigned id, struct ph_domain *d) {
  ph_stw *s = &h->sync->stw;
  ph_gc *g = h->gc;
  ph_worker *w = &g->workers[id];
  w->id = id;
  w->dom = d;
  w->pw = &h->sec.pw[id];
  uint64_t t0;
  phase_begin(h, w, PH_PHASE_STW, &t0);
  /* 1: prepare_stw_single ran on the last to arrive (gc.stw.barriers) */
  if (s->kind & (PH_STW_COLLECT | PH_STW_COMPACT)) {
    /* 2, 3 */
    collect_stw(h, w);
    expensive_check_stw(h, w, "after the sweep");
    /* 4: g->do_compact was written by the leader before collect_stw's last
     * barrier */
    if (((s->kind & PH_STW_COMPACT) || g->do_compact) && !g->compact_refused) {
      compact_stw(h, w);
      expensive_check_stw(h, w, "after compaction");
    }
  }
  /* 5 */
  if (s->kind & (PH_STW_VERIFY | PH_STW_CENSUS)) {
    if (w->dom == s->leader) {
      const ph_gc_req *req = s->arg;
      if (s->kind & PH_STW_VERIFY)
        s->result = ph_verify_stw_single(h, req->why, req->why_size);
      if (s->kind & PH_STW_CENSUS)
        ph_census_stw_single(h, &req->census);
    }
    /* the others wait for the leader's step 5 */
    ph_barrier_wait(&s->bar);
  }
  /* gc.stw.barriers: no final barrier after steps 2-4, which end with one;
   * the section's time is the leader's */
  if (w->dom == s->leader) {
    pthread_mutex_lock(&h->lock);
    h->st.stw_ns = ph_now_ns() - t0;
    pthread_mutex_unlock(&h->lock);
  }
  phase_end(h, w, PH_PHASE_STW, t0);
}

/* Run (or join, and coalesce with) a section of the given kind whose body
 * is the collector's sequence. */
int ph_gc_run(struct ph_domain *d, int kind, const ph_gc_req *req) {
  return ph_stw_run(d, kind, prepare_stw_single, body_stw, req);
}

/* ------------------------------------------------------------- public */

static int run_checked(ph_domain *d, int kind, const ph_gc_req *req) {
  int err = ph_domain_enter(d);
  if (err != PH_OK)
    return err;
  err = ph_gc_run(d, kind, req);
  if (err != PH_OK)
    d->last_error = err;
  return err;
}

int ph_collect(ph_domain *d) {
  int err = run_checked(d, PH_STW_COLLECT, NULL);
  if (err == PH_OK)
    ph_final_poll(d); /* gc.final: a run point */
  return err;
}

int ph_compact(ph_domain *d) {
  int err = run_checked(d, PH_STW_COMPACT, NULL);
  if (err == PH_OK)
    ph_final_poll(d);
  return err;
}

int ph_verify(ph_domain *d, char *why, size_t why_size) {
  if (why && why_size)
    why[0] = 0;
  if (!why)
    why_size = 0;
  ph_gc_req req = {.why = why, .why_size = why_size};
  return run_checked(d, PH_STW_VERIFY, &req);
}

int ph_census(ph_domain *d, void (*fn)(const ph_census_class *c, void *user),
              void *user) {
  if (!fn)
    return PH_EINVAL;
  ph_gc_req req = {.census = {.fn = fn, .user = user}};
  return run_checked(d, PH_STW_CENSUS, &req);
}
