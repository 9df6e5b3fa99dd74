#!/bin/sh
# install_consumer_test: installs the built dex into a fresh prefix, then
# builds tests/consumer against it twice (find_package(dex), then
# pkg-config) and runs both programs.
# Usage: install_test.sh SOURCE_DIR BUILD_DIR CXX [EXTRA_LINK_FLAGS]
set -eu
src="$1"
build="$2"
cxx="$3"
extra="${4:-}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dex-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/dex/dex.h include/dex/service.h bin/dex-shim; do
  test -e "$prefix/$f" || { echo "missing $f in the install" >&2; exit 1; }
done
spawner=$(find "$prefix" -path '*/libexec/dex/dex-spawner' -type f)
test -x "$spawner" || { echo "dex-spawner not in libexec/dex" >&2; exit 1; }
test -f "$(dirname "$spawner")/dex-zygote-helper.so" || { echo "dex-zygote-helper.so not beside dex-spawner" >&2; exit 1; }
config=$(find "$prefix" -name dexConfig.cmake)
test -n "$config" || { echo "dexConfig.cmake not installed" >&2; exit 1; }

# find_package(dex)
cmake -S "$src/tests/consumer" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/build" >/dev/null
out=$("$tmp/build/dex_consumer" "$tmp/data-cmake")
echo "find_package: $out"
case "$out" in "dex consumer ok: plan free"*) ;; *) exit 1 ;; esac

# pkg-config
pcdir=$(dirname "$(find "$prefix" -name dex.pc)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --static --cflags --libs dex)
# shellcheck disable=SC2086
"$cxx" -std=c++20 -o "$tmp/consumer-pc" "$src/tests/consumer/main.cc" \
  $flags $extra
out=$("$tmp/consumer-pc" "$tmp/data-pc")
echo "pkg-config: $out"
case "$out" in "dex consumer ok: plan free"*) ;; *) exit 1 ;; esac
