// last_group.glsl: "the last workgroup of a set to finish", for kernels that merge their
// workgroups' results in the one that finishes last (matvec.comp ROUTE, attn_decode_rows.comp
// FUSED_COMBINE). In uniform control flow, after the workgroup's writes:
//   last_group_release();
//   uint before = 0u;
//   if (gl_LocalInvocationIndex == 0u) before = LAST_GROUP_COUNT(ctr);  // ctr: a uint element
//   if (!last_group_acquire(before, total)) return;  // uniform: not the total-th to count
//   ... read the other workgroups' writes; reset ctr to 0 with an atomic for the next dispatch
// The count is a device-scope acquire-release atomic and the workgroup barriers around it carry
// buffer-memory semantics, so every invocation's writes are ordered before its workgroup's count
// and the last count before the merge's reads. (A relaxed atomicAdd between memoryBarrierBuffer()
// calls leaves that order to the implementation: the one-dispatch chain of garnet-vkbench --chain
// read stale values with it on lavapipe.)
#extension GL_KHR_memory_scope_semantics : require

shared uint last_group_flag;

#define LAST_GROUP_COUNT(ctr) \
  atomicAdd(ctr, 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease)

void last_group_release() {
  controlBarrier(gl_ScopeWorkgroup, gl_ScopeDevice, gl_StorageSemanticsBuffer,
                 gl_SemanticsAcquireRelease);
}

bool last_group_acquire(uint count_before, uint total) {
  if (gl_LocalInvocationIndex == 0u) last_group_flag = count_before == total - 1u ? 1u : 0u;
  controlBarrier(gl_ScopeWorkgroup, gl_ScopeDevice,
                 gl_StorageSemanticsBuffer | gl_StorageSemanticsShared, gl_SemanticsAcquireRelease);
  return last_group_flag != 0u;
}
