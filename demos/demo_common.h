/* demos/demo_common.h -- small helpers shared by the demo programs.
 *
 * The heap shapes come from bench/peers/peer_common.h (the seeded generator,
 * the size mix and the checksum), so that poolheap builds exactly the graph
 * the peer programs build for the same seed.  Everything here is static. */
#ifndef DEMO_COMMON_H
#define DEMO_COMMON_H

#include "bench/peers/peer_common.h"

#include <poolheap.h>

#include <stdarg.h>

#define DEMO_MB(b) ((double)(b) / (1024.0 * 1024.0))

/* Print an error in the peers' JSON error schema to f (if any) and stderr,
 * then exit with status 3. */
static inline void demo_die(FILE *json, const char *system, const char *fmt,
                            ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", system, msg);
  if (json) {
    fprintf(json, "{\"system\":");
    peer_json_str(json, system);
    fprintf(json, ",\"error\":");
    peer_json_str(json, msg);
    fprintf(json, "}\n");
    fflush(json);
  }
  exit(3);
}

/* Open the JSON-lines output: "-" is stdout, NULL means none. */
static inline FILE *demo_json_open(const char *path) {
  if (!path)
    return NULL;
  if (strcmp(path, "-") == 0)
    return stdout;
  FILE *f = fopen(path, "a");
  if (!f) {
    fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
    exit(2);
  }
  return f;
}

/* Digits grouped by thousands ("4,000,000"), into buf. */
static inline const char *demo_group(char *buf, size_t cap,
                                     unsigned long long v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%llu", v);
  size_t o = 0;
  for (int i = 0; i < n && o + 2 < cap; i++) {
    if (i > 0 && (n - i) % 3 == 0)
      buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = 0;
  return buf;
}

#endif
