#include "compiler/compiler.h"

#include <cstring>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bytecode_generated.h"
#include "compiler/lowering.h"
#include "compiler/program_builder.h"
#include "format/module_limits.h"
#include "vm/interpreter.h"

namespace pallasvm::compiler {
namespace {

namespace bc = ::pallasvm::bytecode;
namespace ic = ::pallasvm::interchange;

// Block dimension kinds are copied from the interchange into the module by
// number, and layouts' arrays hold format::kMaxRank dimensions.
static_assert(static_cast<int>(ic::BlockDimKind::BLOCKED) ==
                  static_cast<int>(bc::BlockDimKind::BLOCKED) &&
              static_cast<int>(ic::BlockDimKind::SQUEEZED) ==
                  static_cast<int>(bc::BlockDimKind::SQUEEZED) &&
              static_cast<int>(ic::BlockDimKind::ELEMENT) ==
                  static_cast<int>(bc::BlockDimKind::ELEMENT));
static_assert(format::kMaxRank == vm::kMaxRank);

struct Shaped {
  vm::DType dtype;
  Shape shape;
};

absl::StatusOr<Shaped> FromType(const ic::Type* t, absl::string_view what,
                                int64_t memory_limit) {
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no type"));
  }
  absl::StatusOr<vm::DType> d = ToVmDType(t->dtype());
  if (!d.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", d.status().message()));
  }
  Shaped s{*d, {}};
  if (t->shape()) s.shape.assign(t->shape()->begin(), t->shape()->end());
  if (absl::Status st = CheckShape(s.shape, s.dtype, memory_limit, what);
      !st.ok()) {
    return st;
  }
  return s;
}

flatbuffers::Offset<bc::ArrayType> WriteType(flatbuffers::FlatBufferBuilder& fb,
                                             const Shaped& s) {
  return bc::CreateArrayType(fb, static_cast<bc::DType>(s.dtype),
                             fb.CreateVector(s.shape));
}

class KernelCompiler {
 public:
  KernelCompiler(const ic::Kernel& k, absl::string_view source_hash,
                 int64_t memory_limit)
      : k_(k), source_hash_(source_hash), lowerer_(builder_) {
    lowerer_.set_memory_limit(memory_limit);
  }

  absl::StatusOr<std::string> Run();

 private:
  absl::Status Fail(absl::Status s) const {
    return absl::Status(s.code(), absl::StrCat("kernel '", name_, "': ",
                                               s.message()));
  }
  absl::Status CheckSignature();
  absl::Status LowerBody();
  absl::Status LowerIndexMap(int mapping);
  std::string Write(const vm::Program& program);

