// The C ABI's version, ISA levels and memory advice.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "checks.h"
#include "dlrmx.h"
#include "isa.h"
#include "memory.h"

using dlrmx::checks::guarded;

extern "C" {

int32_t dlrmx_abi_version(void) { return DLRMX_ABI_VERSION; }

int dlrmx_isa_names(int32_t which, char* out, int64_t out_size, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cpu;
    CHECK_VALUE(which >= 0 && which <= 2, "dlrmx_isa_names: which must be 0, 1 or 2");
    std::vector<Isa> isas = which == 0   ? std::vector<Isa>{Isa::scalar, Isa::avx2, Isa::avx512}
                            : which == 1 ? supported_isas()
                                         : std::vector<Isa>{active_isa()};
    std::string names;
    for (Isa isa : isas) names += (names.empty() ? "" : ",") + std::string(isa_name(isa));
    CHECK_VALUE(out_size > static_cast<int64_t>(names.size()), "dlrmx_isa_names: buffer too small");
    std::snprintf(out, static_cast<size_t>(out_size), "%s", names.c_str());
  });
}

int dlrmx_set_isa(const char* name, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cpu;
    set_active_isa(parse_isa(name));
  });
}

int dlrmx_advise_huge_pages(void* data, int64_t bytes) {
  return bytes > 0 && dlrmx::cpu::advise_huge_pages(data, static_cast<size_t>(bytes)) ? 1 : 0;
}

}  // extern "C"
