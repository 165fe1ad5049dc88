"""template.yaml, the AWS SAM template.

`cfn-lint` (with the SAM translator, on the PATH's Python) must pass with no error,
warning or informational finding, and must be able to fail: broken copies of the
template are linted too. Then the properties the deployment depends on are checked on the
parsed template, with parameter defaults resolved: the SQS event answers with
ReportBatchItemFailures, the queue's visibility timeout covers 6 x the function timeout
plus the batching window for every allowed combination, the DLQ outlives the source
queue's retention, the role reads exactly the two secrets, no secret sits in the
environment. Finally the SAM translator's own output is checked.

Standalone: python3 tests/integration/test_template.py
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
FN = "LoginEtlFunction"


# --- a YAML loader that understands CloudFormation's short tags -------------------------------
class CfnLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !GetAtt, !If ... as the long forms {"Ref": ...}, {"Fn::Sub": ...}."""


def _construct_tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path=TEMPLATE):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)


T = load_template()
PARAMS = T["Parameters"]
RES = T["Resources"]


def default(name):
    return PARAMS[name]["Default"]


def resolve(value, overrides=None):
    """The value with Refs to parameters and Fn::FindInMap resolved (defaults unless
    overridden); anything else is returned as it is."""
    overrides = overrides or {}
    if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in PARAMS:
        return overrides.get(value["Ref"], PARAMS[value["Ref"]].get("Default"))
    if isinstance(value, dict) and list(value) == ["Fn::FindInMap"]:
        name, top, second = (resolve(v, overrides) for v in value["Fn::FindInMap"])
        return T["Mappings"][name][str(top)][str(second)]
    return value


def ref(name):
    return {"Ref": name}


def getatt(resource, attr):
    return {"Fn::GetAtt": [resource, attr]}


# --- cfn-lint ---------------------------------------------------------------------------------
def cfn_lint(path):
    exe = shutil.which("cfn-lint")
    assert exe, ("cfn-lint is not on PATH: it comes with the Python this machine kind has "
                 "(cfn-lint 1.x with aws-sam-translator); the npm package of that name is a "
                 "different, stale tool and will not do")
    r = subprocess.run([exe, "--include-checks", "I", "--", str(path)], capture_output=True,
                       text=True, timeout=180)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_cfn_lint_passes():
    rc, out = cfn_lint(TEMPLATE)
    assert rc == 0 and out == "", f"cfn-lint template.yaml exited {rc}:\n{out}"


def test_cfn_lint_fails_on_broken_templates():
    text = TEMPLATE.read_text(encoding="utf-8")
    breakages = {
        # (what to change, into what, a finding cfn-lint must report)
        "misspelled SQS event property": (
            "FunctionResponseTypes:", "FunctionResponseType:", r"^E\d{4} .*FunctionResponseType"),
        "missing Handler": ("      Handler: bootstrap\n", "", r"^E\d{4} .*Handler"),
        "misspelled ReportBatchItemFailures": (
            "- ReportBatchItemFailures", "- ReportBatchItemFailure", r"^E\d{4} .*ReportBatchItemFailure"),
        "a deployment preference without the alias it moves": (
            "      AutoPublishAlias: live\n", "", r"^E0001 .*AutoPublishAlias"),
        "MaximumConcurrency below 2": (
            "    Default: 5\n    MinValue: 2\n", "    Default: 1\n    MinValue: 1\n",
            r"^W\d{4} .*MaximumConcurrency.*minimum of 2"),
    }
    with tempfile.TemporaryDirectory() as d:
        for what, (old, new, finding) in breakages.items():
            assert text.count(old) >= 1, f"{what}: the template no longer has {old!r}"
            broken = Path(d) / "template.yaml"
            broken.write_text(text.replace(old, new, 1), encoding="utf-8")
            rc, out = cfn_lint(broken)
            assert rc != 0, f"cfn-lint passed a template with {what}"
            assert re.search(finding, out, re.M), f"{what}: no finding like {finding!r} in:\n{out}"


