// The simulated machine's primitives: DMAs (dma_start, dma_wait),
// semaphores (semaphore_signal, semaphore_wait, semaphore_read) and
// run_scoped allocations. Each lowers to one instruction whose operands are
// access descriptors (vm/opcodes.def, "the simulated machine"); the VM
// resolves them and the runtime carries the operation out
// (runtime/memory_model.h). A signal or DMA may name another core of the
// device (core_index, device_id={"core": c}) or another device (device_id,
// as the exporter's device_terms).
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "compiler/ref_access.h"
#include "vm/debug_format.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

// The ref of slot `<slot>_operand`, which must be present.
absl::StatusOr<Value> SlotRef(Lowerer& l, const Lowerer::Eqn& e,
                              absl::string_view slot) {
  absl::StatusOr<const Value*> v = NamedOperand(l, e, slot);
  if (!v.ok()) return v.status();
  if (*v == nullptr || !(*v)->is_ref()) {
    return l.Error(absl::StrCat("the '", slot, "' operand is not a ref"));
  }
  return **v;
}

// One semaphore: the ref of slot `<slot>_operand` indexed by its
// `<slot>_indexers` (or `indexers_param`) down to one element.
absl::StatusOr<uint32_t> SemaphoreAccess(Lowerer& l, const Lowerer::Eqn& e,
                                         absl::string_view slot,
                                         absl::string_view indexers_param) {
  absl::StatusOr<Value> sem = SlotRef(l, e, slot);
  if (!sem.ok()) return sem.status();
  if (l.RefSpace(*sem) != vm::MemorySpace::SEMAPHORE) {
    return l.Error(absl::StrCat("the '", slot, "' operand is ",
                                TypeString(*sem), ", not a semaphore"));
  }
  AccessOptions options;
  options.param = indexers_param;
  absl::StatusOr<RefAccess> acc = BuildAccess(l, e, *sem, "read", options);
  if (!acc.ok()) return acc.status();
  if (NumElements(acc->shape) != 1) {
    return l.Error(absl::StrCat(
        "the '", slot, "' operand names ", ShapeString(acc->shape),
        " semaphores; index the semaphore array down to one (sem.at[i])"));
  }
  return acc->access;
}

// The int32 scalar operand of slot `<slot>_operand`, in a frame slot.
absl::StatusOr<uint32_t> ScalarSlot(Lowerer& l, const Lowerer::Eqn& e,
                                    absl::string_view slot) {
  absl::StatusOr<const Value*> v = NamedOperand(l, e, slot);
  if (!v.ok()) return v.status();
  if (*v == nullptr || (*v)->is_ref() || (*v)->count() != 1 ||
      vm::Info((*v)->dtype).is_float) {
    return l.Error(absl::StrCat("the '", slot, "' operand must be an integer scalar"));
  }
  return l.Convert(**v, DType::S32).slot;
}

// The logical id of the device a signal or DMA names, in a frame slot: the
// sum of term_i * stride_i over params `device_terms` and `device_strides`
// (the exporter's _targets), a term being operand i, or, as -(a + 1), this
// device's coordinate on mesh axis PROGRAM_ID a. -1 if it names no device.
absl::StatusOr<int64_t> DeviceSlot(Lowerer& l, const Lowerer::Eqn& e) {
  const interchange::Param* terms = e.Param("device_terms");
  const interchange::Param* strides = e.Param("device_strides");
  if (terms == nullptr) return -1;
  if (strides == nullptr || !terms->ints() || !strides->ints() ||
      terms->ints()->size() != strides->ints()->size() ||
      terms->ints()->size() == 0) {
    return l.Error("device_terms and device_strides do not match");
  }
  Value sum = l.ConstantScalar(DType::S32, 0);
  for (size_t i = 0; i < terms->ints()->size(); ++i) {
    const int64_t t = terms->ints()->Get(i);
    Value term;
    if (t >= 0) {
      if (t >= static_cast<int64_t>(e.in.size()) || e.in[t].is_ref() ||
          e.in[t].count() != 1 || vm::Info(e.in[t].dtype).is_float) {
        return l.Error("a device_id coordinate must be an integer scalar");
      }
      term = l.Convert(e.in[t], DType::S32);
    } else {
      const int64_t axis = -t - 1;
      if (axis >= vm::kMaxRank) return l.Error("bad mesh axis");
      term = l.NewValue(DType::S32, {});
      l.builder().Emit({vm::Op::PROGRAM_ID, 0, term.slot,
                        static_cast<uint32_t>(axis), 0, 0, 1});
    }
    absl::StatusOr<Value> scaled =
        l.Binary("MUL", term,
                 l.ConstantScalar(DType::S32, strides->ints()->Get(i)),
                 DType::S32, {});
    if (!scaled.ok()) return scaled.status();
    absl::StatusOr<Value> next = l.Binary("ADD", sum, *scaled, DType::S32, {});
    if (!next.ok()) return next.status();
    sum = *next;
  }
  return sum.slot;
}

