/* ocaml/shared_heap.c -- poolheap's implementation of OCaml 5.3's shared-heap
 * interface (runtime/caml/shared_heap.h), on poolheap's pool layer
 * (include/poolheap_pools.h).
 *
 * ocaml/build.sh puts this file in place of runtime/shared_heap.c in a copy
 * of the OCaml 5.3.0 source tree, and poolheap's library sources under
 * runtime/poolheap/.  OCaml's marking, minor heap, ephemerons and finalisers
 * stay OCaml's; every block of the major heap lives in a poolheap pool (a
 * small class up to 128 words as stock's, a medium class's pool of several
 * units up to 32767 words, where stock would malloc a large block: such
 * blocks are compacted too) or a page-rounded poolheap large block:
 *
 *   one process-wide php_heap (pool size 32 KiB, OCaml's POOL_WSIZE * 8);
 *   one php_owner per domain (caml_init_shared_heap), orphaned when the
 *     domain terminates and adopted at the next cycle (caml_cycle_heap);
 *   blocks allocated with OCaml's MARKED colour; the pool layer frees the
 *     GARBAGE colour (php_set_colours when the colours rotate) and runs
 *     custom blocks' finalizers in its on_free callback;
 *   caml_compact_heap runs php_compact_stw on OCaml's own stop-the-world
 *     participants, with caml_global_barrier and OCaml's root scanning.
 *
 * Environment (read once, when the first domain starts):
 *   POOLHEAP_RELEASE=decommit|unmap|lazy|keep  how compaction gives memory
 *                                             back (default decommit)
 *   POOLHEAP_RETAIN=BYTES[k|m|g]      free pool bytes kept committed (0)
 *   POOLHEAP_HEAP_LIMIT=BYTES[k|m|g]  committed bytes at most (0: none);
 *                                     beyond it allocation raises
 *                                     Out_of_memory
 *   POOLHEAP_HUGE=off|thp|explicit    huge pages (off)
 *   POOLHEAP_ALLOC_SWEEP=grow|avail|all  what an allocation sweeps
 *                                     (php_config.alloc_sweep; grow)
 *   POOLHEAP_COMPACT_HELPERS=N        threads that move and update blocks
 *                                     beside the domains in Gc.compact, on
 *                                     the CPUs the domains leave idle
 *                                     (php_config.compact_helpers, 0..64;
 *                                     default: online CPUs - 1, at most 8)
 * OCAMLRUNPARAM is OCaml's and keeps its meaning.
 *
 * Written for poolheap from OCaml's documented contract; no code of OCaml's
 * shared_heap.c is copied.
 */
#define CAML_INTERNALS

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caml/addrmap.h"
#include "caml/custom.h"
#include "caml/domain.h"
#include "caml/fail.h"
#include "caml/fiber.h"
#include "caml/gc.h"
#include "caml/globroots.h"
#include "caml/major_gc.h"
#include "caml/memory.h"
#include "caml/memprof.h"
#include "caml/mlvalues.h"
#include "caml/platform.h"
#include "caml/roots.h"
#include "caml/runtime_events.h"
#include "caml/shared_heap.h"
#include "caml/startup_aux.h"
#include "caml/weak.h"

/* runtime/poolheap/ holds poolheap's include/ and library sources */
#include "poolheap/include/poolheap_pools.h"

#if HEADER_RESERVED_BITS > 0
/* The pool layer reads a block's size as header >> 10: it has no notion of
 * reserved high header bits (see ocaml/README.md, "What the pool layer
 * lacks"). */
#error "poolheap's OCaml binding needs HEADER_RESERVED_BITS = 0"
#endif

#define PHO_POOL_BYTES ((size_t)32768) /* OCaml's POOL_WSIZE (4096) words */

CAMLexport atomic_uintnat caml_compactions_count;

/* The three colours that rotate; NOT_MARKABLE (3) stays put.  Written only
 * by caml_cycle_heap_from_stw_single. */
