#!/usr/bin/env bash
# Start a one-node Slurm on localhost (munge, slurmctld, slurmd) for the `--executor slurm` test:
# a munge key if none, /etc/slurm/slurm.conf for this host's name, CPUs and memory (`slurmd -C`),
# both daemons, then wait until `sinfo` shows the node idle. Idempotent; exit 1 with the reason
# (the daemons' log tails) if the node never comes up. Needs root (or sudo) and Debian's slurm-wlm.
set -uo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] \
    || { echo "slurm_up: $tool not installed (apt-get install slurm-wlm munge)"; exit 1; }
done
export PATH="$PATH:/usr/sbin"
if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then echo "slurm_up: already up"; exit 0; fi

host="$(hostname -s)"
node="$(slurmd -C | head -1)"                      # NodeName=<host> CPUs=.. ... RealMemory=..
$SUDO mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge /etc/slurm \
  /var/spool/slurm/ctld /var/spool/slurm/d /var/log/slurm /run/slurm
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
$SUDO chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
$SUDO chmod 0700 /etc/munge && $SUDO chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || $SUDO runuser -u munge -- /usr/sbin/munged \
  || { echo "slurm_up: munged did not start"; exit 1; }

$SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
ClusterName=bench
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurm/ctld
SlurmdSpoolDir=/var/spool/slurm/d
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
$SUDO sed -i 's/ UpTime=.*//' /etc/slurm/slurm.conf
pgrep -x slurmctld >/dev/null || $SUDO /usr/sbin/slurmctld || { echo "slurm_up: slurmctld failed"; }
pgrep -x slurmd >/dev/null || $SUDO /usr/sbin/slurmd || { echo "slurm_up: slurmd failed"; }
for _ in $(seq 1 30); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then sinfo; echo "slurm_up: node $host idle"; exit 0; fi
  sleep 1
done
echo "slurm_up: node $host never became idle; sinfo: $(sinfo 2>&1 | tail -2 | tr '\n' ' ')"
for log in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
  echo "--- $log"; $SUDO tail -5 "$log" 2>/dev/null
done
exit 1
