/* Linked into the C tests only under ENGAGEHUB_SANITIZERS=thread (`make tsan-test`).
 *
 * rustc's LLVM ThreadSanitizer pass instruments the library's memory copies as
 * calls to __tsan_memcpy / __tsan_memmove / __tsan_memset. Newer compiler-rt
 * runtimes define them; GCC 12's libtsan (Debian 12) does not, so the tests, built
 * with gcc, would not link. These forward to the C functions, which libtsan
 * intercepts with the same range checks. Where the runtime has its own
 * definitions these take precedence in the executable and behave the same. */
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n);
void *__tsan_memmove(void *dst, const void *src, size_t n);
void *__tsan_memset(void *dst, int c, size_t n);

void *__tsan_memcpy(void *dst, const void *src, size_t n) { return memcpy(dst, src, n); }
void *__tsan_memmove(void *dst, const void *src, size_t n) { return memmove(dst, src, n); }
void *__tsan_memset(void *dst, int c, size_t n) { return memset(dst, c, n); }
