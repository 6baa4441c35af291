"""Installing and checking: the built-in spaces ship in the wheel; gpu-check.sh checks what it needs first."""
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO


def test_wheel_ships_the_builtin_spaces(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("dsd-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import dsd.design.spaces as s; "
            "assert s.__file__.startswith(sys.argv[1]), s.__file__; "
            "print(','.join(s.builtin_names())); print(s.load_space('RegNetY').network['block'])")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["AnyNetXA,AnyNetXB,AnyNetXC,AnyNetXD,AnyNetXE,RegNetX,RegNetY", "Y"]
    assert (site / "dsd" / "builtin_spaces" / "examples" / "regnet_se_cifar.yaml").is_file()


def test_gpu_check_names_every_missing_requirement_before_doing_anything(tmp_path):
    import shutil

    out = tmp_path / "out"
    bare = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), str(out)], cwd=REPO, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", "PYTHON": f"{sys.executable} -S"})
    assert bare.returncode == 1 and "lacks torch, torchvision, PIL" in bare.stderr and "pytest" in bare.stderr
    assert list(out.iterdir()) == []  # nothing installed, nothing run
    if shutil.which("nvidia-smi") is None:
        ready = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), str(out)], cwd=REPO, text=True,
                               capture_output=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
        assert ready.returncode == 1 and ready.stderr.strip() == "gpu-check: torch sees no CUDA GPU"
