#!/usr/bin/env bash
# Run a command as on a CPU without AVX-512 (so without VNNI or bf16), to check what the product and the
# tests do there: tools/machines/emulated_cpu.sh [--cpu MODEL --march ARCH] COMMAND... (default qemu's EPYC-Rome and
# g++'s znver2: AVX2, no AVX-512).
#
# qemu-user (apt-get install qemu-user) runs the command's process on the emulated CPU, so every library's
# own detection (cpuid: OpenVINO's capabilities, ONNX Runtime's kernels, torch's) sees that CPU; a private
# mount namespace (needs root) lays over /proc/cpuinfo the host's text less the AVX-512, AMX and VNNI flags,
# since qemu-user passes the host's through. Subprocesses the command starts run natively (on the host's
# CPU, with the edited cpuinfo); so does g++, which compiles for -march=ARCH where torch's inductor asks for
# -march=native (AOTInductor's code would otherwise hold the host's AVX-512). About 300x slower for arithmetic and 20 s to import torch: for the few
# tests that depend on the CPU, e.g. tools/machines/emulated_cpu.sh .venv/bin/python -m pytest -p no:cacheprovider
# tests/test_executorch_openvino.py -k bf16
set -euo pipefail
cpu=EPYC-Rome
march=znver2
if [[ "${1:-}" == "--cpu" ]]; then cpu=$2; march=$4; shift 4; fi
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-user: apt-get install qemu-user" >&2; exit 2; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cpuinfo=$scratch/cpuinfo
sed -E '/^flags/ s/ (avx512[a-z0-9_]*|amx_[a-z0-9_]*|avx_vnni[a-z0-9_]*)//g' /proc/cpuinfo > "$cpuinfo"
cat > "$scratch/g++" <<WRAPPER
#!/usr/bin/env bash
exec $(command -v g++) "\${@/-march=native/-march=$march}"
WRAPPER
chmod +x "$scratch/g++"
export CXX=$scratch/g++
# inductor compiles in a pool of forked workers, which qemu 7.2 aborts in (qemu_plugin_vcpu_init_hook): one process
export TORCHINDUCTOR_COMPILE_THREADS=1
# qemu warns once per CPU feature TCG lacks (xsaves, ...): noise, not the command's output
unshare --mount --propagation private -- bash -c 'mount --bind "$1" /proc/cpuinfo && shift && exec qemu-x86_64 -cpu "$0" "$@"' \
    "$cpu" "$cpuinfo" "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2)
