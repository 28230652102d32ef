#!/bin/sh
# garnet-vkbench at its small sizes, every mode: the measuring tool still records and runs all it
# measures (the decode shapes, the dispatch chains and their shared-memory probe, the
# feed-forward chain, prefill attention, the matmuls). Timings are not checked. Without a Vulkan
# device it prints NO VULKAN, which ctest reports as skipped.
#   vkbench_smoke.sh PATH_TO_GARNET_VKBENCH
set -u
bench=$1
for mode in "" --decode --chain --ffn --attn --matmul; do
  out=$("$bench" --small $mode 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    case $out in
      *"unavailable: vulkan"*)
        echo "NO VULKAN: $out"
        exit 0
        ;;
    esac
    printf '%s\n' "$out"
    echo "vkbench_smoke: garnet-vkbench --small $mode failed (exit $rc)"
    exit 1
  fi
done
echo "vkbench_smoke: every mode ran"
