#!/usr/bin/env bash
# test/debian13.sh: the README's two commands on a fresh Debian 13 (trixie).
#
#     bash test/debian13.sh          # as root, on a Debian host
#
#  1. builds a minimal Debian 13 system with
#     "debootstrap --variant=minbase trixie" (installing debootstrap on the
#     host first if it is missing) and caches it as a tarball; later runs
#     unpack the tarball into a fresh directory, so every run starts from
#     the same pristine minimal system;
#  2. copies a clean clone of this repository's HEAD into it as
#     /root/mtms ("git clone": what is committed, as a newcomer gets it;
#     uncommitted changes of the working tree are not tested);
#  3. prepares it like a fresh machine: a policy-rc.d that keeps package
#     installs from starting daemons, the host's /etc/resolv.conf, an
#     /etc/hosts with localhost (debootstrap writes none, and pg_virtualenv
#     connects to "localhost"), /proc, /sys, /dev, /dev/pts and a tmpfs
#     /dev/shm (PostgreSQL's dynamic shared memory); every mount is undone
#     on exit, and the directory is removed only when nothing is mounted
#     under it;
#  4. runs, inside the chroot, as root, with an empty environment (only
#     HOME, PATH, TERM and CI when set):
#         cd /root/mtms && bash test/demo.sh
#         cd /root/mtms && bash test/run-all.sh
#     each into its own log; prints the demo's tail and the suite's last
#     lines;
#  5. prints the wall time of every step (chroot, packages, build, demo,
#     suite) and a summary line; exits non-zero when either command failed
#     or the suite's last line is not "N passed, 0 failed".
#
# Environment:
#   MTMS_CHROOT_CACHE      directory of the cached tarball
#                          (default /var/cache/mtms-debian13)
#   MTMS_CHROOT_REFRESH=1  build the chroot again and replace the tarball
#   MTMS_CHROOT_WORKDIR    where the run's directory is made (default
#                          /var/tmp); it keeps the logs after the run
#   MTMS_KEEP_CHROOT=1     keep the (unmounted) chroot after the run
#   MTMS_DEBIAN_MIRROR     default http://deb.debian.org/debian
#   MTMS_SHM_SIZE          size of the chroot's /dev/shm (default 2g)
#   CI                     passed into the chroot when set
#
# Needs: root, mount, chroot, git, and the Debian archive over HTTP.
# Touches nothing of the host but the cache directory, the run's directory
# and (only if missing) the host's debootstrap and debian-archive-keyring
# packages.  The tarball is never refreshed by itself (apt inside fetches
# current package lists anyway); MTMS_CHROOT_REFRESH=1 rebuilds it.  The chroot shares
# the host's network: the throwaway clusters pick a free port (pg_virtualenv).
set -euo pipefail

export LC_ALL=C # EPOCHREALTIME with a "." whatever the caller's locale

