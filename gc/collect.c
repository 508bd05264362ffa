/* gc/collect.c -- the managed collector's sequence: every step of a
 * collection and a compaction, in order (DESIGN.md: gc.sequence).
 *
 * The stop-the-world engine (barrier/stw.c) elects a leader, gathers the
 * participants and runs body_stw on each of them; everything a collection
 * does is here, top to bottom:
 *
 *   1. prepare   barrier; the leader flushes blocking domains' caches,
 *                clears the avail lists, builds the section's unit index
 *                space and resets the claim counters; barrier
 *   2. mark      roots, then the mark stacks (gc/mark.c); barrier
 *   3. sweep     per pool (heap/sweep.c); barrier; the leader frees what
 *                died, updates stats and pacing, decides automatic
 *                compaction, releases per heap.release.collect; barrier
 *   4. compact   for ph_compact or an automatic compaction (compact/)
 *   5. verify / census on the leader, when requested; final barrier
 *
 * PH_DEBUG >= 2 verifies the whole heap after steps 3 and 4. */
#include "gc/gc.h"

#include <stdio.h>
#include <stdlib.h>

static void prepare_stw_single(struct ph_heap *h);
static void collect_stw(struct ph_heap *h, ph_worker *w);
static void finish_collect_stw_single(struct ph_heap *h);

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
 * also the compactor's precondition check (DESIGN.md: compact/). */
static void expensive_check_stw(struct ph_heap *h, ph_worker *w,
                                const char *when) {
#if PH_EXPENSIVE
  ph_stw *s = &h->stw;
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

/* The body every participant runs (DESIGN.md: gc.sequence). */
static void body_stw(struct ph_heap *h, ph_worker *w) {
  ph_stw *s = &h->stw;
  uint64_t t0;
  phase_begin(h, w, PH_PHASE_STW, &t0);
  if (ph_barrier_wait(&s->bar))
    prepare_stw_single(h);
  ph_barrier_wait(&s->bar);
  if (s->kind & (PH_STW_COLLECT | PH_STW_COMPACT)) {
    collect_stw(h, w);
    expensive_check_stw(h, w, "after the sweep");
    /* s->do_compact was written by the leader before collect_stw's last
     * barrier */
    if ((s->kind & PH_STW_COMPACT) || s->do_compact) {
      ph_compact_stw(h, w);
      expensive_check_stw(h, w, "after compaction");
    }
  }
  if (s->kind & (PH_STW_VERIFY | PH_STW_CENSUS)) {
    if (w->dom == s->leader) {
      if (s->kind & PH_STW_VERIFY)
        s->result = ph_verify_stw_single(h, s->why, s->why_size);
      if (s->kind & PH_STW_CENSUS)
        ph_census_stw_single(h, &s->census);
    }
  }
  if (ph_barrier_wait(&s->bar)) {
    pthread_mutex_lock(&h->lock);
    h->st.stw_ns = ph_now_ns() - t0;
    pthread_mutex_unlock(&h->lock);
  }
  phase_end(h, w, PH_PHASE_STW, t0);
}

/* Leader, after every participant arrived. */
static void prepare_stw_single(struct ph_heap *h) {
  ph_stw *s = &h->stw;
  /* blocking domains do not flush their own caches (barrier.blocking) */
  for (unsigned i = 0; i < h->cfg.max_domains; i++) {
    struct ph_domain *d = h->slots[i].dom;
    if (d && d->state == PH_DS_BLOCKING)
      ph_domain_flush_caches(d);
  }
  s->do_compact = 0;
  s->did = 0;
  s->result = PH_OK;
  if (!(s->kind & (PH_STW_COLLECT | PH_STW_COMPACT)))
    return;
  /* avail lists are rebuilt by the sweep */
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    for (unsigned c = 0; c < h->nclasses; c++)
      atomic_store_explicit(&h->slots[i].avail[c], NULL, memory_order_relaxed);
  ph_stw_units_init_stw_single(h);
  atomic_store_explicit(&s->claim_roots, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_units, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_c, 0, memory_order_relaxed);
  atomic_store_explicit(&s->mark_overflow, 0, memory_order_relaxed);
  s->idle = 0;
  s->mark_done = 0;
}

static void collect_stw(struct ph_heap *h, ph_worker *w) {
  ph_stw *s = &h->stw;
  uint64_t t;
  w->live_bytes = w->live_blocks = 0;
  phase_begin(h, w, PH_PHASE_MARK, &t);
  ph_mark_stw(h, w); /* ends with a barrier */
  w->t_mark = phase_end(h, w, PH_PHASE_MARK, t);
  phase_begin(h, w, PH_PHASE_SWEEP, &t);
  ph_sweep_stw(h, w);
  w->t_sweep = phase_end(h, w, PH_PHASE_SWEEP, t);
  if (ph_barrier_wait(&s->bar))
    finish_collect_stw_single(h);
  ph_barrier_wait(&s->bar);
}

static void finish_collect_stw_single(struct ph_heap *h) {
  ph_stw *s = &h->stw;
  ph_sweep_finish_stw_single(h);
  uint64_t mark = 0, sweep = 0, frag = 0;
  for (unsigned i = 0; i < s->nparts; i++) {
    ph_worker *w = &s->workers[i];
    mark = w->t_mark > mark ? w->t_mark : mark;
    sweep = w->t_sweep > sweep ? w->t_sweep : sweep;
    frag += w->frag_bytes;
  }
  pthread_mutex_lock(&h->lock);
  h->st.mark_ns = mark;
  h->st.sweep_ns = sweep;
  h->st.collections++;
  uint64_t pool_bytes = (uint64_t)h->pool_units << h->pool_shift;
  if ((s->kind & PH_STW_AUTO) && h->cfg.compact_percent &&
      frag * 100 > (uint64_t)h->cfg.compact_percent * pool_bytes)
    s->do_compact = 1;
  if (!(s->kind & PH_STW_COMPACT) && !s->do_compact &&
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
           ((s->kind & PH_STW_COMPACT) || s->do_compact ? PH_STW_COMPACT : 0);
}

/* Run (or join, and coalesce with) a section of the given kind whose body
 * is the collector's sequence. */
int ph_gc_run(struct ph_domain *d, int kind, const ph_stw_req *req) {
  return ph_stw_run(d, kind, body_stw, req);
}

/* ------------------------------------------------------------- public */

static int run_checked(ph_domain *d, int kind, const ph_stw_req *req) {
  int err = ph_check_domain(d);
  if (err != PH_OK) {
    ph_domain_note_error(d, err);
    return err;
  }
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  err = ph_gc_run(d, kind, req);
  if (err != PH_OK)
    d->last_error = err;
  return err;
}

int ph_collect(ph_domain *d) {
  return run_checked(d, PH_STW_COLLECT, NULL);
}

int ph_compact(ph_domain *d) {
  return run_checked(d, PH_STW_COMPACT, NULL);
}

int ph_verify(ph_domain *d, char *why, size_t why_size) {
  if (why && why_size)
    why[0] = 0;
  if (!why)
    why_size = 0;
  ph_stw_req req = {.why = why, .why_size = why_size};
  return run_checked(d, PH_STW_VERIFY, &req);
}

int ph_census(ph_domain *d, void (*fn)(const ph_census_class *c, void *user),
              void *user) {
  if (!fn)
    return PH_EINVAL;
  ph_stw_req req = {.census = {.fn = fn, .user = user}};
  return run_checked(d, PH_STW_CENSUS, &req);
}
