// The lookup-table kernel (after T-MAC); included by sign_matmul.cc only, which describes the
// "lut4" layout. Inputs are taken in groups of four; for each token and group, the 16 signed
// sums +-x0 +-x1 +-x2 +-x3 are a table, and by symmetry (T[~i] = -T[i]) eight of them
// suffice. Four weight bits of one output then select one table entry, so a group costs one
// lookup instead of four multiply-adds, and the weights are read as bits. AVX2 looks up eight
// outputs at once with vpermps, AVX-512 sixteen; a portable C++ path runs elsewhere.
#ifndef BITMAPS_KERNELS_LUT_TABLES_H_
#define BITMAPS_KERNELS_LUT_TABLES_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_common.h"

namespace bitmaps {

constexpr int kGroupBlock = 64;  // groups of 4 inputs per pass: 8 tokens' tables stay in L1
// Tokens per tile, their accumulators in registers. Sixteen fit AVX-512's registers but ran
// slower than eight on the 2-core AMD EPYC measured.
constexpr int kTokenTile = 8;
// A tile's outputs are computed kSuperBlock blocks of 8 at a time, so that their partial sums
// (8 tokens x 512 outputs) stay in L1 between group blocks however wide the matrix is (the
// tied decoder has 30522 outputs). Even: AVX-512 pairs of blocks never straddle two.
constexpr int64_t kSuperBlock = 64;

// The tables of a tile of T tokens [m0, m1), group-major: token t's table for group g is at
// tables + (g T + t) width, `width` floats: 8, or 16 with the negated copy in the second half
// for AVX-512. Group-major keeps a group's T tables in consecutive cache lines; token-major
// put them G * 64 bytes apart, often one L1 set.
// One table (group g of one row); inputs past the row's end count as 0.
void TailGroup(const float* row, int64_t K, int64_t g, int width, float* t) {
  float v[4];
  for (int i = 0; i < 4; ++i) v[i] = 4 * g + i < K ? row[4 * g + i] : 0.0f;
  for (int e = 0; e < 8; ++e) {
    const float s = v[3] + ((e & 1) ? v[0] : -v[0]) + ((e & 2) ? v[1] : -v[1]) +
                    ((e & 4) ? v[2] : -v[2]);
    t[e] = s;
    if (width == 16) t[8 + e] = -s;
  }
}

void BuildTablesPortable(const float* x, int64_t K, int64_t G, int64_t m0, int64_t m1,
                         int64_t T, int width, float* tables) {
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t g = 0; g < G; ++g)
      TailGroup(x + m * K, K, g, width, tables + (g * T + (m - m0)) * width);
}

#ifdef BITMAPS_X86
// The same sums, eight entries at once: x3 + s0 x0 + s1 x1 + s2 x2 with s_i = +-1 per entry,
// added in the portable path's order so both give identical tables.
__attribute__((target("avx2,fma"))) void BuildTablesAvx2(const float* x, int64_t K, int64_t G,
                                                         int64_t m0, int64_t m1, int64_t T,
                                                         int width, float* tables) {
  const __m256 s0 = _mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1);
  const __m256 s1 = _mm256_setr_ps(-1, -1, 1, 1, -1, -1, 1, 1);
  const __m256 s2 = _mm256_setr_ps(-1, -1, -1, -1, 1, 1, 1, 1);
  const __m256 signbit = _mm256_set1_ps(-0.0f);
  const int64_t full = K / 4;  // groups with all four inputs present
  for (int64_t m = m0; m < m1; ++m) {
    const float* row = x + m * K;
    float* t = tables + (m - m0) * width;
    const int64_t step = T * width;
    for (int64_t g = 0; g < full; ++g) {
      const float* v = row + 4 * g;
      __m256 s = _mm256_add_ps(_mm256_set1_ps(v[3]), _mm256_mul_ps(s0, _mm256_set1_ps(v[0])));
      s = _mm256_add_ps(s, _mm256_mul_ps(s1, _mm256_set1_ps(v[1])));
      s = _mm256_add_ps(s, _mm256_mul_ps(s2, _mm256_set1_ps(v[2])));
      _mm256_storeu_ps(t + g * step, s);
      if (width == 16) _mm256_storeu_ps(t + g * step + 8, _mm256_xor_ps(s, signbit));
    }
    if (full < G) TailGroup(row, K, full, width, t + full * step);
  }
}
#endif

