/* gc/verify.c -- the whole-heap check run by ph_verify inside
 * stop-the-world (DESIGN.md: heap.verify).  Single-threaded and thorough:
 * chunk tables, unit states, every pool header and slot, every free list,
 * every large block, every scanned field and root, the avail lists and the
 * accounting counters against a recount. */
#include "gc/gc.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct vctx {
  struct ph_heap *h;
  char *why;
  size_t why_size;
  int bad;
} vctx;

static int fail(vctx *v, const char *fmt, ...) {
  if (!v->bad && v->why && v->why_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, v->why_size, fmt, ap);
    va_end(ap);
  }
  v->bad = 1;
  return 0;
}

/* Is x the address of field 0 of a live (allocated) block of this heap? */
static int valid_block(vctx *v, ph_value x) {
  struct ph_heap *h = v->h;
  ph_chunk *c = ph_chunk_find(h, (void *)x);
  if (!c)
    return 0;
  uint32_t u = (uint32_t)((size_t)((char *)x - c->base) >> h->pool_shift);
  char *ua = ph_unit_addr(h, c, u);
  if (c->ustate[u] == PH_U_LARGE)
    return (char *)x == ua + PH_LARGE_HDR + 8 &&
           !(ph_hd_color(*ph_hp(x)) & PH_BLACK) && *ph_hp(x) != 0;
  if (c->ustate[u] != PH_U_POOL)
    return 0;
  ph_pool *p = (ph_pool *)ua;
  size_t off = (size_t)((char *)x - 8 - ph_pool_slots(p));
  size_t sb = (size_t)h->class_wsize[p->cls] * 8;
  if ((char *)x < ph_pool_slots(p) + 8 || off % sb || off / sb >= p->nslots)
    return 0;
  /* a free slot's header is 0 (pools.header) */
  return !(ph_hd_color(*ph_hp(x)) & PH_BLACK) && *ph_hp(x) != 0;
}

static void check_fields(vctx *v, ph_value b) {
  ph_value hd = *ph_hp(b);
  if (ph_hd_tag(hd) >= PH_TAG_RAW)
    return;
  size_t wo = ph_hd_wosize(hd);
  for (size_t i = 0; i < wo && !v->bad; i++) {
    ph_value x = ((ph_value *)b)[i];
    if (ph_is_block(x) && !valid_block(v, x))
      fail(v, "block %p field %zu = %p is not a live block", (void *)b, i,
           (void *)x);
  }
}

static void check_pool(vctx *v, ph_chunk *c, uint32_t u) {
  struct ph_heap *h = v->h;
  ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
  if (p->sig != PH_SIG_POOL || p->kind != PH_U_POOL) {
    fail(v, "pool %p: bad signature", (void *)p);
    return;
  }
  if (p->cls >= h->nclasses || p->nslots != h->class_nslots[p->cls] ||
      p->owner >= h->cfg.max_domains || p->chunk != c || p->unit != u ||
      p->evacuated || p->cached) {
    fail(v, "pool %p: bad header fields", (void *)p);
    return;
  }
  uint32_t wsize = h->class_wsize[p->cls];
  uint32_t blue = 0, white = 0;
  for (uint32_t i = 0; i < p->nslots && !v->bad; i++) {
    ph_value b = ph_pool_block(h, p, i);
    ph_value hd = *ph_hp(b);
    if (hd == 0) { /* a free slot (pools.header) */
      blue++;
      continue;
    }
    switch (ph_hd_color(hd)) {
    case PH_HD_SPECIAL >> PH_HD_COLOR_SHIFT: /* gc.weak */
      if (ph_hd_tag(hd) != PH_WEAK_TAG &&
          (ph_hd_tag(hd) != PH_EPHE_TAG || ph_hd_wosize(hd) < 2))
        fail(v, "pool %p slot %u: weak kind with tag %u", (void *)p, i,
             ph_hd_tag(hd));
      /* fall through */
    case PH_WHITE:
      white++;
      if (ph_hd_wosize(hd) == 0 || ph_hd_wosize(hd) > wsize - 1 ||
          ph_class_of_wosize(h, ph_hd_wosize(hd)) != p->cls)
        fail(v, "pool %p slot %u: wosize %zu not of class %u", (void *)p, i,
             ph_hd_wosize(hd), p->cls);
      break;
    default:
      fail(v, "pool %p slot %u: color %u outside a collection", (void *)p, i,
           ph_hd_color(hd));
    }
  }
  if (v->bad)
    return;
  if (blue != p->nfree || white != p->nlive || blue + white != p->nslots) {
    fail(v, "pool %p: counts live %u free %u, recount %u %u", (void *)p,
         p->nlive, p->nfree, white, blue);
    return;
  }
  uint32_t n = 0;
  for (ph_value f = p->free; f && !v->bad; f = *(ph_value *)f) {
    if (ph_unit_of(h, f) != (ph_unit_hdr *)p || *ph_hp(f) != 0 ||
        ++n > p->nfree)
      fail(v, "pool %p: free list broken at %p", (void *)p, (void *)f);
  }
  if (!v->bad && n != p->nfree)
    fail(v, "pool %p: free list has %u of %u", (void *)p, n, p->nfree);
}

