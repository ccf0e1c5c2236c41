// Elementwise primitives: arithmetic, comparisons, logic, transcendental
// functions, conversions and selects.
//
// Narrow dtypes compute in their wide type (vm/opcodes.def): the operands
// are converted up, the op runs, and the result is converted back, which
// rounds once per operation as JAX does on CPU.
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "compiler/lowering.h"
#include "vm/opcodes.h"

namespace pallasvm::compiler {
namespace {

using vm::DType;

bool IsLogical(absl::string_view op) {
  return op == "AND" || op == "OR" || op == "XOR" || op == "NOT";
}
bool IsComparison(absl::string_view op) {
  return op == "EQ" || op == "NE" || op == "LT" || op == "LE" ||
         op == "GT" || op == "GE";
}

// The dtype an op computes in for operands of dtype `t`.
DType ComputeType(absl::string_view op, DType t) {
  if (t == DType::PRED) {
    return IsLogical(op) || IsComparison(op) ? DType::PRED : DType::S32;
  }
  return Widen(t);
}

// 8- and 16-bit integers widen by their own signedness, right for
// arithmetic but not for the ops that look at the narrow bits:
// population_count, clz and shift_right_logical read them zero-extended,
// shift_right_arithmetic sign-extended (for unsigned dtypes too), as XLA
// computes them at the narrow width. Returns x reinterpreted as the narrow
// dtype of the extension wanted (a copy of its bits), or x itself.
bool SeesNarrowBits(absl::string_view op) {
  return op == "POPCNT" || op == "CLZ" || op == "SHRL" || op == "SHRA";
}
Value AsNarrowBits(Lowerer& l, absl::string_view op, const Value& x) {
  const int size = vm::SizeOf(x.dtype);
  if (vm::Info(x.dtype).is_float || size >= 4 || x.dtype == DType::PRED) {
    return x;
  }
  const bool sign_extend = op == "SHRA";
  const DType to = size == 1 ? (sign_extend ? DType::S8 : DType::U8)
                             : (sign_extend ? DType::S16 : DType::U16);
  if (to == x.dtype) return x;
  Value r = l.NewValue(to, x.shape);
  l.CopyInto(r, x);
  return r;
}

Lowerer::Rule BinaryRule(std::string op) {
  return [op](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    if (e.in.size() != 2 || e.out_shapes.size() != 1) {
      return l.Error("expects two operands and one result");
    }
    const Value& x = e.in[0];
    const Value& y = e.in[1];
    if (x.is_ref() || y.is_ref()) return l.Error("operand is a ref, not a value");
    DType compute = ComputeType(op, x.dtype);
    if (x.dtype != y.dtype && op != "POW") {
      return l.Error(absl::StrCat("operand dtypes differ: ", TypeString(x),
                                  " and ", TypeString(y)));
    }
    absl::StatusOr<Value> r;
    if (SeesNarrowBits(op)) {
      const Value xb = AsNarrowBits(l, op, x);
      r = l.Binary(op, xb, AsNarrowBits(l, op, y), Widen(xb.dtype),
                   e.out_shapes[0]);
    } else {
      r = l.Binary(op, x, y, compute, e.out_shapes[0]);
    }
    if (!r.ok()) return r.status();
    return std::vector<Value>{l.Convert(*r, e.out_dtypes[0])};
  };
}

Lowerer::Rule UnaryRule(std::string op) {
  return [op](Lowerer& l, const Lowerer::Eqn& e)
             -> absl::StatusOr<std::vector<Value>> {
    if (e.in.size() != 1 || e.out_shapes.size() != 1) {
      return l.Error("expects one operand and one result");
    }
    const Value& x = e.in[0];
    if (x.is_ref()) return l.Error("operand is a ref, not a value");
    if (!vm::Info(x.dtype).is_signed && op == "ABS") return std::vector<Value>{x};
    if (SeesNarrowBits(op) && !vm::Info(x.dtype).is_float &&
        vm::SizeOf(x.dtype) < 4 && x.dtype != DType::PRED) {
      // POPCNT or CLZ of the zero-extended bits; CLZ counts from bit 31.
      const Value bits = AsNarrowBits(l, op, x);
      absl::StatusOr<Value> r = l.Unary(op, bits, DType::U32);
      if (!r.ok()) return r.status();
      if (op == "CLZ") {
        r = l.Binary("SUB", *r,
                     l.ConstantScalar(DType::U32, 32 - 8 * vm::SizeOf(x.dtype)),
                     DType::U32, x.shape);
        if (!r.ok()) return r.status();
      }
      return std::vector<Value>{l.Convert(*r, e.out_dtypes[0])};
    }
    absl::StatusOr<Value> r = l.Unary(op, x, ComputeType(op, x.dtype));
    if (!r.ok()) return r.status();
    return std::vector<Value>{l.Convert(*r, e.out_dtypes[0])};
  };
}

absl::StatusOr<std::vector<Value>> LowerRound(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  // lax.RoundingMethod: AWAY_FROM_ZERO = 0, TO_NEAREST_EVEN = 1.
  bool even = false;
  if (const interchange::Param* p = e.Param("rounding_method")) {
    if (p->kind() == interchange::ParamKind::INT) even = p->i() == 1;
    if (p->kind() == interchange::ParamKind::STRING && p->s()) {
      even = absl::StrContains(p->s()->str(), "EVEN") ||
             p->s()->str() == "1";
    }
  }
  return UnaryRule(even ? "ROUND_EVEN" : "ROUND_AWAY")(l, e);
}

absl::StatusOr<std::vector<Value>> LowerSquare(Lowerer& l,
                                               const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  absl::StatusOr<Value> r =
      l.Binary("MUL", x, x, ComputeType("MUL", x.dtype), x.shape);
  if (!r.ok()) return r.status();
  return std::vector<Value>{l.Convert(*r, e.out_dtypes[0])};
}

// integer_pow(x; y): jax._src.lax.lax._integer_pow's own sequence of
// multiplies (square and multiply, the reciprocal taken last for y < 0),
// each rounded to x's dtype as XLA rounds every bf16/f16 multiply of it.
absl::StatusOr<std::vector<Value>> LowerIntegerPow(Lowerer& l,
                                                   const Lowerer::Eqn& e) {
  absl::StatusOr<int64_t> y_or = e.Int("y");
  if (!y_or.ok()) return l.Error(y_or.status().message());
  int64_t y = *y_or;
  Value x = e.in.at(0);
  const DType dtype = x.dtype;
  const DType compute = ComputeType("MUL", dtype);
  // One operation in the compute dtype, rounded back to x's.
  auto op = [&](absl::string_view name, const Value& a,
                const Value& b) -> absl::StatusOr<Value> {
    absl::StatusOr<Value> r = l.Binary(name, a, b, compute, x.shape);
    if (!r.ok()) return r.status();
    return l.Convert(*r, dtype);
  };
  auto one = [&] {
    return l.Convert(compute == DType::F32 ? l.ConstantF32(1.0f)
                                           : l.ConstantScalar(compute, 1),
                     dtype);
  };
  if (y == 0) {
    absl::StatusOr<Value> r = l.Broadcast(one(), x.shape);
    if (!r.ok()) return r.status();
    return std::vector<Value>{l.Convert(*r, e.out_dtypes[0])};
  }
  const bool reciprocal = y < 0;
  if (reciprocal) y = -y;
  std::optional<Value> acc;
  while (y > 0) {
    if (y & 1) {
      if (!acc) {
        acc = x;
      } else {
        absl::StatusOr<Value> m = op("MUL", *acc, x);
        if (!m.ok()) return m.status();
        acc = *m;
      }
    }
    y >>= 1;
    if (y > 0) {
      absl::StatusOr<Value> sq = op("MUL", x, x);
      if (!sq.ok()) return sq.status();
      x = *sq;
    }
  }
  if (reciprocal) {
    absl::StatusOr<Value> r = op("DIV", one(), *acc);
    if (!r.ok()) return r.status();
    acc = *r;
  }
  return std::vector<Value>{l.Convert(*acc, e.out_dtypes[0])};
}

absl::StatusOr<std::vector<Value>> LowerConvert(Lowerer& l,
                                                const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  if (x.is_ref()) return l.Error("operand is a ref, not a value");
  return std::vector<Value>{l.Convert(x, e.out_dtypes.at(0))};
}

absl::StatusOr<std::vector<Value>> LowerIdentity(Lowerer& l,
                                                 const Lowerer::Eqn& e) {
  if (e.in.size() != e.out_shapes.size()) {
    return l.Error("expects as many operands as results");
  }
  return e.in;
}

// select_n(which, *cases): cases[which]. A boolean `which` picks case 1 when
// true; an integer one is compared against each case index in turn.
absl::StatusOr<std::vector<Value>> LowerSelectN(Lowerer& l,
                                                const Lowerer::Eqn& e) {
  if (e.in.size() < 2) return l.Error("select_n needs a predicate and cases");
  const Shape& shape = e.out_shapes.at(0);
  const DType dtype = e.out_dtypes.at(0);
  std::vector<Value> cases;
  for (size_t i = 1; i < e.in.size(); ++i) {
    if (e.in[i].dtype != dtype) return l.Error("case dtypes differ");
    absl::StatusOr<Value> c = l.Broadcast(e.in[i], shape);
    if (!c.ok()) return c.status();
    cases.push_back(*c);
  }
  if (cases.size() == 1) return std::vector<Value>{cases[0]};
  const Value& which = e.in[0];
  auto pred_for = [&](size_t k) -> absl::StatusOr<Value> {
    Value p;
    if (which.dtype == DType::PRED) {
      p = which;
    } else {
      if (vm::Info(which.dtype).is_float) {
        return l.Error("select_n predicate must be bool or integer");
      }
      Value w = l.Convert(which, DType::S32);
      absl::StatusOr<Value> eq =
          l.Binary("EQ", w, l.ConstantScalar(DType::S32, static_cast<int64_t>(k)),
                   DType::S32, w.shape);
      if (!eq.ok()) return eq.status();
      p = *eq;
    }
    return l.Broadcast(p, shape);
  };
  Value result = cases[0];
  for (size_t k = 1; k < cases.size(); ++k) {
    absl::StatusOr<Value> p = pred_for(k);
    if (!p.ok()) return p.status();
    result = l.Select(*p, cases[k], result);
  }
  return std::vector<Value>{result};
}

absl::StatusOr<std::vector<Value>> LowerClamp(Lowerer& l,
                                              const Lowerer::Eqn& e) {
  if (e.in.size() != 3) return l.Error("clamp takes (min, x, max)");
  const Value& x = e.in[1];
  const DType compute = ComputeType("MAX", x.dtype);
  absl::StatusOr<Value> lo = l.Binary("MAX", x, e.in[0], compute, x.shape);
  if (!lo.ok()) return lo.status();
  absl::StatusOr<Value> hi = l.Binary("MIN", *lo, e.in[2], compute, x.shape);
  if (!hi.ok()) return hi.status();
  return std::vector<Value>{l.Convert(*hi, e.out_dtypes[0])};
}

// reduce_precision(x; exponent_bits, mantissa_bits) of f32 to the formats
// of bf16 (8, 7) or f16 (5, 10): a round trip through that dtype (round to
// nearest even). f32's own (8, 23) is the identity.
absl::StatusOr<std::vector<Value>> LowerReducePrecision(Lowerer& l,
                                                        const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  absl::StatusOr<int64_t> exponent = e.Int("exponent_bits");
  absl::StatusOr<int64_t> mantissa = e.Int("mantissa_bits");
  if (!exponent.ok() || !mantissa.ok()) {
    return l.Error("reduce_precision needs exponent_bits and mantissa_bits");
  }
  if (x.is_ref() || x.dtype != DType::F32) {
    return l.Error(absl::StrCat("reduce_precision of ", TypeString(x),
                                ": only f32 is supported yet"));
  }
  if (*exponent == 8 && *mantissa == 23) return std::vector<Value>{x};
  DType via;
  if (*exponent == 8 && *mantissa == 7) {
    via = DType::BF16;
  } else if (*exponent == 5 && *mantissa == 10) {
    via = DType::F16;
  } else {
    return l.Unsupported(absl::StrCat("reduce_precision to (", *exponent, ", ",
                                *mantissa, ") bits is not supported yet"));
  }
  return std::vector<Value>{l.Convert(l.Convert(x, via), DType::F32)};
}

// bitcast_convert_type between dtypes of one size: the same bytes, read as
// the new dtype (a fresh slot holding a copy, so liveness stays simple).
absl::StatusOr<std::vector<Value>> LowerBitcastConvert(Lowerer& l,
                                                       const Lowerer::Eqn& e) {
  const Value& x = e.in.at(0);
  const DType to = e.out_dtypes.at(0);
  if (x.is_ref() || vm::SizeOf(x.dtype) != vm::SizeOf(to)) {
    return l.Unsupported(absl::StrCat("bitcast_convert_type from ", TypeString(x),
                                " changes the element size: not supported yet"));
  }
  Value r = l.NewValue(to, e.out_shapes.at(0));
  l.CopyInto(r, x);
  return std::vector<Value>{r};
}

// erf_inv as XLA computes it for f32 (ErfInv32 in xla/hlo/builder/lib/
// math.cc, also CHLO's decomposition): w = -log1p(-x^2), a degree-8
// polynomial in w - 2.5 (w < 5) or sqrt(w) - 3, times x; +-1 gives +-inf.
// Narrow floats compute in f32 and round once.
absl::StatusOr<std::vector<Value>> LowerErfInv(Lowerer& l,
                                               const Lowerer::Eqn& e) {
  if (e.in.size() != 1 || !vm::Info(e.in[0].dtype).is_float) {
    return l.Error("erf_inv takes one floating-point operand");
  }
  static constexpr float kLess[9] = {
      2.81022636e-08f,  3.43273939e-07f, -3.5233877e-06f,
      -4.39150654e-06f, 0.00021858087f,  -0.00125372503f,
      -0.00417768164f,  0.246640727f,    1.50140941f};
  static constexpr float kGreater[9] = {
      -0.000200214257f, 0.000100950558f, 0.00134934322f,
      -0.00367342844f,  0.00573950773f,  -0.0076224613f,
      0.00943887047f,   1.00167406f,     2.83297682f};
  Composer c{l, e.out_shapes.at(0), absl::OkStatus()};
  const Value x = l.Convert(e.in[0], DType::F32);
  Value w = c.Un("NEG", c.Un("LOG1P", c.Bin("MUL", x, c.Un("NEG", x),
                                            DType::F32)));
  const Value lt = c.Bin("LT", w, c.F32(5.0f), DType::F32);
  // Per element, every coefficient comes from the same table, so the two
  // polynomials are evaluated apart and the right one selected.
  auto horner = [&](const float* coef, const Value& t) {
    Value p = c.F32(coef[0]);
    for (int i = 1; i < 9; ++i) {
      p = c.Bin("ADD", c.F32(coef[i]), c.Bin("MUL", p, t, DType::F32),
                DType::F32);
    }
    return p;
  };
  const Value p_less = horner(kLess, c.Bin("SUB", w, c.F32(2.5f), DType::F32));
  const Value p_greater = horner(
      kGreater, c.Bin("SUB", c.Un("SQRT", w), c.F32(3.0f), DType::F32));
  Value result =
      c.Bin("MUL", c.Select(lt, p_less, p_greater), x, DType::F32);
  const Value at_one = c.Bin("EQ", c.Un("ABS", x), c.F32(1.0f), DType::F32);
  const Value inf = c.Bin(
      "MUL", x, c.F32(std::numeric_limits<float>::infinity()), DType::F32);
  result = c.Select(at_one, inf, result);
  if (!c.status.ok()) return c.status;
  return std::vector<Value>{l.Convert(result, e.out_dtypes[0])};
}

// nextafter(from, to) on f32 bit patterns, as XLA's NextAfter: NaN if
// either is NaN; `to` if they compare equal; the smallest
// subnormal signed like `to` from zero; else one step of the magnitude
// towards `to`.
absl::StatusOr<std::vector<Value>> LowerNextAfter(Lowerer& l,
                                                  const Lowerer::Eqn& e) {
  if (e.in.size() != 2 || e.in[0].dtype != DType::F32 ||
      e.in[1].dtype != DType::F32) {
    return l.Error(absl::StrCat(
        "nextafter is supported on float32 only, not ",
        e.in.empty() ? std::string("no operands") : TypeString(e.in[0])));
  }
  Composer c{l, e.out_shapes.at(0), absl::OkStatus()};
  const Value& from = e.in[0];
  const Value& to = e.in[1];
  Value from_bits = l.NewValue(DType::U32, from.shape);
  l.CopyInto(from_bits, from);
  Value to_bits = l.NewValue(DType::U32, to.shape);
  l.CopyInto(to_bits, to);
  const Value nan_input =
      c.Bin("OR", c.Bin("NE", from, from, DType::F32),
            c.Bin("NE", to, to, DType::F32), DType::PRED);
  const Value magnitude = c.U32(0x7fffffffu), sign = c.U32(0x80000000u);
  const Value from_abs = c.Bin("AND", from_bits, magnitude, DType::U32);
  const Value to_abs = c.Bin("AND", to_bits, magnitude, DType::U32);
  const Value to_sign = c.Bin("AND", to_bits, sign, DType::U32);
  const Value signs_disagree = c.Bin(
      "NE", c.Bin("AND", from_bits, sign, DType::U32), to_sign, DType::U32);
  const Value smaller = c.Bin(
      "OR", c.Bin("GT", from_abs, to_abs, DType::U32), signs_disagree,
      DType::PRED);
  Value result = c.Bin("ADD", from_bits,
                       c.Select(smaller, c.U32(0xffffffffu), c.U32(1)),
                       DType::U32);
  const Value zero = c.U32(0);
  result = c.Select(c.Bin("EQ", from_abs, zero, DType::U32),
                    c.Select(c.Bin("EQ", to_abs, zero, DType::U32), to_bits,
                             c.Bin("OR", to_sign, c.U32(1), DType::U32)),
                    result);
  // Equal as floats (so +0 == -0, and, since the runtime runs with
  // denormals-are-zero like XLA:CPU, subnormals equal zero): `to`.
  result = c.Select(c.Bin("EQ", from, to, DType::F32), to_bits, result);
  result = c.Select(nan_input, c.U32(0x7fc00000u), result);
  if (!c.status.ok()) return c.status;
  Value out = l.NewValue(DType::F32, c.shape);
  l.CopyInto(out, result);
  return std::vector<Value>{out};
}

// threefry2x32(k1, k2, x0, x1) -> (y0, y1): the equation, by Threefry2x32.
absl::StatusOr<std::vector<Value>> LowerThreefry2x32(Lowerer& l,
                                                     const Lowerer::Eqn& e) {
  if (e.in.size() != 4 || e.out_shapes.size() != 2) {
    return l.Error("threefry2x32 takes (k1, k2, x0, x1) and gives two results");
  }
  for (const Value& v : e.in) {
    if (v.is_ref() || v.dtype != DType::U32) {
      return l.Error(absl::StrCat("operand ", TypeString(v), " is not u32"));
    }
  }
  absl::StatusOr<std::pair<Value, Value>> y =
      Threefry2x32(l, e.in[0], e.in[1], e.in[2], e.in[3], e.out_shapes[0]);
  if (!y.ok()) return y.status();
  return std::vector<Value>{y->first, y->second};
}

}  // namespace

// JAX's Threefry-2x32 hash (jax/_src/prng.py, 20 rounds), written out as
// u32 add / rotate / xor.
absl::StatusOr<std::pair<Value, Value>> Threefry2x32(Lowerer& l,
                                                    const Value& k1,
                                                    const Value& k2,
                                                    const Value& x0_in,
                                                    const Value& x1_in,
                                                    const Shape& shape) {
  // u32 ops over the keys' shape and over the counters' (result) shape.
  Composer ck{l, k1.shape, absl::OkStatus()};
  Composer c{l, shape, absl::OkStatus()};
  const Value ks[3] = {
      k1, k2,
      ck.Bin("XOR", ck.Bin("XOR", k1, k2, DType::U32), ck.U32(0x1BD11BDA),
             DType::U32)};
  static constexpr uint32_t kRotations[2][4] = {{13, 15, 26, 6},
                                                {17, 29, 16, 24}};
  Value x0 = c.Bin("ADD", x0_in, ks[0], DType::U32);
  Value x1 = c.Bin("ADD", x1_in, ks[1], DType::U32);
  for (int i = 0; i < 5; ++i) {
    for (uint32_t r : kRotations[i % 2]) {
      x0 = c.Bin("ADD", x0, x1, DType::U32);
      Value rotated = c.Bin("OR", c.Bin("SHL", x1, c.U32(r), DType::U32),
                            c.Bin("SHRL", x1, c.U32(32 - r), DType::U32),
                            DType::U32);
      x1 = c.Bin("XOR", rotated, x0, DType::U32);
    }
    x0 = c.Bin("ADD", x0, ks[(i + 1) % 3], DType::U32);
    x1 = c.Bin("ADD", x1,
               ck.Bin("ADD", ks[(i + 2) % 3], ck.U32(i + 1), DType::U32),
               DType::U32);
  }
  if (!ck.status.ok()) return ck.status;
  if (!c.status.ok()) return c.status;
  return std::pair<Value, Value>{x0, x1};
}

void AddElementwiseRules(RuleTable& t) {
  const std::pair<const char*, const char*> binary[] = {
      {"add", "ADD"}, {"sub", "SUB"}, {"mul", "MUL"}, {"div", "DIV"},
      {"rem", "REM"}, {"max", "MAX"}, {"min", "MIN"}, {"pow", "POW"},
      {"atan2", "ATAN2"}, {"and", "AND"}, {"or", "OR"}, {"xor", "XOR"},
      {"shift_left", "SHL"}, {"shift_right_arithmetic", "SHRA"},
      {"shift_right_logical", "SHRL"}, {"eq", "EQ"}, {"ne", "NE"},
      {"lt", "LT"}, {"le", "LE"}, {"gt", "GT"}, {"ge", "GE"},
  };
  for (const auto& [prim, op] : binary) t.Pure(prim, Arity::Exactly(2, 1), BinaryRule(op));
  const std::pair<const char*, const char*> unary[] = {
      {"neg", "NEG"}, {"abs", "ABS"}, {"sign", "SIGN"}, {"exp", "EXP"},
      {"exp2", "EXP2"}, {"log", "LOG"}, {"log1p", "LOG1P"},
      {"expm1", "EXPM1"}, {"tanh", "TANH"}, {"logistic", "LOGISTIC"},
      {"sqrt", "SQRT"}, {"rsqrt", "RSQRT"}, {"cbrt", "CBRT"},
      {"floor", "FLOOR"}, {"ceil", "CEIL"}, {"sin", "SIN"}, {"cos", "COS"},
      {"tan", "TAN"}, {"erf", "ERF"}, {"erfc", "ERFC"}, {"not", "NOT"},
      {"is_finite", "IS_FINITE"}, {"population_count", "POPCNT"},
      {"clz", "CLZ"},
  };
  for (const auto& [prim, op] : unary) t.Pure(prim, Arity::Exactly(1, 1), UnaryRule(op));
  t.Pure("round", Arity::Exactly(1, 1), LowerRound);
  t.Pure("square", Arity::Exactly(1, 1), LowerSquare);
  t.Pure("integer_pow", Arity::Exactly(1, 1), LowerIntegerPow);
  t.Pure("convert_element_type", Arity::Exactly(1, 1), LowerConvert);
  t.Pure("select_n", Arity::AtLeast(2, 1), LowerSelectN);
  t.Pure("clamp", Arity::Exactly(3, 1), LowerClamp);
  t.Pure("threefry2x32", Arity::Exactly(4, 2), LowerThreefry2x32);
  t.Pure("bitcast_convert_type", Arity::Exactly(1, 1), LowerBitcastConvert);
  t.Pure("reduce_precision", Arity::Exactly(1, 1), LowerReducePrecision);
  t.Pure("erf_inv", Arity::Exactly(1, 1), LowerErfInv);
  t.Pure("nextafter", Arity::Exactly(2, 1), LowerNextAfter);
  // Identities on a CPU: hints and barriers that change no value.
  for (const char* p : {"copy", "copy_p", "multiple_of", "optimization_barrier",
                        "stop_gradient", "pvary", "reduce_precision_noop"}) {
    t.Pure(p, Arity::Any(), LowerIdentity);
  }
}

}  // namespace pallasvm::compiler
