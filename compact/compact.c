/* compact/compact.c -- the parallel compactor (DESIGN.md: compact), the one
 * driver of both clients: the managed collector (gc/collect.c, inside the
 * section of ph_compact, right after the collection's sweep) and the pool
 * layer (compact/pools_compact.c, inside the embedder's section, after its
 * sweep by colour).  Every participant runs:
 *
 *   Phase 1 (compact.phase.stats).  The client's sweep already recorded,
 *     per participant, every partly filled pool with its class, owner and
 *     live count (ph_cand) and every surviving large block that may hold
 *     values: the stats table costs no pass over memory and not even a pool
 *     header read.  Barrier; the leader sets up the plan (the records, the
 *     scan rule's table, and the ranges, below).
 *   Phase 2 (compact.phase.choose).  Barrier.  Per size class (claimed), the
 *     records of that class become an array.  GLOBAL scope: sorted densest
 *     first; with
 *     L live blocks and C slots per pool, the first k = ceil(L / C) are kept
 *     and the rest evacuated.  Any k pools can hold L blocks only if
 *     k * C >= L, and keeping the densest k moves the fewest blocks, so the
 *     plan is minimal.  PER_DOMAIN scope: the same per (owner, class), in
 *     address order (OCaml 5.2 keeps its pools in list order).  Each kept
 *     pool that receives blocks becomes one evacuation unit: a destination
 *     and the run of source blocks (first source, live blocks to skip in it,
 *     count) that fill it.  The leader then marks the evacuated pools in a
 *     dense map (compact.update.map).  With huge pages (GLOBAL), the leader
 *     first chose, at the end of phase 1, the 2 MiB ranges that stay in
 *     use, and each class keeps its k densest pools among those ranges
 *     (compact.choose.ranges), so that the other ranges empty whole.
 *   Phase 3 (compact.phase.evacuate).  Barrier.  Units are claimed by any
 *     participant (GLOBAL) or run by the pools' owner (PER_DOMAIN; the
 *     leader runs those of owners that are not participating).  Each live
 *     block is copied into a free slot of the destination; the old block
 *     gets the new address in field 0 and keeps its header.
 *   Phase 4 (compact.phase.update).  Barrier.  Every participant claims
 *     root items (managed: global set, each domain's stack and hook,
 *     blocking domains' too; the layer: its part's), pool units (every live
 *     block of every pool that was not evacuated) and slices of large
 *     blocks; a block's values are found by its tag (compact.update.rule).
 *     Whether a pointer needs forwarding is one bit of the map, found from
 *     its address (an O(1) shift), never from the target block's header.
 *   Phase 5 (compact.phase.free).  Barrier.  The leader frees the evacuated
 *     pools (poisoned first in debug builds) and the client rebuilds its
 *     lists (managed: the avail lists from the kept pools, densest on top).
 *   Phase 6 (compact.phase.release).  The leader gives free memory back to
 *     the OS per cfg.release, keeping cfg.retain bytes (heap.release).
 *     Barrier.
 */
#include "compact/compact.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define PH_LARGE_SLICE 65536 /* fields per update work item */

/* ------------------ phase 1: the sweep's records; compact.choose.ranges */

/* compact.choose.ranges (leader, end of phase 1): the chooser of
 * compact/ranges.c over the records, in GLOBAL scope when memory is
 * released. */
static void choose_ranges_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  if (h->cfg.huge_pages == PH_HUGE_OFF || h->cfg.release == PH_RELEASE_KEEP ||
      h->cfg.compact_scope != PH_COMPACT_GLOBAL)
    return;
  size_t nc = 0;
  for (unsigned i = 0; i < plan->nrecs; i++)
    nc += plan->recs[i].ncands;
  ph_range_rec *rec = nc ? ph_os_scratch_alloc(nc * sizeof *rec) : NULL;
  if (!rec)
    return;
  size_t j = 0;
  for (unsigned p = 0; p < plan->nrecs; p++)
    for (size_t k = 0; k < plan->recs[p].ncands; k++) {
      const ph_cand *cd = &plan->recs[p].cands[k];
      /* medium pools are not planned in a ranges plan (plan_class): the
       * ranges they touch stay in use */
      if (cd->cls < h->nsmall)
        rec[j++] =
            (ph_range_rec){ph_pool_addr(h, cd->pool), cd->nlive, cd->cls};
    }
  ph_ranges_choose(h, rec, j, &plan->ranges);
  ph_os_scratch_free(rec);
}

/* compact.update.rule: the kind of every tag. */
static void rule_stw_single(ph_compact_plan *plan, const ph_compact_rule *r) {
  plan->rule = r;
  for (unsigned t = 0; t < 256; t++) {
    if (r->no_scan_tag == 0 || (r->cb_tags[t / 64] >> (t % 64) & 1))
      plan->kind[t] = PH_KIND_CB;
    else
      plan->kind[t] = t >= r->no_scan_tag ? PH_KIND_SKIP : PH_KIND_INLINE;
  }
}

/* ------------------------------------------------------------ phase 2 */

static int by_density(const void *a, const void *b) {
  const ph_cand *p = a, *q = b;
  if (p->nlive != q->nlive)
    return p->nlive > q->nlive ? -1 : 1;
  return p->pool < q->pool ? -1 : p->pool > q->pool;
}

static int by_owner_address(const void *a, const void *b) {
  const ph_cand *p = a, *q = b;
  if (p->owner != q->owner)
    return p->owner < q->owner ? -1 : 1;
  return p->pool < q->pool ? -1 : p->pool > q->pool;
}

static int by_pool(const void *a, const void *b) {
  const ph_pool *p = a, *q = *(ph_pool *const *)b;
  return p < q ? -1 : p > q;
}

static int is_pinned(const ph_compact_plan *plan, ph_pool *p) {
  return plan->npinned && bsearch(p, plan->pinned, plan->npinned,
                                  sizeof *plan->pinned, by_pool) != NULL;
}

/* compact.pin: move the pinned pools of cand[0..n) to the front, the
 * others keeping their order; returns how many there are. */
static size_t pinned_first(const ph_compact_plan *plan, ph_cand *cand,
                           size_t n) {
  if (plan->npinned == 0)
    return 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (is_pinned(plan, cand[i].pool)) {
      ph_cand t = cand[i];
      memmove(cand + k + 1, cand + k, (i - k) * sizeof *cand);
      cand[k++] = t;
    }
  return k;
}

/* compact.pin.holes: move the pools with holes of cand[a..n) to the end,
 * the others keeping their order; returns how many there are. */
static size_t holed_last(const struct ph_heap *h, ph_cand *cand, size_t a,
                         size_t n) {
  size_t k = 0;
  for (size_t i = n; i-- > a;)
    if (ph_pool_holes_any(h, cand[i].pool->chunk, cand[i].pool->unit,
                          cand[i].cls)) {
      ph_cand t = cand[i];
      memmove(cand + i, cand + i + 1, (n - k - 1 - i) * sizeof *cand);
      cand[n - 1 - k++] = t;
    }
  return k;
}

/* compact.pin.holes: may pinned pool p give its unpinned blocks and get
 * holes?  Only when memory is released, in a chunk of normal pages (no huge
 * page is split), outside the ranges plan, with the pinned blocks known. */
static int partial_ok(const struct ph_heap *h, const ph_compact_plan *plan,
                      const ph_pool *p) {
  /* heap.pool.holes: never in a medium pool (holes are per unit) */
  return p->cls < h->nsmall && plan->pinned_blocks &&
         h->cfg.release != PH_RELEASE_KEEP && !plan->ranges.keep &&
         p->chunk->huge == PH_OS_HUGE_NONE;
}

/* The granules of pinned pool p that hold none of its pinned blocks.
 * Granule 0 is one of them when no pinned block touches it: phase 5 then
 * moves the header and live bitmap out of line (heap.pool.ool). */
static uint64_t unpinned_granules(const struct ph_heap *h,
                                  const ph_compact_plan *plan, ph_pool *p) {
  size_t sb = (size_t)h->class_wsize[p->cls] * 8;
  /* a header longer than granule 0 (never with pool_size / 64 granules:
   * the bitmap is at most pool_size / 128 bytes) keeps the rest */
  uint64_t keep =
      (((uint64_t)2 << ((p->hdr - 1) >> h->hole_shift)) - 1) & ~(uint64_t)1;
  ph_value lo = (ph_value)ph_pool_base(h, p), hi = lo + h->pool_size;
  size_t a = 0, b = plan->npinned_blocks; /* the first block >= lo */
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (plan->pinned_blocks[mid] < lo)
      a = mid + 1;
    else
      b = mid;
  }
  ph_value slots = lo + p->hdr;
  for (; a < plan->npinned_blocks && plan->pinned_blocks[a] < hi; a++)
    keep |= ph_slot_granules(h, p->cls,
                             (uint32_t)((plan->pinned_blocks[a] - slots) / sb));
  size_t ng = h->pool_size >> h->hole_shift;
  uint64_t all = ng >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << ng) - 1;
  return all & ~keep;
}

/* compact.pin.holes: the slots of sp->pool touching sp->holes into sp->t,
 * its live blocks among them into sp->m, and t set in the live bitmap
 * while the plan runs, so that no block is moved there; room and mv. */
static void spec_block(struct ph_heap *h, ph_cspec *sp) {
  ph_pool *p = sp->pool;
  uint32_t ns = h->class_nslots[p->cls], nw = (ns + 63) / 64, used = 0;
  uint64_t *bits = ph_pool_bits(p);
  if (h->class_units[p->cls] == 1) {
    ph_pool_hole_slots(h, p->cls, sp->holes, sp->t);
  } else { /* a medium pool's holes are in the masks of its units */
    memset(sp->t, 0, nw * sizeof *sp->t);
    for (uint32_t i = 0; i < ns && sp->holes; i++)
      if (ph_pool_slot_holed(h, p, i))
        sp->t[i / 64] |= (uint64_t)1 << (i % 64);
  }
  for (uint32_t i = sp->cut; sp->cut && i < ns; i++) /* compact.pack */
    sp->t[i / 64] |= (uint64_t)1 << (i % 64);
  sp->mv = 0;
  for (uint32_t w = 0; w < nw; w++) {
    sp->m[w] = bits[w] & sp->t[w];
    sp->mv += (uint32_t)__builtin_popcountll(sp->m[w]);
    bits[w] |= sp->t[w];
    used += (uint32_t)__builtin_popcountll(bits[w]);
  }
  sp->room = ns - used;
}

/* Undo spec_block: the live bitmap as the sweep left it. */
static void spec_unblock(struct ph_heap *h, ph_cspec *sp) {
  uint64_t *bits = ph_pool_bits(sp->pool);
  uint32_t nw = (h->class_nslots[sp->pool->cls] + 63) / 64;
  for (uint32_t w = 0; w < nw; w++)
    bits[w] = (bits[w] & ~sp->t[w]) | sp->m[w];
}

/* The special record of position i of a group: the pinned pools first,
 * then the ones with holes; NULL for the others (the records compact.pack
 * makes for kept pools without holes follow them, and plan_group finds
 * those in order). */
