/* eh_processor from C: producers on pthreads, a C flush callback counting
 * deliveries, exact totals after flush and after free, user_data finalizers,
 * error paths, close (from a callback too) and fork; plus the standalone
 * eh_hll / eh_cms handles. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ThreadSanitizer cannot follow a process that starts threads after a
 * multi-threaded fork (it aborts the child), which is what the fork test does. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define PRODUCERS 4
#define PER_PRODUCER 20000

typedef struct {
  pthread_mutex_t lock;
  uint64_t events;
  uint64_t batches;
  uint64_t id_sum; /* sum of the numeric user ids delivered */
  int freed;       /* times the finalizer ran */
} counter;

static int32_t count_batch(void *user_data, const eh_event *events, size_t n) {
  counter *c = (counter *)user_data;
  uint64_t sum = 0;
  size_t i, j;
  for (i = 0; i < n; i++) {
    uint64_t id = 0;
    for (j = 0; j < events[i].user_id_len; j++) id = id * 10 + (uint64_t)(events[i].user_id[j] - '0');
    sum += id;
  }
  pthread_mutex_lock(&c->lock);
  c->events += n;
  c->batches += 1;
  c->id_sum += sum;
  pthread_mutex_unlock(&c->lock);
  return 0;
}

static void free_counter(void *user_data) { ((counter *)user_data)->freed += 1; }

typedef struct {
  eh_processor *p;
  int index;
} producer_arg;

static void *produce(void *arg) {
  producer_arg *a = (producer_arg *)arg;
  char id[32];
  int i;
  for (i = 0; i < PER_PRODUCER; i++) {
    uint64_t seq = (uint64_t)a->index * PER_PRODUCER + (uint64_t)i;
    int len = snprintf(id, sizeof id, "%llu", (unsigned long long)seq);
    eh_status rc;
    do {
      rc = eh_processor_push(a->p, STR("message"), (const uint8_t *)id, (size_t)len,
                             STR("general"), 1700000000, NULL, 0);
    } while (rc == EH_QUEUE_FULL);
    if (rc != EH_OK) {
      fprintf(stderr, "push failed: %s %s\n", eh_status_str(rc), eh_last_error());
      exit(1);
    }
  }
  return NULL;
}

static void test_producers_and_exact_totals(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  counter c;
  pthread_t threads[PRODUCERS];
  producer_arg args[PRODUCERS];
  eh_processor_stats s = {.struct_size = sizeof s};
  uint64_t n = (uint64_t)PRODUCERS * PER_PRODUCER;
  int t;

  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  cfg.capacity = 4096;
  cfg.workers = 2;
  cfg.batch_size = 256;
  cfg.flush_interval_ms = 50;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);

  CHECK_OK(eh_processor_new(&cfg, &p));
  CHECK_OK(eh_processor_set_flush_callback(p, count_batch, &c, free_counter));
  for (t = 0; t < PRODUCERS; t++) {
    args[t].p = p;
    args[t].index = t;
    CHECK(pthread_create(&threads[t], NULL, produce, &args[t]) == 0);
  }
  for (t = 0; t < PRODUCERS; t++) CHECK(pthread_join(threads[t], NULL) == 0);

  CHECK_OK(eh_processor_flush(p, 60000));
  CHECK_OK(eh_processor_get_stats(p, &s));
  CHECK(s.accepted == n);
  CHECK(s.delivered == n);
  CHECK(s.queue_len == 0);
  pthread_mutex_lock(&c.lock);
  CHECK(c.events == n);
  CHECK(c.id_sum == n * (n - 1) / 2); /* every id 0..n-1 exactly once */
  CHECK(c.batches == s.batches);
  pthread_mutex_unlock(&c.lock);

  /* Events still queued at free are delivered before free returns. */
  {
    int i;
    for (i = 0; i < 1000; i++) {
      eh_status rc;
      do {
        rc = eh_processor_push(p, STR("message"), STR("1"), STR("general"), 0, NULL, 0);
      } while (rc == EH_QUEUE_FULL);
      CHECK_OK(rc);
    }
  }
  CHECK(c.freed == 0);
  eh_processor_free(p);
  CHECK(c.events == n + 1000);
  CHECK(c.freed == 1); /* finalizer ran exactly once, at free */
  pthread_mutex_destroy(&c.lock);
}