struct global_heap_state caml_global_heap_state = {
    0 << HEADER_COLOR_SHIFT, /* MARKED */
    1 << HEADER_COLOR_SHIFT, /* UNMARKED */
    2 << HEADER_COLOR_SHIFT, /* GARBAGE: the pool layer's initial garbage */
};

struct caml_heap_state {
  php_owner *owner;
  caml_domain_state *domain;
  /* the orphans' maxima this domain adopted (pho_orph_pool_max and
   * pho_orph_large_max): stock folds them into the adopter's maxima */
  uint64_t adopted_pool_max, adopted_large_max;
};

/* ------------------------------------------------------------ the heap */

static php_heap *pho_heap;
static pthread_once_t pho_once = PTHREAD_ONCE_INIT;
static int pho_init_error;

/* A domain starts (php_owner_create) and terminates (php_owner_destroy)
 * outside the stop-the-world sections: it leaves the participants before
 * its heap is torn down, so other domains may be compacting or verifying
 * meanwhile, which the pool layer allows only with no owner inside another
 * call.  This lock keeps the two apart: participant 0 holds it across
 * php_compact_stw (the others wait for it in the first barrier), the
 * verifier across php_verify. */
static pthread_mutex_t pho_owners_lock = PTHREAD_MUTEX_INITIALIZER;

/* OCaml's maxima of the orphans, as stock keeps them: the peaks of the
 * domains orphaned since the last adoption (and the orphans' words at each
 * orphaning), moved to the adopter and zeroed when a cycle adopts them.
 * OCaml's top_heap_words sums the domains' maxima and the orphans'; the
 * pool layer's orphan maxima are of all time, so after an adoption they
 * would count a dead domain's pools twice (in the adopter's maximum and in
 * the orphans'): binary trees on 2 domains reported 39.1M top_heap_words
 * against stock's 28.0M with the same heap.  A leaf lock: nothing else is
 * taken while it is held but the pool layer's own. */
static pthread_mutex_t pho_orph_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t pho_orph_pool_max, pho_orph_large_max;

static uint64_t pho_max(uint64_t a, uint64_t b) {
  return a > b ? a : b;
}

static size_t pho_env_bytes(const char *name, size_t dflt) {
  const char *s = getenv(name);
  if (!s || !*s)
    return dflt;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(s, &end, 10);
  unsigned long long mul = 1;
  switch (*end) {
  case 'k':
  case 'K':
    mul = 1ull << 10;
    end++;
    break;
  case 'm':
  case 'M':
    mul = 1ull << 20;
    end++;
    break;
  case 'g':
  case 'G':
    mul = 1ull << 30;
    end++;
    break;
  default:
    break;
  }
  if (errno || end == s || *end) {
    fprintf(stderr, "poolheap: ignoring %s=%s (bytes, k, m or g)\n", name, s);
    return dflt;
  }
  return (size_t)(n * mul);
}

static unsigned pho_env_count(const char *name, unsigned dflt, unsigned max) {
  const char *s = getenv(name);
  if (!s || !*s)
    return dflt;
  char *end;
  errno = 0;
  unsigned long n = strtoul(s, &end, 10);
  if (errno || end == s || *end || n > max) {
    fprintf(stderr, "poolheap: ignoring %s=%s (0..%u)\n", name, s, max);
    return dflt;
  }
  return (unsigned)n;
}

static int pho_env_choice(const char *name, const char *const *names, int n,
                          int dflt) {
  const char *s = getenv(name);
  if (!s || !*s)
    return dflt;
  for (int i = 0; i < n; i++)
    if (!strcmp(s, names[i]))
      return i;
  fprintf(stderr, "poolheap: ignoring %s=%s\n", name, s);
  return dflt;
}

/* The pool layer's on_free, for custom blocks only (on_free_tags): a block
 * of the garbage colour is about to be freed (by its owner's sweep, an
 * allocation's sweep, an orphaning or a compaction).  Its finalizer runs
 * here, on the sweeping domain's thread, as OCaml's sweeper runs it.  The
 * words freed reach swept_words through php_owner_sweep_work. */
