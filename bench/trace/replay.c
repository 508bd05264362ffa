/* bench/trace/replay.c -- replay a program's allocation trace on poolheap's
 * managed API or on the process's malloc (issue 11's trace replay).
 *
 *   replay pack RAW OUT.pht     a raw file of bench/trace/shim/shim.c into
 *                               the compact trace below
 *   replay run TRACE.pht [--name NAME] [--system poolheap|malloc]
 *                               [--points K]
 *
 * The compact trace: "PHT1\n", then one unsigned LEB128 varint per event:
 * size << 1 for an allocation (malloc, calloc, the memalign family; a
 * realloc is an allocation of the new size followed by the free of the old
 * block), age << 1 | 1 for the free of the block allocated `age`
 * allocations before the most recent one.  Frees of pointers the trace never
 * saw allocated are dropped; blocks never freed live to the end.
 *
 * The replay: every allocation is a block of the trace's size (at least 8
 * bytes; on poolheap ceil(size / 8) fields of a scanned block), every free
 * drops the block's root (poolheap) or frees it (malloc).  A block holds
 * pointers (in fields 1..3) only to older blocks that are still live and
 * die no earlier than it, so a freed block is garbage on poolheap; field 0
 * holds its id (an immediate) and the other words immediates derived from
 * it, all written at allocation.  At K points (default 8: after every 1/K of
 * the events) the replay runs the system's release call: ph_compact
 * (poolheap), malloc_trim(0) (glibc), mallctl arena.<all>.purge
 * (jemalloc), mi_collect(true) (mimalloc), whichever the process's malloc
 * is (run it under LD_PRELOAD for the last two), and prints one JSON line:
 * resident bytes of the heap (RSS minus RSS before the first event, from
 * smaps_rollup: see rss_bytes; and its anonymous part, see anon_bytes;
 * the replay's own arrays are mmap'd and touched before that, and every
 * system has then allocated and released one block, with everything a
 * point runs: the code and data of a system's first call are not its
 * heap), live bytes
 * (the sum of the trace's sizes over live blocks), and a checksum of every
 * live block's words, with each pointer field counted as its target's id:
 * the same on every system, and on poolheap the same before and after the
 * compaction, with ph_verify clean after it (and, on poolheap, the floor
 * of its memory for the live blocks, with today's classes and with the
 * medium classes: see proj_init, and where its resident pages are: see
 * where); and the time, CPU time and
 * minor page faults of the replay so far (the trace's events, the writes
 * that fill each block, the release calls and checksums).  The alignment
 * of the memalign family is not replayed: those are plain blocks. */
#include "poolheap.h"
/* for the projection (ph_sizeclass_medium, ph_pool_layout, PH_LARGE_HDR) and
 * where (the chunks, their unit states, pool headers) only */
#include "heap/heap.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NPTR 3

static void die(const char *msg) {
  fprintf(stderr, "replay: %s\n", msg);
  exit(2);
}

/* Anonymous, touched memory: the replay's arrays are outside every heap
 * measured and resident before the first event. */
static void *map_touched(size_t bytes) {
  if (bytes == 0)
    bytes = 8;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED)
    die("mmap failed");
  memset(p, 0, bytes);
  return p;
}

static unsigned char *read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    die("cannot open input");
  struct stat st;
  if (fstat(fd, &st) != 0)
    die("cannot stat input");
  *len = (size_t)st.st_size;
  unsigned char *p = map_touched(*len);
  size_t off = 0;
  while (off < *len) {
    ssize_t r = read(fd, p + off, *len - off);
    if (r <= 0)
      die("read failed");
    off += (size_t)r;
  }
  close(fd);
  return p;
}

/* ------------------------------------------------------------------ pack */

typedef struct {
  uint64_t key, id;
} slot_t;

static slot_t *tab;
static size_t tab_mask;

static size_t hslot(uint64_t key) {
  uint64_t x = key * 0x9e3779b97f4a7c15ull;
  size_t i = (size_t)(x >> 20) & tab_mask;
  while (tab[i].key && tab[i].key != key)
    i = (i + 1) & tab_mask;
  return i;
}

