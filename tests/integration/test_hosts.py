"""Hosts over real SSH against the lab: commands, files, host keys, unreachable hosts."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from ops.config import load_environment
from ops.console import CHANGED, RecordingReporter
from ops.errors import HostKeyError
from ops.lab import lab_up
from ops.transport import Fleet
from tests.integration.conftest import Lab, opskit, write_env

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_text(lab: Lab, hosts: str, known_hosts: Path) -> str:
    return (
        f"HOSTS={hosts}\nDEPLOY_USER=root\nSSH_IDENTITY_FILE={lab.env.identity_file}\nSSH_KNOWN_HOSTS={known_hosts}\n"
    )


def test_command_and_file_round_trip(lab: Lab) -> None:
    with Fleet.connect(lab.env, user="root") as fleet:
        host = fleet.hosts[0]
        assert host.run(". /etc/os-release && echo $ID $VERSION_ID").stdout.strip() == "debian 13"
        payload = bytes(range(256)) * 1000
        host.put(io.BytesIO(payload), "/root/roundtrip.bin")
        assert (
            host.run("sha256sum /root/roundtrip.bin").stdout.split()[0]
            == __import__("hashlib").sha256(payload).hexdigest()
        )
        back = io.BytesIO()
        host.get("/root/roundtrip.bin", back)
        assert back.getvalue() == payload
        assert host.run("exit 3", check=False).exit_code == 3


def test_unknown_host_key_is_refused_with_the_way_to_trust_it(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    write_env(tmp_path, "fresh", env_text(lab, lab.env.hosts[0].name, empty))
    env = load_environment("fresh", tmp_path, {})
    with Fleet.connect(env, user="root") as fleet, pytest.raises(HostKeyError) as raised:
        fleet.hosts[0].run("true")
    assert "unknown host key" in raised.value.one_line()
    assert "inv hosts.trust --env fresh" in raised.value.one_line()
    assert empty.read_text() == ""  # never auto-added


def test_changed_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    first, second = lab.env.hosts
    lines = lab.env.known_hosts.read_text().splitlines()
    second_keys = [line.split(" ", 1)[1] for line in lines if line.startswith(f"[127.0.0.1]:{second.port} ")]
    forged = tmp_path / "known_hosts"
    forged.write_text("".join(f"[127.0.0.1]:{first.port} {key}\n" for key in second_keys))
    write_env(tmp_path, "forged", env_text(lab, first.name, forged))
    done = opskit(tmp_path, "ops.status", "--env", "forged")
    assert done.returncode == 1
    assert "host key CHANGED" in done.stdout


def test_trust_shows_fingerprints_and_pins_after_yes(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "env" / "new.known_hosts"
    write_env(tmp_path, "new", env_text(lab, lab.env.hosts[0].name, known))
    refused = opskit(tmp_path, "hosts.trust", "--env", "new")
    assert refused.returncode == 1
    assert "SHA256:" in refused.stdout and "no terminal to confirm" in refused.stdout
    assert not known.exists()
    pinned = opskit(tmp_path, "hosts.trust", "--env", "new", "--yes")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "1 hosts: 1 pinned now, 0 not pinned" in pinned.stdout
    status = opskit(tmp_path, "ops.status", "--env", "new", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["hosts"][0]["reachable"] is True


def test_an_unreachable_host_is_reported_while_the_other_succeeds(lab: Lab, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    hosts = f"{lab.env.hosts[0].name},{dead}"
    write_env(tmp_path, "mixed", env_text(lab, hosts, lab.env.known_hosts))
    done = opskit(tmp_path, "ops.status", "--env", "mixed", "--json")
    assert done.returncode == 1
    rows = {row["host"]: row for row in json.loads(done.stdout)["hosts"]}
    assert rows[lab.env.hosts[0].name]["reachable"] is True
    assert rows[lab.env.hosts[0].name]["os"] == "Debian 13"
    assert rows[dead]["reachable"] is False
    assert "unreachable: connection refused" in rows[dead]["error"]
    table = opskit(tmp_path, "ops.status", "--env", "mixed")
    assert "2 hosts: 1 reachable, 1 unreachable" in table.stdout


def test_status_of_fresh_hosts_falls_back_to_the_bootstrap_user(lab: Lab) -> None:
    done = opskit(lab.root, "ops.status", "--env", "itest", "--json")
    assert done.returncode == 0, done.stderr
    hosts = json.loads(done.stdout)["hosts"]
    assert len(hosts) == 2
    for row in hosts:
        assert row["reachable"] and row["docker"] == "not installed"
        assert row["root_free_bytes"] > 0


def test_lab_up_again_changes_nothing(lab: Lab) -> None:
    reporter = RecordingReporter()
    lab_up(lab.spec, reporter)
    assert [event for event in reporter.events if event.status == CHANGED] == []
