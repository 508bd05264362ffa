/* heap/pools.c -- the public pool layer: heap, owners, allocation, sweeping
 * by colour, orphans, visiting, counters and the verifier
 * (include/poolheap_pools.h; DESIGN.md: pools.*).  Compaction is in
 * compact/pools_compact.c.
 *
 * Chunks, units, size classes, the OS layer and unit release are those of
 * heap/ (a ph_heap core that only this layer uses); pools are ph_pool and
 * large blocks heap.large blocks, the managed collector's: a free slot is a
 * header word of 0 (pools.header), so every colour is the embedder's. */
#include "heap/pools_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Thread_local int php_tls_callback;

static int ok_heap(const struct php_heap *h) {
  return h && h->sig == PHP_SIG_HEAP;
}
static int ok_owner(const struct php_owner *o) {
  return o && o->sig == PHP_SIG_OWNER;
}

static uint64_t unit_words(const struct php_heap *h) {
  return h->core->pool_size / 8;
}
/* The words of a pool of class cls (a medium pool: several units). */
static uint64_t pool_words(const struct php_heap *h, unsigned cls) {
  return h->core->class_units[cls] * unit_words(h);
}

/* pools.counters: the words of a pool that are no slot (header, bitmap,
 * tail). */
uint64_t php_pool_frag_const(const struct php_heap *h, unsigned cls) {
  const struct ph_heap *c = h->core;
  return pool_words(h, cls) -
         (uint64_t)c->class_nslots[cls] * c->class_wsize[cls];
}

/* The counters one pool contributes. */
static php_counters pool_counts(const struct php_heap *h, const ph_pool *p) {
  uint32_t ws = h->core->class_wsize[p->cls];
  php_counters c = {0};
  c.pool_words = pool_words(h, p->cls);
  c.pool_live_blocks = p->nlive;
  c.pool_live_words = p->live_words;
  /* heap.pool.holes: a slot in a hole is neither free nor a block */
  c.pool_frag_words = php_pool_frag_const(h, p->cls) +
                      (uint64_t)(p->nlive + p->nhole) * ws - p->live_words;
  if (p->cls >= h->core->nsmall) {
    c.medium_pool_words = c.pool_words;
    c.medium_live_words = p->live_words;
  }
  return c;
}

static php_counters large_counts(const struct php_heap *h, const php_large *l) {
  php_counters c = {0};
  c.large_words = (uint64_t)l->base.nunits * unit_words(h);
  c.large_blocks = 1;
  return c;
}

static void counters_add(php_counters *a, const php_counters *b, int sign) {
#define PHP_ADD(f) a->f = sign > 0 ? a->f + b->f : a->f - b->f
  PHP_ADD(pool_words);
  PHP_ADD(pool_live_words);
  PHP_ADD(pool_live_blocks);
  PHP_ADD(pool_frag_words);
  PHP_ADD(large_words);
  PHP_ADD(large_blocks);
  PHP_ADD(medium_pool_words);
  PHP_ADD(medium_live_words);
#undef PHP_ADD
  if (a->pool_words > a->pool_max_words)
    a->pool_max_words = a->pool_words;
  if (a->large_words > a->large_max_words)
    a->large_max_words = a->large_words;
}

/* pools.counters.alloc: add to *c what o's allocations of class cls added
 * and are not yet in o->c: each block its wosize + 1 live words and the rest
 * of its slot as fragmentation. */
static void counters_add_alloc_class(const struct php_owner *o, unsigned cls,
                                     php_counters *c) {
  const struct ph_heap *core = o->core;
  uint64_t b = o->alloc_blocks[cls], w = o->alloc_words[cls];
  c->pool_live_blocks += b;
  c->pool_live_words += w;
  c->pool_frag_words += b * core->class_wsize[cls] - w;
  if (cls >= core->nsmall)
    c->medium_live_words += w;
}

static void counters_add_alloc(const struct php_owner *o, php_counters *c) {
  for (unsigned cls = 0; cls < o->core->nclasses; cls++)
    if (o->alloc_blocks[cls])
      counters_add_alloc_class(o, cls, c);
}

/* Fold class cls's allocations into o->c (every class: owner_fold). */
static void owner_fold_class(struct php_owner *o, unsigned cls) {
  counters_add_alloc_class(o, cls, &o->c);
  o->alloc_blocks[cls] = 0;
  o->alloc_words[cls] = 0;
}

/* Forget every class's allocations (folded, or recounted by the caller). */
static void owner_alloc_drop(struct php_owner *o) {
  memset(o->alloc_blocks, 0, sizeof o->alloc_blocks);
  memset(o->alloc_words, 0, sizeof o->alloc_words);
}

static void owner_fold(struct php_owner *o) {
  counters_add_alloc(o, &o->c);
  owner_alloc_drop(o);
}

/* ------------------------------------------------------------- the heap */

/* The basics of poolheap_pools.h, which poolheap.h shares: the pool layer
 * owns them. */
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

void php_config_init(php_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->pool_size = 32 << 10;
  cfg->huge_pages = PH_HUGE_OFF;
  cfg->release = PH_RELEASE_DECOMMIT;
}

static int config_valid(const php_config *c) {
  if (c->pool_size < (4u << 10) || c->pool_size > (4u << 20) ||
      (c->pool_size & (c->pool_size - 1)))
    return 0;
  if ((unsigned)c->huge_pages > PH_HUGE_EXPLICIT ||
      (unsigned)c->release > PH_RELEASE_KEEP)
    return 0;
  if (c->heap_limit && c->heap_limit < c->pool_size)
    return 0;
  if (c->alloc_sweep > PHP_ALLOC_SWEEP_BEFORE_GROW)
    return 0;
  if (c->compact_helpers > PHP_COMPACT_HELPERS_MAX)
    return 0;
  return 1;
}

/* pools.helpers: mapped once, so that a compaction maps nothing.  A stack
 * the OS refuses (ulimit -v) is one helper fewer, not a refused heap. */
