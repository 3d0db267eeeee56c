#!/usr/bin/env bash
# scripts/install-postgres.sh — install a native PostgreSQL + pgvector (>= 0.7)
# and prepare the protoprune test database.
#
# Usage (as root, Debian 12 "bookworm" or Debian 13 "trixie", no systemd needed):
#
#     bash scripts/install-postgres.sh
#     # or, to pick up the URL:
#     eval "$(bash scripts/install-postgres.sh | grep '^DATABASE_URL=')"
#     export TEST_DATABASE_URL="$DATABASE_URL"
#
# Output contract:
#   * stdout carries exactly ONE line:  DATABASE_URL=postgres://USER:PASS@127.0.0.1:PORT/DB
#     (user, password and database are percent-encoded). Nothing else is printed
#     on stdout; all progress lines (prefixed "[install-postgres]") and the output
#     of apt-get / make / pg_ctlcluster go to stderr.
#   * exit status is non-zero on any failure.
#
# What it does (each step says "already ..." when there is nothing to do, so a
# second run changes nothing and finishes in a second or two):
#   1. Reads /etc/os-release and picks the PostgreSQL major version:
#        Debian 12 -> postgresql-15 from apt; pgvector is built from Debian
#                     trixie's *source* package (bookworm has no pgvector package).
#                     The trixie deb-src line lives in a PRIVATE apt configuration
#                     under $PROTOPRUNE_PG_WORKDIR/apt-trixie-src (own sources.list,
#                     own lists dir); /etc/apt and the system apt lists are never
#                     touched. Built with PG 15's own pg_config
#                     (/usr/lib/postgresql/15/bin/pg_config) and installed with
#                     `make install`. Skipped when PG 15's extension dir already
#                     has vector.control with default_version >= 0.7 and vector.so.
#        Debian 13 -> postgresql-17 + postgresql-17-pgvector from apt.
#      `apt-get update` runs at most once, and only when something must be installed.
#   2. Creates cluster <ver>/main if missing (pg_createcluster), makes it listen
#      on 127.0.0.1:$PGPORT_TEST, starts it with pg_ctlcluster and waits for
#      pg_isready.
#   3. Creates (idempotently) a NON-superuser login role and a database owned by
#      it, creates extension "vector" in that database as the postgres
#      superuser, checks extversion >= 0.7 and checks password login over TCP
#      (Debian's default pg_hba.conf: scram-sha-256 for 127.0.0.1/32).
#
# Environment variables (all optional):
#   PGPORT_TEST             TCP port of the cluster            (default 5432)
#   PROTOPRUNE_PG_USER      login role for the tests            (default protoprune)
#   PROTOPRUNE_PG_PASSWORD  its password                        (default protoprune)
#   PROTOPRUNE_PG_DB        test database, owned by that role   (default protoprune_test)
#   PROTOPRUNE_PG_WORKDIR   work dir for the private apt config
#                           and the pgvector source tree         (default /var/cache/protoprune)
#
# The cluster is left running. Without systemd nothing restarts it after a
# reboot/new container: just run this script again (it is cheap when all is done).

set -euo pipefail

# fd 3 = the real stdout (only the DATABASE_URL line goes there); everything else -> stderr.
exec 3>&1 1>&2

log() { printf '[install-postgres] %s\n' "$*" >&2; }
die() { printf '[install-postgres] ERROR: %s\n' "$*" >&2; exit 1; }

MIN_VECTOR_VERSION=0.7
PG_PORT=${PGPORT_TEST:-5432}
APP_USER=${PROTOPRUNE_PG_USER:-protoprune}
APP_PASSWORD=${PROTOPRUNE_PG_PASSWORD:-protoprune}
APP_DB=${PROTOPRUNE_PG_DB:-protoprune_test}
WORK_DIR=${PROTOPRUNE_PG_WORKDIR:-/var/cache/protoprune}

start_ts=$SECONDS

# ---------------------------------------------------------------------------
# 1. Debian release (checked first)
# ---------------------------------------------------------------------------
[[ -r /etc/os-release ]] || die "/etc/os-release not found: only Debian 12/13 are supported"
os_id=$(. /etc/os-release && printf '%s' "${ID:-}")
os_version_id=$(. /etc/os-release && printf '%s' "${VERSION_ID:-}")
os_codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
[[ $os_id == debian ]] || die "unsupported OS ID='$os_id' (need Debian 12 bookworm or 13 trixie)"