static void test_error_paths(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  uint64_t users = 0;
  size_t accepted = 0;
  eh_event bad;

  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  CHECK_STATUS(eh_processor_new(&cfg, NULL), EH_INVALID_ARGUMENT);
  cfg.overflow = 7;
  CHECK_STATUS(eh_processor_new(&cfg, &p), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "overflow") != NULL);
  cfg.overflow = EH_OVERFLOW_DROP_NEWEST;
  cfg.capacity = (uint64_t)1 << 40;
  CHECK_STATUS(eh_processor_new(&cfg, &p), EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "capacity") != NULL);

  CHECK_OK(eh_processor_new(NULL, &p)); /* all defaults */
  CHECK_STATUS(eh_processor_push(NULL, STR("m"), STR("u"), STR("c"), 0, NULL, 0),
               EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_processor_push(p, STR("m"), (const uint8_t *)"\xff\xfe", 2, STR("c"), 0, NULL, 0),
               EH_INVALID_ARGUMENT);
  CHECK(strstr(eh_last_error(), "UTF-8") != NULL);
  CHECK_STATUS(eh_processor_push(p, STR("m"), NULL, 3, STR("c"), 0, NULL, 0), EH_INVALID_ARGUMENT);

  memset(&bad, 0, sizeof bad);
  bad.user_id = (const uint8_t *)"\xc3";
  bad.user_id_len = 1;
  CHECK_STATUS(eh_processor_push_batch(p, &bad, 1, &accepted), EH_INVALID_ARGUMENT);
  CHECK_STATUS(eh_processor_unique_users(p, 3600, 0, NULL), EH_INVALID_ARGUMENT);
  CHECK_OK(eh_processor_unique_users(p, 3600, 0, &users));
  CHECK(users == 0);
  {
    eh_processor_stats s = {.struct_size = sizeof s};
    CHECK_OK(eh_processor_get_stats(p, &s));
    CHECK(s.pushed == 0); /* refused events change nothing */
  }
  eh_processor_free(p);
  eh_processor_free(NULL);
}

static void test_queries_and_columns(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  uint64_t n = 0;
  size_t accepted = 0;
  eh_channel_list list;
  eh_hll *h = NULL;
  /* three columns of NUL-separated fields */
  static const char kinds[] = "m\0m\0m";
  static const char users[] = "alice\0bob\0carol";
  static const char channels[] = "dev\0dev\0ops";
  int64_t ts[3] = {1700000000, 1700000000, 1700000000};

  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  cfg.clock = EH_CLOCK_EVENT_TIME;
  CHECK_OK(eh_processor_new(&cfg, &p));
  CHECK_OK(eh_processor_push_columns(p, (const uint8_t *)kinds, sizeof kinds - 1, (const uint8_t *)users,
                                     sizeof users - 1, (const uint8_t *)channels, sizeof channels - 1, ts, 3,
                                     &accepted));
  CHECK(accepted == 3);
  /* a column with another number of fields: refused, nothing pushed */
  accepted = 99;
  CHECK_STATUS(eh_processor_push_columns(p, (const uint8_t *)kinds, sizeof kinds - 1, (const uint8_t *)users,
                                         sizeof users - 1, (const uint8_t *)"dev", 3, ts, 3, &accepted),
               EH_INVALID_ARGUMENT);
  CHECK(accepted == 0); /* written on every return, errors included */
  CHECK_OK(eh_processor_push_fields(p, (const uint8_t *)"m\0dave\0ops", 10, 1700000000));
  CHECK_STATUS(eh_processor_push_fields(p, (const uint8_t *)"m\0dave", 6, 1700000000),
               EH_INVALID_ARGUMENT);
  CHECK_OK(eh_processor_flush(p, 60000));
  CHECK_OK(eh_processor_unique_users(p, 3600, 0, &n));
  CHECK(n == 4);
  CHECK_OK(eh_processor_channel_count(p, STR("dev"), &n));
  CHECK(n >= 2);
  CHECK_OK(eh_processor_top_channels(p, 5, 0, 0, &list));
  CHECK(list.len == 2);
  CHECK(list.rows[0].count == 2); /* dev 2, ops 2: ties by channel id */
  CHECK(strcmp((const char *)list.ids + list.rows[0].id_offset, "dev") == 0);
  eh_channel_list_free(&list);
  CHECK(list.len == 0 && list.owner == NULL);
  eh_channel_list_free(&list);
  CHECK_OK(eh_processor_users_sketch(p, 3600, 0, &h));
  CHECK_OK(eh_hll_count(h, &n));
  CHECK(n == 4);
  eh_hll_free(h);
  eh_processor_free(p);
}

