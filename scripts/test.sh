#!/usr/bin/env bash
# The whole test suite as CI runs it: install, start a Kafka broker for the tests, run pytest,
# always stop the broker. Exit code: pytest's; "no tests ran" (5) counts as a failure.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$(bash scripts/bootstrap.sh)" || { echo "test: install failed" >&2; exit 1; }
# The Prometheus scrape test needs a real Prometheus server: Debian's package.
if ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing Debian's prometheus package" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) >/dev/null \
      || { echo "test: could not install prometheus" >&2; exit 1; }
  else
    echo "test: install Prometheus (e.g. apt-get install prometheus) to run the scrape test" >&2; exit 1
  fi
fi
port="${TEST_KAFKA_PORT:-19092}"
cport="${TEST_KAFKA_CONTROLLER_PORT:-19093}"
data="${TEST_KAFKA_DIR:-$HOME/.cache/network-anomaly/test-kafka}"
rm -rf "$data"
opts=(--set "kafka.local.port=$port" --set "kafka.local.controller_port=$cport" --set "kafka.local.data_dir=$data")
stop_kafka() { "$venv/bin/netanomaly" kafka stop "${opts[@]}" >/dev/null 2>&1 || true; }
trap stop_kafka EXIT
"$venv/bin/netanomaly" kafka start "${opts[@]}" || { echo "test: the Kafka broker did not start" >&2; exit 1; }
export NETANOMALY_TEST_BOOTSTRAP="127.0.0.1:$port"
export PATH="$venv/bin:$PATH"
"$venv/bin/pytest" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  rc=1
fi
exit "$rc"
