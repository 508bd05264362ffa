/* gc/census.c -- ph_census's count of pools and blocks per size class,
 * on the leader of its own section. */
#include "gc/gc.h"

#include <string.h>

void ph_census_stw_single(struct ph_heap *h, const ph_census_req *req) {
  ph_census_class rows[PH_MAX_CLASSES];
  memset(rows, 0, sizeof rows);
  for (unsigned c = 0; c < h->nclasses; c++) {
    rows[c].size_class = c;
    rows[c].block_words = h->class_wsize[c];
    rows[c].max_wosize = h->class_wsize[c] - 1;
  }
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = 0; u < ch->nunits; u++) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = ph_pool_at(h, ch, u);
      rows[p->cls].pools++;
      rows[p->cls].live_blocks += p->nlive;
      rows[p->cls].free_blocks += p->nfree;
      /* heap.pool.holes, in every unit of the pool */
      size_t hb = 0;
      for (uint32_t k = 0; k < h->class_units[p->cls]; k++)
        hb += (size_t)__builtin_popcountll(ch->holes[u + k]) << h->hole_shift;
      rows[p->cls].holed_pools += hb != 0;
      rows[p->cls].hole_blocks += p->nhole;
      rows[p->cls].committed_bytes +=
          ((size_t)h->class_units[p->cls] << h->pool_shift) - hb;
    }
  }
  for (unsigned c = 0; c < h->nclasses; c++)
    req->fn(&rows[c], req->user);
}