static void test_standalone_sketches(void) {
  eh_hll *a = NULL, *b = NULL, *c = NULL;
  eh_cms *m = NULL, *m2 = NULL;
  uint8_t *buf;
  size_t needed = 0;
  uint64_t n = 0;
  char id[32];
  int i;

  CHECK_OK(eh_hll_new(&a));
  CHECK_OK(eh_hll_new(&b));
  for (i = 0; i < 1000; i++) {
    int len = snprintf(id, sizeof id, "user-%d", i);
    CHECK_OK(eh_hll_add(i < 600 ? a : b, (const uint8_t *)id, (size_t)len));
  }
  CHECK_OK(eh_hll_merge(a, b));
  CHECK_OK(eh_hll_count(a, &n));
  CHECK(n >= 975 && n <= 1025);
  CHECK_OK(eh_hll_serialize(a, NULL, 0, &needed));
  buf = (uint8_t *)malloc(needed);
  CHECK(buf != NULL);
  CHECK_OK(eh_hll_serialize(a, buf, needed, &needed));
  CHECK_OK(eh_hll_deserialize(buf, needed, &c));
  CHECK_OK(eh_hll_count(c, &n));
  CHECK(n >= 975 && n <= 1025);
  eh_hll_free(c);
  c = NULL;
  buf[needed / 2] ^= 0x40;
  CHECK_STATUS(eh_hll_deserialize(buf, needed, &c), EH_CORRUPT);
  CHECK_STATUS(eh_hll_deserialize(buf, needed - 1, &c), EH_CORRUPT);
  CHECK(c == NULL);
  free(buf);

  /* Redis's dense encoding: 12304 bytes, "HYLL", encoding 0; read back equal. */
  CHECK_OK(eh_hll_to_redis(a, NULL, 0, &needed));
  CHECK(needed == 12304);
  buf = (uint8_t *)malloc(needed);
  CHECK(buf != NULL);
  CHECK_OK(eh_hll_to_redis(a, buf, needed, &needed));
  CHECK(memcmp(buf, "HYLL\0\0\0\0", 8) == 0);
  CHECK_OK(eh_hll_from_redis(buf, needed, &c));
  CHECK_OK(eh_hll_count(c, &n));
  CHECK(n >= 975 && n <= 1025);
  eh_hll_free(c);
  c = NULL;
  buf[4] = 7; /* no such encoding */
  CHECK_STATUS(eh_hll_from_redis(buf, needed, &c), EH_CORRUPT);
  buf[4] = 0;
  CHECK_STATUS(eh_hll_from_redis(buf, needed - 1, &c), EH_CORRUPT);
  CHECK(c == NULL);
  free(buf);
  eh_hll_free(a);
  eh_hll_free(b);
  eh_hll_free(NULL);

  CHECK_OK(eh_cms_new(0, 0, &m));
  CHECK_OK(eh_cms_new(3, 100, &m2));
  CHECK_OK(eh_cms_add(m, STR("general"), 5));
  CHECK_OK(eh_cms_estimate(m, STR("general"), &n));
  CHECK(n >= 5);
  CHECK_STATUS(eh_cms_merge(m, m2), EH_INVALID_ARGUMENT);
  CHECK_OK(eh_cms_merge(m, m));
  CHECK_OK(eh_cms_total(m, &n));
  CHECK(n == 10);
  CHECK_STATUS(eh_cms_new(17, 10, &m2), EH_INVALID_ARGUMENT);
  eh_cms_free(m);
  eh_cms_free(m2);
}

