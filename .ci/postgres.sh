#!/usr/bin/env bash
# Bring up a local PostgreSQL server with a database for the Optuna test that shares a study between workers
# (tests/test_tuning.py). Debian/Ubuntu, as root; no systemd needed. Prints the URL the tests read from
# MNIST_CIFAR_TEST_POSTGRES (.ci/run exports it). Idempotent.
#   .ci/postgres.sh          start (installs the package first if it is missing)
#   .ci/postgres.sh stop     stop the server
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
read -r version cluster _ < <(pg_lsclusters -h | head -1)
if [[ "${1:-start}" == stop ]]; then
    pg_ctlcluster "$version" "$cluster" stop || true
    exit 0
fi
pg_lsclusters -h | grep -q online || pg_ctlcluster "$version" "$cluster" start
for _ in $(seq 30); do runuser -u postgres -- pg_isready -q && break; sleep 1; done
sql() { runuser -u postgres -- psql -qtAX -c "$1"; }
[[ "$(sql "SELECT 1 FROM pg_roles WHERE rolname='mnist_cifar'")" == 1 ]] || sql "CREATE USER mnist_cifar PASSWORD 'mnist_cifar'"
[[ "$(sql "SELECT 1 FROM pg_database WHERE datname='optuna'")" == 1 ]] || sql "CREATE DATABASE optuna OWNER mnist_cifar"
echo "postgresql://mnist_cifar:mnist_cifar@127.0.0.1/optuna"
