#!/usr/bin/env bash
# Real DICOM tools the tests drive: dcmtk (echoscu/storescu/storescp), dicom3tools (dciodvfy), and a real PACS:
# Orthanc with its DICOMweb plugin (tests/test_dicom_orthanc.py; Debian bookworm: orthanc 1.10.1, dicomweb 1.7).
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
# the OHIF viewer check (`make ohif-check`) only: a headless browser and node/npm
if [ "${OHIF:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (Debian packages)"
  apt-get update -qq >/dev/null
  # policy-rc.d-less machines would start the packaged Orthanc service: the tests run their own instances
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
    systemctl stop orthanc || true
  fi
else
  echo "warning: ${need[*]} missing and cannot be installed here (need root + apt-get); DICOM tool tests will fail" >&2
fi
