/* heap/chunk.c -- reservations (chunks) and the units they are cut into
 * (DESIGN.md: heap.chunk, heap.unit, heap.release).
 *
 * A chunk is one reservation from the OS layer: one kernel mapping, aligned
 * to pool_size (2 MiB with huge pages), divided into units of pool_size
 * bytes.  Each unit is PH_U_FREE (Reserved, no pages), PH_U_FREE_COMM
 * (Committed but unused), PH_U_POOL, PH_U_POOL_TAIL (a medium pool's
 * further units), PH_U_LARGE or PH_U_LARGE_TAIL.
 *
 * heap.chunk.growth: a new chunk is half of what the heap reserves now (at
 * least 4 MiB, at least the request), so reservations grow by a factor 3/2:
 * a heap of N bytes holds O(log N) mappings (about 17 for 1 GiB) and at most
 * half again its size in address space.  Because the size follows what is
 * reserved now, a heap that shrank (whole chunks unmapped) grows back in
 * small steps.  Every size is also capped by half of what RLIMIT_AS leaves
 * and halved on refusal down to what the request needs, so poolheap runs
 * under ulimit -v.
 *
 * Every function here is _locked (heap->lock held) or _stw_single. */
#include "heap/heap.h"

#include <stdlib.h>
#include <string.h>

#define PH_FIRST_CHUNK ((size_t)4 << 20)

static size_t chunk_align(const struct ph_heap *h) {
  if (h->cfg.huge_pages != PH_HUGE_OFF && h->pool_size < PH_HUGE_PAGE_SIZE)
    return PH_HUGE_PAGE_SIZE;
  return h->pool_size;
}

static size_t round_up(size_t x, size_t a) {
  return (x + a - 1) & ~(a - 1);
}

ph_unit_hdr *ph_block_unit(const struct ph_heap *h, ph_value v) {
  ph_chunk *c = ph_chunk_find(h, (const void *)v);
  if (!c)
    return NULL;
  uint32_t u = (uint32_t)((size_t)((char *)v - c->base) >> h->pool_shift);
  while (c->ustate[u] == PH_U_LARGE_TAIL) /* only bad input gets here */
    u--;
  u = ph_unit_head(c, u);
  uint8_t st = c->ustate[u];
  if (st != PH_U_POOL && st != PH_U_LARGE)
    return NULL;
  if (st == PH_U_POOL)
    return (ph_unit_hdr *)ph_pool_at(h, c, u); /* heap.pool.ool */
  return (ph_unit_hdr *)ph_unit_addr(h, c, u);
}

ph_chunk *ph_chunk_find(const struct ph_heap *h, const void *p) {
  unsigned lo = 0, hi = h->nchunks;
  const char *cp = p;
  while (lo < hi) {
    unsigned mid = (lo + hi) / 2;
    ph_chunk *c = h->chunks[mid];
    if (cp < c->base)
      hi = mid;
    else if (cp >= c->base + c->size)
      lo = mid + 1;
    else
      return c;
  }
  return NULL;
}

static void chunk_insert_locked(struct ph_heap *h, ph_chunk *c) {
  unsigned i = h->nchunks;
  while (i > 0 && h->chunks[i - 1]->base > c->base) {
    h->chunks[i] = h->chunks[i - 1];
    i--;
  }
  h->chunks[i] = c;
  h->nchunks++;
}

