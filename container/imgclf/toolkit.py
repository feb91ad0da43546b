"""The image's ``train``: sagemaker-training's, wrapped (docs/design.md#the-toolkit-glue)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, MutableMapping, Sequence
from datetime import timedelta
from pathlib import Path

import psutil
from sagemaker_training import errors  # the package's __init__ imports nothing: safe before the folder checks

from .config import sagemaker_path
from .failure import FAILURE_FILE, describe_oom_kill, oom_kills, write_failure
from .gpu import host_gpu_count
from .hyperparameters import to_bool

log = logging.getLogger("imgclf.toolkit")

STOP_GRACE_SECONDS = 110  # SIGKILL follows SIGTERM after 120 s
HOST_WAIT_SECONDS = 600  # for the other hosts' names to resolve (IMGCLF_HOST_WAIT_SECONDS)
JOIN_WAIT_SECONDS = 600  # for the other hosts to reach the barrier (IMGCLF_JOIN_WAIT_SECONDS)
JOIN_PORT = 7778  # the barrier's; torchrun's rendezvous uses sagemaker_training's 7777
PROGRAM_DIR_ENV = "IMGCLF_PROGRAM_DIR"  # where the image keeps train_program.py
PROGRAM_ENV = "SAGEMAKER_PROGRAM"  # the toolkit's params.USER_PROGRAM_ENV
DEFAULT_PROGRAM = "train_program.py"
OUR_MODULE = "imgclf.toolkit:run_program"

_stop_requested = False
_program_finished = False
_oom_kills_at_start = 0


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _forward(signum: int, _frame) -> None:
    """Pass the signal to every descendant and wait, without reaping: the toolkit collects the exit status."""
    global _stop_requested
    _stop_requested = True
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(_running(child) for child in children):
        time.sleep(0.1)


def _resolves(host: str) -> bool:
    try:
        socket.gethostbyname(host)
        return True
    except OSError:
        return False


def _wait_for(pending: Callable[[], list[str]], timeout: float, waiting_for: str, timed_out: Callable[[str], str]) -> None:
    """Poll until ``pending()`` names nobody: logged every 10 s, ended by a stop, bounded by ``timeout``."""
    deadline, next_log = time.monotonic() + timeout, 0.0
    while names := ", ".join(pending()):
        if _stop_requested:
            raise errors.ClientError(f"stopped by SIGTERM while waiting for {waiting_for.format(names)}")
        if time.monotonic() >= deadline:
            raise errors.ClientError(timed_out(names))
        if time.monotonic() >= next_log:
            log.info("waiting up to %.0f s more for %s", deadline - time.monotonic(), waiting_for.format(names))
            next_log = time.monotonic() + 10
        time.sleep(0.5)


def wait_for_hosts(hosts: Sequence[str], timeout: float) -> None:
    """Wait until every host name resolves; one host has nobody to wait for."""
    if len(hosts) > 1:
        _wait_for(lambda: [h for h in hosts if not _resolves(h)], timeout, "host name(s) {} to resolve", lambda names: (
            f"host name(s) {names} of resourceconfig.json did not resolve within {timeout:g} s "
            f"(hosts: {', '.join(hosts)}); check the network of the job's instances"))


def join_hosts(hosts: Sequence[str], current: str, timeout: float) -> None:
    """Every host checks in at the first one (a TCP store on JOIN_PORT), which names any that never comes."""
    if len(hosts) <= 1:
        return
    from torch.distributed import TCPStore  # torch in PID 1 only for a job of several hosts

    first = hosts[0]
    try:
        store = TCPStore(first, JOIN_PORT, None, current == first, timedelta(seconds=timeout), wait_for_workers=False)
        store.set(f"joined/{current}", "1")
    except (RuntimeError, OSError) as e:
        raise errors.ClientError(f"host {current} could not reach the first host {first} on port {JOIN_PORT} within "
                                 f"{timeout:g} s (IMGCLF_JOIN_WAIT_SECONDS): {str(e).splitlines()[0]}") from e
    if current == first:
        _wait_for(lambda: [h for h in hosts if not store.check([f"joined/{h}"])], timeout, "host(s) {} to join",
                  lambda names: (f"host(s) {names} did not join the distributed job within {timeout:g} s "
                                 f"(IMGCLF_JOIN_WAIT_SECONDS; hosts: {', '.join(hosts)}): their names resolve, but train "
                                 f"never reached {first}:{JOIN_PORT} from them; see those hosts' logs"))


def choose_program(hyperparameters: dict, environ: MutableMapping[str, str] = os.environ) -> None:
    """The job's program when it names one (``sagemaker_program``) and SAGEMAKER_PROGRAM is not its own, else ours."""
    if hyperparameters.get("sagemaker_program") and environ.get(PROGRAM_ENV, DEFAULT_PROGRAM) == DEFAULT_PROGRAM:
        environ.pop(PROGRAM_ENV, None)
    else:
        environ.setdefault(PROGRAM_ENV, DEFAULT_PROGRAM)


