/*
 * power_io.c — power-cut simulation (see power_io.h for the model).
 *
 * State, under p->mu:
 *   files[]   every file seen: its current name and durable size;
 *   pending[] directory changes since the last fsync of their directory,
 *             oldest first;
 *   paths[fd] the name each open fd was opened under (kept current across
 *             renames), to find a file from an fd.
 *   undo[]    the bytes below a file's durable size that a write replaced
 *             since the file's last sync, as they were, oldest first (the
 *             WAL rewrites its last block in place: see power_io.h); and,
 *             marked lost, the bytes a failed sync could not make durable,
 *             as the disk still holds them, until they are written again.
 * Every wrapped call holds p->cut shared while it runs; a cut takes it
 * exclusive, so it never races a call in flight, and never releases it.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grow.h"
#include "power_io.h"

#define POWER_FILES_MAX 16384
#define POWER_PENDING_MAX 16384
#define POWER_FD_MAX 4096
#define POWER_PATH_SIZE 512

typedef struct power_file {
	char name[POWER_PATH_SIZE];
	int64_t durable_size;
} power_file;

/* Durable bytes a write replaced, to put back at a cut. A lost one holds
 * what the disk has where a sync failed: a successful sync keeps it; a
 * write over it makes that part an ordinary one. */
typedef struct undo_write {
	uint32_t file;   /* index in files[] */
	uint64_t offset;
	size_t size;
	uint8_t *bytes;
	int lost;
} undo_write;

/* A directory a cut removes is at most this deep below the one made. */
#define POWER_TREE_FDS_MAX 16

enum pending_kind {
	PENDING_CREATE, PENDING_RENAME, PENDING_RENAME_OVER, PENDING_UNLINK, PENDING_MKDIR
};

typedef struct pending_op {
	enum pending_kind kind;
	char dir[POWER_PATH_SIZE];
	char a[POWER_PATH_SIZE];     /* CREATE, MKDIR: path; RENAME*: from; UNLINK: path */
	char b[POWER_PATH_SIZE];     /* RENAME*: to */
	char trash[POWER_PATH_SIZE]; /* RENAME_OVER: the replaced file; UNLINK: the file */
} pending_op;

struct power_io {
	tally_io table;
	const tally_io *inner;
	pthread_mutex_t mu;
	pthread_rwlock_t cut;
	power_file *files;
	uint32_t file_count;
	uint32_t file_capacity;
	pending_op *pending;
	uint32_t pending_count;
	uint32_t pending_capacity;
	char *paths[POWER_FD_MAX];
	undo_write *undo;
	uint32_t undo_count;
	uint32_t undo_capacity;
	uint64_t ops;
	uint64_t cut_at; /* 0: not armed */
	uint64_t fail_at; /* 0: not armed (power_io_fail_after) */
	int failed;       /* the power failed: every mutating call is -EIO */
	uint64_t trash_seq;
	int cut_done; /* p->cut is held for good */
};

static power_io *from(const tally_io *io)
{
	return io->ctx;
}

