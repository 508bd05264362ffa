/* os/os_linux.c -- the OS memory layer for Linux (interface: os/os.h).
 *
 * Reservations are anonymous private mappings made read/write with
 * MAP_NORESERVE, so address space costs nothing until a page is touched.
 * Alignment is obtained by over-reserving and unmapping the head and tail,
 * which leaves exactly one kernel mapping per reservation.  Commit is pure
 * accounting (the kernel supplies zero pages on touch); decommit gives pages
 * back with madvise; release unmaps a whole reservation.
 *
 * Also here: process-wide probes (RLIMIT_AS headroom, mapping count, RSS),
 * process-global fault injection for tests, and, in PH_DEBUG builds, a
 * registry of live reservations that catches ranges this layer never handed
 * out.  All counters are C11 atomics; see the comments on each access.
 */
#include "os/os.h"

#include "poolheap.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

void ph_assert_fail(const char *cond, const char *file, int line) {
  fprintf(stderr, "poolheap: assertion failed: %s (%s:%d)\n", cond, file, line);
  abort();
}

uint64_t ph_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if defined(PH_DEBUG) && PH_DEBUG > 0
#define PH_OS_DEBUG 1
#else
#define PH_OS_DEBUG 0
#endif

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

/* ------------------------------------------------------------ utilities */

/* A machine's fact that never changes, read once: sysconf(name) (dflt if it
 * fails) cached in *cache.  Any thread computing it stores the same number,
 * so relaxed ordering is enough. */
static long sysconf_once(_Atomic long *cache, int name, long dflt) {
  long v = atomic_load_explicit(cache, memory_order_relaxed);
  if (v == 0) {
    v = sysconf(name);
    if (v <= 0)
      v = dflt;
    atomic_store_explicit(cache, v, memory_order_relaxed);
  }
  return v;
}

size_t ph_os_page_size(void) {
  static _Atomic long cached;
  return (size_t)sysconf_once(&cached, _SC_PAGESIZE, 4096);
}

unsigned ph_os_ncpus(void) {
  /* a CPU brought online later is not seen */
  static _Atomic long cached;
  return (unsigned)sysconf_once(&cached, _SC_NPROCESSORS_ONLN, 1);
}

static int is_pow2(size_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

static size_t round_up(size_t x, size_t align) {
  return (x + align - 1) & ~(align - 1);
}

static int page_aligned(const void *p, size_t len) {
  size_t ps = ph_os_page_size();
  return ((uintptr_t)p & (ps - 1)) == 0 && (len & (ps - 1)) == 0;
}

/* Relaxed add/subtract on an accounting counter.  The counters are written
 * by one caller at a time (the heap serialises OS calls) and read only as
 * statistics, which never order other memory: relaxed is enough. */
static void acct_add(_Atomic uint64_t *c, uint64_t v) {
  atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}
static void acct_sub(_Atomic uint64_t *c, uint64_t v) {
  atomic_fetch_sub_explicit(c, v, memory_order_relaxed);
}
static uint64_t acct_get(_Atomic uint64_t *c) {
  /* A statistic read; no other data depends on it: relaxed is enough. */
  return atomic_load_explicit(c, memory_order_relaxed);
}

/* ------------------------------------------------------- fault injection */

void ph_fault_site_set(ph_fault_site *s, unsigned op_mask, uint64_t nth,
                       int sticky) {
  /* Tests arm a site while no counted call is in flight; a call racing with
   * it may see old or new settings, either is fine. */
  atomic_store_explicit(&s->mask, 0, memory_order_relaxed);
  atomic_store_explicit(&s->calls, 0, memory_order_relaxed);
  atomic_store_explicit(&s->hits, 0, memory_order_relaxed);
  atomic_store_explicit(&s->nth, nth, memory_order_relaxed);
  atomic_store_explicit(&s->sticky, sticky != 0, memory_order_relaxed);
  atomic_store_explicit(&s->mask, op_mask, memory_order_relaxed);
}

/* fetch_add makes each call's number unique, so exactly one call is the nth
 * even across threads. */
int ph_fault_site_hit(ph_fault_site *s, unsigned op) {
  if ((atomic_load_explicit(&s->mask, memory_order_relaxed) & op) == 0)
    return 0;
  uint64_t n =
      atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed) + 1;
  uint64_t nth = atomic_load_explicit(&s->nth, memory_order_relaxed);
  if (nth == 0 || n < nth)
    return 0;
  if (n > nth && !atomic_load_explicit(&s->sticky, memory_order_relaxed))
    return 0;
  atomic_fetch_add_explicit(&s->hits, 1, memory_order_relaxed);
  return 1;
}

