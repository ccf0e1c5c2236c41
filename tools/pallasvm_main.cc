// The `pallasvm` command: compile, run and disassemble kernels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "compiler/compiler.h"
#include "runtime/pallasvm.h"
#include "tools/kernel_files.h"
#include "tools/npy.h"
#include "tools/output_check.h"
#include "vm/interpreter.h"
#include "vm/memory_limit.h"

namespace pallasvm::tools {
namespace {

constexpr const char* kUsage = R"(pallasvm: run Pallas TPU kernels on the CPU

usage: pallasvm <command> [options]

commands:
  compile   compile a kernel interchange (.json/.pvmk) to a module (.pvm)
  run       run a kernel on .npy inputs, optionally check and time it
  disasm    print a readable listing of a kernel's bytecode

`pallasvm <command> --help` describes each command.
)";

constexpr const char* kCompileUsage =
    R"(usage: pallasvm compile KERNEL.json -o MODULE.pvm

Compiles an exported pallas_call (kernel interchange, JSON or binary) to a
bytecode module, for offline precompilation. The module can be given to
`pallasvm run`, `pallasvm disasm` or the C++ API (pallasvm::Executable).

options:
  -o, --output PATH   where to write the module (required; never the input
                      or a directory); written whole or not at all
)";

constexpr const char* kRunUsage =
    R"(usage: pallasvm run KERNEL [INPUT.npy ...] [options]

KERNEL is a module (.pvm), a kernel interchange (.json/.pvmk; compiled once
and cached by content hash), or a fixture directory holding kernel.json,
input_<i>.npy and expected_<i>.npy (then inputs and expected outputs are
taken from it).

options:
  --expected PATH       an expected output .npy (repeat, one per output)
  --check               compare the outputs with the expected ones and
                        report the largest difference; exit 1 on mismatch
  --atol X, --rtol Y    tolerance for float outputs (default: 1e-5 for f32,
                        1e-2 for bf16); integers and bools compare exactly
  -o, --output-dir DIR  write output_<i>.npy into DIR
  --time                time the kernel: per call and per grid step
  --min-time SECONDS    minimum total timing duration (default 1; 0 to
                        86400)
  --timeout SECONDS     stop a call that runs longer (DEADLINE_EXCEEDED,
                        naming the grid point, core and source line);
                        default 0: no timeout
  --memory-limit BYTES  the most the kernel's buffers, inputs and outputs
                        may take, e.g. 512M or 8G (default: the physical
                        memory, or RLIMIT_AS if lower)
  --cores N             simulated TensorCores (threads), splitting the
                        `parallel` grid dimensions as interpret mode's
                        num_cores_or_threads does (default 1)
  --uninitialized nan|zero
                        fill value of fresh buffers and block padding
                        (default nan: NaN for floats, max for integers)
  --out-of-bounds-reads raise|uninitialized
                        a read outside a buffer (or an input block past
                        its array) is an error (default), or reads the fill
  --dma-execution-mode on_wait|eager
                        when a DMA is carried out: when a wait needs it
                        (default, as interpret mode) or when it starts
  --detect-races        report races (block copies across cores, and each
                        core's accesses against its DMAs in flight)
  --uninitialized-reads off|warn|error
                        report reads of elements nothing has written (edge
                        padding, fresh scratch and run_scoped buffers,
                        output blocks, DMA destinations before their wait):
                        as warnings, or as an error (default off)
  --no-cache            compile without the module cache
  --cache-dir DIR       module cache directory (default: $PALLASVM_CACHE_DIR,
                        $XDG_CACHE_HOME/pallasvm or ~/.cache/pallasvm)
)";

constexpr const char* kDisasmUsage =
    R"(usage: pallasvm disasm KERNEL [--no-cache]

Prints the kernel's grid, refs and block mappings, then every function's
instructions with operands and the Python source line each came from.
KERNEL is a module (.pvm) or a kernel interchange (.json/.pvmk). Nothing
is run or allocated for it, so any size of kernel can be listed.
)";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "pallasvm: error: %s\n",
               std::string(s.message()).c_str());
  return 1;
}

int UsageError(const std::string& message, const char* usage) {
  std::fprintf(stderr, "pallasvm: %s\n\n%s", message.c_str(), usage);
  return 2;
}

bool IsHelp(const std::string& a) { return a == "-h" || a == "--help"; }

