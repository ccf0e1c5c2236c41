// The C++ half of the JAX bridge (tools/pallasvm/bridge.py is the other):
// one shared library that XLA:CPU and Python both load.
//
//  - `PallasvmCall`, an XLA FFI handler. A pallas_call lowered by the bridge
//    is a custom call to it whose attributes carry the compiled module, its
//    key (a content hash) and the run options; the handler runs the module
//    on XLA's buffers directly, with no Python on the way.
//  - `pallasvm_compile` / `pallasvm_free`, a C interface for ctypes: the
//    bridge compiles each kernel once, when JAX lowers it, so that an
//    unsupported primitive is an error at trace/compile time.
//
// Executables are kept for the life of the process, by module key. An
// Executable owns its workspace and is not safe for concurrent runs, so
// each key has a pool: a call takes a free executable (loading another when
// all are busy, e.g. when XLA runs the same program on several threads) and
// gives it back afterwards.
//
// No C++ exception leaves this library: XLA's FFI and ctypes are C
// boundaries, and an exception through them would abort the Python process
// that runs JAX. Every entry point catches everything and returns it as an
// error (an XLA error, which JAX raises; a nonzero return for ctypes).
//
// Knows nothing of how JAX lowers or traces; the Python side decides what
// goes into the attributes.

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "compiler/compiler.h"
#include "compiler/lowering.h"
#include "compiler/module_cache.h"
#include "runtime/core_sync.h"
#include "runtime/pallasvm.h"
#include "vm/interrupt.h"
#include "vm/memory_limit.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace pallasvm::jax_bridge {
namespace {

// Debian's Abseil has its own string_view; XLA's FFI uses the standard one.
absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// An executable with the Array descriptions it is run on, kept so that a
// call reuses their storage instead of allocating shapes.
struct Instance {
  std::unique_ptr<Executable> exe;
  std::vector<Array> inputs, outputs;
  // The grid_coordinates attribute last parsed for this instance, and its
  // parse: a call with the same attribute (the usual case) reuses it.
  std::vector<int32_t> coordinates_attr;
  std::vector<std::vector<int32_t>> coordinates;
};

// Parses the `grid_coordinates` attribute into instance.coordinates unless
// it is the one parsed last time.
absl::Status SetGridCoordinates(Instance& instance,
                                ffi::Span<const int32_t> attr) {
  if (instance.coordinates_attr.size() == attr.size() &&
      std::equal(attr.begin(), attr.end(), instance.coordinates_attr.begin())) {
    return absl::OkStatus();
  }
  std::vector<std::vector<int32_t>> coordinates;
  bool any_permuted = false;
  for (size_t i = 0; i < attr.size();) {
    const int64_t n = attr[i++];
    if (n < 0 || i + n > attr.size()) {
      return absl::InvalidArgumentError(
          "pallasvm: malformed grid_coordinates attribute");
    }
    coordinates.emplace_back(attr.begin() + i, attr.begin() + i + n);
    any_permuted |= n > 0;
    i += n;
  }
  if (!any_permuted) coordinates.clear();
  instance.coordinates = std::move(coordinates);
  instance.coordinates_attr.assign(attr.begin(), attr.end());
  return absl::OkStatus();
}

class ExecutablePool {
 public:
  static ExecutablePool& Get() {
    static ExecutablePool* pool = new ExecutablePool();  // never destroyed:
    return *pool;  // XLA may still call the handler during process exit.
  }

  // A free instance of the module with key `key`; loaded from `module`
  // when none is free.
  absl::StatusOr<std::unique_ptr<Instance>> Acquire(absl::string_view key,
                                                    absl::string_view module) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(key);
      if (it != free_.end() && !it->second.empty()) {
        std::unique_ptr<Instance> instance = std::move(it->second.back());
        it->second.pop_back();
        return instance;
      }
    }
    // Loading (verification) runs outside the lock: it is the slow part.
    absl::StatusOr<std::unique_ptr<Executable>> exe =
        Executable::Load(module, "pallas_call module");
    if (!exe.ok()) return exe.status();
    auto instance = std::make_unique<Instance>();
    instance->exe = *std::move(exe);
    return instance;
  }

  void Release(absl::string_view key, std::unique_ptr<Instance> instance) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[key].push_back(std::move(instance));
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::vector<std::unique_ptr<Instance>>>
      free_;
};

