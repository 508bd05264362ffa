/* heap/verify.c -- the pool layer's structural check (DESIGN.md:
 * heap.verify), one walk for both clients: ph_verify (gc/verify.c) and
 * php_verify (heap/pools.c) run it, then check what is their own.
 *
 * It walks the chunk table, every unit's state, every pool header, every
 * slot header, every free list and every large block header, and recounts
 * the unit counters and the committed bytes.  Blocks, pools and large
 * blocks that pass go to the client's hooks (colours, owners). */
#include "heap/heap.h"

#include <stdarg.h>
#include <stdio.h>

void ph_check_fail(ph_check *k, const char *fmt, ...) {
  if (!k->bad && k->why && k->why_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->why, k->why_size, fmt, ap);
    va_end(ap);
  }
  k->bad = 1;
}

static void check_pool(struct ph_heap *h, ph_check *k, ph_chunk *c,
                       uint32_t u) {
  /* heap.pool.ool: granule 0 is a hole exactly when the header is out of
   * line, in a copy that names this unit */
  ph_pool *q = c->ool ? c->ool[u] : NULL;
  if ((c->holes[u] & 1) != (q != NULL)) {
    ph_check_fail(k, "unit %u of chunk %p: granule 0 hole %d, header copy %p",
                  u, (void *)c->base, (int)(c->holes[u] & 1), (void *)q);
    return;
  }
  ph_pool *p = ph_pool_at(h, c, u);
  if (p->sig != PH_SIG_POOL || p->kind != PH_U_POOL || p->cls >= h->nclasses ||
      p->nslots != h->class_nslots[p->cls] || p->chunk != c || p->unit != u ||
      p->hdr != h->class_hdr[p->cls] || p->evacuated || p->cached) {
    ph_check_fail(k, "pool %p: bad header fields", (void *)p);
    return;
  }
  /* heap.unit.lookup: a medium pool's further units are its tails, each
   * with the distance back to this one */
  uint32_t nu = h->class_units[p->cls];
  if (u + nu > c->nunits) {
    ph_check_fail(k, "pool %p: %u units past its chunk's end", (void *)p, nu);
    return;
  }
  for (uint32_t i = 1; i < nu; i++)
    if (c->ustate[u + i] != PH_U_POOL_TAIL || c->ucls[u + i] != i) {
      ph_check_fail(k, "pool %p: unit %u not its tail", (void *)p, i);
      return;
    }
  if (c->ucls[u] != p->cls) {
    ph_check_fail(k, "pool %p: unit class %u, header %u", (void *)p, c->ucls[u],
                  p->cls);
    return;
  }
  uint32_t ws = h->class_wsize[p->cls], live = 0, nfree = 0, nhole = 0;
  size_t sb = (size_t)ws * 8;
  /* heap.pool.holes: no granule past a unit, none in a huge chunk; a
   * medium pool's in the masks of its units; granule 0 of the first unit
   * only with the header out of line (checked above), never in a medium
   * pool (heap.pool.ool) */
  uint64_t words = 0, holes = ph_pool_holes_any(h, c, u, p->cls);
  size_t ng = h->pool_size >> h->hole_shift;
  for (uint32_t i = 0; i < nu; i++) {
    uint64_t hm = c->holes[u + i];
    if ((i == 0 && (hm & 1) && p->cls >= h->nsmall) ||
        (ng < 64 && (hm >> ng)) || (hm && c->huge != PH_OS_HUGE_NONE)) {
      ph_check_fail(k, "pool %p: bad holes %#llx in unit %u", (void *)p,
                    (unsigned long long)hm, i);
      return;
    }
  }
  /* heap.pool.zero: the offset is none, the pool's start (a fresh pool),
   * or a slot's field 0; no allocated slot lies at or above it (the
   * headers read here are the walk's own, so no page is touched that the
   * walk does not touch anyway) */
  uint32_t z = k->zero ? c->zero_from[u] : UINT32_MAX;
  uint32_t zslot = p->nslots;
  if (z != UINT32_MAX && z != 0) {
    size_t first = (size_t)p->hdr + 8, off = (size_t)z - first;
    if (z < first || off % sb || off / sb >= p->nslots) {
      ph_check_fail(k, "pool %p: zero offset %u not a slot's field 0",
                    (void *)p, z);
      return;
    }
    zslot = (uint32_t)(off / sb);
  } else if (z == 0)
    zslot = 0;
  for (uint32_t i = 0; i < p->nslots && !k->bad; i++) {
    if (holes && ph_pool_slot_in_hole(h, c, u, p->cls, i)) {
      nhole++;
      continue;
    }
    ph_value b = ph_pool_block(h, p, i);
    ph_value hd = *ph_hp(b);
    if (hd == 0) { /* a free slot (pools.header) */
      nfree++;
      continue;
    }
    if (i >= zslot)
      ph_check_fail(k, "pool %p slot %u: allocated at or above the zero offset",
                    (void *)p, i);
    size_t wo = ph_hd_wosize(hd);
    if (wo == 0 || wo > ws - 1 || ph_class_of_wosize(h, wo) != p->cls)
      ph_check_fail(k, "pool %p slot %u: wosize %zu not of class %u", (void *)p,
                    i, wo, p->cls);
    live++;
    words += wo + 1;
    if (k->block && !k->bad)
      k->block(k, b);
  }
  if (k->bad)
    return;
  if (live != p->nlive || nfree != p->nfree || nhole != p->nhole) {
    ph_check_fail(k,
                  "pool %p: counts live %u free %u hole %u, recount %u %u %u",
                  (void *)p, p->nlive, p->nfree, p->nhole, live, nfree, nhole);
    return;
  }
  /* every link is a free slot of this pool, at a slot's start */
  char *s = ph_pool_slots(h, p);
  uint32_t n = 0;
  for (ph_value f = p->free; f && !k->bad; f = *(ph_value *)f) {
    size_t off = (size_t)((char *)f - 8 - s);
    if ((char *)f < s + 8 || off % sb || off / sb >= p->nslots ||
        (holes &&
         ph_pool_slot_in_hole(h, c, u, p->cls, (uint32_t)(off / sb))) ||
        *ph_hp(f) != 0 || ++n > nfree)
      ph_check_fail(k, "pool %p: free list broken at %p", (void *)p, (void *)f);
  }
  if (!k->bad && n != nfree)
    ph_check_fail(k, "pool %p: free list has %u of %u free slots", (void *)p, n,
                  nfree);
  if (k->pool && !k->bad)
    k->pool(k, p, words);
}