// "1048576", "512K", "512M", "8G", "1T" (binary units, an optional "iB" or
// "B"): a positive byte count.
std::optional<int64_t> ParseBytes(std::string v) {
  int shift = 0;
  for (const char* suffix : {"iB", "B"}) {
    if (absl::EndsWith(v, suffix) && v.size() > strlen(suffix)) {
      v.resize(v.size() - strlen(suffix));
      break;
    }
  }
  if (!v.empty()) {
    switch (v.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) v.pop_back();
  }
  double d;
  if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || d < 1) {
    return std::nullopt;
  }
  d = std::ldexp(d, shift);
  if (d >= 9.2e18) return std::nullopt;
  return static_cast<int64_t>(d);
}

int Compile(const std::vector<std::string>& args) {
  std::string input, output;
  for (size_t i = 0; i < args.size(); ++i) {
    if (IsHelp(args[i])) {
      std::fputs(kCompileUsage, stdout);
      return 0;
    } else if ((args[i] == "-o" || args[i] == "--output") &&
               i + 1 < args.size()) {
      output = args[++i];
    } else if (!args[i].empty() && args[i][0] == '-') {
      return UsageError("unknown option " + args[i], kCompileUsage);
    } else if (input.empty()) {
      input = args[i];
    } else {
      return UsageError("more than one input", kCompileUsage);
    }
  }
  if (input.empty() || output.empty()) {
    return UsageError("need a KERNEL and -o MODULE", kCompileUsage);
  }
  std::error_code ec;
  if (std::filesystem::is_directory(output, ec)) {
    return UsageError("the output " + output + " is a directory",
                      kCompileUsage);
  }
  if (std::filesystem::exists(output, ec) &&
      std::filesystem::equivalent(input, output, ec)) {
    return UsageError("the output would overwrite the input", kCompileUsage);
  }
  absl::StatusOr<std::string> bytes = ReadFileBytes(input);
  if (!bytes.ok()) return Fail(bytes.status());
  absl::StatusOr<std::string> module = compiler::CompileInterchange(
      *bytes, input, compiler::ContentHash(*bytes));
  if (!module.ok()) return Fail(module.status());
  if (absl::Status s = WriteFileBytes(output, *module); !s.ok()) {
    return Fail(s);
  }
  std::printf("wrote %s (%zu bytes)\n", output.c_str(), module->size());
  return 0;
}

std::string Describe(const runtime::Kernel& k) {
  int64_t points = 1;  // the loader has checked it fits in 2^62
  std::vector<std::string> dims;
  for (int64_t g : k.grid) {
    if (g > 0) points *= g;
    dims.push_back(g == runtime::kDynamicGridDim ? "dynamic"
                                                 : absl::StrCat(g));
  }
  std::vector<std::string> ins, outs;
  for (const auto& t : k.in_types) ins.push_back(t.ToString());
  for (const auto& t : k.out_types) outs.push_back(t.ToString());
  const std::string size =
      k.num_dynamic_grid_bounds > 0
          ? (k.num_dynamic_grid_bounds == 1
                 ? std::string("sized by operand 0")
                 : absl::StrFormat("sized by operands 0..%d",
                                   k.num_dynamic_grid_bounds - 1))
          : absl::StrFormat("%d points", points);
  return absl::StrFormat("kernel '%s': grid (%s), %s; (%s) -> (%s)", k.name,
                         absl::StrJoin(dims, ", "), size,
                         absl::StrJoin(ins, ", "), absl::StrJoin(outs, ", "));
}

