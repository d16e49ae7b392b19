#!/usr/bin/env bash
# Real DICOM tools the tests drive: dcmtk (echoscu/storescu/storescp) and dicom3tools (dciodvfy).
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (Debian packages)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "warning: ${need[*]} missing and cannot be installed here (need root + apt-get); DICOM tool tests will fail" >&2
fi