static void dir_of(const char *path, char *dir)
{
	snprintf(dir, POWER_PATH_SIZE, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(dir, POWER_PATH_SIZE, ".");
}

/* mu held. */
static power_file *file_find(power_io *p, const char *name)
{
	for (uint32_t i = 0; i < p->file_count; i++)
		if (strcmp(p->files[i].name, name) == 0)
			return &p->files[i];
	return NULL;
}

/* Makes room for one more element in *items (count of them, *capacity
 * allocated; grow.h doubles it from 16): 0, or -1 at max elements or out
 * of memory. The tables start small: a fuzz target makes a power_io per
 * input. */
static int table_grow(void **items, uint32_t count, uint32_t *capacity, size_t size, uint32_t max)
{
	return count >= max || grow_for_one(items, capacity, count, 16, size) ? -1 : 0;
}

/* mu held: the file, added with durable size `size` when unknown (NULL
 * when the table is full). */
static power_file *file_track(power_io *p, const char *name, int64_t size)
{
	power_file *f = file_find(p, name);
	if (f || table_grow((void **)&p->files, p->file_count, &p->file_capacity, sizeof(*p->files),
			    POWER_FILES_MAX))
		return f;
	f = &p->files[p->file_count++];
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->durable_size = size;
	return f;
}

/* mu held: a file (and open fds) now goes by another name. */
static void file_rename(power_io *p, const char *from_name, const char *to_name)
{
	power_file *gone = file_find(p, to_name);
	if (gone)
		gone->name[0] = 0; /* replaced: the trash entry was made first */
	power_file *f = file_find(p, from_name);
	if (f)
		snprintf(f->name, sizeof(f->name), "%s", to_name);
	for (int fd = 0; fd < POWER_FD_MAX; fd++)
		if (p->paths[fd] && strcmp(p->paths[fd], from_name) == 0) {
			char *copy = strdup(to_name);
			if (copy) {
				free(p->paths[fd]);
				p->paths[fd] = copy;
			}
		}
}

static void pending_add(power_io *p, enum pending_kind kind, const char *a, const char *b,
			const char *trash)
{
	if (table_grow((void **)&p->pending, p->pending_count, &p->pending_capacity,
		       sizeof(*p->pending), POWER_PENDING_MAX))
		abort(); /* a test that never fsyncs a directory: raise the limit */
	pending_op *op = &p->pending[p->pending_count++];
	op->kind = kind;
	dir_of(a, op->dir);
	snprintf(op->a, sizeof(op->a), "%s", a);
	snprintf(op->b, sizeof(op->b), "%s", b ? b : "");
	snprintf(op->trash, sizeof(op->trash), "%s", trash ? trash : "");
}

static void trash_name(power_io *p, const char *path, char *out)
{
	char dir[POWER_PATH_SIZE];
	dir_of(path, dir);
	snprintf(out, POWER_PATH_SIZE, "%s/.power-io-trash-%llu", dir,
		 (unsigned long long)++p->trash_seq);
}

/* mu held: forgets file i's saved bytes at or past `from` (the file was
 * cut there); with `synced`, every one of them but the lost ones (the file
 * was synced: from is 0). */
static void undo_drop(power_io *p, uint32_t i, uint64_t from, int synced)
{
	uint32_t kept = 0;
	for (uint32_t k = 0; k < p->undo_count; k++) {
		undo_write *u = &p->undo[k];
		if (u->file == i && u->offset + u->size > from && !(synced && u->lost)) {
			if (u->offset >= from) {
				free(u->bytes);
				continue;
			}
			u->size = from - u->offset; /* keep the part below `from` */
		}
		p->undo[kept++] = *u;
	}
	p->undo_count = kept;
}

/* mu held: room for one more undo entry (a test harness cannot go on
 * faithfully without it). */
static undo_write *undo_push(power_io *p)
{
	if (table_grow((void **)&p->undo, p->undo_count, &p->undo_capacity, sizeof(*p->undo),
		       UINT32_MAX))
		abort();
	return &p->undo[p->undo_count++];
}

/* mu held, before a write of size bytes at offset to fd: saves the
 * durable bytes it will replace. The writes to a file power_io does not
 * know are kept, as everywhere else; a durable range it cannot read back
 * stops the test (abort), as the cut could not be faithful. */
static void undo_save(power_io *p, int fd, uint64_t offset, size_t size)
{
	if (fd < 0 || fd >= POWER_FD_MAX || !p->paths[fd])
		return;
	power_file *f = file_find(p, p->paths[fd]);
	if (!f || (int64_t)offset >= f->durable_size)
		return;
	size_t n = (uint64_t)f->durable_size - offset < size ? (size_t)(f->durable_size - (int64_t)offset)
							   : size;
	uint8_t *bytes = malloc(n);
	/* Read by name: fd may be open with O_DIRECT, which wants aligned buffers. */
	int rfd = open(f->name, O_RDONLY | O_CLOEXEC);
	if (!bytes || rfd < 0 || pread(rfd, bytes, n, (off_t)offset) != (ssize_t)n)
		abort();
	close(rfd);
	*undo_push(p) = (undo_write){(uint32_t)(f - p->files), offset, n, bytes, 0};
}

/* mu held: a new lost entry of u's bytes [from, to) (file offsets). */
static void undo_lost_copy(power_io *p, const undo_write *u, uint64_t from, uint64_t to)
{
	uint8_t *bytes = malloc(to - from);
	if (!bytes)
		abort();
	memcpy(bytes, u->bytes + (from - u->offset), to - from);
	*undo_push(p) = (undo_write){u->file, from, to - from, bytes, 1};
}

/* mu held, before a write of [offset, offset + size) to file i: the part
 * of each lost entry it covers becomes ordinary (the write dirties those
 * bytes again: a later sync makes them durable), the rest stays lost. The
 * parts left are new entries at the end; no write after the lost entry
 * touched them, so their place in the order does not matter. */
static void undo_rewritten(power_io *p, uint32_t i, uint64_t offset, size_t size)
{
	uint64_t end = offset + size;
	uint32_t count = p->undo_count;
	for (uint32_t k = 0; k < count; k++) {
		undo_write u = p->undo[k];
		uint64_t u_end = u.offset + u.size;
		if (u.file != i || !u.lost || u_end <= offset || u.offset >= end)
			continue;
		uint64_t from = u.offset > offset ? u.offset : offset;
		uint64_t to = u_end < end ? u_end : end;
		uint8_t *middle = malloc(to - from);
		if (!middle)
			abort();
		memcpy(middle, u.bytes + (from - u.offset), to - from);
		p->undo[k] = (undo_write){i, from, to - from, middle, 0};
		if (u.offset < from)
			undo_lost_copy(p, &u, u.offset, from);
		if (to < u_end)
			undo_lost_copy(p, &u, to, u_end);
		free(u.bytes);
	}
}

/* mu held, after a sync of file f failed: what was written since its last
 * successful sync is lost (power_io.h). The saved bytes it replaced become
 * lost entries, and so does its growth past the durable size, as zeros. */
static void sync_failed(power_io *p, power_file *f, int64_t size)
{
	uint32_t i = (uint32_t)(f - p->files);
	for (uint32_t k = 0; k < p->undo_count; k++)
		if (p->undo[k].file == i)
			p->undo[k].lost = 1;
	if (size <= f->durable_size)
		return;
	undo_write *grown = undo_push(p);
	size_t n = (size_t)(size - f->durable_size);
	*grown = (undo_write){i, (uint64_t)f->durable_size, n, calloc(1, n), 1};
	if (!grown->bytes)
		abort();
}

/* nftw callback of remove_tree: removes one entry, depth first. */
static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path) ? -1 : 0;
}

