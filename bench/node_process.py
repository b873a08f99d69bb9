"""``NodeProcess``: the one way tests and benchmarks start a ``pacsnode serve`` (issue 13 item 7).

Modelled on aiosmtpd's test ``Controller``: a real node on a free loopback port in its own home,
stopped (SIGTERM, then SIGKILL) whatever happens. The crash soak kills it with SIGKILL on
purpose (:meth:`NodeProcess.kill`), the load runs sample its RSS, the packaging test points it at
another install's ``pacsnode``. It needs no pytest: a node that does not come up raises
:class:`NodeStartError`, which a test reports like any failure. ``tests/support.py`` adds the
DCMTK conveniences (``store``, ``echo``, ``studies``) on top of this class.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

LOOPBACK = "127.0.0.1"
_SCRIPT = Path(sys.executable).parent / "pacsnode"  # the console script of this interpreter's environment
PACSNODE: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from pacsnode.cli import main; main()"]


class NodeStartError(RuntimeError):
    """``pacsnode serve`` exited or did not accept connections in time (its stderr is in the message)."""


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface, and not handed out before by
    this process: a port is picked at ``init`` and bound only at ``start``, so without the memory two
    nodes of one test could be given the same number (a cluster pair's second node once got the first
    node's DICOM port as its web port, and died with "address already in use" under load)."""
    with _HANDED_OUT_LOCK:
        for _attempt in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                break
        _HANDED_OUT.add(port)
        return port


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def listening(port: int) -> bool:
    """Whether something listens on ``port`` (reads /proc/net/tcp: no connection is opened, so none
    sits in the node's pending-connection slots)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A = LISTEN
                    return True
        except OSError:
            continue
    return False


def echo_ok(port: int, aec: str = "PACSNODE", timeout: float = 5.0) -> bool:
    """A C-ECHO (pynetdicom) answered Success: the node is serving associations, not only listening."""
    from pynetdicom import AE

    ae = AE(ae_title="SOAK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(LOOPBACK, port, ae_title=aec)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def set_config(home: Path, section: str, key: str, value: Any) -> None:
    """Set ``[section] key = value`` in ``<home>/pacsnode.toml`` (the file ``init`` wrote)."""
    import json
    import re

    path = home / "pacsnode.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    rendered = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
    headers = [i for i, line in enumerate(lines) if re.match(r"^\s*\[[^\]]+\]\s*(#.*)?$", line)]
    mine = [i for i in headers if lines[i].strip().startswith(f"[{section}]")]
    if not mine:
        lines += ["", f"[{section}]", f"{key} = {rendered}"]
    else:
        begin = mine[0]
        end = next((i for i in headers if i > begin), len(lines))
        for i in range(begin + 1, end):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                lines[i] = f"{key} = {rendered}"
                break
        else:
            lines.insert(begin + 1, f"{key} = {rendered}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class NodeProcess:
    """``pacsnode --home H serve`` in a subprocess on a free port; ``stop`` always ends it.

    ``port``: 0 picks a free one at ``init`` (or, for a home initialised elsewhere, give the port
    its ``pacsnode.toml`` names). ``log_path``: stderr of every start appended to one file (the
    soaks read it across restarts); by default each start gets ``<home>-serve-N.err``.
    ``ready="echo"`` waits for a C-ECHO answer, not only a listening port. ``verbose`` adds
    ``-v`` flags; ``preexec_fn`` runs in the child (e.g. to set a umask).
    ``PACSNODE_SERVE_CMD="prog args"`` runs ``prog args HOME PORT`` instead of ``pacsnode serve``
    (to put the same soaks against another serving entry point).
    """

    def __init__(self, home: Path, aet: str = "PACSNODE", institution: str = "", start_timeout: float = 20.0,
                 command: Sequence[str] | None = None, port: int = 0, log_path: Path | None = None,
                 verbose: int = 0, ready: str = "port", preexec_fn: Callable[[], Any] | None = None) -> None:
        self.home = home
        self.command = list(command) if command else PACSNODE  # another install's ``pacsnode`` (packaging test)
        self.aet = aet
        self.institution = institution
        self.start_timeout = start_timeout
        self.port = port
        self.web_port = 0  # DICOMweb's HTTP port once enable_web() ran
        self.log_path = log_path
        self.verbose = verbose
        self.ready = ready
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stderr_path = log_path or home.parent / f"{home.name}-serve-0.err"

    # -- life cycle -------------------------------------------------------------------------
    def init(self, *extra: str) -> "NodeProcess":
        """``pacsnode init`` (run in process through click: same code, no interpreter start-up)."""
        from click.testing import CliRunner

        from pacsnode.cli import main

        self.port = self.port or free_port()
        args = ["--home", str(self.home), "init", "--aet", self.aet, "--port", str(self.port), *extra]
        if self.institution:
            args += ["--institution", self.institution]
        result = CliRunner().invoke(main, args)
        if result.exit_code != 0:
            raise NodeStartError(f"pacsnode {' '.join(args)}: {result.output}")
        return self

    def configure(self, section: str, key: str, value: Any) -> "NodeProcess":
        """Change a setting (takes effect at the next ``start``)."""
        set_config(self.home, section, key, value)
        return self

    def enable_web(self) -> "NodeProcess":
        """Serve DICOMweb too, on a free port (``[web] enabled``); ``start`` waits for it."""
        if not (self.home / "pacsnode.toml").exists():
            self.init()
        self.web_port = free_port()
        self.configure("web", "enabled", True).configure("web", "port", self.web_port)
        return self

    @property
    def web_url(self) -> str:
        return f"http://{LOOPBACK}:{self.web_port}/dicom-web"

    def start(self) -> "NodeProcess":
        if not (self.home / "pacsnode.toml").exists():
            self.init()
        last_error = ""
        for _attempt in range(3):
            if self._spawn():
                return self
            last_error = f"exit code {self.proc.returncode if self.proc else '?'}; stderr:\n{self.stderr_text()}"
            self.proc = None
            if self.log_path is not None:
                break  # a soak's home names its port: do not move it
            # in case a port was taken between free_port() and bind: try others (the web port too, if served)
            self.port = free_port()
            if self.web_port:
                self.web_port = free_port()
                self.configure("web", "port", self.web_port)
        raise NodeStartError(f"pacsnode serve exited before accepting connections; {last_error}")

    def _argv(self) -> list[str]:
        if os.environ.get("PACSNODE_SERVE_CMD"):  # another serving entry point: CMD HOME PORT
            return [*os.environ["PACSNODE_SERVE_CMD"].split(), str(self.home), str(self.port)]
        flags = ["-" + "v" * self.verbose] if self.verbose else []
        return [*self.command, "--home", str(self.home), *flags, "serve", "--port", str(self.port)]

    def _spawn(self) -> bool:
        self.starts += 1
        if self.log_path is None:
            self.stderr_path = self.home.parent / f"{self.home.name}-serve-{self.starts}.err"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                         preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.ready == "echo":  # serving associations, no bare connection opened
                if listening(self.port) and echo_ok(self.port, self.aet):
                    return True
            elif port_accepts(self.port) and (not self.web_port or port_accepts(self.web_port)):
                return True
            time.sleep(0.05)
        self.kill()
        raise NodeStartError(f"pacsnode serve did not accept connections on port {self.port} within "
                             f"{self.start_timeout} s; its stderr:\n{self.stderr_text()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no handler runs, no shutdown path, like a power cut for the process (not the disk)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self) -> "NodeProcess":
        code = self.stop()
        if code != 0:
            raise NodeStartError(f"pacsnode serve exited with {code}; stderr:\n{self.stderr_text()}")
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self) -> bool:
        return self.running

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise NodeStartError("pacsnode serve is not running")
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size (VmRSS from /proc/PID/status); 0 when the process is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, NodeStartError):
            pass
        return 0

    def log_text(self) -> str:
        """Everything serve wrote to stderr (of every start when ``log_path`` was given)."""
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self) -> str:
        return self.log_text()[-6000:]

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_text()[-chars:]

    def __enter__(self) -> "NodeProcess":
        return self.start() if not self.running else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- talking to it ----------------------------------------------------------------------
    def run_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``pacsnode --home H <args>`` (the CLI works next to a running server)."""
        return subprocess.run([*self.command, "--home", str(self.home), *args], capture_output=True, text=True,
                              timeout=timeout, encoding="utf-8", errors="replace")
