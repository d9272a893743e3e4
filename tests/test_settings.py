import pytest
import yaml

from reverie.settings import ParamsError, load_params
from tests.conftest import ROOT


def test_the_shipped_params_parse():
    params = load_params(ROOT / "params.yaml")
    assert params.tune.variants == ["response", "pos", "neg", "pos_neg"]
    assert len(params.tune.seeds) >= 2


def write(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_typo_names_the_key_and_the_file(tmp_path):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["tune"]["learning_rate"] = 0.1
    path = write(tmp_path, data)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "tune.learning_rate" in str(err.value) and str(path) in str(err.value)


def test_a_mistyped_value_names_the_key(tmp_path):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["world"]["train_images"] = "many"
    with pytest.raises(ParamsError, match=r"world\.train_images"):
        load_params(write(tmp_path, data))


def test_inconsistent_values_and_bad_prompts_are_refused(tmp_path):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["tune"]["prompts"]["negative"] = "Why is this wrong?"
    with pytest.raises(ParamsError, match="confusing_answer"):
        load_params(write(tmp_path, data))
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["world"]["cooccurrence_pairs"] = [["circle", "dragon"]]
    with pytest.raises(ParamsError, match="dragon"):
        load_params(write(tmp_path, data))


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("world: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_an_old_params_file_with_generate_judge_is_refused_by_name(tmp_path):
    # generate.judge could only repeat generate.teacher; it is gone, and an old file says so
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["generate"]["judge"] = "scene_graph"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "unknown key 'generate.judge'" in str(err.value) and "generate.teacher" in str(err.value)
