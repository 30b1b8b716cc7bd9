"""The default experiment's profile: `make run`'s snakemake command from an empty results
folder, timed as a whole and per rule, with each rule's fixed cost measured apart.

Prints:
- the run: wall seconds, CPU seconds (user, system) and minor page faults of snakemake and
  every job it ran, and the job count;
- the cores no job held: the seconds in which a core was free while jobs ran (a 1-thread
  job alone while the next ready job needs 2), from Snakemake's log;
- per rule: jobs, job-seconds (from Snakemake's own log, one-second resolution: every rule,
  whether or not it writes a benchmark file), their share, and the mean per job;
- per rule, its fixed cost apart from any work: a Snakemake job that does nothing (the
  floor: the interpreter and Snakemake's script preamble) plus a fresh interpreter doing
  exactly the imports of the rule's adapter script, with its page faults;
- the allocator's part (`--allocator`): one MLP train job's training in a fresh process,
  with malloc's defaults and with the jobs' setting (plumbing/allocator.py), its wall,
  system seconds and page faults.

    .venv/bin/python benchmarks/default_run.py            # the default run, ~6 minutes
    .venv/bin/python benchmarks/default_run.py --keep /tmp/p  # keep the work folder
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import REPO, default_config
from grid import idle_cores, rule_times

SRC = REPO / "src"


def children_usage() -> tuple[float, float, int]:
    """(user s, system s, minor faults) of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def timed(cmd: list[str], **kwargs) -> tuple[float, float, float, int, subprocess.CompletedProcess]:
    """(wall, user, system, minor faults, the process) of one command and its children."""
    before = children_usage()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t0
    after = children_usage()
    return wall, after[0] - before[0], after[1] - before[1], after[2] - before[2], proc


def run_default(workdir: Path, cores: int) -> dict:
    """`make run`'s command (the default config, the default profile) in `workdir`."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",  # the Snakefile's relative configfile is not in workdir
        str(REPO / "config" / "config.yaml"),
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        "--cores",
        str(cores),
    ]
    wall, user, system, faults, proc = timed(cmd, cwd=workdir)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stderr[-4000:]}")
    (log,) = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1:]
    done = re.findall(r"(\d+) of (\d+) steps", proc.stderr)
    return {
        "wall": wall,
        "user": user,
        "system": system,
        "faults": faults,
        "jobs": int(done[-1][0]) if done else 0,
        "rules": rule_times(log),
        "idle": idle_cores(log, cores),
    }


def rule_scripts() -> dict[str, Path]:
    """Each rule's adapter script, from the rule files."""
    scripts = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            found = re.match(r"(?:checkpoint|rule) (\w+):", line)
            if found:
                rule = found.group(1)
            script = re.search(r'"\.\./(scripts/[\w.]+\.py)"', line)
            if rule and script and line.strip().startswith(("script:", '"../scripts')):
                scripts[rule] = REPO / "workflow" / script.group(1)
    return scripts