# --- the function -----------------------------------------------------------------------------
def test_function_is_the_makefile_built_custom_runtime():
    assert T["Transform"] == "AWS::Serverless-2016-10-31"
    fn = RES[FN]
    assert fn["Type"] == "AWS::Serverless::Function"
    assert fn["Metadata"]["BuildMethod"] == "makefile"
    p = fn["Properties"]
    assert p["Runtime"] == "provided.al2023"
    assert p["Handler"] == "bootstrap"
    assert p["CodeUri"] == "."
    assert p["Architectures"] == [ref("Architecture")]
    assert PARAMS["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert default("Architecture") == "x86_64"
    assert p["MemorySize"] == ref("MemorySize") and default("MemorySize") == 512
    assert p["Timeout"] == ref("FunctionTimeout") and default("FunctionTimeout") == 60
    assert "ReservedConcurrentExecutions" not in p, "use the ESM's MaximumConcurrency instead"
    # `sam build` runs `make build-<LogicalId>`: the Makefile must have that target.
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^build-{FN}:", makefile, re.M), f"Makefile has no build-{FN} target"


def test_sqs_event_reports_batch_item_failures():
    events = RES[FN]["Properties"]["Events"]
    assert sorted(events) == ["DeadLetterQueueDrain", "LoginQueueEvent"]
    ev = events["LoginQueueEvent"]
    assert ev["Type"] == "SQS"
    p = ev["Properties"]
    assert p["Queue"] == getatt("LoginQueue", "Arn")
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["BatchSize"] == ref("BatchSize")
    assert p["MaximumBatchingWindowInSeconds"] == ref("MaximumBatchingWindowInSeconds")
    assert p["ScalingConfig"] == {"MaximumConcurrency": ref("MaximumConcurrency")}
    assert "FilterCriteria" not in p, "filtered messages would be deleted, not dead-lettered"
    assert PARAMS["MaximumConcurrency"]["MinValue"] >= 2
    assert PARAMS["MaximumConcurrency"]["MaxValue"] <= 1000
    assert 2 <= default("MaximumConcurrency") <= 1000
    assert 10 < default("BatchSize") <= 10000
    # Lambda requires a batching window > 0 when BatchSize > 10: make 0 impossible.
    assert min(PARAMS["MaximumBatchingWindowInSeconds"]["AllowedValues"]) >= 1
    assert max(PARAMS["MaximumBatchingWindowInSeconds"]["AllowedValues"]) <= 300


def test_visibility_timeout_covers_six_timeouts_plus_the_window():
    queue = RES["LoginQueue"]["Properties"]
    timeouts = PARAMS["FunctionTimeout"]["AllowedValues"]
    windows = PARAMS["MaximumBatchingWindowInSeconds"]["AllowedValues"]
    assert all(1 <= t <= 900 for t in timeouts)
    for t in timeouts:
        for w in windows:
            vt = resolve(queue["VisibilityTimeout"], {"FunctionTimeout": t,
                                                      "MaximumBatchingWindowInSeconds": w})
            assert isinstance(vt, int) and 6 * t + w <= vt <= 43200, (t, w, vt)
    vt = resolve(queue["VisibilityTimeout"])
    assert vt >= 6 * default("FunctionTimeout") + default("MaximumBatchingWindowInSeconds") == 365
    # No cell of the mapping is left unused or missing.
    table = T["Mappings"]["VisibilityTimeoutSeconds"]
    assert sorted(int(k) for k in table) == sorted(timeouts)
    assert all(sorted(int(k) for k in row) == sorted(windows) for row in table.values())


def test_dead_letter_queue():
    q = RES["LoginQueue"]["Properties"]
    dlq = RES["LoginDeadLetterQueue"]["Properties"]
    assert q["RedrivePolicy"] == {"deadLetterTargetArn": getatt("LoginDeadLetterQueue", "Arn"),
                                  "maxReceiveCount": ref("MaxReceiveCount")}
    assert 1 <= default("MaxReceiveCount") <= 10
    assert q["MessageRetentionPeriod"] == ref("QueueMessageRetentionSeconds")
    # The DLQ keeps messages longer than the source queue can, whatever the parameter says.
    assert dlq["MessageRetentionPeriod"] == 1209600
    assert PARAMS["QueueMessageRetentionSeconds"]["MaxValue"] < dlq["MessageRetentionPeriod"]
    assert default("QueueMessageRetentionSeconds") == 4 * 86400
    for res in ("LoginQueue", "LoginDeadLetterQueue"):
        assert RES[res]["Properties"].get("SqsManagedSseEnabled") is True, f"{res} not encrypted"
        assert RES[res].get("DeletionPolicy") == "Retain", f"{res} may hold undelivered data"


def _statements(doc):
    """A policy document's statements, with Fn::If [cond, stmt, NoValue] unwrapped."""
    out = []
    for s in doc["Statement"]:
        if "Fn::If" in s:
            cond, yes, no = s["Fn::If"]
            assert no == ref("AWS::NoValue")
            out.append((cond, yes))
        else:
            out.append((None, s))
    return out


def test_role_reads_exactly_the_two_secrets():
    fn = RES[FN]["Properties"]
    assert fn["Role"] == getatt("LoginEtlRole", "Arn"), "an explicit role, so SAM adds nothing"
    assert "Policies" not in fn
    role = RES["LoginEtlRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    # The VPC access policy, and X-Ray writes only with TracingMode=Active.
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"},
        {"Fn::If": ["TracingActive",
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"},
                    ref("AWS::NoValue")]}]
    (policy,) = role["Policies"]
    stmts = _statements(policy["PolicyDocument"])
    # The database secret only with DatabaseAuth "secret" (test_iam_database_auth_option).
    secret_refs = [{"Fn::If": ["UseDbSecret", ref("DbSecretArn"), ref("AWS::NoValue")]},
                   ref("MaskingKeySecretArn")]
    seen = {}
    for cond, s in stmts:
        assert s["Effect"] == "Allow"
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert "*" not in resources and not any("*" in a for a in actions), s
        for a in actions:
            seen[a] = (cond, resources, s.get("Condition"))
    assert seen["secretsmanager:GetSecretValue"] == (None, secret_refs, None)
    assert [a for a in seen if a.startswith("secretsmanager:")] == ["secretsmanager:GetSecretValue"]
    cond, resources, condition = seen["kms:Decrypt"]
    assert cond == "HasSecretsKmsKey" and resources == [ref("SecretsKmsKeyArn")]
    assert condition == {"StringEquals": {"kms:ViaService": {
        "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}
    assert T["Conditions"]["HasSecretsKmsKey"] == {
        "Fn::Not": [{"Fn::Equals": [ref("SecretsKmsKeyArn"), ""]}]}
    assert default("SecretsKmsKeyArn") == ""
    sqs = {a for a in seen if a.startswith("sqs:")}
    assert sqs == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                   "sqs:ChangeMessageVisibility"}
    assert all(seen[a][1] == [getatt("LoginQueue", "Arn"), getatt("LoginDeadLetterQueue", "Arn")]
               for a in sqs)
    assert seen["rds-db:connect"][0] == "UseIamAuth"
    assert set(seen) == sqs | {"secretsmanager:GetSecretValue", "kms:Decrypt", "rds-db:connect"}
    for name in ("DbSecretArn", "MaskingKeySecretArn"):
        assert PARAMS[name]["Type"] == "String" and "Default" not in PARAMS[name]
        assert re.match(PARAMS[name]["AllowedPattern"],
                        "arn:aws:secretsmanager:us-east-1:123456789012:secret:login-etl/db-AbCdEf")


def test_environment_names_secrets_but_holds_none():
    env = RES[FN]["Properties"]["Environment"]["Variables"]
    assert env["DB_SECRET_ID"] == {"Fn::If": ["UseDbSecret", ref("DbSecretArn"),
                                              ref("AWS::NoValue")]}
    assert env["MASKING_KEY_SECRET_ID"] == ref("MaskingKeySecretArn")
    assert env["MASKING_KEY_ID"] == ref("MaskingKeyId") and default("MaskingKeyId") == "k1"
    assert env["REJECTED_RECORDS"] == ref("RejectedRecords")
    assert default("RejectedRecords") == "quarantine"
    assert PARAMS["RejectedRecords"]["AllowedValues"] == ["quarantine", "retry"]
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/var/task/rds-global-bundle.pem"
    assert 2 <= int(env["PGCONNECT_TIMEOUT"]) <= 10
    assert env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] == "2773"
    for forbidden in ("PGPASSWORD", "PGPASSFILE", "AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_LOG_LEVEL"):
        assert forbidden not in env, f"{forbidden} must not be set in the template"
    # Declared for `sam local invoke --env-vars` (which sets only declared variables),
    # and empty, which the function reads as unset: in AWS only the secrets count.
    assert env["DATABASE_URL"] == "" and env["MASKING_KEY"] == ""
    local = json.loads((ROOT / "events" / "env.local.json").read_text())
    assert set(local) == {FN}, "env.local.json is keyed by the function's logical id"
    assert set(local[FN]) <= set(env), "sam local ignores variables the template does not declare"
    assert local[FN]["DB_SECRET_ID"] == "" and local[FN]["MASKING_KEY_SECRET_ID"] == ""
    assert local[FN]["DATABASE_URL"].startswith("postgresql://") and len(local[FN]["MASKING_KEY"]) == 128
    for k, v in env.items():
        text = json.dumps(v)
        assert not re.search(r"[0-9a-fA-F]{64}", text), f"{k} looks like key material"
        assert "password" not in text.lower() and "postgresql://" not in text, k
    # Nothing anywhere in the template looks like a key or a password.
    raw = TEMPLATE.read_text(encoding="utf-8")
    assert not re.search(r"\b[0-9a-fA-F]{64,}\b", raw)
    # Optional connection overrides appear only when set.
    # The host comes from the secret, or with DatabaseAuth "iam" from DbHost.
    assert env["PGHOST"] == {"Fn::If": ["UseIamAuth", ref("DbHost"), ref("AWS::NoValue")]}
    for var, param, cond in (("PGPORT", "DbPort", "HasDbPort"), ("PGDATABASE", "DbName", "HasDbName")):
        assert env[var] == {"Fn::If": [cond, ref(param), ref("AWS::NoValue")]}
        assert default(param) == ""


LAYER_RE = (r"arn:(aws|aws-cn|aws-us-gov):lambda:([a-z0-9-]+):([0-9]{12}):layer:"
            r"AWS-Parameters-and-Secrets-Lambda-Extension(-Arm64)?:([0-9]+)")


def test_extension_layer_by_region_and_architecture():
    p = RES[FN]["Properties"]
    cond = T["Conditions"]
    assert cond["IsArm64"] == {"Fn::Equals": [ref("Architecture"), "arm64"]}
    assert cond["HasNoLayer"] == {"Fn::Equals": [ref("ParametersSecretsExtensionLayerArn"), "none"]}
    assert p["Layers"] == {"Fn::If": ["HasNoLayer", ref("AWS::NoValue"), [
        {"Fn::If": ["HasLayerOverride", ref("ParametersSecretsExtensionLayerArn"),
                    {"Fn::If": ["IsArm64",
                                {"Fn::FindInMap": ["ExtensionLayers", ref("AWS::Region"), "arm64"]},
                                {"Fn::FindInMap": ["ExtensionLayers", ref("AWS::Region"), "x86"]}]}]}]]}
    table = T["Mappings"]["ExtensionLayers"]
    assert len(table) >= 25 and {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(table)
    accounts = {}
    for region, cells in table.items():
        assert set(cells) == {"x86", "arm64"}, region
        assert cells["x86"], f"{region}: every listed Region has an x86_64 layer"
        for column, arn in cells.items():
            if not arn:
                assert column == "arm64", region
                continue
            m = re.fullmatch(LAYER_RE, arn)
            assert m, f"{region}/{column}: {arn}"
            partition, arn_region, account, arm, _ = m.groups()
            assert arn_region == region, f"{region}/{column} names {arn_region}"
            assert bool(arm) == (column == "arm64"), f"{region}/{column}: wrong architecture"
            want = {"cn": "aws-cn", "us-gov": "aws-us-gov"}.get(
                region.split("-")[0] if not region.startswith("us-gov") else "us-gov", "aws")
            assert partition == want, f"{region}: partition {partition}"
            # AWS publishes both architectures of a Region from one account.
            assert accounts.setdefault(region, account) == account, region
    assert len(set(accounts.values())) == len(accounts), "two Regions share an account id"
    # The override: empty by default, an ARN of either architecture, or "none".
    layer = PARAMS["ParametersSecretsExtensionLayerArn"]
    assert layer["Default"] == ""
    for ok in ("", "none", table["eu-west-1"]["arm64"], table["us-east-1"]["x86"]):
        assert re.match(layer["AllowedPattern"], ok), ok
    for bad in ("None", "arn:aws:lambda:us-east-1:177933569100:layer:SomethingElse:1"):
        assert not re.match(layer["AllowedPattern"], bad), bad


def test_vpc_and_parameter_defaults():
    p = RES[FN]["Properties"]
    assert p["VpcConfig"] == {"SubnetIds": ref("SubnetIds"),
                              "SecurityGroupIds": ref("SecurityGroupIds")}
    assert PARAMS["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert PARAMS["SecurityGroupIds"]["Type"] == "List<AWS::EC2::SecurityGroup::Id>"
    for name, spec in PARAMS.items():
        if "AllowedPattern" in spec and "Default" in spec:
            assert re.match(spec["AllowedPattern"], str(spec["Default"])), name
        if "AllowedValues" in spec and "Default" in spec:
            assert spec["Default"] in spec["AllowedValues"], name


def test_observability_alarms_tracing_and_dashboard():
    for name, metric, periods in (("RecordsRejectedAlarm", "RecordsRejected", 1),
                                  ("RecordsFailedAlarm", "RecordsFailed", 3)):
        a = RES[name]["Properties"]
        assert (a["Namespace"], a["MetricName"], a["Statistic"]) == ("LoginEtl", metric, "Sum")
        assert a["Dimensions"] == [{"Name": "FunctionName", "Value": ref("FunctionName")}]
        assert a["Threshold"] == 0 and a["EvaluationPeriods"] == periods
    d = RES["DurationNearTimeoutAlarm"]["Properties"]
    assert (d["Namespace"], d["MetricName"], d["Statistic"]) == ("AWS/Lambda", "Duration", "Maximum")
    # 80% of the timeout, for every timeout the parameter allows.
    for timeout in PARAMS["FunctionTimeout"]["AllowedValues"]:
        assert resolve(d["Threshold"], {"FunctionTimeout": timeout}) == timeout * 800, timeout
    # Tracing: off by default; Active also grants the role X-Ray writes.
    assert PARAMS["TracingMode"]["AllowedValues"] == ["PassThrough", "Active"]
    assert default("TracingMode") == "PassThrough"
    assert RES[FN]["Properties"]["Tracing"] == ref("TracingMode")
    policies = RES["LoginEtlRole"]["Properties"]["ManagedPolicyArns"]
    assert {"Fn::If": ["TracingActive", {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/"
                                                   "AWSXRayDaemonWriteAccess"},
                       ref("AWS::NoValue")]} in policies
    # The dashboard body is valid JSON once substituted, and shows the function's
    # own metrics, ColdStart included, and both queues.
    body, variables = RES["LoginEtlDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    values = {"AWS::Region": "eu-west-1", "FunctionName": "login-etl", "LoginEtlFunction": "login-etl",
              "LoginQueue.QueueName": "q", "LoginDeadLetterQueue.QueueName": "dlq",
              "DurationThreshold": "48000"}
    assert set(re.findall(r"\$\{([^}]+)\}", body)) == set(values)
    assert set(variables) == {"DurationThreshold"}
    doc = json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], body))
    shown = {m[1] for w in doc["widgets"] for m in w["properties"]["metrics"] if m[0] != "..."
             and m[1] != "."}
    for metric in ("RecordsReceived", "RecordsWritten", "RecordsRejected", "RecordsFailed",
                   "ColdStart", "Duration", "Errors", "ApproximateAgeOfOldestMessage"):
        assert metric in shown or any(metric in json.dumps(w) for w in doc["widgets"]), metric


def test_logging_and_alarms():
    p = RES[FN]["Properties"]
    lc = p["LoggingConfig"]
    assert lc["LogFormat"] == "JSON"
    assert lc["ApplicationLogLevel"] == ref("ApplicationLogLevel")
    assert lc["LogGroup"] == ref("LoginEtlLogGroup")
    lg = RES["LoginEtlLogGroup"]
    assert lg["Type"] == "AWS::Logs::LogGroup"
    assert lg["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${FunctionName}"}
    assert p["FunctionName"] == ref("FunctionName")
    assert lg["Properties"]["RetentionInDays"] == ref("LogRetentionInDays")
    alarm = RES["DeadLetterQueueDepthAlarm"]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    a = alarm["Properties"]
    assert (a["Namespace"], a["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert a["Dimensions"] == [{"Name": "QueueName",
                                "Value": getatt("LoginDeadLetterQueue", "QueueName")}]
    assert a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold"
    assert a["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [ref("AlarmTopicArn")],
                                            ref("AWS::NoValue")]}
    assert default("AlarmTopicArn") == ""