  const ic::Kernel& k_;
  std::string source_hash_;
  std::string name_;
  ProgramBuilder builder_;
  Lowerer lowerer_;
  std::vector<int64_t> grid_;
  // Operands: ndg_ dynamic grid bounds, nsp_ scalar prefetch, n_in_ inputs.
  int ndg_ = 0, nsp_ = 0, n_in_ = 0, n_out_ = 0, n_scratch_ = 0;
  std::vector<Shaped> in_types_, out_types_;
  std::vector<Value> refs_;
  std::vector<bc::RefKind> ref_kinds_;
  std::vector<int> ref_operands_;
  std::vector<int> index_map_functions_;
};

absl::Status KernelCompiler::CheckSignature() {
  if (k_.grid()) grid_.assign(k_.grid()->begin(), k_.grid()->end());
  // The runtime's loader checks the grid by the same function.
  absl::StatusOr<int> num_dynamic = format::CheckGrid(grid_);
  if (!num_dynamic.ok()) return num_dynamic.status();
  ndg_ = k_.num_dynamic_grid_bounds();
  if (ndg_ != *num_dynamic) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the grid (", absl::StrJoin(grid_, ", "), ") has ", *num_dynamic,
        " dynamic dimensions but num_dynamic_grid_bounds is ", ndg_));
  }
  nsp_ = k_.num_scalar_prefetch();
  const int num_in_types = k_.in_types() ? k_.in_types()->size() : 0;
  n_out_ = k_.out_types() ? k_.out_types()->size() : 0;
  n_in_ = num_in_types - ndg_ - nsp_;
  if (nsp_ < 0 || n_in_ < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        ndg_, " dynamic grid bounds and ", nsp_,
        " scalar prefetch operands exceed the number of operands ",
        num_in_types));
  }
  for (int i = 0; i < num_in_types; ++i) {
    absl::StatusOr<Shaped> t =
        FromType(k_.in_types()->Get(i), absl::StrCat("operand ", i),
                 lowerer_.memory_limit());
    if (!t.ok()) return t.status();
    if (i < ndg_ && (t->dtype != vm::DType::S32 || NumElements(t->shape) != 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "operand ", i, " is a dynamic grid bound and must be one int32, not ",
          vm::Name(t->dtype), ShapeString(t->shape)));
    }
    in_types_.push_back(*t);
  }
  for (int i = 0; i < n_out_; ++i) {
    absl::StatusOr<Shaped> t =
        FromType(k_.out_types()->Get(i), absl::StrCat("result ", i),
                 lowerer_.memory_limit());
    if (!t.ok()) return t.status();
    out_types_.push_back(*t);
  }
  const int num_mappings = k_.block_mappings() ? k_.block_mappings()->size() : 0;
  if (num_mappings != n_in_ + n_out_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected one block mapping per input and output (", n_in_ + n_out_,
        "), got ", num_mappings));
  }
  const ic::Jaxpr& jaxpr = *k_.jaxpr();
  const int num_invars = jaxpr.invars() ? jaxpr.invars()->size() : 0;
  n_scratch_ = num_invars - nsp_ - n_in_ - n_out_;
  if (n_scratch_ < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel jaxpr takes ", num_invars, " refs, fewer than its ",
        nsp_ + n_in_ + n_out_, " operands and results"));
  }
  int64_t refs_bytes = 0;
  for (int i = 0; i < num_invars; ++i) {
    const ic::Var* var = jaxpr.invars()->Get(i);
    std::string what = absl::StrCat("kernel argument ", i);
    absl::StatusOr<Shaped> t =
        FromType(var->type(), what, lowerer_.memory_limit());
    if (!t.ok()) return t.status();
    // An operand's memory space is its block spec's, as interpret mode
    // takes it; scratch's is its own.
    const bool is_operand = i >= nsp_ && i < nsp_ + n_in_ + n_out_;
    const ic::BlockMapping* mapping =
        is_operand ? k_.block_mappings()->Get(i - nsp_) : nullptr;
    const ic::MemorySpace space =
        mapping ? mapping->memory_space() : var->type()->memory_space();
    bc::RefKind kind;
    int operand = -1;
    std::string origin =
        mapping && mapping->origin() ? mapping->origin()->str() : "";
    if (i < nsp_) {
      kind = bc::RefKind::SCALAR_PREFETCH;
      operand = ndg_ + i;
      origin = absl::StrCat("scalar prefetch operand ", i);
      if (in_types_[operand].dtype != t->dtype ||
          in_types_[operand].shape != t->shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": scalar prefetch ref does not match operand ", operand));
      }
    } else if (i < nsp_ + n_in_) {
      kind = bc::RefKind::INPUT_BLOCK;
      operand = ndg_ + i;
    } else if (i < nsp_ + n_in_ + n_out_) {
      kind = bc::RefKind::OUTPUT_BLOCK;
      operand = i - nsp_ - n_in_;
    } else {
      kind = bc::RefKind::SCRATCH;
      origin = absl::StrCat("scratch_shapes[", i - nsp_ - n_in_ - n_out_, "]");
    }
    vm::MemorySpace vspace;
    switch (space) {
      case ic::MemorySpace::DEFAULT:
      case ic::MemorySpace::VMEM:
        vspace = vm::MemorySpace::VMEM;
        break;
      case ic::MemorySpace::SMEM:
        vspace = vm::MemorySpace::SMEM;
        break;
      case ic::MemorySpace::VMEM_SHARED:
        if (kind != bc::RefKind::SCRATCH) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": a pallas_call operand cannot be in VMEM_SHARED"));
        }
        vspace = vm::MemorySpace::VMEM_SHARED;
        break;
      case ic::MemorySpace::ANY:
      case ic::MemorySpace::HBM:
        // The whole operand, in place: reached only through DMAs.
        vspace = vm::MemorySpace::HBM;
        if (kind == bc::RefKind::INPUT_BLOCK) kind = bc::RefKind::INPUT_HBM;
        if (kind == bc::RefKind::OUTPUT_BLOCK) kind = bc::RefKind::OUTPUT_HBM;
        break;
      case ic::MemorySpace::SEMAPHORE:
        if (kind != bc::RefKind::SCRATCH || t->dtype != vm::DType::S32) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": semaphores must be scratch (scratch_shapes)"));
        }
        vspace = vm::MemorySpace::SEMAPHORE;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(what, " is not a ref"));
    }
    if (i < nsp_) vspace = vm::MemorySpace::SMEM;
    Value ref;
    ref.dtype = t->dtype;
    ref.shape = t->shape;
    ref.ref = i;
    refs_.push_back(ref);
    ref_kinds_.push_back(kind);
    ref_operands_.push_back(operand);
    ProgramBuilder::RefInfo info;
    info.dtype = t->dtype;
    info.shape = t->shape;
    info.space = vspace;
    info.origin = origin;
    info.bytes = ref.bytes();
    absl::StatusOr<Shape> padded = PaddedShape(*var->type(), t->shape, what);
    if (!padded.ok()) return padded.status();
    info.padded_shape = *std::move(padded);
    builder_.AddRef(std::move(info));
    // The refs a core allocates live in one workspace: their sum is
    // bounded too. HBM operands are the caller's buffers.
    if (vspace == vm::MemorySpace::HBM && kind != bc::RefKind::SCRATCH) continue;
    std::optional<int64_t> total = CheckedAdd(refs_bytes, ref.bytes());
    if (!total || *total > lowerer_.memory_limit()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the kernel's refs need more than ", vm::FormatBytes(lowerer_.memory_limit()),
          " (pallasvm's memory limit) with ", what, " (", TypeString(ref),
          ", ", vm::FormatBytes(ref.bytes()), ")"));
    }
    refs_bytes = *total;
  }
  // Block mappings against the arrays and the kernel's refs.
  for (int m = 0; m < num_mappings; ++m) {
    const ic::BlockMapping* bm = k_.block_mappings()->Get(m);
    const bool is_output = m >= n_in_;
    const Shaped& array =
        is_output ? out_types_[m - n_in_] : in_types_[ndg_ + nsp_ + m];
    std::string what = is_output ? absl::StrCat("output ", m - n_in_)
                                 : absl::StrCat("input ", ndg_ + nsp_ + m);
    const int nd = bm->block_dims() ? bm->block_dims()->size() : 0;
    if (nd != static_cast<int>(array.shape.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": block shape has ", nd, " dimensions, the array ",
          ShapeString(array.shape), " has ", array.shape.size()));
    }
    Shape kernel_view;
    for (int d = 0; d < nd; ++d) {
      const ic::BlockDim* bd = bm->block_dims()->Get(d);
      // As the runtime's loader checks the module's (same numbering).
      if (absl::Status s = format::CheckBlockDim(
              static_cast<bc::BlockDimKind>(bd->kind()), bd->size(),
              absl::StrCat(what, ": block dimension ", d));
          !s.ok()) {
        return s;
      }
      if (bd->kind() != ic::BlockDimKind::SQUEEZED) {
        kernel_view.push_back(bd->size());
      }
    }
    const Value& ref = refs_[nsp_ + m];
    if (ref.shape != kernel_view || ref.dtype != array.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": the kernel's ref is ", TypeString(ref),
          " but the block spec gives ", vm::Name(array.dtype),
          ShapeString(kernel_view)));
    }
    if (bm->index_map() == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": block mapping has no index map"));
    }
  }
  if (k_.input_output_aliases()) {
    auto same_type = [&](int in, int out) {
      return in_types_[in].dtype == out_types_[out].dtype &&
             in_types_[in].shape == out_types_[out].shape;
    };
    int alias = 0;
    for (const ic::Alias* a : *k_.input_output_aliases()) {
      // As the runtime's loader checks the module's.
      if (absl::Status s = format::CheckAlias(alias++, a->input(), a->output(),
                                              num_in_types, n_out_, same_type);
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status KernelCompiler::LowerBody() {
  vm::Function f;
  f.name = name_;
  f.entry_pc = builder_.pc();
  builder_.AddFunction(f);
  absl::StatusOr<std::vector<Value>> outs =
      lowerer_.LowerJaxpr(*k_.jaxpr(), refs_);
  if (!outs.ok()) return outs.status();
  if (!outs->empty()) {
    return absl::InvalidArgumentError("kernel jaxpr returns values");
  }
  builder_.Emit({vm::Op::RETURN, 0, 0, 0, 0, 0, 0});
  return absl::OkStatus();
}

absl::Status KernelCompiler::LowerIndexMap(int m) {
  const ic::BlockMapping* bm = k_.block_mappings()->Get(m);
  vm::SourceLoc loc;
  loc.primitive = "index_map";
  loc.file = bm->origin() ? bm->origin()->str() : "";
  builder_.SetLocation(loc);
  vm::Function f;
  f.name = absl::StrCat("index_map[", m, "]",
                        bm->origin() ? absl::StrCat(" ", bm->origin()->str())
                                     : "");
  f.entry_pc = builder_.pc();
  std::vector<Value> params;
  for (size_t g = 0; g < grid_.size(); ++g) {
    Value v = lowerer_.NewValue(vm::DType::S32, {});
    f.param_slots.push_back(v.slot);
    params.push_back(v);
  }
  for (int i = 0; i < nsp_; ++i) params.push_back(refs_[i]);
  const ic::Jaxpr& jaxpr = *bm->index_map();
  const size_t want = jaxpr.invars() ? jaxpr.invars()->size() : 0;
  if (want != params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.name, " takes ", want, " arguments; expected ", grid_.size(),
        " grid indices and ", nsp_, " scalar prefetch refs"));
  }
  absl::StatusOr<std::vector<Value>> outs = lowerer_.LowerJaxpr(jaxpr, params);
  if (!outs.ok()) {
    return absl::Status(outs.status().code(),
                        absl::StrCat(f.name, ": ", outs.status().message()));
  }
  const size_t nd = bm->block_dims() ? bm->block_dims()->size() : 0;
  if (outs->size() != nd) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.name, " returns ", outs->size(), " indices for a ", nd,
        "-dimensional block"));
  }
  for (const Value& v : *outs) {
    if (v.is_ref() || v.count() != 1 || vm::Info(v.dtype).is_float) {
      return absl::InvalidArgumentError(absl::StrCat(
          f.name, " must return integer scalars, returns ", TypeString(v)));
    }
    f.result_slots.push_back(lowerer_.Convert(v, vm::DType::S32).slot);
  }
  builder_.Emit({vm::Op::RETURN, 0, 0, 0, 0, 0, 0});
  index_map_functions_.push_back(builder_.AddFunction(std::move(f)));
  return absl::OkStatus();
}

