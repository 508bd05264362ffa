/* frag(N, D, K) peer (see shared context workloads.md) for malloc-based systems
 * and, built with -DBOEHM, for the Boehm-Demers-Weiser collector.
 *
 * A block is a header word holding the field count followed by that many
 * fields; a field is either a real address of another block or an immediate
 * tagged with low bit 1. D threads each build their own part (root array R + N
 * blocks). Then: malloc: the dropped blocks are free()d (collect_ms), and
 * malloc_trim(0) is the release call (compact_ms). Run under LD_PRELOAD for
 * jemalloc / mimalloc. Boehm:  R[i] = immediate 0 for the dropped blocks,
 * GC_gcollect() (collect_ms), then GC_gcollect_and_unmap() (compact_ms). RSS
 * and /proc/self/maps lines are measured after the build (rss_before), after
 * the drop/collection (rss_collected) and after the release call (rss_after).
 * One JSON line.
 *
 *   frag_c [--shape W1|W2|W50|Wskew|Wbig] [--n N] [--domains D] [--keep K]
 * [--skew]
 *          [--seed S] [--system NAME]
 */
#include "peer_common.h"

#include <malloc.h>
#include <pthread.h>

#ifdef BOEHM
#define GC_THREADS
#include <gc/gc.h>
#define BLK_ALLOC(bytes) GC_MALLOC(bytes)
#define DEFAULT_SYSTEM "boehm"
#else
#define BLK_ALLOC(bytes) malloc(bytes)
#define DEFAULT_SYSTEM "glibc"
#endif

#define MAXD 64
#define IMM(i) ((((uintptr_t)(i)) << 1) | 1u)
#define IS_IMM(v) (((uintptr_t)(v)) & 1u)

typedef struct {
  unsigned d;
  size_t n;
  unsigned keep;
  uint64_t seed;
  uintptr_t *R;       /* root array: N slots */
  uint8_t *kept_bits; /* fate bitmap, mmap'd; kept until the end */
  size_t kept_bytes_len;
  uint64_t nkept;
  uint64_t live_block_bytes;
  double free_ms;
} part_t;

/* Root arrays are held by the program: a static array is scanned by Boehm as a
 * root. */
static uintptr_t *g_roots[MAXD];
static part_t g_parts[MAXD];

static void die_json(const char *system, const char *msg) {
  printf("{\"system\":");
  peer_json_str(stdout, system);
  printf(",\"error\":");
  peer_json_str(stdout, msg);
  printf("}\n");
  fflush(stdout);
  exit(3);
}

static void *build_part(void *arg) {
  part_t *p = arg;
  size_t n = p->n;
  peer_rng rng = peer_rng_for(p->seed, p->d);
  uintptr_t *R = BLK_ALLOC((n ? n : 1) * sizeof(uintptr_t));
  if (!R) {
    fprintf(stderr, "out of memory (root array)\n");
    exit(2);
  }
  for (size_t i = 0; i < n; i++)
    R[i] = IMM(0);
  g_roots[p->d] = R;
  p->R = R;
  /* index lists of earlier blocks per fate: auxiliary, mmap'd, unmapped after
   * the build */
  uint32_t *list[2];
  size_t cnt[2] = {0, 0};
  list[0] = peer_aux_alloc((n ? n : 1) * sizeof(uint32_t));
  list[1] = peer_aux_alloc((n ? n : 1) * sizeof(uint32_t));
  p->kept_bytes_len = n / 8 + 1;
  p->kept_bits = peer_aux_alloc(p->kept_bytes_len);
  uint64_t live = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned w = peer_fields(&rng);
    int kept = peer_uniform(&rng, 1000) < p->keep;
    uintptr_t *b = BLK_ALLOC((w + 1) * sizeof(uintptr_t));
    if (!b) {
      fprintf(stderr, "out of memory (block)\n");
      exit(2);
    }
    b[0] = w;
    for (unsigned j = 1; j <= w; j++) {
      if (peer_uniform(&rng, 2) == 1 && cnt[kept] > 0) {
        uint32_t k = list[kept][peer_uniform(&rng, cnt[kept])];
        b[j] = R[k];
      } else {
        b[j] = IMM(i);
      }
    }
    R[i] = (uintptr_t)b;
    list[kept][cnt[kept]++] = (uint32_t)i;
    if (kept) {
      p->kept_bits[i >> 3] |= (uint8_t)(1u << (i & 7));
      live += (w + 1) * sizeof(uintptr_t);
    }
  }
  p->nkept = cnt[1];
  p->live_block_bytes = live;
  peer_aux_free(list[0], (n ? n : 1) * sizeof(uint32_t));
  peer_aux_free(list[1], (n ? n : 1) * sizeof(uint32_t));
  return NULL;
}

