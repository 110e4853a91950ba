// y = x @ B on the AMX tiles, over XLA's threads; included by sign_matmul.cc only. Two ways
// to feed x to the tile unit, one per precision: Digits (amx_digits.h, float32: x in four
// int8 digits, int8 dot products) and Bf16Parts (amx_tiles.h, bfloat16x2: x's 16 leading
// significant bits in two bfloat16 parts). The work is cut the same way for both.
#ifndef BITMAPS_KERNELS_AMX_MATMUL_H_
#define BITMAPS_KERNELS_AMX_MATMUL_H_

#include "amx_digits.h"
#include "amx_tiles.h"
#include "cpu_common.h"

namespace bitmaps {

#ifdef BITMAPS_X86

// float32: four int8 digits of x per token tile, 64 inputs a tile.
struct Digits {
  static constexpr int64_t kInputs = kDigitInputs;
  static int64_t TileBytes(int64_t Kp) { return kDigits * kAmxTokens * Kp; }
  static void Split(const Operands& o, int64_t Kp, int64_t t, uint8_t* a, double* scales,
                    float* sums) {
    SplitDigits(o.x, o.M, o.K, Kp / kInputs, t, reinterpret_cast<int8_t*>(a), scales, sums);
  }
  static void Chunk(const Operands& o, int64_t Kp, const uint8_t* a, const double* scales,
                    int64_t t0, int64_t t1, int64_t p0, int np) {
    DigitChunk(reinterpret_cast<const int8_t*>(a), scales, o.w, o.M, o.N, o.G, Kp / kInputs,
               t0, t1, p0, np, o.y);
  }
};

// bfloat16x2: two bfloat16 parts of x per token tile, 32 inputs a tile.
struct Bf16Parts {
  static constexpr int64_t kInputs = kAmxInputs;
  static int64_t TileBytes(int64_t Kp) { return 2 * kAmxTokens * Kp * 2; }
  static void Split(const Operands& o, int64_t Kp, int64_t t, uint8_t* a, double*,
                    float* sums) {
    SplitTile<2>(o.x, o.M, o.K, Kp / kInputs, t, reinterpret_cast<uint16_t*>(a), sums);
  }
  static void Chunk(const Operands& o, int64_t Kp, const uint8_t* a, const double*,
                    int64_t t0, int64_t t1, int64_t p0, int np) {
    AmxChunk<2>(reinterpret_cast<const uint16_t*>(a), o.w, o.M, o.N, o.G, Kp, t0, t1, p0, np,
                o.y);
  }
};

// One call's work: chunks of (token block, four pairs), taken in order. A thread splits the
// token tiles of the block it works on into digits or parts of its own (thread_local, at most
// 4 x 16 x K x 4 bytes: 768 KiB for BERT-base's FFN): every tile load of x then hits lines
// this core wrote, in its own L2, where tiles shared between threads came half from the other
// core's cache, at L3 speed (BERT-base, 64 tokens: 9% less time for 768 x 3072, 13% for 3072 x
// 768). The row sums come from the first thread to split each tile.
constexpr int64_t kAmxRoundTokens = 256;  // tokens per round of a call
constexpr int64_t kAmxRoundTiles = kAmxRoundTokens / kAmxTokens;

template <typename Tiles>
struct AmxWork : Operands {
  int64_t Kp, tiles, pairs, groups, items;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> summed[kAmxRoundTiles] = {};

  void Drain() {
    thread_local std::vector<uint8_t> tile_buffer;
    thread_local std::vector<double> scale_buffer;
    uint8_t* a = nullptr;
    double* scales = nullptr;
    const int64_t tile_bytes = Tiles::TileBytes(Kp);
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
          Tiles::Split(*this, Kp, t, a + (t - t0) * tile_bytes, scales + (t - t0) * kAmxTokens,
                       summed[t].exchange(true) ? nullptr : sums);
        split_block = blk;
      }
      const int64_t p0 = grp * kAmxPairs;
      Tiles::Chunk(*this, Kp, a, scales, t0, t1, p0,
                   static_cast<int>(std::min<int64_t>(kAmxPairs, pairs - p0)));
      done.fetch_add(1, std::memory_order_release);
    }
    if (a != nullptr) AmxEnd();
  }
};

template <typename Tiles>
void AmxRound(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
              int64_t M, int64_t K, int64_t N) {
  auto work = std::make_shared<AmxWork<Tiles>>();
  static_cast<Operands&>(*work) = {x, w, y, sums, M, K, N, (K + 3) / 4};
  work->tiles = (M + kAmxTokens - 1) / kAmxTokens;
  work->Kp = (K + Tiles::kInputs - 1) / Tiles::kInputs * Tiles::kInputs;
  work->pairs = (N + 15) / 16;
  work->groups = (work->pairs + kAmxPairs - 1) / kAmxPairs;
  work->items = (work->tiles + kAmxBlockTiles - 1) / kAmxBlockTiles * work->groups;
  RunOnPool(pool, work, work->items);
}

// Whether the tiles take this product: enough tokens, and inputs few enough for the digits'
// int32 sums.
bool AmxTakes(int64_t M, int64_t K) { return M >= kAmxMinTokens && K <= kDigitMaxInputs; }

// y = x @ B, float32 (`fast` false: x's digits) or bfloat16x2 (`fast`: x's two parts).
void AmxMatmul(ffi::ThreadPool& pool, const float* x, const uint32_t* w, float* y, float* sums,
               int64_t M, int64_t K, int64_t N, bool fast) {
  for (int64_t m0 = 0; m0 < M; m0 += kAmxRoundTokens) {
    const int64_t m = std::min(kAmxRoundTokens, M - m0);
    if (fast)
      AmxRound<Bf16Parts>(pool, x + m0 * K, w, y + m0 * N, sums + m0, m, K, N);
    else
      AmxRound<Digits>(pool, x + m0 * K, w, y + m0 * N, sums + m0, m, K, N);
  }
}

#endif  // BITMAPS_X86

}  // namespace bitmaps

#endif  // BITMAPS_KERNELS_AMX_MATMUL_H_
