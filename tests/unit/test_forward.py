"""The reverse forward against an in-process paramiko SSH server (no network beyond a loopback TCP
connection and one loopback echo server): pumping both ways, cancel on exit, no threads left, error lines."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paramiko
import pytest

from ops.errors import HostError
from ops.transport.forward import RemoteForward, listening_ports, refused_error

PORT = 20630
PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5096 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:9C40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0500000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0 0
   1: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 0 0
"""


def test_listening_ports_are_loopback_or_wildcard_listeners_only() -> None:
    # 0x5096 = 20630 on 127.0.0.1, 22 on 0.0.0.0, 80 on ::, 8000 on ::1; 8080 on 10.0.0.5 does not
    # stop a bind to 127.0.0.1, and 40000 is an established connection, not a listener.
    assert listening_ports(PROC_NET_TCP) == {20630, 22, 80, 8000}
    assert listening_ports("") == set()


def test_refused_error_says_which_cause_is_likely_in_one_line() -> None:
    taken = refused_error(PORT, "web1", True).one_line()
    assert taken.startswith(f"web1: cannot forward port {PORT}: 127.0.0.1:{PORT} on the host is already in use")
    assert "ss -ltnp" in taken
    forbidden = refused_error(PORT, "web1", False).one_line()
    assert "refuses remote port forwarding" in forbidden and "AllowTcpForwarding" in forbidden
    unknown = refused_error(PORT, "web1", None).one_line()
    assert "in use on the host or sshd forbids" in unknown
    assert all("\n" not in text for text in (taken, forbidden, unknown))


# ---------------------------------------------------------------- an SSH server in this process


@dataclass
class FakeSSHD(paramiko.ServerInterface):
    allow_forward: bool = True
    exec_output: str = ""
    exec_code: int = 0
    forwards: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_port_forward_request(self, address: str, port: int) -> int | bool:
        if not self.allow_forward:
            return False
        self.forwards.append(port)
        return port

    def cancel_port_forward_request(self, address: str, port: int) -> None:
        self.cancelled.append(port)

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        self.commands.append(command.decode())

        def reply() -> None:
            time.sleep(0.1)  # after paramiko has answered the exec request (closing first fails it)
            # The client may hang up as soon as it has the exit status: the close can find no connection.
            with contextlib.suppress(EOFError, OSError):
                channel.sendall(self.exec_output.encode())
                channel.send_exit_status(self.exec_code)
                channel.close()

        threading.Thread(target=reply, daemon=True).start()
        return True


@dataclass
class Connection:
    """What RemoteForward needs of a paramiko SSHClient: get_transport()."""

    client: Any
    server: Any
    sshd: FakeSSHD

    def get_transport(self) -> Any:
        return self.client


@pytest.fixture(scope="module")
def host_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(1024)


@pytest.fixture
def sshd() -> FakeSSHD:
    return FakeSSHD()


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on 127.0.0.1. Not a socketpair: its small fixed buffers let
    both paramiko transports block writing to each other (each run thread then waits for a lock a
    user thread holds while writing), a deadlock real TCP buffers make unreachable here."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    return ours, theirs


@pytest.fixture
def connection(sshd: FakeSSHD, host_key: paramiko.RSAKey) -> Iterator[Connection]:
    ours, theirs = loopback_pair()
    server = paramiko.Transport(theirs)
    server.add_server_key(host_key)
    server.start_server(event=threading.Event(), server=sshd)  # returns at once; negotiates in its thread
    client = paramiko.Transport(ours)
    client.start_client(timeout=10)
    client.auth_none("deploy")
    yield Connection(client, server, sshd)
    client.close()
    server.close()
    ours.close()
    theirs.close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on this machine that echoes what it reads until EOF (the "registry")."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # accept() wakes up to see stop
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=5)


def forward_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("forward-")]


def talk(server: Any, payload: bytes) -> bytes:
    """A client on the host connecting to the forwarded port: send, say EOF, read all."""
    channel = server.open_forwarded_tcpip_channel(("127.0.0.1", 40000), ("127.0.0.1", PORT))
    try:
        channel.settimeout(10)
        channel.sendall(payload)
        channel.shutdown_write()
        received = bytearray()
        while chunk := channel.recv(65536):
            received += chunk
        return bytes(received)
    finally:
        channel.close()