static int chunk_grow_locked(struct ph_heap *h, size_t min_units,
                             ph_chunk **out) {
  if (h->nchunks >= PH_MAX_CHUNKS)
    return PH_ENOMEM;
  size_t align = chunk_align(h);
  size_t need = round_up(min_units << h->pool_shift, align);
  size_t reserved =
      (size_t)atomic_load_explicit(&h->os.reserved, memory_order_relaxed);
  if (!h->cfg.heap_limit && need > h->commit_cap)
    return PH_ENOMEM; /* could never be committed: do not reserve it */
  size_t avail = ph_os_as_available();
  if (need > avail)
    return PH_ENOMEM; /* RLIMIT_AS could never fit it */
  size_t size = round_up(reserved / 2, align);
  if (size < PH_FIRST_CHUNK)
    size = PH_FIRST_CHUNK;
  if (size < need)
    size = need;
  if (avail != SIZE_MAX) {
    size_t cap = (avail / 2) & ~(align - 1);
    if (size > cap)
      size = cap > need ? cap : need;
  }
  int huge = h->cfg.huge_pages == PH_HUGE_EXPLICIT      ? PH_OS_HUGE_EXPLICIT
             : h->cfg.huge_pages == PH_HUGE_TRANSPARENT ? PH_OS_HUGE_THP
                                                        : PH_OS_HUGE_NONE;
  void *base = NULL;
  int got = PH_OS_HUGE_NONE;
  for (;;) {
    if (ph_os_reserve(&h->os, size, align, huge, &base, &got) == PH_OK)
      break;
    if (size <= need)
      return PH_ENOMEM;
    size = round_up(size / 2, align);
    if (size < need)
      size = need;
  }
  ph_chunk *c = calloc(1, sizeof *c);
  size_t nu = size >> h->pool_shift, ucls_at = (nu + 7) & ~(size_t)7;
  size_t holes_at = (ucls_at + nu * sizeof(uint16_t) + 7) & ~(size_t)7;
  size_t zero_at = holes_at + nu * sizeof(uint64_t);
  /* ustate, ucls, holes, zero_from */
  uint8_t *us = calloc(zero_at + nu * sizeof(uint32_t), 1);
  if (!c || !us) {
    free(c);
    free(us);
    ph_os_release(&h->os, base, size, 0);
    return PH_ENOMEM;
  }
  c->base = base;
  c->size = size;
  c->nunits = (uint32_t)(size >> h->pool_shift);
  c->nfree = c->nunits;
  c->ustate = us;
  c->ucls = (uint16_t *)(us + ucls_at);
  c->holes = (uint64_t *)(us + holes_at);
  c->zero_from = (uint32_t *)(us + zero_at);
  c->huge = got;
  chunk_insert_locked(h, c);
  *out = c;
  return PH_OK;
}

int ph_chunk_grow_locked(struct ph_heap *h, size_t min_units) {
  ph_chunk *c;
  return chunk_grow_locked(h, min_units, &c);
}

/* A unit this call has just committed (so that a refusal later in the same
 * call can undo exactly those); never seen outside commit_range_locked. */
#define PH_U_COMMITTING 0x80

/* Bytes of unit i of a run that lie below len (len > i units). */
static size_t unit_part(const struct ph_heap *h, size_t i, size_t len) {
  size_t lo = i << h->pool_shift;
  return len - lo < h->pool_size ? len - lo : h->pool_size;
}

/* Make the first len bytes of units [u, u+n) Committed (len > n-1 units):
 * PH_U_FREE units are committed up to len, and the rest of a partly used
 * last unit is left Reserved, or decommitted if it was PH_U_FREE_COMM
 * (heap.large.commit).  *comm gets how many bytes from unit u on are
 * Committed afterwards: len, or the whole run if that decommit was refused. */