std::string KernelCompiler::Write(const vm::Program& p) {
  flatbuffers::FlatBufferBuilder fb(1 << 16);
  std::vector<uint8_t> code(p.code.size() * sizeof(vm::Instr));
  std::memcpy(code.data(), p.code.data(), code.size());
  std::vector<bc::LayoutDesc> layouts;
  for (const vm::LayoutDesc& l : p.layouts) {
    bc::LayoutDesc d(l.elem_size, l.rank, l.offset,
                     flatbuffers::span<const int64_t, 8>(l.shape),
                     flatbuffers::span<const int64_t, 8>(l.strides));
    layouts.push_back(d);
  }
  std::vector<bc::AccessDesc> accesses;
  for (const vm::AccessDesc& a : p.accesses) {
    std::array<bc::AccessDim, 8> dims;
    for (int i = 0; i < 8; ++i) {
      const vm::AccessDim& d = a.dims[i];
      dims[i] = bc::AccessDim(d.extent, d.start, d.start_slot, d.squeezed,
                              d.size, d.stride, d.size_slot, d.padding);
    }
    accesses.push_back(bc::AccessDesc(
        static_cast<uint8_t>(a.base_kind), a.clamp, a.elem_size, a.rank,
        a.base, flatbuffers::span<const bc::AccessDim, 8>(dims)));
  }
  std::vector<flatbuffers::Offset<bc::Function>> functions;
  for (const vm::Function& f : p.functions) {
    functions.push_back(bc::CreateFunction(
        fb, fb.CreateString(f.name), f.entry_pc,
        fb.CreateVector(f.param_slots), fb.CreateVector(f.result_slots)));
  }
  std::vector<flatbuffers::Offset<bc::SourceLoc>> locs;
  for (const vm::SourceLoc& l : p.debug_locs) {
    locs.push_back(bc::CreateSourceLoc(fb, fb.CreateString(l.primitive),
                                       fb.CreateString(l.file), l.line,
                                       fb.CreateString(l.function)));
  }
  std::vector<flatbuffers::Offset<flatbuffers::String>> semantics;
  if (k_.dimension_semantics()) {
    for (const flatbuffers::String* s : *k_.dimension_semantics()) {
      semantics.push_back(fb.CreateString(s->str()));
    }
  }
  std::vector<flatbuffers::Offset<bc::ArrayType>> in_types, out_types;
  for (const Shaped& s : in_types_) in_types.push_back(WriteType(fb, s));
  for (const Shaped& s : out_types_) out_types.push_back(WriteType(fb, s));
  std::vector<flatbuffers::Offset<bc::Ref>> refs;
  const std::vector<ProgramBuilder::RefInfo>& infos = builder_.refs();
  for (size_t i = 0; i < infos.size(); ++i) {
    const ProgramBuilder::RefInfo& r = infos[i];
    const bool kernel_ref = i < refs_.size();
    refs.push_back(bc::CreateRef(
        fb, kernel_ref ? ref_kinds_[i] : bc::RefKind::SCOPED,
        kernel_ref ? ref_operands_[i] : -1,
        static_cast<bc::MemorySpace>(r.space), WriteType(fb, Shaped{r.dtype, r.shape}),
        fb.CreateString(r.origin),
        r.padded_shape.empty() ? 0 : fb.CreateVector(r.padded_shape)));
  }
  std::vector<flatbuffers::Offset<bc::BlockMapping>> mappings;
  for (int m = 0; m < n_in_ + n_out_; ++m) {
    const ic::BlockMapping* bm = k_.block_mappings()->Get(m);
    const bool is_output = m >= n_in_;
    std::vector<flatbuffers::Offset<bc::BlockDim>> dims;
    for (const ic::BlockDim* d : *bm->block_dims()) {
      dims.push_back(bc::CreateBlockDim(
          fb, static_cast<bc::BlockDimKind>(d->kind()), d->size()));
    }
    const Shaped& array =
        is_output ? out_types_[m - n_in_] : in_types_[ndg_ + nsp_ + m];
    mappings.push_back(bc::CreateBlockMapping(
        fb, nsp_ + m, is_output ? m - n_in_ : ndg_ + nsp_ + m, is_output,
        WriteType(fb, array), fb.CreateVector(dims),
        index_map_functions_[m]));
  }
  std::vector<flatbuffers::Offset<bc::Alias>> aliases;
  if (k_.input_output_aliases()) {
    for (const ic::Alias* a : *k_.input_output_aliases()) {
      aliases.push_back(bc::CreateAlias(fb, a->input(), a->output()));
    }
  }
  auto module = bc::CreateModule(
      fb, kModuleSchemaVersion, fb.CreateString(std::string(kCompilerVersion)),
      fb.CreateString(name_), fb.CreateString(source_hash_),
      fb.CreateVector(code),
      fb.CreateVectorOfStructs(layouts), fb.CreateVectorOfStructs(accesses),
      fb.CreateVector(functions), p.frame_size, fb.CreateVector(p.constants),
      fb.CreateVector(p.ref_sizes), fb.CreateVector(p.debug_index),
      fb.CreateVector(locs), fb.CreateVector(grid_),
      fb.CreateVector(semantics), nsp_, fb.CreateVector(in_types),
      fb.CreateVector(out_types), fb.CreateVector(refs),
      fb.CreateVector(mappings), fb.CreateVector(aliases), ndg_);
  bc::FinishModuleBuffer(fb, module);
  return std::string(reinterpret_cast<const char*>(fb.GetBufferPointer()),
                     fb.GetSize());
}

