/* tests/test_badinput.c -- every public function fed every argument that
 * can be wrong (issue 4, item 7).
 *
 * One table row per case: what is called, and the documented result.  A row
 * returns the error code it observed; the runner compares it with the row's
 * expectation, then checks that the shared heap still verifies and still
 * allocates.  Rows that need a state of their own (a detached domain, a
 * heap with max_domains 1 or a heap_limit) build and tear it down
 * themselves.  Calls from a thread that does not own the domain are caught
 * in every build (the owner check that makes recycled handles safe, issue
 * 13); an unbalanced ph_blocking_leave only asserts in PH_DEBUG builds, and
 * that row is skipped (and counted as such) elsewhere.  Rows whose unfixed
 * behaviour was a crash run in a child process, so a crash is a failed row.
 * The number of rows is printed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "reliability_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The shared heap and its domain (owned by the main thread). */
static ph_heap *H;
static ph_domain *D;
/* Zeroed memory that is neither a heap nor a domain. */
static _Alignas(64) unsigned char junk[4096];

static ph_value junk_slot;

#define NOT_A_HEAP ((ph_heap *)(void *)junk)
#define NOT_A_DOMAIN ((ph_domain *)(void *)junk)

/* ------------------------------------------------------- row helpers */

/* ph_alloc's result as an error code: PH_OK if it allocated, else the
 * domain's last error (PH_EINVAL for a handle that has none). */
static int alloc_err(ph_domain *d, size_t wosize, unsigned tag) {
  ph_value v = ph_alloc(d, wosize, tag);
  if (v != 0)
    return PH_OK;
  return d ? ph_last_error(d) : PH_EINVAL;
}

static int create_with(void (*edit)(ph_config *)) {
  ph_config c;
  ph_config_init(&c);
  edit(&c);
  ph_heap *h = (ph_heap *)(void *)&c; /* sentinel: must stay untouched */
  int err = ph_heap_create(&c, &h);
  if (err == PH_OK) {
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  } else if (h != (ph_heap *)(void *)&c) {
    fail_msg("ph_heap_create wrote *out on failure");
  }
  return err;
}

/* A fresh heap with one domain attached by this thread. */
typedef struct side {
  ph_heap *h;
  ph_domain *d;
} side;

static side side_open(void (*edit)(ph_config *)) {
  ph_config c;
  ph_config_init(&c);
  if (edit)
    edit(&c);
  side s = {NULL, NULL};
  assert_int_equal(ph_heap_create(&c, &s.h), PH_OK);
  assert_int_equal(ph_domain_attach(s.h, &s.d), PH_OK);
  return s;
}

static void side_verify(side *s) {
  char why[200];
  if (ph_verify(s->d, why, sizeof why) != PH_OK)
    fail_msg("side heap: %s", why);
}

static void side_close(side *s) {
  if (s->d && ph_domain_heap(s->d) && ph_domain_index(s->d) != (unsigned)-1)
    assert_int_equal(ph_domain_detach(s->d), PH_OK);
  assert_int_equal(ph_heap_destroy(s->h), PH_OK);
}

/* A detached domain of a side heap (the heap stays alive, as it must for
 * the handle to stay readable). */
static side side_detached(void) {
  side s = side_open(NULL);
  assert_int_equal(ph_domain_detach(s.d), PH_OK);
  return s;
}

/* --------------------------------------------------- configuration */

static void c_dom0(ph_config *c) {
  c->max_domains = 0;
}
static void c_dom1025(ph_config *c) {
  c->max_domains = 1025;
}
static void c_pool2k(ph_config *c) {
  c->pool_size = 2048;
}
static void c_pool8m(ph_config *c) {
  c->pool_size = 8u << 20;
}
static void c_pool48k(ph_config *c) {
  c->pool_size = 48u << 10;
}
static void c_pool0(ph_config *c) {
  c->pool_size = 0;
}
static void c_gc10001(ph_config *c) {
  c->gc_percent = 10001;
}
static void c_huge3(ph_config *c) {
  c->huge_pages = (ph_huge_mode)3;
}
static void c_release4(ph_config *c) {
  c->release = (ph_release_mode)4;
}
static void c_scope2(ph_config *c) {
  c->compact_scope = (ph_compact_scope)2;
}
static void c_cpct101(ph_config *c) {
  c->compact_percent = 101;
}
static void c_limit_small(ph_config *c) {
  c->heap_limit = c->pool_size - 1;
}
/* valid boundaries */
static void c_edges_lo(ph_config *c) {
  c->max_domains = 1;
  c->pool_size = 4u << 10;
  c->gc_percent = 0;
  c->compact_percent = 1;
  c->heap_limit = 4u << 10;
}
static void c_edges_hi(ph_config *c) {
  c->max_domains = 1024;
  c->pool_size = 4u << 20;
  c->gc_percent = 10000;
  c->compact_percent = 100;
  c->huge_pages = PH_HUGE_EXPLICIT;
  c->release = PH_RELEASE_KEEP;
  c->compact_scope = PH_COMPACT_PER_DOMAIN;
}