static void helper_stacks_unmap(struct php_heap *h) {
  for (unsigned i = 0; i < h->nhelper_stacks; i++)
    ph_os_stack_unmap(h->helper_stacks[i], PHP_HELPER_STACK);
  free(h->helper_stacks);
  h->helper_stacks = NULL;
  h->nhelper_stacks = 0;
}

static void helper_stacks_map(struct php_heap *h) {
  unsigned n = h->cfg.compact_helpers;
  if (n == 0)
    return;
  h->ncpus = ph_os_ncpus();
  h->helper_stacks = calloc(n, sizeof *h->helper_stacks);
  if (!h->helper_stacks)
    return;
  while (h->nhelper_stacks < n &&
         ph_os_stack_map(PHP_HELPER_STACK,
                         &h->helper_stacks[h->nhelper_stacks]) == PH_OK)
    h->nhelper_stacks++;
}

int php_heap_create(const php_config *cfg, php_heap **out) {
  php_config def;
  if (!out)
    return PH_EINVAL;
  if (!cfg) {
    php_config_init(&def);
    cfg = &def;
  }
  if (!config_valid(cfg))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct php_heap *h = calloc(1, sizeof *h);
  struct ph_heap *c = calloc(1, sizeof *c);
  if (!h || !c) {
    free(h);
    free(c);
    return PH_ENOMEM;
  }
  h->cfg = *cfg;
  h->core = c;
  h->on_free_filter = (cfg->on_free_tags[0] | cfg->on_free_tags[1] |
                       cfg->on_free_tags[2] | cfg->on_free_tags[3]) != 0;
  memset(&c->cfg, 0, sizeof c->cfg); /* the fields the units read */
  c->cfg.max_domains = 1;
  c->cfg.compact_scope = PH_COMPACT_GLOBAL;
  c->cfg.pool_size = cfg->pool_size;
  c->cfg.heap_limit = cfg->heap_limit;
  c->cfg.huge_pages = cfg->huge_pages;
  c->cfg.release = cfg->release;
  c->cfg.retain = cfg->retain;
  c->pool_size = cfg->pool_size;
  c->pool_shift = (unsigned)__builtin_ctzl(cfg->pool_size);
  c->pool_mask = ~(uintptr_t)(cfg->pool_size - 1);
  c->commit_cap = ph_os_commit_cap();
  c->reuse_committed = 1; /* heap.unit.reuse */
  ph_sizeclass_init(c);
  for (unsigned k = 0; k < c->nclasses; k++) {
    uint64_t sb = (uint64_t)c->class_wsize[k] * 8;
    h->slot_recip[k] = (((uint64_t)1 << PH_RECIP_SHIFT) + sb - 1) / sb;
  }
  ph_os_acct_init(&c->os);
  pthread_mutex_init(&c->lock, NULL);
  atomic_init(&h->garbage, 2);
  if (ph_chunk_grow_locked(c, 1) != PH_OK) {
    pthread_mutex_destroy(&c->lock);
    ph_os_acct_fini(&c->os);
    free(c);
    free(h);
    return PH_ENOMEM;
  }
  helper_stacks_map(h);
  h->sig = PHP_SIG_HEAP;
  *out = h;
  return PH_OK;
}

int php_heap_destroy(php_heap *h) {
  if (!ok_heap(h))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct ph_heap *c = h->core;
  pthread_mutex_lock(&c->lock);
  if (h->nowners > 0) {
    pthread_mutex_unlock(&c->lock);
    return PH_ESTATE;
  }
  h->sig = PH_SIG_DEAD;
  ph_chunks_destroy(c);
  pthread_mutex_unlock(&c->lock);
  pthread_mutex_destroy(&c->lock);
  ph_os_acct_fini(&c->os);
  if (h->cp)
    h->cp_free(h->cp);    /* compact/pools_compact.c's scratch */
  helper_stacks_unmap(h); /* no compaction runs: their threads are joined */
  free(h->otab);
  free(c);
  free(h);
  return PH_OK;
}

int php_set_colours(php_heap *h, unsigned garbage) {
  if (!ok_heap(h) || garbage > 3)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  /* relaxed: set while no owner sweeps; the embedder's barrier (or the
   * thread itself) orders it before the sweeps that read it */
  atomic_store_explicit(&h->garbage, garbage, memory_order_relaxed);
  return PH_OK;
}

int php_heap_stats_get(php_heap *h, php_heap_stats *out) {
  if (!ok_heap(h) || !out)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct ph_heap *c = h->core;
  php_heap_stats s = {0};
  pthread_mutex_lock(&c->lock);
  s.pool_size = c->pool_size;
  s.size_classes = c->nclasses;
  s.max_small_wosize = c->max_small_wosize;
  /* relaxed: accounting counters, exact under the lock we hold */
  s.committed_bytes =
      atomic_load_explicit(&c->os.committed, memory_order_relaxed);
  s.reserved_bytes =
      atomic_load_explicit(&c->os.reserved, memory_order_relaxed);
  s.mappings = atomic_load_explicit(&c->os.mappings, memory_order_relaxed);
  s.pool_bytes = (uint64_t)c->pool_units << c->pool_shift;
  s.large_bytes = (uint64_t)c->large_units << c->pool_shift;
  uint64_t fc = 0;
  for (unsigned i = 0; i < c->nchunks; i++)
    for (uint32_t u = 0; u < c->chunks[i]->nunits; u++)
      fc += c->chunks[i]->ustate[u] == PH_U_FREE_COMM;
  s.free_bytes = fc << c->pool_shift;
  s.compactions = h->compactions;
  s.evacuated_blocks = h->evacuated_blocks;
  s.evacuated_bytes = h->evacuated_bytes;
  s.evacuated_pools = h->evacuated_pools;
  s.released_bytes = h->released_bytes;
  s.hole_bytes = c->hole_bytes;
  s.compact_helpers = h->last_helpers;
  pthread_mutex_unlock(&c->lock);
  *out = s;
  return PH_OK;
}

/* --------------------------------------------------------------- owners */