static void pho_on_free(ph_value block, void *user) {
  (void)user;
  value v = (value)block;
  void (*final_fun)(value) = Custom_ops_val(v)->finalize;
  if (final_fun != NULL)
    final_fun(v);
}

static void pho_create_heap(void) {
  static const char *const release[] = {"decommit", "unmap", "lazy", "keep"};
  static const char *const huge[] = {"off", "thp", "explicit"};
  /* php_config.alloc_sweep's values, in order */
  static const char *const alloc_sweep[] = {"all", "avail", "grow"};
  php_config cfg;
  php_config_init(&cfg);
  cfg.pool_size = PHO_POOL_BYTES;
  cfg.release = (ph_release_mode)pho_env_choice("POOLHEAP_RELEASE", release, 4,
                                                PH_RELEASE_DECOMMIT);
  cfg.huge_pages =
      (ph_huge_mode)pho_env_choice("POOLHEAP_HUGE", huge, 3, PH_HUGE_OFF);
  cfg.retain = pho_env_bytes("POOLHEAP_RETAIN", 0);
  cfg.heap_limit = pho_env_bytes("POOLHEAP_HEAP_LIMIT", 0);
  cfg.on_free = pho_on_free;
  cfg.on_free_user = NULL;
  cfg.on_free_tags[Custom_tag / 64] = (uint64_t)1 << (Custom_tag % 64);
  /* OCaml's allocator sweeps only the pools that had room; with the full
   * ones left to caml_sweep the heap grows during a cycle's sweep as
   * stock's does, and so does the heap size OCaml paces its cycles by.
   * But where stock would grow its resident heap (no free pool left) the
   * full pools of the class are swept first (pools.alloc.grow): their
   * garbage serves before new memory does.  POOLHEAP_ALLOC_SWEEP=avail is
   * stock's policy alone, all sweeps every full pool first. */
  cfg.alloc_sweep = (unsigned)pho_env_choice(
      "POOLHEAP_ALLOC_SWEEP", alloc_sweep, 3, PHP_ALLOC_SWEEP_BEFORE_GROW);
  /* A single-domain program compacts on one thread otherwise: the layer's
   * helpers take the moves and the heap's update on the other CPUs
   * (pho_scan_block needs no domain state: it runs on them too). */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned helpers = cpus > 1 ? (unsigned)(cpus - 1) : 0;
  cfg.compact_helpers =
      pho_env_count("POOLHEAP_COMPACT_HELPERS", helpers < 8 ? helpers : 8,
                    PHP_COMPACT_HELPERS_MAX);
  pho_init_error = php_heap_create(&cfg, &pho_heap);
  if (pho_init_error == PH_OK)
    pho_init_error = php_set_colours(pho_heap, caml_global_heap_state.GARBAGE >>
                                                   HEADER_COLOR_SHIFT);
}

struct caml_heap_state *caml_init_shared_heap(void) {
  pthread_once(&pho_once, pho_create_heap);
  if (pho_init_error != PH_OK) {
    caml_gc_message(0x01, "poolheap: creating the heap failed: %s\n",
                    ph_strerror(pho_init_error));
    return NULL;
  }
  struct caml_heap_state *heap =
      caml_stat_alloc_noexc(sizeof(struct caml_heap_state));
  if (heap == NULL)
    return NULL;
  pthread_mutex_lock(&pho_owners_lock);
  int rc = php_owner_create(pho_heap, &heap->owner);
  pthread_mutex_unlock(&pho_owners_lock);
  if (rc != PH_OK) {
    caml_stat_free(heap);
    return NULL;
  }
  heap->domain = Caml_state_opt;
  heap->adopted_pool_max = heap->adopted_large_max = 0;
  return heap;
}

static php_counters pho_counters(struct caml_heap_state *local);

/* A terminating domain: its owner finishes sweeping (finalizers run here),
 * then its pools and large blocks become orphans, adopted by the domains
 * at the next cycle; its counters go to the orphans' with them. */
