// y = x @ B for a +-1 matrix B (K, N) held as 1 bit per weight, on CPU, as an XLA FFI handler
// (which also returns x's row sums, for the schemes' gamma term).
//
// Lookup-table kernel (after T-MAC): inputs are taken in groups of four; for each token and
// group, the 16 signed sums +-x0 +-x1 +-x2 +-x3 are a table, and by symmetry (T[~i] = -T[i])
// eight of them suffice. Four weight bits of one output then select one table entry, so a
// group costs one lookup instead of four multiply-adds, and the weights are read as bits.
// AVX2 looks up eight outputs at once with vpermps, AVX-512 sixteen; a portable C++ path
// runs elsewhere. With 12 tokens or more, CPUs with AMX tiles (Intel Xeon 4th generation
// and later) run a tiled kernel instead (below). The CPU is asked at run time.
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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define BITMAPS_X86 1
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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

inline void Pause() {
#ifdef BITMAPS_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
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

// AMX (Intel Xeon 4th generation and later): the tiled kernel for many tokens. A 1-bit tile
// of B is expanded to +-1 bfloat16 in L1 and meets the activations in the tile unit's
// bfloat16 dot products with float32 sums. bfloat16 keeps 8 of float32's 24 significant bits,
// so x is split exactly into three bfloat16 parts, x = x1 + x2 + x3 (each the rounded
// remainder of the last), and y = x1 B + x2 B + x3 B: the products by +-1 are exact and the
// sums float32, so the answer is float32's, as the lookup tables' is. The tables do 16 x 4
// multiply-adds per lookup; a tile dot product does 16 x 16 x 32 in 16 cycles.
//
// Tiles: tmm0-3 the sums of 16 tokens x 64 outputs (four 16-output blocks), tmm4-6 the three
// parts of 16 tokens x 32 inputs, tmm7 one expanded 32 x 16 block of B. B's rows come from
// the lut4 words as they are: the 64-bit pair of 16 outputs x 4 inputs is decoded to sign
// bits, one nibble per output, put in output order (pdep), and the bits of inputs 4g, 4g + 1
// (then 4g + 2, 4g + 3) of every output, gathered with pext, are one tile row in the pairwise
// layout the dot product reads.
constexpr int kAmxTokens = 16;     // rows of a tile
constexpr int kAmxInputs = 32;     // bfloat16 inputs of a tile row
constexpr int kAmxPairs = 4;       // 16-output blocks per chunk: tmm0-3
constexpr int kAmxBlockTiles = 4;  // token tiles per chunk when the tokens are many
constexpr int kAmxBlockSteps = 4;  // input tiles per expanded block of B: 16 KB, in L1
// Fewer tokens than this run through the lookup tables: a tile costs as much for 1 token as
// for 16, the tables cost per token (BERT-base: the tables faster at 8 tokens, even at 12,
// the tiles faster at 16).
constexpr int64_t kAmxMinTokens = 12;

// `n` elements of `buffer` (grown if need be) from a 64-byte boundary: a tile row that
// straddles two cache lines loads at half the speed.
template <typename T>
T* Aligned64(std::vector<T>& buffer, int64_t n) {
  const int64_t pad = 64 / sizeof(T);
  if (static_cast<int64_t>(buffer.size()) < n + pad)
    buffer.resize(static_cast<size_t>(n + pad));
  const uintptr_t p = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<T*>((p + 63) & ~static_cast<uintptr_t>(63));
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

#define BM_TILE_LOAD(t, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride)) : "memory")
#define BM_TILE_STORE(t, base, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((long)(stride)) \
                   : "memory")
#define BM_TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::: "memory")
#define BM_TILE_DOT3(c) \
  __asm__ volatile("tdpbf16ps %%tmm7, %%tmm4, %%tmm" #c "\n\t" \
                   "tdpbf16ps %%tmm7, %%tmm5, %%tmm" #c "\n\t" \
                   "tdpbf16ps %%tmm7, %%tmm6, %%tmm" #c ::: "memory")

void AmxBegin() {
  static const TileConfig config = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.rows[t] = kAmxTokens;
      c.colsb[t] = 64;
    }
    return c;
  }();
  __asm__ volatile("ldtilecfg %0" ::"m"(config) : "memory");
}

