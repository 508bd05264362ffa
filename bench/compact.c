/* bench/compact.c -- poolheap's compaction benchmark (issue 3, issue 5).
 *
 * Builds the frag(N, D, K) shape of shared context workloads.md with poolheap,
 * exactly as the peers in bench/peers/ build it (same seeded generator, size
 * mix, fates and pointer choices from bench/peers/peer_common.h), so that the
 * checksum for a seed equals the peers'.  Then, on domain 0:
 *   ph_collect (collect_ms, mark_ms, sweep_ms), RSS / maps / checksum,
 *   ph_compact (compact_ms; evacuate/update/release from ph_stats), RSS /
 *   maps / checksum, ph_verify, ph_collect and RSS again (rss_next_gc: what
 *   the compaction gave back must stay back), and a second ph_compact that
 *   must move 0.
 * The other domains take part: they poll ph_safepoint in a loop, or (with
 * --domains-compacting 1) wait inside ph_blocking_enter/leave.
 * M1 (issue 11) is W1's shape with medium blocks: n 10000, block sizes of
 * 2-64 KiB (frag_fields_medium, bench/frag_build.h; --medium on a custom
 * shape), about W1's bytes; no peer builds it, so its checksum is its own.
 * One JSON line per run on stdout; exit status 0 only if every run was ok.
 *
 *   compact [--shape W1|W2|W50|Wskew|Wbig|M1] [--n N] [--domains D] [--keep K]
 *           [--skew] [--medium] [--seed S] [--runs R] [--scope
 * global|per-domain]
 *           [--release decommit|unmap|lazy|keep] [--domains-compacting 1|2]
 *           [--gc-percent P] [--huge off|transparent|explicit] [--quick]
 *           [--pin PERMILLE]  (pin that share of the survivors first)
 *           [--census 1]  (ph_census's rows after the compaction, in the
 *                          JSON: where the pools' committed bytes go)
 *           [--pool-size BYTES]  (cfg.pool_size; default the library's)
 */
#include <poolheap.h>

#include "bench/frag_build.h"
#include "bench/peers/peer_common.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <stdatomic.h>

#define MAXD 64

typedef struct bench_opts {
  const char *shape;
  long long n;
  int domains, keep, skew, compacting, quick;
  int medium; /* M1: sizes of 2-64 KiB (frag_fields_medium) */
  unsigned gc_percent, helpers;
  size_t pool_size; /* --pool-size: cfg.pool_size (0: the default) */
  unsigned pin;     /* permille of the surviving blocks pinned (gc.pin) */
  int census;       /* --census 1: ph_census's rows after the compaction */
  uint64_t seed;
  ph_release_mode release;
  ph_compact_scope scope;
  ph_huge_mode huge;
} bench_opts;

typedef struct part {
  unsigned d;
  size_t n;
  ph_value *rslot; /* this domain's handle-scope slot holding R */
  uint64_t nkept, kept_bytes;
} part;

typedef struct result {
  double build_ms, collect_ms, compact_ms, mark_ms, sweep_ms;
  double evacuate_ms, update_ms, release_ms, cmark_ms, csweep_ms, stw_ms;
  long long rss_built, rss_before, rss_after;
  /* RSS after the collection that follows the compaction (the pages a
   * compaction gave back must stay back: compact.pin.floor) */
  long long rss_next_gc;
  long maps_built, maps_before, maps_after;
  uint64_t live_bytes, live_blocks, evacuated_bytes, evacuated_blocks;
  uint64_t evacuated_pools, released_bytes, second_evacuated_bytes;
  uint64_t committed_before, committed_after, heap_maps_before, heap_maps_after;
  uint64_t checksum_before, checksum_after;
  int verify_ok, participants;
  uint64_t pinned;
  /* --pin with --census: the pools holding pinned blocks, and the bytes of
   * their pages that hold a pinned block's slot (the pages a compaction
   * must keep: compact.pin.floor; a pool's header is moved out of line
   * when its page holds none, heap.pool.ool) */
  uint64_t pin_pools, pin_floor_bytes;
  /* and what the pools need at least: those pages, then per class whole
   * pools for the live blocks those pages cannot hold */
  uint64_t pin_bound_bytes;
  char why[256];
  char error[256];
} result;