/* backward-shift deletion keeps the probe chains intact */
static void hdel(size_t i) {
  tab[i].key = 0;
  size_t j = i;
  for (;;) {
    j = (j + 1) & tab_mask;
    if (!tab[j].key)
      return;
    size_t k = (size_t)((tab[j].key * 0x9e3779b97f4a7c15ull) >> 20) & tab_mask;
    if ((i <= j) ? (i < k && k <= j) : (i < k || k <= j))
      continue;
    tab[i] = tab[j];
    tab[j].key = 0;
    i = j;
  }
}

static void put_varint(FILE *f, uint64_t v) {
  do {
    unsigned char b = v & 0x7f;
    v >>= 7;
    putc(b | (v ? 0x80 : 0), f);
  } while (v);
}

static int do_pack(const char *in, const char *out) {
  size_t len;
  uint64_t *r = (uint64_t *)read_file(in, &len);
  size_t n = len / 24;
  size_t cap = 1024;
  while (cap < 2 * n + 2)
    cap <<= 1;
  tab = map_touched(cap * sizeof *tab);
  tab_mask = cap - 1;
  FILE *f = fopen(out, "wb");
  if (!f)
    die("cannot write output");
  fputs("PHT1\n", f);
  uint64_t nalloc = 0, nfree = 0, dropped = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned op = (unsigned)(r[3 * i] >> 56);
    uint64_t size = r[3 * i] & ((1ull << 56) - 1);
    uint64_t res = r[3 * i + 1], arg = r[3 * i + 2];
    /* the block freed (free) or replaced (realloc), if the trace knows it */
    int have_old = 0;
    uint64_t old_id = 0;
    if ((op == 'f' || op == 'r') && arg) {
      size_t s = hslot(arg);
      if (tab[s].key) {
        have_old = 1;
        old_id = tab[s].id;
        hdel(s);
      } else {
        dropped++;
      }
    }
    if (op == 'm' || op == 'c' || (op == 'r' && res)) {
      size_t s = hslot(res);
      if (tab[s].key) { /* freed without our seeing it: forget the old one */
        hdel(s);
        s = hslot(res);
      }
      tab[s].key = res;
      tab[s].id = nalloc++;
      put_varint(f, size << 1);
    }
    if (have_old) {
      put_varint(f, (nalloc - 1 - old_id) << 1 | 1);
      nfree++;
    }
  }
  fclose(f);
  fprintf(stderr,
          "replay pack: %zu records: %llu allocations, %llu frees, %llu "
          "frees of unknown blocks dropped\n",
          n, (unsigned long long)nalloc, (unsigned long long)nfree,
          (unsigned long long)dropped);
  return 0;
}

/* ------------------------------------------------------------------- run */

enum { SYS_POOLHEAP, SYS_GLIBC, SYS_JEMALLOC, SYS_MIMALLOC };
static const char *sys_name[] = {"poolheap", "glibc", "jemalloc", "mimalloc"};

static size_t nalloc, nev;
static uint64_t *ev;    /* size << 1, or id << 1 | 1 for a free */
static uint64_t *death; /* event index of the block's free, nev if never */
static uint64_t *bsize; /* the trace's size of each block */
static uintptr_t *val;  /* the block (poolheap: a root slot), 0 when dead */
static uint32_t *live_ids, *live_pos;
static size_t nlive;
static uint64_t live_bytes;

/* The first size - 1 bytes of file path into buf, NUL-terminated: 0, or
 * -1 if it cannot be read. */
static int read_small_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return -1;
  ssize_t r = read(fd, buf, size - 1);
  close(fd);
  if (r <= 0)
    return -1;
  buf[r] = 0;
  return 0;
}

/* A field of smaps_rollup in bytes (a walk of the page tables, exact at
 * the moment of the call), or -1. */
static long long rollup_bytes(const char *field) {
  char buf[4096], key[32];
  if (read_small_file("/proc/self/smaps_rollup", buf, sizeof buf) != 0)
    return -1;
  snprintf(key, sizeof key, "\n%s:", field);
  char *p = strstr(buf, key);
  long long kb;
  if (!p || sscanf(p + strlen(key), "%lld", &kb) != 1)
    return -1;
  return kb * 1024;
}

