#include "runtime/block_copy.h"

#include <algorithm>
#include <cstring>

namespace pallasvm::runtime {
namespace {

// Elements of the block that lie inside the array, per dimension (and, with
// `limit`, at most limit[d]).
void ValidExtent(const BlockRegion& r, int64_t* valid,
                 const int64_t* limit = nullptr) {
  for (int d = 0; d < r.rank; ++d) {
    valid[d] =
        std::clamp<int64_t>(r.array_shape[d] - r.start[d], 0, r.block_shape[d]);
    if (limit != nullptr) valid[d] = std::min(valid[d], limit[d]);
  }
}

bool Empty(const BlockRegion& r, const int64_t* valid) {
  for (int d = 0; d < r.rank; ++d) {
    if (valid[d] == 0) return true;
  }
  return false;
}

// Walks the in-bounds rectangle, one innermost row per call of `row`.
template <typename RowFn>
void ForEachRow(const BlockRegion& r, const int64_t* valid, RowFn row) {
  int64_t array_stride[vm::kMaxRank], block_stride[vm::kMaxRank];
  int64_t as = 1, bs = 1;
  for (int d = r.rank - 1; d >= 0; --d) {
    array_stride[d] = as;
    block_stride[d] = bs;
    as *= r.array_shape[d];
    bs *= r.block_shape[d];
  }
  if (r.rank == 0) {
    row(0, 0, 1);
    return;
  }
  int64_t base = 0;
  for (int d = 0; d < r.rank; ++d) base += r.start[d] * array_stride[d];
  const int inner = r.rank - 1;
  int64_t idx[vm::kMaxRank] = {};
  while (true) {
    int64_t a = base, b = 0;
    for (int d = 0; d < inner; ++d) {
      a += idx[d] * array_stride[d];
      b += idx[d] * block_stride[d];
    }
    row(a, b, valid[inner]);
    int d = inner - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < valid[d]) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// If the block's in-bounds part is one contiguous run of the array (all
// dims after the first taken whole), its element offset in the array and
// its length; the block is then dense in the same order.
bool ContiguousRun(const BlockRegion& r, const int64_t* valid, int64_t* offset,
                   int64_t* count) {
  int64_t stride = 1, n = 1;
  for (int d = r.rank - 1; d >= 1; --d) {
    if (r.start[d] != 0 || valid[d] != r.array_shape[d] ||
        r.block_shape[d] != r.array_shape[d]) {
      return false;
    }
    stride *= r.array_shape[d];
    n *= r.array_shape[d];
  }
  *offset = r.rank == 0 ? 0 : r.start[0] * stride;
  *count = r.rank == 0 ? 1 : valid[0] * n;
  return true;
}

}  // namespace

void CopyBlockIn(const BlockRegion& r, const uint8_t* array,
                 const uint8_t* fill, uint8_t* block, const int64_t* limit) {
  int64_t valid[vm::kMaxRank];
  ValidExtent(r, valid, limit);
  int64_t block_elems = 1;
  bool partial = false;
  for (int d = 0; d < r.rank; ++d) {
    block_elems *= r.block_shape[d];
    partial |= valid[d] != r.block_shape[d];
  }
  const int es = r.elem_size;
  if (partial) FillElements(block, block_elems, fill, es);
  if (Empty(r, valid)) return;
  int64_t offset, count;
  if (ContiguousRun(r, valid, &offset, &count)) {
    std::memcpy(block, array + offset * es, count * es);
    return;
  }
  ForEachRow(r, valid, [&](int64_t a, int64_t b, int64_t n) {
    std::memcpy(block + b * es, array + a * es, n * es);
  });
}

void ForEachBlockRun(const BlockRegion& r,
                     absl::FunctionRef<void(int64_t, int64_t)> run) {
  int64_t valid[vm::kMaxRank];
  ValidExtent(r, valid);
  if (Empty(r, valid)) return;
  ForEachRow(r, valid, [&](int64_t a, int64_t, int64_t n) { run(a, n); });
}

void CopyBlockOut(const BlockRegion& r, const uint8_t* block, uint8_t* array) {
  int64_t valid[vm::kMaxRank];
  ValidExtent(r, valid);
  if (Empty(r, valid)) return;
  const int es = r.elem_size;
  int64_t offset, count;
  if (ContiguousRun(r, valid, &offset, &count)) {
    std::memcpy(array + offset * es, block, count * es);
    return;
  }
  ForEachRow(r, valid, [&](int64_t a, int64_t b, int64_t n) {
    std::memcpy(array + a * es, block + b * es, n * es);
  });
}

void FillBlockOut(const BlockRegion& r, const uint8_t* fill, uint8_t* array) {
  int64_t valid[vm::kMaxRank];
  ValidExtent(r, valid);
  if (Empty(r, valid)) return;
  const int es = r.elem_size;
  ForEachRow(r, valid, [&](int64_t a, int64_t, int64_t n) {
    FillElements(array + a * es, n, fill, es);
  });
}

void FillElements(uint8_t* dst, int64_t count, const uint8_t* value, int size) {
  switch (size) {
    case 1:
      std::memset(dst, value[0], count);
      return;
    case 2: {
      uint16_t v;
      std::memcpy(&v, value, 2);
      for (int64_t i = 0; i < count; ++i) std::memcpy(dst + 2 * i, &v, 2);
      return;
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, value, 4);
      for (int64_t i = 0; i < count; ++i) std::memcpy(dst + 4 * i, &v, 4);
      return;
    }
    default:
      for (int64_t i = 0; i < count; ++i)
        std::memcpy(dst + i * size, value, size);
  }
}

}  // namespace pallasvm::runtime
