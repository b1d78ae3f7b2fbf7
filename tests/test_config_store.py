"""The `store:` and `coordination:` keys (SPEC §8): parsed, defaulted and refused like every
other key, naming file, key and reason; no server is contacted."""

from __future__ import annotations

import pytest

from edge.config import ConfigError, parse_config
from edge.config.cluster import check_store
from edge.process.cli import check_config
from edge.process.reload import RESTART_ONLY
from tests.configs import load_text as _load
from tests.configs import refusal as _error

S3 = """
store:
  type: s3
  endpoint: http://127.0.0.1:8333
  access_key_id: AK
  secret_access_key: SK
coordination:
  redis: redis://127.0.0.1:6379/0
"""


def test_default_is_the_folder_store_without_coordination():
    """No `store:` key keeps the embedded default: folders under data_dir, no Redis."""
    config = parse_config({}, "<test>")
    assert config.store.kind == "files"
    assert config.coordination is None
    assert parse_config({"store": {"type": "files"}}, "<t>").store == config.store


def test_s3_store_with_defaults(tmp_path):
    """An S3 store takes region, bucket template, state bucket and lock ttl defaults."""
    config = _load(tmp_path, S3)
    store = config.store
    assert (store.kind, store.endpoint, store.region) == (
        "s3",
        "http://127.0.0.1:8333",
        "us-east-1",
    )
    assert (store.access_key_id, store.secret_access_key) == ("AK", "SK")
    assert store.bucket_template == "{bucket}" and store.state_bucket == "cosedge-state"
    assert config.coordination is not None
    assert config.coordination.lock_ttl == 30.0
    assert (config.coordination.redis.host, config.coordination.redis.port) == ("127.0.0.1", 6379)
    assert "SK" not in repr(config) and "SK" not in str(store)


def test_keys_come_from_the_environment_when_absent():
    """Without keys in the file, COSEDGE_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY are used, and
    without either the missing one is named."""
    raw = {"type": "s3", "endpoint": "https://s3.example.com"}
    env = {"COSEDGE_S3_ACCESS_KEY_ID": "ak", "COSEDGE_S3_SECRET_ACCESS_KEY": "sk"}
    store = check_store(raw, "<t>", env)
    assert (store.access_key_id, store.secret_access_key) == ("ak", "sk")
    with pytest.raises(ConfigError) as info:
        check_store(raw, "<t>", {"COSEDGE_S3_ACCESS_KEY_ID": "ak"})
    assert info.value.key == "store.secret_access_key"
    assert "COSEDGE_S3_SECRET_ACCESS_KEY" in info.value.reason


def test_s3_without_coordination_says_why(tmp_path):
    """`type: s3` without `coordination:` stops start-up, saying the copy locks need it."""
    text = S3.split("coordination:")[0]
    error = _error(tmp_path, text)
    assert error.key == "coordination"
    assert "required with store type s3" in error.reason and "fetched from the origin once" in (
        error.reason
    )


@pytest.mark.parametrize(
    ("store", "key", "reason"),
    [
        ("{type: s4}", "store.type", "must be one of files, s3"),
        (
            "{type: s3, endpoint: ftp://x, access_key_id: a, secret_access_key: b}",
            "store.endpoint",
            "http(s)",
        ),
        ("{type: s3, access_key_id: a, secret_access_key: b}", "store.endpoint", "required"),
        (
            "{type: s3, endpoint: 'http://h:99999', access_key_id: a, secret_access_key: b}",
            "store.endpoint",
            "bad port",
        ),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, colour: 1}",
            "store.colour",
            "unknown key",
        ),
        ("{type: files, endpoint: 'http://h'}", "store.endpoint", "only applies to store type s3"),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, "
            "bucket_template: 'edge-'}",
            "store.bucket_template",
            "must contain {bucket}",
        ),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, "
            "bucket_template: 'Edge_{bucket}'}",
            "store.bucket_template",
            "not a valid S3 bucket",
        ),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, "
            "bucket_template: '{bucket}-{node}'}",
            "store.bucket_template",
            "only {bucket}",
        ),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, "
            "bucket_template: '{bucket}-'}",
            "store.bucket_template",
            "not a valid S3 bucket",
        ),
        (
            "{type: s3, endpoint: 'http://h', access_key_id: a, secret_access_key: b, "
            "state_bucket: 'No'}",
            "store.state_bucket",
            "not a valid S3 bucket",
        ),
        ("[1]", "store", "must be a mapping"),
    ],
)
def test_bad_store_values_name_key_and_reason(tmp_path, store, key, reason):
    """Each bad `store:` value stops start-up with the file, the key and why."""
    error = _error(tmp_path, f"store: {store}\ncoordination: {{redis: 'redis://h'}}\n")
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(str(tmp_path / "c.yaml"))


@pytest.mark.parametrize(
    ("coordination", "key", "reason"),
    [
        ("{redis: 'http://h'}", "coordination.redis", "redis://"),
        ("{}", "coordination.redis", "required"),
        ("{redis: 'redis://h', lock_ttl: 0}", "coordination.lock_ttl", "> 0"),
        ("{redis: 'redis://h', lock_ttl: 'x'}", "coordination.lock_ttl", "> 0"),
        ("{redis: 'redis://h', ttl: 3}", "coordination.ttl", "unknown key"),
        ("redis://h", "coordination", "must be a mapping"),
    ],
)
def test_bad_coordination_values_name_key_and_reason(tmp_path, coordination, key, reason):
    """Each bad `coordination:` value stops start-up with the key and why."""
    error = _error(tmp_path, f"coordination: {coordination}\n")
    assert error.key == key
    assert reason in error.reason


def test_lock_ttl_takes_fractions(tmp_path):
    """`lock_ttl` is seconds and may be fractional (tests use small ones)."""
    config = _load(tmp_path, S3.replace("/0\n", "/0\n  lock_ttl: 2.5\n"))
    assert config.coordination is not None and config.coordination.lock_ttl == 2.5


def test_check_config_reports_store_and_coordination_problems(tmp_path):
    """`cosedge check-config` lists a bad store key and a bad coordination key together."""
    path = tmp_path / "c.yaml"
    path.write_text("store: {type: s3, endpoint: nope}\ncoordination: {redis: 'x://'}\n")
    config, problems = check_config(str(path))
    assert config is None
    assert any("store.endpoint" in p for p in problems)
    assert any("coordination.redis" in p for p in problems)


def test_store_and_coordination_need_a_restart():
    """SIGHUP leaves both as they run: a new store or Redis needs a restart."""
    assert "store" in RESTART_ONLY and "coordination" in RESTART_ONLY


def test_template_must_name_every_configured_bucket(tmp_path):
    """A template that makes a configured bucket's store name too long is refused, naming
    the bucket."""
    long_name = "b" * 40 + "-1250000000"
    text = S3.replace("store:", f"buckets: {{{long_name}: {{}}}}\nstore:").replace(
        "  secret_access_key: SK\n",
        "  secret_access_key: SK\n  bucket_template: 'cosedge-edge-{bucket}'\n",
    )
    error = _error(tmp_path, text)
    assert error.key == "store.bucket_template"
    assert long_name in error.reason and "not a valid S3 bucket name" in error.reason
