"""Where things are: the repository root, the builds of bootstrap, and the
other architecture's cross build that `make test` runs under qemu-user."""
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
RELEASE = BUILD / "bootstrap"            # static, stripped: what ships
RELEASE_SYMBOLS = BUILD / "release" / "bootstrap"  # the same before strip (for gdb)
ASAN = BUILD / "asan" / "bootstrap"      # dynamic, ASan/UBSan: the default for tests
PLAIN = BUILD / "plain" / "bootstrap"    # dynamic, no sanitizer: for valgrind
EVENTS = ROOT / "events"

# The other architecture: build/arm64/ on an x86_64 machine (make ARCH=arm64),
# build/x86_64/ on an arm64 one; its static binaries run under qemu-user.
HOST_ARCH = {"aarch64": "arm64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
OTHER_ARCH = "x86_64" if HOST_ARCH == "arm64" else "arm64"
CROSS = BUILD / OTHER_ARCH / "bootstrap"
CROSS_TESTS = BUILD / OTHER_ARCH / "tests"
QEMU = {"arm64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}[OTHER_ARCH]
