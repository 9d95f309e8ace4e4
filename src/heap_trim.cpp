#include "holdfast/heap_trim.hpp"

#include <malloc.h>

namespace holdfast {

void trim_heap() noexcept {
#if !defined(__SANITIZE_ADDRESS__)
  ::malloc_trim(0);
#endif
}

}  // namespace holdfast
