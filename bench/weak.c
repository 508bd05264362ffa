/* bench/weak.c -- a weak hash table and an ephemeron table on poolheap
 * (issue 12's figure), beside bench/peers/weak.ml (OCaml 5.3's Weak and
 * Ephemeron.K1 doing the same).
 *
 *   weak [--n N] [--keep K] [--runs R] [--table weak|ephemeron]
 *        [--huge off|transparent]
 *
 * weak: a cache of N entries (blocks of 2 fields: an id and a payload
 * block of 4 fields) in one weak block of N fields (the table); K per
 * mille of the entries are also held strongly (default 100: 90% dropped).
 * ephemeron: N ephemerons (key: a 2-field block, data: a 4-field block) in
 * a strong array; K per mille of the keys held strongly.  Then, timed: one
 * full collection (clears the dropped entries and frees them) and one
 * compaction; the table is checked (every kept entry present with its id,
 * every dropped one 0).  Prints one JSON line per run: collect_ms (the
 * whole ph_collect), collect_cpu_ms (the process's CPU time in it), mark_ms,
 * sweep_ms, compact_ms, rss_after (VmRSS after the compaction) and the counts.
 * --huge transparent: the heap's chunks madvised for transparent huge pages
 * (cfg.huge_pages; default off, as OCaml 5.3's pools, which are never
 * madvised): fewer TLB misses in the mark, the weak clearing and the sweep,
 * but memory goes back only in whole 2 MiB ranges.
 */
#include "bench/peers/peer_common.h"

#include <poolheap.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, int err) {
  fprintf(stderr, "weak: %s: %s\n", what, ph_strerror(err));
  exit(2);
}