def script_imports(path: Path) -> str:
    """Every import statement of an adapter script (at any depth), as code to run."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in nodes)


def job_floor(tmp: Path) -> float:
    """Seconds of a Snakemake script job that does nothing (median of 10 jobs)."""
    (tmp / "Snakefile").write_text(
        textwrap.dedent(
            """\
            rule all:
                input: expand("out/{i}.txt", i=range(10))
            rule nothing:
                output: "out/{i}.txt"
                benchmark: "bench/{i}.tsv"
                script: "nothing.py"
            """
        )
    )
    (tmp / "nothing.py").write_text("open(snakemake.output[0], 'w').close()\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-q"],
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"the floor's snakemake failed:\n{proc.stderr[-2000:]}")
    seconds = sorted(
        float(path.read_text().splitlines()[1].split("\t")[0])
        for path in (tmp / "bench").glob("*.tsv")
    )
    return seconds[len(seconds) // 2]


def fixed_costs(rules: list[str], repeats: int = 3) -> dict[str, tuple[float, int]]:
    """Per rule: (median seconds, minor faults) of a fresh interpreter doing its
    adapter's imports."""
    scripts = rule_scripts()
    out = {}
    for rule in rules:
        if rule not in scripts:
            continue
        code = f"import sys; sys.path.insert(0, {str(SRC)!r})\n" + script_imports(scripts[rule])
        runs = [timed([sys.executable, "-c", code]) for _ in range(repeats)]
        for run in runs:
            if run[4].returncode != 0:
                sys.exit(f"{rule}'s imports failed:\n{run[4].stderr[-2000:]}")
        walls = sorted(run[0] for run in runs)
        out[rule] = (walls[len(walls) // 2], runs[-1][3])
    return out


ALLOCATOR_CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
from visual_ablation.plumbing.allocator import keep_freed_memory
if {keep}:
    keep_freed_memory()
from visual_ablation.probes import training
args = json.loads({args!r})
t0 = time.perf_counter()
training.train_store(**args)
print(time.perf_counter() - t0)
"""


def allocator_check(workdir: Path) -> list[tuple[str, float, float, int]]:
    """One MLP train job's training (shapes, effnet, original) with malloc's defaults and
    with the jobs' setting, each in a fresh process: (setting, wall, system s, faults)."""
    sys.path.insert(0, str(SRC))

    from visual_ablation.plan.config import resolve

    config = default_config()
    config["results_dir"] = config["cache_dir"] = str(workdir / "results")
    exp = resolve(config)
    args = {
        "feature_path": exp.feature_store("shapes", "effnet", "original"),
        "data_path": exp.data_store("shapes"),
        "feature_spec": exp.feature_spec("shapes", "effnet", "original"),
        "data_spec": exp.data_spec("shapes"),
        "probe_spec": exp.probe_spec("mlp"),
        "split_spec": exp.split,
        "runs": list(range(exp.runs)),
        "device": "cpu",
    }
    out = []
    for name, keep in (("malloc's defaults", False), ("freed memory kept", True)):
        code = ALLOCATOR_CHILD.format(src=str(SRC), keep=keep, args=json.dumps(args))
        wall, _, system, faults, proc = timed([sys.executable, "-c", code])
        if proc.returncode != 0:
            sys.exit(f"the allocator check failed:\n{proc.stderr[-2000:]}")
        out.append((name, wall, system, faults))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", help="work folder to keep (default: a temp dir, removed)")
    parser.add_argument("--allocator", action="store_true", help="also the allocator check")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="va-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run = run_default(workdir, args.cores)
        with tempfile.TemporaryDirectory() as tmp:
            floor = job_floor(Path(tmp))
        fixed = fixed_costs(list(run["rules"]))
        allocator = allocator_check(workdir) if args.allocator else []
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"default run (config/config.yaml), --cores {args.cores}: {run['jobs']} jobs, "
        f"{run['wall']:.0f} s wall, {run['user'] + run['system']:.0f} CPU-s "
        f"({run['user']:.0f} user, {run['system']:.0f} system), "
        f"{run['faults'] / 1e6:.1f} million minor page faults"
    )
    idle = run["idle"]
    print(
        f"jobs from first start to last end: {idle['span']:.0f} s; a core free while jobs "
        f"ran: {idle['seconds_a_core_free']:.0f} s ({idle['idle_core_seconds']:.0f} "
        "core-seconds no job held)"
    )
    total = sum(r["seconds"] for r in run["rules"].values())
    print(
        f"\n{'rule':26s}{'jobs':>6s}{'job-s':>8s}{'share':>7s}{'s/job':>7s}"
        f"{'fixed s':>9s}{'faults':>9s}"
    )
    for name, r in sorted(run["rules"].items(), key=lambda kv: -kv[1]["seconds"]):
        cost = fixed.get(name)
        extra = f"{floor + cost[0]:9.2f}{cost[1]:9d}" if cost else f"{'':9s}{'':9s}"
        print(
            f"{name:26s}{r['jobs']:6d}{r['seconds']:8.0f}{r['seconds'] / total:7.0%}"
            f"{r['seconds'] / r['jobs']:7.1f}{extra}"
        )
    print(f"{'all':26s}{sum(r['jobs'] for r in run['rules'].values()):6d}{total:8.0f}")
    print(
        f"\nfixed s: a Snakemake script job doing nothing ({floor:.2f} s) + a fresh "
        "interpreter doing the rule's adapter imports (median of 3); faults: the imports'"
    )
    for name, wall, system, faults in allocator:
        print(
            f"MLP train job (shapes/effnet/original), {name}: {wall:.1f} s wall, "
            f"{system:.1f} s system, {faults / 1e6:.2f} million minor faults"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"run": run, "floor": floor, "fixed": fixed, "allocator": allocator})
        )


if __name__ == "__main__":
    main()
