// Checks shared by the C ABI's functions: an error is a C++ exception inside the library,
// turned into an error kind and message at the C boundary (guarded), so no exception ever
// crosses into the caller. Messages are formatted only when a check fails.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dlrmx.h"

namespace dlrmx::checks {

struct Error {
  int kind;
  std::string message;
};

template <typename... Args>
[[noreturn]] void fail(int kind, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error{kind, os.str()};
}

#define DLRMX_CHECK(cond, kind, ...)                      \
  do {                                                    \
    if (!(cond)) ::dlrmx::checks::fail(kind, __VA_ARGS__); \
  } while (0)
#define CHECK_TYPE(cond, ...) DLRMX_CHECK(cond, DLRMX_TYPE_ERROR, __VA_ARGS__)
#define CHECK_VALUE(cond, ...) DLRMX_CHECK(cond, DLRMX_VALUE_ERROR, __VA_ARGS__)
#define CHECK_INDEX(cond, ...) DLRMX_CHECK(cond, DLRMX_INDEX_ERROR, __VA_ARGS__)

inline int report(dlrmx_status* status, int kind, const std::string& message) {
  if (status != nullptr) std::snprintf(status->message, sizeof(status->message), "%s", message.c_str());
  return kind;
}

// Runs body, returning DLRMX_OK or the error kind of whatever it threw (message in *status).
template <typename Body>
int guarded(dlrmx_status* status, Body&& body) {
  try {
    body();
    return DLRMX_OK;
  } catch (const Error& e) {
    return report(status, e.kind, e.message);
  } catch (const std::bad_alloc&) {
    return report(status, DLRMX_MEMORY_ERROR, "dlrmx: out of memory");
  } catch (const std::invalid_argument& e) {
    return report(status, DLRMX_VALUE_ERROR, e.what());
  } catch (const std::exception& e) {
    return report(status, DLRMX_RUNTIME_ERROR, e.what());
  } catch (...) {
    return report(status, DLRMX_RUNTIME_ERROR, "dlrmx: unknown native error");
  }
}

// a * b and a + b for sizes, or a ValueError naming what is being sized.
inline int64_t mul_size(int64_t a, int64_t b, const char* op, const char* what) {
  int64_t r = 0;
  CHECK_VALUE(!__builtin_mul_overflow(a, b, &r), op, ": ", what, " (", a, " * ", b,
              ") overflows int64");
  return r;
}
inline int64_t add_size(int64_t a, int64_t b, const char* op, const char* what) {
  int64_t r = 0;
  CHECK_VALUE(!__builtin_add_overflow(a, b, &r), op, ": ", what, " (", a, " + ", b,
              ") overflows int64");
  return r;
}

// The range a hyper-parameter must lie in, as a message prints it.
struct Range {
  double lo, hi;
  bool hi_open;
};
inline std::ostream& operator<<(std::ostream& os, const Range& r) {
  if (std::isinf(r.hi)) return os << ">= " << r.lo;
  return os << "in [" << r.lo << ", " << r.hi << (r.hi_open ? ")" : "]");
}

// A hyper-parameter: finite (also once rounded to the kernels' float) and in [lo, hi], or
// [lo, hi) when hi_open. NaN fails every comparison, so it is caught here too.
inline void check_hyper(const char* op, const char* name, double v, double lo,
                        double hi = HUGE_VAL, bool hi_open = false) {
  const bool finite = std::isfinite(v) && std::isfinite(static_cast<float>(v));
  const bool in_range = v >= lo && (hi_open ? v < hi : v <= hi);
  CHECK_VALUE(finite && in_range, op, ": ", name, " must be a finite number ",
              Range{lo, hi, hi_open}, ", got ", v);
}

// "arg" or "arg[index]".
struct Name {
  const char* arg;
  int64_t index = -1;
};
inline std::ostream& operator<<(std::ostream& os, const Name& n) {
  os << n.arg;
  if (n.index >= 0) os << "[" << n.index << "]";
  return os;
}

// The memory one call touches: no buffer it writes may share bytes with any other buffer of the
// call (a race between threads, or a read of half-updated values). Sort-and-sweep: O(n log n) in
// the number of buffers, nothing per element.
class Footprint {
 public:
  explicit Footprint(const char* op) : op_(op) {}
  void add(const void* data, int64_t bytes, Name name, bool written) {
    if (bytes <= 0 || data == nullptr) return;
    const auto begin = reinterpret_cast<uintptr_t>(data);
    spans_.push_back({begin, begin + static_cast<uintptr_t>(bytes), written, name});
  }
  void check() {
    std::sort(spans_.begin(), spans_.end(),
              [](const Span& a, const Span& b) { return a.begin < b.begin; });
    const Span* last_any = nullptr;      // the span reaching furthest so far
    const Span* last_written = nullptr;  // the written span reaching furthest so far
    for (const Span& s : spans_) {
      const Span* hit = nullptr;
      if (last_written && s.begin < last_written->end) hit = last_written;
      else if (s.written && last_any && s.begin < last_any->end) hit = last_any;
      CHECK_VALUE(hit == nullptr, op_, ": ", s.name, " and ", hit->name,
                  " share memory, but the op writes ", (s.written ? s.name : hit->name),
                  " in place; pass separate tensors");
      if (!last_any || s.end > last_any->end) last_any = &s;
      if (s.written && (!last_written || s.end > last_written->end)) last_written = &s;
    }
  }

 private:
  struct Span {
    uintptr_t begin, end;
    bool written;
    Name name;
  };
  const char* op_;
  std::vector<Span> spans_;
};

}  // namespace dlrmx::checks
