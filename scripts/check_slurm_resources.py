"""Do the rules' resources fit the cluster? Compare each job's request with ``sinfo``'s nodes.

    python scripts/check_slurm_resources.py --configfile config/isic.yaml [TARGET ...]

Runs ``snakemake --dry-run --forceall`` with ``--profile profiles/slurm`` to get every job's
threads, mem_mb, runtime, gpu and partition, asks ``sinfo`` for each partition's largest node
(CPUs, memory, GPUs, time limit), and prints one line per rule that asks for more than any node
of its partition has (such jobs stay PENDING forever). Exit status 1 when one does not fit.
Not a rule entry point: a helper for users (README "SLURM").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Node:
    cpus: int
    mem_mb: int
    gpus: int
    minutes: float


def parse_time(text: str) -> float:
    """Slurm time limit (``infinite``, ``1-02:00:00``, ``2:00:00``, ``30:00``, ``30``) in minutes."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return float("inf")
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return days * 1440 + h * 60 + m + s / 60


def parse_sinfo(text: str) -> dict[str, Node]:
    """Largest node per partition from ``sinfo -h -N -o '%P|%c|%m|%G|%l'``."""
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, mem, gres, limit = line.split("|")
        partition = partition.rstrip("*")
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        node = Node(int(cpus.rstrip("+")), int(mem.rstrip("+")), gpus, parse_time(limit))
        best = nodes.get(partition)
        if best is None:
            nodes[partition] = node
        else:
            nodes[partition] = Node(
                max(best.cpus, node.cpus),
                max(best.mem_mb, node.mem_mb),
                max(best.gpus, node.gpus),
                max(best.minutes, node.minutes),
            )
    return nodes


def parse_dry_run(text: str) -> dict[str, dict[str, object]]:
    """Largest request per rule from ``snakemake -n`` output (threads and resources lines)."""
    rules: dict[str, dict[str, object]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            current = rules.setdefault(m.group(1), {})
            continue
        if current is None:
            continue
        m = re.match(r"^\s+threads: (\d+)", line)
        if m:
            current["threads"] = max(int(m.group(1)), int(current.get("threads", 1)))
        m = re.match(r"^\s+resources: (.*)$", line)
        if m:
            for key, value in re.findall(r"(\w+)=([^,]+)", m.group(1)):
                value = value.strip()
                if key in ("mem_mb", "runtime", "gpu"):
                    current[key] = max(int(float(value)), int(current.get(key, 0)))
                elif key == "slurm_partition":
                    current[key] = value.strip("'\"")
    return rules


def misfits(rules: dict[str, dict[str, object]], nodes: dict[str, Node]) -> list[str]:
    """One message per rule whose request exceeds the largest node of its partition."""
    out = []
    for rule, req in sorted(rules.items()):
        partition = str(req.get("slurm_partition", ""))
        node = nodes.get(partition)
        if node is None:
            out.append(f"{rule}: partition {partition!r} not in sinfo ({sorted(nodes)})")
            continue
        checks = [
            ("threads", int(req.get("threads", 1)), node.cpus, "CPUs"),
            ("mem_mb", int(req.get("mem_mb", 0)), node.mem_mb, "MB"),
            ("gpu", int(req.get("gpu", 0)), node.gpus, "GPUs"),
            ("runtime", int(req.get("runtime", 0)), node.minutes, "minutes"),
        ]
        for key, asked, has, unit in checks:
            if asked > has:
                has_text = f"{has:g}" if isinstance(has, float) else has
                out.append(f"{rule}: {key}={asked} but partition {partition} has {has_text} {unit}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="config files, as snakemake")
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "slurm"))
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args(argv)
    # --cores high: a dry run caps threads at the local cores otherwise.
    cmd = [sys.executable, "-m", "snakemake", "-n", "-F", "--cores", "100000"]
    cmd += ["--profile", args.profile]
    if args.configfile:
        cmd += ["--configfile", *args.configfile]
    dry = subprocess.run(cmd + args.targets, cwd=ROOT, capture_output=True, text=True)
    if dry.returncode != 0:
        sys.stderr.write(dry.stderr[-2000:] + "\n")
        return 2
    sinfo = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l"], capture_output=True, text=True, check=True
    )
    rules = parse_dry_run(dry.stdout + dry.stderr)
    problems = misfits(rules, parse_sinfo(sinfo.stdout))
    for line in problems:
        sys.stdout.write(line + "\n")
    sys.stdout.write(
        f"{len(rules)} rules checked, {len(problems)} request(s) larger than any node\n"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
