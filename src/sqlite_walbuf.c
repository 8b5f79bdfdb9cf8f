/*
 * sqlite_walbuf.c — a SQLite VFS that gathers the writes of a commit to the
 * WAL into a few large system calls.
 *
 * Why. SQLite writes each WAL frame as two writes (its 24-byte header, then
 * the page), so a commit of a batch that dirtied 56 pages is about 112
 * pwrite calls before its fsync (strace of the store's batch shape,
 * docs/performance.md); in this paravirtualised guest a system call costs
 * microseconds, and on an idle machine that is a large part of the flush
 * worker's cycle, which is what bounds durable rewards.
 *
 * What. "adb-walbuf" wraps the default VFS. Every file but a WAL is opened
 * by the default VFS itself, in place (its own methods, no wrapper). A WAL
 * file gets a buffer: a write that continues the buffered bytes is
 * appended to it; anything else (a write elsewhere, a read of the file,
 * its size, a truncate, a sync, a file control, close) first writes the
 * buffer out, in 64 KiB writes (the most the default VFS takes at once).
 * So the frames of a commit reach the file in a few calls instead of two
 * per frame, just before the commit's sync.
 *
 * Why it is safe. Readers see a commit's frames only through the wal-index
 * header in shared memory, which SQLite updates after writing the frames
 * and, when the commit syncs the WAL, after that sync. With
 * synchronous=FULL every commit syncs the WAL, so the buffer is in the file
 * before any reader can look for it: the store uses this VFS for its
 * writer connection only, and only with synchronous=FULL (with NORMAL a
 * commit does not sync, the header would be published over frames still
 * in the buffer). A crash loses only bytes not yet synced, which SQLite's
 * recovery already treats as never written. The writer's own reads of the
 * WAL (a checkpoint, a page read back) write the buffer out first.
 */
#include "sqlite_walbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WB_CAP (1 << 20)    /* bytes gathered before they are written anyway */
#define WB_PIECE (64 << 10) /* bytes a write call of the default VFS takes */

typedef struct wb_file {
  sqlite3_file base;  /* its methods: wb_io */
  sqlite3_file *real; /* the default VFS's file, right after this struct */
  char *buf;
  size_t len;
  sqlite3_int64 off; /* file offset of buf[0] */
} wb_file;

static sqlite3_vfs wb_vfs;
static sqlite3_vfs *wb_real;

/* Writes the buffer out, in pieces of WB_PIECE: the default unix VFS
 * writes at most 128 KiB - 1 bytes a call (it masks the length, as pages
 * are at most 64 KiB) and reports a longer write as a full disk. */
static int wb_flush(wb_file *f) {
  int rc = SQLITE_OK;
  for (size_t at = 0; at < f->len && rc == SQLITE_OK; at += WB_PIECE) {
    size_t n = f->len - at < WB_PIECE ? f->len - at : WB_PIECE;
    rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n,
                                   f->off + (sqlite3_int64)at);
  }
  f->len = 0;
  return rc;
}

static int wb_close(sqlite3_file *p) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  int rc2 = f->real->pMethods->xClose(f->real);
  free(f->buf);
  f->buf = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *p, void *out, int n, sqlite3_int64 off) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, n, off);
}

static int wb_write(sqlite3_file *p, const void *in, int n, sqlite3_int64 off) {
  wb_file *f = (wb_file *)p;
  int follows = f->len && off == f->off + (sqlite3_int64)f->len;
  if (!follows || f->len + (size_t)n > WB_CAP) {
    int rc = wb_flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  if ((size_t)n > WB_PIECE || (!f->buf && !(f->buf = malloc(WB_CAP))))
    return f->real->pMethods->xWrite(f->real, in, n, off);
  if (!f->len) f->off = off;
  memcpy(f->buf + f->len, in, (size_t)n);
  f->len += (size_t)n;
  return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *p, sqlite3_int64 size) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *p, int flags) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wb_size(sqlite3_file *p, sqlite3_int64 *size) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wb_lock(sqlite3_file *p, int lock) {
  wb_file *f = (wb_file *)p;
  return f->real->pMethods->xLock(f->real, lock);
}

static int wb_unlock(sqlite3_file *p, int lock) {
  wb_file *f = (wb_file *)p;
  return f->real->pMethods->xUnlock(f->real, lock);
}

static int wb_reserved(sqlite3_file *p, int *out) {
  wb_file *f = (wb_file *)p;
  return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wb_control(sqlite3_file *p, int op, void *arg) {
  wb_file *f = (wb_file *)p;
  int rc = wb_flush(f);
  return rc != SQLITE_OK ? rc
                         : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wb_sector(sqlite3_file *p) {
  wb_file *f = (wb_file *)p;
  return f->real->pMethods->xSectorSize(f->real);
}

static int wb_device(sqlite3_file *p) {
  wb_file *f = (wb_file *)p;
  return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static const sqlite3_io_methods wb_io = {
    .iVersion = 1,
    .xClose = wb_close,
    .xRead = wb_read,
    .xWrite = wb_write,
    .xTruncate = wb_truncate,
    .xSync = wb_sync,
    .xFileSize = wb_size,
    .xLock = wb_lock,
    .xUnlock = wb_unlock,
    .xCheckReservedLock = wb_reserved,
    .xFileControl = wb_control,
    .xSectorSize = wb_sector,
    .xDeviceCharacteristics = wb_device,
};

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p,
                   int flags, int *out_flags) {
  (void)vfs;
  if (!(flags & SQLITE_OPEN_WAL)) /* in place: the default VFS's own file */
    return wb_real->xOpen(wb_real, name, p, flags, out_flags);
  wb_file *f = (wb_file *)p;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  int rc = wb_real->xOpen(wb_real, name, f->real, flags, out_flags);
  /* A failed xOpen may still have set methods that must be closed. */
  if (rc != SQLITE_OK) {
    if (f->real->pMethods) f->real->pMethods->xClose(f->real);
    f->base.pMethods = NULL;
    return rc;
  }
  f->base.pMethods = &wb_io;
  return SQLITE_OK;
}

static void wb_register(void) {
  wb_real = sqlite3_vfs_find(NULL);
  if (!wb_real) return;
  wb_vfs = *wb_real; /* every other method, and its pAppData, as is */
  wb_vfs.zName = ADB__SQLITE_WALBUF_VFS;
  wb_vfs.szOsFile = (int)sizeof(wb_file) + wb_real->szOsFile;
  wb_vfs.xOpen = wb_open;
  wb_vfs.pNext = NULL;
  if (sqlite3_vfs_register(&wb_vfs, 0) != SQLITE_OK) wb_real = NULL;
}

const char *adb__sqlite_walbuf(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, wb_register);
  return wb_real ? ADB__SQLITE_WALBUF_VFS : NULL;
}
