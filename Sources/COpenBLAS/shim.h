#ifndef REC_DIST_COPENBLAS_SHIM_H
#define REC_DIST_COPENBLAS_SHIM_H
#include <cblas.h>
// OpenBLAS extensions (declared in Debian's cblas.h): thread control.
#endif
