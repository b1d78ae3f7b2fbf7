"""`cosedge-isp lookup` and `check`: output format and exit status."""

from __future__ import annotations

import pytest

from edge.isp.cli import main


@pytest.fixture
def tables(tmp_path):
    (tmp_path / "chinatelecom.txt").write_text("# t\n202.96.128.0/18\n")
    (tmp_path / "chinaunicom.txt").write_text("# t\n202.96.128.0/24\n202.106.0.0/16\n")
    return str(tmp_path)


def test_lookup_format(tables, capsys):
    """One `IP<TAB>isp[,isp]` line per address, ISPs sorted, `-` for none, exit 0."""
    code = main(["lookup", "--tables", tables, "202.96.128.86", "202.106.0.20", "8.8.8.8"])
    assert code == 0
    assert capsys.readouterr().out == (
        "202.96.128.86\tchinatelecom,chinaunicom\n202.106.0.20\tchinaunicom\n8.8.8.8\t-\n"
    )


def test_lookup_invalid_address(tables, capsys):
    """A non-address is reported on stderr and the exit status says so."""
    assert main(["lookup", "--tables", tables, "nonsense", "8.8.8.8"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "8.8.8.8\t-\n"
    assert "nonsense" in captured.err


def test_check_ip_literal(tables, capsys):
    """`check` prints address, ISPs, verdict and reason; exit 0 accept, 1 refuse."""
    assert main(["check", "--tables", tables, "202.96.128.86:8080"]) == 0
    assert capsys.readouterr().out == (
        "202.96.128.86\tchinatelecom,chinaunicom\taccept\tin chinatelecom, chinaunicom\n"
    )
    assert main(["check", "--tables", tables, "127.0.0.1"]) == 1
    assert "refuse\tloopback address" in capsys.readouterr().out
    assert main(["check", "--tables", tables, "--extra-cidr", "127.0.0.0/8", "127.0.0.1"]) == 0


def test_check_resolves_domains(tables, capsys):
    """A domain is resolved and every address judged (localhost: loopback, refused)."""
    assert main(["check", "--tables", tables, "localhost:80"]) == 1
    out = capsys.readouterr().out
    assert "127.0.0.1\t-\trefuse\tloopback address" in out


def test_check_bad_address(tables, capsys):
    """A malformed origin is an error with a reason."""
    assert main(["check", "--tables", tables, "http://x"]) == 2
    assert "scheme" in capsys.readouterr().err


def test_lookup_bundled_tables_answers(capsys):
    """SPEC §6 / issue 3: the shipped tables give the four reference answers."""
    addresses = ["202.96.128.86", "211.136.192.6", "202.106.0.20", "8.8.8.8"]
    assert main(["lookup", *addresses]) == 0
    assert capsys.readouterr().out == (
        "202.96.128.86\tchinatelecom\n"
        "211.136.192.6\tchinamobile\n"
        "202.106.0.20\tchinaunicom\n"
        "8.8.8.8\t-\n"
    )
