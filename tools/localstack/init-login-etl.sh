#!/usr/bin/env bash
# Sets up login-etl on an AWS API endpoint: the source queue and its dead-letter queue
# (RedrivePolicy), the sample messages of events/batch.json, the function from
# build/function.zip (provided.al2023, handler bootstrap) and its SQS event source mapping
# with ReportBatchItemFailures.
#
# docker-compose.yml mounts it as a LocalStack init hook (/etc/localstack/init/ready.d),
# which runs it once LocalStack is ready. It only uses the plain AWS CLI against
# $AWS_ENDPOINT_URL, so it runs the same from a shell against LocalStack on
# localhost:4566, or against moto_server (tests/integration/test_localstack_init.py).
#
#   tools/localstack/init-login-etl.sh [STEP...]
#
# Steps, in this order (default: all four):
#   queues     create the dead-letter queue, then the source queue redriving into it
#   messages   send the bodies of $LOGIN_ETL_EVENTS_FILE to the source queue, 10 at a time
#   function   create (or update) the function from $LOGIN_ETL_ZIP
#   mapping    create the event source mapping from the source queue to the function
#
# Environment (all optional):
#   AWS_ENDPOINT_URL              http://localhost:4566 (LocalStack, seen from its container)
#   AWS_DEFAULT_REGION            us-east-1
#   AWS_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY   test/test: LocalStack's account 000000000000
#   LOGIN_ETL_QUEUE               login-queue       LOGIN_ETL_DLQ   login-queue-dlq
#   LOGIN_ETL_MAX_RECEIVE_COUNT   5
#   LOGIN_ETL_FUNCTION            login-etl
#   LOGIN_ETL_FUNCTION_TIMEOUT    60 (the queue's visibility timeout is 6x this + the window)
#   LOGIN_ETL_BATCH_SIZE          100               LOGIN_ETL_BATCH_WINDOW  1 (seconds)
#   LOGIN_ETL_EVENTS_FILE         <repo>/events/batch.json
#   LOGIN_ETL_ZIP                 <repo>/build/function.zip (`make package CA=none` builds it)
#   LOGIN_ETL_DATABASE_URL        postgresql://login_etl:localdev@postgres:5432/logins?sslmode=disable
#   LOGIN_ETL_MASKING_KEY         128 hex characters; a random key when unset (printed
#                                 nowhere: set it yourself to unmask values later)
#   LOGIN_ETL_MASKING_KEY_ID      k1
#
# The local function gets DATABASE_URL and MASKING_KEY as plain environment variables:
# LocalStack's community edition has neither Lambda layers (so no Parameters and Secrets
# extension) nor RDS, and these are throwaway local values. In AWS, template.yaml passes
# only secret ARNs and the function reads the values from Secrets Manager.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_PAGER=""

queue=${LOGIN_ETL_QUEUE:-login-queue}
dlq=${LOGIN_ETL_DLQ:-login-queue-dlq}
max_receive=${LOGIN_ETL_MAX_RECEIVE_COUNT:-5}
function_name=${LOGIN_ETL_FUNCTION:-login-etl}
timeout=${LOGIN_ETL_FUNCTION_TIMEOUT:-60}
batch_size=${LOGIN_ETL_BATCH_SIZE:-100}
window=${LOGIN_ETL_BATCH_WINDOW:-1}
events_file=${LOGIN_ETL_EVENTS_FILE:-$repo/events/batch.json}
zip=${LOGIN_ETL_ZIP:-$repo/build/function.zip}
database_url=${LOGIN_ETL_DATABASE_URL:-postgresql://login_etl:localdev@postgres:5432/logins?sslmode=disable}
key_id=${LOGIN_ETL_MASKING_KEY_ID:-k1}

log() { printf 'login-etl init: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
awsx() { aws --endpoint-url "$AWS_ENDPOINT_URL" --output json "$@"; }

command -v aws >/dev/null || die "the aws CLI is not on PATH"
command -v python3 >/dev/null || die "python3 is not on PATH"
for n in "$max_receive" "$timeout" "$batch_size" "$window"; do
  [[ $n =~ ^[0-9]+$ ]] || die "not a whole number: $n"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

queue_url() { awsx sqs get-queue-url --queue-name "$1" --query QueueUrl --output text; }
queue_arn() {
  awsx sqs get-queue-attributes --queue-url "$1" --attribute-names QueueArn \
    --query Attributes.QueueArn --output text
}

step_queues() {
  # Dead-letter queue first: 14 days, longer than the source's 4 (a message keeps its
  # original enqueue time when it is moved).
  local dlq_url dlq_arn url
  dlq_url=$(awsx sqs create-queue --queue-name "$dlq" \
    --attributes MessageRetentionPeriod=1209600 --query QueueUrl --output text)
  dlq_arn=$(queue_arn "$dlq_url")
  # Visibility timeout: 6 x the function timeout + the batching window (AWS's guidance
  # for SQS event sources), as in template.yaml.
  python3 - "$work/queue-attributes.json" "$dlq_arn" "$max_receive" \
    "$((6 * timeout + window))" <<'PY'
import json, sys
path, dlq_arn, max_receive, visibility = sys.argv[1:]
json.dump({
    "VisibilityTimeout": visibility,
    "MessageRetentionPeriod": "345600",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                 "maxReceiveCount": int(max_receive)}),
}, open(path, "w"))
PY
  url=$(awsx sqs create-queue --queue-name "$queue" \
    --attributes "file://$work/queue-attributes.json" --query QueueUrl --output text)
  log "queue $url (visibility timeout $((6 * timeout + window)) s, dead-letter after" \
    "$max_receive receives to $dlq_url)"
}

