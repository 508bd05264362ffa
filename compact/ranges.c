/* compact/ranges.c -- compact.choose.ranges over plain records (see
 * compact/ranges.h and DESIGN.md).
 *
 * First every range holding a unit in use that is not a candidate pool (a
 * full pool, a large block) is taken: it stays anyway.  Then, greedily, the
 * range whose candidate pools cover the most of what the classes still lack
 * (min(pools of class c in it, k_c - pools of c taken so far), summed over
 * c, per unit of memory), the denser in live bytes on ties, then the lower,
 * until every class has k_c = ceil(live_c / slots_c) pools in taken ranges.
 * Gains only shrink as ranges are taken, so a range popped from a max-heap
 * whose recomputed gain has not shrunk is the best one (lazy greedy). */
#include "compact/ranges.h"

#include <stdlib.h>

typedef struct rgreedy {
  uint32_t *gain, *cost;
  uint64_t *live;
  size_t *heap, n;
} rgreedy;

static int rg_better(const rgreedy *g, size_t a, size_t b) {
  uint64_t x = (uint64_t)g->gain[a] * g->cost[b];
  uint64_t y = (uint64_t)g->gain[b] * g->cost[a];
  if (x != y)
    return x > y;
  x = g->live[a] * g->cost[b];
  y = g->live[b] * g->cost[a];
  if (x != y)
    return x > y;
  return a < b;
}

static void rg_down(rgreedy *g, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < g->n && rg_better(g, g->heap[l], g->heap[m]))
      m = l;
    if (l + 1 < g->n && rg_better(g, g->heap[l + 1], g->heap[m]))
      m = l + 1;
    if (m == i)
      return;
    size_t t = g->heap[i];
    g->heap[i] = g->heap[m];
    g->heap[m] = t;
    i = m;
  }
}

size_t ph_range_of(const struct ph_heap *h, const ph_ranges *r, const void *p) {
  unsigned lo = 0, hi = h->nchunks;
  while (hi - lo > 1) {
    unsigned mid = (lo + hi) / 2;
    if ((const char *)p >= h->chunks[mid]->base)
      lo = mid;
    else
      hi = mid;
  }
  const ph_chunk *c = h->chunks[lo];
  size_t u = (size_t)((const char *)p - c->base) >> h->pool_shift;
  return r->base[lo] + (c->huge != PH_OS_HUGE_NONE ? u >> r->shift : u);
}

void ph_ranges_free(ph_ranges *r) {
  ph_os_scratch_free(r->keep);
  ph_os_scratch_free(r->base);
  r->keep = NULL;
  r->base = NULL;
}

