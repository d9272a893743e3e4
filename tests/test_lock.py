"""requirements.lock installs on every Python 3.11, not only the one that froze it.

`make lock` freezes a venv of one interpreter (its header names it), and `pip freeze` lists
only what that interpreter's markers asked for. A dependency that an earlier patch release
needs is missing from the freeze, and `make install` on that Python stops at `pip check`
(measured: Debian 12's python3 is 3.11.2, and redis asks for async-timeout below 3.11.3).
requirements.markers holds such pins; this test finds the ones it lacks."""
import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PATCH_RELEASES = [f"3.11.{patch}" for patch in range(0, 15)]


def locked() -> dict[str, str]:
    """Each locked package's canonical name -> its line (marker included)."""
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
        if m:
            out[canonicalize_name(m.group(1))] = line
    return out


def needed_on(python: str, names: dict[str, str]) -> set[tuple[str, str]]:
    """(package, requirement) pairs: what a locked package requires on `python`, without extras,
    that the lock does not hold for that Python."""
    env = default_environment() | {"python_full_version": python, "python_version": python.rsplit(".", 1)[0],
                                   "extra": ""}
    missing = set()
    for name in names:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # a pin for another Python (requirements.markers): not installed here
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = canonicalize_name(req.name)
            line = names.get(dep)
            held = line is not None and (";" not in line or Requirement(line).marker.evaluate(env))
            if not held:
                missing.add((name, text))
    return missing


def test_every_python_3_11_finds_what_the_locked_packages_require():
    names = locked()
    assert "redis" in names and "torch" in names
    missing = {python: sorted(needed_on(python, names)) for python in PATCH_RELEASES}
    assert not any(missing.values()), {p: m for p, m in missing.items() if m}


def test_the_check_sees_a_pin_that_is_missing():
    names = locked()
    names.pop("async-timeout")
    assert ("redis", "async-timeout>=4.0.3; python_full_version < '3.11.3'") in needed_on("3.11.2", names)
    assert not any(dep == "redis" for dep, _ in needed_on("3.11.7", names))