void AmxEnd() { __asm__ volatile("tilerelease" ::: "memory"); }

bool HasAmx() {
  static const bool has = [] {
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("bmi2")) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) return false;  // AMX-BF16, AMX-TILE
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return false;  // AVX512-BF16
    // Linux hands tile state to a process only when asked (5.16 and later); without it the
    // first tile instruction would fault.
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return has;
}

// Token tile t of x (M x K float32) as three bfloat16 parts in tiles: part q of inputs
// 32 s .. 32 s + 31 is 16 rows of 64 bytes at a + ((t KS + s) 3 + q) 512, so a token tile's
// tiles are one sequential stream. Inputs past K and rows past M are zero. Each part is the
// remainder rounded to nearest even (vcvtne2ps2bf16); the part is exact in float32, so the
// next remainder is too. The rows' sums go to `sums` (see RowSums).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void SplitTile(
    const float* x, int64_t M, int64_t K, int64_t KS, int64_t t, uint16_t* a, float* sums) {
  for (int64_t r = 0; r < kAmxTokens; ++r) {
    const int64_t m = t * kAmxTokens + r;
    __m512 total = _mm512_setzero_ps();
    for (int64_t s = 0; s < KS; ++s) {
      const int64_t k = s * kAmxInputs;
      const int64_t left = m < M ? std::max<int64_t>(0, std::min<int64_t>(32, K - k)) : 0;
      const __mmask32 mask = static_cast<__mmask32>((1ull << left) - 1ull);
      __m512 lo = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask), x + m * K + k);
      __m512 hi = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask >> 16), x + m * K + k + 16);
      total = _mm512_add_ps(total, _mm512_add_ps(lo, hi));
      for (int q = 0; q < 3; ++q) {
        const __m512i part = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_store_si512(a + ((t * KS + s) * 3 + q) * 512 + r * 32, part);
        const __m512 part_lo = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(part)), 16));
        const __m512 part_hi = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(part, 1)), 16));
        lo = _mm512_sub_ps(lo, part_lo);
        hi = _mm512_sub_ps(hi, part_hi);
      }
    }
    if (m < M) sums[m] = _mm512_reduce_add_ps(total);
  }
}

// Input tiles [s0, s1) of pairs [p0, p0 + np) of B, expanded: tile (s, j) holds inputs
// 32 s .. 32 s + 31 of pair p0 + j, 16 rows of 32 bfloat16 at b + ((s - base) kAmxPairs +
// j) 512, in the order they are read. Groups past G are +1 (their inputs are zero).
__attribute__((target("avx512f,avx512bw,bmi2"))) void ExpandPairs(const uint32_t* w,
                                                                  int64_t G, int64_t s0,
                                                                  int64_t s1, int64_t base,
                                                                  int64_t p0, int np,
                                                                  uint16_t* b) {
  const __m512i plus = _mm512_set1_epi16(0x3f80);
  const __m512i minus = _mm512_set1_epi16(static_cast<short>(0xbf80));
  for (int j = 0; j < np; ++j) {
    const uint32_t* wp = w + (p0 + j) * G * 2;
    for (int64_t g = 8 * s0; g < 8 * s1; ++g) {
      uint64_t low = ~0ull, high = ~0ull;
      if (g < G) {
        uint64_t code;
        std::memcpy(&code, wp + 2 * g, sizeof(code));
        // Nibble-wise: code bit 3 clear -> signs = code ^ 8, set -> code ^ 15.
        const uint64_t neg = (code >> 3) & 0x1111111111111111ull;
        const uint64_t n = code ^ 0x8888888888888888ull ^ (neg * 7);
        // The words' nibbles interleaved: nibble i is output i.
        const uint64_t z = _pdep_u64(n, 0x0f0f0f0f0f0f0f0full) |
                           _pdep_u64(n >> 32, 0xf0f0f0f0f0f0f0f0ull);
        low = _pext_u64(z, 0x3333333333333333ull);   // inputs 4g, 4g + 1
        high = _pext_u64(z, 0xccccccccccccccccull);  // inputs 4g + 2, 4g + 3
      }
      uint16_t* row = b + ((g / 8 - base) * kAmxPairs + j) * 512 + (g % 8) * 64;
      _mm512_store_si512(row,
                         _mm512_mask_blend_epi16(static_cast<__mmask32>(low), minus, plus));
      _mm512_store_si512(row + 32,
                         _mm512_mask_blend_epi16(static_cast<__mmask32>(high), minus, plus));
    }
  }
}

