"""Where things are: the repository root and the three builds of bootstrap."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
RELEASE = BUILD / "bootstrap"            # static, stripped: what ships
ASAN = BUILD / "asan" / "bootstrap"      # dynamic, ASan/UBSan: the default for tests
PLAIN = BUILD / "plain" / "bootstrap"    # dynamic, no sanitizer: for valgrind
EVENTS = ROOT / "events"