void BuildTables(const float* x, int64_t K, int64_t G, int64_t m0, int64_t m1, int64_t T,
                 int width, bool vector, float* tables) {
#ifdef BITMAPS_X86
  if (vector) return BuildTablesAvx2(x, K, G, m0, m1, T, width, tables);
#endif
  BuildTablesPortable(x, K, G, m0, m1, T, width, tables);
}

// Portable path: outputs of blocks [b0, b1) for tokens [m0, m0 + mt).
void BlockPortable(const float* tables, const uint32_t* w, int64_t G, int64_t N, int64_t m0,
                   int mt, int64_t b0, int64_t b1, float* y) {
  for (int64_t b = b0; b < b1; ++b) {
    float acc[kTokenTile][8] = {};
    const uint32_t* wp = w + (b >> 1) * G * 2;
    const int half = static_cast<int>(b & 1);  // lanes 8 half .. 8 half + 7 of the pair
    for (int64_t g = 0; g < G; ++g) {
      for (int t = 0; t < mt; ++t) {
        const float* tab = tables + (g * kTokenTile + t) * 8;
        for (int l = 0; l < 8; ++l) {
          const uint32_t c = (wp[2 * g + (l & 1)] >> (4 * (4 * half + (l >> 1)))) & 15u;
          const float v = tab[c & 7u];
          acc[t][l] += (c & 8u) ? -v : v;
        }
      }
    }
    const int64_t lanes = std::min<int64_t>(8, N - 8 * b);
    for (int t = 0; t < mt; ++t)
      for (int l = 0; l < lanes; ++l) y[(m0 + t) * N + 8 * b + l] = acc[t][l];
  }
}

#ifdef BITMAPS_X86
template <int MT>
__attribute__((target("avx2,fma"))) void BlockAvx2(const float* tables, const uint32_t* w,
                                                   int64_t G, int64_t N, int64_t m0,
                                                   int64_t b0, int64_t b1, float* y) {
  const __m256i right0 = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
  const __m256i signbit = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  alignas(32) float tmp[8];
  for (int64_t g0 = 0; g0 < G; g0 += kGroupBlock) {
    const int64_t g1 = std::min<int64_t>(G, g0 + kGroupBlock);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lanes = std::min<int64_t>(8, N - 8 * b);
      __m256 acc[MT];
      for (int t = 0; t < MT; ++t) {
        if (g0 == 0) {
          acc[t] = _mm256_setzero_ps();
        } else if (lanes == 8) {
          acc[t] = _mm256_loadu_ps(y + (m0 + t) * N + 8 * b);
        } else {
          std::memset(tmp, 0, sizeof(tmp));
          std::memcpy(tmp, y + (m0 + t) * N + 8 * b, sizeof(float) * lanes);
          acc[t] = _mm256_load_ps(tmp);
        }
      }
      const uint32_t* wp = w + (b >> 1) * G * 2;
      const __m256i right = _mm256_add_epi32(right0, _mm256_set1_epi32(16 * (b & 1)));
      const __m256i left = _mm256_sub_epi32(_mm256_set1_epi32(28), right);
      for (int64_t g = g0; g < g1; ++g) {
        uint64_t pair;
        std::memcpy(&pair, wp + 2 * g, sizeof(pair));
        const __m256i word = _mm256_set1_epi64x(static_cast<long long>(pair));
        const __m256i idx = _mm256_srlv_epi32(word, right);
        const __m256 neg = _mm256_castsi256_ps(_mm256_and_si256(_mm256_sllv_epi32(word, left),
                                                                signbit));
        for (int t = 0; t < MT; ++t) {
          const __m256 tab = _mm256_loadu_ps(tables + (g * kTokenTile + t) * 8);
          acc[t] = _mm256_add_ps(acc[t], _mm256_xor_ps(_mm256_permutevar8x32_ps(tab, idx), neg));
        }
      }
      for (int t = 0; t < MT; ++t) {
        float* out = y + (m0 + t) * N + 8 * b;
        if (lanes == 8) {
          _mm256_storeu_ps(out, acc[t]);
        } else {
          _mm256_store_ps(tmp, acc[t]);
          std::memcpy(out, tmp, sizeof(float) * lanes);
        }
      }
    }
  }
}

