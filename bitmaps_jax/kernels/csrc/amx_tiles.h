// The AMX tile unit (Intel Xeon 4th generation and later), for many tokens: what both of its
// kernels share (tile set-up, CPU check, storing sums) and the bfloat16 one, used at precision
// "bfloat16x2"; included through amx_matmul.h. A 1-bit tile of B is expanded to +-1 bfloat16
// in L1 and meets the activations in the tile unit's bfloat16 dot products (16 x 16 x 32 in 16
// cycles) with float32 sums. bfloat16 keeps 8 of float32's 24 significant bits; x is split
// into P bfloat16 parts, x ~ x1 + .. + xP, each the rounded remainder of the last, and y = x1
// B + .. + xP B, the products by +-1 exact. Two parts keep x's 16 leading significant bits
// (each x off by at most 2^-18 |x|); three would keep all of them, but float32 precision is
// cheaper with int8 digits (amx_digits.h).
//
// Tiles: tmm0-3 the sums of 16 tokens x 64 outputs (four 16-output blocks), tmm4-6 the parts
// of 16 tokens x 32 inputs (tmm4-5 with two), tmm7 one expanded 32 x 16 block of B. B's rows
// come from the lut4 words as they are: the 64-bit pair of 16 outputs x 4 inputs is decoded
// to sign bits, one nibble per output, put in output order (pdep), and the bits of inputs 4g,
// 4g + 1 (then 4g + 2, 4g + 3) of every output, gathered with pext, are one tile row in the
// pairwise layout the dot product reads.
#ifndef BITMAPS_KERNELS_AMX_TILES_H_
#define BITMAPS_KERNELS_AMX_TILES_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_common.h"

namespace bitmaps {

#ifdef BITMAPS_X86

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
// Sums tmm<c> += each part of x (tmm4.., P of them) times the B tile in tmm7.
#define BM_TILE_DOTS(c)                                                          \
  do {                                                                           \
    __asm__ volatile("tdpbf16ps %%tmm7, %%tmm4, %%tmm" #c "\n\t"                \
                     "tdpbf16ps %%tmm7, %%tmm5, %%tmm" #c ::: "memory");         \
    if (P == 3) __asm__ volatile("tdpbf16ps %%tmm7, %%tmm6, %%tmm" #c ::: "memory"); \
  } while (0)

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
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vbmi") ||
        !__builtin_cpu_supports("bmi2"))
      return false;
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

// Token tile t of x (M x K float32) as P bfloat16 parts in tiles: part q of inputs
// 32 s .. 32 s + 31 is 16 rows of 64 bytes at a + (P s + q) 512, so the tile's parts are one
// sequential stream. Inputs past K and rows past M are zero. Each part is the remainder
// rounded to nearest even (vcvtne2ps2bf16); the part is exact in float32, so the next
// remainder is too. The rows' sums go to `sums` (see RowSums) when not null.
template <int P>
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
      for (int q = 0; q < P; ++q) {
        const __m512i part = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_store_si512(a + (s * P + q) * 512 + r * 32, part);
        if (q == P - 1) break;  // the last part's remainder is not needed
        const __m512 part_lo = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(part)), 16));
        const __m512 part_hi = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(part, 1)), 16));
        lo = _mm512_sub_ps(lo, part_lo);
        hi = _mm512_sub_ps(hi, part_hi);
      }
    }
    if (m < M && sums != nullptr) sums[m] = _mm512_reduce_add_ps(total);
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

// Token tiles [t0, t1) x pairs [p0, p0 + np), the tiles' parts of x at `a` one after another
// (SplitTile). The inputs are taken kAmxBlockSteps tiles at
// a time: that block of B is expanded into L1 and read by every token tile, whose sums wait
// in memory between blocks (with one token tile they stay in their tiles). Two buffers: the
// next block is expanded a (step, pair) tile at a time between the dot products, which the
// tile unit runs meanwhile.
template <int P>
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
    const int64_t s2 = std::min<int64_t>(KS, s1 + kAmxBlockSteps);
    const uint16_t* b = blocks + (kb & 1) * kBlock;
    uint16_t* next = blocks + ((kb + 1) & 1) * kBlock;
    // The next block's (step, pair) tiles, spread over this block's dot products.
    const int64_t units = (s2 - s1) * np, slots = (t1 - t0) * (s1 - s0);
    int64_t made = 0, slot = 0;
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
        const uint16_t* at = a + ((t - t0) * KS + s) * P * 512;
        BM_TILE_LOAD(4, at, 64);
        BM_TILE_LOAD(5, at + 512, 64);
        if (P == 3) BM_TILE_LOAD(6, at + 1024, 64);
        const uint16_t* bs = b + (s - s0) * kAmxPairs * 512;
        BM_TILE_LOAD(7, bs, 64);
        BM_TILE_DOTS(0);
        if (np > 1) {
          BM_TILE_LOAD(7, bs + 512, 64);
          BM_TILE_DOTS(1);
        }
        if (np > 2) {
          BM_TILE_LOAD(7, bs + 1024, 64);
          BM_TILE_DOTS(2);
        }
        if (np > 3) {
          BM_TILE_LOAD(7, bs + 1536, 64);
          BM_TILE_DOTS(3);
        }
        // Meanwhile, a share of the next block.
        ++slot;
        const int64_t upto = slot == slots ? units : units * slot / slots;
        for (; made < upto; ++made) {
          const int64_t e = s1 + made / np, j = made % np;
          ExpandPairs(w, G, e, e + 1, s1, p0 + j, 1, next + j * 512);
        }
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

#else
bool HasAmx() { return false; }
#endif

}  // namespace bitmaps

#endif  // BITMAPS_KERNELS_AMX_TILES_H_
