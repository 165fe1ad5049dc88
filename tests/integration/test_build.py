"""The deployable artifact: one static executable, zipped with bootstrap at
the root, and the target AWS SAM's makefile build method calls."""
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

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


def _version():
    return subprocess.run([str(paths.ROOT / "tools" / "version.sh")], capture_output=True,
                          text=True, check=True).stdout.strip()


def _zip_version(z):
    """What the zip's bootstrap says it is (--version's first line)."""
    with tempfile.TemporaryDirectory() as d:
        z.extract("bootstrap", d)
        exe = os.path.join(d, "bootstrap")
        os.chmod(exe, 0o755)
        return subprocess.run([exe, "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]


def test_package_needs_rds_cas_or_says_how_to_get_them():
    version = _version()
    zip_path = paths.BUILD / f"login-etl-{version}-{paths.HOST_ARCH}.zip"
    zip_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as d:
        # No RDS CA bundle: the package fails, and says how to get one and how to
        # make a zip for local work instead.
        r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), "package",
                            f"RDS_CA_BUNDLE={d}/missing.pem"], capture_output=True, text=True,
                           timeout=900)
        assert r.returncode != 0, r.stdout
        for hint in (f"RDS_CA_BUNDLE={d}/missing.pem: no such file", "global-bundle.pem",
                     "CA=none"):
            assert hint in r.stderr, r.stderr
        assert not zip_path.exists()
        # With one: the zip is named by the release and architecture, carries
        # bootstrap (executable) and RDS's bundle first in rds-global-bundle.pem,
        # and build/function.zip is the same bytes.
        pem = _stand_in_ca(d)
        r = _make("package", f"RDS_CA_BUNDLE={pem}")
        assert f"{zip_path.relative_to(paths.ROOT)}: login-etl {version}, {paths.HOST_ARCH}," \
            in r.stdout, r.stdout
        with zipfile.ZipFile(zip_path) as z:
            assert sorted(z.namelist()) == ["bootstrap", "rds-global-bundle.pem"]
            info = z.getinfo("bootstrap")
            assert (info.external_attr >> 16) & 0o111, "bootstrap is not executable in the zip"
            with open(pem) as g:
                assert z.read("rds-global-bundle.pem").decode().startswith(g.read())
            assert _zip_version(z) == f"login-etl {version} ({paths.HOST_ARCH})"
        assert (paths.BUILD / "function.zip").read_bytes() == zip_path.read_bytes()