void caml_teardown_shared_heap(struct caml_heap_state *heap) {
  php_counters mine = pho_counters(heap), orph;
  pthread_mutex_lock(&pho_owners_lock);
  int rc = php_owner_destroy(heap->owner);
  pthread_mutex_unlock(&pho_owners_lock);
  if (rc != PH_OK)
    caml_fatal_error("poolheap: orphaning a domain's pools: %s",
                     ph_strerror(rc));
  /* the orphans' maxima take this domain's peaks (pho_orph_lock) */
  pthread_mutex_lock(&pho_orph_lock);
  if (php_orphan_counters(pho_heap, &orph) == PH_OK) {
    pho_orph_pool_max = pho_max(pho_orph_pool_max,
                                pho_max(mine.pool_max_words, orph.pool_words));
    pho_orph_large_max = pho_max(
        pho_orph_large_max, pho_max(mine.large_max_words, orph.large_words));
  }
  pthread_mutex_unlock(&pho_orph_lock);
  caml_gc_log("Shutdown shared heap (pools orphaned)");
  caml_stat_free(heap);
}

/* ----------------------------------------------------------- allocation */

value *caml_shared_try_alloc(struct caml_heap_state *local, mlsize_t wosize,
                             tag_t tag, reserved_t reserved) {
  CAMLassert(wosize > 0);
  CAMLassert(tag != Infix_tag);
  CAML_EV_ALLOC(wosize);
  status colour = caml_global_heap_state.MARKED;
  ph_value v =
      php_alloc(local->owner, wosize, (unsigned)(colour | (header_t)tag));
  if (v == 0)
    return NULL; /* PH_ENOMEM: the caller raises Out_of_memory */
  value *hp = (value *)v - 1;
  /* php_alloc wrote wosize << 10 | colour << 8 | tag: OCaml's header, its
   * reserved bits being none in this configuration (HEADER_RESERVED_BITS
   * is 0, checked above), so it is not written again */
  (void)reserved;
  CAMLassert(Hd_hp(hp) ==
             Make_header_with_reserved(wosize, tag, colour, reserved));
  /* The initialising writes happen-before a marker's read through the
   * address dependency, which TSan does not see (OCaml #12894). */
  CAML_TSAN_ANNOTATE_HAPPENS_BEFORE(hp);
#ifdef DEBUG
  for (mlsize_t i = 0; i < wosize; i++)
    Field((value)v, i) = Debug_free_major;
#endif
  return hp;
}

/* ------------------------------------------------------------- sweeping */

static void pho_verify_swept(struct caml_heap_state *local);

intnat caml_sweep(struct caml_heap_state *local, intnat work) {
  intnat left = php_sweep(local->owner, work);
  /* the sweeping the allocations did since the last call counts as major
   * work, as stock's allocator counts it; it is taken here, in the domain's
   * next caml_sweep (allocations sweep only while something is unswept,
   * and the caml_sweep that finishes the sweep comes after them); what the
   * sweeps freed is the domain's swept_words */
  intptr_t alloc_work = 0;
  uint64_t freed = 0;
  if (php_owner_sweep_work(local->owner, &alloc_work, &freed) == PH_OK) {
    Caml_state->major_work_done_between_slices += alloc_work;
    Caml_state->swept_words += (intnat)freed;
  }
  if (caml_params->verify_heap && left > 0)
    pho_verify_swept(local);
  return left;
}

/* One domain, inside the stop-the-world section: the colours rotate and the
 * pool layer frees the new GARBAGE colour from now on. */
void caml_cycle_heap_from_stw_single(void) {
  struct global_heap_state old = caml_global_heap_state;
  caml_global_heap_state.UNMARKED = old.MARKED;
  caml_global_heap_state.GARBAGE = old.UNMARKED;
  caml_global_heap_state.MARKED = old.GARBAGE; /* swept: no block has it */
  int rc = php_set_colours(pho_heap, caml_global_heap_state.GARBAGE >>
                                         HEADER_COLOR_SHIFT);
  if (rc != PH_OK)
    caml_fatal_error("poolheap: php_set_colours: %s", ph_strerror(rc));
}

/* Every domain, after caml_cycle_heap_from_stw_single: orphans are adopted
 * and every pool and large block becomes unswept. */