int php_owner_create(php_heap *h, php_owner **out) {
  if (!ok_heap(h) || !out)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct php_owner *o = calloc(1, sizeof *o);
  if (!o)
    return PH_ENOMEM;
  o->sig = PHP_SIG_OWNER;
  o->h = h;
  o->core = h->core;
  memcpy(o->slot_recip, h->slot_recip, sizeof o->slot_recip);
  o->next_to_sweep = h->core->nclasses;
  pthread_mutex_lock(&h->core->lock);
  uint32_t i = 0;
  while (i < h->otab_cap && h->otab[i])
    i++;
  if (i == h->otab_cap) { /* pools.owner: the table grows */
    uint32_t ncap = h->otab_cap ? h->otab_cap * 2 : 16;
    struct php_owner **t = realloc(h->otab, ncap * sizeof *t);
    if (!t) {
      pthread_mutex_unlock(&h->core->lock);
      free(o);
      return PH_ENOMEM;
    }
    memset(t + h->otab_cap, 0, (ncap - h->otab_cap) * sizeof *t);
    h->otab = t;
    h->otab_cap = ncap;
  }
  o->index = i;
  h->otab[i] = o;
  o->next_owner = h->owners;
  if (h->owners)
    h->owners->prev_owner = o;
  h->owners = o;
  h->nowners++;
  pthread_mutex_unlock(&h->core->lock);
  *out = o;
  return PH_OK;
}

php_heap *php_owner_heap(const php_owner *o) {
  return ok_owner(o) ? o->h : NULL;
}

int php_last_error(const php_owner *o) {
  return ok_owner(o) ? o->last_error : PH_EINVAL;
}

int php_owner_sweep_work(php_owner *o, intptr_t *alloc_work,
                         uint64_t *freed_words) {
  if (!ok_owner(o))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  if (alloc_work)
    *alloc_work = o->alloc_sweep_work;
  if (freed_words)
    *freed_words = o->freed_words;
  o->alloc_sweep_work = 0;
  o->freed_words = 0;
  return PH_OK;
}

int php_owner_counters(const php_owner *o, php_counters *out) {
  if (!ok_owner(o) || !out)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  *out = o->c;
  counters_add_alloc(o, out);
  return PH_OK;
}

int php_orphan_counters(php_heap *h, php_counters *out) {
  if (!ok_heap(h) || !out)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  pthread_mutex_lock(&h->core->lock);
  *out = h->orph.c;
  pthread_mutex_unlock(&h->core->lock);
  return PH_OK;
}

/* Move list *from onto *to, giving its pools owner o. */
static void move_pools(ph_pool **from, ph_pool **to, struct php_owner *o) {
  while (*from) {
    ph_pool *p = *from;
    *from = p->next;
    p->owner = o ? o->index : PHP_NO_OWNER;
    p->next = *to;
    *to = p;
  }
}

static void move_larges(php_large **from, php_large **to, struct php_owner *o) {
  while (*from) {
    php_large *l = *from;
    *from = l->next;
    l->owner = o;
    l->next = *to;
    *to = l;
  }
}

int php_owner_orphan(php_owner *o) {
  if (!ok_owner(o))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  while (php_sweep(o, INTPTR_MAX) <= 0)
    ;
  struct php_heap *h = o->h;
  pthread_mutex_lock(&h->core->lock);
  for (unsigned c = 0; c < h->core->nclasses; c++) {
    ph_pool *l = atomic_load_explicit(&h->orph.avail[c], memory_order_relaxed);
    move_pools(&o->avail[c], &l, NULL);
    atomic_store_explicit(&h->orph.avail[c], l, memory_order_relaxed);
    move_pools(&o->full[c], &h->orph.full[c], NULL);
  }
  move_larges(&o->large, &h->orph.large, NULL);
  owner_fold(o);
  counters_add(&h->orph.c, &o->c, 1);
  php_counters keep = {.pool_max_words = o->c.pool_max_words,
                       .large_max_words = o->c.large_max_words};
  o->c = keep;
  pthread_mutex_unlock(&h->core->lock);
  return PH_OK;
}

int php_owner_adopt(php_owner *o) {
  if (!ok_owner(o))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct php_heap *h = o->h;
  pthread_mutex_lock(&h->core->lock);
  for (unsigned c = 0; c < h->core->nclasses; c++) {
    ph_pool *l = atomic_load_explicit(&h->orph.avail[c], memory_order_relaxed);
    move_pools(&l, &o->avail[c], o);
    atomic_store_explicit(&h->orph.avail[c], NULL, memory_order_relaxed);
    move_pools(&h->orph.full[c], &o->full[c], o);
  }
  move_larges(&h->orph.large, &o->large, o);
  counters_add(&o->c, &h->orph.c, 1);
  php_counters keep = {.pool_max_words = h->orph.c.pool_max_words,
                       .large_max_words = h->orph.c.large_max_words};
  h->orph.c = keep;
  pthread_mutex_unlock(&h->core->lock);
  return PH_OK;
}

int php_owner_destroy(php_owner *o) {
  int err = php_owner_orphan(o);
  if (err != PH_OK)
    return err;
  struct php_heap *h = o->h;
  pthread_mutex_lock(&h->core->lock);
  if (o->prev_owner)
    o->prev_owner->next_owner = o->next_owner;
  else
    h->owners = o->next_owner;
  if (o->next_owner)
    o->next_owner->prev_owner = o->prev_owner;
  h->nowners--;
  h->otab[o->index] = NULL;
  o->sig = PH_SIG_DEAD;
  pthread_mutex_unlock(&h->core->lock);
  free(o);
  return PH_OK;
}

/* ------------------------------------------------------------- sweeping */

void php_call_on_free(struct php_heap *h, ph_value b) {
  if (!h->cfg.on_free)
    return;
  if (h->on_free_filter) { /* pools.sweep: only the tags asked for */
    unsigned t = php_hd_tag(php_hd_load(b));
    if (!(h->cfg.on_free_tags[t / 64] >> (t % 64) & 1))
      return;
  }
  php_tls_callback = 1;
  h->cfg.on_free(b, h->cfg.on_free_user);
  php_tls_callback = 0;
}

/* The pool sweep's on_free: the sweep has checked the tag already
 * (on_free_tags), so every call here is one the embedder asked for. */