static inline ph_cspec *spec_at(ph_cspec *sp, size_t i, size_t np, size_t n,
                                size_t nh) {
  if (!sp)
    return NULL;
  if (i < np)
    return &sp[i];
  return i >= n - nh ? &sp[np + i - (n - nh)] : NULL;
}

#define PH_MAP_MAX_UNITS ((size_t)1 << 27)

/* Can the map of compact.update.map cover the chunks' span?  (Else the
 * update reads the pool headers' flags.) */
static int map_fits(const struct ph_heap *h) {
  if (h->nchunks == 0)
    return 0;
  const ph_chunk *last = h->chunks[h->nchunks - 1];
  return (((uintptr_t)last->base + last->size -
           (uintptr_t)h->chunks[0]->base) >>
          h->pool_shift) <= PH_MAP_MAX_UNITS;
}

/* compact.holes.free: does this plan give the kept pools' free granules
 * back?  When the client's pools may have holes, memory is released and
 * there is no ranges plan. */
static int holes_free_on(const struct ph_heap *h, const ph_compact_plan *plan) {
  return plan->holes && h->cfg.release != PH_RELEASE_KEEP && !plan->ranges.keep;
}

/* compact.pack: may the plan pack the last kept pool of its groups?  When
 * the client's pools may have holes (compact.holes.free gives the packed
 * tail back), memory is released, there is no ranges plan and the map of
 * compact.update.map will cover the heap (a packed pool's blocks are
 * forwarded only past its cut: no header flag can say that).  Derived
 * once per compaction, by the leader at the end of phase 1 (plan->pack). */
static int pack_on(const struct ph_heap *h, const ph_compact_plan *plan) {
  return holes_free_on(h, plan) && map_fits(h);
}

/* compact.pack: how many granules past the header's (pool-relative: a
 * medium pool's units are contiguous) hold a slot of `occ` or one of the
 * first `extra` slots set in neither `occ` nor `blocked`, among the slots
 * below `cut`.  No such slot touches a hole (those are in occ's complement
 * and in blocked). */
static uint64_t granules_used(const struct ph_heap *h, unsigned cls,
                              const uint64_t *occ, const uint64_t *blocked,
                              uint32_t cut, uint64_t extra) {
  size_t sb = (size_t)h->class_wsize[cls] * 8, hdr = h->class_hdr[cls];
  uint64_t n = 0, next = ((hdr - 1) >> h->hole_shift) + 1; /* first uncounted */
  for (uint32_t i = 0; i < cut; i++) {
    uint64_t bit = (uint64_t)1 << (i % 64);
    if (!(occ[i / 64] & bit)) {
      if (extra == 0 || (blocked && (blocked[i / 64] & bit)))
        continue;
      extra--;
    }
    size_t a = hdr + (size_t)i * sb;
    uint64_t g0 = a >> h->hole_shift, g1 = (a + sb - 1) >> h->hole_shift;
    if (g0 < next)
      g0 = next;
    if (g1 >= g0) {
      n += g1 - g0 + 1;
      next = g1 + 1;
    }
  }
  return n;
}

/* compact.pack (phase 2, in plan_group, once k is known): the last kept
 * pool p of a group (nlive live blocks; r blocks of the sources will
 * arrive; x its special record if it has holes already, else `fresh`, a
 * blank record whose m serves as scratch) is packed when that leaves at
 * least one granule fewer holding a block: its slots from the least cut
 * that leaves room for nlive + r blocks below it (outside its holes) are
 * blocked like a partial pool's holes (compact.pin.holes), its live blocks
 * there move into its free slots below the cut, so that every slot below
 * the cut holds a block at the end (a second compaction finds nothing to
 * move), and phase 5 frees
 * the slots past the cut, whose granules compact.holes.free then gives
 * back.  Returns the record (x or fresh) if so, NULL if p stays as
 * planned.  Reads p's live bitmap (its header page) only; one pool a
 * group. */
/* compact.pack: new records a group (plan_class's scratch bound). */
#define PH_PACK_FRESH 8

static ph_cspec *pack_last(struct ph_heap *h, ph_cspec *x, ph_cspec *fresh,
                           ph_pool *p, uint32_t nlive, uint64_t r) {
  if (p->chunk->huge != PH_OS_HUGE_NONE)
    return NULL; /* no huge page is split */
  unsigned cls = p->cls;
  uint32_t ns = h->class_nslots[cls], nw = (ns + 63) / 64;
  /* a pool with holes is a special record: the slots touching them are
   * x->t, set in its live bitmap (spec_block); none of them is live */
  PH_ASSERT(!ph_pool_holes_any(h, p->chunk, p->unit, cls) == !x);
  const uint64_t *bits = ph_pool_bits(p), *hs = x ? x->t : NULL;
  uint64_t *live = fresh->m; /* scratch until p is packed */
  for (uint32_t w = 0; w < nw; w++)
    live[w] = bits[w] & ~(hs ? hs[w] : 0);
  /* the least cut: the slots below it, outside the holes, hold nlive + r */
  uint64_t want = (uint64_t)nlive + r, avail = 0;
  uint32_t cut = 0;
  while (cut < ns && avail < want) {
    avail += !(hs && (hs[cut / 64] >> (cut % 64) & 1));
    cut++;
  }
  if (avail < want)
    return NULL;
  uint32_t mv = 0;
  for (uint32_t i = cut; i < ns; i++)
    mv += (uint32_t)(live[i / 64] >> (i % 64) & 1);
  if (mv == 0)
    return NULL; /* nothing past the cut: compact.holes.free does it */
  /* granules holding a block at the end: as planned (its live blocks,
   * then the r arrivals in its lowest free slots) and packed (the live
   * ones below the cut, then r plus the moved ones) */
  if (granules_used(h, cls, live, hs, cut, r + mv) >=
      granules_used(h, cls, live, hs, ns, r))
    return NULL;
  if (x) {
    spec_unblock(h, x);
  } else {
    x = fresh;
    *x = (ph_cspec){.pool = p, .t = fresh->t, .m = fresh->m};
  }
  x->cut = cut;
  spec_block(h, x);
  PH_ASSERT(x->mv == mv && x->room >= r + mv);
  return x;
}

/* Plan one group (all candidates of a class, or one owner's): keep the
 * first k of cand[0..n), evacuate the rest, emit destination units.  Only
 * the records are read (but for the special pools of compact.pin.holes).
 * compact.pin: the pinned pools come first and are always kept; then the
 * others in their order, those with holes last.  Each kept pool has room
 * (nslots - nlive, or a special pool's free slots outside its holes); the
 * blocks to move are those of the evacuated pools and the unpinned blocks
 * of partial pools in their future holes.  k is the least count of kept
 * pools whose room holds them: with no pins nor holes, ceil(L / C), the
 * densest, so the plan is minimal; the pinned pools' rooms are filled
 * first.  If even keeping every pool does not give room, the least dense
 * partial pools give none (each is kept whole) until there is. */
static void plan_group(struct ph_heap *h, ph_compact_plan *plan, ph_cclass *cc,
                       ph_cand *cand, size_t n, uint32_t nslots) {
  size_t np = pinned_first(plan, cand, n);
  size_t nh = cc->spec && h->holed_pools ? holed_last(h, cand, np, n) : 0;
  ph_cspec *sp = cc->spec ? cc->spec + cc->nspec : NULL;
  uint32_t nw = (nslots + 63) / 64;
#define SPEC(i) spec_at(sp, i, np, n, nh)
  if (sp) {
    for (size_t i = 0; i < n; i++) {
      ph_cspec *x = SPEC(i);
      if (!x)
        continue;
      size_t si = (size_t)(x - cc->spec);
      *x = (ph_cspec){.pool = cand[i].pool,
                      .t = cc->specbits + 2 * si * nw,
                      .m = cc->specbits + (2 * si + 1) * nw,
                      .pinned = i < np};
      x->holes =
          ph_pool_holes_any(h, x->pool->chunk, x->pool->unit, x->pool->cls);
      if (i < np && partial_ok(h, plan, x->pool)) {
        x->holes |= unpinned_granules(h, plan, x->pool);
        x->partial = 1;
      }
      spec_block(h, x);
    }
    cc->nspec += np + nh;
  }
#define ROOM(i) (SPEC(i) ? SPEC(i)->room : nslots - cand[i].nlive)
  /* need: the blocks to move with k pools kept; cap: the room of those */
  uint64_t need, cap;
  size_t k;
again:
  need = 0;
  cap = 0;
  for (size_t i = 0; i < n; i++)
    need += i < np ? (SPEC(i) ? SPEC(i)->mv : 0) : cand[i].nlive;
  for (size_t i = 0; i < np; i++)
    cap += ROOM(i);
  for (k = np; k < n && cap < need; k++) {
    cap += ROOM(k);
    need -= cand[k].nlive;
  }
  /* no room for the partial pools' blocks even with every pool kept: the
   * least dense partial pools give none (each is kept whole) until there
   * is */
  for (size_t i = np; i-- > 0 && cap < need;) {
    ph_cspec *x = SPEC(i);
    if (!x || !x->partial)
      continue;
    need -= x->mv;
    cap -= x->room;
    spec_unblock(h, x);
    x->holes = ph_pool_holes(x->pool); /* a partial pool: one unit */
    x->partial = 0;
    spec_block(h, x);
    need += x->mv;
    cap += x->room;
    if (cap >= need)
      goto again; /* the least k for these */
  }
  PH_ASSERT(cap >= need);
  /* compact.pack: the kept pools are filled in order; the first one the
   * fill leaves with room (pf) gets the rest (rf), the ones after it get
   * nothing.  Each of those (not pinned) may pack its blocks with what it
   * gets, so that every kept pool is full below its cut or holes at the
   * end and a second compaction finds nothing to pack.  A pool with holes
   * has its record already; the others get new ones after the group's, up
   * to PH_PACK_FRESH (the fill leaves few kept pools after it: beyond
   * those, a pool stays as planned and a later compaction may pack it). */
  ph_cspec *fresh0 = sp ? sp + np + nh : NULL;
  size_t nf = 0; /* new records */
  if (sp && k > np && plan->pack) {
    size_t pf = k;
    uint64_t rem = need, rf = 0;
    for (size_t j = 0; j < k; j++) {
      if (rem < ROOM(j)) {
        pf = j;
        rf = rem;
        break;
      }
      rem -= ROOM(j);
    }
    for (size_t j = pf > np ? pf : np; j < k; j++) {
      ph_cspec *x = SPEC(j), *fresh = fresh0 + nf;
      if (!x && nf == PH_PACK_FRESH)
        continue;
      size_t fi = (size_t)(fresh - cc->spec);
      fresh->t = cc->specbits + 2 * fi * nw;
      fresh->m = cc->specbits + (2 * fi + 1) * nw;
      ph_cspec *y =
          pack_last(h, x, fresh, cand[j].pool, cand[j].nlive, j == pf ? rf : 0);
      if (y && !x)
        nf++;
    }
  }
  size_t e0 = cc->nevac;
  for (size_t i = 0; i < k; i++)
    cc->keep[cc->nkeep++] = cand[i].pool;
  for (size_t i = 0; i < np; i++) { /* the partial pools give first */
    ph_cspec *x = SPEC(i);
    if (x && x->mv > 0) {
      cc->elive[cc->nevac] = x->mv;
      cc->ebits[cc->nevac] = x->m;
      cc->evac[cc->nevac++] = x->pool;
    }
  }
  for (size_t i = k; i < n; i++) {
    ph_cspec *x = SPEC(i);
    if (x) { /* a pool with holes, evacuated whole */
      spec_unblock(h, x);
      x->evacuated = 1;
    }
    if (cc->ebits)
      cc->ebits[cc->nevac] = NULL;
    cc->elive[cc->nevac] = cand[i].nlive;
    cc->evac[cc->nevac++] = cand[i].pool;
  }
  /* compact.pack: each packed pool's blocks past its cut give last, to
   * itself only (pe0: the first of those sources) */
  size_t pe0 = cc->nevac;
  for (size_t j = np, q = 0; j < k; j++) {
    ph_cspec *x = SPEC(j);
    if (!x && q < nf && fresh0[q].pool == cand[j].pool)
      x = &fresh0[q++];
    if (x && x->cut) {
      cc->elive[cc->nevac] = x->mv;
      cc->ebits[cc->nevac] = x->m;
      cc->evac[cc->nevac++] = x->pool;
    }
  }
  /* destination units over the group's sources */
  size_t si = e0, own = pe0;
  uint32_t skip = 0;
  uint32_t rem = si < cc->nevac ? cc->elive[si] : 0;
  for (size_t j = 0, q = 0; j < k && si < cc->nevac; j++) {
    ph_cspec *x = SPEC(j);
    if (!x && q < nf && fresh0[q].pool == cand[j].pool)
      x = &fresh0[q++];
    /* compact.pack: a packed pool takes what the fill leaves it, then
     * its own blocks; no other pool takes those (it would leave free
     * slots below the cut, which the next compaction would pack again) */
    size_t lim = pe0;
    if (x && x->cut)
      lim = ++own;
    uint32_t room = x ? x->room : nslots - cand[j].nlive, take = 0;
    ph_evac_unit *u = &cc->units[cc->nunits];
    u->dst = cand[j].pool;
    u->src = cc->evac;
    u->src_live = cc->elive;
    u->src_bits = cc->ebits;
    u->src_first = (uint32_t)si;
    u->src_skip = skip;
    u->owner = cand[j].owner;
    while (room > 0 && si < lim) {
      uint32_t t = room < rem ? room : rem;
      take += t;
      room -= t;
      rem -= t;
      skip += t;
      if (rem == 0) {
        si++;
        skip = 0;
        rem = si < cc->nevac ? cc->elive[si] : 0;
      }
    }
    if (take > 0) {
      u->count = take;
      cc->nunits++;
    }
  }
  cc->nspec += nf;
#undef ROOM
#undef SPEC
  PH_ASSERT(si == cc->nevac); /* every source block has a destination */
}