static int commit_range_locked(struct ph_heap *h, ph_chunk *c, uint32_t u,
                               size_t n, size_t len, size_t *comm) {
  size_t need = 0;
  for (size_t i = 0; i < n; i++)
    if (c->ustate[u + i] == PH_U_FREE)
      need += unit_part(h, i, len);
  /* heap_limit, or else what the machine has (heap.chunk.commitcap): a
   * MAP_NORESERVE reservation succeeds for any size, so without this a
   * request for terabytes would be committed and then touched. */
  size_t cap = h->cfg.heap_limit ? h->cfg.heap_limit : h->commit_cap;
  if (atomic_load_explicit(&h->os.committed, memory_order_relaxed) + need > cap)
    return PH_ENOMEM;
  size_t i = 0;
  while (i < n) {
    if (c->ustate[u + i] != PH_U_FREE) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < n && c->ustate[u + j] == PH_U_FREE)
      j++;
    int err =
        ph_os_commit(&h->os, ph_unit_addr(h, c, u + (uint32_t)i),
                     ((j - 1 - i) << h->pool_shift) + unit_part(h, j - 1, len));
    if (err) { /* undo what this call committed */
      size_t k = 0;
      while (k < i) {
        if (c->ustate[u + k] == PH_U_COMMITTING) {
          size_t e = k;
          while (e < i && c->ustate[u + e] == PH_U_COMMITTING)
            e++;
          ph_os_decommit(&h->os, ph_unit_addr(h, c, u + (uint32_t)k),
                         ((e - 1 - k) << h->pool_shift) +
                             unit_part(h, e - 1, len),
                         PH_OS_DECOMMIT_NOW);
          for (size_t q = k; q < e; q++)
            c->ustate[u + q] = PH_U_FREE;
          k = e;
        } else {
          k++;
        }
      }
      return err;
    }
    for (size_t q = i; q < j; q++)
      c->ustate[u + q] = PH_U_COMMITTING;
    i = j;
  }
  *comm = len;
  size_t tail = (n << h->pool_shift) - len;
  if (tail && c->ustate[u + n - 1] == PH_U_FREE_COMM &&
      ph_os_decommit(&h->os, ph_unit_addr(h, c, u) + len, tail,
                     PH_OS_DECOMMIT_NOW) != PH_OK)
    *comm = n << h->pool_shift; /* refused: the tail stays committed */
  for (size_t q = 0; q < n; q++)
    if (c->ustate[u + q] == PH_U_COMMITTING)
      c->ustate[u + q] = PH_U_FREE_COMM;
  return PH_OK;
}

/* The first run of n free units of c at or after unit `from` (not below
 * the hint). */
static int find_run(ph_chunk *c, size_t n, uint32_t from, uint32_t *out) {
  if (c->nfree < n)
    return 0;
  uint32_t run = 0;
  for (uint32_t u = from > c->hint ? from : c->hint; u < c->nunits; u++) {
    uint8_t s = c->ustate[u];
    if (s == PH_U_FREE || s == PH_U_FREE_COMM) {
      if (++run == n) {
        *out = u + 1 - (uint32_t)n;
        return 1;
      }
    } else {
      run = 0;
    }
  }
  return 0;
}

static int run_committed(const ph_chunk *c, uint32_t u, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (c->ustate[u + k] != PH_U_FREE_COMM)
      return 0;
  return 1;
}

/* heap.pool.zero: are units [u, u+n) all Reserved with pages that read
 * zero (never committed, or decommitted but not lazily)? */
static int run_zero(const ph_chunk *c, uint32_t u, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (c->ustate[u + k] != PH_U_FREE || (c->ucls[u + k] & PH_UCLS_DIRTY))
      return 0;
  return 1;
}

static void advance_hint(ph_chunk *c) {
  while (c->hint < c->nunits && c->ustate[c->hint] != PH_U_FREE &&
         c->ustate[c->hint] != PH_U_FREE_COMM)
    c->hint++;
}

/* heap.large.commit: how much of a large block's n units is committed in
 * chunk c: its header and fields (bytes from the unit start) rounded up to a
 * page, or to 2 MiB in a transparent-huge chunk (so no huge page is split),
 * or all n units in an explicit-huge chunk. */
static size_t large_len(const struct ph_heap *h, const ph_chunk *c, size_t n,
                        size_t bytes) {
  size_t all = n << h->pool_shift;
  size_t g = c->huge == PH_OS_HUGE_EXPLICIT ? h->pool_size
             : c->huge == PH_OS_HUGE_THP    ? PH_HUGE_PAGE_SIZE
                                            : ph_os_page_size();
  size_t len = round_up(bytes, g);
  return len < all ? len : all;
}

static void chunk_remove_locked(struct ph_heap *h, unsigned i);

/* Mark units u .. u+n-1 of c taken as `state` (PH_U_POOL or PH_U_LARGE):
 * the first unit carries the state, the others are its tails (a pool's
 * with the distance back to the first unit, heap.unit.lookup). */