static void on_free_cb(void *ctx, ph_value b) {
  struct php_heap *h = ctx;
  php_tls_callback = 1;
  h->cfg.on_free(b, h->cfg.on_free_user);
  php_tls_callback = 0;
}

/* pools.sweep: sweep p with heap.sweep.pool, the per-pool sweep of the
 * managed collector: garbage to on_free, then free; live_mask
 * (compaction): colours that are live, any other sets *bad; set_bits: the
 * live bitmap (heap.pool.bitmap).  live_mask 0: every other colour is
 * live. */
void php_sweep_pool_counts(struct php_heap *h, ph_pool *p, unsigned garbage,
                           unsigned live_mask, int set_bits, int *bad) {
  int ignored = 0;
  /* pools.sweep: the tag filter is checked in the sweep's loop, so a
   * freed block of another tag costs no call */
  ph_pool_sweep_garbage(h->core, p, garbage, live_mask, set_bits,
                        h->cfg.on_free ? on_free_cb : NULL,
                        h->on_free_filter ? h->cfg.on_free_tags : NULL, h,
                        bad ? bad : &ignored);
}

static void free_pool_locked(struct php_heap *h, ph_pool *p) {
  ph_pool_free_locked(h->core, p);
}

/* heap.release.sweep: does the sweep give back a medium pool's freed
 * memory?  A medium pool in a chunk of normal pages, with a release mode
 * that gives memory back. */
static int sweep_releases(const struct php_heap *h, const ph_pool *p) {
  const struct ph_heap *c = h->core;
  return p->cls >= c->nsmall && c->cfg.release != PH_RELEASE_KEEP &&
         p->chunk->huge == PH_OS_HUGE_NONE;
}

/* heap.release.sweep: the slot bytes of a medium pool whose freed slots the
 * sweep trims (sweep_releases, and slots of at least two pages: a page lies
 * wholly past a free slot's first 16 bytes); 0 if none.  The live bits
 * before and after the sweep say which slots it freed (pools.bits: exact),
 * at most PHP_TRIM_WORDS words of them (512 slots: every such pool up to
 * 4 MiB units). */
#define PHP_TRIM_WORDS 8
static size_t sweep_trim_bytes(const struct php_heap *h, const ph_pool *p) {
  size_t sb = (size_t)h->core->class_wsize[p->cls] * sizeof(ph_value);
  if (!sweep_releases(h, p) || sb < 2 * ph_os_page_size() ||
      p->nslots > 64 * PHP_TRIM_WORDS)
    return 0;
  return sb;
}

/* heap.release.sweep: give back the pages inside the slots of p that the
 * sweep freed (allocated in had, free now); lock held. */
static void sweep_trim_locked(struct php_heap *h, ph_pool *p, size_t sb,
                              const uint64_t *had) {
  int lazy = h->core->cfg.release == PH_RELEASE_LAZY;
  const uint64_t *bits = ph_pool_bits(p);
  uintptr_t s0 = (uintptr_t)php_slots(p);
  for (uint32_t w = 0; w < (p->nslots + 63) / 64; w++)
    for (uint64_t d = had[w] & ~bits[w]; d; d &= d - 1) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(d);
      (void)ph_slot_trim_locked(h->core, s0 + (uintptr_t)i * sb, sb, lazy);
    }
}

/* pools.sweep.work: the sweep work of pool p (before its sweep): a small
 * pool's words, as OCaml counts a pool; a medium pool's allocated words, as
 * OCaml counts the malloc'd blocks of those sizes (at least 1). */
static intptr_t sweep_work(const struct php_heap *h, const ph_pool *p) {
  if (p->cls < h->core->nsmall)
    return (intptr_t)pool_words(h, p->cls);
  return p->live_words ? (intptr_t)p->live_words : 1;
}

/* Sweep p, one of o's unswept pools, onto o's lists.  Returns 1 if p was
 * emptied and its units are free and still committed (pools.alloc.grow),
 * else 0. */
static int owner_sweep_pool(struct php_owner *o, ph_pool *p) {
  struct php_heap *h = o->h;
  php_counters before = pool_counts(h, p);
  owner_fold_class(o, p->cls); /* before includes them */
  size_t trim = sweep_trim_bytes(h, p);
  uint64_t had[PHP_TRIM_WORDS];
  if (trim)
    memcpy(had, ph_pool_bits(p), (p->nslots + 63) / 64 * sizeof had[0]);
  php_sweep_pool_counts(h, p,
                        atomic_load_explicit(&h->garbage, memory_order_relaxed),
                        0, 1, NULL);
  counters_add(&o->c, &before, -1);
  if (p->nlive == 0) {
    o->freed_words += before.pool_live_words;
    struct ph_heap *core = h->core;
    ph_chunk *ch = p->chunk;
    uint32_t u = p->unit, n = core->class_units[p->cls];
    int rel = sweep_releases(h, p);
    pthread_mutex_lock(&core->lock);
    /* heap.unit.clean: a small pool's free list stays for its next pool */
    if (rel)
      free_pool_locked(h, p);
    else
      ph_pool_free_clean_locked(core, p);
    /* heap.release.sweep: an empty medium pool's units go back, beyond
     * cfg.retain bytes of free committed memory */
    size_t gone = 0;
    int comm = 1; /* heap.pool.holes: a unit whose holes could not be
                     counted committed again is not free (PH_U_STUCK) */
    for (uint32_t k = 0; k < n; k++)
      comm &= ch->ustate[u + k] == PH_U_FREE_COMM;
    if (rel && comm && ph_free_committed_locked(core) > core->cfg.retain)
      gone = ph_units_decommit_locked(core, ch, u, n,
                                      core->cfg.release == PH_RELEASE_LAZY);
    pthread_mutex_unlock(&core->lock);
    return gone == 0;
  }
  if (trim && p->nlive < before.pool_live_blocks) {
    pthread_mutex_lock(&h->core->lock);
    sweep_trim_locked(h, p, trim, had);
    pthread_mutex_unlock(&h->core->lock);
  }
  php_counters after = pool_counts(h, p);
  o->freed_words += before.pool_live_words - after.pool_live_words;
  counters_add(&o->c, &after, 1);
  ph_pool **l = p->free ? &o->avail[p->cls] : &o->full[p->cls];
  p->next = *l;
  *l = p;
  return 0;
}

