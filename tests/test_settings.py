import pytest
import yaml

from pydantic import ValidationError

from reverie.settings import ParamsError, WorldSettings, load_params
from reverie.vocab import MAIN_VARIANTS, VARIANTS
from tests.conftest import ROOT


def test_the_shipped_params_parse():
    params = load_params(ROOT / "params.yaml")
    # the paper's four variants, and nothing but the known variants and controls
    assert set(MAIN_VARIANTS) == {"response", "pos", "neg", "pos_neg"}
    assert set(MAIN_VARIANTS) <= set(params.tune.variants) <= set(VARIANTS)
    assert len(params.tune.seeds) >= 2
    # the shipped world is themed: every kind in exactly one theme
    named = [k for theme in params.world.themes for k in theme]
    assert len(params.world.themes) >= 2 and sorted(named) == sorted(params.world.kinds)


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
    data["world"]["themes"] = [["circle", "dragon"]]
    with pytest.raises(ParamsError, match="themes names 'dragon', which is not in kinds"):
        load_params(write(tmp_path, data))


KINDS = ["circle", "square", "star", "ring"]


@pytest.mark.parametrize("themes, message", [
    ([["circle", "square"], ["star", "dragon"]], "themes names 'dragon', which is not in kinds"),
    # a kind left out of every theme would never be drawn
    ([["circle", "square"], ["star"]], r"themes must hold every kind exactly once \(missing or repeated: \['ring'\]\)"),
    # a kind in two themes
    ([["circle", "square", "ring"], ["star", "ring"]],
     r"themes must hold every kind exactly once \(missing or repeated: \['ring'\]\)"),
])
def test_themes_must_partition_the_kinds(themes, message):
    with pytest.raises(ValidationError, match=message):
        WorldSettings(kinds=KINDS, themes=themes)


@pytest.mark.parametrize("themes", [[], [KINDS], [["ring", "circle"], ["star", "square"]]])
def test_themes_that_partition_the_kinds_are_accepted(themes):
    assert WorldSettings(kinds=KINDS, themes=themes).themes == themes


@pytest.mark.parametrize("key, value, names", [
    ("world.cooccurrence_pairs", [["circle", "cross"]], ["world.themes", "world.theme_bias"]),
    ("world.cooccurrence_bias", 0.5, ["world.theme_bias"]),
    ("base.existence_probes_per_image", 2, ["base.probes_per_image"]),
    ("base.attribute_probes_per_image", 0, ["base.probes_per_image"]),
    ("base.min_existence_accuracy", 0.9, ["base.min_seeing_accuracy"]),
])
def test_an_old_params_file_with_a_replaced_key_is_told_its_replacement(tmp_path, key, value, names):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    section, name = key.split(".")
    data[section][name] = value
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, data))
    assert f"unknown key '{key}'" in str(err.value)
    assert all(n in str(err.value) for n in names), str(err.value)


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
