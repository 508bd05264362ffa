/* gc/weak.c -- weak blocks and ephemerons (DESIGN.md: gc.weak).
 *
 * A weak block or an ephemeron is a block whose header has colour bit 1
 * (PH_HD_SPECIAL) set; its tag says which (PH_WEAK_TAG, PH_EPHE_TAG).  The
 * marker never scans one: the participant that marks it calls ph_weak_met,
 * which puts a weak block on that participant's list, and an ephemeron too
 * unless its keys are all marked already (then its data is marked at once).
 *
 * gc.weak.rounds: when strong marking is done, every participant looks at
 * the ephemerons of its own list: one whose keys are all marked has its
 * data marked (and leaves the list); the marking that follows is shared as
 * usual (mark.share).  A round that marked nothing anywhere ends the rounds:
 * every ephemeron still listed has a key that nothing reaches.
 *
 * gc.weak.clear: every participant then clears, on its own lists, the weak
 * fields whose target is not marked and every field of the ephemerons still
 * listed.  This happens before the sweep, which frees those targets, so no
 * weak field ever holds a freed block; a compaction after it forwards the
 * fields that remain (they point at live blocks, like any field).
 *
 * A list that cannot grow (malloc refused) degrades to strong: the block's
 * fields are marked like any block's, so nothing it holds dies this time. */
#include "gc/gc.h"

#include <stdlib.h>

/* Test knob (internal): the largest weak or ephemeron list, in entries
 * (0 = none), to exercise the strong fallback. */
size_t ph_weak_list_limit = 0;

#define PH_WEAK_AHEAD 16 /* clearing: prefetch distance, in fields */

static int list_add(ph_value **a, size_t *n, size_t *cap, ph_value v) {
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 256;
    if (ph_weak_list_limit && ncap > ph_weak_list_limit)
      ncap = ph_weak_list_limit;
    ph_value *e = ncap > *cap ? realloc(*a, ncap * sizeof *e) : NULL;
    if (!e)
      return 0;
    *a = e;
    *cap = ncap;
  }
  (*a)[(*n)++] = v;
  return 1;
}

static inline int target_dead(ph_value x) {
  return ph_is_block(x) && !(ph_hd_load(x) & PH_HD_BLACK);
}

/* Are the keys 0..nkeys-1 of ephemeron e all marked (or not blocks)? */
static int keys_alive(ph_value e, size_t nkeys) {
  const ph_value *f = (const ph_value *)e;
  for (size_t i = 0; i < nkeys; i++)
    if (target_dead(f[i]))
      return 0;
  return 1;
}

static void mark_fields(struct ph_heap *h, ph_worker *w, ph_value v, size_t n) {
  for (size_t i = 0; i < n; i++)
    ph_mark_value(h, w, ((const ph_value *)v)[i]);
}

void ph_weak_met(struct ph_heap *h, ph_worker *w, ph_value v, ph_value hd) {
  ph_gc *g = h->gc;
  size_t wo = ph_hd_wosize(hd);
  if (ph_hd_tag(hd) == PH_WEAK_TAG) {
    if (list_add(&w->weak, &w->nweak, &w->weak_cap, v))
      /* relaxed: read after a barrier */
      atomic_fetch_add_explicit(&g->weak_listed, 1, memory_order_relaxed);
    else
      mark_fields(h, w, v, wo); /* degrade to strong */
    return;
  }
  /* an ephemeron: fields 0..wo-2 are keys, wo-1 the data */
  if (keys_alive(v, wo - 1)) {
    ph_mark_value(h, w, ((const ph_value *)v)[wo - 1]);
    return;
  }
  if (list_add(&w->ephe, &w->nephe, &w->ephe_cap, v))
    atomic_fetch_add_explicit(&g->ephe_listed, 1, memory_order_relaxed);
  else
    mark_fields(h, w, v, wo);
}

/* One participant's part of a round: mark the data of the listed
 * ephemerons whose keys are all marked now; they leave the list. */
static void ephe_round(struct ph_heap *h, ph_worker *w) {
  size_t i = 0;
  while (i < w->nephe) {
    ph_value e = w->ephe[i];
    size_t wo = ph_hd_wosize(ph_hd_load(e));
    if (keys_alive(e, wo - 1)) {
      ph_mark_value(h, w, ((const ph_value *)e)[wo - 1]);
      w->ephe[i] = w->ephe[--w->nephe];
    } else {
      i++;
    }
  }
}

void ph_ephe_rounds_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  ph_barrier *bar = &h->sync->stw.bar;
  /* Called right after a barrier; lists change only after the next one,
   * so every participant reads the same count here. */
  if (atomic_load_explicit(&g->ephe_listed, memory_order_relaxed) == 0)
    return;
  for (;;) {
    if (ph_barrier_wait(bar)) {
      g->idle = 0;
      g->mark_done = 0;
      atomic_store_explicit(&g->claim_rescan, 0, memory_order_relaxed);
      atomic_store_explicit(&g->ephe_progress, 0, memory_order_relaxed);
    }
    ph_barrier_wait(bar);
    uint64_t before = w->live_blocks;
    ephe_round(h, w);
    ph_mark_finish_stw(h, w, &g->ephe_progress, before); /* ends: barrier */
    /* relaxed: written before that barrier, reset after the next one */
    if (!atomic_load_explicit(&g->ephe_progress, memory_order_relaxed))
      return;
  }
}

int ph_weak_any_stw(struct ph_heap *h) {
  ph_gc *g = h->gc;
  /* relaxed: counted before the barrier that ended marking */
  return atomic_load_explicit(&g->weak_listed, memory_order_relaxed) ||
         atomic_load_explicit(&g->ephe_listed, memory_order_relaxed);
}

void ph_weak_clear_stw(struct ph_heap *h, ph_worker *w) {
  (void)h;
  for (size_t k = 0; k < w->nweak; k++) {
    ph_value *f = (ph_value *)w->weak[k];
    size_t wo = ph_hd_wosize(ph_hd_load(w->weak[k]));
    for (size_t i = 0; i < wo; i++) {
      /* the targets' headers are cache misses: ask for them ahead */
      if (i + PH_WEAK_AHEAD < wo && ph_is_block(f[i + PH_WEAK_AHEAD]))
        __builtin_prefetch(ph_hp(f[i + PH_WEAK_AHEAD]));
      if (target_dead(f[i])) {
        f[i] = 0;
        w->weak_cleared++;
      }
    }
  }
  for (size_t k = 0; k < w->nephe; k++) {
    ph_value *f = (ph_value *)w->ephe[k];
    size_t wo = ph_hd_wosize(ph_hd_load(w->ephe[k]));
    for (size_t i = 0; i < wo; i++)
      f[i] = 0;
    w->ephe_cleared++;
  }
  w->nweak = w->nephe = 0;
}

void ph_weak_worker_free(ph_worker *w) {
  free(w->weak);
  free(w->ephe);
  w->weak = w->ephe = NULL;
  w->nweak = w->nephe = w->weak_cap = w->ephe_cap = 0;
}
