/* api/heap.c -- heap creation and destruction, configuration, statistics,
 * census, events and pacing (DESIGN.md: heap.config, heap.stats,
 * heap.pacing). */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ph_config_init(ph_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->max_domains = 64;
  cfg->pool_size = 32 << 10;
  cfg->heap_limit = 0;
  cfg->gc_percent = 100;
  cfg->huge_pages = PH_HUGE_OFF;
  cfg->release = PH_RELEASE_DECOMMIT;
  cfg->retain = 0;
  cfg->compact_scope = PH_COMPACT_GLOBAL;
  cfg->compact_percent = 0;
}

static int config_valid(const ph_config *c) {
  if (c->max_domains < 1 || c->max_domains > 1024)
    return 0;
  if (c->pool_size < (4u << 10) || c->pool_size > (4u << 20) ||
      (c->pool_size & (c->pool_size - 1)))
    return 0;
  if (c->gc_percent > 10000)
    return 0;
  if ((unsigned)c->huge_pages > PH_HUGE_EXPLICIT)
    return 0;
  if ((unsigned)c->release > PH_RELEASE_KEEP)
    return 0;
  if ((unsigned)c->compact_scope > PH_COMPACT_PER_DOMAIN)
    return 0;
  if (c->compact_percent > 100)
    return 0;
  if (c->heap_limit && c->heap_limit < c->pool_size)
    return 0;
  if (c->gc_helpers > 64)
    return 0;
  return 1;
}

/* A heap and the state of every layer, in one allocation. */
typedef struct ph_heap_all {
  struct ph_heap h; /* first: a ph_heap * is the whole */
  ph_sync sync;
  ph_roots roots;
  ph_gc gc;
  ph_api api;
} ph_heap_all;

/* Everything but the chunks (released before) goes; used by destroy and by
 * a create that could not get its first chunk. */
static void heap_free(struct ph_heap *h) {
  for (unsigned i = 0; i < h->cfg.max_domains + h->cfg.gc_helpers; i++) {
    ph_mark_stack_free(&h->gc->workers[i].stack);
    ph_weak_worker_free(&h->gc->workers[i]);
    ph_sweep_records_free(&h->sec.pw[i]);
  }
  ph_compact_fini(h);
  ph_final_fini(h);
  ph_roots_global_fini(h);
  ph_barrier_destroy(&h->sync->stw.bar);
  pthread_cond_destroy(&h->gc->mark_cond);
  pthread_mutex_destroy(&h->gc->mark_lock);
  pthread_mutex_destroy(&h->roots->roots_lock);
  pthread_cond_destroy(&h->sync->helper_cond);
  pthread_cond_destroy(&h->sync->cond);
  pthread_mutex_destroy(&h->lock);
  ph_os_acct_fini(&h->os);
  free(h->slots);
  free(h->gc->workers);
  free(h->sec.pw);
  free((ph_heap_all *)h);
}

