/* demos/demo_report.c -- the demo's tables, plot data and verdict.
 *
 * Reads the JSON lines written by demo_frag, demo_worker and the peer
 * programs of bench/peers/ (one object per line, flat, in their schema;
 * {"system":...,"error":...} for a peer that could not be built or run) and
 * prints one section of the demo:
 *   --section frag      the frag shape side by side: poolheap and the peers
 *   --section worker    RSS after each task, per system; with --plot DIR it
 *                       writes DIR/worker-rss.dat and DIR/worker-rss.gp
 *   --section verdict   three lines computed from the figures; with
 *                       --json FILE one JSON line {"verdict":...} appended
 * Exit status 1 if a figure shows a failure (an error line, a checksum that
 * differs, a heap that did not verify), else 0.
 *
 *   demo_report --frag FILE --worker FILE --section S [--plot DIR]
 *               [--title TEXT] [--json FILE]
 */
#include "demos/demo_common.h"

#define MAX_SYS 16
#define MAX_TASKS 4096

/* ---- a minimal reader for flat JSON objects written by our programs */

static const char *jfind(const char *line, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(line, pat);
  return p ? p + strlen(pat) : NULL;
}

/* 1 and *out if key holds a number (null or absent: 0). */
static int jnum(const char *line, const char *key, double *out) {
  const char *p = jfind(line, key);
  if (!p)
    return 0;
  char *end;
  double v = strtod(p, &end);
  if (end == p)
    return 0;
  *out = v;
  return 1;
}

static double jget(const char *line, const char *key, double dflt) {
  double v;
  return jnum(line, key, &v) ? v : dflt;
}

static uint64_t jint(const char *line, const char *key) {
  const char *p = jfind(line, key);
  return p ? strtoull(p, NULL, 10) : 0;
}

static int jbool(const char *line, const char *key) {
  const char *p = jfind(line, key);
  return p && strncmp(p, "true", 4) == 0;
}

/* 1 and the string (unescaped) in buf if key holds a string. */
static int jstr(const char *line, const char *key, char *buf, size_t cap) {
  const char *p = jfind(line, key);
  if (!p || *p != '"')
    return 0;
  size_t o = 0;
  for (p++; *p && *p != '"' && o + 1 < cap; p++) {
    if (*p == '\\' && p[1])
      p++;
    buf[o++] = *p;
  }
  buf[o] = 0;
  return 1;
}

/* ---- the figures */

typedef struct {
  char system[64];
  char error[400];
  char line[2048];
} frag_row;

typedef struct {
  char system[64];
  char error[400];
  int ntasks;
  double rss[MAX_TASKS];
  double live[MAX_TASKS];  /* poolheap: live bytes after the task */
  double table[MAX_TASKS]; /* bytes in the long-lived table after the task */
  double maps[MAX_TASKS];  /* kernel mappings after the task */
  double release_ms_sum;
} worker_row;

static frag_row frag[MAX_SYS];
static int nfrag;
static worker_row work[MAX_SYS];
static int nwork;
static int failures;

static int read_lines(const char *path, void (*fn)(const char *line)) {
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char line[4096];
  while (fgets(line, sizeof line, f))
    if (line[0] == '{')
      fn(line);
  fclose(f);
  return 1;
}

static void frag_line(const char *line) {
  if (jfind(line, "census") || nfrag == MAX_SYS)
    return;
  frag_row *r = &frag[nfrag++];
  jstr(line, "system", r->system, sizeof r->system);
  jstr(line, "error", r->error, sizeof r->error);
  snprintf(r->line, sizeof r->line, "%s", line);
  if (r->error[0] || !jbool(line, "ok"))
    failures++;
}

static worker_row *work_sys(const char *system) {
  for (int i = 0; i < nwork; i++)
    if (strcmp(work[i].system, system) == 0)
      return &work[i];
  if (nwork == MAX_SYS)
    return NULL;
  worker_row *w = &work[nwork++];
  snprintf(w->system, sizeof w->system, "%s", system);
  return w;
}

static void worker_line(const char *line) {
  char system[64] = "?";
  jstr(line, "system", system, sizeof system);
  worker_row *w = work_sys(system);
  if (!w)
    return;
  if (jstr(line, "error", w->error, sizeof w->error)) {
    failures++;
    return;
  }
  double task, rss;
  if (jnum(line, "task", &task) && jnum(line, "rss", &rss) && task >= 0 &&
      task < MAX_TASKS) {
    w->rss[(int)task] = rss;
    w->live[(int)task] = jget(line, "live_bytes", 0);
    w->table[(int)task] = jget(line, "table_bytes", -1);
    w->maps[(int)task] = jget(line, "maps", -1);
    if ((int)task + 1 > w->ntasks)
      w->ntasks = (int)task + 1;
    w->release_ms_sum += jget(line, "release_ms", 0);
  }
}