def test_outputs():
    outs = T["Outputs"]
    for name in ("LoginQueueUrl", "LoginQueueArn", "DeadLetterQueueUrl", "DeadLetterQueueArn",
                 "FunctionName", "FunctionArn", "LogGroupName"):
        assert name in outs, name
    assert outs["LoginQueueUrl"]["Value"] == ref("LoginQueue")
    assert outs["DeadLetterQueueArn"]["Value"] == getatt("LoginDeadLetterQueue", "Arn")


def test_sam_translator_output():
    # What CloudFormation will actually get: translate with the SAM translator that
    # cfn-lint uses (a stand-in S3 location for CodeUri, as `sam package` would write).
    try:
        from samtranslator.parser.parser import Parser
        from samtranslator.translator.translator import Translator
    except ImportError as e:
        raise AssertionError("aws-sam-translator is missing (it comes with cfn-lint)") from e
    tpl = json.loads(json.dumps(load_template()))
    tpl["Resources"][FN]["Properties"]["CodeUri"] = "s3://bucket/function.zip"
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        out = Translator(None, Parser()).translate(tpl, parameter_values={},
                                                   get_managed_policy_map=lambda: {})
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved
    res = out["Resources"]
    types = {k: v["Type"] for k, v in res.items()}
    assert types[FN] == "AWS::Lambda::Function"
    # The function's role, and the one SAM makes for CodeDeploy (AWS's managed policy for
    # Lambda deployments: read the alarms, move the alias).
    assert sorted(k for k, t in types.items() if t == "AWS::IAM::Role") == [
        "CodeDeployServiceRole", "LoginEtlRole"]
    assert res["CodeDeployServiceRole"]["Properties"]["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSCodeDeployRoleForLambda"]
    (esm, drain) = sorted((v["Properties"] for v in res.values()
                           if v["Type"] == "AWS::Lambda::EventSourceMapping"),
                          key=lambda p: p["EventSourceArn"] != getatt("LoginQueue", "Arn"))
    # The dead-letter queue's drain: the same alias, disabled unless DrainDeadLetterQueue.
    assert drain["EventSourceArn"] == getatt("LoginDeadLetterQueue", "Arn")
    assert drain["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert drain["Enabled"] == {"Fn::If": ["DrainsDeadLetterQueue", True, False]}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"] == {"MaximumConcurrency": ref("MaximumConcurrency")}
    assert esm["EventSourceArn"] == getatt("LoginQueue", "Arn")
    # The queue invokes the alias, which CodeDeploy moves from version to version.
    (alias_id,) = [k for k, t in types.items() if t == "AWS::Lambda::Alias"]
    (version_id,) = [k for k, t in types.items() if t == "AWS::Lambda::Version"]
    assert esm["FunctionName"] == ref(alias_id) and drain["FunctionName"] == ref(alias_id)
    alias = res[alias_id]
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionVersion"] == getatt(version_id, "Version")
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    (group_id,) = [k for k, t in types.items() if t == "AWS::CodeDeploy::DeploymentGroup"]
    assert update["DeploymentGroupName"] == ref(group_id)
    group = res[group_id]["Properties"]
    # (the translator resolves the parameter to its default)
    assert group["DeploymentConfigName"] == {"Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}",
                                                         {"ConfigName": default("DeploymentType")}]}
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert [a["Name"] for a in group["AlarmConfiguration"]["Alarms"]] == [ref(a) for a in
                                                                          DEPLOY_ALARMS]
    assert not group["AlarmConfiguration"].get("IgnorePollAlarmFailure", False)
    rollback = group["AutoRollbackConfiguration"]
    assert rollback["Enabled"] is True and "DEPLOYMENT_STOP_ON_ALARM" in rollback["Events"]
    # The new version's error alarm names the version this deployment publishes.
    dims = {d["Name"]: d["Value"] for d in
            res["DeployNewVersionErrorsAlarm"]["Properties"]["Dimensions"]}
    assert dims["ExecutedVersion"] == getatt(version_id, "Version")
    assert out["Outputs"]["FunctionVersion"]["Value"] == getatt(version_id, "Version")
    assert out["Outputs"]["FunctionAliasArn"]["Value"] == ref(alias_id)
    fn = res[FN]["Properties"]
    assert fn["Role"] == getatt("LoginEtlRole", "Arn")
    assert fn["LoggingConfig"]["LogFormat"] == "JSON"
    assert fn["Runtime"] == "provided.al2023" and fn["Handler"] == "bootstrap"


