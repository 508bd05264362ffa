/* gc/final.c -- finalisers (DESIGN.md: gc.final) and the collector's own
 * roots: the values of finalisers due to run and the pinned blocks
 * (gc.pin, gc/pin.c).
 *
 * Registrations (ph_finalise) sit in one table; a collection flags the ones
 * whose value it found unreachable (FIRST: after the ephemeron fixpoint and
 * the weak clearing, before any resurrection; LAST: after the values of the
 * FIRST ones were marked again) and the leader moves them, after the sweep,
 * to the ready queue of the registering domain's slot (or to the orphans'
 * queue once that domain detached).  A ready FIRST entry holds its value as
 * a root until it has run.  Finalisers run outside stop-the-world sections
 * on their domain's thread: at an allocation slow path, after a safepoint
 * that joined a section, when ph_collect or ph_compact returns, or in
 * ph_run_finalisers.
 *
 * Outside sections the table and queues are guarded by final_lock; inside
 * one only participants touch them (mutators are stopped, and blocking
 * domains are refused), each its share of the table, the leader the
 * queues. */
#include "gc/gc.h"

#include <stdlib.h>
#include <string.h>

#define PH_FINAL_BATCH 64

int ph_final_init(struct ph_heap *h) {
  ph_gc *g = h->gc;
  unsigned n = h->cfg.max_domains + 1;
  g->ready = calloc(n, sizeof *g->ready);
  g->nready = calloc(n, sizeof *g->nready);
  g->fin_running = calloc(h->cfg.max_domains, 1);
  if (!g->ready || !g->nready || !g->fin_running)
    return PH_ENOMEM;
  pthread_mutex_init(&g->final_lock, NULL);
  pthread_mutex_init(&g->pin_lock, NULL);
  g->final_inited = 1;
  return PH_OK;
}

void ph_final_fini(struct ph_heap *h) {
  ph_gc *g = h->gc;
  if (g->ready)
    for (unsigned i = 0; i <= h->cfg.max_domains; i++)
      free(g->ready[i].e);
  free(g->ready);
  free((void *)g->nready);
  free(g->fin_running);
  free(g->regs);
  free(g->pins);
  free(g->pinned_pools);
  free(g->pinned_blocks);
  if (g->final_inited) {
    pthread_mutex_destroy(&g->final_lock);
    pthread_mutex_destroy(&g->pin_lock);
  }
}

/* Is v the address of field 0 of an allocated block of h?  (heap->lock
 * held: the chunk table and unit states change under it.)
 * gc.pin: nothing of the pool header is read (another domain may be
 * writing it: a pool is opened under the lock and written after it): the
 * class comes from the chunk's ucls, written under the lock, the slot
 * area and count from the heap's tables.  The one word read from pool
 * memory is the slot header, which for a bogus v another domain may be
 * writing right now (a slot it allocates into, a fresh pool's free list):
 * a relaxed atomic load, as its writers (ph_alloc, ph_pool_init_free) store
 * it, so the race is benign and TSan-clean.  The value read is a hint: a
 * valid v was allocated before it was passed in, so its header is stable
 * and nonzero; for a slot being allocated either answer is right at some
 * moment of the call, and the caller then works under its own lock. */
int ph_gc_block_check_locked(struct ph_heap *h, ph_value v) {
  if (!ph_is_block(v) || (v & 7))
    return 0;
  ph_chunk *c = ph_chunk_find(h, (void *)v);
  if (!c)
    return 0;
  uint32_t u = (uint32_t)((size_t)((char *)v - c->base) >> h->pool_shift);
  u = ph_unit_head(c, u); /* heap.unit.lookup: a medium pool's tail unit */
  char *ua = ph_unit_addr(h, c, u);
  if (c->ustate[u] == PH_U_LARGE)
    return (char *)v == ua + PH_LARGE_HDR + 8;
  if (c->ustate[u] != PH_U_POOL)
    return 0;
  unsigned cls = c->ucls[u];
  if (cls >= h->nclasses)
    return 0;
  size_t sb = (size_t)h->class_wsize[cls] * 8;
  char *slots =
      ua + h->class_hdr[cls]; /* ph_pool_slots(p), without reading p */
  if ((char *)v < slots + 8)
    return 0;
  size_t off = (size_t)((char *)v - 8 - slots);
  if (off % sb || off / sb >= h->class_nslots[cls])
    return 0;
  if (ph_pool_slot_in_hole(h, c, u, cls, (uint32_t)(off / sb)))
    return 0; /* heap.pool.holes: no block, and not to be touched */
  /* a free slot's header is 0, even in a pool cached by its owner */
  return __atomic_load_n(ph_hp(v), __ATOMIC_RELAXED) != 0;
}