int ph_heap_create(const ph_config *cfg, ph_heap **out) {
  ph_config def;
  if (!out)
    return PH_EINVAL;
  if (!cfg) {
    ph_config_init(&def);
    cfg = &def;
  }
  if (!config_valid(cfg))
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  ph_heap_all *all = calloc(1, sizeof *all);
  if (!all)
    return PH_ENOMEM;
  struct ph_heap *h = &all->h;
  h->sync = &all->sync;
  h->roots = &all->roots;
  h->gc = &all->gc;
  h->api = &all->api;
  h->cfg = *cfg;
  h->pool_size = cfg->pool_size;
  h->pool_shift = (unsigned)__builtin_ctzl(cfg->pool_size);
  h->pool_mask = ~(uintptr_t)(cfg->pool_size - 1);
  h->commit_cap = ph_os_commit_cap();
  ph_sizeclass_init(h);
  unsigned nw = cfg->max_domains + cfg->gc_helpers; /* participants, at most */
  h->slots = calloc(cfg->max_domains, sizeof *h->slots);
  h->gc->workers = calloc(nw, sizeof *h->gc->workers);
  h->sec.pw = calloc(nw, sizeof *h->sec.pw);
  if (!h->slots || !h->gc->workers || !h->sec.pw || ph_final_init(h) != PH_OK) {
    ph_final_fini(h);
    free(h->slots);
    free(h->gc->workers);
    free(h->sec.pw);
    free(all);
    return PH_ENOMEM;
  }
  h->sync->after_join = ph_final_poll; /* gc.final: a run point */
  ph_os_acct_init(&h->os);
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->sync->cond, NULL);
  pthread_cond_init(&h->sync->helper_cond, NULL);
  pthread_mutex_init(&h->roots->roots_lock, NULL);
  pthread_mutex_init(&h->gc->mark_lock, NULL);
  pthread_cond_init(&h->gc->mark_cond, NULL);
  atomic_init(&h->gc->mark_spin_ns, ph_barrier_spin_max_ns);
  ph_barrier_init(&h->sync->stw.bar);
  ph_pacing_reset_locked(h);
  /* The first chunk now, so that a heap that cannot get memory fails here. */
  if (ph_chunk_grow_locked(h, 1) != PH_OK) {
    heap_free(h);
    return PH_ENOMEM;
  }
  if (ph_stw_helpers_start(h) != PH_OK) {
    ph_stw_helpers_stop(h);
    pthread_mutex_lock(&h->lock);
    ph_chunks_destroy(h);
    pthread_mutex_unlock(&h->lock);
    heap_free(h);
    return PH_ENOMEM;
  }
  h->sig = PH_SIG_HEAP;
  ph_registry_add(h);
  *out = h;
  return PH_OK;
}

int ph_heap_destroy(ph_heap *h) {
  if (!h)
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  int err = ph_registry_remove(h);
  if (err != PH_OK)
    return err;
  /* no domain: no section can be pending, the helpers are asleep */
  ph_stw_helpers_stop(h);
  pthread_mutex_lock(&h->lock);
  ph_chunks_destroy(h);
  pthread_mutex_unlock(&h->lock);
  for (struct ph_domain *d = h->api->retired, *n; d; d = n) {
    n = d->api->retired_next;
    free(d);
  }
  heap_free(h);
  return PH_OK;
}

int ph_stats_get(ph_heap *h, ph_stats *out) {
  if (!out)
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  int err = ph_heap_lock_live(h); /* takes h->lock */
  if (err != PH_OK)
    return err;
  ph_stats s = h->st;
  /* heap.pool.holes: a pool's holes are not committed */
  s.pool_bytes = ((uint64_t)h->pool_units << h->pool_shift) - h->hole_bytes;
  /* relaxed: accounting counters, exact under heap->lock which we hold */
  s.committed_bytes =
      atomic_load_explicit(&h->os.committed, memory_order_relaxed);
  s.reserved_bytes =
      atomic_load_explicit(&h->os.reserved, memory_order_relaxed);
  s.mappings = atomic_load_explicit(&h->os.mappings, memory_order_relaxed);
  s.huge_fallbacks =
      atomic_load_explicit(&h->os.huge_fallbacks, memory_order_relaxed);
  /* heap.stats: committed = pools + large blocks' pages + free committed
   * units (ph_verify recounts it), so no walk over the units */
  s.large_bytes = h->large_comm;
  s.free_pool_bytes = s.committed_bytes - s.pool_bytes - s.large_bytes;
  uint64_t alloc =
      atomic_load_explicit(&h->api->retired_allocated, memory_order_relaxed);
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    if (h->slots[i].dom)
      alloc += atomic_load_explicit(&h->slots[i].dom->allocated,
                                    memory_order_relaxed);
  s.allocated_bytes = alloc;
  s.domains = h->api->ndomains;
  /* relaxed: a count kept under pin_lock, read as a snapshot */
  s.pinned_blocks = atomic_load_explicit(&h->gc->npins, memory_order_relaxed);
  s.size_classes = h->nsmall;
  s.medium_classes = h->nclasses - h->nsmall;
  pthread_mutex_unlock(&h->lock);
  *out = s;
  return PH_OK;
}
