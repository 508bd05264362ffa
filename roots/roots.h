/* roots/roots.h -- handle scopes, global roots, the scan hook (DESIGN.md:
 * roots).
 *
 * Includes: barrier/ (and below) only. */
#ifndef PH_ROOTS_ROOTS_H
#define PH_ROOTS_ROOTS_H

#include "barrier/barrier.h"

/* roots.stack: segments that never move, so ph_root's slots stay put. */
#define PH_ROOTSEG_SLOTS 1022
typedef struct ph_rootseg {
  struct ph_rootseg *prev;
  size_t used;
  ph_value slot[PH_ROOTSEG_SLOTS];
} ph_rootseg;
/* roots.mark: an open scope, its mark and the depth to pop back to. */
typedef struct ph_scope_rec {
  size_t mark;
  size_t depth;
} ph_scope_rec;

/* The roots layer's state of a domain (d->roots; roots.stack): written by
 * the owner, read and updated by stop-the-world participants. */
typedef struct ph_domain_roots {
  ph_rootseg *segs;     /* innermost segment, linked by prev */
  size_t depth;         /* slots pushed in all segments */
  ph_scope_rec *scopes; /* open scopes, innermost last */
  size_t nscopes, scopes_cap;
  uint64_t scope_serial; /* scopes opened so far (roots.mark) */
} ph_domain_roots;

/* The roots layer's state of a heap (h->roots). */
typedef struct ph_roots {
  /* roots.global: open-addressing set of slots, guarded by roots_lock. */
  pthread_mutex_t roots_lock;
  ph_value **groots;
  size_t groots_cap, groots_n; /* n: live entries */
  size_t groots_used;          /* live entries + tombstones */
  /* root items of a section (item 0 the global set, 1+i slot i), claimed
   * by every root pass: reset by ph_roots_rewind_stw_single before each */
  _Atomic size_t claim_items;
} ph_roots;

/* roots/roots.c */
void ph_roots_global_fini(struct ph_heap *h);
/* Make every root item claimable again (before a pass of the section). */
void ph_roots_rewind_stw_single(struct ph_heap *h);
/* Visit every root: participants claim root items until none is left. */
void ph_roots_scan_stw(struct ph_heap *h, ph_visit_fn visit, void *ctx);
/* The same, calling done(ctx) at the end of each root item: for the global
 * set before roots_lock is released (roots.global.done), so a visitor that
 * defers its work on slots finishes it while the slots are still roots. */
void ph_roots_scan_done_stw(struct ph_heap *h, ph_visit_fn visit,
                            void (*done)(void *ctx), void *ctx);
void ph_roots_domain_init(struct ph_domain *d);
void ph_roots_domain_fini(struct ph_domain *d);
void ph_roots_visit_domain(struct ph_heap *h, unsigned slot, ph_visit_fn visit,
                           void *ctx);
void ph_roots_visit_global(struct ph_heap *h, ph_visit_fn visit,
                           void (*done)(void *ctx), void *ctx);

#endif
