// Ref fusion; see ref_fusion.h.
#include "compiler/ref_fusion.h"

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "compiler/instr_slots.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::Format;
using vm::Instr;
using vm::Op;

// A mention by a function's parameter or result slots: such a value is
// never rewritten.
constexpr uint32_t kPinned = ~uint32_t{0};

class RefFusion {
 public:
  RefFusion(vm::Program& p, const std::function<int(uint32_t)>& allocation_of)
      : p_(p), allocation_of_(allocation_of), dead_(p.code.size(), false) {}

  void Run() {
    FindTargets();
    IndexMentions();
    for (uint32_t pc = 0; pc < p_.code.size(); ++pc) FuseAccumulate(pc);
    IndexMentions();
    for (uint32_t pc = 0; pc < p_.code.size(); ++pc) ForwardLoad(pc);
    Compact();
  }

 private:
  int AllocationOf(uint32_t slot) const { return allocation_of_(slot); }

  // Every live instruction's mention of every allocation, in pc order.
  void IndexMentions() {
    mentions_.clear();
    auto add = [&](uint32_t slot, uint32_t pc) {
      const int a = AllocationOf(slot);
      if (a >= 0) mentions_[a].push_back(pc);
    };
    for (uint32_t pc = 0; pc < p_.code.size(); ++pc) {
      if (dead_[pc]) continue;
      Instr in = p_.code[pc];
      ForEachInstrSlot(in, [&](uint32_t& s) { add(s, pc); });
      vm::ForEachAccessOperand(in, [&](uint32_t d) {
        if (d >= p_.accesses.size()) return;
        vm::AccessDesc acc = p_.accesses[d];
        ForEachAccessSlot(acc, [&](uint32_t& s) { add(s, pc); });
      });
    }
    for (const vm::Function& f : p_.functions) {
      for (uint32_t s : f.param_slots) add(s, kPinned);
      for (uint32_t s : f.result_slots) add(s, kPinned);
    }
  }

  void FindTargets() {
    target_.assign(p_.code.size() + 1, false);
    for (const Instr& in : p_.code) {
      const Format f = vm::Info(in.op).format;
      if (f == Format::JUMP && in.a < target_.size()) target_[in.a] = true;
      if (f == Format::BRANCH && in.b < target_.size()) target_[in.b] = true;
    }
    for (const vm::Function& f : p_.functions) {
      if (f.entry_pc < target_.size()) target_[f.entry_pc] = true;
    }
  }

  // The one pc other than `at` that mentions the allocation of `slot`, or
  // -1 if there are none or several (or a function slot).
  int64_t OtherMention(uint32_t slot, uint32_t at) const {
    const int a = AllocationOf(slot);
    if (a < 0) return -1;
    auto it = mentions_.find(a);
    if (it == mentions_.end()) return -1;
    int64_t other = -1;
    for (uint32_t pc : it->second) {
      if (pc == at) continue;
      if (pc == kPinned || (other >= 0 && other != pc)) return -1;
      other = pc;
    }
    return other;
  }

  // The ref an access covers whole (static starts 0, full sizes, stride 1:
  // the dense value is the ref's buffer), or -1.
  int WholeRef(uint32_t access) const {
    if (access >= p_.accesses.size()) return -1;
    const vm::AccessDesc& a = p_.accesses[access];
    if (a.base_kind != vm::AccessBase::REF || a.clamp || a.base < 0) return -1;
    int64_t elements = 1;
    for (int i = 0; i < a.rank; ++i) {
      const vm::AccessDim& d = a.dims[i];
      if (d.start_slot >= 0 || d.start != 0 || d.size != d.extent ||
          d.stride != 1) {
        return -1;
      }
      elements *= d.extent;
    }
    if (static_cast<size_t>(a.base) >= p_.ref_sizes.size() ||
        p_.ref_sizes[a.base] != elements * a.elem_size) {
      return -1;
    }
    return a.base;
  }

  // Whether control enters [lo, hi] only at lo and leaves only after hi.
  bool StraightLine(uint32_t lo, uint32_t hi) const {
    for (uint32_t pc = lo; pc <= hi; ++pc) {
      if (dead_[pc]) continue;
      const Instr& in = p_.code[pc];
      const Format f = vm::Info(in.op).format;
      if (f == Format::JUMP || f == Format::BRANCH || in.op == Op::RETURN) {
        return false;
      }
      if (pc > lo && target_[pc]) return false;
    }
    return true;
  }