static int r_cfg_dom0(void) {
  return create_with(c_dom0);
}
static int r_cfg_dom1025(void) {
  return create_with(c_dom1025);
}
static int r_cfg_pool2k(void) {
  return create_with(c_pool2k);
}
static int r_cfg_pool8m(void) {
  return create_with(c_pool8m);
}
static int r_cfg_pool48k(void) {
  return create_with(c_pool48k);
}
static int r_cfg_pool0(void) {
  return create_with(c_pool0);
}
static int r_cfg_gc(void) {
  return create_with(c_gc10001);
}
static int r_cfg_huge(void) {
  return create_with(c_huge3);
}
static int r_cfg_release(void) {
  return create_with(c_release4);
}
static int r_cfg_scope(void) {
  return create_with(c_scope2);
}
static int r_cfg_cpct(void) {
  return create_with(c_cpct101);
}
static int r_cfg_limit(void) {
  return create_with(c_limit_small);
}
static int r_cfg_edges_lo(void) {
  return create_with(c_edges_lo);
}
static int r_cfg_edges_hi(void) {
  return create_with(c_edges_hi);
}
static int r_create_out_null(void) {
  return ph_heap_create(NULL, NULL);
}
static int r_create_cfg_null(void) {
  ph_heap *h = NULL;
  int err = ph_heap_create(NULL, &h);
  if (err == PH_OK)
    assert_int_equal(ph_heap_destroy(h), PH_OK);
  return err;
}
static int r_config_init_null(void) {
  ph_config_init(NULL); /* documented as harmless */
  return PH_OK;
}
static int r_strerror_unknown(void) {
  const char *s = ph_strerror(12345);
  assert_non_null(s);
  assert_non_null(ph_strerror(-1));
  return s[0] != '\0' ? PH_OK : PH_EINVAL;
}

/* ------------------------------------------------ heap and domains */

static int r_destroy_null(void) {
  return ph_heap_destroy(NULL);
}
static int r_destroy_junk(void) {
  return ph_heap_destroy(NOT_A_HEAP);
}
static int r_destroy_attached(void) {
  return ph_heap_destroy(H);
}
static int r_attach_null(void) {
  ph_domain *d = NULL;
  return ph_domain_attach(NULL, &d);
}
static int r_attach_junk(void) {
  ph_domain *d = NULL;
  return ph_domain_attach(NOT_A_HEAP, &d);
}
static int r_attach_out_null(void) {
  return ph_domain_attach(H, NULL);
}

static void c_onedomain(ph_config *c) {
  c->max_domains = 1;
}
static int r_attach_too_many(void) {
  side s = side_open(c_onedomain);
  ph_domain *d2 = (ph_domain *)(void *)junk;
  int err = ph_domain_attach(s.h, &d2);
  assert_ptr_equal(d2, (ph_domain *)(void *)junk);
  side_verify(&s);
  side_close(&s);
  return err;
}
static int r_detach_null(void) {
  return ph_domain_detach(NULL);
}
static int r_detach_junk(void) {
  return ph_domain_detach(NOT_A_DOMAIN);
}
static int r_detach_twice(void) {
  side s = side_detached();
  int err = ph_domain_detach(s.d);
  /* the slot is free again: a new domain attaches and the heap verifies */
  ph_domain *d = NULL;
  assert_int_equal(ph_domain_attach(s.h, &d), PH_OK);
  s.d = d;
  side_verify(&s);
  side_close(&s);
  return err;
}
/* A heap that was destroyed: the live-heap registry refuses it without
 * reading it (issue 13, item 7). */