// Sums of token tile t, pair p0 + j (16 x 16 float32 at c) into y, the rows and outputs that
// exist.
__attribute__((target("avx512f"))) void WritePart(const float* c, int64_t t, int64_t M,
                                                  int64_t N, int64_t o, float* y) {
  const int rows = static_cast<int>(std::min<int64_t>(kAmxTokens, M - t * kAmxTokens));
  const int lanes = static_cast<int>(std::min<int64_t>(16, N - o));
  const __mmask16 mask = static_cast<__mmask16>((1u << lanes) - 1u);
  for (int r = 0; r < rows; ++r)
    _mm512_mask_storeu_ps(y + (t * kAmxTokens + r) * N + o, mask, _mm512_load_ps(c + 16 * r));
}

// The sums in tmm0-3 of token tile t, pairs [p0, p0 + np): a whole 16 x 16 block goes
// straight into y; one cut by the last token or output goes through `c`.
void StoreSums(int64_t t, int np, int64_t M, int64_t N, int64_t p0, float* c, float* y) {
  const bool rows = (t + 1) * kAmxTokens <= M;
  float* yt = y + t * kAmxTokens * N + 16 * p0;
  const long stride = N * 4;
  bool part[kAmxPairs];
  for (int j = 0; j < kAmxPairs; ++j) part[j] = j < np && !(rows && 16 * (p0 + j + 1) <= N);
  // Tile numbers are part of the instruction.
  if (part[0]) BM_TILE_STORE(0, c, 64); else BM_TILE_STORE(0, yt, stride);
  if (np > 1) {
    if (part[1]) BM_TILE_STORE(1, c + 256, 64); else BM_TILE_STORE(1, yt + 16, stride);
  }
  if (np > 2) {
    if (part[2]) BM_TILE_STORE(2, c + 512, 64); else BM_TILE_STORE(2, yt + 32, stride);
  }
  if (np > 3) {
    if (part[3]) BM_TILE_STORE(3, c + 768, 64); else BM_TILE_STORE(3, yt + 48, stride);
  }
  for (int j = 0; j < np; ++j)
    if (part[j]) WritePart(c + 256 * j, t, M, N, 16 * (p0 + j), y);
}