def _program_source(env, code_dir: str) -> str:
    """The job's own code (sagemaker_submit_directory, or already in the code folder), else ours."""
    if env.module_dir != code_dir or os.path.isfile(os.path.join(code_dir, env.user_entry_point)):
        return env.module_dir
    if env.user_entry_point != DEFAULT_PROGRAM:
        raise errors.ClientError(
            f"the job's program {env.user_entry_point!r} (sagemaker_program) is not in {code_dir}, and the job names no "
            "sagemaker_submit_directory to fetch it from (the SDK sets both from entry_point and source_dir)")
    return os.environ.get(PROGRAM_DIR_ENV, env.module_dir)


def run_program() -> None:
    global _program_finished
    from sagemaker_training import entry_point, environment, runner
    from sagemaker_training.torch_distributed import TorchDistributedRunner

    class TorchrunRunner(TorchDistributedRunner):
        def _setup(self) -> None:
            super()._setup()
            os.environ["GLOO_SOCKET_IFNAME"] = str(self._network_interface_name)  # CPU jobs use gloo

        def _create_command(self) -> list[str]:
            command = super()._create_command()
            command[0] = str(Path(sys.executable).with_name("torchrun"))  # ours, wherever PATH points
            return command

        def run(self, wait: bool = True, capture_error: bool = False):
            # entry_point.run passes (wait, capture_error); 4.9's TorchDistributedRunner takes them swapped
            return super().run(capture_error=capture_error, wait=wait)

    env = environment.Environment()
    timeout = float(os.environ.get("IMGCLF_HOST_WAIT_SECONDS", HOST_WAIT_SECONDS))
    join_timeout = float(os.environ.get("IMGCLF_JOIN_WAIT_SECONDS", JOIN_WAIT_SECONDS))

    def wait_and_join() -> None:  # the toolkit's waits up to 15 min for names, and torchrun 15 min more
        wait_for_hosts(env.hosts, timeout)
        join_hosts(env.hosts, env.current_host, join_timeout)

    entry_point._wait_hostname_resolution = wait_and_join
    args, env_vars = env.to_cmd_args(), env.to_env_vars()
    process_runner = runner.ProcessRunnerType
    flag = to_bool(env.additional_framework_parameters.get("sagemaker_torch_distributed_enabled", False))
    gpus = host_gpu_count()
    if flag or gpus > 1 or len(env.hosts) > 1:
        if len(env.hosts) > 1 and not flag:
            log.info("%d hosts without sagemaker_torch_distributed_enabled: training one distributed job on all of them",
                     len(env.hosts))
        hosts = env.distribution_hosts or env.hosts  # empty on SageMaker when the flag is off
        process_runner = TorchrunRunner(env.user_entry_point, args, env_vars, max(1, gpus), hosts[0], hosts,
                                        env.current_host, env.network_interface_name, env.current_instance_type)
    source = _program_source(env, environment.code_dir)
    entry_point.run(source, env.user_entry_point, args, env_vars, runner_type=process_runner)
    _program_finished = True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def toolkit_cause(error: BaseException) -> str:
    """One line saying why the toolkit failed, for the head of the failure file."""
    frames = {frame.f_code.co_name: frame.f_locals for frame, _ in traceback.walk_tb(error.__traceback__)}
    reader = frames.get("_read_json") or frames.get("read_json")
    if isinstance(error, json.JSONDecodeError) and reader:
        return (f"{reader.get('path')} is not valid JSON ({error}); SageMaker writes it from the job's request: "
                "check the job's HyperParameters (a map of strings)")
    if "s3_download" in frames:
        uri = frames.get("download_and_extract", {}).get("uri", "S3")
        return (f"could not download the job's code from {uri} (sagemaker_submit_directory): {type(error).__name__}: "
                f"{error}; the job needs a route to S3 for it (no network isolation, a VPC endpoint), or its code in "
                "an input channel with sagemaker_submit_directory set to the file there")
    code = getattr(error, "return_code", None)  # the toolkit's _CalledProcessError: a process it ran failed
    if code is not None and code.lstrip("-").isdigit():
        how = f"was killed by {_signal_name(-int(code))}" if int(code) < 0 else f"exited with code {code}"
        return f"the training program {how} without writing a reason; see the job's log (the lines before it)"
    said = str(error) if isinstance(error, errors.ClientError) else f"{type(error).__name__}: {error}"  # ours say why
    return said.replace("\n", " ")


