/* tests/pools_util.h -- what the pool layer's tests share (tests that use
 * include/poolheap_pools.h): tu_pools_verify_ok, php_verify must pass on the
 * test thread (a cmocka failure with the verifier's reason otherwise).  It
 * includes tests/test_util.h; every helper is static inline. */
#ifndef POOLHEAP_POOLS_UTIL_H
#define POOLHEAP_POOLS_UTIL_H

#include "tests/test_util.h"

#include "poolheap_pools.h"

static inline void tu_pools_verify_ok(php_heap *h) {
  char why[512];
  why[0] = 0;
  int e = php_verify(h, why, sizeof why);
  if (e != PH_OK)
    fail_msg("php_verify: %s: %s", ph_strerror(e), why);
}

#endif
