/* bench/peers/med_tput.c -- the malloc peers of bench/medtput.c: allocation
 * throughput for medium blocks (2 KiB - 256 KiB, issue 11) with glibc, or
 * jemalloc / mimalloc under LD_PRELOAD.
 *
 * The same plan as poolheap's for a seed and mix (med_common.h).  Per block:
 * raw blocks calloc(w + 1, 8) (zeroed, as ph_alloc zeroes them; calloc may
 * skip fresh zero pages as poolheap may), scanned ones malloc and every
 * field set to the immediate 0 (as ph_alloc does); the header word (field
 * count) and the id written; the block stored in the young or old ring, and
 * the block it replaces there freed.  Timed: from a barrier all threads
 * pass to the last one done, frees included (the blocks left in the rings
 * at the end are freed after the clock stops).
 *
 * --defer B (not a goal row; bench.medtput.defer): a dropped block is not
 * freed at once but queued, and the queue is freed whenever its blocks sum
 * to B bytes or more, oldest first: the peer then gets its memory back in
 * batches, as a collector does after each collection, instead of reusing
 * the block it freed 16 allocations ago while its lines are still cached.
 *
 *   med_tput [--mix log|3k|40k|200k] [--threads 1|2] [--bytes B] [--seed S]
 *            [--system NAME] [--defer B] */
#include "med_common.h"

#include <pthread.h>
#include <sys/resource.h>

typedef struct {
  unsigned t;
  med_plan plan;
  uint64_t sum;
} job_t;

static pthread_barrier_t start, done;
static size_t defer_bytes; /* --defer: 0, every free at once */

/* The deferred frees of one thread (--defer). */
typedef struct {
  uint64_t **q;
  size_t n, cap, bytes;
} defer_q;

/* Drop b: freed now, or queued until the queue holds defer_bytes. */
static void drop(defer_q *d, uint64_t *b) {
  if (!b)
    return;
  if (!defer_bytes) {
    free(b);
    return;
  }
  if (d->n == d->cap) {
    d->cap = d->cap ? 2 * d->cap : 1024;
    d->q = realloc(d->q, d->cap * sizeof *d->q);
    if (!d->q) {
      fprintf(stderr, "med_tput: out of memory\n");
      exit(2);
    }
  }
  d->q[d->n++] = b;
  d->bytes += 8 * ((size_t)b[0] + 1);
  if (d->bytes >= defer_bytes) {
    for (size_t k = 0; k < d->n; k++)
      free(d->q[k]);
    d->n = d->bytes = 0;
  }
}

static void *run(void *arg) {
  job_t *j = arg;
  uint64_t *young[MED_YOUNG] = {0};
  uint64_t **old = peer_aux_alloc(j->plan.ring * sizeof *old);
  memset(old, 0, j->plan.ring * sizeof *old);
  size_t yi = 0, oi = 0;
  defer_q dq = {0};
  pthread_barrier_wait(&start);
  for (size_t i = 0; i < j->plan.n; i++) {
    uint8_t f = j->plan.fate[i];
    uint32_t w = j->plan.w[i];
    uint64_t *b;
    if (f & MED_FATE_RAW) {
      b = calloc((size_t)w + 1, sizeof *b);
    } else {
      b = malloc(((size_t)w + 1) * sizeof *b);
      if (b)
        for (size_t k = 1; k <= w; k++)
          b[k] = 1; /* the immediate 0 */
    }
    if (!b) {
      fprintf(stderr, "med_tput: out of memory\n");
      exit(2);
    }
    b[0] = w;
    b[1] = med_id(j->t, i);
    if (f & MED_FATE_SURVIVE) {
      drop(&dq, old[oi]);
      old[oi] = b;
      oi = oi + 1 == j->plan.ring ? 0 : oi + 1;
    } else {
      drop(&dq, young[yi]);
      young[yi] = b;
      yi = (yi + 1) % MED_YOUNG;
    }
  }
  pthread_barrier_wait(&done);
  uint64_t h = PEER_HASH_INIT;
  for (size_t k = 0; k < j->plan.ring; k++) {
    uint64_t *b = old[(oi + k) % j->plan.ring];
    if (b)
      h = med_mix(h, b[0], b[1]);
  }
  j->sum = h;
  for (size_t k = 0; k < j->plan.ring; k++)
    free(old[k]);
  for (size_t k = 0; k < MED_YOUNG; k++)
    free(young[k]);
  for (size_t k = 0; k < dq.n; k++)
    free(dq.q[k]);
  free(dq.q);
  peer_aux_free(old, j->plan.ring * sizeof *old);
  return NULL;
}

