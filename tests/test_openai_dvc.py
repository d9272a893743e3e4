"""`dvc repro` generates, judges and validates data from a folder of images with an
OpenAI-compatible teacher (a loopback server), and the key reaches no written file."""
import json
import os

from PIL import Image

from tests.chat_server import MODELS, ChatServer
from tests.conftest import dvc, make_project, tiny_params_dict

KEY = "sk-test-DO-NOT-LEAK-4242"


def test_dvc_repro_with_the_openai_teacher(tmp_path, monkeypatch):
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(16):
        Image.new("RGB", (32, 32), (16 * i, 255 - 16 * i, 90)).save(images / f"photo{i:02d}.png")
    server = ChatServer(expected_key=KEY).start()
    params = tiny_params_dict()
    params["generate"].update(teacher="openai")
    params["generate"]["openai"] = {
        "base_url": server.base_url, "qa_model": MODELS["qa"], "rationale_model": MODELS["rationale"],
        "judge_model": MODELS["judge"], "api_key_env": "REVERIE_TEST_KEY", "images_dir": str(images),
        "eval_fraction": 0.25, "cache_path": ".reverie/teacher_cache.sqlite", "concurrency": 4,
    }
    params["validate"].update(min_records=10, min_type_share=0.0)
    project = make_project(tmp_path / "project", params)
    monkeypatch.setenv("REVERIE_TEST_KEY", KEY)
    result = dvc(project, "repro", "validate")
    assert "Running stage 'generate'" in result.stdout and "Running stage 'validate'" in result.stdout
    gen = json.loads((project / "metrics/generate.json").read_text())
    assert gen["train_images"] + gen["eval_images"] == 16 and gen["records"] > 10
    assert gen["teacher_calls"] > 0 and gen["teacher_prompt_tokens"] > 0
    val = json.loads((project / "metrics/validate.json").read_text())
    assert val["success"] and val["train_records"] + val["eval_records"] == gen["records"]
    calls = server.stats()["requests"]
    again = dvc(project, "repro", "-f", "generate")  # forced rerun: every call answered from the cache
    assert "Running stage 'generate'" in again.stdout
    assert server.stats()["requests"] == calls
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in result.stdout + result.stderr + again.stdout + again.stderr
    server.shutdown()
