// The header must compile as C++17 with strict warnings, survive a second include
// (include guard), and give C linkage to every function.
#include "engagehub.h"
#include "engagehub.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

namespace {

struct LeaderboardDeleter {
  void operator()(eh_leaderboard *lb) const { eh_leaderboard_free(lb); }
};
using Leaderboard = std::unique_ptr<eh_leaderboard, LeaderboardDeleter>;

int fail(const char *what) {
  std::fprintf(stderr, "test_header_cpp: %s (%s)\n", what, eh_last_error());
  return 1;
}

}  // namespace

int main() {
  static_assert(EH_OK == 0, "EH_OK must be zero");
  eh_leaderboard *raw = nullptr;
  if (eh_leaderboard_new(nullptr, &raw) != EH_OK) return fail("new");
  Leaderboard lb(raw);

  const std::string user = "cpp-user";
  if (eh_leaderboard_add(lb.get(), reinterpret_cast<const uint8_t *>(user.data()), user.size(), 3.0,
                         1700000000) != EH_OK)
    return fail("add");
  eh_rank_info info{};
  if (eh_leaderboard_rank(lb.get(), reinterpret_cast<const uint8_t *>(user.data()), user.size(),
                          1700000000, &info) != EH_OK)
    return fail("rank");
  if (info.rank != 1 || info.score != 3.0) return fail("rank value");

  std::string version = eh_version();
  std::string expected = std::to_string(EH_VERSION_MAJOR) + "." + std::to_string(EH_VERSION_MINOR) +
                         "." + std::to_string(EH_VERSION_PATCH);
  if (version != expected) return fail("version macros differ from eh_version()");
  std::printf("test_header_cpp: ok (engagehub %s)\n", version.c_str());
  return 0;
}
