"""Property-based tests of the live HTTP API against its own OpenAPI document (schemathesis 4 + hypothesis):
every operation gets generated requests, valid ones and invalid ones (schemathesis' coverage cases, then
random cases of each kind), sent to the session's real ``longwatch serve`` with an admin token. No answer
may be a 5xx, every status code must be documented and every body must match its documented schema.

So that valid requests also reach real data (and the schemas of real segments, pages and timelines get
checked), a stream's segments are loaded straight into the service's Redis first, and half of the valid
random requests are pointed at it (its id, its segments' ids, windows in stream seconds or UTC around it).

Safety: requests only ever go to the service on 127.0.0.1. A generated ``POST /api/v1/streams`` never
names a source of its own: its ``source`` is replaced by one that can only fail its probe on this machine
(a missing file under the media root, a path escaping it, a closed port on 127.0.0.1, an unsupported
scheme) and ``validate`` is forced to true, so nothing gets registered with an unprobed source. Streams
that existed before the run are never touched (their ids are swapped out of generated paths). The last
test removes anything the run made and fails if it made anything.

(schemathesis' own pytest integration, ``schemathesis.pytest.from_fixture``, does not run under pytest 9:
it sets ``Node._nodeid``, which pytest 9 no longer has. So the operations are driven here with
schemathesis' public pieces, ``iter_coverage_cases`` and ``as_strategy``, and hypothesis directly.)"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from waiting import free_port

from longwatch.pipeline.types import Segment

ROOT = Path(__file__).resolve().parents[1]
MAX_EXAMPLES = 40  # random cases per operation and mode, on top of the coverage cases
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
LIVE = "GET /api/v1/events/live"
STREAMS = "/api/v1/streams"
ADD = f"POST {STREAMS}"
LOOPBACK = "127.0.0.1"
SEEDED = "schema-seeded"  # the stream whose segments are loaded straight into Redis
EPOCH = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENTS = ("person_present", "car_present")
# The operations, from the committed document (tests/test_openapi.py holds it equal to the live one; the
# last test here checks that they are all the live service has).
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, methods in json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"].items()
    for method in methods
)


class Run:
    """The module's state: the schema from the live service, safe sources, and what the run sent and got."""

    def __init__(self, service):
        self.base = service["url"]
        assert urlsplit(self.base).hostname == LOOPBACK, self.base
        self.headers = service.headers("admin")
        self.media = service["media"]
        self.sources = [
            str(self.media / "schema-fuzz" / "no-such-clip.mp4"),
            f"{self.media}/../outside.mp4",
            f"rtsp://{LOOPBACK}:{free_port()}/x",
            f"http://{LOOPBACK}:{free_port()}/x.m3u8",
            f"ftp://{LOOPBACK}/x",
        ]
        self.schema = schemathesis.openapi.from_url(f"{self.base}/openapi.json", headers=self.headers, timeout=30)
        self.schema.config.update(base_url=self.base, headers=self.headers, request_timeout=30)
        self.schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
        self.before = self.stream_ids()
        self.segment_ids: list[str] = []
        self.cases: dict[str, Counter] = defaultdict(Counter)  # label → {mode: cases}
        self.statuses: dict[str, Counter] = defaultdict(Counter)  # label → {status: answers}
        self.created: list[dict] = []
        self.failed: set[str] = set()

    def operation(self, label: str):
        method, path = label.split(" ", 1)
        return self.schema[path][method]

    def stream_ids(self) -> set[str]:
        got = requests.get(f"{self.base}{STREAMS}", headers=self.headers, timeout=30)
        assert got.status_code == 200, got.text
        return {s["id"] for s in got.json()}

    def steer(self, case, draw) -> None:
        """Point a valid request at the seeded stream (half of them): its id, its segments' ids, its
        events, a window around its segments in stream seconds or in UTC; no random cursor."""
        if not draw(st.booleans()):
            return
        params = case.path_parameters or {}
        if "stream_id" in params:
            params["stream_id"] = draw(st.sampled_from([SEEDED, "no-such-stream"]))
        if "event_id" in params:
            params["event_id"] = draw(st.sampled_from([*self.segment_ids[:5], "0" * 20]))
        query = case.query
        if not isinstance(query, dict):
            return
        for key in ("stream", "streams"):
            if key in query:
                query[key] = draw(st.sampled_from([SEEDED, f"{SEEDED},no-such-stream"]))
        if "event" in query:
            query["event"] = draw(st.sampled_from(EVENTS))
        for key in ("cursor", "since"):
            query.pop(key, None)
        if "after" in query or "before" in query:
            start = draw(st.floats(-100, 2000, allow_nan=False))
            span = draw(st.sampled_from([0.5, 30.0, 600.0, 5000.0]))
            if draw(st.booleans()):
                after, before = str(round(start, 3)), str(round(start + span, 3))
            else:
                after = (EPOCH + timedelta(seconds=start)).isoformat()
                before = (EPOCH + timedelta(seconds=start + span)).isoformat()
            query["after"], query["before"] = after, before
            if "bucket" in query:
                query["bucket"] = draw(st.sampled_from([None, span / 10, span / 3]))
                if query["bucket"] is None:
                    del query["bucket"]

    def make_safe(self, case) -> None:
        """Rewrite what a generated request may do before it is sent (see the module's docstring)."""
        params = case.path_parameters or {}
        if params.get("stream_id") in self.before:  # never a stream someone else made
            params["stream_id"] = f"fuzz-{zlib.crc32(str(params['stream_id']).encode()):08x}"
        if case.operation.path == STREAMS and case.method.upper() == "POST" and isinstance(case.body, dict):
            pick = zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode()) % len(self.sources)
            case.body["source"] = self.sources[pick]
            case.body["validate"] = True

    def send(self, case, label: str, mode: GenerationMode) -> None:
        """One request, its answer checked; the live feed's 200 is an endless event stream, so it is only
        opened (its headers checked) and closed, and its error answers must come at once."""
        self.make_safe(case)
        assert urlsplit(self.base).hostname == LOOPBACK
        self.cases[label][mode.value] += 1
        if label == LIVE and case.method.upper() == "GET":
            kwargs = case.as_transport_kwargs(base_url=self.base, headers=self.headers)
            assert urlsplit(kwargs["url"]).hostname == LOOPBACK, kwargs["url"]
            started = time.monotonic()
            with requests.request(**kwargs, stream=True, timeout=(10, 10)) as response:
                if response.status_code == 200:
                    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
                    self.statuses[label][200] += 1
                    return
                response.content  # noqa: B018 - an error answer is short: read it whole
            assert time.monotonic() - started < 10, "an error answer from the live feed took long"
            case.validate_response(response, checks=CHECKS, headers=self.headers)
        else:
            response = case.call_and_validate(base_url=self.base, headers=self.headers, checks=CHECKS)
            if label == ADD and case.method.upper() == "POST" and response.status_code == 201:
                self.created.append({"request": case.body, "response": response.json()})
        self.statuses[label][response.status_code] += 1