static void plan_class(struct ph_heap *h, ph_compact_plan *plan, unsigned cls) {
  ph_cclass *cc = &plan->cls[cls];
  /* compact.choose.ranges: a medium pool spans several units, maybe two
   * ranges; with huge pages the medium classes keep every pool */
  if (plan->ranges.keep && cls >= h->nsmall)
    return;
  /* the class's records (bucketed by the leader, by_class_stw_single):
   * this participant's to reorder */
  size_t n = plan->cfirst[cls + 1] - plan->cfirst[cls];
  if (n == 0)
    return;
  ph_cand *cand = plan->cands + plan->cfirst[cls];
  cc->keep = ph_os_scratch_alloc(n * sizeof *cc->keep);
  cc->evac = ph_os_scratch_alloc(n * sizeof *cc->evac);
  cc->elive = ph_os_scratch_alloc(n * sizeof *cc->elive);
  cc->units = ph_os_scratch_alloc(n * sizeof *cc->units);
  if (!cc->keep || !cc->evac || !cc->elive || !cc->units) {
    ph_os_scratch_free(cc->keep);
    ph_os_scratch_free(cc->evac);
    ph_os_scratch_free(cc->elive);
    ph_os_scratch_free(cc->units);
    memset(cc, 0, sizeof *cc);
    atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
    return;
  }
  uint32_t nslots = h->class_nslots[cls];
  /* the groups of the plan: one, or one per owner (PER_DOMAIN) */
  size_t ngroups = 1;
  if (plan->ranges.keep) {
    /* sorted below, once the ranges are known */
  } else if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    qsort(cand, n, sizeof *cand, by_density);
  } else {
    qsort(cand, n, sizeof *cand, by_owner_address);
    for (size_t j = 1; j < n; j++)
      ngroups += cand[j].owner != cand[j - 1].owner;
  }
  int pack = plan->pack;
  if ((plan->npinned && plan->pinned_blocks) || h->holed_pools || pack) {
    /* compact.pin.holes: room for the special pools' records, and with
     * compact.pack PH_PACK_FRESH a group for pools without one, plus
     * pack_last's scratch */
    size_t ns = pack ? ngroups * (PH_PACK_FRESH + 1) : 0;
    for (size_t j = 0; j < n; j++)
      ns += is_pinned(plan, cand[j].pool) ||
            (h->holed_pools && ph_pool_holes_any(h, cand[j].pool->chunk,
                                                 cand[j].pool->unit, cls));
    if (ns) {
      size_t nw = (nslots + 63) / 64;
      cc->spec = ph_os_scratch_zalloc(ns, sizeof *cc->spec);
      cc->specbits = ph_os_scratch_alloc(ns * 2 * nw * sizeof *cc->specbits);
      cc->ebits = ph_os_scratch_alloc(n * sizeof *cc->ebits);
      if (!cc->spec || !cc->specbits || !cc->ebits) {
        ph_os_scratch_free(cc->spec);
        ph_os_scratch_free(cc->specbits);
        ph_os_scratch_free(cc->ebits);
        cc->spec = NULL;
        cc->specbits = NULL;
        cc->ebits = NULL;
        atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
        return; /* nothing moves: the other arrays are freed with the plan */
      }
    }
  }
  if (plan->ranges.keep) {
    /* compact.choose.ranges: the densest of the pools in ranges that
     * stay in use (there are at least k of them), then the rest */
    size_t nin = 0;
    for (size_t j = 0; j < n; j++)
      if (plan->ranges.keep[ph_range_of(h, &plan->ranges,
                                        ph_pool_addr(h, cand[j].pool))]) {
        ph_cand t = cand[nin];
        cand[nin++] = cand[j];
        cand[j] = t;
      }
#if PH_DEBUG
    uint64_t live = 0;
    for (size_t j = 0; j < n; j++)
      live += cand[j].nlive;
    PH_ASSERT(nin >= n || nin >= (live + nslots - 1) / nslots);
#endif
    qsort(cand, nin, sizeof *cand, by_density);
    qsort(cand + nin, n - nin, sizeof *cand, by_density);
    plan_group(h, plan, cc, cand, n, nslots);
  } else if (h->cfg.compact_scope == PH_COMPACT_GLOBAL) {
    plan_group(h, plan, cc, cand, n, nslots);
  } else {
    size_t a = 0;
    while (a < n) {
      size_t b = a;
      while (b < n && cand[b].owner == cand[a].owner)
        b++;
      plan_group(h, plan, cc, cand + a, b - a, nslots);
      a = b;
    }
  }
}

static void choose_stw(struct ph_heap *h, ph_compact_plan *plan) {
  ph_section *s = &h->sec;
  for (;;) {
    size_t c =
        atomic_fetch_add_explicit(&s->claim_choose, 1, memory_order_relaxed);
    if (c >= h->nclasses)
      break;
    plan_class(h, plan, (unsigned)c);
  }
}

/* The slot of map unit u in the table of partial and packed pools'
 * units (open addressing, linear probing; nparts is a power of two). */
static inline size_t part_slot(const ph_compact_plan *plan, size_t u) {
  return (size_t)(((uint32_t)u * 0x9e3779b1u) >> 16) & (plan->nparts - 1);
}

static void part_put(ph_compact_plan *plan, ph_cpart e) {
  size_t i = part_slot(plan, e.unit);
  while (plan->parts[i].unit != UINT32_MAX)
    i = (i + 1) & (plan->nparts - 1);
  plan->parts[i] = e;
}

/* compact.update.map over the chunks' span; with rule->interior also the
 * class of each evacuated unit (map_cls) and the division by slot bytes as
 * a multiplication.  Leaves plan->map NULL if it cannot be had. */
