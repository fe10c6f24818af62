#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace dlrmx::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out{Isa::scalar};
  __builtin_cpu_init();
  // libgcc's checks include the OS's XSAVE support for the wider registers.
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(Isa::avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    out.push_back(Isa::avx512);
  return out;
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument("DLRMX_CPU_ISA: unknown level '" + name +
                              "' (expected scalar, avx2 or avx512)");
}

namespace {
std::atomic<int> g_active{-1};

Isa choose() {
  auto supported = supported_isas();
  const char* forced = std::getenv("DLRMX_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return supported.back();
  Isa want = parse_isa(forced);
  for (Isa isa : supported)
    if (isa == want) return want;
  throw std::invalid_argument(std::string("DLRMX_CPU_ISA=") + forced +
                              " is not supported by this CPU (best: " +
                              isa_name(supported.back()) + ")");
}
}  // namespace

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(choose());
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  for (Isa s : supported_isas())
    if (s == isa) {
      g_active.store(static_cast<int>(isa));
      return;
    }
  throw std::invalid_argument(std::string("ISA level ") + isa_name(isa) +
                              " is not supported by this CPU");
}

}  // namespace dlrmx::cpu
