"""Team setup: outputs pushed to a DVC remote (a local path here; S3, GCS, SSH the same way)
come back with `dvc pull` on a machine that has only the code."""
import hashlib
import shutil
import subprocess
import sys

from reverie.orchestration import remote_commands
from tests.conftest import dvc, make_project, tiny_params_dict


def digest(folder):
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".gitignore"):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def test_push_then_pull_restores_the_outputs(tmp_path):
    params = tiny_params_dict()
    params["project"]["dvc_remote"] = str(tmp_path / "remote")
    project = make_project(tmp_path / "project", params)
    dvc(project, "repro", "validate")
    before = digest(project / "data")
    for cmd in remote_commands(params["project"]["dvc_remote"]):  # what the flow runs after the DAG
        subprocess.run(cmd, cwd=project, check=True, capture_output=True)
    assert any((tmp_path / "remote").rglob("*"))
    # a teammate's clone: the code and dvc.lock, no cache, no data
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    shutil.copy(project / "dvc.lock", clone / "dvc.lock")
    shutil.copy(project / ".dvc" / "config.local", clone / ".dvc" / "config.local")
    assert not (clone / "data").exists()
    dvc(clone, "pull", "--with-deps", "validate")  # the stages that ran
    assert digest(clone / "data") == before
    # outputs marked `cache: false` (metrics, reports) travel by git, as DVC intends
    shutil.copytree(project / "metrics", clone / "metrics")
    shutil.copytree(project / "reports", clone / "reports")
    assert "up to date" in dvc(clone, "status", "generate", "validate").stdout