DEPLOY_ALARMS = ["DeployNewVersionErrorsAlarm", "DeployRecordsFailedAlarm", "DeployDeadLetterAlarm"]
# CodeDeploy's predefined Lambda deployment configurations, as SAM's DeploymentPreference
# Type names them (CodeDeployDefault.Lambda<name>).
CODEDEPLOY_TYPES = {"Canary10Percent5Minutes", "Canary10Percent10Minutes",
                    "Canary10Percent15Minutes", "Canary10Percent30Minutes",
                    "Linear10PercentEvery1Minute", "Linear10PercentEvery2Minutes",
                    "Linear10PercentEvery3Minutes", "Linear10PercentEvery10Minutes", "AllAtOnce"}


def test_deployments_shift_through_an_alias_and_roll_back_on_the_functions_alarms():
    p = RES[FN]["Properties"]
    assert p["AutoPublishAlias"] == "live"
    dp = p["DeploymentPreference"]
    assert dp["Type"] == ref("DeploymentType")
    assert set(PARAMS["DeploymentType"]["AllowedValues"]) == CODEDEPLOY_TYPES
    assert default("DeploymentType").startswith("Canary")
    assert dp["Alarms"] == [ref(a) for a in DEPLOY_ALARMS]
    assert dp.get("Enabled", True) is True
    for name in DEPLOY_ALARMS:
        a = RES[name]["Properties"]
        assert RES[name]["Type"] == "AWS::CloudWatch::Alarm"
        # Inside the shortest canary (5 minutes): one-minute periods, a few of them.
        periods = [a.get("Period")] + [m["MetricStat"]["Period"] for m in a.get("Metrics", [])
                                       if "MetricStat" in m]
        assert all(x in (None, 60) for x in periods) and 60 in periods, (name, periods)
        assert a["EvaluationPeriods"] * 60 <= 180, name
        assert a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold", name
        assert a["TreatMissingData"] == "notBreaching", name
        assert a["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [ref("AlarmTopicArn")],
                                                ref("AWS::NoValue")]}, name
    # Invocation errors of the new version only: the alias's invocations, by the version
    # that ran them.
    e = RES["DeployNewVersionErrorsAlarm"]["Properties"]
    assert (e["Namespace"], e["MetricName"], e["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert e["Dimensions"] == [
        {"Name": "FunctionName", "Value": ref(FN)},
        {"Name": "Resource", "Value": {"Fn::Sub": "${LoginEtlFunction}:live"}},
        {"Name": "ExecutedVersion", "Value": getatt(FN, "Version.Version")}]
    # The function's own metric, as its EMF line names it (one dimension: FunctionName).
    r = RES["DeployRecordsFailedAlarm"]["Properties"]
    assert (r["Namespace"], r["MetricName"], r["Statistic"]) == ("LoginEtl", "RecordsFailed", "Sum")
    assert r["Dimensions"] == [{"Name": "FunctionName", "Value": ref("FunctionName")}]
    # Growth of the DLQ, not its depth (messages already there must not stop every
    # deployment), and not NumberOfMessagesSent (SQS does not count redrive moves there).
    d = RES["DeployDeadLetterAlarm"]["Properties"]
    assert "MetricName" not in d
    (stat,) = [m for m in d["Metrics"] if "MetricStat" in m]
    (expr,) = [m for m in d["Metrics"] if "Expression" in m]
    assert stat["ReturnData"] is False and expr["ReturnData"] is True
    metric = stat["MetricStat"]["Metric"]
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/SQS",
                                                          "ApproximateNumberOfMessagesVisible")
    assert metric["Dimensions"] == [{"Name": "QueueName",
                                     "Value": getatt("LoginDeadLetterQueue", "QueueName")}]
    assert expr["Expression"] == f"DIFF({stat['Id']})"
    # The EMF line the function writes must still match what the alarm reads.
    etl = "".join(f.read_text() for f in sorted((ROOT / "function").glob("*.c")))
    assert '\\"Namespace\\":\\"LoginEtl\\"' in etl and '[[\\"FunctionName\\"]]' in etl
    assert '{\\"Name\\":\\"RecordsFailed\\"' in etl


