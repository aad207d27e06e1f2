# vigil-deploy's device side: run as `sh -s -- COMMAND PREFIX [ARGS]` over ssh, the script on
# stdin. POSIX sh plus coreutils (sha256sum, ln, mv -T), nothing installed on the device.
# Layout: PREFIX/releases/<id>/{vigild, vigild.toml, model/, vigild.service, SHA256SUMS},
# PREFIX/current -> releases/<id>, PREFIX/vigild.pid and vigild.log (process mode),
# PREFIX/failed/<id> (releases that failed their health check).
set -eu
cmd=$1
prefix=$2
shift 2

die() { echo "device: $*" >&2; exit 1; }

systemd_usable() {
  # A booted systemd (not just the package, as in containers) and the right to install units.
  [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && [ -w /etc/systemd/system ]
}

pid_alive() {
  # The pid file's process, if it is still a vigild (pids get reused).
  [ -f "$prefix/vigild.pid" ] || return 1
  pid=$(cat "$prefix/vigild.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = vigild ]
}

switch_to() {
  # Atomic: a new link beside `current`, renamed over it (rename(2) replaces in one step).
  [ -d "$prefix/releases/$1" ] || die "no release $1 in $prefix/releases"
  ln -sfn "releases/$1" "$prefix/current.tmp"
  mv -T "$prefix/current.tmp" "$prefix/current"
}

stop_process() {
  if pid_alive; then
    kill -TERM "$pid"
    i=0
    # vigild drains its queue (5 s) and publishes `stopped` before exiting.
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      echo "device: vigild $pid ignored SIGTERM for 15 s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$prefix/vigild.pid"
}

start_process() {
  [ -x "$prefix/current/vigild" ] || die "$prefix/current/vigild is missing"
  cd "$prefix"
  # Its own session: closing this ssh connection does not signal it.
  setsid "$prefix/current/vigild" --config "$prefix/current/vigild.toml" \
    >>"$prefix/vigild.log" 2>&1 </dev/null &
  echo $! >"$prefix/vigild.pid"
  sleep 0.2
  pid_alive || { tail -n 20 "$prefix/vigild.log" >&2; die "vigild exited at once"; }
  echo "started=$pid"
}

install_unit() {
  id vigil >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vigil
  getent group video >/dev/null 2>&1 || groupadd --system video
  usermod -a -G video vigil
  # vigild runs as `vigil`: it must read its 0600 config, and nobody else may.
  chown vigil:vigil "$prefix/current/vigild.toml"
  chmod 600 "$prefix/current/vigild.toml"
  cp "$prefix/current/vigild.service" /etc/systemd/system/vigild.service
  systemctl daemon-reload
  systemctl enable vigild.service >/dev/null 2>&1
}

case "$cmd" in
probe)
  # Read-only: what the plan needs.
  echo "arch=$(uname -m)"
  case "$prefix" in /*) abs=$prefix ;; *) abs="$HOME/$prefix" ;; esac
  echo "prefix=$abs"
  prefix=$abs
  if [ -L "$prefix/current" ]; then echo "current=$(basename "$(readlink "$prefix/current")")"; fi
  if [ -d "$prefix/releases" ]; then
    echo "releases=$(ls "$prefix/releases" | tr '\n' ' ')"
  fi
  if systemd_usable; then echo "systemd=yes"; else echo "systemd=no"; fi
  if pid_alive; then echo "running=$pid"; fi
  if command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ]; then echo "cargo=yes"; fi
  ;;
cat)
  # cat PREFIX FILE: a file of the current release (its config or manifest).
  cat "$prefix/current/$1"
  ;;
verify)
  # verify PREFIX ID MODEL_FROM BIN_FROM: check what arrived, fill in what is reused from the
  # device ('-': uploaded), then make the release visible under its id.
  id=$1 model_from=$2 bin_from=$3
  inc="$prefix/releases/.incoming-$id"
  [ -d "$inc" ] || die "$inc did not arrive"
  cd "$inc"
  sha256sum -c --quiet SHA256SUMS || die "checksum mismatch in $inc (see above): nothing switched"
  # The config holds the MQTT password and the command token: its owner only (tar kept the
  # staged 0600 as root; another user's umask may not have).
  chmod 600 vigild.toml
  # Under systemd vigild runs as `vigil` (install_unit), also after a --reload switch.
  if [ "$(id -u)" = 0 ] && id vigil >/dev/null 2>&1; then chown vigil:vigil vigild.toml; fi
  if [ "$model_from" != - ]; then
    [ -d "$model_from" ] || die "no bundle to reuse at $model_from"
    cp -a "$model_from" model
    find model -type f -exec sha256sum {} + >>SHA256SUMS
  fi
  if [ "$bin_from" != - ]; then
    [ -x "$bin_from" ] || die "no vigild to reuse at $bin_from"
    cp "$bin_from" vigild
    sha256sum vigild >>SHA256SUMS
  fi
  chmod 755 vigild
  # Runs here at all (architecture, libc): checked before anything is switched.
  v=$(./vigild --version 2>&1) || die "$inc/vigild does not run on this device: $v"
  echo "version=${v#vigild }"
  ./vigild --check --config vigild.toml --model model >/dev/null || die "the bundle in $inc fails vigild --check"
  cd "$prefix/releases"
  mv -T ".incoming-$id" "$id"
  ;;
switch)
  switch_to "$1"
  ;;
install-unit)
  install_unit
  ;;
restart)
  # restart PREFIX MODE
  if [ "$1" = systemd ]; then
    install_unit
    systemctl restart vigild.service
    echo "started=systemd"
  else
    stop_process
    start_process
  fi
  ;;
stop)
  if [ "$1" = systemd ]; then systemctl stop vigild.service; else stop_process; fi
  ;;
reload)
  # SIGHUP: vigild re-reads current/model and swaps it in between frames.
  if [ "$1" = systemd ]; then
    systemctl reload vigild.service
  else
    pid_alive || die "vigild is not running (no live pid in $prefix/vigild.pid)"
    kill -HUP "$pid"
  fi
  ;;
running)
  if [ "$1" = systemd ]; then
    systemctl is-active --quiet vigild.service && echo yes || echo no
  else
    pid_alive && echo yes || echo no
  fi
  ;;
log)
  if [ "$1" = systemd ]; then
    journalctl -u vigild.service -n 20 --no-pager 2>/dev/null || true
  else
    tail -n 20 "$prefix/vigild.log" 2>/dev/null || true
  fi
  ;;
fail)
  # fail PREFIX ID: keep a failed release for inspection, out of the rollback candidates.
  mkdir -p "$prefix/failed"
  rm -rf "$prefix/failed/$1"
  mv -T "$prefix/releases/$1" "$prefix/failed/$1"
  # Only the newest two failures are kept.
  ls "$prefix/failed" | sort | head -n -2 | while read -r old; do rm -rf "$prefix/failed/$old"; done
  ;;
prune)
  # prune PREFIX KEEP: drop the oldest releases beyond KEEP, never the current one.
  keep=$1
  cur=$(basename "$(readlink "$prefix/current")")
  ls "$prefix/releases" | grep -v '^\.' | sort | head -n "-$keep" | while read -r old; do
    [ "$old" = "$cur" ] || { rm -rf "$prefix/releases/$old"; echo "pruned=$old"; }
  done
  ;;
build)
  cd "$prefix/src"
  PATH="$HOME/.cargo/bin:$PATH" cargo build --release -p vigil-appliance >&2
  echo "built=$prefix/src/target/release/vigild"
  ;;
*)
  die "unknown command $cmd"
  ;;
esac
