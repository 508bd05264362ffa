/* roots/roots.c -- the three kinds of roots (DESIGN.md: roots.*).
 *
 * roots.stack: each domain's handle scopes.  Slots live in segments that
 *   never move, so the pointer ph_root returns stays valid until its scope
 *   closes.  The three calls are refused (PH_ESTATE) inside a blocking
 *   section, where other domains scan and update the stack.
 * roots.mark: a scope mark is (scopes opened by the domain << 10 | domain
 *   index), unique for the domain's lifetime; the depth to pop back to is
 *   kept beside it.  Closing anything but the innermost open scope is
 *   PH_ESTATE, which catches a double close, out-of-order closes and a stale
 *   mark of a scope closed earlier.
 * roots.global: slots registered by the embedder, an open-addressing set
 *   guarded by roots_lock (callable from any thread).  roots.global.done:
 *   a pass over the set ends (the compactor's deferred slot fixes included)
 *   before roots_lock is released, so once ph_root_remove returns the slot
 *   is never read or written again.
 * roots.hook: cfg.scan_roots, called for every attached domain.
 *
 * Inside a section, root work is claimed item by item with claim_roots:
 * item 0 is the global set, item 1+i is domain slot i (its stack and the
 * hook), so blocking domains' roots are scanned by whoever claims them. */
#include "roots/roots.h"

#include <stdlib.h>

#define TOMB ((ph_value *)1)

void ph_roots_domain_init(struct ph_domain *d) {
  d->roots->segs = NULL;
  d->roots->depth = 0;
  d->roots->scopes = NULL;
  d->roots->nscopes = d->roots->scopes_cap = 0;
  d->roots->scope_serial = 0;
}

/* barrier.blocking: while the domain is blocking, other domains' sections
 * scan and update its stack, so the owner may not change it.  state is
 * written only by the owner (under heap->lock), so the owner reads it
 * without the lock. */
static int stack_usable(struct ph_domain *d) {
  if (d->state == PH_DS_RUNNING)
    return 1;
  d->last_error = PH_ESTATE;
  return 0;
}

void ph_roots_domain_fini(struct ph_domain *d) {
  for (ph_rootseg *s = d->roots->segs, *p; s; s = p) {
    p = s->prev;
    free(s);
  }
  d->roots->segs = NULL;
  d->roots->depth = 0;
  free(d->roots->scopes);
  d->roots->scopes = NULL;
  d->roots->nscopes = d->roots->scopes_cap = 0;
}

size_t ph_scope_open(ph_domain *d) {
  if (ph_domain_enter(d) != PH_OK || !stack_usable(d))
    return (size_t)-1;
  if (d->roots->nscopes == d->roots->scopes_cap) {
    size_t ncap = d->roots->scopes_cap ? d->roots->scopes_cap * 2 : 16;
    ph_scope_rec *n = realloc(d->roots->scopes, ncap * sizeof *n);
    if (!n) {
      d->last_error = PH_ENOMEM;
      return (size_t)-1;
    }
    d->roots->scopes = n;
    d->roots->scopes_cap = ncap;
  }
  /* roots.mark: 54 bits of serial never wrap; never 0 or (size_t)-1 */
  size_t mark = (size_t)(++d->roots->scope_serial << 10) | (d->index & 1023u);
  d->roots->scopes[d->roots->nscopes++] = (ph_scope_rec){mark, d->roots->depth};
  return mark;
}

ph_value *ph_root(ph_domain *d, ph_value v) {
  if (ph_domain_enter(d) != PH_OK || !stack_usable(d))
    return NULL;
  ph_rootseg *s = d->roots->segs;
  if (!s || s->used == PH_ROOTSEG_SLOTS) {
    ph_rootseg *n = malloc(sizeof *n);
    if (!n) {
      d->last_error = PH_ENOMEM;
      return NULL;
    }
    n->prev = s;
    n->used = 0;
    /* Publish the segment only once it is consistent: a section may scan
     * this stack only while we are stopped, so plain stores suffice. */
    d->roots->segs = s = n;
  }
  ph_value *slot = &s->slot[s->used++];
  *slot = v;
  d->roots->depth++;
  return slot;
}

int ph_scope_close(ph_domain *d, size_t mark) {
  int err = ph_domain_enter(d);
  if (err != PH_OK)
    return err;
  if (!stack_usable(d))
    return PH_ESTATE;
  if (d->roots->nscopes == 0 ||
      d->roots->scopes[d->roots->nscopes - 1].mark != mark) {
    d->last_error = PH_ESTATE;
    return PH_ESTATE;
  }
  size_t depth = d->roots->scopes[--d->roots->nscopes].depth;
  while (d->roots->depth > depth) {
    ph_rootseg *s = d->roots->segs;
    size_t drop = d->roots->depth - depth;
    if (drop < s->used) {
      s->used -= drop;
      d->roots->depth = depth;
      break;
    }
    d->roots->depth -= s->used;
    d->roots->segs = s->prev;
    free(s);
  }
  return PH_OK;
}

void ph_roots_visit_domain(struct ph_heap *h, unsigned slot, ph_visit_fn visit,
                           void *ctx) {
  struct ph_domain *d = h->slots[slot].dom;
  if (!d)
    return;
  for (ph_rootseg *s = d->roots->segs; s; s = s->prev)
    for (size_t i = 0; i < s->used; i++)
      visit(&s->slot[i], ctx);
  if (h->cfg.scan_roots)
    h->cfg.scan_roots(d, visit, ctx, h->cfg.scan_roots_user);
}

