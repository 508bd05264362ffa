/* Allocation throughput for the frag size mix: blocks per second with 1 and 2
 * threads, allocation only (no frees). The field counts are drawn beforehand
 * (same seeded sequence for every system) so that only allocation is timed;
 * each block's header word is written (field count), as a collector's allocator
 * would, and every block stays reachable from a table (one pointer store per
 * block for every system). Works under LD_PRELOAD for jemalloc / mimalloc;
 * -DBOEHM builds the Boehm GC_MALLOC variant.
 *
 *   alloc_tput [--blocks N] [--threads 1,2] [--seed S] [--system NAME]
 * N is the total number of blocks of a run, split evenly between the threads.
 * Each thread count runs in a fresh child process so that runs do not share a
 * heap.
 */
#include "peer_common.h"

#include <pthread.h>
#include <sys/wait.h>

#ifdef BOEHM
#define GC_THREADS
#include <gc/gc.h>
#define BLK_ALLOC(bytes) GC_MALLOC(bytes)
#define DEFAULT_SYSTEM "boehm"
#else
#define BLK_ALLOC(bytes) malloc(bytes)
#define DEFAULT_SYSTEM "glibc"
#endif

typedef struct {
  const uint8_t *w;
  size_t n;
  uintptr_t *
      *keep; /* every block stays reachable: allocation only, nothing dies */
} job_t;

static pthread_barrier_t g_start;

static void *alloc_run(void *arg) {
  job_t *j = arg;
  uintptr_t **keep = j->keep;
  pthread_barrier_wait(&g_start);
  for (size_t i = 0; i < j->n; i++) {
    unsigned w = j->w[i];
    uintptr_t *b = BLK_ALLOC((w + 1) * sizeof(uintptr_t));
    if (!b) {
      fprintf(stderr, "out of memory\n");
      exit(2);
    }
    b[0] = w;
    keep[i] = b;
  }
  return NULL;
}

static int one_run(const char *system, int threads, size_t blocks,
                   uint64_t seed) {
#ifdef BOEHM
  GC_INIT();
  GC_allow_register_threads();
#endif
  uint8_t *w = peer_aux_alloc(blocks);
  size_t per = blocks / (size_t)threads;
  /* the table holding every block: mmap'd, and a root for Boehm */
  uintptr_t **keep = peer_aux_alloc(blocks * sizeof(uintptr_t *));
  memset(keep, 0,
         blocks * sizeof(uintptr_t *)); /* commit it before the timed part */
#ifdef BOEHM
  GC_add_roots(keep, keep + blocks);
#endif
  job_t jobs[2];
  for (int t = 0; t < threads; t++) {
    peer_rng rng = peer_rng_for(seed, (unsigned)t);
    jobs[t].w = w + (size_t)t * per;
    jobs[t].n = per;
    jobs[t].keep = keep + (size_t)t * per;
    for (size_t i = 0; i < per; i++)
      w[(size_t)t * per + i] = (uint8_t)peer_fields(&rng);
  }
  pthread_barrier_init(&g_start, NULL, (unsigned)threads + 1);
  pthread_t th[2];
  for (int t = 0; t < threads; t++)
    if (pthread_create(&th[t], NULL, alloc_run, &jobs[t]) != 0) {
      perror("pthread_create");
      return 2;
    }
  pthread_barrier_wait(&g_start);
  double t0 = peer_now_ms();
  for (int t = 0; t < threads; t++)
    pthread_join(th[t], NULL);
  double ms = peer_now_ms() - t0;
  size_t total = per * (size_t)threads;
  printf("{\"system\":");
  peer_json_str(stdout, system);
  printf(",\"threads\":%d,\"blocks\":%zu,\"ms\":%.2f,\"blocks_per_sec\":%.0f,"
         "\"rss\":%lld,"
         "\"seed\":%llu}\n",
         threads, total, ms, (double)total / (ms / 1e3), peer_rss_bytes(),
         (unsigned long long)seed);
  fflush(stdout);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: alloc_tput [--blocks N] [--threads 1,2] [--seed S] "
                  "[--system NAME]\n");
  exit(1);
}

int main(int argc, char **argv) {
  const char *system = DEFAULT_SYSTEM, *tlist = "1,2";
  long long blocks = 4000000;
  int have_seed = 0;
  uint64_t seed = 0;
  for (int a = 1; a < argc; a++) {
    if (a + 1 >= argc)
      usage();
    const char *o = argv[a];
    if (strcmp(o, "--blocks") == 0)
      blocks = peer_parse_size(argv[++a]);
    else if (strcmp(o, "--threads") == 0)
      tlist = argv[++a];
    else if (strcmp(o, "--seed") == 0) {
      seed = strtoull(argv[++a], NULL, 0);
      have_seed = 1;
    } else if (strcmp(o, "--system") == 0)
      system = argv[++a];
    else
      usage();
  }
  if (blocks < 2)
    usage();
  if (!have_seed)
    seed = peer_default_seed();
  if (!peer_check_preload(system)) {
    printf("{\"system\":");
    peer_json_str(stdout, system);
    printf(",\"error\":\"allocator library not loaded (LD_PRELOAD?)\"}\n");
    return 3;
  }
  int rc = 0;
  for (const char *p = tlist; *p;) {
    int threads = atoi(p);
    if (threads < 1 || threads > 2)
      usage();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 2;
    }
    if (pid == 0)
      _exit(one_run(system, threads, (size_t)blocks, seed));
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      rc = 2;
    p = strchr(p, ',');
    if (!p)
      break;
    p++;
  }
  return rc;
}