/* Give a garbage large block's units back (lock held); 0 if the OS
 * refused (heap.large.commit): the block stays, marked, and the next sweep
 * tries again without telling on_free twice. */
int php_large_free_locked(struct php_heap *h, php_large *l) {
  if (ph_large_free_locked(h->core, &l->base))
    return 1;
  l->base.sig = PH_SIG_LARGE; /* ph_large_free_locked made it raw */
  l->base.pad = 1;
  return 0;
}

/* Sweep one large block; returns its words of work. */
static intptr_t owner_sweep_large(struct php_owner *o, php_large *l) {
  struct php_heap *h = o->h;
  ph_value b = php_large_block(l);
  ph_value hd = php_hd_load(b);
  intptr_t work = (intptr_t)php_hd_wosize(hd) + 1;
  if (!l->base.pad &&
      php_hd_colour(hd) !=
          atomic_load_explicit(&h->garbage, memory_order_relaxed)) {
    l->next = o->large;
    o->large = l;
    return work;
  }
  if (!l->base.pad)
    php_call_on_free(h, b);
  php_counters lc = large_counts(h, l);
  pthread_mutex_lock(&h->core->lock);
  int freed = php_large_free_locked(h, l);
  pthread_mutex_unlock(&h->core->lock);
  if (freed) {
    counters_add(&o->c, &lc, -1);
    o->freed_words += lc.large_words;
  } else {
    l->next = o->large;
    o->large = l;
  }
  return work;
}

intptr_t php_sweep(php_owner *o, intptr_t budget) {
  if (!ok_owner(o) || php_tls_callback)
    return budget;
  struct php_heap *h = o->h;
  while (budget > 0 && o->next_to_sweep < h->core->nclasses) {
    unsigned c = o->next_to_sweep;
    ph_pool **l = o->unswept_avail[c]  ? &o->unswept_avail[c]
                  : o->unswept_full[c] ? &o->unswept_full[c]
                                       : NULL;
    if (!l) {
      o->next_to_sweep++;
      continue;
    }
    ph_pool *p = *l;
    *l = p->next;
    budget -= sweep_work(h, p);
    owner_sweep_pool(o, p);
  }
  while (budget > 0 && o->unswept_large) {
    php_large *l = o->unswept_large;
    o->unswept_large = l->next;
    budget -= owner_sweep_large(o, l);
  }
  return budget;
}

int php_cycle(php_owner *o) {
  if (!ok_owner(o))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  unsigned n = o->h->core->nclasses;
  if (o->unswept_large)
    return PH_ESTATE;
  for (unsigned c = 0; c < n; c++)
    if (o->unswept_avail[c] || o->unswept_full[c])
      return PH_ESTATE;
  for (unsigned c = 0; c < n; c++) {
    o->unswept_avail[c] = o->avail[c];
    o->unswept_full[c] = o->full[c];
    o->avail[c] = o->full[c] = NULL;
  }
  o->unswept_large = o->large;
  o->large = NULL;
  o->next_to_sweep = 0;
  return PH_OK;
}

/* ----------------------------------------------------------- allocation */

/* pools.alloc.grow: can the heap's free committed memory hold a new pool
 * of class cls (so that taking one does not grow the resident heap)?  A
 * medium pool needs a contiguous run, which the bytes alone do not promise:
 * then the pool may still commit, as it would have without the sweep. */
static int committed_room(struct php_heap *h, unsigned cls) {
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  int room = ph_free_committed_locked(core) >=
             ((uint64_t)core->class_units[cls] << core->pool_shift);
  pthread_mutex_unlock(&core->lock);
  return room;
}

/* pools.alloc: a pool with room for class cls on top of o->avail[cls]. */
/* Sweep o's unswept pools of class cls for an allocation until one has
 * room: those that had room (avail), the full ones (full), the former
 * first; with grow, stop too at a pool the sweep emptied whose units stay
 * committed (pools.alloc.grow: they serve the new pool). */
static void alloc_sweep(struct php_owner *o, unsigned cls, int avail, int full,
                        int grow) {
  while (!o->avail[cls]) {
    ph_pool **l = avail && o->unswept_avail[cls] ? &o->unswept_avail[cls]
                  : full && o->unswept_full[cls] ? &o->unswept_full[cls]
                                                 : NULL;
    if (!l)
      return;
    ph_pool *p = *l;
    *l = p->next;
    o->alloc_sweep_work += sweep_work(o->h, p);
    if (owner_sweep_pool(o, p) && grow)
      return;
  }
}

static ph_pool *find_pool(struct php_owner *o, unsigned cls) {
  struct php_heap *h = o->h;
  /* PHP_ALLOC_SWEEP_AVAIL: the full ones are php_sweep's (OCaml's policy) */
  alloc_sweep(o, cls, 1, h->cfg.alloc_sweep == PHP_ALLOC_SWEEP_ALL, 0);
  if (o->avail[cls])
    return o->avail[cls];
  /* pools.alloc.grow: before the heap grows, the full pools' garbage */
  if (h->cfg.alloc_sweep == PHP_ALLOC_SWEEP_BEFORE_GROW &&
      o->unswept_full[cls] &&
      !atomic_load_explicit(&h->orph.avail[cls], memory_order_relaxed) &&
      !committed_room(h, cls)) {
    alloc_sweep(o, cls, 0, 1, 1);
    if (o->avail[cls])
      return o->avail[cls];
  }
  /* heap.pool.take: an orphan pool with room (popped under the lock), or
   * a fresh one */
  int fresh;
  ph_pool *p =
      ph_pool_take(h->core, &h->orph.avail[cls], 1, cls, o->index, &fresh);
  if (!p)
    return NULL;
  php_counters pc = pool_counts(h, p);
  if (!fresh) { /* adopted: its counters move from the orphans to o */
    pthread_mutex_lock(&h->core->lock);
    counters_add(&h->orph.c, &pc, -1);
    pthread_mutex_unlock(&h->core->lock);
  }
  counters_add(&o->c, &pc, 1);
  p->next = o->avail[cls];
  o->avail[cls] = p;
  return p;
}

