/* heap/sweep.c -- parallel sweep (DESIGN.md: heap.sweep).
 *
 * Participants claim batches of units from the section's unit index space.
 * For a pool (heap.sweep.pool, the per-pool sweep the pool layer uses too):
 * every BLACK block becomes WHITE, is counted live and gets its bit in the
 * pool's live bitmap (heap.pool.bitmap); every other slot becomes a free
 * slot (header 0); the free list is rebuilt in address order and nlive/nfree
 * recounted (compaction's stats tables come from these counts: no second
 * pass over memory).  A pool with free slots is pushed
 * on its owner's avail list and recorded for the compactor (ph_cand); an empty
 * pool, and every unmarked large block, is handed to
 * ph_sweep_finish_stw_single, which frees their units under heap->lock.
 * The managed sweep also zeroes the blocks that ask for it (heap.sweep.zero).
 */
#include "heap/heap.h"

#include <stdlib.h>
#include <string.h>

#define PH_SWEEP_AHEAD 2048 /* heap.sweep.stream: prefetch distance, bytes */

/* Append to a worker's record array, growing it; on failure the records are
 * incomplete and the compactor must not plan from them.  malloc'd, not the
 * OS layer's scratch (os.scratch.gone): they live from a collection's sweep
 * to the next compaction or sweep, outside any section, and a scratch array
 * of a page or more would be a kernel mapping held between collections. */
static void *grow(ph_pool_worker *w, void *arr, size_t *cap, size_t elem) {
  size_t ncap = *cap ? *cap * 2 : 256;
  void *n = realloc(arr, ncap * elem);
  if (!n) {
    w->records_lost = 1;
    return NULL;
  }
  *cap = ncap;
  return n;
}

static void record_cand(ph_pool_worker *w, ph_pool *p) {
  if (w->ncands == w->cands_cap) {
    ph_cand *n = grow(w, w->cands, &w->cands_cap, sizeof *n);
    if (!n)
      return;
    w->cands = n;
  }
  w->cands[w->ncands++] = (ph_cand){p, p->nlive, p->cls, (uint16_t)p->owner};
}

void ph_sweep_records_free(ph_pool_worker *w) {
  free(w->cands);
  free(w->larges);
  w->cands = NULL;
  w->larges = NULL;
  w->ncands = w->cands_cap = w->nlarges = w->larges_cap = 0;
}

static void record_large(ph_pool_worker *w, ph_large *l) {
  if (w->nlarges == w->larges_cap) {
    ph_large **n = grow(w, w->larges, &w->larges_cap, sizeof *n);
    if (!n)
      return;
    w->larges = n;
  }
  w->larges[w->nlarges++] = l;
}

/* heap.sweep.zero: a surviving block that asks for it (the managed
 * collector's pending ephemerons, gc.weak.pending) has its fields zeroed
 * while the sweep has its line; returns its header without the request. */
static inline ph_value sweep_zero(ph_value *hp, ph_value hd, uint64_t *n) {
  size_t wo = ph_hd_wosize(hd);
  /* relaxed stores (plain moves): not a call to memset, which a loop of
   * plain stores becomes, for an ephemeron's two or three fields */
  for (size_t k = 1; k <= wo; k++)
    __atomic_store_n(&hp[k], 0, __ATOMIC_RELAXED);
  ++*n;
  return hd & ~(ph_value)2;
}

/* heap.sweep.pool: the one per-pool sweep of both clients, specialised by
 * its constant arguments.  by_mark (the managed collector): a block is live
 * iff its color is `color` (BLACK), and its header is made WHITE again;
 * else (the pool layer): a block is garbage iff its color is `color` (the
 * embedder's garbage color), on_free sees it first, and live headers are
 * not written (live_mask: colors allowed for them, *bad set otherwise).
 * Every other slot becomes free (header 0, pools.header); the free list is
 * rebuilt in address order, nlive and nfree recounted, the live bitmap
 * written (heap.pool.bitmap) if set_bits, live_words if count_words.
 * Headers are read and written with relaxed atomics: in the pool layer,
 * markers of other threads may be setting colors meanwhile. */
