/* tests/reliability_util.h -- helpers shared by the reliability tests
 * (test_faults, test_rlimit, test_mapsoak, test_hugepages, test_badinput).
 *
 * Build probes, the RNG and the /proc readers are test_util.h's.
 * - ru_table: a model-checked data set.  A scanned table block (held in a
 *   handle-scope root) has one field per item; the expected shape and
 *   contents of every item (wosize, tag, seed) live outside the heap, so
 *   ru_table_check can tell after any collection or compaction whether the
 *   surviving data is intact.  Scanned items with at least two fields point
 *   from field 0 to a private one-field child block, so compaction has
 *   interior pointers to rewrite, not only roots.
 * - Process probes: VmSize, environment numbers.
 *
 * Everything is static: each test binary includes this header once.
 */
#ifndef PH_TESTS_RELIABILITY_UTIL_H
#define PH_TESTS_RELIABILITY_UTIL_H

#include "api/api.h"
#include "test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RU_MiB ((size_t)1 << 20)

/* ------------------------------------------------------ process probes */

/* VmSize of the process in bytes (0 if unknown). */
static inline uint64_t ru_vm_size(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long pages = 0;
  if (f != NULL) {
    if (fscanf(f, "%llu", &pages) != 1)
      pages = 0;
    fclose(f);
  }
  return pages * (uint64_t)ph_os_page_size();
}

/* A positive number from the environment, or def. */
static inline long ru_env_long(const char *name, long def) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0')
    return def;
  char *end = NULL;
  long v = strtol(s, &end, 10);
  return (end != s && v > 0) ? v : def;
}

/* The heap's reservations (chunks) as they are now; *n of them. */
typedef struct ru_ranges {
  uintptr_t lo[PH_MAX_CHUNKS], hi[PH_MAX_CHUNKS];
  unsigned n;
} ru_ranges;

static inline void ru_heap_ranges(ph_heap *h, ru_ranges *r) {
  pthread_mutex_lock(&h->lock);
  r->n = h->nchunks;
  for (unsigned i = 0; i < h->nchunks; i++) {
    r->lo[i] = (uintptr_t)h->chunks[i]->base;
    r->hi[i] = r->lo[i] + h->chunks[i]->size;
  }
  pthread_mutex_unlock(&h->lock);
}

/* Chunks the heap holds now (read under its lock). */
static inline unsigned ru_heap_chunks(ph_heap *h) {
  pthread_mutex_lock(&h->lock);
  unsigned n = h->nchunks;
  pthread_mutex_unlock(&h->lock);
  return n;
}

/* Number of /proc/self/maps lines overlapping any of r (0 once the heap
 * that made them is destroyed), or -1 if maps cannot be read. */
static inline long ru_ranges_mapped(const ru_ranges *r) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  char line[512];
  long hits = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
      continue;
    for (unsigned i = 0; i < r->n; i++)
      if (lo < r->hi[i] && r->lo[i] < hi) {
        hits++;
        break;
      }
  }
  fclose(f);
  return hits;
}

/* ---------------------------------------------------------- ru_table */

typedef struct ru_item {
  size_t wosize; /* 0: empty slot */
  unsigned tag;
  uint64_t seed;
} ru_item;

typedef struct ru_table {
  ph_domain *d;
  ph_value *root; /* handle-scope slot holding the table block */
  size_t mark;    /* the scope holding it */
  size_t n;
  ru_item *items;
  size_t live;         /* items present */
  uint64_t live_words; /* sum of wosize+1 over present items (children too) */
} ru_table;

/* Raw blocks longer than this are checked at a sample of positions only. */
#define RU_RAW_FULL 64
#define RU_RAW_STRIDE 509

static inline ph_value ru_word(uint64_t seed, size_t j) {
  return (ph_value)tu_mix(seed, j);
}
/* The immediate stored in field j of a scanned item. */
static inline ph_value ru_imm(uint64_t seed, size_t j) {
  return ph_val_int((intptr_t)(tu_mix(seed, j) >> 2));
}

/* Open a scope and allocate the table (n fields).  Returns PH_OK or the
 * error of the failed allocation (the scope is then closed again). */
static inline int ru_table_init(ru_table *t, ph_domain *d, size_t n) {
  memset(t, 0, sizeof *t);
  t->d = d;
  t->n = n;
  t->items = calloc(n, sizeof *t->items);
  if (t->items == NULL)
    return PH_ENOMEM;
  t->mark = ph_scope_open(d);
  ph_value tb = ph_alloc(d, n, 0);
  if (tb == 0) {
    int err = ph_last_error(d);
    ph_scope_close(d, t->mark);
    free(t->items);
    t->items = NULL;
    return err;
  }
  t->root = ph_root(d, tb);
  if (t->root == NULL) {
    ph_scope_close(d, t->mark);
    free(t->items);
    t->items = NULL;
    return PH_ENOMEM;
  }
  return PH_OK;
}

/* Close the table's scope (the data becomes garbage) and free the model. */
static inline void ru_table_fini(ru_table *t) {
  if (t->items == NULL)
    return;
  ph_scope_close(t->d, t->mark);
  free(t->items);
  t->items = NULL;
}

