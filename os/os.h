/* os/os.h -- the OS memory layer (DESIGN.md: os).
 *
 * The bottom layer: it includes nothing of poolheap but the public header.
 *
 * The only place poolheap talks to the kernel about memory.  Every range is in
 * one of three states, and each function is one transition:
 *
 *   None --reserve--> Reserved --commit--> Committed --decommit--> Reserved
 *   Reserved|Committed --release--> None
 *
 * Reserved: mapped read/write with MAP_NORESERVE, no page is resident and none
 *   is charged to the heap; reading gives zeros.  One kernel mapping per
 *   reservation (alignment trimming leaves exactly one).
 * Committed: the heap may touch it; pages become resident on first touch.
 *   Counted in committed bytes (what heap_limit bounds).
 * decommit returns the pages (madvise DONTNEED, or FREE when lazy) without
 *   changing the mapping, so it never adds a kernel mapping.
 * release unmaps a whole reservation (never a part of one).
 *
 * Every function returns PH_OK or PH_ENOMEM (PH_EINVAL for a range the layer
 * did not hand out, caught by the debug registry) and writes its
 * out-parameters only on success.  Accounting lives in a ph_os_acct that the
 * caller owns (one per heap); its counters are atomics so that ph_stats_get
 * may read them from any thread.
 */
#ifndef PH_OS_OS_H
#define PH_OS_OS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------- assertions */
/* PH_DEBUG 0: release (bad input returns errors, no internal asserts).
 * PH_DEBUG 1: cheap assertions.  PH_DEBUG 2: also expensive whole-structure
 * checks (heap verification around every collection) and poisoning. */
#ifndef PH_DEBUG
#define PH_DEBUG 0
#endif
void ph_assert_fail(const char *cond, const char *file, int line);
#if PH_DEBUG
#define PH_ASSERT(c) ((c) ? (void)0 : ph_assert_fail(#c, __FILE__, __LINE__))
#else
#define PH_ASSERT(c) ((void)0)
#endif
#define PH_EXPENSIVE (PH_DEBUG >= 2)
#define PH_POISON (PH_DEBUG >= 1)
#define PH_POISON_WORD ((ph_value)0xdeadbeefdeadbee0ull)

/* A monotonic clock in nanoseconds (phase timings, events). */
uint64_t ph_now_ns(void);

#define PH_HUGE_PAGE_SIZE ((size_t)2 << 20)

typedef struct ph_os_acct {
  /* Written by the heap's single OS caller at a time (heap lock or a
   * stop-the-world section); read by anyone: relaxed atomics. */
  _Atomic uint64_t reserved;       /* bytes in Reserved or Committed */
  _Atomic uint64_t committed;      /* bytes in Committed */
  _Atomic uint64_t mappings;       /* reservations alive */
  _Atomic uint64_t huge_fallbacks; /* explicit huge reservations refused */
  /* Debug registry of live reservations (PH_DEBUG builds); NULL otherwise.
   * Guarded by the same discipline as above (one caller at a time). */
  struct ph_os_reg *reg;
} ph_os_acct;

/* How a reservation was made. */
enum { PH_OS_HUGE_NONE = 0, PH_OS_HUGE_THP = 1, PH_OS_HUGE_EXPLICIT = 2 };

/* How decommit returns pages. */
enum { PH_OS_DECOMMIT_NOW = 0, PH_OS_DECOMMIT_LAZY = 1 };

void ph_os_acct_init(ph_os_acct *a);
/* Frees the registry; in debug builds asserts no reservation is alive. */
void ph_os_acct_fini(ph_os_acct *a);

/* None -> Reserved.  size and align are multiples of the page size, align a
 * power of two.  huge: PH_OS_HUGE_NONE, _THP (madvise MADV_HUGEPAGE on the
 * whole, 2 MiB-aligned range) or _EXPLICIT (MAP_HUGETLB; on refusal falls
 * back to normal pages and counts huge_fallbacks).  *got_huge (if not NULL)
 * tells what was obtained.  PH_ENOMEM if the kernel refused. */
int ph_os_reserve(ph_os_acct *a, size_t size, size_t align, int huge,
                  void **out, int *got_huge);
/* Reserved -> Committed (accounting; the kernel supplies pages on touch). */
int ph_os_commit(ph_os_acct *a, void *p, size_t len);
/* Committed -> Reserved: the pages go back to the kernel (RSS drops at once
 * unless lazy).  Lazy uses MADV_FREE and falls back to DONTNEED. */
int ph_os_decommit(ph_os_acct *a, void *p, size_t len, int lazy);
/* Committed stays Committed: the pages' contents go back to the kernel
 * (madvise DONTNEED, or FREE when lazy) but the range stays counted, since
 * touching it again refaults zero pages without asking (heap.release.trim).
 * Counted as a decommit call by the fault injection. */
int ph_os_discard(ph_os_acct *a, void *p, size_t len, int lazy);
/* Reserved|Committed -> None for a whole reservation made by ph_os_reserve.
 * committed_len is how much of it is still counted as committed. */
int ph_os_release(ph_os_acct *a, void *p, size_t size, size_t committed_len);