static void build_map_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  plan->map = NULL;
  if (h->nchunks == 0)
    return;
  uintptr_t lo = (uintptr_t)h->chunks[0]->base;
  ph_chunk *last = h->chunks[h->nchunks - 1];
  uintptr_t hi = (uintptr_t)last->base + last->size;
  size_t n = (hi - lo) >> h->pool_shift;
  if (!map_fits(h))
    return; /* chunks spread too far apart: headers are read instead */
  /* the map, then the pmap (compact.pin.holes, compact.pack): one
   * allocation, so that the pmap is there whenever the map is and the
   * update does not test for it */
  size_t nw = (n + 63) / 64;
  uint64_t *map = ph_os_scratch_zalloc(2 * nw, sizeof(uint64_t));
  if (!map)
    return;
  if (plan->rule->interior) {
    plan->map_cls = ph_os_scratch_alloc(n);
    if (!plan->map_cls) {
      ph_os_scratch_free(map);
      return;
    }
    for (unsigned c = 0; c < h->nclasses; c++) {
      uint64_t sb = (uint64_t)h->class_wsize[c] * 8;
      plan->slot_bytes[c] = (uint32_t)sb;
      /* exact: offsets < 2^23, slots <= 2^18 bytes (PH_RECIP_SHIFT) */
      plan->recip[c] = (((uint64_t)1 << PH_RECIP_SHIFT) + sb - 1) / sb;
    }
  }
  plan->nsmall = h->nsmall;
  if (plan->map_cls)
    for (unsigned c = h->nsmall; c < h->nclasses && !plan->map_back; c++)
      if (plan->cls[c].nevac) {
        plan->map_back = ph_os_scratch_alloc(n * sizeof *plan->map_back);
        if (!plan->map_back) {
          ph_os_scratch_free(map);
          ph_os_scratch_free(plan->map_cls);
          plan->map_cls = NULL;
          return;
        }
      }
  plan->map_lo = lo;
  plan->map_units = n;
  plan->pmap = map + nw;
  /* every unit of an evacuated pool (a medium pool's tails too) */
  for (unsigned c = 0; c < h->nclasses; c++)
    for (size_t i = 0; i < plan->cls[c].nevac; i++) {
      size_t u0 = ((uintptr_t)ph_pool_addr(h, plan->cls[c].evac[i]) - lo) >>
                  h->pool_shift;
      for (size_t u = u0; u < u0 + h->class_units[c]; u++) {
        map[u / 64] |= (uint64_t)1 << (u % 64);
        if (plan->map_cls)
          plan->map_cls[u] = (uint8_t)c;
        if (plan->map_back)
          plan->map_back[u] = (uint16_t)(u - u0);
      }
    }
  /* compact.pin.holes, compact.pack: the units of the pools that give
   * only some of their blocks, in a small hash table (a per-unit array
   * over the map's span would be calloc'd, 8 bytes a unit, at every
   * compaction that packs) and the pmap */
  size_t np = 0;
  for (unsigned c = 0; c < h->nclasses; c++)
    for (size_t i = 0; i < plan->cls[c].nspec; i++) {
      const ph_cspec *x = &plan->cls[c].spec[i];
      if ((x->partial || x->cut) && x->mv)
        np += x->cut ? 2 : 1; /* compact.pack: at most two units each */
    }
  if (np) {
    /* a table at most half full */
    size_t cap = 8;
    while (cap < 2 * np)
      cap *= 2;
    plan->parts = ph_os_scratch_alloc(cap * sizeof *plan->parts);
    plan->nparts = cap;
    for (size_t i = 0; plan->parts && i < cap; i++)
      plan->parts[i].unit = UINT32_MAX;
    if (!plan->parts) {
      plan->nparts = 0;
      ph_os_scratch_free(map);
      ph_os_scratch_free(plan->map_cls);
      plan->map_cls = NULL;
      ph_os_scratch_free(plan->map_back);
      plan->map_back = NULL;
      plan->pmap = NULL;
      return;
    }
  }
  for (unsigned c = 0; c < h->nclasses; c++)
    for (size_t i = 0; i < plan->cls[c].nspec; i++) {
      const ph_cspec *x = &plan->cls[c].spec[i];
      if ((!x->partial && !x->cut) || x->mv == 0)
        continue;
      size_t u = ((uintptr_t)ph_pool_base(h, x->pool) - lo) >> h->pool_shift;
      if (x->cut) {
        /* compact.pack: the cut's address for its first unit (the update
         * walks the pool from there: only below the cut) and the unit
         * holding the cut; a further unit wholly below the cut holds no
         * block that moved (not evacuated, then), one wholly past it only
         * blocks that moved (evacuated, as it is) */
        uintptr_t at = (uintptr_t)ph_pool_slots(h, x->pool) +
                       (uintptr_t)x->cut * h->class_wsize[c] * 8;
        for (size_t k = u; k < u + h->class_units[c]; k++) {
          uintptr_t ua = lo + (k << h->pool_shift);
          if (k > u && ua + h->pool_size <= at) {
            map[k / 64] &= ~((uint64_t)1 << (k % 64));
          } else if (k == u || ua < at) {
            part_put(plan, (ph_cpart){at, (uint32_t)k, (uint8_t)(c | PH_HCUT)});
            plan->pmap[k / 64] |= (uint64_t)1 << (k % 64);
          }
        }
        continue;
      }
      part_put(plan, (ph_cpart){x->holes, (uint32_t)u, (uint8_t)c});
      plan->pmap[u / 64] |= (uint64_t)1 << (u % 64);
    }
  /* relaxed: the barrier that opens phase 3 publishes it; relaxed because
   * ph_compact_forward reads it with a relaxed load */
  __atomic_store_n(&plan->map, map, __ATOMIC_RELAXED);
}

/* Leader, between phases 2 and 3: one array of units, the large slices,
 * the evacuation map (or, if it cannot be had, the `evacuated` flags in the
 * pool headers; with interior pointers nothing moves then), and the claim
 * counters of phases 3 and 4. */
static void gather_stw_single(struct ph_heap *h, ph_compact_plan *plan,
                              const ph_compact_part *part) {
  ph_section *s = &h->sec;
  /* phase 2 is over: the records by class are read no more (freed now,
   * as each class's copy was at the end of its plan before) */
  ph_os_scratch_free(plan->cands);
  plan->cands = NULL;
  size_t n = 0, nl = 0;
  for (unsigned c = 0; c < h->nclasses; c++)
    n += plan->cls[c].nunits;
  for (unsigned i = 0; i < plan->nrecs; i++)
    nl += plan->recs[i].nlarges;
  plan->units = n ? ph_os_scratch_alloc(n * sizeof *plan->units) : NULL;
  plan->larges = nl ? ph_os_scratch_alloc(nl * sizeof *plan->larges) : NULL;
  plan->large_first = ph_os_scratch_alloc((nl + 1) * sizeof *plan->large_first);
  if ((n && !plan->units) || (nl && !plan->larges) || !plan->large_first)
    atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
  if (!atomic_load_explicit(&plan->failed, memory_order_relaxed)) {
    build_map_stw_single(h, plan);
    /* no header fallback for them, nor for partial pools */
    int partial = 0;
    for (unsigned c = 0; c < h->nclasses; c++)
      for (size_t i = 0; i < plan->cls[c].nspec; i++)
        partial |= (plan->cls[c].spec[i].partial || plan->cls[c].spec[i].cut) &&
                   plan->cls[c].spec[i].mv;
    if (!plan->map && (plan->rule->interior || partial))
      atomic_store_explicit(&plan->failed, 1, memory_order_relaxed);
  }
  if (atomic_load_explicit(&plan->failed,
                           memory_order_relaxed)) { /* nothing moves */
    for (unsigned c = 0; c < h->nclasses; c++) {
      plan->cls[c].nevac = 0;
      plan->cls[c].nunits = 0;
    }
    plan->nunits = 0;
    plan->nlarges = plan->nslices = 0;
  } else {
    size_t k = 0;
    for (unsigned c = 0; c < h->nclasses; c++) {
      if (plan->cls[c].nunits)
        memcpy(plan->units + k, plan->cls[c].units,
               plan->cls[c].nunits * sizeof *plan->units);
      k += plan->cls[c].nunits;
    }
    plan->nunits = k;
    /* compact.update.rule: a large block of a callback tag is one work
     * item, one of a tag without values none */
    size_t i = 0, slices = 0;
    for (unsigned p = 0; p < plan->nrecs; p++)
      for (size_t j = 0; j < plan->recs[p].nlarges; j++) {
        ph_large *l = plan->recs[p].larges[j];
        ph_value hd = *(ph_value *)((char *)l + PH_LARGE_HDR);
        unsigned kind = plan->kind[ph_hd_tag(hd)];
        if (kind == PH_KIND_SKIP)
          continue;
        plan->larges[i] = l;
        plan->large_first[i] = slices;
        slices += kind == PH_KIND_CB ? 1
                                     : (ph_hd_wosize(hd) + PH_LARGE_SLICE - 1) /
                                           PH_LARGE_SLICE;
        i++;
      }
    plan->large_first[i] = slices;
    plan->nlarges = i;
    plan->nslices = slices;
    if (!plan->map) /* fall back to the flags in the headers */
      for (unsigned c = 0; c < h->nclasses; c++)
        for (size_t e = 0; e < plan->cls[c].nevac; e++)
          plan->cls[c].evac[e]->evacuated = 1;
  }
  atomic_store_explicit(&s->claim_evacuate, 0, memory_order_relaxed);
  if (part->roots_rewind)
    part->roots_rewind(part->arg);
  atomic_store_explicit(&s->claim_update_units, 0, memory_order_relaxed);
  atomic_store_explicit(&s->claim_update_large, 0, memory_order_relaxed);
  ph_units_index_stw_single(h);
}

/* Without a map (the managed collector only: x is field 0 of a block):
 * the evacuated flag of the block's pool header, found from the block's
 * header (heap.unit.lookup: a medium pool's through the chunk, and any
 * pool's so while a header is out of line, heap.pool.ool). */
static int __attribute__((noinline))
hdr_evacuated(const struct ph_heap *h, uintptr_t x) {
  if (!h->ool_pools && ph_wosize_small(h, ph_hd_wosize(*ph_hp(x))))
    return ph_unit_of(h, x)->evacuated;
  ph_unit_hdr *u = ph_block_unit(h, x);
  return u && u->evacuated;
}

static inline int bit_at(const uint64_t *bits, size_t u) {
  return (int)(bits[u / 64] >> (u % 64) & 1);
}

/* Was the unit holding address x evacuated?  One bit of the map
 * (compact.update.map), or the header flag when there is no map (then x
 * is field 0 of a block). */
static inline int unit_evacuated(const struct ph_heap *h,
                                 const ph_compact_plan *plan, uintptr_t x) {
  if (!plan->map)
    return hdr_evacuated(h, x);
  size_t u = (x - plan->map_lo) >> h->pool_shift;
  return u < plan->map_units && bit_at(plan->map, u);
}

/* ------------------------------------------------------------ phase 3 */

/* Index of the first set bit of bits at or after the one that has `skip`
 * set bits before it (a live bitmap, heap.pool.bitmap, or the blocks a
 * partial pool gives, compact.pin.holes). */
static uint32_t nth_live(const uint64_t *bits, uint32_t skip) {
  uint32_t wi = 0;
  for (;;) {
    uint64_t w = bits[wi];
    uint32_t n = (uint32_t)__builtin_popcountll(w);
    if (skip < n) {
      while (skip--)
        w &= w - 1;
      return wi * 64 + (uint32_t)__builtin_ctzll(w);
    }
    skip -= n;
    wi++;
  }
}

/* compact.evacuate.batch: a unit is copied in batches.  The addresses of
 * a batch's sources (live bits of the evacuated pools) and destinations
 * (clear bits of the kept pool) come from the bitmaps, not from a free
 * list whose next link is known only when the previous slot has arrived,
 * so the loads and stores of a batch are all in flight at once; sources
 * and destinations PH_EV_AHEAD blocks ahead are prefetched. */
#define PH_EV_BATCH 128
#define PH_EV_AHEAD 8

typedef struct bit_iter {
  const uint64_t *bits;
  uint64_t word, flip; /* flip = ~0: iterate the clear bits */
  uint32_t wi;
} bit_iter;

static inline uint32_t bit_next(bit_iter *it) {
  while (it->word == 0)
    it->word = it->bits[++it->wi] ^ it->flip;
  uint32_t i = it->wi * 64 + (uint32_t)__builtin_ctzll(it->word);
  it->word &= it->word - 1;
  return i;
}

/* The free list of p from its clear live bits, lowest slot first; slots
 * touching a hole of p (`holes` nonzero: p has some) are not free
 * (heap.pool.holes).  Returns how many of those there are (no slot in a
 * hole is live: they are all among the clear bits), p->nhole. */
static uint32_t relink_free(struct ph_heap *h, ph_pool *p, uint64_t holes) {
  uint32_t wsize = h->class_wsize[p->cls], nhole = 0;
  ph_value *base = (ph_value *)ph_pool_slots(h, p);
  const uint64_t *bits = ph_pool_bits(p);
  ph_value next = 0;
  for (uint32_t wi = (p->nslots + 63) / 64; wi-- > 0;) {
    uint64_t free = ~bits[wi];
    if (wi == p->nslots / 64)
      free &= ((uint64_t)1 << (p->nslots % 64)) - 1;
    while (free) {
      uint32_t si = wi * 64 + 63 - (uint32_t)__builtin_clzll(free);
      free &= ~((uint64_t)1 << (si % 64));
      if (holes && ph_pool_slot_holed(h, p, si)) {
        nhole++;
        continue;
      }
      ph_value *slot = base + (size_t)si * wsize;
      PH_ASSERT(slot[0] == 0);
      slot[1] = next;
      next = (ph_value)(slot + 1);
    }
  }
  p->free = next;
  return nhole;
}