static inline ph_value ru_table_block(const ru_table *t) {
  return *t->root;
}

static inline void ru_drop(ru_table *t, size_t i) {
  ru_item *it = &t->items[i];
  if (it->wosize == 0)
    return;
  ph_set_field(ru_table_block(t), i, PH_UNIT);
  t->live--;
  t->live_words -= it->wosize + 1;
  if (it->tag < PH_TAG_RAW && it->wosize >= 2)
    t->live_words -= 2;
  it->wosize = 0;
}

/* Put a new block (wosize, tag, contents from seed) in slot i, replacing
 * what was there.  PH_OK, or the error of the failed allocation (slot i is
 * then unchanged). */
static inline int ru_put(ru_table *t, size_t i, size_t wosize, unsigned tag,
                         uint64_t seed) {
  ph_domain *d = t->d;
  int scanned = tag < PH_TAG_RAW;
  int with_child = scanned && wosize >= 2;
  size_t mark = ph_scope_open(d);
  ph_value *child = NULL;
  if (with_child) {
    ph_value c = ph_alloc(d, 1, 0);
    if (c == 0) {
      int err = ph_last_error(d);
      ph_scope_close(d, mark);
      return err;
    }
    ph_set_field(c, 0, ph_val_int((intptr_t)(seed >> 3)));
    child = ph_root(d, c);
  }
  ph_value b = ph_alloc(d, wosize, tag);
  if (b == 0) {
    int err = ph_last_error(d);
    ph_scope_close(d, mark);
    return err;
  }
  if (scanned) {
    for (size_t j = 0; j < wosize; j++)
      ph_set_field(b, j, ru_imm(seed, j));
    if (with_child)
      ph_set_field(b, 0, *child);
  } else {
    ph_value *w = (ph_value *)ph_raw(b);
    if (wosize <= RU_RAW_FULL) {
      for (size_t j = 0; j < wosize; j++)
        w[j] = ru_word(seed, j);
    } else {
      for (size_t j = 0; j < wosize; j += RU_RAW_STRIDE)
        w[j] = ru_word(seed, j);
      w[wosize - 1] = ru_word(seed, wosize - 1);
    }
  }
  ru_drop(t, i);
  ph_set_field(ru_table_block(t), i, b);
  ph_scope_close(d, mark);
  ru_item *it = &t->items[i];
  it->wosize = wosize;
  it->tag = tag;
  it->seed = seed;
  t->live++;
  t->live_words += wosize + 1 + (with_child ? 2 : 0);
  return PH_OK;
}

/* Compare the heap with the model.  Returns the number of broken items and
 * describes the first in why. */
static inline size_t ru_table_check(const ru_table *t, char *why,
                                    size_t why_size) {
  size_t bad = 0;
  ph_value tb = ru_table_block(t);
#define RU_BAD(...)                                                            \
  do {                                                                         \
    if (bad++ == 0 && why_size)                                                \
      snprintf(why, why_size, __VA_ARGS__);                                    \
  } while (0)
  if (!ph_is_block(tb) || ph_wosize(tb) != t->n || ph_tag(tb) != 0) {
    RU_BAD("table block %#lx broken", (unsigned long)tb);
    return bad;
  }
  for (size_t i = 0; i < t->n; i++) {
    const ru_item *it = &t->items[i];
    ph_value b = ph_field(tb, i);
    if (it->wosize == 0) {
      if (b != PH_UNIT)
        RU_BAD("slot %zu: expected empty, found %#lx", i, (unsigned long)b);
      continue;
    }
    if (!ph_is_block(b) || ph_wosize(b) != it->wosize || ph_tag(b) != it->tag) {
      RU_BAD("slot %zu: expected block of %zu words tag %u", i, it->wosize,
             it->tag);
      continue;
    }
    if (it->tag < PH_TAG_RAW) {
      size_t j = 0;
      if (it->wosize >= 2) {
        ph_value c = ph_field(b, 0);
        if (!ph_is_block(c) || ph_wosize(c) != 1 ||
            ph_field(c, 0) != ph_val_int((intptr_t)(it->seed >> 3))) {
          RU_BAD("slot %zu: child block broken", i);
          continue;
        }
        j = 1;
      }
      for (; j < it->wosize; j++)
        if (ph_field(b, j) != ru_imm(it->seed, j)) {
          RU_BAD("slot %zu: field %zu differs", i, j);
          break;
        }
    } else {
      const ph_value *w = (const ph_value *)ph_raw(b);
      size_t step = it->wosize <= RU_RAW_FULL ? 1 : RU_RAW_STRIDE;
      for (size_t j = 0; j < it->wosize; j += step)
        if (w[j] != ru_word(it->seed, j)) {
          RU_BAD("slot %zu: raw word %zu differs", i, j);
          break;
        }
      if (w[it->wosize - 1] != ru_word(it->seed, it->wosize - 1))
        RU_BAD("slot %zu: last raw word differs", i);
    }
  }
#undef RU_BAD
  return bad;
}

#endif
