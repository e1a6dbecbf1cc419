/* Minimal assertion helpers for the C smoke tests. */
#ifndef ENGAGEHUB_TEST_CHECK_H
#define ENGAGEHUB_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engagehub.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

/* Expects `call` to return `expected`; on mismatch prints both names and the message. */
#define CHECK_STATUS(call, expected)                                           \
  do {                                                                         \
    eh_status rc_ = (call);                                                    \
    if (rc_ != (expected)) {                                                   \
      fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n", __FILE__,   \
              __LINE__, #call, eh_status_str(rc_), eh_last_error(),            \
              eh_status_str(expected));                                        \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, EH_OK)

/* (ptr, len) of a string literal or C string. */
#define STR(s) (const uint8_t *)(s), strlen(s)

#endif