static ph_value large_alloc(struct php_owner *o, size_t wosize, unsigned bits) {
  struct php_heap *h = o->h;
  struct ph_heap *core = h->core;
  size_t n =
      (PH_LARGE_HDR + 8 + wosize * 8 + core->pool_size - 1) >> core->pool_shift;
  if (n >= UINT32_MAX) {
    o->last_error = PH_ENOMEM;
    return 0;
  }
  ph_chunk *c;
  uint32_t u;
  size_t comm = 0, bytes = PH_LARGE_HDR + 8 + wosize * 8;
  pthread_mutex_lock(&core->lock);
  int err = ph_units_take_large_locked(core, n, bytes, &c, &u, &comm);
  php_large *l = NULL;
  if (err == PH_OK) {
    l = (php_large *)ph_unit_addr(core, c, u);
    memset(l, 0, PH_LARGE_HDR);
    l->base.sig = PH_SIG_LARGE;
    l->base.kind = PH_U_LARGE;
    l->base.nunits = (uint32_t)n;
    l->base.unit = u;
    l->base.chunk = c;
    l->base.comm = comm;
    core->large_units += n;
    core->large_comm += comm;
  }
  pthread_mutex_unlock(&core->lock);
  if (err != PH_OK) {
    o->last_error = err;
    return 0;
  }
  l->owner = o;
  l->next = o->large;
  o->large = l;
  php_counters lc = large_counts(h, l);
  counters_add(&o->c, &lc, 1);
  ph_value b = php_large_block(l);
  __atomic_store_n((ph_value *)b - 1,
                   ((ph_value)wosize << PH_HD_WOSIZE_SHIFT) | bits,
                   __ATOMIC_RELAXED);
  return b;
}

/* pools.alloc: pop a slot of p, a swept pool of class cls with one free. */
static inline __attribute__((always_inline)) ph_value
alloc_from(struct php_owner *o, ph_pool *p, unsigned cls, size_t wosize,
           unsigned header_bits) {
  ph_value b = p->free;
  ph_value next = *(ph_value *)b;
  p->free = next;
  /* pools.alloc.prefetch: the next allocation reads the next free slot's
   * link and its caller writes the slot; asked for now, it is on its way
   * while this block is filled (a prefetch of 0 is ignored) */
  __builtin_prefetch((const void *)next, 1);
  /* pools.bits: the slot's live bit */
  uint64_t si =
      ((uint64_t)(b - 8 - (ph_value)php_slots(p)) * o->slot_recip[cls]) >>
      PH_RECIP_SHIFT;
  ph_pool_bits(p)[si / 64] |= (uint64_t)1 << (si % 64);
  p->nlive++;
  p->nfree--;
  p->live_words += (uint32_t)(wosize + 1);
  if (!p->free) { /* full: it is the head of avail */
    o->avail[cls] = p->next;
    p->next = o->full[cls];
    o->full[cls] = p;
  }
  /* pools.counters.alloc: the owner's live blocks, live words, medium live
   * words and fragmentation follow from these two */
  o->alloc_blocks[cls]++;
  o->alloc_words[cls] += wosize + 1;
  /* relaxed: a visitor of the pool may read it (pools.visit); the fields
   * are published by the embedder's own ordering */
  __atomic_store_n((ph_value *)b - 1,
                   ((ph_value)wosize << PH_HD_WOSIZE_SHIFT) | header_bits,
                   __ATOMIC_RELAXED);
  return b;
}

/* Everything but the fast path: bad arguments and calls from a callback
 * (refused), large blocks, and no swept pool with room (find_pool).  Out
 * of line, so that the fast path is a leaf that saves no register. */
static __attribute__((noinline)) ph_value
alloc_slow(php_owner *o, size_t wosize, unsigned header_bits) {
  if (!ok_owner(o))
    return 0;
  if (php_tls_callback) { /* pools.reentry */
    o->last_error = PH_ESTATE;
    return 0;
  }
  if (wosize == 0 || wosize > PH_MAX_WOSIZE || header_bits > PHP_HD_BITS_MAX) {
    o->last_error = PH_EINVAL;
    return 0;
  }
  struct ph_heap *core = o->h->core;
  if (wosize > core->max_small_wosize)
    return large_alloc(o, wosize, header_bits);
  unsigned cls = ph_class_of_wosize(core, wosize);
  ph_pool *p = o->avail[cls];
  if (!p && !(p = find_pool(o, cls))) {
    o->last_error = PH_ENOMEM;
    return 0;
  }
  return alloc_from(o, p, cls, wosize, header_bits);
}

ph_value php_alloc(php_owner *o, size_t wosize, unsigned header_bits) {
  /* pools.alloc.fast: a valid owner outside a callback, a small block and
   * a swept pool with room on the class's list; anything else goes to
   * alloc_slow, which checks it all again */
  if (__builtin_expect(o != NULL && o->sig == PHP_SIG_OWNER &&
                           !php_tls_callback && header_bits <= PHP_HD_BITS_MAX,
                       1)) {
    struct ph_heap *core = o->core;
    /* 1 <= wosize <= max_small_wosize (< PH_MAX_WOSIZE) */
    if (__builtin_expect(wosize - 1 < core->max_small_wosize, 1)) {
      unsigned cls = ph_class_of_wosize(core, wosize);
      ph_pool *p = o->avail[cls];
      if (__builtin_expect(p != NULL, 1))
        return alloc_from(o, p, cls, wosize, header_bits);
    }
  }
  return alloc_slow(o, wosize, header_bits);
}

/* -------------------------------------------------------------- visiting */

