// The dispatch loop: runs one function of a verified Program against a
// frame and a ref table. It allocates nothing and never checks what the
// verifier has already checked (operand ranges, jump targets, descriptor
// indices); it does check what only run time knows: dynamic starts of ref
// accesses, which are bounds-checked once per access.
#ifndef PALLASVM_VM_INTERPRETER_H_
#define PALLASVM_VM_INTERPRETER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vm/interrupt.h"
#include "vm/machine.h"
#include "vm/program.h"

namespace pallasvm::vm {

struct ExecContext {
  uint8_t* frame = nullptr;       // Program::frame_size bytes, 64-aligned
  // Program::num_refs base pointers (64-aligned), of Program::ref_sizes
  // bytes; ref buffers overlap neither each other nor the frame.
  uint8_t* const* refs = nullptr;
  const int32_t* program_ids = nullptr;   // one per grid axis
  const int32_t* num_programs = nullptr;  // one per grid axis
  int32_t grid_rank = 0;
  // program_ids[grid_rank .. grid_rank + num_device_axes) are this
  // device's coordinates on the mesh axes around the call (shard_map),
  // which PROGRAM_ID reads past the grid's axes (lax.axis_index of a mesh
  // axis).
  int32_t num_device_axes = 0;
  // Per ref, its dtype's fill value (SizeOf bytes, little-endian in the
  // low bytes): what a LOAD reads where its region leaves its ref, inside
  // the ref's padding (AccessDim::padding) or, with fill_out_of_bounds_reads
  // (interpret mode's out_of_bounds_reads="uninitialized"), anywhere.
  // Otherwise, or when null, such a LOAD is an OutOfRange error. Writes
  // beyond the padding are always errors.
  const uint64_t* ref_fills = nullptr;
  bool fill_out_of_bounds_reads = false;
  // Polled at every backward jump (vm/interrupt.h); when it fires, Execute
  // returns its status (DEADLINE_EXCEEDED / CANCELLED) naming the jump's
  // source line. Null: never interrupted.
  Interrupt* interrupt = nullptr;
  // Per ref, nonzero where the ref holds an input block whose index map put
  // it outside its array at this grid point: reading any of it (a LOAD of a
  // non-empty region, or an instruction reading the whole ref in place) is
  // an OutOfRange error, and the ref's index is stored in
  // *unreadable_ref_read so the caller can name the input and block. Null
  // (the usual case): no ref is unreadable.
  const uint8_t* unreadable_refs = nullptr;
  int32_t* unreadable_ref_read = nullptr;
  // Carries out DMAs, semaphore operations and run_scoped allocations
  // (vm/machine.h). Null: such an instruction is a FAILED_PRECONDITION
  // error (a program run without a simulated machine, as in VM tests).
  Machine* machine = nullptr;
  // Report every ref access of the kernel to machine->ObserveAccess (race
  // detection). Off: one predictable branch per access instruction.
  bool observe_accesses = false;
};

// Copies the program's constants into the frame's constant region. Done
// once per frame, not per call: nothing writes there.
void InitFrame(const Program& program, uint8_t* frame);

// Runs program.functions[function] to its RETURN. A failing access returns
// an OutOfRange error naming the equation and its source line; an
// interrupt, its status naming the loop's source line.
absl::Status Execute(const Program& program, int function,
                     const ExecContext& ctx);

// Checks every instruction's operands against the program's frame size,
// descriptor tables, code size and the op's dtypes. Run once, at load. If
// given, *frame_bytes_used receives the end of the highest frame byte any
// operand, slot or constant uses (a module claiming a frame far larger is
// suspect: see runtime/module_loader.cc).
absl::Status Verify(const Program& program,
                    int64_t* frame_bytes_used = nullptr);

// A readable listing: one instruction per line with operands and source.
std::string Disassemble(const Program& program);

}  // namespace pallasvm::vm

#endif  // PALLASVM_VM_INTERPRETER_H_
