"""Running the `pipeline` CLI in-process, and what a clean refusal looks like."""

from __future__ import annotations

import sys

from pipeline.cli import main


def pipeline_main(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """Run ``pipeline ARGS`` in-process through ``pipeline.cli.main``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pipeline", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str, after_log: bool = False) -> None:
    """Exit 2, a single ``error: ...`` line on stderr that contains every fragment, no traceback
    (``after_log``: progress lines before it are allowed)."""
    assert code == 2, err
    lines = err.strip().splitlines()[-1 if after_log else 0:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(f in lines[0] for f in fragments), err
    assert "Traceback" not in err