/* compact.phase.evacuate: move u->count live blocks, in order, from the
 * sources into u->dst; *blocks and *bytes count them. */
static void evacuate_unit(struct ph_heap *h, const ph_evac_unit *u,
                          uint64_t *blocks, uint64_t *moved) {
  ph_pool *dst = u->dst;
  uint32_t wsize = h->class_wsize[dst->cls];
  ph_value *dbase = (ph_value *)ph_pool_slots(h, dst);
  uint64_t *dbits = ph_pool_bits(dst);
  bit_iter di = {.bits = dbits, .word = ~dbits[0], .flip = ~(uint64_t)0};
  uint32_t i = u->src_first, left = u->count;
  ph_pool *src = u->src[i];
  ph_value *sbase = (ph_value *)ph_pool_slots(h, src);
  /* the blocks a source gives: its live ones, or a partial pool's */
#define SRC_BITS(i)                                                            \
  (u->src_bits && u->src_bits[i] ? u->src_bits[i] : ph_pool_bits(u->src[i]))
  const uint64_t *sb0 = SRC_BITS(i);
  uint32_t k = nth_live(sb0, u->src_skip);
  bit_iter si = {.bits = sb0,
                 .word = sb0[k / 64] & (~(uint64_t)0 << (k % 64)),
                 .wi = k / 64};
  uint32_t src_left = u->src_live[i] - u->src_skip; /* blocks not yet ours */
  ph_value *from[PH_EV_BATCH], *to[PH_EV_BATCH];
  uint64_t bytes = 0;
  while (left > 0) {
    uint32_t n = left < PH_EV_BATCH ? left : PH_EV_BATCH;
    for (uint32_t j = 0; j < n; j++) {
      if (src_left == 0) { /* next source pool */
        src = u->src[++i];
        sbase = (ph_value *)ph_pool_slots(h, src);
        si.bits = SRC_BITS(i);
        si.wi = 0;
        si.word = si.bits[0];
        src_left = u->src_live[i];
      }
      from[j] = sbase + (size_t)bit_next(&si) * wsize;
      src_left--;
      uint32_t d = bit_next(&di);
      PH_ASSERT(d < dst->nslots);
      dbits[d / 64] |= (uint64_t)1 << (d % 64);
      to[j] = dbase + (size_t)d * wsize;
    }
    for (uint32_t j = 0; j < n && j < PH_EV_AHEAD; j++) {
      __builtin_prefetch(from[j]);
      __builtin_prefetch(to[j], 1);
    }
    for (uint32_t j = 0; j < n; j++) {
      if (j + PH_EV_AHEAD < n) {
        __builtin_prefetch(from[j + PH_EV_AHEAD]);
        __builtin_prefetch(to[j + PH_EV_AHEAD], 1);
      }
      ph_value *slot = from[j], *nv = to[j];
      ph_value hd = slot[0];
      PH_ASSERT(hd != 0); /* allocated; its color is the client's */
      PH_ASSERT(nv[0] == 0);
      size_t wo = ph_hd_wosize(hd);
      nv[0] = hd;
      for (size_t f = 1; f <= wo; f++)
        nv[f] = slot[f];
      /* the new address in field 0; the old header stays: a moved block
       * is known from the map (compact.update.map), not from a colour */
      slot[1] = (ph_value)(nv + 1);
      bytes += (wo + 1) * 8;
    }
    left -= n;
  }
  *blocks += u->count;
  *moved += bytes;
  dst->nfree -= u->count;
  dst->nlive += u->count;
  dst->live_words += (uint32_t)(bytes / 8);
  relink_free(h, dst, 0); /* a special pool's holes are set bits now */
#undef SRC_BITS
}

/* The evacuation units still unclaimed, one at a time (GLOBAL scope). */
static void evacuate_claims(struct ph_heap *h, ph_compact_plan *plan,
                            uint64_t *blocks, uint64_t *bytes) {
  ph_section *s = &h->sec;
  for (;;) {
    size_t k =
        atomic_fetch_add_explicit(&s->claim_evacuate, 1, memory_order_relaxed);
    if (k >= plan->nunits)
      break;
    evacuate_unit(h, &plan->units[k], blocks, bytes);
  }
}

static int evacuate_global(const struct ph_heap *h,
                           const ph_compact_part *part) {
  return h->cfg.compact_scope == PH_COMPACT_GLOBAL || !part->evacuates_slot;
}

static void evacuate_stw(struct ph_heap *h, const ph_compact_part *part,
                         ph_compact_plan *plan, uint64_t *blocks,
                         uint64_t *bytes) {
  if (evacuate_global(h, part)) {
    evacuate_claims(h, plan, blocks, bytes);
    return;
  }
  /* PER_DOMAIN: a domain evacuates its own pools; the caller's rule says
   * who runs those whose owner does not take part. */
  for (size_t k = 0; k < plan->nunits; k++) {
    ph_evac_unit *u = &plan->units[k];
    if (part->evacuates_slot(part->arg, u->owner))
      evacuate_unit(h, u, blocks, bytes);
  }
}

/* ------------------------------------------------------------ phase 4 */

/* compact.update.batch: a pointer needs forwarding iff its unit was
 * evacuated (unit_evacuated: O(1)), but in a partial or packed pool's unit
 * (pmap) where stays() says it did not move.  The forwarding address is
 * field 0 of
 * the old copy: a cache miss per moved target.  So
 * a slot to fix is queued in a ring with a prefetch of its target and fixed
 * PH_FWD_AHEAD slots later, when the load has arrived: many misses in
 * flight instead of one at a time.  The ring is emptied at the end of every
 * root item, for the global set before roots_lock is released
 * (roots.global.done): a root slot is never written after its item ends.
 * compact.update.once: the fix of a root slot re-reads it and forwards it
 * only if it still points into an evacuated unit (new addresses never do),
 * so a slot reported twice is rewritten once; root slots are read and
 * written with relaxed atomics, as two participants may hold the same one.
 * Fields of blocks are visited once, by the claimer of their unit or slice,
 * and keep the plain fix.  Slots handed to a client's callback (the
 * scan_block of compact.update.rule, roots_direct) are fixed at once.
 * The functions below take `interior` as a constant: each client's loop is
 * compiled for its own forwarding (compact.update.interior). */
#define PH_FWD_AHEAD 32 /* a power of two */
typedef struct fwd_batch {
  const struct ph_heap *h;
  const struct ph_compact_plan *plan;
  unsigned n; /* slots queued so far (mod 2^32) */
  ph_value *slot[PH_FWD_AHEAD];
} fwd_batch;

/* compact.update.interior: field 0 of the block of x, an address anywhere
 * inside a block of an evacuated pool: the slot from the offset (the
 * class's slot bytes, divided by a multiplication), plus one word.  A
 * medium pool's first unit is map_back units before x's. */
static inline ph_value fwd_base(const struct ph_heap *h,
                                const ph_compact_plan *plan, ph_value x) {
  size_t u = (x - plan->map_lo) >> h->pool_shift;
  unsigned c = plan->map_cls[u];
  ph_value slots = (x & h->pool_mask) + h->class_hdr[c]; /* heap.pool.hdr */
  if (c >= plan->nsmall)
    slots -= (ph_value)plan->map_back[u] << h->pool_shift;
  uint64_t k = ((uint64_t)(x - slots) * plan->recip[c]) >> PH_RECIP_SHIFT;
  PH_ASSERT(k == (x - slots) / plan->slot_bytes[c]);
  return slots + (ph_value)k * plan->slot_bytes[c] + 8;
}

/* The record of map unit u, one of a partial or packed pool's (its pmap
 * bit is set): a probe or two of their table. */
static const ph_cpart *part_of(const ph_compact_plan *plan, size_t u) {
  size_t i = part_slot(plan, u);
  while (plan->parts[i].unit != u) {
    PH_ASSERT(plan->parts[i].unit != UINT32_MAX);
    i = (i + 1) & (plan->nparts - 1);
  }
  return &plan->parts[i];
}

/* compact.pin.holes: does x lie in a block that stays in its partial pool
 * (a slot outside the pool's planned holes)?  compact.pack: below the
 * packed pool's cut?  x's unit is one of theirs (pmap). */
static int __attribute__((noinline))
stays(const struct ph_heap *h, const ph_compact_plan *plan, ph_value x) {
  const ph_cpart *e = part_of(plan, (x - plan->map_lo) >> h->pool_shift);
  uint64_t hm = e->mask;
  unsigned c = e->cls;
  if (c & PH_HCUT) /* compact.pack: the slots below the cut stay */
    return x < hm;
  size_t sb = (size_t)h->class_wsize[c] * 8;
  uint32_t i = (uint32_t)(((x & ~h->pool_mask) - h->class_hdr[c]) / sb);
  return (ph_slot_granules(h, c, i) & hm) == 0;
}

/* Given that x's map unit u was evacuated, did x's block move?  Yes
 * unless u is a partial or packed pool's (its pmap bit; the pmap is there
 * whenever the map is) and stays() says it did not. */
static inline int evac_moved(const struct ph_heap *h,
                             const ph_compact_plan *plan, const uint64_t *pmap,
                             ph_value x, size_t u) {
  return !bit_at(pmap, u) || !stays(h, plan, x);
}

/* Does x point to a block that moved?  (Roots and callbacks' slots.) */
static inline int unit_moved(const struct ph_heap *h,
                             const ph_compact_plan *plan, ph_value x) {
  if (!unit_evacuated(h, plan, x))
    return 0;
  return !plan->map || evac_moved(h, plan, plan->pmap, x,
                                  (x - plan->map_lo) >> h->pool_shift);
}

/* The new address of x, a block that moved. */
static inline __attribute__((always_inline)) ph_value
fwd_new(const struct ph_heap *h, const ph_compact_plan *plan, ph_value x,
        int interior) {
  if (!interior) {
    PH_ASSERT(*ph_hp(x) != 0); /* a moved block keeps its header */
    return *(const ph_value *)x;
  }
  ph_value b = fwd_base(h, plan, x);
  PH_ASSERT(*ph_hp(b) != 0);
  return *(const ph_value *)b + (x - b);
}

/* root: a root slot (compact.update.once); otherwise a field of a block,
 * which only the participant that claimed the block visits, once. */
