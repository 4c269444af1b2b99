#!/usr/bin/env bash
# Installs everything network-anomaly needs on a fresh machine, and reuses it when nothing changed:
#   * a Python 3.11 venv with the pinned dependencies, kept in $NETANOMALY_CACHE (default
#     ~/.cache/network-anomaly) under a name derived from setup.py + constraints.txt, so a change of
#     pins builds a new venv and an unchanged one is reused (torch alone is ~3 GB);
#   * this checkout installed into it (editable, no deps: re-pointed at every call, ~3 s);
#   * the JVM jars (Kafka broker, Flink Kafka SQL connector) fetched by Maven from Maven Central.
# Prints the venv path as its last line. Needs: python3.11, Java 17, Maven.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${NETANOMALY_CACHE:-$HOME/.cache/network-anomaly}"
mkdir -p "$cache"

py="${NETANOMALY_PYTHON:-$(command -v python3.11 || true)}"
if [ -z "$py" ]; then
  echo "bootstrap: python3.11 not found; install Python 3.11 (apache-flink 2.2.1 needs it) or set NETANOMALY_PYTHON" >&2
  exit 1
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "bootstrap: $tool not found; install a JDK 17 and Maven" >&2; exit 1; }
done

key="$(grep -h "==" "$here/setup.py" "$here/constraints.txt" | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: creating $venv (first run downloads ~3.5 GB: torch, apache-flink, ...)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade "pip==26.3" >&2
  "$venv/bin/pip" install --progress-bar off -c "$here/constraints.txt" -e "$here[dev]" >&2
  touch "$venv/.complete"
else
  echo "bootstrap: reusing $venv (setup.py and constraints.txt unchanged)" >&2
fi
# Point the editable install at this checkout (another clone may have used the same venv).
"$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e "$here" >&2
"$venv/bin/python" -c "import netanomaly, torch, pyflink" >&2
"$venv/bin/netanomaly" jars fetch >&2
echo "$venv"