static void mark_taken(ph_chunk *c, uint32_t u, size_t n, int state) {
  c->ustate[u] = (uint8_t)state;
  if (state == PH_U_LARGE) /* heap.unit.clean: its units are written over */
    memset(&c->ucls[u], 0, n * sizeof c->ucls[0]);
  for (size_t k = 1; k < n; k++) {
    c->ustate[u + k] =
        (uint8_t)(state == PH_U_LARGE ? PH_U_LARGE_TAIL : PH_U_POOL_TAIL);
    if (state == PH_U_POOL)
      c->ucls[u + k] = (uint16_t)k;
  }
  c->nfree -= (uint32_t)n;
  advance_hint(c);
}

/* heap.unit.reuse for a run of n units (a medium pool, or a large block of
 * `bytes`): the first run of n free committed units in any chunk, taken as
 * `state`; 0 if there is none. */
static int take_committed_run_locked(struct ph_heap *h, size_t n, size_t bytes,
                                     int state, ph_chunk **chunk_out,
                                     uint32_t *unit_out, size_t *comm_out) {
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *c = h->chunks[i];
    uint32_t u, from = 0;
    while (find_run(c, n, from, &u)) {
      size_t comm = 0;
      from = u + 1;
      if (!run_committed(c, u, n))
        continue;
      size_t len = bytes ? large_len(h, c, n, bytes) : n << h->pool_shift;
      if (commit_range_locked(h, c, u, n, len, &comm) != PH_OK)
        return 0; /* cannot happen (nothing to commit): first fit */
      mark_taken(c, u, n, state);
      *chunk_out = c;
      *unit_out = u;
      *comm_out = comm;
      return 1;
    }
  }
  return 0;
}

/* Take n contiguous free units; bytes == 0 for whole units, else a large
 * block of that many bytes (heap.large.commit). */
static int take_locked(struct ph_heap *h, size_t n, size_t bytes, int state,
                       ph_chunk **chunk_out, uint32_t *unit_out,
                       size_t *comm_out) {
  ph_chunk *grown = NULL;
  int err = PH_ENOMEM, refused = PH_OK;
  /* heap.unit.reuse: a pool takes a free committed unit (a freed pool's,
   * resident) before an uncommitted one in any chunk; new chunks are
   * usually mapped below the old ones, so first fit alone would touch a new
   * chunk's pages while the freed ones stay resident.  Searched only while
   * the accounting says free committed units exist.  A large block (or any
   * run of n units) takes a run of free committed units the same way. */
  int reuse = h->reuse_committed &&
              atomic_load_explicit(&h->os.committed, memory_order_relaxed) >
                  ((h->pool_units << h->pool_shift) + h->large_comm);
  if (reuse && (n > 1 || bytes) &&
      atomic_load_explicit(&h->os.committed, memory_order_relaxed) >=
          ((h->pool_units + n) << h->pool_shift) + h->large_comm &&
      take_committed_run_locked(h, n, bytes, state, chunk_out, unit_out,
                                comm_out)) {
    (*chunk_out)->zero_from[*unit_out] = UINT32_MAX; /* heap.pool.zero */
    return PH_OK;
  }
  if (reuse && n == 1 && !bytes) {
    for (unsigned i = 0; i < h->nchunks; i++) {
      ph_chunk *c = h->chunks[i];
      if (c->nfree == 0)
        continue;
      for (uint32_t u = c->hint; u < c->nunits; u++) {
        if (c->ustate[u] != PH_U_FREE_COMM)
          continue;
        c->ustate[u] = (uint8_t)state;
        c->zero_from[u] = UINT32_MAX; /* heap.pool.zero: committed before */
        c->nfree--;
        advance_hint(c);
        *chunk_out = c;
        *unit_out = u;
        *comm_out = h->pool_size;
        return PH_OK;
      }
    }
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    for (unsigned i = 0; i < h->nchunks; i++) {
      ph_chunk *c = h->chunks[i];
      uint32_t u = 0, from = 0;
      size_t comm = 0;
      int zero = 0;
      err = PH_ENOMEM;
      /* heap.unit.refused: first fit; once a commit was refused (heap_limit
       * or the OS), the search goes on for a run committed already (free
       * pool memory), which needs no commit and no OS call */
      while (find_run(c, n, from, &u)) {
        from = u + 1;
        if (refused != PH_OK && !run_committed(c, u, n))
          continue;
        size_t len = bytes ? large_len(h, c, n, bytes) : n << h->pool_shift;
        zero = run_zero(c, u, n); /* heap.pool.zero: before the commit */
        err = commit_range_locked(h, c, u, n, len, &comm);
        if (err == PH_OK)
          break;
        refused = err;
      }
      if (err != PH_OK)
        continue;
      mark_taken(c, u, n, state); /* heap.unit.lookup */
      /* heap.pool.zero: a run of units all Reserved reading zero */
      c->zero_from[u] = zero ? 0 : UINT32_MAX;
      *chunk_out = c;
      *unit_out = u;
      *comm_out = comm;
      return PH_OK;
    }
    if (refused != PH_OK) {
      err = refused; /* at the limit: a new chunk would not help */
      goto refused;
    }
    if (attempt == 0) {
      /* heap.chunk.refuse: a new chunk's units must all be committed; if
       * that cannot fit the cap, do not reserve anything. */
      size_t cap = h->cfg.heap_limit ? h->cfg.heap_limit : h->commit_cap;
      size_t need =
          bytes ? round_up(bytes, ph_os_page_size()) : n << h->pool_shift;
      if (need > cap || atomic_load_explicit(&h->os.committed,
                                             memory_order_relaxed) > cap - need)
        return PH_ENOMEM;
      err = chunk_grow_locked(h, n, &grown);
      if (err)
        return err;
    }
  }
refused:
  /* heap.chunk.refuse: a reservation made for this request goes back */
  if (grown && grown->nfree == grown->nunits)
    for (unsigned i = 0; i < h->nchunks; i++)
      if (h->chunks[i] == grown) {
        chunk_remove_locked(h, i);
        break;
      }
  return err;
}