static inline int is_kept(const part_t *p, size_t i) {
  return (p->kept_bits[i >> 3] >> (i & 7)) & 1;
}

#ifndef BOEHM
static void *free_part(void *arg) {
  part_t *p = arg;
  double t0 = peer_now_ms();
  for (size_t i = 0; i < p->n; i++) {
    if (!is_kept(p, i)) {
      free((void *)p->R[i]);
      p->R[i] = IMM(0);
    }
  }
  p->free_ms = peer_now_ms() - t0;
  return NULL;
}
#endif

/* Checksum of every surviving block in root order. use_bits: the fate bitmap
 * says which slots survive (before the drop); otherwise every pointer slot of R
 * is a survivor. */
static uint64_t checksum(unsigned D, int use_bits) {
  uint64_t h = PEER_HASH_INIT;
  for (unsigned d = 0; d < D; d++) {
    const part_t *p = &g_parts[d];
    for (size_t i = 0; i < p->n; i++) {
      uintptr_t v = p->R[i];
      if (use_bits ? !is_kept(p, i) : IS_IMM(v))
        continue;
      const uintptr_t *b = (const uintptr_t *)v;
      uintptr_t w = b[0];
      h = peer_mix(h, w);
      for (uintptr_t j = 1; j <= w; j++) {
        uintptr_t f = b[j];
        if (IS_IMM(f))
          h = peer_mix(h, f >> 1);
        else
          h = peer_mix(h, ((const uintptr_t *)f)[0]);
      }
    }
  }
  return h & PEER_HASH_MASK;
}

static void run_threads(unsigned D, void *(*fn)(void *)) {
  pthread_t th[MAXD];
  for (unsigned d = 1; d < D; d++)
    if (pthread_create(&th[d], NULL, fn, &g_parts[d]) != 0) {
      perror("pthread_create");
      exit(2);
    }
  fn(&g_parts[0]); /* the main thread is domain 0 */
  for (unsigned d = 1; d < D; d++)
    pthread_join(th[d], NULL);
}

static void usage(void) {
  fprintf(stderr,
          "usage: frag_c [--shape W1|W2|W50|Wskew|Wbig] [--n N] [--domains D] "
          "[--keep K] [--skew] [--seed S] [--system NAME]\n");
  exit(1);
}

