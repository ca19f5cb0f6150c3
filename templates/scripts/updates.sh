#!/bin/bash
# madbase-updates COMMAND: the node's package updates (core/maintenance.ts says what and why).
#   hold              hold every installed binary package of the data layer's sources
#   held              list them
#   pending           packages with a newer version: PACKAGE INSTALLED CANDIDATE HELD SECURITY
#   stale             data daemons running code older than what is installed: DAEMON UNIT WHY
#   versions          the data packages' installed versions: version PACKAGE VERSION
#   metrics [FILE]    all of the above as a node exporter textfile (the timer's job)
#   upgrade data|all  the held packages (data) or every package (all) to their candidates, holds
#                     lifted for the install and set again, no data daemon restarted (policy-rc.d);
#                     prints the packages it changed
# Values: /etc/madbase/updates.env (DATA_SOURCES, DATA_UNITS, DATA_DAEMONS, ...).
set -euo pipefail
# shellcheck source=/dev/null # rendered by madbase-state
. "${MADBASE_UPDATES_ENV:-/etc/madbase/updates.env}"
export DEBIAN_FRONTEND=noninteractive

# data_packages: every installed binary package whose source is one of DATA_SOURCES.
data_packages() {
  dpkg-query -W -f '${db:Status-Abbrev} ${binary:Package} ${source:Package}\n' 2>/dev/null |
    awk -v sources=" $DATA_SOURCES " '$1 ~ /^[hi]i/ && index(sources, " " $3 " ") { sub(/:.*/, "", $2); print $2 }' | sort -u
}

