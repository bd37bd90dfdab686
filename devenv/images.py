"""The project's images built on this machine, without a registry or a Docker daemon.

``make images`` builds ``kubetasks/operator:dev`` and ``kubetasks/worker:dev`` from the
project's own Dockerfiles, unchanged, with buildah (``buildah bud --pull=never``): it is those
Dockerfiles that the real-node tier tests, not a copy. Their ``FROM``,
``python:3.11-slim-bookworm``, cannot be pulled here, so a stand-in with that name is
bootstrapped from Debian packages (``mmdebstrap``: Debian bookworm's python3 is 3.11, like the
real image's) into buildah's private storage. The chart's bundled Redis gets an image made the
same way from Debian's ``redis-server`` (``kubetasks/redis:dev``; the chart's default
``redis:7.4-alpine`` cannot be pulled either).

Each image is exported as an OCI archive under ``~/.cache/kubetasks/images/<inputs>/``, named
by a hash of everything that goes into it: the Dockerfile, its ignore file and every file that
file admits into the build context (so the lock files and the package sources), the base
image's recipe and the machine's apt sources. A warm ``make images`` hashes and returns.
``load_images`` imports the archives into the local environment's containerd, so that the
chart's image references resolve without a pull.

Nothing host-specific goes into an image: pip in a build step reaches the package index
through the machine's proxy settings (buildah passes the standard proxy variables to ``RUN``
steps only) and trusts the machine's CA bundle, which is bind-mounted read-only for the build
and never copied; mmdebstrap's copies of the host's ``resolv.conf``, ``hostname`` and apt
sources are emptied. ``tests/images/`` checks all of that on the built images.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from devenv.binaries import cache_dir
from kubetasks.errors import ConfigurationError

REPO = Path(__file__).resolve().parent.parent

RECIPE_VERSION = "1"
"""Bumped when this module changes how an image is made, so every cached archive is rebuilt."""

SUITE = "bookworm"
"""Debian release of every image: the Dockerfiles' base is ``python:3.11-slim-bookworm``."""

DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    # Licences stay, as in Debian's own slim images.
    "path-include=/usr/share/doc/*/copyright",
)

HOST_LEFTOVERS = (
    # mmdebstrap copies these from the host; the container runtime provides its own.
    'for f in etc/resolv.conf etc/hostname; do : > "$1/$f"; done',
    # The machine's apt sources, which mmdebstrap pastes in (there is no apt in the image).
    'rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*',
)

PACKAGES = ("buildah", "mmdebstrap", "runc", "umoci")
"""Debian packages this module and tests/images need (umoci: the tests unpack images)."""

PRUNE_ABOVE = 4 * 2**30
"""Bytes of buildah storage above which a build prunes superseded images."""

BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RootfsImage:
    """An image whose one layer is a Debian root filesystem made by mmdebstrap."""

    name: str
    ref: str
    packages: tuple[str, ...]
    hooks: tuple[str, ...] = ()
    """Extra mmdebstrap ``--customize-hook`` shell lines (``$1`` is the root directory)."""
    config: tuple[str, ...] = ()
    """``buildah config`` arguments: environment, user, command, ports."""


@dataclass(frozen=True)
class DockerfileImage:
    """An image built from one of the project's Dockerfiles, the repository root as context."""

    name: str
    ref: str
    dockerfile: str
    """Path from the repository root."""

    @property
    def ignore_file(self) -> str:
        return self.dockerfile + ".dockerignore"


BASE = RootfsImage(
    name="base",
    ref="docker.io/library/python:3.11-slim-bookworm",
    packages=("python3-venv", "ca-certificates"),
    # The real image's python is /usr/local/bin/python; the Dockerfiles run `python -m venv`.
    hooks=('ln -s python3 "$1/usr/bin/python"',),
    config=("--env", f"PATH={BUILD_PATH}", "--env", "LANG=C.UTF-8", "--cmd", "python3"),
)
"""The stand-in for the Dockerfiles' ``FROM``; it lives only in buildah's storage."""

