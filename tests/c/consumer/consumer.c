/* A standalone program built against an installed engagehub (`make install`), found
 * with pkg-config: cc consumer.c $(pkg-config --cflags --libs engagehub).
 * Usage: consumer [EXPECTED_VERSION]. Exits non-zero on any failure. */
#include <engagehub.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what) {
  fprintf(stderr, "consumer: %s failed: %s\n", what, eh_last_error());
  return 1;
}

int main(int argc, char **argv) {
  eh_leaderboard_config config = {.struct_size = sizeof config, .decay_factor = 0.95, .decay_period_secs = 86400.0, .max_users = 1000};
  eh_leaderboard *lb = NULL;
  size_t len = 0;
  char header_version[32];
  const char *user = "consumer";

  if (eh_leaderboard_new(&config, &lb) != EH_OK) return fail("eh_leaderboard_new");
  if (eh_leaderboard_add(lb, (const uint8_t *)user, strlen(user), 25.0, 1767225600) != EH_OK) {
    eh_leaderboard_free(lb);
    return fail("eh_leaderboard_add");
  }
  if (eh_leaderboard_len(lb, &len) != EH_OK) {
    eh_leaderboard_free(lb);
    return fail("eh_leaderboard_len");
  }
  eh_leaderboard_free(lb);
  if (len != 1) {
    fprintf(stderr, "consumer: eh_leaderboard_len gave %lu, expected 1\n", (unsigned long)len);
    return 1;
  }

  /* The header and the library linked in must be the same release. */
  snprintf(header_version, sizeof header_version, "%d.%d.%d", EH_VERSION_MAJOR, EH_VERSION_MINOR,
           EH_VERSION_PATCH);
  if (strcmp(eh_version(), header_version) != 0) {
    fprintf(stderr, "consumer: eh_version() is %s, the header says %s\n", eh_version(),
            header_version);
    return 1;
  }
  if (argc > 1 && strcmp(argv[1], eh_version()) != 0) {
    fprintf(stderr, "consumer: eh_version() is %s, expected %s\n", eh_version(), argv[1]);
    return 1;
  }
  printf("consumer: engagehub %s ok\n", eh_version());
  return 0;
}
