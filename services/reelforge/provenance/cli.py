"""`reelforge provenance ...`: read a video's Content Credentials back, make a development signing chain."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def provenance() -> None:
    """Content Credentials (C2PA) of delivered MP4s."""


@provenance.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust-anchors", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="REELFORGE_C2PA_TRUST_ANCHORS", show_envvar=True,
              help="PEM root certificate(s); a manifest signed under one of them is reported Trusted.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(file: Path, trust_anchors: Path | None, as_json: bool) -> None:
    """Validate FILE's C2PA manifest and print who made it. Exits 1 when it has none or it is invalid."""
    from reelforge.provenance import credentials  # loads c2pa's native library: only when asked

    try:
        result = credentials.verify(file, trust_anchors)
    except credentials.ProvenanceError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(credentials.to_json(result))
    elif result.state == "NoManifest":
        click.echo(f"{file}: no Content Credentials (no C2PA manifest)")
    else:
        click.echo(f"{file}: Content Credentials {result.state}")
        click.echo(f"  signed by: {result.signer}  generator: {result.generator}")
        for key, value in (result.claim or {}).items():
            click.echo(f"  {key}: {value}")
        for failure in result.failures:
            click.echo(f"  failure: {failure}")
        if result.trust_required and result.state == "Valid":
            click.echo("  not trusted: the signing certificate does not chain to the given trust anchors")
    if not result.ok:
        raise SystemExit(1)


@provenance.command("dev-cert")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the chain, key and root PEM files.")
def dev_cert(out: Path) -> None:
    """Make a development root CA and a C2PA signing certificate issued by it (never for production)."""
    from reelforge.provenance import credentials

    chain, key, root = credentials.write_dev_chain(out)
    click.echo(f"REELFORGE_C2PA_CERT_CHAIN={chain}\nREELFORGE_C2PA_PRIVATE_KEY={key}\n"
               f"REELFORGE_C2PA_TRUST_ANCHORS={root}")
