"""The build container (tools/build-image/) for `sam build --use-container`.
Docker does not run here, so what can be checked is: the Dockerfile is
Debian bookworm, copies every file its recipe (setup.sh) runs, runs that
recipe, and points the Makefile at what the recipe built; and the recipe,
which .ci/run runs for real before `make test`, leaves the libraries of both
architectures where the Makefile looks for them."""
import re
import subprocess

from rig import paths

IMAGE = paths.ROOT / "tools" / "build-image"


def _dockerfile():
    text = (IMAGE / "Dockerfile").read_text()
    return re.sub(r"\\\n", " ", text)  # continuation lines joined


def test_dockerfile_is_bookworm_and_runs_the_recipe():
    text = _dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["debian:bookworm"], froms
    copied = set()
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        copied |= set(line.split()[:-1])
    # Every repository file the recipe runs is in the image.
    recipe = (IMAGE / "setup.sh").read_text() + (paths.ROOT / "tools" / "test-deps.sh").read_text()
    used = set(re.findall(r"\btools/[\w./-]+\.sh\b", recipe)) | {"tools/build-image/setup.sh"}
    assert used <= copied, f"not copied into the image: {used - copied}"
    run = re.search(r"^RUN .*tools/build-image/setup\.sh\s+(\S+)", text, re.M)
    assert run, "the Dockerfile does not run tools/build-image/setup.sh"
    root = run.group(1)
    assert re.search(rf"LOGIN_ETL_DEPS_ROOT={re.escape(root)}\b", text), \
        "LOGIN_ETL_DEPS_ROOT must name the directory the recipe fills"
    # sam build --use-container runs `lambda-builders` in the image.
    assert "aws-lambda-builders" in text and "command -v lambda-builders" in text
    # The build context holds only what is copied.
    ignore = [l for l in (paths.ROOT / ".dockerignore").read_text().splitlines()
              if l and not l.startswith("#")]
    assert ignore[0] == "*", "the context starts from nothing"
    for f in copied:
        assert f"!{f}" in ignore, f"{f} is excluded from the build context"


def test_recipe_output_is_where_the_makefile_looks():
    # The Makefile's own place (LOGIN_ETL_DEPS_ROOT unset) is what setup.sh fills
    # when given build/ (as .ci/run does); with LOGIN_ETL_DEPS_ROOT it looks there.
    for arch, want in ((paths.HOST_ARCH, "deps"), (paths.OTHER_ARCH, f"{paths.OTHER_ARCH}/deps")):
        r = subprocess.run(["make", "-s", "-C", str(paths.ROOT), "-n", f"ARCH={arch}", "deps"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                "LOGIN_ETL_DEPS_ROOT": "/opt/x"})
        assert f"/opt/x/{want}" in r.stdout, r.stdout + r.stderr
        assert (paths.BUILD / want / ".done-v2").exists(), f"build/{want} was not built"