@pytest.fixture(scope="module")
def run(service):
    run = Run(service)
    store = service.store()
    segments = [
        Segment(SEEDED, EVENTS[i % 2], 10.0 * i, 10.0 * i + (0.0, 4.5, 30.0)[i % 3], EPOCH, (i % 10) / 10,
                "open" if i == 59 else "closed")
        for i in range(60)
    ]  # fmt: skip
    store.register(SEEDED, epoch=EPOCH)
    store.bulk_load(SEEDED, segments, epoch=EPOCH)
    run.segment_ids = [s.id for s in segments]
    yield run
    store.drop_stream(SEEDED)


def _fuzzer(run: Run, label: str, operation, mode: GenerationMode):
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases each run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case, data):
        if mode is GenerationMode.POSITIVE:
            run.steer(case, data.draw)
        run.send(case, label, mode)

    return fuzz


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_answers_as_documented(run, label):
    operation = run.operation(label)
    try:
        # Coverage cases: the schema's boundaries and typical values, and its typical violations (wrong
        # types, out-of-range values, missing required parts, methods the path does not have).
        for mode in MODES:
            for case in run.schema.iter_coverage_cases(
                operation, generation_modes=[mode], generation_config=run.schema.config.generation
            ):
                run.send(case, label, mode)
        # Then random cases of each kind.
        for mode in MODES:
            try:
                _fuzzer(run, label, operation, mode)()
            except Unsatisfiable:
                # Nothing in the operation can be made invalid at random (no parameters, or only free
                # strings): its invalid requests are the coverage cases above.
                assert mode is GenerationMode.NEGATIVE and run.cases[label][mode.value], dict(run.cases[label])
    except BaseException:
        run.failed.add(label)
        raise
    assert run.cases[label][GenerationMode.POSITIVE.value], dict(run.cases[label])


def test_every_operation_was_fuzzed_and_nothing_registered(run):
    """Last (declared after the fuzzing): every live operation got valid and invalid requests, and the
    valid ones reached real data; no stream was registered (every generated source fails its probe);
    anything the run made is removed with its segments, and none has a source outside 127.0.0.1 and the
    media root."""
    live = sorted(f"{r.ok().method.upper()} {r.ok().path}" for r in run.schema.get_all_operations())
    assert live == OPERATIONS, "docs/openapi.json is out of date: run `python -m longwatch.api`"
    untested = [label for label in OPERATIONS if not run.cases[label]]
    assert not untested, f"not fuzzed (did the fuzzing tests run?): {untested}"
    passed = sorted(set(OPERATIONS) - run.failed)  # a failed one stopped at its first failure
    for label in passed:
        counts = run.cases[label]
        assert counts[GenerationMode.POSITIVE.value] and counts[GenerationMode.NEGATIVE.value], (label, counts)
    reached = {"GET /api/v1/events", "GET /api/v1/events/{event_id}", "GET /api/v1/streams/{stream_id}",
               "GET /api/v1/timeline"}  # fmt: skip
    for label in sorted(reached.intersection(passed)):
        assert run.statuses[label][200], f"no valid request to {label} got a 200: {dict(run.statuses[label])}"

    new = sorted(run.stream_ids() - run.before - {SEEDED})
    details: dict[str, object] = {}
    for sid in new:
        got = requests.get(f"{run.base}{STREAMS}/{sid}", headers=run.headers, timeout=30)
        details[sid] = got.json() if got.status_code == 200 else got.status_code
        gone = requests.delete(f"{run.base}{STREAMS}/{sid}", params={"purge": "true"}, headers=run.headers, timeout=30)
        assert gone.status_code in (202, 404), gone.text
    outside = {
        sid: d
        for sid, d in details.items()
        if isinstance(d, dict)
        and not (
            str(d.get("source", "")).startswith(str(run.media))
            or urlsplit(str(d.get("source", ""))).hostname == LOOPBACK
        )
    }
    assert not outside, f"streams registered with a source outside 127.0.0.1 and the media root: {outside}"
    assert not new and not run.created, f"the fuzzing registered streams: {details} {run.created}"
