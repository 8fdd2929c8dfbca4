/*
 * fail.h — the server modules' error return: formats a message into errmsg
 * (TALLY_ERRMSG_SIZE bytes; NULL: none wanted) and returns status.
 */
#ifndef TALLY_SERVER_FAIL_H
#define TALLY_SERVER_FAIL_H

__attribute__((format(printf, 3, 4))) int server_fail(char *errmsg, int status, const char *fmt, ...);

#endif /* TALLY_SERVER_FAIL_H */