absl::StatusOr<DType> ToDType(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::PRED:
      return DType::PRED;
    case ffi::DataType::S8:
      return DType::S8;
    case ffi::DataType::U8:
      return DType::U8;
    case ffi::DataType::S16:
      return DType::S16;
    case ffi::DataType::U16:
      return DType::U16;
    case ffi::DataType::S32:
      return DType::S32;
    case ffi::DataType::U32:
      return DType::U32;
    case ffi::DataType::F16:
      return DType::F16;
    case ffi::DataType::BF16:
      return DType::BF16;
    case ffi::DataType::F32:
      return DType::F32;
    default:
      return absl::InvalidArgumentError(absl::StrCat("XLA element type ",
                                                     static_cast<int>(type),
                                                     " has no pallasvm dtype"));
  }
}

absl::Status Describe(const ffi::AnyBuffer& buffer, Array& array) {
  absl::StatusOr<DType> dtype = ToDType(buffer.element_type());
  if (!dtype.ok()) return dtype.status();
  array.dtype = *dtype;
  ffi::AnyBuffer::Dimensions dims = buffer.dimensions();
  array.shape.assign(dims.begin(), dims.end());
  array.data = buffer.untyped_data();
  return absl::OkStatus();
}

// The devices of one shard_map step: the XLA FFI calls of its N devices,
// each on its own thread (XLA:CPU runs them together), meet in one
// runtime::CoreSync, found by (run id, call site) -- a launch of a program
// and one pallas_call in it -- and, for a call site that runs several
// times in one launch (a loop), by order: device d joins the oldest
// meeting it has not joined yet, so the i-th calls of every device meet.
class DeviceMeetings {
 public:
  struct Meeting {
    std::unique_ptr<runtime::CoreSync> sync;
    std::vector<bool> joined;
    int left = 0;
  };

  static DeviceMeetings& Get() {
    static DeviceMeetings* meetings = new DeviceMeetings();  // never destroyed
    return *meetings;
  }

  std::shared_ptr<Meeting> Join(int64_t run_id, int64_t callsite, int device,
                                int num_devices, const runtime::Kernel& kernel,
                                const RunOptions& options) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::shared_ptr<Meeting>>& open = open_[{run_id, callsite}];
    for (const std::shared_ptr<Meeting>& m : open) {
      if (!m->joined[device]) {
        m->joined[device] = true;
        return m;
      }
    }
    auto m = std::make_shared<Meeting>();
    m->sync = std::make_unique<runtime::CoreSync>(kernel, options.num_cores,
                                                  num_devices);
    auto deadline = vm::Interrupt::Clock::time_point::max();
    if (options.timeout.count() > 0) {
      deadline = vm::Interrupt::Clock::now() +
                 std::chrono::duration_cast<vm::Interrupt::Clock::duration>(
                     options.timeout);
    }
    m->sync->SetInterrupt(deadline, nullptr, options.timeout);
    m->joined.assign(num_devices, false);
    m->joined[device] = true;
    open.push_back(m);
    return m;
  }

  // After the device's run: the last to leave closes the meeting.
  void Leave(int64_t run_id, int64_t callsite,
             const std::shared_ptr<Meeting>& meeting) {
    std::lock_guard<std::mutex> lock(mu_);
    if (++meeting->left < static_cast<int>(meeting->joined.size())) return;
    auto it = open_.find({run_id, callsite});
    if (it == open_.end()) return;
    std::vector<std::shared_ptr<Meeting>>& open = it->second;
    open.erase(std::remove(open.begin(), open.end(), meeting), open.end());
    if (open.empty()) open_.erase(it);
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::pair<int64_t, int64_t>,
                      std::vector<std::shared_ptr<Meeting>>>
      open_;
};

