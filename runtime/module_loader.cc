// FlatBuffer module -> runtime::Kernel. The only place that reads
// format/bytecode.fbs on the runtime side.
#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bytecode_bfbs_generated.h"
#include "bytecode_generated.h"
#include "format/alignment_check.h"
#include "format/module_limits.h"
#include "runtime/kernel.h"
#include "vm/interpreter.h"
#include "vm/memory_limit.h"

namespace pallasvm::runtime {

using vm::CheckedAdd;
using vm::CheckedMul;
using vm::CheckMemory;
using vm::FormatBytes;
namespace {

namespace bc = ::pallasvm::bytecode;

// Must equal compiler::kModuleSchemaVersion (the runtime does not link the
// compiler); every test that compiles a module and loads it checks they
// agree. 2: operands may name whole refs (aux bits, DOT_ADD_F32), dynamic
// grids; version 1 modules are refused (and rebuilt by the module cache).
// 4: AccessDim.padding and Ref.padded_shape (buffer_bounds="padded").
constexpr uint32_t kModuleSchemaVersion = 5;

static_assert(format::kMaxRank == vm::kMaxRank);
static_assert(format::kDynamicGridDimension == kDynamicGridDim);

absl::StatusOr<ArrayType> ReadType(const bc::ArrayType* t,
                                   absl::string_view what) {
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no type"));
  }
  if (static_cast<int>(t->dtype()) >= vm::kNumDTypes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has a bad dtype"));
  }
  ArrayType a;
  a.dtype = static_cast<vm::DType>(t->dtype());
  if (t->shape()) a.shape.assign(t->shape()->begin(), t->shape()->end());
  if (absl::Status s = format::CheckArrayShape(a.shape, what); !s.ok()) {
    return s;
  }
  return a;
}

template <typename T>
std::vector<T> ToVector(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return std::vector<T>(v->begin(), v->end());
}

}  // namespace