SUITE=trixie
VARIANT=minbase
MIRROR=${MTMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${MTMS_CHROOT_CACHE:-/var/cache/mtms-debian13}
SHM_SIZE=${MTMS_SHM_SIZE:-2g}
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

exec 5>&1 # progress lines, also from inside pipelines

say() { echo "debian13.sh: $*" >&5; }
die() {
    echo "debian13.sh: $*" >&2
    exit 1
}

# time in microseconds; durations printed as seconds with one decimal
now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { # microseconds -> "12.3"
    local us=$1
    printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, mount and chroot need it)"
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 (EPOCHREALTIME)"
command -v git >/dev/null || die "needs git on the host (to clone $REPO)"
git -C "$REPO" rev-parse --verify -q HEAD >/dev/null || die "$REPO has no commit to test"

T_START=$(now_us)

# --- the run's directory, and undoing everything on exit ------------------

mkdir -p "${MTMS_CHROOT_WORKDIR:-/var/tmp}"
WORK=$(realpath "$(mktemp -d "${MTMS_CHROOT_WORKDIR:-/var/tmp}/mtms-debian13.XXXXXX")")
ROOT=$WORK/root # the chroot
LOGS=$WORK      # the logs stay after the run
mkdir "$ROOT"
MOUNTS=()  # what this script mounted, in order
RUN_PID=""      # the background job running a command in the chroot
FOLLOWER_PID="" # the background job following its set-up log

# mount points at or under $ROOT, deepest first
mounts_under_root() {
    awk -v r="$ROOT" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r
}

# the processes whose root directory is the chroot (started by this script)
chroot_pids() {
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        if [ "$r" = "$ROOT" ]; then
            echo "${p#/proc/}"
        fi
    done
}

stop_chroot_processes() {
    local pids i
    pids=$(chroot_pids)
    [ -n "$pids" ] || return 0
    say "stopping processes left in the chroot: $(tr '\n' ' ' <<<"$pids")"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
        sleep 0.5
        pids=$(chroot_pids)
        [ -n "$pids" ] || return 0
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
}

unmount_all() {
    local i m
    # ours, in reverse order
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        if ! umount "$m" 2>/dev/null; then
            say "umount $m failed; detaching it lazily"
            umount -l "$m" || true
        fi
    done
    MOUNTS=()
    # anything else under the chroot (debootstrap interrupted between its
    # own mount and umount of /proc or /sys)
    for m in $(mounts_under_root); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
}

cleanup() {
    local status=$? t0
    trap - EXIT INT TERM
    set +e
    t0=$(now_us)
    if [ -n "$FOLLOWER_PID" ]; then
        kill "$FOLLOWER_PID" 2>/dev/null
    fi
    stop_chroot_processes
    if [ -n "$RUN_PID" ]; then
        wait "$RUN_PID" 2>/dev/null
    fi
    unmount_all
    if [ -n "$(mounts_under_root)" ]; then
        echo "debian13.sh: still mounted under $ROOT, not removing it:" >&2
        mounts_under_root >&2
        status=1
    elif [ -n "${MTMS_KEEP_CHROOT:-}" ]; then
        say "kept the chroot: $ROOT"
    else
        rm -rf --one-file-system "$ROOT"
    fi
    say "clean-up (processes, mounts, chroot) took $(secs $(($(now_us) - t0))) s; logs: $LOGS"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "debian13.sh: interrupted" >&2; exit 130' INT
trap 'echo "debian13.sh: terminated" >&2; exit 143' TERM

# --- 1. the minimal Debian 13 system: built once, then unpacked -----------

ARCH=$(dpkg --print-architecture)
TARBALL=$CACHE_DIR/$SUITE-$VARIANT-$ARCH.tar.gz

T0=$(now_us)
if [ -s "$TARBALL" ] && [ -z "${MTMS_CHROOT_REFRESH:-}" ]; then
    CHROOT_HOW="unpacked from $TARBALL"
    say "unpacking $TARBALL into $ROOT"
    tar -C "$ROOT" --numeric-owner -xpzf "$TARBALL"
    T_CHROOT_BUILD=0
else
    CHROOT_HOW="built with debootstrap"
    bash "$REPO/test/install-packages.sh" debootstrap debian-archive-keyring \
        >"$LOGS/host-packages.log" 2>&1 ||
        {
            cat "$LOGS/host-packages.log" >&2
            die "could not install debootstrap on the host"
        }
    say "debootstrap --variant=$VARIANT $SUITE $ROOT $MIRROR (log: $LOGS/debootstrap.log)"
    if ! debootstrap --variant="$VARIANT" "$SUITE" "$ROOT" "$MIRROR" \
        >"$LOGS/debootstrap.log" 2>&1 </dev/null; then
        tail -n 30 "$LOGS/debootstrap.log" >&2
        [ ! -f "$ROOT/debootstrap/debootstrap.log" ] ||
            tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    T_CHROOT_BUILD=$(($(now_us) - T0))
    [ -z "$(mounts_under_root)" ] || die "debootstrap left mounts under $ROOT"
    say "caching it as $TARBALL"
    mkdir -p "$CACHE_DIR"
    tmp=$(mktemp "$TARBALL.XXXXXX")
    tar -C "$ROOT" --numeric-owner --one-file-system -cpf - . | gzip -1 >"$tmp"
    mv -f "$tmp" "$TARBALL"
fi
T_CHROOT=$(($(now_us) - T0))
DEBIAN_VERSION=$(cat "$ROOT/etc/debian_version")
say "chroot ready: Debian $DEBIAN_VERSION, $CHROOT_HOW, $(secs "$T_CHROOT") s"

# --- 2. a clean clone of HEAD ----------------------------------------------

HEAD=$(git -C "$REPO" rev-parse HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    say "note: $REPO has uncommitted changes; testing HEAD ${HEAD:0:12} only"
fi
git clone -q --no-hardlinks "$REPO" "$ROOT/root/mtms"
if [ "$(git -C "$ROOT/root/mtms" rev-parse HEAD)" != "$HEAD" ]; then
    # HEAD moved during the clone, or a detached HEAD
    git -C "$ROOT/root/mtms" checkout -q --detach "$HEAD"
fi
say "cloned $REPO at ${HEAD:0:12} ($(git -C "$REPO" log -1 --format=%s "$HEAD")) into /root/mtms"

# --- 3. like a fresh machine -----------------------------------------------

# package installs start no daemons (postgresql-NN's main cluster would
# listen on the host's network)
cat >"$ROOT/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# test/debian13.sh: no daemons started by package installs
exit 101
EOF
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

# name resolution: the host's resolver (replaced, never written through a
# symlink that could point outside the chroot), and localhost, which every
# installed Debian has in /etc/hosts but debootstrap does not write
rm -f "$ROOT/etc/resolv.conf"
cat /etc/resolv.conf >"$ROOT/etc/resolv.conf"
if [ ! -s "$ROOT/etc/hosts" ]; then
    rm -f "$ROOT/etc/hosts"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
fi

# mount TARGET MOUNT-ARGS...: recorded for unmount_all
mount_in_root() {
    local target=$1
    shift
    [ -d "$target" ] || die "no directory $target to mount on"
    mount "$@" "$target" || return 1
    MOUNTS+=("$target")
}
mount_in_root "$ROOT/proc" -t proc -o nosuid,nodev,noexec proc
if ! mount_in_root "$ROOT/sys" -t sysfs -o ro,nosuid,nodev,noexec sysfs 2>/dev/null; then
    mount_in_root "$ROOT/sys" --bind /sys
    mount --make-private "$ROOT/sys"
fi
# /dev: a bind of the host's (without its submounts), made private at once
# so the mounts below do not propagate to the host's /dev
mount_in_root "$ROOT/dev" --bind /dev
mount --make-private "$ROOT/dev"
mount_in_root "$ROOT/dev/pts" --bind /dev/pts
mount_in_root "$ROOT/dev/shm" -t tmpfs -o "mode=1777,nosuid,nodev,size=$SHM_SIZE" shm
say "mounted ${MOUNTS[*]#"$ROOT"}"

# --- 4. the README's two commands -------------------------------------------

# mark_line LINE MARKS T0: a line that marks a phase (test/install-packages.sh,
# test/setup.sh, the demo's sections, test/in-cluster.sh, the counts) goes
# to MARKS with its time and, shortened, to the terminal
mark_line() {
    local t
    case $1 in
        'install-packages.sh: '* | 'setup.sh: '* | 'demo.sh: '* | '== '* | '=== '* | \
            '   ready in '* | *' passed, '*' failed')
            t=$(now_us)
            echo "$t $1" >>"$2"
            printf '  %7s s  %.110s\n' "$(secs $((t - $3)))" "$1" >&5
            ;;
    esac
}

# mark_phases LOG MARKS T0: copies its input to LOG, marking phases
mark_phases() {
    local log=$1 marks=$2 t0=$3 line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line"
        mark_line "$line" "$marks" "$t0"
    done >"$log"
}

# the set-up log that test/demo.sh names in its output ("(output in
# /tmp/mtms-demo.XXXXXX)"), as a path inside the chroot; empty if none
nested_log() {
    sed -n 's|.*(output in \(/tmp/[A-Za-z0-9._-]*\)).*|\1|p' "$1" 2>/dev/null | head -n 1
}

# follow_nested LOG MARKS T0: while the command runs, follows that set-up
# log inside the chroot (complete lines, every 0.2 s) to mark its phases
follow_nested() {
    local log=$1 marks=$2 t0=$3 path="" n=0 line
    while sleep 0.2; do
        [ -n "$path" ] || path=$(nested_log "$log")
        if [ -z "$path" ] || [ ! -f "$ROOT$path" ]; then
            continue
        fi
        while IFS= read -r line; do
            n=$((n + 1))
            mark_line "$line" "$marks" "$t0"
        done < <(tail -n "+$((n + 1))" "$ROOT$path")
    done
}

# run_in_chroot NAME COMMAND: sets RC, T_RUN_START, T_RUN (microseconds),
# LOG, MARKS, and copies a set-up log the command names to $LOGS/NAME-setup.log
run_in_chroot() {
    local name=$1 cmd=$2 t0 nested
    local env=(HOME=/root "PATH=$CHROOT_PATH" TERM=dumb)
    if [ -n "${CI+set}" ]; then
        env+=("CI=$CI")
    fi
    LOG=$LOGS/$name.log
    MARKS=$LOGS/$name.marks
    : >"$MARKS"
    : >"$LOG"
    say "[chroot] $cmd  (log: $LOG)"
    t0=$(now_us)
    follow_nested "$LOG" "$MARKS" "$t0" &
    FOLLOWER_PID=$!
    # in the background: a trapped signal interrupts "wait" at once
    (
        set +e
        chroot "$ROOT" /usr/bin/env -i "${env[@]}" /bin/bash -lc "$cmd" </dev/null 2>&1 |
            mark_phases "$LOG" "$MARKS" "$t0"
        exit "${PIPESTATUS[0]}"
    ) &
    RUN_PID=$!
    RC=0
    wait "$RUN_PID" || RC=$?
    RUN_PID=""
    T_RUN=$(($(now_us) - t0))
    T_RUN_START=$t0
    kill "$FOLLOWER_PID" 2>/dev/null || true
    wait "$FOLLOWER_PID" 2>/dev/null || true
    FOLLOWER_PID=""
    nested=$(nested_log "$LOG")
    if [ -n "$nested" ] && [ -f "$ROOT$nested" ]; then
        cp "$ROOT$nested" "$LOGS/$name-setup.log"
        say "set-up log $nested copied to $LOGS/$name-setup.log"
    fi
}

# the time of the first mark starting with TEXT, empty if none
mark_time() {
    awk -v p="$2" 'index(substr($0, index($0, " ") + 1), p) == 1 { print $1; exit }' "$1"
}

# phases of a run: packages (start .. "setup.sh: building"), build (..
# "setup.sh: installing"), then make install + cluster + the rest
phases() {
    local marks=$1 t0=$2 t_end=$3 t_build t_inst
    t_build=$(mark_time "$marks" 'setup.sh: building')
    t_inst=$(mark_time "$marks" 'setup.sh: installing')
    if [ -n "$t_build" ]; then
        P_PACKAGES=$(secs $((t_build - t0)))
    else
        P_PACKAGES="?"
    fi
    if [ -n "$t_build" ] && [ -n "$t_inst" ]; then
        P_BUILD=$(secs $((t_inst - t_build)))
        P_REST=$(secs $((t_end - t_inst)))
    else
        P_BUILD="?"
        P_REST="?"
    fi
}

T0=$(now_us)
run_in_chroot demo 'cd /root/mtms && bash test/demo.sh'
DEMO_RC=$RC
T_DEMO=$T_RUN
DEMO_LOG=$LOG
phases "$MARKS" "$T_RUN_START" "$((T_RUN_START + T_RUN))"
DEMO_PACKAGES=$P_PACKAGES DEMO_BUILD=$P_BUILD DEMO_REST=$P_REST
DEMO_LOGS=("$DEMO_LOG")
[ ! -f "$LOGS/demo-setup.log" ] || DEMO_LOGS+=("$LOGS/demo-setup.log")
NEWLY=$(sed -n 's/^[0-9]* upgraded, \([0-9]*\) newly installed.*/\1/p' "${DEMO_LOGS[@]}" | head -n 1)
PG=$(sed -n 's/^setup.sh: building mtms for PostgreSQL \([0-9]*\).*/\1/p' "${DEMO_LOGS[@]}" | head -n 1)

echo
echo "----- demo.sh: last lines (full log: $DEMO_LOG)"
if [ "$DEMO_RC" -eq 0 ]; then
    tail -n 25 "$DEMO_LOG"
else
    tail -n 60 "$DEMO_LOG"
fi
echo "----- demo.sh: exit status $DEMO_RC"
echo

run_in_chroot suite 'cd /root/mtms && bash test/run-all.sh'
SUITE_RC=$RC
T_SUITE=$T_RUN
SUITE_LOG=$LOG
phases "$MARKS" "$T_RUN_START" "$((T_RUN_START + T_RUN))"
SUITE_SETUP=$(awk -v a="$P_PACKAGES" -v b="$P_BUILD" 'BEGIN { if (a == "?" || b == "?") print "?"; else printf "%.1f", a + b }')
SUITE_REST=$P_REST
LAST=$(tail -n 1 "$SUITE_LOG")

echo
echo "----- run-all.sh: last lines (full log: $SUITE_LOG)"
if [ "$SUITE_RC" -eq 0 ]; then
    tail -n 15 "$SUITE_LOG"
else
    tail -n 80 "$SUITE_LOG"
fi
echo "----- run-all.sh: exit status $SUITE_RC"
echo

# --- 5. times and the verdict -----------------------------------------------

ok=1
[ "$DEMO_RC" -eq 0 ] || ok=0
[ "$SUITE_RC" -eq 0 ] || ok=0
if [[ $LAST =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    COUNTS=$LAST
    [ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ] || ok=0
else
    COUNTS="no \"N passed, N failed\" line"
    ok=0
fi

T_TOTAL=$(($(now_us) - T_START))
if [ "$T_CHROOT_BUILD" -gt 0 ]; then
    chroot_line="chroot (debootstrap $(secs "$T_CHROOT_BUILD") s + cache write)"
else
    chroot_line="chroot (unpack cached tarball)"
fi
printf '%-48s %8s s\n' \
    "$chroot_line" "$(secs "$T_CHROOT")" \
    "demo.sh (exit $DEMO_RC)" "$(secs "$T_DEMO")" \
    "  packages (${NEWLY:-0} newly installed)" "$DEMO_PACKAGES" \
    "  build (make COPT=-Werror)" "$DEMO_BUILD" \
    "  make install, cluster, demo.sql" "$DEMO_REST" \
    "run-all.sh (exit $SUITE_RC)" "$(secs "$T_SUITE")" \
    "  setup (packages present, make, install)" "$SUITE_SETUP" \
    "  cluster + tests" "$SUITE_REST" \
    "total" "$(secs "$T_TOTAL")"

summary="Debian $DEBIAN_VERSION, PostgreSQL ${PG:-?}, mtms ${HEAD:0:12}: $COUNTS;"
summary+=" chroot $(secs "$T_CHROOT") s ($([ "$T_CHROOT_BUILD" -gt 0 ] && echo built || echo cached)),"
summary+=" demo $(secs "$T_DEMO") s (packages $DEMO_PACKAGES s), suite $(secs "$T_SUITE") s, total $(secs "$T_TOTAL") s"
if [ "$ok" -eq 1 ]; then
    echo "debian13.sh: PASSED: $summary"
else
    echo "debian13.sh: FAILED: $summary"
    exit 1
fi