static inline __attribute__((always_inline)) void
fwd_fix(const fwd_batch *b, ph_value *s, int root, int interior) {
  if (root) {
    ph_value x = __atomic_load_n(s, __ATOMIC_RELAXED);
    if (!unit_moved(b->h, b->plan, x))
      return; /* fixed already: the slot was reported twice */
    __atomic_store_n(s, fwd_new(b->h, b->plan, x, interior), __ATOMIC_RELAXED);
    return;
  }
  PH_ASSERT(unit_moved(b->h, b->plan, *s));
  *s = fwd_new(b->h, b->plan, *s, interior);
}

static inline __attribute__((always_inline)) void
fb_flush(fwd_batch *b, int root, int interior) {
  unsigned n = b->n < PH_FWD_AHEAD ? b->n : PH_FWD_AHEAD;
  for (unsigned i = b->n - n; i != b->n; i++)
    fwd_fix(b, b->slot[i & (PH_FWD_AHEAD - 1)], root, interior);
  b->n = 0;
}

/* The map of compact.update.map in locals: the field loops store through
 * ph_value pointers, which may alias the plan's words, so the plan's
 * fields would be loaded again for every field. */
typedef struct fwd_map {
  const struct ph_heap *h;
  const uint64_t *map, *pmap;
  uintptr_t lo;
  size_t units;
  unsigned shift;
} fwd_map;

static inline fwd_map fm_of(const fwd_batch *b) {
  return (fwd_map){b->h,
                   b->plan->map,
                   b->plan->pmap,
                   b->plan->map_lo,
                   b->plan->map_units,
                   b->h->pool_shift};
}

/* Does x point to a block that moved?  The map's bit (no more for a
 * unit not evacuated, nearly every pointer), then the pmap's. */
static inline int fm_moved(fwd_map m, const ph_compact_plan *plan,
                           uintptr_t x) {
  if (!m.map)
    return hdr_evacuated(m.h, x);
  size_t u = (x - m.lo) >> m.shift;
  return u < m.units && bit_at(m.map, u) && evac_moved(m.h, plan, m.pmap, x, u);
}

/* x: the value *slot held when it was read.  The ring holds only root
 * slots or only fields: it is emptied at the end of every root item.  The
 * prefetch is of x itself (an interior pointer's block start may lie on
 * another line: one miss more, for those only). */
static inline __attribute__((always_inline)) void
fb_add(fwd_batch *b, fwd_map m, ph_value *slot, ph_value x, int root,
       int interior) {
  if (!ph_is_block(x) || !fm_moved(m, b->plan, x))
    return;
  __builtin_prefetch((const void *)x);
  unsigned i = b->n++ & (PH_FWD_AHEAD - 1);
  if (b->n > PH_FWD_AHEAD)
    fwd_fix(b, b->slot[i], root, interior);
  b->slot[i] = slot;
}

/* The managed collector's root visit (ring; interior pointers never). */
static void update_slot(ph_value *slot, void *ctx) {
  fwd_batch *b = ctx;
  fb_add(b, fm_of(b), slot, __atomic_load_n(slot, __ATOMIC_RELAXED), 1, 0);
}

static void update_root_item_done(void *ctx) {
  fb_flush(ctx, 1, 0);
}

static void root_item_done_direct(void *ctx) {
  (void)ctx;
}

/* The visit handed to callbacks (scan_block, roots_direct): the slot is
 * fixed before it returns (compact.update.once: relaxed, re-read). */
static void visit_direct(ph_value *slot, void *ctx) {
  const fwd_batch *b = ctx;
  ph_value x = __atomic_load_n(slot, __ATOMIC_RELAXED);
  if (!ph_is_block(x) || !unit_moved(b->h, b->plan, x))
    return;
  __atomic_store_n(slot,
                   b->plan->rule->interior ? fwd_new(b->h, b->plan, x, 1)
                                           : fwd_new(b->h, b->plan, x, 0),
                   __ATOMIC_RELAXED);
}

static inline __attribute__((always_inline)) void
update_fields(fwd_batch *b, fwd_map m, ph_value *f, size_t n, int interior) {
  for (size_t i = 0; i < n; i++)
    fb_add(b, m, &f[i], f[i], 0, interior);
}

/* compact.update.rule: every allocated slot of the pool (header != 0; the
 * managed collector's are WHITE after its sweep), by its tag's kind. */
static inline __attribute__((always_inline)) void
update_pool(fwd_batch *b, ph_pool *p, int interior, uint64_t holes,
            uint32_t nslots) {
  const ph_compact_plan *plan = b->plan;
  fwd_map m = fm_of(b);
  const uint8_t *kinds = plan->kind;
  uint32_t wsize = b->h->class_wsize[p->cls];
  ph_value *slot = (ph_value *)ph_pool_slots(b->h, p);
  for (uint32_t k = 0; k < nslots; k++, slot += wsize) {
    /* heap.pool.holes; a partial pool's blocks that moved out */
    if (__builtin_expect(holes != 0, 0) &&
        (b->h->class_units[p->cls] == 1
             ? ph_slot_in_hole(b->h, holes, p->cls, k)
             : ph_pool_slot_holed(b->h, p, k)))
      continue;
    ph_value hd = slot[0];
    if (hd == 0)
      continue;
    unsigned kind = kinds[ph_hd_tag(hd)];
    if (kind == PH_KIND_INLINE)
      update_fields(b, m, slot + 1, ph_hd_wosize(hd), interior);
    else if (kind == PH_KIND_CB)
      plan->rule->scan_block((ph_value)(slot + 1), visit_direct, b,
                             plan->rule->user);
  }
}

static inline __attribute__((always_inline)) void
update_unit(struct ph_heap *h, ph_chunk *c, uint32_t u, void *ctx,
            int interior) {
  fwd_batch *fb = ctx;
  const ph_compact_plan *plan = fb->plan;
  if (c->ustate[u] != PH_U_POOL)
    return;
  char *ua = ph_unit_addr(h, c, u);
  uint64_t holes = ph_pool_holes_any(h, c, u, c->ucls[u]);
  uint32_t lim = UINT32_MAX;
  if (plan->map ? unit_evacuated(h, plan, (uintptr_t)ua)
                : ph_pool_at(h, c, u)->evacuated) {
    size_t mu = ((uintptr_t)ua - plan->map_lo) >> h->pool_shift;
    if (!plan->pmap || !bit_at(plan->pmap, mu))
      return; /* evacuated: not even its header is read */
    /* compact.pin.holes: a partial pool keeps the blocks outside them */
    const ph_cpart *e = part_of(plan, mu);
    if (e->cls & PH_HCUT) { /* compact.pack: those below the cut */
      ph_pool *p = ph_pool_at(h, c, u);
      lim = (uint32_t)((e->mask - (uintptr_t)ph_pool_slots(h, p)) /
                       ((size_t)h->class_wsize[p->cls] * 8));
    } else {
      holes |= e->mask;
    }
  }
  ph_pool *p = ph_pool_at(h, c, u);
  update_pool(fb, p, interior, holes, lim < p->nslots ? lim : p->nslots);
}

static void update_unit_plain(struct ph_heap *h, ph_chunk *c, uint32_t u,
                              void *ctx) {
  update_unit(h, c, u, ctx, 0);
}

static void update_unit_interior(struct ph_heap *h, ph_chunk *c, uint32_t u,
                                 void *ctx) {
  update_unit(h, c, u, ctx, 1);
}

static inline __attribute__((always_inline)) void
update_larges(struct ph_heap *h, ph_compact_plan *plan, fwd_batch *fb,
              int interior) {
  ph_section *s = &h->sec;
  for (;;) {
    size_t k = atomic_fetch_add_explicit(&s->claim_update_large, 1,
                                         memory_order_relaxed);
    if (k >= plan->nslices)
      break;
    size_t lo = 0, hi = plan->nlarges;
    while (hi - lo > 1) { /* the block holding slice k */
      size_t mid = (lo + hi) / 2;
      if (plan->large_first[mid] <= k)
        lo = mid;
      else
        hi = mid;
    }
    ph_large *l = plan->larges[lo];
    ph_value *hp = (ph_value *)((char *)l + PH_LARGE_HDR);
    if (plan->kind[ph_hd_tag(*hp)] == PH_KIND_CB) { /* one item */
      plan->rule->scan_block((ph_value)(hp + 1), visit_direct, fb,
                             plan->rule->user);
      continue;
    }
    size_t wo = ph_hd_wosize(*hp);
    size_t a = (k - plan->large_first[lo]) * PH_LARGE_SLICE;
    size_t n = wo - a < PH_LARGE_SLICE ? wo - a : PH_LARGE_SLICE;
    update_fields(fb, fm_of(fb), hp + 1 + a, n, interior);
  }
  fb_flush(fb, 0, interior);
}

/* The pool units and slices of large blocks still unclaimed. */
static void update_claims(struct ph_heap *h, ph_compact_plan *plan,
                          fwd_batch *fb) {
  ph_section *s = &h->sec;
  if (plan->rule->interior) {
    ph_units_each_stw(h, &s->claim_update_units, 8, update_unit_interior, fb);
    update_larges(h, plan, fb, 1);
  } else {
    ph_units_each_stw(h, &s->claim_update_units, 8, update_unit_plain, fb);
    update_larges(h, plan, fb, 0);
  }
}

static void update_stw(struct ph_heap *h, const ph_compact_part *part,
                       ph_compact_plan *plan) {
  fwd_batch fb = {.h = h, .plan = plan, .n = 0};
  if (part->scan_roots) {
    if (plan->roots_direct)
      part->scan_roots(part->arg, visit_direct, root_item_done_direct, &fb);
    else
      part->scan_roots(part->arg, update_slot, update_root_item_done, &fb);
  }
  update_claims(h, plan, &fb);
}

/* ------------------------------------------------------ compact.assist */

typedef struct assist {
  struct ph_heap *h;
  ph_compact_plan *plan;
  void (*enter)(int begin);
  int update; /* 0: phase 3, 1: phase 4 */
  uint64_t blocks, bytes;
} assist;

static void *assist_main(void *arg) {
  assist *a = arg;
  if (a->enter)
    a->enter(1);
  if (a->update) {
    fwd_batch fb = {.h = a->h, .plan = a->plan, .n = 0};
    update_claims(a->h, a->plan, &fb);
  } else {
    evacuate_claims(a->h, a->plan, &a->blocks, &a->bytes);
  }
  if (a->enter)
    a->enter(0);
  return NULL;
}

/* The leader, as a phase opens: start up to part->nassist threads on the
 * client's stacks, every signal blocked in them (they run no handler of the
 * embedder's).  pthread_create orders the plan, and everything before it,
 * before the thread's work.  Returns how many started (a refusal only means
 * fewer: the participants claim what is left). */
static unsigned assist_start(struct ph_heap *h, const ph_compact_part *part,
                             ph_compact_plan *plan, int update, assist *a,
                             pthread_t *tid) {
  unsigned n = part->nassist < PH_ASSIST_MAX ? part->nassist : PH_ASSIST_MAX;
  if (n == 0 || !part->assist_stacks)
    return 0;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0)
    return 0;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  unsigned k = 0;
  for (; k < n; k++) {
    a[k] = (assist){h, plan, part->assist_enter, update, 0, 0};
    if (pthread_attr_setstack(&attr, part->assist_stacks[k],
                              part->assist_stack) != 0 ||
        pthread_create(&tid[k], &attr, assist_main, &a[k]) != 0)
      break;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return k;
}