using BlockFn = void (*)(const float*, const uint32_t*, int64_t, int64_t, int64_t, int64_t,
                         int64_t, float*);
const BlockFn kAvx2Blocks[kTokenTile + 1] = {
    nullptr,         BlockAvx2<1>, BlockAvx2<2>, BlockAvx2<3>, BlockAvx2<4>,
    BlockAvx2<5>,    BlockAvx2<6>, BlockAvx2<7>, BlockAvx2<8>};

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// AVX-512: sixteen outputs per lookup from a sixteen-entry table [T8, -T8] indexed by the
// code itself, so no sign fix-up; inputs are taken in blocks whose tables stay in L1 (8
// tokens x 16 groups x 64 bytes: 8 KB), the partial sums kept in the output between blocks.
constexpr int kGroupBlock512 = 16;

template <int MT>
__attribute__((target("avx512f"))) void BlockAvx512(const float* tables, const uint32_t* w,
                                                    int64_t G, int64_t N, int64_t m0,
                                                    int64_t b0, int64_t b1, float* y) {
  const __m512i shifts = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12,
                                           16, 16, 20, 20, 24, 24, 28, 28);
  for (int64_t g0 = 0; g0 < G; g0 += kGroupBlock512) {
    const int64_t g1 = std::min<int64_t>(G, g0 + kGroupBlock512);
    for (int64_t b = b0; b < b1; b += 2) {
      const uint32_t* wp = w + (b >> 1) * G * 2;  // b is even
      const int64_t lanes = std::min<int64_t>(16, N - 8 * b);
      const __mmask16 mask = static_cast<__mmask16>((1u << lanes) - 1u);
      __m512 acc[MT];
      for (int t = 0; t < MT; ++t)
        acc[t] = g0 == 0 ? _mm512_setzero_ps()
                         : _mm512_maskz_loadu_ps(mask, y + (m0 + t) * N + 8 * b);
      for (int64_t g = g0; g < g1; ++g) {
        uint64_t pair;
        std::memcpy(&pair, wp + 2 * g, sizeof(pair));
        const __m512i idx =
            _mm512_srlv_epi32(_mm512_set1_epi64(static_cast<long long>(pair)), shifts);
        for (int t = 0; t < MT; ++t) {
          const __m512 tab = _mm512_loadu_ps(tables + (g * kTokenTile + t) * 16);
          acc[t] = _mm512_add_ps(acc[t], _mm512_permutexvar_ps(idx, tab));
        }
      }
      for (int t = 0; t < MT; ++t) _mm512_mask_storeu_ps(y + (m0 + t) * N + 8 * b, mask, acc[t]);
    }
  }
}

const BlockFn kAvx512Blocks[kTokenTile + 1] = {
    nullptr,           BlockAvx512<1>, BlockAvx512<2>, BlockAvx512<3>, BlockAvx512<4>,
    BlockAvx512<5>,    BlockAvx512<6>, BlockAvx512<7>, BlockAvx512<8>};

bool HasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

#else
bool HasAvx2() { return false; }
bool HasAvx512() { return false; }
#endif

// One call's work through the tables.
struct LutWork : Operands {
  int64_t NB;
  int path;
  // A chunk is a range of token tiles (many tokens) or of output blocks (few tokens): no two
  // chunks write the same output. Tables: see Run.
  bool split_tokens;
  int64_t tiles, chunks, per_chunk;
  uint64_t call;  // a number no other call of this process has
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  int Width() const { return path == 2 ? 16 : 8; }

  void Build(int64_t m0, int64_t m1, float* tables) const {
    BuildTables(x, K, G, m0, m1, kTokenTile, Width(), path > 0, tables);
  }