static inline __attribute__((always_inline)) void
pool_sweep(struct ph_heap *h, ph_pool *p, int by_mark, unsigned color,
           unsigned live_mask, int set_bits, int count_words,
           void (*on_free)(void *ctx, ph_value b), const uint64_t *on_free_tags,
           void *ctx, int *bad, uint64_t *zeroed) {
  uint32_t wsize = h->class_wsize[p->cls];
  ph_value *s = (ph_value *)ph_pool_slots(h, p);
  uint64_t *bits = ph_pool_bits(p);
  /* heap.pool.holes (of every unit of a medium pool) */
  uint64_t holes = ph_pool_holes_any(h, p->chunk, p->unit, p->cls);
  uint32_t live = 0;
  uint64_t word = 0, words = 0;
  if (!by_mark && set_bits) {
    /* heap.sweep.clean: the pool layer's free list and live bits are exact
     * between sweeps (pools.bits), so a pool without a block of the garbage
     * colour keeps both: one pass that reads only the headers of the
     * allocated slots (found from the bits), and the full pass below only
     * for a pool with garbage */
    uint32_t nw = (p->nslots + 63) / 64, wi = 0;
    int dirty = 0;
    for (; wi < nw && !dirty; wi++) {
      uint64_t w = bits[wi];
      while (w) {
        uint32_t i = wi * 64 + (uint32_t)__builtin_ctzll(w);
        w &= w - 1;
        ph_value hd = __atomic_load_n(s + (size_t)i * wsize, __ATOMIC_RELAXED);
        PH_ASSERT(hd != 0);
        if (ph_hd_color(hd) == color) {
          dirty = 1; /* garbage: the full pass */
          break;
        }
        if (live_mask && !(live_mask >> ph_hd_color(hd) & 1))
          *bad = 1;
#if PH_DEBUG
        live++;
        words += ph_hd_wosize(hd) + 1;
#endif
      }
    }
    if (!dirty) {
      /* nothing freed: nlive, nfree and live_words are exact between
       * sweeps in the layer (pools.bits, pools.counters) and stay */
      PH_ASSERT(live == p->nlive && p->nfree == p->nslots - p->nhole - live);
      PH_ASSERT(!count_words || words == p->live_words);
      return;
    }
    live = 0;
    words = 0;
  }
  /* heap.sweep.stream: in address order, the free list appended at its
   * tail, with the slots PH_SWEEP_AHEAD bytes ahead asked for (they will be
   * written): the pass is a stream through the pool's memory */
  ph_value *tail = &p->free;
  ph_value *slot = s;
  /* pools.sweep: the tags whose dying blocks on_free sees (every tag
   * without on_free_tags, none without on_free), so that a dying block
   * costs one bit test (the managed sweep, by_mark, has no on_free) */
  uint64_t calls[4];
  for (int k = 0; k < 4; k++)
    calls[k] = !on_free ? 0 : on_free_tags ? on_free_tags[k] : ~(uint64_t)0;
  /* by bitmap word: 64 slots, then their word of live bits */
  for (uint32_t i0 = 0; i0 < p->nslots; i0 += 64) {
    uint32_t m = p->nslots - i0 < 64 ? p->nslots - i0 : 64;
    word = 0;
    for (uint32_t j = 0; j < m; j++, slot += wsize) {
      /* a prefetch past the pool's end does not fault */
      __builtin_prefetch((char *)slot + PH_SWEEP_AHEAD, 1);
      if (__builtin_expect(holes != 0, 0) && ph_pool_slot_holed(h, p, i0 + j))
        continue; /* heap.pool.holes: neither live nor free, and not
                   * touched (a prefetch of a decommitted page does not
                   * fault it in) */
      ph_value hd = __atomic_load_n(slot, __ATOMIC_RELAXED);
      /* by mark: the mark bit only; the collector's other colour bit stays
       * (heap.block.header) */
      int keep = by_mark ? (ph_hd_color(hd) & color) != 0
                         : hd != 0 && ph_hd_color(hd) != color;
      if (keep) {
        if (by_mark) {
          /* heap.block.watch: cleared with the mark bit */
          ph_value nh =
              hd & ~(((ph_value)color << PH_HD_COLOR_SHIFT) | PH_HD_WATCH);
          if (__builtin_expect((nh & PH_HD_SWEEP_ZERO) == PH_HD_SWEEP_ZERO, 0))
            nh = sweep_zero(slot, nh, zeroed);
          __atomic_store_n(slot, nh, __ATOMIC_RELAXED);
        } else if (live_mask && !(live_mask >> ph_hd_color(hd) & 1))
          *bad = 1;
        live++;
        if (count_words)
          words += ph_hd_wosize(hd) + 1;
        word |= (uint64_t)1 << j;
      } else {
        if (hd != 0) { /* it dies now */
          /* pools.sweep: with on_free_tags only the blocks of those tags
           * cost a call */
          unsigned tag = ph_hd_tag(hd);
          if (!by_mark && calls[tag / 64] >> (tag % 64) & 1)
            on_free(ctx, (ph_value)(slot + 1));
#if PH_POISON
          for (uint32_t k = 2; k < wsize; k++)
            slot[k] = PH_POISON_WORD;
#endif
          __atomic_store_n(slot, 0, __ATOMIC_RELAXED);
        }
        *tail = (ph_value)(slot + 1);
        tail = slot + 1;
      }
    }
    if (set_bits) /* a bitmap word is done */
      bits[i0 >> 6] = word;
  }
  *tail = 0;
  p->nlive = live;
  p->nfree = p->nslots - p->nhole - live;
  if (count_words)
    p->live_words = (uint32_t)words;
}