void caml_cycle_heap(struct caml_heap_state *local) {
  caml_gc_log("Cycling heap [%02d]", local->domain ? local->domain->id : -1);
  pthread_mutex_lock(&pho_orph_lock);
  int rc = php_owner_adopt(local->owner);
  if (rc == PH_OK) { /* the orphans' maxima move to the adopter */
    local->adopted_pool_max =
        pho_max(local->adopted_pool_max, pho_orph_pool_max);
    local->adopted_large_max =
        pho_max(local->adopted_large_max, pho_orph_large_max);
    pho_orph_pool_max = pho_orph_large_max = 0;
  }
  pthread_mutex_unlock(&pho_orph_lock);
  if (rc == PH_OK)
    rc = php_cycle(local->owner);
  if (rc != PH_OK)
    caml_fatal_error("poolheap: cycling the heap: %s", ph_strerror(rc));
}

/* ------------------------------------------------------------- visiting */

struct pho_redarken {
  scanning_action f;
  void *fdata;
  status marked;
};

static void pho_redarken_block(ph_value block, ph_value hd, void *user) {
  struct pho_redarken *r = user;
  if (Has_status_hd((header_t)hd, r->marked))
    r->f(r->fdata, (value)block, 0);
}

/* poolheap has no struct pool of OCaml's: the pointer given here is taken
 * as an address inside the pool (any block of it).  Unused by 5.3's
 * marking (its mark stack never overflows into pools), kept for the
 * interface. */
void caml_redarken_pool(struct pool *r, scanning_action f, void *fdata) {
  struct pho_redarken st = {f, fdata, caml_global_heap_state.MARKED};
  php_visit_pool_of(pho_heap, (ph_value)r, pho_redarken_block, &st);
}

/* ----------------------------------------------------------- statistics */

static void pho_stats_of(const php_counters *c, struct heap_stats *s) {
  s->pool_words = (intnat)c->pool_words;
  s->pool_max_words = (intnat)c->pool_max_words;
  s->pool_live_words = (intnat)c->pool_live_words;
  s->pool_live_blocks = (intnat)c->pool_live_blocks;
  s->pool_frag_words = (intnat)c->pool_frag_words;
  s->large_words = (intnat)c->large_words;
  s->large_max_words = (intnat)c->large_max_words;
  s->large_blocks = (intnat)c->large_blocks;
}

static php_counters pho_counters(struct caml_heap_state *local) {
  php_counters c;
  if (php_owner_counters(local->owner, &c) != PH_OK)
    memset(&c, 0, sizeof c);
  c.pool_max_words = pho_max(c.pool_max_words, local->adopted_pool_max);
  c.large_max_words = pho_max(c.large_max_words, local->adopted_large_max);
  return c;
}

void caml_collect_heap_stats_sample(struct caml_heap_state *local,
                                    struct heap_stats *sample) {
  php_counters c = pho_counters(local);
  pho_stats_of(&c, sample);
}

void caml_accum_orphan_heap_stats(struct heap_stats *acc) {
  php_counters c = {0};
  struct heap_stats s;
  if (pho_heap == NULL)
    return;
  pthread_mutex_lock(&pho_orph_lock);
  int rc = php_orphan_counters(pho_heap, &c);
  /* OCaml's orphan maxima (pho_orph_lock), not the pool layer's */
  c.pool_max_words = pho_max(pho_orph_pool_max, c.pool_words);
  c.large_max_words = pho_max(pho_orph_large_max, c.large_words);
  pthread_mutex_unlock(&pho_orph_lock);
  if (rc != PH_OK)
    return;
  pho_stats_of(&c, &s);
  caml_accum_heap_stats(acc, &s);
}

/* OCaml's pacing (major_gc.c: a cycle's work, custom blocks' ratio, the
 * mark stack's bound) scales with this.  Stock mallocs blocks of 129-32767
 * words and counts their words alone; here they live in medium pools, whose
 * free slots would lengthen every cycle (more floating garbage, a higher
 * peak): they count as their blocks' words, as on stock. */