absl::StatusOr<std::string> KernelCompiler::Run() {
  name_ = k_.name() ? k_.name()->str() : "kernel";
  if (absl::Status s = CheckSignature(); !s.ok()) return Fail(s);
  lowerer_.set_skip_floating_point_ops(k_.skip_floating_point_ops());
  // In the body and the index maps alike: interpret mode's XLA computes both.
  lowerer_.set_contract_fma(k_.contract_fma());
  lowerer_.set_contract_fma_f16(!k_.fma_keeps_f16_rounding());
  lowerer_.set_allow_hbm_in_run_scoped(k_.allow_hbm_allocation_in_run_scoped());
  absl::Status body = LowerBody();
  lowerer_.set_skip_floating_point_ops(false);  // not in index maps
  if (!body.ok()) return Fail(body);
  for (int m = 0; m < n_in_ + n_out_; ++m) {
    if (absl::Status s = LowerIndexMap(m); !s.ok()) return Fail(s);
  }
  if (absl::Status s = builder_.CheckFrameSize(); !s.ok()) return Fail(s);
  vm::Program program = builder_.Finish();
  if (absl::Status s = vm::Verify(program); !s.ok()) {
    return Fail(absl::InternalError(absl::StrCat(
        "compiler bug: generated code fails verification: ", s.message())));
  }
  return Write(program);
}

}  // namespace

absl::StatusOr<std::string> CompileKernel(const Interchange& interchange,
                                          absl::string_view source_hash,
                                          const CompileOptions& options) {
  KernelCompiler compiler(*interchange.kernel, source_hash,
                          options.memory_limit > 0 ? options.memory_limit
                                                   : DefaultMemoryLimit());
  return compiler.Run();
}

absl::StatusOr<std::string> CompileInterchange(absl::string_view data,
                                               absl::string_view origin,
                                               absl::string_view source_hash,
                                               const CompileOptions& options) {
  absl::StatusOr<Interchange> ic = ParseInterchange(data, origin);
  if (!ic.ok()) return ic.status();
  return CompileKernel(*ic, source_hash, options);
}

std::string ContentHash(absl::string_view bytes) {
  // Two independent 64-bit FNV-1a lanes: a cache key, not a security
  // boundary (cached modules are verified on load like any other file).
  uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
  for (unsigned char c : bytes) {
    h1 = (h1 ^ c) * 0x100000001b3ull;
    h2 = (h2 ^ (c + 0x9e)) * 0x100000001b3ull;
    h2 ^= h2 >> 29;
  }
  return absl::StrFormat("%016x%016x", h1, h2);
}

}  // namespace pallasvm::compiler