static ph_heap *destroyed_heap(void) {
  ph_heap *h = NULL;
  assert_int_equal(ph_heap_create(NULL, &h), PH_OK);
  assert_int_equal(ph_heap_destroy(h), PH_OK);
  return h;
}
static int r_destroy_twice(void) {
  return ph_heap_destroy(destroyed_heap());
}
static int r_attach_destroyed(void) {
  ph_domain *d = NOT_A_DOMAIN;
  int err = ph_domain_attach(destroyed_heap(), &d);
  assert_ptr_equal(d, NOT_A_DOMAIN);
  return err;
}
static int r_stats_destroyed(void) {
  ph_stats st;
  return ph_stats_get(destroyed_heap(), &st);
}
static int r_root_add_destroyed(void) {
  ph_heap *h = destroyed_heap();
  int a = ph_root_add(h, &junk_slot), b = ph_root_remove(h, &junk_slot);
  return a == b ? a : -1;
}
static int r_index_null(void) {
  return ph_domain_index(NULL) == (unsigned)-1 ? PH_EINVAL : PH_OK;
}
static int r_index_detached(void) {
  side s = side_detached();
  unsigned i = ph_domain_index(s.d);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return i == (unsigned)-1 ? PH_EINVAL : PH_OK;
}
static int r_domain_heap_null(void) {
  return ph_domain_heap(NULL) == NULL ? PH_EINVAL : PH_OK;
}
static int r_domain_heap_junk(void) {
  return ph_domain_heap(NOT_A_DOMAIN) == NULL ? PH_EINVAL : PH_OK;
}

/* ------------------------------------------------------ allocation */

static int r_alloc_null(void) {
  return ph_alloc(NULL, 1, 0) ? PH_OK : PH_EINVAL;
}
static int r_alloc_junk(void) {
  return ph_alloc(NOT_A_DOMAIN, 1, 0) ? PH_OK : PH_EINVAL;
}
static int r_alloc_wosize0(void) {
  return alloc_err(D, 0, 0);
}
static int r_alloc_wosize_max1(void) {
  return alloc_err(D, PH_MAX_WOSIZE + 1, 0);
}
static int r_alloc_wosize_sizemax(void) {
  return alloc_err(D, SIZE_MAX, 0);
}
static int r_alloc_tag256(void) {
  return alloc_err(D, 1, 256);
}
static int r_alloc_tag_uintmax(void) {
  return alloc_err(D, 1, UINT32_MAX);
}
static int r_alloc_tag_large256(void) {
  return alloc_err(D, 100000, 256);
}
static int r_alloc_tag255(void) {
  return alloc_err(D, 3, 255);
}
static int r_alloc_detached(void) {
  side s = side_detached();
  int err = alloc_err(s.d, 1, 0);
  assert_int_equal(ph_last_error(s.d), PH_ESTATE);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return err;
}
static int r_alloc_blocking(void) {
  ph_blocking_enter(D);
  int err = alloc_err(D, 1, 0);
  ph_blocking_leave(D);
  return err;
}
static int r_last_error_null(void) {
  return ph_last_error(NULL);
}
static int r_last_error_junk(void) {
  return ph_last_error(NOT_A_DOMAIN);
}

/* Runs in a forked child: a huge but valid size must be refused without
 * touching the memory.  A watchdog thread kills the child if its resident
 * set grows past 1 GiB (the allocation is writing the block) or it takes
 * more than 20 s. */
static size_t huge_wosize;
static void *rss_watchdog(void *arg) {
  (void)arg;
  for (int i = 0; i < 20000; i++) {
    if (ph_os_process_rss() > ((uint64_t)1 << 30)) {
      fprintf(stderr,
              "badinput: ph_alloc(%zu words) is writing the block: "
              "RSS > 1 GiB, killed\n",
              huge_wosize);
      _exit(90);
    }
    usleep(1000);
  }
  _exit(91);
}
static int huge_child(size_t wosize) {
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  if (ph_heap_create(NULL, &h) != PH_OK || ph_domain_attach(h, &d) != PH_OK)
    return 80;
  huge_wosize = wosize;
  pthread_t t;
  if (pthread_create(&t, NULL, rss_watchdog, NULL) != 0)
    return 81;
  ph_value v = ph_alloc(d, wosize, PH_TAG_RAW);
  int err = v ? PH_OK : ph_last_error(d);
  if (ph_verify(d, NULL, 0) != PH_OK)
    return 82;
  if (ph_alloc(d, 10, 0) == 0)
    return 83;
  return err; /* PH_ENOMEM expected */
}
static int run_huge(size_t wosize) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(huge_child(wosize));
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (!WIFEXITED(st))
    fail_msg("huge allocation child died of signal %d", WTERMSIG(st));
  int code = WEXITSTATUS(st);
  if (code >= 80)
    print_message("badinput: ph_alloc(%zu words) child exit %d\n", wosize,
                  code);
  return code;
}
static int r_alloc_huge_max(void) {
  return run_huge(PH_MAX_WOSIZE);
}
static int r_alloc_huge_1t(void) {
  return run_huge((size_t)1 << 37);
}

