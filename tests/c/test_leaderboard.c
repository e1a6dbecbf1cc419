/* C smoke test of eh_leaderboard: create, add, top, rank, around, save, load, free,
 * and the error paths with their status codes. */
#include <math.h>
#include <stdio.h>

#include "check.h"

#define T0 1700000000
#define DAY 86400

static int id_equals(const eh_ranking *r, size_t i, const char *expected) {
  const eh_rank_row *row = &r->rows[i];
  return row->id_len == strlen(expected) &&
         memcmp(r->ids + row->id_offset, expected, row->id_len) == 0;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fputs(text, f) >= 0);
  CHECK(fclose(f) == 0);
}

static void test_basic_ranking(void) {
  eh_leaderboard_config config = {.struct_size = sizeof config, .decay_factor = 0.5, .decay_period_secs = DAY};
  eh_leaderboard *lb = NULL;
  CHECK_OK(eh_leaderboard_new(&config, &lb));
  CHECK(lb != NULL);

  CHECK_OK(eh_leaderboard_add(lb, STR("alice"), 100.0, T0));
  CHECK_OK(eh_leaderboard_add(lb, STR("bob"), 80.0, T0 + DAY));
  CHECK_OK(eh_leaderboard_add(lb, STR("carol"), 10.0, T0));
  CHECK_OK(eh_leaderboard_add(lb, STR("carol"), 10.0, T0 - DAY)); /* out of order */
  /* Nothing else uses the board, so the non-blocking add goes through. */
  CHECK_OK(eh_leaderboard_try_add(lb, STR("dave"), 1.0, T0));
  CHECK_OK(eh_leaderboard_remove(lb, STR("dave")));

  size_t len = 0;
  CHECK_OK(eh_leaderboard_len(lb, &len));
  CHECK(len == 3);

  /* At T0 + DAY: bob 80, alice 50, carol 5 + 2.5. */
  eh_ranking top;
  memset(&top, 0, sizeof top);
  CHECK_OK(eh_leaderboard_top(lb, 0, 10, T0 + DAY, &top));
  CHECK(top.len == 3);
  CHECK(id_equals(&top, 0, "bob") && id_equals(&top, 1, "alice") && id_equals(&top, 2, "carol"));
  CHECK(top.rows[0].rank == 1 && top.rows[2].rank == 3);
  CHECK(fabs(top.rows[1].score - 50.0) < 1e-9);
  CHECK(fabs(top.rows[2].score - 7.5) < 1e-9);
  CHECK(top.rows[2].last_update == T0);
  /* rows and ids form one block of `size` bytes */
  CHECK((const uint8_t *)top.rows + top.size == top.ids + strlen("bob alice carol "));
  CHECK(strcmp((const char *)top.ids + top.rows[1].id_offset, "alice") == 0); /* NUL-terminated */
  eh_ranking_free(&top);
  CHECK(top.len == 0 && top.owner == NULL);
  eh_ranking_free(&top); /* second free is a no-op */
  eh_ranking_free(NULL);

  eh_rank_info info;
  CHECK_OK(eh_leaderboard_rank(lb, STR("alice"), T0 + DAY, &info));
  CHECK(info.rank == 2);
  CHECK(fabs(info.score - 50.0) < 1e-9);
  CHECK(info.last_update == T0);

  eh_ranking around;
  CHECK_OK(eh_leaderboard_around(lb, STR("carol"), 1, T0 + DAY, &around));
  CHECK(around.len == 2);
  CHECK(id_equals(&around, 0, "alice") && around.rows[1].rank == 3);
  eh_ranking_free(&around);

  /* Past the end: zero rows, still freed. */
  CHECK_OK(eh_leaderboard_top(lb, 10, 5, T0, &top));
  CHECK(top.len == 0);
  eh_ranking_free(&top);

  CHECK_OK(eh_leaderboard_set(lb, STR("carol"), 1000.0, T0 + DAY));
  CHECK_OK(eh_leaderboard_rank(lb, STR("carol"), T0 + DAY, &info));
  CHECK(info.rank == 1 && fabs(info.score - 1000.0) < 1e-9);
  CHECK_OK(eh_leaderboard_remove(lb, STR("carol")));
  CHECK_STATUS(eh_leaderboard_remove(lb, STR("carol")), EH_NOT_FOUND);
  CHECK_STATUS(eh_leaderboard_rank(lb, STR("carol"), 0, &info), EH_NOT_FOUND);

  eh_leaderboard_free(lb);
  eh_leaderboard_free(NULL);
}