static const frag_row *frag_sys(const char *system) {
  for (int i = 0; i < nfrag; i++)
    if (strcmp(frag[i].system, system) == 0)
      return &frag[i];
  return NULL;
}

/* What each system does to give memory back, for the table. */
static const char *release_call(const char *system) {
  if (strcmp(system, "poolheap") == 0)
    return "ph_compact";
  if (strcmp(system, "boehm") == 0)
    return "GC_gcollect_and_unmap";
  if (strncmp(system, "ocaml", 5) == 0)
    return "Gc.compact";
  return "malloc_trim(0)";
}
static const char *drop_call(const char *system) {
  if (strcmp(system, "poolheap") == 0)
    return "R[i]=0, ph_collect";
  if (strcmp(system, "boehm") == 0)
    return "R[i]=0, GC_gcollect";
  if (strncmp(system, "ocaml", 5) == 0)
    return "R.(i)<-0, full_major";
  return "free()";
}

static int is_malloc_peer(const char *s) {
  return strcmp(s, "glibc") == 0 || strcmp(s, "jemalloc") == 0 ||
         strcmp(s, "mimalloc") == 0 || strcmp(s, "boehm") == 0;
}

/* ---- sections */

static void section_frag(void) {
  const frag_row *ph = frag_sys("poolheap");
  uint64_t ph_sum = ph && !ph->error[0] ? jint(ph->line, "checksum_before") : 0;
  /* the system column: 12 characters, or the longest name shown */
  int sw = 12;
  for (int i = 0; i < nfrag; i++)
    if ((int)strlen(frag[i].system) > sw)
      sw = (int)strlen(frag[i].system);
  printf("\n");
  printf("  %-*s %-20s %-21s %8s %29s %8s %9s  %s\n", sw, "", "", "", "",
         "------- RSS (MiB) --------", "", "mappings", "");
  printf("  %-*s %-20s %-21s %8s %9s %9s %9s %8s %9s  %s\n", sw, "system",
         "drop the garbage", "give memory back", "build ms", "built", "dropped",
         "after", "call ms", "bef>after", "checksum");
  for (int i = 0; i < nfrag; i++) {
    const frag_row *r = &frag[i];
    if (r->error[0]) {
      printf("  %-*s NOT RUN: %s\n", sw, r->system, r->error);
      continue;
    }
    const char *l = r->line;
    double built = jget(l, "rss_built", jget(l, "rss_before", 0));
    double maps_b = jget(l, "maps_collected", jget(l, "maps_before", 0));
    uint64_t sb = jint(l, "checksum_before"), sa = jint(l, "checksum_after");
    char sum[64];
    if (sb != sa)
      snprintf(sum, sizeof sum, "DIFFERS after the call");
    else if (ph_sum && sb == ph_sum)
      snprintf(sum, sizeof sum, "%s",
               r == ph ? "before = after" : "= poolheap's");
    else
      snprintf(sum, sizeof sum, "%llu (not poolheap's!)",
               (unsigned long long)sb);
    char maps[32];
    snprintf(maps, sizeof maps, "%.0f>%.0f", maps_b, jget(l, "maps_after", 0));
    printf("  %-*s %-20s %-21s %8.0f %9.1f %9.1f %9.1f %8.1f %9s  %s\n", sw,
           r->system, drop_call(r->system), release_call(r->system),
           jget(l, "build_ms", 0), DEMO_MB(built),
           DEMO_MB(jget(l, "rss_collected", 0)),
           DEMO_MB(jget(l, "rss_after", 0)), jget(l, "compact_ms", 0), maps,
           sum);
    if (ph_sum && sb != ph_sum && r != ph)
      failures++;
  }
  if (!ph)
    printf("  poolheap: no figures (demo_frag failed)\n");
  printf("  (dropped: after free() or the full collection; after: after the "
         "call that gives memory back;\n   malloc_trim(0) is glibc's call, "
         "a no-op for jemalloc and mimalloc, which return memory on their "
         "own)\n");
}

