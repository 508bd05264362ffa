/* heap/registry.c -- the live-heap registry (DESIGN.md: heap.registry). */
#include "heap/heap.h"

/* The live-heap registry: every heap between create and destroy, so that
 * a pointer that is not a live heap (destroyed, or never one) is refused
 * without being dereferenced.  Lock order: live_lock, then heap->lock.  It
 * covers calls made after ph_heap_destroy returned, not calls racing with
 * it (those are the embedder's bug). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ph_heap *live_heaps; /* (live_lock) */

static int registry_find_live_locked(const struct ph_heap *h) {
  for (struct ph_heap *p = live_heaps; p; p = p->live_next)
    if (p == h)
      return 1;
  return 0;
}

int ph_heap_is_live(const struct ph_heap *h) {
  if (!h)
    return 0;
  pthread_mutex_lock(&live_lock);
  int live = registry_find_live_locked(h);
  pthread_mutex_unlock(&live_lock);
  return live;
}

int ph_heap_lock_live(struct ph_heap *h) {
  if (!h)
    return PH_EINVAL;
  pthread_mutex_lock(&live_lock);
  int live = registry_find_live_locked(h);
  if (live) /* destroy needs live_lock, then this lock: h stays */
    pthread_mutex_lock(&h->lock);
  pthread_mutex_unlock(&live_lock);
  return live ? PH_OK : PH_EINVAL;
}

void ph_registry_add(struct ph_heap *h) {
  pthread_mutex_lock(&live_lock);
  h->live_next = live_heaps;
  live_heaps = h;
  pthread_mutex_unlock(&live_lock);
}

/* Take h off the registry if it is a live heap with no domain attached
 * (it is marked PH_SIG_DEAD under h->lock); PH_EINVAL if it is not live,
 * PH_ESTATE if domains are attached. */
int ph_registry_remove(struct ph_heap *h) {
  pthread_mutex_lock(&live_lock);
  if (!registry_find_live_locked(h)) { /* destroyed already, or never a heap */
    pthread_mutex_unlock(&live_lock);
    return PH_EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int attached = 0;
  for (unsigned i = 0; i < h->cfg.max_domains; i++)
    attached |= h->slots[i].dom != NULL;
  if (attached) {
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&live_lock);
    return PH_ESTATE;
  }
  h->sig = PH_SIG_DEAD;
  pthread_mutex_unlock(&h->lock);
  for (struct ph_heap **p = &live_heaps; *p; p = &(*p)->live_next)
    if (*p == h) {
      *p = h->live_next;
      break;
    }
  pthread_mutex_unlock(&live_lock);
  return PH_OK;
}
