"""Every command README.md shows, run as written, on a copy of the tree as committed.

The commands are the lines of its ```sh blocks (a trailing `\\` continues a line, `#`
starts a comment), its ```python blocks, and the inline code spans that start with a
program (`make demo ...`, `.venv/bin/python benchmarks/...`). Each one runs, or is in
EXEMPT with the reason. The text run is the README's, changed only by SUBSTITUTIONS
(shorter durations, a smaller scope for the benchmarks, free ports instead of the
fixed ones; the ports also in the copied policy files the commands read), and every
substitution and exemption must still match the README, so a changed README is what
is tested.

The copy holds the files git tracks, with `.venv` linked to the venv running this
test. Its PATH lacks that venv, so a command that needs `firsttoken` on PATH works
only after the README's own `. .venv/bin/activate`. A section that starts a server
(a trailing `&`, or `firsttoken serve`) runs in order, its servers up until its
end, when they are stopped and must exit 0; every other command runs on its own,
all of them at once. A reader's shell state (`export`, `. .venv/bin/activate`)
carries on down the page.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from router.sim.ports import free_block
from router.sim.ports import free_ports as pick_ports
from router.speech.check import missing

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: a command taking longer than this fails (benchmarks share 2 cores with everything)
COMMAND_TIMEOUT_S = 240.0
#: the ports the README uses, replaced by free ones (in commands and policies/*.yaml)
README_PORTS = (8080, 8001, 8002, 8003, 8004, 8090)
#: inline code that is a command starts with one of these
PROGRAMS = re.compile(r"^(make|firsttoken|bash|pip|pytest|curl|python3?|\.venv/bin/\S+|\S+\.sh) ")

#: (pattern, replacement, why): applied in order to each command's text
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"^make demo$", "make demo DEMO_ARGS='--duration 2'", "a 2 s demo, not 60 s"),
    (r"--duration 20\b", "--duration 2", "2 s of load, not 20"),
    (r"--duration 60\b", "--duration 3", "3 s of load, not 60"),
    (r"demo --voice --no-live --duration 30$", "demo --voice --no-live --duration 5", "5 s"),
    (r"^make ", "make -o .venv/.installed-dev ", "the venv is the one running this test"),
    (r"--minutes 30\b", "--minutes 0.05", "a 3 s soak"),
    (
        r"benchmarks/overhead\.py$",
        "benchmarks/overhead.py --duration 0.5 --warmup 0.2 --concurrency 1 --peers nginx",
        "half a second at one concurrency; the LiteLLM peer needs its own venv (exempt)",
    ),
    (
        r"benchmarks/overhead\.py --endpoint (\w+)$",
        r"benchmarks/overhead.py --endpoint \1 --duration 0.5 --warmup 0.2 --concurrency 1",
        "half a second at one concurrency, per endpoint",
    ),
    (
        r"benchmarks/routing\.py$",
        "benchmarks/routing.py --quick --duration 1 --only slo_cost+hedge --no-splits",
        "one policy for one second",
    ),
    (
        r"benchmarks/realtime\.py$",
        "benchmarks/realtime.py --duration 0.5 --warmup 0.2 --concurrency 1 --peers '' "
        "--migration-rounds 1 --migration-sessions 2",
        "half a second at one concurrency, one migration round; no LiteLLM peer (exempt)",
    ),
    (
        r"benchmarks/realtime_idle\.py$",
        "benchmarks/realtime_idle.py --sessions 0,2 --duration 0.5",
        "half a second each with no session and with two",
    ),
    (
        r"benchmarks/voice\.py --sessions 1,8,32 --turns 4$",
        "benchmarks/voice.py --sessions 1 --turns 1 --barge-in 0",
        "one caller, one turn (its bars are read at 32 sessions)",
    ),
    (
        r"benchmarks/hostile\.py$",
        "benchmarks/hostile.py --rounds 1 --duration 0.5 --warmup 0.2 --streams 2 "
        "--interval 0.5 --kinds big_unknown,bad_http",
        "one short round of two hostile kinds",
    ),
    (
        r"benchmarks/unseen\.py$",
        "benchmarks/unseen.py --seeds 5 --configs oracle,slo_cost+hedge --workers 1",
        "one tuning fleet, two configurations (the report is seeds 1000-1029, every config)",
    ),
    (
        r"benchmarks/speech_formats\.py$",
        "benchmarks/speech_formats.py --seconds 2 --rounds 1",
        "two seconds of speech, once per format",
    ),
    (r"benchmarks/litellm_path\.py$", "benchmarks/litellm_path.py --n 5 --concurrency 1", "5"),
    (
        r"benchmarks/redis_limits\.py$",
        "benchmarks/redis_limits.py --duration 1 --warmup 0.3 --rounds 1 --concurrency 16",
        "one short round",
    ),
    (
        r"^(\.venv/bin/pytest .*)$",
        r"\1 --collect-only -q -p no:cacheprovider",
        "collected, not run: the tests it selects run in this suite or behind their marker",
    ),
    (r"pip install -e \.$", "pip install --dry-run -e .", "builds and resolves, installs nothing"),
]

#: command -> why it does not run here
EXEMPT: dict[str, str] = {
    "make test": "the suite this test is part of",
    "bash .ci/run": "CI itself: installs Debian packages as root, then runs make test",
    "make test-vllm": "installs vLLM's CPU build (3.6 GiB); runs on its own",
    "make test-compiled": "the suite this test is part of, compiled (~1 min of C first); "
    "tests/test_build.py compiles a copy of the tree and runs the compiled rooms' tests",
    "make compile": "~1 min of C compilation, and the copy would then run compiled; "
    "tests/test_build.py compiles a copy of the tree",
    "pytest -m vllm": "what make test-vllm runs",
    "pip install firsttoken": "tests/test_packaging.py installs the built wheel in a fresh venv",
    "firsttoken demo": "tests/test_packaging.py runs it from an empty folder",
    "python3 -m venv .venv-litellm-proxy && .venv-litellm-proxy/bin/pip install "
    "'litellm[proxy]==1.106.2'": "a second litellm install (~1 GB); overhead.py runs "
    "here without that peer",
    "benchmarks/guidellm.sh": "installs guidellm and torch (~6 GB); pytest -m guidellm runs it",
    "pip install 'firsttoken[voice-local]'": "the dev install running this test has the extra",
    "make test-pipecat": "creates .venv-pipecat (Pipecat and openai 3, ~300 MB); runs on its own",
    "import os\nfrom pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService\n\n"
    "llm = OpenAIRealtimeLLMService(\n"
    '    api_key=os.environ.get("FIRSTTOKEN_KEY", "unused"),  # a client key, when auth is on\n'
    '    base_url="ws://127.0.0.1:8080/v1/realtime",\n'
    '    settings=OpenAIRealtimeLLMService.Settings(model="voice"),  # the route\'s name\n'
    ")": "Pipecat lives in .venv-pipecat; make test-pipecat runs the same service",
}

#: commands that need the local speech engines: not run where they are missing (the voice
#: tests skip there too, saying what is missing)
NEEDS_SPEECH_ENGINES = re.compile(r"firsttoken speech serve|127\.0\.0\.1:8090")

#: (pattern on the command, pattern its output must match)
EXPECT: list[tuple[str, str]] = [
    (r"^make -o \S+ demo", r"demo summary: .*\n(.*\n)*\d+ turns offered, [1-9]\d* ok"),
    (r"^firsttoken check ", r": valid\n"),
    (r"demo --voice", r"voice demo summary: (.*\n)*.*laptop-voice"),
    (r"^curl ", r"data: \[DONE\]"),
    (r"^from openai import OpenAI", r"\S"),
    (r"^firsttoken simulate ", r"TTFT p50 ms(.*\n)*wrote "),
    (r"benchmarks/\w+\.py", r"\S"),
]

#: servers: (pattern, URLs that answer 200 once ready, the signal that stops them)
SERVERS: list[tuple[str, tuple[str, ...], signal.Signals]] = [
    (r"^firsttoken serve ", ("http://127.0.0.1:8080/readyz",), signal.SIGTERM),
    (r"^firsttoken speech serve ", ("http://127.0.0.1:8090/health",), signal.SIGINT),
    (
        r"^firsttoken sim .*--serve",
        tuple(f"http://127.0.0.1:{p}/v1/models" for p in (8001, 8002, 8003, 8004)),
        signal.SIGINT,
    ),
]


@dataclass
class Command:
    text: str
    kind: str  # "sh", "python" or "inline"
    background: bool = False

    @property
    def server(self) -> tuple[tuple[str, ...], signal.Signals] | None:
        for pattern, urls, stop in SERVERS:
            if re.search(pattern, self.text):
                return urls, stop
        return None

    @property
    def stateful(self) -> bool:
        return self.kind == "sh" and self.text.split(" ", 1)[0] in ("export", ".", "source")


@dataclass
class Section:
    title: str
    commands: list[Command] = field(default_factory=list)

    @property
    def in_order(self) -> bool:
        return any(c.background or c.server for c in self.commands)


def shell_lines(block: str) -> Iterator[tuple[str, bool]]:
    """Logical lines of a sh block, comments dropped: (command, runs in the background)."""
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        background = words[-1] == "&"
        yield shlex.join(words[:-1] if background else words), background


def readme_sections(text: str) -> list[Section]:
    sections = []
    for chunk in re.split(r"^(?=## )", text, flags=re.MULTILINE):
        section = Section(chunk.splitlines()[0] if chunk else "")
        fences = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
        pos = 0
        for fence in [*fences.finditer(chunk), None]:
            prose = chunk[pos : fence.start() if fence else len(chunk)]
            for raw in re.findall(r"`([^`]+)`", prose):
                span = " ".join(raw.split())
                if PROGRAMS.match(span) or span in EXEMPT:
                    section.commands.append(Command(span, "inline"))
            if fence is None:
                break
            pos = fence.end()
            lang, body = fence.group(1), fence.group(2)
            if lang == "sh":
                section.commands += [Command(c, "sh", bg) for c, bg in shell_lines(body)]
            elif lang == "python":
                section.commands.append(Command(body.strip(), "python"))
        sections.append(section)
    return sections


#: sections run at once (the suite's time against a machine's run queue)
PARALLEL = 6


def free_ports() -> dict[int, int]:
    """README port -> a free one; 8001-8004 stay consecutive (`sim --base-port`)."""
    # Below Linux's ephemeral range (32768-60999), which every bind(0) and outgoing
    # connection of the sections running beside this one draws from, and reserved
    # against every other pick of ours (router/sim/ports.py).
    out = dict(zip((8080, 8090), pick_ports(2), strict=True))
    out.update({8001 + i: p for i, p in enumerate(free_block(4))})
    return out


def with_ports(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(80(?:80|0[1-4]|90))\b", lambda m: str(ports[int(m.group(1))]), text)


@dataclass
class Runner:
    work: Path
    ports: dict[int, int]
    used: set[str] = field(default_factory=set)
    logs: Iterator[int] = field(default_factory=itertools.count)

    def rewrite(self, text: str) -> str:
        for pattern, replacement, _why in SUBSTITUTIONS:
            new = re.sub(pattern, replacement, text, flags=re.MULTILINE)
            if new != text:
                self.used.add(pattern)
                text = new
        ported = with_ports(text, self.ports)
        if ported != text:
            self.used.add("ports")
        return ported

    def run_section(self, commands: list[Command], env: dict[str, str]) -> list[str]:
        """Run in order; stop the section's servers at its end. Returns the failures."""
        failures: list[str] = []
        servers: list[tuple[Command, subprocess.Popen[bytes], Path, signal.Signals]] = []
        try:
            for command in commands:
                if failures:
                    failures.append(f"{command.text}: not run (an earlier command failed)")
                    continue
                failure = self.run_one(command, env, servers)
                if failure:
                    failures.append(failure)
        finally:
            for command, proc, log, stop in servers:
                if proc.poll() is None:
                    proc.send_signal(stop)
                try:
                    code = proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    code = proc.wait()
                if code != 0 and not failures:
                    failures.append(self.failed(command, f"exit {code} when stopped", log))
        return failures

    def run_one(
        self,
        command: Command,
        env: dict[str, str],
        servers: list[tuple[Command, subprocess.Popen[bytes], Path, signal.Signals]],
    ) -> str | None:
        text = self.rewrite(command.text)
        words = shlex.split(text) if command.kind != "python" else []
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, _, value = word.partition("=")
                env[name] = value
            return None
        if words[:1] in (
            [
                ".",
            ],
            ["source"],
        ):
            bin_dir = (self.work / words[1]).parent
            env["PATH"] = f"{bin_dir}:{env['PATH']}"
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
            return None
        log = self.work / f"cmd-{next(self.logs)}.log"
        argv = (
            [shutil.which("python", path=env["PATH"]) or "python", "-c", text]
            if command.kind == "python"
            else ["bash", "-c", f"exec {text}" if command.server else text]
        )
        server = command.server
        if command.background or server is not None:
            assert server is not None, f"{command.text}: a background command with no readiness"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv, cwd=self.work, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            servers.append((command, proc, log, server[1]))
            return self.wait_ready(command, proc, log, server[0])
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv, cwd=self.work, env=env, capture_output=True, timeout=COMMAND_TIMEOUT_S,
                check=False, start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            log.write_bytes(exc.stdout or b"")
            return self.failed(command, f"still running after {COMMAND_TIMEOUT_S:g} s", log)
        log.write_bytes(done.stdout + done.stderr)
        if done.returncode != 0:
            return self.failed(command, f"exit {done.returncode}", log)
        output = done.stdout.decode("utf-8", "replace")
        for pattern, wanted in EXPECT:
            if re.search(pattern, text) and not re.search(wanted, output):
                return self.failed(command, f"output does not match {wanted!r}", log)
        elapsed = time.monotonic() - started
        print(f"{elapsed:6.1f} s  {text[:100]}")
        return None

    def wait_ready(
        self, command: Command, proc: subprocess.Popen[bytes], log: Path, urls: tuple[str, ...]
    ) -> str | None:
        deadline = time.monotonic() + 90
        pending = [with_ports(u, self.ports) for u in urls]
        while pending and time.monotonic() < deadline:
            if proc.poll() is not None:
                return self.failed(command, f"exit {proc.returncode} before it was ready", log)
            try:
                if httpx.get(pending[0], timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return self.failed(command, "never ready", log) if pending else None

    def failed(self, command: Command, what: str, log: Path) -> str:
        tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
        return f"{command.text}\n  -> {self.rewrite(command.text)}\n  {what}\n{tail}"


def copy_tree(work: Path, ports: dict[int, int]) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            dst = work / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for policy in (work / "policies").glob("*.yaml"):
        policy.write_text(with_ports(policy.read_text("utf-8"), ports), "utf-8")
    (work / ".venv").symlink_to(Path(sys.prefix))


def plan(all_sections: list[Section]) -> list[list[Command]]:
    """The tasks to run at once. A reader's shell state (`export`, `. activate`) carries
    on down the page, so each task starts with every such command above it; a command
    shown twice runs once; a section with a server is one task, in order."""
    state: list[Command] = []
    seen: set[str] = set()
    tasks: list[list[Command]] = []
    skip_speech = bool(missing())
    for section in all_sections:
        todo = []
        for command in section.commands:
            if skip_speech and NEEDS_SPEECH_ENGINES.search(command.text):
                continue
            if command.text not in EXEMPT and command.text not in seen:
                todo.append(command)
            seen.add(command.text)
        if section.in_order:
            tasks.append([*state, *todo])
            state += [c for c in todo if c.stateful]
            continue
        for command in todo:
            if command.stateful:
                state.append(command)
            else:
                tasks.append([*state, command])
    return tasks


def sections() -> list[Section]:
    return readme_sections(README.read_text(encoding="utf-8"))


def test_the_readme_shows_commands_and_every_exemption_is_still_in_it() -> None:
    commands = {c.text for s in sections() for c in s.commands}
    assert "firsttoken check policies/hybrid.yaml" in commands
    assert len(commands) > 15
    assert set(EXEMPT) <= commands, sorted(set(EXEMPT) - commands)


@pytest.mark.timeout(600)
def test_every_command_in_the_readme_works_as_written(tmp_path: Path) -> None:
    ports = free_ports()
    copy_tree(tmp_path, ports)
    runner = Runner(tmp_path, ports)
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    base_env = {**os.environ, "PATH": path}
    base_env.pop("VIRTUAL_ENV", None)

    tasks = plan(sections())
    # A few at a time: every section at once (~25 of them, each with servers) put two
    # cores under a run queue of 20+, where a router's start-up outlived the 20 s its
    # benchmark gives it and a simulator was not up before its client connected.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(tasks), PARALLEL)) as pool:
        results = list(pool.map(lambda t: runner.run_section(t, dict(base_env)), tasks))
    failures = [f for result in results for f in result]
    assert not failures, "\n\n".join(failures)
    wanted = {p for p, _, _ in SUBSTITUTIONS} | {"ports"}
    assert runner.used == wanted, f"substitutions that no command uses: {wanted - runner.used}"