/* Plain counter reads, after the counted calls completed (a join orders them).
 */
uint64_t ph_fault_site_calls(ph_fault_site *s) {
  return atomic_load_explicit(&s->calls, memory_order_relaxed);
}
uint64_t ph_fault_site_hits(ph_fault_site *s) {
  return atomic_load_explicit(&s->hits, memory_order_relaxed);
}

static ph_fault_site os_faults; /* the OS calls' site */

void ph_os_fault_set(unsigned op_mask, uint64_t nth, int sticky) {
  ph_fault_site_set(&os_faults, op_mask, nth, sticky);
}
uint64_t ph_os_fault_calls(void) {
  return ph_fault_site_calls(&os_faults);
}
uint64_t ph_os_fault_hits(void) {
  return ph_fault_site_hits(&os_faults);
}

/* Count a call of kind op; 1 if it must fail as if the kernel refused. */
static int fault_inject(unsigned op) {
  return ph_fault_site_hit(&os_faults, op);
}

/* ------------------------------------------------------- debug registry */

typedef struct ph_os_res {
  uintptr_t addr;
  size_t size;
} ph_os_res;

struct ph_os_reg {
  ph_os_res *v;
  size_t n, cap;
};

static void reg_complain(const char *op, const void *p, size_t len,
                         const char *why) {
  fprintf(stderr, "poolheap: os: %s of [%p, +%zu): %s\n", op, p, len, why);
}

/* Index of the reservation containing [p, p+len), or -1. */
static long reg_find(const struct ph_os_reg *r, const void *p, size_t len) {
  uintptr_t lo = (uintptr_t)p;
  for (size_t i = 0; i < r->n; i++) {
    const ph_os_res *e = &r->v[i];
    if (lo >= e->addr && lo - e->addr <= e->size && len <= e->size &&
        lo - e->addr <= e->size - len)
      return (long)i;
  }
  return -1;
}

static int reg_add(struct ph_os_reg *r, void *p, size_t size) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    ph_os_res *v = realloc(r->v, cap * sizeof *v);
    if (v == NULL)
      return PH_ENOMEM;
    r->v = v;
    r->cap = cap;
  }
  r->v[r->n].addr = (uintptr_t)p;
  r->v[r->n].size = size;
  r->n++;
  return PH_OK;
}

static void reg_remove(struct ph_os_reg *r, size_t i) {
  r->v[i] = r->v[r->n - 1];
  r->n--;
}

/* PH_OK if [p, p+len) lies in a live reservation (or there is no registry). */
static int reg_check_inside(const ph_os_acct *a, const char *op, void *p,
                            size_t len) {
  if (a->reg == NULL || reg_find(a->reg, p, len) >= 0)
    return PH_OK;
  reg_complain(op, p, len, "not inside a live reservation");
  return PH_EINVAL;
}

/* ------------------------------------------------------------ accounting */

void ph_os_acct_init(ph_os_acct *a) {
  atomic_init(&a->reserved, 0);
  atomic_init(&a->committed, 0);
  atomic_init(&a->mappings, 0);
  atomic_init(&a->huge_fallbacks, 0);
  a->reg = NULL;
  if (PH_OS_DEBUG) {
    a->reg = calloc(1, sizeof *a->reg);
    if (a->reg == NULL)
      fprintf(stderr, "poolheap: os: no memory for the debug registry; "
                      "range checks are off\n");
  }
}

void ph_os_acct_fini(ph_os_acct *a) {
  if (a->reg == NULL)
    return;
  if (a->reg->n != 0)
    fprintf(stderr, "poolheap: os: %zu reservation(s) alive at fini\n",
            a->reg->n);
  assert(a->reg->n == 0 && "ph_os_acct_fini with live reservations");
  free(a->reg->v);
  free(a->reg);
  a->reg = NULL;
}

/* ----------------------------------------------------------- reservation */

/* Map len bytes at an address aligned to align, leaving exactly one mapping;
 * NULL if the kernel refused.  gran is the mapping's page size (normal or
 * huge): len and align are multiples of it and the head and tail trimmed
 * off are too, as the kernel will not cut a huge page. */
static void *map_aligned(size_t len, size_t align, size_t gran, int flags) {
  size_t extra = align > gran ? align - gran : 0;
  if (len > SIZE_MAX - extra)
    return NULL;
  size_t total = len + extra;
  char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (base == MAP_FAILED)
    return NULL;
  char *p = (char *)round_up((uintptr_t)base, align);
  size_t head = (size_t)(p - base);
  size_t tail = total - head - len;
  if (head && munmap(base, head) != 0) {
    munmap(base, total);
    return NULL;
  }
  if (tail && munmap(p + len, tail) != 0) {
    munmap(p, total - head);
    return NULL;
  }
  return p;
}

