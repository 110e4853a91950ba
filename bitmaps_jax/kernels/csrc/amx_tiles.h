// The AMX tile unit (Intel Xeon 4th generation and later), for 12 tokens or more; included by
// sign_matmul.cc only. Each token's row of x is written in fixed point against its largest
// value, x ~ 2^(e - 30) N with |N| <= 2^30 (2^e the power of two just above max |x|), and N's
// four bytes are its digits: N = d0 2^24 + d1 2^16 + d2 2^8 + d3, d0 signed (-64..64), d1-d3
// unsigned (0..255). A 1-bit tile of B is expanded to +-1 int8 in L1, and each digit meets it
// in the tile unit's int8 dot products (16 x 16 x 64 in 16 cycles; signed x signed for d0,
// unsigned x signed for the rest) with exact int32 sums; the four sums are joined in float32.
// Each x is off by at most 2^-31 max |x| of its row before the products, which are then
// exact: about a tenth of the error of float32's own matmul (BERT-base shapes: 3e-8 of max
// |y|, float32 matmul 3e-7 to 7e-7). Splitting x into bfloat16 parts instead takes three of
// them to hold its 24 significant bits, and half again as much tile work. A row holding inf or
// NaN gives a row of NaN.
//
// Tiles: tmm0-3 the sums of 16 tokens x 64 outputs (four 16-output blocks) for one digit,
// tmm4 / tmm7 the digit's 16 tokens x 64 inputs (alternating steps), tmm5-6 the 64 x 16
// blocks of B in turn. Per block of B, each token tile makes one pass per digit.
#ifndef BITMAPS_KERNELS_AMX_TILES_H_
#define BITMAPS_KERNELS_AMX_TILES_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_common.h"

namespace bitmaps {

#ifdef BITMAPS_X86

constexpr int kAmxTokens = 16;         // rows of a tile
constexpr int64_t kAmxInputs = 64;     // int8 inputs of a tile row
constexpr int kAmxPairs = 4;           // 16-output blocks per chunk: tmm0-3
constexpr int kAmxBlockTiles = 4;      // token tiles per chunk when the tokens are many
constexpr int64_t kAmxBlockSteps = 8;  // input tiles per expanded block of B: 32 KB, in L1
// Fewer tokens than this run through the lookup tables: a tile costs as much for 1 token as
// for 16, the tables cost per token (BERT-base, measured with the earlier bfloat16 tiles: the
// tables faster at 8 tokens, even at 12, the tiles faster at 16).
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
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;  // AMX-TILE, AMX-INT8
    // Linux hands tile state to a process only when asked (5.16 and later); without it the
    // first tile instruction would fault.
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return has;
}

constexpr int kDigits = 4;
// Past this many inputs the joined sums could leave int32 (|d0| <= 64: 16,639 K < 2^31).
constexpr int64_t kDigitMaxInputs = 65536;

