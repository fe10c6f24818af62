// Input checks shared by the torch glue. Every tensor a kernel reads or writes goes through one
// of these first, so a kernel only ever sees CPU, strided, dense memory of the dtype it expects.
// Read-only inputs may be copied (made contiguous); a tensor the op writes cannot be (the write
// would land in the copy), so it must already be contiguous. All checks are O(1) per tensor, and
// the error messages are built only when a check fails.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <vector>

namespace dlrmx::checks {

// "op: arg" or "op: arg[index]", formatted only into failing checks' messages.
struct Name {
  const char* op;
  const char* arg;
  int64_t index = -1;
};
// The argument alone ("arg[index]"), for a second name in one message.
struct Arg {
  const Name& name;
};
inline std::ostream& operator<<(std::ostream& os, const Arg& a) {
  os << a.name.arg;
  if (a.name.index >= 0) os << "[" << a.name.index << "]";
  return os;
}
inline std::ostream& operator<<(std::ostream& os, const Name& n) {
  return os << n.op << ": " << Arg{n};
}

inline void check_dense_cpu(const at::Tensor& t, const Name& n) {
  TORCH_CHECK_TYPE(t.defined(), n, " is an undefined tensor");
  TORCH_CHECK_TYPE(t.device().is_cpu(), n, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, n, " must be a dense (strided) tensor, got layout ",
                   t.layout());
}

inline bool dtype_in(const at::Tensor& t, std::initializer_list<at::ScalarType> ok) {
  return std::find(ok.begin(), ok.end(), t.scalar_type()) != ok.end();
}

inline void check_dtype(const at::Tensor& t, const Name& n, at::ScalarType want) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, n, " must be ", want, ", got ", t.scalar_type());
}

// A tensor the op only reads: checked, then returned contiguous (copied only if it is not).
inline at::Tensor readable(const at::Tensor& t, const Name& n) {
  check_dense_cpu(t, n);
  return t.resolve_neg().contiguous();
}

// A floating-point tensor the op only reads (a gradient): returned contiguous in `dtype`.
inline at::Tensor readable_float(const at::Tensor& t, const Name& n, at::ScalarType dtype) {
  check_dense_cpu(t, n);
  TORCH_CHECK_TYPE(t.is_floating_point(), n, " must be a floating-point tensor, got ",
                   t.scalar_type());
  return t.resolve_neg().to(dtype).contiguous();
}

// A tensor the op writes in place: right dtype and already contiguous.
inline void check_writable(const at::Tensor& t, const Name& n, at::ScalarType dtype) {
  check_dense_cpu(t, n);
  check_dtype(t, n, dtype);
  TORCH_CHECK_VALUE(t.is_contiguous() && !t.is_neg(), n,
                    " is updated in place, so it must be a contiguous tensor that owns its "
                    "elements (got sizes ", t.sizes(), ", strides ", t.strides(),
                    "); pass a .contiguous() copy and keep using that copy");
}

inline void check_shape(const at::Tensor& t, const Name& n, at::IntArrayRef want) {
  TORCH_CHECK_VALUE(t.sizes() == want, n, " must have shape ", want, ", got ", t.sizes());
}

// a * b for sizes, or a ValueError naming what is being sized.
inline int64_t mul_size(int64_t a, int64_t b, const char* op, const char* what) {
  int64_t r = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(a, b, &r), op, ": ", what, " (", a, " * ", b,
                    ") overflows int64");
  return r;
}
inline int64_t add_size(int64_t a, int64_t b, const char* op, const char* what) {
  int64_t r = 0;
  TORCH_CHECK_VALUE(!__builtin_add_overflow(a, b, &r), op, ": ", what, " (", a, " + ", b,
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
  TORCH_CHECK_VALUE(finite && in_range, op, ": ", name, " must be a finite number ",
                    Range{lo, hi, hi_open}, ", got ", v);
}

// The memory of the tensors one op call touches: no tensor it writes may share bytes with any
// other tensor of the call (a race between threads, or a read of half-updated values).
// Sort-and-sweep: O(n log n) in the number of tensors, nothing per element.
class Footprint {
 public:
  explicit Footprint(const char* op) : op_(op) {}
  void add(const at::Tensor& t, const Name& n, bool written) {
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (bytes == 0) return;
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    spans_.push_back({begin, begin + static_cast<uintptr_t>(bytes), written, n});
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
      TORCH_CHECK_VALUE(hit == nullptr, op_, ": ", Arg{s.name}, " and ", Arg{hit->name},
                        " share memory, but the op writes ", Arg{s.written ? s.name : hit->name},
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
