/* bench/tput.c -- poolheap's allocation throughput for the frag size mix,
 * 1 and 2 threads, the same measurement as bench/peers/alloc_tput.c:
 * field counts drawn beforehand from the same seeded sequence, each thread
 * a domain allocating its share (tag 0 blocks, so ph_alloc also sets every
 * field to PH_UNIT, which the malloc peers do not do), every block stored
 * in a table, no frees, collections off (gc_percent 0) as nothing dies.
 * One JSON line per thread count, each run in a fresh process.
 *
 *   tput [--blocks N] [--threads 1,2] [--seed S]
 */
#include "bench/peers/peer_common.h"

#include <poolheap.h>
#include <pthread.h>
#include <sys/wait.h>

typedef struct {
  ph_heap *h;
  const uint8_t *w;
  size_t n;
  ph_value *keep;
  int err;
} job_t;

static pthread_barrier_t start;

static void *run(void *arg) {
  job_t *j = arg;
  ph_domain *d;
  j->err = ph_domain_attach(j->h, &d);
  pthread_barrier_wait(&start);
  if (j->err)
    return NULL;
  for (size_t i = 0; i < j->n; i++) {
    ph_value b = ph_alloc(d, j->w[i], 0);
    if (!b) {
      j->err = ph_last_error(d);
      break;
    }
    j->keep[i] = b;
  }
  ph_domain_detach(d);
  return NULL;
}

static int one_run(int threads, size_t blocks, uint64_t seed) {
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = 0;
  ph_heap *h;
  if (ph_heap_create(&cfg, &h) != PH_OK)
    return 2;
  size_t per = blocks / (size_t)threads;
  uint8_t *w = peer_aux_alloc(blocks);
  ph_value *keep = peer_aux_alloc(blocks * sizeof(ph_value));
  memset(keep, 0, blocks * sizeof(ph_value));
  job_t jobs[2];
  for (int t = 0; t < threads; t++) {
    peer_rng rng = peer_rng_for(seed, (unsigned)t);
    jobs[t] = (job_t){h, w + (size_t)t * per, per, keep + (size_t)t * per, 0};
    for (size_t i = 0; i < per; i++)
      w[(size_t)t * per + i] = (uint8_t)peer_fields(&rng);
  }
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_t th[2];
  for (int t = 0; t < threads; t++)
    pthread_create(&th[t], NULL, run, &jobs[t]);
  pthread_barrier_wait(&start);
  double t0 = peer_now_ms();
  for (int t = 0; t < threads; t++)
    pthread_join(th[t], NULL);
  double ms = peer_now_ms() - t0;
  for (int t = 0; t < threads; t++)
    if (jobs[t].err) {
      printf("{\"system\":\"poolheap\",\"threads\":%d,\"error\":\"%s\"}\n",
             threads, ph_strerror(jobs[t].err));
      return 2;
    }
  size_t total = per * (size_t)threads;
  printf("{\"system\":\"poolheap\",\"threads\":%d,\"blocks\":%zu,\"ms\":%.2f,"
         "\"blocks_per_sec\":%.0f,\"rss\":%lld,\"seed\":%llu}\n",
         threads, total, ms, (double)total / (ms / 1e3), peer_rss_bytes(),
         (unsigned long long)seed);
  fflush(stdout);
  ph_heap_destroy(h);
  return 0;
}

int main(int argc, char **argv) {
  const char *tlist = "1,2";
  long long blocks = 4000000;
  uint64_t seed = peer_default_seed();
  for (int a = 1; a + 1 < argc; a += 2) {
    if (strcmp(argv[a], "--blocks") == 0)
      blocks = peer_parse_size(argv[a + 1]);
    else if (strcmp(argv[a], "--threads") == 0)
      tlist = argv[a + 1];
    else if (strcmp(argv[a], "--seed") == 0)
      seed = strtoull(argv[a + 1], NULL, 0);
    else {
      fprintf(stderr, "usage: tput [--blocks N] [--threads 1,2] [--seed S]\n");
      return 1;
    }
  }
  if (blocks < 2)
    return 1;
  int rc = 0;
  for (const char *p = tlist; p && *p;
       p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
    int threads = atoi(p);
    if (threads < 1 || threads > 2)
      return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
      _exit(one_run(threads, (size_t)blocks, seed));
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      rc = 2;
  }
  return rc;
}
