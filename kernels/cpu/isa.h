// ISA levels and run-time selection. Kernels in per_isa/ are compiled once per level into
// namespaces dlrmx::cpu::scalar, ::avx2 and ::avx512; DLRMX_DISPATCH calls the active copy.
#pragma once
#include <string>
#include <vector>

namespace dlrmx::cpu {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
// Levels this CPU (and OS) can run.
std::vector<Isa> supported_isas();
// The level kernels use: the best supported one, or DLRMX_CPU_ISA if set. Decided at first use.
// Throws std::invalid_argument for an unknown or unsupported forced level.
Isa active_isa();
// Force a level for the rest of the process (tests use this to cover every path).
void set_active_isa(Isa isa);
Isa parse_isa(const std::string& name);

}  // namespace dlrmx::cpu

// Runs `return EXPR;` with `isa::` naming the active level's namespace, e.g.
//   DLRMX_ISA_CALL(isa::embedding_bag_forward<I, W>(tables, bags, ...));
#define DLRMX_ISA_CALL(...)                                                                \
  switch (::dlrmx::cpu::active_isa()) {                                                    \
    case ::dlrmx::cpu::Isa::avx512: { namespace isa = ::dlrmx::cpu::avx512; return __VA_ARGS__; } \
    case ::dlrmx::cpu::Isa::avx2: { namespace isa = ::dlrmx::cpu::avx2; return __VA_ARGS__; }     \
    default: { namespace isa = ::dlrmx::cpu::scalar; return __VA_ARGS__; }                        \
  }
