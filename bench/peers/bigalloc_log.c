/* An LD_PRELOAD shim for bench/peers/ocaml_rss_pairs.sh: it logs every
 * malloc, calloc, realloc and free of at least BIGALLOC_MIN bytes (default
 * 1 MiB) to the file BIGALLOC_LOG, one line each: "op size address".  The
 * script reads from it which size OCaml's compressed mark stack (an addrmap,
 * 1 or 2 MiB on frag W1, 4 or 8 MiB on Wbig, decided by ASLR) had when the
 * program ended, so that RSS can be compared between runs whose tables
 * agree.  Allocation sizes of the freed blocks come from glibc's chunk
 * header (the word before the block). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static size_t min_size = (size_t)1 << 20;
static int log_fd = -1, resolving;
/* dlsym may allocate: served from here meanwhile, never freed */
static char early[4096];
static size_t early_used;

static void *early_alloc(size_t n) {
  size_t a = (n + 15) & ~(size_t)15;
  if (early_used + a > sizeof early)
    return NULL;
  void *p = early + early_used;
  early_used += a;
  return p;
}

static void resolve(void) {
  resolving = 1;
  real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
  real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
  real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
  real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
  resolving = 0;
  const char *m = getenv("BIGALLOC_MIN"), *f = getenv("BIGALLOC_LOG");
  if (m)
    min_size = strtoul(m, NULL, 0);
  if (f)
    log_fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
}

static void note(const char *op, size_t n, const void *p) {
  if (log_fd < 0 || n < min_size)
    return;
  char s[96];
  int k = snprintf(s, sizeof s, "%s %zu %p\n", op, n, p);
  if (k > 0)
    (void)!write(log_fd, s, (size_t)k);
}

static size_t chunk_size(const void *p) { /* glibc: size and flag bits */
  return ((const size_t *)p)[-1] & ~(size_t)7;
}

void *malloc(size_t n) {
  if (!real_malloc) {
    if (resolving)
      return early_alloc(n);
    resolve();
  }
  void *p = real_malloc(n);
  note("malloc", n, p);
  return p;
}

void *calloc(size_t a, size_t b) {
  if (!real_calloc) {
    if (resolving) {
      void *p = a && b > (size_t)-1 / a ? NULL : early_alloc(a * b);
      if (p)
        memset(p, 0, a * b);
      return p;
    }
    resolve();
  }
  void *p = real_calloc(a, b);
  note("calloc", a * b, p);
  return p;
}

void *realloc(void *o, size_t n) {
  if (!real_realloc)
    resolve();
  if (o && chunk_size(o) >= min_size)
    note("free", chunk_size(o), o);
  void *p = real_realloc(o, n);
  note("malloc", n, p);
  return p;
}

void free(void *p) {
  if (!p || ((char *)p >= early && (char *)p < early + sizeof early))
    return;
  if (!real_free)
    resolve();
  note("free", chunk_size(p), p);
  real_free(p);
}