  void Tile(int64_t m0, int64_t b0, int64_t b1, const float* tables) {
    const int mt = static_cast<int>(std::min<int64_t>(kTokenTile, M - m0));
    for (int64_t s0 = b0; s0 < b1; s0 += kSuperBlock) {
      const int64_t s1 = std::min(b1, s0 + kSuperBlock);
#ifdef BITMAPS_X86
      if (path == 2) {
        kAvx512Blocks[mt](tables, w, G, N, m0, s0, s1, y);
        continue;
      }
      if (path == 1) {
        kAvx2Blocks[mt](tables, w, G, N, m0, s0, s1, y);
        continue;
      }
#endif
      BlockPortable(tables, w, G, N, m0, mt, s0, s1, y);
    }
  }

  void Run(int64_t c) {
    if (split_tokens) {  // each tile's tables are built once, by the chunk that owns it
      thread_local std::vector<float> tables;
      tables.resize(static_cast<size_t>(kTokenTile * G * Width()));
      const int64_t t1 = std::min(tiles, (c + 1) * per_chunk);
      for (int64_t t = c * per_chunk; t < t1; ++t) {
        const int64_t m0 = t * kTokenTile;
        Build(m0, std::min(M, m0 + kTokenTile), tables.data());
        RowSums(x, K, m0, std::min(M, m0 + kTokenTile), path > 0, sums);
        Tile(m0, 0, NB, tables.data());
      }
      return;
    }
    // Few tokens: every chunk reads every token's tables. Each thread builds them once per
    // call, a tile when first needed, into its own memory, so no thread waits for a build
    // and no core reads tables from another's cache.
    struct Tables {
      uint64_t call = 0;
      std::vector<float> data;
      std::vector<char> built;
    };
    thread_local Tables own;
    if (own.call != call) {
      own.call = call;
      own.data.resize(static_cast<size_t>(tiles * kTokenTile * G * Width()));
      own.built.assign(static_cast<size_t>(tiles), 0);
    }
    const int64_t b0 = c * per_chunk, b1 = std::min(NB, b0 + per_chunk);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t m0 = t * kTokenTile;
      float* tables = own.data.data() + t * kTokenTile * G * Width();
      if (!own.built[t]) {
        Build(m0, std::min(M, m0 + kTokenTile), tables);
        own.built[t] = 1;
      }
      Tile(m0, b0, b1, tables);
    }
  }

  void Drain() {
    int64_t c;
    while ((c = next.fetch_add(1)) < chunks) {
      Run(c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// One call through the tables on `path` (2 AVX-512, 1 AVX2, 0 portable), over XLA's threads.
void LutMatmul(ffi::ThreadPool& pool, int path, const float* x, const uint32_t* w, float* y,
               float* sums, int64_t M, int64_t K, int64_t N) {
  auto work = std::make_shared<LutWork>();
  static_cast<Operands&>(*work) = {x, w, y, sums, M, K, N, (K + 3) / 4};
  work->NB = (N + 7) / 8;
  work->path = path;
  static std::atomic<uint64_t> calls{0};
  work->call = ++calls;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->tiles = (M + kTokenTile - 1) / kTokenTile;
  work->split_tokens = work->tiles >= 2 * threads;
  if (work->split_tokens) {
    work->per_chunk = std::max<int64_t>(1, work->tiles / (4 * threads));
    work->chunks = (work->tiles + work->per_chunk - 1) / work->per_chunk;
  } else {
    // Even, so that AVX-512 pairs of blocks never straddle two chunks.
    int64_t per = std::max<int64_t>(8, (work->NB + 4 * threads - 1) / (4 * threads));
    work->per_chunk = per + (per & 1);
    work->chunks = (work->NB + work->per_chunk - 1) / work->per_chunk;
    RowSums(x, K, 0, M, path > 0, sums);  // a few rows
  }
  RunOnPool(pool, work, work->chunks);
}

}  // namespace bitmaps

#endif  // BITMAPS_KERNELS_LUT_TABLES_H_
