/*
 * errmsg.h — formatting an error message into a caller's buffer of
 * TALLY_ERRMSG_SIZE bytes (NULL: no message wanted). Internal to engine/.
 */
#ifndef TALLY_ERRMSG_H
#define TALLY_ERRMSG_H

#include <stdarg.h>

__attribute__((format(printf, 2, 3))) void errmsg_set(char *errmsg, const char *format, ...);
__attribute__((format(printf, 2, 0))) void errmsg_vset(char *errmsg, const char *format, va_list args);

#endif /* TALLY_ERRMSG_H */
