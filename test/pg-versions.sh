#!/usr/bin/env bash
# test/pg-versions.sh: build mtms with warnings as errors and run its whole
# test suite against several PostgreSQL major versions, in one command:
#
#     bash test/pg-versions.sh [VERSION ...]      # default: 15 17 18
#
# For the PostgreSQL that this machine's apt offers as packages (15 on
# Debian 12, test/pg-env.sh) it uses those packages (test/install-packages.sh
# installs what is missing).  Every other version is built from Debian's
# *source* package (postgresql-17 from trixie, postgresql-18 and later from
# sid, postgresql-15 from bookworm), the upstream sources without Debian's
# patches, with this machine's compiler, into a cache:
#
#     $MTMS_PG_CACHE/<version>        (default /var/cache/mtms-pg; as a
#                                      normal user ~/.cache/mtms-pg)
#
# together with pgTAP, also from Debian's source package (pgtap from sid,
# MTMS_PGTAP_SUITE=trixie to change).  A build is reused while the source
# package's version is the same (a stamp file written after a successful
# install; MTMS_PG_REBUILD=1 forces a new build; when the archive cannot be
# reached, an existing build is used as it is).  apt-get source runs with a
# private apt configuration in a temporary directory (MTMS_DEBIAN_MIRROR,
# default http://deb.debian.org/debian): the system's apt sources and lists
# are not touched.
#
# For each version it then
#  1. copies the installation (the cached build, or the system's packaged
#     /usr/lib/postgresql/N and /usr/share/postgresql/N) into a temporary
#     directory: installing mtms there touches neither the cache nor the
#     system's PostgreSQL;
#  2. copies the working tree (without .git and build products) and builds
#     mtms there with make COPT=-Werror, then installs it into the copy;
#  3. starts a throwaway cluster from the copy (as the postgres OS user when
#     run as root; Unix socket in the temporary directory and a free
#     loopback port) and runs test/in-cluster.sh in it, as test/run-all.sh
#     does through pg_virtualenv: pg_regress (make installcheck) and every
#     pgTAP file through pg_prove;
#  4. prints the times of each step and the suite's "N passed, N failed".
#
# Package-manager and compiler output goes to log files (the server builds'
# logs stay in the cache, the rest in the temporary directory); a failing
# step prints the tail of its log.  A failing suite prints its output (long
# runs of TAP diagnostics cut) and the tail of the server log, and keeps
# the whole output, the server log and pg_regress's diffs in
# $MTMS_PG_CACHE/logs/<version>.  VERBOSE=1 shows the suite's output
# always; KEEP=1 keeps the temporary directory.
#
# Environment: MTMS_PG_CACHE, MTMS_PG_REBUILD=1, MTMS_PGTAP_SUITE,
# MTMS_DEBIAN_MIRROR, VERBOSE=1, KEEP=1 (see above).
#
# When the archive lists postgresql-17 but serves no tarball of it (HTTP
# 404, as this workplace's mirror does), version 17 is tested with Debian
# 13's own packages in a chroot instead (test/debian13.sh; MTMS_NO_CHROOT=1
# turns that off).
#
# The last line is "pg-versions: N passed, N failed", counting versions; the
# exit status is non-zero when any version failed.
set -uo pipefail
shopt -s nullglob

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
SRC=$(pwd)
umask 022
export LC_ALL=C.UTF-8
unset LANGUAGE

if [ "$#" -gt 0 ]; then
    VERSIONS=("$@")
else
    VERSIONS=(15 17 18)
fi
for v in "${VERSIONS[@]}"; do
    case "$v" in
        '' | *[!0-9]*)
            echo "usage: bash test/pg-versions.sh [VERSION ...]   (major versions, default: 15 17 18)" >&2
            exit 2
            ;;
    esac
done

# how the server builds are made; a change here invalidates cached builds
CONFIGURE_OPTS=(--without-readline --without-icu)
RECIPE="recipe 1: configure ${CONFIGURE_OPTS[*]}; make; make install"

if [ "$(id -u)" -eq 0 ]; then
    CACHE=${MTMS_PG_CACHE:-/var/cache/mtms-pg}
else
    CACHE=${MTMS_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtms-pg}
