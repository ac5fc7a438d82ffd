"""The README's set-up commands, verbatim, on a fresh clone (slow; CI runs it).

The fenced ``bash`` blocks under ``## Set-up`` are parsed, so a change to the README's commands
changes what runs here: the first block (install, then the whole default sweep) runs exactly as
written with ``bash -c`` in a ``git clone`` of this repository's committed state, inside a
throwaway venv made with ``--system-site-packages`` (dependencies come from this environment;
the test runner's own interpreter is never ``pip install -e``'d). The second block (the tests)
is what ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("JAXMU_TEST_CACHE", str(Path.home() / ".cache" / "jaxmu" / "xla-tests"))


def setup_commands(readme: str) -> list[str]:
    """The commands of the fenced ```bash blocks in the README's ``## Set-up`` section."""
    m = re.search(r"^## Set-up\n(.*?)(?=^## )", readme, re.S | re.M)
    assert m, "README.md has no '## Set-up' section"
    return [b.strip() for b in re.findall(r"^```bash\n(.*?)^```", m.group(1), re.S | re.M)]


def _parts(command: str) -> list[list[str]]:
    return [shlex.split(p) for p in command.split("&&")]


def test_ci_runs_the_readme_test_command():
    """Every step of the README's test command is a step of ``.ci/run`` (extra flags allowed)."""
    main, tests = setup_commands((REPO / "README.md").read_text())[:2]
    assert "jaxmu.sweep" in main and "pytest" in tests
    script = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    ci = [shlex.split(line, comments=True) for line in script.splitlines()]

    def within(step: list[str], line: list[str]) -> bool:
        it = iter(line)
        return all(tok in it for tok in step)  # ``step`` is a subsequence of ``line``

    for step in _parts(tests):
        assert any(within(step, line) for line in ci), f"{shlex.join(step)} is not in .ci/run"


def _venv(path: Path) -> Path:
    """A venv seeing this environment's packages; returns its ``bin``."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(path)], check=True)
    if sys.prefix != sys.base_prefix:  # we run in a venv: --system-site-packages sees its base only
        sp = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
        Path(sp, "_outer_env.pth").write_text(lines)  # after the venv's own .pth files (sorted)
    return path / "bin"


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float) -> float:
    start = time.perf_counter()
    res = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{command!r} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return time.perf_counter() - start


def _check_sweep_outputs(runs: Path, method: str) -> None:
    reports = list(runs.glob(f"*/sweep_{method}/report.md"))
    assert len(reports) == 1, f"no single sweep_{method}/report.md under {runs}"
    out = reports[0].parent
    assert (out / "results.csv").is_file() and list(out.glob("*.png"))
    assert f"## {method}" in reports[0].read_text()


@pytest.mark.slow
def test_readme_setup_command_verbatim(tmp_path):
    main = setup_commands((REPO / "README.md").read_text())[0]
    method = re.search(r"--method[ =](\S+)", main).group(1)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    bin_dir = _venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "XLA_FLAGS")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(bin_dir.parent),
               JAXMU_COMPILE_CACHE=CACHE)

    seconds = _run(main, clone, env, timeout=3600)
    print(f"README set-up command: {seconds:.0f} s")
    _check_sweep_outputs(clone / "runs", method)
    where = subprocess.run(["python", "-c", "import jaxmu; print(jaxmu.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(clone), f"the venv imports jaxmu from {where}, not the clone"
    version = subprocess.run([str(bin_dir / "jaxmu"), "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("jaxmu "), version.stderr  # console script

    # The sweep part again from a directory outside the clone (the package is installed now):
    # relative paths follow the current directory. The finished stages are moved there and the
    # report removed, so the rerun resumes from them and writes the report anew.
    sweep = " && ".join(p for p in main.split("&&") if "pip install" not in p).strip()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(clone / "runs", outside / "runs")
    for report in (outside / "runs").glob(f"*/sweep_{method}"):
        shutil.rmtree(report)
    _run(sweep, outside, env, timeout=1800)
    _check_sweep_outputs(outside / "runs", method)
    assert not (clone / "runs").exists()
