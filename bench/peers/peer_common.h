/* Shared helpers for the peer programs in bench/peers/ (frag, worker,
 * alloc_tput). Header-only: every helper is static. Nothing here allocates
 * through malloc, so the allocator under test only sees the blocks of the heap
 * shape itself. */
#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* splitmix64: small, seedable, and easy to reproduce bit for bit in OCaml
 * (fragcore.ml). */
typedef struct {
  uint64_t s;
} peer_rng;

static inline uint64_t peer_rng_next(peer_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, n): 53 random bits modulo n (bias < 2^-30 for the ranges used
 * here). */
static inline uint64_t peer_uniform(peer_rng *r, uint64_t n) {
  return (peer_rng_next(r) >> 11) % n;
}

/* Seed of domain d's generator. */
static inline peer_rng peer_rng_for(uint64_t seed, unsigned d) {
  peer_rng r = {seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(d + 1))};
  return r;
}

/* Field count of the frag size mix: 70% 2; 15% 3-4; 10% 5-8; 4% 9-32; 1%
 * 33-128. */
static inline unsigned peer_fields(peer_rng *r) {
  uint64_t b = peer_uniform(r, 100);
  if (b < 70)
    return 2;
  if (b < 85)
    return 3 + (unsigned)peer_uniform(r, 2);
  if (b < 95)
    return 5 + (unsigned)peer_uniform(r, 4);
  if (b < 99)
    return 9 + (unsigned)peer_uniform(r, 24);
  return 33 + (unsigned)peer_uniform(r, 96);
}

/* Checksum mixing (FNV-1a over 64-bit words); reported masked to 53 bits so
 * that it is an exact JSON number in every consumer. */
#define PEER_HASH_INIT 0xCBF29CE484222325ULL
static inline uint64_t peer_mix(uint64_t h, uint64_t x) {
  return (h ^ x) * 0x100000001B3ULL;
}
#define PEER_HASH_MASK ((1ULL << 53) - 1)

static inline double peer_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of the whole process (every thread, user and system), as OCaml's
 * Sys.time counts it: on a shared machine it does not count the time the
 * process waited for a core. */
static inline double peer_cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* VmRSS of this process in bytes (0 if unreadable). Uses a stack buffer, no
 * stdio. */
#include <fcntl.h>
#include <unistd.h>
static inline size_t peer_read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  size_t len = 0;
  for (;;) {
    ssize_t k = read(fd, buf + len, cap - 1 - len);
    if (k <= 0)
      break;
    len += (size_t)k;
    if (len + 1 >= cap)
      break;
  }
  close(fd);
  buf[len] = 0;
  return len;
}

static inline long long peer_rss_bytes(void) {
  char buf[8192];
  if (peer_read_file("/proc/self/status", buf, sizeof buf) == 0)
    return -1;
  const char *p = strstr(buf, "VmRSS:");
  if (!p)
    return -1;
  return strtoll(p + 6, NULL, 10) * 1024LL;
}

/* Lines of /proc/self/maps, i.e. kernel mappings; optionally reports whether
 * `needle` occurs in it (used to check that an LD_PRELOADed allocator is really
 * loaded). */
static inline long peer_maps_count(const char *needle, int *found) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  char buf[65536];
  long lines = 0;
  size_t keep = 0, nlen = needle ? strlen(needle) : 0;
  if (found)
    *found = 0;
  for (;;) {
    ssize_t k = read(fd, buf + keep, sizeof buf - 1 - keep);
    if (k <= 0)
      break;
    size_t len = keep + (size_t)k;
    buf[len] = 0;
    for (size_t i = keep; i < len; i++)
      if (buf[i] == '\n')
        lines++;
    if (needle && found && !*found && strstr(buf, needle))
      *found = 1;
    /* keep a tail so that a needle split across reads is still seen */
    keep = nlen && len > nlen ? nlen : 0;
    if (keep)
      memmove(buf, buf + len - keep, keep);
  }
  close(fd);
  return lines;
}

/* Auxiliary memory (index lists, bitmaps, size tables) comes straight from mmap
 * so that it never mixes with the allocator's heap. */
static inline void *peer_aux_alloc(size_t bytes) {
  if (bytes == 0)
    bytes = 1;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    fprintf(stderr, "mmap(%zu): %s\n", bytes, strerror(errno));
    exit(2);
  }
  return p;
}
static inline void peer_aux_free(void *p, size_t bytes) {
  if (p)
    munmap(p, bytes ? bytes : 1);
}

static inline uint64_t peer_default_seed(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  peer_rng r = {(uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                ((uint64_t)getpid() << 40)};
  return peer_rng_next(&r) & PEER_HASH_MASK; /* 53 bits: exact in JSON */
}

/* Parse a size with optional k/M/G suffix (powers of 1024). */
static inline long long peer_parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  switch (*end) {
  case 'k':
  case 'K':
    v *= 1024.0;
    break;
  case 'm':
  case 'M':
    v *= 1024.0 * 1024.0;
    break;
  case 'g':
  case 'G':
    v *= 1024.0 * 1024.0 * 1024.0;
    break;
  default:
    break;
  }
  return (long long)v;
}

/* A JSON string value: names here are simple, but escape quotes and backslashes
 * anyway. */
static inline void peer_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    if ((unsigned char)*s >= 0x20)
      fputc(*s, f);
  }
  fputc('"', f);
}

/* With LD_PRELOAD peers, make sure the named allocator is really in the
 * process. */
static inline int peer_check_preload(const char *system) {
  const char *needle = NULL;
  if (strcmp(system, "jemalloc") == 0)
    needle = "libjemalloc";
  else if (strncmp(system, "mimalloc", 8) == 0) /* mimalloc-batched too */
    needle = "libmimalloc";
  if (!needle)
    return 1;
  int found = 0;
  peer_maps_count(needle, &found);
  return found;
}

#endif