static const int anon_flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

/* MAP_HUGETLB without MAP_NORESERVE: the huge pages are then reserved at
 * mmap time, so a short pool fails here instead of with SIGBUS on touch.
 * The kernel aligns hugetlb mappings to the huge page size. */
static void *map_huge(size_t size, size_t align) {
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB;
  size_t len = round_up(size, PH_HUGE_PAGE_SIZE);
  if (len < size)
    return NULL;
  return map_aligned(len, align > PH_HUGE_PAGE_SIZE ? align : PH_HUGE_PAGE_SIZE,
                     PH_HUGE_PAGE_SIZE, flags);
}

static void *map_thp(size_t size, size_t align) {
  size_t huge_align = align > PH_HUGE_PAGE_SIZE ? align : PH_HUGE_PAGE_SIZE;
  void *p = map_aligned(size, huge_align, ph_os_page_size(), anon_flags);
  if (p != NULL)
    (void)madvise(p, size, MADV_HUGEPAGE); /* only a hint */
  return p;
}

static int reserve_args_ok(const ph_os_acct *a, size_t size, size_t align,
                           int huge, void **out) {
  if (a == NULL || out == NULL || size == 0 || !is_pow2(align) ||
      align < ph_os_page_size() || !page_aligned(NULL, size))
    return 0;
  return huge == PH_OS_HUGE_NONE || huge == PH_OS_HUGE_THP ||
         huge == PH_OS_HUGE_EXPLICIT;
}

/* The mapping itself; *got tells which kind was obtained. */
static void *map_kind(size_t size, size_t align, int huge, int *got) {
  *got = huge;
  if (huge == PH_OS_HUGE_THP)
    return map_thp(size, align);
  if (huge == PH_OS_HUGE_EXPLICIT) {
    void *p = map_huge(size, align);
    if (p != NULL)
      return p;
    *got = PH_OS_HUGE_NONE;
  }
  return map_aligned(size, align, ph_os_page_size(), anon_flags);
}

int ph_os_reserve(ph_os_acct *a, size_t size, size_t align, int huge,
                  void **out, int *got_huge) {
  if (!reserve_args_ok(a, size, align, huge, out))
    return PH_EINVAL;
  if (fault_inject(PH_OS_OP_RESERVE))
    return PH_ENOMEM;
  int got;
  void *p = map_kind(size, align, huge, &got);
  if (p == NULL)
    return PH_ENOMEM;
  if (a->reg != NULL && reg_add(a->reg, p, size) != PH_OK) {
    munmap(p, got == PH_OS_HUGE_EXPLICIT ? round_up(size, PH_HUGE_PAGE_SIZE)
                                         : size);
    return PH_ENOMEM;
  }
  acct_add(&a->reserved, size);
  acct_add(&a->mappings, 1);
  if (got != huge)
    acct_add(&a->huge_fallbacks, 1);
  *out = p;
  if (got_huge != NULL)
    *got_huge = got;
  return PH_OK;
}

/* ------------------------------------------------------ commit/decommit */

static int range_args_ok(const ph_os_acct *a, const void *p, size_t len) {
  return a != NULL && p != NULL && len != 0 && page_aligned(p, len);
}

int ph_os_commit(ph_os_acct *a, void *p, size_t len) {
  if (!range_args_ok(a, p, len))
    return PH_EINVAL;
  int err = reg_check_inside(a, "commit", p, len);
  if (err != PH_OK)
    return err;
  if (fault_inject(PH_OS_OP_COMMIT))
    return PH_ENOMEM;
  acct_add(&a->committed, len);
  return PH_OK;
}

/* A refused madvise: a bad range is the caller's error, the rest is the
 * kernel running short. */
static int madvise_error(int e) {
  return e == EINVAL || e == ENOMEM ? PH_EINVAL : PH_ENOMEM;
}

static int return_pages(void *p, size_t len, int lazy) {
#ifdef MADV_FREE
  if (lazy) {
    if (madvise(p, len, MADV_FREE) == 0)
      return PH_OK;
    if (errno != EINVAL) /* EINVAL: the kernel lacks MADV_FREE */
      return madvise_error(errno);
  }
#endif
  if (madvise(p, len, MADV_DONTNEED) == 0)
    return PH_OK;
  return madvise_error(errno);
}