fi
PGTAP_SUITE=${MTMS_PGTAP_SUITE:-sid}
MIRROR=${MTMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
JOBS=$(nproc 2>/dev/null || echo 2)

# The version this machine's apt offers as packages (test/pg-env.sh without
# the caller's MTMS_PG and PG_CONFIG).
SYSTEM_PG=$(unset MTMS_PG PG_CONFIG && . test/pg-env.sh >/dev/null 2>&1 && echo "$MTMS_PG")

# The Debian suite whose source package gives a version.
suite_of() {
    case "$1" in
        15) echo bookworm ;;
        17) echo trixie ;;
        *) echo sid ;;
    esac
}

# ---------------------------------------------------------------- helpers

T=$(mktemp -d -t mtms-pg-versions.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/logs"
MAIN_LOG=$T/logs/main.log
: >"$MAIN_LOG"

server_bin=""
server_data=""
cleanup() {
    if [ -n "$server_data" ]; then
        as_owner "$server_bin/pg_ctl" -D "$server_data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_owner "$server_bin/pg_ctl" -D "$server_data" -m immediate -w stop >/dev/null 2>&1
        server_data=""
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "pg-versions: kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'echo "pg-versions: interrupted" >&2; exit 130' INT TERM HUP

# One snapshot of the working tree for every version (without .git and
# build products), so that all versions test the same code even while the
# tree is being edited.
mkdir -p "$T/tree"
if ! tar -C "$SRC" -cf - --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./results --exclude=./output_iso --exclude=./tmp_check --exclude=./log \
    --exclude=./regression.diffs --exclude=./regression.out . |
    tar -C "$T/tree" -xf -; then
    echo "pg-versions: cannot copy the working tree"
    echo "pg-versions: 0 passed, ${#VERSIONS[@]} failed"
    exit 1
fi
# an install script generated by an older layout (DATA_built) is rebuilt
if grep -q '^DATA_built *= *mtms--0.1.sql' "$T/tree/Makefile"; then
    rm -f "$T/tree/mtms--0.1.sql"
fi

# fmt SECONDS: 75 -> "1m15s"
fmt() {
    if [ "$1" -ge 60 ]; then
        printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
    else
        printf '%ds' "$1"
    fi
}

# step NAME LOG COMMAND...: run COMMAND with its output appended to LOG;
# sets STEP_TIME; on failure prints the tail of LOG.
STEP_TIME=0
FAIL_REASON=""
step() {
    local name=$1 log=$2 t0=$SECONDS rc=0
    shift 2
    printf '\n=== %s: %s\n' "$name" "$*" >>"$log"
    "$@" >>"$log" 2>&1 </dev/null || rc=$?
    STEP_TIME=$((SECONDS - t0))
    if [ "$rc" -ne 0 ]; then
        echo "  $name FAILED (exit status $rc) after $(fmt "$STEP_TIME"); last lines of $log:"
        tail -n 40 "$log" | sed 's/^/    | /'
    fi
    return "$rc"
}

# ---------------------------------------------------------------- packages

need_source=0
need_system=0
for v in "${VERSIONS[@]}"; do
    if [ "$v" = "$SYSTEM_PG" ]; then
        need_system=1
    else
        need_source=1
    fi
done

PACKAGES=(libtap-parser-sourcehandler-pgtap-perl libopenblas-serial-dev pkg-config make gcc)
if [ "$need_system" -eq 1 ]; then
    # shellcheck source=test/pg-env.sh
    mapfile -t -O "${#PACKAGES[@]}" PACKAGES < <(MTMS_PG=$SYSTEM_PG && unset PG_CONFIG &&
        . test/pg-env.sh && printf '%s\n' "${PG_PACKAGES[@]}")
fi
if [ "$need_source" -eq 1 ]; then
    # the upstream tarballs' compressions, and what PostgreSQL's and pgTAP's builds need
    PACKAGES+=(bzip2 xz-utils bison flex perl zlib1g-dev patch)
fi
echo "pg-versions: PostgreSQL ${VERSIONS[*]} (packaged: $SYSTEM_PG; cache $CACHE; log $T/logs)"
if ! step "packages" "$MAIN_LOG" bash test/install-packages.sh "${PACKAGES[@]}"; then
    echo "pg-versions: 0 passed, ${#VERSIONS[@]} failed"
    exit 1
fi
echo "  packages: $(fmt "$STEP_TIME")"

# The OS user the servers run as (PostgreSQL refuses to run as root).
if [ "$(id -u)" -eq 0 ]; then
    OWNER=postgres
    if ! id -u "$OWNER" >/dev/null 2>&1; then
        OWNER=mtms-pg
        id -u "$OWNER" >/dev/null 2>&1 ||
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$OWNER"
    fi
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER=$(id -un)
    as_owner() { "$@"; }
fi

# ---------------------------------------------------------------- private apt

APT_DIR=$T/apt
APT=(-o "Dir::Etc::sourcelist=$APT_DIR/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
    -o APT::Sandbox::User=root -o Acquire::Languages=none -q)
apt_ready=0

# Fetches the Sources lists of every suite the run needs (once).
apt_setup() {
    local suites=() s v
    [ "$apt_ready" -eq 0 ] || return "$((apt_ready == 1 ? 0 : 1))"
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    for v in "${VERSIONS[@]}"; do
        [ "$v" = "$SYSTEM_PG" ] || suites+=("$(suite_of "$v")")
    done
    suites+=("$PGTAP_SUITE")
    : >"$APT_DIR/sources.list"
    for s in $(printf '%s\n' "${suites[@]}" | sort -u); do
        echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $s main" \
            >>"$APT_DIR/sources.list"
    done
    # --error-on=any: a list that cannot be fetched is an error, not a warning
    if step "apt source lists" "$MAIN_LOG" apt-get "${APT[@]}" --error-on=any update; then
        echo "  apt source lists ($(sort -u <<<"$(printf '%s\n' "${suites[@]}")" | tr '\n' ' ' | sed 's/ $//')): $(fmt "$STEP_TIME")"
        apt_ready=1
    else
        apt_ready=2
    fi
    [ "$apt_ready" -eq 1 ]
}

# source_version PACKAGE SUITE: the version apt-get source would fetch
source_version() {
    apt-get "${APT[@]}" source --print-uris "$1/$2" 2>>"$MAIN_LOG" |
        sed -n "s/^Selected version '\([^']*\)'.*/\1/p" | head -n 1
}

# fetch_source PACKAGE SUITE DIR: download the upstream tarball of
# PACKAGE's source package in SUITE into DIR (apt checks it against the
# Sources list's checksums) and unpack it into DIR/tree.  Only the upstream
# sources: Debian's packaging and patches are neither fetched nor applied.
fetch_source() {
    local pkg=$1 suite=$2 dir=$3 tarball top
    rm -rf "$dir"
    mkdir -p "$dir/unpack" &&
        (cd "$dir" && apt-get "${APT[@]}" source --download-only --tar-only "$pkg/$suite") || return 1
    tarball=$(printf '%s\n' "$dir"/*.orig.tar.* | grep -v '\.asc$' | head -n 1)
    [ -n "$tarball" ] || { echo "no upstream tarball downloaded"; return 1; }
    tar -C "$dir/unpack" -xf "$tarball" || return 1
    top=$(printf '%s\n' "$dir"/unpack/*/ | head -n 1)
    [ -n "$top" ] && mv "$top" "$dir/tree" && rm -f "$tarball"
}

# ---------------------------------------------------------------- pgTAP source

PGTAP_VERSION=""
PGTAP_TREE=""
# pgtap_source: download and unpack pgTAP once per run
pgtap_source() {
    local dir=$T/pgtap-src
    [ -z "$PGTAP_TREE" ] || return 0
    if step "pgtap source" "$MAIN_LOG" fetch_source pgtap "$PGTAP_SUITE" "$dir"; then
        PGTAP_TREE=$dir/tree
        echo "  pgtap source (pgtap $PGTAP_VERSION from $PGTAP_SUITE): $(fmt "$STEP_TIME")"
    else
        FAIL_REASON="pgTAP source download (log $MAIN_LOG)"
        return 1
    fi
}

# ---------------------------------------------------------------- server builds

# configure_in DIR ARGS...: ./configure ARGS in DIR (a subshell: the cd stays there)
configure_in() (
    cd "$1" && shift && ./configure "$@"
)

# build_server V PREFIX PGVERSION LOG: PostgreSQL V from source into PREFIX.
# Prints the time of each step; TIMES gets a one-line summary.
build_server() {
    local v=$1 prefix=$2 srcver=$3 log=$4 dir tree d
    local t_dl t_cfg t_build t_inst
    dir=$T/pg-src-$v
    : >"$log"
    rm -rf "$prefix" "$dir"
    if ! step "source download" "$log" fetch_source "postgresql-$v" "$(suite_of "$v")" "$dir"; then
        if grep -q '404 *Not Found' "$log"; then
            FAIL_REASON="the Debian archive lists postgresql-$v $srcver in $(suite_of "$v") but serves no upstream tarball of it (HTTP 404)"
            echo "  $FAIL_REASON"
        fi
        return 1
    fi
    t_dl=$STEP_TIME
    echo "  source download + unpack: $(fmt "$t_dl")"
    tree=$dir/tree
    step "configure" "$log" configure_in "$tree" --prefix="$prefix" "${CONFIGURE_OPTS[@]}" || return 1
    t_cfg=$STEP_TIME
    echo "  configure: $(fmt "$t_cfg")"
    # "make" builds src/ (server, client tools, libpq, PL/pgSQL, pg_regress
    # and the isolation tester) and config/; neither the docs nor contrib
    step "build" "$log" make -C "$tree" -s -j"$JOBS" || return 1
    t_build=$STEP_TIME
    echo "  build (make -j$JOBS): $(fmt "$t_build")"
    # "make install" installs pg_regress and the isolation tester under the
    # PGXS directory too (src/test/regress and src/test/isolation)
    step "install" "$log" make -C "$tree" -s install || return 1
    t_inst=$STEP_TIME
    for d in src/test/regress src/test/isolation; do
        step "install $d" "$log" make -C "$tree/$d" -s install || return 1
        t_inst=$((t_inst + STEP_TIME))
    done
    echo "  install: $(fmt "$t_inst")"
    rm -rf "$dir"
    TIMES="download $(fmt "$t_dl"), configure $(fmt "$t_cfg"), build $(fmt "$t_build"), install $(fmt "$t_inst")"
}

# build_pgtap V PREFIX LOG: pgTAP into PREFIX; PGTAP_TIME: build + install
PGTAP_TIME=0
build_pgtap() {
    local v=$1 prefix=$2 log=$3 dir
    dir=$T/pgtap-$v
    pgtap_source || return 1
    rm -rf "$dir"
    cp -a "$PGTAP_TREE" "$dir"
    step "pgtap build" "$log" make -C "$dir" PG_CONFIG="$prefix/bin/pg_config" || return 1
    PGTAP_TIME=$STEP_TIME
    step "pgtap install" "$log" make -C "$dir" PG_CONFIG="$prefix/bin/pg_config" install || return 1
    PGTAP_TIME=$((PGTAP_TIME + STEP_TIME))
    rm -rf "$dir"
}

# prepare_built V: make sure $CACHE/V holds a finished build of the current
# source package; sets PREFIX and BUILD_NOTE
prepare_built() {
    local v=$1 srcver prefix stamp_server stamp_pgtap lock t0 rc=0
    local server_stamp pgtap_stamp log
    prefix=$CACHE/$v
    FAIL_REASON="PostgreSQL $v build (log $CACHE/build-$v.log)"
    server_stamp=$prefix/.mtms-server-stamp
    pgtap_stamp=$prefix/.mtms-pgtap-stamp
    log=$CACHE/build-$v.log
    PREFIX=$prefix
    mkdir -p "$CACHE" || return 1
    chmod 755 "$CACHE" 2>/dev/null
    srcver=""
    if apt_setup; then
        srcver=$(source_version "postgresql-$v" "$(suite_of "$v")")
        [ -n "$PGTAP_VERSION" ] || PGTAP_VERSION=$(source_version pgtap "$PGTAP_SUITE")
    fi
    if [ -z "$srcver" ] || [ -z "$PGTAP_VERSION" ]; then
        if [ -s "$server_stamp" ] && [ -s "$pgtap_stamp" ] && [ -x "$prefix/bin/pg_config" ]; then
            echo "  cannot look up the source package's version; using the cached build ($(head -n 1 "$server_stamp"))"
            BUILD_NOTE="cached, version not checked"
            return 0
        fi
        if [ "$apt_ready" -eq 1 ]; then
            FAIL_REASON="no source package postgresql-$v in $(suite_of "$v") or pgtap in $PGTAP_SUITE"
            echo "  $FAIL_REASON"
        else
            FAIL_REASON="the Debian archive's source lists could not be fetched, and nothing is cached"
            echo "  $FAIL_REASON"
        fi
        return 1
    fi
    stamp_server="postgresql-$v $srcver ($(suite_of "$v")); $RECIPE"
    stamp_pgtap="pgtap $PGTAP_VERSION ($PGTAP_SUITE); $stamp_server"
    echo "  source: postgresql-$v $srcver from $(suite_of "$v"), pgtap $PGTAP_VERSION from $PGTAP_SUITE"

    # one build of a version at a time, whatever runs in parallel
    exec {lock}>"$CACHE/.lock-$v"
    flock "$lock"
    t0=$SECONDS
    if [ "${MTMS_PG_REBUILD:-0}" = 1 ] || [ "$(cat "$server_stamp" 2>/dev/null)" != "$stamp_server" ]; then
        echo "  building PostgreSQL $v into $prefix (log $log)"
        if build_server "$v" "$prefix" "$srcver" "$log"; then
            echo "$stamp_server" >"$server_stamp"
            BUILD_NOTE="built: $TIMES"
        else
            rc=1
        fi
    else
        BUILD_NOTE="cached"
        TIMES=""
    fi
    if [ "$rc" -eq 0 ] && [ "$(cat "$pgtap_stamp" 2>/dev/null)" != "$stamp_pgtap" ]; then
        if build_pgtap "$v" "$prefix" "$log"; then
            echo "$stamp_pgtap" >"$pgtap_stamp"
            echo "  pgtap build + install: $(fmt "$PGTAP_TIME")"
            if [ "$BUILD_NOTE" = cached ]; then
                BUILD_NOTE="server cached, pgtap $(fmt "$PGTAP_TIME")"
            else
                BUILD_NOTE="$BUILD_NOTE, pgtap $(fmt "$PGTAP_TIME")"
            fi
        else
            rc=1
        fi
    fi
    exec {lock}>&-
    if [ "$rc" -eq 0 ]; then
        if [ "$BUILD_NOTE" = cached ]; then
            echo "  server + pgtap: cached ($prefix)"
        else
            echo "  server + pgtap total: $(fmt $((SECONDS - t0)))"
        fi
    fi
    return "$rc"
}

# ---------------------------------------------------------------- one version

free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

declare -A SUMMARY
failed_versions=0
passed_versions=0

# run_suite V BUILD BINDIR SOCKETDIR PORT COUNTS: test/in-cluster.sh of the
# mtms copy BUILD against the cluster, with the environment pg_virtualenv
# gives it in test/run-all.sh; that version's client programs come first
# on PATH (psql, createdb, pg_dump; pg_prove runs psql from PATH).
run_suite() (
    local v=$1 build=$2 bin=$3 sock=$4 port=$5 counts=$6
    cd "$build" || exit 1
    unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGPASSWORD PGPASSFILE PGOPTIONS PGSYSCONFDIR
    PATH="$bin:$PATH" PGHOST="$sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres \
        PG_CONFIG="$bin/pg_config" MTMS_PG="$v" MTMS_COUNTS_FILE="$counts" \
        bash "$build/test/in-cluster.sh" </dev/null
)

# PostgreSQL 17 is Debian 13's: when its source cannot be fetched (this
# workplace's archive mirror lists it but serves no tarball), test Debian's
# own build of it instead, in a Debian 13 chroot (test/debian13.sh: the
# README's two commands on a clean clone of HEAD, so committed code only).
debian13_fallback() {
    local log=$T/logs/debian13.log line t0=$SECONDS
    echo "  falling back to Debian 13's packaged PostgreSQL 17 in a chroot (test/debian13.sh; committed HEAD)"
    if bash "$SRC/test/debian13.sh" >"$log" 2>&1; then
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
        SUMMARY[17]="ok (Debian 13 packages, chroot, $(fmt $((SECONDS - t0)))): ${line:-passed}"
        echo "  debian13.sh: ${line:-passed} ($(fmt $((SECONDS - t0))))"
        return 0
    fi
    tail -n 40 "$log" | sed 's/^/    | /'
    SUMMARY[17]="FAILED: test/debian13.sh (log: $log)"
    return 1
}

# run_version V: everything for one version; returns non-zero on failure
run_version() {
    local v=$1 run pgc bin build data sock port counts status t0 vlog
    local passed=0 failed=0 what=""
    run=$T/v$v
    vlog=$T/logs/v$v.log
    : >"$vlog"
    mkdir -p "$run"

    # 1. the installation, copied
    if [ "$v" = "$SYSTEM_PG" ]; then
        BUILD_NOTE="Debian packages"
        local sys_lib=/usr/lib/postgresql/$v sys_share=/usr/share/postgresql/$v
        if [ ! -x "$sys_lib/bin/pg_config" ] || [ ! -e "/usr/include/postgresql/$v/server/postgres.h" ]; then
            echo "  $sys_lib or its server headers are missing"
            SUMMARY[$v]="FAILED: PostgreSQL $v packages missing"
            return 1
        fi
        mkdir -p "$run/usr/lib/postgresql" "$run/usr/share/postgresql" "$run/usr/include"
        if ! cp -a "$sys_lib" "$run/usr/lib/postgresql/" ||
            ! cp -a "$sys_share" "$run/usr/share/postgresql/" ||
            ! ln -s /usr/include/postgresql "$run/usr/include/postgresql"; then
            SUMMARY[$v]="FAILED: cannot copy the installation"
            return 1
        fi
        bin=$run/usr/lib/postgresql/$v/bin
        echo "  server + pgtap: Debian packages ($("$sys_lib/bin/pg_config" --version))"
    else
        if ! prepare_built "$v"; then
            if [ "$v" = 17 ] && [[ $FAIL_REASON == *"HTTP 404"* ]] && [ "${MTMS_NO_CHROOT:-}" != 1 ]; then
                debian13_fallback
                return
            fi
            SUMMARY[$v]="FAILED: $FAIL_REASON"
            return 1
        fi
        cp -a "$PREFIX" "$run/pg" || {
            SUMMARY[$v]="FAILED: cannot copy $PREFIX"
            return 1
        }
        bin=$run/pg/bin
    fi
    pgc=$bin/pg_config
    # an mtms installed there before must not stand in for this build
    rm -f "$("$pgc" --pkglibdir)/mtms.so" "$("$pgc" --sharedir)/extension/mtms"[-.]*
    rm -rf "$("$pgc" --pkglibdir)/bitcode/mtms" "$("$pgc" --pkglibdir)/bitcode/mtms.index.bc"
    case "$("$pgc" --pkglibdir)" in
        "$run"/*) ;;
        *)
            echo "  the copied pg_config does not relocate: $("$pgc" --pkglibdir)"
            SUMMARY[$v]="FAILED: installation copy does not relocate"
            return 1
            ;;
    esac

    # 2. mtms, from a copy of the working tree
    build=$run/mtms
    if ! cp -a "$T/tree" "$build"; then
        SUMMARY[$v]="FAILED: cannot copy the working tree"
        return 1
    fi
    t0=$SECONDS
    if ! step "mtms build" "$vlog" make -C "$build" -s PG_CONFIG="$pgc" COPT=-Werror ||
        ! step "mtms install" "$vlog" make -C "$build" -s PG_CONFIG="$pgc" install; then
        SUMMARY[$v]="FAILED: mtms build (make COPT=-Werror)"
        return 1
    fi
    MTMS_TIME=$((SECONDS - t0))
    echo "  mtms build + install (COPT=-Werror): $(fmt "$MTMS_TIME")"
    chmod -R a+rX "$run"

    # 3. a throwaway cluster
    data=$run/data
    sock=$run/sock
    mkdir -p "$data" "$sock"
    chown "$OWNER" "$data" "$sock"
    chmod 700 "$data"
    : >"$run/server.log"
    chown "$OWNER" "$run/server.log"
    if ! step "initdb" "$vlog" as_owner "$bin/initdb" -D "$data" -U postgres -A trust \
        -E UTF8 --locale=C.UTF-8 --no-sync; then
        SUMMARY[$v]="FAILED: initdb"
        return 1
    fi
    cat >>"$data/postgresql.conf" <<EOF
# test/pg-versions.sh (settings of test/run-all.sh and pg_virtualenv)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = off
log_min_messages = log
log_min_error_statement = panic
log_line_prefix = '%m [%p] %q%u@%d '
shared_preload_libraries = 'mtms'
EOF
    for _ in 1 2 3 4 5; do
        port=$(free_port) || break
        sed -i "/^port = /d" "$data/postgresql.conf"
        echo "port = $port" >>"$data/postgresql.conf"
        server_bin=$bin
        server_data=$data
        if step "start" "$vlog" as_owner "$bin/pg_ctl" -D "$data" -l "$run/server.log" -w -t 120 start; then
            break
        fi
        server_data=""
        port=""
    done
    if [ -z "${port:-}" ]; then
        tail -n 20 "$run/server.log" | sed 's/^/    | /'
        SUMMARY[$v]="FAILED: the server did not start"
        return 1
    fi

    # 4. the suite
    counts=$run/counts
    : >"$counts"
    status=0
    t0=$SECONDS
    if [ "${VERBOSE:-0}" = 1 ]; then
        run_suite "$v" "$build" "$bin" "$sock" "$port" "$counts" 2>&1 | tee "$run/suite.log"
        status=${PIPESTATUS[0]}
    else
        run_suite "$v" "$build" "$bin" "$sock" "$port" "$counts" >"$run/suite.log" 2>&1 || status=$?
    fi
    local t_suite=$((SECONDS - t0))
    if [ -s "$counts" ]; then
        # "passed failed what-ran" (test/in-cluster.sh)
        read -r passed failed what <"$counts"
    fi
    if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1 # the harness itself failed before or after counting
    fi
    if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
        if [ "${VERBOSE:-0}" != 1 ]; then
            # all of it but long runs of TAP diagnostics ("# ...")
            echo "  --- suite output (PostgreSQL $v)"
            awk '/^# / { if (++diag <= 15) print; else if (diag == 16) print "# [more diagnostics cut]"; next }
                 { diag = 0; print }' "$run/suite.log" | head -n 600 | sed 's/^/    | /'
        fi
        echo "  --- server log, last 40 lines"
        tail -n 40 "$run/server.log" | sed 's/^/    | /'
        # kept for a closer look: the whole output, the server log, the diffs
        local keep=$CACHE/logs/$v
        rm -rf "$keep"
        mkdir -p "$keep"
        cp "$run/suite.log" "$run/server.log" "$keep/"
        for f in regression.diffs output_iso/regression.diffs; do
            [ -s "$build/$f" ] && cp "$build/$f" "$keep/${f//\//-}"
        done
        echo "  --- full suite output, server log and diffs kept in $keep"
    fi
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >>"$vlog" 2>&1
    server_data=""

    [ -z "$what" ] || echo "  ran: $what"
    echo "  suite: $(fmt "$t_suite"): $passed passed, $failed failed"
    local result=ok
    [ "$failed" -eq 0 ] || result=FAILED
    SUMMARY[$v]="$result ($("$pgc" --version | sed 's/^PostgreSQL //'); server: $BUILD_NOTE; mtms: $(fmt "$MTMS_TIME"); suite $(fmt "$t_suite")): $passed tests passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# ---------------------------------------------------------------- main

for v in "${VERSIONS[@]}"; do
    echo "=== PostgreSQL $v"
    t_version=$SECONDS
    if run_version "$v"; then
        passed_versions=$((passed_versions + 1))
    else
        failed_versions=$((failed_versions + 1))
    fi
    echo "  total: $(fmt $((SECONDS - t_version)))"
done

echo "=== summary"
for v in "${VERSIONS[@]}"; do
    echo "PostgreSQL $v: ${SUMMARY[$v]}"
done
echo "pg-versions: $passed_versions passed, $failed_versions failed"
[ "$failed_versions" -eq 0 ]
