"""Declared = read: every DVC stage's `params:` in dvc.yaml lists exactly the settings its code
reads, so that a change to any of them reruns the stage, and none reruns it for nothing.

The reads are recorded while the tiny end-to-end run (tests/conftest.py `repro_project`)
runs each stage: `reverie.stage.params_from` hands the stage a `ReadRecorder`, which writes the
dotted path of every setting read to `.reverie/params_reads/<stage>.json`."""
import json

import yaml

from reverie.settings import Params, ReadRecorder
from tests.conftest import PARAMS_READS, ROOT


def declared_params() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: [p for p in stage.get("params", []) if isinstance(p, str)] for name, stage in stages.items()}


def covers(declared: str, read: str) -> bool:
    """A declared key covers a read of itself or of anything inside it. A declared section
    counts as read when any key in it is read (generate reads its teacher's subsection only)."""
    return read == declared or read.startswith(declared + ".")


def gaps(declared: list[str], reads: set[str]) -> tuple[list[str], list[str]]:
    """(keys read but not declared, declared keys nothing reads)."""
    undeclared = sorted(r for r in reads if not any(covers(d, r) for d in declared))
    unread = sorted(d for d in declared if not any(covers(d, r) or covers(r, d) for r in reads))
    return undeclared, unread


def test_the_recorder_names_every_setting_read():
    params = ReadRecorder(Params())
    params.world.kinds, params.validate_.min_records, params.tune.lora.r
    params.evaluate.model_dump(exclude={"batch_size", "threads", "precision"})
    assert params.reads == {"world.kinds", "validate.min_records", "tune.lora.r", "evaluate.max_new_tokens",
                            "evaluate.pope_objects", "evaluate.eval_images", "evaluate.mmbench_questions_per_image",
                            "evaluate.suites"}
    assert gaps(["world", "tune.lora"], {"world.kinds", "tune.lora.r"}) == ([], [])
    assert gaps(["world.kinds", "tune.seeds"], {"world.colors", "world.kinds"}) == (["world.colors"], ["tune.seeds"])


def release_generate_reads(tmp_path) -> set[str]:
    """What `generate` reads with the released annotations as its source (teacher:
    reverie_json), a branch the tiny run does not take: it also reads validate's length rules."""
    from reverie.generate import generate_dataset
    from tests.test_release import image, release_params, row, write_lines

    root = tmp_path / "release" / "images"
    entries = [row(image(root / "coco" / f"{i}.jpg").relative_to(root).as_posix(), f"What colour is box {i}?",
                   "Red", "Blue") for i in range(3)]
    path = write_lines(tmp_path / "release" / "reverie.json", entries)
    params = ReadRecorder(Params.model_validate(release_params(tmp_path, path, root)))
    generate_dataset(params, tmp_path / "data")
    return params.reads


def test_each_stage_declares_exactly_the_params_it_reads(repro_project, tmp_path):
    project, _ = repro_project
    recorded: dict[str, set[str]] = {}
    for path in (project / PARAMS_READS).glob("*.json"):
        # matrix stages (tune@response-0, ...) share their declaration: the union of their reads
        recorded.setdefault(path.stem.split("@")[0], set()).update(json.loads(path.read_text()))
    recorded["generate"] |= release_generate_reads(tmp_path)
    declared = declared_params()
    assert sorted(recorded) == sorted(declared), "every stage ran and recorded its reads"
    problems = {}
    for name, keys in declared.items():
        undeclared, unread = gaps(keys, recorded[name])
        if undeclared or unread:
            problems[name] = {"read but not declared": undeclared, "declared but not read": unread}
    assert not problems, json.dumps(problems, indent=1)