static bench_opts opt;
static ph_census_class census_rows[64]; /* --census: every class */
static unsigned ncensus;
static size_t pool_size; /* the heap's (cfg.pool_size) */
static ph_heap *heap;
static part parts[MAXD];
static result res;
static pthread_barrier_t bar;
static atomic_int done;
static double t_start;

static void fail(const char *what, int err) {
  if (res.error[0] == 0)
    snprintf(res.error, sizeof res.error, "%s: %s", what, ph_strerror(err));
}

static double ns_ms(uint64_t ns) {
  return (double)ns / 1e6;
}

/* Wait for the others without holding up a collection. */
static void wait_blocking(ph_domain *d) {
  ph_blocking_enter(d);
  pthread_barrier_wait(&bar);
  ph_blocking_leave(d);
}

/* Build this domain's part: R, the blocks, then R[i] = immediate 0 for the
 * dropped ones.  Same draws in the same order as frag_c.c's build_part. */
static int build_part(ph_domain *d, part *p) {
  size_t n = p->n;
  peer_rng rng = peer_rng_for(opt.seed, p->d);
  p->rslot = ph_root(d, PH_UNIT);
  if (!p->rslot)
    return fail("ph_root", PH_ENOMEM), -1;
  p->nkept = p->kept_bytes = 0;
  if (n == 0)
    return 0; /* no root array at all: nothing of this part is live */
  ph_value r = ph_alloc(d, n, 0);
  if (!r)
    return fail("ph_alloc(root array)", ph_last_error(d)), -1;
  *p->rslot = r;
  for (size_t i = 0; i < n; i++)
    ph_set_field(r, i, ph_val_int(0));
  size_t bits_len = n / 8 + 1;
  uint8_t *bits = peer_aux_alloc(bits_len);
  uint64_t live = 0;
  size_t nkept = 0;
  int rc = 0;
  int err = frag_build_mix(d, p->rslot, n, opt.keep, &rng,
                           opt.medium ? frag_fields_medium : peer_fields, bits,
                           &nkept, &live, NULL, NULL);
  if (err != PH_OK) {
    fail("ph_alloc(block)", err);
    rc = -1;
  }
  if (rc == 0) {
    r = *p->rslot;
    for (size_t i = 0; i < n; i++)
      if (!((bits[i >> 3] >> (i & 7)) & 1))
        ph_set_field(r, i, ph_val_int(0));
    p->nkept = nkept;
    p->kept_bytes = live;
  }
  peer_aux_free(bits, bits_len);
  return rc;
}

/* frag_c.c's checksum: every surviving block in root order, domain by domain:
 * field count, immediates, and the field count of each pointed-to block.
 * Called by domain 0 while nothing can collect. */
static uint64_t checksum(void) {
  uint64_t h = PEER_HASH_INIT;
  for (int d = 0; d < opt.domains; d++)
    h = frag_checksum(h, *parts[d].rslot, parts[d].n);
  return h & PEER_HASH_MASK;
}

/* --pin P: pin P per mille of the surviving blocks (chosen by their index:
 * the same ones every run of a seed).  Pinned pools are kept by the
 * compaction; the figure is rss_after against a run without pins. */
static int pin_chosen(int k, size_t i) {
  uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull + (uint64_t)k;
  x ^= x >> 31;
  return (x * 0xbf58476d1ce4e5b9ull >> 33) % 1000 < opt.pin;
}

static void pin_some(ph_domain *d) {
  res.pinned = 0;
  for (int k = 0; opt.pin && k < opt.domains; k++) {
    ph_value r = *parts[k].rslot;
    for (size_t i = 0; i < parts[k].n; i++) {
      ph_value b = ph_field(r, i);
      if (ph_is_block(b) && pin_chosen(k, i)) {
        if (ph_pin(d, b) != PH_OK)
          return fail("ph_pin", ph_last_error(d));
        res.pinned++;
      }
    }
  }
}

static void census_row(const ph_census_class *c, void *user) {
  (void)user;
  if (ncensus < sizeof census_rows / sizeof *census_rows)
    census_rows[ncensus++] = *c;
}

static int by_addr(const void *a, const void *b) {
  uintptr_t p = *(const uintptr_t *)a, q = *(const uintptr_t *)b;
  return p < q ? -1 : p > q;
}

