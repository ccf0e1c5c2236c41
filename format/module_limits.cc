#include "format/module_limits.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pallasvm::format {
namespace {

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

absl::Status CheckArrayShape(absl::Span<const int64_t> shape,
                             absl::string_view what) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    return absl::UnimplementedError(
        absl::StrCat(what, " has rank ", shape.size(),
                     ", over pallasvm's maximum of ", kMaxRank));
  }
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has a negative dimension: ", ShapeString(shape)));
    }
    if (d == 0) continue;
    if (elements > kMaxElements / d) {
      return absl::OutOfRangeError(absl::StrCat(
          what, " has shape ", ShapeString(shape),
          ": more than 2^40 elements (not counting dimensions of 0), "
          "pallasvm's limit"));
    }
    elements *= d;
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CheckGrid(absl::Span<const int64_t> grid) {
  if (grid.size() > static_cast<size_t>(kMaxRank)) {
    return absl::UnimplementedError(
        absl::StrCat("the grid has ", grid.size(),
                     " dimensions, over pallasvm's maximum of ", kMaxRank));
  }
  int num_dynamic = 0;
  int64_t points = 1;
  for (size_t g = 0; g < grid.size(); ++g) {
    const int64_t size = grid[g];
    if (size == kDynamicGridDimension) {
      ++num_dynamic;
      continue;
    }
    if (size < 1 || size > kMaxGridDimension) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grid dimension ", g, " has size ", size,
          "; pallasvm runs grid dimensions of 1 to 2^31 - 1 (program ids are "
          "int32)"));
    }
    if (points > kMaxGridPoints / size) {
      return absl::InvalidArgumentError(
          absl::StrCat("the grid (", absl::StrJoin(grid, ", "),
                       ") has more than 2^62 points"));
    }
    points *= size;
  }
  return num_dynamic;
}

absl::Status CheckBlockDim(bytecode::BlockDimKind kind, int64_t size,
                           absl::string_view what) {
  if (kind > bytecode::BlockDimKind::MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has kind ", static_cast<int>(kind),
                     ", not one of BLOCKED (0), SQUEEZED (1), ELEMENT (2)"));
  }
  if (kind == bytecode::BlockDimKind::SQUEEZED && size != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is SQUEEZED with size ", size,
                     " (a squeezed dimension has size 1)"));
  }
  if (size < 1 || size > kMaxBlockDimension) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has size ", size, ", not in [1, 2^31 - 1]"));
  }
  return absl::OkStatus();
}

absl::Status CheckAlias(int alias, int64_t input, int64_t output,
                        int num_operands, int num_results,
                        absl::FunctionRef<bool(int, int)> same_type) {
  const std::string what = absl::StrCat("input_output_aliases[", alias, "]");
  if (input < 0 || input >= num_operands) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " names operand ", input, " of the pallas_call's ",
                     num_operands));
  }
  if (output < 0 || output >= num_results) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " names result ", output, " of the pallas_call's ", num_results));
  }
  if (!same_type(static_cast<int>(input), static_cast<int>(output))) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": operand ", input, " and result ", output,
                     " differ in dtype or shape"));
  }
  return absl::OkStatus();
}

}  // namespace pallasvm::format
