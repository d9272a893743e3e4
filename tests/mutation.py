"""Mutation score of the tests over the modules that decide results: `make mutation`.

Each module is mutated by mutmut in its own scratch copy of the project (under
.reverie/mutation/, one mutmut configuration each), with only the tests that concern it,
so that a slow test file never runs for a module it does not check. Where a module is
mostly code whose result the tests cannot see cheaply (the training loop), only the named
functions are mutated. The last line printed is one JSON object: killed, survived, score,
and the same per module; survivors (with their diffs) are written to
.reverie/mutation/survivors.json for the closing note.

Counted as killed: a failing test, a timeout, a crash. Counted as survived: passing tests,
and a mutant that no test reaches ("no tests"). Not counted: mutants mutmut skipped.

    python tests/mutation.py                  # every module (long: see the Makefile)
    python tests/mutation.py scoring quality  # some of them
    python tests/mutation.py scoring --mutants 'reverie.evaluation.scoring.x_*pope*'
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".reverie" / "mutation"

# name: (files to mutate, tests that check them, mutant name globs or None for every mutant)
MODULES: dict[str, tuple[list[str], list[str], list[str] | None]] = {
    # the real benchmarks' scorers (MME, MMBench, ScienceQA) are checked in test_real_benchmarks
    "scoring": (["reverie/evaluation/scoring.py"], ["tests/test_scoring.py", "tests/test_real_benchmarks.py",
                                                   "tests/test_real_scorers.py"], None),
    "loaders": (["reverie/evaluation/loaders.py"], ["tests/test_benchmarks.py", "tests/test_real_benchmarks.py",
                                                   "tests/test_real_loaders.py"], None),
    "pope_build": (["reverie/evaluation/suites.py"], ["tests/test_benchmarks.py"], ["*.x_pope__*", "*.x_object_statistics__*"]),
    "judge": (["reverie/teachers/judge.py", "reverie/teachers/annotated.py"],
              ["tests/test_judge.py", "tests/test_annotations.py"], None),
    "quality": (["reverie/quality.py"], ["tests/test_quality.py"], None),
    "samples": (["reverie/student/samples.py", "reverie/conversations.py"], ["tests/test_samples.py"], None),
    "checkpoint": (["reverie/student/train.py"], ["tests/test_training.py"],
                   ["*.x__resume__*", "*.x__checkpoint_*", "*.x__save_checkpoint__*", "*.x_checkpoint_dir__*",
                    "*.x_remove_checkpoints__*", "*.x_length_grouped_batches__*", "*_Progress*"]),
    # the ablation's numbers and the void verdict; the markdown, charts and tables that print
    # them are presentation (test_report checks the text, not letter by letter)
    "report_maths": (["reverie/report.py", "reverie/statistics.py", "reverie/evaluation/forms.py"],
                     ["tests/test_report.py", "tests/test_statistics.py", "tests/test_report_maths.py", "tests/test_forms.py"],
                     ["reverie.statistics.*", "reverie.evaluation.forms.*", "*.x__mean_std__*", "*.x_ablation__*",
                      "*.x__shared_weights__*", "*.x_compare__*", "*.x_column_check__*", "*.x_power__*",
                      "*.x_pope_adversarial_gap__*", "*.x_settle__*", "*Bootstrap*", "*.x_run_figures__*",
                      "*.x_in_column__*", "*.x__pope_standard_errors__*", "*.x_verdict__*", "*.x_void_reason__*"]),
    "teacher_parsing": (["reverie/teachers/parsing.py"], ["tests/test_teacher_answers.py", "tests/test_parsing.py"], None),
}
# what tests read from the repository root besides reverie/ and tests/ (tests/conftest.py's
# tiny params and project copies): without them a module's tests fail before any mutant runs
PROJECT_FOLDERS = ("stages", "flows", "mix", "eval_data", "configs")
PROJECT_FILES = ("params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", "prefect.toml")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests"}


def scratch_copy(name: str, files: list[str], tests: list[str]) -> Path:
    where = WORK / name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("reverie", "tests", *PROJECT_FOLDERS):
        shutil.copytree(ROOT / folder, where / folder, ignore=ignore)
    for file in PROJECT_FILES:
        shutil.copy(ROOT / file, where / file)
    mutmut = {"source_paths": ["reverie"], "only_mutate": files, "pytest_add_cli_args_test_selection": tests,
              "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x"], "use_git_change_detection": False,
              # mutmut runs the tests in its own copy (mutants/), which holds only reverie/ and tests/
              # unless told; the tests that build a project read these from the repository root
              "also_copy": [*PROJECT_FOLDERS, *PROJECT_FILES]}
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in mutmut.items()]
    lines += ["", "[tool.pytest.ini_options]", 'testpaths = ["tests"]']
    (where / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return where


def mutmut(where: Path, *args: str, log=None) -> str:
    exe = Path(sys.executable).parent / "mutmut"
    run = subprocess.run([str(exe), *args], cwd=where, text=True, stdout=log or subprocess.PIPE,
                         stderr=subprocess.STDOUT if log is None else log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if log is None:
        return run.stdout
    return ""


def measure(name: str, globs: list[str] | None, children: int) -> dict:
    files, tests, default_globs = MODULES[name]
    where = scratch_copy(name, files, tests)
    globs = globs or default_globs or []
    with open(where / "mutmut.log", "w") as log:
        mutmut(where, "run", "--max-children", str(children), *globs, log=log)
    statuses: dict[str, str] = {}
    for line in mutmut(where, "results", "--all", "true").splitlines():
        found = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if found and (not globs or any(_glob_match(found.group(1), g) for g in globs)):
            statuses[found.group(1)] = found.group(2).strip()
    if statuses and all(s == "not checked" for s in statuses.values()):
        raise SystemExit(f"[mutation] {name}: no mutant was run: the unmutated tests fail in the scratch copy; "
                         f"see {where / 'mutmut.log'}")
    killed = sum(s in KILLED for s in statuses.values())
    survived = [m for m, s in statuses.items() if s in SURVIVED]
    counted = killed + len(survived)
    result = {"killed": killed, "survived": len(survived), "score": round(killed / counted, 4) if counted else None,
              "not_counted": sum(s not in KILLED | SURVIVED for s in statuses.values())}
    diffs = {m: _diff(mutmut(where, "show", m)) for m in sorted(survived)}
    return result | {"survivors": diffs}


def _glob_match(name: str, glob: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, glob)


def _diff(shown: str) -> str:
    return "\n".join(line for line in shown.splitlines() if line.startswith(("-    ", "+    ", "- ", "+ "))
                     and not line.startswith(("---", "+++")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modules", nargs="*", choices=[[], *MODULES], help="default: all")
    p.add_argument("--mutants", nargs="+", help="mutant name globs (with one module)")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    p.add_argument("--goal", type=float, default=0.80, help="exit 1 when a module's score is below it")
    args = p.parse_args(argv)
    names = args.modules or list(MODULES)
    if args.mutants and len(names) != 1:
        p.error("--mutants needs exactly one module")
    per_module, survivors = {}, {}
    for name in names:
        print(f"[mutation] {name}: {', '.join(MODULES[name][0])} against {', '.join(MODULES[name][1])}", flush=True)
        result = measure(name, args.mutants, args.max_children)
        survivors[name] = result.pop("survivors")
        per_module[name] = result
        print(f"[mutation] {name}: {json.dumps(result)}", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "survivors.json").write_text(json.dumps(survivors, indent=1) + "\n")
    killed = sum(m["killed"] for m in per_module.values())
    survived = sum(m["survived"] for m in per_module.values())
    total = {"killed": killed, "survived": survived, "score": round(killed / (killed + survived), 4) if killed + survived else None,
             "modules": per_module}
    print(json.dumps(total))
    below = [name for name, m in per_module.items() if m["score"] is None or m["score"] < args.goal]
    if below:
        print(f"[mutation] below the goal of {args.goal:.0%} killed: {', '.join(below)}", file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