/* The checks ph_finalise, ph_pin and ph_unpin start with: the domain (its
 * owner, running, outside callbacks), then v a block of its heap. */
int ph_gc_value_enter(ph_domain *d, ph_value v) {
  int err = ph_domain_enter(d);
  if (err != PH_OK)
    return err;
  if (d->state != PH_DS_RUNNING) {
    d->last_error = PH_ESTATE;
    return PH_ESTATE;
  }
  struct ph_heap *h = d->heap;
  pthread_mutex_lock(&h->lock);
  int ok = ph_gc_block_check_locked(h, v);
  pthread_mutex_unlock(&h->lock);
  if (!ok) {
    d->last_error = PH_EINVAL;
    return PH_EINVAL;
  }
  return PH_OK;
}

/* Grow q to hold at least need entries (doubling, from 64); 0 if it
 * cannot (malloc refused, or the fault op injected). */
static int fq_grow(ph_fqueue *q, size_t need, unsigned op) {
  size_t ncap = q->cap ? q->cap : 64;
  while (ncap < need)
    ncap *= 2;
  ph_final *e = ph_gc_fault(op) ? NULL : realloc(q->e, ncap * sizeof *e);
  if (!e)
    return 0;
  q->e = e;
  q->cap = ncap;
  return 1;
}

/* gc.final.reserve: the orphans' queue holds room for every registration
 * and every ready entry (need = nregs + nqueued): whatever a detaching
 * domain hands over, or a collection queues for the orphans, fits without
 * growing it (fq_push slides the live part down first), so none is lost.
 * 0: it could not grow (final_lock held). */
static int orphans_reserve(ph_gc *g, ph_fqueue *q, size_t need) {
  (void)g;
  return need <= q->cap || fq_grow(q, need, PH_GC_OP_FINAL);
}

int ph_finalise(ph_domain *d, ph_value v, ph_final_fn fn, void *user,
                ph_final_when when) {
  int err = ph_gc_value_enter(d, v);
  if (err != PH_OK)
    return err;
  if (!fn || (when != PH_FINAL_FIRST && when != PH_FINAL_LAST)) {
    d->last_error = PH_EINVAL;
    return PH_EINVAL;
  }
  ph_gc *g = d->heap->gc;
  unsigned orphan = d->heap->cfg.max_domains;
  pthread_mutex_lock(&g->final_lock);
  /* gc.final.reserve: room for this entry in the orphans' queue first */
  if (!orphans_reserve(g, &g->ready[orphan], g->nregs + g->nqueued + 1)) {
    pthread_mutex_unlock(&g->final_lock);
    d->last_error = PH_ENOMEM;
    return PH_ENOMEM;
  }
  if (g->nregs == g->regs_cap) {
    size_t ncap = g->regs_cap ? g->regs_cap * 2 : 64;
    ph_final *e =
        ph_gc_fault(PH_GC_OP_FINAL) ? NULL : realloc(g->regs, ncap * sizeof *e);
    if (!e) {
      pthread_mutex_unlock(&g->final_lock);
      d->last_error = PH_ENOMEM;
      return PH_ENOMEM;
    }
    g->regs = e;
    g->regs_cap = ncap;
  }
  g->regs[g->nregs++] = (ph_final){.v = v,
                                   .fn = fn,
                                   .user = user,
                                   .slot = d->index,
                                   .when = (uint8_t)when,
                                   .due = 0};
  pthread_mutex_unlock(&g->final_lock);
  return PH_OK;
}

/* -------------------------------------------------- inside a collection */

/* The collector's roots: ready values and pinned blocks for marking, and
 * for compaction's update also the registered values (they are live then:
 * the dead ones went to the queues) -- pinned blocks do not move. */
