/* gc/weak.c -- weak blocks and ephemerons (DESIGN.md: gc.weak).
 *
 * A weak block or an ephemeron is a block whose header has colour bit 1
 * (PH_HD_SPECIAL) set; its tag says which (PH_WEAK_TAG, PH_EPHE_TAG).  The
 * marker never scans one: the participant that marks it calls ph_weak_met,
 * which puts a weak block on that participant's list, and an ephemeron too
 * unless its keys are all marked already (then its data is marked).
 *
 * gc.weak.met.ahead: an ephemeron is looked at PH_EPHE_MET_AHEAD
 * ephemerons after it was marked, its first key's header asked for
 * meanwhile; its data is marked from a mark stack entry, never from inside
 * the marking of the ephemeron (no recursion down a chain of them).
 *
 * gc.weak.rounds: when strong marking is done, every participant looks at
 * the ephemerons of its own list: one whose keys are all marked has its
 * data marked (and leaves the list); the marking that follows is shared as
 * usual (mark.share).
 *
 * gc.weak.watch: the first key found unmarked carries the watch bit in its
 * header
 * (heap.block.watch) and its marker counts it (watch_hits); a round runs
 * only if some watched key was marked since the last round began, so the
 * rounds end when none was: every ephemeron still listed has a key that
 * nothing reaches.
 *
 * gc.weak.clear: the participants then claim entries of all the weak lists
 * (weak blocks are listed in slices of PH_WEAK_SLICE fields) and clear the
 * weak fields whose target is not marked.  This happens before the sweep,
 * which frees those targets, so no weak field ever holds a freed block; a
 * compaction after it forwards the fields that remain (they point at live
 * blocks, like any field).
 *
 * gc.weak.pending: a marked ephemeron carries tag bit 1 until its data is
 * known to live (queued, then listed); the sweep zeroes the fields of those
 * still carrying it (heap.sweep.zero), in the same pass that frees their
 * dead keys.
 *
 * A list that cannot grow (malloc refused) degrades to strong: the block's
 * fields are marked like any block's, so nothing it holds dies this time. */
#include "gc/gc.h"

#include <stdlib.h>

/* Test knob (internal): the largest weak or ephemeron list, in entries
 * (0 = none), to exercise the strong fallback. */
size_t ph_weak_list_limit = 0;
/* Test knob (internal): the ephemeron rounds run since the process began
 * (gc.weak.watch; counted by each round's leader). */
_Atomic uint64_t ph_ephe_rounds_run = 0;

#define PH_WEAK_AHEAD 64 /* clearing: prefetch distance, in fields */

static int ephe_add(ph_worker *w, ph_value e) {
  if (w->nephe == w->ephe_cap) {
    size_t ncap = w->ephe_cap ? w->ephe_cap * 2 : 256;
    if (ph_weak_list_limit && ncap > ph_weak_list_limit)
      ncap = ph_weak_list_limit;
    ph_value *a = ncap > w->ephe_cap && !ph_gc_fault(PH_GC_OP_EPHE)
                      ? realloc(w->ephe, ncap * sizeof *a)
                      : NULL;
    if (!a)
      return 0;
    w->ephe = a;
    w->ephe_cap = ncap;
  }
  w->ephe[w->nephe++] = e;
  return 1;
}

static int weak_add(ph_worker *w, ph_value v, size_t start) {
  if (w->nweak == w->weak_cap) {
    size_t ncap = w->weak_cap ? w->weak_cap * 2 : 256;
    if (ph_weak_list_limit && ncap > ph_weak_list_limit)
      ncap = ph_weak_list_limit;
    ph_weak_ent *e = ncap > w->weak_cap && !ph_gc_fault(PH_GC_OP_WEAK)
                         ? realloc(w->weak, ncap * sizeof *e)
                         : NULL;
    if (!e)
      return 0;
    w->weak = e;
    w->weak_cap = ncap;
  }
  w->weak[w->nweak++] = (ph_weak_ent){v, start};
  return 1;
}

static inline int target_dead(ph_value x) {
  return ph_is_block(x) && !(ph_hd_load(x) & PH_HD_BLACK);
}

