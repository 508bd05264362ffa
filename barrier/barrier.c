/* barrier/barrier.c -- a reusable barrier for the participants of a
 * stop-the-world section (DESIGN.md: barrier.sense).
 *
 * Mutex + condition variable with a generation counter: correct with more
 * domains than cores (waiters sleep instead of spinning), and every write
 * made before ph_barrier_wait happens-before every read made after it in any
 * participant (the mutex orders them), which is what the phases rely on. */
#include "barrier/barrier.h"

void ph_barrier_init(ph_barrier *b) {
  pthread_mutex_init(&b->m, NULL);
  pthread_cond_init(&b->c, NULL);
  b->n = 1;
  b->waiting = 0;
  b->gen = 0;
}

void ph_barrier_destroy(ph_barrier *b) {
  pthread_mutex_destroy(&b->m);
  pthread_cond_destroy(&b->c);
}

/* Only while nobody waits (between sections). */
void ph_barrier_reset(ph_barrier *b, unsigned n) {
  pthread_mutex_lock(&b->m);
  PH_ASSERT(b->waiting == 0);
  b->n = n;
  pthread_mutex_unlock(&b->m);
}

int ph_barrier_wait(ph_barrier *b) {
  pthread_mutex_lock(&b->m);
  uint64_t gen = b->gen;
  if (++b->waiting == b->n) {
    b->waiting = 0;
    b->gen++;
    pthread_cond_broadcast(&b->c);
    pthread_mutex_unlock(&b->m);
    return 1;
  }
  while (gen == b->gen)
    pthread_cond_wait(&b->c, &b->m);
  pthread_mutex_unlock(&b->m);
  return 0;
}