void ph_gc_roots_visit_stw(struct ph_heap *h, ph_visit_fn visit, void *ctx,
                           int update) {
  ph_gc *g = h->gc;
  for (unsigned i = 0; i <= h->cfg.max_domains; i++) {
    ph_fqueue *q = &g->ready[i];
    for (size_t k = q->head; k < q->n; k++)
      visit(&q->e[k].v, ctx);
  }
  if (update) {
    for (size_t k = 0; k < g->nregs; k++)
      visit(&g->regs[k].v, ctx);
  } else {
    for (size_t k = 0; k < g->pins_cap; k++)
      if (g->pins[k].v > PH_PIN_TOMB)
        visit(&g->pins[k].v, ctx);
  }
}

int ph_gc_roots_any_stw(struct ph_heap *h) {
  ph_gc *g = h->gc;
  if (g->nregs || atomic_load_explicit(&g->npins, memory_order_relaxed))
    return 1;
  for (unsigned i = 0; i <= h->cfg.max_domains; i++)
    /* relaxed: written outside sections, before the section began */
    if (atomic_load_explicit(&g->nready[i], memory_order_relaxed))
      return 1;
  return 0;
}

static inline int unmarked(ph_value v) {
  return !(ph_hd_load(v) & PH_HD_BLACK);
}

void ph_final_flag_stw(struct ph_heap *h, ph_worker *w, unsigned when) {
  ph_gc *g = h->gc;
  for (size_t k = w->id; k < g->nregs; k += g->nparts) {
    ph_final *f = &g->regs[k];
    /* a due one (left by a queue that could not grow) is due already;
     * a LAST one then has no value any more */
    if (f->when == when && !f->due && unmarked(f->v))
      f->due = 1;
  }
}

void ph_final_mark_due_stw(struct ph_heap *h, ph_worker *w) {
  ph_gc *g = h->gc;
  for (size_t k = w->id; k < g->nregs; k += g->nparts) {
    ph_final *f = &g->regs[k];
    if (f->due)
      ph_mark_value(h, w, f->v);
  }
}

static int fq_push(ph_fqueue *q, const ph_final *f) {
  if (q->n == q->cap) {
    if (q->head > 0) { /* slide the live part down first */
      memmove(q->e, q->e + q->head, (q->n - q->head) * sizeof *q->e);
      q->n -= q->head;
      q->head = 0;
    }
    if (q->n == q->cap && !fq_grow(q, q->cap + 1, PH_GC_OP_QUEUE))
      return 0;
  }
  q->e[q->n++] = *f;
  return 1;
}

/* Leader, after the sweep: due registrations go to the ready queues (a
 * LAST one without its value).  One that cannot be queued (malloc refused)
 * stays registered and due, and is queued by a later collection: a FIRST
 * one keeps its value (marked as due, so kept alive); a LAST one forgets
 * its value, which the sweep may have freed. */
void ph_final_queue_stw_single(struct ph_heap *h) {
  ph_gc *g = h->gc;
  size_t j = 0;
  for (size_t k = 0; k < g->nregs; k++) {
    ph_final f = g->regs[k];
    if (f.due) {
      if (f.when == PH_FINAL_LAST)
        f.v = 0;
      ph_final r = f;
      r.due = 0;
      ph_fqueue *q = &g->ready[r.slot];
      if (fq_push(q, &r)) {
        atomic_fetch_add_explicit(&g->nready[r.slot], 1, memory_order_relaxed);
        g->nqueued++;
        continue;
      }
      /* stays due: queued by a later collection */
    }
    g->regs[j++] = f;
  }
  g->nregs = j;
}

/* ------------------------------------------------------------- running */

/* heap.domain: d detaches (heap->lock held, no section pending): what it
 * registered and what is ready for it goes to the orphans. */