int main(int argc, char **argv) {
  med_args o;
  med_args_init(&o);
  const char *system = "glibc";
  for (int a = 1; a + 1 < argc; a += 2) {
    if (med_arg(&o, argv[a], argv[a + 1]))
      continue;
    if (strcmp(argv[a], "--system") == 0)
      system = argv[a + 1];
    else if (strcmp(argv[a], "--defer") == 0)
      defer_bytes = (size_t)peer_parse_size(argv[a + 1]);
    else
      argc = 0;
  }
  const char *mix = o.mix;
  int threads = o.threads;
  long long bytes = o.bytes;
  uint64_t seed = o.seed;
  if (argc == 0 || argc % 2 == 0 || !med_args_ok(&o)) {
    fprintf(stderr, "usage: med_tput [--mix log|3k|40k|200k] [--threads 1|2] "
                    "[--bytes B] [--seed S] [--system NAME] [--defer B]\n");
    return 1;
  }
  if (!peer_check_preload(system)) {
    printf("{\"system\":");
    peer_json_str(stdout, system);
    printf(",\"error\":\"allocator library not loaded (LD_PRELOAD?)\"}\n");
    return 3;
  }
  size_t per = (size_t)((double)bytes / med_mean_bytes(mix) / threads);
  job_t jobs[2];
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.t = (unsigned)t};
    med_plan_make(&jobs[t].plan, mix, per, seed, (unsigned)t);
  }
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
  pthread_t th[2];
  struct rusage ru0, ru1;
  for (int t = 0; t < threads; t++)
    if (pthread_create(&th[t], NULL, run, &jobs[t]) != 0) {
      perror("pthread_create");
      return 2;
    }
  getrusage(RUSAGE_SELF, &ru0);
  pthread_barrier_wait(&start);
  double t0 = peer_now_ms(), c0 = peer_cpu_ms();
  pthread_barrier_wait(&done);
  double ms = peer_now_ms() - t0, cpu = peer_cpu_ms() - c0;
  getrusage(RUSAGE_SELF, &ru1);
  for (int t = 0; t < threads; t++)
    pthread_join(th[t], NULL);
  uint64_t total = 0, nblocks = 0, sum = PEER_HASH_INIT;
  for (int t = 0; t < threads; t++) {
    total += jobs[t].plan.bytes;
    nblocks += jobs[t].plan.n;
    sum = peer_mix(sum, jobs[t].sum);
    med_plan_free(&jobs[t].plan);
  }
  printf("{\"system\":");
  peer_json_str(stdout, system);
  printf(",\"mix\":\"%s\",\"threads\":%d,\"blocks\":%llu,\"bytes\":%llu,"
         "\"ms\":%.2f,\"cpu_ms\":%.2f,\"blocks_per_sec\":%.0f,"
         "\"bytes_per_sec\":%.0f,\"minflt\":%ld,\"maxrss\":%ld,"
         "\"checksum\":%llu,\"seed\":%llu,\"defer\":%zu,\"ok\":true}\n",
         mix, threads, (unsigned long long)nblocks, (unsigned long long)total,
         ms, cpu, (double)nblocks / (ms / 1e3), (double)total / (ms / 1e3),
         ru1.ru_minflt - ru0.ru_minflt, ru1.ru_maxrss * 1024L,
         (unsigned long long)(sum & PEER_HASH_MASK), (unsigned long long)seed,
         defer_bytes);
  return 0;
}