// Token tiles [t0, t1) x pairs [p0, p0 + np). The inputs are taken kAmxBlockSteps tiles at
// a time: that block of B is expanded into L1 and read by every token tile, whose sums wait
// in memory between blocks. With one token tile the sums stay in their tiles, and the next
// block is expanded a tile at a time between the dot products, which the tile unit runs
// meanwhile.
void AmxChunk(const uint16_t* a, const uint32_t* w, int64_t M, int64_t N, int64_t G,
              int64_t Kp, int64_t t0, int64_t t1, int64_t p0, int np, float* y) {
  const int64_t KS = Kp / kAmxInputs;
  constexpr int64_t kBlock = kAmxPairs * kAmxBlockSteps * 512;
  thread_local std::vector<uint16_t> expanded;
  thread_local std::vector<float> sums;
  uint16_t* blocks = Aligned64(expanded, 2 * kBlock);
  float* c = Aligned64(sums, (t1 - t0) * kAmxPairs * 256);
  const bool one = t1 - t0 == 1;
  ExpandPairs(w, G, 0, std::min<int64_t>(KS, kAmxBlockSteps), 0, p0, np, blocks);
  for (int64_t s0 = 0, kb = 0; s0 < KS; s0 += kAmxBlockSteps, ++kb) {
    const int64_t s1 = std::min<int64_t>(KS, s0 + kAmxBlockSteps);
    // One token tile: two buffers, the next block made during this one's dot products. More:
    // one buffer (L1 holds their sums too), made here.
    const uint16_t* b = one ? blocks + (kb & 1) * kBlock : blocks;
    uint16_t* next = blocks + ((kb + 1) & 1) * kBlock;
    if (!one && kb > 0) ExpandPairs(w, G, s0, s1, s0, p0, np, blocks);
    for (int64_t t = t0; t < t1; ++t) {
      float* ct = c + (t - t0) * kAmxPairs * 256;
      if (s0 == 0) {
        BM_TILE_ZERO(0);
        BM_TILE_ZERO(1);
        BM_TILE_ZERO(2);
        BM_TILE_ZERO(3);
      } else if (!one) {
        BM_TILE_LOAD(0, ct, 64);
        BM_TILE_LOAD(1, ct + 256, 64);
        BM_TILE_LOAD(2, ct + 512, 64);
        BM_TILE_LOAD(3, ct + 768, 64);
      }
      for (int64_t s = s0; s < s1; ++s) {
        const uint16_t* at = a + (t * KS + s) * 3 * 512;
        BM_TILE_LOAD(4, at, 64);
        BM_TILE_LOAD(5, at + 512, 64);
        BM_TILE_LOAD(6, at + 1024, 64);
        const uint16_t* bs = b + (s - s0) * kAmxPairs * 512;
        BM_TILE_LOAD(7, bs, 64);
        BM_TILE_DOT3(0);
        if (np > 1) {
          BM_TILE_LOAD(7, bs + 512, 64);
          BM_TILE_DOT3(1);
        }
        if (np > 2) {
          BM_TILE_LOAD(7, bs + 1024, 64);
          BM_TILE_DOT3(2);
        }
        if (np > 3) {
          BM_TILE_LOAD(7, bs + 1536, 64);
          BM_TILE_DOT3(3);
        }
        const int64_t e = s1 + (s - s0);  // the next block's tile made meanwhile
        if (one && e < KS) ExpandPairs(w, G, e, e + 1, s1, p0, np, next);
      }
      if (s1 == KS) {
        StoreSums(t, np, M, N, p0, ct, y);
      } else if (!one) {
        BM_TILE_STORE(0, ct, 64);
        BM_TILE_STORE(1, ct + 256, 64);
        BM_TILE_STORE(2, ct + 512, 64);
        BM_TILE_STORE(3, ct + 768, 64);
      }
    }
  }
}

// One call's work: first the three parts of x, a token tile per item; then chunks of
// (token block, four pairs). Items are taken in order, so a thread that takes a chunk waits
// only for the parts still being made.
struct AmxWork {
  const float* x;
  const uint32_t* w;
  float* y;
  float* sums;
  uint16_t* a;
  int64_t M, K, N, G, Mp, Kp, tiles, pairs, blocks, groups, items;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> split_done{0};
  std::atomic<int64_t> done{0};

  void Drain() {
    bool begun = false;
    int64_t i;
    while ((i = next.fetch_add(1)) < items) {
      if (i < tiles) {
        SplitTile(x, M, K, Kp / kAmxInputs, i, a, sums);
        split_done.fetch_add(1, std::memory_order_release);
      } else {
        while (split_done.load(std::memory_order_acquire) != tiles) Pause();
        if (!begun) {
          AmxBegin();
          begun = true;
        }
        const int64_t c = i - tiles, blk = c / groups, grp = c % groups;
        const int64_t t0 = blk * kAmxBlockTiles, t1 = std::min(tiles, t0 + kAmxBlockTiles);
        const int64_t p0 = grp * kAmxPairs;
        AmxChunk(a, w, M, N, G, Kp, t0, t1, p0,
                 static_cast<int>(std::min<int64_t>(kAmxPairs, pairs - p0)), y);
      }
      done.fetch_add(1, std::memory_order_release);
    }
    if (begun) AmxEnd();
  }
};

// Tokens per round of a call: the bfloat16 parts of a round's x are at most 256 x K x 6
// bytes (4.5 MiB for BERT-base's FFN), however many tokens the call has.
constexpr int64_t kAmxRoundTokens = 256;

