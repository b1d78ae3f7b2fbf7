"""`origin_fetch.ca_file`, the trust of HTTPS origins (SPEC §11): checked when the config is
loaded, so a bundle that cannot be read or holds no certificate stops start-up (and a
reload) instead of failing every HTTPS copy later."""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.configs import load_text, refusal


def test_ca_file_unset_is_the_system_store(tmp_path: Path):
    """Without `ca_file` the edge trusts the system's store (the value is None)."""
    assert load_text(tmp_path, "origin_fetch: {}\n").origin_fetch.ca_file is None


def test_a_pem_bundle_is_taken(tmp_path: Path):
    """A bundle of two CAs' certificates loads, and its path is kept for the copier."""
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes() + trustme.CA().cert_pem.bytes())
    config = load_text(tmp_path, f"origin_fetch:\n  ca_file: {bundle}\n")
    assert config.origin_fetch.ca_file == bundle


def test_missing_or_garbled_bundles_are_refused(tmp_path: Path):
    """A missing file, a file with no PEM certificate, and a non-string value are refused
    with the file, the key and the reason."""
    missing = refusal(tmp_path, f"origin_fetch:\n  ca_file: {tmp_path / 'nope.pem'}\n")
    assert "origin_fetch.ca_file" in str(missing) and "cannot read" in str(missing)
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    error = refusal(tmp_path, f"origin_fetch:\n  ca_file: {garbled}\n")
    assert "c.yaml" in str(error) and "holds no PEM certificate" in str(error)
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(trustme.CA().private_key_pem.bytes())
    assert "holds no PEM certificate" in str(
        refusal(tmp_path, f"origin_fetch:\n  ca_file: {key_only}\n")
    )
    assert "non-empty path" in str(refusal(tmp_path, "origin_fetch:\n  ca_file: 3\n"))
