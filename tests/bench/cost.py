#!/usr/bin/env python3
"""What a million messages cost in AWS, from the durations `make bench` measures (its
"cost inputs" line) and AWS's public prices (PRICES, with where and when they were read).
docs/cost.md shows this script's output and explains each term.

    tests/bench/cost.py                          the inputs of build/bench/last.json
    tests/bench/cost.py --json FILE              ... of another saved run (cost.json, last.json)
    tests/bench/cost.py --ms 128=41.2,256=22.0,512=12.3 --log-bytes 1100
                                                 given inputs: milliseconds per invocation of
                                                 a full batch at each memory size
    --batch 1000                                 messages per invocation (the template's default)

The formula, per million messages, with B messages a batch and d(M) the measured
milliseconds of one invocation at M MB:
    invocations = 1e6 / B
    Lambda      = invocations * (d(M) / 1000 s) * (M / 1024 GB) * price per GB-s(arch)
                + invocations * price per request
    SQS         = (1e6 / 10 sends + 1e6 / 10 receives + 1e6 / 10 deletes) * price per request
                  (every API call moves up to 10 messages, each call of up to 64 KB one request)
    logs        = invocations * log bytes per invocation * price per GB ingested
and, each month whatever the volume: two secrets, the Secrets Manager VPC endpoint in two
Availability Zones (or a NAT gateway), the function's 7 custom metrics, the 9 alarms.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# US East (N. Virginia) list prices, read on 2026-12-05 from the stored copies of AWS's
# pricing pages (aws.amazon.com/lambda/pricing, /sqs/pricing, /secrets-manager/pricing,
# /privatelink/pricing, /vpc/pricing, /cloudwatch/pricing) and of pages quoting them dated
# 2025 and 2026 (the same figures); the first tier of each where there are tiers.
PRICES = {
    "lambda_gb_s": {"x86_64": 0.0000166667, "arm64": 0.0000133334},  # per GB-second
    "lambda_request": 0.20 / 1e6,           # per invocation
    "sqs_request": 0.40 / 1e6,              # standard queue, per request (64 KB chunk)
    "secret_month": 0.40,                   # per secret per month
    "secrets_api": 0.05 / 10000,            # per GetSecretValue
    "endpoint_az_hour": 0.01,               # interface VPC endpoint, per AZ per hour
    "endpoint_gb": 0.01,                    # per GB through it
    "nat_hour": 0.045,                      # NAT gateway, per hour
    "nat_gb": 0.045,                        # per GB through it
    "public_ipv4_hour": 0.005,              # the NAT gateway's public IPv4 address
    "logs_gb": 0.50,                        # CloudWatch Logs ingestion (Lambda logs, first tier)
    "metric_month": 0.30,                   # custom metric per month (first 10,000)
    "alarm_month": 0.10,                    # standard-resolution alarm per metric per month
}
PRICES_READ = "2026-12-05"
HOURS = 730                # a month, as AWS's price pages count it
AZS = 2                    # the template asks for subnets in two Availability Zones or more
SECRETS = 2                # the database secret and the masking key
METRICS = 11               # RecordsReceived ... ColdStart and RecordsQuarantined on every
                           # invocation; RecordsDrifted, FieldsUnknown, FieldMissing with drift
ALARMS = 10                # template.yaml's alarms
MILLION = 1_000_000
MEMORIES = (128, 256, 512)
ARCHS = ("arm64", "x86_64")


def gb_seconds(ms, mem, batch):
    """Lambda's GB-seconds per million messages at mem MB, ms milliseconds a batch."""
    return MILLION / batch * ms / 1000 * mem / 1024


def per_million(ms, batch, log_bytes):
    """{(memory, arch): {term: dollars per million messages}} for full batches."""
    invocations = MILLION / batch
    sqs = 3 * MILLION / 10 * PRICES["sqs_request"]
    logs = invocations * log_bytes / 1e9 * PRICES["logs_gb"]
    out = {}
    for mem in MEMORIES:
        for arch in ARCHS:
            gb_s = gb_seconds(ms[mem], mem, batch)
            out[(mem, arch)] = {
                "lambda_duration": gb_s * PRICES["lambda_gb_s"][arch],
                "lambda_requests": invocations * PRICES["lambda_request"],
                "sqs": sqs, "logs": logs}
    return out


