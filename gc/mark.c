/* gc/mark.c -- parallel marking (DESIGN.md: heap.mark, mark.share).
 *
 * Every participant scans a share of the roots (claimed with an atomic
 * counter), then drains its own mark stack.  A block is marked by an atomic
 * fetch-or of BLACK into its header; the winner pushes it.  Entries are
 * (block, first field): at most PH_MARK_SLICE fields are scanned per pop, the
 * rest is pushed back, so a huge array is shared out in slices and no
 * recursion ever touches the C stack.
 *
 * mark.share: a participant whose stack is deeper than PH_SHARE_MIN gives
 * half of it to a shared list when some participant is hungry.  A range of
 * a big block is split instead: when some participant is hungry, half of
 * what is left of it goes to the shared list as one entry (start, end), so
 * one huge root array is scanned by every participant.  Termination:
 * a participant with no work waits on mark_cond as idle; when all nparts are
 * idle and nothing is shared, marking is done.  mark.share.spin: an idle
 * participant first spins (barrier.sense.spin's ph_spin_wait) on
 * mark_events, which every publication and the end of marking advance, and
 * sleeps only if it did not move.
 *
 * mark.overflow: if a stack cannot grow (malloc refused), the entry is
 * dropped and mark_overflow set; marking then repeats with a rescan of every
 * black block's fields until a round ends without overflow.
 *
 * mark.roots.bounded: a root visit that leaves the stack deeper than
 * ph_mark_root_depth entries scans it down to half that first, so a root set
 * of a million blocks does not hold a million entries at once.
 * mark.stack.scratch: a stack is a mapping of the OS layer's scratch (not
 * malloc), mapped at its first push and unmapped once a collection's marking
 * is over, so a section leaves the process's mappings as it found them. */
#include "gc/gc.h"

#include <stdlib.h>
#include <string.h>

#define PH_MARK_SLICE 512
#define PH_SHARE_MIN 64

/* Test knob (internal): the largest mark stack, in entries (0 = none). */
size_t ph_mark_stack_limit = 0;
/* mark.roots.bounded: the deepest stack a root visit leaves (a variable only
 * so that a test can lift the bound: SIZE_MAX). */
size_t ph_mark_root_depth = 1024;

static void push(ph_gc *s, ph_mark_stack *st, ph_value v, size_t start,
                 size_t end) {
  if (st->n == st->cap) {
    size_t ncap = st->cap ? st->cap * 2 : PH_MARK_KEEP;
    if (ph_mark_stack_limit && ncap > ph_mark_stack_limit)
      ncap = ph_mark_stack_limit;
    void *e = NULL;
    if (ncap > st->cap &&
        (st->e ? ph_os_scratch_grow(st->e, st->cap * sizeof *st->e,
                                    ncap * sizeof *st->e, &e)
               : ph_os_scratch_map(ncap * sizeof *st->e, &e)) != PH_OK)
      e = NULL;
    if (!e) {
      atomic_store_explicit(&s->mark_overflow, 1, memory_order_relaxed);
      return;
    }
    st->e = e;
    st->cap = ncap;
  }
  st->e[st->n].v = v;
  st->e[st->n].start = start;
  st->e[st->n].end = end;
  st->n++;
}

void ph_mark_stack_free(ph_mark_stack *s) {
  ph_os_scratch_unmap(s->e, s->cap * sizeof *s->e);
  s->e = NULL;
  s->n = s->cap = 0;
}

void ph_mark_value(struct ph_heap *h, ph_worker *w, ph_value v) {
  if (!ph_is_block(v))
    return;
  ph_value *hp = ph_hp(v);
  ph_value hd = __atomic_load_n(hp, __ATOMIC_RELAXED);
  /* pools.header: a free slot is a header of 0, WHITE too: never marked */
  /* the mark bit only: a weak block or ephemeron has colour bit 1 too */
  if ((hd & PH_HD_BLACK) || hd == 0)
    return;
  if (h->sec.nparts == 1) {
    /* alone: no other marker can race on this header */
    __atomic_store_n(hp, hd | PH_HD_BLACK, __ATOMIC_RELAXED);
  } else {
    /* relaxed: the mark bit only decides who scans the block; its fields
     * were written before the section and are ordered by its barriers. */
    hd = __atomic_fetch_or(hp, PH_HD_BLACK, __ATOMIC_RELAXED);
    if (hd & PH_HD_BLACK)
      return;
  }
  size_t wo = ph_hd_wosize(hd);
  w->live_bytes += (wo + 1) * 8;
  w->live_blocks++;
  w->watch_hits += hd >> 63; /* gc.weak.watch: a listed key is marked */
  if (ph_hd_tag(hd) < PH_TAG_RAW) {
    if (__builtin_expect((hd & PH_HD_SPECIAL) != 0, 0))
      ph_weak_met(h, w, v, hd); /* gc.weak: not scanned like the others */
    else
      push(h->gc, &w->stack, v, 0, 0);
  }
}

