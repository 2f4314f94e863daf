"""Assertions shared by the command-line tests."""
from __future__ import annotations


def assert_input_error(result, *fragments: str) -> str:
    """Exit code 2 and a one-line message on stderr that names the problem, without a traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