/* Removes directory `path` with everything in it, and forgets the files
 * under it. 0 or -errno. */
static int remove_tree(power_io *p, const char *path)
{
	size_t n = strlen(path);
	for (uint32_t i = 0; i < p->file_count; i++)
		if (strncmp(p->files[i].name, path, n) == 0 && p->files[i].name[n] == '/')
			p->files[i].name[0] = 0;
	return nftw(path, remove_entry, POWER_TREE_FDS_MAX, FTW_DEPTH | FTW_PHYS) ? -errno : 0;
}

static int apply_cut(power_io *p)
{
	int first = 0;
	const tally_io *in = p->inner;
	for (uint32_t k = p->pending_count; k-- > 0;) {
		pending_op *op = &p->pending[k];
		int rc = 0;
		switch (op->kind) {
		case PENDING_CREATE:
			rc = in->unlink(in, op->a);
			if (!rc) {
				power_file *f = file_find(p, op->a);
				if (f)
					f->name[0] = 0;
			}
			break;
		case PENDING_RENAME:
			rc = in->rename(in, op->b, op->a);
			file_rename(p, op->b, op->a);
			break;
		case PENDING_RENAME_OVER:
			rc = in->rename(in, op->b, op->a);
			file_rename(p, op->b, op->a);
			if (!rc)
				rc = in->rename(in, op->trash, op->b);
			file_rename(p, op->trash, op->b);
			break;
		case PENDING_UNLINK:
			rc = in->rename(in, op->trash, op->a);
			file_rename(p, op->trash, op->a);
			break;
		case PENDING_MKDIR:
			rc = remove_tree(p, op->a);
			break;
		}
		if (rc && rc != -ENOENT && !first)
			first = rc;
	}
	p->pending_count = 0;
	for (uint32_t k = p->undo_count; k-- > 0;) { /* newest first: the oldest bytes win */
		undo_write *u = &p->undo[k];
		power_file *f = &p->files[u->file];
		int fd = f->name[0] ? open(f->name, O_WRONLY | O_CLOEXEC) : -1;
		if (fd >= 0 && pwrite(fd, u->bytes, u->size, (off_t)u->offset) != (ssize_t)u->size &&
		    !first)
			first = -EIO;
		if (fd >= 0)
			close(fd);
		free(u->bytes);
	}
	p->undo_count = 0;
	for (uint32_t i = 0; i < p->file_count; i++) {
		power_file *f = &p->files[i];
		if (!f->name[0])
			continue;
		struct stat st;
		if (stat(f->name, &st) != 0)
			continue;
		if (st.st_size > f->durable_size && truncate(f->name, f->durable_size) != 0 && !first)
			first = -errno;
	}
	return first;
}