static void drain_to(struct ph_heap *h, ph_worker *w, size_t low);

void ph_mark_fields_later(struct ph_heap *h, ph_worker *w, ph_value v,
                          size_t from, size_t to) {
  push(h->gc, &w->stack, v, from, to);
}

void ph_mark_slot_visit(ph_value *slot, void *ctx) {
  ph_worker *w = ctx;
  struct ph_heap *h = w->dom->heap;
  ph_mark_value(h, w, *slot);
  if (__builtin_expect(w->stack.n > ph_mark_root_depth, 0))
    drain_to(h, w, ph_mark_root_depth / 2); /* mark.roots.bounded */
}

/* mark.prefetch: a block found in a field is first prefetched and queued;
 * it is marked PH_MARK_AHEAD blocks later, when its header has arrived. */
static inline void mark_ahead(struct ph_heap *h, ph_worker *w, ph_value x) {
  __builtin_prefetch(ph_hp(x), 1);
  unsigned i = w->ring_n++ & (PH_MARK_AHEAD - 1);
  if (w->ring_n > PH_MARK_AHEAD)
    ph_mark_value(h, w, w->ring[i]);
  w->ring[i] = x;
}

static void mark_ring_flush(struct ph_heap *h, ph_worker *w) {
  unsigned n = w->ring_n < PH_MARK_AHEAD ? w->ring_n : PH_MARK_AHEAD;
  unsigned start = w->ring_n - n;
  w->ring_n = 0;
  for (unsigned k = 0; k < n; k++)
    ph_mark_value(h, w, w->ring[(start + k) & (PH_MARK_AHEAD - 1)]);
}

typedef ph_value ph_mark_vec __attribute__((vector_size(16)));

/* mark.scan.skip: do the n fields at f all hold immediates (odd words)?
 * The AND of the words is odd then; eight words per step in 16-byte lanes,
 * no branch per field. */
static inline int all_immediate(const ph_value *f, size_t n) {
  ph_mark_vec a = {~(ph_value)0, ~(ph_value)0}, b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    ph_mark_vec x, y, z, t;
    memcpy(&x, f + i, sizeof x);
    memcpy(&y, f + i + 2, sizeof y);
    memcpy(&z, f + i + 4, sizeof z);
    memcpy(&t, f + i + 6, sizeof t);
    a &= x;
    b &= y;
    c &= z;
    d &= t;
  }
  a &= b & c & d;
  ph_value r = a[0] & a[1];
  for (; i < n; i++)
    r &= f[i];
  return (int)(r & 1);
}

/* mark.scan.compact: a long range's fields that hold blocks are first
 * gathered without a branch on what a field holds (a big array mixing
 * immediates and pointers is not predictable), 64 at a time, then queued
 * (mark.prefetch).  Out of line: small blocks keep the plain loop. A group of
 * immediates only is skipped (mark.scan.skip). */
static __attribute__((noinline)) void scan_range(struct ph_heap *h,
                                                 ph_worker *w,
                                                 const ph_value *f, size_t from,
                                                 size_t to) {
  ph_value blocks[64];
  while (from < to) {
    size_t end = to - from > 64 ? from + 64 : to, n = 0;
    if (all_immediate(f + from, end - from)) {
      from = end;
      continue;
    }
    for (size_t i = from; i < end; i++) {
      ph_value x = f[i];
      blocks[n] = x;
      n += ph_is_block(x);
    }
    for (size_t k = 0; k < n; k++)
      mark_ahead(h, w, blocks[k]);
    from = end;
  }
}

/* Mark the fields [from, to) of v, pushing nothing for v itself. */
static inline void scan_fields(struct ph_heap *h, ph_worker *w, ph_value v,
                               size_t from, size_t to) {
  const ph_value *f = (const ph_value *)v;
  if (to - from > 32) {
    scan_range(h, w, f, from, to);
    return;
  }
  for (size_t i = from; i < to; i++) {
    ph_value x = f[i];
    if (ph_is_block(x))
      mark_ahead(h, w, x);
  }
}

static int share_range(ph_gc *s, ph_value v, size_t start, size_t end);