// An absent slot, or what pallasvm cannot do yet.
absl::Status RequireAbsent(Lowerer& l, const Lowerer::Eqn& e,
                           absl::string_view slot, absl::string_view feature) {
  absl::StatusOr<const Value*> v = NamedOperand(l, e, slot);
  if (!v.ok()) return v.status();
  if (*v != nullptr) {
    return l.Unsupported(absl::StrCat(feature, " is not supported yet"));
  }
  return absl::OkStatus();
}

// dma_start: the regions of src and dst (both transformed by their
// indexers) must have one shape and dtype. A source region may leave its
// ref at run time (out_of_bounds_reads="uninitialized" fills the rest), so
// its bounds are checked when it runs.
absl::StatusOr<std::vector<Value>> LowerDmaStart(Lowerer& l,
                                                 const Lowerer::Eqn& e) {
  if (const interchange::Param* add = e.Param("add"); add && add->b()) {
    return l.Unsupported("a DMA with add=True is not supported yet");
  }
  absl::StatusOr<Value> src = SlotRef(l, e, "src");
  if (!src.ok()) return src.status();
  absl::StatusOr<Value> dst = SlotRef(l, e, "dst");
  if (!dst.ok()) return dst.status();
  for (const Value* ref : {&*src, &*dst}) {
    if (l.RefSpace(*ref) == vm::MemorySpace::SEMAPHORE) {
      return l.Error("a DMA cannot copy semaphores");
    }
  }
  AccessOptions src_options;
  src_options.param = "src_indexers";
  src_options.runtime_bounds = true;
  src_options.dynamic_sizes = true;
  absl::StatusOr<RefAccess> from = BuildAccess(l, e, *src, "read", src_options);
  if (!from.ok()) return from.status();
  AccessOptions dst_options;
  dst_options.param = "dst_indexers";
  dst_options.dynamic_sizes = true;
  absl::StatusOr<RefAccess> to = BuildAccess(l, e, *dst, "write", dst_options);
  if (!to.ok()) return to.status();
  // A dynamic size matches anything here; the VM compares the regions'
  // sizes when the DMA starts.
  bool same_shape = from->shape.size() == to->shape.size();
  for (size_t d = 0; same_shape && d < from->shape.size(); ++d) {
    same_shape = from->shape[d] == to->shape[d] ||
                 from->shape[d] == kDynamicSize || to->shape[d] == kDynamicSize;
  }
  if (from->pack > 1 || to->pack > 1) {
    return l.Unsupported("a DMA of a ref bitcast to a wider dtype");
  }
  if (from->dtype != to->dtype || !same_shape) {
    return l.Error(absl::StrCat(
        "a DMA copies a ", vm::Name(from->dtype), ShapeString(from->shape),
        " region into a ", vm::Name(to->dtype), ShapeString(to->shape),
        " one; source and destination must have one shape and dtype"));
  }
  absl::StatusOr<uint32_t> sem =
      SemaphoreAccess(l, e, "dst_sem", "dst_sem_indexers");
  if (!sem.ok()) return sem.status();
  uint32_t send = vm::kNoAccess;
  absl::StatusOr<const Value*> src_sem = NamedOperand(l, e, "src_sem");
  if (!src_sem.ok()) return src_sem.status();
  if (*src_sem != nullptr) {
    absl::StatusOr<uint32_t> s =
        SemaphoreAccess(l, e, "src_sem", "src_sem_indexers");
    if (!s.ok()) return s.status();
    send = *s;
  }
  // dst_core: the destination and its semaphore are that core's
  // (make_async_remote_copy with device_id={"core": c}).
  absl::StatusOr<const Value*> core = NamedOperand(l, e, "dst_core");
  if (!core.ok()) return core.status();
  absl::StatusOr<int64_t> device = DeviceSlot(l, e);
  if (!device.ok()) return device.status();
  if (*device >= 0) {
    if (*core != nullptr) {
      return l.Unsupported(
          "a DMA to a given core of another device (device_id with both a "
          "mesh axis and the core axis) is not supported yet");
    }
    l.builder().Emit({vm::Op::DMA_START, 2, from->access, to->access, send,
                      *sem, static_cast<uint32_t>(*device)});
    return std::vector<Value>{};
  }
  if (*core != nullptr) {
    absl::StatusOr<uint32_t> slot = ScalarSlot(l, e, "dst_core");
    if (!slot.ok()) return slot.status();
    l.builder().Emit(
        {vm::Op::DMA_START, 1, from->access, to->access, send, *sem, *slot});
    return std::vector<Value>{};
  }
  l.builder().Emit({vm::Op::DMA_START, 0, from->access, to->access, send, *sem, 0});
  return std::vector<Value>{};
}

