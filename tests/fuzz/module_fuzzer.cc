// Fuzz target: module bytes (format/bytecode.fbs) through the runtime's
// loader and verifier, then, if the module is accepted, a run on
// zero-filled inputs of the declared types. The loader's promise
// (runtime/kernel.h) is that a corrupted module is an error, never a crash;
// the verifier's (vm/verifier.h) is that a verified program runs without
// checks and never touches memory outside its frame and refs.
//
// A valid module may still be too big to run here: operands of millions of
// elements or a grid of millions of points. Those are skipped (the caps
// below), as the harness would otherwise spend its time allocating or
// looping, not finding bugs. What the runtime itself allocates for the
// module (frame, block buffers, scratch) is not capped: refusing a module it
// cannot allocate is the runtime's job.
#include <cstddef>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/grid_driver.h"
#include "runtime/kernel.h"
#include "vm/dtype.h"

namespace {

using pallasvm::runtime::ArrayType;
using pallasvm::runtime::GridDriver;
using pallasvm::runtime::Kernel;
using pallasvm::runtime::RunOptions;

constexpr int64_t kMaxArrayBytes = int64_t{16} << 20;  // per operand
constexpr int64_t kMaxTotalBytes = int64_t{64} << 20;  // all operands
constexpr int64_t kMaxGridPoints = 4096;
// Grid points up to which the second, multi-core run is made.
constexpr int64_t kMaxGridPointsForCores = 256;
// What each dynamic grid bound operand holds: two points per dynamic
// dimension, so block indices change between points.
constexpr int32_t kDynamicGridSize = 2;

// Bytes of `type`, or -1 if over the cap (or a negative dimension).
int64_t CappedBytes(const ArrayType& type) {
  int64_t n = pallasvm::vm::SizeOf(type.dtype);
  for (int64_t d : type.shape) {
    if (d < 0) return -1;
    if (d != 0 && n > kMaxArrayBytes / d) return -1;
    n *= d;
  }
  return n;
}

// Zero-filled buffers for the kernel's operands or results; false if over
// the caps.
bool MakeBuffers(const std::vector<ArrayType>& types, int64_t& total,
                 std::vector<std::vector<uint8_t>>& buffers) {
  for (const ArrayType& t : types) {
    const int64_t bytes = CappedBytes(t);
    if (bytes < 0 || (total += bytes) > kMaxTotalBytes) return false;
    // At least one byte, so every operand has a distinct non-null address.
    buffers.emplace_back(std::max<int64_t>(bytes, 1), 0);
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::shared_ptr<const Kernel>> loaded =
      pallasvm::runtime::LoadModule(
          absl::string_view(reinterpret_cast<const char*>(data), size),
          "fuzz.pvm");
  if (!loaded.ok()) return 0;
  const Kernel& kernel = **loaded;

  int64_t total = 0;
  std::vector<std::vector<uint8_t>> inputs, outputs;
  if (!MakeBuffers(kernel.in_types, total, inputs) ||
      !MakeBuffers(kernel.out_types, total, outputs)) {
    return 0;
  }
  for (int b = 0; b < kernel.num_dynamic_grid_bounds &&
                  b < static_cast<int>(inputs.size());
       ++b) {
    if (inputs[b].size() >= sizeof(int32_t)) {
      std::memcpy(inputs[b].data(), &kDynamicGridSize, sizeof(int32_t));
    }
  }
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (const auto& b : inputs) in_ptrs.push_back(b.data());
  for (auto& b : outputs) out_ptrs.push_back(b.data());

  absl::StatusOr<std::vector<int64_t>> grid =
      pallasvm::runtime::ResolveGrid(kernel, in_ptrs);
  if (!grid.ok()) return 0;
  int64_t points = 1;
  for (int64_t d : *grid) {
    if (d < 0 || (d != 0 && points > kMaxGridPoints / d)) return 0;
    points *= d;
  }

  GridDriver driver(*loaded);
  // A mutated module may loop forever (a jump back, a `while` whose
  // condition never turns false) or block a core in a wait another core
  // never signals while that one loops: the deadline ends it, as it ends
  // one in a user's process. Well under libFuzzer's -timeout, and short:
  // such mutants are common, and each runs to it twice.
  RunOptions plain;
  plain.timeout = std::chrono::milliseconds(250);
  (void)driver.Run(in_ptrs, out_ptrs, plain);
  if (points <= kMaxGridPointsForCores) {
    // The other paths: several cores with race detection, zero fill, and
    // out-of-bounds reads that read the fill value.
    RunOptions options;
    options.timeout = std::chrono::milliseconds(250);
    options.num_cores = 2;
    options.uninitialized_memory = pallasvm::runtime::UninitializedMemory::kZero;
    options.out_of_bounds_reads =
        pallasvm::runtime::OutOfBoundsReads::kUninitialized;
    pallasvm::runtime::RaceReport races;
    options.detect_races = true;
    options.races = &races;
    (void)driver.Run(in_ptrs, out_ptrs, options);
  }
  return 0;
}
