/* bench/medtput.c -- poolheap's allocation throughput for medium blocks
 * (2 KiB - 256 KiB, issue 11), beside bench/peers/med_tput.c (glibc,
 * jemalloc, mimalloc: the same sequence with malloc/calloc and free).
 *
 * Each thread attaches a domain and runs its plan (bench/peers/med_common.h:
 * sizes, survivors and raw/scanned drawn beforehand from the seed): per
 * block one ph_alloc (tag 0, or PH_TAG_RAW for raw blocks: ph_alloc sets
 * scanned fields to the immediate 0 and zeroes raw blocks), its id stored in
 * field 0, and the block stored in a handle-scope root: the young ring's
 * (it dies MED_YOUNG allocations later, when its slot is overwritten) or the
 * old ring's (a survivor, dropped when the ring comes round).  The GC runs
 * as paced (gc_percent 100 by default): the collections, their sweeps and
 * the memory they release or take back are inside the timed part, exactly
 * as the frees are on the malloc side.  Timed: from a barrier all threads
 * pass once their rings are rooted to one they pass when all are done
 * (drawing the plan, heap creation, the checksum and ph_verify are not
 * timed).  One JSON line: blocks and bytes per second,
 * collections and their stop-the-world time (gc_ms: the sections as domain
 * 0 saw them, from on_event; mark_ms and sweep_ms: its phases), CPU time, minor
 * page faults, peak RSS, the checksum of the old ring (equal to the peers' for
 * the same seed and mix).
 *
 *   medtput [--mix log|3k|40k|200k] [--threads 1|2] [--bytes B] [--seed S]
 *           [--gc-percent P] [--gc-helpers K]
 * K: ph_config.gc_helpers (default 0, as the goal rows run; a helper thread
 * marks and sweeps beside the domains on another core).
 * B is the bytes allocated in all (default 4G, k/M/G suffixes), split
 * evenly between the threads. */
#include <poolheap.h>

#include "bench/peers/med_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

typedef struct {
  ph_heap *h;
  unsigned t;
  med_plan plan;
  uint64_t sum;
  int err;
} job_t;

static pthread_barrier_t start, done;

/* The stop-the-world sections' time as domain 0 saw them (on_event): how
 * much of poolheap's time the collections took (gc_ms in the JSON line),
 * and of it the mark and sweep phases' (mark_ms, sweep_ms: marking
 * includes waiting for the other participant to finish its share; the
 * rest of gc_ms is the section's barrier rounds and single steps). */
static _Atomic uint64_t ev_begin[3], ev_ns[3]; /* STW, MARK, SWEEP */
static void on_event(ph_phase phase, int begin, unsigned domain,
                     uint64_t time_ns, void *user) {
  (void)user;
  if (phase > PH_PHASE_SWEEP || domain != 0)
    return;
  if (begin)
    atomic_store_explicit(&ev_begin[phase], time_ns, memory_order_relaxed);
  else
    atomic_fetch_add_explicit(
        &ev_ns[phase],
        time_ns - atomic_load_explicit(&ev_begin[phase], memory_order_relaxed),
        memory_order_relaxed);
}

static void *run(void *arg) {
  job_t *j = arg;
  ph_domain *d;
  j->err = ph_domain_attach(j->h, &d);
  if (j->err) {
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&done);
    return NULL;
  }
  size_t mark = ph_scope_open(d);
  ph_value *young[MED_YOUNG];
  ph_value **old = peer_aux_alloc(j->plan.ring * sizeof *old);
  for (size_t k = 0; k < MED_YOUNG; k++)
    young[k] = ph_root(d, PH_UNIT);
  for (size_t k = 0; k < j->plan.ring; k++)
    old[k] = ph_root(d, PH_UNIT);
  size_t yi = 0, oi = 0;
  /* the others may still be rooting: wait without holding up a collection */
  ph_blocking_enter(d);
  pthread_barrier_wait(&start);
  ph_blocking_leave(d);
  /* the timed loop: the main thread's clock runs from `start` to `done` */
  for (size_t i = 0; i < j->plan.n; i++) {
    uint8_t f = j->plan.fate[i];
    ph_value b = ph_alloc(d, j->plan.w[i], f & MED_FATE_RAW ? PH_TAG_RAW : 0);
    if (!b) {
      j->err = ph_last_error(d);
      break;
    }
    uint64_t id = med_id(j->t, i);
    if (f & MED_FATE_RAW)
      ((uint64_t *)ph_raw(b))[0] = id;
    else
      ph_set_field(b, 0, ph_val_int((intptr_t)id));
    if (f & MED_FATE_SURVIVE) {
      *old[oi] = b;
      oi = oi + 1 == j->plan.ring ? 0 : oi + 1;
    } else {
      *young[yi] = b;
      yi = (yi + 1) % MED_YOUNG;
    }
  }
  /* stay attached (and take part in collections) until every thread is
   * done: a finished domain that detached would leave the other alone */
  ph_blocking_enter(d);
  pthread_barrier_wait(&done);
  ph_blocking_leave(d);
  /* the checksum over the old ring, in slot order from the oldest */
  uint64_t h = PEER_HASH_INIT;
  for (size_t k = 0; k < j->plan.ring; k++) {
    ph_value b = *old[(oi + k) % j->plan.ring];
    if (!ph_is_block(b))
      continue;
    uint64_t id = ph_tag(b) >= PH_TAG_RAW
                      ? ((const uint64_t *)ph_raw(b))[0]
                      : (uint64_t)ph_int_val(ph_field(b, 0));
    h = med_mix(h, ph_wosize(b), id);
  }
  j->sum = h;
  if (j->t == 0 && !j->err) {
    char why[256];
    if (ph_verify(d, why, sizeof why) != PH_OK) {
      fprintf(stderr, "medtput: ph_verify: %s\n", why);
      j->err = PH_ECORRUPT;
    }
  }
  ph_scope_close(d, mark);
  peer_aux_free(old, j->plan.ring * sizeof *old);
  ph_domain_detach(d);
  return NULL;
}