  bool StoresToRef(const Instr& in, int ref) const {
    const Format f = vm::Info(in.op).format;
    return IsAccess(in) &&
           (f == Format::ACCESS_STORE || f == Format::ACCESS_MASKED_STORE) &&
           p_.accesses[in.d].base_kind == vm::AccessBase::REF &&
           p_.accesses[in.d].base == ref;
  }

  bool WritesRef(const Instr& in, int ref) const {
    // A DMA, or a wait that lands one, may write any ref.
    if (vm::IsMachineOp(in.op)) return true;
    if (vm::Info(in.op).format == Format::DOT) {
      return (in.aux & vm::kOperandRefA) && in.a == static_cast<uint32_t>(ref);
    }
    return StoresToRef(in, ref);
  }

  bool TouchesRef(const Instr& in, int ref) const {
    if (vm::IsMachineOp(in.op)) return true;
    const uint32_t r = static_cast<uint32_t>(ref);
    if (IsAccess(in) && p_.accesses[in.d].base_kind == vm::AccessBase::REF &&
        p_.accesses[in.d].base == ref) {
      return true;
    }
    const Format f = vm::Info(in.op).format;
    if (f == Format::ACCESS_STORE) {
      return (in.aux & vm::kOperandRefB) && in.b == r;
    }
    if (f == Format::DOT) {
      return ((in.aux & vm::kOperandRefA) && in.a == r) ||
             ((in.aux & vm::kOperandRefB) && in.b == r) ||
             ((in.aux & vm::kOperandRefC) && in.c == r);
    }
    return false;
  }

  // Rewrite 1, with the ADD_F32_VV at `add`.
  void FuseAccumulate(uint32_t add) {
    const Instr& sum = p_.code[add];
    if (dead_[add] || sum.op != Op::ADD_F32_VV) return;
    for (int side = 0; side < 2; ++side) {
      const uint32_t v = side == 0 ? sum.b : sum.c;  // the ref's old value
      const uint32_t d = side == 0 ? sum.c : sum.b;  // the product
      if (AllocationOf(v) == AllocationOf(d)) return;
      const int64_t dot = OtherMention(d, add);
      const int64_t load = OtherMention(v, add);
      const int64_t store = OtherMention(sum.a, add);
      if (dot < 0 || load < 0 || store < 0 || dot > add || load > add ||
          store < add) {
        continue;
      }
      const Instr& dt = p_.code[dot];
      const Instr& ld = p_.code[load];
      const Instr& st = p_.code[store];
      if (dt.op != Op::DOT_F32 || dt.a != d || (dt.aux & vm::kOperandRefA) ||
          ld.op != Op::LOAD || ld.a != v || ld.aux != 0 || st.op != Op::STORE ||
          st.b != sum.a || st.aux != 0) {
        continue;
      }
      const int ref = WholeRef(ld.d);
      if (ref < 0 || WholeRef(st.d) != ref ||
          p_.accesses[ld.d].elem_size != 4 || dt.d >= p_.layouts.size()) {
        continue;
      }
      const vm::LayoutDesc& mkn = p_.layouts[dt.d];
      const int64_t bytes = p_.ref_sizes[ref];
      if (mkn.rank != 3 || mkn.shape[0] * mkn.shape[2] * 4 != bytes ||
          int64_t{sum.n} * 4 != bytes) {
        continue;
      }
      const uint32_t lo = static_cast<uint32_t>(std::min(load, dot));
      if (!StraightLine(lo, store)) continue;
      bool clear = true;
      for (uint32_t pc = lo; clear && pc <= store; ++pc) {
        if (dead_[pc] || pc == load || pc == store) continue;
        clear = !TouchesRef(p_.code[pc], ref);
      }
      if (!clear) continue;
      Instr& fused = p_.code[dot];
      fused.op = Op::DOT_ADD_F32;
      fused.a = static_cast<uint32_t>(ref);
      fused.aux |= vm::kOperandRefA;
      dead_[load] = dead_[add] = dead_[store] = true;
      return;
    }
  }