int Run(const std::vector<std::string>& args) {
  std::string kernel_arg, output_dir;
  std::vector<std::string> inputs, expected;
  bool check = false, time = false;
  double min_time = 1.0, timeout = 0;
  std::optional<double> atol, rtol;
  LoadOptions load;
  RunOptions run_options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    };
    std::string v;
    if (IsHelp(a)) {
      std::fputs(kRunUsage, stdout);
      return 0;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--time") {
      time = true;
    } else if (a == "--no-cache") {
      load.use_cache = false;
    } else if (a == "--expected" && value(&v)) {
      expected.push_back(v);
    } else if ((a == "-o" || a == "--output-dir") && value(&v)) {
      output_dir = v;
    } else if (a == "--cache-dir" && value(&v)) {
      load.cache_dir = v;
    } else if (a == "--cores" && value(&v)) {
      if (!absl::SimpleAtoi(v, &run_options.num_cores)) {
        return UsageError("bad --cores " + v, kRunUsage);
      }
    } else if (a == "--min-time" && value(&v)) {
      if (!absl::SimpleAtod(v, &min_time) || !(min_time >= 0) ||
          !(min_time <= 86400)) {
        return UsageError("bad --min-time " + v + ": expected 0 to 86400",
                          kRunUsage);
      }
    } else if (a == "--timeout" && value(&v)) {
      if (!absl::SimpleAtod(v, &timeout) || !(timeout >= 0) ||
          !(timeout <= 1e9)) {
        return UsageError(
            "bad --timeout " + v + ": expected seconds, 0 (none) to 1e9",
            kRunUsage);
      }
      run_options.timeout = std::chrono::nanoseconds(
          static_cast<int64_t>(std::llround(timeout * 1e9)));
    } else if (a == "--memory-limit" && value(&v)) {
      std::optional<int64_t> bytes = ParseBytes(v);
      if (!bytes) {
        return UsageError("bad --memory-limit " + v +
                              ": expected bytes, e.g. 1048576, 512M or 8G",
                          kRunUsage);
      }
      run_options.memory_limit = load.memory_limit = *bytes;
    } else if ((a == "--atol" || a == "--rtol") && value(&v)) {
      double d;
      if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || d < 0) {
        return UsageError(
            "bad " + a + " " + v + ": expected a finite value >= 0", kRunUsage);
      }
      (a == "--atol" ? atol : rtol) = d;
    } else if (a == "--uninitialized" && value(&v)) {
      if (v == "nan") {
        run_options.uninitialized_memory = UninitializedMemory::kNaN;
      } else if (v == "zero") {
        run_options.uninitialized_memory = UninitializedMemory::kZero;
      } else {
        return UsageError("--uninitialized takes nan or zero", kRunUsage);
      }
    } else if (a == "--dma-execution-mode" && value(&v)) {
      if (v == "on_wait") {
        run_options.dma_execution_mode = runtime::DmaExecutionMode::kOnWait;
      } else if (v == "eager") {
        run_options.dma_execution_mode = runtime::DmaExecutionMode::kEager;
      } else {
        return UsageError("--dma-execution-mode takes on_wait or eager",
                          kRunUsage);
      }
    } else if (a == "--detect-races") {
      run_options.detect_races = true;
    } else if (a == "--uninitialized-reads" && value(&v)) {
      if (v == "off") {
        run_options.uninitialized_reads = runtime::UninitializedReadsCheck::kOff;
      } else if (v == "warn") {
        run_options.uninitialized_reads = runtime::UninitializedReadsCheck::kWarn;
      } else if (v == "error") {
        run_options.uninitialized_reads =
            runtime::UninitializedReadsCheck::kError;
      } else {
        return UsageError("--uninitialized-reads takes off, warn or error",
                          kRunUsage);
      }
    } else if (a == "--out-of-bounds-reads" && value(&v)) {
      if (v == "raise") {
        run_options.out_of_bounds_reads = runtime::OutOfBoundsReads::kRaise;
      } else if (v == "uninitialized") {
        run_options.out_of_bounds_reads =
            runtime::OutOfBoundsReads::kUninitialized;
      } else {
        return UsageError("--out-of-bounds-reads takes raise or uninitialized",
                          kRunUsage);
      }
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("unknown or incomplete option " + a, kRunUsage);
    } else if (kernel_arg.empty()) {
      kernel_arg = a;
    } else {
      inputs.push_back(a);
    }
  }
  if (kernel_arg.empty()) return UsageError("need a KERNEL", kRunUsage);
  std::string kernel_path = kernel_arg;
  if (std::filesystem::is_directory(kernel_arg)) {
    absl::StatusOr<Fixture> f = FindFixture(kernel_arg);
    if (!f.ok()) return Fail(f.status());
    kernel_path = f->kernel_path;
    if (inputs.empty()) inputs = f->inputs;
    if (expected.empty()) expected = f->expected;
  }
  if (check && expected.empty()) {
    return UsageError(
        "--check needs expected outputs (--expected or a "
        "fixture directory)",
        kRunUsage);
  }
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      LoadExecutable(kernel_path, load);
  if (!exe.ok()) return Fail(exe.status());
  const double load_ms = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - t0)
                             .count();
  const runtime::Kernel& k = (*exe)->kernel();
  std::printf("%s\n", Describe(k).c_str());
  std::printf("loaded in %.1f ms\n", load_ms);

  // Inputs and outputs held at once, all within the memory limit: the
  // outputs are counted first, so that no input file is read for a call
  // that could not hold its results.
  int64_t out_bytes = 0;
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    const runtime::ArrayType& t = k.out_types[j];
    out_bytes = vm::CheckedAdd(out_bytes, t.bytes()).value_or(-1);
    if (absl::Status s = vm::CheckMemory(
            absl::StrCat("kernel '", k.name, "': output ", j, " ", t.ToString(),
                         " (with the outputs before it)"),
            out_bytes, run_options.memory_limit);
        !s.ok()) {
      return Fail(s);
    }
  }
  const int64_t limit = vm::ResolveMemoryLimit(run_options.memory_limit);
  absl::StatusOr<std::vector<NpyArray>> in =
      ReadInputs(k, inputs, std::max<int64_t>(limit - out_bytes, 1));
  if (!in.ok()) return Fail(in.status());
  std::vector<Array> in_arrays, out_arrays;
  for (NpyArray& a : *in) {
    in_arrays.push_back(Array{*a.dtype, a.shape, a.data.data()});
  }
  std::vector<std::vector<uint8_t>> out_data;
  for (const auto& t : k.out_types) {
    out_data.emplace_back(std::max<int64_t>(t.bytes(), 1));
  }
  for (size_t j = 0; j < k.out_types.size(); ++j) {
    out_arrays.push_back(
        Array{k.out_types[j].dtype, k.out_types[j].shape, out_data[j].data()});
  }
  // Semaphores left non-zero and DMAs never waited for, and races.
  std::vector<std::string> warnings;
  runtime::RaceReport races;
  run_options.warnings = &warnings;
  run_options.races = &races;
  absl::Status run_status = (*exe)->Run(in_arrays, out_arrays, run_options);
  for (const std::string& w : warnings) {
    std::fprintf(stderr, "warning: %s\n", w.c_str());
  }
  run_options.warnings = nullptr;  // the timed runs below repeat them
  if (!run_status.ok()) return Fail(run_status);
  if (races.racy_elements > 0) {
    std::fprintf(stderr, "RACE DETECTED: %lld racy elements\n%s",
                 static_cast<long long>(races.racy_elements),
                 races.description.c_str());
  }
  int status = 0;
  if (!expected.empty()) {
    absl::StatusOr<std::vector<NpyArray>> ex =
        ReadExpected(k, expected, std::max<int64_t>(limit - out_bytes, 1));
    if (!ex.ok()) return Fail(ex.status());
    for (size_t j = 0; j < ex->size(); ++j) {
      const auto& t = k.out_types[j];
      Tolerance tol = DefaultTolerance(t.dtype);
      if (atol) tol.atol = *atol;
      if (rtol) tol.rtol = *rtol;
      CheckResult r =
          CompareArrays(t.dtype, out_data[j].data(), (*ex)[j].data.data(),
                        t.num_elements(), tol);
      const bool ok = r.ok();
      std::printf("check output %zu %s against %s: %s (%s; atol %g, rtol %g)\n",
                  j, t.ToString().c_str(), expected[j].c_str(),
                  ok ? "MATCH" : "MISMATCH", r.Summary().c_str(), tol.atol,
                  tol.rtol);
      if (check && !ok) status = 1;
    }
  }
  if (!output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(output_dir, ec);
    if (!std::filesystem::is_directory(output_dir)) {
      return Fail(absl::FailedPreconditionError(
          absl::StrCat("cannot write into ", output_dir, ": not a directory",
                       ec ? ": " + ec.message() : std::string())));
    }
    for (size_t j = 0; j < k.out_types.size(); ++j) {
      std::string path = absl::StrCat(output_dir, "/output_", j, ".npy");
      if (absl::Status s = WriteNpy(path, k.out_types[j].dtype,
                                    k.out_types[j].shape, out_data[j].data());
          !s.ok()) {
        return Fail(s);
      }
      std::printf("wrote %s\n", path.c_str());
    }
  }
  if (time) {
    std::vector<const void*> in_data;
    for (const Array& a : in_arrays) in_data.push_back(a.data);
    absl::StatusOr<std::vector<int64_t>> grid =
        runtime::ResolveGrid(k, in_data);
    if (!grid.ok()) return Fail(grid.status());
    int64_t points = 1;  // ResolveGrid has checked it fits in 2^62
    for (int64_t g : *grid) points *= g;
    // Batches of calls until min_time has passed; the median batch is
    // reported, which is robust to a noisy shared machine. A call that
    // fails (its --timeout, say) ends the timing with its error.
    using Clock = std::chrono::steady_clock;
    int64_t batch = 1;
    while (true) {
      auto s = Clock::now();
      for (int64_t r = 0; r < batch; ++r) {
        if (absl::Status st = (*exe)->Run(in_arrays, out_arrays, run_options);
            !st.ok()) {
          return Fail(st);
        }
      }
      double secs = std::chrono::duration<double>(Clock::now() - s).count();
      if (secs > min_time / 20 || batch > (int64_t{1} << 30)) break;
      batch *= 2;
    }
    std::vector<double> per_call;
    const auto start = Clock::now();
    while (per_call.size() < 5 ||
           std::chrono::duration<double>(Clock::now() - start).count() <
               min_time) {
      auto s = Clock::now();
      for (int64_t r = 0; r < batch; ++r) {
        if (absl::Status st = (*exe)->Run(in_arrays, out_arrays, run_options);
            !st.ok()) {
          return Fail(st);
        }
      }
      per_call.push_back(
          std::chrono::duration<double>(Clock::now() - s).count() / batch);
    }
    std::sort(per_call.begin(), per_call.end());
    const double median = per_call[per_call.size() / 2];
    std::printf(
        "time: %.3f us per call, %.4f us per grid step (%lld grid steps; "
        "median of %zu batches of %lld calls)\n",
        median * 1e6, points > 0 ? median * 1e6 / points : 0.0,
        static_cast<long long>(points), per_call.size(),
        static_cast<long long>(batch));
  }
  return status;
}