int main(int argc, char **argv) {
  med_args o;
  med_args_init(&o);
  unsigned gc_percent = 100, gc_helpers = 0;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (med_arg(&o, argv[a], argv[a + 1]))
      continue;
    if (strcmp(argv[a], "--gc-percent") == 0)
      gc_percent = (unsigned)atoi(argv[a + 1]);
    else if (strcmp(argv[a], "--gc-helpers") == 0)
      gc_helpers = (unsigned)atoi(argv[a + 1]);
    else
      argc = 0; /* usage below */
  }
  const char *mix = o.mix;
  int threads = o.threads;
  long long bytes = o.bytes;
  uint64_t seed = o.seed;
  if (argc == 0 || argc % 2 == 0 || !med_args_ok(&o)) {
    fprintf(stderr, "usage: medtput [--mix log|3k|40k|200k] [--threads 1|2] "
                    "[--bytes B] [--seed S] [--gc-percent P] "
                    "[--gc-helpers K]\n");
    return 1;
  }
  size_t per = (size_t)((double)bytes / med_mean_bytes(mix) / threads);
  ph_config cfg;
  ph_config_init(&cfg);
  cfg.gc_percent = gc_percent;
  cfg.gc_helpers = gc_helpers;
  cfg.on_event = on_event;
  ph_heap *h;
  int e = ph_heap_create(&cfg, &h);
  if (e != PH_OK) {
    printf("{\"system\":\"poolheap\",\"error\":\"ph_heap_create: %s\"}\n",
           ph_strerror(e));
    return 2;
  }
  job_t jobs[2];
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.h = h, .t = (unsigned)t};
    med_plan_make(&jobs[t].plan, mix, per, seed, (unsigned)t);
  }
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
  pthread_t th[2];
  struct rusage ru0, ru1;
  for (int t = 0; t < threads; t++)
    pthread_create(&th[t], NULL, run, &jobs[t]);
  getrusage(RUSAGE_SELF, &ru0);
  pthread_barrier_wait(&start);
  double t0 = peer_now_ms(), c0 = peer_cpu_ms();
  pthread_barrier_wait(&done);
  double ms = peer_now_ms() - t0, cpu = peer_cpu_ms() - c0;
  double gc_ms = (double)atomic_load(&ev_ns[PH_PHASE_STW]) / 1e6;
  double mark_ms = (double)atomic_load(&ev_ns[PH_PHASE_MARK]) / 1e6;
  double sweep_ms = (double)atomic_load(&ev_ns[PH_PHASE_SWEEP]) / 1e6;
  getrusage(RUSAGE_SELF, &ru1);
  for (int t = 0; t < threads; t++)
    pthread_join(th[t], NULL);
  ph_stats st;
  ph_stats_get(h, &st);
  uint64_t total = 0, nblocks = 0, sum = PEER_HASH_INIT;
  int err = 0;
  for (int t = 0; t < threads; t++) {
    total += jobs[t].plan.bytes;
    nblocks += jobs[t].plan.n;
    sum = peer_mix(sum, jobs[t].sum);
    if (jobs[t].err && !err)
      err = jobs[t].err;
  }
  if (err) {
    printf("{\"system\":\"poolheap\",\"mix\":\"%s\",\"threads\":%d,"
           "\"error\":\"%s\"}\n",
           mix, threads, ph_strerror(err));
    return 2;
  }
  printf("{\"system\":\"poolheap\",\"mix\":\"%s\",\"threads\":%d,"
         "\"blocks\":%llu,\"bytes\":%llu,\"ms\":%.2f,\"cpu_ms\":%.2f,"
         "\"blocks_per_sec\":%.0f,\"bytes_per_sec\":%.0f,\"collections\":%llu,"
         "\"gc_ms\":%.2f,\"mark_ms\":%.2f,\"sweep_ms\":%.2f,"
         "\"minflt\":%ld,\"maxrss\":%ld,\"checksum\":%llu,\"seed\":%llu,"
         "\"gc_percent\":%u,\"gc_helpers\":%u,\"ok\":true}\n",
         mix, threads, (unsigned long long)nblocks, (unsigned long long)total,
         ms, cpu, (double)nblocks / (ms / 1e3), (double)total / (ms / 1e3),
         (unsigned long long)st.collections, gc_ms, mark_ms, sweep_ms,
         ru1.ru_minflt - ru0.ru_minflt, ru1.ru_maxrss * 1024L,
         (unsigned long long)(sum & PEER_HASH_MASK), (unsigned long long)seed,
         gc_percent, gc_helpers);
  for (int t = 0; t < threads; t++)
    med_plan_free(&jobs[t].plan);
  return ph_heap_destroy(h) == PH_OK ? 0 : 2;
}