/* The leader, before the barrier that ends the phase: the join orders the
 * threads' work before it, and so before that barrier. */
static void assist_join(assist *a, pthread_t *tid, unsigned n, uint64_t *blocks,
                        uint64_t *bytes) {
  for (unsigned k = 0; k < n; k++) {
    pthread_join(tid[k], NULL);
    *blocks += a[k].blocks;
    *bytes += a[k].bytes;
  }
}

ph_value ph_compact_forward(const struct ph_heap *h, ph_value v) {
  const ph_compact_plan *plan = h->plan;
  if (!plan || !ph_is_block(v))
    return v;
  const uint64_t *map = __atomic_load_n(&plan->map, __ATOMIC_RELAXED);
  if (!map)
    return v;
  size_t u = (v - plan->map_lo) >> h->pool_shift;
  if (u >= plan->map_units || !bit_at(map, u) ||
      !evac_moved(h, plan, plan->pmap, v, u))
    return v;
  return plan->map_cls ? fwd_new(h, plan, v, 1) : fwd_new(h, plan, v, 0);
}

/* --------------------------------------------------------- phases 5, 6 */

/* compact.phase.free and compact.phase.release, on the leader under the
 * lock: the evacuated pools freed, the client's lists rebuilt, free memory
 * given back per cfg.release beyond cfg.retain (heap.release). */
/* Is any bit of bits[lo..hi] set? */
static int bits_any(const uint64_t *bits, uint32_t lo, uint32_t hi) {
  for (uint32_t w = lo / 64; w <= hi / 64; w++) {
    uint64_t m = bits[w];
    if (w == lo / 64)
      m &= ~(uint64_t)0 << (lo % 64);
    if (w == hi / 64 && hi % 64 != 63)
      m &= ((uint64_t)2 << (hi % 64)) - 1;
    if (m)
      return 1;
  }
  return 0;
}

/* compact.holes.free for kept pool p (leader, under the lock, its live
 * bitmap final): the granules (heap.pool.holes; of every unit of a medium
 * pool) that hold no byte of a live slot, nor the header and live bitmap,
 * are given to the OS as holes.  Returns whether any was made: then the
 * caller rebuilds p's free list and counts (relink_free), once. */
static int pool_holes_free_locked(struct ph_heap *h, ph_pool *p, int lazy) {
  unsigned c = p->cls;
  size_t gsz = (size_t)1 << h->hole_shift, hdr = h->class_hdr[c];
  uint32_t nu = h->class_units[c];
  unsigned ng = (unsigned)(h->pool_size >> h->hole_shift);
  unsigned g_hdr = (unsigned)((hdr - 1) >> h->hole_shift) + 1;
  ph_chunk *ch = p->chunk;
  const uint64_t *bits = ph_pool_bits(p);
  int made = 0;
  for (uint32_t k = 0; k < nu; k++) {
    uint64_t had = ch->holes[p->unit + k], want = 0;
    for (unsigned g = k ? 0 : g_hdr; g < ng; g++) {
      if (had >> g & 1)
        continue;
      /* the slots touching granule g of unit k: [lo, hi] */
      size_t a = ((size_t)k << h->pool_shift) + ((size_t)g << h->hole_shift);
      uint32_t lo, hi;
      if (!ph_slots_touching(h, c, a, a + gsz - 1, &lo, &hi) ||
          !bits_any(bits, lo, hi))
        want |= (uint64_t)1 << g;
    }
    /* refused runs stay committed: nothing is lost */
    if (want &&
        ph_pool_holes_make_locked(h, ch, p->unit + k, want, lazy) != had)
      made = 1;
  }
  return made;
}

/* compact.pin.holes, phase 5 (leader, under the lock): a special pool
 * that was kept gets its bitmap back without the blocked slots; a partial
 * one first gives its planned holes to the OS (cfg.release: the only
 * release this makes, of pages that hold no block), and its slots that
 * touch no hole (a refused run) become free (the old copies of moved
 * blocks among them, compact.pack's past its cut too); then, when the
 * plan frees the kept pools' granules (compact.holes.free), its own are
 * given back here, so that its free list and counts are rebuilt once
 * (kept_holes_locked then finds nothing more in it).  Nothing moved
 * (moved 0): the bitmap is as the sweep left it, and so is the rest. */
static void spec_finish_locked(struct ph_heap *h, const ph_compact_plan *plan,
                               ph_cspec *x, int moved) {
  if (x->evacuated)
    return;
  if (!moved) {
    spec_unblock(h, x);
    return;
  }
  ph_pool *p = x->pool;
  ph_chunk *c = p->chunk;
  uint64_t holes = ph_pool_holes_any(h, c, p->unit, p->cls);
  if (x->partial && (x->holes & ~holes)) {
    /* heap.pool.ool: granule 0 goes only with the header out of line
     * (a small pool's; no memory for the copy: it stays, like a refused
     * run) */
    ph_pool *q = (x->holes & ~holes & 1) && p->cls < h->nsmall
                     ? ph_pool_header_out_locked(h, p)
                     : NULL;
    if (q)
      p = x->pool = q;
    holes = ph_pool_holes_make_locked(h, c, p->unit, x->holes,
                                      h->cfg.release == PH_RELEASE_LAZY);
    if (q && !(holes & 1)) /* the OS refused granule 0 */
      p = x->pool = ph_pool_header_home_locked(h, q);
  }
  uint32_t ns = p->nslots, nw = (ns + 63) / 64, ws = h->class_wsize[p->cls];
  uint64_t *bits = ph_pool_bits(p);
  ph_value *base = (ph_value *)ph_pool_slots(h, p);
  uint32_t nhole = 0, nlive = 0;
  for (uint32_t w = 0; w < nw; w++) {
    for (uint64_t t = x->t[w]; t; t &= t - 1) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(t);
      if (holes && ph_pool_slot_holed(h, p, i)) {
        nhole++;
      } else {
        /* the pool layer's live_words (evacuate_unit counts a block's
         * words at its destination): a packed pool's moved block takes
         * its words along.  (A partial pool's blocks in its new holes are
         * not read; only the managed collector, which keeps no live_words,
         * pins.) */
        if (x->m[w] >> (i % 64) & 1)
          p->live_words -= (uint32_t)(ph_hd_wosize(base[(size_t)i * ws]) + 1);
        base[(size_t)i * ws] = 0; /* free (a moved block's old copy) */
      }
    }
    bits[w] &= ~x->t[w];
    nlive += (uint32_t)__builtin_popcountll(bits[w]);
  }
  /* compact.holes.free (every slot touching a hole is in t: nhole is the
   * pool's); a pool with fewer free bytes than a granule has none to give,
   * as in kept_holes_locked */
  if (holes_free_on(h, plan) && c->huge == PH_OS_HUGE_NONE &&
      (uint64_t)(ns - nhole - nlive) * ws * 8 >= (uint64_t)1 << h->hole_shift &&
      pool_holes_free_locked(h, p, h->cfg.release == PH_RELEASE_LAZY))
    holes = ph_pool_holes_any(h, c, p->unit, p->cls);
  p->nhole = relink_free(h, p, holes);
  p->nlive = nlive;
  p->nfree = ns - p->nhole - nlive;
}

/* compact.holes.free (phase 5, leader, under the lock, after the special
 * pools are finished and before the client rebuilds its lists; a client
 * whose pools may have holes, memory released, no ranges plan): each kept
 * pool of a chunk of normal pages gives its free granules back
 * (pool_holes_free_locked); the free slots touching them leave the free
 * list (nhole), as a pinned pool's do (compact.pin.holes).  After the
 * evacuation these are mostly the free slots at the end of each class's
 * last, partly filled pool, and the room of kept pools that got no block.
 * The special pools did theirs in spec_finish_locked: here they have no
 * granule left to give and are not relinked again. */
static void kept_holes_locked(struct ph_heap *h, ph_compact_plan *plan) {
  if (!holes_free_on(h, plan))
    return;
  int lazy = h->cfg.release == PH_RELEASE_LAZY;
  size_t gsz = (size_t)1 << h->hole_shift;
  for (unsigned c = 0; c < h->nclasses; c++) {
    const ph_cclass *cc = &plan->cls[c];
    size_t sb = (size_t)h->class_wsize[c] * 8;
    for (size_t i = 0; i < cc->nkeep; i++) {
      ph_pool *p = cc->keep[i];
      if (h->ool_pools) {
        /* heap.pool.ool: spec_finish_locked may have moved a pinned pool's
         * header out since the plan named it (its first page is a hole
         * now): the pool is found again from its address */
        char *pa = ph_pool_addr(h, p);
        ph_chunk *pc = ph_chunk_find(h, pa);
        p = ph_pool_at(h, pc,
                       (uint32_t)((size_t)(pa - pc->base) >> h->pool_shift));
      }
      /* too few free bytes for a whole granule: nothing to give */
      if (p->chunk->huge != PH_OS_HUGE_NONE || (uint64_t)p->nfree * sb < gsz)
        continue;
      if (pool_holes_free_locked(h, p, lazy)) {
        p->nhole = relink_free(h, p, 1);
        p->nfree = p->nslots - p->nhole - p->nlive;
      }
    }
  }
}

/* heap.release.trim (phase 6, leader, under the lock, every mode but
 * KEEP): in each kept medium pool of a chunk of normal pages, the pages
 * lying wholly inside a free slot, past its header and field 0 (the free
 * list's link), go back to the OS; the range stays committed (ph_os_discard:
 * an allocation refaults it as zeros without asking, so heap_limit still
 * counts it).  Only a free slot's header and field 0 are ever read (the
 * sweeps, verify, the census, the free lists of both clients), and those
 * stay.  The kept pools hold less than one pool's free slots per class and
 * owner group, so this is a few calls per medium class. */
static void trim_medium_locked(struct ph_heap *h, ph_compact_plan *plan) {
  if (h->cfg.release == PH_RELEASE_KEEP)
    return;
  uintptr_t pg = (uintptr_t)ph_os_page_size();
  int lazy = h->cfg.release == PH_RELEASE_LAZY;
  for (unsigned c = h->nsmall; c < h->nclasses; c++) {
    const ph_cclass *cc = &plan->cls[c];
    uintptr_t sb = (uintptr_t)h->class_wsize[c] * sizeof(ph_value);
    if (sb < 2 * pg)
      continue; /* no page lies wholly past a slot's first 16 bytes */
    for (size_t i = 0; i < cc->nkeep; i++) {
      const ph_pool *p = cc->keep[i];
      if (p->chunk->huge != PH_OS_HUGE_NONE)
        continue; /* no huge page is split */
      /* refused: the pages stay, nothing is lost */
      for (ph_value f = p->free; f; f = *(const ph_value *)f)
        (void)ph_slot_trim_locked(h, (uintptr_t)f - sizeof(ph_value), sb, lazy);
    }
  }
}

