/* bench/peers/med_common.h -- the medium-block allocation sequence (issue 11)
 * shared by poolheap's bench/medtput.c and the malloc peers'
 * bench/peers/med_tput.c, so that every system runs the same sequence for a
 * seed and ends with the same checksum.
 *
 * A mix names the block sizes (block bytes = 8 (fields + 1), the header word
 * included, as poolheap counts them): "log" draws them log-uniformly from
 * 2 KiB to 256 KiB (the medium range of DESIGN.md's heap.sizeclass.medium;
 * mean about 52 KiB); "3k", "40k" and "200k" are fixed sizes.
 *
 * Every allocation also gets a fate: MED_SURVIVE_PERMILLE of them survive
 * into an "old" ring of slots (each replaces, and so drops, the oldest
 * survivor: it lives for about ring / 5% further allocations), the others
 * go into a "young" ring of MED_YOUNG slots (they die MED_YOUNG
 * allocations later).  The old ring holds about MED_OLD_BYTES of blocks, so
 * the live heap stays near 16 MiB per thread whatever the mix.  Half the
 * blocks (drawn) are raw bytes, half scanned (fields set to the immediate
 * 0 as poolheap's ph_alloc does; raw blocks are zeroed, as calloc does). */
#ifndef PH_BENCH_MED_COMMON_H
#define PH_BENCH_MED_COMMON_H

#include "peer_common.h"

#include <math.h>

#define MED_YOUNG 16
#define MED_SURVIVE_PERMILLE 50
#define MED_OLD_BYTES ((size_t)16 << 20)
#define MED_MAX_FIELDS 32767u /* a 256 KiB block: the top medium class */

enum { MED_FATE_SURVIVE = 1, MED_FATE_RAW = 2 };

typedef struct med_plan {
  uint32_t *w; /* field count of each block */
  uint8_t *fate;
  size_t n;       /* blocks */
  size_t ring;    /* old-ring slots */
  uint64_t bytes; /* sum of 8 (w + 1) */
} med_plan;

/* The options every medium-throughput program takes (--mix, --threads,
 * --bytes, --seed). */
typedef struct med_args {
  const char *mix;
  int threads;
  long long bytes;
  uint64_t seed;
} med_args;

static inline void med_args_init(med_args *a) {
  *a = (med_args){.mix = "log",
                  .threads = 1,
                  .bytes = 4LL << 30,
                  .seed = peer_default_seed()};
}

/* Take option k with value v if it is one of med_args'; 0 if not. */
static inline int med_arg(med_args *a, const char *k, const char *v) {
  if (strcmp(k, "--mix") == 0)
    a->mix = v;
  else if (strcmp(k, "--threads") == 0)
    a->threads = atoi(v);
  else if (strcmp(k, "--bytes") == 0)
    a->bytes = peer_parse_size(v);
  else if (strcmp(k, "--seed") == 0)
    a->seed = strtoull(v, NULL, 0);
  else
    return 0;
  return 1;
}

static inline double med_mean_bytes(const char *mix);

/* Are the options usable (1 or 2 threads, a known mix, at least 1 MiB)? */
static inline int med_args_ok(const med_args *a) {
  return a->threads >= 1 && a->threads <= 2 && med_mean_bytes(a->mix) != 0 &&
         a->bytes >= (1 << 20);
}

/* Mean block bytes of a mix (0 for an unknown mix name). */
static inline double med_mean_bytes(const char *mix) {
  if (strcmp(mix, "log") == 0)
    return (262144.0 - 2048.0) / log(128.0);
  if (strcmp(mix, "3k") == 0)
    return 3072.0;
  if (strcmp(mix, "40k") == 0)
    return 40960.0;
  if (strcmp(mix, "200k") == 0)
    return 204800.0;
  return 0;
}

/* Field count of one block of the mix. */
static inline uint32_t med_fields(const char *mix, peer_rng *r) {
  double bytes;
  if (mix[0] == 'l') {
    double u = (double)(peer_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    bytes = 2048.0 * exp2(7.0 * u);
  } else {
    bytes = med_mean_bytes(mix);
  }
  uint64_t w = (uint64_t)ceil(bytes / 8.0) - 1;
  return w > MED_MAX_FIELDS ? MED_MAX_FIELDS : (uint32_t)w;
}

/* The plan of thread t: n blocks drawn from seed (outside the timed part). */
static inline void med_plan_make(med_plan *p, const char *mix, size_t n,
                                 uint64_t seed, unsigned t) {
  peer_rng r = peer_rng_for(seed, t);
  p->n = n;
  p->w = peer_aux_alloc(n * sizeof *p->w);
  p->fate = peer_aux_alloc(n);
  p->bytes = 0;
  for (size_t i = 0; i < n; i++) {
    p->w[i] = med_fields(mix, &r);
    p->fate[i] = (uint8_t)((peer_uniform(&r, 1000) < MED_SURVIVE_PERMILLE
                                ? MED_FATE_SURVIVE
                                : 0) |
                           (peer_uniform(&r, 2) ? MED_FATE_RAW : 0));
    p->bytes += 8 * ((uint64_t)p->w[i] + 1);
  }
  size_t ring = (size_t)((double)MED_OLD_BYTES / med_mean_bytes(mix));
  p->ring = ring < 1 ? 1 : ring;
}

static inline void med_plan_free(med_plan *p) {
  peer_aux_free(p->w, p->n * sizeof *p->w);
  peer_aux_free(p->fate, p->n);
}

/* Block id of allocation i of thread t (field 0 / word 1 of the block). */
static inline uint64_t med_id(unsigned t, size_t i) {
  return ((uint64_t)t << 40) | (uint64_t)i;
}

/* The checksum folds, over the old ring in slot order, each survivor's
 * field count and id. */
static inline uint64_t med_mix(uint64_t h, uint64_t w, uint64_t id) {
  return peer_mix(peer_mix(h, w), id);
}

#endif