static void c_limit(ph_config *c) {
  c->heap_limit = 4u << 20;
  c->gc_percent = 0;
}
static int r_heap_limit_small(void) {
  side s = side_open(c_limit);
  size_t mark = ph_scope_open(s.d);
  int err = PH_OK;
  size_t n = 0;
  for (; n < 1000000 && err == PH_OK; n++) {
    ph_value v = ph_alloc(s.d, 30, 0);
    if (v == 0)
      err = ph_last_error(s.d);
    else
      assert_non_null(ph_root(s.d, v));
  }
  ph_stats st;
  assert_int_equal(ph_stats_get(s.h, &st), PH_OK);
  assert_true(st.committed_bytes <= (4u << 20));
  assert_true(n > 1000);
  side_verify(&s);
  /* usable again once some data goes */
  assert_int_equal(ph_scope_close(s.d, mark), PH_OK);
  assert_int_equal(ph_collect(s.d), PH_OK);
  assert_true(ph_alloc(s.d, 30, 0) != 0);
  side_verify(&s);
  side_close(&s);
  return err;
}
static int r_heap_limit_large(void) {
  side s = side_open(c_limit);
  int err = alloc_err(s.d, (8u << 20) / 8, 0); /* 8 MiB > 4 MiB limit */
  assert_true(ph_alloc(s.d, (1u << 20) / 8, 0) != 0);
  side_verify(&s);
  side_close(&s);
  return err;
}

/* ----------------------------------------------------------- roots */

static int r_scope_close_twice(void) {
  size_t m = ph_scope_open(D);
  assert_int_equal(ph_scope_close(D, m), PH_OK);
  return ph_scope_close(D, m);
}
static int r_scope_close_out_of_order(void) {
  size_t outer = ph_scope_open(D);
  size_t inner = ph_scope_open(D);
  assert_non_null(ph_root(D, PH_UNIT));
  int err = ph_scope_close(D, outer);
  assert_int_equal(ph_scope_close(D, inner), PH_OK);
  assert_int_equal(ph_scope_close(D, outer), PH_OK);
  return err;
}
static int r_scope_close_never_opened(void) {
  return ph_scope_close(D, ((size_t)77 << 32) | 5);
}
static int r_scope_close_null(void) {
  return ph_scope_close(NULL, 0);
}
static int r_scope_open_null(void) {
  return ph_scope_open(NULL) == (size_t)-1 ? PH_EINVAL : PH_OK;
}
static int r_root_null(void) {
  return ph_root(NULL, PH_UNIT) == NULL ? PH_EINVAL : PH_OK;
}
/* ph_last_error after a failing ph_scope_open / ph_root on a detached
 * domain (it said PH_OK before issue 13). */
static int r_scope_open_detached_error(void) {
  side s = side_detached();
  int a = ph_scope_open(s.d) == (size_t)-1;
  int err = ph_last_error(s.d);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return a ? err : -1;
}
static int r_root_detached_error(void) {
  side s = side_detached();
  int a = ph_root(s.d, PH_UNIT) == NULL;
  int err = ph_last_error(s.d);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return a ? err : -1;
}
static int r_scope_detached(void) {
  side s = side_detached();
  int a = ph_scope_open(s.d) == (size_t)-1;
  int b = ph_root(s.d, PH_UNIT) == NULL;
  int c = ph_scope_close(s.d, 0);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return a && b ? c : PH_OK;
}
static ph_value gslot, gslot2;
static int r_root_add_null_heap(void) {
  return ph_root_add(NULL, &gslot);
}
static int r_root_add_junk_heap(void) {
  return ph_root_add(NOT_A_HEAP, &gslot);
}
static int r_root_add_null_slot(void) {
  return ph_root_add(H, NULL);
}
static int r_root_add_misaligned(void) {
  return ph_root_add(H, (ph_value *)(void *)((char *)&gslot + 1));
}
static int r_root_add_twice(void) {
  assert_int_equal(ph_root_add(H, &gslot), PH_OK);
  int err = ph_root_add(H, &gslot);
  assert_int_equal(ph_root_remove(H, &gslot), PH_OK);
  return err;
}
static int r_root_remove_unregistered(void) {
  return ph_root_remove(H, &gslot2);
}
static int r_root_remove_twice(void) {
  assert_int_equal(ph_root_add(H, &gslot), PH_OK);
  assert_int_equal(ph_root_remove(H, &gslot), PH_OK);
  return ph_root_remove(H, &gslot);
}
static int r_root_remove_null(void) {
  return ph_root_remove(H, NULL);
}
static int r_root_remove_null_heap(void) {
  return ph_root_remove(NULL, &gslot);
}

/* -------------------------------------------------- stop-the-world */