/* Every mutating call starts here: counts it, and performs the armed cut
 * instead of the call when its turn comes. Returns 0 with p->cut held
 * shared (the caller releases it with op_end), or -EIO with nothing held
 * once the power has failed (power_io_fail_after): the call must then
 * change nothing. */
static int op_begin(power_io *p)
{
	pthread_mutex_lock(&p->mu);
	p->ops++;
	int cut_now = p->cut_at && p->ops == p->cut_at;
	if (p->fail_at && p->ops >= p->fail_at)
		p->failed = 1;
	int failed = p->failed;
	pthread_mutex_unlock(&p->mu);
	if (failed)
		return -EIO;
	if (cut_now) {
		pthread_rwlock_wrlock(&p->cut);
		pthread_mutex_lock(&p->mu);
		apply_cut(p);
		_exit(POWER_IO_EXIT_CODE);
	}
	pthread_rwlock_rdlock(&p->cut);
	return 0;
}

static void op_end(power_io *p)
{
	pthread_rwlock_unlock(&p->cut);
}

/* ---- wrapped calls --------------------------------------------------------- */

static int p_open(const tally_io *io, const char *path, int flags, int mode)
{
	power_io *p = from(io);
	int creating = (flags & O_CREAT) != 0;
	if (creating) {
		if (op_begin(p))
			return -EIO;
	} else
		pthread_rwlock_rdlock(&p->cut);
	struct stat st;
	int existed = stat(path, &st) == 0;
	int fd = p->inner->open(p->inner, path, flags, mode);
	if (fd >= 0) {
		pthread_mutex_lock(&p->mu);
		if (!existed)
			pending_add(p, PENDING_CREATE, path, NULL, NULL);
		/* A file seen for the first time is durable as it stands; one
		 * created now has no durable bytes yet. A truncating open of an
		 * existing file is taken as durable (tally never does it). */
		int64_t size = existed ? (int64_t)st.st_size : 0;
		if (existed && (flags & O_TRUNC))
			size = 0;
		power_file *f = file_track(p, path, size);
		if (f && (flags & O_TRUNC))
			f->durable_size = 0;
		if (fd < POWER_FD_MAX) {
			free(p->paths[fd]);
			p->paths[fd] = strdup(path);
		}
		pthread_mutex_unlock(&p->mu);
	}
	op_end(p);
	return fd;
}

static int p_close(const tally_io *io, int fd)
{
	power_io *p = from(io);
	pthread_mutex_lock(&p->mu);
	if (fd >= 0 && fd < POWER_FD_MAX) {
		free(p->paths[fd]);
		p->paths[fd] = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	return p->inner->close(p->inner, fd);
}

static int64_t p_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	power_io *p = from(io);
	pthread_rwlock_rdlock(&p->cut);
	int64_t rc = p->inner->pread(p->inner, fd, buf, size, offset);
	pthread_rwlock_unlock(&p->cut);
	return rc;
}

static int64_t p_pwrite(const tally_io *io, int fd, const void *buf, size_t size, uint64_t offset)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	pthread_mutex_lock(&p->mu);
	power_file *f = fd >= 0 && fd < POWER_FD_MAX && p->paths[fd] ? file_find(p, p->paths[fd])
								      : NULL;
	if (f)
		undo_rewritten(p, (uint32_t)(f - p->files), offset, size);
	undo_save(p, fd, offset, size);
	pthread_mutex_unlock(&p->mu);
	int64_t rc = p->inner->pwrite(p->inner, fd, buf, size, offset);
	op_end(p);
	return rc;
}

