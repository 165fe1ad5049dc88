"""docs/cost.md against what produces it: its tables are tests/bench/cost.py's output for the
inputs the page states (the command on the page, run as written), its price table holds the
prices the script uses, every figure of its tables follows by hand from the numbers the page
states, and `tests/bench/bench.py --cost` prints the "cost inputs" line the page quotes, in
that form, from a real run of the release bootstrap. No timing is asserted."""
import json
import os
import re
import subprocess
import sys
import tempfile

from rig import docblocks, paths

sys.path.insert(0, str(paths.ROOT / "tests" / "bench"))
import cost  # noqa: E402  (tests/bench/cost.py)

DOC = paths.ROOT / "docs" / "cost.md"
LINE = re.compile(r"^cost inputs: batch (\d+) full=([\d.]+) 128=([\d.]+) 256=([\d.]+) "
                  r"512=([\d.]+) ms per invocation; .* log bytes per invocation (\d+)$", re.M)


def test_the_pages_tables_are_the_scripts_output_for_the_stated_inputs():
    text = DOC.read_text()
    (cmd,) = [b for b in docblocks.blocks("docs/cost.md", "sh")
              if "tests/bench/cost.py" in b.text]
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd.text], cwd=paths.ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    shown = text.split("<!-- cost.py output -->\n", 1)[1].split("\n<!-- end of cost.py output -->")[0]
    assert shown == r.stdout.rstrip("\n"), "docs/cost.md's tables are not cost.py's output"
    # The command's inputs are the measured line the page quotes.
    m = LINE.search(text)
    assert m, "the page quotes no cost inputs line"
    batch, _, m128, m256, m512, log_bytes = m.groups()
    assert f"--ms 128={m128},256={m256},512={m512} --log-bytes {log_bytes}" in cmd.text
    assert int(batch) == 1000
    # A changed price in the script shows in the page (and the other way round).
    for value in (0.0000166667, 0.0000133334):
        assert f"${value:.10f}" in text
    assert cost.PRICES["lambda_gb_s"] == {"x86_64": 0.0000166667, "arm64": 0.0000133334}
    for key, words in (("lambda_request", "$0.20 per million"), ("sqs_request", "$0.40 per million"),
                       ("secret_month", "$0.40 per secret per month"),
                       ("secrets_api", "$0.05 per 10,000 API calls"),
                       ("endpoint_az_hour", "$0.01 per hour per Availability Zone"),
                       ("nat_hour", "$0.045 per hour"), ("public_ipv4_hour", "$0.005 per hour"),
                       ("logs_gb", "$0.50 per GB"), ("metric_month", "$0.30 per metric"),
                       ("alarm_month", "$0.10 per alarm")):
        assert words in text, words
        number = float(re.search(r"\$([\d.]+)", words).group(1))
        per = 1e6 if "million" in words else 10000 if "10,000" in words else 1
        assert abs(cost.PRICES[key] * per - number) < 1e-12, (key, cost.PRICES[key])
    assert cost.PRICES_READ in text
    # The counts the fixed costs assume are the template's.
    from integration import test_template
    alarms = [k for k, v in test_template.RES.items() if v["Type"] == "AWS::CloudWatch::Alarm"]
    assert cost.ALARMS == len(alarms)
    etl = "".join(f.read_text() for f in sorted((paths.ROOT / "function").glob("*.c")))
    assert cost.METRICS == len(re.findall(r'\{\\"Name\\":\\"(\w+)\\",\\"Unit\\"', etl))


