/* The daily history from C: events with guilds pushed one by one
 * (eh_processor_push_event) and in arrays (eh_event.guild_id), then active users,
 * retention cohorts and heatmaps checked against exact answers computed here, per
 * guild and overall; the flush callback sees each event's guild; bad questions
 * are refused; eh_history_stats reports the records kept. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define USERS 300
#define DAYS 40
#define EVENTS 20000
#define DAY0 20000 /* 2024-10-04, a Friday */

static const char *GUILDS[] = {"", "g1", "g2"};

typedef struct {
  int user, guild, channel;
  int64_t ts;
} ev;

static ev events[EVENTS];

static uint64_t next_rand(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static int day_of(int64_t ts) { return (int)(ts / 86400); }
static int week_of(int day) { return (day + 3) / 7; } /* days here are positive */

/* Whether event e counts for guild g (0: every event). */
static int in_guild(const ev *e, int g) { return g == 0 || e->guild == g; }

static uint64_t exact_active(int g, int day, int len) {
  static unsigned char seen[USERS];
  uint64_t n = 0;
  int i;
  memset(seen, 0, sizeof seen);
  for (i = 0; i < EVENTS; i++) {
    int d = day_of(events[i].ts);
    if (in_guild(&events[i], g) && d > day - len && d <= day && !seen[events[i].user]) {
      seen[events[i].user] = 1;
      n++;
    }
  }
  return n;
}

#define WEEKS (DAYS / 7 + 3)

/* Weekly cohorts: first[u] = first week seen (relative to base_week, which the
 * earliest event is after: WEEKS means never seen), active[u][w]. */
static void exact_weeks(int g, int *first, unsigned char active[USERS][WEEKS], int base_week) {
  int i;
  for (i = 0; i < USERS; i++) first[i] = WEEKS;
  memset(active, 0, sizeof(unsigned char) * USERS * WEEKS);
  for (i = 0; i < EVENTS; i++) {
    int w;
    if (!in_guild(&events[i], g)) continue;
    w = week_of(day_of(events[i].ts)) - base_week;
    CHECK(w >= 0 && w < WEEKS);
    if (w < first[events[i].user]) first[events[i].user] = w;
    active[events[i].user][w] = 1;
  }
}

/* Workers call the callback concurrently: the count is kept under a lock. */
typedef struct {
  pthread_mutex_t lock;
  uint64_t with_guild;
} guild_count;

static int32_t check_guilds(void *user_data, const eh_event *batch, size_t n) {
  guild_count *count = (guild_count *)user_data;
  uint64_t seen = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    if (batch[i].guild_id_len > 0) {
      /* "g1" or "g2", and the channel is intact beside it. */
      if (batch[i].guild_id_len != 2 || batch[i].guild_id[0] != 'g') return 1;
      if (batch[i].channel_id_len < 2 || batch[i].channel_id[0] != 'c') return 1;
      seen++;
    }
  }
  pthread_mutex_lock(&count->lock);
  count->with_guild += seen;
  pthread_mutex_unlock(&count->lock);
  return 0;
}

