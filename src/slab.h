/*
 * slab.h — memory for queued decisions (slab.c): blocks carved out of
 * huge-page chunks that are reused once their blocks are freed.
 */
#ifndef ADB_SLAB_H
#define ADB_SLAB_H

#include <stddef.h>

/* n bytes, 16-byte aligned, or NULL (out of memory, or n near 2 MiB or
 * more: the caller falls back to malloc). Any thread may free a block. */
void *adb__slab_alloc(size_t n);
void adb__slab_free(void *p);

#endif