/* --pin with --census, after the compaction (pinned blocks have not
 * moved; pin_some's choice found again, so that nothing is allocated
 * before rss_after): res.pin_pools and res.pin_floor_bytes from the pinned
 * blocks' addresses, sizes and classes (the census rows), the heap's pool
 * size and the page size.  A slot's bytes start at its header word. */
static void pin_floor(void) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t *pages = malloc(res.pinned * 3 * sizeof *pages);
  uintptr_t *pools = malloc(res.pinned * sizeof *pools);
  /* the bound: per page of a pinned slot, its class and first slot */
  uintptr_t *bp = malloc(res.pinned * 2 * 3 * sizeof *bp);
  if (!pages || !pools || !bp || ncensus == 0 || pool_size / 64 > pg) {
    free(pages);
    free(pools);
    free(bp);
    return;
  }
  size_t nb = 0;
  size_t np = 0, nq = 0;
  for (int k = 0; k < opt.domains; k++)
    for (size_t i = 0; i < parts[k].n; i++) {
      ph_value b = ph_field(*parts[k].rslot, i);
      if (!ph_is_block(b) || !pin_chosen(k, i) || nq == res.pinned)
        continue;
      uintptr_t v = (uintptr_t)b;
      size_t wo = ph_wosize(b), sb = 0, cls = 0;
      for (unsigned c = 0; c < ncensus && !sb; c++)
        if (census_rows[c].max_wosize >= wo)
          sb = census_rows[c].block_words * 8, cls = c;
      if (!sb)
        continue; /* a large block */
      uintptr_t pool = v & ~(uintptr_t)(pool_size - 1), a = v - 8;
      pools[nq++] = pool;
      for (uintptr_t q = a & ~(uintptr_t)(pg - 1); q < a + sb; q += pg) {
        pages[np++] = q;
        bp[nb++] = q;
        bp[nb++] = cls << 32 | (a - pool) % sb; /* slots' phase in it */
      }
    }
  /* the bound: distinct pages of pinned slots, the slots of their class
   * wholly inside them, then whole pools per class for the rest */
  qsort(bp, nb / 2, 2 * sizeof *bp, by_addr);
  uint64_t room[64] = {0};
  for (size_t i = 0; i < nb; i += 2) {
    if (i && bp[i] == bp[i - 2])
      continue;
    unsigned c = (unsigned)(bp[i + 1] >> 32);
    size_t sb = census_rows[c].block_words * 8;
    size_t off = (bp[i] - (bp[i] & ~(uintptr_t)(pool_size - 1))) % sb;
    size_t first = ((bp[i + 1] & 0xffffffffu) + sb - off) % sb;
    res.pin_bound_bytes += pg;
    room[c] += first >= pg ? 0 : (pg - first) / sb * sb;
  }
  for (unsigned c = 0; c < ncensus; c++) {
    const ph_census_class *r = &census_rows[c];
    if (!r->pools)
      continue;
    size_t sb = r->block_words * 8, live = r->live_blocks * sb;
    size_t per =
        (r->live_blocks + r->free_blocks + r->hole_blocks) / r->pools * sb;
    if (live > room[c])
      res.pin_bound_bytes += (live - room[c] + per - 1) / per * pool_size;
  }
  free(bp);
  qsort(pages, np, sizeof *pages, by_addr);
  qsort(pools, nq, sizeof *pools, by_addr);
  for (size_t i = 0; i < np; i++)
    res.pin_floor_bytes += (i == 0 || pages[i] != pages[i - 1]) ? pg : 0;
  for (size_t i = 0; i < nq; i++)
    res.pin_pools += i == 0 || pools[i] != pools[i - 1];
  free(pages);
  free(pools);
}

