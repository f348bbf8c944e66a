"""The command line: build and evaluate hand every argument they do not know to luigi."""
import pytest

from tasks import cli


@pytest.fixture
def luigi_argv(monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "run_with_retcodes", seen.append)
    monkeypatch.setattr(cli, "_print_summary", lambda out: None)
    return seen


@pytest.mark.parametrize("argv", [
    ["build", "--SelectPatches-std-min", "0", "--workers", "2"],
    ["build", "--workers", "2", "--", "--SelectPatches-std-min", "0"],
])
def test_build_passes_luigi_arguments_on(luigi_argv, argv):
    assert cli.main(argv) == 0
    (passed,) = luigi_argv
    assert passed[passed.index("--workers") + 1] == "2"
    assert passed[-2:] == ["--SelectPatches-std-min", "0"]
    assert "--" not in passed


def test_other_commands_refuse_unknown_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["verify", "out", "--SelectPatches-std-min", "0"])
    assert "unrecognized arguments: --SelectPatches-std-min 0" in capsys.readouterr().err