int main(void) {
  uint64_t x = 0x9e3779b97f4a7c15ull, expect_with_guild = 0;
  guild_count count = {PTHREAD_MUTEX_INITIALIZER, 0};
  eh_processor_config cfg = {
      .struct_size = sizeof cfg, .capacity = 1 << 15, .workers = 2, .clock = EH_CLOCK_EVENT_TIME};
  eh_processor *p = NULL;
  char users[EVENTS][8], channels[EVENTS][4];
  eh_event batch[EVENTS];
  size_t accepted = 0;
  int i, g, day, period;
  int64_t today_ts;
  int today;

  for (i = 0; i < EVENTS; i++) {
    int user = (int)(next_rand(&x) % USERS);
    int join = user * DAYS / (USERS + 60);
    int day_in = join + (int)(next_rand(&x) % (uint64_t)(DAYS - join));
    events[i].user = user;
    events[i].guild = (int)(next_rand(&x) % 3);
    events[i].channel = (int)(next_rand(&x) % 4);
    events[i].ts = (int64_t)(DAY0 + day_in) * 86400 + (int64_t)(next_rand(&x) % 86400);
    snprintf(users[i], sizeof users[i], "u%d", user);
    snprintf(channels[i], sizeof channels[i], "c%d", events[i].channel);
    batch[i] = (eh_event){.kind = (const uint8_t *)"m", .kind_len = 1,
                          .user_id = (const uint8_t *)users[i], .user_id_len = strlen(users[i]),
                          .channel_id = (const uint8_t *)channels[i], .channel_id_len = strlen(channels[i]),
                          .guild_id = (const uint8_t *)GUILDS[events[i].guild],
                          .guild_id_len = strlen(GUILDS[events[i].guild]),
                          .timestamp = events[i].ts};
    if (events[i].guild) expect_with_guild++;
  }

  CHECK_OK(eh_processor_new(&cfg, &p));
  CHECK_OK(eh_processor_set_flush_callback(p, check_guilds, &count, NULL));
  /* The first thousand one by one, the rest as an array. */
  for (i = 0; i < 1000; i++) CHECK_OK(eh_processor_push_event(p, &batch[i]));
  CHECK_OK(eh_processor_push_batch(p, batch + 1000, EVENTS - 1000, &accepted));
  CHECK(accepted == EVENTS - 1000);
  CHECK_OK(eh_processor_flush(p, 60000));
  pthread_mutex_lock(&count.lock);
  CHECK(count.with_guild == expect_with_guild);
  pthread_mutex_unlock(&count.lock);

  CHECK_OK(eh_processor_now(p, &today_ts));
  today = day_of(today_ts);
  for (g = 0; g < 3; g++) {
    const char *guild = GUILDS[g];
    for (day = today - 20; day <= today; day++) {
      static const int lens[] = {1, 7, 30};
      for (period = EH_PERIOD_DAY; period <= EH_PERIOD_MONTH; period++) {
        uint64_t got = 0;
        CHECK_OK(eh_processor_active_users(p, (int64_t)day * 86400 + 5, period, STR(guild), &got));
        CHECK(got == exact_active(g, day, lens[period]));
      }
    }
    {
      enum { N = 5 };
      int64_t starts[N];
      uint64_t sizes[N], active[N * N];
      int first[USERS], base_week = week_of(DAY0) - 1, last_week = week_of(today), c, k, u;
      static unsigned char act[USERS][WEEKS];
      CHECK_OK(eh_processor_retention(p, EH_PERIOD_WEEK, N, 0, STR(guild), starts, sizes, active));
      exact_weeks(g, first, act, base_week);
      for (c = 0; c < N; c++) {
        int cw = last_week - N + 1 + c - base_week; /* the cohort's week, relative */
        uint64_t size = 0;
        CHECK(starts[c] == ((int64_t)(last_week - N + 1 + c) * 7 - 3) * 86400);
        for (u = 0; u < USERS; u++) size += first[u] == cw;
        CHECK(sizes[c] == size);
        for (k = 0; k < N; k++) {
          uint64_t want = 0;
          if (c + k < N)
            for (u = 0; u < USERS; u++) want += first[u] == cw && act[u][cw + k];
          CHECK(active[c * N + k] == want);
        }
        CHECK(active[c * N] == sizes[c]);
      }
    }
    {
      uint64_t map[7 * 24], want[7 * 24];
      memset(want, 0, sizeof want);
      for (i = 0; i < EVENTS; i++) {
        int d = day_of(events[i].ts);
        if (in_guild(&events[i], g) && events[i].channel == 2 && d > today - 14 && d <= today)
          want[((d + 3) % 7) * 24 + (int)(events[i].ts % 86400 / 3600)]++;
      }
      CHECK_OK(eh_processor_heatmap(p, 14, 0, STR("c2"), STR(guild), map));
      CHECK(memcmp(map, want, sizeof map) == 0);
    }
  }

  {
    uint64_t got = 0, map[7 * 24];
    int64_t s[2];
    uint64_t z[2], a[4];
    CHECK_STATUS(eh_processor_active_users(p, (int64_t)(today + 1) * 86400, EH_PERIOD_DAY, NULL, 0, &got),
                 EH_INVALID_ARGUMENT);
    CHECK(strstr(eh_last_error(), "outside the kept history") != NULL);
    CHECK_STATUS(eh_processor_active_users(p, 0, 7, NULL, 0, &got), EH_INVALID_ARGUMENT);
    CHECK_STATUS(eh_processor_retention(p, EH_PERIOD_MONTH, 2, 0, NULL, 0, s, z, a), EH_INVALID_ARGUMENT);
    CHECK_STATUS(eh_processor_retention(p, EH_PERIOD_WEEK, 0, 0, NULL, 0, s, z, a), EH_INVALID_ARGUMENT);
    CHECK_STATUS(eh_processor_heatmap(p, 0, 0, NULL, 0, NULL, 0, map), EH_INVALID_ARGUMENT);
    CHECK_STATUS(eh_processor_heatmap(p, 91, 0, NULL, 0, NULL, 0, map), EH_INVALID_ARGUMENT);
    CHECK_STATUS(eh_processor_heatmap(p, 7, 0, NULL, 0, NULL, 0, NULL), EH_INVALID_ARGUMENT);
  }
  {
    eh_history_stats st = {.struct_size = sizeof st};
    CHECK_OK(eh_processor_history_stats(p, &st));
    CHECK(st.struct_size == sizeof st);
    CHECK(st.guilds == 2);
    /* Every user overall, and in each guild they were seen in. */
    CHECK(st.user_records > USERS && st.user_records <= 3 * USERS);
    CHECK(st.heap_bytes > st.user_records * 32);
  }
  eh_processor_free(p);

  {
    /* History off: the queries say so. */
    eh_processor_config off = {.struct_size = sizeof off, .history_days = -1};
    uint64_t got;
    CHECK_OK(eh_processor_new(&off, &p));
    CHECK_STATUS(eh_processor_active_users(p, 0, EH_PERIOD_DAY, NULL, 0, &got), EH_INVALID_ARGUMENT);
    CHECK(strstr(eh_last_error(), "off") != NULL);
    eh_processor_free(p);
  }
  printf("test_history: ok\n");
  return 0;
}
