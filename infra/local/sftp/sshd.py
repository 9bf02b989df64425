"""A real OpenSSH sshd on 127.0.0.1 serving one folder over its internal SFTP server, for one client key.

The binary is Debian's openssh-server, unpacked under $MEDISTREAM_HOME/openssh by `./medistream test`
(not installed: no service starts on port 22), or a system sshd. It runs in the foreground as the
current user with its own config, host key and PID, and is stopped by that PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from connectors.properties import medistream_home
from infra.local.process import free_loopback_port, port_accepts
from infra.local.settings import LOOPBACK


class SshdMissing(RuntimeError):
    """No sshd binary (`./medistream test` unpacks one)."""


def sshd_binary() -> Path:
    """The unpacked sshd, else the system's."""
    unpacked = medistream_home() / "openssh" / "usr" / "sbin" / "sshd"
    if unpacked.exists():
        return unpacked
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if found is None:
        raise SshdMissing(f"no sshd at {unpacked} or on PATH (`./medistream test` unpacks it there)")
    return Path(found)


@dataclass
class Sshd:
    """A running sshd: its port and process."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_sshd(workdir: Path, root: Path, client_key: str, timeout_s: float = 15.0) -> Sshd:
    """Start sshd for the current user, SFTP only, starting in `root`; `workdir` holds its key, config and log."""
    binary = sshd_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (workdir / "authorized_keys").write_text(client_key + "\n")
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    port = free_loopback_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", f"ListenAddress {LOOPBACK}", f"HostKey {host_key}", f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}", f"AllowUsers {user}",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "AllowTcpForwarding no", "X11Forwarding no", "AllowAgentForwarding no", "PermitTTY no",
        "Subsystem sftp internal-sftp", f"ForceCommand internal-sftp -d {root}", "LogLevel INFO", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    env = dict(os.environ)
    libs = [str(binary.parents[2] / p) for p in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")]
    env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    log = workdir / "sshd.log"
    with log.open("ab") as out:
        process = subprocess.Popen([str(binary), "-D", "-e", "-f", str(config)], stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + timeout_s
    while not port_accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sshd did not start (exit {process.poll()}); see {log}")
        time.sleep(0.1)
    return Sshd(port, process, log)


def host_public_key(workdir: Path) -> str:
    """The started sshd's public host key line, to pin."""
    return (workdir / "ssh_host_ed25519_key.pub").read_text().strip()
