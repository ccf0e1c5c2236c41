// A tiny assembler and frame for hand-built test programs, shared by the
// interpreter and verifier tests.
#ifndef PALLASVM_TESTS_VM_TEST_PROGRAM_H_
#define PALLASVM_TESTS_VM_TEST_PROGRAM_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "vm/program.h"

namespace pallasvm::vm::test_program {

// Appends instructions and descriptors to a Program.
class Assembler {
 public:
  Program& program() { return p_; }

  // Emits one instruction; `loc` indexes debug_locs (-1: the first one,
  // added on demand, named after the opcode).
  uint32_t Emit(Op op, uint32_t a = 0, uint32_t b = 0, uint32_t c = 0,
                uint32_t d = 0, uint32_t n = 0, uint16_t aux = 0,
                int loc = -1) {
    p_.code.push_back(Instr{op, aux, a, b, c, d, n});
    if (loc < 0) {
      loc = AddLoc({std::string(Info(op).name), "test.py",
                    static_cast<int32_t>(p_.code.size()), "test_kernel"});
    }
    p_.debug_index.push_back(static_cast<uint32_t>(loc));
    return static_cast<uint32_t>(p_.code.size() - 1);
  }

  uint32_t AddLoc(SourceLoc loc) {
    p_.debug_locs.push_back(std::move(loc));
    return static_cast<uint32_t>(p_.debug_locs.size() - 1);
  }

  uint32_t AddLayout(int elem_size, std::initializer_list<int64_t> shape,
                     std::initializer_list<int64_t> strides = {},
                     int64_t offset = 0) {
    LayoutDesc l;
    l.elem_size = elem_size;
    l.rank = static_cast<int32_t>(shape.size());
    l.offset = offset;
    int i = 0;
    for (int64_t s : shape) l.shape[i++] = s;
    i = 0;
    for (int64_t s : strides) l.strides[i++] = s;
    p_.layouts.push_back(l);
    return static_cast<uint32_t>(p_.layouts.size() - 1);
  }

  uint32_t AddAccess(const AccessDesc& acc) {
    p_.accesses.push_back(acc);
    return static_cast<uint32_t>(p_.accesses.size() - 1);
  }

  void AddFunction(std::string name, uint32_t entry,
                   std::vector<uint32_t> params = {},
                   std::vector<uint32_t> results = {}) {
    p_.functions.push_back(Function{std::move(name), entry, std::move(params),
                                    std::move(results)});
  }

  // Constants occupy [0, size) of the frame.
  template <class T>
  uint32_t Constant(T value) {
    const uint32_t offset = static_cast<uint32_t>(
        (p_.constants.size() + sizeof(T) - 1) / sizeof(T) * sizeof(T));
    p_.constants.resize(offset + sizeof(T));
    std::memcpy(p_.constants.data() + offset, &value, sizeof(T));
    return offset;
  }

 private:
  Program p_;
};

// One access dimension: extent, static start or start slot, size, stride.
inline AccessDim Dim(int64_t extent, int64_t start, int64_t size,
                     int64_t stride = 1, int32_t start_slot = -1,
                     bool squeezed = false) {
  AccessDim d;
  d.extent = extent;
  d.start = start;
  d.start_slot = start_slot;
  d.size = size;
  d.stride = stride;
  d.squeezed = squeezed ? 1 : 0;
  return d;
}

inline AccessDesc Access(AccessBase kind, int32_t base, int elem_size,
                         std::initializer_list<AccessDim> dims,
                         bool clamp = false) {
  AccessDesc acc;
  acc.base_kind = kind;
  acc.base = base;
  acc.elem_size = static_cast<uint8_t>(elem_size);
  acc.clamp = clamp ? 1 : 0;
  acc.rank = static_cast<uint8_t>(dims.size());
  int i = 0;
  for (const AccessDim& d : dims) acc.dims[i++] = d;
  return acc;
}

// A 64-byte aligned buffer with typed access by byte offset.
class Buffer {
 public:
  explicit Buffer(size_t bytes)
      : size_(bytes),
        data_(static_cast<uint8_t*>(
            std::aligned_alloc(64, (bytes + 63) / 64 * 64))) {
    std::memset(data_.get(), 0, size_);
  }
  uint8_t* data() { return data_.get(); }
  size_t size() const { return size_; }

  template <class T>
  T Get(size_t offset) const {
    T v;
    std::memcpy(&v, data_.get() + offset, sizeof(T));
    return v;
  }
  template <class T>
  void Set(size_t offset, T v) {
    std::memcpy(data_.get() + offset, &v, sizeof(T));
  }
  template <class T>
  T* As(size_t offset) {
    return reinterpret_cast<T*>(data_.get() + offset);
  }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t size_;
  std::unique_ptr<uint8_t, Free> data_;
};

}  // namespace pallasvm::vm::test_program

#endif  // PALLASVM_TESTS_VM_TEST_PROGRAM_H_
