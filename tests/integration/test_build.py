"""The deployable artifact: one static executable, zipped with bootstrap at
the root, and the target AWS SAM's makefile build method calls."""
import os
import subprocess
import tempfile
import zipfile

from rig import paths


def _make(*targets, **env):
    r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), *targets],
                       capture_output=True, text=True, env=dict(os.environ, **env), timeout=900)
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


def _stand_in_ca(d):
    # A stand-in CA (this machine cannot reach Amazon's trust store): the SAM
    # target must copy whatever RDS_CA_BUNDLE names next to bootstrap.
    pem = os.path.join(d, "ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=stand-in RDS CA", "-keyout", os.path.join(d, "k.pem"),
                    "-out", pem], check=True, capture_output=True)
    return pem


def _machine(path):
    out = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout
    assert "statically linked" in out or "static-pie" in out, out
    return "arm64" if "aarch64" in out else "x86_64" if "x86-64" in out else out


def test_sam_makefile_build_target_ships_bootstrap_and_the_ca_bundle():
    with tempfile.TemporaryDirectory() as d:
        art, pem = os.path.join(d, "artifacts"), _stand_in_ca(d)
        os.mkdir(art)
        _make("build-LoginEtlFunction", ARTIFACTS_DIR=art, RDS_CA_BUNDLE=pem)
        assert os.access(os.path.join(art, "bootstrap"), os.X_OK)
        # RDS's bundle first, then the roots RDS Proxy needs (test_rds_iam.py checks those).
        with open(os.path.join(art, "rds-global-bundle.pem")) as f, open(pem) as g:
            assert f.read().startswith(g.read())


def test_sam_makefile_build_target_without_the_ca_bundle_says_how_to_get_it():
    # RDS_CA_BUNDLE naming a file that is not there: a message that names it and says how
    # to get the bundle, not make's bare "No rule to make target".
    with tempfile.TemporaryDirectory() as d:
        art, missing = os.path.join(d, "artifacts"), os.path.join(d, "global-bundle.pem")
        os.mkdir(art)
        r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT),
                            "build-LoginEtlFunction"], capture_output=True, text=True,
                           env=dict(os.environ, ARTIFACTS_DIR=art, RDS_CA_BUNDLE=missing),
                           timeout=900)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out[-2000:]
        assert "No rule to make target" not in out, out[-2000:]
        assert f"RDS_CA_BUNDLE={missing}: no such file" in out, out[-2000:]
        assert "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in out, out
        assert not os.path.exists(os.path.join(art, "rds-global-bundle.pem"))


def test_cross_build_and_package_of_the_other_architecture():
    # make ARCH=arm64 on x86_64 (ARCH=x86_64 on arm64): build/<arch>/bootstrap and
    # build/<arch>/function.zip; plain `make` still writes build/bootstrap.
    arch = paths.OTHER_ARCH
    out = paths.BUILD / arch
    (out / "function.zip").unlink(missing_ok=True)
    r = _make(f"ARCH={arch}", "package")
    assert _machine(out / "bootstrap") == arch
    assert f"build/{arch}/function.zip: {arch}," in r.stdout, r.stdout
    with zipfile.ZipFile(out / "function.zip") as z:
        assert "bootstrap" in z.namelist()
        assert z.read("bootstrap") == (out / "bootstrap").read_bytes()
    r = _make("-n", "all")
    assert f"build/{arch}" not in r.stdout, "plain make must not touch the cross build"
    assert _machine(paths.RELEASE) == paths.HOST_ARCH


def test_sam_build_target_builds_the_architecture_the_template_deploys():
    # SAM runs `make build-LoginEtlFunction ARTIFACTS_DIR=...` and passes no
    # architecture: the Makefile takes LOGIN_ETL_ARCH, else samconfig.toml's
    # parameter_overrides Architecture=..., else the machine's.
    samconfig = (paths.ROOT / "samconfig.toml").read_text()
    with tempfile.TemporaryDirectory() as d:
        pem = _stand_in_ca(d)
        env = {k: v for k, v in os.environ.items() if k not in ("LOGIN_ETL_ARCH", "ARCH")}
        cases = [("x86_64", {"LOGIN_ETL_ARCH": "x86_64"}), ("arm64", {"LOGIN_ETL_ARCH": "arm64"}),
                 # An ARCH in the environment is some other tool's: ignored.
                 (paths.HOST_ARCH, {"ARCH": paths.OTHER_ARCH})]
        for i, (want, extra) in enumerate(cases):
            art = os.path.join(d, f"artifacts{i}")
            os.mkdir(art)
            r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT),
                                "build-LoginEtlFunction", f"ARTIFACTS_DIR={art}",
                                f"RDS_CA_BUNDLE={pem}"], capture_output=True, text=True,
                               env=dict(env, **extra), timeout=600)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            assert _machine(os.path.join(art, "bootstrap")) == want, (extra, r.stdout)
            assert os.path.isfile(os.path.join(art, "rds-global-bundle.pem"))
        # samconfig.toml's parameter_overrides, as `sam deploy --guided` writes them
        # (escaped quotes), in a copy of the Makefile's directory layout.
        for want in ("arm64", "x86_64"):
            cfg = os.path.join(d, "samconfig.toml")
            with open(cfg, "w") as f:
                f.write(samconfig + '\n[default.deploy.parameters]\nparameter_overrides = '
                        f'"FunctionName=\\"login-etl\\" Architecture=\\"{want}\\" '
                        'MemorySize=\\"512\\""\n')
            r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), "-s",
                                "print-sam-arch", f"SAMCONFIG={cfg}"], capture_output=True,
                               text=True, env=env, timeout=60)
            assert r.stdout.strip() == want, r.stdout + r.stderr


def test_build_output_is_one_line_per_step_and_explains_the_link_warning():
    obj = "build/release/base/num.o"
    _make(obj)
    (paths.ROOT / obj).unlink()
    r = _make(obj)
    assert r.stdout.splitlines() == [f"  CC       {obj}"], r.stdout
    (paths.ROOT / obj).unlink()
    r = _make(obj, "V=1")
    assert "-Wall" in r.stdout and "base/num.c" in r.stdout and "  CC " not in r.stdout, r.stdout
    # Relinking: one LD line, and the note in place of glibc's static-link warnings.
    (paths.BUILD / "release" / "function" / "main.o").touch()
    r = _make("build/release/bootstrap")
    lines = r.stdout.splitlines()
    assert lines[0] == "  LD       build/release/bootstrap", r.stdout
    assert any("note:" in l and "getaddrinfo" in l for l in lines[1:]), r.stdout
    assert "statically linked applications requires" not in r.stdout + r.stderr
    (paths.BUILD / "release" / "function" / "main.o").touch()
    r = _make("build/release/bootstrap", "V=1")
    assert "statically linked applications requires" in r.stdout, "V=1 shows the linker's words"