/* ---------------------------------------------------------- global set */

static size_t hash_slot(ph_value *p, size_t cap) {
  uintptr_t x = (uintptr_t)p >> 3;
  x *= 0x9e3779b97f4a7c15ull;
  return (size_t)(x >> 17) & (cap - 1);
}

static int set_insert_roots_locked(ph_value ***tab, size_t *cap,
                                   ph_value *slot) {
  size_t m = *cap - 1, i = hash_slot(slot, *cap);
  ph_value **t = *tab;
  size_t tomb = SIZE_MAX;
  for (;; i = (i + 1) & m) {
    if (t[i] == slot)
      return PH_EINVAL;
    if (t[i] == TOMB && tomb == SIZE_MAX)
      tomb = i;
    if (t[i] == NULL)
      break;
  }
  t[tomb != SIZE_MAX ? tomb : i] = slot;
  return PH_OK;
}

static int grow_roots_locked(struct ph_heap *h) {
  size_t ncap = h->roots->groots_cap ? h->roots->groots_cap * 2 : 64;
  if (h->roots->groots_n * 2 < h->roots->groots_cap)
    ncap =
        h->roots->groots_cap; /* mostly tombstones: rehash at the same size */
  ph_value **n = calloc(ncap, sizeof *n);
  if (!n)
    return PH_ENOMEM;
  for (size_t i = 0; i < h->roots->groots_cap; i++)
    if (h->roots->groots[i] && h->roots->groots[i] != TOMB)
      set_insert_roots_locked(&n, &ncap, h->roots->groots[i]);
  free(h->roots->groots);
  h->roots->groots = n;
  h->roots->groots_cap = ncap;
  h->roots->groots_used = h->roots->groots_n;
  return PH_OK;
}

int ph_root_add(ph_heap *h, ph_value *slot) {
  if (!slot || ((uintptr_t)slot & 7) || !ph_heap_is_live(h))
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  pthread_mutex_lock(&h->roots->roots_lock);
  int err = PH_OK;
  if ((h->roots->groots_used + 1) * 10 >= h->roots->groots_cap * 7)
    err = grow_roots_locked(h);
  if (err == PH_OK) {
    size_t m = h->roots->groots_cap - 1,
           i = hash_slot(slot, h->roots->groots_cap);
    for (;; i = (i + 1) & m) {
      if (h->roots->groots[i] == slot) {
        err = PH_EINVAL;
        break;
      }
      if (h->roots->groots[i] == NULL)
        break;
    }
    if (err == PH_OK) {
      err = set_insert_roots_locked(&h->roots->groots, &h->roots->groots_cap,
                                    slot);
      if (err == PH_OK) {
        h->roots->groots_n++;
        h->roots->groots_used++;
      }
    }
  }
  pthread_mutex_unlock(&h->roots->roots_lock);
  return err;
}

int ph_root_remove(ph_heap *h, ph_value *slot) {
  if (!slot || !ph_heap_is_live(h))
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  int err = PH_EINVAL;
  pthread_mutex_lock(&h->roots->roots_lock);
  if (h->roots->groots_cap) {
    size_t m = h->roots->groots_cap - 1,
           i = hash_slot(slot, h->roots->groots_cap);
    for (; h->roots->groots[i] != NULL; i = (i + 1) & m)
      if (h->roots->groots[i] == slot) {
        h->roots->groots[i] = TOMB;
        h->roots->groots_n--;
        err = PH_OK;
        break;
      }
  }
  pthread_mutex_unlock(&h->roots->roots_lock);
  return err;
}

void ph_roots_visit_global(struct ph_heap *h, ph_visit_fn visit,
                           void (*done)(void *ctx), void *ctx) {
  pthread_mutex_lock(&h->roots->roots_lock);
  for (size_t i = 0; i < h->roots->groots_cap; i++)
    if (h->roots->groots[i] && h->roots->groots[i] != TOMB)
      visit(h->roots->groots[i], ctx);
  if (done) /* roots.global.done: still under the lock */
    done(ctx);
  pthread_mutex_unlock(&h->roots->roots_lock);
}

void ph_roots_global_fini(struct ph_heap *h) {
  free(h->roots->groots);
  h->roots->groots = NULL;
  h->roots->groots_cap = h->roots->groots_n = h->roots->groots_used = 0;
}

void ph_roots_rewind_stw_single(struct ph_heap *h) {
  atomic_store_explicit(&h->roots->claim_items, 0, memory_order_relaxed);
}

/* Claim root items until none is left (see the header comment); done (if
 * not NULL) ends each item. */
void ph_roots_scan_done_stw(struct ph_heap *h, ph_visit_fn visit,
                            void (*done)(void *ctx), void *ctx) {
  size_t nitems = 1 + (size_t)h->cfg.max_domains;
  for (;;) {
    /* relaxed: the claim only needs atomicity */
    size_t i = atomic_fetch_add_explicit(&h->roots->claim_items, 1,
                                         memory_order_relaxed);
    if (i >= nitems)
      break;
    if (i == 0) {
      ph_roots_visit_global(h, visit, done, ctx);
    } else {
      ph_roots_visit_domain(h, (unsigned)(i - 1), visit, ctx);
      if (done)
        done(ctx);
    }
  }
}

void ph_roots_scan_stw(struct ph_heap *h, ph_visit_fn visit, void *ctx) {
  ph_roots_scan_done_stw(h, visit, NULL, ctx);
}