/* gc.weak.watch: the first of the keys 0..nkeys-1 of ephemeron e that is
 * not marked, with the watch bit set in its header, or 0 if all are marked
 * (or are not blocks).  The bit is set where the marker sets the mark bit
 * (by an atomic read-modify-write when others mark too), so of the two on
 * one header, one sees the other's bit: a key marked after it was watched
 * is counted by its marker (watch_hits), or this sees it marked. */
static inline ph_value watch_dead_key(struct ph_heap *h, ph_value e,
                                      size_t nkeys) {
  const ph_value *f = (const ph_value *)e;
  for (size_t i = 0; i < nkeys; i++) {
    ph_value k = f[i];
    if (!ph_is_block(k))
      continue;
    ph_value *hp = ph_hp(k), hd = __atomic_load_n(hp, __ATOMIC_RELAXED);
    if (hd & PH_HD_BLACK)
      continue;
    if (h->sec.nparts == 1) {
      if (!(hd & PH_HD_WATCH))
        __atomic_store_n(hp, hd | PH_HD_WATCH, __ATOMIC_RELAXED);
      return k;
    }
    /* relaxed: both bits are set by read-modify-writes of this one word,
     * which are ordered among themselves */
    if (!(hd & PH_HD_WATCH))
      hd = __atomic_fetch_or(hp, PH_HD_WATCH, __ATOMIC_RELAXED);
    if (!(hd & PH_HD_BLACK))
      return k;
  }
  return 0;
}

static void mark_fields(struct ph_heap *h, ph_worker *w, ph_value v, size_t n) {
  for (size_t i = 0; i < n; i++)
    ph_mark_value(h, w, ((const ph_value *)v)[i]);
}

/* gc.weak.pending: set or clear the pending bit of an ephemeron's header;
 * with other markers about, an atomic read-modify-write (one may be
 * testing the mark bit with a fetch-or at this moment). */
static inline void pending_set(struct ph_heap *h, ph_value e, int on) {
  ph_value *hp = ph_hp(e);
  if (h->sec.nparts == 1) {
    ph_value hd = __atomic_load_n(hp, __ATOMIC_RELAXED);
    __atomic_store_n(hp,
                     on ? hd | PH_HD_EPHE_PENDING : hd & ~PH_HD_EPHE_PENDING,
                     __ATOMIC_RELAXED);
  } else if (on) {
    __atomic_fetch_or(hp, PH_HD_EPHE_PENDING, __ATOMIC_RELAXED);
  } else {
    __atomic_fetch_and(hp, ~PH_HD_EPHE_PENDING, __ATOMIC_RELAXED);
  }
}

/* The ephemeron e, pending, is looked at (gc.weak.met.ahead) or has a key
 * found marked in a round: if every key is marked, it is no longer pending
 * and its data is marked (from a stack entry: a chain of ephemerons, each
 * the data of the one before, is marked in constant C stack); otherwise it
 * is listed with the key found unmarked (or its fields are marked if the
 * list cannot grow: the strong fallback, not pending either). */
static inline void ephe_look(struct ph_heap *h, ph_worker *w, ph_value e) {
  size_t wo = ph_hd_wosize(ph_hd_load(e));
  ph_value k = watch_dead_key(h, e, wo - 1);
  if (k && ephe_add(w, e))
    return;
  pending_set(h, e, 0);
  ph_mark_fields_later(h, w, e, k ? 0 : wo - 1, wo);
}

void ph_weak_met(struct ph_heap *h, ph_worker *w, ph_value v, ph_value hd) {
  size_t wo = ph_hd_wosize(hd);
  if (ph_hd_tag(hd) == PH_WEAK_TAG) {
    /* in slices, so that any participant may clear a part of a big one */
    for (size_t s = 0; s < wo; s += PH_WEAK_SLICE)
      if (!weak_add(w, v, s)) {
        mark_fields(h, w, v, wo); /* degrade to strong: nothing dies */
        break;
      }
    return;
  }
  /* an ephemeron (fields 0..wo-2 are keys, wo-1 the data): pending from
   * now (its line is in the cache) until it is looked at, its first key's
   * header asked for (gc.weak.met.ahead) */
  pending_set(h, v, 1);
  ph_value k = ((const ph_value *)v)[0];
  if (ph_is_block(k))
    __builtin_prefetch(ph_hp(k));
  unsigned i = w->ephe_ring_n++ & (PH_EPHE_MET_AHEAD - 1);
  ph_value old = w->ephe_ring_n > PH_EPHE_MET_AHEAD ? w->ephe_ring[i] : 0;
  w->ephe_ring[i] = v;
  if (old)
    ephe_look(h, w, old);
}

