/* heap/heap.c -- heap creation and destruction, configuration, statistics,
 * census, events and pacing (DESIGN.md: heap.config, heap.stats,
 * heap.pacing). */
#include "heap/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PH_MIN_GC_BYTES ((uint64_t)4 << 20)

void ph_assert_fail(const char *cond, const char *file, int line) {
  fprintf(stderr, "poolheap: assertion failed: %s (%s:%d)\n", cond, file, line);
  abort();
}

const char *ph_strerror(int err) {
  switch (err) {
  case PH_OK:
    return "success";
  case PH_EINVAL:
    return "invalid argument or configuration";
  case PH_ENOMEM:
    return "out of memory (the OS refused or heap_limit was reached)";
  case PH_ESTATE:
    return "call not allowed in the current state";
  case PH_ECORRUPT:
    return "heap invariant broken";
  default:
    return "unknown error";
  }
}

uint64_t ph_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ph_event(struct ph_heap *h, ph_phase ph, int begin, unsigned dom) {
  if (h->cfg.on_event)
    h->cfg.on_event(ph, begin, dom, ph_now_ns(), h->cfg.on_event_user);
}

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

void ph_pacing_reset_locked(struct ph_heap *h) {
  uint64_t t = h->st.live_bytes / 100 * h->cfg.gc_percent;
  if (t < PH_MIN_GC_BYTES)
    t = PH_MIN_GC_BYTES;
  /* relaxed: pacing counters (heap.pacing) */
  atomic_store_explicit(&h->gc_threshold, t, memory_order_relaxed);
  atomic_store_explicit(&h->alloc_since, 0, memory_order_relaxed);
}

/* The live-heap registry: every heap between create and destroy, so that
 * a pointer that is not a live heap (destroyed, or never one) is refused
 * without being dereferenced.  Lock order: live_lock, then heap->lock.  It
 * covers calls made after ph_heap_destroy returned, not calls racing with
 * it (those are the embedder's bug). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ph_heap *live_heaps; /* (live_lock) */

static int live_find_locked(const struct ph_heap *h) {
  for (struct ph_heap *p = live_heaps; p; p = p->live_next)
    if (p == h)
      return 1;
  return 0;
}

int ph_heap_is_live(const struct ph_heap *h) {
  if (!h)
    return 0;
  pthread_mutex_lock(&live_lock);
  int live = live_find_locked(h);
  pthread_mutex_unlock(&live_lock);
  return live;
}

int ph_heap_lock_live(struct ph_heap *h) {
  if (!h)
    return PH_EINVAL;
  pthread_mutex_lock(&live_lock);
  int live = live_find_locked(h);
  if (live) /* destroy needs live_lock, then this lock: h stays */
    pthread_mutex_lock(&h->lock);
  pthread_mutex_unlock(&live_lock);
  return live ? PH_OK : PH_EINVAL;
}

/* Everything but the chunks (released before) goes; used by destroy and by
 * a create that could not get its first chunk. */