absl::Status Run(Instance& instance, ffi::RemainingArgs args,
                 ffi::RemainingRets rets, RunOptions& options,
                 size_t num_extra, int64_t record_size,
                 size_t num_extra_args) {
  instance.inputs.resize(args.size() - num_extra_args);
  for (size_t i = 0; i < instance.inputs.size(); ++i) {
    ffi::ErrorOr<ffi::AnyBuffer> buffer = args.get<ffi::AnyBuffer>(i);
    if (!buffer.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("operand ", i, ": ", buffer.error().message()));
    }
    if (absl::Status s = Describe(*buffer, instance.inputs[i]); !s.ok()) {
      return s;
    }
  }
  // The last num_extra results are not kernel outputs (see below).
  const size_t num_outputs = rets.size() - num_extra;
  instance.outputs.resize(num_outputs);
  for (size_t i = 0; i < num_outputs; ++i) {
    ffi::ErrorOr<ffi::Result<ffi::AnyBuffer>> buffer =
        rets.get<ffi::AnyBuffer>(i);
    if (!buffer.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("result ", i, ": ", buffer.error().message()));
    }
    if (absl::Status s = Describe(**buffer, instance.outputs[i]); !s.ok()) {
      return s;
    }
  }
  if (options.grid_point_record != nullptr) {
    std::vector<const void*> data;
    for (const Array& a : instance.inputs) data.push_back(a.data);
    const runtime::Kernel& k = instance.exe->kernel();
    if (k.num_dynamic_grid_bounds > static_cast<int>(data.size())) {
      return absl::InvalidArgumentError("missing dynamic grid bounds");
    }
    absl::StatusOr<std::vector<int64_t>> grid = runtime::ResolveGrid(k, data);
    if (!grid.ok()) return grid.status();
    int64_t points = 1;  // ResolveGrid has checked it fits in 2^62
    for (int64_t g : *grid) points *= g;
    const std::optional<int64_t> need =
        vm::CheckedMul(points, static_cast<int64_t>(grid->size() + 1));
    if (!need || record_size != *need) {
      return absl::InvalidArgumentError(
          absl::StrCat("the grid point record holds ", record_size,
                       " int32s; the grid (", absl::StrJoin(*grid, ", "),
                       ") needs ", points, " x ", grid->size() + 1));
    }
  }
  // The instance's parsed grid coordinates, lent (swapped, not copied) to
  // the options for the run.
  options.grid_coordinates.swap(instance.coordinates);
  absl::Status status =
      instance.exe->Run(instance.inputs, instance.outputs, options);
  options.grid_coordinates.swap(instance.coordinates);
  return status;
}

ffi::Error ToFfiError(const absl::Status& status) {
  if (status.ok()) return ffi::Error::Success();
  // ffi::ErrorCode mirrors absl::StatusCode value for value.
  return ffi::Error(static_cast<ffi::ErrorCode>(status.code()),
                    std::string(status.message()));
}

