// The NV -> KHR cooperative-matrix rewriter (engine/vulkan/spirv_coop_khr.h) on the real embedded
// matmul_coop SPIR-V and on small hand-made modules. The KHR output is checked by a reader written
// here, independent of the rewriter: no NV-form instruction left, every multiply-add operand of
// the KHR type of its use with matching sizes, loads and stores with layout constants, types
// consistent across loads / stores / phis, ids below the bound. Needs no Vulkan device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/vulkan/shaders.h"
#include "engine/vulkan/spirv_coop_khr.h"

namespace garnet::vk {
namespace {

// SPIR-V numbers the checks use.
constexpr uint32_t kOpExtension = 10, kOpCapability = 17, kOpTypeBool = 20, kOpTypeInt = 21,
                   kOpTypeFloat = 22, kOpTypeArray = 28, kOpTypePointer = 32, kOpConstantTrue = 41,
                   kOpConstantFalse = 42, kOpConstant = 43, kOpConstantNull = 46, kOpVariable = 59,
                   kOpLoad = 61, kOpStore = 62, kOpAccessChain = 65, kOpPhi = 245;
constexpr uint32_t kOpTypeCoopKhr = 4456, kOpLoadKhr = 4457, kOpStoreKhr = 4458,
                   kOpMulAddKhr = 4459;
constexpr uint32_t kOpTypeCoopNv = 5358, kOpLoadNv = 5359, kOpStoreNv = 5360, kOpMulAddNv = 5361,
                   kOpLengthNv = 5362;

struct Instr {
  uint32_t op;
  std::vector<uint32_t> ops;
};

// Splits a module into instructions; fails the test (and returns nothing) on a bad stream.
std::vector<Instr> Instructions(std::span<const uint32_t> w) {
  std::vector<Instr> out;
  EXPECT_GE(w.size(), 5u);
  EXPECT_EQ(w[0], 0x07230203u);
  size_t i = 5;
  while (i < w.size()) {
    const uint32_t count = w[i] >> 16;
    if (count == 0 || count > w.size() - i) {
      ADD_FAILURE() << "word " << i << ": instruction word count " << count << " does not fit";
      return {};
    }
    out.push_back(
        Instr{w[i] & 0xffff, std::vector<uint32_t>(w.begin() + i + 1, w.begin() + i + count)});
    i += count;
  }
  return out;
}

// Instructions with a result type (operand 0) and result (operand 1) among those the checks read.
bool HasTypedResult(uint32_t op) {
  static const std::set<uint32_t> kOps = {1,
                                          kOpConstantTrue,
                                          kOpConstantFalse,
                                          kOpConstant,
                                          44,
                                          kOpConstantNull,
                                          50,
                                          52,
                                          kOpVariable,
                                          kOpLoad,
                                          kOpAccessChain,
                                          66,
                                          80,
                                          81,
                                          82,
                                          83,
                                          115,
                                          124,
                                          128,
                                          129,
                                          130,
                                          131,
                                          132,
                                          133,
                                          134,
                                          136,
                                          143,
                                          169,
                                          kOpPhi,
                                          kOpLoadKhr,
                                          kOpMulAddKhr};
  return kOps.count(op) > 0;
}

struct CoopType {
  uint32_t component, scope, rows, cols, use;
};

struct Counts {
  int loads = 0, stores = 0, muladds = 0;
};

Counts CountNv(std::span<const uint32_t> w) {
  Counts c;
  for (const Instr& in : Instructions(w)) {
    c.loads += in.op == kOpLoadNv;
    c.stores += in.op == kOpStoreNv;
    c.muladds += in.op == kOpMulAddNv;
  }
  return c;
}

// Checks `w` as a KHR-form cooperative-matrix module; `expect` are the NV module's counts.
void CheckKhrModule(std::span<const uint32_t> w, const Counts& expect, const std::string& what) {
  SCOPED_TRACE(what);
  const std::vector<Instr> insts = Instructions(w);
  ASSERT_FALSE(insts.empty());
  const uint32_t bound = w[3];
  std::map<uint32_t, uint32_t> type_of, float_width, int_width, pointee, const_value;
  std::map<uint32_t, CoopType> coop;
  std::set<uint32_t> defined;
  bool cap_khr = false, ext_khr = false;
  Counts got;
  auto define = [&](uint32_t id) {
    EXPECT_GT(id, 0u);
    EXPECT_LT(id, bound) << "result id beyond the bound";
    EXPECT_TRUE(defined.insert(id).second) << "id " << id << " defined twice";
  };
  for (const Instr& in : insts) {
    EXPECT_TRUE(in.op < kOpTypeCoopNv || in.op > kOpLengthNv) << "NV-form opcode " << in.op;
    switch (in.op) {
      case kOpCapability:
        ASSERT_EQ(in.ops.size(), 1u);
        EXPECT_NE(in.ops[0], 5357u) << "CooperativeMatrixNV capability left";
        cap_khr |= in.ops[0] == 6022;
        break;
      case kOpExtension: {
        const std::string e = SpirvString(in.ops);
        EXPECT_NE(e, "SPV_NV_cooperative_matrix");
        ext_khr |= e == "SPV_KHR_cooperative_matrix";
        break;
      }
      case kOpTypeBool:
        define(in.ops[0]);
        break;
      case kOpTypeInt:
        define(in.ops[0]);
        int_width[in.ops[0]] = in.ops[1];
        break;
      case kOpTypeFloat:
        define(in.ops[0]);
        float_width[in.ops[0]] = in.ops[1];
        break;
      case kOpTypePointer:
        define(in.ops[0]);
        pointee[in.ops[0]] = in.ops[2];
        break;
      case kOpTypeArray:
        define(in.ops[0]);
        break;
      case kOpTypeCoopKhr: {
        ASSERT_EQ(in.ops.size(), 6u);
        define(in.ops[0]);
        ASSERT_TRUE(const_value.count(in.ops[5])) << "Use operand is not a constant";
        const CoopType t{in.ops[1], in.ops[2], in.ops[3], in.ops[4], const_value[in.ops[5]]};
        EXPECT_LE(t.use, 2u);
        for (const auto& [id, other] : coop) {
          EXPECT_FALSE(other.component == t.component && other.scope == t.scope &&
                       other.rows == t.rows && other.cols == t.cols && other.use == t.use)
              << "types " << id << " and " << in.ops[0] << " are the same KHR type";
        }
        coop[in.ops[0]] = t;
        break;
      }
      default:
        break;
    }
    if (HasTypedResult(in.op)) {
      ASSERT_GE(in.ops.size(), 2u);
      define(in.ops[1]);
      type_of[in.ops[1]] = in.ops[0];
      if (in.op == kOpConstant && in.ops.size() == 3 && int_width[in.ops[0]] == 32) {
        const_value[in.ops[1]] = in.ops[2];
      }
    }
  }
  EXPECT_TRUE(cap_khr) << "no CooperativeMatrixKHR capability";
  EXPECT_TRUE(ext_khr) << "no SPV_KHR_cooperative_matrix extension";

  auto coop_of = [&](uint32_t value) -> const CoopType* {
    const auto t = type_of.find(value);
    if (t == type_of.end()) return nullptr;
    const auto c = coop.find(t->second);
    return c == coop.end() ? nullptr : &c->second;
  };
  auto layout_ok = [&](uint32_t id) {
    const auto v = const_value.find(id);
    return v != const_value.end() && v->second <= 1;
  };
  auto pointee_of = [&](uint32_t ptr_value) { return pointee[type_of[ptr_value]]; };
  for (const Instr& in : insts) {
    switch (in.op) {
      case kOpMulAddKhr: {
        ++got.muladds;
        ASSERT_GE(in.ops.size(), 5u);
        const CoopType* a = coop_of(in.ops[2]);
        const CoopType* b = coop_of(in.ops[3]);
        const CoopType* c = coop_of(in.ops[4]);
        ASSERT_TRUE(a && b && c) << "multiply-add operand without a KHR matrix type";
        EXPECT_EQ(type_of[in.ops[4]], in.ops[0]) << "C and the result differ in type";
        EXPECT_EQ(a->use, 0u) << "A operand " << in.ops[2] << " is not MatrixA";
        EXPECT_EQ(b->use, 1u) << "B operand " << in.ops[3] << " is not MatrixB";
        EXPECT_EQ(c->use, 2u) << "C operand " << in.ops[4] << " is not MatrixAccumulator";
        // A is M x K, B is K x N, C is M x N (the size operands are constant ids).
        EXPECT_EQ(const_value[a->rows], const_value[c->rows]);
        EXPECT_EQ(const_value[a->cols], const_value[b->rows]);
        EXPECT_EQ(const_value[b->cols], const_value[c->cols]);
        EXPECT_EQ(float_width[a->component], 16u);
        EXPECT_EQ(float_width[b->component], 16u);
        EXPECT_EQ(float_width[c->component], 32u);
        EXPECT_TRUE(a->scope == b->scope && b->scope == c->scope);
        break;
      }
      case kOpLoadKhr:
        ++got.loads;
        ASSERT_GE(in.ops.size(), 4u);
        EXPECT_TRUE(coop.count(in.ops[0])) << "load of a non-KHR type";
        EXPECT_TRUE(layout_ok(in.ops[3])) << "load layout " << in.ops[3] << " is not 0 / 1";
        break;
      case kOpStoreKhr:
        ++got.stores;
        ASSERT_GE(in.ops.size(), 3u);
        EXPECT_TRUE(coop_of(in.ops[1])) << "store of a value without a KHR matrix type";
        EXPECT_TRUE(layout_ok(in.ops[2])) << "store layout " << in.ops[2] << " is not 0 / 1";
        break;
      case kOpLoad:
        if (coop_of(in.ops[1])) {
          EXPECT_EQ(pointee_of(in.ops[2]), in.ops[0]) << "load " << in.ops[1];
        }
        break;
      case kOpStore:
        if (coop_of(in.ops[1])) {
          EXPECT_EQ(pointee_of(in.ops[0]), type_of[in.ops[1]]) << "store to " << in.ops[0];
        }
        break;
      case kOpVariable:
        if (in.ops.size() >= 4) {
          EXPECT_EQ(pointee[in.ops[0]], type_of[in.ops[3]]) << "initializer of " << in.ops[1];
        }
        break;
      case kOpPhi:
        for (size_t i = 2; i < in.ops.size(); i += 2) {
          if (type_of.count(in.ops[i])) {
            EXPECT_EQ(type_of[in.ops[i]], in.ops[0]) << "phi " << in.ops[1];
          }
        }
        break;
      default:
        break;
    }
  }
  EXPECT_EQ(got.loads, expect.loads);
  EXPECT_EQ(got.stores, expect.stores);
  EXPECT_EQ(got.muladds, expect.muladds);
}

TEST(SpirvCoopKhr, EveryEmbeddedCoopVariantRewrites) {
  int n = 0;
  for (const SpirvShader& s : AllShaders()) {
    const bool coop = s.name.starts_with("matmul_coop_") || s.name.starts_with("attn_coop_");
    if (!coop || s.name.ends_with("_khr")) continue;
    ++n;
    const std::span<const uint32_t> nv(s.words, s.word_count);
    auto khr = RewriteCoopmatNvToKhr(nv);
    ASSERT_TRUE(khr.ok()) << s.name << ": " << khr.status().ToString();
    const Counts nv_counts = CountNv(nv);
    EXPECT_GT(nv_counts.muladds, 0) << s.name;
    CheckKhrModule(*khr, nv_counts, std::string(s.name));
    // The build embedded the same words (garnet-spirv-coop-khr runs this function).
    const SpirvShader* built = FindShader(std::string(s.name) + "_khr");
    ASSERT_NE(built, nullptr) << s.name << "_khr is not embedded";
    EXPECT_TRUE(
        std::equal(khr->begin(), khr->end(), built->words, built->words + built->word_count) &&
        khr->size() == built->word_count)
        << s.name << "_khr differs from the rewriter's output";
  }
  EXPECT_EQ(n, 49) << "matmul_coop_<type>, matmul_coop_id_<type> and matmul_coop_n64_<type> "
                      "for 15 weight types, attn_coop_d<64|128|256|512>";
}

// Malformed word streams are errors, never crashes: cut and corrupted copies of a real module.
TEST(SpirvCoopKhr, MalformedStreamsAreErrors) {
  const SpirvShader* s = FindShader("matmul_coop_q4_k");
  ASSERT_NE(s, nullptr);
  const std::vector<uint32_t> good(s->words, s->words + s->word_count);
  EXPECT_TRUE(RewriteCoopmatNvToKhr({}).status().IsInvalidArgument());
  std::vector<uint32_t> w = good;
  w[0] = 0x03022307;  // byte-swapped magic
  EXPECT_TRUE(RewriteCoopmatNvToKhr(w).status().IsInvalidArgument());
  w = good;
  w[3] = 0xffffffff;  // bound
  EXPECT_TRUE(RewriteCoopmatNvToKhr(w).status().IsInvalidArgument());
  w = good;
  w[5] &= 0xffff;  // first instruction: word count 0
  const Status zero = RewriteCoopmatNvToKhr(w).status();
  EXPECT_TRUE(zero.IsInvalidArgument()) << zero.ToString();
  EXPECT_NE(zero.message().find("word count 0"), std::string::npos) << zero.ToString();
  // Every cut that ends mid-instruction is InvalidArgument; others may fail for what is missing.
  std::set<size_t> ends;
  for (size_t i = 5; i < good.size(); i += good[i] >> 16) ends.insert(i);
  for (size_t len = 6; len < good.size(); len += 37) {
    const Status cut = RewriteCoopmatNvToKhr(std::span(good).first(len)).status();
    if (!ends.count(len)) {
      EXPECT_TRUE(cut.IsInvalidArgument()) << len << ": " << cut.ToString();
    }
  }
  // Random single-word corruptions: any result, as long as it returns.
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 300; ++i) {
    w = good;
    w[5 + rng() % (w.size() - 5)] = rng() % 3 == 0 ? rng() : rng() % 10000;
    errors += !RewriteCoopmatNvToKhr(w).ok();
  }
  std::printf("  %d of 300 corrupted modules rejected\n", errors);
}

// A small NV module built word by word.
class ModuleBuilder {
 public:
  uint32_t Id() { return next_++; }
  void Op(uint32_t op, std::vector<uint32_t> ops) {
    body_.push_back(static_cast<uint32_t>((ops.size() + 1) << 16) | op);
    body_.insert(body_.end(), ops.begin(), ops.end());
  }
  void OpString(uint32_t op, std::vector<uint32_t> ops, std::string_view s) {
    std::vector<uint32_t> words((s.size() + 4) / 4, 0);
    for (size_t i = 0; i < s.size(); ++i) {
      words[i / 4] |= uint32_t{static_cast<unsigned char>(s[i])} << (8 * (i % 4));
    }
    ops.insert(ops.end(), words.begin(), words.end());
    Op(op, ops);
  }
  std::vector<uint32_t> Words() const {
    std::vector<uint32_t> w = {0x07230203, 0x00010500, 0, next_, 0};
    w.insert(w.end(), body_.begin(), body_.end());
    return w;
  }