def _write_toolkit_failure(message: str) -> None:
    """The toolkit's failure writer: the cause first, an OOM kill over the program's reason, never raising."""
    from sagemaker_training import environment

    failure = Path(environment.output_dir) / FAILURE_FILE
    if oom_kills() > _oom_kills_at_start:
        said = failure.read_text(errors="replace").strip() if failure.is_file() else ""
        write_failure(failure.parent, describe_oom_kill() + (f"; the program said: {said}" if said else ""))
    elif not failure.exists():
        error = sys.exc_info()[1]
        cause = "" if error is None else toolkit_cause(error)
        write_failure(failure.parent, message if message.startswith(cause) else f"{cause}\n{message}")


def unwritable_folders(base: Path) -> str | None:
    """Why the job cannot start: a folder it writes that this user may not, or no writable temporary folder."""
    code = base / "code"
    user = f"user {os.getuid()}:{os.getgid()}"
    probe = code if code.is_dir() else code.parent
    if not os.access(probe, os.W_OK) and not (code.is_dir() and any(code.iterdir())):
        return (f"cannot write {code}, where the training toolkit keeps the job's program ({user}): "
                f"{_why_unwritable(probe)}; give this user a writable {base} (docker run -v ...:{base}), "
                f"or at least a writable {code} and {base}/model, {base}/output")
    for folder in (base / "model", base / "output"):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return f"cannot write {folder} ({user}): {_why_unwritable(folder)}; the job writes its results there"
    try:
        tempfile.gettempdir()
    except OSError:
        return ("no writable temporary folder (/tmp, /var/tmp, /usr/tmp): the root filesystem is read-only; "
                "give the container a writable /tmp (docker run --tmpfs /tmp)")
    return None


def _why_unwritable(folder: Path) -> str:
    return "the filesystem is read-only" if os.statvfs(folder).f_flag & os.ST_RDONLY else "permission denied"


def exit_status(toolkit_code: int, output_dir: Path, finished: bool, stopped: bool = False) -> int:
    """The toolkit's exit code, but 0 needs a finished program and a ``success`` file, and a stop exits 143."""
    if toolkit_code != 0:
        return 128 + signal.SIGTERM if stopped else toolkit_code
    if finished and (output_dir / "success").is_file():
        return 0
    reason = "the training program did not finish" if not finished else f"could not write {output_dir / 'success'}"
    log.error("train failed: %s, although the toolkit reported success", reason)
    if not (output_dir / FAILURE_FILE).exists():
        write_failure(output_dir, f"train failed: {reason}; see the log")
    return 1


def main() -> None:
    global _oom_kills_at_start
    signal.signal(signal.SIGTERM, _forward)
    _oom_kills_at_start = oom_kills()
    base = sagemaker_path(os.environ, "SAGEMAKER_BASE_DIR")
    problem = unwritable_folders(base)
    if problem:
        log.error("train failed: %s", problem)
        write_failure(base / "output", problem)
        sys.exit(1)
    os.environ.setdefault("SAGEMAKER_TRAINING_MODULE", OUR_MODULE)
    from sagemaker_training import environment, files
    from sagemaker_training.cli.train import main as toolkit_train

    try:
        hyperparameters = environment.read_hyperparameters()
    except Exception:  # an unreadable hyperparameters.json: the toolkit fails on it, and says why
        hyperparameters = {}
    choose_program(hyperparameters)

    files.write_failure_file = _write_toolkit_failure  # trainer.train calls it through the module
    try:
        toolkit_train()
        code = 0
    except SystemExit as e:  # the toolkit always ends with sys.exit
        code = e.code if isinstance(e.code, int) else 1
    finished = _program_finished or os.environ["SAGEMAKER_TRAINING_MODULE"] != OUR_MODULE
    sys.exit(exit_status(code, Path(environment.output_dir), finished, _stop_requested))


if __name__ == "__main__":
    main()
