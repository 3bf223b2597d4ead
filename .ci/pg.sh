# shellcheck shell=bash
# Throw-away PostgreSQL server for the test suite.
#
#   source .ci/pg.sh
#   pg_start   # initdb in a temp dir, start on 127.0.0.1:<free port>, export
#              # SPORTELLO_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres
#   ...
#   pg_stop    # stop the server and remove the temp dir (safe to call twice,
#              # or without pg_start: use it in an EXIT trap)
#
# The server binaries are looked up in /usr/lib/postgresql/*/bin (newest version
# first), then on PATH; if none are found and we are root, Debian's postgresql
# package is installed. initdb refuses to run as root, so as root the server runs
# as the `postgres` OS user.

_SPORTELLO_PG_DIR=""
_SPORTELLO_PG_BIN=""

_pg_log() { printf 'pg.sh: %s\n' "$*" >&2; }

# Print the directory holding initdb/pg_ctl, newest installed major version first.
_pg_find_bindir() {
  local d initdb
  while IFS= read -r d; do
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] && { printf '%s\n' "$d"; return 0; }
  done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
  if initdb=$(command -v initdb 2>/dev/null); then
    d=$(dirname "$(readlink -f "$initdb")")
    [[ -x $d/pg_ctl ]] && { printf '%s\n' "$d"; return 0; }
  fi
  return 1
}

# Install the server from Debian's packages (fresh machine), leaving no
# packaged cluster running.
_pg_install() {
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    _pg_log "no PostgreSQL server binaries (initdb) found; install Debian's postgresql package"
    return 1
  fi
  _pg_log "installing PostgreSQL server from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || return 1
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
  if command -v pg_lsclusters >/dev/null 2>&1; then
    local ver name _port status _rest
    while read -r ver name _port status _rest; do
      if [[ $status == online* ]]; then pg_ctlcluster "$ver" "$name" stop || true; fi
    done < <(pg_lsclusters -h 2>/dev/null)
  fi
}

# Run a PostgreSQL program as the postgres OS user when we are root.
_pg_as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Print a TCP port on 127.0.0.1 that nothing listens on.
_pg_free_port() {
  local port
  if command -v python3 >/dev/null 2>&1 &&
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null) &&
    [[ $port =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$port"
    return 0
  fi
  local rc
  for ((port = 55432; port < 55532; port++)); do
    # pg_isready exits 2 when nothing answers on that port; also make sure no
    # other kind of server listens there.
    rc=0
    pg_isready -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1 || rc=$?
    if [[ $rc -eq 2 ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  return 1
}

pg_start() {
  if [[ -n $_SPORTELLO_PG_DIR ]]; then
    _pg_log "already started (${_SPORTELLO_PG_DIR})"
    return 0
  fi

  local bindir
  if ! bindir=$(_pg_find_bindir); then
    _pg_install || return 1
    bindir=$(_pg_find_bindir) || { _pg_log "initdb still not found after install"; return 1; }
  fi
  if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
    _pg_log "running as root but there is no 'postgres' OS user to run the server as"
    return 1
  fi
  _SPORTELLO_PG_BIN=$bindir

  # As root the base must be reachable by the postgres user: use /tmp.
  local base=/tmp
  [[ $EUID -ne 0 ]] && base=${TMPDIR:-/tmp}
  local dir
  dir=$(mktemp -d "$base/sportello-pg.XXXXXX") || return 1
  _SPORTELLO_PG_DIR=$dir
  chmod 0700 "$dir"
  if [[ $EUID -eq 0 ]]; then
    chown postgres:postgres "$dir" || { pg_stop; return 1; }
  fi

  # Run from the temp dir so the postgres user is never left in an unreadable cwd.
  if ! (cd "$dir" && _pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres \
    --auth-local=trust --auth-host=trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1); then
    _pg_log "initdb failed:"
    cat "$dir/initdb.log" >&2
    pg_stop
    return 1
  fi

  cat >>"$dir/data/postgresql.conf" <<EOF

# --- added by .ci/pg.sh (throw-away test server) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
EOF

  local attempt port="" started=0
  for attempt in 1 2 3 4 5; do
    port=$(_pg_free_port) || { _pg_log "no free port found"; break; }
    if (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
      -o "-p $port" -w -t 60 start >/dev/null); then
      started=1
      break
    fi
    _pg_log "start on port $port failed (attempt $attempt)"
  done
  if [[ $started -ne 1 ]]; then
    _pg_log "could not start PostgreSQL; server log:"
    tail -n 50 "$dir/server.log" >&2 2>/dev/null || true
    pg_stop
    return 1
  fi

  local i
  for ((i = 0; i < 60; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$port" -t 1 && break
    sleep 0.5
  done
  if ! pg_isready -q -h 127.0.0.1 -p "$port" -t 1; then
    _pg_log "server on port $port never became ready; server log:"
    tail -n 50 "$dir/server.log" >&2 2>/dev/null || true
    pg_stop
    return 1
  fi

  export SPORTELLO_PG_PORT=$port
  export SPORTELLO_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  _pg_log "PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') ready on 127.0.0.1:$port (data in $dir/data)"
}

pg_stop() {
  local dir=$_SPORTELLO_PG_DIR
  [[ -n $dir ]] || return 0
  if [[ -f $dir/data/postmaster.pid && -n $_SPORTELLO_PG_BIN ]]; then
    (cd "$dir" && _pg_as_owner "$_SPORTELLO_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1) ||
      (cd "$dir" && _pg_as_owner "$_SPORTELLO_PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1) ||
      _pg_log "warning: could not stop the server in $dir"
  fi
  rm -rf -- "$dir" || true
  _SPORTELLO_PG_DIR=""
  unset SPORTELLO_TEST_DATABASE_URL SPORTELLO_PG_PORT
  return 0
}