int main(int argc, char **argv) {
  size_t n = 1000000;
  unsigned keep = 100;
  int runs = 1, eph = 0, thp = 0;
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "--n") && a + 1 < argc)
      n = (size_t)peer_parse_size(argv[++a]);
    else if (!strcmp(argv[a], "--keep") && a + 1 < argc)
      keep = (unsigned)atoi(argv[++a]);
    else if (!strcmp(argv[a], "--runs") && a + 1 < argc)
      runs = atoi(argv[++a]);
    else if (!strcmp(argv[a], "--table") && a + 1 < argc)
      eph = !strcmp(argv[++a], "ephemeron");
    else if (!strcmp(argv[a], "--huge") && a + 1 < argc)
      thp = !strcmp(argv[++a], "transparent");
    else {
      fprintf(stderr, "usage: weak [--n N] [--keep K] [--runs R] "
                      "[--table weak|ephemeron] [--huge off|transparent]\n");
      return 2;
    }
  }
  int ok_all = 1;
  for (int run = 0; run < runs; run++) {
    ph_heap *h;
    ph_domain *d;
    ph_config cfg;
    ph_config_init(&cfg);
    cfg.gc_percent = 0; /* only the collection we time */
    cfg.huge_pages = thp ? PH_HUGE_TRANSPARENT : PH_HUGE_OFF;
    int e;
    if ((e = ph_heap_create(&cfg, &h)) != PH_OK)
      die("ph_heap_create", e);
    if ((e = ph_domain_attach(h, &d)) != PH_OK)
      die("ph_domain_attach", e);
    size_t m = ph_scope_open(d);
    ph_value *tab = ph_root(d, eph ? ph_alloc(d, n, 0) : ph_alloc_weak(d, n));
    ph_value *strong = ph_root(d, ph_alloc(d, n, 0));
    if (!tab || !*tab || !strong || !*strong)
      die("table", ph_last_error(d));
    for (size_t i = 0; i < n; i++) {
      ph_set_field(*strong, i, ph_val_int(0));
      if (eph)
        ph_set_field(*tab, i, ph_val_int(0));
    }
    peer_rng rng = peer_rng_for(42, 0);
    size_t nkept = 0;
    double t0 = peer_now_ms();
    for (size_t i = 0; i < n; i++) {
      size_t mi = ph_scope_open(d); /* the entry's own roots */
      ph_value k = ph_alloc(d, 2, 0);
      if (!k)
        die("ph_alloc", ph_last_error(d));
      ph_set_field(k, 0, ph_val_int((intptr_t)i));
      ph_value *ks = ph_root(d, k);
      ph_value p = ph_alloc(d, 4, 0); /* the payload */
      if (!p)
        die("ph_alloc", ph_last_error(d));
      ph_set_field(p, 0, ph_val_int((intptr_t)i));
      k = *ks;
      if (eph) {
        ph_set_field(*ks, 1, ph_val_int(1));
        ph_value *ps = ph_root(d, p);
        ph_value x = ph_alloc_ephemeron(d, 1);
        if (!x)
          die("ph_alloc_ephemeron", ph_last_error(d));
        ph_set_field(x, 0, *ks);
        ph_set_field(x, 1, *ps);
        ph_set_field(*tab, i, x);
        k = *ks;
      } else {
        ph_set_field(k, 1, p);
        ph_set_field(*tab, i, k);
      }
      if (peer_uniform(&rng, 1000) < keep) {
        ph_set_field(*strong, i, k);
        nkept++;
      }
      ph_scope_close(d, mi);
    }
    double build_ms = peer_now_ms() - t0;
    ph_stats s0, s1, s2;
    ph_stats_get(h, &s0);
    t0 = peer_now_ms();
    double c0 = peer_cpu_ms();
    if ((e = ph_collect(d)) != PH_OK)
      die("ph_collect", e);
    double collect_ms = peer_now_ms() - t0;
    double collect_cpu_ms = peer_cpu_ms() - c0;
    ph_stats_get(h, &s1);
    t0 = peer_now_ms();
    if ((e = ph_compact(d)) != PH_OK)
      die("ph_compact", e);
    double compact_ms = peer_now_ms() - t0;
    ph_stats_get(h, &s2);
    long long rss_after = peer_rss_bytes();
    /* check: kept entries present with their id, dropped ones 0 */
    size_t present = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
      ph_value x = ph_field(*tab, i);
      ph_value k = eph && ph_is_block(x) ? ph_field(x, 0) : x;
      ph_value want = ph_field(*strong, i);
      if (ph_is_block(want)) {
        present++;
        bad += k != want || ph_field(k, 0) != ph_val_int((intptr_t)i);
      } else {
        bad += k != 0;
      }
    }
    char why[256];
    int verify_ok = ph_verify(d, why, sizeof why) == PH_OK;
    int ok = bad == 0 && present == nkept && verify_ok;
    ok_all &= ok;
    printf("{\"system\":\"poolheap\",\"table\":\"%s\",\"huge\":\"%s\","
           "\"n\":%zu,\"keep\":%u,"
           "\"run\":%d,\"build_ms\":%.3f,\"collect_ms\":%.3f,"
           "\"collect_cpu_ms\":%.3f,\"mark_ms\":%.3f,"
           "\"sweep_ms\":%.3f,\"compact_ms\":%.3f,\"rss_after\":%lld,"
           "\"committed_after\":%llu,\"live_bytes\":%llu,\"kept\":%zu,"
           "\"weak_cleared\":%llu,\"ephemerons_cleared\":%llu,\"ok\":%s}\n",
           eph ? "ephemeron" : "weak", thp ? "transparent" : "off", n, keep,
           run, build_ms, collect_ms, collect_cpu_ms, (double)s1.mark_ns / 1e6,
           (double)s1.sweep_ns / 1e6, compact_ms, rss_after,
           (unsigned long long)s2.committed_bytes,
           (unsigned long long)s2.live_bytes, nkept,
           (unsigned long long)(s1.weak_cleared - s0.weak_cleared),
           (unsigned long long)(s1.ephemerons_cleared - s0.ephemerons_cleared),
           ok ? "true" : "false");
    fflush(stdout);
    ph_scope_close(d, m);
    ph_domain_detach(d);
    ph_heap_destroy(h);
  }
  return ok_all ? 0 : 4;
}
