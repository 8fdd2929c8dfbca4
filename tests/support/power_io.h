/*
 * power_io.h — a tally_io that can simulate a power cut.
 *
 * A power_io wraps another table (usually tally_io_default()) and keeps,
 * for every file it has seen, the size that is durable (the size at the
 * last successful fsync/fdatasync of the file, or its size when first seen),
 * and the directory changes (create, rename, unlink) not yet made durable by
 * an fsync of their directory. power_io_cut() then makes the directory look
 * as it would after losing power: undone directory changes are reverted
 * (newest first: created files removed, renames undone, unlinked files and
 * files replaced by a rename restored), and every file is cut back to its
 * durable size.
 *
 * A write that replaces bytes below a file's durable size (the WAL
 * rewrites its last block in place under direct I/O, zero padding
 * replaced by a record) keeps the bytes it replaced; a cut puts them back
 * unless the file was synced after the write. So every write not followed
 * by a successful sync of its file is lost whole.
 *
 * A failed fsync/fdatasync (an error from the inner table: a fault_io
 * below) loses the bytes written since the file's last successful sync, as
 * Linux does: the kernel marks the pages it could not write clean, so they
 * stay readable until the cut but a later successful sync does not make
 * them durable (the PostgreSQL fsync lesson). Only writing them again
 * does: a cut puts back what those bytes were before (zeros past the old
 * durable size) unless they were written again and synced since.
 *
 * A directory made by mkdir is a change of its parent: a cut removes it,
 * with everything in it, unless the parent was fsynced after it.
 *
 * The model, and its simplifications:
 *   - a write is lost whole or kept whole, never torn (the crash test cuts
 *     writes short with fault_io for torn ones);
 *   and, on the side of keeping data:
 *   - ftruncate is taken as durable at once (recovery's torn-tail cut);
 *   - a file's durable size follows it through renames (the inode's).
 *
 * Unlink and rename-over keep the victim's bytes under a hidden name in the
 * same directory until the directory is fsynced, so a cut can restore them.
 *
 * power_io_cut_after(p, n): the nth mutating call from now (open with
 * O_CREAT, pwrite, fsync, fdatasync, ftruncate, rename, unlink, mkdir,
 * fsync_dir)
 * does not happen: it waits for the calls in flight, applies the cut and
 * ends the process with _exit(POWER_IO_EXIT_CODE). For child processes.
 */
#ifndef TALLY_POWER_IO_H
#define TALLY_POWER_IO_H

#include <stdint.h>

#include "tally_io.h"

#define POWER_IO_EXIT_CODE 77

typedef struct power_io power_io;

/* NULL if out of memory. inner must outlive the power_io. */
power_io *power_io_create(const tally_io *inner);
/* Frees p (also after a cut); the table must no longer be in use. */
void power_io_destroy(power_io *p);
const tally_io *power_io_table(power_io *p);

/* Arms the cut at the nth mutating call from now (n >= 1); 0 disarms. */
void power_io_cut_after(power_io *p, uint64_t n);

/* For a process that goes on (a fuzz target): from the nth mutating call
 * from now on (n >= 1; 0 disarms), every mutating call fails with -EIO
 * and changes nothing, as if the power had failed just before it while
 * the process kept running. Reads still see every byte written before.
 * Close the store, then power_io_cut() makes the directory what the disk
 * would hold. */
void power_io_fail_after(power_io *p, uint64_t n);
/* Whether the power has failed (power_io_fail_after reached its call). */
int power_io_failed(power_io *p);

/* Applies the cut now: returns 0, or -errno of the first file operation
 * that failed. Every later call through the table blocks forever. */
int power_io_cut(power_io *p);

#endif /* TALLY_POWER_IO_H */
