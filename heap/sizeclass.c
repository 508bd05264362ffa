/* heap/sizeclass.c -- size classes computed at heap creation
 * (DESIGN.md: heap.sizeclass).
 *
 * The rule, in slot words w (header included):
 *   w_0 = 2 (one field);
 *   w_{k+1} = max(w_k + 1, floor(w_k * 8 / 7)), while w_{k+1} <= wmax;
 *   the last class is wmax itself,
 * where wmax = min(PH_MAX_SMALL_WSIZE, (pool words - pool header words) / 8)
 * (the pool header includes the live bitmap, heap.pool.bitmap)
 * so that every pool holds at least 8 slots.  A request of s words goes to
 * the smallest class >= s, wasting less than 1/8 of its slot: either the
 * classes are consecutive (no waste) or w_{k+1} <= 8 w_k / 7, so
 * (w_{k+1} - s) / w_{k+1} < (w_{k+1} - w_k) / w_{k+1} <= 1/8.
 * Blocks of more than wmax - 1 fields are large blocks. */
#include "heap/heap.h"

int ph_sizeclass_init(struct ph_heap *h) {
  /* heap.pool.bitmap: one bit for each possible slot (2 words at least) */
  size_t bits = (h->pool_size - PH_POOL_HDR) / 16;
  h->pool_hdr = PH_POOL_HDR + ((bits + 511) / 512) * 64;
  size_t pool_words = (h->pool_size - h->pool_hdr) / 8;
  size_t wmax = pool_words / 8;
  if (wmax > PH_MAX_SMALL_WSIZE)
    wmax = PH_MAX_SMALL_WSIZE;
  unsigned n = 0;
  size_t w = 2;
  while (w < wmax && n < PH_MAX_CLASSES - 1) {
    h->class_wsize[n++] = (uint32_t)w;
    size_t next = w * 8 / 7;
    w = next > w + 1 ? next : w + 1;
  }
  h->class_wsize[n++] = (uint32_t)wmax;
  h->nclasses = n;
  h->max_small_wosize = wmax - 1;
  unsigned c = 0;
  for (size_t wo = 0; wo <= h->max_small_wosize; wo++) {
    while (h->class_wsize[c] < wo + 1)
      c++;
    h->wosize_class[wo] = (uint8_t)c;
  }
  for (unsigned k = 0; k < n; k++)
    h->class_nslots[k] = (uint32_t)(pool_words / h->class_wsize[k]);
  return PH_OK;
}