/* Resident bytes of the process: smaps_rollup's Rss; statm's count (the
 * fallback) may lag behind the per-CPU batches of the kernel's RSS
 * counters (here 56 KB, right where the baseline was read: after the
 * replay touched its buffers). */
static long long rss_bytes(void) {
  long long b = rollup_bytes("Rss");
  if (b >= 0)
    return b;
  char buf[256];
  if (read_small_file("/proc/self/statm", buf, sizeof buf) != 0)
    return -1;
  long long size, res;
  if (sscanf(buf, "%lld %lld", &size, &res) != 2)
    return -1;
  return res * sysconf(_SC_PAGESIZE);
}

/* The anonymous part of it (smaps_rollup's Anonymous): the heap's pages
 * and every other written private page, without the code and read-only
 * data of the binary and its libraries, which the kernel maps in batches
 * around each fault (fault-around) from the page cache, so that their
 * count varies from run to run. */
static long long anon_bytes(void) {
  return rollup_bytes("Anonymous");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time (user + system) and minor page faults of the process so far */
static void usage(double *cpu_ms, long *faults) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
            (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  *faults = ru.ru_minflt;
}

static void decode(const unsigned char *p, size_t len) {
  if (len < 5 || memcmp(p, "PHT1\n", 5) != 0)
    die("not a PHT1 trace");
  size_t n = 0, na = 0;
  for (size_t i = 5; i < len; i++)
    if (!(p[i] & 0x80))
      n++;
  ev = map_touched(n * sizeof *ev);
  size_t k = 0, i = 5;
  while (i < len) {
    uint64_t v = 0;
    unsigned sh = 0;
    while (i < len) {
      unsigned char b = p[i++];
      v |= (uint64_t)(b & 0x7f) << sh;
      sh += 7;
      if (!(b & 0x80))
        break;
    }
    if (v & 1) {
      uint64_t age = v >> 1;
      if (age >= na)
        die("bad free in trace");
      ev[k++] = (na - 1 - age) << 1 | 1;
    } else {
      ev[k++] = v;
      na++;
    }
  }
  nev = k;
  nalloc = na;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

#define IMM(x) ((uintptr_t)(x) << 1 | 1u)

/* words of block id that the replay writes and checks: all its whole words */
static size_t nwords(size_t id) {
  size_t w = bsize[id] / 8;
  return w ? w : 1;
}

static size_t nptr(size_t id) {
  size_t w = nwords(id);
  return w - 1 < NPTR ? w - 1 : NPTR;
}

static void fill(size_t id, uintptr_t *f, uint64_t *rng) {
  size_t w = nwords(id), np = nptr(id), got = 0;
  f[0] = IMM(id);
  /* older, live blocks that die no earlier: the last few, then a few tries
   * further back */
  for (size_t back = 1; back <= 8 && back <= id && got < np; back++) {
    size_t t = id - back;
    if (val[t] && death[t] >= death[id])
      f[1 + got++] = val[t];
  }
  for (int tries = 0; tries < 4 && got < np && id > 0; tries++) {
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    size_t span = id < 4096 ? id : 4096;
    size_t t = id - 1 - (size_t)((*rng >> 33) % span);
    if (val[t] && death[t] >= death[id])
      f[1 + got++] = val[t];
  }
  for (size_t i = 1 + got; i < w; i++)
    f[i] = IMM(mix(id * 64 + i) >> 2);
}

static uint64_t checksum(void) {
  uint64_t sum = 0;
  for (size_t i = 0; i < nlive; i++) {
    size_t id = live_ids[i];
    const uintptr_t *f = (const uintptr_t *)val[id];
    size_t w = nwords(id);
    uint64_t h = mix(id + 1);
    for (size_t k = 0; k < w; k++) {
      uintptr_t x = f[k];
      if (!(x & 1))
        x = *(const uintptr_t *)x | 0x8000000000000000ull; /* target's id */
      h = mix(h ^ x);
    }
    sum += h;
  }
  return sum;
}

static ph_heap *heap;
static ph_domain *dom;

/* The floor of poolheap's memory for the live blocks (poolheap runs): each
 * block costs its slot's share of a full pool (pool bytes / slots), or a
 * large block its pages; with the classes served (ph_census: the small
 * classes, then the medium ones of heap.sizeclass.medium, pools of several
 * units) and, for comparison, with every block above the small classes a
 * page-rounded large block (the layout before medium pools were served).
 * What a replay measures above it is partly filled pools and the
 * collector's own memory. */
#define PROJ_TOP PH_MEDIUM_TOP_WSIZE
static double *cost_now, *cost_large; /* by wosize, 1 .. PROJ_TOP - 1 */
static size_t proj_pool_size;

typedef struct {
  size_t wsize[PH_MAX_CLASSES], max_wosize[PH_MAX_CLASSES];
  unsigned n;
} census_t;

static void census_row(const ph_census_class *c, void *user) {
  census_t *t = user;
  if (t->n < PH_MAX_CLASSES) {
    t->wsize[t->n] = c->block_words;
    t->max_wosize[t->n] = c->max_wosize;
  }
  t->n++;
}

static void proj_init(size_t pool_size) {
  census_t t = {0};
  ph_stats st;
  if (ph_census(dom, census_row, &t) != PH_OK || t.n == 0 ||
      t.n > PH_MAX_CLASSES || ph_stats_get(heap, &st) != PH_OK ||
      st.size_classes == 0 || st.size_classes > t.n)
    die("ph_census failed");
  unsigned nsmall = st.size_classes;
  proj_pool_size = pool_size;
  ph_medium_class m[128];
  unsigned nm = ph_sizeclass_medium(pool_size, t.wsize[nsmall - 1], m, 128);
  if (nm > 128 || nm != t.n - nsmall)
    die("the medium classes differ from the census");
  cost_now = map_touched(PROJ_TOP * sizeof *cost_now);
  cost_large = map_touched(PROJ_TOP * sizeof *cost_large);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  unsigned c = 0, mc = 0;
  for (size_t wo = 1; wo < PROJ_TOP; wo++) {
    size_t large = (PH_LARGE_HDR + 8 * (wo + 1) + page - 1) / page * page;
    if (wo <= t.max_wosize[nsmall - 1]) {
      while (t.max_wosize[c] < wo)
        c++;
      uint32_t hdr; /* heap.pool.hdr, as heap/sizeclass.c sizes it */
      size_t nslots = ph_pool_layout(pool_size, (size_t)t.wsize[c] * 8, &hdr);
      cost_now[wo] = cost_large[wo] = (double)pool_size / nslots;
    } else {
      while (m[mc].wsize < wo + 1)
        mc++;
      cost_now[wo] = (double)m[mc].units * pool_size / m[mc].nslots;
      cost_large[wo] = (double)large;
    }
  }
}

static void proj(double *now, double *large) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  double a = 0, b = 0;
  for (size_t i = 0; i < nlive; i++) {
    size_t wo = (bsize[live_ids[i]] + 7) / 8;
    if (wo == 0)
      wo = 1;
    if (wo < PROJ_TOP) {
      a += cost_now[wo];
      b += cost_large[wo];
    } else {
      double l =
          (double)((PH_LARGE_HDR + 8 * (wo + 1) + page - 1) / page * page);
      a += l;
      b += l;
    }
  }
  *now = a;
  *large = b;
}

/* Where poolheap's resident memory is (poolheap runs, after the point's
 * measurements): the pages of the heap's chunks that mincore reports
 * resident, split into pools, large blocks and free units; in the pools,
 * the bytes of the slots holding blocks and the resident pages that hold no
 * byte of such a slot (nor the pool header): free slots' pages, mostly a
 * class's last partly filled pool (and, of them, those in medium pools).  Only
 * resident pages are read (a slot's header in a page that is not resident is a
 * free slot's), so the walk faults nothing in; its buffers are static and
 * touched before the first RSS reading.  Single-threaded: no collection runs
 * meanwhile. */
typedef struct {
  uint64_t heap, pools, live_slots, free_pages, free_pages_medium, large,
      free_units;
} where_t;
static unsigned char where_vec[1 << 16];   /* mincore, 256 MiB a call */
static unsigned char where_pv[65 * 512];   /* one pool's pages: mincore */
static unsigned char where_live[65 * 512]; /* and those holding a block */

static void where(where_t *o) {
  struct ph_heap *h = heap;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), upp = h->pool_size / page;
  memset(o, 0, sizeof *o);
  for (unsigned ci = 0; ci < h->nchunks; ci++) {
    ph_chunk *c = h->chunks[ci];
    size_t per = sizeof where_vec / upp; /* units a mincore call covers */
    for (uint32_t u0 = 0; u0 < c->nunits; u0 += (uint32_t)per) {
      uint32_t n = c->nunits - u0 < per ? c->nunits - u0 : (uint32_t)per;
      if (mincore(ph_unit_addr(h, c, u0), (size_t)n * h->pool_size,
                  where_vec) != 0)
        die("mincore failed");
      for (uint32_t k = 0; k < n; k++) {
        uint32_t u = u0 + k;
        const unsigned char *v = where_vec + (size_t)k * upp;
        uint64_t r = 0;
        for (size_t q = 0; q < upp; q++)
          r += v[q] & 1;
        r *= page;
        o->heap += r;
        unsigned st = c->ustate[u];
        if (st == PH_U_LARGE || st == PH_U_LARGE_TAIL) {
          o->large += r;
          continue;
        }
        if (st != PH_U_POOL && st != PH_U_POOL_TAIL) {
          o->free_units += r;
          continue;
        }
        o->pools += r;
        if (st != PH_U_POOL)
          continue; /* a medium pool is walked from its first unit */
        /* the pool's pages: this unit's vector, then its tails' (the
         * tails may lie past this mincore call: ask again) */
        ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
        size_t units = h->class_units[p->cls], npg = units * upp;
        unsigned char *pv = where_pv;
        if (npg > sizeof where_pv || mincore(p, units * h->pool_size, pv) != 0)
          die("where: mincore failed");
        memset(where_live, 0, npg);
        where_live[0] = 1; /* the pool header's page */
        size_t sb = (size_t)h->class_wsize[p->cls] * 8;
        for (uint32_t i = 0; i < p->nslots; i++) {
          size_t a = p->hdr + (size_t)i * sb;
          if (!(pv[a / page] & 1) || *(const ph_value *)((char *)p + a) == 0)
            continue; /* a free slot */
          o->live_slots += sb;
          for (size_t q = a / page; q <= (a + sb - 1) / page; q++)
            where_live[q] = 1;
        }
        for (size_t q = 0; q < npg; q++)
          if ((pv[q] & 1) && !where_live[q]) {
            o->free_pages += page;
            if (p->cls >= h->nsmall)
              o->free_pages_medium += page;
          }
      }
    }
  }
}