void ph_final_detach_locked(struct ph_heap *h, unsigned slot) {
  ph_gc *g = h->gc;
  unsigned orphan = h->cfg.max_domains;
  pthread_mutex_lock(&g->final_lock);
  for (size_t k = 0; k < g->nregs; k++)
    if (g->regs[k].slot == slot)
      g->regs[k].slot = orphan;
  ph_fqueue *q = &g->ready[slot];
  for (size_t k = q->head; k < q->n; k++) {
    q->e[k].slot = orphan;
    /* cannot fail: room was reserved (gc.final.reserve) */
    int ok = fq_push(&g->ready[orphan], &q->e[k]);
    PH_ASSERT(ok);
    (void)ok;
    atomic_fetch_add_explicit(&g->nready[orphan], 1, memory_order_relaxed);
  }
  atomic_store_explicit(&g->nready[slot], 0, memory_order_relaxed);
  q->head = q->n = 0;
  /* a domain that detached from inside one of its finalisers must not
   * leave the slot's next domain unable to run any */
  g->fin_running[slot] = 0;
  pthread_mutex_unlock(&g->final_lock);
}

/* Take up to PH_FINAL_BATCH entries from the head of queue i into out,
 * rooting each value in d's scope (a FIRST value stays alive while it
 * runs).  Returns how many. */
static size_t take_batch(ph_domain *d, unsigned i, ph_final *out,
                         ph_value **slots, int *nomem) {
  ph_gc *g = d->heap->gc;
  size_t n = 0;
  pthread_mutex_lock(&g->final_lock);
  ph_fqueue *q = &g->ready[i];
  while (n < PH_FINAL_BATCH && q->head < q->n) {
    ph_value *s = ph_root(d, q->e[q->head].v);
    if (!s) { /* the root stack cannot grow: run what we have */
      *nomem = 1;
      break;
    }
    slots[n] = s;
    out[n++] = q->e[q->head++];
  }
  if (q->head == q->n)
    q->head = q->n = 0;
  g->nqueued -= n;
  atomic_fetch_sub_explicit(&g->nready[i], n, memory_order_relaxed);
  pthread_mutex_unlock(&g->final_lock);
  return n;
}

static int run_all(ph_domain *d) {
  struct ph_heap *h = d->heap;
  ph_gc *g = h->gc;
  if (g->fin_running[d->index])
    return PH_OK; /* from inside a finaliser: the outer run goes on */
  g->fin_running[d->index] = 1;
  ph_final batch[PH_FINAL_BATCH];
  ph_value *slots[PH_FINAL_BATCH];
  unsigned qs[2] = {d->index, h->cfg.max_domains};
  int err = PH_OK;
  for (int k = 0; k < 2; k++) {
    for (;;) {
      /* relaxed: a hint; the queue is read under final_lock */
      if (atomic_load_explicit(&g->nready[qs[k]], memory_order_relaxed) == 0)
        break;
      size_t mark = ph_scope_open(d);
      if (mark == (size_t)-1) {
        err = PH_ENOMEM;
        break;
      }
      int nomem = 0;
      size_t n = take_batch(d, qs[k], batch, slots, &nomem);
      for (size_t i = 0; i < n; i++)
        batch[i].fn(d, *slots[i], batch[i].user);
      ph_scope_close(d, mark);
      if (n) {
        pthread_mutex_lock(&h->lock);
        h->st.finalisers_run += n;
        pthread_mutex_unlock(&h->lock);
      }
      if (nomem)
        err = PH_ENOMEM;
      if (n == 0)
        break;
    }
  }
  g->fin_running[d->index] = 0;
  return err;
}

int ph_run_finalisers(ph_domain *d) {
  int err = ph_domain_enter(d);
  if (err != PH_OK)
    return err;
  if (d->state != PH_DS_RUNNING) {
    d->last_error = PH_ESTATE;
    return PH_ESTATE;
  }
  err = run_all(d);
  if (err != PH_OK)
    d->last_error = err;
  return err;
}

/* A run point (allocation slow path, safepoint, end of ph_collect): d is
 * its owner's running domain, outside sections.  Two loads when nothing is
 * ready for d. */
void ph_final_poll(struct ph_domain *d) {
  ph_gc *g = d->heap->gc;
  /* relaxed: a hint; run_all reads the queues under final_lock */
  if (atomic_load_explicit(&g->nready[d->index], memory_order_relaxed) == 0 &&
      atomic_load_explicit(&g->nready[d->heap->cfg.max_domains],
                           memory_order_relaxed) == 0)
    return;
  if (d->state != PH_DS_RUNNING || ph_in_section())
    return;
  (void)run_all(d);
}