OPERATOR = DockerfileImage("operator", "docker.io/kubetasks/operator:dev", "operator/Dockerfile")
WORKER = DockerfileImage("worker", "docker.io/kubetasks/worker:dev", "worker_image/Dockerfile")
REDIS = RootfsImage(
    name="redis",
    ref="docker.io/kubetasks/redis:dev",
    packages=("redis-server",),
    # The chart runs `redis-server --dir /data ...` as 999:1000 on a read-only root; /data is
    # a volume there, and this directory serves a plain `docker run` of the image.
    hooks=('install -d -o 999 -g 1000 -m 0770 "$1/data"',),
    config=(
        "--env",
        f"PATH={BUILD_PATH}",
        "--user",
        "999:1000",
        "--workingdir",
        "/data",
        "--port",
        "6379",
        "--cmd",
        '["redis-server", "--dir", "/data"]',
    ),
)

IMAGES = (OPERATOR, WORKER, REDIS)
"""What ``build_images`` makes and ``load_images`` loads."""

HELM_VALUES = {
    "operator.image.repository": "kubetasks/operator",
    "operator.image.tag": "dev",
    "worker.image.repository": "kubetasks/worker",
    "worker.image.tag": "dev",
    "redis.image.repository": "kubetasks/redis",
    "redis.image.tag": "dev",
}
"""The chart values that point a release at these images (the README shows the same)."""


def helm_set_args() -> list[str]:
    """``--set`` arguments for ``helm install`` with the images of ``build_images``."""
    return [arg for key, value in HELM_VALUES.items() for arg in ("--set", f"{key}={value}")]


def images_dir() -> Path:
    """``<cache>/images``: the archives, buildah's storage and the lock."""
    return cache_dir() / "images"


# --- inputs -----------------------------------------------------------------------------


def apt_sources() -> list[Path]:
    """The machine's configured apt sources, which mmdebstrap uses as they are."""
    found = [Path("/etc/apt/sources.list")]
    found += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    found += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    usable = [
        path
        for path in found
        if path.is_file()
        and any(
            line.strip() and not line.lstrip().startswith("#")
            for line in path.read_text().splitlines()
        )
    ]
    if not usable:
        raise ConfigurationError("no apt sources configured (/etc/apt/sources.list[.d])")
    return usable


def context_files(image: DockerfileImage, repo: Path = REPO) -> list[Path]:
    """Every file the image's ignore file admits into the build context, sorted.

    The ignore files exclude everything (``*``) and then admit paths with ``!``; later lines
    exclude again (caches). Taking the admitted paths from the ignore file itself means a new
    ``COPY`` (which needs a new ``!`` line) changes the hash without touching this module.
    """
    admitted: list[str] = []
    excluded: list[str] = []
    for raw in (repo / image.ignore_file).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "*":
            continue
        if line.startswith("!"):
            admitted.append(line[1:].strip("/"))
        else:
            excluded.append(line.removeprefix("**/").strip("/"))
    files: set[Path] = set()
    for pattern in admitted:
        for top in repo.glob(pattern):
            candidates = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
            for path in candidates:
                parts = path.relative_to(repo).parts
                if not any(fnmatch(part, ex) for part in parts for ex in excluded):
                    files.add(path)
    return sorted(files)


