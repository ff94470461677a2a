"""``rollout runtime``: send HAProxy Runtime API commands from a file to an admin socket (no socat needed).

The rollback folder's ``haproxy/runtime-rollback.txt`` puts every canary server into maintenance without a
reload; this sends it, one command per connection (as ``socat stdio unix-connect:SOCKET`` would), and
prints each answer. Lines starting with ``#`` and blank lines are skipped.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

TIMEOUT = 10.0


def send(path: str, command: str, timeout: float = TIMEOUT) -> str:
    """One command to the socket at ``path``; HAProxy's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--socket", "socket_path", required=True, help="HAProxy's admin socket (the `stats socket` path).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=TIMEOUT, show_default=True,
              help="Seconds to wait for each answer.")
def runtime(file: Path, socket_path: str, timeout: float) -> None:
    """Send the HAProxy Runtime API commands of FILE to the admin socket, one by one, and print the answers."""
    sent = 0
    for command in commands(file.read_text(encoding="utf-8")):
        try:
            answer = send(socket_path, command, timeout)
        except OSError as exc:
            raise click.ClickException(f"{socket_path}: {exc.strerror or exc} (after {sent} command(s))") from None
        sent += 1
        click.echo(f"{command}: {answer.strip() or 'done'}")
        if answer.strip().lower().startswith(("unknown", "no such", "permission denied", "require")):
            raise click.ClickException(f"HAProxy refused `{command}`: {answer.strip()}")
    click.echo(f"{sent} command(s) sent to {socket_path}", err=True)