// tmm<c> += tmm<a> (x's digits: ss signed, us unsigned) . tmm<b> (+-1).
#define BM_DOT8(op, c, a, b) \
  __asm__ volatile("tdpb" #op "d %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")
// One input tile of one digit: the four blocks of B (tmm5, tmm6 in turn) against tmm<a>.
#define BM_DIGIT_STEP(op, a)                                                  \
  do {                                                                        \
    BM_TILE_LOAD(5, bs, 64);                                                  \
    BM_DOT8(op, 0, a, 5);                                                     \
    if (np > 1) { BM_TILE_LOAD(6, bs + 1024, 64); BM_DOT8(op, 1, a, 6); }      \
    if (np > 2) { BM_TILE_LOAD(5, bs + 2048, 64); BM_DOT8(op, 2, a, 5); }      \
    if (np > 3) { BM_TILE_LOAD(6, bs + 3072, 64); BM_DOT8(op, 3, a, 6); }      \
  } while (0)

// Token tile t of x (M x K float32) as digit tiles: digit q of inputs 64 s .. 64 s + 63 is 16
// rows of 64 bytes at a + (4 s + q) 1024. scale[r] = 2^(e - 30) of row r (0 for rows past M
// or all zero, NaN for a row with inf or NaN). The rows' sums go to `sums` when not null.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void SplitDigits(
    const float* x, int64_t M, int64_t K, int64_t KS, int64_t t, int8_t* a, double* scale,
    float* sums) {
  for (int64_t r = 0; r < kAmxTokens; ++r) {
    const int64_t m = t * kAmxTokens + r;
    if (m >= M) {
      for (int64_t s = 0; s < KS * kDigits; ++s)
        _mm512_store_si512(a + s * 1024 + r * 64, _mm512_setzero_si512());
      scale[r] = 0.0;
      continue;
    }
    const float* row = x + m * K;
    __m512 total = _mm512_setzero_ps(), top = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 mask = static_cast<__mmask16>(K - k >= 16 ? 0xffffu : (1u << (K - k)) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(mask, row + k);
      total = _mm512_add_ps(total, v);
      top = _mm512_max_ps(top, _mm512_abs_ps(v));
    }
    const float sum = _mm512_reduce_add_ps(total), largest = _mm512_reduce_max_ps(top);
    if (sums != nullptr) sums[m] = sum;
    int shift = 0;
    // max_ps can drop a NaN; the sum keeps it.
    if (!std::isfinite(largest) || std::isnan(sum)) {
      scale[r] = std::nan("");
    } else if (largest == 0.0f) {
      scale[r] = 0.0;
    } else {
      int e;
      std::frexp(largest, &e);  // largest < 2^e
      shift = 30 - e;
      scale[r] = std::ldexp(1.0, -shift);
    }
    const __m512 power = _mm512_set1_ps(static_cast<float>(shift));
    // Byte j of 16 int32 to place 16 (j % 4) + j / 4: the 16 values' byte 0, then 1, 2, 3.
    const __m512i planes = _mm512_set_epi32(
        0x3f3b3733, 0x2f2b2723, 0x1f1b1713, 0x0f0b0703, 0x3e3a3632, 0x2e2a2622, 0x1e1a1612,
        0x0e0a0602, 0x3d393531, 0x2d292521, 0x1d191511, 0x0d090501, 0x3c383430, 0x2c282420,
        0x1c181410, 0x0c080400);
    for (int64_t s = 0; s < KS; ++s) {
      __m512i v[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t k = s * kAmxInputs + 16 * i;
        const int64_t left = std::max<int64_t>(0, std::min<int64_t>(16, K - k));
        const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1u);
        const __m512 x16 = _mm512_maskz_loadu_ps(mask, row + k);
        // N: exact scaling, then rounded; its bytes by place.
        const __m512i n = _mm512_cvtps_epi32(_mm512_scalef_ps(x16, power));
        v[i] = _mm512_permutexvar_epi8(planes, n);
      }
      // 4 x 4 blocks of 16 bytes transposed: byte place p of the 64 inputs.
      const __m512i t0 = _mm512_shuffle_i64x2(v[0], v[1], 0x44);
      const __m512i t1 = _mm512_shuffle_i64x2(v[0], v[1], 0xee);
      const __m512i t2 = _mm512_shuffle_i64x2(v[2], v[3], 0x44);
      const __m512i t3 = _mm512_shuffle_i64x2(v[2], v[3], 0xee);
      int8_t* dst = a + s * kDigits * 1024 + r * 64;  // digit q = byte place 3 - q
      _mm512_store_si512(dst + 3 * 1024, _mm512_shuffle_i64x2(t0, t2, 0x88));
      _mm512_store_si512(dst + 2 * 1024, _mm512_shuffle_i64x2(t0, t2, 0xdd));
      _mm512_store_si512(dst + 1 * 1024, _mm512_shuffle_i64x2(t1, t3, 0x88));
      _mm512_store_si512(dst, _mm512_shuffle_i64x2(t1, t3, 0xdd));
    }
  }
}