uintnat caml_heap_size(struct caml_heap_state *local) {
  php_counters c = pho_counters(local);
  return Bsize_wsize(c.pool_words - c.medium_pool_words + c.medium_live_words +
                     c.large_words);
}

uintnat caml_top_heap_words(struct caml_heap_state *local) {
  php_counters c = pho_counters(local);
  return c.pool_max_words + c.large_max_words;
}

uintnat caml_heap_blocks(struct caml_heap_state *local) {
  php_counters c = pho_counters(local);
  return c.pool_live_blocks + c.large_blocks;
}

/* ---------------------------------------------------------------- atoms */

/* The 256 zero-sized blocks, outside the heap and never marked: header i
 * is atom i's, its value the address just after it. */
#define PHO_ATOM(i) Make_header(0, (i), NOT_MARKABLE)
#define PHO_ATOM4(i)                                                           \
  PHO_ATOM(i), PHO_ATOM((i) + 1), PHO_ATOM((i) + 2), PHO_ATOM((i) + 3)
#define PHO_ATOM16(i)                                                          \
  PHO_ATOM4(i), PHO_ATOM4((i) + 4), PHO_ATOM4((i) + 8), PHO_ATOM4((i) + 12)
#define PHO_ATOM64(i)                                                          \
  PHO_ATOM16(i), PHO_ATOM16((i) + 16), PHO_ATOM16((i) + 32),                   \
      PHO_ATOM16((i) + 48)
static const header_t pho_atoms[256] = {PHO_ATOM64(0), PHO_ATOM64(64),
                                        PHO_ATOM64(128), PHO_ATOM64(192)};

CAMLexport value caml_atom(tag_t tag) {
  return Val_hp(&pho_atoms[tag]);
}

/* ----------------------------------------------------------- compaction */

/* OCaml's scanning_action over the pool layer's visit function. */
struct pho_visit {
  ph_visit_fn visit;
  void *ctx;
};

static void pho_visit_action(void *data, value v, volatile value *p) {
  struct pho_visit *pv = data;
  (void)v;
  pv->visit((ph_value *)p, pv->ctx);
}

/* The fields of a block that hold values: a continuation's stack, a
 * closure's environment (after its code pointers), every field of the
 * other scannable tags, nothing of raw data.  With the scan rule set in
 * caml_compact_heap only closures and continuations come here.  Infix
 * pointers into a closure are interior pointers, which the pool layer
 * forwards itself. */
static void pho_scan_block(ph_value block, ph_visit_fn visit, void *ctx,
                           void *user) {
  (void)user;
  value v = (value)block;
  header_t hd = Hd_val(v);
  tag_t tag = Tag_hd(hd);
  if (tag == Cont_tag) {
    struct stack_info *stk = Ptr_val(Field(v, 0));
    if (stk != NULL) {
      struct pho_visit pv = {visit, ctx};
      caml_scan_stack(&pho_visit_action, (scanning_action_flags)0, &pv, stk, 0);
    }
    return;
  }
  if (tag >= No_scan_tag)
    return;
  mlsize_t i = 0, n = Wosize_hd(hd);
  if (tag == Closure_tag)
    i = Start_env_closinfo(Closinfo_val(v));
  for (; i < n; i++)
    visit((ph_value *)&Field(v, i), ctx);
}

/* An ephemeron list of the domain: the list's head, every ephemeron's data
 * and keys, and its link to the next (ephemerons are Abstract_tag blocks:
 * pho_scan_block visits none of their fields). */
static void pho_scan_ephe_list(volatile value *link, ph_visit_fn visit,
                               void *ctx) {
  while (*link != 0 && *link != Val_unit) {
    visit((ph_value *)link, ctx);
    value e = *link;
    mlsize_t n = Wosize_val(e);
    visit((ph_value *)&Field(e, CAML_EPHE_DATA_OFFSET), ctx);
    for (mlsize_t i = CAML_EPHE_FIRST_KEY; i < n; i++)
      visit((ph_value *)&Field(e, i), ctx);
    link = &Field(e, CAML_EPHE_LINK_OFFSET);
  }
}

