/*
 * sqlite_walbuf.h — the VFS that writes a commit's WAL frames with one
 * system call (sqlite_walbuf.c says why and when it is safe: a connection
 * that commits with synchronous=FULL).
 */
#ifndef ADB_SQLITE_WALBUF_H
#define ADB_SQLITE_WALBUF_H

#include <sqlite3.h>

#define ADB__SQLITE_WALBUF_VFS "adb-walbuf"

/* Registers the VFS once (not as the default); its name, or NULL when it
 * could not be registered (then open with the default VFS). */
const char *adb__sqlite_walbuf(void);

#endif
