"""ORCHESTRATOR=swarm: the settings, the formation's facts and plan, and provisioning over fake runners."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from ops.config import HostSpec, load_environment
from ops.console import CHANGED, OK, SKIPPED, WOULD_CHANGE, RecordingReporter
from ops.errors import ConfigError, HostError
from ops.provision import ProvisionSettings, parse_facts, plan_host, provision
from ops.provision.run import HostProvisionReport, form_swarm
from ops.provision.swarm import MemberNode, NodeFacts, parse_node_facts, plan_formation
from ops.transport import CommandResult
from tests.unit.test_provision import FACTS_MARK, fresh_output, make_env, written

SWARM_MARK = "s swarm;"
MANAGER, WORKER1, WORKER2 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
SPECS = (HostSpec(MANAGER, roles=("manager",)), HostSpec(WORKER1, roles=("worker",)), HostSpec(WORKER2))
TOKEN = "SWMTKN-1-" + "x" * 20 + "-" + "y" * 10  # the shape of a join token, made from parts


def bad_env(tmp_path: Path, text: str) -> str:
    (tmp_path / "env").mkdir(exist_ok=True)
    (tmp_path / "env" / "bad.env").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_environment("bad", tmp_path, {})
    return caught.value.one_line()


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HOSTS=a.example\nORCHESTRATOR=k8s\n", "env/bad.env:2: ORCHESTRATOR: 'k8s' is not one of compose, swarm"),
        (
            "HOSTS=a.example,b.example/db\nORCHESTRATOR=swarm\n",
            "env/bad.env:1: ORCHESTRATOR=swarm but no host has the manager role",
        ),
        (
            "HOSTS=a.example/manager\nORCHESTRATOR=swarm\nSWARM_ADVERTISE_ADDR=b.example=10.0.0.2\n",
            "env/bad.env:3: SWARM_ADVERTISE_ADDR: 'b.example' is not one of HOSTS",
        ),
        (
            "HOSTS=a.example/manager\nORCHESTRATOR=swarm\nSWARM_ADVERTISE_ADDR=a.example=eth0\n",
            "env/bad.env:3: SWARM_ADVERTISE_ADDR: 'a.example=eth0' is not HOST=IP-ADDRESS",
        ),
        (
            "HOSTS=a.example/manager\nSWARM_ADVERTISE_ADDR=a.example=10.0.0.1\n",
            "env/bad.env:2: SWARM_ADVERTISE_ADDR is set but ORCHESTRATOR is not swarm",
        ),
    ],
)
def test_bad_orchestrator_settings_are_one_line_with_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    line = bad_env(tmp_path, text)
    assert line.startswith(expected), line
    assert "\n" not in line


def test_swarm_settings_read_roles_and_advertise_addresses(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "s.env").write_text(
        "HOSTS=10.0.0.1:2222/manager,10.0.0.2/db\nORCHESTRATOR=swarm\nSWARM_ADVERTISE_ADDR=10.0.0.1:2222=192.168.1.1\n"
    )
    env = load_environment("s", tmp_path, {})
    assert env.orchestrator.swarm and [spec.manager for spec in env.hosts] == [True, False]
    assert env.orchestrator.advertise_address("10.0.0.1:2222") == "192.168.1.1"
    assert env.orchestrator.advertise_address("10.0.0.2") == ""
    (tmp_path / "env" / "c.env").write_text("HOSTS=10.0.0.1\n")
    assert load_environment("c", tmp_path, {}).orchestrator.orchestrator == "compose"  # the default


def test_swarm_nodes_get_live_restore_off_and_compose_hosts_keep_it() -> None:
    facts = parse_facts(fresh_output("ubuntu-24.04"))
    base = ProvisionSettings(deploy_user="deploy", project="demo", authorized_keys=("ssh-ed25519 AAAA k",))
    for swarm, wanted in ((True, False), (False, True)):
        plans = {plan.step: plan for plan in plan_host(facts, base.__class__(**{**base.__dict__, "swarm": swarm}))}
        daemon = json.loads(written(plans["docker daemon.json"].changes[0].commands[0]))
        assert daemon["live-restore"] is wanted
        assert ("live-restore off (swarm)" in plans["docker daemon.json"].detail) is swarm


# ---------------------------------------------------------------- facts


def node_output(
    *,
    swarm: dict[str, object] | None = None,
    routes: str = "",
    default: str = "",
    nodes: str = "",
    ufw: str = "",
) -> str:
    sections = {
        "swarm": json.dumps(swarm or {"LocalNodeState": "inactive", "NodeID": ""}),
        "nodes": nodes,
        "routes": routes,
        "default-route": default,
        "ufw-rules": ufw,
    }
    return "".join(f"\n@@{name}@@\n{body}" for name, body in sections.items()) + "\n@@end@@\n"


def ufw_line(port: str, proto: str, source: str, ours: bool = True) -> str:
    comment = f" comment={b'opskit swarm'.hex()}" if ours else ""
    return f"### tuple ### allow {proto} {port} 0.0.0.0/0 any {source} in{comment}\n"


def test_the_address_is_the_route_to_the_others_and_the_default_route_when_those_are_loopback() -> None:
    real = parse_node_facts(MANAGER, node_output(routes="10.0.0.2 dev ens4 src 10.0.0.1 uid 0"))
    assert real.address == "10.0.0.1"
    # The lab: every host is 127.0.0.1 from here, so the route to the others is loopback.
    lab = parse_node_facts(
        "127.0.0.1:2201",
        node_output(
            routes="local 127.0.0.1 dev lo table local src 127.0.0.1 uid 0",
            default="192.0.2.1 via 172.17.0.1 dev eth0 src 172.17.0.5 uid 0",
        ),
    )
    assert lab.address == "172.17.0.5"
    given = parse_node_facts(MANAGER, node_output(routes="10.0.0.2 dev ens4 src 10.0.0.1"), "192.168.1.1")
    assert given.address == "192.168.1.1"


def test_node_facts_read_the_swarm_its_nodes_and_our_ufw_rules() -> None:
    facts = parse_node_facts(
        MANAGER,
        node_output(
            swarm={"LocalNodeState": "active", "NodeID": "n1", "ControlAvailable": True, "Cluster": {"ID": "c1"}},
            nodes='n1 manager ready m1 {"opskit.role.manager":"true","opskit.host":"10.0.0.1","team":"a"}\n'
            "n2 worker down w1 null\n",
            ufw=ufw_line("2377", "tcp", "10.0.0.2") + ufw_line("80", "tcp", "0.0.0.0/0", ours=False),
        ),
    )
    assert (facts.host, facts.state, facts.node_id, facts.manager, facts.cluster_id) == (
        MANAGER,
        "active",
        "n1",
        True,
        "c1",
    )
    assert facts.nodes == {
        "n1": MemberNode("manager", "m1", "ready", frozenset({"manager"}), "10.0.0.1"),
        "n2": MemberNode("worker", "w1", "down"),
    }
    assert facts.ufw_from == {("2377", "tcp", "10.0.0.2"), ("80", "tcp", "0.0.0.0/0")}
    assert facts.ufw_stale == {("2377", "tcp", "10.0.0.2")}


# ---------------------------------------------------------------- the plan


def fresh_fleet() -> dict[str, NodeFacts]:
    return {spec.name: NodeFacts(spec.name, spec.address) for spec in SPECS}


def formed_fleet() -> dict[str, NodeFacts]:
    """The three hosts as a formed swarm: every port open from the others, labels in place."""
    ids = {MANAGER: "n1", WORKER1: "n2", WORKER2: "n3"}

    def rules(host: str) -> frozenset[tuple[str, str, str]]:
        ports = (("2377", "tcp"), ("7946", "tcp"), ("7946", "udp"), ("4789", "udp"))
        return frozenset((p, proto, other) for other in ids if other != host for p, proto in ports)

    nodes = {
        "n1": MemberNode("manager", "m", "ready", frozenset({"manager"}), MANAGER),
        "n2": MemberNode("worker", "w1", "ready", frozenset({"worker"}), WORKER1),
        "n3": MemberNode("worker", "w2", "ready", frozenset(), WORKER2),
    }
    return {
        host: NodeFacts(
            host,
            host,
            "active",
            node,
            manager=host == MANAGER,
            ufw_from=rules(host),
            ufw_stale=rules(host),
            nodes=nodes if host == MANAGER else {},
        )
        for host, node in ids.items()
    }


def test_a_fresh_fleet_plans_ufw_from_each_peer_init_joins_and_labels() -> None:
    plan = plan_formation(SPECS, fresh_fleet())
    assert plan.leader == MANAGER
    described = [(change.host, change.description) for change in plan.changes if change.kind != "ufw"]
    assert described == [
        (MANAGER, "docker swarm init (advertise 10.0.0.1)"),
        (WORKER1, "join as worker via 10.0.0.1:2377"),
        (WORKER2, "join as worker via 10.0.0.1:2377"),
        (MANAGER, "node labels opskit.role.manager=true, opskit.host=10.0.0.1"),
        (WORKER1, "node labels opskit.role.worker=true, opskit.host=10.0.0.2"),
        (WORKER2, "node labels opskit.host=10.0.0.3"),  # every node names its host, for a deploy
    ]
    ufw = [change for change in plan.changes if change.kind == "ufw" and change.host == WORKER1]
    assert [change.description for change in ufw][:4] == [
        "ufw allow 2377/tcp from 10.0.0.1",
        "ufw allow 7946/tcp from 10.0.0.1",
        "ufw allow 7946/udp from 10.0.0.1",
        "ufw allow 4789/udp from 10.0.0.1",
    ]
    assert len(ufw) == 8 and all("from 10.0.0.2" not in change.description for change in ufw)
    assert ufw[0].commands == ("ufw allow proto tcp from 10.0.0.1 to any port 2377 comment 'opskit swarm'",)
    assert not any(change.kind == "ufw" for change in plan_formation(SPECS, fresh_fleet(), firewall=False).changes)


def test_a_formed_fleet_plans_nothing() -> None:
    plan = plan_formation(SPECS, formed_fleet())
    assert plan.changes == ()


def test_a_down_worker_whose_host_left_hosts_is_removed_and_no_other_node_is() -> None:
    facts = formed_fleet()
    manager = facts[MANAGER]
    departed = {
        "n4": MemberNode("worker", "old", "down", frozenset({"worker"}), "10.0.0.4"),  # decommissioned
        "n5": MemberNode("worker", "busy", "ready", frozenset(), "10.0.0.5"),  # up: left alone
        "n6": MemberNode("manager", "oldm", "down", frozenset(), "10.0.0.6"),  # a manager: left alone
        "n7": MemberNode("worker", "foreign", "down"),  # no host label: not ours to judge
        "n8": MemberNode("worker", "w1-before", "down", frozenset(), WORKER1),  # WORKER1's node until it rejoined
    }
    facts[MANAGER] = NodeFacts(
        MANAGER, MANAGER, "active", "n1", manager=True, ufw_from=manager.ufw_from, ufw_stale=manager.ufw_stale,
        nodes={**manager.nodes, **departed},
    )  # fmt: skip
    plan = plan_formation(SPECS, facts)
    assert [(c.host, c.description, c.kind, c.commands) for c in plan.changes] == [
        (
            MANAGER,
            "remove node old (its host 10.0.0.4 is no longer in HOSTS; the node is down)",
            "remove",
            ("docker node rm n4",),
        ),
        (
            MANAGER,
            f"remove node w1-before (its host {WORKER1} joined again as another node; the node is down)",
            "remove",
            ("docker node rm n8",),
        ),
    ]


def test_role_changes_promote_and_relabel_and_stale_rules_go() -> None:
    specs = (SPECS[0], HostSpec(WORKER1, roles=("manager", "db")), SPECS[2])
    facts = formed_fleet()
    stale = ("4789", "udp", "10.0.0.9")
    facts[WORKER2] = NodeFacts(
        WORKER2, WORKER2, "active", "n3", ufw_from=facts[WORKER2].ufw_from, ufw_stale={*facts[WORKER2].ufw_stale, stale}
    )
    plan = plan_formation(specs, facts)
    assert [(c.host, c.description) for c in plan.changes] == [
        (WORKER2, "ufw drop 4789/udp from 10.0.0.9 (not a node)"),
        (WORKER1, "promote to manager"),
        (WORKER1, "node labels opskit.role.manager=true, opskit.role.db=true, -opskit.role.worker"),
    ]


def test_a_node_of_another_swarm_or_without_an_address_is_refused_with_what_to_do() -> None:
    facts = fresh_fleet()
    facts[WORKER1] = NodeFacts(WORKER1, WORKER1, "active", "zz9")
    with pytest.raises(HostError) as caught:
        plan_formation(SPECS, facts)
    assert caught.value.where == WORKER1 and "docker swarm leave --force" in caught.value.one_line()
    facts = fresh_fleet()
    facts[WORKER2] = NodeFacts(WORKER2, "")
    with pytest.raises(HostError) as caught:
        plan_formation(SPECS, facts)
    assert f"SWARM_ADVERTISE_ADDR={WORKER2}=IP" in caught.value.one_line()


# ---------------------------------------------------------------- formation over fake runners


class SwarmRunner:
    """A fake node: answers the node facts script with its canned output, records commands and stdin."""

    def __init__(self, spec: HostSpec, output: str, log: list[tuple[str, str]]):
        self.spec, self.output, self.log = spec, output, log

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.log.append((command, stdin.decode() if isinstance(stdin, bytes) else stdin or ""))
        if SWARM_MARK in command:
            return CommandResult(command, 0, self.output, "")
        if "join-token" in command:
            return CommandResult(command, 0, TOKEN + "\n", "")
        if "Swarm.NodeID" in command:
            return CommandResult(command, 0, f"id-{self.spec.address}\n", "")
        return CommandResult(command, 0, "", "")

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def swarm_env(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_env(tmp_path, hosts=f"{MANAGER}/manager,{WORKER1}/worker,{WORKER2}", extra="ORCHESTRATOR=swarm\n")


def fleet_factory(outputs: dict[str, str], log: dict[str, list[tuple[str, str]]]) -> Callable[[HostSpec], SwarmRunner]:
    return lambda spec: SwarmRunner(spec, outputs[spec.address], log.setdefault(spec.address, []))


def test_formation_inits_joins_with_the_token_on_stdin_only_and_labels(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    outputs = {h: node_output(routes=f"10.0.0.9 dev ens4 src {h} uid 0") for h in (MANAGER, WORKER1, WORKER2)}
    log: dict[str, list[tuple[str, str]]] = {}
    reports = [HostProvisionReport(spec.name) for spec in env.hosts]
    reporter = RecordingReporter()
    form_swarm(env, ProvisionSettings.from_env(env), reports, reporter, runner_factory=fleet_factory(outputs, log))

    assert all(report.ok for report in reports)
    assert [event.status for report in reports for event in report.events] == [CHANGED] * 3
    ran = {host: [command for command, _ in entries] for host, entries in log.items()}
    assert "docker swarm init --advertise-addr 10.0.0.1" in ran[MANAGER]
    assert ran[MANAGER].count("docker swarm join-token -q worker") == 2
    joins = [(command, stdin) for command, stdin in log[WORKER1] if "swarm join" in command]
    assert joins == [
        (
            'read -r token; docker swarm join --advertise-addr 10.0.0.2 --token "$token" 10.0.0.1:2377',
            TOKEN + "\n",
        )
    ]
    # The token is on no command line and in no reported line.
    assert not any(TOKEN in command for entries in ran.values() for command in entries)
    assert not any(TOKEN in event.detail for event in reporter.events)
    assert (
        "docker node update --label-add opskit.role.worker=true --label-add opskit.host=10.0.0.2 id-10.0.0.2"
        in ran[MANAGER]
    )
    assert "docker node update --label-add opskit.host=10.0.0.3 id-10.0.0.3" in ran[MANAGER]
    assert not any("label" in command for command in ran[WORKER2])


def test_a_dry_run_shows_the_formation_and_changes_nothing(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    outputs = {h: node_output(routes=f"10.0.0.9 dev ens4 src {h}") for h in (MANAGER, WORKER1, WORKER2)}
    log: dict[str, list[tuple[str, str]]] = {}
    reports = [HostProvisionReport(spec.name) for spec in env.hosts]
    form_swarm(
        env,
        ProvisionSettings.from_env(env),
        reports,
        RecordingReporter(),
        dry_run=True,
        runner_factory=fleet_factory(outputs, log),
    )
    assert [report.events[0].status for report in reports] == [WOULD_CHANGE] * 3
    assert "docker swarm init (advertise 10.0.0.1)" in reports[0].events[0].detail
    assert "join as worker via 10.0.0.1:2377" in reports[2].events[0].detail
    ran = [command for entries in log.values() for command, _ in entries]
    assert all(SWARM_MARK in command or command == "true" for command in ran)


FORMED_NODES = (
    'n1 manager ready m {"opskit.role.manager":"true","opskit.host":"10.0.0.1"}\n'
    'n2 worker ready w1 {"opskit.role.worker":"true","opskit.host":"10.0.0.2"}\n'
    'n3 worker ready w2 {"opskit.host":"10.0.0.3"}\n'
)


def form_formed_swarm(
    tmp_path: Path, nodes: str, ufw: str = ""
) -> tuple[list[HostProvisionReport], dict[str, list[tuple[str, str]]]]:
    """form_swarm (firewall skipped) on the three hosts already formed, the manager listing nodes."""
    env = swarm_env(tmp_path)
    outputs = {
        MANAGER: node_output(
            swarm={"LocalNodeState": "active", "NodeID": "n1", "ControlAvailable": True},
            nodes=nodes,
            ufw=ufw,
            routes="10.0.0.9 dev ens4 src 10.0.0.1",
        )
    }
    for host, node in ((WORKER1, "n2"), (WORKER2, "n3")):
        outputs[host] = node_output(swarm={"LocalNodeState": "active", "NodeID": node}, routes=f"x src {host}")
    log: dict[str, list[tuple[str, str]]] = {}
    reports = [HostProvisionReport(spec.name) for spec in env.hosts]
    settings = ProvisionSettings.from_env(env)
    form_swarm(
        env, settings.__class__(**{**settings.__dict__, "skip": frozenset({"firewall"})}), reports,
        RecordingReporter(), runner_factory=fleet_factory(outputs, log),
    )  # fmt: skip
    return reports, log


def test_a_formed_swarm_reports_ok_with_each_role(tmp_path: Path) -> None:
    ufw = "".join(ufw_line(p, pr, s) for s in (WORKER1, WORKER2) for p, pr in (("2377", "tcp"),))
    reports, _ = form_formed_swarm(tmp_path, FORMED_NODES, ufw)
    assert [(e.status, e.detail) for report in reports for e in report.events] == [
        (OK, "manager (leader) of 3 nodes, advertises 10.0.0.1"),
        (OK, "worker of 3 nodes, advertises 10.0.0.2"),
        (OK, "worker of 3 nodes, advertises 10.0.0.3"),
    ]


def test_provisioning_removes_a_departed_down_worker_on_the_leader(tmp_path: Path) -> None:
    reports, log = form_formed_swarm(tmp_path, FORMED_NODES + 'n4 worker down old {"opskit.host":"10.0.0.4"}\n')
    assert "docker node rm n4" in [command for command, _ in log[MANAGER]]
    assert [(e.status, e.detail) for e in reports[0].events] == [
        (CHANGED, "remove node old (its host 10.0.0.4 is no longer in HOSTS; the node is down)")
    ]


def test_a_host_that_failed_its_steps_holds_the_formation_back(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    reports = [HostProvisionReport(spec.name) for spec in env.hosts]
    reports[0].error = HostError("apt failed", where=MANAGER)
    log: dict[str, list[tuple[str, str]]] = {}
    form_swarm(
        env, ProvisionSettings.from_env(env), reports, RecordingReporter(), runner_factory=fleet_factory({}, log)
    )
    assert [(e.status, e.detail) for e in reports[1].events] == [
        (SKIPPED, "waits for 10.0.0.1, which failed provisioning")
    ]
    assert log == {}


def test_provision_of_ubuntu_swarm_hosts_plans_their_steps_then_the_formation(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    fresh = fresh_output("ubuntu-24.04")

    def answer(spec: HostSpec) -> SwarmRunner:
        runner = SwarmRunner(spec, node_output(routes=f"r src {spec.address}"), [])
        plain = runner.run

        def run(command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
            if FACTS_MARK in command:
                return CommandResult(command, 0, fresh, "")
            return plain(command, timeout=timeout, stdin=stdin)

        runner.run = run  # type: ignore[method-assign]
        return runner

    result = provision(env, RecordingReporter(), dry_run=True, runner_factory=answer)
    assert result.ok
    steps = [event.step for event in result.hosts[0].events]
    assert steps[-1] == "swarm" and "docker daemon.json" in steps
    last = result.hosts[0].events[-1]
    assert last.status == WOULD_CHANGE and "docker swarm init" in last.detail


def test_a_swarm_lab_env_names_one_manager_and_workers_and_loads(tmp_path: Path) -> None:
    from ops.lab import LabSpec, update_lab_env

    spec = LabSpec("sa", checkout=tmp_path, hosts=3, env_root=tmp_path, swarm=True)
    (tmp_path / "env").mkdir()
    (tmp_path / "id_ed25519").write_text("")
    update_lab_env(spec, tmp_path / "id_ed25519")
    env = load_environment("sa", tmp_path, {})
    assert env.orchestrator.swarm
    assert [spec.roles for spec in env.hosts] == [("manager",), ("worker",), ("worker",)]
    # The same lab brought up again without --swarm is a plain compose lab (lab.up owns both keys).
    plain = LabSpec("sa", checkout=tmp_path, hosts=2, env_root=tmp_path)
    assert set(update_lab_env(plain, tmp_path / "id_ed25519")) == {"HOSTS", "ORCHESTRATOR"}
    text = plain.env_file.read_text()
    assert "ORCHESTRATOR=compose" in text and "/manager" not in text
    assert not load_environment("sa", tmp_path, {}).orchestrator.swarm


def test_a_join_that_fails_fails_that_host_with_the_reason_and_no_token(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    outputs = {h: node_output(routes=f"10.0.0.9 dev ens4 src {h}") for h in (MANAGER, WORKER1, WORKER2)}
    log: dict[str, list[tuple[str, str]]] = {}

    def factory(spec: HostSpec) -> SwarmRunner:
        runner = SwarmRunner(spec, outputs[spec.address], log.setdefault(spec.address, []))
        if spec.address == WORKER1:
            plain = runner.run

            def run(command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
                if "swarm join" in command:
                    plain(command, timeout=timeout, stdin=stdin)
                    return CommandResult(command, 1, "", "Error response from daemon: Timeout was reached")
                return plain(command, timeout=timeout, stdin=stdin)

            runner.run = run  # type: ignore[method-assign]
        return runner

    reports = [HostProvisionReport(spec.name) for spec in env.hosts]
    form_swarm(env, ProvisionSettings.from_env(env), reports, RecordingReporter(), runner_factory=factory)
    assert reports[0].ok and not reports[1].ok
    assert reports[1].failed_step == "swarm" and reports[1].error is not None
    line = reports[1].error.one_line()
    assert "Timeout was reached" in line and TOKEN not in line
    # The other worker still joined.
    assert reports[2].ok and "join as worker" in reports[2].events[-1].detail