/* Participant part's roots (it runs on that domain's thread): the domain's
 * local roots, stacks and finalisers, its memprof roots (weak ones
 * included), its ephemeron lists; participant 0 also the global roots. */
static void pho_scan_roots(unsigned part, ph_visit_fn visit, void *ctx,
                           void *user) {
  (void)user;
  struct pho_visit pv = {visit, ctx};
  caml_domain_state *d = Caml_state;
  caml_do_roots(&pho_visit_action, (scanning_action_flags)0, &pv, d, 1);
  caml_memprof_scan_roots(&pho_visit_action, (scanning_action_flags)0, &pv, d,
                          1);
  if (part == 0)
    caml_scan_global_roots(&pho_visit_action, &pv);
  pho_scan_ephe_list(&d->ephe_info->todo, visit, ctx);
  pho_scan_ephe_list(&d->ephe_info->live, visit, ctx);
}

/* The pool layer tells each participant where its phases begin and end
 * (php_compact_ops.on_phase); runtime events' spans follow stock 5.3's:
 * evacuate (sweep, plan and moves), forward (the update) and release. */
struct pho_compact_ctx {
  int nparts;
};

static void pho_barrier(void *user) {
  struct pho_compact_ctx *c = user;
  caml_global_barrier(c->nparts);
}

static void pho_on_phase(unsigned phase, int begin, unsigned part, void *user) {
  (void)part;
  (void)user;
  ev_runtime_phase ph = phase == PHP_COMPACT_EVACUATE ? EV_COMPACT_EVACUATE
                        : phase == PHP_COMPACT_UPDATE ? EV_COMPACT_FORWARD
                                                      : EV_COMPACT_RELEASE;
  if (begin)
    CAML_EV_BEGIN(ph);
  else
    CAML_EV_END(ph);
}

/* Called by every participant of stw_cycle_all_domains after
 * caml_cycle_heap: the minor heaps are empty, marking has not started, every
 * pool is unswept; blocks of the GARBAGE colour are garbage, every other
 * colour is live (UNMARKED the reachable ones, NOT_MARKABLE). */
void caml_compact_heap(caml_domain_state *domain_state, int participating_count,
                       caml_domain_state **participants) {
  caml_gc_log("Compacting heap start");
  CAML_EV_BEGIN(EV_COMPACT);
  unsigned part = 0;
  while ((int)part < participating_count && participants[part] != domain_state)
    part++;
  if ((int)part == participating_count)
    caml_fatal_error("poolheap: compaction by a domain not participating");
  unsigned garbage = caml_global_heap_state.GARBAGE >> HEADER_COLOR_SHIFT;
  struct pho_compact_ctx ctx = {participating_count};
  php_compact_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.nparts = (unsigned)participating_count;
  ops.barrier = pho_barrier;
  ops.scan_roots = pho_scan_roots;
  ops.scan_block = pho_scan_block;
  ops.live_colours = 0xfu & ~(1u << garbage);
  ops.user = &ctx;
  /* OCaml's layout: every field of a block below No_scan_tag is a value,
   * except closures' code pointers and continuations' stacks, which
   * pho_scan_block visits; the layer updates the rest inline */
  ops.no_scan_tag = No_scan_tag;
  ops.scan_tags[Closure_tag / 64] |= (uint64_t)1 << (Closure_tag % 64);
  ops.scan_tags[Cont_tag / 64] |= (uint64_t)1 << (Cont_tag % 64);
  ops.on_phase = pho_on_phase;
  if (part == 0)
    pthread_mutex_lock(&pho_owners_lock);
  int rc = php_compact_stw(pho_heap, part, &ops);
  if (part == 0)
    pthread_mutex_unlock(&pho_owners_lock);
  if (rc != PH_OK) {
    /* PH_EINVAL: a block of no known colour (nothing moved); PH_ENOMEM: no
     * scratch memory (nothing changed).  The heap is intact either way. */
    caml_gc_message(0x01, "poolheap: compaction refused: %s\n",
                    ph_strerror(rc));
  }
  if (part == 0 && rc == PH_OK)
    atomic_fetch_add(&caml_compactions_count, 1);
  caml_gc_log("Compacting heap complete");
  CAML_EV_END(EV_COMPACT);
}