def test_the_bench_prints_the_cost_inputs_it_measures():
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    r = subprocess.run([sys.executable, str(paths.ROOT / "tests" / "bench" / "bench.py"), "--cost",
                        "--cost-batches", "3", "--json", out], cwd=paths.ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = LINE.search(r.stdout)
    assert m, r.stdout[-3000:]
    assert re.search(r"; server CPU-s per 100,000 messages \d+\.\d\d;", m.group(0)), m.group(0)
    figures = [float(x) for x in m.groups()[1:5]]
    assert all(0 < x < 5000 for x in figures), figures
    # The JSON it wrote gives cost.py the same figures.
    with open(out) as f:
        c = json.load(f)["cost"]
    ms, batch, log_bytes = cost.inputs_from(out)
    os.unlink(out)
    assert batch == 1000 and log_bytes == int(m.group(6)) and set(ms) == {128, 256, 512}
    assert abs(ms[512] - float(m.group(5))) < 0.06, (ms, m.group(0))
    assert "Per million messages" in r.stdout and c["runs"]["full"]["cpu_ms"] > 0
    assert c["runs"]["full"]["server_cpu_s_per_100k"] > 0


test_the_bench_prints_the_cost_inputs_it_measures.time_limit = 600


def _money(cell):
    return float(cell.strip().lstrip("$").replace(",", ""))


def test_the_pages_arithmetic_from_its_own_numbers():
    """Each figure of the page's tables again, by hand, from the numbers the page itself
    states (the measured line and the price table), not through cost.py: a reader who
    checks the page with a calculator gets the same."""
    text = DOC.read_text()
    batch, _, m128, m256, m512, log_bytes = LINE.search(text).groups()
    batch, log_bytes = int(batch), int(log_bytes)
    ms = {128: float(m128), 256: float(m256), 512: float(m512)}
    gb_s_price = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
    invocations = 1e6 / batch
    rows = re.findall(r"^\| (\d+) MB \| (\w+) \| ([\d.]+) \| ([\d.,]+) \| (.+) \|$", text, re.M)
    assert len(rows) == 6, rows
    for mem, arch, shown_ms, gb_s, money in rows:
        mem = int(mem)
        assert float(shown_ms) == ms[mem]
        want_gb_s = invocations * ms[mem] / 1000 * mem / 1024
        assert abs(float(gb_s.replace(",", "")) - want_gb_s) <= 0.05, (mem, gb_s, want_gb_s)
        duration, requests, sqs, logs, total = (_money(c) for c in money.split(" | "))
        want = (want_gb_s * gb_s_price[arch], invocations * 0.20 / 1e6,
                3 * 1e6 / 10 * 0.40 / 1e6, invocations * log_bytes / 1e9 * 0.50)
        for got, w in zip((duration, requests, sqs, logs), want):
            assert abs(got - w) <= 5e-7, (mem, arch, got, w)
        assert abs(total - sum(want)) <= 1e-6, (mem, arch, total, sum(want))
    # The monthly costs: the secrets, metrics and alarms the page counts; the endpoint in
    # 2 AZs; NAT.
    fixed = dict(re.findall(r"^\| ([^|]+?) \| (\$[\d.,]+) \|$", text, re.M))
    (label,) = [k for k in fixed if re.fullmatch(r"\d+ secrets, \d+ custom metrics, \d+ alarms", k)]
    secrets, metrics, alarms = (int(n) for n in re.findall(r"\d+", label))
    assert _money(fixed[label]) == round(secrets * 0.40 + metrics * 0.30 + alarms * 0.10, 2)
    assert _money(fixed["Secrets Manager interface endpoint, 2 AZs"]) == round(2 * 730 * 0.01, 2)
    assert _money(fixed["or: one NAT gateway (with its public IPv4)"]) == round(730 * (0.045 + 0.005), 2)
    # The database's share, from the same line: per 100,000 and per million messages.
    server = float(re.search(r"server CPU-s per 100,000 messages ([\d.]+);", text).group(1))
    assert f"**{server:.2f} CPU-seconds per 100,000 messages**" in text
    assert f"{server * 10:.1f} CPU-seconds per million" in text
    assert f"{server * 10 / 3600:.4f} vCPU-hours per million" in text
    # The page's headline per-million figure is the default configuration's total.
    default = [r for r in rows if r[0] == "512" and r[1] == "x86_64"][0]
    headline = re.search(r"about \$([\d.]+) per million messages", text)
    assert headline, "the page's summary gives no per-million figure"
    assert abs(float(headline.group(1)) - _money(default[4].split(" | ")[-1])) < 0.005