// Input tiles [s0, s1) of pairs [p0, p0 + np) of B as +-1 int8: tile (s, j) at b + ((s -
// base) kAmxPairs + j) 1024; its row g holds inputs 4g .. 4g + 3 of the 16 outputs, four
// bytes an output, the order the int8 dot product reads. A lut4 word pair decoded to output
// order (as in ExpandPairs) is that row's 64 sign bits as they are; eight pairs are decoded
// at once in a vector. Groups past G are +1.
__attribute__((target("avx512f,avx512bw,bmi2"))) void ExpandSigns8(const uint32_t* w,
                                                                  int64_t G, int64_t s0,
                                                                  int64_t s1, int64_t base,
                                                                  int64_t p0, int np,
                                                                  int8_t* b) {
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  const __m512i nibble = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi8(0x11);
  const __m512i eights = _mm512_set1_epi8(static_cast<char>(0x88));
  // Per 64 bits [e0 e1 e2 e3 o0 o1 o2 o3] -> [e0 o0 e1 o1 e2 o2 e3 o3].
  const __m512i zip = _mm512_set4_epi32(0x0f0b0e0a, 0x0d090c08, 0x07030602, 0x05010400);
  alignas(64) uint64_t z[8];
  for (int j = 0; j < np; ++j) {
    const uint32_t* wp = w + (p0 + j) * G * 2;
    for (int64_t g0 = 16 * s0; g0 < 16 * s1; g0 += 8) {
      if (g0 + 8 <= G) {
        // Nibble-wise: code bit 3 clear -> signs = code ^ 8, set -> code ^ 15.
        const __m512i code = _mm512_loadu_si512(wp + 2 * g0);
        const __m512i neg = _mm512_and_si512(_mm512_srli_epi64(code, 3), ones);
        const __m512i n = _mm512_ternarylogic_epi64(
            code, eights, _mm512_sub_epi64(_mm512_slli_epi64(neg, 3), neg), 0x96);
        // The two words' nibbles interleaved, nibble i = output i: byte i of the result is
        // nibble i of the first word, then of the second.
        const __m512i second = _mm512_srli_epi64(n, 32);
        // 0xca: a ? b : c bit by bit.
        const __m512i even =
            _mm512_ternarylogic_epi64(nibble, n, _mm512_slli_epi64(second, 4), 0xca);
        const __m512i odd =
            _mm512_ternarylogic_epi64(nibble, _mm512_srli_epi64(n, 4), second, 0xca);
        const __m512i both = _mm512_or_si512(_mm512_maskz_mov_epi32(0x5555, even),
                                             _mm512_slli_epi64(odd, 32));
        _mm512_store_si512(z, _mm512_shuffle_epi8(both, zip));
      } else {
        for (int i = 0; i < 8; ++i) {
          const int64_t g = g0 + i;
          z[i] = ~0ull;
          if (g < G) {
            uint64_t code;
            std::memcpy(&code, wp + 2 * g, sizeof(code));
            const uint64_t neg = (code >> 3) & 0x1111111111111111ull;
            const uint64_t n = code ^ 0x8888888888888888ull ^ (neg * 7);
            z[i] = _pdep_u64(n, 0x0f0f0f0f0f0f0f0full) | _pdep_u64(n >> 32, 0xf0f0f0f0f0f0f0f0ull);
          }
        }
      }
      int8_t* rows = b + ((g0 / 16 - base) * kAmxPairs + j) * 1024 + (g0 % 16) * 64;
      for (int i = 0; i < 8; ++i)
        _mm512_store_si512(rows + 64 * i, _mm512_mask_blend_epi8(z[i], minus, plus));
    }
  }
}

// y for token tile t, pairs [p0, p0 + np), from the four digits' sums at c (digit q, pair j:
// 16 x 16 int32 at c + (q kAmxPairs + j) 256): hi = d0 256 + d1 and lo = d2 256 + d3 are
// exact in int32, y = (hi 2^16 + lo) times the row's scale in float32 (hi and lo rounded to
// float32, then one fused multiply-add: within two units in the last place of y; rows whose
// scale float32 would hold inexactly, below 2^-100, in float64).
__attribute__((target("avx512f"))) void JoinDigits(const int32_t* c, const double* scale,
                                                   int64_t t, int np, int64_t M, int64_t N,
                                                   int64_t p0, float* y) {
  const int rows = static_cast<int>(std::min<int64_t>(kAmxTokens, M - t * kAmxTokens));
  const int64_t digit = kAmxPairs * 256;
  for (int r = 0; r < rows; ++r) {
    if (std::fabs(scale[r]) < 0x1p-100 && scale[r] != 0.0) {  // a tiny row: float64
      for (int j = 0; j < np; ++j)
        for (int64_t o = 16 * (p0 + j), i = 0; i < 16 && o + i < N; ++i) {
          const int32_t* ci = c + j * 256 + r * 16 + i;
          const double hi = ci[0] * 256.0 + ci[digit], lo = ci[2 * digit] * 256.0 + ci[3 * digit];
          y[(t * kAmxTokens + r) * N + o + i] = static_cast<float>((hi * 65536.0 + lo) * scale[r]);
        }
      continue;
    }
    const __m512 low = _mm512_set1_ps(static_cast<float>(scale[r]));
    const __m512 high = _mm512_set1_ps(static_cast<float>(scale[r] * 65536.0));
    float* yr = y + (t * kAmxTokens + r) * N;
    for (int j = 0; j < np; ++j) {
      const int64_t o = 16 * (p0 + j);
      const int lanes = static_cast<int>(std::min<int64_t>(16, N - o));
      const int32_t* cr = c + j * 256 + r * 16;
      const __m512i hi = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(cr), 8),
                                          _mm512_load_si512(cr + digit));
      const __m512i lo = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(cr + 2 * digit), 8),
                                          _mm512_load_si512(cr + 3 * digit));
      const __m512 out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), high,
                                         _mm512_mul_ps(_mm512_cvtepi32_ps(lo), low));
      _mm512_mask_storeu_ps(yr + o, static_cast<__mmask16>((1u << lanes) - 1u), out);
    }
  }
}

