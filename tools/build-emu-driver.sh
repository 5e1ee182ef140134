#!/usr/bin/env bash
# Builds the emulated CUDA driver (tools/emu-driver: libcuda.so.1 backed by
# dawin's PTX emulator) and prints, last, the folder that holds libcuda.so.1.
#
#   LD_LIBRARY_PATH=$(tools/build-emu-driver.sh | tail -1) \
#     "$(tools/build-cuda.sh | tail -1)" forward ... --device cuda
#
# runs the cuda build of dawin on the emulator, through cust and the driver
# ABI. DAWIN_EMU_DRIVER_MEMORY (bytes, default 8 GiB) sizes its device
# memory; DAWIN_EMU_SHUFFLE=SEED shuffles block order as for --device emu.
#
# Usage: tools/build-emu-driver.sh [extra cargo args]
set -euo pipefail
cd "$(dirname "$0")/.."
# The same release folder and flags as tools/build-cuda.sh: the
# dependencies are compiled once for both.
. tools/release-target.sh
# build.rs reads cust_raw's declarations from the registry: fetch them.
cargo fetch --quiet
cargo build --release -p dawin-emu-driver "$@"
lib=$target/emu-driver-lib
mkdir -p "$lib"
cp -f "$target/release/libdawin_emu_driver.so" "$lib/libcuda.so.1"
ln -sf libcuda.so.1 "$lib/libcuda.so"
echo "$lib"
