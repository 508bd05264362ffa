/* gc/gc.h -- the managed collector: the collection sequence, marking,
 * sweep policy, pacing, automatic compaction, verify, census (DESIGN.md:
 * gc).
 *
 * Includes: roots/, compact/ (and below). */
#ifndef PH_GC_GC_H
#define PH_GC_GC_H

#include "compact/compact.h"
#include "roots/roots.h"

typedef struct ph_mark_entry {
  ph_value v;   /* block */
  size_t start; /* first field still to scan */
  size_t end;   /* one past the last field to scan; 0: the whole block */
} ph_mark_entry;

typedef struct ph_mark_stack {
  ph_mark_entry *e;
  size_t n, cap;
} ph_mark_stack;

/* Shared packets of mark work (mark.share). */
typedef struct ph_mark_packet {
  struct ph_mark_packet *next;
  size_t n;
  ph_mark_entry e[];
} ph_mark_packet;

/* One participant's collector state in a section; its pool-layer state
 * (what it marked live, swept, recorded, moved) is h->sec.pw[id]. */
typedef struct ph_worker {
  unsigned id; /* participant index 0..nparts-1 */
  struct ph_domain *dom;
  ph_pool_worker *pw; /* &h->sec.pw[id] */
  ph_mark_stack stack;
#define PH_MARK_AHEAD 16 /* mark.prefetch ring, a power of two */
  ph_value ring[PH_MARK_AHEAD];
  unsigned ring_n; /* values queued (only the last PH_MARK_AHEAD kept) */
  uint64_t live_bytes, live_blocks; /* marked; then handed to pw */
  uint64_t t_mark, t_sweep;
} ph_worker;

typedef struct ph_census_req {
  void (*fn)(const ph_census_class *c, void *user);
  void *user;
} ph_census_req;

/* What a ph_verify or ph_census caller asks of the section it leads. */
typedef struct ph_gc_req {
  char *why;
  size_t why_size;
  ph_census_req census;
} ph_gc_req;

/* The collector's state of a heap (h->gc).  Written by participants,
 * ordered by the section's barriers, unless marked. */
typedef struct ph_gc {
  ph_worker *workers; /* one per possible participant */
  unsigned nparts;    /* participants of the current section */
  int do_compact;     /* leader decides after the sweep (auto compaction) */
  _Atomic size_t claim_rescan; /* mark.overflow: units of the rescan */
  /* mark termination (mark.share) */
  pthread_mutex_t mark_lock;
  pthread_cond_t mark_cond;
  ph_mark_packet *shared;    /* (mark_lock) */
  unsigned idle;             /* (mark_lock) */
  int mark_done;             /* (mark_lock) */
  _Atomic unsigned hungry;   /* participants waiting for work */
  _Atomic int mark_overflow; /* a stack could not grow: rescan needed */
} ph_gc;

/* gc/collect.c: ph_stw_run with the collector's sequence as the body. */
int ph_gc_run(struct ph_domain *d, int kind, const ph_gc_req *req);

/* gc/mark.c (heap.mark) */
void ph_mark_stw(struct ph_heap *h, ph_worker *w);
void ph_mark_value(struct ph_heap *h, ph_worker *w, ph_value v);
void ph_mark_slot_visit(ph_value *slot, void *ctx);
void ph_mark_stack_free(ph_mark_stack *s);

/* gc/verify.c */
int ph_verify_stw_single(struct ph_heap *h, char *why, size_t why_size);
/* gc/census.c */
void ph_census_stw_single(struct ph_heap *h, const ph_census_req *req);

#endif
