"""docker-compose.yml and its LocalStack init hook, tools/localstack/init-login-etl.sh.

No Docker engine runs on the machines these tests run on, so LocalStack itself is not
started. The init hook talks to AWS only through `aws --endpoint-url $AWS_ENDPOINT_URL`,
so it is run for real against moto_server (moto's SQS, IAM and Lambda APIs) on a loopback
port, and what it created is read back with boto3: both queues, the redrive policy, the
visibility timeout, the sample messages; then the function (from a stand-in zip holding an
ELF header: moto stores the code but never runs it) and the event source mapping with
ReportBatchItemFailures. docker-compose.yml is checked as YAML against what the hook and
docs/deploy.md rely on, and with `docker compose config` where the Compose plugin exists.

Standalone: python3 tests/integration/test_localstack_init.py
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "localstack" / "init-login-etl.sh"
COMPOSE = ROOT / "docker-compose.yml"
BATCH = ROOT / "events" / "batch.json"
KEY = "0f" * 64


@contextlib.contextmanager
def moto_server():
    """A moto_server on a free loopback port; yields its endpoint URL."""
    exe = shutil.which("moto_server")
    assert exe, ("moto_server is not on PATH: it comes with the Python this machine kind has "
                 "(moto with its server extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise AssertionError(f"moto_server did not start:\n{log.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def script_env(endpoint, tmp, **extra):
    """A clean environment: dummy credentials, no user AWS config, the given endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGIN_ETL_"))}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(Path(tmp) / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(Path(tmp) / "none"))
    env.update(extra)
    return env


def run_script(env, *steps, ok=True):
    r = subprocess.run(["bash", str(SCRIPT), *steps], env=env, capture_output=True, text=True,
                       timeout=240)
    if ok:
        assert r.returncode == 0, f"init script {steps} exited {r.returncode}:\n{r.stderr}"
    return r


def client(service, endpoint):
    import boto3
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def fake_zip(path, machine=0x3E):
    """A function.zip whose bootstrap is just an ELF header (x86-64 by default)."""
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + \
        machine.to_bytes(2, "little") + bytes(44)
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, header)


def receive_all(sqs, url):
    got = []
    for _ in range(20):
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                AttributeNames=["All"])
        if not r.get("Messages"):
            break
        got += r["Messages"]
    return got


