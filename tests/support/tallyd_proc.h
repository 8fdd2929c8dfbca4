/*
 * tallyd_proc.h — the tallyd binary run as a process by a test: found next
 * to the test binary (BUILD/tallyd), run to completion with its output
 * captured, or started on a data directory and waited for until it
 * answers. Every failure is a criterion assertion.
 */
#ifndef TALLY_TEST_TALLYD_PROC_H
#define TALLY_TEST_TALLYD_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define TALLYD_PROC_ADDRESS_SIZE 64
#define TALLYD_PROC_KEY_SIZE 80

/* BUILD/tallyd, for a test binary at BUILD/tests/NAME. */
const char *tallyd_proc_path(void);

/* Runs `tallyd args...` (args NULL-terminated) and waits for it; its
 * stdout and stderr go to out and err (out_size and err_size bytes, NUL
 * terminated, the rest cut off). Returns its exit status, or 128 + the
 * signal that ended it. */
int tallyd_proc_run(const char *const *args, char *out, size_t out_size, char *err,
		    size_t err_size);

/* Starts tallyd --data=dir --listen=127.0.0.1:PORT (a free port)
 * --metrics=off and the extra arguments (NULL-terminated, may be NULL);
 * its stderr goes to the file err_path, or /dev/null when NULL. Waits
 * (up to 10 s) until it answers a connection with the admin key: the one
 * admin_key holds on entry, or when it is empty the one tallyd wrote to
 * dir/admin.key, which admin_key then gets. address gets host:port. */
pid_t tallyd_proc_start(const char *dir, const char *const *extra, const char *err_path,
			char address[TALLYD_PROC_ADDRESS_SIZE], char admin_key[TALLYD_PROC_KEY_SIZE]);

#endif /* TALLY_TEST_TALLYD_PROC_H */