def test_makefile_ships_the_ca_bundle_the_template_names():
    # PGSSLROOTCERT points into the zip: `make build-LoginEtlFunction` must put that file
    # into ARTIFACTS_DIR next to bootstrap, or every connection fails verify-full.
    env = RES[FN]["Properties"]["Environment"]["Variables"]
    name = Path(env["PGSSLROOTCERT"]).name
    assert env["PGSSLROOTCERT"] == f"/var/task/{name}"
    r = subprocess.run(["make", "-n", "-C", str(ROOT), f"build-{FN}",
                        "ARTIFACTS_DIR=/tmp/sam-artifacts-dir"],
                       capture_output=True, text=True, timeout=120)
    recipe = [line for line in r.stdout.splitlines() if "/tmp/sam-artifacts-dir" in line]
    assert any("bootstrap" in line for line in recipe), f"make -n printed:\n{r.stdout}{r.stderr}"
    assert any(name in line for line in recipe), (
        f"`make build-{FN}` does not put {name} into ARTIFACTS_DIR; commands:\n" + "\n".join(recipe))


# --- DatabaseAuth: secret or iam --------------------------------------------------------------
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
NO_VALUE = object()


def _params(**over):
    values = {k: v.get("Default") for k, v in PARAMS.items()}
    values.update(over)
    return values


