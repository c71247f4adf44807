#!/usr/bin/env bash
# Install (when missing) and start a throw-away single-node Slurm for tests/test_slurm.py.
#
#   tests/slurm/start_slurm.sh DIR     state, logs, PID files and slurm.conf go to DIR
#
# One node named after `hostname -s` with partitions `cpu` (default) and `gpu`; GresTypes=gpu
# with two placeholder device files so `--gpus=1` can be scheduled without a GPU; accounting
# off (no slurmdbd, like many small clusters: the profile's squeue status command must cope).
# Configless: slurmd fetches slurm.conf from slurmctld and caches it in /run/slurm/conf, where
# the client commands inside jobs find it (the jobstep executor does not pass SLURM_CONF on).
# Prints `SLURM_CONF=DIR/slurm.conf` on success; exit 2 means Slurm cannot run here (skip).
set -euo pipefail
DIR=$(realpath -m "${1:?usage: start_slurm.sh DIR}")
mkdir -p "$DIR"/{state,spool,log}

need_install=0
for exe in slurmctld slurmd sbatch squeue munged; do
  command -v "$exe" > /dev/null || [ -x "/usr/sbin/$exe" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    echo "Slurm is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client munge; } > "$DIR/log/apt.log" 2>&1 || {
    echo "apt-get install slurmctld slurmd slurm-client munge failed (see $DIR/log/apt.log)" >&2
    exit 2
  }
fi
export PATH="$PATH:/usr/sbin:/sbin"

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}

for port in "$CTLD_PORT" "$SLURMD_PORT"; do
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
    echo "port $port is in use (a Slurm already runs here?): not starting a test Slurm" >&2
    exit 2
  fi
done

# munge: a key of our own unless one exists.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
if id munge > /dev/null 2>&1; then
  chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
fi
if ! munge -n > /dev/null 2>&1; then
  touch "$DIR/munged.ours"
  if id munge > /dev/null 2>&1; then
    runuser -u munge -- munged
  else
    munged --force
  fi
  for _ in $(seq 50); do munge -n > /dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n > /dev/null 2>&1 || { echo "munged does not start" >&2; exit 2; }

# Placeholder GPUs: slurmd wants character devices; these behave like /dev/null and /dev/zero.
for i in 0 1; do
  [ -c "$DIR/gpu$i" ] || { rm -f "$DIR/gpu$i"; mknod "$DIR/gpu$i" c 1 $((3 + 2 * i)); }
done
cat > "$DIR/slurm.conf" <<CONF
# Written by tests/slurm/start_slurm.sh (melrepro tests)
ClusterName=melrepro
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmctldParameters=enable_configless
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue (the profile's status command) sees a finished job for MinJobAge seconds (>= 120).
MinJobAge=300
ReturnToService=2
SchedulerType=sched/builtin
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
cat > "$DIR/gres.conf" <<CONF
NodeName=$HOST Name=gpu File=$DIR/gpu[0-1]
CONF

slurmctld -f "$DIR/slurm.conf" -i
for _ in $(seq 50); do [ -s "$DIR/slurmctld.pid" ] && break; sleep 0.1; done
slurmd --conf-server "$HOST:$CTLD_PORT" -N "$HOST"
export SLURM_CONF="$DIR/slurm.conf"
for _ in $(seq 100); do
  if sinfo -h -N -o "%t" 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "Slurm did not come up: see $DIR/log/slurmctld.log and slurmd.log" >&2
sinfo -N -l >&2 || true
exit 1
