/* bench/frag_build.h -- the frag(N, D, K) shape built in poolheap, shared by
 * the benchmark (bench/compact.c) and the demo (demos/demo_frag.c).  Same
 * draws in the same order as bench/peers/frag_c.c, so the checksum for a
 * seed is every peer's.
 *
 * frag_build fills the root array held in *R (n fields, already allocated)
 * with n blocks and records which ones survive in kept_bits (n bits).  It
 * returns their number in *nkept, their bytes ((fields + 1) * 8 each) in
 * *live, and PH_OK, or the error of a failed ph_alloc.  progress(i, ctx) is
 * called after each block if not NULL.  It does not drop anything: the caller
 * sets the unkept slots to an immediate when it wants them dead. */
#ifndef PH_BENCH_FRAG_BUILD_H
#define PH_BENCH_FRAG_BUILD_H

#include "bench/peers/peer_common.h"

#include <poolheap.h>

/* The medium size mix of the M1 shape (issue 11): block bytes (header
 * included) log-uniform by octave over 2-64 KiB: one of the five octaves
 * 2-4, 4-8, ..., 32-64 KiB uniformly, then a size uniformly within it (mean
 * about 19 KiB).  Integer draws only, so any port reproduces it exactly. */
static inline unsigned frag_fields_medium(peer_rng *r) {
  uint64_t lo = (uint64_t)2048 << peer_uniform(r, 5);
  uint64_t bytes = lo + peer_uniform(r, lo);
  return (unsigned)(bytes / 8 - 1);
}

/* frag_build with the field counts drawn by fields (peer_fields: the frag
 * size mix; frag_fields_medium: M1's). */
static inline int
frag_build_mix(ph_domain *d, ph_value *R, size_t n, unsigned keep,
               peer_rng *rng, unsigned (*fields)(peer_rng *),
               uint8_t *kept_bits, size_t *nkept, uint64_t *live,
               void (*progress)(size_t i, void *ctx), void *ctx) {
  uint32_t *list[2];
  size_t cnt[2] = {0, 0};
  list[0] = peer_aux_alloc(n * sizeof(uint32_t));
  list[1] = peer_aux_alloc(n * sizeof(uint32_t));
  int err = PH_OK;
  *live = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned w = fields(rng);
    int kept = peer_uniform(rng, 1000) < (uint64_t)keep;
    ph_value b = ph_alloc(d, w, 0);
    if (!b) {
      err = ph_last_error(d);
      break;
    }
    ph_value r = *R; /* re-read: the allocation may have moved it */
    for (unsigned j = 0; j < w; j++) {
      if (peer_uniform(rng, 2) == 1 && cnt[kept] > 0) {
        uint32_t k = list[kept][peer_uniform(rng, cnt[kept])];
        ph_set_field(b, j, ph_field(r, k));
      } else {
        ph_set_field(b, j, ph_val_int((intptr_t)i));
      }
    }
    ph_set_field(r, i, b);
    list[kept][cnt[kept]++] = (uint32_t)i;
    if (kept) {
      kept_bits[i >> 3] |= (uint8_t)(1u << (i & 7));
      *live += (uint64_t)(w + 1) * sizeof(ph_value);
    }
    if (progress)
      progress(i, ctx);
  }
  *nkept = cnt[1];
  peer_aux_free(list[0], n * sizeof(uint32_t));
  peer_aux_free(list[1], n * sizeof(uint32_t));
  return err;
}

static inline int frag_build(ph_domain *d, ph_value *R, size_t n, unsigned keep,
                             peer_rng *rng, uint8_t *kept_bits, size_t *nkept,
                             uint64_t *live,
                             void (*progress)(size_t i, void *ctx), void *ctx) {
  return frag_build_mix(d, R, n, keep, rng, peer_fields, kept_bits, nkept, live,
                        progress, ctx);
}

/* The peers' checksum (frag_c.c), continued over one root array r of n
 * slots: every surviving block in root order, its field count, its
 * immediates and the field count of each pointed-to block.  Start from
 * PEER_HASH_INIT, mask the end result with PEER_HASH_MASK.  Nothing may
 * collect meanwhile. */
static inline uint64_t frag_checksum(uint64_t h, ph_value r, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ph_value v = ph_field(r, i);
    if (!ph_is_block(v))
      continue;
    size_t w = ph_wosize(v);
    h = peer_mix(h, w);
    for (size_t j = 0; j < w; j++) {
      ph_value f = ph_field(v, j);
      if (ph_is_block(f))
        h = peer_mix(h, ph_wosize(f));
      else
        h = peer_mix(h, (uint64_t)ph_int_val(f));
    }
  }
  return h;
}

#endif