// Token tiles [t0, t1) x pairs [p0, p0 + np), their digit tiles at `a` one after another
// (SplitDigits). Per block of B (expanded into L1; the next block is expanded a tile at a time
// between the dot products, which the tile unit runs meanwhile), each token tile runs a pass
// per digit, its sums waiting in memory between passes; after the last block the digits are
// joined into y.
void DigitChunk(const int8_t* a, const double* scales, const uint32_t* w, int64_t M,
                int64_t N, int64_t G, int64_t KS, int64_t t0, int64_t t1, int64_t p0, int np,
                float* y) {
  constexpr int64_t kBlock = kAmxPairs * kAmxBlockSteps * 1024;
  thread_local std::vector<int8_t> expanded;
  thread_local std::vector<int32_t> sums;
  int8_t* blocks = Aligned64(expanded, 2 * kBlock);
  int32_t* c = Aligned64(sums, (t1 - t0) * kDigits * kAmxPairs * 256);
  ExpandSigns8(w, G, 0, std::min<int64_t>(KS, kAmxBlockSteps), 0, p0, np, blocks);
  for (int64_t s0 = 0, kb = 0; s0 < KS; s0 += kAmxBlockSteps, ++kb) {
    const int64_t s1 = std::min<int64_t>(KS, s0 + kAmxBlockSteps);
    const int64_t s2 = std::min<int64_t>(KS, s1 + kAmxBlockSteps);
    const int8_t* b = blocks + (kb & 1) * kBlock;
    int8_t* next = blocks + ((kb + 1) & 1) * kBlock;
    const int64_t units = (s2 - s1) * np, slots = (t1 - t0) * kDigits * (s1 - s0);
    int64_t made = 0, slot = 0;
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* at = a + (t - t0) * KS * kDigits * 1024;
      int32_t* ct = c + (t - t0) * kDigits * kAmxPairs * 256;
      for (int q = 0; q < kDigits; ++q) {
        int32_t* cq = ct + q * kAmxPairs * 256;
        if (s0 == 0) {
          BM_TILE_ZERO(0);
          BM_TILE_ZERO(1);
          BM_TILE_ZERO(2);
          BM_TILE_ZERO(3);
        } else {
          BM_TILE_LOAD(0, cq, 64);
          BM_TILE_LOAD(1, cq + 256, 64);
          BM_TILE_LOAD(2, cq + 512, 64);
          BM_TILE_LOAD(3, cq + 768, 64);
        }
        for (int64_t s = s0; s < s1; ++s) {
          const int8_t* as = at + (s * kDigits + q) * 1024;
          const int8_t* bs = b + (s - s0) * kAmxPairs * 1024;
          // Two registers in turn: a step's load need not wait for the last step's dots.
          if ((s & 1) == 0) {
            BM_TILE_LOAD(4, as, 64);
            if (q == 0) BM_DIGIT_STEP(ss, 4); else BM_DIGIT_STEP(us, 4);
          } else {
            BM_TILE_LOAD(7, as, 64);
            if (q == 0) BM_DIGIT_STEP(ss, 7); else BM_DIGIT_STEP(us, 7);
          }
          ++slot;
          const int64_t upto = slot == slots ? units : units * slot / slots;
          for (; made < upto; ++made) {
            const int64_t e = s1 + made / np, j = made % np;
            ExpandSigns8(w, G, e, e + 1, s1, p0 + j, 1, next + j * 1024);
          }
        }
        BM_TILE_STORE(0, cq, 64);
        BM_TILE_STORE(1, cq + 256, 64);
        BM_TILE_STORE(2, cq + 512, 64);
        BM_TILE_STORE(3, cq + 768, 64);
      }
      if (s1 == KS) JoinDigits(ct, scales + (t - t0) * kAmxTokens, t, np, M, N, p0, y);
    }
  }
}