// `uninitialized_memory`: 0 = NaN / largest integer / true, 1 = zero
// (bridge.py's InterpretParams).
// `grid_coordinates`: per grid dimension, its length L and then L
// coordinates, the order interpret mode visits it in (L = 0: in order);
// see bridge.py's _grid_coordinates.
// `out_of_bounds_reads`: 0 = raise, 1 = uninitialized (read the fill).
// `record_grid_points`: 1 if a result after the outputs is an int32 buffer
// for RunOptions::grid_point_record (bridge.py's grid_point_recorder).
// `detect_races`: 1 if the last result is an int32 scalar that receives the
// number of racy elements (RunOptions::detect_races); races are printed.
// `timeout_ns`: RunOptions::timeout in nanoseconds, 0 for none (bridge.py's
// InterpretParams.timeout_s); a call past it fails with DEADLINE_EXCEEDED.
// `dma_execution_mode`: 0 = on_wait, 1 = eager. Warnings (semaphores left
// non-zero, DMAs never waited for) are printed, as interpret mode prints
// its leftover semaphores; `leftover_semaphores` 1 makes them errors.
// `uninitialized_reads`: 0 = off, 1 = warn (printed with the warnings),
// 2 = error (RunOptions::uninitialized_reads).
// `num_devices` > 1: the call is one of that many devices of a shard_map
// step (DeviceMeetings); `mesh_sizes` the sizes of the mesh axes around it,
// and the last operand an int32[len(mesh_sizes)] of this device's
// coordinates; `callsite` tells the pallas_calls of one program apart.
ffi::Error PallasvmCall(ffi::RunId run_id, ffi::RemainingArgs args,
                        ffi::RemainingRets rets,
                        std::string_view module_key,
                        ffi::Span<const uint8_t> module,
                        ffi::Span<const int32_t> grid_coordinates,
                        int64_t num_cores, int64_t uninitialized_memory,
                        int64_t out_of_bounds_reads, int64_t record_grid_points,
                        int64_t detect_races, int64_t timeout_ns,
                        int64_t dma_execution_mode,
                        int64_t leftover_semaphores,
                        int64_t uninitialized_reads, int64_t num_devices,
                        int64_t callsite, ffi::Span<const int32_t> mesh_sizes) {
  RunOptions options;
  switch (uninitialized_reads) {
    case 0:
      break;
    case 1:
      options.uninitialized_reads = runtime::UninitializedReadsCheck::kWarn;
      break;
    case 2:
      options.uninitialized_reads = runtime::UninitializedReadsCheck::kError;
      break;
    default:
      return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                        absl::StrCat("pallasvm: uninitialized_reads attribute ",
                                     uninitialized_reads,
                                     "; expected 0, 1 or 2"));
  }
  options.leftover_semaphores_are_errors = leftover_semaphores == 1;
  options.dma_execution_mode = dma_execution_mode == 1
                                   ? runtime::DmaExecutionMode::kEager
                                   : runtime::DmaExecutionMode::kOnWait;
  std::vector<std::string> warnings;
  options.warnings = &warnings;
  if (timeout_ns < 0) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "pallasvm: negative timeout_ns attribute");
  }
  options.timeout = std::chrono::nanoseconds(timeout_ns);
  // Results after the kernel's outputs, in this order: the grid point
  // record, then the race count.
  const size_t num_extra = (record_grid_points == 1) + (detect_races == 1);
  if (rets.size() < num_extra) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "pallasvm: fewer results than the attributes need");
  }
  // The i-th of them as int32 data and its element count; null if not
  // an int32 buffer.
  auto extra = [&](size_t i, int64_t* count) -> int32_t* {
    ffi::ErrorOr<ffi::Result<ffi::AnyBuffer>> buffer =
        rets.get<ffi::AnyBuffer>(rets.size() - num_extra + i);
    if (!buffer.has_value() ||
        (**buffer).element_type() != ffi::DataType::S32) {
      return nullptr;
    }
    *count = static_cast<int64_t>((**buffer).element_count());
    return (**buffer).typed_data<int32_t>();
  };
  int64_t record_size = 0;
  if (record_grid_points == 1) {
    options.grid_point_record = extra(0, &record_size);
    if (options.grid_point_record == nullptr) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                        "pallasvm: the grid point record is not int32");
    }
  }
  int32_t* race_count = nullptr;
  runtime::RaceReport races;
  if (detect_races == 1) {
    int64_t count = 0;
    race_count = extra(num_extra - 1, &count);
    if (race_count == nullptr || count != 1) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                        "pallasvm: the race count is not one int32");
    }
    options.detect_races = true;
    options.races = &races;
  }
  if (num_cores < 1 || num_cores > 256) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      absl::StrCat("pallasvm: num_cores attribute ", num_cores,
                                   "; expected 1 to 256"));
  }
  options.num_cores = static_cast<int>(num_cores);
  options.uninitialized_memory = uninitialized_memory == 1
                                     ? UninitializedMemory::kZero
                                     : UninitializedMemory::kNaN;
  options.out_of_bounds_reads = out_of_bounds_reads == 1
                                    ? runtime::OutOfBoundsReads::kUninitialized
                                    : runtime::OutOfBoundsReads::kRaise;
  absl::string_view module_bytes(reinterpret_cast<const char*>(module.begin()),
                                 module.size());
  ExecutablePool& pool = ExecutablePool::Get();
  absl::StatusOr<std::unique_ptr<Instance>> instance =
      pool.Acquire(AsAbsl(module_key), module_bytes);
  if (!instance.ok()) return ToFfiError(instance.status());
  // The instance goes back to the pool however this ends (an exception
  // included: the caller turns it into an error).
  struct ReleaseGuard {
    ExecutablePool& pool;
    std::string_view key;
    std::unique_ptr<Instance>& instance;
    ~ReleaseGuard() { pool.Release(AsAbsl(key), std::move(instance)); }
  } release{pool, module_key, *instance};
  absl::Status status = SetGridCoordinates(**instance, grid_coordinates);
  // Several devices: this one's coordinates (the last operand) and its
  // logical id, row-major over the mesh as interpret mode numbers them.
  std::shared_ptr<DeviceMeetings::Meeting> meeting;
  size_t num_extra_args = 0;
  if (status.ok() && num_devices > 1) {
    num_extra_args = 1;
    ffi::ErrorOr<ffi::AnyBuffer> coords =
        args.size() > 0 ? args.get<ffi::AnyBuffer>(args.size() - 1)
                        : ffi::ErrorOr<ffi::AnyBuffer>(ffi::Unexpected(
                              ffi::Error::InvalidArgument("no operands")));
    int64_t logical = 0, size = 1;
    if (!coords.has_value() || coords->element_type() != ffi::DataType::S32 ||
        coords->element_count() != mesh_sizes.size()) {
      status = absl::InvalidArgumentError(
          "pallasvm: the device coordinates operand does not match "
          "mesh_sizes");
    } else {
      const int32_t* c = coords->typed_data<int32_t>();
      for (size_t i = mesh_sizes.size(); i-- > 0;) {
        logical += int64_t{c[i]} * size;
        size *= mesh_sizes[i];
      }
      options.device_coords.assign(c, c + mesh_sizes.size());
      if (size != num_devices || logical < 0 || logical >= num_devices) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "pallasvm: device coordinates (",
            absl::StrJoin(options.device_coords, ", "), ") on a mesh of ",
            num_devices, " devices"));
      }
    }
    // A kernel that never signals or copies to another core or device
    // runs on its own: each device's call is independent, and meeting the
    // others would only cost thread switches.
    if (status.ok() && (**instance).exe->kernel().signals_other_cores) {
      options.device = static_cast<int>(logical);
      meeting = DeviceMeetings::Get().Join(
          run_id.run_id, callsite, options.device,
          static_cast<int>(num_devices), (**instance).exe->kernel(), options);
      options.devices = meeting->sync.get();
    }
  }
  if (status.ok()) {
    status = Run(**instance, args, rets, options, num_extra, record_size,
                 num_extra_args);
  }
  if (meeting) {
    // A device that failed before its run met the others (a bad operand)
    // must not leave them waiting.
    if (!status.ok()) {
      meeting->sync->Abandon(
          options.device,
          absl::Status(status.code(), absl::StrCat("device ", options.device,
                                                   ": ", status.message())));
    }
    DeviceMeetings::Get().Leave(run_id.run_id, callsite, meeting);
  }
  for (const std::string& w : warnings) {
    std::fprintf(stderr, "pallasvm warning: %s\n", w.c_str());
  }
  if (status.ok() && race_count != nullptr) {
    *race_count = static_cast<int32_t>(
        std::min<int64_t>(races.racy_elements, INT32_MAX));
    if (races.racy_elements > 0) {
      // Interpret mode prints its races too; the bridge also sets JAX's
      // races.races_found from the count.
      std::fprintf(stderr, "RACE DETECTED (pallasvm)\n%s",
                   races.description.c_str());
    }
  }
  return ToFfiError(status);
}