int main(int argc, char **argv) {
  const char *shape = "custom", *system = DEFAULT_SYSTEM;
  long long n = 4000000;
  int D = 1, K = 100, skew = 0, have_seed = 0, explicit = 0;
  uint64_t seed = 0;
  for (int a = 1; a < argc; a++) {
    const char *o = argv[a];
    if (a + 1 >= argc && strcmp(o, "--skew") != 0)
      usage();
    if (strcmp(o, "--shape") == 0) {
      shape = argv[++a];
      if (strcmp(shape, "W1") == 0) {
        n = 4000000;
        D = 1;
        K = 100;
        skew = 0;
      } else if (strcmp(shape, "W2") == 0) {
        n = 2000000;
        D = 2;
        K = 100;
        skew = 0;
      } else if (strcmp(shape, "W50") == 0) {
        n = 4000000;
        D = 1;
        K = 500;
        skew = 0;
      } else if (strcmp(shape, "Wskew") == 0) {
        n = 4000000;
        D = 2;
        K = 100;
        skew = 1;
      } else if (strcmp(shape, "Wbig") == 0) {
        n = 20000000;
        D = 1;
        K = 100;
        skew = 0;
      } else
        usage();
    } else if (strcmp(o, "--n") == 0) {
      n = peer_parse_size(argv[++a]);
      explicit = 1;
    } else if (strcmp(o, "--domains") == 0) {
      D = atoi(argv[++a]);
      explicit = 1;
    } else if (strcmp(o, "--keep") == 0) {
      K = atoi(argv[++a]);
      explicit = 1;
    } else if (strcmp(o, "--skew") == 0) {
      skew = 1;
      explicit = 1;
    } else if (strcmp(o, "--seed") == 0) {
      seed = strtoull(argv[++a], NULL, 0);
      have_seed = 1;
    } else if (strcmp(o, "--system") == 0)
      system = argv[++a];
    else
      usage();
  }
  if (D < 1 || D > MAXD || n < 0 || n > 0xFFFFFFFFLL || K < 0 || K > 1000)
    usage();
  if (explicit)
    shape =
        "custom"; /* a named shape with changed parameters is not that shape */
  if (!have_seed)
    seed = peer_default_seed();
  fprintf(stderr,
          "frag_c: system %s shape %s n %lld domains %d keep %d seed %llu\n",
          system, shape, n, D, K, (unsigned long long)seed);
  if (!peer_check_preload(system))
    die_json(system, "allocator library not loaded (LD_PRELOAD?)");

#ifdef BOEHM
  GC_INIT();
  GC_allow_register_threads();
#endif

  for (int d = 0; d < D; d++) {
    g_parts[d].d = (unsigned)d;
    g_parts[d].n = (skew && d > 0) ? 0 : (size_t)n;
    g_parts[d].keep = (unsigned)K;
    g_parts[d].seed = seed;
  }

  double t0 = peer_now_ms();
  run_threads((unsigned)D, build_part);
  double build_ms = peer_now_ms() - t0;

  uint64_t live = 0;
  for (int d = 0; d < D; d++)
    live += g_parts[d].live_block_bytes + g_parts[d].n * sizeof(uintptr_t);
  uint64_t sum_before = checksum((unsigned)D, 1);

  long long rss_before = peer_rss_bytes();
  long maps_before = peer_maps_count(NULL, NULL);

  double collect_ms, compact_ms;
#ifdef BOEHM
  for (int d = 0; d < D; d++)
    for (size_t i = 0; i < g_parts[d].n; i++)
      if (!is_kept(&g_parts[d], i))
        g_parts[d].R[i] = IMM(0);
  t0 = peer_now_ms();
  GC_gcollect();
  collect_ms = peer_now_ms() - t0;
#else
  t0 = peer_now_ms();
  run_threads((unsigned)D, free_part);
  collect_ms = peer_now_ms() - t0;
#endif
  long long rss_collected = peer_rss_bytes();
  long maps_collected = peer_maps_count(NULL, NULL);

  t0 = peer_now_ms();
#ifdef BOEHM
  GC_gcollect_and_unmap();
#else
  malloc_trim(0);
#endif
  compact_ms = peer_now_ms() - t0;
  long long rss_after = peer_rss_bytes();
  long maps_after = peer_maps_count(NULL, NULL);
  uint64_t sum_after = checksum((unsigned)D, 0);

  printf("{\"system\":");
  peer_json_str(stdout, system);
  printf(",\"shape\":");
  peer_json_str(stdout, shape);
  printf(",\"n\":%lld,\"domains\":%d,\"keep\":%d,\"skew\":%s,\"seed\":%llu", n,
         D, K, skew ? "true" : "false", (unsigned long long)seed);
  printf(",\"build_ms\":%.2f,\"collect_ms\":%.2f,\"compact_ms\":%.2f,\"whole_"
         "ms\":%.2f",
         build_ms, collect_ms, compact_ms, collect_ms + compact_ms);
  printf(",\"rss_before\":%lld,\"rss_collected\":%lld,\"rss_after\":%lld",
         rss_before, rss_collected, rss_after);
  printf(",\"maps_before\":%ld,\"maps_collected\":%ld,\"maps_after\":%ld",
         maps_before, maps_collected, maps_after);
  printf(",\"live_bytes\":%llu,\"checksum_before\":%llu,\"checksum_after\":%"
         "llu,\"ok\":%s}\n",
         (unsigned long long)live, (unsigned long long)sum_before,
         (unsigned long long)sum_after,
         sum_before == sum_after ? "true" : "false");
  fflush(stdout);
  for (int d = 0; d < D; d++)
    peer_aux_free(g_parts[d].kept_bits, g_parts[d].kept_bytes_len);
  return sum_before == sum_after ? 0 : 4;
}
