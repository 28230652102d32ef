# cmake -DSPV=<in.spv> -DOUT=<out.cc> -DSYMBOL=<c identifier> -P embed_spirv.cmake
#
# Writes a .cc defining `extern const uint32_t <SYMBOL>[]` and `<SYMBOL>_words` with the SPIR-V
# words of <in.spv> (little-endian, as glslc writes it). Run by garnet_vulkan_shader().
if(NOT SPV OR NOT OUT OR NOT SYMBOL)
  message(FATAL_ERROR "embed_spirv.cmake needs -DSPV=, -DOUT= and -DSYMBOL=")
endif()
file(READ "${SPV}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR rem "${n_hex} % 8")
if(n_hex EQUAL 0 OR NOT rem EQUAL 0)
  message(FATAL_ERROR "${SPV}: not a SPIR-V module (size ${n_hex} hex digits)")
endif()
math(EXPR n_words "${n_hex} / 8")
# Bytes b0 b1 b2 b3 of each little-endian word become 0xb3b2b1b0u.
string(REGEX REPLACE "([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])"
       "0x\\4\\3\\2\\1u," words "${hex}")
# Eight words per line keeps the generated file readable in a diff.
string(REGEX REPLACE "((0x[0-9a-f]+u,){8})" "\\1\n  " words "${words}")
file(WRITE "${OUT}.tmp"
  "// Generated from ${SPV} by engine/vulkan/embed_spirv.cmake. Do not edit.\n"
  "#include <cstddef>\n#include <cstdint>\n\n"
  "namespace garnet::vk_spirv {\n"
  "extern const uint32_t ${SYMBOL}[];\nextern const size_t ${SYMBOL}_words;\n"
  "alignas(16) const uint32_t ${SYMBOL}[] = {\n  ${words}\n};\n"
  "const size_t ${SYMBOL}_words = ${n_words};\n"
  "}  // namespace garnet::vk_spirv\n")
file(RENAME "${OUT}.tmp" "${OUT}")
