/* api/api.h -- heap creation and destruction, domains, allocation,
 * statistics, errors (DESIGN.md: api).
 *
 * Includes: every layer below (gc/ and through it the rest). */
#ifndef PH_API_API_H
#define PH_API_API_H

#include "gc/gc.h"

/* Detached handles kept before the oldest is recycled (heap.domain). */
#define PH_RETIRED_KEEP 64u

/* The api layer's state of a heap (h->api), under heap->lock except
 * retired_allocated. */
typedef struct ph_api {
  unsigned ndomains;         /* domains attached */
  struct ph_domain *retired; /* detached handles, oldest first (FIFO) */
  struct ph_domain *retired_tail;
  unsigned nretired;
  _Atomic uint64_t retired_allocated; /* allocated by detached domains */
} ph_api;

/* The api layer's state of a domain (d->api); its allocated counter stays
 * in struct ph_domain, where ph_alloc's fast path writes it (heap.state). */
typedef struct ph_domain_api {
  struct ph_domain *retired_next; /* heap's retired list after detach */
  struct ph_domain *thread_next;  /* owner: ph_tl_domains list */
} ph_domain_api;

/* A domain handle and the state of every layer, in one allocation (freed
 * through its first member). */
typedef struct ph_domain_all {
  struct ph_domain d;
  ph_domain_sync sync;
  ph_domain_roots roots;
  ph_domain_api api;
} ph_domain_all;

/* api/alloc.c */
ph_value ph_large_alloc(struct ph_domain *d, size_t wosize, unsigned tag);

#endif
