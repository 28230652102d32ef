#include "engine/vulkan/spirv_coop_khr.h"

#include <bit>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace garnet::vk {
namespace {

constexpr std::string_view kWhat = "spirv nv->khr cooperative matrix";

// SPIR-V numbers (unified specification; SPV_NV_cooperative_matrix; SPV_KHR_cooperative_matrix).
constexpr uint32_t kMagic = 0x07230203;
constexpr uint32_t kVersion13 = 0x00010300;
constexpr uint32_t kIdLimit = 0x3fffff;  // the universal limit on the id bound
constexpr uint32_t kMemoryModelVulkan = 3;
constexpr uint32_t kCapCoopNv = 5357;
constexpr uint32_t kCapCoopKhr = 6022;
constexpr std::string_view kExtNv = "SPV_NV_cooperative_matrix";
constexpr std::string_view kExtKhr = "SPV_KHR_cooperative_matrix";

enum Op : uint32_t {
  kOpUndef = 1,
  kOpExtension = 10,
  kOpMemoryModel = 14,
  kOpCapability = 17,
  kOpTypeInt = 21,
  kOpTypeFloat = 22,
  kOpTypeArray = 28,
  kOpTypeRuntimeArray = 29,
  kOpTypeStruct = 30,
  kOpTypePointer = 32,
  kOpTypeFunction = 33,
  kOpConstantTrue = 41,
  kOpConstantFalse = 42,
  kOpConstant = 43,
  kOpConstantComposite = 44,
  kOpConstantNull = 46,
  kOpSpecConstant = 50,
  kOpSpecConstantComposite = 51,
  kOpSpecConstantOp = 52,
  kOpVariable = 59,
  kOpLoad = 61,
  kOpStore = 62,
  kOpCopyMemory = 63,
  kOpAccessChain = 65,
  kOpInBoundsAccessChain = 66,
  kOpDecorate = 71,
  kOpCompositeConstruct = 80,
  kOpCompositeExtract = 81,
  kOpCompositeInsert = 82,
  kOpCopyObject = 83,
  kOpConvertFToU = 109,
  kOpFConvert = 115,
  kOpSNegate = 126,
  kOpFNegate = 127,
  kOpIAdd = 128,
  kOpFDiv = 136,
  kOpMatrixTimesScalar = 143,
  kOpSelect = 169,
  kOpPhi = 245,
  kOpDecorateId = 332,
  kOpDecorateString = 5632,
  kOpTypeCoopNv = 5358,
  kOpCoopLoadNv = 5359,
  kOpCoopStoreNv = 5360,
  kOpCoopMulAddNv = 5361,
  kOpCoopLengthNv = 5362,
  kOpTypeCoopKhr = 4456,
  kOpCoopLoadKhr = 4457,
  kOpCoopStoreKhr = 4458,
  kOpCoopMulAddKhr = 4459,
};

// Instructions that name ids without passing a matrix anywhere (debug, annotations, module
// layout, scalar types and constants, control flow): the check for unfollowed uses skips them.
bool Inert(uint32_t op) {
  switch (op) {
    case 0:     // OpNop
    case 3:     // OpSource
    case 4:     // OpSourceExtension
    case 5:     // OpName
    case 6:     // OpMemberName
    case 7:     // OpString
    case 8:     // OpLine
    case 11:    // OpExtInstImport
    case 15:    // OpEntryPoint (global variables keep their ids)
    case 16:    // OpExecutionMode
    case 19:    // OpTypeVoid
    case 20:    // OpTypeBool
    case 39:    // OpTypeForwardPointer
    case 72:    // OpMemberDecorate
    case 246:   // OpLoopMerge
    case 247:   // OpSelectionMerge
    case 248:   // OpLabel
    case 249:   // OpBranch
    case 253:   // OpReturn
    case 317:   // OpNoLine
    case 330:   // OpModuleProcessed
    case 331:   // OpExecutionModeId
    case 5633:  // OpMemberDecorateString
    case kOpExtension:
    case kOpMemoryModel:
    case kOpCapability:
    case kOpTypeInt:
    case kOpTypeFloat:
    case kOpConstantTrue:
    case kOpConstantFalse:
    case kOpConstant:
    case kOpSpecConstant:
    case kOpDecorate:
    case kOpDecorateId:
    case kOpDecorateString:
      return true;
    default:
      return false;
  }
}

// For the value instructions the rewriter follows (result type at operand 0, result at 1): the
// operand positions whose ids share the result's use when the result is a matrix (or a pointer to
// / array of matrices). nullopt for any other instruction.
std::optional<std::vector<uint32_t>> FlowOperands(uint32_t op, uint32_t n) {
  std::vector<uint32_t> pos;
  switch (op) {
    case kOpVariable:
      if (n >= 4) pos.push_back(3);  // the initializer
      return pos;
    case kOpUndef:
    case kOpConstantNull:
      return pos;
    case kOpLoad:
    case kOpAccessChain:  // the base; the indices are integers
    case kOpInBoundsAccessChain:
    case kOpCopyObject:
    case kOpCompositeExtract:  // the composite; the indices are literals
    case kOpSNegate:
    case kOpFNegate:
      pos.push_back(2);
      return pos;
    case kOpCompositeInsert:  // the object and the composite
    case kOpMatrixTimesScalar:
      pos.insert(pos.end(), {2, 3});
      return pos;
    case kOpSelect:
      pos.insert(pos.end(), {3, 4});
      return pos;
    case kOpCompositeConstruct:
    case kOpConstantComposite:
    case kOpSpecConstantComposite:
      for (uint32_t i = 2; i < n; ++i) pos.push_back(i);
      return pos;
    case kOpPhi:
      for (uint32_t i = 2; i < n; i += 2) pos.push_back(i);  // values; the labels in between
      return pos;
    default:
      break;
  }
  if (op >= kOpConvertFToU && op <= kOpFConvert) {  // the seven numeric conversions
    pos.push_back(2);
    return pos;
  }
  if (op >= kOpIAdd && op <= kOpFDiv) {  // IAdd FAdd ISub FSub IMul FMul UDiv SDiv FDiv
    pos.insert(pos.end(), {2, 3});
    return pos;
  }
  return std::nullopt;
}

// Uses, as bits; the KHR Use enumerant of a bit is its index.
constexpr uint8_t kUseA = 1, kUseB = 2, kUseAcc = 4;
constexpr uint32_t UseEnum(uint8_t use) {
  return use == kUseA ? 0 : use == kUseB ? 1 : 2;
}
constexpr const char* UseName(uint8_t use) {
  return use == kUseA ? "MatrixA" : use == kUseB ? "MatrixB" : "MatrixAccumulator";
}

struct Inst {
  uint32_t op = 0;
  size_t begin = 0;  // index of the first operand word
  uint32_t n = 0;    // operand words
};

enum class Kind : uint8_t { kOther, kCoop, kArray, kPointer };

class Rewriter {
 public:
  explicit Rewriter(std::span<const uint32_t> words) : w_(words) {}