// The handler XLA calls: PallasvmCall with every exception turned into an
// error (see the top of the file).
ffi::Error PallasvmCallImpl(ffi::RunId run_id, ffi::RemainingArgs args,
                            ffi::RemainingRets rets,
                            std::string_view module_key,
                            ffi::Span<const uint8_t> module,
                            ffi::Span<const int32_t> grid_coordinates,
                            int64_t num_cores, int64_t uninitialized_memory,
                            int64_t out_of_bounds_reads,
                            int64_t record_grid_points, int64_t detect_races,
                            int64_t timeout_ns, int64_t dma_execution_mode,
                            int64_t leftover_semaphores,
                            int64_t uninitialized_reads, int64_t num_devices,
                            int64_t callsite,
                            ffi::Span<const int32_t> mesh_sizes) {
  try {
    return PallasvmCall(run_id, args, rets, module_key, module,
                        grid_coordinates, num_cores, uninitialized_memory,
                        out_of_bounds_reads, record_grid_points, detect_races,
                        timeout_ns, dma_execution_mode, leftover_semaphores,
                        uninitialized_reads, num_devices, callsite,
                        mesh_sizes);
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      "pallasvm: out of memory running the kernel");
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("pallasvm: ") + e.what());
  } catch (...) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      "pallasvm: unknown exception running the kernel");
  }
}