int ph_units_take_locked(struct ph_heap *h, size_t n, int state,
                         ph_chunk **chunk_out, uint32_t *unit_out) {
  size_t comm;
  return take_locked(h, n, 0, state, chunk_out, unit_out, &comm);
}

int ph_units_take_large_locked(struct ph_heap *h, size_t n, size_t bytes,
                               ph_chunk **chunk_out, uint32_t *unit_out,
                               size_t *comm_out) {
  return take_locked(h, n, bytes, PH_U_LARGE, chunk_out, unit_out, comm_out);
}

/* heap.pool.holes: the bytes of a granule mask. */
static size_t hole_len(const struct ph_heap *h, uint64_t holes) {
  return (size_t)__builtin_popcountll(holes) << h->hole_shift;
}

void ph_units_free_locked(struct ph_heap *h, ph_chunk *c, uint32_t unit,
                          size_t n) {
  uint32_t nstuck = 0;
  for (size_t k = 0; k < n; k++) {
    PH_ASSERT(c->ustate[unit + k] >= PH_U_POOL);
    uint64_t holes = c->holes[unit + k];
    if (holes) {
      /* heap.pool.holes: the holes end with the pool.  A free unit is
       * wholly Committed: the holes are counted so again (no OS call, no
       * page is touched: they stay out of RSS until the unit is reused or
       * released). */
      char *ua = ph_unit_addr(h, c, unit + (uint32_t)k);
      int st = PH_U_FREE_COMM;
      uint64_t gone = holes; /* the granules not counted committed */
      if (ph_os_commit(&h->os, ua, hole_len(h, holes)) != PH_OK) {
        /* refused: the other granules go back instead, one at a time, and
         * the unit is Reserved; if one is refused too, the unit is
         * PH_U_STUCK (not free; its granules not counted committed stay
         * in its mask) until the release counts them again */
        unsigned ng = (unsigned)(h->pool_size >> h->hole_shift);
        st = PH_U_FREE;
        for (unsigned g = 0; g < ng; g++) {
          if (holes >> g & 1)
            continue;
          if (ph_os_decommit(&h->os, ua + ((size_t)g << h->hole_shift),
                             (size_t)1 << h->hole_shift,
                             PH_OS_DECOMMIT_NOW) == PH_OK)
            gone |= (uint64_t)1 << g;
          else
            st = PH_U_STUCK;
        }
      }
      h->hole_bytes -= hole_len(h, holes);
      h->holed_pools--;
      /* heap.pool.ool: the header's copy goes too */
      if (c->ool && c->ool[unit + k]) {
        free(c->ool[unit + k]);
        c->ool[unit + k] = NULL;
        h->ool_pools--;
      }
      c->holes[unit + k] = st == PH_U_STUCK ? gone : 0;
      c->ustate[unit + k] = (uint8_t)st;
      if (st == PH_U_FREE) /* heap.pool.zero: its holes may be lazy ones */
        c->ucls[unit + k] = PH_UCLS_DIRTY;
      if (st == PH_U_STUCK) {
        nstuck++;
        h->stuck_units++;
        h->stuck_bytes += h->pool_size - hole_len(h, gone);
      }
      continue;
    }
    c->ustate[unit + k] = PH_U_FREE_COMM;
  }
  c->nfree += (uint32_t)n - nstuck;
  if (unit < c->hint)
    c->hint = unit;
  while (c->hint < c->nunits && c->ustate[c->hint] == PH_U_STUCK)
    c->hint++; /* no free unit below the hint: a stuck one is not free */
}

