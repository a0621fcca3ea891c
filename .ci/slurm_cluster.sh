#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine, for the tests that submit to SLURM (tests/test_slurm.py).
# Debian/Ubuntu, as root: Debian's slurmctld, slurmd and munge; no accounting daemon (sacct reports nothing, and
# nothing here needs it). Idempotent: a second call finds the daemons up and only waits for the node.
#   .ci/slurm_cluster.sh          start (installs the packages first if they are missing)
#   .ci/slurm_cluster.sh stop     stop the daemons
set -euo pipefail

conf=/etc/slurm/slurm.conf
if [[ "${1:-start}" == stop ]]; then
    pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

host=$(hostname -s)
# The node as slurmd sees the hardware (sockets, cores, threads), with 80 % of the memory for jobs.
node=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//')
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf" <<CONF
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=10
$node RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    if [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then
        echo "SLURM is up: node $host ($state), partition debug"
        exit 0
    fi
    sleep 1
done
echo "SLURM did not come up: sinfo says '${state:-nothing}'; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
