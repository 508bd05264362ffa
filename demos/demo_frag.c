/* demos/demo_frag.c -- the fragmentation half of the demo.
 *
 * Builds frag(N, 1, K) (shared context workloads.md) in a poolheap heap with
 * the peers' seeded generator (bench/peers/peer_common.h), so the graph is
 * the one glibc, jemalloc, mimalloc and Boehm build for the same seed.  Then:
 * drop the dead blocks, a full collection, the fragmentation map
 * (ph_census), RSS / committed bytes / kernel mappings, ph_compact with its
 * phase times, the map and the figures again, and the checksum of every
 * surviving block before and after (it must match, and ph_verify must pass).
 *
 * The text goes to stdout; --json FILE appends one JSON line in the peers'
 * schema ({"system":"poolheap",...}) plus one line per size class and map.
 *
 *   demo_frag [--n N] [--keep K] [--seed S] [--json FILE]
 */
#include "bench/frag_build.h"
#include "demos/demo_common.h"

#define BAR 40
#define MAX_ROWS 256

typedef struct {
  unsigned n;
  ph_census_class row[MAX_ROWS];
} census_t;

static void census_cb(const ph_census_class *c, void *user) {
  census_t *cs = user;
  if (cs->n < MAX_ROWS)
    cs->row[cs->n++] = *c;
}

static size_t g_pool_size;

/* Bytes of the pools of one class. */
static uint64_t class_bytes(const ph_census_class *c) {
  return (uint64_t)c->pools * g_pool_size;
}

/* The text histogram: one bar per size class in use, its length the class's
 * pool memory on a common scale (so the two maps compare), '#' for the share
 * of slots that hold live blocks and '.' for the free slots. */
static void print_map(const char *title, const census_t *cs, uint64_t scale) {
  char b1[32], b2[32];
  printf("\n  %s\n", title);
  printf("  %5s %5s %7s %7s %8s %11s %11s %5s  %s\n", "class", "words",
         "fields", "pools", "MiB", "live", "free slots", "occ",
         "pool memory (# live, . free)");
  uint64_t pools = 0, live = 0, free_slots = 0, bytes = 0, live_bytes = 0;
  unsigned empty = 0;
  for (unsigned i = 0; i < cs->n; i++) {
    const ph_census_class *c = &cs->row[i];
    if (c->pools == 0) {
      empty++;
      continue;
    }
    uint64_t cb = class_bytes(c);
    size_t slots = c->live_blocks + c->free_blocks;
    double occ = slots ? (double)c->live_blocks / (double)slots : 0.0;
    int len = (int)((double)cb / (double)scale * BAR + 0.5);
    if (len < 1)
      len = 1;
    if (len > BAR)
      len = BAR;
    int full = (int)(occ * len + 0.5);
    if (full == 0 && c->live_blocks > 0)
      full = 1;
    char bar[BAR + 1];
    for (int k = 0; k < len; k++)
      bar[k] = k < full ? '#' : '.';
    bar[len] = 0;
    printf("  %5u %5zu %7zu %7zu %8.1f %11s %11s %4.0f%%  %s\n", c->size_class,
           c->block_words, c->max_wosize, c->pools, DEMO_MB(cb),
           demo_group(b1, sizeof b1, c->live_blocks),
           demo_group(b2, sizeof b2, c->free_blocks), occ * 100.0, bar);
    pools += c->pools;
    live += c->live_blocks;
    free_slots += c->free_blocks;
    bytes += cb;
    live_bytes += (uint64_t)c->live_blocks * c->block_words * 8;
  }
  printf("  %-19s %7llu %8.1f %11s %11s %4.0f%%  (%.1f MiB of live slots; "
         "%u classes empty)\n",
         "total", (unsigned long long)pools, DEMO_MB(bytes),
         demo_group(b1, sizeof b1, live), demo_group(b2, sizeof b2, free_slots),
         live + free_slots ? 100.0 * (double)live / (double)(live + free_slots)
                           : 0.0,
         DEMO_MB(live_bytes), empty);
}

