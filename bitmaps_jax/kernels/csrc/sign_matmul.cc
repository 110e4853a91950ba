// y = x @ B for a +-1 matrix B (K, N) held as 1 bit per weight, on CPU, as an XLA FFI handler
// that also returns x's row sums (for the schemes' gamma term). Two kernels read the bits:
// lut_tables.h, lookup tables after T-MAC (AVX-512, AVX2 or portable C++), and amx_tiles.h,
// 1-bit tiles for the AMX tile unit (Intel Xeon 4th generation and later) from 12 tokens. The
// CPU is asked at run time; both give float32's answers.
//
// Weight layout ("lut4"): uint32 words [ceil(N / 16), ceil(K / 4), 2]. Word (p, g, h) holds,
// in its nibble i, the code of output 16p + 2i + h for inputs 4g .. 4g + 3: with n = the four
// sign bits (bit i set when B[4g + i, j] = +1), code = n & 7 when bit 3 is set, else
// (~n & 7) | 8; the low three bits index the eight-entry table and bit 3 says "negate". The
// two words of (p, g) are one 64-bit load broadcast to every lane: dword lane j of it is word
// j % 2, and a per-lane shift by 4 (j / 2) leaves output 16p + j's code in lane j, with no
// shuffle (the shuffle unit is busy with the lookups).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "amx_tiles.h"
#include "cpu_common.h"
#include "lut_tables.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace bitmaps {
namespace {

// The most capable path allowed: 3 AMX (many tokens; few run on AVX-512), 2 AVX-512, 1 AVX2,
// 0 portable (tests compare them).
std::atomic<int> g_max_path{3};

int ChoosePath() {
  const int cap = g_max_path.load();
  if (cap >= 3 && HasAvx512() && HasAmx()) return 3;
  if (cap >= 2 && HasAvx512()) return 2;
  if (cap >= 1 && HasAvx2()) return 1;
  return 0;
}

// y = x @ B and sums = x's row sums (M).
ffi::Error SignMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::U32> words, ffi::ResultBuffer<ffi::F32> y,
                          ffi::ResultBuffer<ffi::F32> sums, int64_t k, int64_t n) {
  const auto xd = x.dimensions();
  const auto wd = words.dimensions();
  if (xd.size() != 2 || xd[1] != k)
    return ffi::Error::InvalidArgument("sign_matmul: x must be (tokens, k)");
  if (wd.size() != 3 || wd[0] != (n + 15) / 16 || wd[1] != (k + 3) / 4 || wd[2] != 2)
    return ffi::Error::InvalidArgument("sign_matmul: packed signs have the wrong shape");
  const int64_t M = xd[0];
  const int path = ChoosePath();
  if (M == 0) return ffi::Error::Success();
  if (n == 0) {
    RowSums(x.typed_data(), k, 0, M, path > 0, sums->typed_data());
    return ffi::Error::Success();
  }
  if (path == 3 && AmxTakes(M, k))
    AmxMatmul(pool, x.typed_data(), words.typed_data(), y->typed_data(), sums->typed_data(), M,
              k, n);
  else  // few tokens run through the tables even where there are tiles
    LutMatmul(pool, std::min(path, 2), x.typed_data(), words.typed_data(), y->typed_data(),
              sums->typed_data(), M, k, n);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace bitmaps

XLA_FFI_DEFINE_HANDLER_SYMBOL(BitmapsSignMatmul, bitmaps::SignMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("n"));

extern "C" {
// The path the kernel runs on this CPU: 3 AMX, 2 AVX-512, 1 AVX2, 0 portable C++.
int bitmaps_kernel_path() { return bitmaps::ChoosePath(); }
// Caps the path (3, 2, 1 or 0), e.g. to compare the portable path with the vector ones.
void bitmaps_set_max_path(int path) { bitmaps::g_max_path.store(path); }
}