// dma_wait: waits on the "dst_sem" slot for as many bytes as the "src"
// region holds, as interpret mode does (wait_send swaps src and dst, so
// this covers both directions).
absl::StatusOr<std::vector<Value>> LowerDmaWait(Lowerer& l,
                                                const Lowerer::Eqn& e) {
  // A wait is on this core's semaphore whatever device or core the DMA
  // names (its device_id says where the copy went, not where it waits).
  absl::StatusOr<Value> src = SlotRef(l, e, "src");
  if (!src.ok()) return src.status();
  // Only the region's size matters: its starts are not checked.
  AccessOptions options;
  options.param = "src_indexers";
  options.runtime_bounds = true;  // nothing is read: no bounds to check
  options.dynamic_sizes = true;
  absl::StatusOr<RefAccess> region = BuildAccess(l, e, *src, "read", options);
  if (!region.ok()) return region.status();
  int64_t bytes = vm::SizeOf(region->dtype);
  for (int64_t d : region->shape) {
    if (d != kDynamicSize) bytes *= d;
  }
  if (bytes > std::numeric_limits<int32_t>::max()) {
    return l.Unsupported(absl::StrCat("a DMA of ", bytes,
                                      " bytes (semaphores count to 2^31 - 1)"));
  }
  absl::StatusOr<uint32_t> sem =
      SemaphoreAccess(l, e, "dst_sem", "dst_sem_indexers");
  if (!sem.ok()) return sem.status();
  // Bytes: the static part times each dynamic size (emit_pipeline's edge
  // blocks), as the DMA signals them.
  Value value = l.ConstantScalar(DType::S32, bytes);
  for (uint32_t slot : region->size_slots) {
    Value size;
    size.dtype = DType::S32;
    size.slot = slot;
    absl::StatusOr<Value> product = l.Binary("MUL", value, size, DType::S32, {});
    if (!product.ok()) return product.status();
    value = *product;
  }
  l.builder().Emit({vm::Op::SEM_WAIT, 0, 0, value.slot, 0, *sem, 0});
  return std::vector<Value>{};
}