static void section_worker(const char *plot_dir, const char *title) {
  printf("\n  RSS (MiB) after each task:\n");
  int T = 0;
  for (int i = 0; i < nwork; i++)
    if (work[i].ntasks > T)
      T = work[i].ntasks;
  printf("  %-22s", "system \\ task");
  int shown = T > 12 ? 12 : T;
  for (int t = 0; t < shown; t++)
    printf(" %6d", t + 1);
  printf("%s %8s %10s %9s\n", T > shown ? "   ..." : "", "max", "release ms",
         "mappings");
  for (int i = 0; i < nwork; i++) {
    const worker_row *w = &work[i];
    if (w->error[0]) {
      printf("  %-22s NOT RUN: %s\n", w->system, w->error);
      continue;
    }
    printf("  %-22s", w->system);
    double mx = 0, mlo = 0, mhi = 0;
    for (int t = 0; t < w->ntasks; t++) {
      if (t < shown)
        printf(" %6.1f", DEMO_MB(w->rss[t]));
      if (w->rss[t] > mx)
        mx = w->rss[t];
      if (t == 0 || w->maps[t] < mlo)
        mlo = w->maps[t];
      if (t == 0 || w->maps[t] > mhi)
        mhi = w->maps[t];
    }
    for (int t = w->ntasks; t < shown; t++)
      printf(" %6s", "-");
    char maps[32];
    snprintf(maps, sizeof maps, "%.0f-%.0f", mlo, mhi);
    printf("%s %8.1f %10.1f %9s\n", T > shown ? "   ..." : "", DEMO_MB(mx),
           w->ntasks ? w->release_ms_sum / w->ntasks : 0.0, maps);
  }
  printf(
      "  (release ms: the mean per task of ph_compact / ph_collect / "
      "malloc_trim(0) / GC_gcollect_and_unmap / Gc.compact;\n"
      "   mappings: the fewest and the most kernel mappings after a task)\n");
  /* every worker draws from the same generator: the same blocks are kept,
     so the long-lived table holds the same bytes after each task */
  const worker_row *ref = NULL;
  int same = 0;
  for (int i = 0; i < nwork; i++) {
    const worker_row *w = &work[i];
    if (w->error[0] || !w->ntasks)
      continue;
    if (!ref) {
      ref = w;
      continue;
    }
    int t = 0;
    while (t < w->ntasks && t < ref->ntasks && w->table[t] == ref->table[t])
      t++;
    if (t < w->ntasks && t < ref->ntasks) {
      printf("  %s kept OTHER BLOCKS than %s: table bytes after task %d: "
             "%.0f, not %.0f\n",
             w->system, ref->system, t + 1, w->table[t], ref->table[t]);
      failures++;
    } else
      same++;
  }
  if (ref && same)
    printf("  (%d systems kept the same blocks as %s: equal table bytes after "
           "every task)\n",
           same, ref->system);
  if (!plot_dir)
    return;
  char path[1024];
  snprintf(path, sizeof path, "%s/worker-rss.dat", plot_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    failures++;
    return;
  }
  const worker_row *ph = NULL;
  fprintf(f, "# task");
  for (int i = 0; i < nwork; i++)
    if (!work[i].error[0]) {
      fprintf(f, " %s", work[i].system);
      if (strcmp(work[i].system, "poolheap") == 0)
        ph = &work[i];
    }
  fprintf(f, " live\n");
  for (int t = 0; t < T; t++) {
    fprintf(f, "%d", t + 1);
    for (int i = 0; i < nwork; i++)
      if (!work[i].error[0]) {
        if (t < work[i].ntasks)
          fprintf(f, " %.2f", DEMO_MB(work[i].rss[t]));
        else
          fprintf(f, " NaN");
      }
    if (ph && t < ph->ntasks)
      fprintf(f, " %.2f\n", DEMO_MB(ph->live[t]));
    else
      fprintf(f, " NaN\n");
  }
  fclose(f);
  snprintf(path, sizeof path, "%s/worker-rss.gp", plot_dir);
  f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    failures++;
    return;
  }
  /* the terminal line is set by demo.sh (pngcairo, or png without cairo) */
  fprintf(f, "set output '%s/worker-rss.png'\n", plot_dir);
  fprintf(f,
          "set title '%s: RSS after each task (the same blocks in "
          "every system)'\n",
          title);
  fprintf(f, "set xlabel 'task'\nset ylabel 'RSS (MiB)'\n");
  fprintf(f, "set key outside below center maxrows 4 samplen 3 width 2\n");
  fprintf(f, "set grid\nset yrange [0:*]\n");
  fprintf(f, "set xrange [0.5:%d.5]\nset xtics 1\n", T);
  fprintf(f, "set datafile missing 'NaN'\n");
  fprintf(f, "plot ");
  int col = 2, first = 1;
  for (int i = 0; i < nwork; i++) {
    if (work[i].error[0])
      continue;
    const char *s = work[i].system;
    const char *label = s, *style = "lw 2";
    if (strcmp(s, "poolheap") == 0) {
      label = "poolheap, ph\\_compact after each task";
      style = "lw 4 lc rgb '#1a9641'";
    } else if (strcmp(s, "poolheap-collect-only") == 0) {
      label = "poolheap, ph\\_collect only";
      style = "lw 2 dt 2 lc rgb '#1a9641'";
    } else if (strcmp(s, "glibc") == 0)
      label = "glibc malloc + malloc\\_trim";
    else if (strcmp(s, "boehm") == 0)
      label = "Boehm GC + GC\\_gcollect\\_and\\_unmap";
    else if (strcmp(s, "ocaml-5.3") == 0) {
      label = "OCaml 5.3 (stock) + Gc.compact";
      style = "lw 3 lc rgb '#d7191c'";
    } else if (strcmp(s, "ocaml-5.3-poolheap") == 0) {
      label = "OCaml 5.3 on poolheap + Gc.compact";
      style = "lw 3 dt 4 lc rgb '#7b3294'";
    }
    fprintf(f,
            "%s'%s/worker-rss.dat' using 1:%d with linespoints %s title '%s'",
            first ? "" : ", \\\n     ", plot_dir, col, style, label);
    first = 0;
    col++;
  }
  if (ph)
    fprintf(f,
            ", \\\n     '%s/worker-rss.dat' using 1:%d with lines lw 1 "
            "lc rgb '#555555' dt 3 title 'live data (ph\\_stats live\\_bytes)'",
            plot_dir, col);
  fprintf(f, "\n");
  fclose(f);
}

