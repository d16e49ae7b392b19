#!/usr/bin/env bash
# The OHIF viewer check's tools, from the package registries only (`make ohif-env`):
#   * Debian `chromium` (headless browser; installed by .ci/system-deps.sh when OHIF=1),
#   * `@ohif/app` 3.13.2 from npm: its prebuilt dist/ (50 MB packed, 204 MB unpacked; no build step),
#   * `playwright-core` from npm (drives the system Chromium; downloads no browser).
# Into <repo>/.ohif (git-ignored). Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${OHIF_DIR:-$REPO/.ohif}"
OHIF_VERSION="3.13.2"
PLAYWRIGHT_VERSION="1.65.2"
if [ -f "$DIR/.installed-$OHIF_VERSION" ]; then
  echo "OHIF $OHIF_VERSION ready: $DIR"
  exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
# `npm install @ohif/app` fails (its @ohif/i18n dependency at the same version is not on the registry); the
# prebuilt viewer needs none of its dependencies, so the package tarball is fetched and unpacked instead.
npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null
rm -rf dist && tar xzf "ohif-app-$OHIF_VERSION.tgz" package/dist && mv package/dist dist && rm -rf package
rm -f "ohif-app-$OHIF_VERSION.tgz"
[ -f package.json ] || echo '{"private": true}' > package.json
npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION"
touch "$DIR/.installed-$OHIF_VERSION"
echo "OHIF $OHIF_VERSION ready: $DIR"