static int p_sync(const tally_io *io, int fd, int data_only)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	int rc = data_only ? p->inner->fdatasync(p->inner, fd) : p->inner->fsync(p->inner, fd);
	int64_t size = p->inner->file_size(p->inner, fd);
	pthread_mutex_lock(&p->mu);
	if (size >= 0 && fd >= 0 && fd < POWER_FD_MAX && p->paths[fd]) {
		power_file *f = file_track(p, p->paths[fd], size);
		if (f && rc) {
			sync_failed(p, f, size);
		} else if (f) {
			f->durable_size = size;
			undo_drop(p, (uint32_t)(f - p->files), 0, 1);
		}
	}
	pthread_mutex_unlock(&p->mu);
	op_end(p);
	return rc;
}

static int p_fsync(const tally_io *io, int fd)
{
	return p_sync(io, fd, 0);
}

static int p_fdatasync(const tally_io *io, int fd)
{
	return p_sync(io, fd, 1);
}

static int p_ftruncate(const tally_io *io, int fd, uint64_t size)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	int rc = p->inner->ftruncate(p->inner, fd, size);
	if (!rc) {
		pthread_mutex_lock(&p->mu);
		if (fd >= 0 && fd < POWER_FD_MAX && p->paths[fd]) {
			power_file *f = file_find(p, p->paths[fd]);
			if (f && f->durable_size > (int64_t)size)
				f->durable_size = (int64_t)size;
			if (f)
				undo_drop(p, (uint32_t)(f - p->files), size, 0);
		}
		pthread_mutex_unlock(&p->mu);
	}
	op_end(p);
	return rc;
}

static int64_t p_file_size(const tally_io *io, int fd)
{
	power_io *p = from(io);
	return p->inner->file_size(p->inner, fd);
}

static int p_rename(const tally_io *io, const char *from_name, const char *to_name)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	int rc;
	struct stat st;
	char trash[POWER_PATH_SIZE] = "";
	pthread_mutex_lock(&p->mu);
	if (stat(to_name, &st) == 0) {
		/* Keep the replaced file's bytes until the directory is synced. */
		trash_name(p, to_name, trash);
		file_track(p, to_name, (int64_t)st.st_size);
		rc = p->inner->rename(p->inner, to_name, trash);
		if (rc) {
			pthread_mutex_unlock(&p->mu);
			op_end(p);
			return rc;
		}
		file_rename(p, to_name, trash);
	}
	rc = p->inner->rename(p->inner, from_name, to_name);
	if (!rc) {
		pending_add(p, trash[0] ? PENDING_RENAME_OVER : PENDING_RENAME, from_name, to_name,
			    trash);
		file_rename(p, from_name, to_name);
	} else if (trash[0]) {
		p->inner->rename(p->inner, trash, to_name);
		file_rename(p, trash, to_name);
	}
	pthread_mutex_unlock(&p->mu);
	op_end(p);
	return rc;
}

static int p_unlink(const tally_io *io, const char *path)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	char trash[POWER_PATH_SIZE];
	struct stat st;
	pthread_mutex_lock(&p->mu);
	int rc;
	if (stat(path, &st) != 0) {
		rc = -errno;
	} else {
		trash_name(p, path, trash);
		file_track(p, path, (int64_t)st.st_size);
		rc = p->inner->rename(p->inner, path, trash);
		if (!rc) {
			pending_add(p, PENDING_UNLINK, path, NULL, trash);
			file_rename(p, path, trash);
		}
	}
	pthread_mutex_unlock(&p->mu);
	op_end(p);
	return rc;
}

static int p_mkdir(const tally_io *io, const char *path, int mode)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	int rc = p->inner->mkdir(p->inner, path, mode);
	if (!rc) {
		pthread_mutex_lock(&p->mu);
		pending_add(p, PENDING_MKDIR, path, NULL, NULL);
		pthread_mutex_unlock(&p->mu);
	}
	op_end(p);
	return rc;
}

typedef struct list_ctx {
	tally_io_dir_fn fn;
	void *ctx;
} list_ctx;

static int list_filter(void *ctx, const char *name)
{
	list_ctx *l = ctx;
	if (strncmp(name, ".power-io-trash-", 16) == 0)
		return 0; /* unlinked, as far as the caller knows */
	return l->fn(l->ctx, name);
}