/* heap.pool.holes: the PH_U_STUCK units become free committed units once
 * their granules can be counted committed again (accounting only). */
static void stuck_settle_locked(struct ph_heap *h) {
  for (unsigned i = 0; i < h->nchunks && h->stuck_units; i++) {
    ph_chunk *c = h->chunks[i];
    for (uint32_t u = 0; u < c->nunits && h->stuck_units; u++) {
      if (c->ustate[u] != PH_U_STUCK)
        continue;
      size_t len = hole_len(h, c->holes[u]);
      if (ph_os_commit(&h->os, ph_unit_addr(h, c, u), len) != PH_OK)
        continue;
      h->stuck_units--;
      h->stuck_bytes -= h->pool_size - len;
      c->holes[u] = 0;
      c->ustate[u] = PH_U_FREE_COMM;
      c->nfree++;
      if (u < c->hint)
        c->hint = u;
    }
  }
}

/* heap.large: a large block records how much of its units is committed
 * (from its first unit's start); every other unit but PH_U_FREE is wholly
 * committed. */
static size_t chunk_committed(const struct ph_heap *h, const ph_chunk *c) {
  size_t comm = 0;
  for (uint32_t u = 0; u < c->nunits; u++) {
    uint8_t st = c->ustate[u];
    if (st == PH_U_LARGE) {
      const ph_large *l = (const ph_large *)ph_unit_addr(h, c, u);
      comm += l->comm;
      u += l->nunits - 1;
    } else if (st != PH_U_FREE) {
      comm += h->pool_size - hole_len(h, c->holes[u]);
    }
  }
  return comm;
}

uint64_t ph_pool_holes_make_locked(struct ph_heap *h, ph_chunk *c, uint32_t u,
                                   uint64_t want, int lazy) {
  PH_ASSERT((c->ustate[u] == PH_U_POOL || c->ustate[u] == PH_U_POOL_TAIL) &&
            c->huge == PH_OS_HUGE_NONE);
  uint64_t had = c->holes[u], holes = had;
  want &= ~had;
  /* granule 0 of a pool's first unit: the header and live bitmap, unless
   * out of line (heap.pool.ool) */
  if (c->ustate[u] == PH_U_POOL && (!c->ool || !c->ool[u]))
    want &= ~(uint64_t)1;
  unsigned ng = (unsigned)(h->pool_size >> h->hole_shift);
  for (unsigned g = 0; g < ng;) {
    if (!(want >> g & 1)) {
      g++;
      continue;
    }
    unsigned e = g;
    while (e < ng && (want >> e & 1))
      e++;
    uint64_t run = (e - g >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << (e - g)) - 1)
                   << g;
    if (ph_os_decommit(
            &h->os, ph_unit_addr(h, c, u) + ((size_t)g << h->hole_shift),
            (size_t)(e - g) << h->hole_shift,
            lazy ? PH_OS_DECOMMIT_LAZY : PH_OS_DECOMMIT_NOW) == PH_OK)
      holes |= run;
    g = e;
  }
  if (holes != had) {
    if (!had)
      h->holed_pools++;
    h->hole_bytes += hole_len(h, holes & ~had);
    c->holes[u] = holes;
  }
  return holes;
}

