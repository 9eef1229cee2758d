"""`redline.workflows.batch`: the input checked whole, items concurrent through one
`Runner`, failures as results, and an output file that survives crashes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from redline import Candidate, Critique, Task
from redline.critics.base import Critic
from redline.errors import ConfigError, CriticError
from redline.testing import ScriptedChat
from redline.types import Budget, StopReason
from redline.workflows import (
    BatchItem,
    BatchOutput,
    RefineConfig,
    Runner,
    RunSpec,
    abatch,
    arun_batch,
    read_items,
)
from redline.workflows.batch import failed_result, result_line


class Watching(Critic):
    """Counts preflights, tracks how many critiques run at once, breaks on request."""

    name = "watching"

    def __init__(self, *, broken_for: str | None = None, fail_preflight: bool = False,
                 hold: float = 0.02) -> None:
        self.preflights = 0
        self.now = 0
        self.most = 0
        self.cancelled = 0
        self.broken_for = broken_for
        self.fail_preflight = fail_preflight
        self.hold = hold

    async def preflight(self) -> None:
        self.preflights += 1
        if self.fail_preflight:
            raise ConfigError("the watching critic cannot start")

    async def critique(self, task: Task, candidate: Candidate) -> Critique:
        if task.id == self.broken_for:
            raise CriticError(f"critic {self.name!r} broke on {task.id}")
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.hold)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.now -= 1
        return Critique(critic=self.name, score=1.0)


def echo() -> ScriptedChat:
    return ScriptedChat(handler=lambda messages: "answer to " + messages[-1]["content"])


def items(n: int) -> list[BatchItem]:
    return read_items([json.dumps({"id": f"i{k}", "task": f"task {k}"}) for k in range(n)])


# --- the input -------------------------------------------------------------------------

def test_every_bad_line_is_named_in_one_message() -> None:
    lines = ['{"id": "a", "task": "x"}', "not json {", "[1, 2]", '{"prompt": "y"}', "",
             '{"task": "  "}', '{"id": "a", "task": "z"}', '{"task": "q", "extra": 1}',
             '{"task": "q", "draft": 3}', '{"id": 7, "task": "q"}']
    with pytest.raises(ConfigError) as info:
        read_items(lines, name="IN.jsonl")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("IN.jsonl: 8 bad lines: line 2: not JSON (")
    for part in ("line 3: not a JSON object (a list)",
                 "line 4: missing 'task' (found 'prompt': call it 'task')",
                 "line 6: 'task': the task is empty",
                 "line 7: duplicate id 'a' (first on line 1)",
                 "line 8: unknown field 'extra'",
                 "line 9: 'draft': input should be a valid string",
                 "line 10: 'id': input should be a valid string"):
        assert part in message


def test_a_byte_order_mark_is_not_part_of_the_input(tmp_path: Path) -> None:
    # Windows editors save UTF-8 with a BOM: it must neither break line 1 nor reach a task.
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"id": "a", "task": "q"}\n{"id": "b", "task": "r"}\n')
    first, second = read_items(source)
    assert (first.id, first.task, second.task) == ("a", "q", "r")


def test_unicode_line_separators_inside_strings_do_not_split_a_line(tmp_path: Path) -> None:
    # JSON strings may hold U+2028, U+2029 and U+0085 raw; str.splitlines splits at them.
    source = tmp_path / "in.jsonl"
    tasks = ["Say\u2028hi", "one\u2029two", "next\x85line", "old\x1cmac"]
    source.write_text("".join(json.dumps({"id": f"t{k}", "task": t}, ensure_ascii=False)
                              + "\r\n" for k, t in enumerate(tasks)), encoding="utf-8")
    assert [item.task for item in read_items(source)] == tasks


def test_json_that_python_reads_but_cannot_use_is_a_bad_line() -> None:
    deep = '{"task": "q", "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    lonely = '{"id": "s", "task": "Say \\ud800 hi"}'
    pair = '{"id": "p", "task": "Say \\ud83d\\ude00 hi"}'  # a whole pair is text: kept
    long = '{"id": "n", "task": "q", "metadata": {"n": ' + "9" * 5000 + "}}"
    with pytest.raises(ConfigError) as info:
        read_items([deep, lonely, pair, long], name="IN.jsonl")
    message = str(info.value)
    assert message.startswith("IN.jsonl: 3 bad lines: line 1: not JSON (nested too deep); "
                              "line 2: not JSON (a \\u escape leaves half a surrogate pair")
    assert message.endswith("line 4: not JSON (a number too long to read)")
    assert read_items([pair])[0].task == "Say \U0001f600 hi"


def test_a_key_given_twice_is_a_bad_line() -> None:
    # JSON keeps the last value silently: the task the person wrote first would be lost.
    twice = '{"id": "a", "task": "first", "metadata": {}, "task": "second"}'
    nested = '{"id": "b", "task": "q", "metadata": {"tests": "x", "tests": "y"}}'
    with pytest.raises(ConfigError) as info:
        read_items([twice, nested], name="IN.jsonl")
    assert str(info.value) == ("IN.jsonl: 2 bad lines: line 1: not JSON (key 'task' given "
                               "twice); line 2: not JSON (key 'tests' given twice)")


def test_ids_default_to_a_content_hash_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('\n{"task": "q", "metadata": {"tests": "assert 1"}}\n\n'
                      '{"id": "named", "task": "r", "draft": "d", "system": "s"}\n')
    first, named = read_items(source)
    again = read_items(['{"metadata": {"tests": "assert 1"}, "task": "q"}'])[0]
    assert first.id == again.id and len(first.id) == 16  # stable under key order
    assert named.to_task(system="default").system == "s"
    assert first.to_task(system="default").system == "default"
    task = named.to_task()
    assert (task.id, task.prompt, task.draft) == ("named", "r", "d")
    with pytest.raises(ConfigError, match="line 2: the same item as line 1"):
        read_items(['{"task": "q"}', '{"task": "q"}'])
    with pytest.raises(ConfigError, match="no items"):
        read_items(["", "  "])


# --- abatch ----------------------------------------------------------------------------

async def test_items_share_one_preflight_and_respect_the_concurrency() -> None:
    critic = Watching()
    runner = Runner(RefineConfig(model=echo(), critics=[critic]))
    results = [r async for r in abatch(items(10), runner, concurrency=3)]
    assert critic.preflights == 1
    assert critic.most == 3
    assert sorted(r.task.id for r in results) == [f"i{k}" for k in range(10)]
    assert all(r.stop_reason is StopReason.threshold for r in results)
    assert {r.task.id: r.text for r in results}["i4"] == "answer to task 4"


async def test_the_objects_alive_before_a_batch_are_frozen_out_of_gc_scans_during_it(
        ) -> None:
    import gc

    during: list[int] = []

    def frozen_count(text: str) -> float:
        during.append(gc.get_freeze_count())
        return 1.0

    runner = Runner(RefineConfig(model=echo(), critics=[frozen_count]))
    assert gc.get_freeze_count() == 0
    results = [r async for r in abatch(items(4), runner, concurrency=2)]
    assert len(results) == 4 and len(during) == 4
    assert min(during) > 0  # frozen while the items ran
    assert gc.get_freeze_count() == 0  # and released after


async def test_a_failing_item_is_a_result_and_the_others_finish() -> None:
    critic = Watching(broken_for="i2")
    config = RefineConfig(model=echo(), critics=[critic], on_error="raise")
    results = {r.task.id: r async for r in abatch(items(5), config, concurrency=2)}
    assert len(results) == 5
    broken = results.pop("i2")
    assert broken.stop_reason is StopReason.error and "broke on i2" in (broken.error or "")
    assert broken.text == "answer to task 2"  # on_error="result": the unscored draft is kept
    assert all(r.stop_reason is StopReason.threshold for r in results.values())

    # A runner that raises: the escaping error still becomes the item's result.
    runner = Runner(config)
    results = {r.task.id: r async for r in abatch(items(3), runner)}
    assert results["i2"].stop_reason is StopReason.error and results["i2"].best is None
    assert "broke on i2" in (results["i2"].error or "")
    assert results["i0"].stop_reason is StopReason.threshold


async def test_a_failed_preflight_stops_the_batch_before_any_call() -> None:
    model = echo()
    config = RefineConfig(model=model, critics=[Watching(fail_preflight=True)])
    with pytest.raises(ConfigError, match="cannot start"):
        _ = [r async for r in abatch(items(4), config)]
    assert model.calls == []


async def test_cancelling_the_batch_cancels_the_items_in_flight() -> None:
    critic = Watching(hold=30)
    seen: list[str] = []

    async def consume() -> None:
        async for result in abatch(items(6), RefineConfig(model=echo(), critics=[critic]),
                                   concurrency=4):
            seen.append(result.task.id)

    consumer = asyncio.create_task(consume())
    while critic.now < 4:
        await asyncio.sleep(0.01)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert critic.cancelled == 4 and critic.now == 0 and seen == []
    assert [t for t in asyncio.all_tasks() if "batch item" in t.get_name()] == []


async def test_skip_ids_and_duplicate_ids() -> None:
    config = RefineConfig(model=echo(), critics=[Watching()])
    done = [r.task.id async for r in abatch(items(4), config, skip_ids={"i0", "i3"})]
    assert sorted(done) == ["i1", "i2"]
    twice = [Task(id="x", prompt="a"), Task(id="x", prompt="b")]
    with pytest.raises(ConfigError, match="two batch items have the id 'x'"):
        _ = [r async for r in abatch(twice, config)]


# --- the output file -------------------------------------------------------------------

SPEC = RunSpec(critics=["judge"], budget=Budget(max_rounds=1)).model_dump(mode="json")


def _doc(item_id: str) -> dict:
    return result_line(failed_result(Task(id=item_id, prompt="q"), CriticError("x"), 0.9),
                       SPEC)


def test_output_header_lines_and_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    out = BatchOutput(path, SPEC)
    assert not path.exists()  # nothing written before start
    out.write(_doc("a"))
    with pytest.raises(ValueError, match="'a' is already in"):
        out.write(_doc("a"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"redline_batch": 1, "spec": SPEC}
    assert lines[1]["id"] == "a" and lines[1]["task"]["id"] == "a"
    assert lines[1]["stop_reason"] == "error" and lines[1]["settings"] == SPEC

    with pytest.raises(ConfigError, match="exists and is not empty: add --resume"):
        BatchOutput(path, SPEC)
    again = BatchOutput(path, SPEC, resume=True)
    assert again.done == {"a"} and again.torn_line is None
    other = RunSpec(critics=["judge"], budget=Budget(max_rounds=2)).model_dump(mode="json")
    with pytest.raises(ConfigError, match=r"other settings \(budget.max_rounds: 1 in the "
                                          r"file, 2 now\)"):
        BatchOutput(path, other, resume=True)


@pytest.mark.parametrize("tail", ['{"id": "b", "schema_ver', '{"id": "b"}', "{\"id\": \"b\"\n"])
def test_a_torn_last_line_is_dropped_on_resume(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "out.jsonl"
    BatchOutput(path, SPEC).write(_doc("a"))
    whole = path.read_text()
    path.write_text(whole + tail)
    out = BatchOutput(path, SPEC, resume=True)
    assert out.done == {"a"} and out.torn_line == 3
    assert path.read_text() == whole + tail  # only `start` writes
    out.write(_doc("b"))
    ids = [json.loads(line).get("id") for line in path.read_text().splitlines()]
    assert ids == [None, "a", "b"]


def test_a_damaged_middle_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    out = BatchOutput(path, SPEC)
    out.write(_doc("a"))
    out.write(_doc("b"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")
    with pytest.raises(ConfigError, match="line 2: not JSON; the file is damaged"):
        BatchOutput(path, SPEC, resume=True)
    path.write_text('{"some": "thing"}\n')
    with pytest.raises(ConfigError, match="not a redline batch output"):
        BatchOutput(path, SPEC, resume=True)


async def test_arun_batch_writes_each_item_once_and_a_resume_runs_only_the_rest(
        tmp_path: Path) -> None:
    def reply(messages: list) -> str:
        if "grade" in messages[0]["content"]:
            return json.dumps({"score": 10, "feedback": ""})
        return "answer to " + messages[-1]["content"]

    model = ScriptedChat(handler=reply)
    spec = RunSpec(budget=Budget(max_rounds=0), system="Be brief.")
    path = tmp_path / "out.jsonl"
    summary = await arun_batch(spec, items(3), path, model=model, concurrency=2)
    assert (summary.done, summary.failed, summary.skipped) == (3, 0, 0)
    assert summary.stop_reasons == {"threshold": 3} and summary.mean_best_score == 1.0
    calls = len(model.calls)
    assert model.calls[0]["messages"][0]["content"] == "Be brief."

    with pytest.raises(ConfigError, match="exists and is not empty"):
        await arun_batch(spec, items(5), path, model=model)
    summary = await arun_batch(spec, items(5), path, model=model, resume=True)
    assert (summary.done, summary.skipped, summary.total) == (2, 3, 5)
    assert len(model.calls) - calls == 2 * 2  # two new items: a draft and a verdict each
    ids = [json.loads(line).get("id") for line in path.read_text().splitlines()[1:]]
    assert sorted(ids) == [f"i{k}" for k in range(5)]
