from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prodcat.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("inspect", "demo"):
        assert cmd in result.output


def test_inspect_demo_catalog(demo_catalog: Path) -> None:
    result = runner.invoke(app, ["inspect", str(demo_catalog), "--decode"])
    assert result.exit_code == 0, result.output
    assert "rows: 240" in result.output and "classes: 8" in result.output
    # The demo catalog names some image files that do not exist and points its first row at a corrupt file.
    import pandas as pd

    table = pd.read_csv(demo_catalog)
    absent = [
        pid
        for pid, img in zip(table["id"], table["image"], strict=True)
        if not (demo_catalog.parent / img).is_file()
    ]
    corrupt = table["id"].iloc[0]
    assert absent and corrupt not in absent
    assert f"{len(absent)} image file{'' if len(absent) == 1 else 's'} missing" in result.output
    assert (
        f"images readable: {len(table) - len(absent) - 1}   missing/unreadable: {len(absent) + 1}"
        in result.output
    )
    assert f"{corrupt}: not an image" in result.output
    assert f"{absent[0]}: missing file" in result.output


def test_inspect_bad_column_is_a_clear_error(demo_catalog: Path) -> None:
    result = runner.invoke(app, ["inspect", str(demo_catalog), "--label-column", "nope"])
    assert result.exit_code == 2
    assert "label column 'nope' not found" in result.output


@pytest.mark.realdata
def test_inspect_challenge_layout(shared_data: Path) -> None:
    result = runner.invoke(app, ["inspect", str(shared_data / "rakuten" / "challenge_layout")])
    assert result.exit_code == 0, result.output
    assert "rows: 19" in result.output and "missing/unreadable: 0" in result.output


def test_python_dash_m_prodcat_runs_the_cli() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "prodcat", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "evaluate" in proc.stdout
