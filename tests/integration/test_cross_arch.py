"""The other architecture's build (build/arm64/bootstrap on an x86_64 machine,
made by `make cross-test-build`, i.e. `make ARCH=arm64`) run under qemu-user
against the real test Postgres: the core of test_etl.py (a real batch, a
replay, FIFO, a database outage), the same test functions with the same
assertions, with this binary in place of the ASan build."""
import os
import shutil
import subprocess

from integration import test_etl
from rig import paths, proc


def _under_qemu(test):
    """Runs `test` with every Bootstrap it starts being the cross build under qemu-user."""
    assert paths.CROSS.is_file(), f"{paths.CROSS} is missing: run `make cross-test-build`"
    qemu = shutil.which(paths.QEMU)
    assert qemu, f"{paths.QEMU} is missing: run tools/test-deps.sh (qemu-user-static)"
    saved = dict(proc.DEFAULT)
    proc.DEFAULT.update(binary=paths.CROSS, wrapper=[qemu])
    try:
        test()
    finally:
        proc.DEFAULT.clear()
        proc.DEFAULT.update(saved)


def test_cross_build_is_a_static_executable_of_the_other_architecture():
    out = subprocess.run(["file", "-L", str(paths.CROSS)], capture_output=True, text=True).stdout
    want = "ARM aarch64" if paths.OTHER_ARCH == "arm64" else "x86-64"
    assert want in out and "statically linked" in out, out


def test_cross_build_masks_byte_for_byte_like_the_native_one():
    # The same key and inputs through both binaries' `mask` command: the stored
    # values must not depend on the architecture that wrote them.
    env = {"PATH": "/usr/bin:/bin", "MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": "k1"}
    values = ["199.172.111.135", "2001:DB8::1", "::ffff:1.2.3.4", "123-45-6789"]
    for v in values:
        native = subprocess.run([str(paths.RELEASE), "mask", "--", v], env=env,
                                capture_output=True, text=True, timeout=60)
        cross = subprocess.run([paths.QEMU, str(paths.CROSS), "mask", "--", v], env=env,
                               capture_output=True, text=True, timeout=60)
        assert native.returncode == 0 and cross.returncode == 0, native.stderr + cross.stderr
        assert native.stdout.startswith("k1:") and len(native.stdout.splitlines()) == 1
        assert cross.stdout == native.stdout, v


def test_cross_build_realistic_batches():
    _under_qemu(test_etl.test_realistic_batches_match_independent_computation)


def test_cross_build_replays_add_no_rows():
    _under_qemu(test_etl.test_replayed_batches_add_no_rows_and_repeats_in_a_batch_give_one_row)


def test_cross_build_fifo_stops_at_the_first_failure():
    _under_qemu(test_etl.test_fifo_stops_at_the_first_failure)


def test_cross_build_database_outage_and_recovery():
    _under_qemu(test_etl.test_database_outage_fails_the_batch_and_the_next_one_recovers)


def test_cross_build_runs_under_qemu_not_natively():
    # Guards the wrapper above: the process the harness starts is qemu running
    # the cross binary (a native run of an aarch64 file would fail to exec).
    seen = {}

    def probe():
        with test_etl.Etl() as etl:
            seen["argv"] = etl.boot.proc.args
            assert etl.answer(b'{"Records": []}') == set()

    _under_qemu(probe)
    assert os.path.basename(seen["argv"][0]) == paths.QEMU and seen["argv"][1] == str(paths.CROSS)