def test_script_is_clean_bash():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(SCRIPT, os.X_OK), "LocalStack runs only executable init scripts"
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_queues_and_messages_against_moto():
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        env = script_env(endpoint, tmp)
        r = run_script(env, "queues", "messages")
        assert "sent 11 messages" in r.stderr, r.stderr
        sqs = client("sqs", endpoint)
        urls = sorted(sqs.list_queues()["QueueUrls"])
        assert [u.rsplit("/", 1)[1] for u in urls] == ["login-queue", "login-queue-dlq"]
        url = sqs.get_queue_url(QueueName="login-queue")["QueueUrl"]
        dlq_url = sqs.get_queue_url(QueueName="login-queue-dlq")["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        dlq_attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_attrs["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == 5
        assert int(attrs["VisibilityTimeout"]) == 6 * 60 + 1
        assert int(dlq_attrs["MessageRetentionPeriod"]) > int(attrs["MessageRetentionPeriod"])
        assert "RedrivePolicy" not in dlq_attrs
        # The messages are the bodies of events/batch.json, unchanged.
        want = sorted(r["body"] for r in json.loads(BATCH.read_text())["Records"])
        got = receive_all(sqs, url)
        assert sorted(m["Body"] for m in got) == want
        import hashlib
        assert all(m["MD5OfBody"] == hashlib.md5(m["Body"].encode()).hexdigest() for m in got)
        assert receive_all(sqs, dlq_url) == []


def test_function_and_mapping_against_moto():
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        zip_path = Path(tmp) / "function.zip"
        fake_zip(zip_path)
        env = script_env(endpoint, tmp, LOGIN_ETL_ZIP=str(zip_path), LOGIN_ETL_MASKING_KEY=KEY,
                         LOGIN_ETL_DATABASE_URL="postgresql://u:p@postgres:5432/logins")
        run_script(env)  # all four steps
        lam = client("lambda", endpoint)
        cfg = lam.get_function(FunctionName="login-etl")["Configuration"]
        assert cfg["Runtime"] == "provided.al2023"
        assert cfg["Handler"] == "bootstrap"
        assert cfg["Architectures"] == ["x86_64"]
        assert cfg["Timeout"] == 60
        variables = cfg["Environment"]["Variables"]
        assert variables["DATABASE_URL"] == "postgresql://u:p@postgres:5432/logins"
        assert variables["MASKING_KEY"] == KEY and variables["MASKING_KEY_ID"] == "k1"
        queue_arn = client("sqs", endpoint).get_queue_attributes(
            QueueUrl=client("sqs", endpoint).get_queue_url(QueueName="login-queue")["QueueUrl"],
            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        (esm,) = lam.list_event_source_mappings(FunctionName="login-etl")["EventSourceMappings"]
        assert esm["EventSourceArn"] == queue_arn
        assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert esm["BatchSize"] == 100 and esm["MaximumBatchingWindowInSeconds"] == 1
        # Running it again (say, after `make package`) updates the code and keeps one mapping.
        r = run_script(env, "queues", "function", "mapping")
        assert "updated function login-etl" in r.stderr and "exists" in r.stderr, r.stderr
        assert len(lam.list_event_source_mappings(FunctionName="login-etl")
                   ["EventSourceMappings"]) == 1


def test_arm64_zip_makes_an_arm64_function():
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        zip_path = Path(tmp) / "function.zip"
        fake_zip(zip_path, machine=0xB7)
        env = script_env(endpoint, tmp, LOGIN_ETL_ZIP=str(zip_path), LOGIN_ETL_MASKING_KEY=KEY)
        run_script(env, "function")
        cfg = client("lambda", endpoint).get_function(FunctionName="login-etl")["Configuration"]
        assert cfg["Architectures"] == ["arm64"]
        # Without a key the function still gets a well-formed one, and the log says so.
        env.pop("LOGIN_ETL_MASKING_KEY")
        r = run_script(env, "function")
        assert "random key" in r.stderr
        key = client("lambda", endpoint).get_function(
            FunctionName="login-etl")["Configuration"]["Environment"]["Variables"]["MASKING_KEY"]
        assert len(key) == 128 and key != KEY and key not in r.stderr + r.stdout


def test_script_refuses_what_it_cannot_do():
    with tempfile.TemporaryDirectory() as tmp:
        # Nothing listens here: these must fail before calling any API.
        env = script_env("http://127.0.0.1:9", tmp, LOGIN_ETL_ZIP=str(Path(tmp) / "missing.zip"))
        r = run_script(env, "function", ok=False)
        assert r.returncode != 0 and "make package" in r.stderr, r.stderr
        zip_path = Path(tmp) / "function.zip"
        fake_zip(zip_path)
        r = run_script(dict(env, LOGIN_ETL_ZIP=str(zip_path), LOGIN_ETL_MASKING_KEY="abc"),
                       "function", ok=False)
        assert r.returncode != 0 and "128 hex" in r.stderr, r.stderr
        r = run_script(env, "bogus", ok=False)
        assert r.returncode != 0 and "unknown step" in r.stderr
        r = run_script(dict(env, LOGIN_ETL_BATCH_SIZE="ten"), "mapping", ok=False)
        assert r.returncode != 0 and "whole number" in r.stderr


def test_compose_file():
    c = yaml.safe_load(COMPOSE.read_text())
    # The top-level name: needs Compose v2; the file says so for docker-compose 1.x users.
    assert "name" in c and "Compose v2" in COMPOSE.read_text() and "1.29" in COMPOSE.read_text()
    assert set(c["services"]) == {"postgres", "localstack"}
    pg, ls = c["services"]["postgres"], c["services"]["localstack"]
    assert pg["image"].split(":")[1].startswith("15")
    assert "./tools/db/init.sql:/docker-entrypoint-initdb.d/10-user_logins.sql:ro" in pg["volumes"]
    init_sql = (ROOT / "tools" / "db" / "init.sql").read_text()
    spec = (ROOT / "docs" / "behaviour.md").read_text()
    ddl = init_sql[init_sql.index("CREATE TABLE"):].strip()
    assert ddl in spec, 'tools/db/init.sql is not the DDL of docs/behaviour.md, "Output table"'
    for col in ("user_id             varchar(128)", "masked_ip           varchar(256)",
                "app_version         integer", "create_date         date"):
        assert col in ddl
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert ls["image"].startswith("${LOCALSTACK_IMAGE:-localstack/localstack:")
    assert ls["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = ls["environment"]
    assert {"sqs", "lambda", "iam"} <= set(env["SERVICES"].split(","))
    assert env["LAMBDA_DOCKER_NETWORK"] == c["networks"]["default"]["name"]
    volumes = ls["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
    hook = [v for v in volumes if "/etc/localstack/init/ready.d/" in v]
    assert hook == ["./tools/localstack/init-login-etl.sh:"
                    "/etc/localstack/init/ready.d/init-login-etl.sh:ro"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    # The paths the hook is told to use are inside what is mounted, and exist in the repo.
    for var, rel in (("LOGIN_ETL_EVENTS_FILE", "events/batch.json"),
                     ("LOGIN_ETL_ZIP", "build/function.zip")):
        inside = env[var]
        base = next(m for m in mounts if inside.startswith(m + "/"))
        assert mounts[base].lstrip("./") + inside[len(base):] == rel, (var, inside)
    assert (ROOT / "events" / "batch.json").is_file()
    for host in ("./tools/localstack/init-login-etl.sh", "./events", "./tools/db/init.sql"):
        assert (ROOT / host).exists(), host
    # The function's database URL names the postgres service, its user and database.
    url = env["LOGIN_ETL_DATABASE_URL"]
    pe = pg["environment"]
    assert url.startswith(f"postgresql://{pe['POSTGRES_USER']}:")
    assert f"@postgres:5432/{pe['POSTGRES_DB']}" in url
    assert pe["POSTGRES_PASSWORD"] == "${LOGIN_ETL_DB_PASSWORD:-localdev}"
    assert "${LOGIN_ETL_DB_PASSWORD:-localdev}@" in url
    # Published ports only on loopback.
    for svc in (pg, ls):
        assert all(p.startswith("127.0.0.1:") for p in svc["ports"])


def test_compose_config_where_compose_exists():
    # `docker compose config` parses and validates without an engine. Where the Compose
    # plugin is missing (as on the machines these tests were written on), the YAML checks
    # above are what there is.
    if not shutil.which("docker"):
        return
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return
    r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