/* The measured sequence, on domain 0. */
static void measure(ph_domain *d) {
  ph_stats st;
  int e;
  pin_some(d);
  res.rss_built = peer_rss_bytes();
  res.maps_built = peer_maps_count(NULL, NULL);

  double t0 = peer_now_ms();
  if ((e = ph_collect(d)) != PH_OK)
    return fail("ph_collect", e);
  res.collect_ms = peer_now_ms() - t0;
  ph_stats_get(heap, &st);
  res.mark_ms = ns_ms(st.mark_ns);
  res.sweep_ms = ns_ms(st.sweep_ns);
  res.live_bytes = st.live_bytes;
  res.live_blocks = st.live_blocks;
  res.committed_before = st.committed_bytes;
  res.heap_maps_before = st.mappings;
  res.rss_before = peer_rss_bytes();
  res.maps_before = peer_maps_count(NULL, NULL);
  res.checksum_before = checksum();

  t0 = peer_now_ms();
  if ((e = ph_compact(d)) != PH_OK)
    return fail("ph_compact", e);
  res.compact_ms = peer_now_ms() - t0;
  ph_stats_get(heap, &st);
  res.evacuate_ms = ns_ms(st.evacuate_ns);
  res.update_ms = ns_ms(st.update_ns);
  res.release_ms = ns_ms(st.release_ns);
  res.cmark_ms = ns_ms(st.mark_ns);
  res.csweep_ms = ns_ms(st.sweep_ns);
  res.stw_ms = ns_ms(st.stw_ns);
  res.evacuated_bytes = st.evacuated_bytes;
  res.evacuated_blocks = st.evacuated_blocks;
  res.evacuated_pools = st.evacuated_pools;
  res.released_bytes = st.released_bytes;
  res.committed_after = st.committed_bytes;
  res.heap_maps_after = st.mappings;
  res.rss_after = peer_rss_bytes();
  res.maps_after = peer_maps_count(NULL, NULL);
  res.checksum_after = checksum();
  ncensus = 0;
  if (opt.census && (e = ph_census(d, census_row, NULL)) != PH_OK)
    return fail("ph_census", e);
  if (opt.census && res.pinned)
    pin_floor();

  res.verify_ok = ph_verify(d, res.why, sizeof res.why) == PH_OK;
  if ((e = ph_collect(d)) != PH_OK)
    return fail("ph_collect after the compaction", e);
  res.rss_next_gc = peer_rss_bytes();
  if ((e = ph_compact(d)) != PH_OK)
    return fail("second ph_compact", e);
  ph_stats_get(heap, &st);
  res.second_evacuated_bytes = st.evacuated_bytes;
}

static void *domain_main(void *arg) {
  part *p = arg;
  ph_domain *d;
  int e = ph_domain_attach(heap, &d);
  if (e != PH_OK) {
    fail("ph_domain_attach", e);
    if (p->d == 0)
      atomic_store(&done, 1);
    pthread_barrier_wait(&bar); /* built */
    pthread_barrier_wait(&bar); /* measured */
    return NULL;
  }
  size_t mark = ph_scope_open(d);
  build_part(d, p);
  wait_blocking(d); /* every part built */
  if (p->d == 0) {
    res.build_ms = peer_now_ms() - t_start;
    if (res.error[0] == 0)
      measure(d);
    atomic_store(&done, 1);
  } else if (opt.compacting >= 2) {
    while (!atomic_load(&done)) { /* running: takes part in every STW */
      ph_safepoint(d);
      sched_yield();
    }
  }
  wait_blocking(d); /* measured (domain 0 is done) */
  ph_scope_close(d, mark);
  ph_domain_detach(d);
  return NULL;
}