void ph_ranges_choose(const struct ph_heap *h, const ph_range_rec *rec,
                      size_t nc, ph_ranges *out) {
  out->keep = NULL;
  out->base = NULL;
  out->shift = 0;
  if (h->cfg.huge_pages == PH_HUGE_OFF || h->pool_size >= PH_HUGE_PAGE_SIZE ||
      h->nchunks == 0 || nc == 0)
    return;
  int huge = 0;
  for (unsigned i = 0; i < h->nchunks; i++)
    huge |= h->chunks[i]->huge != PH_OS_HUGE_NONE;
  if (!huge)
    return; /* every release range is one unit: the normal plan */
  unsigned rshift = 0;
  while (((size_t)1 << (h->pool_shift + rshift)) < PH_HUGE_PAGE_SIZE)
    rshift++;
  size_t nr = 0;
  size_t *rbase = ph_os_scratch_alloc((h->nchunks + 1) * sizeof *rbase);
  if (!rbase)
    return;
  for (unsigned i = 0; i < h->nchunks; i++) {
    const ph_chunk *c = h->chunks[i];
    rbase[i] = nr;
    nr += c->huge != PH_OS_HUGE_NONE
              ? ((size_t)c->nunits + ((size_t)1 << rshift) - 1) >> rshift
              : c->nunits;
  }
  rbase[h->nchunks] = nr;
  out->base = rbase;
  out->shift = rshift;
  uint32_t *used = ph_os_scratch_zalloc(nr, sizeof *used); /* units in use */
  uint32_t *start =
      ph_os_scratch_zalloc(nr + 1, sizeof *start); /* candidates by range */
  uint32_t *rid = ph_os_scratch_alloc(nc * sizeof *rid);
  uint16_t *rcls = ph_os_scratch_alloc(nc * sizeof *rcls);
  rgreedy g = {.gain = ph_os_scratch_zalloc(nr, sizeof *g.gain),
               .cost = ph_os_scratch_alloc(nr * sizeof *g.cost),
               .live = ph_os_scratch_zalloc(nr, sizeof *g.live),
               .heap = ph_os_scratch_alloc(nr * sizeof *g.heap)};
  uint8_t *keep = ph_os_scratch_zalloc(nr, 1);
  if (!used || !start || !rid || !rcls || !g.gain || !g.cost || !g.live ||
      !g.heap || !keep || nr > UINT32_MAX || nc > UINT32_MAX)
    goto out;
  for (unsigned i = 0; i < h->nchunks; i++) {
    const ph_chunk *c = h->chunks[i];
    unsigned sh = c->huge != PH_OS_HUGE_NONE ? rshift : 0;
    for (uint32_t u = 0; u < c->nunits; u++) {
      size_t r = rbase[i] + (u >> sh);
      g.cost[r] = (u & (((uint32_t)1 << sh) - 1)) + 1;
      used[r] += c->ustate[u] >= PH_U_POOL;
    }
  }
  uint64_t live_c[PH_MAX_CLASSES] = {0}, n_c[PH_MAX_CLASSES] = {0};
  uint64_t need[PH_MAX_CLASSES];
  for (size_t j = 0; j < nc; j++) {
    size_t r = ph_range_of(h, out, rec[j].pool);
    rid[j] = (uint32_t)r;
    start[r + 1]++;
    g.live[r] += (uint64_t)rec[j].nlive * h->class_wsize[rec[j].cls] * 8;
    live_c[rec[j].cls] += rec[j].nlive;
    n_c[rec[j].cls]++;
  }
  for (size_t r = 0; r < nr; r++)
    start[r + 1] += start[r];
  for (size_t j = 0; j < nc; j++)
    rcls[start[rid[j]]++] = rec[j].cls;
  for (size_t r = nr; r > 0; r--) /* start[r] was advanced to the end */
    start[r] = start[r - 1];
  start[0] = 0;
  unsigned unmet = 0;
  for (unsigned c = 0; c < h->nclasses; c++) {
    uint32_t ns = h->class_nslots[c];
    need[c] = (live_c[c] + ns - 1) / ns;
    if (need[c] > n_c[c])
      need[c] = n_c[c];
    unmet += need[c] > 0;
  }
  for (size_t r = 0; r < nr; r++) /* ranges that stay in use anyway */
    if (used[r] > start[r + 1] - start[r]) {
      keep[r] = 1;
      for (uint32_t e = start[r]; e < start[r + 1]; e++)
        if (need[rcls[e]] > 0 && --need[rcls[e]] == 0)
          unmet--;
    }
  uint32_t cnt[PH_MAX_CLASSES] = {0};
  for (size_t r = 0; r < nr; r++)
    if (!keep[r] && start[r + 1] > start[r]) {
      g.gain[r] = start[r + 1] - start[r]; /* an upper bound */
      g.heap[g.n++] = r;
    }
  for (size_t i = g.n / 2; i-- > 0;)
    rg_down(&g, i);
  while (unmet > 0 && g.n > 0) {
    size_t r = g.heap[0];
    uint32_t gain = 0;
    for (uint32_t e = start[r]; e < start[r + 1]; e++)
      gain += cnt[rcls[e]]++ < need[rcls[e]];
    for (uint32_t e = start[r]; e < start[r + 1]; e++)
      cnt[rcls[e]] = 0;
    if (gain < g.gain[r]) { /* shrank: back into the heap */
      g.gain[r] = gain;
      if (gain == 0)
        g.heap[0] = g.heap[--g.n];
      rg_down(&g, 0);
      continue;
    }
    keep[r] = 1;
    for (uint32_t e = start[r]; e < start[r + 1]; e++)
      if (need[rcls[e]] > 0 && --need[rcls[e]] == 0)
        unmet--;
    g.heap[0] = g.heap[--g.n];
    rg_down(&g, 0);
  }
  PH_ASSERT(unmet == 0); /* all ranges together hold every candidate */
  if (unmet == 0) {
    out->keep = keep;
    keep = NULL;
  }
out:
  ph_os_scratch_free(used);
  ph_os_scratch_free(start);
  ph_os_scratch_free(rid);
  ph_os_scratch_free(rcls);
  ph_os_scratch_free(g.gain);
  ph_os_scratch_free(g.cost);
  ph_os_scratch_free(g.live);
  ph_os_scratch_free(g.heap);
  ph_os_scratch_free(keep);
  if (!out->keep)
    ph_ranges_free(out);
}