if [[ $os_version_id == 12 || $os_codename == bookworm ]]; then
  PG_VER=15
  PGVECTOR_FROM=source
elif [[ $os_version_id == 13 || $os_codename == trixie ]]; then
  PG_VER=17
  PGVECTOR_FROM=apt
else
  die "unsupported Debian release VERSION_ID='$os_version_id' VERSION_CODENAME='$os_codename' (need 12/bookworm or 13/trixie)"
fi
log "Debian ${os_version_id:-?} (${os_codename:-?}): PostgreSQL $PG_VER, pgvector from $PGVECTOR_FROM"

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, manages the cluster)"
[[ $PG_PORT =~ ^[0-9]+$ ]] && (( PG_PORT > 0 && PG_PORT < 65536 )) || die "PGPORT_TEST='$PG_PORT' is not a TCP port"
[[ -n $APP_USER && -n $APP_PASSWORD && -n $APP_DB ]] || die "PROTOPRUNE_PG_USER/PASSWORD/DB must not be empty"
[[ $APP_USER != postgres ]] || die "PROTOPRUNE_PG_USER must not be 'postgres' (the test role must not be a superuser)"

export DEBIAN_FRONTEND=noninteractive
PG_BIN=/usr/lib/postgresql/$PG_VER/bin
PG_CONFIG_BIN=$PG_BIN/pg_config

# version_ge A B  ->  true when A >= B (Debian version ordering)
version_ge() { dpkg --compare-versions "$1" ge "$2"; }

