#!/usr/bin/env bash
# Builds llama-bench and llama-batched-bench of llama.cpp as vendored in llama-cpp-python 0.3.36 (the copy with the
# `deepseek4` architecture) with its AMX weight buffer compiled out, for bench/compare_cpu.py.
#
#   bench/build_llama_cpp_noamx.sh [SRC_DIR] [OUT_DIR]
#     SRC_DIR  llama.cpp sources (default ~/.cache/llama.cpp-0.3.36/src, where compare_cpu.py also finds the
#              converter; fetched from the llama-cpp-python sdist when absent)
#     OUT_DIR  default ~/.cache/llama.cpp-0.3.36-noamx (binaries in OUT_DIR/bin)
#
# Why: on a CPU with AMX, -DGGML_NATIVE=ON compiles in ggml's AMX extra buffer type, and llama.cpp's loader puts the
# Q8_0 `attn_output_a` weights (V4's grouped wo_a) there. Their use in the V4 graph (src/models/deepseek4.cpp,
# ggml_mul_mat(layer.wo_a, out) on a permuted, non-contiguous `out`, with a 3-D weight) is refused by the AMX
# buffer's supports_op (ggml-cpu/amx/amx.cpp: non-contiguous src1), and ggml-cpu.cpp's supports_op returns the extra
# buffer's answer without a fallback, so no backend takes the node and context creation aborts with
# GGML_ASSERT(*cur_backend_id != -1) (ggml-backend.cpp:1294). The runtime switch `--repack 0` avoids it too, but it
# also turns off the CPU_REPACK buffer that speeds up the MXFP4 experts; this build keeps that one.
# The ISA flags are those of this CPU (from /proc/cpuinfo) minus AMX. About 4 minutes on 2 cores; not for CI.
set -euo pipefail
VERSION=0.3.36
SRC=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/llama.cpp-0.3.36/src}
OUT=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/llama.cpp-0.3.36-noamx}
if [ -x "$OUT/bin/llama-batched-bench" ] && [ -x "$OUT/bin/llama-bench" ]; then
  echo "already built: $OUT/bin"; exit 0
fi
if [ ! -f "$SRC/CMakeLists.txt" ]; then  # fetch the sources: llama-cpp-python's sdist vendors llama.cpp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching the llama-cpp-python $VERSION sdist into $SRC"
  python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp"
  tar xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
  mkdir -p "$(dirname "$SRC")"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$SRC"
fi
mkdir -p "$OUT"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
isa=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
     -DGGML_AVX="$(has avx)" -DGGML_AVX2="$(has avx2)" -DGGML_FMA="$(has fma)" -DGGML_F16C="$(has f16c)"
     -DGGML_BMI2="$(has bmi2)" -DGGML_AVX_VNNI="$(has avx_vnni)" -DGGML_AVX512="$(has avx512f)"
     -DGGML_AVX512_VBMI="$(has avx512vbmi)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
     -DGGML_AVX512_BF16="$(has avx512_bf16)")
echo "configuring ${isa[*]}"
cmake -S "$SRC" -B "$OUT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_OPENMP=ON "${isa[@]}" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
  > "$OUT/cmake.log" 2>&1 || { tail -20 "$OUT/cmake.log" >&2; exit 1; }
cmake --build "$OUT/build" -j "$(nproc)" --target llama-bench llama-batched-bench > "$OUT/build.log" 2>&1 \
  || { tail -20 "$OUT/build.log" >&2; exit 1; }
mkdir -p "$OUT/bin"
for b in llama-bench llama-batched-bench; do ln -sf "$OUT/build/bin/$b" "$OUT/bin/$b"; done
echo "built: $OUT/bin/llama-bench, $OUT/bin/llama-batched-bench"