static int r_collect_null(void) {
  return ph_collect(NULL);
}
static int r_compact_null(void) {
  return ph_compact(NULL);
}
static int r_verify_null(void) {
  return ph_verify(NULL, NULL, 0);
}
static int r_census_null(void) {
  return ph_census(NULL, NULL, NULL);
}
static void census_noop(const ph_census_class *c, void *u) {
  (void)c;
  (void)u;
}
static int r_census_null_domain(void) {
  return ph_census(NULL, census_noop, NULL);
}
static int r_census_null_fn(void) {
  return ph_census(D, NULL, NULL);
}
static int r_collect_junk(void) {
  return ph_collect(NOT_A_DOMAIN);
}
static int r_stw_detached(void) {
  side s = side_detached();
  int a = ph_collect(s.d), b = ph_compact(s.d), c = ph_verify(s.d, NULL, 0),
      e = ph_census(s.d, census_noop, NULL);
  ph_blocking_enter(s.d); /* ignored */
  ph_blocking_leave(s.d);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return a == b && b == c && c == e ? a : -1;
}
static int r_collect_blocking(void) {
  ph_blocking_enter(D);
  int a = ph_collect(D), b = ph_compact(D);
  ph_blocking_leave(D);
  return a == b ? a : -1;
}
static int r_verify_why_null(void) {
  return ph_verify(D, NULL, 100);
}
static int safepoint_null_child(void) {
  ph_safepoint(NULL);
  return PH_OK;
}
static int safepoint_junk_child(void) {
  ph_safepoint(NOT_A_DOMAIN);
  return PH_OK;
}
/* ph_safepoint ignores NULL and junk (it crashed before issue 13). */
static int r_safepoint_null(void) {
  return tu_in_child(safepoint_null_child);
}
static int r_safepoint_junk(void) {
  return tu_in_child(safepoint_junk_child);
}
static int r_safepoint_detached(void) {
  side s = side_detached();
  ph_safepoint(s.d);
  assert_int_equal(ph_heap_destroy(s.h), PH_OK);
  return PH_OK;
}
static int r_blocking_null(void) {
  ph_blocking_enter(NULL);
  ph_blocking_leave(NULL);
  return PH_OK;
}
static int r_blocking_junk(void) {
  ph_blocking_enter(NOT_A_DOMAIN);
  ph_blocking_leave(NOT_A_DOMAIN);
  return PH_OK;
}
/* Unbalanced blocking sections: PH_DEBUG builds stop at an assertion (in a
 * child process), release builds ignore the call. */
static int unbalanced_child(void) {
  ph_heap *h = NULL;
  ph_domain *d = NULL;
  if (ph_heap_create(NULL, &h) != PH_OK || ph_domain_attach(h, &d) != PH_OK)
    return 80;
  ph_blocking_leave(d);
  if (ph_verify(d, NULL, 0) != PH_OK || ph_alloc(d, 1, 0) == 0)
    return 81;
  return 0;
}
static int r_blocking_leave_unbalanced(void) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(unbalanced_child());
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT)
    return PH_ESTATE; /* caught */
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
    return PH_OK; /* ignored */
  return -1;
}
static int r_stats_null(void) {
  ph_stats st;
  return ph_stats_get(NULL, &st);
}
static int r_stats_out_null(void) {
  return ph_stats_get(H, NULL);
}
static int r_stats_junk(void) {
  ph_stats st;
  return ph_stats_get(NOT_A_HEAP, &st);
}

/* ------------------------------------------- calls from another thread */

typedef struct foreign {
  ph_domain *d;
  int check, alloc_ok, collect, compact, verify, detach, scope_close;
  size_t scope;
  ph_value *root;
} foreign;

static void *foreign_thread(void *arg) {
  foreign *f = arg;
  f->check = ph_check_domain(f->d);
  f->alloc_ok = ph_alloc(f->d, 1, 0) != 0;
  f->collect = ph_collect(f->d);
  f->compact = ph_compact(f->d);
  f->verify = ph_verify(f->d, NULL, 0);
  f->scope = ph_scope_open(f->d);
  f->root = ph_root(f->d, PH_UNIT);
  f->scope_close = ph_scope_close(f->d, 0);
  f->detach = ph_domain_detach(f->d);
  return NULL;
}