# run_detached CMD... : run CMD with every file descriptor > 2 closed.
# pg_ctlcluster (and a package postinst that starts a cluster) leaves a
# long-lived postmaster behind that inherits every open fd except 0-2 (which
# pg_ctl points at the cluster log). If it kept fd 3 (our real stdout) or some
# other pipe of the caller, `$(bash install-postgres.sh)` would never see EOF and
# hang forever even though the script finished.
run_detached() {
  (
    for fd_path in /proc/"$BASHPID"/fd/*; do
      fd=${fd_path##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && (( fd > 2 )); then
        eval "exec $fd>&-" 2>/dev/null || true
      fi
    done
    exec "$@"
  )
}

# ---------------------------------------------------------------------------
# apt helpers
# ---------------------------------------------------------------------------
APT_UPDATED=0
APT_OPTS=(-q -o DPkg::Lock::Timeout=300)
# keep existing config files without prompting (no stdin in CI)
APT_INSTALL_OPTS=(-y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

apt_update_once() {
  if (( APT_UPDATED == 0 )); then
    log "apt-get update (system sources)"
    apt-get "${APT_OPTS[@]}" update
    APT_UPDATED=1
  fi
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# ensure_pkgs PKG... : install the missing ones (apt-get update at most once per run)
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if (( ${#missing[@]} == 0 )); then
    log "already installed: $*"
    return 0
  fi
  apt_update_once
  log "installing: ${missing[*]}"
  run_detached apt-get "${APT_OPTS[@]}" install "${APT_INSTALL_OPTS[@]}" "${missing[@]}"
  log "installed: ${missing[*]}"
}

# ---------------------------------------------------------------------------
# 2. PostgreSQL + pgvector packages
# ---------------------------------------------------------------------------
# postgresql-contrib is not needed: since PG 10 the contrib modules ship inside
# postgresql-NN itself and pgvector does not depend on any of them.
if [[ $PGVECTOR_FROM == apt ]]; then
  ensure_pkgs "postgresql-$PG_VER" "postgresql-$PG_VER-pgvector"
else
  ensure_pkgs "postgresql-$PG_VER"
fi
[[ -x $PG_CONFIG_BIN ]] || die "$PG_CONFIG_BIN missing after installing postgresql-$PG_VER"

PG_SHAREDIR=$("$PG_CONFIG_BIN" --sharedir)
PG_PKGLIBDIR=$("$PG_CONFIG_BIN" --pkglibdir)
VECTOR_CONTROL=$PG_SHAREDIR/extension/vector.control

# Prints vector.control's default_version, or nothing when not installed.
installed_vector_version() {
  [[ -f $VECTOR_CONTROL && -f $PG_PKGLIBDIR/vector.so ]] || return 0
  sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$VECTOR_CONTROL" | head -n1
}

build_pgvector_from_trixie_source() {
  local apt_dir=$WORK_DIR/apt-trixie-src
  local src_root=$WORK_DIR/pgvector-src
  local apt_priv=(
    -o Dir::Etc::SourceList="$apt_dir/sources.list"
    -o Dir::Etc::SourceParts=-
    -o Dir::State::Lists="$apt_dir/lists"
    -o Dir::Cache="$apt_dir/cache"
    -o Dir::Cache::pkgcache=
    -o Dir::Cache::srcpkgcache=
    -o Acquire::Languages=none
  )

  # Build dependencies (from the *system* bookworm sources). build-essential
  # pulls dpkg-dev, which provides dpkg-source for `apt-get source`.
  ensure_pkgs "postgresql-server-dev-$PG_VER" build-essential

  # Private apt configuration that only knows trixie's deb-src: the system's
  # sources.list(.d) and /var/lib/apt/lists stay on bookworm.
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  cat >"$apt_dir/sources.list" <<'EOF'
# private to scripts/install-postgres.sh: pgvector source package only
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
  log "apt-get update (private trixie deb-src config in $apt_dir)"
  apt-get "${APT_OPTS[@]}" "${apt_priv[@]}" update

  rm -rf "$src_root"
  mkdir -p "$src_root"
  # let apt's sandbox user write the downloads (avoids "Download is performed unsandboxed as root")
  if id -u _apt >/dev/null 2>&1; then chown _apt:root "$src_root"; fi
  log "apt-get source pgvector (trixie) into $src_root"
  (cd "$src_root" && apt-get "${APT_OPTS[@]}" "${apt_priv[@]}" source pgvector)

  local src_dir
  src_dir=$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  [[ -n $src_dir && -f $src_dir/vector.control && -f $src_dir/Makefile ]] \
    || die "apt-get source pgvector did not produce a source tree under $src_root"
  local src_version
  src_version=$(sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$src_dir/vector.control" | head -n1)
  version_ge "$src_version" "$MIN_VECTOR_VERSION" \
    || die "trixie's pgvector source is $src_version, need >= $MIN_VECTOR_VERSION"

  # OPTFLAGS= drops upstream's default -march=native so the .so does not
  # depend on this particular CPU (same as Debian's own package build).
  log "building pgvector $src_version with PG_CONFIG=$PG_CONFIG_BIN"
  make -C "$src_dir" PG_CONFIG="$PG_CONFIG_BIN" OPTFLAGS= -j"$(nproc)"
  make -C "$src_dir" PG_CONFIG="$PG_CONFIG_BIN" OPTFLAGS= install
  log "built pgvector $src_version (installed into $PG_SHAREDIR/extension and $PG_PKGLIBDIR)"
}

if [[ $PGVECTOR_FROM == source ]]; then
  have_vector=$(installed_vector_version)
  if [[ -n $have_vector ]] && version_ge "$have_vector" "$MIN_VECTOR_VERSION"; then
    log "pgvector $have_vector already installed for PostgreSQL $PG_VER ($VECTOR_CONTROL)"
  else
    [[ -z $have_vector ]] || log "pgvector $have_vector is too old (need >= $MIN_VECTOR_VERSION): rebuilding"
    build_pgvector_from_trixie_source
  fi
fi

have_vector=$(installed_vector_version)
[[ -n $have_vector ]] || die "pgvector is not installed for PostgreSQL $PG_VER ($VECTOR_CONTROL / vector.so missing)"
version_ge "$have_vector" "$MIN_VECTOR_VERSION" \
  || die "pgvector $have_vector installed for PostgreSQL $PG_VER, need >= $MIN_VECTOR_VERSION"

# ---------------------------------------------------------------------------
# 3. Cluster: create, configure (127.0.0.1:PORT), start, wait
# ---------------------------------------------------------------------------
cluster_status() {
  pg_lsclusters --no-header 2>/dev/null | awk -v v="$PG_VER" '$1 == v && $2 == "main" { print $4 }'
}

if [[ -z $(cluster_status) ]]; then
  log "creating cluster $PG_VER/main on port $PG_PORT"
  run_detached pg_createcluster "$PG_VER" main --port "$PG_PORT"
  log "created cluster $PG_VER/main"
else
  log "cluster $PG_VER/main already exists"
fi

need_restart=0
cur_port=$(pg_conftool -s "$PG_VER" main show port 2>/dev/null || true)
if [[ $cur_port != "$PG_PORT" ]]; then
  log "setting port = $PG_PORT (was ${cur_port:-default 5432})"
  pg_conftool "$PG_VER" main set port "$PG_PORT"
  need_restart=1
fi
# Unset listen_addresses means the default 'localhost' (127.0.0.1 and ::1): fine.
cur_listen=$(pg_conftool -s "$PG_VER" main show listen_addresses 2>/dev/null || true)
cur_listen=${cur_listen//\'/}
case ",${cur_listen// /}," in
  ,, | *,\*,* | *,localhost,* | *,127.0.0.1,* | *,0.0.0.0,*) ;;
  *)
    log "setting listen_addresses = 'localhost' (was '$cur_listen')"
    pg_conftool "$PG_VER" main set listen_addresses localhost
    need_restart=1
    ;;
esac

# Server settings for protoprune's workload (bulk COPY of vectors, a few GB of embeddings): the
# stock 128 MB of shared_buffers makes every ingest evict dirty pages synchronously. Sized from
# this machine's memory; written as a conf.d file so the cluster's own files stay untouched.
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
shared_mb=$(( mem_mb / 4 > 8192 ? 8192 : mem_mb / 4 ))
tuning_file=/etc/postgresql/$PG_VER/main/conf.d/protoprune.conf
tuning="# written by protoprune's scripts/install-postgres.sh
shared_buffers = ${shared_mb}MB
effective_cache_size = $(( mem_mb / 2 ))MB
maintenance_work_mem = 1GB
work_mem = 64MB
max_wal_size = 8GB
checkpoint_timeout = 15min
wal_compression = on"
if [[ "$(cat "$tuning_file" 2>/dev/null)" != "$tuning" ]]; then
  log "writing $tuning_file (shared_buffers = ${shared_mb}MB, max_wal_size = 8GB, ...)"
  mkdir -p "$(dirname "$tuning_file")"
  printf '%s\n' "$tuning" > "$tuning_file"
  need_restart=1
else
  log "server settings in $tuning_file already current"
fi

status=$(cluster_status)
if [[ $status == online* ]]; then
  if (( need_restart )); then
    log "restarting cluster $PG_VER/main to apply configuration"
    run_detached pg_ctlcluster "$PG_VER" main restart
  else
    log "cluster $PG_VER/main already running"
  fi
else
  log "starting cluster $PG_VER/main"
  if ! run_detached pg_ctlcluster "$PG_VER" main start; then
    # tolerate "already running" (e.g. started concurrently)
    [[ $(cluster_status) == online* ]] \
      || die "pg_ctlcluster $PG_VER main start failed; see /var/log/postgresql/postgresql-$PG_VER-main.log"
    log "cluster $PG_VER/main was already running"
  else
    log "started cluster $PG_VER/main"
  fi
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2; then break; fi
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$PG_PORT" -t 2 >&2 \
  || die "PostgreSQL is not accepting connections on 127.0.0.1:$PG_PORT; see /var/log/postgresql/postgresql-$PG_VER-main.log"

# ---------------------------------------------------------------------------
# 4. Role, database, extension
# ---------------------------------------------------------------------------
# su_sql [psql options...] <<<SQL : run SQL (from stdin) as the postgres superuser
# over the Unix socket (peer auth). stdin input allows :'var' / :"var" interpolation.
su_sql() {
  (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@")
}

role_info=$(su_sql -d postgres -v u="$APP_USER" <<<"SELECT rolsuper::int || ' ' || rolcanlogin::int FROM pg_roles WHERE rolname = :'u';")
if [[ -z $role_info ]]; then
  su_sql -d postgres -v u="$APP_USER" -v pw="$APP_PASSWORD" \
    <<<"CREATE ROLE :\"u\" LOGIN NOSUPERUSER NOCREATEROLE PASSWORD :'pw';"
  log "created role $APP_USER (login, not superuser)"
else
  read -r is_super can_login <<<"$role_info"
  if [[ $is_super == 1 ]]; then
    su_sql -d postgres -v u="$APP_USER" <<<"ALTER ROLE :\"u\" NOSUPERUSER;"
    log "role $APP_USER was a superuser: made it NOSUPERUSER"
  fi
  if [[ $can_login != 1 ]]; then
    su_sql -d postgres -v u="$APP_USER" <<<"ALTER ROLE :\"u\" LOGIN;"
    log "role $APP_USER could not log in: granted LOGIN"
  fi
  log "role $APP_USER already exists"
fi

db_owner=$(su_sql -d postgres -v d="$APP_DB" <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'d';")
if [[ -z $db_owner ]]; then
  su_sql -d postgres -v d="$APP_DB" -v u="$APP_USER" <<<"CREATE DATABASE :\"d\" OWNER :\"u\";"
  log "created database $APP_DB (owner $APP_USER)"
elif [[ $db_owner != "$APP_USER" ]]; then
  su_sql -d postgres -v d="$APP_DB" -v u="$APP_USER" <<<"ALTER DATABASE :\"d\" OWNER TO :\"u\";"
  log "database $APP_DB already exists: changed owner from $db_owner to $APP_USER"
else
  log "database $APP_DB already exists (owner $APP_USER)"
fi

ext_version=$(su_sql -d "$APP_DB" <<<"SELECT extversion FROM pg_extension WHERE extname = 'vector';")
if [[ -z $ext_version ]]; then
  su_sql -d "$APP_DB" <<<"CREATE EXTENSION IF NOT EXISTS vector;"
  log "created extension vector in $APP_DB"
else
  avail=$(su_sql -d "$APP_DB" <<<"SELECT default_version FROM pg_available_extensions WHERE name = 'vector';")
  if [[ -n $avail && $avail != "$ext_version" ]] && version_ge "$avail" "$ext_version"; then
    su_sql -d "$APP_DB" <<<"ALTER EXTENSION vector UPDATE;"
    log "updated extension vector in $APP_DB from $ext_version to $avail"
  else
    log "extension vector already present in $APP_DB"
  fi
fi
ext_version=$(su_sql -d "$APP_DB" <<<"SELECT extversion FROM pg_extension WHERE extname = 'vector';")
[[ -n $ext_version ]] || die "extension vector missing in $APP_DB after CREATE EXTENSION"
version_ge "$ext_version" "$MIN_VECTOR_VERSION" \
  || die "extension vector in $APP_DB is version $ext_version, need >= $MIN_VECTOR_VERSION"
log "extension vector version $ext_version in $APP_DB"

# ---------------------------------------------------------------------------
# 5. Password login over TCP as the app role
# ---------------------------------------------------------------------------
# Connection parameters are given explicitly so stray PG* variables or a
# ~/.pgpass cannot mask a broken setup.
app_sql() {
  env -u PGSERVICE -u PGSSLMODE -u PGOPTIONS PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
    PGPASSWORD="$APP_PASSWORD" \
    psql -X -q -At -v ON_ERROR_STOP=1 -w -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" -d "$APP_DB" "$@"
}

if app_sql -c 'SELECT 1' >/dev/null 2>&1; then
  log "password login as $APP_USER on 127.0.0.1:$PG_PORT already works"
else
  su_sql -d postgres -v u="$APP_USER" -v pw="$APP_PASSWORD" <<<"ALTER ROLE :\"u\" PASSWORD :'pw';"
  log "set password of role $APP_USER"
  app_sql -c 'SELECT 1' >/dev/null \
    || die "password login as $APP_USER on 127.0.0.1:$PG_PORT fails; check the host lines in /etc/postgresql/$PG_VER/main/pg_hba.conf (need scram-sha-256 or md5 for 127.0.0.1/32)"
fi

dist=$(app_sql -c "SELECT round(('[1,2,3]'::vector <=> '[1,2,4]'::vector)::numeric, 6);")
log "vector smoke test as $APP_USER: '[1,2,3]' <=> '[1,2,4]' = $dist"

# ---------------------------------------------------------------------------
# 6. Result (the only line on stdout)
# ---------------------------------------------------------------------------
urlencode() {
  local s=$1 out='' c i
  local LC_ALL=C
  for (( i = 0; i < ${#s}; i++ )); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9._~-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

log "done in $(( SECONDS - start_ts ))s: PostgreSQL $PG_VER on 127.0.0.1:$PG_PORT, pgvector $ext_version"
printf 'DATABASE_URL=postgres://%s:%s@127.0.0.1:%s/%s\n' \
  "$(urlencode "$APP_USER")" "$(urlencode "$APP_PASSWORD")" "$PG_PORT" "$(urlencode "$APP_DB")" >&3