int Disasm(const std::vector<std::string>& args) {
  std::string kernel;
  LoadOptions load;
  for (const std::string& a : args) {
    if (IsHelp(a)) {
      std::fputs(kDisasmUsage, stdout);
      return 0;
    } else if (a == "--no-cache") {
      load.use_cache = false;
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("unknown option " + a, kDisasmUsage);
    } else if (kernel.empty()) {
      kernel = a;
    } else {
      return UsageError("more than one kernel", kDisasmUsage);
    }
  }
  if (kernel.empty()) return UsageError("need a KERNEL", kDisasmUsage);
  if (std::filesystem::is_directory(kernel)) kernel += "/kernel.json";
  load.memory_limit = INT64_MAX;  // listed, never run: nothing is allocated
  absl::StatusOr<std::unique_ptr<Executable>> exe =
      LoadExecutable(kernel, load);
  if (!exe.ok()) return Fail(exe.status());
  const runtime::Kernel& k = (*exe)->kernel();
  std::printf("%s\n", Describe(k).c_str());
  static const char* const kSpaces[] = {"VMEM", "SMEM", "HBM", "SEMAPHORE"};
  for (size_t r = 0; r < k.refs.size(); ++r) {
    const runtime::RefSpec& ref = k.refs[r];
    std::printf("ref %zu: %s %s in %s%s%s\n", r, runtime::RefKindName(ref.kind),
                ref.type.ToString().c_str(),
                kSpaces[static_cast<int>(ref.memory_space)],
                ref.origin.empty() ? "" : "  ", ref.origin.c_str());
  }
  std::printf("frame: %u bytes (%zu bytes of constants)\n\n",
              k.program.frame_size, k.program.constants.size());
  std::fputs(vm::Disassemble(k.program).c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace pallasvm::tools

namespace pallasvm::tools {
namespace {

int Main(int argc, char** argv) {
  if (argc < 2 || IsHelp(argv[1]) || std::string(argv[1]) == "help") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "compile") return Compile(args);
  if (command == "run") return Run(args);
  if (command == "disasm") return Disasm(args);
  return UsageError("unknown command '" + command + "'", kUsage);
}

}  // namespace
}  // namespace pallasvm::tools

// Errors are statuses everywhere below; what the C++ library may still
// throw (std::bad_alloc, std::filesystem_error) is reported the same way,
// never as an abort.
int main(int argc, char** argv) {
  try {
    return pallasvm::tools::Main(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fputs("pallasvm: error: out of memory\n", stderr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pallasvm: error: %s\n", e.what());
  } catch (...) {
    std::fputs("pallasvm: error: unknown exception\n", stderr);
  }
  return 1;
}