absl::StatusOr<std::vector<Value>> LowerSemaphoreSignal(
    Lowerer& l, const Lowerer::Eqn& e) {
  absl::StatusOr<uint32_t> sem = SemaphoreAccess(l, e, "sem", "indexers");
  if (!sem.ok()) return sem.status();
  absl::StatusOr<uint32_t> inc = ScalarSlot(l, e, "inc");
  if (!inc.ok()) return inc.status();
  // core_index: that core's semaphore of this device (checked when it
  // runs against the number of cores).
  // device_id: a device's (its core 0 unless core_index names another).
  absl::StatusOr<const Value*> core = NamedOperand(l, e, "core_index");
  if (!core.ok()) return core.status();
  absl::StatusOr<int64_t> device = DeviceSlot(l, e);
  if (!device.ok()) return device.status();
  uint16_t aux = 0;
  uint32_t core_slot = 0, device_slot = 0;
  if (*core != nullptr) {
    absl::StatusOr<uint32_t> slot = ScalarSlot(l, e, "core_index");
    if (!slot.ok()) return slot.status();
    aux |= 1;
    core_slot = *slot;
  }
  if (*device >= 0) {
    aux |= 2;
    device_slot = static_cast<uint32_t>(*device);
  }
  l.builder().Emit(
      {vm::Op::SEM_SIGNAL, aux, 0, *inc, core_slot, *sem, device_slot});
  return std::vector<Value>{};
}

absl::StatusOr<std::vector<Value>> LowerSemaphoreWait(Lowerer& l,
                                                      const Lowerer::Eqn& e) {
  absl::StatusOr<const Value*> decrement = NamedOperand(l, e, "decrement");
  if (!decrement.ok()) return decrement.status();
  if (*decrement != nullptr) {
    const interchange::Param* p = e.Param("decrement_operand");
    const int64_t pos = p ? p->i() : -1;
    const interchange::Atom* atom =
        e.eqn->invars() && pos >= 0 &&
                pos < static_cast<int64_t>(e.eqn->invars()->size())
            ? e.eqn->invars()->Get(pos)
            : nullptr;
    absl::StatusOr<Lowerer::Index> d =
        atom ? l.ScalarIndex(atom) : absl::InvalidArgumentError("no operand");
    if (!d.ok() || !d->is_static || d->value != 1) {
      // Interpret mode raises NotImplementedError for it too.
      return l.Unsupported(
          "a non-decrementing semaphore wait (decrement=False) is not "
          "supported");
    }
  }
  absl::StatusOr<uint32_t> sem = SemaphoreAccess(l, e, "sem", "indexers");
  if (!sem.ok()) return sem.status();
  absl::StatusOr<uint32_t> value = ScalarSlot(l, e, "value");
  if (!value.ok()) return value.status();
  l.builder().Emit({vm::Op::SEM_WAIT, 0, 0, *value, 0, *sem, 0});
  return std::vector<Value>{};
}

absl::StatusOr<std::vector<Value>> LowerSemaphoreRead(Lowerer& l,
                                                      const Lowerer::Eqn& e) {
  absl::StatusOr<uint32_t> sem = SemaphoreAccess(l, e, "sem", "indexers");
  if (!sem.ok()) return sem.status();
  Value r = l.NewValue(DType::S32, {});
  l.builder().Emit({vm::Op::SEM_READ, 0, r.slot, 0, 0, *sem, 0});
  return std::vector<Value>{l.Convert(r, e.out_dtypes.at(0))};
}

