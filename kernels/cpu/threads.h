// The OpenMP thread count every compiled kernel asks for (1 in a build without OpenMP).
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace edgesentry_threads {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace edgesentry_threads
