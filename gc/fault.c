/* gc/fault.c -- allocation-failure injection in gc/'s tables, for tests
 * (DESIGN.md: tests.faults): the counterpart of os/'s fault hooks for the
 * mallocs of the pin table, the finaliser table and queues, the weak and
 * ephemeron lists and the pinned pools' list, whose PH_ENOMEM paths the
 * OS hooks cannot reach. */
#include "gc/gc.h"

static _Atomic unsigned fault_mask;
static _Atomic uint64_t fault_nth;
static _Atomic int fault_sticky;
static _Atomic uint64_t fault_calls;
static _Atomic uint64_t fault_hits;

void ph_gc_fault_set(unsigned op_mask, uint64_t nth, int sticky) {
  /* Tests set it while no table grows; the counters order nothing else:
   * relaxed is enough (as os/'s ph_os_fault_set). */
  atomic_store_explicit(&fault_mask, 0, memory_order_relaxed);
  atomic_store_explicit(&fault_calls, 0, memory_order_relaxed);
  atomic_store_explicit(&fault_hits, 0, memory_order_relaxed);
  atomic_store_explicit(&fault_nth, nth, memory_order_relaxed);
  atomic_store_explicit(&fault_sticky, sticky != 0, memory_order_relaxed);
  atomic_store_explicit(&fault_mask, op_mask, memory_order_relaxed);
}

uint64_t ph_gc_fault_hits(void) {
  return atomic_load_explicit(&fault_hits, memory_order_relaxed);
}

int ph_gc_fault(unsigned op) {
  if ((atomic_load_explicit(&fault_mask, memory_order_relaxed) & op) == 0)
    return 0;
  /* fetch_add numbers each growth uniquely, across participants too */
  uint64_t n =
      atomic_fetch_add_explicit(&fault_calls, 1, memory_order_relaxed) + 1;
  uint64_t nth = atomic_load_explicit(&fault_nth, memory_order_relaxed);
  if (nth == 0 || n < nth)
    return 0;
  if (n > nth && !atomic_load_explicit(&fault_sticky, memory_order_relaxed))
    return 0;
  atomic_fetch_add_explicit(&fault_hits, 1, memory_order_relaxed);
  return 1;
}
