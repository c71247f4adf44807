#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_slurm.sh DIR started, by their PID files.
set -uo pipefail
DIR=$(realpath -m "${1:?usage: stop_slurm.sh DIR}")
for name in slurmd slurmctld; do
  pidfile="$DIR/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2> /dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2> /dev/null || true
done
# munged only when start_slurm.sh started it (it may serve a real Slurm otherwise).
if [ -e "$DIR/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
  kill "$(cat /run/munge/munged.pid)" 2> /dev/null || true
  rm -f "$DIR/munged.ours"
fi
exit 0