 private:
  uint32_t next_ = 1;
  std::vector<uint32_t> body_;
};

// A compute shader that loads two f16 matrices from shared memory (A row-major, B column-major)
// into variables initialised from ONE null constant, multiplies them into an accumulator that a
// phi carries, and stores it. `b_is_a` feeds the A value to both operands; `length` adds an
// OpCooperativeMatrixLengthNV.
std::vector<uint32_t> SmallNvModule(bool b_is_a = false, bool length = false) {
  ModuleBuilder m;
  const uint32_t main = m.Id(), void_t = m.Id(), fn_t = m.Id(), u32 = m.Id(), f16 = m.Id(),
                 f32 = m.Id(), boolean = m.Id(), c0 = m.Id(), c3 = m.Id(), c16 = m.Id(),
                 c256 = m.Id(), mh = m.Id(), mf = m.Id(), pmh = m.Id(), pmf = m.Id(), arr = m.Id(),
                 parr = m.Id(), pelem = m.Id(), arr32 = m.Id(), parr32 = m.Id(), pelem32 = m.Id(),
                 t = m.Id(), f = m.Id(), zero_h = m.Id(), zero_f = m.Id(), shm = m.Id(),
                 out = m.Id(), entry = m.Id(), next = m.Id(), va = m.Id(), vb = m.Id(), p = m.Id(),
                 la = m.Id(), lb = m.Id(), a = m.Id(), b = m.Id(), acc = m.Id(), prod = m.Id(),
                 q = m.Id(), len = m.Id();
  m.Op(kOpCapability, {1});     // Shader
  m.Op(kOpCapability, {9});     // Float16
  m.Op(kOpCapability, {5345});  // VulkanMemoryModel
  m.Op(kOpCapability, {5357});  // CooperativeMatrixNV
  m.OpString(kOpExtension, {}, "SPV_NV_cooperative_matrix");
  m.Op(14, {0, 3});  // MemoryModel Logical Vulkan
  m.OpString(15, {5, main}, "main");
  m.Op(16, {main, 17, 32, 1, 1});  // LocalSize 32 1 1
  m.Op(19, {void_t});
  m.Op(33, {fn_t, void_t});
  m.Op(kOpTypeInt, {u32, 32, 0});
  m.Op(kOpTypeFloat, {f16, 16});
  m.Op(kOpTypeFloat, {f32, 32});
  m.Op(kOpTypeBool, {boolean});
  m.Op(kOpConstant, {u32, c0, 0});
  m.Op(kOpConstant, {u32, c3, 3});
  m.Op(kOpConstant, {u32, c16, 16});
  m.Op(kOpConstant, {u32, c256, 256});
  m.Op(kOpTypeCoopNv, {mh, f16, c3, c16, c16});
  m.Op(kOpTypeCoopNv, {mf, f32, c3, c16, c16});
  m.Op(kOpTypePointer, {pmh, 7, mh});  // Function
  m.Op(kOpTypePointer, {pmf, 7, mf});
  m.Op(kOpTypeArray, {arr, f16, c256});
  m.Op(kOpTypePointer, {parr, 4, arr});  // Workgroup
  m.Op(kOpTypePointer, {pelem, 4, f16});
  m.Op(kOpTypeArray, {arr32, f32, c256});
  m.Op(kOpTypePointer, {parr32, 4, arr32});
  m.Op(kOpTypePointer, {pelem32, 4, f32});
  m.Op(kOpConstantTrue, {boolean, t});
  m.Op(kOpConstantFalse, {boolean, f});
  m.Op(kOpConstantNull, {mh, zero_h});
  m.Op(kOpConstantNull, {mf, zero_f});
  m.Op(kOpVariable, {parr, shm, 4});
  m.Op(kOpVariable, {parr32, out, 4});
  m.Op(54, {void_t, main, 0, fn_t});  // Function
  m.Op(248, {entry});                 // Label
  m.Op(kOpVariable, {pmh, va, 7, zero_h});
  m.Op(kOpVariable, {pmh, vb, 7, zero_h});
  m.Op(kOpAccessChain, {pelem, p, shm, c0});
  m.Op(kOpLoadNv, {mh, la, p, c16, f});
  m.Op(kOpStore, {va, la});
  m.Op(kOpLoadNv, {mh, lb, p, c16, t});
  m.Op(kOpStore, {vb, lb});
  m.Op(kOpLoad, {mh, a, va});
  m.Op(kOpLoad, {mh, b, vb});
  m.Op(249, {next});  // Branch
  m.Op(248, {next});
  m.Op(kOpPhi, {mf, acc, zero_f, entry});
  m.Op(kOpMulAddNv, {mf, prod, a, b_is_a ? a : b, acc});
  if (length) m.Op(kOpLengthNv, {u32, len, mf});
  m.Op(kOpAccessChain, {pelem32, q, out, c0});
  m.Op(kOpStoreNv, {q, prod, c16, f});
  m.Op(253, {});  // Return
  m.Op(56, {});   // FunctionEnd
  return m.Words();
}

TEST(SpirvCoopKhr, SmallModuleSplitsSharedTypeAndConstantByUse) {
  const std::vector<uint32_t> nv = SmallNvModule();
  auto khr = RewriteCoopmatNvToKhr(nv);
  ASSERT_TRUE(khr.ok()) << khr.status().ToString();
  CheckKhrModule(*khr, {2, 1, 1}, "small module");
  // The f16 type became two (A and B), as did the null constant both variables start from.
  int f16_types = 0, matrix_nulls = 0;
  std::set<uint32_t> khr_types;
  for (const Instr& in : Instructions(*khr)) {
    if (in.op == kOpTypeCoopKhr) khr_types.insert(in.ops[0]);
    if (in.op == kOpTypeCoopKhr && in.ops[1] == 5) ++f16_types;  // f16 is id 5
    if (in.op == kOpConstantNull && khr_types.count(in.ops[0])) ++matrix_nulls;
  }
  EXPECT_EQ(f16_types, 2);
  EXPECT_EQ(matrix_nulls, 3);  // A and B copies of the f16 null, and the f32 one
  EXPECT_GT((*khr)[3], nv[3]) << "new ids raise the bound";
}

TEST(SpirvCoopKhr, ValueUsedAsBothAAndBIsRejected) {
  const Status s = RewriteCoopmatNvToKhr(SmallNvModule(/*b_is_a=*/true)).status();
  EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
  EXPECT_NE(s.message().find("MatrixA and MatrixB"), std::string::npos) << s.ToString();
}

TEST(SpirvCoopKhr, UnfollowedConstructsAreUnimplemented) {
  const Status s = RewriteCoopmatNvToKhr(SmallNvModule(false, /*length=*/true)).status();
  EXPECT_TRUE(s.IsUnimplemented()) << s.ToString();
  EXPECT_NE(s.message().find("Length"), std::string::npos) << s.ToString();
}

TEST(SpirvCoopKhr, ModulesWithoutNvCooperativeMatricesAreRejected) {
  const SpirvShader* s = FindShader("rmsnorm");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(
      RewriteCoopmatNvToKhr(std::span(s->words, s->word_count)).status().IsFailedPrecondition());
  const SpirvShader* k = FindShader("matmul_coop_f16_khr");
  ASSERT_NE(k, nullptr);
  EXPECT_TRUE(
      RewriteCoopmatNvToKhr(std::span(k->words, k->word_count)).status().IsFailedPrecondition());
}

}  // namespace
}  // namespace garnet::vk
