"""Provisioning plans from canned facts, and provision() over fake runners: no SSH, no lab."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest

from ops.config import Environment, HostSpec, load_environment
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, RecordingReporter
from ops.errors import ConfigError, HostError
from ops.provision import (
    DOCKER_CE_PACKAGES,
    DOCKER_KEY_FINGERPRINT,
    SSHD_DROPIN,
    STEP_KEYS,
    STEPS,
    Context,
    ProvisionSettings,
    StepLoop,
    StepPlan,
    facts_script,
    parse_facts,
    plan_host,
    provision,
)
from ops.transport import CommandResult

FIXTURES = Path(__file__).parent / "fixtures"
LAB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5jV1uWulYwlwLl+yoXPFqx00FSnqUJvY2tOizIMWaz opskit-lab"
FACTS_MARK = "s os-release;"

OS_RELEASE = {
    "ubuntu-24.04": 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
    "VERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=noble\n",
    "ubuntu-22.04": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
    "VERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=jammy\n",
    "ubuntu-20.04": 'PRETTY_NAME="Ubuntu 20.04.6 LTS"\nNAME="Ubuntu"\nVERSION_ID="20.04"\n'
    "VERSION_CODENAME=focal\nID=ubuntu\n",
    "debian-12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n',
    "debian-13": 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\nVERSION_CODENAME=trixie\nID=debian\n',
    "rocky-9": 'PRETTY_NAME="Rocky Linux 9.4"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n',
}
SSHD_T = "port 22\npermitrootlogin without-password\npasswordauthentication yes\nkbdinteractiveauthentication no\n"


def fresh_output(os_name: str, *, systemd: bool = True, arch: str = "amd64") -> str:
    """What the facts script prints on a fresh cloud server of that OS."""
    sections = {
        "os-release": OS_RELEASE[os_name],
        "arch": arch,
        "systemd": "yes" if systemd else "",
        "container": "",
        "packages": "apt\nbase-files\nopenssh-server\nsudo\nsystemd\n",
        "apt-age": "never",
        "file /etc/fstab": "UUID=abc / ext4 defaults 0 1\n",
        "file /etc/default/ufw": "",
        "sshd": SSHD_T,
        "services": "docker  \nfail2ban  \n",
        "sysctl": "vm.overcommit_memory=0\nwritable vm.overcommit_memory",
    }
    text = "".join(f"\n@@{name}@@\n{body}" for name, body in sections.items())
    return text + "\n@@end@@\n"


def settings(**changes: object) -> ProvisionSettings:
    base = ProvisionSettings(deploy_user="deploy", project="demo", authorized_keys=(LAB_KEY,))
    return replace(base, **changes)  # type: ignore[arg-type]


def by_step(plans: list[StepPlan]) -> dict[str, StepPlan]:
    return {plan.step: plan for plan in plans}


def commands(plan: StepPlan) -> list[str]:
    return [command for change in plan.changes for command in change.commands]


def written(command: str) -> str:
    """The content a write_file command puts in place (decoded from its base64)."""
    match = re.search(r"printf %s (\S+) \| base64 -d", command)
    assert match, command
    return base64.b64decode(match.group(1)).decode()


# ---------------------------------------------------------------- plans per OS


@pytest.mark.parametrize(("os_name", "codename"), [("ubuntu-24.04", "noble"), ("ubuntu-22.04", "jammy")])
def test_ubuntu_plan_uses_dockers_repository_with_the_pinned_key(os_name: str, codename: str) -> None:
    plans = by_step(plan_host(parse_facts(fresh_output(os_name)), settings()))

    docker = plans["docker packages"]
    assert docker.status == WOULD_CHANGE
    cmds = commands(docker)
    source = next(written(c) for c in cmds if "docker.list" in c)
    assert source == (
        f"deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu {codename} stable\n"
    )
    assert any("https://download.docker.com/linux/ubuntu/gpg" in c for c in cmds)
    assert any(DOCKER_KEY_FINGERPRINT in c and "--show-keys" in c for c in cmds)
    install = next(c for c in cmds if " install " in c and "docker-ce" in c)
    for package in DOCKER_CE_PACKAGES:
        assert package in install.split()
    # Unattended apt on Ubuntu: no prompts, no needrestart hang, wait for the dpkg lock.
    for needle in ("DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=a", "DPkg::Lock::Timeout=600"):
        assert needle in install
    assert install.startswith("env ")  # survives sudo's env_reset


def test_ubuntu_plan_covers_every_step_on_a_fresh_server() -> None:
    plans = by_step(plan_host(parse_facts(fresh_output("ubuntu-24.04")), settings()))

    assert plans["os"].status == OK and "Ubuntu 24.04" in plans["os"].detail
    assert plans["apt cache"].detail.startswith("apt-get update (never refreshed)")
    packages = commands(plans["packages"])[0].split()
    for package in (
        "ca-certificates",
        "curl",
        "gnupg",
        "ufw",
        "fail2ban",
        "python3-systemd",
        "unattended-upgrades",
        "systemd-timesyncd",
    ):
        assert package in packages
    assert "sudo" not in packages  # already installed
    daemon = written(commands(plans["docker daemon.json"])[0])
    assert '"max-size": "10m"' in daemon and '"max-file": "3"' in daemon and '"live-restore": true' in daemon
    assert "dockerd --validate --config-file=" in commands(plans["docker daemon.json"])[0]
    assert commands(plans["docker engine"]) == ["systemctl enable --now docker"]
    deploy = commands(plans["deploy user"])
    assert deploy[0].startswith("useradd --create-home")
    assert written(deploy[2]) == LAB_KEY + "\n"
    assert "visudo -cqf" in deploy[3] and "deploy ALL=(ALL:ALL) NOPASSWD:ALL" in written(deploy[3])
    firewall = commands(plans["firewall"])
    assert firewall[-1] == "ufw --force enable"
    assert [c.split()[2] for c in firewall if c.startswith("ufw allow")] == ["22/tcp", "80/tcp", "443/tcp"]
    jail = next(written(c) for c in commands(plans["fail2ban"]) if "jail.d" in c)
    assert "backend = systemd" in jail and "banaction = ufw" in jail
    assert commands(plans["time sync"]) == ["timedatectl set-ntp true"]
    assert plans["swap"].status == SKIPPED
    assert any(c.startswith("sysctl -q -w vm.overcommit_memory=1") for c in commands(plans["sysctl"]))
    assert commands(plans["project dir"]) == ["install -d -m 0750 -o deploy -g deploy /opt/demo"]
    sshd = written(commands(plans["ssh hardening"])[0])
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd


def test_ubuntu_distro_source_uses_ubuntus_packages() -> None:
    plans = by_step(plan_host(parse_facts(fresh_output("ubuntu-24.04")), settings(docker_source="distro")))
    cmds = commands(plans["docker packages"])
    assert len(cmds) == 1 and cmds[0].endswith("install --no-install-recommends docker.io docker-compose-v2")


def test_debian_12_defaults_to_dockers_repository_for_compose_v2() -> None:
    plans = by_step(plan_host(parse_facts(fresh_output("debian-12", arch="arm64")), settings()))
    cmds = commands(plans["docker packages"])
    source = next(written(c) for c in cmds if "docker.list" in c)
    assert source == (
        "deb [arch=arm64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable\n"
    )
    assert any("https://download.docker.com/linux/debian/gpg" in c for c in cmds)
    # Debian's unattended-upgrades default takes point releases too: narrowed to security.
    origins = next(written(c) for c in commands(plans["unattended-upgrades"]) if "52opskit" in c)
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in origins and "Debian-Security" in origins


def test_debian_12_with_distro_packages_is_refused_for_lack_of_compose_v2() -> None:
    with pytest.raises(HostError, match="no Compose v2"):
        plan_host(parse_facts(fresh_output("debian-12")), settings(docker_source="distro"))


def test_debian_13_uses_debians_own_docker_and_names_docker_cli() -> None:
    plans = by_step(plan_host(parse_facts(fresh_output("debian-13", systemd=False)), settings()))
    cmds = commands(plans["docker packages"])
    assert cmds == [
        next(c for c in cmds if c.endswith("install --no-install-recommends docker.io docker-cli docker-compose"))
    ]
    engine = commands(plans["docker engine"])[0]
    assert "setsid nohup dockerd" in engine and "systemctl" not in engine
    fail2ban = commands(plans["fail2ban"])
    assert fail2ban[0] == "touch /var/log/auth.log"
    jail = written(fail2ban[1])
    assert "backend = polling" in jail and "logpath = /var/log/auth.log" in jail
    assert "chrony" in commands(plans["packages"])[0].split()


def test_without_systemd_the_services_started_are_recorded_for_boot_in_order() -> None:
    # Nothing else would start them when the host boots again; with systemd, units are enabled instead.
    plans = by_step(plan_host(parse_facts(fresh_output("debian-13", systemd=False)), settings()))
    scripts = {
        path: written(command)
        for step in ("firewall", "docker engine", "fail2ban")
        for command in commands(plans[step])
        if (path := command.rsplit(" ", 1)[-1]).startswith("/etc/opskit/boot.d/")
    }
    assert sorted(scripts) == [
        "/etc/opskit/boot.d/10-ufw",
        "/etc/opskit/boot.d/20-docker",
        "/etc/opskit/boot.d/30-fail2ban",
    ]
    assert "ufw-init start" in scripts["/etc/opskit/boot.d/10-ufw"]
    assert commands(plans["docker engine"])[0].split(";")[0] in scripts["/etc/opskit/boot.d/20-docker"]
    assert all(script.startswith("#!/bin/sh\n") for script in scripts.values())
    with_systemd = plan_host(parse_facts(fresh_output("debian-13")), settings())
    assert not [c for plan in with_systemd for c in commands(plan) if "/etc/opskit/boot.d" in c]


def test_a_provisioned_host_plans_nothing() -> None:
    """Facts read from a lab host after provisioning: every step is ok (the second run's promise)."""
    facts = parse_facts((FIXTURES / "facts-debian13-provisioned.txt").read_text())
    plans = plan_host(facts, settings(project="prov"))
    statuses = {plan.step: plan.status for plan in plans}
    assert statuses == {**{plan.step: OK for plan in plans}, "swap": SKIPPED, "registry ca": SKIPPED}
    assert "read-only" in by_step(plans)["sysctl"].detail
    assert "not started in a container" in by_step(plans)["time sync"].detail


def test_changed_settings_show_up_as_changes_on_a_provisioned_host() -> None:
    facts = parse_facts((FIXTURES / "facts-debian13-provisioned.txt").read_text())
    plans = by_step(
        plan_host(
            facts,
            settings(
                project="prov",
                docker_log_max_size="50m",
                firewall_ports=(("80", "tcp"), ("443", "tcp"), ("51820", "udp")),
            ),
        )
    )
    assert plans["docker daemon.json"].status == WOULD_CHANGE
    daemon_cmds = commands(plans["docker daemon.json"])
    assert '"max-size": "50m"' in written(daemon_cmds[0])
    assert "kill $(pidof dockerd)" in daemon_cmds[1]  # log options need a restart; live-restore keeps containers
    assert commands(plans["firewall"]) == ["ufw allow 51820/udp comment opskit"]


def test_skipped_steps_plan_nothing() -> None:
    plans = by_step(plan_host(parse_facts(fresh_output("ubuntu-24.04")), settings(skip=frozenset({"docker", "ssh"}))))
    for step in ("docker packages", "docker daemon.json", "docker engine", "ssh hardening"):
        assert plans[step].status == SKIPPED and plans[step].changes == ()


@pytest.mark.parametrize("os_name", ["ubuntu-20.04", "rocky-9"])
def test_unsupported_os_is_refused_by_the_plan(os_name: str) -> None:
    with pytest.raises(HostError, match="is not supported"):
        plan_host(parse_facts(fresh_output(os_name)), settings())


def test_every_step_belongs_to_a_provision_skip_word_in_the_order_they_run() -> None:
    keys = [step.key for step in STEPS if step.key != "os"]
    assert tuple(dict.fromkeys(keys)) == STEP_KEYS
    assert STEPS[0].key == "os" and STEPS[-1].key == "ssh"  # refuse first; close root login last


def test_a_dry_run_plans_each_install_once() -> None:
    plans = plan_host(parse_facts(fresh_output("ubuntu-24.04")), settings())
    installs = [p for plan in plans for change in plan.changes for p in change.installs]
    assert "ufw" in installs and "fail2ban" in installs
    assert len(installs) == len(set(installs))


def test_after_apply_later_steps_plan_from_the_facts_read_again() -> None:
    """The loop apply shares with the dry run: handed the facts read after a step, later steps
    plan from those (here: the packages did not install, so the firewall plans ufw again)."""
    fresh = parse_facts(fresh_output("ubuntu-24.04"))
    loop = StepLoop(fresh, Context(settings()))
    plans: dict[str, StepPlan] = {}
    for step, plan in loop:
        plans[step.name] = plan
        if plan.changes:
            loop.applied(fresh)
    assert plans["firewall"].changes[0].installs == ("ufw",)
    assert "ufw" in plans["packages"].changes[0].installs


# ---------------------------------------------------------------- provision() over fake runners


class FakeRunner:
    """Answers commands from (substring, result) rules, first match wins; records every command."""

    def __init__(self, spec: HostSpec, rules: list[tuple[str, CommandResult | HostError]], log: list[str]):
        self.spec = spec
        self.rules = rules
        self.log = log

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.log.append(command)
        for needle, answer in self.rules:
            if needle in command:
                if isinstance(answer, HostError):
                    raise answer
                return CommandResult(command, answer.exit_code, answer.stdout, answer.stderr)
        return CommandResult(command, 0, "", "")

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self.log.append(f"put {remote}")

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        self.log.append(f"get {remote}")

    def ssh_client(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        pass


def ok(stdout: str = "") -> CommandResult:
    return CommandResult("", 0, stdout, "")


def make_env(tmp_path: Path, hosts: str = "10.0.0.1,10.0.0.2", extra: str = "") -> Environment:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "id_ed25519"  # no .pub next to it: the public key is derived with paramiko
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "test.env").write_text(f"HOSTS={hosts}\nSSH_IDENTITY_FILE=id_ed25519\nPROJECT=demo\n{extra}")
    return load_environment("test", tmp_path, {})


Rules = dict[str, list[tuple[str, CommandResult | HostError]]]


def factory_for(rules: Rules, log: dict[str, list[str]]) -> Callable[[HostSpec], FakeRunner]:
    def make(spec: HostSpec) -> FakeRunner:
        return FakeRunner(
            spec, rules.get(spec.target, []) + rules.get(spec.address, []), log.setdefault(spec.address, [])
        )

    return make


READ_ONLY = ("true", "sudo -n true", FACTS_MARK)


def mutating(log: list[str]) -> list[str]:
    return [c for c in log if not any(c == r or (r == FACTS_MARK and FACTS_MARK in c) for r in READ_ONLY)]


def test_unsupported_os_is_refused_before_any_change(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    log: dict[str, list[str]] = {}
    rules: Rules = {
        "10.0.0.1": [(FACTS_MARK, ok(fresh_output("ubuntu-20.04")))],
        "10.0.0.2": [(FACTS_MARK, ok(fresh_output("rocky-9")))],
    }
    reporter = RecordingReporter()
    result = provision(env, reporter, runner_factory=factory_for(rules, log))

    assert not result.ok and len(result.failed) == 2
    for report in result.hosts:
        assert report.failed_step == "os"
        assert report.error is not None and "is not supported" in report.error.one_line()
        assert "nothing was changed" in report.error.one_line()
    assert [mutating(commands) for commands in log.values()] == [[], []]
    assert reporter.count(FAILED) == 2 and reporter.count(CHANGED) == 0


def test_dry_run_reports_would_change_and_runs_nothing_that_changes(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    log: dict[str, list[str]] = {}
    rules: Rules = {h: [(FACTS_MARK, ok(fresh_output("ubuntu-24.04")))] for h in ("10.0.0.1", "10.0.0.2")}
    result = provision(env, RecordingReporter(), dry_run=True, runner_factory=factory_for(rules, log))

    assert result.ok and result.changed == 0
    assert result.counts[WOULD_CHANGE] > 20
    assert [mutating(commands) for commands in log.values()] == [[], []]
    assert "dry run" in result.summary_line()
    # A dry run shows what plan_host plans: one loop for both.
    planned = plan_host(parse_facts(fresh_output("ubuntu-24.04")), ProvisionSettings.from_env(env))
    shown = [(e.step, e.status, e.detail) for e in result.hosts[0].events if e.step not in ("connect",)]
    assert shown == [(plan.step, plan.status, plan.detail) for plan in planned]


def test_apt_failure_fails_that_host_with_the_step_and_output_and_the_other_goes_on(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    log: dict[str, list[str]] = {}
    apt_error = CommandResult("", 100, "Reading package lists...", "E: Unable to locate package ufw")
    provisioned = (FIXTURES / "facts-debian13-provisioned.txt").read_text()
    rules: Rules = {
        "10.0.0.1": [(FACTS_MARK, ok(fresh_output("ubuntu-24.04"))), ("install --no-install-recommends", apt_error)],
        "10.0.0.2": [(FACTS_MARK, ok(provisioned))],
    }
    reporter = RecordingReporter()
    result = provision(env, reporter, runner_factory=factory_for(rules, log))

    bad, good = result.hosts
    assert bad.failed_step == "packages"
    assert "E: Unable to locate package ufw" in bad.output
    assert bad.error is not None and "10.0.0.1 [packages]" in bad.error.one_line()
    assert [e.step for e in bad.events][-1] == "packages"  # nothing after the failing step
    assert good.ok and good.count(FAILED) == 0 and good.count(CHANGED) >= 0
    assert [e.status for e in reporter.events if e.host == "10.0.0.1" and e.step == "packages"] == [FAILED]
    assert result.to_dict()["hosts"][0]["failed_step"] == "packages"  # type: ignore[index]


def test_unreachable_and_wrong_key_hosts_fail_at_connect_and_others_go_on(tmp_path: Path) -> None:
    env = make_env(tmp_path, hosts="10.0.0.1,10.0.0.2,10.0.0.3")
    provisioned = (FIXTURES / "facts-debian13-provisioned.txt").read_text()
    rules: Rules = {
        "10.0.0.1": [("", HostError("unreachable: connection refused", where="10.0.0.1"))],
        "root@10.0.0.2:22": [("", HostError("authentication as root failed", where="10.0.0.2"))],
        "deploy@10.0.0.2:22": [("", HostError("authentication as deploy failed", where="10.0.0.2"))],
        "10.0.0.3": [(FACTS_MARK, ok(provisioned))],
    }
    log: dict[str, list[str]] = {}
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    one, two, three = result.hosts
    assert one.failed_step == "connect" and "unreachable" in str(one.error)
    assert log["10.0.0.1"] == ["true"]  # no fallback login when the host is not there at all
    assert two.failed_step == "connect" and "authentication as root failed" in str(two.error)
    assert three.ok and three.user == "root"


def test_root_refused_falls_back_to_the_deploy_user_with_sudo(tmp_path: Path) -> None:
    env = make_env(tmp_path, hosts="10.0.0.1")
    provisioned = (FIXTURES / "facts-debian13-provisioned.txt").read_text()
    rules: Rules = {
        "root@10.0.0.1:22": [("", HostError("authentication as root failed", where="10.0.0.1"))],
        "deploy@10.0.0.1:22": [(FACTS_MARK, ok(provisioned))],
    }
    log: dict[str, list[str]] = {}
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    (report,) = result.hosts
    assert report.ok and report.user == "deploy"
    assert report.events[0].step == "connect" and "root login refused" in report.events[0].detail
    facts_command = next(c for c in log["10.0.0.1"] if FACTS_MARK in c)
    assert facts_command.startswith("sudo -n sh -c ")


def test_a_bootstrap_user_without_sudo_fails_with_a_hint(tmp_path: Path) -> None:
    env = make_env(tmp_path, hosts="10.0.0.1", extra="BOOTSTRAP_USER=admin\n")
    rules: Rules = {"10.0.0.1": [("sudo -n true", CommandResult("", 1, "", "sudo: a password is required"))]}
    log: dict[str, list[str]] = {}
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    (report,) = result.hosts
    assert report.failed_step == "connect"
    assert report.error is not None
    assert "admin cannot use sudo without a password" in report.error.one_line()
    assert "NOPASSWD" in report.error.one_line()
    assert mutating(log["10.0.0.1"]) == []


def test_root_login_is_closed_only_after_a_fresh_deploy_login(tmp_path: Path) -> None:
    skip = "apt,packages,docker,deploy-user,firewall,unattended-upgrades,fail2ban,time,swap,sysctl,project-dir"
    env = make_env(tmp_path, hosts="10.0.0.1", extra=f"PROVISION_SKIP={skip}\n")
    log: dict[str, list[str]] = {}
    rules: Rules = {"root@10.0.0.1:22": [(FACTS_MARK, ok(fresh_output("debian-13", systemd=False)))]}
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    assert result.ok, result.hosts[0].error
    root_cmds = [c for c in log["10.0.0.1"]]
    writes = [(i, written(c)) for i, c in enumerate(root_cmds) if SSHD_DROPIN in c and "base64 -d" in c]
    assert len(writes) == 2
    assert "PermitRootLogin" not in writes[0][1] and "PasswordAuthentication no" in writes[0][1]
    assert "PermitRootLogin no" in writes[1][1]
    # Between the two: sshd -t, the reload, and a fresh login as deploy proving sudo works.
    between = root_cmds[writes[0][0] : writes[1][0]]
    assert "sshd -t" in between and any("kill -HUP" in c for c in between)
    assert between.count("sudo -n true") == 1


def test_prohibit_password_kept_as_is_needs_no_staged_root_restriction(tmp_path: Path) -> None:
    skip = "apt,packages,docker,deploy-user,firewall,unattended-upgrades,fail2ban,time,swap,sysctl,project-dir"
    env = make_env(tmp_path, hosts="10.0.0.1", extra=f"PROVISION_SKIP={skip}\nROOT_LOGIN=prohibit-password\n")
    log: dict[str, list[str]] = {}
    # sshd -T says without-password: the old spelling of prohibit-password.
    rules: Rules = {"10.0.0.1": [(FACTS_MARK, ok(fresh_output("ubuntu-24.04")))]}
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    assert result.ok, result.hosts[0].error
    writes = [written(c) for c in log["10.0.0.1"] if SSHD_DROPIN in c and "base64 -d" in c]
    assert len(writes) == 1 and "PermitRootLogin prohibit-password" in writes[0]
    assert any("systemctl try-reload-or-restart ssh.service" in c for c in log["10.0.0.1"])


def test_a_host_where_sshd_cannot_report_its_config_fails_the_ssh_step(tmp_path: Path) -> None:
    env = make_env(tmp_path, hosts="10.0.0.1", extra="PROVISION_SKIP=apt,packages,docker,deploy-user\n")
    output = fresh_output("debian-13").replace(SSHD_T, "Missing privilege separation directory: /run/sshd\n")
    log: dict[str, list[str]] = {}
    result = provision(
        env, RecordingReporter(), runner_factory=factory_for({"10.0.0.1": [(FACTS_MARK, ok(output))]}, log)
    )

    (report,) = result.hosts
    assert report.failed_step == "ssh hardening" and "Missing privilege separation" in str(report.error)
    assert not any(SSHD_DROPIN in c for c in log["10.0.0.1"] if FACTS_MARK not in c)


def test_a_config_sshd_rejects_is_rolled_back_and_not_reloaded(tmp_path: Path) -> None:
    env = make_env(tmp_path, hosts="10.0.0.1", extra="PROVISION_SKIP=apt,packages,docker,deploy-user\n")
    log: dict[str, list[str]] = {}
    rules: Rules = {
        "10.0.0.1": [
            (FACTS_MARK, ok(fresh_output("debian-13", systemd=False))),
            ("sshd -t", CommandResult("", 255, "", "Bad configuration option: Foo")),
        ]
    }
    result = provision(env, RecordingReporter(), runner_factory=factory_for(rules, log))

    (report,) = result.hosts
    assert report.failed_step == "ssh hardening"
    assert "old config restored" in str(report.error) and "Bad configuration option" in report.output
    assert not any("kill -HUP" in c or "try-reload-or-restart" in c for c in mutating(log["10.0.0.1"]))
    assert any(SSHD_DROPIN + ".opskit-old " + SSHD_DROPIN in c or "rm -f " + SSHD_DROPIN in c for c in log["10.0.0.1"])


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FIREWALL_ALLOW_PORTS=80,http", "not PORT"),
        ("FIREWALL_ALLOW_PORTS=1000:2000", "needs /tcp or /udp"),
        ("DOCKER_SOURCE=snap", "not one of auto, distro, docker"),
        ("PROVISION_SKIP=docker,dns", "unknown step dns"),
        ("SYSCTL=vm.swappiness", "not key=value"),
        ("ROOT_LOGIN=yes", "not one of no, prohibit-password"),
        ("DEPLOY_SUDO=false", "no way to provision these hosts again"),
    ],
)
def test_bad_settings_are_config_errors_before_any_host_is_touched(tmp_path: Path, line: str, message: str) -> None:
    log: dict[str, list[str]] = {}
    with pytest.raises(ConfigError, match=message):
        env = make_env(tmp_path, extra=line + "\n")
        provision(env, RecordingReporter(), runner_factory=factory_for({}, log))
    assert log == {}


def test_settings_read_the_keys_and_derive_the_public_key(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(f"# team\n{LAB_KEY}\n")
    env = make_env(
        tmp_path,
        extra="FIREWALL_ALLOW_PORTS=443 51820/udp\nSWAP_SIZE_MB=512\nDEPLOY_AUTHORIZED_KEYS=keys\nTIME_SYNC=chrony\n",
    )
    s = ProvisionSettings.from_env(env)
    assert s.firewall_ports == (("443", "tcp"), ("51820", "udp"))
    assert s.swap_mb == 512 and s.time_sync == "chrony" and s.root_login == "no" and s.deploy_sudo
    assert len(s.authorized_keys) == 2 and s.authorized_keys[0].startswith("ssh-ed25519 ")
    assert s.authorized_keys[1] == LAB_KEY


# ---------------------------------------------------------------- the team registry's CA

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBlab\n-----END CERTIFICATE-----\n"
CA_PATH = "/etc/docker/certs.d/10.1.2.3:5443/ca.crt"


def with_ca_file(output: str, content: str) -> str:
    """Facts output as the script prints it when the host already has the CA file."""
    return output.replace("\n@@end@@\n", f"\n@@file {CA_PATH}@@\n{content}\n@@end@@\n")


def test_the_registry_ca_is_installed_once_and_then_left_alone() -> None:
    wanted = settings(registry_host="10.1.2.3:5443", registry_ca=CA_PEM)
    assert wanted.registry_ca_path == CA_PATH
    assert f"for f in {CA_PATH} " in facts_script(wanted) or f" {CA_PATH};" in facts_script(wanted)

    fresh = by_step(plan_host(parse_facts(fresh_output("debian-13")), wanted))["registry ca"]
    assert fresh.status == WOULD_CHANGE
    assert fresh.detail == f"install REGISTRY_CA as {CA_PATH} (trusted for 10.1.2.3:5443)"
    (command,) = commands(fresh)
    assert written(command) == CA_PEM
    assert (
        "chmod 0644" in command
        and "chown root:root" in command
        and command.endswith(f"mv -f {CA_PATH}.opskit-new {CA_PATH}")
    )

    # The facts read afterwards hold the file byte for byte: the second run changes nothing.
    again = by_step(plan_host(parse_facts(with_ca_file(fresh_output("debian-13"), CA_PEM)), wanted))
    assert again["registry ca"].status == OK and again["registry ca"].changes == ()
    assert again["registry ca"].detail == f"{CA_PATH} holds REGISTRY_CA"

    other = by_step(plan_host(parse_facts(with_ca_file(fresh_output("debian-13"), "old CA")), wanted))["registry ca"]
    assert other.status == WOULD_CHANGE and other.detail.startswith("replace REGISTRY_CA")


def test_the_registry_ca_step_is_skipped_with_a_reason_and_by_its_word() -> None:
    facts = parse_facts(fresh_output("debian-13"))
    none = by_step(plan_host(facts, settings()))["registry ca"]
    assert (none.status, none.detail) == (SKIPPED, "no private CA to trust (REGISTRY_CA is empty)")
    assert "certs.d" not in facts_script(settings())
    skipped = by_step(
        plan_host(facts, settings(registry_host="10.1.2.3:5443", registry_ca=CA_PEM, skip=frozenset({"registry-ca"})))
    )["registry ca"]
    assert (skipped.status, skipped.detail) == (SKIPPED, "skipped by PROVISION_SKIP")
    assert [step.key for step in STEPS].index("registry-ca") == [step.name for step in STEPS].index("docker engine") + 1


def test_settings_read_the_registry_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(CA_PEM)
    env = make_env(tmp_path, extra="REGISTRY=10.1.2.3:5443/team\nREGISTRY_CA=ca.crt\n")
    s = ProvisionSettings.from_env(env)
    assert (s.registry_host, s.registry_ca, s.registry_ca_path) == ("10.1.2.3:5443", CA_PEM, CA_PATH)
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"REGISTRY_CA: ca\.crt holds no PEM certificate"):
        ProvisionSettings.from_env(env)