// One call's work: chunks of (token block, four pairs), taken in order. A thread splits the
// token tiles of the block it works on into digits of its own (thread_local, at most 4 x 16 x
// K x 4 bytes: 768 KiB for BERT-base's FFN): every tile load of x then hits lines this core
// wrote, in its own L2, where tiles shared between threads came half from the other core's
// cache, at L3 speed (measured with x in bfloat16 parts, BERT-base, 64 tokens: 9% less time
// for 768 x 3072, 13% for 3072 x 768). The row sums come from the first thread to split each
// tile.
constexpr int64_t kAmxRoundTokens = 256;  // tokens per round of a call
constexpr int64_t kAmxRoundTiles = kAmxRoundTokens / kAmxTokens;

struct AmxWork : Operands {
  int64_t Kp, tiles, pairs, groups, items;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> summed[kAmxRoundTiles] = {};

  void Drain() {
    thread_local std::vector<int8_t> tile_buffer;
    thread_local std::vector<double> scale_buffer;
    int8_t* a = nullptr;
    double* scales = nullptr;
    const int64_t tile_bytes = kDigits * kAmxTokens * Kp;
    int64_t i, split_block = -1;
    while ((i = next.fetch_add(1)) < items) {
      const int64_t blk = i / groups, grp = i % groups;
      const int64_t t0 = blk * kAmxBlockTiles, t1 = std::min(tiles, t0 + kAmxBlockTiles);
      if (blk != split_block) {  // blocks come in order: a thread never goes back to one
        if (a == nullptr) {
          a = Aligned64(tile_buffer, kAmxBlockTiles * tile_bytes);
          scales = Aligned64(scale_buffer, kAmxBlockTiles * kAmxTokens);
          AmxBegin();
        }
        for (int64_t t = t0; t < t1; ++t)
          SplitDigits(x, M, K, Kp / kAmxInputs, t, a + (t - t0) * tile_bytes,
                      scales + (t - t0) * kAmxTokens, summed[t].exchange(true) ? nullptr : sums);
        split_block = blk;
      }
      const int64_t p0 = grp * kAmxPairs;
      DigitChunk(a, scales, w, M, N, G, Kp / kAmxInputs, t0, t1, p0,
                 static_cast<int>(std::min<int64_t>(kAmxPairs, pairs - p0)), y);
      done.fetch_add(1, std::memory_order_release);
    }
    if (a != nullptr) AmxEnd();
  }
};

void AmxRound(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
              int64_t M, int64_t K, int64_t N) {
  auto work = std::make_shared<AmxWork>();
  static_cast<Operands&>(*work) = {x, w, y, sums, M, K, N, (K + 3) / 4};
  work->tiles = (M + kAmxTokens - 1) / kAmxTokens;
  work->Kp = (K + kAmxInputs - 1) / kAmxInputs * kAmxInputs;
  work->pairs = (N + 15) / 16;
  work->groups = (work->pairs + kAmxPairs - 1) / kAmxPairs;
  work->items = (work->tiles + kAmxBlockTiles - 1) / kAmxBlockTiles * work->groups;
  RunOnPool(pool, work, work->items);
}

// Whether the tiles take this product: enough tokens, and inputs few enough for the digits'
// int32 sums.
bool AmxTakes(int64_t M, int64_t K) { return M >= kAmxMinTokens && K <= kDigitMaxInputs; }

// y = x @ B, a round of at most kAmxRoundTokens tokens at a time.
void AmxMatmul(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
               int64_t M, int64_t K, int64_t N) {
  for (int64_t m0 = 0; m0 < M; m0 += kAmxRoundTokens) {
    const int64_t m = std::min(kAmxRoundTokens, M - m0);
    AmxRound(pool, x + m0 * K, w, y + m0 * N, sums + m0, m, K, N);
  }
}

#else
bool HasAmx() { return false; }
#endif

}  // namespace bitmaps

#endif  // BITMAPS_KERNELS_AMX_TILES_H_
