/* api/api.h -- heap creation and destruction, domains, allocation,
 * statistics, errors (DESIGN.md: api).
 *
 * Includes: every layer below (gc/ and through it the rest). */
#ifndef PH_API_API_H
#define PH_API_API_H

#include "gc/gc.h"

/* Detached handles kept before the oldest is recycled (heap.domain). */
#define PH_RETIRED_KEEP 64u

/* api/alloc.c */
ph_value ph_large_alloc(struct ph_domain *d, size_t wosize, unsigned tag);

#endif
