/* worker(T, S, K) peer (workloads.md) for malloc-based systems and, with
 * -DBOEHM, Boehm GC.
 *
 * One thread runs T tasks. Each task allocates S bytes of frag-like blocks (the
 * frag size mix; a header word with the field count, then immediates tagged
 * with low bit 1). Each block is kept with probability K/1000 in a long-lived
 * table; when the table would hold more than S/10 bytes, random older entries
 * (from earlier tasks) are dropped. The other blocks are the task's
 * temporaries: they stay reachable until the task ends, then die (free() / the
 * Boehm root chunks holding them are cleared). The task ends with the system's
 * release call (malloc_trim(0) / GC_gcollect_and_unmap()), and RSS is sampled.
 * One JSON line per task: {"system","task","rss",...}.
 *
 *   worker_c [--tasks T] [--bytes S] [--keep K] [--seed S] [--system NAME]
 */
#include "peer_common.h"

#include <malloc.h>

#ifdef BOEHM
#define GC_THREADS
#include <gc/gc.h>
#define BLK_ALLOC(bytes) GC_MALLOC(bytes)
#define BLK_FREE(p) ((void)(p))
/* chunks of pointers that must be roots: uncollectable Boehm objects are
 * scanned roots */
#define ROOTS_ALLOC(bytes) GC_MALLOC_UNCOLLECTABLE(bytes)
#define ROOTS_FREE(p, bytes) ((void)(bytes), GC_FREE(p))
#define RELEASE() GC_gcollect_and_unmap()
#define DEFAULT_SYSTEM "boehm"
#else
#define BLK_ALLOC(bytes) malloc(bytes)
#define BLK_FREE(p) free(p)
#define ROOTS_ALLOC(bytes) peer_aux_alloc(bytes)
#define ROOTS_FREE(p, bytes) peer_aux_free((p), (bytes))
#define RELEASE() malloc_trim(0)
#define DEFAULT_SYSTEM "glibc"
#endif

#define IMM(i) ((((uintptr_t)(i)) << 1) | 1u)
#define CHUNK (1u << 16) /* temporaries per root chunk */

typedef struct chunk {
  struct chunk *next;
  size_t used;
  uintptr_t *slot[CHUNK];
} chunk_t;

static chunk_t *g_temps;    /* this task's temporaries (roots) */
static uintptr_t **g_table; /* long-lived table (roots) */

static void usage(void) {
  fprintf(
      stderr,
      "usage: worker_c [--tasks T] [--bytes S[k|M|G]] [--keep K] [--seed S] "
      "[--system NAME]\n");
  exit(1);
}

