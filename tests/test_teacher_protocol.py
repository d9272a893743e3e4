"""The three teachers offer generate one interface (`reverie.teachers.protocol.Teacher`), and
generate reaches them only through it."""
import ast
import inspect

from reverie.generate import build_teacher
from reverie.settings import GenerateSettings, WorldSettings
from reverie.teachers.annotated import AnnotatedSceneTeacher
from reverie.teachers.local_vlm import LocalTeacher
from reverie.teachers.openai_compat import ChatTeacher
from reverie.teachers.protocol import Taught, Teacher
from reverie.teachers.scene_graph import SceneGraphTeacher
from reverie.world import sample_world

from .conftest import ROOT


def test_every_teacher_class_has_the_teach_entry_point():
    expected = list(inspect.signature(Teacher.teach).parameters)
    for cls in (SceneGraphTeacher, AnnotatedSceneTeacher, ChatTeacher, LocalTeacher):
        assert isinstance(cls.name, str), cls
        assert list(inspect.signature(cls.teach).parameters) == expected, cls


def test_teacher_instances_satisfy_the_protocol():
    generate = GenerateSettings()
    world = WorldSettings(train_images=3, eval_images=1)
    teachers = [build_teacher(world, generate, 5), ChatTeacher(generate), LocalTeacher(generate),
                AnnotatedSceneTeacher(["chair"], ["red"], {}, "sg-v1", generate=generate)]
    for teacher in teachers:
        assert isinstance(teacher, Teacher), teacher
    taught = teachers[0].teach(sample_world(world, 5)[0])
    assert isinstance(taught, Taught) and taught.records and taught.quarantined == []


def test_generate_calls_teachers_only_through_teach():
    tree = ast.parse((ROOT / "reverie/generate.py").read_text())
    steps = {"collect_questions", "write_rationales", "inject_error", "judge", "records_for_image",
             "records_for_scene", "ateach"}
    called = {node.func.attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert "teach" in called and not called & steps
