// A program as the VM executes it: instructions, descriptors, the frame
// layout and debug info. The runtime builds one from a verified module
// (format/bytecode.fbs); the compiler builds one and serialises it. Nothing
// here walks a FlatBuffer: after load, everything is plain structs.
#ifndef PALLASVM_VM_PROGRAM_H_
#define PALLASVM_VM_PROGRAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "vm/opcodes.h"

namespace pallasvm::vm {

inline constexpr int kMaxRank = 8;
// Block values in the frame start at multiples of this.
inline constexpr int kSlotAlignment = 64;

// One instruction. Fixed width, so decoding is a load; operand meaning is
// given by the opcode's Format (vm/opcodes.h).
struct Instr {
  Op op;
  uint16_t aux;
  uint32_t a, b, c, d;
  uint32_t n;
};
static_assert(sizeof(Instr) == 24);

// Calls f(access index) for each access descriptor `in` names.
template <typename F>
inline void ForEachAccessOperand(const Instr& in, F&& f) {
  switch (Info(in.op).format) {
    case Format::ACCESS_LOAD:
    case Format::ACCESS_STORE:
    case Format::ACCESS_MASKED_STORE:
    case Format::SEMAPHORE:
    case Format::SEMAPHORE_READ:
      f(in.d);
      break;
    case Format::DMA:
      f(in.a);
      f(in.b);
      if (in.c != kNoAccess) f(in.c);
      f(in.d);
      break;
    default:
      break;
  }
}

// A dense N-d copy: dst[idx] = src[offset + sum(idx[i] * strides[i])], over
// `shape`, strides in elements (0 broadcasts, negative reverses).
struct LayoutDesc {
  int32_t elem_size = 0;
  int32_t rank = 0;
  int64_t offset = 0;
  int64_t shape[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
};

// One dimension of a ref access.
struct AccessDim {
  int64_t extent = 0;      // the dimension's size in the underlying buffer
  int64_t start = 0;       // static start, when start_slot < 0
  int32_t start_slot = -1; // frame offset of an S32 holding the start
  int32_t squeezed = 0;    // 1: integer index, size 1, dropped in the value
  int64_t size = 1;        // elements taken
  int64_t stride = 1;      // step between taken elements (>= 1)
  // DMA regions only (emit_pipeline's edge blocks): frame offset of an S32
  // holding the size, at most `size`; -1: `size` is the size.
  int32_t size_slot = -1;
  // Elements past `extent` that are the ref's padding (interpret mode's
  // buffer_bounds="padded": the buffer is allocated up to whole TPU tiles).
  // They exist only for bounds: the buffer holds `extent` elements, a read
  // there gives the fill value and a write there is dropped, so accesses
  // inside the logical shape take the same path as without padding and only
  // a region the logical check refuses looks here. (Fits in the alignment
  // hole after size_slot: the struct keeps its size.)
  int32_t padding = 0;
};
static_assert(sizeof(AccessDim) == 48);

// Where a ref lives on the simulated TPU. /* ORDER MEMORY_SPACE */ with
// format/bytecode.fbs. The kernel reads and writes VMEM and SMEM refs;
// HBM refs only through DMAs, semaphores only through the semaphore
// instructions (the verifier enforces both).
// VMEM_SHARED (pltpu.VMEM_SHARED) is VMEM that every core of a device sees
// as one buffer; the kernel reads and writes it as it does VMEM.
enum class MemorySpace : uint8_t {
  VMEM = 0,
  SMEM = 1,
  HBM = 2,
  SEMAPHORE = 3,
  VMEM_SHARED = 4,
};

enum class AccessBase : uint8_t {
  REF = 0,    // base = index into the ref table
  FRAME = 1,  // base = frame byte offset of a dense value
};

// A strided region of a ref (or of a frame value, for dynamic_slice). The
// dense side is the region in row-major order. Bounds are checked once per
// access: start >= 0 and start + (size-1)*stride < extent, per dim; with
// `clamp`, starts are instead clamped into range (lax.dynamic_slice). A
// region that fails that check but lies inside extent + padding in every
// dim is in bounds too, with its elements past `extent` virtual (see
// AccessDim::padding).
struct AccessDesc {
  AccessBase base_kind = AccessBase::REF;
  uint8_t clamp = 0;
  uint8_t elem_size = 0;
  uint8_t rank = 0;
  int32_t base = 0;
  AccessDim dims[kMaxRank];
};

// Where an instruction came from, for errors and the disassembler.
struct SourceLoc {
  std::string primitive;  // the jaxpr equation's primitive
  std::string file;
  int32_t line = 0;
  std::string function;
};

// A function: the kernel body or one index map. Functions share the frame;
// each has its own parameter and result slots.
struct Function {
  std::string name;
  uint32_t entry_pc = 0;
  std::vector<uint32_t> param_slots;   // frame offsets (index maps: S32)
  std::vector<uint32_t> result_slots;  // frame offsets (index maps: S32)
};

struct Program {
  std::vector<Instr> code;
  std::vector<LayoutDesc> layouts;
  std::vector<AccessDesc> accesses;
  std::vector<Function> functions;
  // Frame: [constants | values]. Constants are copied in once per frame.
  uint32_t frame_size = 0;
  std::vector<uint8_t> constants;  // occupies frame offsets [0, size)
  // Number of entries the ref table must have.
  uint32_t num_refs = 0;
  // Byte size of each ref, for access verification.
  std::vector<int64_t> ref_sizes;
  // Memory space of each ref; empty means every ref is VMEM.
  std::vector<MemorySpace> ref_spaces;
  MemorySpace ref_space(uint32_t ref) const {
    return ref < ref_spaces.size() ? ref_spaces[ref] : MemorySpace::VMEM;
  }
  // debug_locs[debug_index[pc]]; debug_index has one entry per instruction.
  std::vector<uint32_t> debug_index;
  std::vector<SourceLoc> debug_locs;
};

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_PROGRAM_H_
