/* compact/ranges.h -- compact.choose.ranges over plain records, for the
 * compactors of both clients of the units (DESIGN.md: compact.choose.ranges).
 *
 * With huge pages the release gives back only whole 2 MiB ranges; a range
 * is 2 MiB of a huge chunk, or one unit of any other chunk.  Given the
 * partly filled pools (address, class, live count), ph_ranges_choose picks
 * the ranges that stay in use; each class then keeps its k densest pools
 * among them (ph_range_of tells a pool's range), and every other range
 * holds only evacuated pools and is released whole. */
#ifndef PH_COMPACT_RANGES_H
#define PH_COMPACT_RANGES_H

#include "heap/heap.h"

typedef struct ph_ranges {
  uint8_t *keep;  /* keep[r]: range r stays in use; NULL: the normal plan */
  size_t *base;   /* range of chunk i's first unit: base[i] */
  unsigned shift; /* units per range in huge chunks: 1 << shift */
} ph_ranges;

typedef struct ph_range_rec {
  const void *pool;
  uint32_t nlive;
  uint16_t cls;
} ph_range_rec;

/* Choose (single thread, units stable).  Leaves r->keep NULL (the normal
 * plan) when ranges do not matter (huge pages off, pools of 2 MiB or more,
 * no huge chunk, no record) or memory is short. */
void ph_ranges_choose(const struct ph_heap *h, const ph_range_rec *rec,
                      size_t n, ph_ranges *r);
size_t ph_range_of(const struct ph_heap *h, const ph_ranges *r, const void *p);
void ph_ranges_free(ph_ranges *r);

#endif
