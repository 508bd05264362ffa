/* gc/gc.h -- the managed collector (DESIGN.md: gc.*). */
#ifndef PH_GC_H
#define PH_GC_H
#include "heap/internal.h"
#endif