def test_forward_carries_connections_both_ways_and_cancels_on_exit(connection: Connection, echo_port: int) -> None:
    payloads = [bytes([n]) * (100_000 + n) for n in range(3)]  # several packets each
    answers: dict[int, bytes] = {}
    with RemoteForward(connection, PORT, "127.0.0.1", echo_port, where="web1") as forward:
        assert connection.sshd.forwards == [PORT]
        clients = [
            threading.Thread(target=lambda n=n: answers.__setitem__(n, talk(connection.server, payloads[n])))
            for n in range(3)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=20)
        assert forward.connections == 3
        assert forward.bytes_to_host == sum(map(len, payloads))
    assert [answers[n] == payloads[n] for n in range(3)] == [True, True, True]
    assert connection.sshd.cancelled == [PORT]
    assert forward_threads() == []


def test_leaving_closes_connections_still_open(connection: Connection, echo_port: int) -> None:
    with RemoteForward(connection, PORT, "127.0.0.1", echo_port, where="web1") as forward:
        channel = connection.server.open_forwarded_tcpip_channel(("127.0.0.1", 40000), ("127.0.0.1", PORT))
        channel.sendall(b"ping")
        channel.settimeout(10)
        assert channel.recv(4) == b"ping"
        assert forward.connections == 1 and forward_threads()
    assert forward_threads() == []  # the idle keep-alive connection was closed, its thread joined
    channel.settimeout(10)
    assert channel.recv(4) == b""
    channel.close()


def test_port_in_use_on_the_host_is_one_line_naming_host_and_port(connection: Connection, sshd: FakeSSHD) -> None:
    sshd.allow_forward = False
    sshd.exec_output = PROC_NET_TCP
    with pytest.raises(HostError) as raised, RemoteForward(connection, PORT, "127.0.0.1", 9, where="web1"):
        pass
    assert raised.value.one_line().startswith(f"web1: cannot forward port {PORT}: 127.0.0.1:{PORT} on the host")
    assert "/proc/net/tcp" in sshd.commands[0]
    assert forward_threads() == []


def test_forwarding_forbidden_by_sshd_says_so(connection: Connection, sshd: FakeSSHD) -> None:
    sshd.allow_forward = False
    sshd.exec_output = PROC_NET_TCP.replace("5096", "5097")
    with pytest.raises(HostError, match="refuses remote port forwarding"):
        RemoteForward(connection, PORT, "127.0.0.1", 9, where="web1").open()


def test_a_dropped_connection_is_reported_when_leaving(connection: Connection, echo_port: int) -> None:
    with pytest.raises(HostError) as raised, RemoteForward(connection, PORT, "127.0.0.1", echo_port, where="web1"):
        connection.server.close()
        connection.client.join(timeout=10)  # the client transport's thread ends with the connection
    assert raised.value.one_line().startswith(f"web1: SSH connection dropped while forwarding (port {PORT})")
    assert forward_threads() == []


def test_readiness_runs_curl_on_the_host_and_names_a_refusing_local_port(
    connection: Connection, sshd: FakeSSHD
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nothing listens there once closed
    with RemoteForward(connection, PORT, "127.0.0.1", dead_port, where="web1") as forward:
        sshd.exec_output = "curl: (52) Empty reply from server\n"
        sshd.exec_code = 1
        # The forward closes the channel as soon as the local connect fails; paramiko's server side
        # may see that before its open returns ("Unable to open channel"): both mean refused.
        with contextlib.suppress(paramiko.SSHException):
            assert talk(connection.server, b"GET /v2/ HTTP/1.0\r\n\r\n") == b""
        deadline = time.monotonic() + 5
        while forward.local_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(HostError) as raised:
            forward.wait_until_answering(timeout=1)
    assert f"curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:{PORT}/v2/ " in sshd.commands[-1]
    assert raised.value.one_line().startswith(f"web1: port {PORT} is forwarded but 127.0.0.1:{dead_port} here refused")


def test_readiness_passes_when_curl_succeeds_and_says_when_curl_is_missing(
    connection: Connection, sshd: FakeSSHD
) -> None:
    with RemoteForward(connection, PORT, "127.0.0.1", 9, where="web1") as forward:
        forward.wait_until_answering()
        sshd.exec_code = 127
        with pytest.raises(HostError, match="curl is missing on the host"):
            forward.wait_until_answering()