// run_scoped: the body's first invars are bound to the equation's operands
// (the exporter prepends the jaxpr's constvars), the rest are the scope's
// allocations, each a ref of its own, fresh at SCOPE_ENTER and released at
// SCOPE_EXIT. Every size is static, so nothing is allocated at run time.
absl::StatusOr<std::vector<Value>> LowerRunScoped(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  const interchange::Param* p = e.Param("jaxpr");
  if (p == nullptr || p->jaxprs() == nullptr || p->jaxprs()->size() != 1) {
    return l.Error("run_scoped needs one jaxpr");
  }
  if (const interchange::Param* axes = e.Param("collective_axes");
      axes && axes->ints() && axes->ints()->size() > 0) {
    return l.Unsupported("run_scoped with collective_axes is not supported yet");
  }
  const interchange::Jaxpr& body = *p->jaxprs()->Get(0);
  const int num_invars = body.invars() ? body.invars()->size() : 0;
  const int num_bound = static_cast<int>(e.in.size());
  if (num_invars < num_bound) {
    return l.Error(absl::StrCat("run_scoped binds ", num_bound,
                                " operands to a body of ", num_invars,
                                " inputs"));
  }
  std::vector<Value> inputs = e.in;
  const std::string origin = absl::StrCat(
      "run_scoped at ",
      e.eqn->source_file() ? e.eqn->source_file()->str() : "?", ":",
      e.eqn->source_line());
  int first = -1;
  for (int i = num_bound; i < num_invars; ++i) {
    const interchange::Var* var = body.invars()->Get(i);
    if (var == nullptr || var->type() == nullptr) return l.Error("bad allocation");
    const std::string what = absl::StrCat("allocation ", i - num_bound, " of ", origin);
    absl::StatusOr<DType> dtype = ToVmDType(var->type()->dtype());
    if (!dtype.ok()) return l.Error(absl::StrCat(what, ": ", dtype.status().message()));
    Shape shape;
    if (var->type()->shape()) {
      shape.assign(var->type()->shape()->begin(), var->type()->shape()->end());
    }
    if (absl::Status s = CheckShape(shape, *dtype, l.memory_limit(), what); !s.ok()) {
      return s;
    }
    ProgramBuilder::RefInfo info;
    info.dtype = *dtype;
    info.shape = shape;
    info.scoped = true;
    info.origin = absl::StrCat(what);
    absl::StatusOr<Shape> padded = PaddedShape(*var->type(), shape, what);
    if (!padded.ok()) return l.Error(padded.status().message());
    info.padded_shape = *std::move(padded);
    switch (var->type()->memory_space()) {
      case interchange::MemorySpace::DEFAULT:
      case interchange::MemorySpace::VMEM:
        info.space = vm::MemorySpace::VMEM;
        break;
      case interchange::MemorySpace::SMEM:
        info.space = vm::MemorySpace::SMEM;
        break;
      case interchange::MemorySpace::VMEM_SHARED:
        info.space = vm::MemorySpace::VMEM_SHARED;
        break;
      case interchange::MemorySpace::SEMAPHORE:
        info.space = vm::MemorySpace::SEMAPHORE;
        break;
      case interchange::MemorySpace::ANY:
      case interchange::MemorySpace::HBM:
        if (!l.allow_hbm_in_run_scoped()) {
          // Interpret mode's ValueError.
          return l.Error("Cannot allocate HBM in `run_scoped`.");
        }
        info.space = vm::MemorySpace::HBM;
        break;
      default:
        return l.Error(absl::StrCat(what, " is not a ref"));
    }
    Value ref;
    ref.dtype = info.dtype;
    ref.shape = info.shape;
    info.bytes = ref.bytes();
    ref.ref = l.builder().AddRef(std::move(info));
    if (first < 0) first = ref.ref;
    inputs.push_back(ref);
  }
  const uint32_t count = static_cast<uint32_t>(num_invars - num_bound);
  if (count > 0) {
    l.builder().Emit({vm::Op::SCOPE_ENTER, 0, static_cast<uint32_t>(first), 0,
                      0, 0, count});
  }
  absl::StatusOr<std::vector<Value>> outs = l.LowerJaxpr(body, inputs);
  if (!outs.ok()) return outs.status();
  if (count > 0) {
    l.builder().Emit({vm::Op::SCOPE_EXIT, 0, static_cast<uint32_t>(first), 0,
                      0, 0, count});
  }
  return outs;
}

// delay (pl.delay), add_dependency (pltpu.touch) and trace_value
// (pltpu.trace_value): a TPU spins, orders a ref's uses, or records a
// scalar in its profiler trace. None changes a value, and on one simulated
// core in program order there is nothing to wait for, order or record:
// they lower to nothing (interpret mode also skips delay).
absl::StatusOr<std::vector<Value>> LowerNothing(Lowerer&, const Lowerer::Eqn&) {
  return std::vector<Value>{};
}

