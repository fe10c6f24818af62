// Multi-tensor LAMB and split-SGD, compiled once per ISA level. Work is cut into fixed-size
// chunks across all tensors so one parallel region balances small and large tensors; LAMB's
// norms are summed per chunk in fixed order, so results do not depend on the thread count.
#include "bf16.h"
#include "dense_optim.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace dlrmx::cpu::DLRMX_ISA_NS {
namespace {

constexpr int64_t kChunk = 1 << 14;

struct Chunk {
  int64_t tensor, begin, end;
};

template <typename T>
std::vector<Chunk> make_chunks(const T* tensors, int64_t n) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t b = 0; b < tensors[t].numel; b += kChunk)
      chunks.push_back({t, b, std::min(tensors[t].numel, b + kChunk)});
  return chunks;
}

}  // namespace

void lamb_step(const LambTensor* tensors, int64_t num_tensors, const LambParams& p,
               int num_threads) {
  const auto chunks = make_chunks(tensors, num_tensors);
  const int64_t nc = static_cast<int64_t>(chunks.size());
  std::vector<double> w2(nc), u2(nc);
  std::vector<float> ratio(num_tensors);
  const float b1 = p.beta1, b2 = p.beta2, eps = p.eps, wd = p.weight_decay;
  const float c1 = p.bias_correction ? 1.f / (1.f - std::pow(b1, static_cast<float>(p.step))) : 1.f;
  const float c2 = p.bias_correction ? 1.f / (1.f - std::pow(b2, static_cast<float>(p.step))) : 1.f;
#pragma omp parallel num_threads(std::max(1, num_threads))
  {
    // Pass 1: moments, and the squared norms of the weight and of the update direction.
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nc; ++c) {
      const LambTensor& t = tensors[chunks[c].tensor];
      float* __restrict w = t.param;
      const float* __restrict g = t.grad;
      float* __restrict m = t.exp_avg;
      float* __restrict v = t.exp_avg_sq;
      float sw = 0.f, su = 0.f;
#pragma omp simd reduction(+ : sw, su)
      for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
        m[i] = b1 * m[i] + (1.f - b1) * g[i];
        v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
        const float u = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps) + wd * w[i];
        sw += w[i] * w[i];
        su += u * u;
      }
      w2[c] = sw;
      u2[c] = su;
    }
#pragma omp single
    {
      std::vector<double> wn(num_tensors, 0.0), un(num_tensors, 0.0);
      for (int64_t c = 0; c < nc; ++c) wn[chunks[c].tensor] += w2[c], un[chunks[c].tensor] += u2[c];
      for (int64_t t = 0; t < num_tensors; ++t) {
        double w_norm = std::sqrt(wn[t]);
        if (p.max_weight_norm > 0) w_norm = std::min(w_norm, static_cast<double>(p.max_weight_norm));
        const double u_norm = std::sqrt(un[t]);
        ratio[t] = (w_norm > 0 && u_norm > 0) ? static_cast<float>(w_norm / u_norm) : 1.f;
      }
    }
    // Pass 2: the update direction again (cheaper than storing it), scaled by the trust ratio.
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nc; ++c) {
      const LambTensor& t = tensors[chunks[c].tensor];
      float* __restrict w = t.param;
      const float* __restrict m = t.exp_avg;
      const float* __restrict v = t.exp_avg_sq;
      const float step = p.lr * ratio[chunks[c].tensor];
#pragma omp simd
      for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
        const float u = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps) + wd * w[i];
        w[i] -= step * u;
      }
    }
  }
}

namespace {

inline float grad_at(const float* g, int64_t i) { return g[i]; }
inline float grad_at(const uint16_t* g, int64_t i) { return bf16_to_float(g[i]); }

template <typename grad_t>
void split_sgd_range(uint16_t* __restrict hi, uint16_t* __restrict lo, const grad_t* __restrict g,
                     int64_t begin, int64_t end, float lr, float weight_decay) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    uint32_t bits = (static_cast<uint32_t>(hi[i]) << 16) | lo[i];
    float x;
    std::memcpy(&x, &bits, 4);
    // Rounded as torch.optim.SGD rounds (two fused multiply-adds), at every ISA level.
    x = std::fma(-lr, std::fma(weight_decay, x, grad_at(g, i)), x);
    std::memcpy(&bits, &x, 4);
    hi[i] = static_cast<uint16_t>(bits >> 16);
    lo[i] = static_cast<uint16_t>(bits & 0xFFFFu);
  }
}

}  // namespace

void split_sgd_step(const SplitTensor* tensors, int64_t num_tensors, float lr, float weight_decay,
                    int num_threads) {
  const auto chunks = make_chunks(tensors, num_tensors);
  const int64_t nc = static_cast<int64_t>(chunks.size());
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(static)
  for (int64_t c = 0; c < nc; ++c) {
    const SplitTensor& t = tensors[chunks[c].tensor];
    if (t.grad_bf16 != nullptr)
      split_sgd_range(t.upper, t.trail, t.grad_bf16, chunks[c].begin, chunks[c].end, lr, weight_decay);
    else
      split_sgd_range(t.upper, t.trail, t.grad, chunks[c].begin, chunks[c].end, lr, weight_decay);
  }
}

}  // namespace dlrmx::cpu::DLRMX_ISA_NS
