// Shared by the CPU kernels (included by sign_matmul.cc only): which CPU this is, a spin-wait
// pause, a call's operands, running a call's work over XLA's threads, and the row sums every
// path returns.
#ifndef BITMAPS_KERNELS_CPU_COMMON_H_
#define BITMAPS_KERNELS_CPU_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define BITMAPS_X86 1
#endif

#include "xla/ffi/api/ffi.h"

namespace bitmaps {

namespace ffi = xla::ffi;

inline void Pause() {
#ifdef BITMAPS_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// One call's operands: y (M x N) = x (M x K) @ B, B as lut4 words (G = ceil(K / 4) groups),
// and x's row sums (M).
struct Operands {
  const float* x;
  const uint32_t* w;
  float* y;
  float* sums;
  int64_t M, K, N, G;
};

// Runs work->Drain() on the calling thread and on up to `helpers` threads of XLA's pool, then
// waits until work->done reaches `items`. What is left by then is at most one item per
// helper: waiting for it by spinning costs less than being woken from a sleep. `work` is
// shared with the helpers, which may start after the call has returned and find nothing left.
template <typename Work>
void RunOnPool(ffi::ThreadPool& pool, std::shared_ptr<Work> work, int64_t items) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t helpers = std::min<int64_t>(threads, items) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  while (work->done.load(std::memory_order_acquire) != items) Pause();
}

// sums[m] = x[m, 0] + .. + x[m, K - 1] for rows [m0, m1): the per-token input sums that the
// alpha/gamma schemes multiply by gamma (x W_b = alpha x B + gamma sum(x)), made from the x
// the kernel reads anyway instead of by one more XLA op per product.
void RowSumsPortable(const float* x, int64_t K, int64_t m0, int64_t m1, float* sums) {
  for (int64_t m = m0; m < m1; ++m) {
    float total = 0.0f;
    for (int64_t k = 0; k < K; ++k) total += x[m * K + k];
    sums[m] = total;
  }
}

#ifdef BITMAPS_X86
__attribute__((target("avx2"))) void RowSumsAvx2(const float* x, int64_t K, int64_t m0,
                                                 int64_t m1, float* sums) {
  for (int64_t m = m0; m < m1; ++m) {
    const float* row = x + m * K;
    __m256 acc = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(row + k));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    float total = 0.0f;
    for (float v : lanes) total += v;
    for (; k < K; ++k) total += row[k];
    sums[m] = total;
  }
}
#endif

void RowSums(const float* x, int64_t K, int64_t m0, int64_t m1, bool vector, float* sums) {
#ifdef BITMAPS_X86
  if (vector) return RowSumsAvx2(x, K, m0, m1, sums);
#endif
  RowSumsPortable(x, K, m0, m1, sums);
}

}  // namespace bitmaps

#endif  // BITMAPS_KERNELS_CPU_COMMON_H_