// debug_print (jax.debug.print, pl.debug_print): one DEBUG_ARG per scalar
// operand, then DEBUG_PRINT of the format, a constant. Array operands are
// refused, as Mosaic refuses them on a TPU.
absl::StatusOr<std::vector<Value>> LowerDebugPrint(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  const interchange::Param* fmt = e.Param("fmt");
  if (fmt == nullptr || fmt->s() == nullptr) {
    return l.Error("debug_print has no format");
  }
  const std::string format = fmt->s()->str();
  absl::StatusOr<int> fields = vm::CheckDebugFormat(format);
  if (!fields.ok()) {
    return fields.status().code() == absl::StatusCode::kUnimplemented
               ? l.Unsupported(fields.status().message())
               : l.Error(fields.status().message());
  }
  if (*fields != static_cast<int>(e.in.size())) {
    return l.Error(absl::StrCat("debug print format \"", format, "\" has ",
                                *fields, " {} fields for ", e.in.size(),
                                " values"));
  }
  if (e.in.size() > 16) {
    return l.Unsupported("a debug print of more than 16 values");
  }
  if (format.size() > (size_t{1} << 16)) {
    return l.Error("a debug print format of more than 64 KiB");
  }
  for (const Value& v : e.in) {
    if (v.is_ref() || v.count() != 1) {
      return l.Unsupported(absl::StrCat(
          "debug printing ", TypeString(v),
          ": only scalars can be printed (as on a TPU)"));
    }
    l.builder().Emit({vm::Op::DEBUG_ARG, static_cast<uint16_t>(v.dtype),
                      v.slot, 0, 0, 0, 1});
  }
  const uint32_t text = l.builder().Constant(format.data(), format.size());
  l.builder().Emit({vm::Op::DEBUG_PRINT, 0, text, 0, 0, 0,
                    static_cast<uint32_t>(format.size())});
  return std::vector<Value>{};
}

}  // namespace

// get_barrier_semaphore: the kernel's barrier semaphore, one per core, 0 at
// the start of a call (interpret mode's semaphore of id collective_id): a
// ref of its own, which the first use makes.
absl::StatusOr<std::vector<Value>> LowerBarrierSemaphore(
    Lowerer& l, const Lowerer::Eqn&) {
  if (l.barrier_semaphore() < 0) {
    ProgramBuilder::RefInfo info;
    info.dtype = DType::S32;
    info.space = vm::MemorySpace::SEMAPHORE;
    info.scoped = true;  // never entered: zeroed with the call's semaphores
    info.origin = "the barrier semaphore (pltpu.get_barrier_semaphore)";
    info.bytes = 4;
    l.set_barrier_semaphore(l.builder().AddRef(std::move(info)));
  }
  Value sem;
  sem.dtype = DType::S32;
  sem.ref = l.barrier_semaphore();
  return std::vector<Value>{sem};
}

void AddMachineRules(RuleTable& t) {
  t.Effectful("debug_print", Arity::Any(), LowerDebugPrint);
  t.Effectful("delay", Arity::Exactly(1, 0), LowerNothing);
  t.Effectful("add_dependency", Arity{1, Arity::kAny, 0, 0}, LowerNothing);
  t.Effectful("trace_value", Arity::Exactly(1, 0), LowerNothing);
  constexpr Arity kNoResults{1, Arity::kAny, 0, 0};
  t.Effectful("dma_start", kNoResults, LowerDmaStart);
  t.Effectful("dma_wait", kNoResults, LowerDmaWait);
  t.Effectful("semaphore_signal", kNoResults, LowerSemaphoreSignal);
  t.Effectful("semaphore_wait", kNoResults, LowerSemaphoreWait);
  t.Effectful("semaphore_read", Arity{1, Arity::kAny, 1, 1}, LowerSemaphoreRead);
  t.Effectful("run_scoped", Arity::Any(), LowerRunScoped);
  t.Effectful("get_barrier_semaphore", Arity::Exactly(0, 1),
              LowerBarrierSemaphore);
}

}  // namespace pallasvm::compiler
