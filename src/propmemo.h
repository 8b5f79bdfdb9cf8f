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
 * cell >= 0 as it is, or computes and stores into it. */
double *adb__propmemo_cell(const adb__posterior *arms, int n,
                           const uint8_t *eligible, int chosen);

/* One Beta arm's CDF and density at the nodes of a fixed grid: level L
 * cuts [0, 1] into 2^L panels of 8 Gauss-Legendre nodes each; an entry
 * holds the ARMGRID_SPAN panels from `base` (bandit.c, design note 5).
 * A panel's values are filled by bandit.c the first time they are needed
 * and stay valid as long as the entry is (they depend on a, b, level and
 * the node alone). */
#define ARMGRID_SPAN 16

typedef struct adb__armgrid {
  int base;                  /* first panel held */
  uint32_t has_cdf, has_pdf; /* a bit a panel: filled */
  double cdf[ARMGRID_SPAN * 8], pdf[ARMGRID_SPAN * 8];
} adb__armgrid;

typedef struct adb__armref {
  double a, b;     /* Beta(a, b) */
  int level, base; /* base: a function of a, b and level */
  adb__armgrid *e; /* set by adb__propmemo_arms */
} adb__armref;

/* The calling thread's entries for k arms (distinct or not): arm[i].e the
 * one kept for arm[i]'s shapes and level, or a slot claimed for it with
 * nothing filled (has_cdf == has_pdf == 0) and its base. Returns 0, or -1
 * when the memo is off for this thread, memory is short, or the arms
 * cannot all be held at once (more than four in one group of the memo
 * and its spare entries taken): then no arm[i].e is to be used. */
int adb__propmemo_arms(adb__armref *arm, int k);

/* On by default; off for the calling thread only (tests, benchmarks); it
 * covers both the sets and the arms. */
void adb__propmemo_enable(int on);

/* The calling thread's lookups that found a value, and that did not. */
void adb__propmemo_counts(uint64_t *hits, uint64_t *misses);

#endif
