#!/usr/bin/env bash
# Single-node SLURM cluster on localhost, with accounting (slurmdbd + MariaDB),
# for tests and CI.  Debian 12, run as root, no systemd needed: every daemon is
# started by hand.
#
#   bash scripts/slurm-local.sh up       # install (if needed), configure, start; idempotent
#   bash scripts/slurm-local.sh down     # stop every daemon (exit 0 even if not running)
#   bash scripts/slurm-local.sh status   # print state; exit non-zero if not fully up
#   bash scripts/slurm-local.sh restart  # down + up
#
# Layout (everything lives under $SLURM_LOCAL_DIR, default /tmp/slurm-local):
#   etc/slurm.conf, etc/slurmdbd.conf   configs (slurm.conf is also copied to
#                                       /etc/slurm/slurm.conf so that sbatch,
#                                       squeue, sacct, ... work with no env vars)
#   state/  spool/  log/  run/          slurmctld state, slurmd spool, logs, pid files
#   mysql/                              private MariaDB instance (datadir, socket,
#                                       pid, log), listening on 127.0.0.1:$DB_PORT
# munged uses Debian's default key/socket (/etc/munge, /run/munge) because the
# Slurm tools look for the socket there.
#
# Cluster: ClusterName=localcluster, node "localhost" (CPUs from nproc, memory a
# bit below `free -m`), one partition "debug" (default, no time limit).
set -Eeuo pipefail

BASE="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
ETC="$BASE/etc"
STATE="$BASE/state"
SPOOL="$BASE/spool"
LOGDIR="$BASE/log"
RUN="$BASE/run"
MYDIR="$BASE/mysql"
MYDATA="$MYDIR/data"
MYSOCK="$MYDIR/mysqld.sock"
MYPID="$MYDIR/mariadb.pid"
MYLOG="$MYDIR/mariadb.log"
DB_PORT="${SLURM_LOCAL_DB_PORT:-13306}"
DB_NAME="slurm_acct_db"
DB_USER="slurm"
DB_PASS="slurm-local-db-pass"
CLUSTER="localcluster"
ACCOUNT="default"
NODE="localhost"
SYS_CONF="/etc/slurm/slurm.conf"
MUNGE_RUN="/run/munge"
MUNGE_PID="$MUNGE_RUN/munged.pid"
MUNGE_LOG="/var/log/munge/munged.log"
WAIT_S="${SLURM_LOCAL_WAIT:-90}"

PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server mariadb-client)
# apt is only run if one of these commands is missing
REQUIRED_CMDS=(munged mungekey sbatch sinfo sacct sacctmgr scontrol slurmctld slurmd slurmdbd
               mariadbd mariadb-install-db mariadb mariadb-admin)

export SLURM_CONF="$ETC/slurm.conf"
# daemons live in /usr/sbin, which a non-login root shell may not have on PATH
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '[slurm-local %(%H:%M:%S)T] %s\n' -1 "$*"; }

die() { # die "message" [logfile...]
    local msg="$1"; shift
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            printf -- '----- tail of %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2 || true
        fi
    done
    printf 'slurm-local: ERROR: %s\n' "$msg" >&2
    exit 1
}