int64_t ArrayType::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ArrayType::ToString() const {
  return absl::StrCat(vm::Name(dtype), "[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<std::shared_ptr<const Kernel>> LoadModule(
    absl::string_view bytes, absl::string_view origin, int64_t memory_limit) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": invalid pallasvm module: ", why));
  };
  // 8-byte fields are read in place, so the buffer must be 8-aligned (an
  // XLA attribute or a caller's buffer need not be): else read a copy.
  const format::AlignedBytes aligned(bytes);
  bytes = aligned.view();
  if (bytes.size() < 8 ||
      !flatbuffers::BufferHasIdentifier(bytes.data(), bc::ModuleIdentifier())) {
    return bad("not a module file (missing identifier PVMB)");
  }
  flatbuffers::Verifier verifier(reinterpret_cast<const uint8_t*>(bytes.data()),
                                 bytes.size(), 128, 10'000'000);
  if (!bc::VerifyModuleBuffer(verifier)) {
    return bad("corrupted or truncated (FlatBuffers verification failed)");
  }
  if (absl::Status s =
          format::CheckAlignment(reinterpret_cast<const uint8_t*>(bytes.data()),
                                 bc::ModuleBinarySchema::data());
      !s.ok()) {
    return bad(s.message());
  }
  const bc::Module* m = bc::GetModule(bytes.data());
  if (m->schema_version() != kModuleSchemaVersion) {
    return bad(absl::StrCat("module schema version ", m->schema_version(),
                            ", this runtime reads version ",
                            kModuleSchemaVersion, " (recompile the kernel)"));
  }
  auto kernel = std::make_shared<Kernel>();
  kernel->name = m->kernel_name() ? m->kernel_name()->str() : "";
  kernel->compiler_version =
      m->compiler_version() ? m->compiler_version()->str() : "";
  vm::Program& p = kernel->program;
  if (m->code() == nullptr || m->code()->size() % sizeof(vm::Instr) != 0) {
    return bad("code is not a whole number of instructions");
  }
  p.code.resize(m->code()->size() / sizeof(vm::Instr));
  if (!p.code.empty()) {
    std::memcpy(p.code.data(), m->code()->data(), m->code()->size());
  }
  if (m->layouts()) {
    for (const bc::LayoutDesc* l : *m->layouts()) {
      vm::LayoutDesc d;
      d.elem_size = l->elem_size();
      d.rank = l->rank();
      d.offset = l->offset();
      for (int i = 0; i < vm::kMaxRank; ++i) {
        d.shape[i] = l->shape()->Get(i);
        d.strides[i] = l->strides()->Get(i);
      }
      p.layouts.push_back(d);
    }
  }
  if (m->accesses()) {
    for (const bc::AccessDesc* a : *m->accesses()) {
      vm::AccessDesc d;
      if (a->base_kind() > 1) return bad("access descriptor with a bad base");
      d.base_kind = static_cast<vm::AccessBase>(a->base_kind());
      d.clamp = a->clamp();
      d.elem_size = a->elem_size();
      d.rank = a->rank();
      d.base = a->base();
      for (int i = 0; i < vm::kMaxRank; ++i) {
        const bc::AccessDim* x = a->dims()->Get(i);
        d.dims[i] = vm::AccessDim{x->extent(),   x->start(), x->start_slot(),
                                  x->squeezed(), x->size(),  x->stride(),
                                  x->size_slot(), x->padding()};
      }
      p.accesses.push_back(d);
    }
  }
  if (m->functions()) {
    for (const bc::Function* f : *m->functions()) {
      vm::Function fn;
      fn.name = f->name() ? f->name()->str() : "";
      fn.entry_pc = f->entry_pc();
      fn.param_slots = ToVector(f->param_slots());
      fn.result_slots = ToVector(f->result_slots());
      p.functions.push_back(std::move(fn));
    }
  }
  p.frame_size = m->frame_size();
  p.constants = ToVector(m->constants());
  p.ref_sizes = ToVector(m->ref_sizes());
  p.num_refs = static_cast<uint32_t>(p.ref_sizes.size());
  // Memory spaces first: the verifier keeps HBM and semaphore refs out of
  // reach of the kernel's own loads and stores.
  if (m->refs() != nullptr && m->refs()->size() == p.num_refs) {
    for (const bc::Ref* r : *m->refs()) {
      const auto space = static_cast<uint8_t>(r->memory_space());
      if (space > static_cast<uint8_t>(vm::MemorySpace::VMEM_SHARED)) {
        return bad("ref in an unknown memory space");
      }
      p.ref_spaces.push_back(static_cast<vm::MemorySpace>(space));
    }
  }
  p.debug_index = ToVector(m->debug_index());
  if (m->debug_locs()) {
    for (const bc::SourceLoc* l : *m->debug_locs()) {
      vm::SourceLoc loc;
      loc.primitive = l->primitive() ? l->primitive()->str() : "";
      loc.file = l->file() ? l->file()->str() : "";
      loc.line = l->line();
      loc.function = l->function() ? l->function()->str() : "";
      p.debug_locs.push_back(std::move(loc));
    }
  }
  if (p.constants.size() > p.frame_size) {
    return bad("constants do not fit in the frame");
  }
  int64_t frame_used = 0;
  if (absl::Status s = vm::Verify(p, &frame_used); !s.ok()) {
    return bad(absl::StrCat("bytecode verification failed: ", s.message()));
  }
  // The compiler sizes the frame to the values it places (rounded up to a
  // slot), so a frame far larger than anything its code touches is a
  // corrupted or crafted size: refused, not allocated.
  if (int64_t{p.frame_size} > 2 * frame_used + 65536) {
    return bad(absl::StrCat("the frame claims ", FormatBytes(p.frame_size),
                            " but the code uses only ", FormatBytes(frame_used),
                            " of it"));
  }

  // The pallas_call description.
  kernel->grid = ToVector(m->grid());
  absl::StatusOr<int> num_dynamic = format::CheckGrid(kernel->grid);
  if (!num_dynamic.ok()) return bad(num_dynamic.status().message());
  if (m->dimension_semantics()) {
    for (const flatbuffers::String* s : *m->dimension_semantics()) {
      kernel->dimension_semantics.push_back(s->str());
    }
  }
  kernel->num_dynamic_grid_bounds = m->num_dynamic_grid_bounds();
  kernel->num_scalar_prefetch = m->num_scalar_prefetch();
  if (m->in_types()) {
    for (size_t i = 0; i < m->in_types()->size(); ++i) {
      auto t = ReadType(m->in_types()->Get(i), absl::StrCat("operand ", i));
      if (!t.ok()) return bad(t.status().message());
      kernel->in_types.push_back(*t);
    }
  }
  if (m->out_types()) {
    for (size_t i = 0; i < m->out_types()->size(); ++i) {
      auto t = ReadType(m->out_types()->Get(i), absl::StrCat("result ", i));
      if (!t.ok()) return bad(t.status().message());
      kernel->out_types.push_back(*t);
    }
  }
  const int n_in = static_cast<int>(kernel->in_types.size());
  const int n_out = static_cast<int>(kernel->out_types.size());
  const int ndg = kernel->num_dynamic_grid_bounds;
  if (ndg != *num_dynamic || ndg > n_in) {
    return bad("bad number of dynamic grid bounds");
  }
  for (int i = 0; i < ndg; ++i) {
    if (kernel->in_types[i].dtype != vm::DType::S32 ||
        kernel->in_types[i].num_elements() != 1) {
      return bad(absl::StrCat("dynamic grid bound ", i, " is not one int32"));
    }
  }
  const int nsp = kernel->num_scalar_prefetch;
  if (nsp < 0 || nsp > n_in - ndg) {
    return bad("bad number of scalar prefetch operands");
  }
  if (m->refs() == nullptr || m->refs()->size() != p.num_refs) {
    return bad("ref table does not match the program's refs");
  }
  for (size_t i = 0; i < m->refs()->size(); ++i) {
    const bc::Ref* r = m->refs()->Get(i);
    RefSpec spec;
    if (static_cast<int>(r->kind()) > static_cast<int>(bc::RefKind::MAX)) {
      return bad("bad ref kind");
    }
    spec.kind = static_cast<RefKind>(r->kind());
    spec.operand = r->operand();
    spec.memory_space = p.ref_spaces[i];
    spec.origin = r->origin() ? r->origin()->str() : "";
    spec.padded_shape = ToVector(r->padded_shape());
    // HBM operands are all of their operand; semaphores are scratch or
    // scoped; nothing else lives in HBM but scratch and scoped buffers.
    const bool hbm_operand =
        spec.kind == RefKind::INPUT_HBM || spec.kind == RefKind::OUTPUT_HBM;
    if (hbm_operand != (spec.memory_space == vm::MemorySpace::HBM &&
                        spec.kind != RefKind::SCRATCH &&
                        spec.kind != RefKind::SCOPED)) {
      return bad(absl::StrCat("ref ", i, " has a kind its memory space does not allow"));
    }
    if (spec.memory_space == vm::MemorySpace::SEMAPHORE &&
        spec.kind != RefKind::SCRATCH && spec.kind != RefKind::SCOPED) {
      return bad(absl::StrCat("semaphore ref ", i, " is not scratch"));
    }
    auto t = ReadType(r->type(), absl::StrCat("ref ", i));
    if (!t.ok()) return bad(t.status().message());
    spec.type = *t;
    if (spec.type.bytes() != p.ref_sizes[i]) {
      return bad(absl::StrCat("ref ", i, " size does not match its type"));
    }
    if (spec.kind == RefKind::SCALAR_PREFETCH &&
        (spec.operand < ndg || spec.operand >= ndg + nsp ||
         kernel->in_types[spec.operand].bytes() != spec.type.bytes())) {
      return bad(absl::StrCat("scalar prefetch ref ", i, " is inconsistent"));
    }
    kernel->refs.push_back(spec);
  }
  // run_scoped makes its refs fresh: only scoped refs may be named (a
  // SCOPE_ENTER over an HBM operand would overwrite the caller's buffer).
  for (const vm::Instr& in : p.code) {
    if (vm::Info(in.op).format != vm::Format::SCOPE) continue;
    for (uint64_t r = in.a; r < uint64_t{in.a} + in.n; ++r) {
      if (kernel->refs[r].kind != RefKind::SCOPED) {
        return bad(absl::StrCat(vm::Info(in.op).name, " names ref ", r,
                                ", which is not a run_scoped buffer"));
      }
    }
  }
  if (m->block_mappings() == nullptr ||
      static_cast<int>(m->block_mappings()->size()) !=
          n_in - ndg - nsp + n_out) {
    return bad("expected one block mapping per input and output");
  }
  for (size_t i = 0; i < m->block_mappings()->size(); ++i) {
    const bc::BlockMapping* bm = m->block_mappings()->Get(i);
    BlockMappingSpec spec;
    spec.ref = bm->ref();
    spec.operand = bm->operand();
    spec.is_output = bm->is_output();
    spec.index_map = bm->index_map();
    auto t = ReadType(bm->array_type(), absl::StrCat("block mapping ", i));
    if (!t.ok()) return bad(t.status().message());
    spec.array = *t;
    if (spec.ref < 0 || spec.ref >= static_cast<int>(kernel->refs.size())) {
      return bad(absl::StrCat("block mapping ", i, " has a bad ref"));
    }
    const RefSpec& ref = kernel->refs[spec.ref];
    const bool ok_operand =
        spec.is_output
            ? (spec.operand >= 0 && spec.operand < n_out &&
               (ref.kind == RefKind::OUTPUT_BLOCK ||
                ref.kind == RefKind::OUTPUT_HBM))
            : (spec.operand >= ndg + nsp && spec.operand < n_in &&
               (ref.kind == RefKind::INPUT_BLOCK ||
                ref.kind == RefKind::INPUT_HBM));
    if (!ok_operand) {
      return bad(absl::StrCat("block mapping ", i, " has a bad operand"));
    }
    const ArrayType& array = spec.is_output ? kernel->out_types[spec.operand]
                                            : kernel->in_types[spec.operand];
    if (array.dtype != spec.array.dtype || array.shape != spec.array.shape ||
        ref.type.dtype != array.dtype) {
      return bad(absl::StrCat("block mapping ", i, " type mismatch"));
    }
    if (bm->block_dims() == nullptr ||
        bm->block_dims()->size() != array.shape.size()) {
      return bad(absl::StrCat("block mapping ", i, " has the wrong rank"));
    }
    std::vector<int64_t> view;
    for (const bc::BlockDim* d : *bm->block_dims()) {
      if (absl::Status s = format::CheckBlockDim(
              d->kind(), d->size(),
              absl::StrCat("block mapping ", i, ": block dimension ",
                           spec.dims.size()));
          !s.ok()) {
        return bad(s.message());
      }
      spec.dims.push_back(
          BlockDim{static_cast<BlockDimKind>(d->kind()), d->size()});
      if (d->kind() != bc::BlockDimKind::SQUEEZED) view.push_back(d->size());
    }
    if (view != ref.type.shape) {
      return bad(
          absl::StrCat("block mapping ", i, " does not match its ref's shape"));
    }
    if ((ref.kind == RefKind::INPUT_HBM || ref.kind == RefKind::OUTPUT_HBM) &&
        (view != array.shape || ref.operand != spec.operand)) {
      return bad(absl::StrCat("block mapping ", i,
                              " of an HBM ref is not its whole operand"));
    }
    if (spec.index_map < 0 ||
        spec.index_map >= static_cast<int>(p.functions.size())) {
      return bad(absl::StrCat("block mapping ", i, " has a bad index map"));
    }
    const vm::Function& f = p.functions[spec.index_map];
    if (f.param_slots.size() != kernel->grid.size() ||
        f.result_slots.size() != spec.dims.size()) {
      return bad(absl::StrCat("index map of block mapping ", i,
                              " has the wrong signature"));
    }
    kernel->block_mappings.push_back(std::move(spec));
  }
  if (m->input_output_aliases()) {
    auto same_type = [&](int in, int out) {
      return kernel->in_types[in].dtype == kernel->out_types[out].dtype &&
             kernel->in_types[in].shape == kernel->out_types[out].shape;
    };
    for (const bc::Alias* a : *m->input_output_aliases()) {
      if (absl::Status s = format::CheckAlias(
              static_cast<int>(kernel->aliases.size()), a->input(), a->output(),
              n_in, n_out, same_type);
          !s.ok()) {
        return bad(s.message());
      }
      kernel->aliases.emplace_back(a->input(), a->output());
    }
  }
  if (p.functions.empty()) return bad("module has no kernel function");

  // One core's workspace (runtime/grid_driver.cc allocates it on first
  // use): every buffer, and their total, must fit in the memory limit.
  auto rounded = [](int64_t bytes) { return (bytes + 63) / 64 * 64; };
  int64_t workspace = rounded(p.frame_size);
  if (absl::Status s = CheckMemory("the VM frame", p.frame_size, memory_limit);
      !s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(origin, ": ", s.message()));
  }
  for (size_t i = 0; i < kernel->refs.size(); ++i) {
    const RefSpec& ref = kernel->refs[i];
    // The caller's buffers, not the workspace's.
    if (ref.kind == RefKind::INPUT_HBM || ref.kind == RefKind::OUTPUT_HBM) {
      continue;
    }
    if (absl::Status s = CheckMemory(
            absl::StrCat("ref ", i, " (", RefKindName(ref.kind),
                         " ", ref.type.ToString(), ")"),
            ref.type.bytes(), memory_limit);
        !s.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat(origin, ": ", s.message()));
    }
    workspace = CheckedAdd(workspace, rounded(ref.type.bytes())).value_or(-1);
    if (workspace < 0) break;
  }
  if (absl::Status s = CheckMemory(
          "one simulated core's workspace (the frame and every ref)", workspace,
          memory_limit);
      !s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(origin, ": ", s.message()));
  }
  kernel->core_workspace_bytes = workspace;
  for (const vm::Instr& in : kernel->program.code) {
    kernel->signals_other_cores |=
        (in.op == vm::Op::SEM_SIGNAL || in.op == vm::Op::DMA_START) &&
        in.aux != 0;
  }
  return std::shared_ptr<const Kernel>(std::move(kernel));
}

std::string InstructionSource(const vm::Program& p, uint32_t pc) {
  if (pc >= p.debug_index.size() || p.debug_index[pc] >= p.debug_locs.size()) {
    return absl::StrCat("pc ", pc);
  }
  const vm::SourceLoc& loc = p.debug_locs[p.debug_index[pc]];
  if (loc.file.empty()) return loc.primitive;
  return absl::StrCat(loc.primitive, " (", loc.file, ":", loc.line, ")");
}

const char* RefKindName(RefKind kind) {
  switch (kind) {
    case RefKind::SCALAR_PREFETCH:
      return "scalar prefetch";
    case RefKind::INPUT_BLOCK:
      return "input block";
    case RefKind::OUTPUT_BLOCK:
      return "output block";
    case RefKind::SCRATCH:
      return "scratch";
    case RefKind::INPUT_HBM:
      return "HBM input";
    case RefKind::OUTPUT_HBM:
      return "HBM output";
    case RefKind::SCOPED:
      return "run_scoped buffer";
  }
  return "ref";
}

}  // namespace pallasvm::runtime