  Result<std::vector<uint32_t>> Run() {
    GARNET_RETURN_IF_ERROR(Parse());
    GARNET_RETURN_IF_ERROR(Scan());
    GARNET_RETURN_IF_ERROR(Follow());
    GARNET_RETURN_IF_ERROR(AssignUses());
    return Emit();
  }

 private:
  uint32_t W(const Inst& in, uint32_t i) const { return w_[in.begin + i]; }
  std::string Where(size_t idx) const {
    return "instruction " + std::to_string(idx) + " (opcode " + std::to_string(insts_[idx].op) +
           ", word " + std::to_string(insts_[idx].begin - 1) + ")";
  }
  Status Malformed(size_t idx, std::string_view detail) const {
    return Status::InvalidArgument(kWhat, Where(idx) + ": " + std::string(detail));
  }
  Status NeedOperands(size_t idx, uint32_t min) const {
    if (insts_[idx].n >= min) return Status::OK();
    return Malformed(idx, "has " + std::to_string(insts_[idx].n) +
                              " operand words, needs at least " + std::to_string(min));
  }
  // Operand `i` of instruction `idx` as an id: nonzero and below the bound.
  Result<uint32_t> Id(size_t idx, uint32_t i) const {
    const uint32_t id = W(insts_[idx], i);
    if (id == 0 || id >= bound_) {
      return Malformed(idx, "operand " + std::to_string(i) + " is id " + std::to_string(id) +
                                ", outside 1.." + std::to_string(bound_ - 1));
    }
    return id;
  }
  // Records `id` as defined by instruction `idx`: a second definition is malformed.
  Status Define(size_t idx, uint32_t id) {
    if (defined_[id]) return Malformed(idx, "id " + std::to_string(id) + " is defined twice");
    defined_[id] = true;
    return Status::OK();
  }
  bool Carries(uint32_t type) const { return type != 0 && kind_[type] != Kind::kOther; }
  // Whether `id` is a value (or variable) whose type carries a matrix.
  bool CarriesValue(uint32_t id) const { return id < bound_ && Carries(type_of_[id]); }
  bool IsCoopConstant(uint32_t id) const { return id < bound_ && const_inst_[id] != kNone; }