cmd_hold() {
  local pkgs
  mapfile -t pkgs < <(data_packages)
  ((${#pkgs[@]} > 0)) || {
    echo "madbase-updates: no data package is installed" >&2
    return 1
  }
  # Says only what it newly held: a refresh that changes nothing reports nothing.
  local already p new=()
  already=$(apt-mark showhold)
  for p in "${pkgs[@]}"; do
    grep -qxF "$p" <<<"$already" || new+=("$p")
  done
  ((${#new[@]} > 0)) || return 0
  apt-mark hold "${new[@]}" >/dev/null
  echo "held: ${new[*]}"
}

cmd_held() { apt-mark showhold | sort; }

# The apt cache read with python3-apt: a newer version than the installed one, whether a security
# suite ships one, whether the package is held.
cmd_pending() {
  /usr/bin/python3 - <<'PY'
import apt_pkg
apt_pkg.init()
cache = apt_pkg.Cache(None)
depcache = apt_pkg.DepCache(cache)
def security(ver):
    for pf, _ in ver.file_list:
        if pf.label == "Debian-Security" or (pf.archive or "").endswith("-security") or (pf.codename or "").endswith("-security"):
            return True
    return False
for pkg in cache.packages:
    cur = pkg.current_ver
    if not cur or pkg.architecture not in (apt_pkg.config.find("APT::Architecture"), "all"):
        continue
    cand = depcache.get_candidate_ver(pkg)
    if not cand or apt_pkg.version_compare(cand.ver_str, cur.ver_str) <= 0:
        continue
    newer = [v for v in pkg.version_list if apt_pkg.version_compare(v.ver_str, cur.ver_str) > 0]
    held = pkg.selected_state == apt_pkg.SELSTATE_HOLD
    print(pkg.name, cur.ver_str, cand.ver_str, int(held), int(any(security(v) for v in newer)))
PY
}

# start_time PID: when the process started, in seconds since the epoch (empty when it is gone).
start_time() {
  local stat ticks btime
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  ticks=$(awk '{ print $20 }' <<<"$stat")
  btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
  echo $((btime + ticks / $(getconf CLK_TCK)))
}

# installed_time PACKAGE: when dpkg last unpacked it (its file list is rewritten then).
installed_time() {
  local f
  for f in "/var/lib/dpkg/info/$1.list" "/var/lib/dpkg/info/$1:"*.list; do
    [ -f "$f" ] && {
      stat -c %Y "$f"
      return 0
    }
  done
}

# daemon_pid DAEMON UNIT: the process of a data daemon (the postmaster for postgres).
daemon_pid() {
  local pid
  if [ "$1" = postgres ]; then
    [ -r "$PG_DATA_DIR/postmaster.pid" ] && head -n 1 "$PG_DATA_DIR/postmaster.pid"
    return 0
  fi
  pid=$(systemctl show -p MainPID --value "$2.service" 2>/dev/null) || return 0
  [ "${pid:-0}" != 0 ] && echo "$pid"
  return 0
}

# replaced_maps PID: the files of packages (libraries, programs) the process maps that were replaced
# on disk; shared memory (/dev/zero, /SYSV…, memfd:) shows as deleted too and is not code.
replaced_maps() {
  awk '/ \(deleted\)$/ && $6 ~ /^\/(usr|lib|lib64|bin|sbin|opt)\// { print $6 }' "/proc/$1/maps" 2>/dev/null | sort -u
}

cmd_stale() {
  local spec daemon unit pkg check pid exe started installed
  for spec in $DATA_DAEMONS; do
    IFS=: read -r daemon unit pkg check <<<"$spec"
    pid=$(daemon_pid "$daemon" "$unit")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || exe=""
    if [[ $exe == *" (deleted)" ]]; then
      echo "$daemon $unit runs a replaced binary: ${exe% (deleted)}"
    elif [ -n "$(replaced_maps "$pid")" ]; then
      echo "$daemon $unit maps replaced files: $(replaced_maps "$pid" | head -n 3 | paste -sd, -)"
    elif [ "$check" = installed ]; then
      started=$(start_time "$pid")
      installed=$(installed_time "$pkg")
      if [ -n "$installed" ] && [ -n "$started" ] && ((started < installed)); then
        echo "$daemon $unit package $pkg installed after the process started"
      fi
    fi
  done
}

cmd_versions() {
  local pkgs
  mapfile -t pkgs < <(data_packages)
  ((${#pkgs[@]} > 0)) || return 0
  dpkg-query -W -f '${binary:Package} ${Version}\n' "${pkgs[@]}" 2>/dev/null | sed 's/^/version /'
}

label() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }

cmd_metrics() {
  local out=${1:-$METRICS_FILE} now pending stale seen_new tmp
  now=$(date +%s)
  pending=$(cmd_pending)
  stale=$(cmd_stale)
  mkdir -p "$(dirname "$SEEN_FILE")" "$(dirname "$out")"
  touch "$SEEN_FILE"
  # Since when each pending package has waited: its first sighting, kept while it stays pending.
  seen_new=$(awk -v now="$now" 'NR == FNR { seen[$1] = $2; next } { print $1, ($1 in seen ? seen[$1] : now) }' \
    "$SEEN_FILE" <(printf '%s\n' "$pending" | awk 'NF { print $1 }'))
  printf '%s\n' "$seen_new" | awk 'NF' >"$SEEN_FILE.new" && mv -f "$SEEN_FILE.new" "$SEEN_FILE"
  tmp=$(mktemp "$(dirname "$out")/.madbase-updates.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  {
    echo "# HELP madbase_updates_pending_since_timestamp_seconds A package with a newer version: since when the node has seen one."
    echo "# TYPE madbase_updates_pending_since_timestamp_seconds gauge"
    local held_n=0 held_sec=0 sec_n=0 name installed candidate held security since
    while read -r name installed candidate held security; do
      [ -n "$name" ] || continue
      since=$(awk -v p="$name" '$1 == p { print $2; exit }' "$SEEN_FILE")
      echo "madbase_updates_pending_since_timestamp_seconds{package=\"$(label "$name")\",installed=\"$(label "$installed")\",candidate=\"$(label "$candidate")\",held=\"$held\",security=\"$security\"} ${since:-$now}"
      if [ "$held" = 1 ]; then
        held_n=$((held_n + 1))
        [ "$security" = 1 ] && held_sec=$((held_sec + 1))
      elif [ "$security" = 1 ]; then
        sec_n=$((sec_n + 1))
      fi
    done <<<"$pending"
    echo "# TYPE madbase_updates_held_upgradable gauge"
    echo "madbase_updates_held_upgradable $held_n"
    echo "# TYPE madbase_updates_held_security gauge"
    echo "madbase_updates_held_security $held_sec"
    echo "# TYPE madbase_updates_security_pending gauge"
    echo "madbase_updates_security_pending $sec_n"
    echo "# HELP madbase_updates_daemon_replaced_code A data daemon runs code older than what is installed (restart it in a rolling maintenance)."
    echo "# TYPE madbase_updates_daemon_replaced_code gauge"
    local spec daemon unit pkg check
    for spec in $DATA_DAEMONS; do
      IFS=: read -r daemon unit pkg check <<<"$spec"
      if grep -q "^$daemon " <<<"$stale"; then v=1; else v=0; fi
      echo "madbase_updates_daemon_replaced_code{daemon=\"$daemon\"} $v"
    done
    echo "# TYPE madbase_reboot_required gauge"
    if [ -e "$REBOOT_REQUIRED_FILE" ]; then
      echo "madbase_reboot_required 1"
      echo "# TYPE madbase_reboot_required_since_timestamp_seconds gauge"
      echo "madbase_reboot_required_since_timestamp_seconds $(stat -c %Y "$REBOOT_REQUIRED_FILE")"
    else
      echo "madbase_reboot_required 0"
    fi
    echo "# TYPE madbase_updates_metrics_timestamp_seconds gauge"
    echo "madbase_updates_metrics_timestamp_seconds $now"
  } >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$out"
  trap - EXIT
}

cmd_upgrade() {
  local what=${1:?upgrade data|all} pkgs before after
  [ -x /usr/sbin/policy-rc.d ] && [ "$(/usr/sbin/policy-rc.d patroni restart >/dev/null 2>&1; echo $?)" = 101 ] || {
    echo "madbase-updates: policy-rc.d does not refuse the data units; not upgrading (config-refresh installs it)" >&2
    return 1
  }
  mapfile -t pkgs < <(data_packages)
  before=$(dpkg-query -W -f '${binary:Package} ${Version}\n' | sort)
  apt-mark unhold "${pkgs[@]}" >/dev/null
  # The holds come back whatever happens below.
  trap 'apt-mark hold "${pkgs[@]}" >/dev/null' EXIT
  local opts=(-y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef)
  if [ "$what" = all ]; then
    apt-get "${opts[@]}" dist-upgrade
  else
    apt-get "${opts[@]}" install --only-upgrade "${pkgs[@]}"
  fi
  apt-mark hold "${pkgs[@]}" >/dev/null
  trap - EXIT
  after=$(dpkg-query -W -f '${binary:Package} ${Version}\n' | sort)
  comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed 's/^/upgraded /'
}

case "${1:-}" in
  hold) cmd_hold ;;
  held) cmd_held ;;
  pending) cmd_pending ;;
  stale) cmd_stale ;;
  versions) cmd_versions ;;
  metrics) cmd_metrics "${2:-}" ;;
  upgrade) cmd_upgrade "${2:-}" ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