static int run_once(int run) {
  memset(&res, 0, sizeof res);
  memset(parts, 0, sizeof parts);
  atomic_store(&done, 0);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.release = opt.release;
  cfg.compact_scope = opt.scope;
  cfg.gc_percent = opt.gc_percent;
  if (opt.pool_size)
    cfg.pool_size = opt.pool_size;
  cfg.gc_helpers = opt.helpers;
  cfg.huge_pages = opt.huge;
  pool_size = cfg.pool_size;
  int e = ph_heap_create(&cfg, &heap);
  if (e != PH_OK) {
    fail("ph_heap_create", e);
  } else {
    pthread_barrier_init(&bar, NULL, (unsigned)opt.domains);
    pthread_t th[MAXD];
    t_start = peer_now_ms();
    for (int d = 0; d < opt.domains; d++) {
      parts[d].d = (unsigned)d;
      parts[d].n = (opt.skew && d > 0) ? 0 : (size_t)opt.n;
    }
    for (int d = 0; d < opt.domains; d++)
      if (pthread_create(&th[d], NULL, domain_main, &parts[d]) != 0) {
        perror("pthread_create");
        exit(2);
      }
    for (int d = 0; d < opt.domains; d++)
      pthread_join(th[d], NULL);
    pthread_barrier_destroy(&bar);
    if ((e = ph_heap_destroy(heap)) != PH_OK)
      fail("ph_heap_destroy", e);
  }

  uint64_t model = 0;
  for (int d = 0; d < opt.domains; d++)
    model += parts[d].kept_bytes +
             (parts[d].n ? (parts[d].n + 1) * sizeof(ph_value) : 0);
  int ok = res.error[0] == 0 && res.checksum_before == res.checksum_after &&
           res.verify_ok && res.second_evacuated_bytes == 0;
  static const char *rel[] = {"decommit", "unmap", "lazy", "keep"};
  static const char *huge[] = {"off", "transparent", "explicit"};
  FILE *f = stdout;
  fprintf(f, "{\"system\":\"poolheap\",\"shape\":");
  peer_json_str(f, opt.shape);
  fprintf(f,
          ",\"n\":%lld,\"domains\":%d,\"keep\":%d,\"skew\":%s,\"seed\":%llu,"
          "\"run\":%d,\"scope\":\"%s\",\"release\":\"%s\","
          "\"domains_compacting\":%d,\"helpers\":%u,\"huge\":\"%s\","
          "\"pool_size\":%zu,\"medium\":%s",
          opt.n, opt.domains, opt.keep, opt.skew ? "true" : "false",
          (unsigned long long)opt.seed, run,
          opt.scope == PH_COMPACT_GLOBAL ? "global" : "per-domain",
          rel[opt.release], opt.compacting, opt.helpers, huge[opt.huge],
          pool_size, opt.medium ? "true" : "false");
  if (opt.pin)
    fprintf(f, ",\"pin_permille\":%u,\"pinned\":%llu", opt.pin,
            (unsigned long long)res.pinned);
  if (opt.pin && opt.census)
    fprintf(f,
            ",\"pin_pools\":%llu,\"pin_floor_bytes\":%llu,"
            "\"pin_bound_bytes\":%llu",
            (unsigned long long)res.pin_pools,
            (unsigned long long)res.pin_floor_bytes,
            (unsigned long long)res.pin_bound_bytes);
  fprintf(f,
          ",\"build_ms\":%.3f,\"collect_ms\":%.3f,\"compact_ms\":%.3f,"
          "\"whole_ms\":%.3f,\"compact_phase_ms\":%.3f,\"evacuate_ms\":%.3f,"
          "\"update_ms\":%.3f,\"release_ms\":%.3f,\"mark_ms\":%.3f,"
          "\"sweep_ms\":%.3f,\"compact_mark_ms\":%.3f,"
          "\"compact_sweep_ms\":%.3f,\"compact_stw_ms\":%.3f",
          res.build_ms, res.collect_ms, res.compact_ms,
          res.collect_ms + res.compact_ms,
          res.evacuate_ms + res.update_ms + res.release_ms, res.evacuate_ms,
          res.update_ms, res.release_ms, res.mark_ms, res.sweep_ms,
          res.cmark_ms, res.csweep_ms, res.stw_ms);
  fprintf(f,
          ",\"rss_built\":%lld,\"maps_built\":%ld,\"rss_before\":%lld,"
          "\"rss_collected\":%lld,\"rss_after\":%lld,\"rss_next_gc\":%lld,"
          "\"maps_before\":%ld,"
          "\"maps_collected\":%ld,\"maps_after\":%ld,"
          "\"committed_before\":%llu,\"committed_after\":%llu,"
          "\"heap_maps_before\":%llu,\"heap_maps_after\":%llu",
          res.rss_built, res.maps_built, res.rss_before, res.rss_before,
          res.rss_after, res.rss_next_gc, res.maps_before, res.maps_before,
          res.maps_after, (unsigned long long)res.committed_before,
          (unsigned long long)res.committed_after,
          (unsigned long long)res.heap_maps_before,
          (unsigned long long)res.heap_maps_after);
  fprintf(
      f,
      ",\"live_bytes\":%llu,\"live_blocks\":%llu,\"live_bytes_model\":%llu,"
      "\"evacuated_bytes\":%llu,\"evacuated_blocks\":%llu,"
      "\"evacuated_pools\":%llu,\"released_bytes\":%llu,"
      "\"second_evacuated_bytes\":%llu,\"checksum_before\":%llu,"
      "\"checksum_after\":%llu,\"verify_ok\":%s",
      (unsigned long long)res.live_bytes, (unsigned long long)res.live_blocks,
      (unsigned long long)model, (unsigned long long)res.evacuated_bytes,
      (unsigned long long)res.evacuated_blocks,
      (unsigned long long)res.evacuated_pools,
      (unsigned long long)res.released_bytes,
      (unsigned long long)res.second_evacuated_bytes,
      (unsigned long long)res.checksum_before,
      (unsigned long long)res.checksum_after, res.verify_ok ? "true" : "false");
  if (opt.census) { /* bytes per class: slots live, free, in holes */
    fprintf(f, ",\"census\":[");
    for (unsigned i = 0, k = 0; i < ncensus; i++) {
      const ph_census_class *c = &census_rows[i];
      if (c->pools == 0)
        continue;
      fprintf(f,
              "%s{\"class\":%u,\"slot_bytes\":%zu,\"pools\":%zu,"
              "\"holed_pools\":%zu,\"committed\":%zu,\"live\":%zu,"
              "\"free\":%zu,\"hole\":%zu}",
              k++ ? "," : "", c->size_class, c->block_words * 8, c->pools,
              c->holed_pools, c->committed_bytes,
              c->live_blocks * c->block_words * 8,
              c->free_blocks * c->block_words * 8,
              c->hole_blocks * c->block_words * 8);
    }
    fprintf(f, "]");
  }
  if (!res.verify_ok && res.why[0]) {
    fprintf(f, ",\"verify\":");
    peer_json_str(f, res.why);
  }
  if (res.error[0]) {
    fprintf(f, ",\"error\":");
    peer_json_str(f, res.error);
  }
  fprintf(f, ",\"ok\":%s}\n", ok ? "true" : "false");
  fflush(f);
  return ok;
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: compact [--shape W1|W2|W50|Wskew|Wbig|M1] [--n N] [--domains D]\n"
      "               [--keep K] [--skew] [--medium] [--seed S] [--runs R]\n"
      "               [--scope global|per-domain]\n"
      "               [--release decommit|unmap|lazy|keep]\n"
      "               [--domains-compacting 1|2] [--gc-percent P] "
      "[--helpers H|auto]\n"
      "               [--huge off|transparent|explicit] [--quick]\n"
      "               [--pin PERMILLE] [--census 1] [--pool-size BYTES]\n");
  exit(1);
}