# --------------------------------------------------------------------------- #
# process helpers
# --------------------------------------------------------------------------- #
# pid_of PIDFILE COMM -> prints the pid and returns 0 if it is alive and its
# command name matches (protects against stale pid files / recycled pids).
pid_of() {
    local file="$1" comm="$2" pid
    [[ -r "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file" 2>/dev/null || true)"
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$comm" ]] || return 1
    printf '%s\n' "$pid"
}

alive() { pid_of "$1" "$2" >/dev/null; }

clear_stale_pid() { # PIDFILE COMM
    if [[ -e "$1" ]] && ! alive "$1" "$2"; then
        rm -f "$1"
    fi
}

# stop_daemons TIMEOUT NAME:PIDFILE:COMM... -- SIGTERM all of them at once, wait
# for them to exit, SIGKILL whatever is left after TIMEOUT seconds.
stop_daemons() {
    local timeout="$1" spec name file comm pid i
    shift
    local pids=() files=()
    for spec in "$@"; do
        IFS=: read -r name file comm <<<"$spec"
        if pid="$(pid_of "$file" "$comm")"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        files+=("$file")
    done
    for ((i = 0; i < timeout * 10; i++)); do
        local left=0
        for pid in "${pids[@]}"; do [[ -d "/proc/$pid" ]] && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if [[ -d "/proc/$pid" ]]; then
            log "pid $pid did not exit after ${timeout}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "${files[@]}"
}

stop_daemon() { # NAME PIDFILE COMM [timeout]
    stop_daemons "${4:-30}" "$1:$2:$3"
}

# wait_for DESCRIPTION TIMEOUT PIDFILE COMM LOG -- command...
# Polls the command until it succeeds; fails early if the daemon died.
wait_for() {
    local what="$1" timeout="$2" file="$3" comm="$4" logf="$5"
    shift 6
    local deadline=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        if [[ -n "$file" ]] && ! alive "$file" "$comm"; then
            sleep 0.3 # pid file may be written a moment after fork
            alive "$file" "$comm" || die "$comm died while waiting for $what" "$logf"
        fi
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what" "$logf"
        sleep 0.25
    done
}

# --------------------------------------------------------------------------- #
# installation
# --------------------------------------------------------------------------- #
ensure_packages() {
    local missing=() c
    for c in "${REQUIRED_CMDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    ((${#missing[@]} == 0)) && return 0
    log "missing commands: ${missing[*]} -> installing ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "apt-get not found; install ${PACKAGES[*]} manually"
    # Keep package maintainer scripts from starting services (no systemd here;
    # we start our own daemons with our own configs).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0 aptlog="/tmp/slurm-local-apt.log"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"
    } >"$aptlog" 2>&1 || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install failed (rc=$rc)" "$aptlog"
    for c in "${REQUIRED_CMDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || die "command $c still missing after install" "$aptlog"
    done
    log "packages installed"
}

# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #
render_slurm_conf() {
    local cpus mem_total real_mem margin def_mem
    cpus="$(nproc)"
    mem_total="$(free -m | awk '/^Mem:/ {print $2}')"
    # inside a container, respect the cgroup memory limit (v2, then v1)
    local f lim
    for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
        lim="$(cat "$f" 2>/dev/null || true)"
        if [[ "$lim" =~ ^[0-9]+$ ]] && ((lim / 1048576 < mem_total)); then
            mem_total=$((lim / 1048576))
        fi
    done
    margin=$((mem_total / 20))
    ((margin < 256)) && margin=256
    real_mem=$((mem_total - margin))
    ((real_mem < 256)) && real_mem=256
    def_mem=$((real_mem / cpus))
    cat <<EOF
# Generated by scripts/slurm-local.sh -- single-node test cluster. Do not edit.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start
# again (default 120 s); keep requeue tests (submitit checkpoint/preemption) fast.
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
PropagateResourceLimits=NONE
ReturnToService=2
JobRequeue=1
KillWait=5
OverTimeLimit=0
MinJobAge=30
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=0
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=/tmp
# accounting (submitit polls sacct for job states)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
# Generated by scripts/slurm-local.sh -- single-node test cluster. Do not edit.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOGDIR/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# install_file SRC DEST MODE -> returns 0 if DEST changed
install_file() {
    local src="$1" dest="$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        rm -f "$src"
        chmod "$mode" "$dest"
        return 1
    fi
    chmod "$mode" "$src"
    mv -f "$src" "$dest"
    return 0
}

SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0
make_dirs() {
    mkdir -p "$ETC" "$STATE" "$SPOOL" "$LOGDIR" "$RUN" "$MYDIR" /etc/slurm
    chmod 755 "$BASE" "$ETC" "$LOGDIR" "$RUN"
}

write_configs() {
    make_dirs
    render_slurm_conf >"$ETC/slurm.conf.new"
    install_file "$ETC/slurm.conf.new" "$ETC/slurm.conf" 644 && SLURM_CONF_CHANGED=1
    render_slurmdbd_conf >"$ETC/slurmdbd.conf.new"
    # slurmdbd insists on mode 600, owned by SlurmUser (root)
    install_file "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf" 600 && DBD_CONF_CHANGED=1
    chown root:root "$ETC/slurmdbd.conf"
    # client tools (and jobs) read the default path
    if ! cmp -s "$ETC/slurm.conf" "$SYS_CONF"; then
        cp -f "$ETC/slurm.conf" "$SYS_CONF.tmp.$$"
        chmod 644 "$SYS_CONF.tmp.$$"
        mv -f "$SYS_CONF.tmp.$$" "$SYS_CONF"
    fi
    return 0
}

configs_current() { # true if the on-disk configs equal what we would write now
    [[ -f "$ETC/slurm.conf" && -f "$ETC/slurmdbd.conf" && -f "$SYS_CONF" ]] || return 1
    cmp -s <(render_slurm_conf) "$ETC/slurm.conf" || return 1
    cmp -s <(render_slurmdbd_conf) "$ETC/slurmdbd.conf" || return 1
    cmp -s "$ETC/slurm.conf" "$SYS_CONF" || return 1
}

# --------------------------------------------------------------------------- #
# health checks
# --------------------------------------------------------------------------- #
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_ok() { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }
node_ok() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }
dbd_ok() { timeout 15 sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
sacct_ok() { timeout 15 sacct -n -X -S now-1minutes -E now >/dev/null 2>&1; }

is_up() {
    munge_ok &&
        alive "$MYPID" mariadbd &&
        alive "$RUN/slurmdbd.pid" slurmdbd &&
        alive "$RUN/slurmctld.pid" slurmctld &&
        alive "$RUN/slurmd.pid" slurmd &&
        ctld_ok && node_ok && sacct_ok
}

# --------------------------------------------------------------------------- #
# daemons
# --------------------------------------------------------------------------- #
start_munge() {
    if munge_ok; then
        log "munge: already running"
        return 0
    fi
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 755 "$MUNGE_RUN"
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "munge: creating key"
        mungekey --create --keyfile=/etc/munge/munge.key --force
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    clear_stale_pid "$MUNGE_PID" munged
    if alive "$MUNGE_PID" munged; then
        # running but not answering: restart it
        stop_daemon munged "$MUNGE_PID" munged 10
    fi
    log "munge: starting"
    runuser -u munge -- /usr/sbin/munged --force >>"$LOGDIR/munged.out" 2>&1 9>&- ||
        die "munged failed to start" "$LOGDIR/munged.out" "$MUNGE_LOG"
    wait_for "munge" 20 "$MUNGE_PID" munged "$MUNGE_LOG" -- munge_ok
}

sql() { mariadb --no-defaults -S "$MYSOCK" -uroot "$@"; }

start_mariadb() {
    if ! id mysql >/dev/null 2>&1; then
        die "user 'mysql' does not exist (is mariadb-server installed correctly?)"
    fi
    mkdir -p "$MYDIR"
    chown mysql:mysql "$MYDIR"
    chmod 755 "$MYDIR"
    ln -sfn "$MYLOG" "$LOGDIR/mariadb.log"
    clear_stale_pid "$MYPID" mariadbd
    if alive "$MYPID" mariadbd; then
        log "mariadb: already running (pid $(pid_of "$MYPID" mariadbd))"
    else
        if [[ ! -d "$MYDATA/mysql" ]]; then
            log "mariadb: initialising datadir $MYDATA"
            rm -rf "$MYDATA"
            mariadb-install-db --no-defaults --user=mysql --datadir="$MYDATA" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOGDIR/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed" "$LOGDIR/mariadb-install.log"
        fi
        rm -f "$MYSOCK" "$MYSOCK.lock"
        log "mariadb: starting on 127.0.0.1:$DB_PORT"
        setsid mariadbd --no-defaults --user=mysql --datadir="$MYDATA" \
            --socket="$MYSOCK" --pid-file="$MYPID" --log-error="$MYLOG" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --innodb-buffer-pool-size=512M --innodb-log-file-size=64M \
            --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=2 \
            --innodb-flush-method=fsync --innodb-use-native-aio=0 \
            --max-connections=200 \
            </dev/null >>"$LOGDIR/mariadb.out" 2>&1 9>&- &
        local bgpid=$! deadline=$((SECONDS + WAIT_S))
        disown || true
        until mariadb-admin --no-defaults -S "$MYSOCK" -uroot ping >/dev/null 2>&1; do
            [[ -d "/proc/$bgpid" ]] || die "mariadbd exited during startup" "$MYLOG" "$LOGDIR/mariadb.out"
            ((SECONDS < deadline)) || die "timed out after ${WAIT_S}s waiting for mariadb" "$MYLOG"
            sleep 0.25
        done
    fi
    alive "$MYPID" mariadbd || die "mariadbd is not running" "$MYLOG" "$LOGDIR/mariadb.out"
    sql <<EOF || die "could not create database/user in mariadb" "$MYLOG"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    clear_stale_pid "$RUN/slurmdbd.pid" slurmdbd
    if ((DBD_CONF_CHANGED)) && alive "$RUN/slurmdbd.pid" slurmdbd; then
        stop_daemon slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    fi
    if alive "$RUN/slurmdbd.pid" slurmdbd; then
        log "slurmdbd: already running"
    else
        log "slurmdbd: starting"
        # slurmdbd finds slurmdbd.conf next to $SLURM_CONF
        SLURM_CONF="$ETC/slurm.conf" slurmdbd </dev/null >>"$LOGDIR/slurmdbd.out" 2>&1 9>&- ||
            die "slurmdbd failed to start" "$LOGDIR/slurmdbd.log" "$LOGDIR/slurmdbd.out"
    fi
    wait_for "slurmdbd" "$WAIT_S" "$RUN/slurmdbd.pid" slurmdbd "$LOGDIR/slurmdbd.log" -- dbd_ok
}

register_accounting() {
    local out
    out="$(timeout 15 sacctmgr -n -P list cluster format=cluster 2>&1)" ||
        die "sacctmgr list cluster failed: $out" "$LOGDIR/slurmdbd.log"
    if ! grep -qx "$CLUSTER" <<<"$out"; then
        log "sacctmgr: adding cluster $CLUSTER"
        timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
            die "sacctmgr add cluster failed" "$LOGDIR/slurmdbd.log"
    fi
    if [[ -z "$(timeout 15 sacctmgr -n -P list account "$ACCOUNT" format=account 2>/dev/null)" ]]; then
        log "sacctmgr: adding account $ACCOUNT"
        timeout 30 sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
            Description="local test account" Organization=local >/dev/null ||
            die "sacctmgr add account failed" "$LOGDIR/slurmdbd.log"
    fi
    if [[ -z "$(timeout 15 sacctmgr -n -P list assoc user=root account="$ACCOUNT" cluster="$CLUSTER" format=user 2>/dev/null)" ]]; then
        log "sacctmgr: adding user root to account $ACCOUNT"
        timeout 30 sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null ||
            die "sacctmgr add user failed" "$LOGDIR/slurmdbd.log"
    fi
}

start_slurmctld() {
    clear_stale_pid "$RUN/slurmctld.pid" slurmctld
    if ((SLURM_CONF_CHANGED)) && alive "$RUN/slurmctld.pid" slurmctld; then
        stop_daemon slurmctld "$RUN/slurmctld.pid" slurmctld
    fi
    if alive "$RUN/slurmctld.pid" slurmctld; then
        log "slurmctld: already running"
    else
        log "slurmctld: starting"
        slurmctld -f "$ETC/slurm.conf" </dev/null >>"$LOGDIR/slurmctld.out" 2>&1 9>&- ||
            die "slurmctld failed to start" "$LOGDIR/slurmctld.log" "$LOGDIR/slurmctld.out"
    fi
    wait_for "slurmctld" "$WAIT_S" "$RUN/slurmctld.pid" slurmctld "$LOGDIR/slurmctld.log" -- ctld_ok
}

start_slurmd() {
    clear_stale_pid "$RUN/slurmd.pid" slurmd
    if ((SLURM_CONF_CHANGED)) && alive "$RUN/slurmd.pid" slurmd; then
        stop_daemon slurmd "$RUN/slurmd.pid" slurmd
    fi
    if alive "$RUN/slurmd.pid" slurmd; then
        log "slurmd: already running"
    else
        log "slurmd: starting"
        slurmd -f "$ETC/slurm.conf" -N "$NODE" </dev/null >>"$LOGDIR/slurmd.out" 2>&1 9>&- ||
            die "slurmd failed to start" "$LOGDIR/slurmd.log" "$LOGDIR/slurmd.out"
    fi
    # wait for the node to register; un-drain it if a previous run left it down
    local deadline=$((SECONDS + WAIT_S)) st resumed=0
    while :; do
        st="$(node_state || true)"
        [[ "$st" =~ ^(idle|mixed|allocated|completing)$ ]] && break
        if [[ "$st" =~ ^(down|drained|draining|drain|fail|failing)$ ]] && ((resumed < 3)); then
            log "node $NODE is '$st' ($(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null)), resuming"
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            resumed=$((resumed + 1))
        fi
        alive "$RUN/slurmd.pid" slurmd || { sleep 0.3; alive "$RUN/slurmd.pid" slurmd; } ||
            die "slurmd died while waiting for node $NODE" "$LOGDIR/slurmd.log" "$LOGDIR/slurmd.out"
        ((SECONDS < deadline)) ||
            die "node $NODE not idle after ${WAIT_S}s (state '$st')" "$LOGDIR/slurmd.log" "$LOGDIR/slurmctld.log"
        sleep 0.25
    done
}

# --------------------------------------------------------------------------- #
# commands
# --------------------------------------------------------------------------- #
cmd_up() {
    local t0=$SECONDS
    if is_up && configs_current; then
        log "already up ($(node_state) node $NODE, accounting OK)"
        return 0
    fi
    ensure_packages
    write_configs
    ((SLURM_CONF_CHANGED)) && log "wrote $ETC/slurm.conf (+ $SYS_CONF)"
    ((DBD_CONF_CHANGED)) && log "wrote $ETC/slurmdbd.conf"
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounting
    start_slurmctld
    start_slurmd
    wait_for "sacct" "$WAIT_S" "" "" "$LOGDIR/slurmdbd.log" -- sacct_ok
    log "up in $((SECONDS - t0))s: node $NODE $(node_state), partition debug, cluster $CLUSTER (logs in $LOGDIR)"
}

cmd_down() {
    # Running job steps (slurmstepd) are left alone, as on a real cluster; a
    # later `up` re-attaches to them.  Order: slurm daemons, then slurmdbd
    # (slurmctld flushes accounting to it), then mariadb and munge.
    stop_daemons 30 "slurmd:$RUN/slurmd.pid:slurmd" "slurmctld:$RUN/slurmctld.pid:slurmctld"
    stop_daemons 30 "slurmdbd:$RUN/slurmdbd.pid:slurmdbd"
    stop_daemons 60 "mariadb:$MYPID:mariadbd" "munged:$MUNGE_PID:munged"
    log "down"
}

cmd_status() {
    local rc=0 d
    printf '%-10s %s\n' munge "$(munge_ok && echo running || echo 'NOT running')"
    for d in "mariadbd:$MYPID" "slurmdbd:$RUN/slurmdbd.pid" "slurmctld:$RUN/slurmctld.pid" "slurmd:$RUN/slurmd.pid"; do
        local name="${d%%:*}" file="${d#*:}" pid
        if pid="$(pid_of "$file" "$name")"; then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s NOT running\n' "$name"
        fi
    done
    if ctld_ok; then
        echo "--- sinfo"
        sinfo -N -o '%N %P %T %c %m %E' 2>&1 || true
        echo "--- squeue"
        squeue 2>&1 || true
    fi
    if sacct_ok; then
        echo "--- sacct (last hour)"
        sacct -X -S now-1hours -o JobID,JobName%20,State,ExitCode,Elapsed 2>&1 | tail -n 15 || true
    fi
    if is_up; then
        echo "slurm-local: UP"
    else
        echo "slurm-local: NOT up" >&2
        rc=1
    fi
    return "$rc"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
    up | down | status | restart) ;;
    *)
        echo "usage: $0 {up|down|status|restart}" >&2
        exit 2
        ;;
    esac
    [[ "$(id -u)" == 0 ]] || die "must run as root"
    mkdir -p "$BASE"
    # serialise concurrent invocations (daemons are started with 9>&- so they
    # do not inherit the lock)
    exec 9>"$BASE/.lock"
    flock 9
    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart) cmd_down && cmd_up ;;
    esac
}

main "$@"
