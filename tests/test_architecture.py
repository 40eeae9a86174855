"""The house rules of worker/ (see worker/__init__.py), read from the imports themselves with `ast`.

Doors (web, cli, tasks) may import any room; a room imports only rooms below it; `integrations/` and `config/`
never import `worker/`; and no module imports itself back through others, lazily or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("worker", "integrations", "config")
ROOMS = ("store", "intake", "leads", "trust", "staff", "delivery", "ops")
DOORS = ("web", "cli", "tasks")


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the packages below root, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules this module imports, wherever the import statement sits (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {target for target in targets if target in known and target != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules_under(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def part_of(module: str) -> str | None:
    """The room or door a worker module belongs to, None for anything else."""
    parts = module.split(".")
    if parts[0] != "worker" or len(parts) == 1:
        return None
    return parts[1]


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module.split(".")[0] in ("integrations", "config") and target.startswith("worker"):
                problems.append(f"{module} imports {target}: integrations/ and config/ never import worker/")
                continue
            here, there = part_of(module), part_of(target)
            if here is None or there is None or here == there:
                continue
            if there in DOORS and here not in DOORS:
                problems.append(f"{module} imports the door {target}: only doors import doors")
            elif here in ROOMS and there in ROOMS and ROOMS.index(there) > ROOMS.index(here):
                problems.append(f"{module} imports {target}: the room {here} may only import rooms below it")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another round in a circle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_worker_has_no_module_outside_a_room_but_its_doors() -> None:
    loose = sorted(path.name for path in (REPO / "worker").glob("*.py"))
    assert loose == ["__init__.py", "tasks.py"]
    rooms = sorted(path.name for path in (REPO / "worker").iterdir() if (path / "__init__.py").exists())
    assert rooms == sorted([*ROOMS, "web", "cli"])


def test_every_room_says_what_lives_there() -> None:
    for room in [*ROOMS, "web", "cli"]:
        assert ast.get_docstring(ast.parse((REPO / "worker" / room / "__init__.py").read_text())), room


def test_imports_point_from_the_doors_down_through_the_rooms() -> None:
    assert forbidden_imports(import_graph(REPO)) == []


def test_no_module_imports_itself_back_through_others() -> None:
    assert import_cycles(import_graph(REPO)) == []


@pytest.fixture
def house(tmp_path: Path) -> Path:
    """A small tree shaped like ours, clean until a test adds a bad import."""
    files = {
        "worker/__init__.py": "",
        "worker/tasks.py": "from worker.delivery import outbox\n",
        "worker/store/__init__.py": "",
        "worker/store/db.py": "from config import settings\n",
        "worker/leads/__init__.py": "",
        "worker/leads/dedup.py": "from worker.store import db\n",
        "worker/delivery/__init__.py": "",
        "worker/delivery/outbox.py": "from worker.leads.dedup import x\n",
        "integrations/__init__.py": "",
        "integrations/crm.py": "import requests\n",
        "config/__init__.py": "",
        "config/settings.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_pass_a_clean_house(house: Path) -> None:
    graph = import_graph(house)
    assert graph["worker.delivery.outbox"] == {"worker.leads.dedup"}
    assert forbidden_imports(graph) == [] and import_cycles(graph) == []


def test_a_room_importing_a_room_above_it_is_refused(house: Path) -> None:
    (house / "worker/store/db.py").write_text("def f():\n    from worker.leads import dedup\n")

    assert forbidden_imports(import_graph(house)) == [
        "worker.store.db imports worker.leads.dedup: the room store may only import rooms below it"
    ]


def test_a_room_importing_a_door_and_integrations_importing_worker_are_refused(house: Path) -> None:
    (house / "worker/leads/dedup.py").write_text("import worker.tasks\n")
    (house / "integrations/crm.py").write_text("from worker.store.db import engine\n")

    assert forbidden_imports(import_graph(house)) == [
        "integrations.crm imports worker.store.db: integrations/ and config/ never import worker/",
        "worker.leads.dedup imports the door worker.tasks: only doors import doors",
    ]


def test_a_cycle_is_found_even_through_a_relative_import_inside_a_function(house: Path) -> None:
    (house / "worker/leads/dedup.py").write_text("from worker.store import db\n")
    (house / "worker/store/db.py").write_text("def f():\n    from ..leads import dedup\n")

    assert import_cycles(import_graph(house)) == [["worker.leads.dedup", "worker.store.db"]]
