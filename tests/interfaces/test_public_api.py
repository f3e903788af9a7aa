from __future__ import annotations

import importlib
import inspect
import pkgutil

import sharelearn


def _modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(sharelearn.__path__, "sharelearn.")
        if not m.name.endswith("__main__")
    ]


def test_every_module_declares_a_complete_sorted_all() -> None:
    missing = {}
    for name in _modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        public = {
            n
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == name
        }
        if public - set(exported):
            missing[name] = sorted(public - set(exported))
    assert not missing, f"public names missing from __all__: {missing}"