static void scan_roots(ph_domain *d, ph_visit_fn visit, void *ctx, void *user) {
  (void)d;
  (void)user;
  for (size_t i = 0; i < nlive; i++)
    visit((ph_value *)&val[live_ids[i]], ctx);
}

static int sys_detect(void) {
  if (dlsym(RTLD_DEFAULT, "mi_collect"))
    return SYS_MIMALLOC;
  if (dlsym(RTLD_DEFAULT, "mallctl"))
    return SYS_JEMALLOC;
  return SYS_GLIBC;
}

static void sys_release(int sys) {
  if (sys == SYS_GLIBC) {
    malloc_trim(0);
  } else if (sys == SYS_JEMALLOC) {
    int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(
            RTLD_DEFAULT, "mallctl");
    mallctl("arena.4096.purge", NULL, NULL, NULL, 0); /* MALLCTL_ARENAS_ALL */
  } else if (sys == SYS_MIMALLOC) {
    void (*mi_collect)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "mi_collect");
    mi_collect(1);
  }
}

static int do_run(int argc, char **argv) {
  const char *path = argv[0], *name = NULL, *want = "malloc";
  int points = 8;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--name") && i + 1 < argc)
      name = argv[++i];
    else if (!strcmp(argv[i], "--system") && i + 1 < argc)
      want = argv[++i];
    else if (!strcmp(argv[i], "--points") && i + 1 < argc)
      points = atoi(argv[++i]);
    else
      die("usage: replay run TRACE [--name N] [--system poolheap|malloc] "
          "[--points K]");
  }
  if (points < 1)
    points = 1;
  if (!name)
    name = path;
  int sys = !strcmp(want, "poolheap") ? SYS_POOLHEAP : sys_detect();
  size_t len;
  unsigned char *raw = read_file(path, &len);
  decode(raw, len);
  munmap(raw, len);
  death = map_touched(nalloc * sizeof *death);
  bsize = map_touched(nalloc * sizeof *bsize);
  val = map_touched(nalloc * sizeof *val);
  live_ids = map_touched(nalloc * sizeof *live_ids);
  live_pos = map_touched(nalloc * sizeof *live_pos);
  uint64_t total_bytes = 0, medium_bytes = 0;
  for (size_t a = 0; a < nalloc; a++)
    death[a] = nev;
  for (size_t e = 0, a = 0; e < nev; e++) {
    if (ev[e] & 1) {
      death[ev[e] >> 1] = e;
    } else {
      bsize[a] = ev[e] >> 1;
      total_bytes += bsize[a];
      if (bsize[a] > 2048 && bsize[a] <= 256 * 1024)
        medium_bytes += bsize[a];
      a++;
    }
  }
  if (sys == SYS_POOLHEAP) {
    ph_config cfg;
    ph_config_init(&cfg);
    cfg.scan_roots = scan_roots;
    if (ph_heap_create(&cfg, &heap) != PH_OK ||
        ph_domain_attach(heap, &dom) != PH_OK)
      die("poolheap: cannot create the heap");
    proj_init(cfg.pool_size);
    memset(where_vec, 1, sizeof where_vec); /* resident before rss0 */
    memset(where_live, 1, sizeof where_live);
    memset(where_pv, 1, sizeof where_pv);
    /* every system warmed alike before its baseline: one block and its
     * release, with everything a point then runs (the compaction, the
     * verifier, the statistics, proj and where), so that code and data
     * pages of poolheap's first run are not counted as heap */
    char why[256];
    double fn, fl;
    where_t wh;
    ph_stats st;
    if (!ph_alloc(dom, 8, 0) || ph_compact(dom) != PH_OK ||
        ph_verify(dom, why, sizeof why) != PH_OK ||
        ph_stats_get(heap, &st) != PH_OK)
      die("poolheap: the warm-up failed");
    proj(&fn, &fl);
    where(&wh);
  } else {
    /* one block and its release, so the allocator has its first state */
    free(malloc(64));
    sys_release(sys);
  }
  long long rss0 = rss_bytes(), anon0 = anon_bytes();
  double cpu0;
  long faults0;
  usage(&cpu0, &faults0);
  fprintf(stderr,
          "replay %s on %s: %zu events, %zu allocations, %.1f MB allocated, "
          "%.1f%% of it in blocks of 2-256 KiB\n",
          name, sys_name[sys], nev, nalloc, total_bytes / 1048576.0,
          total_bytes ? 100.0 * medium_bytes / total_bytes : 0.0);
  uint64_t rng = 0x5eed;
  size_t a = 0;
  double t0 = now_ms(), t_release = 0;
  int bad = 0;
  for (int pt = 1; pt <= points; pt++) {
    size_t end = (size_t)((unsigned __int128)nev * pt / points);
    for (size_t e = (size_t)((unsigned __int128)nev * (pt - 1) / points);
         e < end; e++) {
      if (ev[e] & 1) {
        size_t id = ev[e] >> 1;
        size_t i = live_pos[id], last = live_ids[--nlive];
        live_ids[i] = (uint32_t)last;
        live_pos[last] = (uint32_t)i;
        live_bytes -= bsize[id];
        if (sys != SYS_POOLHEAP)
          free((void *)val[id]);
        val[id] = 0;
        continue;
      }
      size_t id = a++;
      size_t w = nwords(id);
      uintptr_t *f;
      if (sys == SYS_POOLHEAP) {
        size_t wo = (bsize[id] + 7) / 8;
        ph_value v = ph_alloc(dom, wo ? wo : 1, 0);
        if (!v)
          die("ph_alloc failed");
        f = (uintptr_t *)v;
      } else {
        f = malloc(w * 8 > bsize[id] ? w * 8 : bsize[id]);
        if (!f)
          die("malloc failed");
      }
      fill(id, f, &rng);
      val[id] = (uintptr_t)f;
      live_pos[id] = (uint32_t)nlive;
      live_ids[nlive++] = (uint32_t)id;
      live_bytes += bsize[id];
    }
    long long rss_before = rss_bytes();
    uint64_t sum_before = checksum();
    double t = now_ms();
    char why[256] = "";
    int verify = PH_OK;
    uint64_t committed = 0;
    if (sys == SYS_POOLHEAP) {
      if (ph_compact(dom) != PH_OK)
        die("ph_compact failed");
      verify = ph_verify(dom, why, sizeof why);
      ph_stats st;
      ph_stats_get(heap, &st);
      committed = st.committed_bytes;
    } else {
      sys_release(sys);
    }
    double dt = now_ms() - t;
    t_release += dt;
    double cpu;
    long faults;
    usage(&cpu, &faults);
    long long rss = rss_bytes() - rss0, anon = anon_bytes() - anon0;
    uint64_t sum_after = checksum();
    int ok = sum_after == sum_before && verify == PH_OK;
    bad |= !ok;
    printf("{\"trace\":\"%s\",\"system\":\"%s\",\"point\":%d,\"points\":%d,"
           "\"events\":%zu,\"live_blocks\":%zu,\"live_bytes\":%llu,"
           "\"rss_before\":%lld,\"rss\":%lld,\"anon\":%lld,"
           "\"rss_over_live\":%.3f,"
           "\"rss_over_live_1m\":%.3f,\"release_ms\":%.2f,"
           "\"elapsed_ms\":%.1f,\"cpu_ms\":%.1f,\"minor_faults\":%ld",
           name, sys_name[sys], pt, points, end, nlive,
           (unsigned long long)live_bytes, rss_before - rss0, rss, anon,
           live_bytes ? (double)rss / live_bytes : 0.0,
           (double)rss / (live_bytes + 1048576.0), dt, now_ms() - t0,
           cpu - cpu0, faults - faults0);
    if (sys == SYS_POOLHEAP) {
      double fnow, flarge;
      proj(&fnow, &flarge);
      printf(",\"committed\":%llu,\"verify\":\"%s\",\"floor_now\":%.0f,"
             "\"floor_large\":%.0f",
             (unsigned long long)committed, verify == PH_OK ? "ok" : why, fnow,
             flarge);
      where_t wh;
      where(&wh);
      printf(",\"heap_resident\":%llu,\"pools_resident\":%llu,"
             "\"pools_live_slots\":%llu,\"pools_free_pages\":%llu,"
             "\"pools_free_pages_medium\":%llu,"
             "\"large_resident\":%llu,\"free_units_resident\":%llu",
             (unsigned long long)wh.heap, (unsigned long long)wh.pools,
             (unsigned long long)wh.live_slots,
             (unsigned long long)wh.free_pages,
             (unsigned long long)wh.free_pages_medium,
             (unsigned long long)wh.large, (unsigned long long)wh.free_units);
    }
    printf(",\"checksum\":\"%016llx\",\"checksum_before\":\"%016llx\","
           "\"ok\":%s}\n",
           (unsigned long long)sum_after, (unsigned long long)sum_before,
           ok ? "true" : "false");
    fflush(stdout);
  }
  fprintf(stderr, "replay %s on %s: %.0f ms (release calls %.0f ms)\n", name,
          sys_name[sys], now_ms() - t0, t_release);
  if (sys == SYS_POOLHEAP) {
    ph_domain_detach(dom);
    ph_heap_destroy(heap);
  } else {
    for (size_t i = 0; i < nlive; i++) /* the survivors, for LeakSanitizer */
      free((void *)val[live_ids[i]]);
  }
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "pack"))
    return do_pack(argv[2], argv[3]);
  if (argc >= 3 && !strcmp(argv[1], "run"))
    return do_run(argc - 2, argv + 2);
  fprintf(stderr, "usage: replay pack RAW OUT.pht | replay run TRACE.pht "
                  "[--name N] [--system poolheap|malloc] [--points K]\n");
  return 2;
}
