"""Where a step's time goes: a `jax.profiler` trace of one warm run of a program (the SFT step,
the forward loss or the activation pattern), summed per XLA op, beside the CPU seconds and page
faults of one untraced run.

The trace (`<host>.trace.json.gz` in Chrome's trace format and `perfetto_trace.json.gz`, both
openable at ui.perfetto.dev; TensorBoard's profile plugin reads the `.xplane.pb` beside them)
records one event per executed op of the compiled program. `op_table`
sums each op's durations over the step (an op inside the layer scan runs once per layer) and
names it by the source it came from: the `op_name` metadata of the compiled HLO, e.g.
`jit(step)/transpose(jvp())/while/body/closed_call/bsd,df->bsf/dot_general` (`transpose(jvp())`
marks the backward pass, `while/body` the layer scan).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import resource
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from headjax.app.bench.models import headjax_params, synthetic_batch
from headjax.app.bench.sft import compiled_train_step, stepping, train_state
from headjax.heads.scores import head_scores
from headjax.model.config import ModelConfig
from headjax.model.loss import loss

PROGRAMS = ("sft", "forward", "pattern")  # the AdamW step, the batch loss, `head_scores`

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (.*)$', re.MULTILINE)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Control flow: a while/conditional/call event spans the ops it runs, which have their own.
_CONTAINERS = ("while", "conditional", "call")


def op_sources(hlo_text: str) -> dict[str, str]:
    """`{HLO instruction name: its op_name metadata ("" without)}` for every instruction of
    `hlo_text` except control flow (`_CONTAINERS`)."""
    sources = {}
    for name, rest in _INSTRUCTION.findall(hlo_text):
        if name.split(".")[0] not in _CONTAINERS:
            found = _OP_NAME.search(rest)
            sources[name] = found.group(1) if found else ""
    return sources


def trace_events(trace_dir: Path) -> list[dict]:
    """The complete ("X") events of the newest Chrome-format trace under `trace_dir`."""
    files = sorted(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def op_table(events: list[dict], sources: dict[str, str], top: int) -> dict:
    """The `top` ops by summed duration: rows of {op, ms, calls, share, backward, source}, with
    the total over all ops (ms), the backward pass's share of it and the sums per `_group`
    ("forward layers products", ...). Events that are not instructions in `sources` (runtime
    bookkeeping, control flow) are left out. Ops that run side by side each count their whole
    duration, so a sum can exceed the wall time it spans."""
    total_us = collections.Counter()
    calls = collections.Counter()
    for event in events:
        name = event["name"]
        if name not in sources:
            continue
        total_us[name] += event.get("dur", 0)
        calls[name] += 1
    all_us = sum(total_us.values())
    backward_us = sum(us for name, us in total_us.items()
                      if "transpose(jvp" in sources[name])
    rows = [{"op": name, "ms": us / 1e3, "calls": calls[name], "share": us / max(all_us, 1),
             "backward": "transpose(jvp" in sources[name], "source": sources[name]}
            for name, us in total_us.most_common(top)]
    groups = collections.Counter()
    for name, us in total_us.items():
        groups[_group(sources[name])] += us / 1e3
    return {"ops_ms": all_us / 1e3, "backward_share": backward_us / max(all_us, 1),
            "rows": rows, "groups_ms": dict(sorted(groups.items()))}


def _group(source: str) -> str:
    """"<pass> <where> <kind>" of an op by its op_name: forward/backward, layer loop or not,
    matrix product or other."""
    return " ".join(("backward" if "transpose(jvp" in source else "forward",
                     "layers" if "while/body" in source else "outside",
                     "products" if "dot_general" in source else "other"))


def compiled_program(config: ModelConfig, batch_size: int, seq: int, program: str
                     ) -> tuple[Callable[[], None], str]:
    """(run one step of `program` in `PROGRAMS` on a `synthetic_batch` with random weights and
    wait for it, the compiled HLO text). "sft" donates and carries its state from run to run."""
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, seq))
    if program == "sft":
        state = train_state(headjax_params(config))
        step, _ = compiled_train_step(config, state, batch)
        return stepping(step, state, batch), step.as_text()
    functions = {"forward": lambda p, b: loss(p, b, config),
                 "pattern": lambda p, b: head_scores(p, b, config)}
    if program not in functions:
        raise ValueError(f"--profile_program: {program!r} not in {PROGRAMS}")
    params = headjax_params(config)
    compiled = jax.jit(functions[program]).lower(params, batch).compile()
    return (lambda: jax.block_until_ready(compiled(params, batch))), compiled.as_text()


def resource_use(run: Callable[[], None]) -> dict:
    """Wall seconds, this process's user and system CPU seconds and minor page faults (first
    touches of freshly mapped memory, 4 KiB each without huge pages) over one `run()`."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime,
            "minor_page_faults": after.ru_minflt - before.ru_minflt}


def profile_section(config: ModelConfig, batch_size: int, seq: int, trace_dir: str,
                    top: int = 15, program: str = "sft") -> dict:
    """Trace one warm run of `program` (`compiled_program`) into `trace_dir`; returns
    `op_table` and `resource_use` of one untraced warm run ("untraced")."""
    run, hlo_text = compiled_program(config, batch_size, seq, program)
    run()  # warm-up: allocations and thread pools settle
    untraced = resource_use(run)
    directory = Path(trace_dir)
    with jax.profiler.trace(str(directory), create_perfetto_trace=True):
        run()
    table = op_table(trace_events(directory), op_sources(hlo_text), top)
    return {"program": program, "batch": batch_size, "seq": seq, "trace_dir": str(directory),
            "untraced": untraced, **table}