void ph_ephe_ring_flush(struct ph_heap *h, ph_worker *w) {
  unsigned n =
      w->ephe_ring_n < PH_EPHE_MET_AHEAD ? w->ephe_ring_n : PH_EPHE_MET_AHEAD;
  unsigned start = w->ephe_ring_n - n;
  w->ephe_ring_n = 0;
  /* ephe_look lists or pushes: it queues nothing here */
  for (unsigned k = 0; k < n; k++)
    ephe_look(h, w, w->ephe_ring[(start + k) & (PH_EPHE_MET_AHEAD - 1)]);
}

/* gc.weak.rounds: a round streams through its list in address order,
 * asking for the ephemeron PH_EPHE_AHEAD entries ahead and, half as far
 * ahead, for its first key's header (the ephemeron's line has arrived by
 * then). */
#define PH_EPHE_AHEAD 16

/* One participant's part of a round: mark the data of the listed
 * ephemerons whose keys are all marked now; they leave the list, which
 * keeps its order. */
static void ephe_round(struct ph_heap *h, ph_worker *w) {
  ph_value *l = w->ephe;
  size_t n = w->nephe, j = 0;
  for (size_t i = 0; i < n; i++) {
    if (i + PH_EPHE_AHEAD < n)
      __builtin_prefetch(ph_hp(l[i + PH_EPHE_AHEAD]));
    if (i + PH_EPHE_AHEAD / 2 < n) {
      ph_value k = ((const ph_value *)l[i + PH_EPHE_AHEAD / 2])[0];
      if (ph_is_block(k))
        __builtin_prefetch(ph_hp(k));
    }
    ph_value e = l[i];
    size_t wo = ph_hd_wosize(ph_hd_load(e));
    if (watch_dead_key(h, e, wo - 1)) {
      l[j++] = e;
    } else {
      pending_set(h, e, 0);
      ph_mark_fields_later(h, w, e, wo - 1, wo);
    }
  }
  w->nephe = j;
}

void ph_ephe_rounds_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  ph_barrier *bar = &h->sync->stw.bar;
  /* Called right after a barrier; lists change only after the next one,
   * so every participant reads the same counts here. */
  size_t listed = 0;
  for (unsigned i = 0; i < g->nparts; i++)
    listed += g->workers[i].nephe;
  if (listed == 0)
    return;
  for (;;) {
    /* gc.weak.watch: a round only if some listed key was marked since the
     * last look at its ephemeron (the counts, like the lists, are read
     * after a barrier and reset only after the next one) */
    uint64_t hits = 0;
    for (unsigned i = 0; i < g->nparts; i++)
      hits += g->workers[i].watch_hits;
    if (hits == 0)
      return;
    if (ph_barrier_wait(bar)) {
      g->idle = 0;
      g->mark_done = 0;
      atomic_store_explicit(&g->claim_rescan, 0, memory_order_relaxed);
      /* relaxed: a count for tests, read after the section */
      atomic_fetch_add_explicit(&ph_ephe_rounds_run, 1, memory_order_relaxed);
    }
    w->watch_hits = 0; /* everyone has read it */
    ph_barrier_wait(bar);
    ephe_round(h, w);
    ph_mark_finish_stw(h, w); /* ends with a barrier */
  }
}

int ph_weak_any_stw(struct ph_heap *h) {
  ph_gc *g = h->gc;
  /* the lists' lengths, written before the barrier that ended marking (a
   * count per participant: no shared counter in the marking's path) */
  for (unsigned i = 0; i < g->nparts; i++)
    if (g->workers[i].nweak || g->workers[i].nephe)
      return 1;
  return 0;
}

