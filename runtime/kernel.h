// A loaded, verified module: the VM program plus the description of the
// pallas_call it implements (grid, refs, block mappings). Built once by
// LoadModule; immutable and shareable between threads afterwards.
#ifndef PALLASVM_RUNTIME_KERNEL_H_
#define PALLASVM_RUNTIME_KERNEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vm/dtype.h"
#include "vm/program.h"

namespace pallasvm::runtime {

struct ArrayType {
  vm::DType dtype = vm::DType::F32;
  std::vector<int64_t> shape;
  int64_t num_elements() const;
  int64_t bytes() const { return num_elements() * vm::SizeOf(dtype); }
  std::string ToString() const;
};

// What a kernel ref is bound to (= bytecode.fbs RefKind, ORDER REF_KIND).
enum class RefKind : uint8_t {
  SCALAR_PREFETCH,  // a whole operand, copied to SMEM once per call
  INPUT_BLOCK,      // a block of an input, in VMEM
  OUTPUT_BLOCK,     // a block of an output, in VMEM
  SCRATCH,          // allocated once per call
  INPUT_HBM,        // all of an input, in HBM: the caller's buffer
  OUTPUT_HBM,       // all of an output, in HBM: the caller's buffer
  SCOPED,           // a run_scoped allocation, fresh at each entry
};
// "scalar prefetch", "input block", ...
const char* RefKindName(RefKind kind);
// Where the instruction at `pc` came from, for reports: "dma_start
// (k.py:12)", the primitive alone without a file, "pc N" without debug info.
std::string InstructionSource(const vm::Program& program, uint32_t pc);

// A whole pallas_call operand in HBM, bound in place at each call.
inline bool IsHbmOperand(RefKind kind) {
  return kind == RefKind::INPUT_HBM || kind == RefKind::OUTPUT_HBM;
}
using MemorySpace = vm::MemorySpace;
enum class BlockDimKind : uint8_t { BLOCKED, SQUEEZED, ELEMENT };

struct RefSpec {
  RefKind kind;
  int operand = -1;  // pallas_call operand (inputs) or result index
  MemorySpace memory_space = MemorySpace::VMEM;
  ArrayType type;  // the kernel's view
  std::string origin;  // what the kernel calls it, for reports
  // buffer_bounds="padded": the shape interpret mode allocates (bytecode.fbs
  // Ref.padded_shape), for reports; empty: not padded.
  std::vector<int64_t> padded_shape;
};

struct BlockDim {
  BlockDimKind kind;
  int64_t size;
};

struct BlockMappingSpec {
  int ref = 0;
  int operand = 0;  // input operand index, or output index
  bool is_output = false;
  ArrayType array;
  std::vector<BlockDim> dims;
  int index_map = 0;  // function index
};

inline constexpr int64_t kDynamicGridDim = -1;

struct Kernel {
  std::string name;
  std::string compiler_version;
  vm::Program program;
  // Size per grid dimension; kDynamicGridDim for a dimension sized at run
  // time by a dynamic grid bound (see ResolveGrid in grid_driver.h).
  std::vector<int64_t> grid;
  std::vector<std::string> dimension_semantics;
  // pallas_call operands, in order: num_dynamic_grid_bounds int32 scalars
  // (the sizes of the dynamic grid dimensions, in order), then
  // num_scalar_prefetch scalar prefetch operands, then the inputs.
  int num_dynamic_grid_bounds = 0;
  int num_scalar_prefetch = 0;
  std::vector<ArrayType> in_types;   // pallas_call operands
  std::vector<ArrayType> out_types;  // pallas_call results
  std::vector<RefSpec> refs;
  std::vector<BlockMappingSpec> block_mappings;
  std::vector<std::pair<int, int>> aliases;  // (input, output)
  // What one simulated core's workspace takes: the frame and every ref's
  // buffer, each rounded up to 64 bytes (checked against the memory limit
  // when loaded).
  int64_t core_workspace_bytes = 0;
  // Some semaphore_signal or DMA names a core or a device (core_index=,
  // device_id=): the cores (and devices) of a call synchronize
  // (runtime/core_sync.h).
  bool signals_other_cores = false;
};

// Verifies `bytes` (FlatBuffers verifier, identifier, schema version, then
// vm::Verify and the consistency of grid, refs and block mappings) and
// builds a Kernel. A corrupted or stale module is an error, never a crash.
// Every size is checked: the grid, shapes and block dimensions against the
// module format's limits (format/module_limits.h, which the compiler
// applies too: a grid dimension fits in int32, the grid in 2^62 points, a
// shape in 2^40 elements); one core's workspace (frame, refs) and each
// buffer in it in `memory_limit` bytes (0: DefaultMemoryLimit(), see
// vm/memory_limit.h). A buffer of any alignment is accepted (read through
// an aligned copy if need be); vectors and structs of 8-byte fields that
// are misaligned within it are refused, never read
// (format/alignment_check.h).
absl::StatusOr<std::shared_ptr<const Kernel>> LoadModule(
    absl::string_view bytes, absl::string_view origin,
    int64_t memory_limit = 0);

}  // namespace pallasvm::runtime

#endif  // PALLASVM_RUNTIME_KERNEL_H_