static inline __attribute__((always_inline)) void
scan_entry(struct ph_heap *h, ph_worker *w, ph_mark_entry e) {
  ph_gc *s = h->gc;
  size_t wo = e.end ? e.end : ph_hd_wosize(ph_hd_load(e.v));
  size_t end = wo - e.start > PH_MARK_SLICE ? e.start + PH_MARK_SLICE : wo;
  if (end < wo) {
    /* relaxed: a hint; a late read only delays sharing */
    if (s->nparts > 1 && wo - end >= 2 * PH_MARK_SLICE &&
        atomic_load_explicit(&s->hungry, memory_order_relaxed) > 0) {
      size_t mid = end + (wo - end) / 2;
      if (share_range(s, e.v, mid, wo))
        wo = mid;
    }
    push(s, &w->stack, e.v, end, wo);
  }
  scan_fields(h, w, e.v, e.start, end);
}

/* Put p on the shared list and wake one hungry participant. */
static void publish(ph_gc *s, ph_mark_packet *p) {
  pthread_mutex_lock(&s->mark_lock);
  p->next = s->shared;
  s->shared = p;
  /* release: for the spinners (mark.share.spin) */
  atomic_fetch_add_explicit(&s->mark_events, 1, memory_order_release);
  pthread_cond_signal(&s->mark_cond);
  pthread_mutex_unlock(&s->mark_lock);
}

/* Give the older half of our stack to the others (mark.share). */
static void share(ph_gc *s, ph_mark_stack *st) {
  size_t k = st->n / 2;
  ph_mark_packet *p = malloc(sizeof *p + k * sizeof(ph_mark_entry));
  if (!p)
    return;
  p->n = k;
  for (size_t i = 0; i < k; i++)
    p->e[i] = st->e[i];
  for (size_t i = k; i < st->n; i++)
    st->e[i - k] = st->e[i];
  st->n -= k;
  publish(s, p);
}

/* Give [start, end) of v's fields to the others (mark.share); 0 if no
 * packet could be had (the caller keeps the range). */
static int share_range(ph_gc *s, ph_value v, size_t start, size_t end) {
  ph_mark_packet *p = malloc(sizeof *p + sizeof(ph_mark_entry));
  if (!p)
    return 0;
  p->n = 1;
  p->e[0].v = v;
  p->e[0].start = start;
  p->e[0].end = end;
  publish(s, p);
  return 1;
}

static void take_packet_mark_locked(ph_gc *s, ph_mark_stack *st) {
  ph_mark_packet *p = s->shared;
  s->shared = p->next;
  for (size_t i = 0; i < p->n; i++)
    push(s, st, p->e[i].v, p->e[i].start, p->e[i].end);
  free(p);
}

/* mark.roots.bounded: scan our stack's newest entries until at most low
 * are left (sharing as drain_stw does); what they push is scanned too.  It
 * ends: every entry pushed is a block marked now or the rest of one. */
static void drain_to(struct ph_heap *h, ph_worker *w, size_t low) {
  ph_gc *s = h->gc;
  ph_mark_stack *st = &w->stack;
  while (st->n > low) {
    ph_mark_entry e = st->e[--st->n];
    scan_entry(h, w, e);
    /* relaxed: a hint; a late read only delays sharing */
    if (st->n > PH_SHARE_MIN && s->nparts > 1 &&
        atomic_load_explicit(&s->hungry, memory_order_relaxed) > 0)
      share(s, st);
  }
}

/* Drain our stack, sharing and taking work, until all participants are
 * idle with nothing shared. */
static void drain_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *s = h->gc;
  ph_mark_stack *st = &w->stack;
  for (;;) {
    while (st->n > 0 || w->ring_n > 0 || w->ephe_ring_n > 0) {
      if (st->n == 0) {
        if (w->ring_n > 0)
          mark_ring_flush(h, w);
        else
          ph_ephe_ring_flush(h, w); /* gc.weak.met.ahead */
        continue;
      }
      ph_mark_entry e = st->e[--st->n];
      scan_entry(h, w, e);
      /* relaxed: a hint; a late read only delays sharing */
      if (st->n > PH_SHARE_MIN && s->nparts > 1 &&
          atomic_load_explicit(&s->hungry, memory_order_relaxed) > 0)
        share(s, st);
    }
    pthread_mutex_lock(&s->mark_lock);
    for (;;) {
      if (s->shared) {
        take_packet_mark_locked(s, st);
        break;
      }
      if (s->mark_done) {
        pthread_mutex_unlock(&s->mark_lock);
        return;
      }
      s->idle++;
      if (s->idle == s->nparts) {
        s->mark_done = 1;
        atomic_fetch_add_explicit(&s->mark_events, 1, memory_order_release);
        pthread_cond_broadcast(&s->mark_cond);
        pthread_mutex_unlock(&s->mark_lock);
        return;
      }
      atomic_fetch_add_explicit(&s->hungry, 1, memory_order_relaxed);
      /* mark.share.spin: spin for a packet or the end before sleeping;
       * relaxed: mark_events changes only under mark_lock, held here */
      uint64_t ev = atomic_load_explicit(&s->mark_events, memory_order_relaxed);
      pthread_mutex_unlock(&s->mark_lock);
      ph_spin_wait(&s->mark_events, ev, s->nparts, &s->mark_spin_ns);
      pthread_mutex_lock(&s->mark_lock);
      if (atomic_load_explicit(&s->mark_events, memory_order_relaxed) == ev) {
        s->mark_slept++;
        pthread_cond_wait(&s->mark_cond, &s->mark_lock);
      }
      atomic_fetch_sub_explicit(&s->hungry, 1, memory_order_relaxed);
      s->idle--;
    }
    pthread_mutex_unlock(&s->mark_lock);
  }
}