def monthly_fixed():
    """Dollars a month whatever the volume, with an endpoint or with NAT gateways."""
    base = SECRETS * PRICES["secret_month"] + METRICS * PRICES["metric_month"] + \
        ALARMS * PRICES["alarm_month"]
    endpoint = AZS * HOURS * PRICES["endpoint_az_hour"]
    nat_one = HOURS * (PRICES["nat_hour"] + PRICES["public_ipv4_hour"])
    return {"base": base, "endpoint": endpoint, "nat_one": nat_one, "nat_per_az": AZS * nat_one}


def money(x, places=2):
    return f"${x:,.{places}f}"


def table(ms, batch, log_bytes):
    """The markdown tables docs/cost.md shows."""
    rows = per_million(ms, batch, log_bytes)
    fixed = monthly_fixed()
    lines = [f"Per million messages, {batch:,}-message batches (variable cost):", "",
             "| memory | arch | ms per batch | GB-s | Lambda duration | Lambda requests | "
             "SQS requests | logs | total |", "|---|---|---|---|---|---|---|---|---|"]
    for (mem, arch), t in rows.items():
        lines.append(f"| {mem} MB | {arch} | {ms[mem]:.1f} | "
                     f"{gb_seconds(ms[mem], mem, batch):,.1f} | "
                     + " | ".join(money(t[k], 6) for k in ("lambda_duration", "lambda_requests",
                                                           "sqs", "logs"))
                     + f" | {money(sum(t.values()), 6)} |")
    lines += ["", "Each month, whatever the volume:", "",
              "| | dollars a month |", "|---|---|",
              f"| {SECRETS} secrets, {METRICS} custom metrics, {ALARMS} alarms | {money(fixed['base'])} |",
              f"| Secrets Manager interface endpoint, {AZS} AZs | {money(fixed['endpoint'])} |",
              f"| or: one NAT gateway (with its public IPv4) | {money(fixed['nat_one'])} |",
              f"| or: a NAT gateway per AZ ({AZS}) | {money(fixed['nat_per_az'])} |"]
    # The template's defaults: 512 MB, x86_64.
    variable = sum(rows[(512, "x86_64")].values())
    lines += ["", "All together, with the template's defaults (512 MB, x86_64) and the endpoint:", "",
              "| messages a month | variable | fixed | total | per million |",
              "|---|---|---|---|---|"]
    for n in (1, 10, 100, 1000):
        v = variable * n
        f = fixed["base"] + fixed["endpoint"]
        lines.append(f"| {n:,} million | {money(v)} | {money(f)} | {money(v + f)} | "
                     f"{money((v + f) / n, 3)} |")
    return "\n".join(lines)


def inputs_from(path):
    with open(path) as f:
        figures = json.load(f)
    c = figures.get("cost")
    if not c:
        sys.exit(f"cost.py: {path} has no cost inputs: run `tests/bench/bench.py --cost` "
                 "(or `make bench`)")
    ms = {int(k): v["invocation_ms"] for k, v in c["runs"].items() if k.isdigit()}
    return ms, c["batch"], c["log_bytes_per_invocation"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=str(ROOT / "build" / "bench" / "last.json"))
    ap.add_argument("--ms", help="128=...,256=...,512=...: ms per invocation of a full batch")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--log-bytes", type=int, default=1100,
                    help="bytes the function logs per invocation")
    args = ap.parse_args()
    if args.ms:
        ms = {int(k): float(v) for k, v in (p.split("=") for p in args.ms.split(","))}
        batch, log_bytes = args.batch, args.log_bytes
    else:
        ms, batch, log_bytes = inputs_from(args.json)
    missing = [m for m in MEMORIES if m not in ms]
    if missing:
        sys.exit(f"cost.py: no duration for {missing} MB")
    print(table(ms, batch, log_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