/* --------------------------------------------------------- verification */

/* After the colours rotate and before marking (stw_cycle_all_domains, with
 * OCAMLRUNPARAM=V=1): everything reachable is UNMARKED or NOT_MARKABLE, and
 * the pool layer's own invariants hold.  Every domain runs it on its own
 * roots, concurrently; php_verify runs under pho_owners_lock, one domain
 * at a time.
 */
struct pho_verify {
  value *stack;
  uintnat len, sp;
  struct addrmap seen;
};

static void pho_verify_push(void *data, value v, volatile value *p) {
  struct pho_verify *st = data;
  (void)p;
  if (!Is_block(v))
    return;
  if (st->sp == st->len) {
    st->len = st->len ? 2 * st->len : 1024;
    st->stack = caml_stat_resize(st->stack, st->len * sizeof(value));
  }
  st->stack[st->sp++] = v;
}

static void pho_verify_block(struct pho_verify *st, value v) {
  if (Tag_val(v) == Infix_tag) {
    v -= Infix_offset_val(v);
    if (Tag_val(v) != Closure_tag)
      caml_fatal_error("poolheap verify: infix block outside a closure");
  }
  value *pos = caml_addrmap_insert_pos(&st->seen, v);
  if (*pos != ADDRMAP_NOT_PRESENT)
    return;
  *pos = 1;
  header_t hd = Hd_val(v);
  if (Has_status_hd(hd, NOT_MARKABLE))
    return;
  if (!Has_status_hd(hd, caml_global_heap_state.UNMARKED))
    caml_fatal_error(
        "poolheap verify: reachable block %p with colour %d "
        "(UNMARKED is %d)",
        (void *)v, (int)(Color_hd(hd) >> HEADER_COLOR_SHIFT),
        (int)(caml_global_heap_state.UNMARKED >> HEADER_COLOR_SHIFT));
  tag_t tag = Tag_hd(hd);
  if (tag == Cont_tag) {
    struct stack_info *stk = Ptr_val(Field(v, 0));
    if (stk != NULL)
      caml_scan_stack(&pho_verify_push, (scanning_action_flags)0, st, stk, 0);
  } else if (tag < No_scan_tag) {
    mlsize_t i = tag == Closure_tag ? Start_env_closinfo(Closinfo_val(v)) : 0;
    for (; i < Wosize_hd(hd); i++)
      pho_verify_push(st, Field(v, i), 0);
  }
}

void caml_verify_heap_from_stw(caml_domain_state *domain) {
  struct pho_verify st = {NULL, 0, 0, ADDRMAP_INIT};
  caml_do_roots(&pho_verify_push, (scanning_action_flags)0, &st, domain, 1);
  caml_scan_global_roots(&pho_verify_push, &st);
  while (st.sp > 0)
    pho_verify_block(&st, st.stack[--st.sp]);
  caml_addrmap_clear(&st.seen);
  caml_stat_free(st.stack);

  char why[256];
  pthread_mutex_lock(&pho_owners_lock);
  int rc = php_verify(pho_heap, why, sizeof why);
  pthread_mutex_unlock(&pho_owners_lock);
  if (rc != PH_OK)
    caml_fatal_error("poolheap verify: %s: %s", ph_strerror(rc),
                     rc == PH_ECORRUPT ? why : "");
}

/* Sweeping just finished (OCAMLRUNPARAM=V=1): the domain's counters add
 * up.  The walk of every slot is php_verify's, at the next cycle. */
static void pho_verify_swept(struct caml_heap_state *local) {
  php_counters c = pho_counters(local);
  if (c.pool_live_words + c.pool_frag_words > c.pool_words ||
      c.pool_words > c.pool_max_words || c.large_words > c.large_max_words)
    caml_fatal_error("poolheap verify: counters do not add up after sweeping");
}
