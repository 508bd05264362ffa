/* heap/section.c -- the unit index space of a stop-the-world section
 * (DESIGN.md: barrier.stw.claim): global unit index -> (chunk, unit), so
 * participants can claim batches of units with one atomic counter. */
#include "heap/heap.h"

void ph_units_index_stw_single(struct ph_heap *h) {
  ph_section *s = &h->sec;
  size_t t = 0;
  for (unsigned i = 0; i < h->nchunks; i++) {
    s->unit_base[i] = t;
    /* a wholly free chunk holds nothing to sweep, rescan or update: it gets
     * no indices (ph_unit_at finds the last chunk starting at or below
     * an index, so it is never returned), and reserved but unused address
     * space costs a section nothing */
    if (h->chunks[i]->nfree < h->chunks[i]->nunits)
      t += h->chunks[i]->nunits;
  }
  s->unit_base[h->nchunks] = t;
  s->total_units = t;
}

void ph_unit_at(struct ph_heap *h, size_t gu, ph_chunk **c, uint32_t *u) {
  ph_section *s = &h->sec;
  unsigned lo = 0, hi = h->nchunks;
  while (hi - lo > 1) {
    unsigned mid = (lo + hi) / 2;
    if (s->unit_base[mid] <= gu)
      lo = mid;
    else
      hi = mid;
  }
  *c = h->chunks[lo];
  *u = (uint32_t)(gu - s->unit_base[lo]);
}

void ph_units_each_stw(struct ph_heap *h, _Atomic size_t *claim, size_t batch,
                       ph_unit_fn fn, void *ctx) {
  ph_section *s = &h->sec;
  for (;;) {
    /* relaxed: a claim only needs atomicity; what the units' work wrote is
     * published by the barrier that ends the phase */
    size_t g0 = atomic_fetch_add_explicit(claim, batch, memory_order_relaxed);
    if (g0 >= s->total_units)
      return;
    for (size_t g = g0; g < g0 + batch && g < s->total_units; g++) {
      ph_chunk *c;
      uint32_t u;
      ph_unit_at(h, g, &c, &u);
      fn(h, c, u, ctx);
    }
  }
}