  uint32_t Find(uint32_t x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void Union(uint32_t a, uint32_t b) { parent_[Find(a)] = Find(b); }
  uint8_t UseOf(uint32_t id) {
    const uint8_t m = uses_[Find(id)];
    return m ? m : kUseAcc;
  }

  Status Parse() {
    if (w_.size() < 5) return Status::InvalidArgument(kWhat, "shorter than the 5-word header");
    if (w_[0] != kMagic) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "magic 0x%08x, not 0x%08x", w_[0], kMagic);
      return Status::InvalidArgument(kWhat, buf);
    }
    bound_ = w_[3];
    if (bound_ == 0 || bound_ > kIdLimit + 1) {
      return Status::InvalidArgument(kWhat, "id bound " + std::to_string(bound_) +
                                                " is 0 or beyond the SPIR-V limit of " +
                                                std::to_string(kIdLimit));
    }
    for (size_t i = 5; i < w_.size();) {
      const uint32_t count = w_[i] >> 16;
      if (count == 0 || count > w_.size() - i) {
        return Status::InvalidArgument(kWhat,
                                       "word " + std::to_string(i) + ": instruction word count " +
                                           std::to_string(count) + " is 0 or runs past the end (" +
                                           std::to_string(w_.size()) + " words)");
      }
      insts_.push_back(Inst{w_[i] & 0xffff, i + 1, count - 1});
      i += count;
    }
    return Status::OK();
  }

