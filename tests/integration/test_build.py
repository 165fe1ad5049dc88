"""The deployable artifact: one static executable, zipped with bootstrap at
the root, and the target AWS SAM's makefile build method calls."""
import os
import subprocess
import tempfile
import zipfile

from rig import paths


def _make(*targets, **env):
    r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), *targets],
                       capture_output=True, text=True, env=dict(os.environ, **env))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def test_bootstrap_is_fully_static():
    _make("build/bootstrap")
    out = subprocess.run(["file", "-L", str(paths.RELEASE)], capture_output=True, text=True).stdout
    assert "statically linked" in out or "static-pie" in out, out
    ldd = subprocess.run(["ldd", str(paths.RELEASE)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr, ldd.stdout + ldd.stderr
    # OpenSSL, libpq and cJSON are inside (the unstripped copy has the symbols).
    symbols = subprocess.run(["nm", str(paths.BUILD / "release" / "bootstrap")],
                             capture_output=True, text=True).stdout
    for sym in ("PQconnectStartParams", "EVP_CIPHER_fetch", "cJSON_ParseWithLength"):
        assert f" {sym}\n" in symbols, f"{sym} is not linked in"


def test_package_has_bootstrap_at_the_root():
    _make("package")
    with zipfile.ZipFile(paths.BUILD / "function.zip") as z:
        names = z.namelist()
        assert "bootstrap" in names, names
        info = z.getinfo("bootstrap")
        assert (info.external_attr >> 16) & 0o111, "bootstrap is not executable in the zip"


def test_sam_makefile_build_target_ships_bootstrap_and_the_ca_bundle():
    # A stand-in CA (this machine cannot reach Amazon's trust store): the
    # target must copy whatever RDS_CA_BUNDLE names next to bootstrap.
    with tempfile.TemporaryDirectory() as d:
        art, pem = os.path.join(d, "artifacts"), os.path.join(d, "ca.pem")
        os.mkdir(art)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=stand-in RDS CA", "-keyout", os.path.join(d, "k.pem"),
                        "-out", pem], check=True, capture_output=True)
        _make("build-LoginEtlFunction", ARTIFACTS_DIR=art, RDS_CA_BUNDLE=pem)
        assert os.access(os.path.join(art, "bootstrap"), os.X_OK)
        # RDS's bundle first, then the roots RDS Proxy needs (test_rds_iam.py checks those).
        with open(os.path.join(art, "rds-global-bundle.pem")) as f, open(pem) as g:
            assert f.read().startswith(g.read())