/* heap.sweep.branchless: the managed collector's sweep of a pool without
 * holes (the common case), the same result as pool_sweep's by_mark pass,
 * in a loop without a branch on the slot's fate: a survivor's header gets
 * its mark bit cleared, any other slot the header 0 (a free slot's is 0
 * already; its line is written anyway, its field 0 links the free list);
 * the free list's tail is written at every slot and moves only past a free
 * one, so the link a survivor got is overwritten by the next free slot's
 * (or by the final 0).  The live bits are built 64 slots at a time. */
static void pool_sweep_marked(struct ph_heap *h, ph_pool *p, uint64_t *zeroed) {
  const size_t ws = h->class_wsize[p->cls];
  ph_value *slot = (ph_value *)ph_pool_slots(h, p);
  uint64_t *bits = ph_pool_bits(p);
  const uint32_t n = p->nslots;
  const ph_value black = (ph_value)PH_BLACK << PH_HD_COLOR_SHIFT;
  /* heap.sweep.stream: a medium slot is longer than PH_SWEEP_AHEAD (the
   * prefetch would land inside the slot being swept): two slots ahead */
  const size_t ahead =
      2 * ws * 8 > PH_SWEEP_AHEAD ? 2 * ws * 8 : PH_SWEEP_AHEAD;
  ph_value *tail = &p->free;
  uint32_t live = 0;
  for (uint32_t base = 0; base < n; base += 64) {
    uint32_t m = n - base < 64 ? n - base : 64;
    uint64_t word = 0;
    for (uint32_t k = 0; k < m; k++, slot += ws) {
      /* heap.sweep.stream; a prefetch past the pool's end does not fault */
      __builtin_prefetch((char *)slot + ahead, 1);
      ph_value hd = __atomic_load_n(slot, __ATOMIC_RELAXED);
      ph_value keep = (hd & black) >> PH_HD_COLOR_SHIFT; /* 0 or 1 */
#if PH_POISON
      if (!keep && hd != 0)
        for (size_t f = 2; f < ws; f++)
          slot[f] = PH_POISON_WORD;
#endif
      /* heap.block.watch: cleared with the mark bit */
      ph_value nh = (hd & ~(black | PH_HD_WATCH)) & ((ph_value)0 - keep);
      if (__builtin_expect((nh & PH_HD_SWEEP_ZERO) == PH_HD_SWEEP_ZERO, 0))
        nh = sweep_zero(slot, nh, zeroed);
      __atomic_store_n(slot, nh, __ATOMIC_RELAXED);
      *tail = (ph_value)(slot + 1);
      tail = keep ? tail : slot + 1;
      word |= keep << k;
      live += (uint32_t)keep;
    }
    bits[base >> 6] = word;
  }
  *tail = 0;
  PH_ASSERT(p->nhole == 0);
  p->nlive = live;
  p->nfree = n - live;
}