step_messages() {
  local url n=0 f
  [[ -f $events_file ]] || die "no events file at $events_file"
  url=$(queue_url "$queue") || die "no queue $queue: run the queues step first"
  # The bodies of the sample event, as send-message-batch entries of at most 10.
  python3 - "$events_file" "$work" <<'PY'
import json, sys
records = json.load(open(sys.argv[1], encoding="utf-8"))["Records"]
for i in range(0, len(records), 10):
    entries = [{"Id": f"m{j}", "MessageBody": r["body"]}
               for j, r in enumerate(records[i:i + 10])]
    with open(f"{sys.argv[2]}/batch-{i // 10:05d}.json", "w", encoding="utf-8") as f:
        json.dump(entries, f)
PY
  for f in "$work"/batch-*.json; do
    [[ -e $f ]] || continue
    awsx sqs send-message-batch --queue-url "$url" --entries "file://$f" >"$work/sent.json"
    n=$((n + $(python3 - "$work/sent.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("Failed"):
    sys.exit(f"send-message-batch failed for {len(r['Failed'])} messages: {r['Failed'][0]}")
print(len(r.get("Successful", [])))
PY
    )))
  done
  log "sent $n messages from $events_file to $queue"
}

step_function() {
  local arch role_arn key
  [[ -f $zip ]] || die "no $zip: run \`make package CA=none\` (on Linux) before starting the stack"
  # The architecture the bootstrap inside the zip was built for (its ELF header).
  arch=$(python3 - "$zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    head = z.open("bootstrap").read(20)
if head[:4] != b"\x7fELF":
    sys.exit("bootstrap in the zip is not an ELF executable")
machine = int.from_bytes(head[18:20], "little")
print({0x3E: "x86_64", 0xB7: "arm64"}.get(machine) or sys.exit(f"unknown ELF machine {machine:#x}"))
PY
  ) || die "cannot read bootstrap from $zip"
  key=${LOGIN_ETL_MASKING_KEY:-}
  if [[ -z $key ]]; then
    key=$(python3 -c 'import secrets; print(secrets.token_hex(64))')
    log "LOGIN_ETL_MASKING_KEY is not set: using a random key, which is not kept anywhere"
  fi
  [[ $key =~ ^[0-9a-fA-F]{128}$ ]] || die "LOGIN_ETL_MASKING_KEY must be 128 hex characters"
  python3 - "$work/environment.json" "$database_url" "$key" "$key_id" <<'PY'
import json, os, sys
path, url, key, key_id = sys.argv[1:]
with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump({"Variables": {"DATABASE_URL": url, "MASKING_KEY": key, "MASKING_KEY_ID": key_id,
                             "PGCONNECT_TIMEOUT": "5"}}, f)
PY
  if ! role_arn=$(awsx iam get-role --role-name login-etl-local --query Role.Arn --output text 2>/dev/null); then
    role_arn=$(awsx iam create-role --role-name login-etl-local --query Role.Arn --output text \
      --assume-role-policy-document \
      '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}')
  fi
  if awsx lambda get-function --function-name "$function_name" >/dev/null 2>&1; then
    awsx lambda update-function-code --function-name "$function_name" \
      --zip-file "fileb://$zip" >/dev/null
    awsx lambda wait function-updated-v2 --function-name "$function_name"
    awsx lambda update-function-configuration --function-name "$function_name" \
      --environment "file://$work/environment.json" >/dev/null
    log "updated function $function_name from $zip"
  else
    awsx lambda create-function --function-name "$function_name" \
      --runtime provided.al2023 --handler bootstrap --architectures "$arch" \
      --zip-file "fileb://$zip" --role "$role_arn" \
      --timeout "$timeout" --memory-size 512 \
      --environment "file://$work/environment.json" >/dev/null
    log "created function $function_name ($arch) from $zip"
  fi
  awsx lambda wait function-active-v2 --function-name "$function_name"
}

step_mapping() {
  local url arn existing
  url=$(queue_url "$queue") || die "no queue $queue: run the queues step first"
  arn=$(queue_arn "$url")
  existing=$(awsx lambda list-event-source-mappings --function-name "$function_name" \
    --event-source-arn "$arn" --query 'length(EventSourceMappings)' --output text)
  if [[ $existing != 0 ]]; then
    log "event source mapping $queue -> $function_name exists"
    return
  fi
  awsx lambda create-event-source-mapping --function-name "$function_name" \
    --event-source-arn "$arn" --batch-size "$batch_size" \
    --maximum-batching-window-in-seconds "$window" \
    --function-response-types ReportBatchItemFailures >/dev/null
  log "event source mapping $queue -> $function_name (batches of up to $batch_size," \
    "ReportBatchItemFailures)"
}

steps=("$@")
((${#steps[@]})) || steps=(queues messages function mapping)
for s in "${steps[@]}"; do
  case $s in
    queues | messages | function | mapping) "step_$s" ;;
    *) die "unknown step '$s' (steps: queues messages function mapping)" ;;
  esac
done
log "done: ${steps[*]} (endpoint $AWS_ENDPOINT_URL)"