char* CopyToMalloc(absl::string_view bytes) {
  char* out = static_cast<char*>(std::malloc(bytes.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, bytes.data(), bytes.size());
  out[bytes.size()] = '\0';
  return out;
}

// pallasvm_compile's result for an exception: "pallasvm: compiling the
// kernel: <what>" in *out (allocating nothing else that could throw).
int CompileFailure(const char* what, char** out, size_t* out_len) {
  static constexpr char kPrefix[] = "pallasvm: compiling the kernel: ";
  std::free(*out);
  const size_t n = sizeof(kPrefix) - 1 + std::strlen(what);
  *out = static_cast<char*>(std::malloc(n + 1));
  *out_len = 0;
  if (*out == nullptr) return 1;
  std::memcpy(*out, kPrefix, sizeof(kPrefix) - 1);
  std::memcpy(*out + sizeof(kPrefix) - 1, what, std::strlen(what) + 1);
  *out_len = n;
  return 1;
}

}  // namespace
}  // namespace pallasvm::jax_bridge

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    PallasvmCall, pallasvm::jax_bridge::PallasvmCallImpl,
    ffi::Ffi::Bind()
        .Ctx<ffi::RunId>()
        .RemainingArgs()
        .RemainingRets()
        .Attr<std::string_view>("module_key")
        .Attr<ffi::Span<const uint8_t>>("module")
        .Attr<ffi::Span<const int32_t>>("grid_coordinates")
        .Attr<int64_t>("num_cores")
        .Attr<int64_t>("uninitialized_memory")
        .Attr<int64_t>("out_of_bounds_reads")
        .Attr<int64_t>("record_grid_points")
        .Attr<int64_t>("detect_races")
        .Attr<int64_t>("timeout_ns")
        .Attr<int64_t>("dma_execution_mode")
        .Attr<int64_t>("leftover_semaphores")
        .Attr<int64_t>("uninitialized_reads")
        .Attr<int64_t>("num_devices")
        .Attr<int64_t>("callsite")
        .Attr<ffi::Span<const int32_t>>("mesh_sizes"));

