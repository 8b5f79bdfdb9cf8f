/*
 * propmemo.h — a per-thread memo of the propensities that needed an
 * integral (design in propmemo.c).
 */
#ifndef ADB_PROPMEMO_H
#define ADB_PROPMEMO_H

#include <stdint.h>

#include "bandit.h"

/* The cell holding the propensity of `chosen` among these arms (same n,
 * same eligibility, every eligible arm's posterior equal field by field),
 * made empty (< 0) when the set is new; NULL when the memo is off for this
 * thread, the set is too large, or memory is short. The caller returns a
 * cell >= 0 as it is, or computes and stores into it. *all gets the set's
 * n cells (the caller may fill them all, each with its choice's value) and
 * *known how many of them held a value. */
double *adb__propmemo_cell(const adb__posterior *arms, int n,
                           const uint8_t *eligible, int chosen, double **all,
                           int *known);

/* On by default; off for the calling thread only (tests, benchmarks). */
void adb__propmemo_enable(int on);

/* The calling thread's lookups that found a value, and that did not. */
void adb__propmemo_counts(uint64_t *hits, uint64_t *misses);

#endif
