#!/bin/sh
# Builds the project (stages and front end, no tests) in another build type, warnings as
# errors, in its own folder: what a user or packager who picks that type gets.
# Usage: check_build.sh SOURCE_DIR BUILD_DIR BUILD_TYPE
set -eu
src=$1 out=$2 type=$3
generator=""
command -v ninja >/dev/null 2>&1 && generator="-G Ninja"
# shellcheck disable=SC2086
cmake -S "$src" -B "$out" $generator -DCMAKE_BUILD_TYPE="$type" -DPW_WERROR=ON \
  -DPW_BUILD_TESTS=OFF -DPW_FUZZ=OFF -DPW_INTEGRATION=OFF >/dev/null
cmake --build "$out"
echo "check_build: a $type build of every stage passes with warnings as errors"
