#!/usr/bin/env bash
# The README's demo, after the build: garnetd on a temporary data dir and socket, the
# deterministic gemma4:tiny served by a local mirror, then pull / fit / run / ps, then stop.
#
#   daemon/demo_flow.sh [BUILD_DIR]        (default: build)
#
# Needs: BUILD_DIR/daemon/garnetd, BUILD_DIR/daemon/garnet-mirror, BUILD_DIR/cli/garnet,
# BUILD_DIR/tools/mkmodel/garnet-mkmodel. Everything runs on loopback / a Unix socket and is
# removed at the end.
set -euo pipefail

build="${1:-build}"
garnetd="$build/daemon/garnetd"
mirror="$build/daemon/garnet-mirror"
garnet="$build/cli/garnet"
mkmodel="$build/tools/mkmodel/garnet-mkmodel"
for bin in "$garnetd" "$mirror" "$garnet" "$mkmodel"; do
  [[ -x "$bin" ]] || { echo "demo: $bin is missing; build first" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/garnet-demo.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# 1. The synthetic model the catalog pins as gemma4:tiny (byte-identical on every machine).
step "garnet-mkmodel --preset tiny --out $work/gemma4-tiny-f32.gguf"
"$mkmodel" --preset tiny --out "$work/gemma4-tiny-f32.gguf"

# 2. A mirror serving it under the catalog's hub-style URL.
"$mirror" --file "garnet/gemma4-tiny/resolve/main/gemma4-tiny-f32.gguf=$work/gemma4-tiny-f32.gguf" \
  >"$work/mirror.out" 2>"$work/mirror.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "serving at" "$work/mirror.out" && break; sleep 0.05; done
mirror_url="$(sed -n 's/.*serving at //p' "$work/mirror.out")"
[[ -n "$mirror_url" ]] || { cat "$work/mirror.err" >&2; exit 1; }
echo "mirror at $mirror_url"

# 3. garnetd on a temporary data dir and socket, pulling from the mirror.
export GARNET_HOST="unix:$work/run/garnetd.sock"
step "garnet serve --data-dir $work/data --socket $work/run/garnetd.sock --base-url $mirror_url &"
"$garnet" serve --data-dir "$work/data" --socket "$work/run/garnetd.sock" \
  --base-url "$mirror_url" 2>"$work/garnetd.log" &
pids+=($!)
for _ in $(seq 1 100); do "$garnet" version >/dev/null 2>&1 && break; sleep 0.05; done
"$garnet" version

step "garnet pull gemma4:tiny"
"$garnet" pull gemma4:tiny

step "garnet list"
"$garnet" list

step "garnet fit gemma4:tiny"
"$garnet" fit gemma4:tiny

step "garnet fit gemma4:tiny --vram 16GiB --ctx 512"
"$garnet" fit gemma4:tiny --vram 16GiB --ctx 512

step 'garnet run gemma4:tiny "Why is the sky blue?"'
"$garnet" run gemma4:tiny "Why is the sky blue?" --max-tokens 48 --seed 1

step "garnet ps"
"$garnet" ps

step "stop garnetd (SIGTERM)"
kill -TERM "${pids[1]}"
wait "${pids[1]}" || true
echo "--- garnetd log ---"
cat "$work/garnetd.log"