static void test_error_paths(void) {
  eh_leaderboard *lb = NULL;
  eh_leaderboard_config bad = {.struct_size = sizeof bad, .decay_factor = 1.5};
  CHECK_STATUS(eh_leaderboard_new(&bad, &lb), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "decay_factor") != NULL);
  CHECK(lb == NULL); /* out-params are written only on success */
  bad.decay_factor = NAN;
  CHECK_STATUS(eh_leaderboard_new(&bad, &lb), EH_INVALID_ARGUMENT);
  bad.decay_factor = 0.9;
  bad.decay_period_secs = -1;
  CHECK_STATUS(eh_leaderboard_new(&bad, &lb), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_new(NULL, NULL), EH_INVALID_ARGUMENT);

  CHECK_OK(eh_leaderboard_new(NULL, &lb));
  CHECK_STATUS(eh_leaderboard_add(NULL, STR("a"), 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "NULL") != NULL);
  const uint8_t bad_utf8[] = {'a', 0xff, 0xfe};
  CHECK_STATUS(eh_leaderboard_add(lb, bad_utf8, sizeof bad_utf8, 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "UTF-8") != NULL);
  CHECK_STATUS(eh_leaderboard_add(lb, NULL, 3, 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_add(lb, NULL, 0, 1.0, T0), EH_INVALID_ARGUMENT); /* empty id */
  CHECK_STATUS(eh_leaderboard_add(lb, STR("a"), NAN, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_add(lb, STR("a"), INFINITY, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_try_add(NULL, STR("a"), 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_try_add(lb, STR("a"), NAN, T0), EH_INVALID_ARGUMENT);
  CHECK(strcmp(eh_status_str(EH_BUSY), "EH_BUSY") == 0);
  CHECK_STATUS(eh_leaderboard_top(lb, 0, 10, 0, NULL), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_leaderboard_len(lb, NULL), EH_INVALID_ARGUMENT);
  size_t len = 99;
  CHECK_OK(eh_leaderboard_len(lb, &len));
  CHECK(len == 0); /* nothing was stored by the failed calls */

  /* Capacity: refusal is EH_FULL and counted; eviction counted. */
  eh_leaderboard *small = NULL;
  eh_leaderboard_config cap = {.struct_size = sizeof cap, .decay_factor = 1.0, .max_users = 2};
  CHECK_OK(eh_leaderboard_new(&cap, &small));
  CHECK_OK(eh_leaderboard_add(small, STR("a"), 5.0, T0));
  CHECK_OK(eh_leaderboard_add(small, STR("b"), 6.0, T0));
  CHECK_STATUS(eh_leaderboard_add(small, STR("c"), 1.0, T0), EH_FULL);
  CHECK_OK(eh_leaderboard_add(small, STR("d"), 9.0, T0));
  eh_leaderboard_stats stats = {.struct_size = sizeof stats};
  CHECK_OK(eh_leaderboard_get_stats(small, &stats));
  CHECK(stats.len == 2 && stats.refused == 1 && stats.evicted == 1);
  eh_leaderboard_free(small);

  CHECK(strcmp(eh_status_str(EH_QUEUE_FULL), "EH_QUEUE_FULL") == 0);
  CHECK(strcmp(eh_status_str(12345), "EH_UNKNOWN") == 0);
  eh_leaderboard_free(lb);
}

static void test_snapshots(void) {
  char path[512], missing[512], corrupt[512], truncated[512], cpp[512];
  snprintf(path, sizeof path, "%s/board.json", TEST_DATA_DIR);
  snprintf(missing, sizeof missing, "%s/does-not-exist.json", TEST_DATA_DIR);
  snprintf(corrupt, sizeof corrupt, "%s/corrupt.json", TEST_DATA_DIR);
  snprintf(truncated, sizeof truncated, "%s/truncated.json", TEST_DATA_DIR);
  snprintf(cpp, sizeof cpp, "%s/cpp.json", TEST_DATA_DIR);

  eh_leaderboard *lb = NULL;
  CHECK_OK(eh_leaderboard_new(NULL, &lb));
  CHECK_OK(eh_leaderboard_add(lb, STR("quote\"d"), 1.0 / 3.0, T0));
  CHECK_OK(eh_leaderboard_add(lb, STR("back\\slash {}"), 2.0 / 3.0, T0 + 1));
  CHECK_OK(eh_leaderboard_add(lb, STR("\xc3\xbc" "ber"), 0.1, T0 + 2));
  CHECK_OK(eh_leaderboard_save(lb, path));

  eh_leaderboard *copy = NULL;
  CHECK_OK(eh_leaderboard_new(NULL, &copy));
  CHECK_OK(eh_leaderboard_load(copy, path));
  eh_ranking a, b;
  CHECK_OK(eh_leaderboard_top(lb, 0, 10, T0 + 5 * DAY, &a));
  CHECK_OK(eh_leaderboard_top(copy, 0, 10, T0 + 5 * DAY, &b));
  CHECK(a.len == 3 && b.len == 3);
  CHECK(a.size == b.size);
  for (size_t i = 0; i < a.len; i++) {
    CHECK(memcmp(&a.rows[i].score, &b.rows[i].score, sizeof(double)) == 0); /* bit for bit */
    CHECK(a.rows[i].id_len == b.rows[i].id_len);
  }
  CHECK(memcmp(a.rows, b.rows, a.size) == 0);
  eh_ranking_free(&a);
  eh_ranking_free(&b);

  /* Failed loads leave the board untouched. */
  write_file(corrupt, "{\"format\":\"engagehub.leaderboard\",\"version\":1,\"entries\":[{]}");
  write_file(truncated, "{\"decay_factor\":0.95,\"entries\":[{\"user_id\":\"x\",\"sc");
  CHECK_STATUS(eh_leaderboard_load(copy, missing), EH_IO);
  CHECK(strstr(eh_last_error(), "does-not-exist.json") != NULL);
  CHECK_STATUS(eh_leaderboard_load(copy, corrupt), EH_CORRUPT);
  CHECK_STATUS(eh_leaderboard_load(copy, truncated), EH_CORRUPT);
  CHECK_STATUS(eh_leaderboard_load(copy, NULL), EH_INVALID_ARGUMENT);
  size_t len = 0;
  CHECK_OK(eh_leaderboard_len(copy, &len));
  CHECK(len == 3);

  /* The C++ extension's snapshot format. */
  write_file(cpp, "{\"decay_factor\": 0.95, \"max_users\": 100000, \"entries\": ["
                  "{\"user_id\": \"123\", \"score\": 25.0, \"last_update\": 1696284800}]}");
  CHECK_OK(eh_leaderboard_load(copy, cpp));
  eh_rank_info info;
  CHECK_OK(eh_leaderboard_rank(copy, STR("123"), 1696284800, &info));
  CHECK(info.rank == 1 && fabs(info.score - 25.0) < 1e-9);

  eh_leaderboard_free(copy);
  eh_leaderboard_free(lb);
}

/* Publishing: updates are summed per user natively and drained exactly once. */
static void test_publishing(void) {
  eh_leaderboard_config config = {.struct_size = sizeof config, .decay_factor = 1.0, .decay_period_secs = DAY};
  eh_leaderboard *lb = NULL;
  CHECK_OK(eh_leaderboard_new(&config, &lb));
  CHECK_STATUS(eh_leaderboard_publish_enable(lb, 0), EH_INVALID_ARGUMENT);
  CHECK_OK(eh_leaderboard_publish_enable(lb, 100));
  CHECK_OK(eh_leaderboard_add(lb, STR("alice"), 2.0, T0));
  CHECK_OK(eh_leaderboard_add(lb, STR("alice"), 3.0, T0 + 5));
  CHECK_OK(eh_leaderboard_set(lb, STR("bob"), 7.0, T0));
  CHECK_OK(eh_leaderboard_add(lb, STR("carol"), 1.0, T0));
  CHECK_OK(eh_leaderboard_remove(lb, STR("carol")));

  eh_leaderboard_stats stats = {0};
  stats.struct_size = sizeof stats;
  CHECK_OK(eh_leaderboard_get_stats(lb, &stats));
  CHECK(stats.pending == 3 && stats.pending_dropped == 0); /* set bob, remove carol, alice */

  eh_pending_batch batch = {0};
  CHECK_OK(eh_leaderboard_drain(lb, &batch));
  CHECK(batch.len == 3 && batch.landmark == T0);
  /* Operations first, in order; then one summed add per user. */
  CHECK(batch.rows[0].kind == EH_PENDING_SET && batch.rows[0].value == 7.0);
  CHECK(memcmp(batch.ids + batch.rows[0].id_offset, "bob", 3) == 0);
  CHECK(batch.rows[1].kind == EH_PENDING_REMOVE);
  CHECK(memcmp(batch.ids + batch.rows[1].id_offset, "carol", 5) == 0);
  CHECK(batch.rows[2].kind == EH_PENDING_ADD && batch.rows[2].value == 5.0);
  CHECK(batch.rows[2].last_update == T0 + 5);
  eh_pending_batch_free(&batch);
  CHECK(batch.len == 0 && batch.owner == NULL);
  eh_pending_batch_free(&batch); /* a second free is a no-op */
  eh_pending_batch_free(NULL);

  CHECK_OK(eh_leaderboard_drain(lb, &batch)); /* exactly once: now empty */
  CHECK(batch.len == 0);
  eh_pending_batch_free(&batch);
  eh_leaderboard_free(lb);
}

int main(void) {
  test_basic_ranking();
  test_error_paths();
  test_snapshots();
  test_publishing();
  printf("test_leaderboard: all checks passed (engagehub %s)\n", eh_version());
  return 0;
}