extern "C" {

// Compiles an interchange (JSON or binary, format/kernel.fbs) into module
// bytes. Returns 0 and sets *out / *out_len to the module, or returns
// nonzero and sets *out / *out_len to the error message: 2 for a kernel
// that uses a feature pallasvm lacks yet (UNIMPLEMENTED), 1 for any other
// refusal. *out is malloc'ed (free it with pallasvm_free) and
// NUL-terminated.
// Never throws: an exception is returned as error 1 with its message.
__attribute__((visibility("default"))) int pallasvm_compile(
    const char* interchange, size_t interchange_len, const char* origin,
    char** out, size_t* out_len) {
  using pallasvm::jax_bridge::CompileFailure;
  *out = nullptr;
  *out_len = 0;
  try {
    absl::StatusOr<std::string> module = pallasvm::compiler::CompileInterchange(
        absl::string_view(interchange, interchange_len), origin);
    absl::string_view result =
        module.ok() ? absl::string_view(*module) : module.status().message();
    *out = pallasvm::jax_bridge::CopyToMalloc(result);
    *out_len = *out == nullptr ? 0 : result.size();
    if (module.ok()) return *out == nullptr ? 1 : 0;
    return module.status().code() == absl::StatusCode::kUnimplemented ? 2 : 1;
  } catch (const std::bad_alloc&) {
    return CompileFailure("out of memory", out, out_len);
  } catch (const std::exception& e) {
    return CompileFailure(e.what(), out, out_len);
  } catch (...) {
    return CompileFailure("unknown exception", out, out_len);
  }
}

// As pallasvm_compile, through the on-disk module cache that the command
// line uses (compiler/module_cache.h): `cache_dir` NULL or empty is the
// default directory. *hit (if not NULL) says whether the module came from
// the cache. A cache that cannot be read or written only costs a compile.
__attribute__((visibility("default"))) int pallasvm_compile_cached(
    const char* interchange, size_t interchange_len, const char* origin,
    const char* cache_dir, char** out, size_t* out_len, int* hit) {
  using pallasvm::jax_bridge::CompileFailure;
  *out = nullptr;
  *out_len = 0;
  if (hit != nullptr) *hit = 0;
  try {
    pallasvm::compiler::ModuleCache cache(
        cache_dir == nullptr || *cache_dir == '\0'
            ? pallasvm::compiler::ModuleCache::DefaultDirectory()
            : std::string(cache_dir));
    bool from_cache = false;
    absl::StatusOr<std::string> module = cache.GetOrCompile(
        absl::string_view(interchange, interchange_len), origin, &from_cache);
    if (hit != nullptr) *hit = from_cache ? 1 : 0;
    absl::string_view result =
        module.ok() ? absl::string_view(*module) : module.status().message();
    *out = pallasvm::jax_bridge::CopyToMalloc(result);
    *out_len = *out == nullptr ? 0 : result.size();
    if (module.ok()) return *out == nullptr ? 1 : 0;
    return module.status().code() == absl::StatusCode::kUnimplemented ? 2 : 1;
  } catch (const std::bad_alloc&) {
    return CompileFailure("out of memory", out, out_len);
  } catch (const std::exception& e) {
    return CompileFailure(e.what(), out, out_len);
  } catch (...) {
    return CompileFailure("unknown exception", out, out_len);
  }
}

__attribute__((visibility("default"))) void pallasvm_free(void* p) {
  std::free(p);
}

// The primitives the compiler has lowering rules for, one per line as
// "<name> pure" or "<name> effectful" (sorted; see compiler/lowering.h).
// A static string: do not free it.
__attribute__((visibility("default"))) const char* pallasvm_lowering_rules() {
  // Built once; an exception while building it (out of memory) gives an
  // empty listing, not an abort.
  static const std::string* listing = []() -> const std::string* {
    try {
      std::vector<std::string> lines;
      for (const auto& [name, rule] : pallasvm::compiler::Rules().rules()) {
        lines.push_back(absl::StrCat(name, rule.pure ? " pure" : " effectful"));
      }
      std::sort(lines.begin(), lines.end());
      return new std::string(absl::StrJoin(lines, "\n"));
    } catch (...) {
      static const std::string empty;
      return &empty;
    }
  }();
  return listing->c_str();
}

// The compiler's default memory limit in bytes (CompileOptions).
__attribute__((visibility("default"))) int64_t pallasvm_memory_limit() {
  return pallasvm::vm::DefaultMemoryLimit();
}

// The compiler's version string (part of the bridge's cache key).
__attribute__((visibility("default"))) const char* pallasvm_compiler_version() {
  // A string literal's view: NUL-terminated, and nothing to allocate.
  return pallasvm::compiler::kCompilerVersion.data();
}

}  // extern "C"