/* gc.weak.clear.groups: a slice is cleared 8 fields at a time without a
 * branch on a field's fate (random in a table with scattered garbage): the
 * fields' new values (0 for a dead target) are computed into a group and
 * stored only if one of them changed, so a group where nothing died is not
 * written.  The header read for a field that holds no block is a read of a
 * marked dummy word instead. */
static const ph_value marked_dummy = PH_HD_BLACK;

static inline ph_value field_dead(ph_value x) {
  int blk = ph_is_block(x);
  const ph_value *hp = blk ? ph_hp(x) : &marked_dummy;
  return !(__atomic_load_n(hp, __ATOMIC_RELAXED) & PH_HD_BLACK);
}

static void clear_slice(ph_worker *w, const ph_weak_ent *e) {
  ph_value *f = (ph_value *)e->v;
  size_t wo = ph_hd_wosize(ph_hd_load(e->v));
  size_t end = wo - e->start > PH_WEAK_SLICE ? e->start + PH_WEAK_SLICE : wo;
  uint64_t n = 0;
  size_t i = e->start;
  for (; i + 8 <= end; i += 8) {
    /* the targets' headers are cache misses: ask for them ahead */
    for (size_t k = i + PH_WEAK_AHEAD; k < i + 8 + PH_WEAK_AHEAD && k < end;
         k++)
      if (ph_is_block(f[k]))
        __builtin_prefetch(ph_hp(f[k]));
    ph_value nv[8], any = 0;
    for (unsigned k = 0; k < 8; k++) {
      ph_value x = f[i + k], dead = field_dead(x);
      nv[k] = x & (dead - 1);
      any |= dead;
      n += dead;
    }
    if (any)
      for (unsigned k = 0; k < 8; k++)
        f[i + k] = nv[k];
  }
  for (; i < end; i++)
    if (target_dead(f[i])) {
      f[i] = 0;
      n++;
    }
  w->weak_cleared += n;
}

#define PH_WEAK_BATCH 16 /* entries per claim */

void ph_weak_clear_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  /* one index space over every participant's weak entries; the lists do
   * not change until after the next barrier.  The pending ephemerons are
   * cleared by the sweep (gc.weak.pending). */
  size_t total = 0;
  for (unsigned i = 0; i < g->nparts; i++)
    total += g->workers[i].nweak;
  for (;;) {
    size_t k = atomic_fetch_add_explicit(&g->claim_weak, PH_WEAK_BATCH,
                                         memory_order_relaxed);
    if (k >= total)
      break;
    size_t end = k + PH_WEAK_BATCH < total ? k + PH_WEAK_BATCH : total;
    unsigned i = 0;
    size_t base = 0; /* first index of workers[i]'s entries */
    for (size_t x = k; x < end; x++) {
      while (x - base >= g->workers[i].nweak)
        base += g->workers[i++].nweak;
      clear_slice(w, &g->workers[i].weak[x - base]);
    }
  }
}

void ph_weak_forget(ph_worker *w) {
  PH_ASSERT(w->ephe_ring_n == 0); /* flushed before marking ended */
  w->nweak = w->nephe = 0;
}

/* gc.weak.trim: lists of more than this many bytes are freed after the
 * collection (a big table's lists would stay resident between collections
 * otherwise: 14 MiB for bench/weak's ephemeron table) */
#define PH_WEAK_KEEP_BYTES ((size_t)1 << 20)

void ph_weak_trim(ph_worker *w) {
  PH_ASSERT(w->nweak == 0 && w->nephe == 0 && w->ephe_ring_n == 0);
  if (w->weak_cap * sizeof *w->weak > PH_WEAK_KEEP_BYTES) {
    free(w->weak);
    w->weak = NULL;
    w->weak_cap = 0;
  }
  if (w->ephe_cap * sizeof *w->ephe > PH_WEAK_KEEP_BYTES) {
    free(w->ephe);
    w->ephe = NULL;
    w->ephe_cap = 0;
  }
}

void ph_weak_worker_free(ph_worker *w) {
  free(w->weak);
  free(w->ephe);
  w->weak = NULL;
  w->ephe = NULL;
  w->nweak = w->nephe = w->weak_cap = w->ephe_cap = 0;
}
