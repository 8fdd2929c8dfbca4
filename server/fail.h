/*
 * fail.h — the server modules' error return: formats a message into errmsg
 * (TALLY_ERRMSG_SIZE bytes; NULL: none wanted) and returns status.
 */
#ifndef TALLY_SERVER_FAIL_H
#define TALLY_SERVER_FAIL_H

__attribute__((format(printf, 3, 4))) int server_fail(char *errmsg, int status, const char *fmt, ...);

/* Makes the C string s valid UTF-8 in place, as a protobuf string field
 * must be: each byte where no valid sequence starts or continues becomes
 * '?' (so a client's invalid bytes echoed in a message, or a character cut
 * by a truncation, never make the Error unparseable). Returns s. */
char *server_text_utf8(char *s);

#endif /* TALLY_SERVER_FAIL_H */
