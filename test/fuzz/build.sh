#!/bin/bash
# Build the libFuzzer targets of mtms (see test/fuzz/README.md).
#
#   bash test/fuzz/build.sh [target ...]     default: every target
#
# Each target is a standalone binary: the project's own src/*.c files it
# needs, compiled unchanged with clang -fsanitize=fuzzer,address,undefined
# against the PostgreSQL 15 server headers, plus test/fuzz/pg_stubs.c (the
# backend functions they call), ref_blas.c (instrumented cblas_sgemm/sgemv;
# FUZZ_BLAS=openblas links the serial OpenBLAS instead), the harness, and
# libpgcommon/libpgport for hash_bytes_extended, pg_prng, pg_snprintf and
# pg_qsort.  Objects and binaries go to test/fuzz/build/.  Also builds
# gen_seeds (no libFuzzer), which writes the seed corpora, and
# craft_train_states, which writes the hand-made reproducers in findings/.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$FUZZ_DIR/../.." && pwd)"
OUT="$FUZZ_DIR/build"
CC="${CC:-clang}"
PG_CONFIG="${PG_CONFIG:-pg_config}"
PGINC="$("$PG_CONFIG" --includedir-server)"
PGLIB="$("$PG_CONFIG" --libdir)"
PGPKGLIB="$("$PG_CONFIG" --pkglibdir)"
BLAS_PC_DIR="${BLAS_PC_DIR:-/usr/lib/x86_64-linux-gnu/openblas-serial/pkgconfig}"
BLAS_CFLAGS="$(PKG_CONFIG_PATH="$BLAS_PC_DIR" pkg-config --cflags openblas)"
BLAS_LIBS="$(PKG_CONFIG_PATH="$BLAS_PC_DIR" pkg-config --libs openblas)"
BLAS_LIBDIR="$(PKG_CONFIG_PATH="$BLAS_PC_DIR" pkg-config --variable=libdir openblas)"

# libpgcommon.a / libpgport.a (frontend flavour: hashfn.o, pg_prng.o,
# snprintf.o and qsort.o have no backend dependencies)
find_lib() {
    for d in "$PGLIB" "$PGPKGLIB" /usr/lib/postgresql/15/lib; do
        [ -f "$d/$1" ] && { echo "$d/$1"; return; }
    done
    echo "build.sh: $1 not found (install postgresql-server-dev-15)" >&2
    exit 1
}
PGCOMMON="$(find_lib libpgcommon.a)"
PGPORT="$(find_lib libpgport.a)"

# PostgreSQL's own semantics (-fwrapv, -fno-strict-aliasing), sanitizers on.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=address"
CFLAGS="-g -O1 -fno-omit-frame-pointer -fno-strict-aliasing -fwrapv \
  -Wall -Wno-unused-command-line-argument -Wno-missing-prototypes -Wno-ignored-attributes -Werror=implicit-function-declaration \
  -D_GNU_SOURCE -I$ROOT/src -I$FUZZ_DIR -I$PGINC $BLAS_CFLAGS"

# src files per target
declare -A SRCS=(
  [fuzz_features]="feature_parser"
  [fuzz_tower]="tower optimizer"
  [fuzz_embedding]="embedding_store optimizer"
  [fuzz_auc]="auc"
  [fuzz_train_state]="train_state train_rowset train_loss train_batch train_validate train_snapshot train_serialize train_aggregate model tower embedding_store optimizer phase_embedding phase_finetune joined_keys kept_rows feature_parser auc"
  [fuzz_model_load]="model_store model tower embedding_store optimizer"
)
# extra harness-side files per target
declare -A EXTRA=(
  [fuzz_model_load]="fake_spi"
)
ALL_TARGETS="fuzz_features fuzz_tower fuzz_embedding fuzz_auc fuzz_train_state fuzz_model_load"

TARGETS="${*:-$ALL_TARGETS}"
mkdir -p "$OUT/obj"

if [ "${FUZZ_BLAS:-ref}" = openblas ]; then
    BLAS_OBJ=""
    BLAS_LINK="$BLAS_LIBS -Wl,-rpath,$BLAS_LIBDIR"
else
    BLAS_OBJ="$OUT/obj/h_ref_blas.o"
    BLAS_LINK=""
fi

# compile src/NAME.c (prefix s_) or test/fuzz/NAME.c (prefix h_) if stale
compile() {
    local src="$1" obj="$2" extra="${3:-}"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || \
       [ -n "$(find "$ROOT/src" "$FUZZ_DIR" -maxdepth 1 -name '*.h' -newer "$obj" -print -quit)" ]; then
        echo "  CC $(basename "$src")"
        $CC $CFLAGS $SAN $extra -c "$src" -o "$obj"
    fi
}

# Harness-side objects are sanitized but not coverage-instrumented: only
# paths through src/ count as new coverage, so input variants that differ
# only in how the harness decodes them do not bloat the corpus.
compile "$FUZZ_DIR/pg_stubs.c" "$OUT/obj/h_pg_stubs.o"
compile "$FUZZ_DIR/ref_blas.c" "$OUT/obj/h_ref_blas.o"
compile "$FUZZ_DIR/blas_table.c" "$OUT/obj/h_blas_table.o"

for t in $TARGETS; do
    [ -n "${SRCS[$t]+x}" ] || { echo "build.sh: unknown target $t" >&2; exit 1; }
    echo "building $t"
    objs=""
    for s in ${SRCS[$t]}; do
        compile "$ROOT/src/$s.c" "$OUT/obj/s_$s.o" "-fsanitize=fuzzer-no-link"
        objs="$objs $OUT/obj/s_$s.o"
    done
    for e in ${EXTRA[$t]:-}; do
        compile "$FUZZ_DIR/$e.c" "$OUT/obj/h_$e.o"
        objs="$objs $OUT/obj/h_$e.o"
    done
    compile "$FUZZ_DIR/$t.c" "$OUT/obj/h_$t.o"
    $CC $CFLAGS $SAN -fsanitize=fuzzer -o "$OUT/$t" "$OUT/obj/h_$t.o" $objs \
        "$OUT/obj/h_pg_stubs.o" "$OUT/obj/h_blas_table.o" $BLAS_OBJ "$PGCOMMON" "$PGPORT" $BLAS_LINK -lm
done

# the seed generator: every src file the seeds need, no libFuzzer
echo "building gen_seeds"
gobjs=""
for s in ${SRCS[fuzz_train_state]}; do
    compile "$ROOT/src/$s.c" "$OUT/obj/s_$s.o" "-fsanitize=fuzzer-no-link"
    gobjs="$gobjs $OUT/obj/s_$s.o"
done
compile "$FUZZ_DIR/gen_seeds.c" "$OUT/obj/h_gen_seeds.o"
$CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -o "$OUT/gen_seeds" "$OUT/obj/h_gen_seeds.o" $gobjs \
    "$OUT/obj/h_pg_stubs.o" "$OUT/obj/h_blas_table.o" "$OUT/obj/h_ref_blas.o" "$PGCOMMON" "$PGPORT" -lm
# the hand-made training-state reproducers (findings/)
compile "$FUZZ_DIR/findings/craft_train_states.c" "$OUT/obj/h_craft_train_states.o"
$CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -o "$OUT/craft_train_states" \
    "$OUT/obj/h_craft_train_states.o" $gobjs \
    "$OUT/obj/h_pg_stubs.o" "$OUT/obj/h_blas_table.o" "$OUT/obj/h_ref_blas.o" "$PGCOMMON" "$PGPORT" -lm
echo "built: $TARGETS gen_seeds craft_train_states (in $OUT)"
