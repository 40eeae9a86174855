"""Local stand-ins for the images docker-compose.yml and the Dockerfile name, for a machine that cannot reach
Docker Hub: built from Debian bookworm's packages (debootstrap, then one small Dockerfile each under standins/) and
tagged with the very names compose uses, so `docker compose up` runs the real file unchanged.

Each stand-in honours the official image's documented contract (environment, volumes, users, entrypoint), not its
exact version: Debian bookworm ships PostgreSQL 15, Redis 7.0, Python 3.11.2 and Caddy 2.6, whatever the pinned tag
says; flower is the pinned release from PyPI. An image already built from the same recipe is kept, so a second run
builds nothing.

    python -m tests.compose.standin_images        # from the repository root, as root (debootstrap), dockerd running
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPES = Path(__file__).resolve().parent / "standins"
ROOTFS = "admitflow-standin/rootfs:bookworm"
BASE = "admitflow-standin/base:bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LABEL = "org.admitflow.standin-recipe"
# The official repositories each stand-in replaces, by the recipe that builds it.
RECIPE_FOR_REPOSITORY = {"python": "python", "postgres": "postgres", "redis": "redis", "mher/flower": "flower",
                         "caddy": "caddy"}


def images_named() -> dict[str, str]:
    """The image names compose pulls and the Dockerfile builds FROM, by the recipe that stands in for each."""
    named: dict[str, str] = {}
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    references = [service["image"] for service in services.values() if "build" not in service and "image" in service]
    references += re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    for reference in references:
        repository = reference.split(":", 1)[0]
        if repository not in RECIPE_FOR_REPOSITORY:
            raise SystemExit(f"no stand-in recipe for {reference}: add one under {RECIPES}")
        named[RECIPE_FOR_REPOSITORY[repository]] = reference
    return named


def _label(image: str) -> str | None:
    found = subprocess.run(["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', image],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def _image_id(image: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True,
                          check=True).stdout.strip()


def _ensure_rootfs(say: Callable[[str], None]) -> None:
    if _label(ROOTFS) is not None:
        return
    if shutil.which("debootstrap") is None:
        say("installing debootstrap")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="admitflow-rootfs-") as root:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", root,
                        "http://deb.debian.org/debian"], check=True, stdout=subprocess.DEVNULL)
        with subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(["docker", "import", "--change", f"LABEL {LABEL}=debootstrap-minbase-bookworm", "-",
                            ROOTFS], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.returncode != 0:
            raise SystemExit("tar of the debootstrap root failed")
    say(f"{ROOTFS}: debootstrap and import in {time.monotonic() - started:.0f} s")


def _recipe_digest(recipe: Path, *inputs: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(recipe.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(recipe).as_posix().encode() + b"\0" + path.read_bytes())
    for value in inputs:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()[:20]


def _build(recipe: str, tag: str, say: Callable[[str], None], *, parents: dict[str, str],
           args: dict[str, str] | None = None, extra: dict[str, bytes] | None = None) -> None:
    """Build one recipe, unless an image of this tag was built from the same files on the same parent images.

    parents: build arguments naming an image (the image's id counts toward "the same"); args: other build arguments;
    extra: files added to the recipe's build context.
    """
    with tempfile.TemporaryDirectory(prefix=f"admitflow-standin-{recipe}-") as directory:
        context = Path(directory)
        shutil.copytree(RECIPES / recipe, context, dirs_exist_ok=True)
        for name, content in (extra or {}).items():
            (context / name).write_bytes(content)
        arguments = {**parents, **(args or {})}
        wanted = _recipe_digest(context, *(f"{key}={value}" for key, value in sorted(arguments.items())),
                                *(_image_id(image) for image in parents.values()))
        if _label(tag) == wanted:
            say(f"{tag}: up to date")
            return
        started = time.monotonic()
        build_args = [item for key, value in arguments.items() for item in ("--build-arg", f"{key}={value}")]
        log = context.parent / f"{context.name}.log"
        with log.open("w") as out:
            result = subprocess.run(["docker", "build", "--label", f"{LABEL}={wanted}", *build_args, "-t", tag,
                                     str(context)], stdout=out, stderr=subprocess.STDOUT, check=False)
        output = log.read_text()
        log.unlink()
        if result.returncode != 0:
            sys.stderr.write(output[-4000:])
            raise SystemExit(f"building the stand-in {tag} failed")
        say(f"{tag}: built in {time.monotonic() - started:.0f} s")


def _say(message: str) -> None:
    print(message, flush=True)


def build_standins(say: Callable[[str], None] = _say) -> dict[str, str]:
    """Build (or keep) every stand-in; returns the image names by recipe."""
    named = images_named()
    _ensure_rootfs(say)
    _build("base", BASE, say, parents={"ROOTFS": ROOTFS}, extra={"host-ca-bundle.crt": HOST_CA_BUNDLE.read_bytes()})
    for recipe in ("python", "postgres", "redis", "caddy"):
        if recipe in named:
            _build(recipe, named[recipe], say, parents={"BASE": BASE})
    if "flower" in named:
        version = named["flower"].split(":", 1)[1]
        _build("flower", named["flower"], say, parents={"PYTHON": named["python"]}, args={"VERSION": version})
    return named


if __name__ == "__main__":
    build_standins()
