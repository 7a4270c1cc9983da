#ifndef MEETPERRY_SYSTEM_SHIMS_H
#define MEETPERRY_SYSTEM_SHIMS_H

/// syncfs(2): flush the whole file system holding `fd` in one call. Swift's
/// Glibc module does not export it (it is a GNU extension); on systems
/// without it this falls back to sync(2).
int meetperry_syncfs(int fd);

#endif