static void check_large(struct ph_heap *h, ph_check *k, ph_chunk *c,
                        uint32_t u) {
  ph_large *l = (ph_large *)ph_unit_addr(h, c, u);
  ph_value b = (ph_value)((char *)l + PH_LARGE_HDR + 8);
  size_t wo = ph_hd_wosize(*ph_hp(b));
  if (l->sig != PH_SIG_LARGE || l->nunits == 0 || u + l->nunits > c->nunits ||
      l->unit != u || l->chunk != c || wo <= h->max_small_wosize ||
      PH_LARGE_HDR + 8 + wo * 8 > (size_t)l->nunits << h->pool_shift ||
      /* heap.large.commit: its pages, nothing beyond its last unit */
      l->comm < PH_LARGE_HDR + 8 + wo * 8 ||
      l->comm > (size_t)l->nunits << h->pool_shift ||
      l->comm % ph_os_page_size()) {
    ph_check_fail(k, "large block at %p: bad header", (void *)l);
    return;
  }
  for (uint32_t i = 1; i < l->nunits && !k->bad; i++)
    if (c->ustate[u + i] != PH_U_LARGE_TAIL)
      ph_check_fail(k, "large block at %p: unit %u not a tail", (void *)l, i);
  if (k->large && !k->bad)
    k->large(k, l, b);
}