void AmxRound(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
              int64_t M, int64_t K, int64_t N) {
  auto work = std::make_shared<AmxWork>();
  work->x = x;
  work->w = w;
  work->y = y;
  work->sums = sums;
  work->M = M;
  work->K = K;
  work->N = N;
  work->G = (K + 3) / 4;
  work->tiles = (M + kAmxTokens - 1) / kAmxTokens;
  work->Mp = work->tiles * kAmxTokens;
  work->Kp = (K + kAmxInputs - 1) / kAmxInputs * kAmxInputs;
  work->pairs = (N + 15) / 16;
  work->groups = (work->pairs + kAmxPairs - 1) / kAmxPairs;
  work->blocks = (work->tiles + kAmxBlockTiles - 1) / kAmxBlockTiles;
  work->items = work->tiles + work->blocks * work->groups;
  // The parts live with the calling thread, which waits for every item: calls that run at
  // once are on different threads, and a buffer kept between calls is not faulted in anew.
  thread_local std::vector<uint16_t> parts;
  work->a = Aligned64(parts, 3 * work->Mp * work->Kp);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t helpers = std::min<int64_t>(threads, work->blocks * work->groups) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  while (work->done.load(std::memory_order_acquire) != work->items) Pause();
}

void AmxMatmul(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
               int64_t M, int64_t K, int64_t N) {
  for (int64_t m0 = 0; m0 < M; m0 += kAmxRoundTokens)
    AmxRound(pool, x + m0 * K, w, y + m0 * N, sums + m0, std::min(kAmxRoundTokens, M - m0), K,
             N);
}
#else
bool HasAvx2() { return false; }
bool HasAvx512() { return false; }
bool HasAmx() { return false; }
#endif

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


struct Work {
  const float* x;
  const uint32_t* w;
  float* y;
  float* sums;
  int64_t M, K, N, G, NB;
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

// y = x @ B and sums = x's row sums (M).
ffi::Error SignMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::U32> words, ffi::ResultBuffer<ffi::F32> y,
                          ffi::ResultBuffer<ffi::F32> sums, int64_t k, int64_t n) {
  const auto xd = x.dimensions();
  const auto wd = words.dimensions();
  if (xd.size() != 2 || xd[1] != k)
    return ffi::Error::InvalidArgument("sign_matmul: x must be (tokens, k)");
  const int64_t G = (k + 3) / 4, NB = (n + 7) / 8;
  if (wd.size() != 3 || wd[0] != (n + 15) / 16 || wd[1] != G || wd[2] != 2)
    return ffi::Error::InvalidArgument("sign_matmul: packed signs have the wrong shape");
  auto work = std::make_shared<Work>();
  work->x = x.typed_data();
  work->w = words.typed_data();
  work->y = y->typed_data();
  work->sums = sums->typed_data();
  work->M = xd[0];
  work->K = k;
  work->N = n;
  work->G = G;
  work->NB = NB;
  work->path = ChoosePath();
  static std::atomic<uint64_t> calls{0};
  work->call = ++calls;
  if (work->M == 0) return ffi::Error::Success();
  if (n == 0) {
    RowSums(work->x, k, 0, work->M, work->path > 0, work->sums);
    return ffi::Error::Success();
  }
#ifdef BITMAPS_X86
  if (work->path == 3) {
    if (work->M >= kAmxMinTokens) {
      AmxMatmul(pool, work->x, work->w, work->y, work->sums, work->M, k, n);
      return ffi::Error::Success();
    }
    work->path = 2;  // few tokens: the lookup tables
  }
#endif
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->tiles = (work->M + kTokenTile - 1) / kTokenTile;
  work->split_tokens = work->tiles >= 2 * threads;
  if (work->split_tokens) {
    work->per_chunk = std::max<int64_t>(1, work->tiles / (4 * threads));
    work->chunks = (work->tiles + work->per_chunk - 1) / work->per_chunk;
  } else {
    // Even, so that AVX-512 pairs of blocks never straddle two chunks.
    int64_t per = std::max<int64_t>(8, (NB + 4 * threads - 1) / (4 * threads));
    work->per_chunk = per + (per & 1);
    work->chunks = (NB + work->per_chunk - 1) / work->per_chunk;
    RowSums(work->x, k, 0, work->M, work->path > 0, work->sums);  // a few rows
  }
  const int64_t helpers = std::min<int64_t>(threads, work->chunks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  // What is left is at most one chunk per helper: waiting for it by spinning costs less
  // than being woken from a sleep.
  while (work->done.load(std::memory_order_acquire) != work->chunks) Pause();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BitmapsSignMatmul, SignMatmulImpl,
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
int bitmaps_kernel_path() { return ChoosePath(); }
// Caps the path (3, 2, 1 or 0), e.g. to compare the portable path with the vector ones.
void bitmaps_set_max_path(int path) { g_max_path.store(path); }
}
