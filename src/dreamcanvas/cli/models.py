"""``dreamcanvas models list`` and ``dreamcanvas models download``: see and fetch weights before a run needs them.

Downloading is explicit so that a run never stalls on a 600 MB transfer, and so that a laptop can be made
ready once and then work offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dreamcanvas import weights
from dreamcanvas.cli import models_app
from dreamcanvas.settings import DEFAULT_CLIP


def _size(size_mb: float | None) -> str:
    if size_mb is None:
        return "?"
    return f"{size_mb / 1000:.1f} GB" if size_mb >= 1000 else f"{size_mb:.0f} MB"


@models_app.command("list")
def list_models(
    kind: str | None = typer.Option(
        None, "--kind", help="Show only models of this kind, e.g. clip or vqgan.", metavar="KIND"
    ),
) -> None:
    """List the known models, their size, and whether they are downloaded (and where)."""
    table = Table(title="dreamcanvas models", show_lines=True)
    table.add_column("name and description", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    for source in weights.list_sources():
        if kind and source.kind != kind:
            continue
        state, paths = weights.cache_state(source.name)
        label = f"[bold]{escape(source.name)}[/bold]" + (" (default)" if source.name == DEFAULT_CLIP else "")
        details = escape(source.description)
        if state == "yes" and paths:
            details += f"\n[green]{escape(str(paths[0].parent))}[/green]"
        table.add_row(f"{label}\n[dim]{details}[/dim]", source.kind, _size(source.size_mb), state)
    Console().print(table)
    Console().print(
        "Any open_clip ARCH:TAG, hf-hub:ORG/REPO or local-dir:PATH also works; "
        "download with `dreamcanvas models download NAME`."
    )


@models_app.command("download")
def download_model(
    name: str = typer.Argument(
        ..., help="A name from `dreamcanvas models list`, or any open_clip ARCH:TAG or hf-hub:ORG/REPO."
    ),
) -> None:
    """Download a model's weights (skipping what is already cached), verify them, and print where they are."""
    paths = weights.download(name)
    for path in paths:
        print(path)
    if name.strip().startswith((weights.BUNDLED_PREFIX, weights.LOCAL_DIR_PREFIX, weights.LOCAL_PREFIX)):
        what = "bundled with dreamcanvas" if name.strip().startswith(weights.BUNDLED_PREFIX) else "a local folder"
        Console(stderr=True).print(f"{name}: {what}, nothing to download; {len(paths)} file(s) verified",
                                   highlight=False)  # fmt: skip
    else:
        Console(stderr=True).print(f"{name}: {len(paths)} file(s) downloaded and verified", highlight=False)