  // Types, constants and the result types of the followed value instructions.
  Status Scan() {
    if (w_[1] < kVersion13) {
      return Status::FailedPrecondition(kWhat,
                                        "SPIR-V version below 1.3, which the KHR form needs");
    }
    kind_.assign(bound_, Kind::kOther);
    elem_.assign(bound_, 0);
    type_of_.assign(bound_, 0);
    float_width_.assign(bound_, 0);
    int32_type_.assign(bound_, false);
    const_inst_.assign(bound_, kNone);
    defined_.assign(bound_, false);
    bool has_cap = false, vulkan_mm = false;
    for (size_t i = 0; i < insts_.size(); ++i) {
      const Inst& in = insts_[i];
      switch (in.op) {
        case kOpCapability:
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 1));
          if (W(in, 0) == kCapCoopNv) has_cap = true;
          if (W(in, 0) == kCapCoopKhr) {
            return Status::FailedPrecondition(kWhat,
                                              "the module already declares "
                                              "CooperativeMatrixKHR");
          }
          break;
        case kOpMemoryModel:
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
          vulkan_mm = W(in, 1) == kMemoryModelVulkan;
          break;
        case kOpTypeFloat: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
          GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 0));
          GARNET_RETURN_IF_ERROR(Define(i, id));
          float_width_[id] = W(in, 1);
          break;
        }
        case kOpTypeInt: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 3));
          GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 0));
          GARNET_RETURN_IF_ERROR(Define(i, id));
          int32_type_[id] = W(in, 1) == 32;
          break;
        }
        case kOpTypeCoopNv: {
          if (in.n != 5) return Malformed(i, "OpTypeCooperativeMatrixNV needs 5 operand words");
          for (uint32_t k = 0; k < 5; ++k) GARNET_RETURN_IF_ERROR(Id(i, k).status());
          GARNET_RETURN_IF_ERROR(Define(i, W(in, 0)));
          kind_[W(in, 0)] = Kind::kCoop;
          elem_[W(in, 0)] = W(in, 1);
          type_inst_.emplace(W(in, 0), i);
          if (first_coop_type_ == kNone) first_coop_type_ = i;
          break;
        }
        case kOpTypeArray:
        case kOpTypeRuntimeArray:
        case kOpTypePointer: {
          const uint32_t elem_pos = in.op == kOpTypePointer ? 2 : 1;
          GARNET_RETURN_IF_ERROR(NeedOperands(i, elem_pos + 1));
          GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 0));
          GARNET_ASSIGN_OR_RETURN(const uint32_t elem, Id(i, elem_pos));
          GARNET_RETURN_IF_ERROR(Define(i, id));
          if (Carries(elem)) {
            kind_[id] = in.op == kOpTypePointer ? Kind::kPointer : Kind::kArray;
            elem_[id] = elem;
            type_inst_.emplace(id, i);
            derived_.push_back(id);
          }
          break;
        }
        case kOpTypeStruct:
        case kOpTypeFunction:
          for (uint32_t k = 1; k < in.n; ++k) {
            GARNET_ASSIGN_OR_RETURN(const uint32_t t, Id(i, k));
            if (Carries(t)) {
              return Status::Unimplemented(
                  kWhat, Where(i) + ": a struct or function type holding a cooperative matrix");
            }
          }
          break;
        case kOpConstantTrue:
        case kOpConstantFalse: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
          GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 1));
          GARNET_RETURN_IF_ERROR(Define(i, id));
          bool_const_[id] = in.op == kOpConstantTrue;
          break;
        }
        case kOpConstant:
        case kOpSpecConstant:
        case kOpSpecConstantOp: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
          GARNET_ASSIGN_OR_RETURN(const uint32_t type, Id(i, 0));
          GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 1));
          GARNET_RETURN_IF_ERROR(Define(i, id));
          type_of_[id] = type;
          if (in.op == kOpConstant && in.n == 3 && int32_type_[type]) {
            int_consts_.emplace(std::pair{type, W(in, 2)}, std::pair{id, i});
          }
          break;
        }
        default:
          break;
      }
      const bool value = FlowOperands(in.op, in.n).has_value() || in.op == kOpCoopLoadNv ||
                         in.op == kOpCoopMulAddNv;
      if (value) {
        GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
        GARNET_ASSIGN_OR_RETURN(const uint32_t type, Id(i, 0));
        GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(i, 1));
        GARNET_RETURN_IF_ERROR(Define(i, id));
        type_of_[id] = type;
        const bool constant = in.op == kOpUndef || in.op == kOpConstantNull ||
                              in.op == kOpConstantComposite || in.op == kOpSpecConstantComposite;
        if (constant && Carries(type)) const_inst_[id] = i;
      }
    }
    if (!has_cap) {
      return Status::FailedPrecondition(kWhat, "the module does not declare CooperativeMatrixNV");
    }
    if (!vulkan_mm) {
      return Status::FailedPrecondition(
          kWhat, "the module does not use the Vulkan memory model, which the KHR form needs");
    }
    return Status::OK();
  }

  // Links every matrix-carrying value to those it flows to and from; records the multiply-add
  // operands' uses and where a constant matrix is used (it is cloned per use, not linked, so that
  // one zero constant can initialise matrices of different uses).
  Status Follow() {
    parent_.resize(bound_);
    for (uint32_t i = 0; i < bound_; ++i) parent_[i] = i;
    uses_.assign(bound_, 0);
    std::vector<std::pair<uint32_t, uint8_t>> fixed;  // (value, use) from multiply-adds
    // Links operand `pos` of instruction `idx` (a matrix-carrying id) to `anchor`, or to a fixed
    // use when anchor is 0.
    auto link = [&](size_t idx, uint32_t pos, uint32_t anchor, uint8_t use) -> Status {
      GARNET_ASSIGN_OR_RETURN(const uint32_t v, Id(idx, pos));
      if (!CarriesValue(v)) return Status::OK();
      if (IsCoopConstant(v)) {
        fixups_.push_back(Fixup{idx, pos, v, anchor, use});
      } else if (anchor != 0) {
        Union(anchor, v);
      } else {
        fixed.emplace_back(v, use);
      }
      return Status::OK();
    };
    for (size_t i = 0; i < insts_.size(); ++i) {
      const Inst& in = insts_[i];
      if (const auto flow = FlowOperands(in.op, in.n)) {
        const uint32_t r = W(in, 1);  // checked by Scan
        if (!CarriesValue(r)) continue;
        if (in.op == kOpConstantComposite || in.op == kOpSpecConstantComposite) {
          for (uint32_t pos : *flow) {
            GARNET_ASSIGN_OR_RETURN(const uint32_t v, Id(i, pos));
            if (CarriesValue(v)) {
              return Status::Unimplemented(kWhat, Where(i) + ": a constant composite of matrices");
            }
          }
          continue;
        }
        for (uint32_t pos : *flow) {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, pos + 1));
          GARNET_RETURN_IF_ERROR(link(i, pos, r, 0));
        }
        continue;
      }
      switch (in.op) {
        case kOpStore:
        case kOpCopyMemory: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 2));
          GARNET_ASSIGN_OR_RETURN(const uint32_t target, Id(i, 0));
          if (CarriesValue(target)) GARNET_RETURN_IF_ERROR(link(i, 1, target, 0));
          break;
        }
        case kOpCoopLoadNv: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 5));
          GARNET_RETURN_IF_ERROR(Id(i, 2).status());
          GARNET_RETURN_IF_ERROR(Id(i, 3).status());
          GARNET_RETURN_IF_ERROR(Layout(i, 4).status());
          break;
        }
        case kOpCoopStoreNv: {
          GARNET_RETURN_IF_ERROR(NeedOperands(i, 4));
          GARNET_RETURN_IF_ERROR(Id(i, 0).status());
          GARNET_RETURN_IF_ERROR(Id(i, 1).status());
          GARNET_RETURN_IF_ERROR(Id(i, 2).status());
          GARNET_RETURN_IF_ERROR(Layout(i, 3).status());
          break;
        }
        case kOpCoopMulAddNv: {
          if (in.n != 5) return Malformed(i, "OpCooperativeMatrixMulAddNV needs 5 operand words");
          for (uint32_t pos = 2; pos < 5; ++pos) {
            GARNET_ASSIGN_OR_RETURN(const uint32_t v, Id(i, pos));
            const uint32_t t = type_of_[v];
            if (kind_[t] != Kind::kCoop) {
              return Malformed(i, "multiply-add operand " + std::to_string(v) +
                                      " is not a cooperative matrix value");
            }
            if (float_width_[elem_[t]] == 0) {
              return Status::Unimplemented(
                  kWhat, Where(i) +
                             ": integer cooperative matrices (the KHR form marks signed "
                             "components with operands this rewriter does not produce)");
            }
          }
          GARNET_RETURN_IF_ERROR(link(i, 2, 0, kUseA));
          GARNET_RETURN_IF_ERROR(link(i, 3, 0, kUseB));
          GARNET_RETURN_IF_ERROR(link(i, 4, W(in, 1), 0));
          fixed.emplace_back(W(in, 1), kUseAcc);
          break;
        }
        case kOpCoopLengthNv:
          return Status::Unimplemented(
              kWhat,
              Where(i) + ": OpCooperativeMatrixLengthNV (the KHR length may differ per use)");
        case kOpTypeCoopNv:
        case kOpTypeArray:
        case kOpTypeRuntimeArray:
        case kOpTypePointer:
        case kOpTypeStruct:
        case kOpTypeFunction:
        case kOpSpecConstantOp:
          break;  // checked by Scan
        default:
          if (Inert(in.op)) break;
          // Anything else must not touch a matrix: it would be left with an NV-form operand.
          for (uint32_t k = 0; k < in.n; ++k) {
            const uint32_t v = W(in, k);
            if (v < bound_ && (Carries(v) || CarriesValue(v))) {
              return Status::Unimplemented(
                  kWhat, Where(i) + " refers to cooperative-matrix id " + std::to_string(v) +
                             ", which the rewriter does not follow through that instruction");
            }
          }
          break;
      }
    }
    for (const auto& [v, use] : fixed) uses_[Find(v)] |= use;
    return Status::OK();
  }

  // The KHR layout (0 row-major, 1 column-major) for NV's column-major operand `pos`.
  Result<uint32_t> Layout(size_t idx, uint32_t pos) const {
    GARNET_ASSIGN_OR_RETURN(const uint32_t id, Id(idx, pos));
    const auto it = bool_const_.find(id);
    if (it == bool_const_.end()) {
      return Status::Unimplemented(kWhat, Where(idx) + ": the column-major operand " +
                                              std::to_string(id) +
                                              " is not an OpConstantTrue / OpConstantFalse");
    }
    return it->second ? 1u : 0u;
  }

  // One use per linked set of values; the types (and constants) each use needs; ids of clones.
  Status AssignUses() {
    for (uint32_t id = 1; id < bound_; ++id) {
      const uint8_t m = uses_[Find(id)];
      if (std::popcount(m) > 1) {
        std::string uses;
        for (uint8_t u : {kUseA, kUseB, kUseAcc}) {
          if (m & u) uses += std::string(uses.empty() ? "" : " and ") + UseName(u);
        }
        return Status::FailedPrecondition(kWhat, "value " + std::to_string(id) +
                                                     " reaches multiply-add operands of different "
                                                     "uses (" +
                                                     uses +
                                                     "), so it cannot be given one KHR type");
      }
    }
    needed_.assign(bound_, 0);
    const_uses_.assign(bound_, 0);
    for (uint32_t id = 1; id < bound_; ++id) {
      if (CarriesValue(id) && !IsCoopConstant(id)) needed_[type_of_[id]] |= UseOf(id);
    }
    for (Fixup& f : fixups_) {
      f.use = f.anchor ? UseOf(f.anchor) : f.use;
      const_uses_[f.constant] |= f.use;
      needed_[type_of_[f.constant]] |= f.use;
    }
    // A pointer / array type needed for a use needs its element type for that use too.
    for (auto it = derived_.rbegin(); it != derived_.rend(); ++it)
      needed_[elem_[*it]] |= needed_[*it];
    primary_.assign(bound_, 0);
    next_id_ = bound_;
    for (const auto& [id, idx] : type_inst_) {
      (void)idx;
      if (kind_[id] == Kind::kCoop) primary_[id] = needed_[id] ? Lowest(needed_[id]) : kUseAcc;
    }
    for (uint32_t id : derived_) {  // declaration order: element types come first
      primary_[id] = needed_[id] ? Lowest(needed_[id]) : primary_[elem_[id]];
    }
    for (const auto& [id, idx] : type_inst_) {
      (void)idx;
      for (uint8_t u : {kUseA, kUseB, kUseAcc}) {
        if ((needed_[id] & u) && u != primary_[id]) clones_[{id, u}] = next_id_++;
      }
    }
    for (uint32_t id = 1; id < bound_; ++id) {
      if (!IsCoopConstant(id)) continue;
      const uint8_t m = const_uses_[id];
      const_primary_[id] = m ? Lowest(m) : primary_[type_of_[id]];
      for (uint8_t u : {kUseA, kUseB, kUseAcc}) {
        if ((m & u) && u != const_primary_[id]) clones_[{id, u}] = next_id_++;
      }
    }
    if (first_coop_type_ == kNone) {
      return Status::FailedPrecondition(kWhat, "the module declares no cooperative matrix type");
    }
    // Integer constants 0, 1, 2 for the Use and MemoryLayout operands, of the 32-bit integer type
    // of the first matrix type's row count; existing ones declared before it are reused.
    const Inst& first = insts_[first_coop_type_];
    const uint32_t int_type = type_of_[W(first, 3)];
    if (int_type == 0 || !int32_type_[int_type]) {
      return Malformed(first_coop_type_, "the row count is not a 32-bit integer constant");
    }
    int_type_ = int_type;
    for (uint32_t v = 0; v < 3; ++v) {
      const auto it = int_consts_.find({int_type, v});
      if (it != int_consts_.end() && it->second.second < first_coop_type_) {
        small_const_[v] = it->second.first;
      } else {
        small_const_[v] = next_id_++;
        new_consts_.push_back(v);
      }
    }
    if (next_id_ > kIdLimit + 1) {
      return Status::ResourceExhausted(kWhat, "the split types need ids beyond the SPIR-V limit");
    }
    return Status::OK();
  }

  static uint8_t Lowest(uint8_t m) { return static_cast<uint8_t>(m & -m); }

  // The id of type (or constant) `id` for `use`.
  // Never fails for a module AssignUses accepted; a miss (an inconsistency this code did not
  // foresee) makes Emit return Internal rather than a wrong module.
  uint32_t Variant(uint32_t id, uint8_t use, uint8_t primary) {
    if (use == primary) return id;
    const auto it = clones_.find({id, use});
    if (it != clones_.end()) return it->second;
    if (missing_.empty()) missing_ = std::to_string(id) + " for " + UseName(use);
    return id;
  }
  uint32_t TypeFor(uint32_t type, uint8_t use) { return Variant(type, use, primary_[type]); }
  uint32_t ConstFor(uint32_t id, uint8_t use) {
    const auto it = const_primary_.find(id);
    return Variant(id, use, it == const_primary_.end() ? 0 : it->second);
  }
  // The uses a type or constant is emitted for, primary first.
  std::vector<uint8_t> EmittedUses(uint8_t needed, uint8_t primary) const {
    std::vector<uint8_t> out{primary};
    for (uint8_t u : {kUseA, kUseB, kUseAcc}) {
      if ((needed & u) && u != primary) out.push_back(u);
    }
    return out;
  }

  void Put(std::vector<uint32_t>& out, uint32_t op, const std::vector<uint32_t>& ops) const {
    out.push_back(static_cast<uint32_t>((ops.size() + 1) << 16) | op);
    out.insert(out.end(), ops.begin(), ops.end());
  }
  // SPIR-V literal strings: UTF-8 octets four to a word, the first in the lowest 8 bits,
  // nul-terminated and zero-padded.
  static std::vector<uint32_t> StringWords(std::string_view s) {
    std::vector<uint32_t> words((s.size() + 4) / 4, 0);
    for (size_t i = 0; i < s.size(); ++i) {
      words[i / 4] |= uint32_t{static_cast<unsigned char>(s[i])} << (8 * (i % 4));
    }
    return words;
  }

  Result<std::vector<uint32_t>> Emit() {
    std::map<size_t, std::vector<const Fixup*>> fixups_at;
    for (const Fixup& f : fixups_) fixups_at[f.inst].push_back(&f);
    std::vector<uint32_t> out(w_.begin(), w_.begin() + 5);
    out[3] = next_id_;
    for (size_t i = 0; i < insts_.size(); ++i) {
      const Inst& in = insts_[i];
      std::vector<uint32_t> ops(w_.begin() + static_cast<std::ptrdiff_t>(in.begin),
                                w_.begin() + static_cast<std::ptrdiff_t>(in.begin + in.n));
      if (const auto it = fixups_at.find(i); it != fixups_at.end()) {
        for (const Fixup* f : it->second) ops[f->pos] = ConstFor(f->constant, f->use);
      }
      if (i == first_coop_type_) {
        for (uint32_t v : new_consts_) Put(out, kOpConstant, {int_type_, small_const_[v], v});
      }
      switch (in.op) {
        case kOpCapability:
          if (ops[0] == kCapCoopNv) ops[0] = kCapCoopKhr;
          Put(out, in.op, ops);
          continue;
        case kOpExtension: {
          if (SpirvString(ops) == kExtNv) ops = StringWords(kExtKhr);
          Put(out, in.op, ops);
          continue;
        }
        case kOpDecorate:
        case kOpDecorateId:
        case kOpDecorateString:
          // Decorations of a cloned type (ArrayStride, say) or constant hold for its clones.
          Put(out, in.op, ops);
          for (uint8_t u : {kUseA, kUseB, kUseAcc}) {
            if (in.n == 0) break;
            if (const auto c = clones_.find({ops[0], u}); c != clones_.end()) {
              std::vector<uint32_t> copy = ops;
              copy[0] = c->second;
              Put(out, in.op, copy);
            }
          }
          continue;
        case kOpTypeCoopNv:
          for (uint8_t u : EmittedUses(needed_[ops[0]], primary_[ops[0]])) {
            Put(out, kOpTypeCoopKhr,
                {TypeFor(ops[0], u), ops[1], ops[2], ops[3], ops[4], small_const_[UseEnum(u)]});
          }
          continue;
        case kOpTypeArray:
        case kOpTypeRuntimeArray:
        case kOpTypePointer: {
          if (!Carries(ops[0])) break;
          const uint32_t elem_pos = in.op == kOpTypePointer ? 2 : 1;
          for (uint8_t u : EmittedUses(needed_[ops[0]], primary_[ops[0]])) {
            std::vector<uint32_t> copy = ops;
            copy[0] = TypeFor(ops[0], u);
            copy[elem_pos] = TypeFor(ops[elem_pos], u);
            Put(out, in.op, copy);
          }
          continue;
        }
        case kOpCoopLoadNv: {
          // Layout() succeeded on this instruction in Follow.
          // NV: type, result, pointer, stride, column-major, [memory operands]
          // KHR: type, result, pointer, layout, stride, [memory operands]
          std::vector<uint32_t> k{TypeFor(ops[0], UseOf(ops[1])), ops[1], ops[2],
                                  small_const_[*Layout(i, 4)], ops[3]};
          k.insert(k.end(), ops.begin() + 5, ops.end());
          Put(out, kOpCoopLoadKhr, k);
          continue;
        }
        case kOpCoopStoreNv: {
          // NV: pointer, object, stride, column-major, [memory operands]
          // KHR: pointer, object, layout, stride, [memory operands]
          std::vector<uint32_t> k{ops[0], ops[1], small_const_[*Layout(i, 3)], ops[2]};
          k.insert(k.end(), ops.begin() + 4, ops.end());
          Put(out, kOpCoopStoreKhr, k);
          continue;
        }
        case kOpCoopMulAddNv:
          ops[0] = TypeFor(ops[0], kUseAcc);
          Put(out, kOpCoopMulAddKhr, ops);
          continue;
        default:
          break;
      }
      if (IsCoopConstant(in.n >= 2 ? ops[1] : 0) && FlowOperands(in.op, in.n)) {
        const uint32_t id = ops[1];
        for (uint8_t u : EmittedUses(const_uses_[id], const_primary_.at(id))) {
          std::vector<uint32_t> copy = ops;
          copy[0] = TypeFor(type_of_[id], u);
          copy[1] = ConstFor(id, u);
          Put(out, in.op, copy);
        }
        continue;
      }
      if (FlowOperands(in.op, in.n) && CarriesValue(ops[1]))
        ops[0] = TypeFor(ops[0], UseOf(ops[1]));
      Put(out, in.op, ops);
    }
    if (!missing_.empty()) {
      return Status::Internal(kWhat, "no variant of id " + missing_ + " (inconsistent module?)");
    }
    return out;
  }

  static constexpr size_t kNone = ~size_t{0};
  struct Fixup {
    size_t inst;        // instruction using the constant
    uint32_t pos;       // operand position
    uint32_t constant;  // the constant's id
    uint32_t anchor;    // the value whose use the constant takes (0: `use` is fixed)
    uint8_t use;
  };

  std::span<const uint32_t> w_;
  uint32_t bound_ = 0;
  std::vector<Inst> insts_;
  // Per id.
  std::vector<Kind> kind_;         // matrix-carrying types
  std::vector<uint32_t> elem_;     // their component / element / pointee type
  std::vector<uint32_t> type_of_;  // the type of values whose type matters here
  std::vector<uint32_t> float_width_;
  std::vector<bool> int32_type_;
  std::vector<size_t> const_inst_;  // instruction defining a matrix-carrying constant / undef
  std::vector<bool> defined_;       // result ids seen by Scan
  std::vector<uint32_t> parent_;    // union-find over values linked by data flow
  std::vector<uint8_t> uses_;       // per union-find root: the multiply-add uses reached
  std::vector<uint8_t> needed_;     // per matrix-carrying type: uses it is needed for
  std::vector<uint8_t> primary_;    // per type: the use its original id keeps
  std::vector<uint8_t> const_uses_;
  std::map<uint32_t, uint8_t> const_primary_;
  std::map<uint32_t, bool> bool_const_;
  std::map<uint32_t, size_t> type_inst_;  // matrix-carrying type -> declaring instruction
  std::vector<uint32_t> derived_;         // pointer / array types over matrices, in order
  std::map<std::pair<uint32_t, uint32_t>, std::pair<uint32_t, size_t>> int_consts_;
  std::map<std::pair<uint32_t, uint8_t>, uint32_t> clones_;  // (type or constant, use) -> id
  std::vector<Fixup> fixups_;
  size_t first_coop_type_ = kNone;
  uint32_t int_type_ = 0;
  uint32_t small_const_[3] = {0, 0, 0};  // ids of the integer constants 0, 1, 2
  std::vector<uint32_t> new_consts_;     // which of them are new
  uint32_t next_id_ = 0;
  std::string missing_;  // the first variant Emit could not find
};

}  // namespace

Result<std::vector<uint32_t>> RewriteCoopmatNvToKhr(std::span<const uint32_t> words) {
  return Rewriter(words).Run();
}

std::string SpirvString(std::span<const uint32_t> words) {
  std::string s;
  for (size_t i = 0; i < words.size() * 4; ++i) {
    const char c = static_cast<char>((words[i / 4] >> (8 * (i % 4))) & 0xff);
    if (c == 0) break;
    s += c;
  }
  return s;
}

}  // namespace garnet::vk