/* A thread stack (barrier.helpers): size bytes (a multiple of the page size)
 * above a PROT_NONE guard page, one mapping of size + a page that
 * ph_os_stack_unmap gives back whole.  Not heap memory: not accounted.
 * *out (the stack's low end) is written only on success; PH_ENOMEM if the
 * kernel refused. */
int ph_os_stack_map(size_t size, void **out);
void ph_os_stack_unmap(void *stack, size_t size);

/* The collector's scratch (mark.stack.scratch): an anonymous read/write
 * mapping of at least len bytes (rounded up to pages), not heap memory: not
 * accounted.  ph_os_scratch_map: *out written only on success, PH_ENOMEM if
 * the kernel refused.  ph_os_scratch_grow: the same contents at a larger
 * length (the mapping may move: mremap); on failure the old one is
 * unchanged.  ph_os_scratch_unmap: gone whole (NULL: nothing). */
int ph_os_scratch_map(size_t len, void **out);
int ph_os_scratch_grow(void *p, size_t old_len, size_t len, void **out);
void ph_os_scratch_unmap(void *p, size_t len);

/* Scratch arrays with malloc's interface whose memory leaves the process at
 * the free (os.scratch.gone): an array of a page or more is a scratch
 * mapping of its own (ph_os_scratch_map; grown with mremap), a smaller one
 * is malloc'd.  For arrays that live a few phases (a compaction's plan and
 * records): glibc keeps what is freed in its heap, resident, for as long as
 * its trim threshold says (32 MiB once the process freed a 16 MiB block).
 * ph_os_scratch_alloc / _zalloc (zeroed; n * size checked for overflow) /
 * _realloc (contents kept up to the smaller length; p NULL: an alloc; on
 * failure p is unchanged) return NULL when refused; ph_os_scratch_free(NULL)
 * does nothing.  Only pointers of these functions go to _realloc and _free.
 * 16-byte alignment, as malloc's. */
void *ph_os_scratch_alloc(size_t len);
void *ph_os_scratch_zalloc(size_t n, size_t size);
void *ph_os_scratch_realloc(void *p, size_t len);
void ph_os_scratch_free(void *p);

/* The C allocator's state for the calling thread, made now
 * (compact.scratch): glibc binds a thread to a malloc arena at its first
 * malloc and, if none is free, creates one (a 64 MiB reservation: two kernel
 * mappings, which outlive the thread).  poolheap's own threads call it when
 * they start, so that their first malloc inside a section (sweep records, a
 * mark packet, a compaction's plan) maps nothing. */
void ph_os_thread_malloc_init(void);

/* Address space that a new reservation may take: RLIMIT_AS minus what the
 * process maps now (SIZE_MAX when unlimited). */
size_t ph_os_as_available(void);
/* What the machine can back: physical memory plus swap, in bytes
 * (SIZE_MAX if unknown). */
size_t ph_os_commit_cap(void);
/* The page size. */
size_t ph_os_page_size(void);
/* Online CPUs, read once (at least 1). */
unsigned ph_os_ncpus(void);
/* Lines of /proc/self/maps (kernel mappings of the whole process), or -1. */
long ph_os_process_mappings(void);
/* Resident set size of the process in bytes (VmRSS), or 0. */
uint64_t ph_os_process_rss(void);

/* A fault-injection site, for tests (DESIGN.md: tests.faults): the one
 * engine behind os/'s hooks below and gc/'s table hooks (gc/fault.c).
 * ph_fault_site_set arms it: calls of the kinds in op_mask are counted from
 * then on; the nth one (1-based) fails, and so does every later one if
 * sticky; nth = 0 turns it off.  ph_fault_site_hit counts one call of kind
 * op and returns 1 if it must fail.  Process-wide when static; relaxed
 * atomics (the counters order nothing else). */
typedef struct ph_fault_site {
  _Atomic unsigned mask;
  _Atomic uint64_t nth;
  _Atomic int sticky;
  _Atomic uint64_t calls, hits;
} ph_fault_site;
void ph_fault_site_set(ph_fault_site *s, unsigned op_mask, uint64_t nth,
                       int sticky);
int ph_fault_site_hit(ph_fault_site *s, unsigned op);
uint64_t ph_fault_site_calls(ph_fault_site *s);
uint64_t ph_fault_site_hits(ph_fault_site *s);

/* Fault injection, for tests (DESIGN.md: tests.faults).  Calls of the kinds in
 * op_mask are counted from the moment of the call; the nth one (1-based)
 * fails with PH_ENOMEM as if the kernel had refused, and so does every later
 * one if sticky.  nth = 0 turns injection off.  Global to the process. */
enum {
  PH_OS_OP_RESERVE = 1,
  PH_OS_OP_COMMIT = 2,
  PH_OS_OP_DECOMMIT = 4,
  PH_OS_OP_RELEASE = 8,
  PH_OS_OP_ALL = 15
};
void ph_os_fault_set(unsigned op_mask, uint64_t nth, int sticky);
/* Calls of the kinds in op_mask since the last ph_os_fault_set. */
uint64_t ph_os_fault_calls(void);
/* Injected failures since the last ph_os_fault_set. */
uint64_t ph_os_fault_hits(void);

#endif