def test_package_for_local_work_without_rds_cas():
    # CA=none: what LocalStack and the tests use; named so that it is not taken for a
    # release, and still with the RDS Proxy roots (test_rds_iam.py checks them).
    version = _version()
    r = _make("package", "CA=none")
    local = paths.BUILD / f"login-etl-{version}-{paths.HOST_ARCH}-local.zip"
    assert "local work only" in r.stdout, r.stdout
    with zipfile.ZipFile(local) as z:
        assert sorted(z.namelist()) == ["bootstrap", "rds-global-bundle.pem"]
        text = z.read("rds-global-bundle.pem").decode()
        assert text.startswith("# Amazon Root CA 1"), text[:200]
    assert (paths.BUILD / "function.zip").read_bytes() == local.read_bytes()
    r = subprocess.run(["make", "-C", str(paths.ROOT), "package", "CA=maybe"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "CA=maybe" in r.stderr, r.stderr


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
    r = _make(f"ARCH={arch}", "package", "CA=none")
    assert _machine(out / "bootstrap") == arch
    assert f"build/{arch}/login-etl-{_version()}-{arch}-local.zip: login-etl {_version()}, " \
        f"{arch}," in r.stdout, r.stdout
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


def _deps_pin(name):
    m = re.search(rf"^{name}=(\d+\.\d+(?:\.\d+)?)", (paths.ROOT / "tools" / "deps.sh").read_text(),
                  re.M)
    return m.group(1)


def test_version_names_the_release_and_the_libraries_linked_in():
    version = _version()
    git = subprocess.run(["git", "-C", str(paths.ROOT), "describe", "--tags", "--dirty", "--always",
                          "--match", "v[0-9]*"], capture_output=True, text=True)
    if git.returncode == 0:
        assert version == git.stdout.strip()
    _make(f"ARCH={paths.OTHER_ARCH}", "all")
    _make("build/bootstrap", "build/asan/bootstrap")
    header = (Path("/usr/include/openssl/opensslv.h")).read_text()
    native_ssl = re.search(r'OPENSSL_VERSION_TEXT "([^"]+)"', header).group(1)
    cjson = ".".join(re.search(rf"#define CJSON_VERSION_{p} (\d+)",
                               (paths.BUILD / "deps" / "include" / "cJSON.h").read_text()).group(1)
                     for p in ("MAJOR", "MINOR", "PATCH"))
    cases = [([str(paths.RELEASE)], paths.HOST_ARCH, native_ssl),
             ([str(paths.ASAN)], paths.HOST_ARCH, native_ssl),
             # The other architecture's OpenSSL is Debian's security release of that
             # architecture, a different version from this machine's: what --version
             # prints is the library linked in, not this machine's.
             ([paths.QEMU, str(paths.CROSS)], paths.OTHER_ARCH,
              (paths.BUILD / paths.OTHER_ARCH / "deps" / "openssl-version").read_text()
              .split("-")[0])]
    for argv, arch, ssl in cases:
        r = subprocess.run(argv + ["--version"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r
        lines = r.stdout.splitlines()
        assert len(lines) == 4, lines
        assert lines[0] == f"login-etl {version} ({arch})", lines
        assert lines[1].startswith("OpenSSL ") and ssl in lines[1], (lines, ssl)
        assert lines[2] == f"libpq {_deps_pin('PG_VERSION')}", lines
        assert lines[3] == f"cJSON {cjson}", lines
    # Only the exact argument: anything else is still the mask tool's usage error.
    r = subprocess.run([str(paths.RELEASE), "--version", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr, r


def test_a_source_tarball_takes_its_release_from_its_version_file():
    # `make dist` writes the tarball from HEAD with a VERSION file; unpacked anywhere,
    # also inside this checkout (under build/, as the release test unpacks earlier
    # releases), the tree is not this checkout and its VERSION names the release.
    with tempfile.TemporaryDirectory(dir=paths.BUILD) as d:
        # A repository holding this work tree's files as they are, tagged v9.8.7.
        clone = os.path.join(d, "clone")
        listed = subprocess.run(["git", "-C", str(paths.ROOT), "ls-files", "-z", "--cached",
                                 "--others", "--exclude-standard"], capture_output=True,
                                check=True).stdout.decode().split("\0")
        for rel in filter(None, listed):
            src = paths.ROOT / rel
            if src.is_file():
                os.makedirs(os.path.dirname(os.path.join(clone, rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(clone, rel))
        who = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
        for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release"],
                     ["tag", "-a", "v9.8.7", "-m", "test release"]):
            subprocess.run(["git", "-C", clone] + argv, check=True, env=who,
                           capture_output=True)
        r = subprocess.run(["make", "--no-print-directory", "-C", clone, "dist"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        tarball = os.path.join(clone, "build", "login-etl-v9.8.7.tar.gz")
        assert "login-etl v9.8.7" in r.stdout, r.stdout
        unpacked = os.path.join(d, "unpacked")
        os.mkdir(unpacked)
        subprocess.run(["tar", "xzf", tarball, "-C", unpacked], check=True)
        tree = os.path.join(unpacked, "login-etl-v9.8.7")
        with open(os.path.join(tree, "VERSION")) as f:
            assert f.read() == "v9.8.7\n"
        r = subprocess.run([os.path.join(tree, "tools", "version.sh")], capture_output=True,
                           text=True, check=True)
        assert r.stdout == "v9.8.7\n", r.stdout
        # The version goes into the build: compile version.o there (deps reused).
        r = subprocess.run(["make", "--no-print-directory", "-C", tree,
                            f"LOGIN_ETL_DEPS_ROOT={paths.BUILD}", "build/asan/function/version.o"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        obj = Path(tree, "build", "asan", "function", "version.o").read_bytes()
        assert b"v9.8.7\0" in obj
        # A dirty checkout refuses: the tarball would not hold what its name says.
        with open(os.path.join(clone, "README.md"), "a") as f:
            f.write("\nchanged\n")
        r = subprocess.run(["make", "--no-print-directory", "-C", clone, "dist"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "uncommitted changes" in r.stderr, r.stdout + r.stderr