/* heap.large.commit: free a dead large block's units.  Wholly committed
 * units become PH_U_FREE_COMM; a partly committed last unit gives its pages
 * back and becomes PH_U_FREE (so free units stay whole, and heap_limit is
 * not exceeded by units that were never wholly committed).  Returns 0 if
 * that was refused: the block then stays in its units, dead and made raw
 * (its fields may point at blocks this sweep freed, and no one may scan
 * them), and a later sweep frees it: nothing is lost. */
int ph_large_free_locked(struct ph_heap *h, ph_large *l) {
  ph_chunk *c = l->chunk;
  uint32_t u = l->unit;
  size_t n = l->nunits, comm = l->comm;
  size_t full = comm >> h->pool_shift;
  size_t part = comm & (h->pool_size - 1);
  l->sig = PH_SIG_DEAD;
  if (part && ph_os_decommit(&h->os, ph_unit_addr(h, c, u + (uint32_t)full),
                             part, PH_OS_DECOMMIT_NOW) != PH_OK) {
    ph_value *hp = (ph_value *)((char *)l + PH_LARGE_HDR);
    l->sig = PH_SIG_LARGE;
    *hp = (*hp & ~PH_HD_TAG_MASK) | PH_TAG_RAW;
    return 0;
  }
  /* heap.pool.zero: a unit's bytes beyond comm kept whatever they held
   * before the block (they may have been decommitted lazily) */
  for (size_t k = 0; k < n; k++) {
    c->ustate[u + k] = k < full ? PH_U_FREE_COMM : PH_U_FREE;
    if (k >= full)
      c->ucls[u + k] = PH_UCLS_DIRTY;
  }
  c->nfree += (uint32_t)n;
  if (u < c->hint)
    c->hint = u;
  h->large_units -= n;
  h->large_comm -= comm;
  return 1;
}

size_t ph_units_decommit_locked(struct ph_heap *h, ph_chunk *c, uint32_t unit,
                                size_t n, int lazy) {
  for (size_t k = 0; k < n; k++)
    PH_ASSERT(c->ustate[unit + k] == PH_U_FREE_COMM);
  size_t len = n << h->pool_shift;
  if (ph_os_decommit(&h->os, ph_unit_addr(h, c, unit), len,
                     lazy ? PH_OS_DECOMMIT_LAZY : PH_OS_DECOMMIT_NOW) != PH_OK)
    return 0;
  for (size_t k = 0; k < n; k++) {
    c->ustate[unit + k] = PH_U_FREE;
    /* heap.unit.clean: its pages are gone; heap.pool.zero: they read zero
     * unless lazily given back (MADV_FREE keeps them until reclaimed) */
    c->ucls[unit + k] = lazy ? PH_UCLS_DIRTY : 0;
  }
  return len;
}

/* The chunk's record, its unit tables and the out-of-line pool headers
 * still in it (heap.pool.ool: the heap's teardown). */
static void chunk_free_tables(ph_chunk *c) {
  for (uint32_t u = 0; c->ool && u < c->nunits; u++)
    free(c->ool[u]);
  free(c->ool);
  free(c->ustate);
  free(c);
}

static void chunk_remove_locked(struct ph_heap *h, unsigned i) {
  ph_chunk *c = h->chunks[i];
  size_t comm = chunk_committed(h, c);
  if (ph_os_release(&h->os, c->base, c->size, comm) != PH_OK)
    return; /* keep it: still usable */
  memmove(&h->chunks[i], &h->chunks[i + 1],
          (h->nchunks - i - 1) * sizeof h->chunks[0]);
  h->nchunks--;
  chunk_free_tables(c);
}