def _cond(expr, values):
    """Evaluates a condition expression for parameter values."""
    if isinstance(expr, dict) and "Condition" in expr:
        return _cond(T["Conditions"][expr["Condition"]], values)
    if isinstance(expr, dict) and "Fn::Equals" in expr:
        a, b = (_eval(v, values) for v in expr["Fn::Equals"])
        return str(a) == str(b)
    if isinstance(expr, dict) and "Fn::Not" in expr:
        return not _cond(expr["Fn::Not"][0], values)
    raise AssertionError(f"condition form not handled: {expr}")


def _eval(v, values):
    """The value as CloudFormation would make it for these parameter values:
    Ref, Fn::If, Fn::Sub and AWS::NoValue resolved (other functions kept)."""
    if isinstance(v, list):
        out = [_eval(x, values) for x in v]
        return [x for x in out if x is not NO_VALUE]
    if not isinstance(v, dict):
        return v
    if list(v) == ["Ref"]:
        name = v["Ref"]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        return values[name] if name in values else v
    if list(v) == ["Fn::If"]:
        cond, yes, no = v["Fn::If"]
        return _eval(yes if _cond(T["Conditions"][cond], values) else no, values)
    if list(v) == ["Fn::Sub"] and isinstance(v["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(_eval(ref(m.group(1)), values)),
                      v["Fn::Sub"])
    out = {k: _eval(x, values) for k, x in v.items()}
    return {k: x for k, x in out.items() if x is not NO_VALUE}


def _rules_fail(values):
    """AssertDescriptions of the template's Rules that these values break."""
    broken = []
    for rule in T.get("Rules", {}).values():
        if "RuleCondition" in rule and not _cond(rule["RuleCondition"], values):
            continue
        for a in rule["Assertions"]:
            if not _cond(a["Assert"], values):
                broken.append(a["AssertDescription"])
    return broken


IAM = dict(DatabaseAuth="iam", DbSecretArn="", DbHost="login-proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
           DbIamUser="login_etl", DbIamResourceId="prx-0123456789abcdef0", DbName="logins",
           MaskingKeySecretArn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:key-AbCdEf")
SECRET = dict(DatabaseAuth="secret", MaskingKeySecretArn=IAM["MaskingKeySecretArn"],
              DbSecretArn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf")


def test_iam_database_auth_option():
    assert PARAMS["DatabaseAuth"]["AllowedValues"] == ["secret", "iam"]
    assert default("DatabaseAuth") == "secret"
    for name, good in (("DbHost", IAM["DbHost"]), ("DbIamUser", "login_etl"),
                       ("DbIamResourceId", "db-ABCDEFGHIJKLMNOP"),
                       ("DbIamResourceId", "cluster-ABCDEFGHIJ"), ("DbIamResourceId", "prx-0a1b")):
        assert re.match(PARAMS[name]["AllowedPattern"], good), (name, good)
    assert not re.match(PARAMS["DbIamResourceId"]["AllowedPattern"], "arn:aws:rds:db")
    assert not re.match(PARAMS["DbHost"]["AllowedPattern"], "https://db.example.com")

    # iam: no database secret anywhere, rds-db:connect on exactly this user.
    values = _params(**IAM)
    assert _rules_fail(values) == []
    role = _eval(RES["LoginEtlRole"]["Properties"], values)
    stmts = role["Policies"][0]["PolicyDocument"]["Statement"]
    by_action = {s["Action"] if isinstance(s["Action"], str) else tuple(s["Action"]): s
                 for s in stmts}
    assert by_action["secretsmanager:GetSecretValue"]["Resource"] == [IAM["MaskingKeySecretArn"]]
    assert by_action["rds-db:connect"]["Resource"] == (
        "arn:aws:rds-db:eu-west-1:123456789012:dbuser:prx-0123456789abcdef0/login_etl")
    env = _eval(RES[FN]["Properties"]["Environment"]["Variables"], values)
    assert "DB_SECRET_ID" not in env
    assert env["DB_AUTH"] == "iam"
    assert (env["PGHOST"], env["PGUSER"], env["PGDATABASE"]) == (IAM["DbHost"], "login_etl", "logins")
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"].startswith("/var/task/")
    # DATABASE_URL is declared empty for `sam local invoke --env-vars`; the
    # function reads an empty variable as unset.
    assert "PGPASSWORD" not in env and env.get("DATABASE_URL", "") == ""

    # secret: as before, and no IAM permission or setting.
    values = _params(**SECRET)
    assert _rules_fail(values) == []
    role = _eval(RES["LoginEtlRole"]["Properties"], values)
    actions = [s["Action"] for s in role["Policies"][0]["PolicyDocument"]["Statement"]]
    assert "rds-db:connect" not in actions
    env = _eval(RES[FN]["Properties"]["Environment"]["Variables"], values)
    assert env["DB_SECRET_ID"] == SECRET["DbSecretArn"]
    assert not {"DB_AUTH", "PGHOST", "PGUSER"} & set(env)

    # The Rules refuse a mode without what it needs (or with what it must not have).
    assert _rules_fail(_params(**dict(SECRET, DbSecretArn="")))
    for missing in ("DbHost", "DbIamUser", "DbIamResourceId", "DbName"):
        assert any(missing in d for d in _rules_fail(_params(**dict(IAM, **{missing: ""})))), missing
    assert any("DbSecretArn" in d for d in _rules_fail(_params(**dict(IAM, DbSecretArn=SECRET["DbSecretArn"]))))


def test_the_dead_letter_queue_drains_into_the_alias_only_when_enabled():
    """A second event source mapping from the DLQ, so that draining keeps each message's
    messageId and SentTimestamp (the ledger then knows what was committed); disabled by
    default, enabled by DrainDeadLetterQueue; the DLQ's visibility timeout is the source
    queue's, which the mapping needs."""
    ev = RES[FN]["Properties"]["Events"]["DeadLetterQueueDrain"]
    assert ev["Type"] == "SQS"
    p = ev["Properties"]
    assert p["Queue"] == getatt("LoginDeadLetterQueue", "Arn")
    assert p["Enabled"] == {"Fn::If": ["DrainsDeadLetterQueue", True, False]}
    assert T["Conditions"]["DrainsDeadLetterQueue"] == {
        "Fn::Equals": [ref("DrainDeadLetterQueue"), "true"]}
    assert default("DrainDeadLetterQueue") == "false"
    assert PARAMS["DrainDeadLetterQueue"]["AllowedValues"] == ["false", "true"]
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "FilterCriteria" not in p
    dlq = RES["LoginDeadLetterQueue"]["Properties"]
    assert dlq["VisibilityTimeout"] == RES["LoginQueue"]["Properties"]["VisibilityTimeout"]
    assert "RedrivePolicy" not in dlq


def test_the_drift_alarm_watches_a_rate():
    p = RES["RecordsDriftedAlarm"]["Properties"]
    by_id = {m["Id"]: m for m in p["Metrics"]}
    assert by_id["drifted"]["MetricStat"]["Metric"]["MetricName"] == "RecordsDrifted"
    assert by_id["received"]["MetricStat"]["Metric"]["MetricName"] == "RecordsReceived"
    assert by_id["rate"]["Expression"] == "100 * FILL(drifted, 0) / received"
    assert [m["Id"] for m in p["Metrics"] if m["ReturnData"]] == ["rate"]
    assert p["Threshold"] == ref("DriftAlarmPercent") and default("DriftAlarmPercent") == 1
    assert p["TreatMissingData"] == "notBreaching"


def test_known_fields_left_out_are_on_the_dashboard_and_no_alarm_watches_them():
    """RecordsDrifted counts records with an unknown field only; FieldMissing (a known field
    left out, routine for optional ones) is shown by field and alarms nobody."""
    watched = json.dumps([r for r in RES.values() if r["Type"] == "AWS::CloudWatch::Alarm"])
    assert "RecordsDrifted" in watched and "FieldMissing" not in watched
    body = RES["LoginEtlDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    doc = json.loads(re.sub(r"\$\{([^}]+)\}",
                            lambda m: "1" if m.group(1) == "DurationThreshold" else "x", body))
    fields, last = set(), None
    for w in doc["widgets"]:
        for m in w["properties"]["metrics"]:
            # "..." repeats the row above but its last value; "." its value there.
            row = last[:-1] + m[1:] if m[0] == "..." else [
                last[i] if v == "." else v for i, v in enumerate(m)]
            if row[1] == "FieldMissing":
                assert row[:5] == ["LoginEtl", "FieldMissing", "FunctionName", "x", "Field"], row
                fields.add(row[5])
            last = row
    assert fields == {"user_id", "device_type", "ip", "device_id", "locale", "app_version"}
    assert "an unknown top-level field" in PARAMS["DriftAlarmPercent"]["Description"]