int ph_verify_stw_single(struct ph_heap *h, char *why, size_t why_size) {
  vctx v = {h, why, why_size, 0};
  uint64_t pools = 0, large = 0, comm = 0, large_comm = 0;
  for (unsigned i = 0; i < h->nchunks && !v.bad; i++) {
    ph_chunk *c = h->chunks[i];
    if (i > 0 && h->chunks[i - 1]->base + h->chunks[i - 1]->size > c->base)
      fail(&v, "chunks %u and %u overlap or are unsorted", i - 1, i);
    uint32_t nfree = 0;
    for (uint32_t u = 0; u < c->nunits && !v.bad; u++) {
      uint8_t st = c->ustate[u];
      if (st != PH_U_FREE && st != PH_U_LARGE && st != PH_U_LARGE_TAIL)
        comm += h->pool_size;
      if (st == PH_U_FREE || st == PH_U_FREE_COMM) {
        nfree++;
        if (u < c->hint)
          fail(&v, "chunk %u: free unit %u below hint %u", i, u, c->hint);
      } else if (st == PH_U_POOL) {
        pools++;
        check_pool(&v, c, u);
      } else if (st == PH_U_LARGE) {
        ph_large *l = (ph_large *)ph_unit_addr(h, c, u);
        ph_value b = (ph_value)((char *)l + PH_LARGE_HDR + 8);
        size_t wo = ph_hd_wosize(*ph_hp(b));
        if (l->sig != PH_SIG_LARGE || l->nunits == 0 ||
            u + l->nunits > c->nunits || l->unit != u || l->chunk != c ||
            (ph_hd_color(*ph_hp(b)) & PH_BLACK) || wo <= h->max_small_wosize ||
            PH_LARGE_HDR + 8 + wo * 8 > (size_t)l->nunits << h->pool_shift ||
            /* heap.large.commit: its pages, nothing beyond its last unit */
            l->comm < PH_LARGE_HDR + 8 + wo * 8 ||
            l->comm > (size_t)l->nunits << h->pool_shift ||
            l->comm % ph_os_page_size()) {
          fail(&v, "large block at %p: bad header", (void *)l);
          break;
        }
        for (uint32_t k = 1; k < l->nunits; k++)
          if (c->ustate[u + k] != PH_U_LARGE_TAIL)
            fail(&v, "large block at %p: unit %u not a tail", (void *)l, k);
        large += l->nunits;
        large_comm += l->comm;
        comm += l->comm;
      } else if (st != PH_U_LARGE_TAIL) {
        fail(&v, "chunk %u unit %u: bad state %u", i, u, st);
      }
    }
    if (!v.bad && nfree != c->nfree)
      fail(&v, "chunk %u: %u free units, counter says %u", i, nfree, c->nfree);
  }
  /* every scanned field of every block */
  for (unsigned i = 0; i < h->nchunks && !v.bad; i++) {
    ph_chunk *c = h->chunks[i];
    for (uint32_t u = 0; u < c->nunits && !v.bad; u++) {
      if (c->ustate[u] == PH_U_POOL) {
        ph_pool *p = (ph_pool *)ph_unit_addr(h, c, u);
        for (uint32_t k = 0; k < p->nslots && !v.bad; k++) {
          ph_value b = ph_pool_block(h, p, k);
          if (*ph_hp(b) != 0 && !(ph_hd_color(*ph_hp(b)) & PH_BLACK))
            check_fields(&v, b);
        }
      } else if (c->ustate[u] == PH_U_LARGE) {
        check_fields(&v, (ph_value)(ph_unit_addr(h, c, u) + PH_LARGE_HDR + 8));
      }
    }
  }
  if (v.bad)
    return PH_ECORRUPT;
  if (pools != h->pool_units || large != h->large_units ||
      large_comm != h->large_comm)
    fail(&v, "unit counters: pools %zu/%llu large %zu/%llu (%zu/%llu bytes)",
         h->pool_units, (unsigned long long)pools, h->large_units,
         (unsigned long long)large, h->large_comm,
         (unsigned long long)large_comm);
  uint64_t oc = atomic_load_explicit(&h->os.committed, memory_order_relaxed);
  if (!v.bad && oc != comm)
    fail(&v, "committed bytes %llu, units say %llu", (unsigned long long)oc,
         (unsigned long long)comm);
  uint64_t om = atomic_load_explicit(&h->os.mappings, memory_order_relaxed);
  if (!v.bad && om != h->nchunks)
    fail(&v, "mappings %llu, chunks %u", (unsigned long long)om, h->nchunks);
  /* avail lists */
  for (unsigned s = 0; s < h->cfg.max_domains && !v.bad; s++)
    for (unsigned c = 0; c < h->nclasses && !v.bad; c++) {
      size_t n = 0;
      for (ph_pool *p = atomic_load_explicit(&h->slots[s].avail[c],
                                             memory_order_relaxed);
           p && !v.bad; p = p->next) {
        if (p->sig != PH_SIG_POOL || p->owner != s || p->cls != c ||
            ++n > pools)
          fail(&v, "avail list %u/%u broken at %p", s, c, (void *)p);
      }
    }
  /* roots */
  struct rv {
    vctx *v;
  };
  for (unsigned s = 0; s < h->cfg.max_domains && !v.bad; s++) {
    struct ph_domain *d = h->slots[s].dom;
    if (!d)
      continue;
    for (ph_rootseg *sg = d->roots; sg && !v.bad; sg = sg->prev)
      for (size_t i = 0; i < sg->used && !v.bad; i++)
        if (ph_is_block(sg->slot[i]) && !valid_block(&v, sg->slot[i]))
          fail(&v, "domain %u root %zu = %p is not a live block", s, i,
               (void *)sg->slot[i]);
  }
  if (!v.bad) {
    pthread_mutex_lock(&h->roots->roots_lock);
    for (size_t i = 0; i < h->roots->groots_cap && !v.bad; i++) {
      ph_value *slot = h->roots->groots[i];
      if (slot && slot != (ph_value *)1 && ph_is_block(*slot) &&
          !valid_block(&v, *slot))
        fail(&v, "global root %p = %p is not a live block", (void *)slot,
             (void *)*slot);
    }
    pthread_mutex_unlock(&h->roots->roots_lock);
  }
  return v.bad ? PH_ECORRUPT : PH_OK;
}