static int p_list_dir(const tally_io *io, const char *path, tally_io_dir_fn fn, void *ctx)
{
	power_io *p = from(io);
	list_ctx l = {fn, ctx};
	pthread_rwlock_rdlock(&p->cut);
	int rc = p->inner->list_dir(p->inner, path, list_filter, &l);
	pthread_rwlock_unlock(&p->cut);
	return rc;
}

static int p_fsync_dir(const tally_io *io, const char *path)
{
	power_io *p = from(io);
	if (op_begin(p))
		return -EIO;
	int rc = p->inner->fsync_dir(p->inner, path);
	if (!rc) {
		/* Changes in this directory are durable now; drop the victims'
		 * bytes kept for a cut. */
		pthread_mutex_lock(&p->mu);
		uint32_t kept = 0;
		for (uint32_t k = 0; k < p->pending_count; k++) {
			pending_op *op = &p->pending[k];
			if (strcmp(op->dir, path) != 0) {
				p->pending[kept++] = *op;
				continue;
			}
			if (op->trash[0]) {
				p->inner->unlink(p->inner, op->trash);
				power_file *f = file_find(p, op->trash);
				if (f)
					f->name[0] = 0;
			}
		}
		p->pending_count = kept;
		pthread_mutex_unlock(&p->mu);
	}
	op_end(p);
	return rc;
}

static int p_lock(const tally_io *io, int fd)
{
	power_io *p = from(io);
	return p->inner->lock(p->inner, fd);
}

static int64_t p_now_us(const tally_io *io)
{
	power_io *p = from(io);
	return p->inner->now_us(p->inner);
}

static void p_random(const tally_io *io, void *buf, size_t size)
{
	power_io *p = from(io);
	p->inner->random(p->inner, buf, size);
}

/* ---- public ---------------------------------------------------------------- */

power_io *power_io_create(const tally_io *inner)
{
	power_io *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->inner = inner;
	pthread_mutex_init(&p->mu, NULL);
	/* Writer-preferring, so a cut is not starved by a stream of calls. */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&p->cut, &attr);
	pthread_rwlockattr_destroy(&attr);
	p->table = (tally_io){
		.open = p_open, .close = p_close, .pread = p_pread, .pwrite = p_pwrite,
		.fsync = p_fsync, .fdatasync = p_fdatasync, .ftruncate = p_ftruncate,
		.file_size = p_file_size, .rename = p_rename, .unlink = p_unlink,
		.mkdir = p_mkdir, .list_dir = p_list_dir, .fsync_dir = p_fsync_dir,
		.lock = p_lock, .now_us = p_now_us, .random = p_random, .ctx = p,
	};
	return p;
}

void power_io_destroy(power_io *p)
{
	if (!p)
		return;
	for (int fd = 0; fd < POWER_FD_MAX; fd++)
		free(p->paths[fd]);
	for (uint32_t k = 0; k < p->undo_count; k++)
		free(p->undo[k].bytes);
	free(p->undo);
	free(p->files);
	free(p->pending);
	pthread_mutex_destroy(&p->mu);
	if (!p->cut_done) /* after a cut the lock stays held; only the memory goes */
		pthread_rwlock_destroy(&p->cut);
	free(p);
}

const tally_io *power_io_table(power_io *p)
{
	return &p->table;
}

void power_io_cut_after(power_io *p, uint64_t n)
{
	pthread_mutex_lock(&p->mu);
	p->cut_at = n ? p->ops + n : 0;
	pthread_mutex_unlock(&p->mu);
}

void power_io_fail_after(power_io *p, uint64_t n)
{
	pthread_mutex_lock(&p->mu);
	p->fail_at = n ? p->ops + n : 0;
	pthread_mutex_unlock(&p->mu);
}

int power_io_failed(power_io *p)
{
	pthread_mutex_lock(&p->mu);
	int failed = p->failed;
	pthread_mutex_unlock(&p->mu);
	return failed;
}

int power_io_cut(power_io *p)
{
	pthread_rwlock_wrlock(&p->cut);
	pthread_mutex_lock(&p->mu);
	int rc = apply_cut(p);
	p->cut_done = 1;
	pthread_mutex_unlock(&p->mu);
	return rc; /* p->cut stays held: the power is off */
}