/* A flush callback that tries to close its own processor (user_data: a closer). */
typedef struct {
  counter c;
  eh_processor *p;
  eh_status close_rc; /* what eh_processor_close returned inside the callback */
  int tried;
} closer;

static int32_t close_inside(void *user_data, const eh_event *events, size_t n) {
  closer *k = (closer *)user_data;
  if (!k->tried) {
    k->tried = 1;
    k->close_rc = eh_processor_close(k->p);
  }
  return count_batch(&k->c, events, n);
}

static uint64_t delivered_so_far(counter *c) {
  uint64_t n;
  pthread_mutex_lock(&c->lock);
  n = c->events;
  pthread_mutex_unlock(&c->lock);
  return n;
}

static void test_close(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  closer k;
  eh_processor_stats s = {.struct_size = sizeof s};
  size_t accepted = 7;
  eh_event ev;

  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  cfg.batch_size = 1;
  cfg.flush_interval_ms = 10;
  memset(&k, 0, sizeof k);
  pthread_mutex_init(&k.c.lock, NULL);
  CHECK_OK(eh_processor_new(&cfg, &p));
  k.p = p;
  CHECK_OK(eh_processor_set_flush_callback(p, close_inside, &k, free_counter));
  CHECK_OK(eh_processor_push(p, STR("m"), STR("1"), STR("c"), 0, NULL, 0));
  CHECK_OK(eh_processor_flush(p, 30000));
  /* Refused inside its own callback, and nothing changed: still usable. */
  CHECK(k.tried == 1 && k.close_rc == EH_WOULD_DEADLOCK);
  CHECK_OK(eh_processor_push(p, STR("m"), STR("2"), STR("c"), 0, NULL, 0));
  CHECK_OK(eh_processor_flush(p, 30000));
  CHECK(delivered_so_far(&k.c) == 2);

  CHECK_OK(eh_processor_push(p, STR("m"), STR("3"), STR("c"), 0, NULL, 0));
  CHECK_OK(eh_processor_close(p)); /* drains, delivers, finalizes */
  CHECK(k.c.events == 3);
  CHECK(k.c.freed == 1);
  CHECK_OK(eh_processor_close(p)); /* idempotent */
  CHECK_STATUS(eh_processor_push(p, STR("m"), STR("4"), STR("c"), 0, NULL, 0), EH_SHUT_DOWN);
  CHECK_STATUS(eh_processor_flush(p, 1000), EH_SHUT_DOWN);
  CHECK_STATUS(eh_processor_get_stats(p, &s), EH_SHUT_DOWN);
  memset(&ev, 0, sizeof ev);
  ev.kind = (const uint8_t *)"m";
  ev.kind_len = 1;
  CHECK_STATUS(eh_processor_push_batch(p, &ev, 1, &accepted), EH_SHUT_DOWN);
  CHECK(accepted == 0); /* written on every return */
  CHECK_STATUS(eh_processor_close(NULL), EH_INVALID_ARGUMENT);
  eh_processor_free(p);
  CHECK(k.c.freed == 1);
  pthread_mutex_destroy(&k.c.lock);
}

/* In a forked child: push, flush, check delivery and fresh counters, close.
 * Returns the exit status (0: all good). */
static int fork_child(eh_processor *p, counter *c, uint64_t before) {
  eh_processor_stats s = {.struct_size = sizeof s};
  int i;
  for (i = 0; i < 100; i++) {
    char id[16];
    int len = snprintf(id, sizeof id, "child-%d", i);
    if (eh_processor_push(p, STR("m"), (const uint8_t *)id, (size_t)len, STR("c"), 0, NULL, 0))
      return 10;
  }
  if (eh_processor_flush(p, 30000) != EH_OK) return 11;
  if (delivered_so_far(c) != before + 100) return 12;
  if (eh_processor_get_stats(p, &s) != EH_OK || s.accepted != 100) return 13;
  if (eh_processor_close(p) != EH_OK) return 14;
  eh_processor_free(p);
  return 0;
}

