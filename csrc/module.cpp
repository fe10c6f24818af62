// The Python module dlrmx._C: loading it registers the torch ops (TORCH_LIBRARY in the other
// files); the functions here expose the non-tensor parts (ISA levels).
#include <torch/extension.h>

#include "isa.h"
#include "memory.h"

namespace {

std::vector<std::string> names(const std::vector<dlrmx::cpu::Isa>& isas) {
  std::vector<std::string> out;
  for (auto isa : isas) out.emplace_back(dlrmx::cpu::isa_name(isa));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace dlrmx::cpu;
  m.doc() = "dlrmx native kernels";
  m.def("compiled_isas", [] { return names({Isa::scalar, Isa::avx2, Isa::avx512}); },
        "ISA levels this build holds kernels for");
  m.def("supported_isas", [] { return names(supported_isas()); },
        "ISA levels this CPU can run");
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); },
        "The level kernels run at (DLRMX_CPU_ISA, or the best supported)");
  m.def("set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); },
        "Force an ISA level for this process");
  m.def("advise_huge_pages",
        [](const at::Tensor& t) {
          TORCH_CHECK_TYPE(t.device().is_cpu() && t.layout() == at::kStrided && t.is_contiguous(),
                           "advise_huge_pages needs a contiguous CPU tensor");
          return advise_huge_pages(t.data_ptr(), t.numel() * t.element_size());
        },
        "Back a (not yet touched) tensor's memory with transparent huge pages where possible");
  m.attr("cuda_built") = false;
}
