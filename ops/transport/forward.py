"""A reverse SSH port forward: a port on a host's loopback that leads to a port on this machine,
carried over the host's own pinned paramiko connection (what `ssh -R` does).

It never opens a connection of its own, never listens on this machine, and never binds anything
but 127.0.0.1 on the host.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ops.errors import HostError
from ops.transport.shell import last_line, q

if TYPE_CHECKING:
    import paramiko

CHUNK = 65536
LOOPBACK_HEX = {"0100007F", "00000000", "0" * 32, "0" * 24 + "01000000"}  # 127.0.0.1, 0.0.0.0, ::, ::1
LISTEN = "0A"

# paramiko keeps ONE handler for forwarded connections per transport, and cancel_port_forward()
# clears it for all of them: forwards sharing a connection are routed here by their port.
_routes: weakref.WeakKeyDictionary[Any, dict[int, RemoteForward]] = weakref.WeakKeyDictionary()
_routes_lock = threading.Lock()


def _dispatch(channel: Any, origin: tuple[str, int], server: tuple[str, int]) -> None:
    """paramiko's handler (called on its transport thread): hand the channel to its forward."""
    with _routes_lock:
        forward = _routes.get(channel.get_transport(), {}).get(server[1])
    if forward is None:
        channel.close()
    else:
        forward._accept(channel)


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Ports listened on at loopback or wildcard addresses, from /proc/net/tcp and tcp6 text
    (ports that would stop sshd from binding 127.0.0.1:PORT)."""
    ports: set[int] = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1] or fields[3] != LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        if address.upper() in LOOPBACK_HEX:
            ports.add(int(port, 16))
    return ports


def refused_error(port: int, where: str, port_in_use: bool | None) -> HostError:
    """The one line for sshd refusing a forward; port_in_use None when we could not tell why."""
    if port_in_use:
        return HostError(
            f"cannot forward port {port}: 127.0.0.1:{port} on the host is already in use",
            where=where,
            hint=f"another deploy may be pulling through it right now (wait and retry); "
            f"see what listens with `ss -ltnp 'sport = :{port}'` on the host",
        )
    if port_in_use is False:
        return HostError(
            f"cannot forward port {port}: sshd on the host refuses remote port forwarding",
            where=where,
            hint="allow it for the deploy user (AllowTcpForwarding yes or remote, and no DisableForwarding"
            " or PermitListen that excludes the port, in sshd_config), or use IMAGE_SOURCE=send",
        )
    return HostError(
        f"cannot forward port {port}: sshd on the host refused",
        where=where,
        hint=f"either 127.0.0.1:{port} is in use on the host or sshd forbids remote forwarding (AllowTcpForwarding)",
    )


class RemoteForward:
    """127.0.0.1:remote_port on the host, forwarded to local_host:local_port on this machine.

    Use it as a context manager: entering asks sshd to listen, each connection to that port is
    pumped to a new TCP connection here, and leaving cancels the forward and closes every
    connection. Check `wait_until_answering()` before the first use: sshd accepting the
    request is not the same as the far end answering.
    """

    def __init__(
        self,
        ssh_client: paramiko.SSHClient,
        remote_port: int,
        local_host: str,
        local_port: int,
        *,
        where: str,
        connect_timeout: float = 10,
    ):
        self.ssh_client = ssh_client
        self.remote_port = remote_port
        self.local_host = local_host
        self.local_port = local_port
        self.where = where
        self.connect_timeout = connect_timeout
        self.connections = 0
        self.bytes_to_host = 0
        self.local_error: str | None = None  # why the last connection to this machine's port failed
        self._transport: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._open_pairs: set[tuple[Any, socket.socket | None]] = set()

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> RemoteForward:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        dropped = self._transport is not None and not self._transport.is_active()
        self.close()
        if dropped and kind is None:
            raise self._dropped("while forwarding")

    def open(self) -> None:
        """Ask sshd to listen on the host's 127.0.0.1:remote_port for us."""
        import paramiko

        transport = self.ssh_client.get_transport()
        if transport is None or not transport.is_active():
            raise self._dropped("before the forward was opened")
        with _routes_lock:
            routes = _routes.setdefault(transport, {})
            if self.remote_port in routes:
                raise refused_error(self.remote_port, self.where, True)
            routes[self.remote_port] = self
        try:
            transport.request_port_forward("127.0.0.1", self.remote_port, handler=_dispatch)
        except paramiko.SSHException as error:
            self._unroute(transport)
            if not transport.is_active():
                raise self._dropped("while asking for the forward") from None
            if "denied" not in str(error):
                raise HostError(f"cannot forward port {self.remote_port}: {error}", where=self.where) from None
            raise refused_error(self.remote_port, self.where, self._port_in_use()) from None
        except (OSError, EOFError):
            self._unroute(transport)
            raise self._dropped("while asking for the forward") from None
        self._transport = transport

    def close(self) -> None:
        """Cancel the forward on the host and close every connection it carried; idempotent."""
        transport, self._transport = self._transport, None
        if transport is not None:
            self._unroute(transport)
            if transport.is_active():
                # Not transport.cancel_port_forward(): it would unhook other forwards on this connection.
                # Failing means the connection went away, and sshd dropped the listener with it.
                with contextlib.suppress(Exception):
                    transport.global_request("cancel-tcpip-forward", ("127.0.0.1", self.remote_port), wait=True)
        with self._lock:
            self._stop.set()
            pairs = list(self._open_pairs)
            threads = list(self._threads)
        for channel, sock in pairs:
            channel.close()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)

    def _unroute(self, transport: Any) -> None:
        with _routes_lock:
            routes = _routes.get(transport, {})
            if routes.get(self.remote_port) is self:
                del routes[self.remote_port]

    def _dropped(self, when: str) -> HostError:
        return HostError(
            f"SSH connection dropped {when} (port {self.remote_port})",
            where=self.where,
            hint="is the host up? retry; nothing was left listening on it",
        )

    # ------------------------------------------------------------ readiness

    def wait_until_answering(self, path: str = "/v2/", timeout: float = 10) -> None:
        """Return once GET http://127.0.0.1:remote_port{path} succeeds *on the host* (curl there).

        The first pull through a forward that is not answering yet fails: Kamal 2.8.1 fixed that
        race the same way, by checking from the server's side before use.
        """
        if self._transport is None:
            raise HostError(f"port {self.remote_port} is not forwarded (open the forward first)", where=self.where)
        tries = max(1, int(timeout / 0.25))
        url = f"http://127.0.0.1:{self.remote_port}{path}"
        script = (
            "command -v curl >/dev/null || { echo 'curl: not found'; exit 127; }; i=0; "
            f"while :; do out=$(curl -fsS -o /dev/null --max-time 2 {q(url)} 2>&1) && exit 0; "
            f'i=$((i+1)); [ "$i" -ge {tries} ] && {{ echo "$out"; exit 1; }}; sleep 0.25; done'
        )
        code, output = self._exec(script, timeout=timeout + 15)
        if code == 0:
            return
        if code == 127:
            raise HostError(
                "curl is missing on the host (needed to check the forward)",
                where=self.where,
                hint="run inv provision (it installs curl)",
            )
        reason = last_line(output)
        if self.local_error:
            raise HostError(
                f"port {self.remote_port} is forwarded but {self.local_host}:{self.local_port} here refused:"
                f" {self.local_error}",
                where=self.where,
                hint="is the local registry running? (ensure_registry starts it)",
            )
        raise HostError(
            f"the forward on port {self.remote_port} did not answer GET {path} within {timeout:.0f} s: {reason}",
            where=self.where,
        )

    def _port_in_use(self) -> bool | None:
        try:
            code, output = self._exec("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null", timeout=10)
        except HostError:
            return None
        if code != 0 and not output:
            return None
        return self.remote_port in listening_ports(output)

    def _exec(self, command: str, timeout: float) -> tuple[int, str]:
        """Run a short command on the host over this connection: (exit code, stdout and stderr)."""
        transport = self.ssh_client.get_transport()
        if transport is None or not transport.is_active():
            raise self._dropped("while checking the forward")
        output = bytearray()
        try:
            channel = transport.open_session(timeout=timeout)
            try:
                channel.settimeout(timeout)
                channel.set_combine_stderr(True)
                channel.exec_command(command)  # nosec B601 (built here from a port number and fixed text)
                while chunk := channel.recv(CHUNK):
                    output += chunk
                code = channel.recv_exit_status()
            finally:
                channel.close()
        except (OSError, EOFError) as error:  # socket.timeout is an OSError
            if not transport.is_active():
                raise self._dropped("while checking the forward") from None
            raise HostError(f"checking the forward failed: {error or type(error).__name__}", where=self.where) from None
        except Exception as error:  # paramiko.SSHException: the channel could not be opened
            raise HostError(f"checking the forward failed: {error}", where=self.where) from None
        return code, output.decode(errors="replace")

    # ------------------------------------------------------------ pumping

    def _accept(self, channel: Any) -> None:
        """A connection arrived on the host's port (paramiko's thread: never block here)."""
        thread = threading.Thread(
            target=self._serve, args=(channel,), name=f"forward-{self.where}-{self.remote_port}", daemon=True
        )
        with self._lock:
            if self._stop.is_set():  # under the lock: close() joins every thread added before it
                channel.close()
                return
            self.connections += 1
            self._threads.add(thread)
        thread.start()

    def _serve(self, channel: Any) -> None:
        try:
            try:
                sock = socket.create_connection((self.local_host, self.local_port), timeout=self.connect_timeout)
            except OSError as error:
                self.local_error = getattr(error, "strerror", None) or str(error) or type(error).__name__
                channel.close()
                return
            self.local_error = None
            with sock:
                sock.settimeout(None)
                pair = (channel, sock)
                with self._lock:
                    self._open_pairs.add(pair)
                try:
                    self._pump(channel, sock)
                finally:
                    with self._lock:
                        self._open_pairs.discard(pair)
                    channel.close()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _pump(self, channel: Any, sock: socket.socket) -> None:
        """Copy both ways until both sides said EOF, either side broke, or the forward closes."""
        with selectors.DefaultSelector() as selector:
            selector.register(channel, selectors.EVENT_READ, "host")
            selector.register(sock, selectors.EVENT_READ, "here")
            open_sides = 2
            while open_sides and not self._stop.is_set():
                if channel.closed:
                    return
                for key, _ in selector.select(timeout=0.5):
                    try:
                        if key.data == "host":
                            data = channel.recv(CHUNK)
                            if data:
                                sock.sendall(data)
                                continue
                            selector.unregister(channel)
                            sock.shutdown(socket.SHUT_WR)
                        else:
                            data = sock.recv(CHUNK)
                            if data:
                                channel.sendall(data)
                                with self._lock:
                                    self.bytes_to_host += len(data)
                                continue
                            selector.unregister(sock)
                            channel.shutdown_write()
                    except (OSError, EOFError):
                        return
                    open_sides -= 1
