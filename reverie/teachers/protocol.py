"""The one interface every teacher offers `reverie.generate`: teach a list of images, get
back the records (the judge's verdict in each, rejected ones included), what could not be
produced (quarantined, with its reason) and the teacher's usage.

- `SceneGraphTeacher` (and `AnnotatedSceneTeacher`): images are `world.Scene`s; its item
  steps and its text-only judge run per scene, nothing is quarantined, usage is empty.
- `ChatTeacher`: images are `ImageEntry`s; a chat-completions endpoint answers the three steps.
- `LocalTeacher`: the same steps answered by a local transformers model.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable


class Taught(NamedTuple):
    records: list[dict]
    quarantined: list[dict]
    usage: dict


@runtime_checkable
class Teacher(Protocol):
    name: str  # written into each record's provenance as teacher and judge

    def teach(self, images: Sequence, progress: bool = False) -> Taught:
        """Records for `images`, in image order (ids `{image_id}-q{j}`)."""
        ...