static void census_json(FILE *j, const char *when, const census_t *cs,
                        uint64_t seed) {
  for (unsigned i = 0; i < cs->n; i++) {
    const ph_census_class *c = &cs->row[i];
    if (c->pools == 0)
      continue;
    fprintf(j,
            "{\"system\":\"poolheap\",\"census\":\"%s\",\"seed\":%llu,"
            "\"class\":%u,\"block_words\":%zu,\"max_wosize\":%zu,"
            "\"pools\":%zu,\"live_blocks\":%zu,\"free_blocks\":%zu}\n",
            when, (unsigned long long)seed, c->size_class, c->block_words,
            c->max_wosize, c->pools, c->live_blocks, c->free_blocks);
  }
}

/* The peers' checksum (frag_c.c): every surviving block in root order, its
 * field count, its immediates and the field count of each pointed-to block. */
static uint64_t checksum(ph_value r, size_t n) {
  return frag_checksum(PEER_HASH_INIT, r, n) & PEER_HASH_MASK;
}

typedef struct {
  size_t n, step;
} progress_t;

static void print_progress(size_t i, void *ctx) {
  const progress_t *p = ctx;
  if ((i + 1) % p->step == 0) {
    printf("%s%.0f%%", (i + 1) == p->step ? "" : " .. ",
           100.0 * (double)(i + 1) / (double)p->n);
    fflush(stdout);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: demo_frag [--n N] [--keep K] [--seed S] [--json FILE]\n");
  exit(1);
}

int main(int argc, char **argv) {
  long long n = 4000000;
  int K = 100, have_seed = 0;
  uint64_t seed = 0;
  const char *json_path = NULL;
  for (int a = 1; a < argc; a++) {
    if (a + 1 >= argc)
      usage();
    const char *o = argv[a];
    if (strcmp(o, "--n") == 0)
      n = peer_parse_size(argv[++a]);
    else if (strcmp(o, "--keep") == 0)
      K = atoi(argv[++a]);
    else if (strcmp(o, "--seed") == 0) {
      seed = strtoull(argv[++a], NULL, 0);
      have_seed = 1;
    } else if (strcmp(o, "--json") == 0)
      json_path = argv[++a];
    else
      usage();
  }
  if (n < 1 || n > 0xFFFFFFFFLL || K < 0 || K > 1000)
    usage();
  if (!have_seed)
    seed = peer_default_seed();
  FILE *js = demo_json_open(json_path);
  const char *shape = (n == 4000000 && K == 100)   ? "W1"
                      : (n == 4000000 && K == 500) ? "W50"
                                                   : "custom";
  char g1[32], g2[32];

  ph_config cfg;
  ph_config_init(&cfg);
  g_pool_size = cfg.pool_size;
  ph_heap *heap;
  int err = ph_heap_create(&cfg, &heap);
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_heap_create: %s", ph_strerror(err));
  ph_domain *d;
  err = ph_domain_attach(heap, &d);
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_domain_attach: %s", ph_strerror(err));
  size_t mark = ph_scope_open(d);

  /* ---- build frag(N, 1, K) */
  printf("== 1. A fragmented heap: frag(N = %s, D = 1, K = %d), shape %s, "
         "seed %llu\n",
         demo_group(g1, sizeof g1, (unsigned long long)n), K, shape,
         (unsigned long long)seed);
  printf("  building %s blocks (%.0f%% to keep), pointers only among blocks "
         "of the same fate:\n  ",
         g1, K / 10.0);
  fflush(stdout);
  size_t N = (size_t)n;
  ph_value *R = ph_root(d, ph_alloc(d, N, 0));
  if (!R || *R == 0)
    demo_die(js, "poolheap", "root array: %s", ph_strerror(ph_last_error(d)));
  peer_rng rng = peer_rng_for(seed, 0);
  size_t bits_len = N / 8 + 1;
  uint8_t *kept_bits = peer_aux_alloc(bits_len);
  uint64_t live_expect = (uint64_t)(N + 1) * 8; /* the root array */
  uint64_t kept_bytes = 0;
  progress_t prog = {N, N / 10 ? N / 10 : 1};
  double t0 = peer_now_ms();
  size_t nkept = 0;
  int berr = frag_build(d, R, N, (unsigned)K, &rng, kept_bits, &nkept,
                        &kept_bytes, print_progress, &prog);
  if (berr != PH_OK)
    demo_die(js, "poolheap", "ph_alloc: %s", ph_strerror(berr));
  live_expect += kept_bytes;
  double build_ms = peer_now_ms() - t0;
  long long rss_built = peer_rss_bytes();
  long maps_built = peer_maps_count(NULL, NULL);
  ph_stats st;
  ph_stats_get(heap, &st);
  printf("\n  built in %.0f ms; %llu collections ran during the build; RSS "
         "%.1f MiB\n",
         build_ms, (unsigned long long)st.collections, DEMO_MB(rss_built));

  /* ---- drop the dead blocks and collect */
  for (size_t i = 0; i < N; i++)
    if (!((kept_bits[i >> 3] >> (i & 7)) & 1))
      ph_set_field(*R, i, PH_UNIT);
  t0 = peer_now_ms();
  err = ph_collect(d);
  double collect_ms = peer_now_ms() - t0;
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_collect: %s", ph_strerror(err));
  peer_aux_free(kept_bits, bits_len);
  ph_stats before;
  ph_stats_get(heap, &before);
  long long rss_before = peer_rss_bytes();
  long maps_before = peer_maps_count(NULL, NULL);
  uint64_t sum_before = checksum(*R, N);
  printf("  dropped %s of them (R[i] = 0) and ran a full collection "
         "(ph_collect, %.0f ms):\n",
         demo_group(g1, sizeof g1, N - nkept), collect_ms);
  printf("  live: %s blocks, %.1f MiB (the embedder counts %.1f MiB: %s)\n",
         demo_group(g2, sizeof g2, before.live_blocks),
         DEMO_MB(before.live_bytes), DEMO_MB(live_expect),
         before.live_bytes == live_expect ? "equal" : "DIFFERENT");

  census_t cb, ca;
  memset(&cb, 0, sizeof cb);
  memset(&ca, 0, sizeof ca);
  err = ph_census(d, census_cb, &cb);
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_census: %s", ph_strerror(err));
  uint64_t scale = 1;
  for (unsigned i = 0; i < cb.n; i++)
    if (class_bytes(&cb.row[i]) > scale)
      scale = class_bytes(&cb.row[i]);

  printf("\n== 2. The fragmentation map (ph_census), %zu KiB pools\n",
         g_pool_size / 1024);
  print_map("before ph_compact: every pool keeps a few live blocks, so no "
            "pool can be returned",
            &cb, scale);

  /* ---- compact */
  t0 = peer_now_ms();
  err = ph_compact(d);
  double compact_ms = peer_now_ms() - t0;
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_compact: %s", ph_strerror(err));
  ph_stats after;
  ph_stats_get(heap, &after);
  long long rss_after = peer_rss_bytes();
  long maps_after = peer_maps_count(NULL, NULL);
  err = ph_census(d, census_cb, &ca);
  if (err != PH_OK)
    demo_die(js, "poolheap", "ph_census: %s", ph_strerror(err));
  print_map("after ph_compact (same scale): live blocks packed into few "
            "pools, the rest returned",
            &ca, scale);
  uint64_t sum_after = checksum(*R, N);
  char why[256] = "";
  int verify = ph_verify(d, why, sizeof why);

  printf("\n== 3. Before and after ph_compact\n");
  printf("  %-34s %12s %12s\n", "", "before", "after");
  printf("  %-34s %9.1f MiB %9.1f MiB\n", "RSS (VmRSS)", DEMO_MB(rss_before),
         DEMO_MB(rss_after));
  printf("  %-34s %9.1f MiB %9.1f MiB\n", "committed (ph_stats)",
         DEMO_MB(before.committed_bytes), DEMO_MB(after.committed_bytes));
  printf("  %-34s %9.1f MiB %9.1f MiB\n", "pools in use",
         DEMO_MB(before.pool_bytes), DEMO_MB(after.pool_bytes));
  printf("  %-34s %9.1f MiB %9.1f MiB\n", "large blocks (the root array)",
         DEMO_MB(before.large_bytes), DEMO_MB(after.large_bytes));
  printf("  %-34s %12ld %12ld\n", "kernel mappings (/proc/self/maps)",
         maps_before, maps_after);
  printf("  %-34s %12llu %12llu\n", "mappings held by the heap",
         (unsigned long long)before.mappings,
         (unsigned long long)after.mappings);
  printf("  %-34s %12llu %12llu\n", "checksum of the survivors",
         (unsigned long long)sum_before, (unsigned long long)sum_after);
  double evac = (double)after.evacuate_ns / 1e6;
  double upd = (double)after.update_ns / 1e6;
  double rel = (double)after.release_ns / 1e6;
  printf("  ph_compact took %.1f ms: mark %.1f, sweep %.1f, evacuate %.1f, "
         "update %.1f, release %.1f ms\n",
         compact_ms, (double)after.mark_ns / 1e6, (double)after.sweep_ns / 1e6,
         evac, upd, rel);
  printf("  (compaction proper: %.1f ms; moved %s blocks, %.1f MiB, out of "
         "%llu pools; returned %.1f MiB to the OS)\n",
         evac + upd + rel, demo_group(g1, sizeof g1, after.evacuated_blocks),
         DEMO_MB(after.evacuated_bytes),
         (unsigned long long)after.evacuated_pools,
         DEMO_MB(after.released_bytes));
  int ok = sum_before == sum_after && verify == PH_OK &&
           before.live_bytes == live_expect &&
           after.live_bytes == before.live_bytes;
  printf("  checksums %s; ph_verify: %s\n",
         sum_before == sum_after ? "match" : "DIFFER",
         verify == PH_OK ? "heap verified" : why);

  if (js) {
    fprintf(js,
            "{\"system\":\"poolheap\",\"shape\":\"%s\",\"n\":%lld,"
            "\"domains\":1,\"keep\":%d,\"skew\":false,\"seed\":%llu,"
            "\"build_ms\":%.2f,\"collect_ms\":%.2f,\"compact_ms\":%.2f,"
            "\"whole_ms\":%.2f,\"mark_ms\":%.2f,\"sweep_ms\":%.2f,"
            "\"evacuate_ms\":%.2f,\"update_ms\":%.2f,\"release_ms\":%.2f,"
            "\"compact_phase_ms\":%.2f,",
            shape, n, K, (unsigned long long)seed, build_ms, collect_ms,
            compact_ms, collect_ms + compact_ms, (double)after.mark_ns / 1e6,
            (double)after.sweep_ns / 1e6, evac, upd, rel, evac + upd + rel);
    fprintf(js,
            "\"rss_built\":%lld,\"maps_built\":%ld,\"rss_before\":%lld,"
            "\"rss_collected\":%lld,\"rss_after\":%lld,\"maps_before\":%ld,"
            "\"maps_collected\":%ld,\"maps_after\":%ld,"
            "\"committed_before\":%llu,\"committed_after\":%llu,"
            "\"heap_mappings_before\":%llu,\"heap_mappings_after\":%llu,"
            "\"evacuated_blocks\":%llu,\"evacuated_bytes\":%llu,"
            "\"released_bytes\":%llu,\"live_bytes\":%llu,"
            "\"checksum_before\":%llu,\"checksum_after\":%llu,"
            "\"verified\":%s,\"ok\":%s}\n",
            rss_built, maps_built, rss_built, rss_before, rss_after, maps_built,
            maps_before, maps_after, (unsigned long long)before.committed_bytes,
            (unsigned long long)after.committed_bytes,
            (unsigned long long)before.mappings,
            (unsigned long long)after.mappings,
            (unsigned long long)after.evacuated_blocks,
            (unsigned long long)after.evacuated_bytes,
            (unsigned long long)after.released_bytes,
            (unsigned long long)before.live_bytes,
            (unsigned long long)sum_before, (unsigned long long)sum_after,
            verify == PH_OK ? "true" : "false", ok ? "true" : "false");
    census_json(js, "before", &cb, seed);
    census_json(js, "after", &ca, seed);
    fflush(js);
  }

  ph_scope_close(d, mark);
  ph_domain_detach(d);
  ph_heap_destroy(heap);
  return ok ? 0 : 4;
}