/* Does chunk i touch chunks of ours on both sides?  The kernel merges
 * adjacent anonymous mappings with equal flags, so unmapping such a chunk
 * would split one kernel mapping in two: it is decommitted instead. */
static int sandwiched(const struct ph_heap *h, unsigned i) {
  const ph_chunk *c = h->chunks[i];
  return i > 0 && i + 1 < h->nchunks &&
         h->chunks[i - 1]->base + h->chunks[i - 1]->size == c->base &&
         c->base + c->size == h->chunks[i + 1]->base;
}

/* heap.release: free committed units beyond `retain` bytes (the lowest
 * addresses are retained) go back to the OS, one call per contiguous run.
 * In UNMAP mode whole free chunks are unmapped, unless unmapping would split
 * a kernel mapping (a chunk adjacent to ours on both sides).  With huge
 * pages only whole 2 MiB ranges are decommitted, so no huge page is broken
 * up.  A refused call leaves its units committed (nothing is lost, nothing
 * is counted). */
void ph_units_release_locked(struct ph_heap *h, int mode, size_t retain,
                             uint64_t *released_bytes) {
  uint64_t released = 0;
  if (h->stuck_units)
    stuck_settle_locked(h);
  if (mode == PH_RELEASE_KEEP) {
    *released_bytes = 0;
    return;
  }
  size_t kept = 0;
  /* free committed bytes not yet visited: the unit scan stops when none is
   * left, so a mostly free (Reserved) chunk is not walked unit by unit */
  uint64_t left = ph_free_committed_locked(h);
  for (unsigned i = 0; i < h->nchunks; i++) {
    ph_chunk *c = h->chunks[i];
    if (mode == PH_RELEASE_UNMAP && c->nfree == c->nunits && kept >= retain &&
        !sandwiched(h, i)) {
      size_t comm = 0;
      for (uint32_t u = 0; u < c->nunits; u++)
        comm += c->ustate[u] == PH_U_FREE_COMM ? h->pool_size : 0;
      unsigned before = h->nchunks;
      chunk_remove_locked(h, i);
      if (h->nchunks < before) {
        released += comm;
        left -= comm;
        i--;
        continue;
      }
    }
    uint32_t u = 0;
    while (u < c->nunits && left > 0) {
      if (c->ustate[u] != PH_U_FREE_COMM) {
        u++;
        continue;
      }
      uint32_t e = u;
      while (e < c->nunits && c->ustate[e] == PH_U_FREE_COMM)
        e++;
      left -= (uint64_t)(e - u) << h->pool_shift;
      /* retain the lowest free units */
      while (u < e && kept < retain) {
        kept += h->pool_size;
        u++;
      }
      char *lo = ph_unit_addr(h, c, u), *hi = ph_unit_addr(h, c, e);
      if (c->huge != PH_OS_HUGE_NONE) {
        lo = (char *)round_up((uintptr_t)lo, PH_HUGE_PAGE_SIZE);
        hi = (char *)((uintptr_t)hi & ~(PH_HUGE_PAGE_SIZE - 1));
      }
      if (lo < hi)
        released += ph_units_decommit_locked(
            h, c, (uint32_t)((size_t)(lo - c->base) >> h->pool_shift),
            (size_t)(hi - lo) >> h->pool_shift, mode == PH_RELEASE_LAZY);
      u = e;
    }
  }
  *released_bytes = released;
}

void ph_chunks_destroy(struct ph_heap *h) {
  while (h->nchunks > 0) {
    unsigned before = h->nchunks;
    chunk_remove_locked(h, h->nchunks - 1);
    if (h->nchunks == before) { /* refused: drop our record anyway */
      chunk_free_tables(h->chunks[--h->nchunks]);
    }
  }
}

void ph_pools_zero_forget_stw(struct ph_heap *h) {
  for (unsigned i = 0; i < h->nchunks; i++)
    memset(h->chunks[i]->zero_from, 0xff,
           h->chunks[i]->nunits * sizeof(uint32_t));
}