int ph_os_decommit(ph_os_acct *a, void *p, size_t len, int lazy) {
  if (!range_args_ok(a, p, len))
    return PH_EINVAL;
  if (len > acct_get(&a->committed)) {
    if (a->reg != NULL)
      reg_complain("decommit", p, len, "more than is committed");
    return PH_EINVAL;
  }
  int err = reg_check_inside(a, "decommit", p, len);
  if (err != PH_OK)
    return err;
  if (fault_inject(PH_OS_OP_DECOMMIT))
    return PH_ENOMEM;
  err = return_pages(p, len, lazy);
  if (err == PH_OK)
    acct_sub(&a->committed, len);
  return err;
}

int ph_os_discard(ph_os_acct *a, void *p, size_t len, int lazy) {
  if (!range_args_ok(a, p, len))
    return PH_EINVAL;
  int err = reg_check_inside(a, "discard", p, len);
  if (err != PH_OK)
    return err;
  if (fault_inject(PH_OS_OP_DECOMMIT))
    return PH_ENOMEM;
  return return_pages(p, len, lazy);
}

/* ---------------------------------------------------------------- release */

/* munmap the reservation; an explicit huge one was mapped with its size
 * rounded up to 2 MiB, and the kernel refuses (EINVAL) to cut a huge page. */
static int unmap_reservation(void *p, size_t size) {
  if (munmap(p, size) == 0)
    return PH_OK;
  size_t huge_len = round_up(size, PH_HUGE_PAGE_SIZE);
  if (errno == EINVAL && huge_len != size && huge_len > size &&
      munmap(p, huge_len) == 0)
    return PH_OK;
  return errno == EINVAL ? PH_EINVAL : PH_ENOMEM;
}

/* Index of the reservation that is exactly [p, p+size), -1 if none, or 0
 * when there is no registry. */
static long reg_find_exact(const ph_os_acct *a, const void *p, size_t size) {
  if (a->reg == NULL)
    return 0;
  long i = reg_find(a->reg, p, size);
  if (i < 0 || a->reg->v[i].addr != (uintptr_t)p || a->reg->v[i].size != size)
    return -1;
  return i;
}

int ph_os_release(ph_os_acct *a, void *p, size_t size, size_t committed_len) {
  if (!range_args_ok(a, p, size) || committed_len > size ||
      !page_aligned(NULL, committed_len) ||
      committed_len > acct_get(&a->committed))
    return PH_EINVAL;
  long i = reg_find_exact(a, p, size);
  if (i < 0) {
    reg_complain("release", p, size, "not a live reservation");
    return PH_EINVAL;
  }
  if (fault_inject(PH_OS_OP_RELEASE))
    return PH_ENOMEM;
  int err = unmap_reservation(p, size);
  if (err != PH_OK)
    return err;
  if (a->reg != NULL)
    reg_remove(a->reg, (size_t)i);
  acct_sub(&a->committed, committed_len);
  acct_sub(&a->reserved, size);
  acct_sub(&a->mappings, 1);
  return PH_OK;
}

/* ------------------------------------------------------- thread stacks */

