#!/usr/bin/env bash
# Make sure the system programs the project runs are present: install them with apt-get when
# running as root, otherwise stop and print the exact command to run.
# Usage: scripts/system-deps.sh PROGRAM=DEBIAN_PACKAGE ...
set -euo pipefail
missing_programs=()
missing_packages=()
for pair in "$@"; do
  program=${pair%%=*}
  package=${pair#*=}
  if ! command -v "$program" >/dev/null 2>&1; then
    missing_programs+=("$program")
    missing_packages+=("$package")
  fi
done
[ ${#missing_packages[@]} -eq 0 ] && exit 0

echo "set-up: missing system programs: ${missing_programs[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "set-up: installing ${missing_packages[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
  exit 0
fi
echo "set-up: install them first, then run make again:" >&2
if command -v apt-get >/dev/null 2>&1; then
  echo "    sudo apt-get install -y ${missing_packages[*]}" >&2
else
  echo "    conda install -c bioconda ${missing_programs[*]}    (or your system's package manager)" >&2
fi
exit 1