  // Rewrite 2, with the LOAD at `load`.
  void ForwardLoad(uint32_t load) {
    const Instr& ld = p_.code[load];
    if (dead_[load] || ld.op != Op::LOAD || ld.aux != 0) return;
    const int ref = WholeRef(ld.d);
    const int value = AllocationOf(ld.a);
    if (ref < 0 || value < 0) return;
    auto it = mentions_.find(value);
    if (it == mentions_.end()) return;
    std::vector<uint32_t> uses;
    for (uint32_t pc : it->second) {
      if (pc == load) continue;
      if (pc == kPinned || pc < load) return;
      if (uses.empty() || uses.back() != pc) uses.push_back(pc);
    }
    if (uses.empty()) return;
    // Each use reads the value whole, as a block source of a DOT, a
    // STORE/ADDUPDATE or an elementwise op, and mentions it nowhere else.
    for (uint32_t pc : uses) {
      const Instr& in = p_.code[pc];
      const Format f = vm::Info(in.op).format;
      int mentions = 0, sources = 0;
      Instr copy = in;
      ForEachInstrSlot(
          copy, [&](uint32_t& s) { mentions += AllocationOf(s) == value; });
      vm::ForEachAccessOperand(in, [&](uint32_t d) {
        vm::AccessDesc acc = p_.accesses[d];
        ForEachAccessSlot(
            acc, [&](uint32_t& s) { mentions += AllocationOf(s) == value; });
      });
      const bool b_is = in.b == ld.a && !(in.aux & vm::kOperandRefB);
      const bool c_is = in.c == ld.a && !(in.aux & vm::kOperandRefC);
      if (f == Format::DOT || f == Format::BINARY_VV) {
        sources = b_is + c_is;
      } else if (f == Format::ACCESS_STORE || f == Format::BINARY_VS ||
                 f == Format::UNARY_V) {
        sources = b_is;
      } else if (f == Format::BINARY_SV) {
        sources = c_is;
      }
      if (sources == 0 || sources != mentions) return;
    }
    if (!StraightLine(load, uses.back())) return;
    for (uint32_t pc = load + 1; pc <= uses.back(); ++pc) {
      if (!dead_[pc] && WritesRef(p_.code[pc], ref)) return;
    }
    const uint32_t r = static_cast<uint32_t>(ref);
    for (uint32_t pc : uses) {
      Instr& in = p_.code[pc];
      const Format f = vm::Info(in.op).format;
      if (f != Format::BINARY_SV && !(in.aux & vm::kOperandRefB) &&
          in.b == ld.a) {
        in.b = r;
        in.aux |= vm::kOperandRefB;
      }
      if ((f == Format::DOT || f == Format::BINARY_VV ||
           f == Format::BINARY_SV) &&
          !(in.aux & vm::kOperandRefC) && in.c == ld.a) {
        in.c = r;
        in.aux |= vm::kOperandRefC;
      }
    }
    dead_[load] = true;
  }

  // Drops dead instructions; jumps to one land on the next live one, which
  // is where control went after it.
  void Compact() {
    const size_t n = p_.code.size();
    std::vector<uint32_t> new_pc(n + 1);
    uint32_t next = 0;
    for (size_t pc = 0; pc < n; ++pc) {
      new_pc[pc] = next;
      next += dead_[pc] ? 0 : 1;
    }
    new_pc[n] = next;
    if (next == n) return;
    std::vector<Instr> code;
    std::vector<uint32_t> debug_index;
    for (size_t pc = 0; pc < n; ++pc) {
      if (dead_[pc]) continue;
      Instr in = p_.code[pc];
      const Format f = vm::Info(in.op).format;
      if (f == Format::JUMP && in.a <= n) in.a = new_pc[in.a];
      if (f == Format::BRANCH && in.b <= n) in.b = new_pc[in.b];
      code.push_back(in);
      if (pc < p_.debug_index.size()) {
        debug_index.push_back(p_.debug_index[pc]);
      }
    }
    for (vm::Function& f : p_.functions) {
      if (f.entry_pc <= n) f.entry_pc = new_pc[f.entry_pc];
    }
    p_.code = std::move(code);
    if (!p_.debug_index.empty()) p_.debug_index = std::move(debug_index);
  }

  vm::Program& p_;
  const std::function<int(uint32_t)>& allocation_of_;
  std::vector<bool> dead_;
  std::vector<bool> target_;  // jump targets and function entries
  absl::flat_hash_map<int, std::vector<uint32_t>> mentions_;
};

}  // namespace

void FuseRefAccesses(vm::Program& program,
                     const std::function<int(uint32_t)>& allocation_of) {
  RefFusion(program, allocation_of).Run();
}

}  // namespace pallasvm::compiler