int main(int argc, char **argv) {
  const char *system = DEFAULT_SYSTEM;
  long long T = 20, S = 256LL << 20;
  int K = 100, have_seed = 0;
  uint64_t seed = 0;
  for (int a = 1; a < argc; a++) {
    if (a + 1 >= argc)
      usage();
    const char *o = argv[a];
    if (strcmp(o, "--tasks") == 0)
      T = atoll(argv[++a]);
    else if (strcmp(o, "--bytes") == 0)
      S = peer_parse_size(argv[++a]);
    else if (strcmp(o, "--keep") == 0)
      K = atoi(argv[++a]);
    else if (strcmp(o, "--seed") == 0) {
      seed = strtoull(argv[++a], NULL, 0);
      have_seed = 1;
    } else if (strcmp(o, "--system") == 0)
      system = argv[++a];
    else
      usage();
  }
  if (T < 1 || S < 1024 || K < 0 || K > 1000)
    usage();
  if (!have_seed)
    seed = peer_default_seed();
  fprintf(stderr,
          "worker_c: system %s tasks %lld bytes %lld keep %d seed %llu\n",
          system, T, S, K, (unsigned long long)seed);
  if (!peer_check_preload(system)) {
    printf("{\"system\":");
    peer_json_str(stdout, system);
    printf(",\"error\":\"allocator library not loaded (LD_PRELOAD?)\"}\n");
    return 3;
  }
#ifdef BOEHM
  GC_INIT();
#endif
  const uint64_t table_cap_bytes = (uint64_t)S / 10;
  /* smallest block is 3 words, so the table never needs more entries than this
   */
  const size_t table_cap = (size_t)(table_cap_bytes / 24) + 2;
  const size_t table_bytes = table_cap * sizeof(uintptr_t *);
  g_table = ROOTS_ALLOC(table_bytes);
  memset(g_table, 0, table_bytes);
  size_t table_n = 0;
  uint64_t table_live = 0;
  peer_rng rng = peer_rng_for(seed, 0);
  uint64_t counter = 0;

  for (long long t = 0; t < T; t++) {
    double t0 = peer_now_ms();
    size_t old_n = table_n; /* entries [0, old_n) come from earlier tasks */
    uint64_t allocated = 0;
    while (allocated < (uint64_t)S) {
      unsigned w = peer_fields(&rng);
      size_t bytes = (w + 1) * sizeof(uintptr_t);
      uintptr_t *b = BLK_ALLOC(bytes);
      if (!b) {
        fprintf(stderr, "out of memory\n");
        return 2;
      }
      b[0] = w;
      for (unsigned j = 1; j <= w; j++)
        b[j] = IMM(counter);
      counter++;
      allocated += bytes;
      if (peer_uniform(&rng, 1000) < (uint64_t)K) {
        /* make room: drop random older entries (any entry if no older one is
         * left) */
        while (table_live + bytes > table_cap_bytes && table_n > 0) {
          size_t j;
          if (old_n > 0) {
            j = (size_t)peer_uniform(&rng, old_n);
            uintptr_t *victim = g_table[j];
            g_table[j] = g_table[old_n - 1];
            g_table[old_n - 1] = g_table[table_n - 1];
            old_n--;
            table_n--;
            g_table[table_n] = NULL;
            table_live -= (victim[0] + 1) * sizeof(uintptr_t);
            BLK_FREE(victim);
          } else {
            j = (size_t)peer_uniform(&rng, table_n);
            uintptr_t *victim = g_table[j];
            g_table[j] = g_table[table_n - 1];
            table_n--;
            g_table[table_n] = NULL;
            table_live -= (victim[0] + 1) * sizeof(uintptr_t);
            BLK_FREE(victim);
          }
        }
        if (table_live + bytes <= table_cap_bytes && table_n < table_cap) {
          g_table[table_n++] = b;
          table_live += bytes;
          continue;
        }
      }
      /* a temporary of this task */
      if (!g_temps || g_temps->used == CHUNK) {
        chunk_t *c = ROOTS_ALLOC(sizeof(chunk_t));
        c->next = g_temps;
        c->used = 0;
        g_temps = c;
      }
      g_temps->slot[g_temps->used++] = b;
    }
    /* the task ends: its temporaries die */
    while (g_temps) {
      chunk_t *c = g_temps;
      g_temps = c->next;
      for (size_t i = 0; i < c->used; i++)
        BLK_FREE(c->slot[i]);
      ROOTS_FREE(c, sizeof(chunk_t));
    }
    double task_ms = peer_now_ms() - t0;
    double r0 = peer_now_ms();
    RELEASE();
    double release_ms = peer_now_ms() - r0;
    printf("{\"system\":");
    peer_json_str(stdout, system);
    printf(",\"task\":%lld,\"rss\":%lld,\"maps\":%ld,\"table_bytes\":%llu,"
           "\"task_ms\":%.2f,"
           "\"release_ms\":%.2f,\"seed\":%llu}\n",
           t, peer_rss_bytes(), peer_maps_count(NULL, NULL),
           (unsigned long long)table_live, task_ms, release_ms,
           (unsigned long long)seed);
    fflush(stdout);
  }
  return 0;
}