int ph_os_stack_map(size_t size, void **out) {
  size_t pg = ph_os_page_size();
  if (size == 0 || size % pg != 0)
    return PH_EINVAL;
  char *p = mmap(NULL, size + pg, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (p == MAP_FAILED)
    return PH_ENOMEM;
  if (mprotect(p, pg, PROT_NONE) != 0) { /* the guard page */
    munmap(p, size + pg);
    return PH_ENOMEM;
  }
  *out = p + pg;
  return PH_OK;
}

void ph_os_stack_unmap(void *stack, size_t size) {
  size_t pg = ph_os_page_size();
  munmap((char *)stack - pg, size + pg);
}

/* ------------------------------------------------------------- scratch */

static size_t scratch_len(size_t len) {
  size_t pg = ph_os_page_size();
  return (len + pg - 1) / pg * pg;
}

int ph_os_scratch_map(size_t len, void **out) {
  if (len == 0)
    return PH_EINVAL;
  void *p = mmap(NULL, scratch_len(len), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return PH_ENOMEM;
  *out = p;
  return PH_OK;
}

int ph_os_scratch_grow(void *p, size_t old_len, size_t len, void **out) {
  if (len < old_len)
    return PH_EINVAL;
  void *n = mremap(p, scratch_len(old_len), scratch_len(len), MREMAP_MAYMOVE);
  if (n == MAP_FAILED)
    return PH_ENOMEM;
  *out = n;
  return PH_OK;
}

void ph_os_scratch_unmap(void *p, size_t len) {
  if (p)
    munmap(p, scratch_len(len));
}

/* os.scratch.gone: a 16-byte header before each array: its length and
 * whether it is a mapping of its own (the header starts the mapping). */
typedef struct scratch_hdr {
  size_t len;
  size_t mapped;
} scratch_hdr;
_Static_assert(sizeof(scratch_hdr) == 16, "scratch arrays are 16-aligned");

static scratch_hdr *scratch_hdr_of(void *p) {
  return (scratch_hdr *)p - 1;
}

void *ph_os_scratch_alloc(size_t len) {
  if (len > SIZE_MAX / 2)
    return NULL;
  size_t total = len + sizeof(scratch_hdr);
  scratch_hdr *hd = NULL;
  int mapped = total >= ph_os_page_size();
  if (mapped) {
    void *m;
    if (ph_os_scratch_map(total, &m) != PH_OK)
      return NULL;
    hd = m;
  } else {
    hd = malloc(total);
    if (!hd)
      return NULL;
  }
  hd->len = len;
  hd->mapped = (size_t)mapped;
  return hd + 1;
}

void *ph_os_scratch_zalloc(size_t n, size_t size) {
  if (size && n > SIZE_MAX / 2 / size)
    return NULL;
  void *p = ph_os_scratch_alloc(n * size);
  scratch_hdr *hd = p ? scratch_hdr_of(p) : NULL;
  if (hd && !hd->mapped) /* a fresh mapping reads as zeros */
    memset(p, 0, n * size);
  return p;
}

void *ph_os_scratch_realloc(void *p, size_t len) {
  if (!p)
    return ph_os_scratch_alloc(len);
  if (len > SIZE_MAX / 2)
    return NULL;
  scratch_hdr *hd = scratch_hdr_of(p);
  size_t total = len + sizeof(scratch_hdr);
  if (hd->mapped && len >= hd->len) { /* grown in place or moved whole */
    void *m;
    if (ph_os_scratch_grow(hd, hd->len + sizeof(scratch_hdr), total, &m) !=
        PH_OK)
      return NULL;
    hd = m;
    hd->len = len;
    return hd + 1;
  }
  void *n = ph_os_scratch_alloc(len);
  if (!n)
    return NULL;
  memcpy(n, p, len < hd->len ? len : hd->len);
  ph_os_scratch_free(p);
  return n;
}

void ph_os_scratch_free(void *p) {
  if (!p)
    return;
  scratch_hdr *hd = scratch_hdr_of(p);
  if (hd->mapped)
    ph_os_scratch_unmap(hd, hd->len + sizeof(scratch_hdr));
  else
    free(hd);
}

void ph_os_thread_malloc_init(void) {
  void *volatile p = malloc(1); /* volatile: the pair is not elided */
  free(p);
}

/* --------------------------------------------------------- process probes */

/* Read up to cap-1 bytes of a /proc file into buf, NUL-terminated.  Returns
 * the length or -1. */
static long read_proc(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  size_t n = 0;
  while (n < cap - 1) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  return (long)n;
}

/* The process's mapped bytes (VmSize), or 0 if unknown. */
static uint64_t process_vm_size(void) {
  char buf[256];
  if (read_proc("/proc/self/statm", buf, sizeof buf) <= 0)
    return 0;
  return strtoull(buf, NULL, 10) * (uint64_t)ph_os_page_size();
}

size_t ph_os_as_available(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return SIZE_MAX;
  uint64_t lim = (uint64_t)rl.rlim_cur;
  uint64_t used = process_vm_size();
  if (used >= lim)
    return 0;
  return lim - used > SIZE_MAX ? SIZE_MAX : (size_t)(lim - used);
}

long ph_os_process_mappings(void) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  char buf[4096];
  long lines = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      lines = -1;
    if (r <= 0)
      break;
    for (ssize_t i = 0; i < r; i++)
      lines += buf[i] == '\n';
  }
  close(fd);
  return lines;
}

uint64_t ph_os_process_rss(void) {
  char buf[8192];
  if (read_proc("/proc/self/status", buf, sizeof buf) <= 0)
    return 0;
  const char *line = strstr(buf, "\nVmRSS:");
  if (line == NULL)
    return 0;
  return strtoull(line + 7, NULL, 10) * 1024; /* the kernel reports kB */
}

size_t ph_os_commit_cap(void) {
  struct sysinfo si;
  if (sysinfo(&si) != 0)
    return SIZE_MAX;
  unsigned long long u = si.mem_unit ? si.mem_unit : 1;
  unsigned long long b = ((unsigned long long)si.totalram + si.totalswap) * u;
  return b > SIZE_MAX ? SIZE_MAX : (size_t)b;
}
