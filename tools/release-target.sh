# Sourced by tools/build-cuda.sh and tools/build-emu-driver.sh: one release
# target folder (CARGO_TARGET_DIR, default target/cuda) and one set of
# RUSTFLAGS for both, so the dependencies are compiled once for the two
# builds (a RUSTFLAGS that differed would rebuild them). Sets `target`, the
# folder as an absolute path.
#
# The link flags give binaries a RUNPATH of $ORIGIN/../stub/lib64 (see
# build-cuda.sh); the emulated driver does not link libcuda, so it ignores it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
case $CARGO_TARGET_DIR in
  /*) target=$CARGO_TARGET_DIR ;;
  *) target=$PWD/$CARGO_TARGET_DIR ;;
esac
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,--enable-new-dtags -C link-arg=-Wl,-rpath,\$ORIGIN/../stub/lib64"
