/* C test of eh_board_group: many guilds' boards in one handle, checked against a
 * model (per guild: users, summed scores without decay, the capacity rule), then
 * the guild list, drops, limits, bad input, publishing through the outbox into a
 * model of the shared boards, and close. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "check.h"

#define T0 1700000000
#define GUILDS 20
#define USERS 12
#define MAX_USERS 5
#define OPS 4000

/* ---- the model --------------------------------------------------------------- */

typedef struct {
  int held[USERS]; /* on the board */
  double score[USERS];
  int64_t last[USERS];
  int exists; /* the group holds a board for the guild */
} model_guild;

static model_guild model[GUILDS];

static void guild_name(int g, char *out, size_t cap) { snprintf(out, cap, "guild-%02d", g); }
static void user_name(int u, char *out, size_t cap) { snprintf(out, cap, "user%02d", u); }

/* Higher score first, then id bytes ascending (ids of one length: index order). */
static int ranks_above(const model_guild *m, int a, int b) {
  if (m->score[a] != m->score[b]) return m->score[a] > m->score[b];
  return a < b;
}

static int held_count(const model_guild *m) {
  int n = 0;
  for (int u = 0; u < USERS; u++) n += m->held[u];
  return n;
}

/* The model's order of a guild's users; returns how many. */
static int model_order(const model_guild *m, int *order) {
  int n = 0;
  for (int u = 0; u < USERS; u++)
    if (m->held[u]) order[n++] = u;
  for (int i = 1; i < n; i++) /* insertion sort */
    for (int j = i; j > 0 && ranks_above(m, order[j], order[j - 1]); j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  return n;
}

/* What an add (replace = 0) or set (1) must return, applied to the model. */
static eh_status model_update(model_guild *m, int u, double amount, int64_t ts, int replace) {
  if (!m->held[u] && held_count(m) >= MAX_USERS) {
    int order[USERS];
    int n = model_order(m, order);
    int lowest = order[n - 1];
    /* The newcomer's score is `amount` whether added or set. */
    int beats = amount > m->score[lowest] || (amount == m->score[lowest] && u < lowest);
    if (!beats) return EH_FULL;
    m->held[lowest] = 0;
  }
  if (!m->held[u]) {
    m->held[u] = 1;
    m->score[u] = 0;
    m->last[u] = ts;
  }
  m->score[u] = replace ? amount : m->score[u] + amount;
  if (ts > m->last[u]) m->last[u] = ts;
  m->exists = 1;
  return EH_OK;
}

static int id_equals(const uint8_t *ids, uint64_t offset, uint64_t len, const char *expected) {
  return len == strlen(expected) && memcmp(ids + offset, expected, len) == 0;
}

static void check_guild(eh_board_group *grp, int g) {
  char guild[32], user[32];
  guild_name(g, guild, sizeof guild);
  const model_guild *m = &model[g];
  int order[USERS];
  int n = model_order(m, order);
  size_t len = 99;
  CHECK_OK(eh_board_group_len(grp, STR(guild), &len));
  CHECK(len == (size_t)n);
  eh_ranking top;
  memset(&top, 0, sizeof top);
  CHECK_OK(eh_board_group_top(grp, STR(guild), 0, 100, T0, &top));
  CHECK(top.len == (size_t)n);
  for (int i = 0; i < n; i++) {
    user_name(order[i], user, sizeof user);
    CHECK(id_equals(top.ids, top.rows[i].id_offset, top.rows[i].id_len, user));
    CHECK(top.rows[i].rank == (uint64_t)i + 1);
    CHECK(top.rows[i].score == m->score[order[i]]);
    CHECK(top.rows[i].last_update == m->last[order[i]]);
    eh_rank_info info;
    CHECK_OK(eh_board_group_rank(grp, STR(guild), STR(user), T0, &info));
    CHECK(info.rank == (uint64_t)i + 1 && info.score == m->score[order[i]]);
  }
  eh_ranking_free(&top);
  if (n > 0) {
    /* around the middle user: radius 1 */
    int mid = n / 2;
    user_name(order[mid], user, sizeof user);
    eh_ranking around;
    CHECK_OK(eh_board_group_around(grp, STR(guild), STR(user), 1, T0, &around));
    int first = mid > 0 ? mid - 1 : 0;
    int last = mid + 1 < n ? mid + 1 : n - 1;
    CHECK(around.len == (size_t)(last - first + 1));
    CHECK(around.rows[0].rank == (uint64_t)first + 1);
    eh_ranking_free(&around);
  }
  for (int u = 0; u < USERS; u++) {
    if (m->held[u]) continue;
    eh_rank_info info;
    user_name(u, user, sizeof user);
    CHECK_STATUS(eh_board_group_rank(grp, STR(guild), STR(user), T0, &info), EH_NOT_FOUND);
  }
}

static uint64_t rng_state = 42;
static uint32_t next_random(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(rng_state >> 33);
}

static void test_against_the_model(void) {
  eh_board_group_config config = {.struct_size = sizeof config, .decay_factor = 1.0,
                                  .max_users = MAX_USERS};
  eh_board_group *grp = NULL;
  CHECK_OK(eh_board_group_new(&config, &grp));
  memset(model, 0, sizeof model);
  char guild[32], user[32];
  for (int op = 0; op < OPS; op++) {
    int g = (int)(next_random() % GUILDS), u = (int)(next_random() % USERS);
    int what = (int)(next_random() % 10);
    double amount = (double)(next_random() % 9);
    int64_t ts = T0 - (int64_t)(next_random() % 3600);
    guild_name(g, guild, sizeof guild);
    user_name(u, user, sizeof user);
    if (what < 7) {
      eh_status expected = model_update(&model[g], u, amount, ts, 0);
      CHECK_STATUS(eh_board_group_add(grp, STR(guild), STR(user), amount, ts), expected);
    } else if (what < 9) {
      eh_status expected = model_update(&model[g], u, amount, ts, 1);
      CHECK_STATUS(eh_board_group_set(grp, STR(guild), STR(user), amount, ts), expected);
    } else {
      eh_status expected = model[g].held[u] ? EH_OK : EH_NOT_FOUND;
      model[g].held[u] = 0;
      CHECK_STATUS(eh_board_group_remove(grp, STR(guild), STR(user)), expected);
    }
    if (op % 100 == 0) check_guild(grp, g);
  }
  uint64_t users = 0, boards = 0;
  for (int g = 0; g < GUILDS; g++) {
    check_guild(grp, g);
    users += (uint64_t)held_count(&model[g]);
    boards += (uint64_t)model[g].exists;
  }
  eh_board_group_stats stats = {.struct_size = sizeof stats};
  CHECK_OK(eh_board_group_get_stats(grp, &stats));
  CHECK(stats.struct_size == sizeof stats);
  CHECK(stats.boards == boards && stats.users == users);
  CHECK(stats.evicted > 0 && stats.refused > 0);
  CHECK(stats.heap_bytes > boards * 700);

  /* The guild list, in pages of 7: every guild once, in byte order. */
  char after[32] = "";
  int seen = 0;
  for (;;) {
    eh_guild_list page;
    CHECK_OK(eh_board_group_guilds(grp, (const uint8_t *)after, strlen(after), 7, &page));
    if (page.len == 0) {
      eh_guild_list_free(&page);
      break;
    }
    CHECK(page.len <= 7);
    for (size_t i = 0; i < page.len; i++) {
      while (!model[seen].exists) seen++;
      guild_name(seen, guild, sizeof guild);
      CHECK(id_equals(page.ids, page.rows[i].id_offset, page.rows[i].id_len, guild));
      CHECK(page.rows[i].users == (uint64_t)held_count(&model[seen]));
      seen++;
    }
    const eh_guild_row *last = &page.rows[page.len - 1];
    memcpy(after, page.ids + last->id_offset, last->id_len);
    after[last->id_len] = '\0';
    eh_guild_list_free(&page);
    CHECK(page.len == 0 && page.owner == NULL);
  }
  eh_guild_list_free(NULL);
  for (; seen < GUILDS; seen++) CHECK(!model[seen].exists);

  /* Drop: the board goes, a later update makes a new one. */
  uint64_t discarded = 99;
  CHECK_OK(eh_board_group_drop(grp, STR("guild-03"), &discarded));
  CHECK(discarded == 0); /* not publishing */
  CHECK_STATUS(eh_board_group_drop(grp, STR("guild-03"), &discarded), EH_NOT_FOUND);
  memset(&model[3], 0, sizeof model[3]);
  check_guild(grp, 3);
  CHECK_OK(eh_board_group_add(grp, STR("guild-03"), STR("user01"), 4.0, T0));
  model_update(&model[3], 1, 4.0, T0, 0);
  check_guild(grp, 3);
  eh_board_group_free(grp);
}

static void test_limits_and_bad_input(void) {
  eh_board_group *grp = NULL;
  eh_board_group_config bad = {.struct_size = sizeof bad, .decay_factor = 1.5};
  CHECK_STATUS(eh_board_group_new(&bad, &grp), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "decay_factor") != NULL && grp == NULL);
  bad.struct_size = 0;
  CHECK_STATUS(eh_board_group_new(&bad, &grp), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_new(NULL, NULL), EH_INVALID_ARGUMENT);

  eh_board_group_config config = {.struct_size = sizeof config, .max_guilds = 2};
  CHECK_OK(eh_board_group_new(&config, &grp));
  CHECK_OK(eh_board_group_add(grp, STR("a"), STR("u"), 1.0, T0));
  CHECK_OK(eh_board_group_add(grp, STR("b"), STR("u"), 1.0, T0));
  CHECK_STATUS(eh_board_group_add(grp, STR("c"), STR("u"), 1.0, T0), EH_FULL);
  CHECK(strstr(eh_last_error(), "max_guilds") != NULL);
  CHECK_OK(eh_board_group_add(grp, STR("a"), STR("v"), 1.0, T0)); /* held guilds: fine */

  eh_board_group_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  CHECK_OK(eh_board_group_get_stats(grp, &before));
  const uint8_t bad_utf8[] = {'a', 0xff};
  CHECK_STATUS(eh_board_group_add(NULL, STR("a"), STR("u"), 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_add(grp, NULL, 0, STR("u"), 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "guild_id") != NULL);
  CHECK_STATUS(eh_board_group_add(grp, bad_utf8, sizeof bad_utf8, STR("u"), 1.0, T0),
               EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_add(grp, STR("a"), bad_utf8, sizeof bad_utf8, 1.0, T0),
               EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_add(grp, STR("a"), STR("u"), NAN, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_set(grp, STR("a"), STR("u"), INFINITY, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_add(grp, STR("a"), NULL, 0, 1.0, T0), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_add(grp, STR("a"), STR("u"), 1.0, 300000000000LL), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_remove(grp, STR(""), STR("u")), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_top(grp, STR("a"), 0, 10, 0, NULL), EH_INVALID_ARGUMENT);
  eh_ranking top;
  CHECK_STATUS(eh_board_group_top(grp, STR("zzz"), 0, 10, 300000000000LL, &top), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_len(grp, STR("a"), NULL), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_drop(grp, STR("a"), NULL), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_board_group_publish_enable(grp, 0), EH_INVALID_ARGUMENT);
  CHECK_OK(eh_board_group_get_stats(grp, &after));
  CHECK(memcmp(&before, &after, sizeof before) == 0); /* nothing changed */

  /* A guild the group does not hold: no rows, NotFound for a user, len 0. */
  CHECK_OK(eh_board_group_top(grp, STR("zzz"), 0, 10, 0, &top));
  CHECK(top.len == 0);
  eh_ranking_free(&top);
  eh_rank_info info;
  CHECK_STATUS(eh_board_group_rank(grp, STR("zzz"), STR("u"), 0, &info), EH_NOT_FOUND);
  CHECK(strstr(eh_last_error(), "zzz") != NULL);
  CHECK_STATUS(eh_board_group_around(grp, STR("zzz"), STR("u"), 2, 0, &top), EH_NOT_FOUND);
  CHECK_STATUS(eh_board_group_remove(grp, STR("zzz"), STR("u")), EH_NOT_FOUND);

  /* Sized structs: an unsized one is refused; a newer caller's longer one gets
   * the fields this library knows (and is told how many bytes it wrote); a newer
   * config that sets a field this library does not know is refused. */
  eh_board_group_stats unsized = {0};
  CHECK_STATUS(eh_board_group_get_stats(grp, &unsized), EH_INVALID_ARGUMENT);
  struct {
    eh_board_group_stats stats;
    uint64_t later_field;
  } newer = {.stats = {.struct_size = sizeof newer}, .later_field = 77};
  CHECK_OK(eh_board_group_get_stats(grp, &newer.stats));
  CHECK(newer.stats.boards == 2 && newer.stats.struct_size == sizeof(eh_board_group_stats));
  CHECK(newer.later_field == 77);
  struct {
    eh_board_group_config config;
    uint64_t later_field;
  } newer_config = {.config = {.struct_size = sizeof newer_config}, .later_field = 1};
  eh_board_group *other = NULL;
  CHECK_STATUS(eh_board_group_new(&newer_config.config, &other), EH_INVALID_ARGUMENT);
  newer_config.later_field = 0;
  CHECK_OK(eh_board_group_new(&newer_config.config, &other));
  eh_board_group_free(other);

  /* Close: every later call is refused, a second close is fine. */
  CHECK_OK(eh_board_group_close(grp));
  CHECK_OK(eh_board_group_close(grp));
  CHECK_STATUS(eh_board_group_add(grp, STR("a"), STR("u"), 1.0, T0), EH_SHUT_DOWN);
  CHECK_STATUS(eh_board_group_get_stats(grp, &after), EH_SHUT_DOWN);
  size_t len;
  CHECK_STATUS(eh_board_group_len(grp, STR("a"), &len), EH_SHUT_DOWN);
  eh_board_group_free(grp);
  eh_board_group_free(NULL);
}

/* ---- publishing: the outbox into a model of the shared boards --------------- */

#define PUB_GUILDS 300
static double shared[PUB_GUILDS][USERS]; /* sums, no decay */
static uint64_t applied_number[PUB_GUILDS];

static int guild_index(const uint8_t *id, uint64_t len) {
  char text[32];
  CHECK(len < sizeof text);
  memcpy(text, id, len);
  text[len] = '\0';
  return atoi(text + strlen("guild-"));
}

/* Applies every batch once per (guild, number), like the Redis script; returns
 * the batches seen. Acknowledges them unless `lose_acks`. */
static size_t publish(eh_board_group *grp, int lose_acks) {
  eh_group_outbox out;
  CHECK_OK(eh_board_group_outbox_next(grp, 0, &out));
  for (size_t b = 0; b < out.len; b++) {
    const eh_group_batch *batch = &out.batches[b];
    int g = guild_index(out.guilds + batch->guild_offset, batch->guild_len);
    CHECK(batch->number > 0);
    if (batch->number > applied_number[g]) {
      applied_number[g] = batch->number;
      for (uint64_t r = batch->first_row; r < batch->first_row + batch->row_count; r++) {
        const eh_pending_row *row = &out.rows[r];
        char text[32];
        memcpy(text, out.ids + row->id_offset, row->id_len);
        text[row->id_len] = '\0';
        int u = atoi(text + strlen("user"));
        if (row->kind == EH_PENDING_ADD) shared[g][u] += row->value;
        if (row->kind == EH_PENDING_SET) shared[g][u] = row->value;
        if (row->kind == EH_PENDING_REMOVE) shared[g][u] = 0;
      }
    }
    if (!lose_acks) CHECK_OK(eh_board_group_outbox_ack(grp, out.guilds + batch->guild_offset,
                                                        batch->guild_len, batch->number));
  }
  size_t n = out.len;
  eh_group_outbox_free(&out);
  CHECK(out.len == 0 && out.owner == NULL && out.rows_owner == NULL);
  eh_group_outbox_free(&out);
  eh_group_outbox_free(NULL);
  return n;
}

static void test_publishing(void) {
  eh_board_group_config config = {.struct_size = sizeof config, .decay_factor = 1.0};
  eh_board_group *grp = NULL;
  CHECK_OK(eh_board_group_new(&config, &grp));
  CHECK_OK(eh_board_group_publish_enable(grp, 1000));
  char guild[32], user[32];
  for (int round = 0; round < 5; round++) {
    /* A few guilds change per round: only those are published. */
    int changed = 0;
    for (int g = round; g < PUB_GUILDS; g += 37) {
      guild_name(g, guild, sizeof guild);
      for (int u = 0; u < 3 + round; u++) {
        user_name(u, user, sizeof user);
        CHECK_OK(eh_board_group_add(grp, STR(guild), STR(user), 1.0 + u, T0));
      }
      changed++;
    }
    eh_board_group_stats stats = {.struct_size = sizeof stats};
    CHECK_OK(eh_board_group_get_stats(grp, &stats));
    CHECK(stats.dirty == (uint64_t)changed && stats.pending > 0);
    /* A lost acknowledgement: the same batches come again, applied once. */
    CHECK(publish(grp, 1) == (size_t)changed);
    CHECK(publish(grp, 0) == (size_t)changed);
    CHECK(publish(grp, 0) == 0);
    CHECK_OK(eh_board_group_get_stats(grp, &stats));
    CHECK(stats.dirty == 0 && stats.in_flight == 0 && stats.pending == 0);
  }
  /* Every shared board equals its local board. */
  for (int g = 0; g < PUB_GUILDS; g++) {
    guild_name(g, guild, sizeof guild);
    for (int u = 0; u < USERS; u++) {
      user_name(u, user, sizeof user);
      eh_rank_info info;
      eh_status rc = eh_board_group_rank(grp, STR(guild), STR(user), T0, &info);
      if (rc == EH_NOT_FOUND) {
        CHECK(shared[g][u] == 0);
      } else {
        CHECK_OK(rc);
        CHECK(shared[g][u] == info.score);
      }
    }
  }
  eh_board_group_free(grp);
}

int main(void) {
  test_against_the_model();
  test_limits_and_bad_input();
  test_publishing();
  printf("test_board_group: all checks passed (engagehub %s)\n", eh_version());
  return 0;
}
