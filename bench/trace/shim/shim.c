/* bench/trace/shim/shim.c -- an LD_PRELOAD shim that records the order and
 * sizes of a program's malloc, calloc, realloc, free, posix_memalign,
 * aligned_alloc, memalign, valloc and pvalloc calls (issue 11: the trace
 * replay).  Built by bench/trace/capture.sh, not by ninja:
 *
 *   gcc -O2 -shared -fPIC -o shim.so shim.c
 *   PHTRACE_DIR=/tmp/t LD_PRELOAD=./shim.so program ...
 *
 * Each process (forked children and exec'd programs included) writes its
 * own raw file PHTRACE_DIR/raw.<pid>: records of three little-endian 64-bit
 * words { op << 56 | size, result pointer, argument pointer } (op: 'm'
 * malloc and the memalign family, 'c' calloc, 'r' realloc, 'f' free).
 * Recording stops after PHTRACE_MAX records (default 8 million): the file is
 * then a prefix of the process's calls.  `replay pack` turns a raw file into
 * the compact trace the replay reads.  The allocator itself is glibc's
 * (__libc_malloc and friends), so the shim needs no dlsym. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define BUF_RECS 8192

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int fd = -1;
static int enabled;
static uint64_t max_recs = 8u << 20, nrecs;
static uint64_t buf[BUF_RECS * 3];
static unsigned nbuf;
static __thread int inside; /* no recording of the shim's own calls */

static void flush_locked(void) {
  size_t len = (size_t)nbuf * 3 * 8, off = 0;
  while (fd >= 0 && off < len) {
    ssize_t w = write(fd, (char *)buf + off, len - off);
    if (w <= 0) {
      if (w < 0 && errno == EINTR)
        continue;
      close(fd);
      fd = -1;
      break;
    }
    off += (size_t)w;
  }
  nbuf = 0;
}

static void open_file_locked(void) {
  const char *dir = getenv("PHTRACE_DIR");
  const char *max = getenv("PHTRACE_MAX");
  if (max && *max)
    max_recs = strtoull(max, NULL, 10);
  if (!dir || !*dir)
    return;
  char path[4096];
  snprintf(path, sizeof path, "%s/raw.%ld", dir, (long)getpid());
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  nrecs = 0;
  nbuf = 0;
  enabled = fd >= 0;
}

static void rec(unsigned op, size_t size, void *res, void *arg) {
  if (!enabled || inside)
    return;
  inside = 1;
  pthread_mutex_lock(&lock);
  if (enabled && nrecs < max_recs) {
    uint64_t *r = buf + (size_t)nbuf * 3;
    r[0] = (uint64_t)op << 56 | (size & ((1ull << 56) - 1));
    r[1] = (uint64_t)(uintptr_t)res;
    r[2] = (uint64_t)(uintptr_t)arg;
    nrecs++;
    if (++nbuf == BUF_RECS)
      flush_locked();
  }
  pthread_mutex_unlock(&lock);
  inside = 0;
}

/* A forked child inherits the parent's unwritten records: drop them and
 * start the child's own file. */
static void atfork_child(void) {
  pthread_mutex_init(&lock, NULL);
  if (fd >= 0)
    close(fd);
  fd = -1;
  enabled = 0;
  open_file_locked();
}

__attribute__((constructor)) static void shim_init(void) {
  inside = 1;
  pthread_atfork(NULL, NULL, atfork_child);
  open_file_locked();
  inside = 0;
}

__attribute__((destructor)) static void shim_fini(void) {
  pthread_mutex_lock(&lock);
  flush_locked();
  enabled = 0;
  pthread_mutex_unlock(&lock);
}

void *malloc(size_t n) {
  void *p = __libc_malloc(n);
  if (p)
    rec('m', n, p, NULL);
  return p;
}

void *calloc(size_t a, size_t b) {
  void *p = __libc_calloc(a, b);
  if (p)
    rec('c', a * b, p, NULL);
  return p;
}

void *realloc(void *old, size_t n) {
  void *p = __libc_realloc(old, n);
  if (p || n == 0)
    rec('r', n, p, old);
  return p;
}

void free(void *p) {
  if (p)
    rec('f', 0, NULL, p);
  __libc_free(p);
}

void *memalign(size_t al, size_t n) {
  void *p = __libc_memalign(al, n);
  if (p)
    rec('m', n, p, NULL);
  return p;
}

void *aligned_alloc(size_t al, size_t n) {
  return memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n) {
  if (al < sizeof(void *) || (al & (al - 1)))
    return EINVAL;
  void *p = __libc_memalign(al, n);
  if (!p)
    return ENOMEM;
  rec('m', n, p, NULL);
  *out = p;
  return 0;
}

void *valloc(size_t n) {
  return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *pvalloc(size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  return memalign(pg, (n + pg - 1) & ~(pg - 1));
}