void ph_pool_sweep_garbage(struct ph_heap *h, ph_pool *p, unsigned garbage,
                           unsigned live_mask, int set_bits,
                           void (*on_free)(void *ctx, ph_value b),
                           const uint64_t *on_free_tags, void *ctx, int *bad) {
  /* specialised: the owners' sweep (live_mask 0, bits) checks no colour
   * per live block */
  if (set_bits && !live_mask)
    pool_sweep(h, p, 0, garbage, 0, 1, 1, on_free, on_free_tags, ctx, bad,
               NULL);
  else if (set_bits)
    pool_sweep(h, p, 0, garbage, live_mask, 1, 1, on_free, on_free_tags, ctx,
               bad, NULL);
  else
    pool_sweep(h, p, 0, garbage, live_mask, 0, 1, on_free, on_free_tags, ctx,
               bad, NULL);
}

static void sweep_pool(struct ph_heap *h, ph_pool_worker *w, ph_pool *p) {
  if (ph_pool_holes_any(h, p->chunk, p->unit, p->cls) == 0)
    pool_sweep_marked(h, p, &w->zeroed); /* heap.sweep.branchless */
  else
    pool_sweep(h, p, 1, PH_BLACK, 0, 1, 0, NULL, NULL, NULL, NULL, &w->zeroed);
  uint32_t live = p->nlive;
  p->cached = 0;
  p->evacuated = 0;
  if (live == 0) {
    p->next = w->empty_pools;
    w->empty_pools = p;
  } else if (p->nfree > 0) {
    ph_pool_push_avail(h, p);
    w->frag_bytes += (uint64_t)p->nfree * h->class_wsize[p->cls] * 8;
    record_cand(w, p);
  } else if (p->nhole > 0) {
    record_cand(w, p); /* full but with holes: to be evacuated whole */
  }
}

static void sweep_large(struct ph_heap *h, ph_pool_worker *w, ph_large *l) {
  (void)h;
  ph_value *hp = (ph_value *)((char *)l + PH_LARGE_HDR);
  if (ph_hd_color(*hp) & PH_BLACK) {
    ph_value nh =
        *hp & ~(((ph_value)PH_BLACK << PH_HD_COLOR_SHIFT) | PH_HD_WATCH);
    if ((nh & PH_HD_SWEEP_ZERO) == PH_HD_SWEEP_ZERO)
      nh = sweep_zero(hp, nh, &w->zeroed);
    *hp = nh;
    if (ph_hd_tag(*hp) < PH_TAG_RAW)
      record_large(w, l);
    return;
  }
  l->dead_next = w->dead_large;
  w->dead_large = l;
}

static void sweep_unit(struct ph_heap *h, ph_chunk *c, uint32_t u, void *ctx) {
  uint8_t st = c->ustate[u];
  if (st == PH_U_POOL)
    sweep_pool(h, ctx, ph_pool_at(h, c, u));
  else if (st == PH_U_LARGE)
    sweep_large(h, ctx, (ph_large *)ph_unit_addr(h, c, u));
}

void ph_sweep_stw(struct ph_heap *h, ph_pool_worker *w) {
  w->zeroed = 0;
  w->empty_pools = NULL;
  w->dead_large = NULL;
  w->frag_bytes = 0;
  w->ncands = 0;
  w->nlarges = 0;
  w->records_lost = 0;
  ph_units_each_stw(h, &h->sec.claim_sweep, 8, sweep_unit, w);
}

/* Free what the sweep found dead, under heap->lock (the lock keeps the
 * chunk tables consistent with ph_stats_get, which may run meanwhile). */
void ph_sweep_finish_stw_single(struct ph_heap *h) {
  ph_section *s = &h->sec;
  pthread_mutex_lock(&h->lock);
  uint64_t live = 0, blocks = 0;
  for (unsigned i = 0; i < s->nparts; i++) {
    ph_pool_worker *w = &s->pw[i];
    live += w->live_bytes;
    blocks += w->live_blocks;
    for (ph_pool *p = w->empty_pools, *n; p; p = n) {
      n = p->next;
      ph_pool_free_locked(h, p);
    }
    w->empty_pools = NULL;
    for (ph_large *l = w->dead_large, *n; l; l = n) {
      n = l->dead_next;
      ph_large_free_locked(h, l); /* refused: stays, swept again next time */
    }
    w->dead_large = NULL;
  }
  h->st.live_bytes = live;
  h->st.live_blocks = blocks;
  pthread_mutex_unlock(&h->lock);
}