void ph_check_heap_locked(struct ph_heap *h, ph_check *k) {
  uint64_t pools = 0, npools = 0, large = 0, larges = 0, comm = 0, lcomm = 0;
  uint64_t hbytes = 0, holed = 0, ool = 0, stuck = 0, stuck_bytes = 0;
  for (unsigned i = 0; i < h->nchunks && !k->bad; i++) {
    ph_chunk *c = h->chunks[i];
    if (i > 0 && h->chunks[i - 1]->base + h->chunks[i - 1]->size > c->base)
      ph_check_fail(k, "chunks %u and %u overlap or are unsorted", i - 1, i);
    uint32_t nfree = 0;
    for (uint32_t u = 0; u < c->nunits && !k->bad; u++) {
      uint8_t st = c->ustate[u];
      if (st == PH_U_FREE || st == PH_U_FREE_COMM) {
        nfree++;
        if (st == PH_U_FREE_COMM)
          comm += h->pool_size;
        if (c->holes[u] || (c->ool && c->ool[u]))
          ph_check_fail(k, "chunk %u: free unit %u has holes", i, u);
        if (u < c->hint)
          ph_check_fail(k, "chunk %u: free unit %u below hint %u", i, u,
                        c->hint);
      } else if (st == PH_U_POOL) {
        comm += h->pool_size -
                ((size_t)__builtin_popcountll(c->holes[u]) << h->hole_shift);
        pools++;
        npools++;
        if (c->holes[u]) {
          holed++;
          ool += c->holes[u] & 1;
          hbytes += (size_t)__builtin_popcountll(c->holes[u]) << h->hole_shift;
        }
        check_pool(h, k, c, u);
        if (k->bad)
          break;
        /* its tail units, checked by check_pool (and their holes) */
        uint32_t nu = h->class_units[(ph_pool_at(h, c, u))->cls];
        comm += (size_t)(nu - 1) << h->pool_shift;
        for (uint32_t t = 1; t < nu; t++)
          if (c->holes[u + t]) {
            holed++;
            size_t hb = (size_t)__builtin_popcountll(c->holes[u + t])
                        << h->hole_shift;
            hbytes += hb;
            comm -= hb;
          }
        pools += nu - 1;
        u += nu - 1;
      } else if (st == PH_U_STUCK) {
        if (c->ool && c->ool[u])
          ph_check_fail(k, "chunk %u: stuck unit %u has a header copy", i, u);
        /* heap.pool.holes: a freed pool's unit, its mask's granules not
         * counted committed */
        size_t hb = (size_t)__builtin_popcountll(c->holes[u]) << h->hole_shift;
        comm += h->pool_size - hb;
        stuck++;
        stuck_bytes += h->pool_size - hb;
      } else if (st == PH_U_LARGE) {
        check_large(h, k, c, u);
        if (k->bad)
          break;
        ph_large *l = (ph_large *)ph_unit_addr(h, c, u);
        large += l->nunits;
        lcomm += l->comm;
        comm += l->comm;
        larges++;
        u += l->nunits - 1; /* its tail units, checked by check_large */
      } else {
        /* tails are passed over with their pool or large block */
        ph_check_fail(k, "chunk %u unit %u: bad state %u", i, u, st);
      }
    }
    if (!k->bad && nfree != c->nfree)
      ph_check_fail(k, "chunk %u: %u free units, counter says %u", i, nfree,
                    c->nfree);
  }
  if (k->bad)
    return;
  if (pools != h->pool_units || large != h->large_units ||
      lcomm != h->large_comm)
    ph_check_fail(
        k, "unit counters: pools %zu/%llu large %zu/%llu (%zu/%llu bytes)",
        h->pool_units, (unsigned long long)pools, h->large_units,
        (unsigned long long)large, h->large_comm, (unsigned long long)lcomm);
  if (!k->bad && (stuck != h->stuck_units || stuck_bytes != h->stuck_bytes))
    ph_check_fail(k, "stuck units: %llu (%llu bytes), counters %zu %zu",
                  (unsigned long long)stuck, (unsigned long long)stuck_bytes,
                  h->stuck_units, h->stuck_bytes);
  if (!k->bad && (hbytes != h->hole_bytes || holed != h->holed_pools ||
                  ool != h->ool_pools))
    ph_check_fail(k,
                  "holes: %llu bytes in %llu pools (%llu headers out of "
                  "line), counters %zu %zu %zu",
                  (unsigned long long)hbytes, (unsigned long long)holed,
                  (unsigned long long)ool, h->hole_bytes, h->holed_pools,
                  h->ool_pools);
  uint64_t oc = atomic_load_explicit(&h->os.committed, memory_order_relaxed);
  if (!k->bad && oc != comm)
    ph_check_fail(k, "committed bytes %llu, units say %llu",
                  (unsigned long long)oc, (unsigned long long)comm);
  uint64_t om = atomic_load_explicit(&h->os.mappings, memory_order_relaxed);
  if (!k->bad && om != h->nchunks)
    ph_check_fail(k, "mappings %llu, chunks %u", (unsigned long long)om,
                  h->nchunks);
  k->pools = npools;
  k->larges = larges;
}