static void free_release_stw_single(struct ph_heap *h, ph_compact_plan *plan,
                                    const ph_compact_part *part) {
  pthread_mutex_lock(&h->lock);
  uint64_t pools = 0, holes0 = h->hole_bytes;
  if (plan) {
    int moved = atomic_load_explicit(&plan->failed, memory_order_relaxed) == 0;
    for (unsigned c = 0; c < h->nclasses; c++)
      for (size_t i = 0; i < plan->cls[c].nspec; i++)
        spec_finish_locked(h, plan, &plan->cls[c].spec[i], moved);
    if (moved)
      kept_holes_locked(h, plan);
  }
  /* the holes made are given back too (ph_stats.released_bytes) */
  uint64_t holed = h->hole_bytes - holes0;
  if (plan)
    for (unsigned c = 0; c < h->nclasses; c++) {
      ph_cclass *cc = &plan->cls[c];
      for (size_t i = 0; i < cc->nevac; i++) {
        ph_pool *p = cc->evac[i];
        if (cc->ebits && cc->ebits[i])
          continue; /* a partial pool: kept */
        /* chunk and unit from the address: the header is not read (but
         * out of line, heap.pool.ool) */
        char *pa = ph_pool_addr(h, p);
        ph_chunk *ch = ph_chunk_find(h, pa);
        uint32_t u = (uint32_t)((size_t)(pa - ch->base) >> h->pool_shift);
#if PH_POISON
        if (!ph_pool_holes_any(h, ch, u, c)) { /* holes are not touched */
          ph_value *q = (ph_value *)ph_pool_slots(h, p);
          size_t nw =
              (((size_t)h->class_units[c] << h->pool_shift) - h->class_hdr[c]) /
              8;
          for (size_t k = 0; k < nw; k++)
            q[k] = PH_POISON_WORD;
          p->sig = PH_SIG_DEAD;
        }
#endif
        if (!plan->map)
          p->evacuated = 0; /* the fallback flag */
        ph_units_free_locked(h, ch, u, h->class_units[c]);
        h->pool_units -= h->class_units[c];
        pools++;
      }
    }
  part->relist_locked(part->arg, plan != NULL);
  if (plan)
    trim_medium_locked(h, plan);
  uint64_t rel = 0;
  ph_units_release_locked(h, (int)h->cfg.release, h->cfg.retain, &rel);
  if (plan) {
    plan->r_pools = pools;
    plan->r_released = rel + holed;
  }
  pthread_mutex_unlock(&h->lock);
}

/* The plan's arrays are the OS layer's scratch arrays (os.scratch.gone):
 * their pages leave the process here, whatever malloc's thresholds. */
static void plan_free(struct ph_heap *h, ph_compact_plan *plan) {
  for (unsigned c = 0; c < h->nclasses; c++) {
    ph_os_scratch_free(plan->cls[c].keep);
    ph_os_scratch_free(plan->cls[c].evac);
    ph_os_scratch_free(plan->cls[c].units);
    ph_os_scratch_free(plan->cls[c].elive);
    ph_os_scratch_free(plan->cls[c].ebits);
    ph_os_scratch_free(plan->cls[c].spec);
    ph_os_scratch_free(plan->cls[c].specbits);
  }
  ph_os_scratch_free(plan->parts); /* the pmap is the map's second half */
  ph_os_scratch_free(plan->units);
  ph_os_scratch_free(plan->larges);
  ph_os_scratch_free(plan->large_first);
  ph_os_scratch_free(plan->map);
  ph_os_scratch_free(plan->map_cls);
  ph_os_scratch_free(plan->map_back);
  ph_os_scratch_free(plan->recs);
  ph_os_scratch_free(plan->cands);
  ph_ranges_free(&plan->ranges);
  memset(plan, 0, sizeof *plan);
}

/* ------------------------------------------------------------- driver */

static void event(const ph_compact_part *part, ph_phase ph, int begin) {
  if (part->event)
    part->event(part->arg, ph, begin);
}

static void atomic_max(_Atomic uint64_t *a, uint64_t v) {
  uint64_t o = atomic_load_explicit(a, memory_order_relaxed);
  while (o < v && !atomic_compare_exchange_weak_explicit(
                      a, &o, v, memory_order_relaxed, memory_order_relaxed))
    ;
}

/* Leader of phase 1: every participant's partly filled pools in one
 * array, by class (a stable counting sort: each class's in the records'
 * order), so that phase 2 reads each record once, not once a class.
 * Returns 0 if the array cannot be had. */
static int by_class_stw_single(struct ph_heap *h, ph_compact_plan *plan) {
  size_t n = 0;
  memset(plan->cfirst, 0, sizeof plan->cfirst);
  for (unsigned p = 0; p < plan->nrecs; p++) {
    n += plan->recs[p].ncands;
    for (size_t k = 0; k < plan->recs[p].ncands; k++)
      plan->cfirst[plan->recs[p].cands[k].cls + 1]++;
  }
  if (n == 0)
    return 1;
  plan->cands = ph_os_scratch_alloc(n * sizeof *plan->cands);
  if (!plan->cands)
    return 0;
  for (unsigned c = 0; c < h->nclasses; c++)
    plan->cfirst[c + 1] += plan->cfirst[c];
  size_t at[PH_MAX_CLASSES];
  memcpy(at, plan->cfirst, sizeof at);
  for (unsigned p = 0; p < plan->nrecs; p++)
    for (size_t k = 0; k < plan->recs[p].ncands; k++) {
      const ph_cand *cd = &plan->recs[p].cands[k];
      plan->cands[at[cd->cls]++] = *cd;
    }
  return 1;
}

/* Leader of phase 1: the plan's scratch, the records of every participant
 * (compact.phase.stats) by class, the rule (compact.update.rule), the
 * ranges. */
static void setup_stw_single(struct ph_heap *h, ph_compact_plan *plan,
                             const ph_compact_part *part) {
  plan->recs = ph_os_scratch_alloc(part->nparts * sizeof *plan->recs);
  int lost = !plan->recs;
  if (plan->recs) {
    plan->nrecs = part->nparts;
    for (unsigned i = 0; i < part->nparts; i++) {
      part->records(part->arg, i, &plan->recs[i]);
      lost |= plan->recs[i].lost;
    }
  }
  if (!lost && !by_class_stw_single(h, plan))
    lost = 1;
  if (lost) /* nothing is planned (and so nothing moves) */
    atomic_store_explicit(&plan->failed, 2, memory_order_relaxed);
  rule_stw_single(plan, part->rule);
  plan->roots_direct = part->roots_direct;
  if (!lost)
    choose_ranges_stw_single(h, plan);
  plan->pack = pack_on(h, plan); /* once the ranges are known */
}

void ph_compact_stw(struct ph_heap *h, const ph_compact_part *part) {
  ph_section *s = &h->sec;
  uint64_t t0 = ph_now_ns(), blocks = 0, bytes = 0;
  assist as[PH_ASSIST_MAX];
  pthread_t tid[PH_ASSIST_MAX];
  event(part, PH_PHASE_EVACUATE, 1);
  /* Phase 1 */
  if (part->barrier(part->arg)) {
    if (!h->plan)
      h->plan = calloc(1, sizeof *h->plan);
    else
      memset(h->plan, 0, sizeof *h->plan);
    ph_units_index_stw_single(h);
    atomic_store_explicit(&s->claim_choose, 0, memory_order_relaxed);
    if (h->plan) {
      h->plan->pinned = part->pinned;
      h->plan->npinned = part->npinned;
      h->plan->pinned_blocks = part->pinned_blocks;
      h->plan->npinned_blocks = part->npinned_blocks;
      h->plan->holes = part->holes;
      setup_stw_single(h, h->plan, part);
    }
  }
  part->barrier(part->arg);
  ph_compact_plan *plan = h->plan;
  if (plan && atomic_load_explicit(&plan->failed, memory_order_relaxed) != 2) {
    /* Phase 2 (phase 1's records came from the client's sweep) */
    choose_stw(h, plan);
    if (part->barrier(part->arg))
      gather_stw_single(h, plan, part);
    /* Phase 3 */
    part->barrier(part->arg);
    unsigned na = 0;
    if (part->leader && plan->nunits > 1 && evacuate_global(h, part))
      na = assist_start(h, part, plan, 0, as, tid);
    evacuate_stw(h, part, plan, &blocks, &bytes);
    assist_join(as, tid, na, &blocks, &bytes);
    if (part->leader)
      plan->r_assisted = na;
  }
  uint64_t t_evac = ph_now_ns() - t0;
  event(part, PH_PHASE_EVACUATE, 0);
  /* Phase 4 */
  part->barrier(part->arg);
  uint64_t t1 = ph_now_ns();
  event(part, PH_PHASE_UPDATE, 1);
  if (plan && plan->nunits > 0) { /* nothing moved: nothing to forward */
    unsigned na = part->leader ? assist_start(h, part, plan, 1, as, tid) : 0;
    update_stw(h, part, plan);
    assist_join(as, tid, na, &blocks, &bytes);
    if (part->leader && na > plan->r_assisted)
      plan->r_assisted = na;
  }
  uint64_t t_update = ph_now_ns() - t1;
  event(part, PH_PHASE_UPDATE, 0);
  /* Phase 5 */
  part->barrier(part->arg);
  uint64_t t2 = ph_now_ns();
  event(part, PH_PHASE_RELEASE, 1);
  if (part->leader) /* and phase 6 */
    free_release_stw_single(h, plan, part);
  uint64_t t_release = ph_now_ns() - t2;
  event(part, PH_PHASE_RELEASE, 0);
  if (plan) {
    atomic_fetch_add_explicit(&plan->r_blocks, blocks, memory_order_relaxed);
    atomic_fetch_add_explicit(&plan->r_bytes, bytes, memory_order_relaxed);
    atomic_max(&plan->r_t_evac, t_evac);
    atomic_max(&plan->r_t_update, t_update);
    atomic_max(&plan->r_t_release, t_release);
  }
  if (part->barrier(part->arg)) {
    ph_compact_result r = {0};
    if (plan) {
      r.blocks = atomic_load_explicit(&plan->r_blocks, memory_order_relaxed);
      r.bytes = atomic_load_explicit(&plan->r_bytes, memory_order_relaxed);
      r.t_evac = atomic_load_explicit(&plan->r_t_evac, memory_order_relaxed);
      r.t_update =
          atomic_load_explicit(&plan->r_t_update, memory_order_relaxed);
      r.t_release =
          atomic_load_explicit(&plan->r_t_release, memory_order_relaxed);
      r.pools = plan->r_pools;
      r.released = plan->r_released;
      r.planned =
          atomic_load_explicit(&plan->failed, memory_order_relaxed) == 0;
      r.assisted = plan->r_assisted;
    } else {
      r.t_evac = t_evac;
      r.t_update = t_update;
      r.t_release = t_release;
    }
    part->finish_stw_single(part->arg, &r);
    if (plan)
      plan_free(h, plan);
  }
  part->barrier(part->arg);
}

void ph_compact_fini(struct ph_heap *h) {
  free(h->plan);
  h->plan = NULL;
}
