/*
 * fuzz_dir.h — the scratch data directory of the fuzz targets that run a
 * store on disk: removing one, with everything under it, between inputs.
 */
#ifndef TALLY_FUZZ_DIR_H
#define TALLY_FUZZ_DIR_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Removes path and everything under it; what cannot be removed stays. */
static inline void fuzz_remove_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char sub[512];
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			struct stat st;
			if (!lstat(sub, &st) && S_ISDIR(st.st_mode))
				fuzz_remove_tree(sub);
			else
				unlink(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

#endif /* TALLY_FUZZ_DIR_H */