int php_visit_pool_of(php_heap *h, ph_value addr, php_block_fn fn, void *user) {
  if (!ok_heap(h) || !fn)
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  struct ph_heap *core = h->core;
  ph_value *slots = NULL, one = 0;
  uint32_t ws = 0, n = 0;
  ph_chunk *hc = NULL; /* heap.pool.holes: the pool's unit, if it has any */
  uint32_t hu = 0;
  unsigned hcls = 0;
  pthread_mutex_lock(&core->lock);
  ph_chunk *c = ph_chunk_find(core, (void *)addr);
  if (c) {
    uint32_t u = (uint32_t)((addr - (uintptr_t)c->base) >> core->pool_shift);
    while (u > 0 && c->ustate[u] == PH_U_LARGE_TAIL)
      u--;
    u = ph_unit_head(c, u); /* heap.unit.lookup: a medium pool's tail */
    char *ua = ph_unit_addr(core, c, u);
    if (c->ustate[u] == PH_U_POOL) {
      ph_pool *p = (ph_pool *)ua;
      ws = core->class_wsize[p->cls];
      slots = php_slots(p);
      if (addr >= (ph_value)slots &&
          addr < (ph_value)(slots + (size_t)p->nslots * ws))
        n = p->nslots;
      /* heap.pool.holes: made and ended only with the world stopped or
       * when the pool is freed, which addr's block forbids meanwhile */
      if (n && ph_pool_holes_any(core, c, u, p->cls)) {
        hc = c;
        hu = u;
        hcls = p->cls;
      }
    } else if (c->ustate[u] == PH_U_LARGE) {
      ph_value b = php_large_block((php_large *)ua);
      if (addr >= b - 8 && addr < b + php_hd_wosize(php_hd_load(b)) * 8)
        one = b;
    }
  }
  pthread_mutex_unlock(&core->lock);
  if (!n && !one)
    return PH_EINVAL;
  php_tls_callback = 1;
  if (one) {
    fn(one, php_hd_load(one), user);
  } else {
    for (uint32_t i = 0; i < n; i++) {
      if (hc && ph_pool_slot_in_hole(core, hc, hu, hcls, i))
        continue; /* never read: no page is faulted back */
      ph_value *slot = slots + (size_t)i * ws;
      ph_value hd = __atomic_load_n(slot, __ATOMIC_RELAXED);
      if (hd != 0)
        fn((ph_value)(slot + 1), hd, user);
    }
  }
  php_tls_callback = 0;
  return PH_OK;
}

/* ------------------------------------------------------ list rebuilding */

/* After a compaction (world stopped, lock held): every pool and large block
 * onto its owner's (or the orphans') swept lists, sparser pools first so
 * the densest are used first, and every counter recounted. */
void php_rebuild_lists_locked(struct php_heap *h) {
  struct ph_heap *core = h->core;
  for (struct php_owner *o = h->owners; o; o = o->next_owner) {
    for (unsigned c = 0; c < core->nclasses; c++)
      o->avail[c] = o->full[c] = o->unswept_avail[c] = o->unswept_full[c] =
          NULL;
    o->large = o->unswept_large = NULL;
    o->next_to_sweep = core->nclasses;
    o->c = (php_counters){.pool_max_words = o->c.pool_max_words,
                          .large_max_words = o->c.large_max_words};
    owner_alloc_drop(o); /* pools.counters.alloc: the recount includes them */
  }
  for (unsigned c = 0; c < core->nclasses; c++) {
    atomic_store_explicit(&h->orph.avail[c], NULL, memory_order_relaxed);
    h->orph.full[c] = NULL;
  }
  h->orph.large = NULL;
  h->orph.c = (php_counters){.pool_max_words = h->orph.c.pool_max_words,
                             .large_max_words = h->orph.c.large_max_words};
  for (int dense = 0; dense < 2; dense++)
    for (unsigned i = 0; i < core->nchunks; i++) {
      ph_chunk *ch = core->chunks[i];
      for (uint32_t u = ch->nunits; u-- > 0;) {
        char *ua = ph_unit_addr(core, ch, u);
        if (ch->ustate[u] == PH_U_LARGE && dense == 0) {
          php_large *l = (php_large *)ua;
          php_counters lc = large_counts(h, l);
          if (l->owner) {
            l->next = l->owner->large;
            l->owner->large = l;
            counters_add(&l->owner->c, &lc, 1);
          } else {
            l->next = h->orph.large;
            h->orph.large = l;
            counters_add(&h->orph.c, &lc, 1);
          }
        }
        if (ch->ustate[u] != PH_U_POOL)
          continue;
        ph_pool *p = (ph_pool *)ua;
        if ((p->nlive * 2 >= p->nslots) != dense)
          continue;
        php_counters pc = pool_counts(h, p);
        struct php_owner *o = php_pool_owner(h, p);
        counters_add(o ? &o->c : &h->orph.c, &pc, 1);
        if (!p->free) {
          ph_pool **l = o ? &o->full[p->cls] : &h->orph.full[p->cls];
          p->next = *l;
          *l = p;
        } else if (o) {
          p->next = o->avail[p->cls];
          o->avail[p->cls] = p;
        } else {
          p->next = atomic_load_explicit(&h->orph.avail[p->cls],
                                         memory_order_relaxed);
          atomic_store_explicit(&h->orph.avail[p->cls], p,
                                memory_order_relaxed);
        }
      }
    }
}

/* ----------------------------------------------------------- the verifier */

/* The layer's own checks run beside the pool layer's structural walk
 * (heap.verify, ph_check_heap_locked): its owners' and orphans' lists and
 * counters, and the live words it keeps in every pool. */
typedef struct vctx {
  ph_check k;
  struct php_heap *h;
} vctx;

#define vfail(v, ...) ph_check_fail(&(v)->k, __VA_ARGS__)