/* mark.overflow: scan the fields of every black block again.  Fields are
 * scanned here, not the blocks pushed, so a round marks every white child
 * of a black block even if the stack overflows again: each round makes
 * progress and the rounds end.  A weak block is never scanned, an
 * ephemeron only once it is not pending (its data marked from a stack
 * entry that may have been dropped: gc.weak.met.ahead). */
static inline int rescan_fields(ph_value hd) {
  return ph_hd_tag(hd) < PH_TAG_RAW &&
         (ph_hd_color(hd) == PH_BLACK || ph_hd_ephe_resolved(hd));
}

static void rescan_unit(struct ph_heap *h, ph_chunk *c, uint32_t u, void *ctx) {
  ph_worker *w = ctx;
  uint8_t st = c->ustate[u];
  if (st == PH_U_POOL) {
    ph_pool *p = ph_pool_at(h, c, u);
    uint64_t holes = ph_pool_holes_any(h, c, u, p->cls);
    for (uint32_t i = 0; i < p->nslots; i++) {
      if (holes && ph_pool_slot_in_hole(h, c, u, p->cls, i))
        continue; /* heap.pool.holes */
      ph_value v = ph_pool_block(h, p, i);
      ph_value hd = ph_hd_load(v);
      if (rescan_fields(hd))
        scan_fields(h, w, v, 0, ph_hd_wosize(hd));
    }
  } else if (st == PH_U_LARGE) {
    ph_value v = (ph_value)(ph_unit_addr(h, c, u) + PH_LARGE_HDR + 8);
    ph_value hd = ph_hd_load(v);
    if (rescan_fields(hd))
      scan_fields(h, w, v, 0, ph_hd_wosize(hd));
  }
  if (w->stack.n > 0 || w->ring_n > 0 || w->ephe_ring_n > 0)
    drain_stw(h, w);
}

static void rescan_stw(struct ph_heap *h, ph_worker *w) {
  ph_units_each_stw(h, &h->gc->claim_rescan, 16, rescan_unit, w);
}

static void reset_termination_stw_single(ph_gc *s) {
  s->idle = 0;
  s->mark_done = 0;
  atomic_store_explicit(&s->claim_rescan, 0, memory_order_relaxed);
}

void ph_mark_finish_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *s = h->gc;
  drain_stw(h, w);
  for (;;) {
    ph_barrier_wait(&h->sync->stw.bar);
    /* relaxed: read after the barrier, which orders it */
    int over = atomic_load_explicit(&s->mark_overflow, memory_order_relaxed);
    if (!over)
      break;
    if (ph_barrier_wait(&h->sync->stw.bar)) {
      atomic_store_explicit(&s->mark_overflow, 0, memory_order_relaxed);
      reset_termination_stw_single(s);
    }
    ph_barrier_wait(&h->sync->stw.bar);
    rescan_stw(h, w);
    drain_stw(h, w);
  }
}

void ph_mark_stw(struct ph_heap *h, ph_worker *w) {
  ph_roots_scan_stw(h, ph_mark_slot_visit, w);
  /* the collector's own roots (gc.final, gc.pin): one participant; a
   * heap without any pays one test of a few counters */
  if (ph_gc_roots_any_stw(h) &&
      atomic_fetch_add_explicit(&h->gc->claim_groots, 1,
                                memory_order_relaxed) == 0)
    ph_gc_roots_visit_stw(h, ph_mark_slot_visit, w, 0);
  ph_mark_finish_stw(h, w);
  ph_ephe_rounds_stw(h, w); /* gc.weak.rounds; nothing without ephemerons */
}