/* Which check to report: 0 check_domain, 1 alloc, 2 collect ... */
static int foreign_result(int which) {
  foreign f;
  memset(&f, 0, sizeof f);
  f.d = D;
  pthread_t t;
  ph_blocking_enter(D); /* we wait on another thread */
  assert_int_equal(pthread_create(&t, NULL, foreign_thread, &f), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  ph_blocking_leave(D);
  assert_int_equal(ph_check_domain(D), PH_OK); /* still ours */
  switch (which) {
  case 0:
    return f.check;
  case 1:
    return f.alloc_ok ? PH_OK : PH_ESTATE;
  case 2:
    return f.collect;
  case 3:
    return f.compact;
  case 4:
    return f.verify;
  case 5:
    return f.scope == (size_t)-1 && f.root == NULL ? PH_ESTATE : PH_OK;
  case 6:
    return f.scope_close;
  default:
    return f.detach;
  }
}
static int r_foreign_check(void) {
  return foreign_result(0);
}
static int r_foreign_alloc(void) {
  return foreign_result(1);
}
static int r_foreign_collect(void) {
  return foreign_result(2);
}
static int r_foreign_compact(void) {
  return foreign_result(3);
}
static int r_foreign_verify(void) {
  return foreign_result(4);
}
static int r_foreign_roots(void) {
  return foreign_result(5);
}
static int r_foreign_scope_close(void) {
  return foreign_result(6);
}
static int r_foreign_detach(void) {
  return foreign_result(7);
}

/* ------------------------------------------------------------ table */

typedef struct row {
  const char *what;
  int (*run)(void);
  int expect;
  int debug_only; /* only PH_DEBUG builds can catch it */
} row;

#define ROW(what, fn, expect)                                                  \
  { what, fn, expect, 0 }
#define DEBUG_ROW(what, fn, expect)                                            \
  { what, fn, expect, 1 }

static const row rows[] = {
    /* configuration */
    ROW("ph_heap_create max_domains 0", r_cfg_dom0, PH_EINVAL),
    ROW("ph_heap_create max_domains 1025", r_cfg_dom1025, PH_EINVAL),
    ROW("ph_heap_create pool_size 2 KiB", r_cfg_pool2k, PH_EINVAL),
    ROW("ph_heap_create pool_size 8 MiB", r_cfg_pool8m, PH_EINVAL),
    ROW("ph_heap_create pool_size 48 KiB (not 2^n)", r_cfg_pool48k, PH_EINVAL),
    ROW("ph_heap_create pool_size 0", r_cfg_pool0, PH_EINVAL),
    ROW("ph_heap_create gc_percent 10001", r_cfg_gc, PH_EINVAL),
    ROW("ph_heap_create huge_pages 3", r_cfg_huge, PH_EINVAL),
    ROW("ph_heap_create release 4", r_cfg_release, PH_EINVAL),
    ROW("ph_heap_create compact_scope 2", r_cfg_scope, PH_EINVAL),
    ROW("ph_heap_create compact_percent 101", r_cfg_cpct, PH_EINVAL),
    ROW("ph_heap_create heap_limit < pool_size", r_cfg_limit, PH_EINVAL),
    ROW("ph_heap_create lowest valid values", r_cfg_edges_lo, PH_OK),
    ROW("ph_heap_create highest valid values", r_cfg_edges_hi, PH_OK),
    ROW("ph_heap_create out NULL", r_create_out_null, PH_EINVAL),
    ROW("ph_heap_create cfg NULL (defaults)", r_create_cfg_null, PH_OK),
    ROW("ph_config_init NULL", r_config_init_null, PH_OK),
    ROW("ph_strerror unknown code", r_strerror_unknown, PH_OK),
    /* heap and domains */
    ROW("ph_heap_destroy NULL", r_destroy_null, PH_EINVAL),
    ROW("ph_heap_destroy not a heap", r_destroy_junk, PH_EINVAL),
    ROW("ph_heap_destroy with a domain attached", r_destroy_attached,
        PH_ESTATE),
    ROW("ph_heap_destroy twice", r_destroy_twice, PH_EINVAL),
    ROW("ph_domain_attach destroyed heap", r_attach_destroyed, PH_EINVAL),
    ROW("ph_stats_get destroyed heap", r_stats_destroyed, PH_EINVAL),
    ROW("ph_root_add/remove destroyed heap", r_root_add_destroyed, PH_EINVAL),
    ROW("ph_domain_attach NULL heap", r_attach_null, PH_EINVAL),
    ROW("ph_domain_attach not a heap", r_attach_junk, PH_EINVAL),
    ROW("ph_domain_attach out NULL", r_attach_out_null, PH_EINVAL),
    ROW("ph_domain_attach beyond max_domains", r_attach_too_many, PH_ESTATE),
    ROW("ph_domain_detach NULL", r_detach_null, PH_EINVAL),
    ROW("ph_domain_detach not a domain", r_detach_junk, PH_EINVAL),
    ROW("ph_domain_detach twice", r_detach_twice, PH_ESTATE),
    ROW("ph_domain_index NULL", r_index_null, PH_EINVAL),
    ROW("ph_domain_index detached", r_index_detached, PH_EINVAL),
    ROW("ph_domain_heap NULL", r_domain_heap_null, PH_EINVAL),
    ROW("ph_domain_heap not a domain", r_domain_heap_junk, PH_EINVAL),
    /* allocation */
    ROW("ph_alloc NULL domain", r_alloc_null, PH_EINVAL),
    ROW("ph_alloc not a domain", r_alloc_junk, PH_EINVAL),
    ROW("ph_alloc wosize 0", r_alloc_wosize0, PH_EINVAL),
    ROW("ph_alloc wosize PH_MAX_WOSIZE+1", r_alloc_wosize_max1, PH_EINVAL),
    ROW("ph_alloc wosize SIZE_MAX", r_alloc_wosize_sizemax, PH_EINVAL),
    ROW("ph_alloc tag 256", r_alloc_tag256, PH_EINVAL),
    ROW("ph_alloc tag UINT32_MAX", r_alloc_tag_uintmax, PH_EINVAL),
    ROW("ph_alloc large block tag 256", r_alloc_tag_large256, PH_EINVAL),
    ROW("ph_alloc tag 255 (valid)", r_alloc_tag255, PH_OK),
    ROW("ph_alloc detached domain", r_alloc_detached, PH_ESTATE),
    ROW("ph_alloc inside a blocking section", r_alloc_blocking, PH_ESTATE),
    ROW("ph_alloc PH_MAX_WOSIZE (8 TiB, valid)", r_alloc_huge_max, PH_ENOMEM),
    ROW("ph_alloc 2^37 words (1 TiB, valid)", r_alloc_huge_1t, PH_ENOMEM),
    ROW("ph_alloc small blocks past heap_limit", r_heap_limit_small, PH_ENOMEM),
    ROW("ph_alloc large block past heap_limit", r_heap_limit_large, PH_ENOMEM),
    ROW("ph_last_error NULL", r_last_error_null, PH_EINVAL),
    ROW("ph_last_error not a domain", r_last_error_junk, PH_EINVAL),
    /* roots */
    ROW("ph_scope_close twice", r_scope_close_twice, PH_ESTATE),
    ROW("ph_scope_close out of order", r_scope_close_out_of_order, PH_ESTATE),
    ROW("ph_scope_close mark never opened", r_scope_close_never_opened,
        PH_ESTATE),
    ROW("ph_scope_close NULL", r_scope_close_null, PH_EINVAL),
    ROW("ph_scope_open NULL", r_scope_open_null, PH_EINVAL),
    ROW("ph_root NULL", r_root_null, PH_EINVAL),
    ROW("ph_scope_open/ph_root/ph_scope_close detached", r_scope_detached,
        PH_ESTATE),
    ROW("ph_scope_open detached: ph_last_error", r_scope_open_detached_error,
        PH_ESTATE),
    ROW("ph_root detached: ph_last_error", r_root_detached_error, PH_ESTATE),
    ROW("ph_root_add NULL heap", r_root_add_null_heap, PH_EINVAL),
    ROW("ph_root_add not a heap", r_root_add_junk_heap, PH_EINVAL),
    ROW("ph_root_add NULL slot", r_root_add_null_slot, PH_EINVAL),
    ROW("ph_root_add misaligned slot", r_root_add_misaligned, PH_EINVAL),
    ROW("ph_root_add twice", r_root_add_twice, PH_EINVAL),
    ROW("ph_root_remove unregistered", r_root_remove_unregistered, PH_EINVAL),
    ROW("ph_root_remove twice", r_root_remove_twice, PH_EINVAL),
    ROW("ph_root_remove NULL slot", r_root_remove_null, PH_EINVAL),
    ROW("ph_root_remove NULL heap", r_root_remove_null_heap, PH_EINVAL),
    /* stop-the-world */
    ROW("ph_collect NULL", r_collect_null, PH_EINVAL),
    ROW("ph_compact NULL", r_compact_null, PH_EINVAL),
    ROW("ph_verify NULL", r_verify_null, PH_EINVAL),
    ROW("ph_census NULL fn and domain", r_census_null, PH_EINVAL),
    ROW("ph_census NULL domain", r_census_null_domain, PH_EINVAL),
    ROW("ph_census NULL fn", r_census_null_fn, PH_EINVAL),
    ROW("ph_collect not a domain", r_collect_junk, PH_EINVAL),
    ROW("ph_collect/compact/verify/census detached", r_stw_detached, PH_ESTATE),
    ROW("ph_collect/compact inside a blocking section", r_collect_blocking,
        PH_ESTATE),
    ROW("ph_verify why NULL, why_size 100", r_verify_why_null, PH_OK),
    ROW("ph_blocking_enter/leave NULL", r_blocking_null, PH_OK),
    ROW("ph_blocking_enter/leave not a domain", r_blocking_junk, PH_OK),
    ROW("ph_safepoint NULL (ignored)", r_safepoint_null, PH_OK),
    ROW("ph_safepoint not a domain (ignored)", r_safepoint_junk, PH_OK),
    ROW("ph_safepoint detached (ignored)", r_safepoint_detached, PH_OK),
    ROW("ph_stats_get NULL heap", r_stats_null, PH_EINVAL),
    ROW("ph_stats_get NULL out", r_stats_out_null, PH_EINVAL),
    ROW("ph_stats_get not a heap", r_stats_junk, PH_EINVAL),
    /* PH_DEBUG builds only */
    DEBUG_ROW("ph_blocking_leave without enter (asserts)",
              r_blocking_leave_unbalanced, PH_ESTATE),
    /* another thread's domain: every build (issue 13) */
    ROW("ph_check_domain from another thread", r_foreign_check, PH_ESTATE),
    ROW("ph_alloc from another thread", r_foreign_alloc, PH_ESTATE),
    ROW("ph_collect from another thread", r_foreign_collect, PH_ESTATE),
    ROW("ph_compact from another thread", r_foreign_compact, PH_ESTATE),
    ROW("ph_verify from another thread", r_foreign_verify, PH_ESTATE),
    ROW("ph_scope_open/ph_root from another thread", r_foreign_roots,
        PH_ESTATE),
    ROW("ph_scope_close from another thread", r_foreign_scope_close, PH_ESTATE),
    ROW("ph_domain_detach from another thread", r_foreign_detach, PH_ESTATE),
};

static void *warm_thread(void *arg) {
  return arg;
}

static void test_bad_input_table(void **state) {
  (void)state;
  size_t n = sizeof rows / sizeof rows[0], ran = 0, skipped = 0, failed = 0;
  char why[256];
  /* glibc caches the stacks of joined threads (one mapping and its guard
   * each): make that happen before the baseline is taken. */
  pthread_t warm;
  assert_int_equal(pthread_create(&warm, NULL, warm_thread, NULL), 0);
  assert_int_equal(pthread_join(warm, NULL), 0);
  long base = tu_maps_lines();
  assert_int_equal(ph_heap_create(NULL, &H), PH_OK);
  assert_int_equal(ph_domain_attach(H, &D), PH_OK);
  /* some data that must survive every row */
  ru_table t;
  tu_rng rng = {42};
  assert_int_equal(ru_table_init(&t, D, 2000), PH_OK);
  for (size_t i = 0; i < t.n; i++)
    assert_int_equal(ru_put(&t, i, 1 + tu_below(&rng, 40), 0, tu_next(&rng)),
                     PH_OK);
  for (size_t i = 0; i < n; i++) {
    const row *r = &rows[i];
    if (r->debug_only && !TU_DEBUG) {
      skipped++;
      continue;
    }
    int got = r->run();
    ran++;
    if (got != r->expect) {
      failed++;
      print_error("row %zu %s: got %d (%s), expected %d (%s)\n", i, r->what,
                  got, ph_strerror(got), r->expect, ph_strerror(r->expect));
    }
    if (ph_verify(D, why, sizeof why) != PH_OK)
      fail_msg("row %zu %s: heap broken afterwards: %s", i, r->what, why);
    if (ph_alloc(D, 2, 0) == 0)
      fail_msg("row %zu %s: heap no longer allocates", i, r->what);
  }
  assert_int_equal(ph_compact(D), PH_OK);
  assert_int_equal(ru_table_check(&t, why, sizeof why), 0);
  ru_table_fini(&t);
  assert_int_equal(ph_domain_detach(D), PH_OK);
  static ru_ranges rr;
  ru_heap_ranges(H, &rr);
  assert_int_equal(ph_heap_destroy(H), PH_OK);
  assert_int_equal(ru_ranges_mapped(&rr), 0);
  if (TU_MAPS_EXACT && tu_maps_lines() != base)
    fail_msg("mappings %ld after destroy, %ld before", tu_maps_lines(), base);
  print_message("badinput: %zu rows, %zu run, %zu skipped (need PH_DEBUG), "
                "%zu failed\n",
                n, ran, skipped, failed);
  assert_int_equal(failed, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_input_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