static void pool_words_kept(ph_check *k, ph_pool *p, uint64_t words) {
  if (words != p->live_words)
    ph_check_fail(k, "pool %p: live words %llu, recount %llu", (void *)p,
                  (unsigned long long)p->live_words, (unsigned long long)words);
  /* pools.bits: the live bits match the headers */
  const vctx *v = (const vctx *)k; /* k is vctx's first member */
  const struct ph_heap *core = v->h->core;
  uint32_t ws = core->class_wsize[p->cls];
  const ph_value *s = php_slots(p);
  const uint64_t *bits = ph_pool_bits(p);
  uint64_t holes = ph_pool_holes_any(core, p->chunk, p->unit, p->cls);
  for (uint32_t i = 0; i < p->nslots; i++) {
    if (holes && ph_pool_slot_in_hole(core, p->chunk, p->unit, p->cls, i)) {
      if (bits[i / 64] >> (i % 64) & 1) {
        ph_check_fail(k, "pool %p slot %u: live bit in a hole", (void *)p, i);
        return;
      }
      continue; /* heap.pool.holes: never read */
    }
    ph_value hd = s[(size_t)i * ws];
    if ((hd != 0) != (int)(bits[i / 64] >> (i % 64) & 1)) {
      ph_check_fail(k, "pool %p slot %u: live bit %d, header %#lx", (void *)p,
                    i, (int)(bits[i / 64] >> (i % 64) & 1), (unsigned long)hd);
      return;
    }
  }
}

/* Walk one list: right owner, class, state; adds to *seen and *cnt. */
static void check_list(vctx *v, ph_pool *p, struct php_owner *o, unsigned c,
                       int want_free, int swept, size_t *seen,
                       php_counters *cnt) {
  size_t limit = v->h->core->pool_units;
  for (; p && !v->k.bad; p = p->next) {
    if (p->sig != PH_SIG_POOL || p->owner != (o ? o->index : PHP_NO_OWNER) ||
        p->cls != c || ++*seen > limit)
      vfail(v, "list %p/%u broken at pool %p", (void *)o, c, (void *)p);
    else if (swept && (want_free ? !p->free : p->free != 0))
      vfail(v, "pool %p on the %s list", (void *)p,
            want_free ? "avail" : "full");
    else {
      php_counters pc = pool_counts(v->h, p);
      counters_add(cnt, &pc, 1);
    }
  }
}

static void check_larges(vctx *v, php_large *l, struct php_owner *o,
                         size_t *seen, php_counters *cnt) {
  for (; l && !v->k.bad; l = l->next) {
    if (l->base.sig != PH_SIG_LARGE || l->owner != o || ++*seen > 1u << 30)
      vfail(v, "large list of %p broken at %p", (void *)o, (void *)l);
    else {
      php_counters lc = large_counts(v->h, l);
      counters_add(cnt, &lc, 1);
    }
  }
}

static void check_counts(vctx *v, const php_counters *have,
                         const php_counters *want, const void *who) {
  if (v->k.bad)
    return;
  if (have->pool_words != want->pool_words ||
      have->pool_live_words != want->pool_live_words ||
      have->pool_live_blocks != want->pool_live_blocks ||
      have->pool_frag_words != want->pool_frag_words ||
      have->large_words != want->large_words ||
      have->large_blocks != want->large_blocks ||
      have->medium_pool_words != want->medium_pool_words ||
      have->medium_live_words != want->medium_live_words ||
      have->pool_max_words < have->pool_words ||
      have->large_max_words < have->large_words)
    vfail(v,
          "counters of %p: pools %llu/%llu live %llu/%llu blocks %llu/%llu "
          "frag %llu/%llu large %llu/%llu",
          who, (unsigned long long)have->pool_words,
          (unsigned long long)want->pool_words,
          (unsigned long long)have->pool_live_words,
          (unsigned long long)want->pool_live_words,
          (unsigned long long)have->pool_live_blocks,
          (unsigned long long)want->pool_live_blocks,
          (unsigned long long)have->pool_frag_words,
          (unsigned long long)want->pool_frag_words,
          (unsigned long long)have->large_words,
          (unsigned long long)want->large_words);
}

int php_verify(php_heap *h, char *why, size_t why_size) {
  if (!ok_heap(h))
    return PH_EINVAL;
  if (php_tls_callback)
    return PH_ESTATE;
  if (why && why_size)
    why[0] = 0;
  vctx v = {.h = h};
  v.k.why = why;
  v.k.why_size = why_size;
  v.k.pool = pool_words_kept;
  struct ph_heap *core = h->core;
  pthread_mutex_lock(&core->lock);
  ph_check_heap_locked(core, &v.k);
  uint64_t pools = v.k.pools, larges = v.k.larges;
  /* lists and counters */
  size_t seen = 0, lseen = 0;
  for (struct php_owner *o = h->owners; o && !v.k.bad; o = o->next_owner) {
    php_counters cnt = {0};
    for (unsigned c = 0; c < core->nclasses; c++) {
      check_list(&v, o->avail[c], o, c, 1, 1, &seen, &cnt);
      check_list(&v, o->full[c], o, c, 0, 1, &seen, &cnt);
      check_list(&v, o->unswept_avail[c], o, c, 0, 0, &seen, &cnt);
      check_list(&v, o->unswept_full[c], o, c, 0, 0, &seen, &cnt);
    }
    check_larges(&v, o->large, o, &lseen, &cnt);
    check_larges(&v, o->unswept_large, o, &lseen, &cnt);
    php_counters have = o->c;
    counters_add_alloc(o, &have);
    check_counts(&v, &have, &cnt, o);
  }
  php_counters ocnt = {0};
  for (unsigned c = 0; c < core->nclasses && !v.k.bad; c++) {
    check_list(&v,
               atomic_load_explicit(&h->orph.avail[c], memory_order_relaxed),
               NULL, c, 1, 1, &seen, &ocnt);
    check_list(&v, h->orph.full[c], NULL, c, 0, 1, &seen, &ocnt);
  }
  check_larges(&v, h->orph.large, NULL, &lseen, &ocnt);
  check_counts(&v, &h->orph.c, &ocnt, "the orphans");
  if (!v.k.bad && (seen != pools || lseen != larges))
    vfail(&v, "%zu of %llu pools and %zu of %llu large blocks on lists", seen,
          (unsigned long long)pools, lseen, (unsigned long long)larges);
  pthread_mutex_unlock(&core->lock);
  return v.k.bad ? PH_ECORRUPT : PH_OK;
}