static void heap_free(struct ph_heap *h) {
  for (unsigned i = 0; i < h->cfg.max_domains + h->cfg.gc_helpers; i++) {
    ph_mark_stack_free(&h->stw.workers[i].stack);
    free(h->stw.workers[i].cands);
    free(h->stw.workers[i].larges);
  }
  ph_compact_fini(h);
  ph_roots_global_fini(h);
  ph_barrier_destroy(&h->stw.bar);
  pthread_cond_destroy(&h->stw.mark_cond);
  pthread_mutex_destroy(&h->stw.mark_lock);
  pthread_mutex_destroy(&h->roots_lock);
  pthread_cond_destroy(&h->helper_cond);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->lock);
  ph_os_acct_fini(&h->os);
  free(h->slots);
  free(h->stw.workers);
  free(h);
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
  struct ph_heap *h = calloc(1, sizeof *h);
  if (!h)
    return PH_ENOMEM;
  h->cfg = *cfg;
  h->pool_size = cfg->pool_size;
  h->pool_shift = (unsigned)__builtin_ctzl(cfg->pool_size);
  h->pool_mask = ~(uintptr_t)(cfg->pool_size - 1);
  h->commit_cap = ph_os_commit_cap();
  ph_sizeclass_init(h);
  h->slots = calloc(cfg->max_domains, sizeof *h->slots);
  h->stw.workers =
      calloc(cfg->max_domains + cfg->gc_helpers, sizeof *h->stw.workers);
  if (!h->slots || !h->stw.workers) {
    free(h->slots);
    free(h->stw.workers);
    free(h);
    return PH_ENOMEM;
  }
  ph_os_acct_init(&h->os);
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->cond, NULL);
  pthread_cond_init(&h->helper_cond, NULL);
  pthread_mutex_init(&h->roots_lock, NULL);
  pthread_mutex_init(&h->stw.mark_lock, NULL);
  pthread_cond_init(&h->stw.mark_cond, NULL);
  ph_barrier_init(&h->stw.bar);
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
  pthread_mutex_lock(&live_lock);
  h->live_next = live_heaps;
  live_heaps = h;
  pthread_mutex_unlock(&live_lock);
  *out = h;
  return PH_OK;
}

int ph_heap_destroy(ph_heap *h) {
  if (!h)
    return PH_EINVAL;
  if (ph_in_section()) /* barrier.reentry */
    return PH_ESTATE;
  pthread_mutex_lock(&live_lock);
  if (!live_find_locked(h)) { /* destroyed already, or never a heap */
    pthread_mutex_unlock(&live_lock);
    return PH_EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  if (h->ndomains > 0) {
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&live_lock);
    return PH_ESTATE;
  }
  h->sig = PH_SIG_DEAD;
  pthread_mutex_unlock(&h->lock);
  for (struct ph_heap **p = &live_heaps; *p; p = &(*p)->live_next)
    if (*p == h) {
      *p = h->live_next;
      break;
    }
  pthread_mutex_unlock(&live_lock);
  /* no domain: no section can be pending, the helpers are asleep */
  ph_stw_helpers_stop(h);
  pthread_mutex_lock(&h->lock);
  ph_chunks_destroy(h);
  pthread_mutex_unlock(&h->lock);
  for (struct ph_domain *d = h->retired, *n; d; d = n) {
    n = d->retired_next;
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
  s.pool_bytes = (uint64_t)h->pool_units << h->pool_shift;
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
      atomic_load_explicit(&h->retired_allocated, memory_order_relaxed);
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    if (h->slots[i].dom)
      alloc += atomic_load_explicit(&h->slots[i].dom->allocated,
                                    memory_order_relaxed);
  s.allocated_bytes = alloc;
  s.domains = h->ndomains;
  s.size_classes = h->nclasses;
  pthread_mutex_unlock(&h->lock);
  *out = s;
  return PH_OK;
}

void ph_census_stw_single(struct ph_heap *h, ph_census_req *req) {
  ph_census_class rows[PH_MAX_CLASSES];
  memset(rows, 0, sizeof rows);
  for (unsigned c = 0; c < h->nclasses; c++) {
    rows[c].size_class = c;
    rows[c].block_words = h->class_wsize[c];
    rows[c].max_wosize = h->class_wsize[c] - 1;
  }
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *ch = h->chunks[i];
    for (uint32_t u = 0; u < ch->nunits; u++) {
      if (ch->ustate[u] != PH_U_POOL)
        continue;
      ph_pool *p = (ph_pool *)ph_unit_addr(h, ch, u);
      rows[p->cls].pools++;
      rows[p->cls].live_blocks += p->nlive;
      rows[p->cls].free_blocks += p->nfree;
    }
  }
  for (unsigned c = 0; c < h->nclasses; c++)
    req->fn(&rows[c], req->user);
}
