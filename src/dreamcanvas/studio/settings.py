"""How the studio's server runs: its own settings record, the one source of ``dreamcanvas studio``'s flags."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import ClassVar

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.records import MODEL, SettingsRecord, setting

AUTH_ENVIRONMENT = "DREAMCANVAS_STUDIO_AUTH"
"""``USER:PASSWORD`` for --auth, kept out of the process list (``ps`` shows command lines to every user)."""
LOOPBACK_NAMES = ("localhost",)


@dataclass
class StudioSettings(SettingsRecord):
    outputs: str = setting("outputs/studio", nonempty=True)
    """Folder of the studio's runs (one folder per job id) and of its checked uploads; made if missing."""
    host: str = setting("127.0.0.1", nonempty=True)
    """Address to listen on. Anything but this machine's own (127.0.0.1) needs --auth."""
    port: int = setting(7860, low=1, high=65535)
    """Port to listen on."""
    auth: str = ""
    """USER:PASSWORD the page asks for (or set DREAMCANVAS_STUDIO_AUTH, which ps does not show); empty = none,
    allowed only on 127.0.0.1."""
    workers: int = setting(1, low=1, high=64)
    """Jobs run at once, each in its own process with an equal share of the cores; the rest wait in the queue."""
    threads: int = setting(0, low=0, high=1024)
    """CPU threads of each job; 0 = the cores divided by --workers (with --ray: the cluster's CPUs divided by
    --workers, at most the smallest node's)."""
    ray: str = ""
    """Run each job as a Ray task on a Ray cluster, --workers at once: auto = the cluster this machine joined (ray
    start); local = a private Ray on this machine while the studio runs; ray://HOST:10001 or HOST:6379 = that
    cluster. --outputs must be a folder every node reaches at the same path. Needs Ray
    (the cluster extra: pip install ray). Empty = no Ray."""
    allow_models: list[str] = setting(default_factory=list, nonempty=True, flag="--allow-model", kind=MODEL)
    """A model spec naming a path (local:DIR, local-dir:DIR) that the page may use; repeatable. The page takes
    registered model names only, so that no path typed in a browser reaches the file system."""
    max_upload_mb: float = setting(20.0, above=0, high=1024)
    """Largest picture the page accepts, in MiB."""
    max_upload_side: int = setting(4096, low=16, high=65536)
    """Largest width or height of an uploaded picture, in pixels (larger ones are refused, not scaled)."""
    methods: list[str] = setting(default_factory=list, nonempty=True, flag="--method")
    """A tab to show, by method name (generate, sd, style, upscale); repeatable; none = all of them."""
    open_browser: bool = setting(False, flag="--open")
    """Open the page in the default browser once the server is up."""

    PANELS: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("outputs", "methods", "allow_models", "max_upload_mb", "max_upload_side"), "Studio"),
        **dict.fromkeys(("host", "port", "auth", "open_browser"), "Server"),
        **dict.fromkeys(("workers", "threads", "ray"), "Queue"),
    }

    def credentials(self) -> tuple[str, str] | None:
        """``(user, password)`` from --auth or the environment; None without either."""
        text = self.auth or os.environ.get(AUTH_ENVIRONMENT, "")
        if not text:
            return None
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise DreamcanvasError("--auth must be USER:PASSWORD, both non-empty")
        return user, password

    def cross_check(self) -> None:
        credentials = self.credentials()  # a malformed --auth is refused on 127.0.0.1 too, before anything starts
        if not is_loopback(self.host) and credentials is None:
            raise DreamcanvasError(
                f"--host {self.host} lets other machines reach the studio: give --auth USER:PASSWORD "
                f"(or set {AUTH_ENVIRONMENT})"
            )
        if self.ray:  # a wrong address, or no Ray installed, is found before the server starts
            from dreamcanvas.jobs.ray_backend import check_address

            check_address(self.ray)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