static void section_verdict(FILE *json) {
  const frag_row *ph = frag_sys("poolheap");
  char l1[512] = "", l2[512] = "", l3[512] = "";
  double released = 0, pct = 0, cms = 0, peer_lo = 0, peer_hi = 0;
  int npeer = 0;
  if (ph && !ph->error[0]) {
    double c = jget(ph->line, "rss_collected", 0);
    double a = jget(ph->line, "rss_after", 0);
    released = c - a;
    pct = c > 0 ? 100.0 * released / c : 0;
    cms = jget(ph->line, "compact_ms", 0);
    for (int i = 0; i < nfrag; i++) {
      const frag_row *r = &frag[i];
      if (r->error[0] || !is_malloc_peer(r->system))
        continue;
      double v = jget(r->line, "rss_after", 0);
      if (!npeer || v < peer_lo)
        peer_lo = v;
      if (!npeer || v > peer_hi)
        peer_hi = v;
      npeer++;
    }
    int n = snprintf(l1, sizeof l1,
                     "poolheap returned %.1f MiB (%.0f%%) of its fragmented "
                     "heap to the OS in %.0f ms (RSS %.1f -> %.1f MiB)",
                     DEMO_MB(released), pct, cms, DEMO_MB(c), DEMO_MB(a));
    if (npeer)
      snprintf(l1 + n, sizeof l1 - (size_t)n,
               "; malloc peers and Boehm kept %.1f-%.1f MiB", DEMO_MB(peer_lo),
               DEMO_MB(peer_hi));
    else
      snprintf(l1 + n, sizeof l1 - (size_t)n, "; no malloc peer could be run");
  } else {
    snprintf(l1, sizeof l1, "poolheap's frag run FAILED: %s",
             ph ? ph->error : "no figures");
  }

  const worker_row *wc = NULL, *wn = NULL;
  for (int i = 0; i < nwork; i++) {
    if (strcmp(work[i].system, "poolheap") == 0 && !work[i].error[0])
      wc = &work[i];
    if (strcmp(work[i].system, "poolheap-collect-only") == 0 &&
        !work[i].error[0])
      wn = &work[i];
  }
  double wmax_c = 0, wlast_n = 0;
  if (wc && wc->ntasks) {
    for (int t = 0; t < wc->ntasks; t++)
      if (wc->rss[t] > wmax_c)
        wmax_c = wc->rss[t];
    int n = snprintf(l2, sizeof l2,
                     "worker: poolheap with compaction stayed at <= %.1f MiB "
                     "RSS over %d tasks; after the last task:",
                     DEMO_MB(wmax_c), wc->ntasks);
    const char *sep = " ";
    if (wn && wn->ntasks) {
      wlast_n = wn->rss[wn->ntasks - 1];
      n += snprintf(l2 + n, sizeof l2 - (size_t)n, "%swithout compaction %.1f",
                    sep, DEMO_MB(wlast_n));
      sep = ", ";
    }
    for (int i = 0; i < nwork && n < (int)sizeof l2 - 40; i++) {
      const worker_row *w = &work[i];
      if (w == wc || w == wn || w->error[0] || !w->ntasks)
        continue;
      n += snprintf(l2 + n, sizeof l2 - (size_t)n, "%s%s %.1f", sep, w->system,
                    DEMO_MB(w->rss[w->ntasks - 1]));
      sep = ", ";
    }
    if (n < (int)sizeof l2 - 40)
      snprintf(l2 + n, sizeof l2 - (size_t)n,
               *sep == ',' ? " MiB" : " no other system ran");
  } else {
    snprintf(l2, sizeof l2, "worker: poolheap's worker run FAILED");
  }

  int sums_ok =
      ph && !ph->error[0] &&
      jint(ph->line, "checksum_before") == jint(ph->line, "checksum_after");
  int verified = ph && jbool(ph->line, "verified");
  int same = 0, ran = 0;
  for (int i = 0; i < nfrag; i++) {
    if (&frag[i] == ph || frag[i].error[0])
      continue;
    ran++;
    if (ph && jint(frag[i].line, "checksum_before") ==
                  jint(ph->line, "checksum_before"))
      same++;
  }
  int nfail = 0;
  for (int i = 0; i < nfrag; i++)
    nfail += frag[i].error[0] != 0;
  for (int i = 0; i < nwork; i++)
    nfail += work[i].error[0] != 0;
  snprintf(l3, sizeof l3,
           "checksums %s (poolheap before = after; %d of %d peers built the "
           "same graph), heap %s%s",
           sums_ok ? "matched" : "DID NOT MATCH", same, ran,
           verified ? "verified" : "NOT verified",
           nfail ? "; some peers could not run (see above)" : "");
  printf("\n== Verdict\n  %s\n  %s\n  %s\n", l1, l2, l3);
  if (!sums_ok || !verified || same != ran)
    failures++;
  if (json) {
    fprintf(json,
            "{\"verdict\":true,\"released_bytes\":%.0f,\"released_pct\":%.1f,"
            "\"compact_ms\":%.2f,\"peers_rss_after_min\":%.0f,"
            "\"peers_rss_after_max\":%.0f,\"worker_compact_max_rss\":%.0f,"
            "\"worker_collect_only_last_rss\":%.0f,\"checksums_match\":%s,"
            "\"same_graph_peers\":%d,\"peers_run\":%d,\"verified\":%s,"
            "\"not_run\":%d}\n",
            released, pct, cms, peer_lo, peer_hi, wmax_c, wlast_n,
            sums_ok ? "true" : "false", same, ran, verified ? "true" : "false",
            nfail);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: demo_report --frag FILE --worker FILE --section "
          "frag|worker|verdict [--plot DIR] [--title T] [--json FILE]\n");
  exit(1);
}