static void test_fork(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  counter c;
  pid_t pid;
  int status = 0, i;
  struct timespec tick = {0, 10 * 1000 * 1000};

  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = sizeof cfg;
  cfg.workers = 2;
  cfg.batch_size = 16;
  cfg.flush_interval_ms = 10;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  CHECK_OK(eh_processor_new(&cfg, &p));
  CHECK_OK(eh_processor_set_flush_callback(p, count_batch, &c, NULL));
  for (i = 0; i < 10; i++)
    CHECK_OK(eh_processor_push(p, STR("m"), STR("parent"), STR("c"), 0, NULL, 0));
  /* Quiescent before the fork: nothing queued, the counter's lock free. */
  CHECK_OK(eh_processor_flush(p, 30000));
  CHECK(delivered_so_far(&c) == 10);

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) _exit(fork_child(p, &c, 10));

  /* The parent is unaffected. */
  for (i = 0; i < 10; i++)
    CHECK_OK(eh_processor_push(p, STR("m"), STR("parent"), STR("c"), 0, NULL, 0));
  CHECK_OK(eh_processor_flush(p, 30000));
  CHECK(delivered_so_far(&c) == 20);

  for (i = 0; i < 6000; i++) { /* up to 60 s */
    pid_t r = waitpid(pid, &status, WNOHANG);
    CHECK(r >= 0);
    if (r == pid) break;
    nanosleep(&tick, NULL);
  }
  if (i == 6000) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK(!"the forked child did not finish");
  }
  CHECK(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0) fprintf(stderr, "child check %d failed\n", WEXITSTATUS(status));
  CHECK(WEXITSTATUS(status) == 0);
  eh_processor_free(p);
  CHECK(c.events == 20);
  pthread_mutex_destroy(&c.lock);
}

/* Synchronous mode: no threads; the flush (sliced: start, then wait) and the
 * close deliver on this thread. */
static pthread_t delivering_thread;
static int32_t count_on_this_thread(void *user_data, const eh_event *events, size_t n) {
  CHECK(pthread_equal(pthread_self(), delivering_thread));
  return count_batch(user_data, events, n);
}

static void test_synchronous_mode_and_sliced_waits(void) {
  eh_processor_config cfg;
  eh_processor *p = NULL;
  counter c;
  uint64_t ticket = 0;
  int i;
  memset(&cfg, 0, sizeof cfg);
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  cfg.struct_size = sizeof cfg;
  cfg.workers = EH_WORKERS_NONE;
  cfg.batch_size = 8;
  cfg.overflow = EH_OVERFLOW_BLOCK;
  CHECK_STATUS(eh_processor_new(&cfg, &p), EH_INVALID_ARGUMENT);
  cfg.overflow = EH_OVERFLOW_DROP_NEWEST;
  CHECK_OK(eh_processor_new(&cfg, &p));
  delivering_thread = pthread_self();
  CHECK_OK(eh_processor_set_flush_callback(p, count_on_this_thread, &c, free_counter));
  for (i = 0; i < 20; i++) {
    char id[8];
    int len = snprintf(id, sizeof id, "%d", i);
    CHECK_OK(eh_processor_push(p, STR("message"), (const uint8_t *)id, (size_t)len,
                               STR("general"), 1700000000, NULL, 0));
  }
  CHECK(c.events == 0);
  CHECK_OK(eh_processor_flush_start(p, &ticket));
  CHECK_OK(eh_processor_flush_wait(p, ticket, 0));
  CHECK(c.events == 20 && c.batches == 3 && c.id_sum == 190);
  CHECK_OK(eh_processor_push(p, STR("message"), STR("7"), STR("general"), 1700000000, NULL, 0));
  CHECK_OK(eh_processor_close_timeout(p, 0));
  CHECK(c.events == 21 && c.freed == 1);
  CHECK_STATUS(eh_processor_flush_start(p, &ticket), EH_SHUT_DOWN);
  eh_processor_free(p);
  pthread_mutex_destroy(&c.lock);
}

int main(void) {
  test_synchronous_mode_and_sliced_waits();
  test_producers_and_exact_totals();
  test_close();
  if (UNDER_TSAN)
    printf("test_fork: skipped under ThreadSanitizer (no threads after a multi-threaded fork)\n");
  else
    test_fork();
  test_error_paths();
  test_queries_and_columns();
  test_standalone_sketches();
  printf("test_processor: ok\n");
  return 0;
}
