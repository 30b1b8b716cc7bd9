#!/usr/bin/env bash
# A two-node SLURM cluster on this machine, with accounting (slurmdbd + MariaDB), memory
# enforcement and one fake GPU a node, for tests/workflow/test_slurm.py. Debian 12, as
# root, without systemd.
#
#   tests/slurm/cluster.sh install   # apt packages (about 15 s)
#   tests/slurm/cluster.sh start     # munged, mariadb, slurmdbd, slurmctld, slurmd (seconds)
#   tests/slurm/cluster.sh stop
#
# The nodes are `node1` and `node2` whatever the host name: two slurmd on 127.0.0.1, on
# ports 17001 and 17002, each offering every core and three quarters of the memory. Each
# offers `gpu:1` backed by /dev/null: a job asking for --gpus=1 runs with
# CUDA_VISIBLE_DEVICES=0 and no GPU, as a workflow job must then fall back to the CPU.
# A job that uses more memory than it asked for (--mem) is killed within a second, as
# OUT_OF_MEMORY (jobacct_gather/linux with OverMemoryKill: no cgroup needed); job comments
# are stored, so sacct can show the rule a job ran (-o Comment).
set -euo pipefail

CLUSTER=va-test
ACCOUNT=va
STATE=/var/lib/va-slurm
LOGS=/var/log/va-slurm
CONF=/etc/slurm

say() { echo "cluster.sh: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    say "timed out waiting for $what"
    tail -n 30 "$LOGS"/*.log >&2 || true
    return 1
}

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd mariadb-server >/dev/null
}

write_config() {
    local cpus mem
    cpus=$(nproc)
    # leave a quarter of the memory (at least 2 GB) to everything else
    mem=$(awk '/MemTotal/ {m = int($2 / 1024); r = m / 4; if (r < 2048) r = 2048; print int(m - r)}' /proc/meminfo)
    mkdir -p "$CONF" "$STATE"/ctld "$STATE"/d/node1 "$STATE"/d/node2 "$LOGS"
    cat >"$CONF"/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
GresTypes=gpu
MinJobAge=300
NodeName=node1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
NodeName=node2 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$CONF"/gres.conf <<CONF
NodeName=node1,node2 Name=gpu File=/dev/null
CONF
    cat >"$CONF"/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$CONF"/slurmdbd.conf
}

start() {
    write_config
    # munge, as its own user
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged munge -n

    # MariaDB for slurmdbd
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! mysqladmin ping >/dev/null 2>&1; then
        (mysqld_safe >"$LOGS"/mysqld_safe.log 2>&1 &)
        wait_for 60 mariadb mysqladmin ping
    fi
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true

    pgrep -x slurmctld >/dev/null || slurmctld
    wait_for 30 slurmctld scontrol ping
    for node in node1 node2; do
        pgrep -f "slurmd -N $node" >/dev/null || slurmd -N "$node"
    done
    wait_for 30 "two idle nodes" bash -c "[ \"\$(sinfo -h -N -t idle -o %N | sort -u | wc -l)\" = 2 ]"
    say "up: $(sinfo -h -o '%P %D %T %G')"
}

stop() {
    for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" || true; done
    mysqladmin shutdown >/dev/null 2>&1 || true
    pkill -x munged || true
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 install|start|stop" >&2
    exit 2
    ;;
esac
