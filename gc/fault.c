/* gc/fault.c -- allocation-failure injection in gc/'s tables, for tests
 * (DESIGN.md: tests.faults): the counterpart of os/'s fault hooks for the
 * mallocs of the pin table, the finaliser table and queues, the weak and
 * ephemeron lists and the pinned pools' list, whose PH_ENOMEM paths the
 * OS hooks cannot reach. */
#include "gc/gc.h"

static ph_fault_site gc_faults; /* os/'s engine, gc/'s own site */

void ph_gc_fault_set(unsigned op_mask, uint64_t nth, int sticky) {
  ph_fault_site_set(&gc_faults, op_mask, nth, sticky);
}

uint64_t ph_gc_fault_hits(void) {
  return ph_fault_site_hits(&gc_faults);
}

int ph_gc_fault(unsigned op) {
  return ph_fault_site_hit(&gc_faults, op);
}
