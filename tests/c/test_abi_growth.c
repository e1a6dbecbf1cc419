/* Plays callers compiled against older and newer headers: the config and stats
 * structs carry their size, fields are only appended, and the library fills in
 * defaults for what an older caller's struct lacks, writes no more than it holds,
 * and refuses settings of a newer caller that it does not know. Also checks the
 * integer version against the header's. */
#include <stdio.h>
#include <time.h>

#include "check.h"

/* eh_leaderboard_config and eh_leaderboard_stats as the first sized header
 * declared them: before max_future_secs and future_refused were appended. */
typedef struct {
  size_t struct_size;
  double decay_factor;
  double decay_period_secs;
  uint64_t max_users;
} old_leaderboard_config;

typedef struct {
  size_t struct_size;
  uint64_t len;
  uint64_t evicted;
  uint64_t refused;
  uint64_t rebases;
  int64_t landmark;
  uint64_t heap_bytes;
} old_leaderboard_stats;

/* A newer header's config: one more field after everything this library knows. */
typedef struct {
  eh_leaderboard_config known;
  uint64_t from_the_future;
} newer_leaderboard_config;

static void test_older_leaderboard_caller(void) {
  old_leaderboard_config config = {sizeof config, 0.5, 86400.0, 10};
  eh_leaderboard *lb = NULL;
  CHECK_OK(eh_leaderboard_new((const eh_leaderboard_config *)&config, &lb));
  /* The missing max_future_secs took its default, one day of skew. */
  int64_t now = (int64_t)time(NULL);
  CHECK_OK(eh_leaderboard_add(lb, STR("a"), 1.0, now + 3600));
  CHECK_STATUS(eh_leaderboard_add(lb, STR("b"), 1.0, now + 3 * 86400), EH_INVALID_ARGUMENT);

  /* Stats: only the old struct's bytes are written; the guard after it stays. */
  struct {
    old_leaderboard_stats stats;
    uint64_t guard;
  } out = {.stats = {.struct_size = sizeof(old_leaderboard_stats)}, .guard = 0xfeedfacecafebeefULL};
  CHECK_OK(eh_leaderboard_get_stats(lb, (eh_leaderboard_stats *)&out.stats));
  CHECK(out.stats.struct_size == sizeof(old_leaderboard_stats));
  CHECK(out.stats.len == 1);
  CHECK(out.guard == 0xfeedfacecafebeefULL);

  /* This header's struct gets the new field. */
  eh_leaderboard_stats stats = {.struct_size = sizeof stats};
  CHECK_OK(eh_leaderboard_get_stats(lb, &stats));
  CHECK(stats.struct_size == sizeof stats && stats.future_refused == 1);
  eh_leaderboard_free(lb);
}

static void test_newer_and_unsized_callers(void) {
  eh_leaderboard *lb = NULL;
  newer_leaderboard_config newer = {{sizeof newer, 0.9, 0, 0, 0, NULL, 0}, 0};
  /* Unknown trailing fields left zero (at their defaults): accepted. */
  CHECK_OK(eh_leaderboard_new((const eh_leaderboard_config *)&newer, &lb));
  eh_leaderboard_free(lb);
  /* A setting this library does not know: refused, not silently ignored. */
  newer.from_the_future = 7;
  lb = NULL;
  CHECK_STATUS(eh_leaderboard_new((const eh_leaderboard_config *)&newer, &lb),
               EH_INVALID_ARGUMENT);
  CHECK(lb == NULL);
  CHECK(strstr(eh_last_error(), "does not know") != NULL);
  /* A struct whose size was never set. */
  eh_leaderboard_config unsized = {0, 0.9, 0, 0, 0, NULL, 0};
  CHECK_STATUS(eh_leaderboard_new(&unsized, &lb), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "struct_size") != NULL);
  /* NULL still means all defaults. */
  CHECK_OK(eh_leaderboard_new(NULL, &lb));
  eh_leaderboard_stats stats = {0};
  CHECK_STATUS(eh_leaderboard_get_stats(lb, &stats), EH_INVALID_ARGUMENT);
  eh_leaderboard_free(lb);
}

/* eh_processor_config / eh_processor_stats before max_future_skew_secs and
 * future_refused were appended. */
typedef struct {
  size_t struct_size;
  uint64_t capacity;
  uint32_t workers, batch_size, flush_interval_ms;
  int32_t overflow;
  uint32_t block_timeout_ms;
  int32_t max_retries;
  uint32_t retry_backoff_ms;
  int32_t clock;
  uint32_t window_minutes, cms_depth, cms_width, topk_capacity;
} old_processor_config;

typedef struct {
  size_t struct_size;
  uint64_t pushed, accepted, dropped, processed, delivered, discarded, batches,
      failures, retries, dead_lettered, dead_letter_batches, queue_len;
} old_processor_stats;

static void test_older_processor_caller(void) {
  old_processor_config config;
  memset(&config, 0, sizeof config);
  config.struct_size = sizeof config;
  config.capacity = 1024;
  eh_processor *p = NULL;
  CHECK_OK(eh_processor_new((const eh_processor_config *)&config, &p));
  int64_t now = (int64_t)time(NULL);
  /* The missing skew took its default of one day. */
  CHECK_OK(eh_processor_push(p, STR("message"), STR("u1"), STR("c1"), now + 3600, NULL, 0));
  CHECK_STATUS(eh_processor_push(p, STR("message"), STR("u2"), STR("c1"), now + 3 * 86400,
                                 NULL, 0),
               EH_INVALID_ARGUMENT);
  struct {
    old_processor_stats stats;
    uint64_t guard;
  } out = {.stats = {.struct_size = sizeof(old_processor_stats)}, .guard = 0x0123456789abcdefULL};
  CHECK_OK(eh_processor_get_stats(p, (eh_processor_stats *)&out.stats));
  CHECK(out.stats.struct_size == sizeof(old_processor_stats));
  CHECK(out.stats.accepted == 1);
  CHECK(out.guard == 0x0123456789abcdefULL);
  eh_processor_stats stats = {.struct_size = sizeof stats};
  CHECK_OK(eh_processor_get_stats(p, &stats));
  CHECK(stats.future_refused == 1);
  eh_processor_free(p);
}

static void test_version_number(void) {
  CHECK(eh_version_number() == EH_VERSION_NUMBER);
  CHECK(EH_VERSION_NUMBER ==
        EH_VERSION_MAJOR * 1000000 + EH_VERSION_MINOR * 1000 + EH_VERSION_PATCH);
  char text[64];
  snprintf(text, sizeof text, "%u.%u.%u", EH_VERSION_MAJOR, EH_VERSION_MINOR,
           EH_VERSION_PATCH);
  CHECK(strcmp(text, eh_version()) == 0);
}

int main(void) {
  test_older_leaderboard_caller();
  test_newer_and_unsized_callers();
  test_older_processor_caller();
  test_version_number();
  printf("test_abi_growth: all checks passed\n");
  return 0;
}
