/* heap/sizeclass.c -- size classes computed at heap creation
 * (DESIGN.md: heap.sizeclass).
 *
 * The rule, in slot words w (header included):
 *   w_0 = 2 (one field);
 *   w_{k+1} = max(w_k + 1, floor(w_k * 8 / 7)), while w_{k+1} <= wmax;
 *   the last class is wmax itself,
 * where wmax = min(PH_MAX_SMALL_WSIZE, (pool words - pool header words) / 8)
 * (the pool header includes the live bitmap, heap.pool.bitmap; the rule
 * takes the largest one, pool_hdr_max, a bitmap for 2-word slots)
 * so that every pool holds at least 8 slots.  Each class then has its own
 * header, a bitmap for its own slots (heap.pool.hdr: ph_pool_layout).
 * A request of s words goes to the smallest class >= s, wasting less than
 * 1/8 of its slot: either the classes are consecutive (no waste) or
 * w_{k+1} <= 8 w_k / 7, so
 * (w_{k+1} - s) / w_{k+1} < (w_{k+1} - w_k) / w_{k+1} <= 1/8.
 * Blocks of more than wmax - 1 fields go to the medium classes
 * (heap.sizeclass.medium, below), blocks above the top medium class are
 * large blocks. */
#include "heap/heap.h"

/* heap.pool.bitmap: the fixed header and a live bitmap of `bits` bits, in
 * 64-byte lines. */
static size_t hdr_for(size_t bits) {
  return PH_POOL_HDR + (bits + 511) / 512 * 64;
}

/* heap.pool.hdr: the most slots of sb bytes that fit in `bytes` after the
 * fixed header and a bitmap of that many bits. */
uint32_t ph_pool_layout(size_t bytes, size_t sb, uint32_t *hdr_out) {
  size_t n = (bytes - PH_POOL_HDR) / sb, hdr;
  while ((hdr = hdr_for(n)) + n * sb > bytes)
    n--; /* ends: n = 0 needs PH_POOL_HDR bytes only */
  *hdr_out = (uint32_t)hdr;
  return (uint32_t)n;
}

int ph_sizeclass_init(struct ph_heap *h) {
  /* heap.pool.bitmap: one bit for each possible slot (2 words at least) */
  h->pool_hdr_max = hdr_for((h->pool_size - PH_POOL_HDR) / 16);
  /* heap.pool.holes: at most 64 granules of at least a page per pool */
  size_t g = ph_os_page_size();
  if (g < h->pool_size / 64)
    g = h->pool_size / 64;
  h->hole_shift = (unsigned)__builtin_ctzl(g);
  size_t pool_words = (h->pool_size - h->pool_hdr_max) / 8;
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
  for (unsigned k = 0; k < n; k++) {
    h->class_nslots[k] = ph_pool_layout(
        h->pool_size, (size_t)h->class_wsize[k] * 8, &h->class_hdr[k]);
    h->class_units[k] = 1;
  }
  h->nsmall = n;
  ph_medium_class m[PH_MAX_CLASSES];
  unsigned nm = ph_sizeclass_medium(h->pool_size, wmax, m, PH_MAX_CLASSES - n);
  if (nm > PH_MAX_CLASSES - n)
    return PH_EINVAL; /* cannot happen for a pool size the config accepts */
  for (unsigned k = 0; k < nm; k++, n++) {
    h->class_wsize[n] = m[k].wsize;
    h->class_nslots[n] = m[k].nslots;
    h->class_units[n] = m[k].units;
    h->class_hdr[n] = m[k].hdr;
  }
  h->nclasses = n;
  h->max_small_wosize = PH_MEDIUM_TOP_WSIZE - 1;
  unsigned c = 0;
  for (size_t wo = 0; wo <= h->max_small_wosize; wo++) {
    while (h->class_wsize[c] < wo + 1)
      c++;
    h->wosize_class[wo] = (uint8_t)c;
  }
  return PH_OK;
}

/* heap.sizeclass.medium: the medium classes continue the small ones with
 * the same rule from the last small class (wmax) up to
 * PH_MEDIUM_TOP_WSIZE words, which is the last medium class itself, so no
 * request from 1 field to the top wastes 1/8 of its slot or more.  A
 * medium pool is the fewest whole units that hold at least 8 slots after
 * the pool header (the same fixed header as a small pool's, and a live
 * bitmap for its slots: heap.pool.hdr).  Written to out (at most max
 * classes); returns how many there are.  ph_sizeclass_init appends them to
 * the heap's class tables. */
unsigned ph_sizeclass_medium(size_t pool_size, size_t wmax_small,
                             ph_medium_class *out, unsigned max) {
  unsigned n = 0;
  size_t w =
      wmax_small * 8 / 7 > wmax_small + 1 ? wmax_small * 8 / 7 : wmax_small + 1;
  for (;;) {
    size_t cw = w < PH_MEDIUM_TOP_WSIZE ? w : PH_MEDIUM_TOP_WSIZE;
    size_t slot = cw * 8;
    size_t units = (PH_POOL_HDR + 8 * slot + pool_size - 1) / pool_size;
    uint32_t hdr, ns;
    while ((ns = ph_pool_layout(units * pool_size, slot, &hdr)) < 8)
      units++;
    if (n < max) {
      out[n].wsize = (uint32_t)cw;
      out[n].units = (uint32_t)units;
      out[n].nslots = ns;
      out[n].hdr = hdr;
    }
    n++;
    if (cw == PH_MEDIUM_TOP_WSIZE)
      return n;
    size_t next = w * 8 / 7;
    w = next > w + 1 ? next : w + 1;
  }
}