int main(int argc, char **argv) {
  int runs = 1, have_seed = 0, explicit_ = 0, helpers_auto = 0;
  opt.shape = "custom";
  opt.n = 4000000;
  opt.domains = 1;
  opt.keep = 100;
  opt.compacting = 2;
  opt.gc_percent = 100;
  opt.release = PH_RELEASE_DECOMMIT;
  opt.scope = PH_COMPACT_GLOBAL;
  for (int a = 1; a < argc; a++) {
    const char *o = argv[a];
    int flag = strcmp(o, "--skew") == 0 || strcmp(o, "--quick") == 0 ||
               strcmp(o, "--medium") == 0;
    if (!flag && a + 1 >= argc)
      usage();
    if (strcmp(o, "--shape") == 0) {
      const char *s = argv[++a];
      opt.shape = s;
      opt.skew = 0;
      opt.medium = 0;
      if (strcmp(s, "W1") == 0) {
        opt.n = 4000000, opt.domains = 1, opt.keep = 100;
      } else if (strcmp(s, "W2") == 0) {
        opt.n = 2000000, opt.domains = 2, opt.keep = 100;
      } else if (strcmp(s, "W50") == 0) {
        opt.n = 4000000, opt.domains = 1, opt.keep = 500;
      } else if (strcmp(s, "Wskew") == 0) {
        opt.n = 4000000, opt.domains = 2, opt.keep = 100, opt.skew = 1;
      } else if (strcmp(s, "Wbig") == 0) {
        opt.n = 20000000, opt.domains = 1, opt.keep = 100;
      } else if (strcmp(s, "M1") == 0) {
        /* W1 with medium blocks (issue 11): about W1's bytes */
        opt.n = 10000, opt.domains = 1, opt.keep = 100, opt.medium = 1;
      } else {
        usage();
      }
    } else if (strcmp(o, "--n") == 0) {
      opt.n = peer_parse_size(argv[++a]), explicit_ = 1;
    } else if (strcmp(o, "--domains") == 0) {
      opt.domains = atoi(argv[++a]), explicit_ = 1;
    } else if (strcmp(o, "--keep") == 0) {
      opt.keep = atoi(argv[++a]), explicit_ = 1;
    } else if (strcmp(o, "--skew") == 0) {
      opt.skew = 1, explicit_ = 1;
    } else if (strcmp(o, "--quick") == 0) {
      opt.quick = 1;
    } else if (strcmp(o, "--medium") == 0) {
      opt.medium = 1, explicit_ = 1;
    } else if (strcmp(o, "--seed") == 0) {
      opt.seed = strtoull(argv[++a], NULL, 0), have_seed = 1;
    } else if (strcmp(o, "--runs") == 0) {
      runs = atoi(argv[++a]);
    } else if (strcmp(o, "--pool-size") == 0) {
      opt.pool_size = peer_parse_size(argv[++a]);
    } else if (strcmp(o, "--census") == 0) {
      opt.census = atoi(argv[++a]) != 0;
    } else if (strcmp(o, "--pin") == 0) {
      opt.pin = (unsigned)atoi(argv[++a]);
    } else if (strcmp(o, "--gc-percent") == 0) {
      opt.gc_percent = (unsigned)atoi(argv[++a]);
    } else if (strcmp(o, "--helpers") == 0) {
      const char *s = argv[++a];
      helpers_auto = strcmp(s, "auto") == 0;
      opt.helpers = helpers_auto ? 0 : (unsigned)atoi(s);
    } else if (strcmp(o, "--domains-compacting") == 0) {
      opt.compacting = atoi(argv[++a]);
    } else if (strcmp(o, "--scope") == 0) {
      const char *s = argv[++a];
      if (strcmp(s, "global") == 0)
        opt.scope = PH_COMPACT_GLOBAL;
      else if (strcmp(s, "per-domain") == 0)
        opt.scope = PH_COMPACT_PER_DOMAIN;
      else
        usage();
    } else if (strcmp(o, "--huge") == 0) {
      const char *s = argv[++a];
      if (strcmp(s, "off") == 0)
        opt.huge = PH_HUGE_OFF;
      else if (strcmp(s, "transparent") == 0)
        opt.huge = PH_HUGE_TRANSPARENT;
      else if (strcmp(s, "explicit") == 0)
        opt.huge = PH_HUGE_EXPLICIT;
      else
        usage();
    } else if (strcmp(o, "--release") == 0) {
      const char *s = argv[++a];
      if (strcmp(s, "decommit") == 0)
        opt.release = PH_RELEASE_DECOMMIT;
      else if (strcmp(s, "unmap") == 0)
        opt.release = PH_RELEASE_UNMAP;
      else if (strcmp(s, "lazy") == 0)
        opt.release = PH_RELEASE_LAZY;
      else if (strcmp(s, "keep") == 0)
        opt.release = PH_RELEASE_KEEP;
      else
        usage();
    } else {
      usage();
    }
  }
  /* --quick: a twentieth of N (a small heap for CI), same D and K */
  if (opt.quick && !explicit_)
    opt.n /= 20;
  if (opt.domains < 1 || opt.domains > MAXD || opt.n < 0 ||
      opt.n > 0xFFFFFFFFLL || opt.keep < 0 || opt.keep > 1000 || runs < 1 ||
      opt.compacting < 1 || opt.compacting > 2 || opt.helpers > 64)
    usage();
  if (helpers_auto) { /* one helper per core the domains leave idle */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    opt.helpers = ncpu > opt.domains ? (unsigned)(ncpu - opt.domains) : 0;
    if (opt.helpers > 64)
      opt.helpers = 64;
  }
  /* a named shape with changed parameters is not that shape (as the peers) */
  if (explicit_)
    opt.shape = "custom";
  else if (opt.quick) { /* a named shape at a twentieth of its N */
    static char qname[64];
    snprintf(qname, sizeof qname, "%s-quick", opt.shape);
    opt.shape = qname;
  }
  if (!have_seed)
    opt.seed = peer_default_seed();
  fprintf(stderr,
          "compact: shape %s n %lld domains %d keep %d seed %llu runs %d "
          "domains-compacting %d helpers %u\n",
          opt.shape, opt.n, opt.domains, opt.keep, (unsigned long long)opt.seed,
          runs, opt.compacting, opt.helpers);
  int all_ok = 1;
  for (int r = 0; r < runs; r++)
    all_ok &= run_once(r);
  return all_ok ? 0 : 4;
}
