#!/usr/bin/env bash
# Re-fetch the charting library the training dashboard uses (uPlot, MIT)
# from npm, at the pinned version, into deepaas/api/ui/static/ with its
# licence. The files are committed: nothing is downloaded at build or run
# time. Bump VERSION and INTEGRITY together (`npm view uplot@X dist.integrity`),
# run `make vendor-ui`, and check the dashboard tests (tests/ui/).
set -euo pipefail
VERSION=1.6.32
INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
cd "$(dirname "$0")/.."
DEST=deepaas/api/ui/static
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "uplot@$VERSION" >/dev/null)
TARBALL="$WORK/uplot-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then
    echo "uplot-$VERSION.tgz: integrity $GOT, expected $INTEGRITY" >&2
    exit 1
fi
tar -xzf "$TARBALL" -C "$WORK"
cp "$WORK/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$WORK/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$WORK/package/LICENSE" "$DEST/uPlot.LICENSE"
printf 'uplot %s from npm (%s)\n' "$VERSION" "$INTEGRITY" > "$DEST/uPlot.VERSION"
echo "vendored uplot $VERSION into $DEST"