def _digest(items: Sequence[object], files: Sequence[Path] = (), repo: Path = REPO) -> str:
    h = hashlib.sha256(json.dumps([RECIPE_VERSION, *items], default=str).encode())
    for path in files:
        name = str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)
        h.update(f"\0{name}\0{os.stat(path).st_mode & 0o111:o}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def rootfs_key(image: RootfsImage) -> str:
    """Hash of a root-filesystem image's recipe and the apt sources it comes from."""
    recipe = [image.ref, SUITE, image.packages, DPKG_OPTIONS, HOST_LEFTOVERS, image.hooks]
    return _digest([*recipe, image.config], apt_sources())


def dockerfile_key(image: DockerfileImage, repo: Path = REPO) -> str:
    """Hash of the Dockerfile, its ignore file, its build context and the base's recipe."""
    files = [repo / image.dockerfile, repo / image.ignore_file, *context_files(image, repo)]
    return _digest([image.ref, image.dockerfile, rootfs_key(BASE)], files, repo)


def image_key(image: RootfsImage | DockerfileImage) -> str:
    return rootfs_key(image) if isinstance(image, RootfsImage) else dockerfile_key(image)


def archive_path(image: RootfsImage | DockerfileImage) -> Path:
    """Where the image's OCI archive is cached for its current inputs."""
    return images_dir() / image_key(image) / f"{image.name}.oci.tar"


# --- tools ------------------------------------------------------------------------------


def ensure_packages(packages: Sequence[str] = PACKAGES) -> None:
    """Install the missing Debian packages (root only): a fresh CI machine has none."""
    binaries = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "runc": "runc", "umoci": "umoci"}
    missing = [p for p in packages if shutil.which(binaries.get(p, p)) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ConfigurationError(
            f"images need the Debian packages {' '.join(missing)}: install them"
            " (apt-get install --no-install-recommends ...), or run as root on Debian"
        )
    print(f"# installing {' '.join(missing)}", file=sys.stderr)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*apt, "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*apt, "install", "-y", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine trusts for HTTPS (pip's configured one first)."""
    candidates = [os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.cert"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    candidates += [ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass
class Buildah:
    """buildah with its storage under ``root`` (nothing in /var/lib/containers is used)."""

    root: Path = field(default_factory=lambda: images_dir() / "storage")
    driver: str = "overlay"

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "root"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def run(self, *args: str, log: Path | None = None) -> str:
        """Run buildah; its output goes to ``log`` (quoted in the error) or is returned."""
        if log is None:
            result = subprocess.run(self.argv(*args), capture_output=True, text=True)
            if result.returncode != 0:
                raise ConfigurationError(f"buildah {args[0]} failed: {result.stderr.strip()}")
            return result.stdout.strip()
        with log.open("a") as out:
            out.write(f"$ {' '.join(self.argv(*args))}\n")
            out.flush()
            code = subprocess.run(self.argv(*args), stdout=out, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = "\n".join(log.read_text().splitlines()[-30:])
            raise ConfigurationError(f"buildah {args[0]} failed (log {log}):\n{tail}")
        return ""

    def image_id(self, ref: str) -> str | None:
        result = subprocess.run(
            self.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref),
            capture_output=True,
            text=True,
        )
        return result.stdout.strip() if result.returncode == 0 else None


# --- building ---------------------------------------------------------------------------


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One build at a time per cache (two `make images` would share buildah's storage)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _bootstrap(image: RootfsImage, buildah: Buildah, work: Path, log: Path) -> None:
    """mmdebstrap the root filesystem and commit it into buildah's storage as ``image.ref``."""
    rootfs = work / f"{image.name}.rootfs.tar"
    argv = ["mmdebstrap", "--variant=essential", f"--include={','.join(image.packages)}"]
    argv += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    argv += [f"--customize-hook={hook}" for hook in (*image.hooks, *HOST_LEFTOVERS)]
    argv += [SUITE, str(rootfs), *map(str, apt_sources())]
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise ConfigurationError(f"mmdebstrap failed (log {log}):\n{tail}")
    container = buildah.run("from", "--pull=never", "scratch")
    try:
        buildah.run("add", container, str(rootfs), "/", log=log)
        created_by = f"mmdebstrap --variant=essential {SUITE} + {','.join(image.packages)}"
        buildah.run("config", "--created-by", created_by, *image.config, container, log=log)
        buildah.run("commit", "--rm", container, image.ref, log=log)
    except BaseException:
        subprocess.run(buildah.argv("rm", container), capture_output=True)
        raise
    finally:
        rootfs.unlink(missing_ok=True)


def base_in_storage(buildah: Buildah) -> bool:
    """Whether buildah's storage holds the stand-in of the current recipe under its name."""
    have = buildah.image_id(f"localhost/kubetasks-base:{rootfs_key(BASE)}")
    return have is not None and buildah.image_id(BASE.ref) == have


def _ensure_base(buildah: Buildah, work: Path, log: Path) -> float:
    """Make ``BASE.ref`` in storage the stand-in of the current recipe; seconds spent."""
    started = time.monotonic()
    marker = f"localhost/kubetasks-base:{rootfs_key(BASE)}"
    have = buildah.image_id(marker)
    if have is not None:
        if buildah.image_id(BASE.ref) != have:
            buildah.run("tag", marker, BASE.ref)
        return 0.0
    _bootstrap(BASE, buildah, work, log)
    buildah.run("tag", BASE.ref, marker)
    return time.monotonic() - started


def build_dockerfile(
    image: DockerfileImage, buildah: Buildah, log: Path, context: Path = REPO
) -> None:
    """``buildah bud`` of one Dockerfile into storage, on the stand-in base (never pulled)."""
    args = ["bud", "--runtime", "runc", "--pull=never", "--layers", "--network", "host"]
    ignore = context / image.ignore_file
    args += ["--file", str(context / image.dockerfile), "--ignorefile", str(ignore)]
    ca = host_ca_bundle()
    if ca is not None:
        # For pip in RUN steps only: a bind mount is not part of any layer. Debian's pip (the
        # venv's, from python3-pip-whl) reads this path.
        args += ["--volume", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
    args += ["--tag", image.ref, str(context)]
    buildah.run(*args, log=log)


def _export(image: RootfsImage | DockerfileImage, buildah: Buildah, archive: Path) -> None:
    """Write ``image`` as an OCI archive that ``ctr images import`` names ``image.ref``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        layout = Path(tmp) / "layout"
        buildah.run("push", "--quiet", image.ref, f"oci:{layout}:{image.ref}")
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for manifest in index["manifests"]:
            # containerd names an imported image by this annotation first. ctr 1.6 also takes
            # the full reference from the OCI ref name (tried), but a plain tag there (what
            # other tools write) it would prefix; the annotation says it in containerd's words.
            manifest.setdefault("annotations", {})["io.containerd.image.name"] = image.ref
        index_path.write_text(json.dumps(index))
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for path in sorted(layout.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
        partial.rename(archive)


def _forget_older(image: RootfsImage | DockerfileImage, keep: Path) -> None:
    """Drop archives of the same image built from older inputs."""
    for old in images_dir().glob(f"*/{image.name}.oci.tar"):
        if old != keep:
            shutil.rmtree(old.parent, ignore_errors=True)


def build_images(
    images: Sequence[RootfsImage | DockerfileImage] = IMAGES, *, report: bool = True
) -> dict[str, Path]:
    """Image reference -> OCI archive for each image, built only where the inputs changed."""
    out: dict[str, Path] = {}
    todo: list[RootfsImage | DockerfileImage] = []
    for image in images:
        archive = archive_path(image)
        if archive.is_file():
            out[image.ref] = archive
            if report:
                print(f"# {image.ref}: cached {archive}", file=sys.stderr)
        else:
            todo.append(image)
    if not todo:
        return out
    ensure_packages()
    buildah = Buildah()
    with locked(images_dir()), tempfile.TemporaryDirectory(dir=images_dir()) as tmp:
        work = Path(tmp)

        def python_images() -> dict[str, Path]:
            built: dict[str, Path] = {}
            dockerfiles = [image for image in todo if isinstance(image, DockerfileImage)]
            if dockerfiles:
                spent = _ensure_base(buildah, work, images_dir() / "build-base.log")
                if report:
                    what = f"built in {spent:.1f} s" if spent else "in storage"
                    print(f"# {BASE.ref} (stand-in): {what}", file=sys.stderr)
            for image in dockerfiles:
                built[image.ref] = _build_one(image, buildah, work, report=report)
            return built

        def rootfs_images() -> dict[str, Path]:
            return {
                image.ref: _build_one(image, buildah, work, report=report)
                for image in todo
                if isinstance(image, RootfsImage)
            }

        # The Redis root filesystem is bootstrapped while the Python images build: most of
        # either is waiting for downloads and dpkg, and buildah's storage takes its own locks.
        with ThreadPoolExecutor(max_workers=2) as pool:
            chains = [pool.submit(python_images), pool.submit(rootfs_images)]
            for chain in chains:
                out.update(chain.result())
        _prune_if_large(buildah)
    return {image.ref: out[image.ref] for image in images}


def _prune_if_large(buildah: Buildah) -> None:
    """Drop the layers of superseded builds once storage outgrows ``PRUNE_ABOVE``.

    Each source change leaves the previous final images (two copies of the virtualenv)
    behind. Pruning also drops the cached dependency layer of the build stages, which the
    next build then reinstalls (about a minute), so it waits until the space is worth it.
    """
    used = sum(
        os.lstat(Path(dirpath) / name).st_blocks * 512
        for dirpath, _, names in os.walk(buildah.root)
        for name in names
    )
    if used > PRUNE_ABOVE:
        buildah.run("rmi", "--prune")


def _build_one(
    image: RootfsImage | DockerfileImage, buildah: Buildah, work: Path, *, report: bool
) -> Path:
    archive = archive_path(image)
    if archive.is_file():  # built by another process while we waited for the lock
        return archive
    log = images_dir() / f"build-{image.name}.log"
    log.write_text("")
    started = time.monotonic()
    if isinstance(image, DockerfileImage):
        build_dockerfile(image, buildah, log)
    else:
        _bootstrap(image, buildah, work, log)
    built = time.monotonic() - started
    _export(image, buildah, archive)
    _forget_older(image, archive)
    if report:
        size = archive.stat().st_size / 2**20
        print(
            f"# {image.ref}: built in {built:.1f} s, exported in"
            f" {time.monotonic() - started - built:.1f} s, {size:.0f} MiB: {archive}",
            file=sys.stderr,
        )
    return archive


# --- loading ----------------------------------------------------------------------------


def containerd_address(state_dir: Path | None = None) -> Path | None:
    """The containerd socket of a running real-node environment, else None.

    ``env.json`` names it (``containerd_address``); an environment that records only
    ``"kubelet": "real"`` has it where :class:`devenv.env.DevEnvironment` puts it.
    """
    # Imported here: devenv.env brings in the whole harness, which building does not need.
    from devenv.env import DevEnvironment, default_state_dir

    state = state_dir or default_state_dir()
    try:
        saved = json.loads((state / "env.json").read_text())
    except (OSError, ValueError):
        return None
    address = saved.get("containerd_address")
    if not address and saved.get("kubelet") == "real":
        address = DevEnvironment(state).containerd_address
    return Path(address) if address and Path(address).is_socket() else None


def ctr_argv(address: Path, *args: str) -> list[str]:
    ctr = shutil.which("ctr")
    if ctr is None:
        raise ConfigurationError("ctr not found: it comes with the Debian package containerd")
    return [ctr, "--address", str(address), "--namespace", "k8s.io", *args]


def loaded_images(address: Path) -> set[str]:
    """Image references in containerd's ``k8s.io`` namespace (the one the kubelet uses)."""
    out = subprocess.run(
        ctr_argv(address, "images", "ls", "--quiet"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def load_images(address: Path, archives: Mapping[str, Path], *, report: bool = True) -> None:
    """Import the archives into containerd so that the kubelet finds the images unpulled."""
    started = time.monotonic()
    for archive in archives.values():
        subprocess.run(
            ctr_argv(address, "images", "import", "--all-platforms", str(archive)),
            check=True,
            capture_output=True,
            timeout=600,
        )
    missing = set(archives) - loaded_images(address)
    if missing:
        raise ConfigurationError(f"containerd at {address} does not list {sorted(missing)}")
    if report:
        took = time.monotonic() - started
        print(f"# loaded {len(archives)} images into {address} in {took:.1f} s", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.images",
        description="Build the operator, worker and Redis images with buildah (cached by"
        " their inputs) and load them into the local environment's containerd when it runs.",
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--load", action="store_true", help="load them, and fail if no real node is up"
    )
    load.add_argument("--no-load", action="store_true", help="only build")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="local environment (default: $KUBETASKS_DEV_DIR or ~/.cache/kubetasks/dev)",
    )
    ns = parser.parse_args(argv)
    started = time.monotonic()
    try:
        archives = build_images()
        print(f"# images ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        if ns.no_load:
            return 0
        address = containerd_address(ns.state_dir)
        if address is None:
            if ns.load:
                raise ConfigurationError(
                    "no real node is up (env.json has no live containerd_address):"
                    " start one with `kubetasks dev up --kubelet real`"
                )
            print("# no real node is up: nothing loaded", file=sys.stderr)
            return 0
        load_images(address, archives)
    except ConfigurationError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
