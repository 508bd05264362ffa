/* tests/test_fuzz_replay.c -- replays the differential fuzzer in CI.
 *
 * Feeds every file of tests/fuzz_corpus/ (or $POOLHEAP_FUZZ_CORPUS) to
 * tests/fuzz_model.c's LLVMFuzzerTestOneInput, then a fixed number of fresh
 * random inputs ($POOLHEAP_FUZZ_RUNS, default 300) generated from a seed that
 * is printed and accepted back ($POOLHEAP_SEED).  A mismatch abort()s with a
 * description.  POOLHEAP_FUZZ_WRITE=DIR also writes the fresh inputs there
 * (used to seed the corpus). */
#include "test_util.h" /* the RNG and the seed (POOLHEAP_SEED), cmocka */

#include "fuzz_model.c"

#include <dirent.h>
#include <time.h>

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_corpus(void **state) {
  (void)state;
  const char *dir = getenv("POOLHEAP_FUZZ_CORPUS");
  if (!dir)
    dir = "tests/fuzz_corpus";
  DIR *dp = opendir(dir);
  assert_non_null(dp);
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      names = realloc(names, cap * sizeof *names);
      assert_non_null(names);
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(dp);
  if (n > 1)
    qsort(names, n, sizeof *names, name_cmp);
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(1 << 20);
    assert_non_null(buf);
    size_t len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    fz_input_name = path;
    LLVMFuzzerTestOneInput(buf, len);
    bytes += len;
    free(buf);
    free(names[i]);
  }
  free(names);
  fz_input_name = NULL;
  printf("fuzz replay: %zu corpus inputs (%zu bytes) from %s, 0 mismatches\n",
         n, bytes, dir);
  assert_true(n >= 20);
}

static void test_fresh(void **state) {
  (void)state;
  /* the same inputs on every run unless POOLHEAP_SEED names others */
  uint64_t seed = tu_seed_from("fuzz replay", 1, 20240601u);
  const char *r = getenv("POOLHEAP_FUZZ_RUNS");
  long runs = r ? atol(r) : 300;
  const char *wdir = getenv("POOLHEAP_FUZZ_WRITE");
  printf("fuzz replay: %ld fresh inputs, seed %llu (POOLHEAP_SEED)\n", runs,
         (unsigned long long)seed);
  fflush(stdout);
  tu_rng st = {tu_mix(seed, 0)};
  uint8_t buf[1024];
  char name[64];
  for (long k = 0; k < runs; k++) {
    size_t len = 1 + tu_next(&st) % sizeof buf;
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)tu_next(&st);
    snprintf(name, sizeof name, "fresh #%ld of seed %llu", k,
             (unsigned long long)seed);
    fz_input_name = name;
    if (wdir) {
      char path[4096];
      snprintf(path, sizeof path, "%s/fresh-%llu-%ld", wdir,
               (unsigned long long)seed, k);
      FILE *f = fopen(path, "wb");
      assert_non_null(f);
      fwrite(buf, 1, len, f);
      fclose(f);
    }
    LLVMFuzzerTestOneInput(buf, len);
  }
  fz_input_name = NULL;
  printf("fuzz replay: %ld fresh inputs, 0 mismatches\n", runs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_corpus),
      cmocka_unit_test(test_fresh),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
