/* demos/demo_worker.c -- worker(T, S, K) (shared context workloads.md) in a
 * poolheap heap, the same tasks as bench/peers/worker_c.c with the same
 * generator: each task allocates S bytes of frag-like blocks, keeps K/1000 of
 * them in a long-lived table (older entries dropped at random so that it
 * holds at most S/10 bytes); the other blocks stay reachable until the task
 * ends.  The task ends with ph_compact (--mode compact) or ph_collect only
 * (--mode collect), then RSS is sampled.  One JSON line per task, in the
 * peers' schema, on stdout (or appended to --json FILE).
 *
 *   demo_worker [--mode compact|collect] [--tasks T] [--bytes S[k|M|G]]
 *               [--keep K] [--seed S] [--json FILE]
 *               [--huge off|transparent|explicit]
 */
#include "demos/demo_common.h"

#define CHUNK 65536 /* temporaries per root chunk: field 0 links chunks */

static void usage(void) {
  fprintf(stderr, "usage: demo_worker [--mode compact|collect] [--tasks T] "
                  "[--bytes S] [--keep K] [--seed S] [--json FILE] "
                  "[--huge off|transparent|explicit]\n");
  exit(1);
}

int main(int argc, char **argv) {
  long long T = 8, S = 128LL << 20;
  int K = 100, have_seed = 0, compact = 1;
  uint64_t seed = 0;
  const char *json_path = "-";
  ph_config cfg;
  ph_config_init(&cfg);
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
    } else if (strcmp(o, "--mode") == 0) {
      a++;
      if (strcmp(argv[a], "compact") == 0)
        compact = 1;
      else if (strcmp(argv[a], "collect") == 0)
        compact = 0;
      else
        usage();
    } else if (strcmp(o, "--huge") == 0) {
      a++;
      if (strcmp(argv[a], "off") == 0)
        cfg.huge_pages = PH_HUGE_OFF;
      else if (strcmp(argv[a], "transparent") == 0)
        cfg.huge_pages = PH_HUGE_TRANSPARENT;
      else if (strcmp(argv[a], "explicit") == 0)
        cfg.huge_pages = PH_HUGE_EXPLICIT;
      else
        usage();
    } else if (strcmp(o, "--json") == 0)
      json_path = argv[++a];
    else
      usage();
  }
  if (T < 1 || S < 1024 || K < 0 || K > 1000)
    usage();
  if (!have_seed)
    seed = peer_default_seed();
  const char *system = compact ? "poolheap" : "poolheap-collect-only";
  FILE *js = demo_json_open(json_path);
  fprintf(stderr,
          "demo_worker: system %s tasks %lld bytes %lld keep %d seed %llu\n",
          system, T, S, K, (unsigned long long)seed);

  ph_heap *heap;
  int err = ph_heap_create(&cfg, &heap);
  if (err != PH_OK)
    demo_die(js, system, "ph_heap_create: %s", ph_strerror(err));
  ph_domain *d;
  err = ph_domain_attach(heap, &d);
  if (err != PH_OK)
    demo_die(js, system, "ph_domain_attach: %s", ph_strerror(err));
  size_t mark = ph_scope_open(d);

  const uint64_t table_cap_bytes = (uint64_t)S / 10;
  /* the smallest block is 3 words, so the table never needs more entries */
  const size_t table_cap = (size_t)(table_cap_bytes / 24) + 2;
  ph_value *table = ph_root(d, ph_alloc(d, table_cap, 0));
  ph_value *temps = ph_root(d, PH_UNIT); /* this task's chunk list */
  if (!table || !temps || *table == 0)
    demo_die(js, system, "roots: %s", ph_strerror(ph_last_error(d)));
  size_t used = CHUNK; /* slots used in the newest chunk */
  size_t table_n = 0;
  uint64_t table_live = 0;
  peer_rng rng = peer_rng_for(seed, 0);
  uint64_t counter = 0;

  for (long long t = 0; t < T; t++) {
    double t0 = peer_now_ms();
    size_t old_n = table_n; /* entries [0, old_n) come from earlier tasks */
    uint64_t allocated = 0;
    while (allocated < (uint64_t)S) {
      if (used == CHUNK) { /* room for a temporary, before b exists */
        ph_value c = ph_alloc(d, CHUNK + 1, 0);
        if (c == 0)
          demo_die(js, system, "ph_alloc: %s", ph_strerror(ph_last_error(d)));
        ph_set_field(c, 0, *temps);
        *temps = c;
        used = 0;
      }
      unsigned w = peer_fields(&rng);
      size_t bytes = (w + 1) * sizeof(uintptr_t);
      ph_value b = ph_alloc(d, w, 0);
      if (b == 0)
        demo_die(js, system, "ph_alloc: %s", ph_strerror(ph_last_error(d)));
      /* no allocation from here on: b need not be rooted */
      for (unsigned j = 0; j < w; j++)
        ph_set_field(b, j, ph_val_int((intptr_t)counter));
      counter++;
      allocated += bytes;
      ph_value tb = *table;
      if (peer_uniform(&rng, 1000) < (uint64_t)K) {
        /* make room: drop random older entries (any entry if none is left) */
        while (table_live + bytes > table_cap_bytes && table_n > 0) {
          size_t j;
          ph_value victim;
          if (old_n > 0) {
            j = (size_t)peer_uniform(&rng, old_n);
            victim = ph_field(tb, j);
            ph_set_field(tb, j, ph_field(tb, old_n - 1));
            ph_set_field(tb, old_n - 1, ph_field(tb, table_n - 1));
            old_n--;
          } else {
            j = (size_t)peer_uniform(&rng, table_n);
            victim = ph_field(tb, j);
            ph_set_field(tb, j, ph_field(tb, table_n - 1));
          }
          table_n--;
          ph_set_field(tb, table_n, PH_UNIT);
          table_live -= (ph_wosize(victim) + 1) * sizeof(uintptr_t);
        }
        if (table_live + bytes <= table_cap_bytes && table_n < table_cap) {
          ph_set_field(tb, table_n++, b);
          table_live += bytes;
          continue;
        }
      }
      ph_set_field(*temps, 1 + used++, b); /* a temporary of this task */
    }
    /* the task ends: its temporaries die */
    *temps = PH_UNIT;
    used = CHUNK;
    double task_ms = peer_now_ms() - t0;
    double r0 = peer_now_ms();
    err = compact ? ph_compact(d) : ph_collect(d);
    double release_ms = peer_now_ms() - r0;
    if (err != PH_OK)
      demo_die(js, system, "%s: %s", compact ? "ph_compact" : "ph_collect",
               ph_strerror(err));
    ph_stats st;
    ph_stats_get(heap, &st);
    fprintf(js,
            "{\"system\":\"%s\",\"task\":%lld,\"rss\":%lld,\"maps\":%ld,"
            "\"table_bytes\":%llu,\"task_ms\":%.2f,\"release_ms\":%.2f,"
            "\"committed\":%llu,\"live_bytes\":%llu,\"seed\":%llu}\n",
            system, t, peer_rss_bytes(), peer_maps_count(NULL, NULL),
            (unsigned long long)table_live, task_ms, release_ms,
            (unsigned long long)st.committed_bytes,
            (unsigned long long)st.live_bytes, (unsigned long long)seed);
    fflush(js);
  }
  char why[256] = "";
  err = ph_verify(d, why, sizeof why);
  if (err != PH_OK)
    demo_die(js, system, "ph_verify: %s", why);
  ph_scope_close(d, mark);
  ph_domain_detach(d);
  ph_heap_destroy(heap);
  return 0;
}
