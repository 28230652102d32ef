// Shared pieces of garnet's compute shaders: extensions, the workgroup-size specialisation
// constant, grid folding and a workgroup sum.
//
// Every shader that includes this file:
//   - has a 1-D workgroup of WG invocations, WG = specialisation constant 0 (power of two);
//   - may fold a large 1-D grid of workgroups into (x, y): group index = x + y * num_groups.x;
//   - defines USE_SUBGROUP (glslc -D) for the variant that reduces with subgroupAdd; without it
//     wg_sum uses a shared-memory tree (the fallback for devices without subgroup arithmetic).
#extension GL_EXT_control_flow_attributes : enable
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
layout(constant_id = 0) const uint WG = 64;

// Index of this workgroup in a 1-D grid folded into x and y.
uint group_index() {
  return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}

// tanh with a small relative error over the whole range. GLSL's tanh is often computed as
// (e^2a - 1) / (e^2a + 1), which loses all precision for small |a| (tanh(1e-6) off by 7%) and can
// overflow to NaN for large |a|. Here: an odd Taylor polynomial for |a| < 0.25 (truncation error
// below 1e-8 relative), and 1 - 2 / (e^(2|a|) + 1) beyond, with |a| clamped to 15 where tanh is
// 1 in fp32.
float precise_tanh(float a) {
  const float b = abs(a);
  float t;
  if (b < 0.25) {
    const float b2 = b * b;
    t = b * (1.0 + b2 * (-1.0 / 3.0 + b2 * (2.0 / 15.0 + b2 * (-17.0 / 315.0 + b2 * (62.0 / 2835.0)))));
  } else {
    t = 1.0 - 2.0 / (exp(2.0 * min(b, 15.0)) + 1.0);
  }
  return a < 0.0 ? -t : t;
}

// wg_sum(v): sum over the workgroup; wg_max(v): maximum. Returned to every invocation; call in
// uniform control flow.
//
// WG_SUM_OF(T, NAME, RED): `T NAME(T v)`, the sum of v over the workgroup returned to every
// invocation (T float or a float vector), through the shared array RED (declared here). Call in
// uniform control flow.
#ifdef USE_SUBGROUP
#define WG_SUM_OF(T, NAME, RED)                              \
  shared T RED[WG]; /* one slot per subgroup (at most WG) */ \
  T NAME(T v) {                                              \
    v = subgroupAdd(v);                                      \
    if (subgroupElect()) RED[gl_SubgroupID] = v;             \
    barrier();                                               \
    T t = T(0.0);                                            \
    for (uint i = 0; i < gl_NumSubgroups; ++i) t += RED[i];  \
    barrier();                                               \
    return t;                                                \
  }
#else
#define WG_SUM_OF(T, NAME, RED)                                \
  shared T RED[WG];                                            \
  T NAME(T v) {                                                \
    const uint lid = gl_LocalInvocationIndex;                  \
    RED[lid] = v;                                              \
    barrier();                                                 \
    [[unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {         \
      if (lid < s) RED[lid] += RED[lid + s];                   \
      barrier();                                               \
    }                                                          \
    const T t = RED[0];                                        \
    barrier();                                                 \
    return t;                                                  \
  }
#endif
WG_SUM_OF(float, wg_sum, wg_red)
// Two sums in one reduction: define WG_SUM2 before including this file.
#ifdef WG_SUM2
WG_SUM_OF(vec2, wg_sum2, wg_red2)
#endif
#ifdef USE_SUBGROUP
float wg_max(float v) {
  v = subgroupMax(v);
  if (subgroupElect()) wg_red[gl_SubgroupID] = v;
  barrier();
  float t = wg_red[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) t = max(t, wg_red[i]);
  barrier();
  return t;
}
#else
float wg_max(float v) {
  const uint lid = gl_LocalInvocationIndex;
  wg_red[lid] = v;
  barrier();
  [[unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) wg_red[lid] = max(wg_red[lid], wg_red[lid + s]);
    barrier();
  }
  const float t = wg_red[0];
  barrier();
  return t;
}
#endif
