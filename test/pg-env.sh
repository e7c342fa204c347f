# test/pg-env.sh: which PostgreSQL the scripts build against and run.
#
# Sourced (not run) by test/setup.sh, test/run-all.sh, test/demo.sh,
# test/in-cluster.sh, test/sanitize.sh and the bench/ scripts.  Sets
#
#   MTMS_PG     the PostgreSQL major version: $MTMS_PG when the caller set
#               it, else the version of Debian's "postgresql" package that
#               this machine's apt offers (15 on Debian 12, 17 on Debian 13),
#               else the one /etc/os-release implies;
#   PG_CONFIG   /usr/lib/postgresql/$MTMS_PG/bin/pg_config unless set;
#   PG_PACKAGES the Debian packages the build and the tests need for it
#               (and the training report, tools/report.sh: Python 3 with
#               matplotlib and psycopg2).
#
# Nothing here installs or starts anything.

mtms_pg_from_apt() {
    # "Depends: postgresql-15" of the metapackage; empty without apt lists
    apt-cache show --no-all-versions postgresql 2>/dev/null |
        sed -n 's/^Depends:.*postgresql-\([0-9][0-9]*\).*/\1/p' | head -n 1
}

mtms_pg_from_os_release() {
    local id=""
    if [ -r /etc/os-release ]; then
        id=$(. /etc/os-release && echo "${VERSION_ID:-}")
    fi
    case "$id" in
        12) echo 15 ;;
        13) echo 17 ;;
        *) echo 15 ;;
    esac
}

if [ -z "${MTMS_PG:-}" ]; then
    MTMS_PG=$(mtms_pg_from_apt)
    [ -n "$MTMS_PG" ] || MTMS_PG=$(mtms_pg_from_os_release)
fi
case "$MTMS_PG" in
    '' | *[!0-9]*)
        echo "pg-env.sh: MTMS_PG must be a PostgreSQL major version such as 15 or 17, got '$MTMS_PG'" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac
export MTMS_PG
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$MTMS_PG/bin/pg_config}

PG_PACKAGES=(
    postgresql-common
    "postgresql-$MTMS_PG"
    "postgresql-server-dev-$MTMS_PG"
    "postgresql-$MTMS_PG-pgtap"
    libtap-parser-sourcehandler-pgtap-perl
    libopenblas-serial-dev
    pkg-config
    make
    gcc
    python3-matplotlib
    python3-psycopg2
)

# Installed when the archive has them (test/setup.sh): PL/Proxy for
# test/multinode_test.sh's coordinator, which skips where there is none.
PG_OPTIONAL_PACKAGES=(
    "postgresql-$MTMS_PG-plproxy"
)