int main(int argc, char **argv) {
  const char *frag_path = NULL, *work_path = NULL, *section = NULL,
             *plot = NULL, *json_path = NULL;
  const char *title = "worker";
  for (int a = 1; a < argc; a++) {
    const char *o = argv[a];
    if (a + 1 >= argc)
      usage();
    if (strcmp(o, "--frag") == 0)
      frag_path = argv[++a];
    else if (strcmp(o, "--worker") == 0)
      work_path = argv[++a];
    else if (strcmp(o, "--section") == 0)
      section = argv[++a];
    else if (strcmp(o, "--plot") == 0)
      plot = argv[++a];
    else if (strcmp(o, "--json") == 0)
      json_path = argv[++a];
    else if (strcmp(o, "--title") == 0)
      title = argv[++a];
    else
      usage();
  }
  if (!section)
    usage();
  if (frag_path && !read_lines(frag_path, frag_line))
    fprintf(stderr, "demo_report: cannot read %s\n", frag_path);
  if (work_path && !read_lines(work_path, worker_line))
    fprintf(stderr, "demo_report: cannot read %s\n", work_path);
  if (strcmp(section, "frag") == 0)
    section_frag();
  else if (strcmp(section, "worker") == 0)
    section_worker(plot, title);
  else if (strcmp(section, "verdict") == 0)
    section_verdict(demo_json_open(json_path));
  else
    usage();
  fflush(stdout);
  return failures ? 1 : 0;
}
