import subprocess
import sys

HEAVY = ("torch", "open_clip", "h5py", "decord", "av", "pandas")


def test_cli_import_is_light() -> None:
    code = f"import sys, tcmgc_cli.cli\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_help_answer_without_heavy_imports() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tcmgc_cli.cli import app\n"
        "r = CliRunner()\n"
        "v = r.invoke(app, ['--version'])\n"
        "h = r.invoke(app, ['extract', '--help'])\n"
        "assert v.exit_code == 0 and v.output.startswith('tcmgc '), v.output\n"
        "assert h.exit_code == 0 and '--store-frames' in h.output, h.output\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
