"""A Python that other Unix users can run, for dev environments started as their accounts."""

import subprocess
from pathlib import Path

AGENT_VENV = Path("/tmp/suanli-agent-venv")  # noqa: S108 - kept between runs on purpose


def agent_python() -> str:
    """A Python the workloads' Unix users can run (on Slurm's nodes too), importing this
    suanli: Debian's, in a virtual environment under /tmp with the agent's two packages and a
    copy of the code (the checkout may sit where other users cannot read, as under /root).
    Made once and shared by the test modules that start dev environments as other users."""
    python = AGENT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(AGENT_VENV)], check=True)
        constraints = Path(__file__).resolve().parents[1] / "constraints.txt"
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-c",
                str(constraints),
                "asyncssh",
                "websockets",
            ],
            check=True,
        )
    site = next((AGENT_VENV / "lib").glob("python3*/site-packages"))
    subprocess.run(["rm", "-rf", str(site / "suanli")], check=True)
    source = Path(__file__).resolve().parents[1] / "suanli"
    subprocess.run(["cp", "-r", str(source), str(site / "suanli")], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(AGENT_VENV)], check=True)
    return str(python)
