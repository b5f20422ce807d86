"""Hostile input, generated: the border's limits (`models/wire.py`) hold for values no
one thought to write down.

Why generated: each value that once got past the border (a lone surrogate, a year-1
date, an integer past a double, nesting past the parser's stack) was found one at a
time, after it had done its damage. These strategies produce the whole class: any
Unicode (lone surrogates and U+0000 included), nesting up to and past
`MAX_JSON_DEPTH`, integers at the edges of 32, 53 and 64 bits, numbers no JSON
parser should accept (NaN, Infinity, `1e400`), and datetimes from year 1 to 9999 with
every offset, naive, or garbage.

Two levels: in-process properties of the parsers and schemas (many examples,
shrinking on), and the live API over real HTTP (fewer examples, no shrinking against
a server): never a 5xx, every refusal in OpenAI's error shape, and whatever was
accepted can be stored, read back and sent on as strict UTF-8 JSON.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import text

from models import wire
from models.batch_lines import BatchLine, LineError, parse_lines, validate_file
from models.schemas.jobs import JobCreate
from models.schemas.keys import KeyCreate
from models.tenancy import model_allowed
from tests.conftest import MASTER_KEY, Fleet
from tests.support.tenancy import make_key

CHAT = "/v1/chat/completions"
MODEL = "mock-model"
VIRTUAL_MODELS = ["mock-*"]
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)

#: In-process properties: cheap, so many examples, and shrinking finds the small case.
IN_PROCESS = settings(max_examples=1000, deadline=None, database=None)
#: Against the live API: bounded examples, no shrinking (a failure is reported as
#: found; the shrinker would replay a slow request hundreds of times).
LIVE = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)


class Raw(str):
    """A fragment of JSON text written as is: numbers no encoder writes (`1e400`),
    nesting deeper than any encoder's stack."""


# --- strategies -------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    "\x00",
    "nul \x00 inside",
    "\ud800",
    "\udfff",
    "x \udc00 y",
    "\ud83d",  # the high half of an emoji, alone
    "\ud83d\ude00",  # both halves as two code points: still not valid Unicode here
    "😀",
    "\u2028\u2029\ufeff\ufffe\uffff",
    "\U0010ffff",
    "e\u0301\u0301\u0301",
    "\u202eevil",
    "%00",
    "\\ud800",  # the six characters, not a surrogate: must be accepted as text
    "'; DROP TABLE jobs; --",
    "a" * 5000,
]

#: Any code point, lone surrogates (category Cs) included, plus the known bad ones.
hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(
        lambda a, bad, b: a + bad + b,
        st.text(max_size=10),
        st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]),
        st.text(max_size=10),
    ),
)

INT_EDGES = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**53 - 1,
    2**53,
    2**53 + 1,
    -(2**53) + 1,
    -(2**53),
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**30,
    -(10**30),
]
edge_ints = st.one_of(st.sampled_from(INT_EDGES), st.integers())

RAW_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E+999",
    "1e-400",
    "-0",
    "-0.0",
    "0e0",
    "9007199254740992.0",
    "9.007199254740993e15",
    "1e20",
    "123456789012345678901234567890.5",
    "1" * 5000,  # past the interpreter's int-from-text digit limit
    "0." + "0" * 400 + "1",
]
numbers = st.one_of(
    edge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([Raw(n) for n in RAW_NUMBERS]),
)

OFFSETS = ["Z", "+00:00", "+14:00", "-14:00", "+05:30", "-00:01", ""]
DATE_TEXT = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
    "9999-01-01T00:00:00Z",
    "9998-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2030-01-01T00:00:00",
    "2999-01-01T00:00:00Z",
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00:00+24:00",
    "2030-01-01T00:00:00+99:99",
    "+12345-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "0000-00-00T00:00:00Z",
    "2030-01-01T00:00:00.99999999999Z",
    "2030-W01-1",
    "now",
    "tomorrow",
    "",
    "\x00",
    "2030-01-01T00:00:00Z\ud800",
]
#: A datetime as a client might write it: any year 1..9999, any offset or none.
generated_dates = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.sampled_from(OFFSETS),
)
dates = st.one_of(
    st.sampled_from(DATE_TEXT),
    generated_dates,
    st.sampled_from([0, -1, 2**31, 2**53, 10**30, 253402300800, -62135596800]),
    st.sampled_from([Raw("1e400"), Raw("NaN")]),
)

DURATIONS = ["1s", "90s", "30m", "24h", "7d", "365d", "366d", "3650d", "3651d"]
durations = st.one_of(
    st.sampled_from([*DURATIONS, "0s", "99999999999d", "1y", "-1d", " 7d ", "7 d", "7D", ""]),
    st.builds(lambda n, u: f"{n}{u}", edge_ints, st.sampled_from("smhd")),
    hostile_text,
)


def deep(depth: int, leaf: str = "1") -> Raw:
    """`depth` levels of nesting as text, without recursion (100_000 levels and more)."""
    return Raw("[" * depth + leaf + "]" * depth)


def deep_object(depth: int) -> Raw:
    return Raw('{"a": ' * depth + "1" + "}" * depth)


nesting = st.one_of(
    st.integers(wire.MAX_JSON_DEPTH - 3, wire.MAX_JSON_DEPTH + 3).map(deep),
    st.integers(wire.MAX_JSON_DEPTH - 3, wire.MAX_JSON_DEPTH + 3).map(deep_object),
    st.sampled_from([deep(100_000), deep_object(20_000)]),
)

leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text, dates)
#: Any JSON value, hostile at every level.
json_values = st.recursive(
    st.one_of(leaves, nesting),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(hostile_text, children, max_size=4),
    ),
    max_leaves=12,
)


def sane_or(value: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the sane value, so that a generated body gets past the first field and
    reaches the code behind it; otherwise a hostile one."""
    return st.one_of(st.just(value), st.just(value), hostile)


CHAT_FIELDS = [
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "presence_penalty",
    "tools",
    "tool_choice",
    "response_format",
    "user",
    "metadata",
    "priority",
    "deadline",
    "completion_window",
    "cache",
]


@st.composite
def chat_bodies(draw: st.DrawFn, job_fields: bool = True) -> dict[str, Any]:
    """A chat-completions body (with a job's own options when `job_fields`), some of
    its values hostile."""
    content = draw(st.one_of(hostile_text, json_values))
    message = {"role": draw(sane_or("user", json_values)), "content": content}
    body: dict[str, Any] = {
        "model": draw(sane_or(MODEL, json_values)),
        "messages": draw(sane_or([message], json_values)),
    }
    fields = CHAT_FIELDS if job_fields else CHAT_FIELDS[:13]
    for name in draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)):
        if name == "deadline":
            body[name] = draw(dates)
        elif name == "completion_window":
            body[name] = draw(durations)
        elif name == "metadata":
            body[name] = draw(st.dictionaries(hostile_text, hostile_text, max_size=3))
        else:
            body[name] = draw(json_values)
    if draw(st.booleans()):
        body[draw(hostile_text)] = draw(json_values)
    return body


def to_json(value: Any, ascii_only: bool = True) -> str:
    """JSON text of `value` as a hostile client writes it: NaN and Infinity as their
    tokens, `Raw` fragments verbatim, lone surrogates escaped (`ascii_only`) or raw."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (f"{to_json(k, ascii_only)}: {to_json(v, ascii_only)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(value: Any, ascii_only: bool) -> bytes:
    """The bytes on the wire: without `ascii_only`, a lone surrogate becomes the three
    bytes no UTF-8 decoder accepts."""
    return to_json(value, ascii_only).encode("utf-8", "surrogatepass")


raw_bytes = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}", b"\x00"]
    ),
)

#: A whole batch line: mostly a request line with hostile parts, else anything at all.
#: No raw newline inside a line (the file is split on them), so line numbers are known.
BLANK = [b"", b"   ", b"\t", b"\r"]


@st.composite
def batch_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["request", "request", "request", "value", "bytes", "blank"]))
    if kind == "blank":
        return draw(st.sampled_from(BLANK))
    if kind == "bytes":
        return draw(raw_bytes.filter(lambda b: b"\n" not in b and b.strip() != b""))
    if kind == "value":
        value = draw(json_values)
    else:
        value = {
            "custom_id": draw(sane_or(f"c{draw(st.integers(0, 5))}", json_values)),
            "method": draw(sane_or("POST", json_values)),
            "url": draw(sane_or(CHAT, json_values)),
            "body": draw(sane_or(draw(chat_bodies(job_fields=False)), json_values)),
        }
    line = encode(value, draw(st.booleans()))
    return line if line.strip() else b"null"


batch_files = st.lists(batch_lines(), min_size=1, max_size=6)


# --- shared checks ----------------------------------------------------------------


def assert_sendable(body: dict[str, Any]) -> None:
    """A stored job body can always be sent to a provider: within the limits, strict
    UTF-8 JSON, and unchanged by a round trip."""
    wire.check_json(body)
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert json.loads(json.dumps(body, allow_nan=False)) == body


def assert_strict_utf8(value: Any) -> None:
    """Every string (keys included) of a parsed JSON value encodes as strict UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def expected_line_numbers(lines: list[bytes]) -> list[int]:
    return [number for number, raw in enumerate(lines, start=1) if raw.strip()]


def as_file(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def in_bounds(moment: dt.datetime | None) -> None:
    if moment is not None:
        assert moment.tzinfo is not None, moment
        assert EARLIEST <= moment < LATEST, moment


# --- in-process properties --------------------------------------------------------


@IN_PROCESS
@given(lines=batch_files)
@example(lines=[b'{"custom_id": "a", "body": ' + deep(100_000).encode() + b"}"])
@example(lines=[b"", b"\xed\xa0\x80", b"   ", b"[" * 65 + b"]" * 65])
def test_every_batch_line_is_a_request_or_an_error_with_its_number(lines: list[bytes]) -> None:
    # Given a file of generated lines, some blank, some hostile
    data = as_file(lines)
    # When it is parsed as the API does (a file handle yields lines with their "\n")
    results = list(parse_lines(io.BytesIO(data), CHAT, lambda m: m == MODEL))
    report = validate_file(io.BytesIO(data), len(data), CHAT, lambda m: m == MODEL)
    # Then each non-blank line answers once, under its own number
    assert [r.line for r in results] == expected_line_numbers(lines)
    assert report.lines == len(results)
    assert [e.line for e in report.errors if e.code != "empty_file"] == [
        r.line for r in results if isinstance(r, LineError)
    ]
    # and every accepted body can be stored and sent on
    for result in results:
        if isinstance(result, BatchLine):
            assert isinstance(result.body, dict)
            assert_sendable(result.body)
        else:
            assert result.code and result.message


@IN_PROCESS
@given(raw=st.one_of(raw_bytes, st.builds(encode, json_values, st.booleans())))
@example(raw=deep(200_000).encode())
@example(raw=b"1" * 5000)
@example(raw=b'"\\ud800"')
def test_wire_loads_refuses_only_with_value_errors(raw: bytes) -> None:
    # When arbitrary bytes are parsed at the border
    try:
        value = wire.loads(raw)
    except ValueError:
        # Then a refusal is a ValueError (WireError, JSONDecodeError, UnicodeDecodeError,
        # the digit limit): the border turns each into a 400
        return
    # and what is accepted is within the limits and strict UTF-8 JSON
    wire.check_json(value)
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


@IN_PROCESS
@given(body=chat_bodies())
@example(body={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "deadline": 1e400})
def test_job_create_refuses_only_with_validation_errors(body: dict[str, Any]) -> None:
    # Given a body parsed from JSON text (Raw fragments become what a parser makes)
    try:
        parsed = json.loads(to_json(body))
    except (ValueError, RecursionError):
        parsed = body
    try:
        job = JobCreate.model_validate(parsed)
    except ValidationError:
        return
    # Then an accepted deadline, given or relative, is one every store can hold
    in_bounds(job.deadline)
    in_bounds(job.effective_deadline(dt.datetime.now(dt.UTC)))


@IN_PROCESS
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "alias": hostile_text,
            "models": json_values,
            "rpm": numbers,
            "tpm": numbers,
            "max_parallel_jobs": numbers,
            "max_priority": numbers,
            "max_batch_lines": numbers,
            "cache_ttl": numbers,
            "expires_at": dates,
            "duration": durations,
            "metadata": json_values,
        },
    )
)
def test_key_create_refuses_only_with_validation_errors(fields: dict[str, Any]) -> None:
    try:
        parsed = json.loads(to_json(fields))
    except (ValueError, RecursionError):
        parsed = fields
    try:
        key = KeyCreate.model_validate(parsed)
    except ValidationError:
        return
    in_bounds(key.expires_at)
    changes = key.changes()
    in_bounds(changes.get("expires_at"))
    for limit in ("rpm", "tpm", "max_parallel_jobs", "max_batch_lines", "cache_ttl"):
        value = changes.get(limit)
        assert value is None or 0 <= value <= 2**31 - 1, (limit, value)


SEED_CASES = ['"99999999999999999999999999999"', '"9007199254740993"', "9007199254740992.0"]


@pytest.mark.parametrize("seed", SEED_CASES)
def test_a_seed_past_the_integer_limit_is_refused(seed: str) -> None:
    line = (
        f'{{"custom_id": "a", "method": "POST", "url": "{CHAT}", "body": {{"model": "{MODEL}",'
        f' "messages": [{{"role": "user", "content": "x"}}], "seed": {seed}}}}}'
    )
    [result] = parse_lines([line.encode()], CHAT, lambda m: True)
    assert isinstance(result, LineError), result
    assert result.param == "body.seed" and result.line == 1


# --- the live API -----------------------------------------------------------------


def assert_error_shape(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)


def assert_answer(response: httpx.Response, sent: bytes) -> None:
    """Never a 5xx; a refusal in OpenAI's shape; any answer strict UTF-8 JSON."""
    assert response.status_code < 500, (sent[:300], response.status_code, response.text)
    if 400 <= response.status_code < 500:
        assert_error_shape(response)
    response.content.decode("utf-8")
    if response.content:
        assert_strict_utf8(response.json())


def stored_request(fleet: Fleet, job_id: str) -> Any:
    with fleet.engine.connect() as conn:
        return conn.execute(
            text("SELECT request FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()


def listings_answer(fleet: Fleet) -> None:
    with fleet.client() as admin:
        for path in ("/v1/jobs", "/v1/keys", "/v1/batches"):
            response = admin.get(path)
            assert response.status_code == 200, (path, response.text)


@pytest.fixture
def keys(clean_fleet: Fleet) -> list[str]:
    """The master key and a virtual key with limits (none tight enough to hide the
    code behind them)."""
    virtual = make_key(
        clean_fleet.api_url,
        models=VIRTUAL_MODELS,
        rpm=100_000,
        tpm=100_000_000,
        max_parallel_jobs=10_000,
        max_batch_lines=10_000,
    )
    return [MASTER_KEY, virtual.key]


@pytest.fixture
def http(clean_fleet: Fleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=clean_fleet.api_url, timeout=60) as client:
        yield client


@pytest.mark.timeout(300)
def test_hostile_job_bodies_never_answer_5xx(
    clean_fleet: Fleet, keys: list[str], http: httpx.Client
) -> None:
    statuses: Counter[int] = Counter()

    @settings(LIVE, max_examples=400)
    @given(body=chat_bodies(), ascii_only=st.booleans(), key=st.sampled_from(keys))
    def run(body: dict[str, Any], ascii_only: bool, key: str) -> None:
        # When a hostile body is sent as bytes
        raw = encode(body, ascii_only)
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        response = http.post("/v1/jobs", content=raw, headers=headers)
        statuses[response.status_code] += 1
        # Then the answer is one a client can read
        assert_answer(response, raw)
        if response.status_code == 202:
            # and an accepted job reads back as strict UTF-8, its stored body sendable
            job_id = response.json()["id"]
            read = http.get(f"/v1/jobs/{job_id}", headers=headers)
            assert read.status_code == 200, read.text
            assert_answer(read, raw)
            assert_sendable(stored_request(clean_fleet, job_id))

    run()
    # Not vacuous: generated bodies reached both the refusals and the queue.
    assert statuses[202] >= 5 and statuses[400] >= 5, statuses
    listings_answer(clean_fleet)


@pytest.mark.timeout(300)
def test_hostile_chat_completions_never_answer_5xx(
    clean_fleet: Fleet, keys: list[str], http: httpx.Client
) -> None:
    # The mock provider answers at once (clean_fleet: latency 0, no errors), so a
    # request that gets through waits only for the worker.
    statuses: Counter[int] = Counter()

    @settings(LIVE, max_examples=200)
    @given(body=chat_bodies(job_fields=False), ascii_only=st.booleans(), key=st.sampled_from(keys))
    def run(body: dict[str, Any], ascii_only: bool, key: str) -> None:
        raw = encode(body, ascii_only)
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        response = http.post(CHAT, content=raw, headers=headers)
        statuses[response.status_code] += 1
        assert_answer(response, raw)

    run()
    # Not vacuous: some generated bodies were answered by the mock provider.
    assert statuses[200] >= 3 and statuses[400] >= 5, statuses
    listings_answer(clean_fleet)


def header_value(value: bytes) -> bool:
    """What an HTTP/1.1 client may send as a field value at all (h11 refuses the rest
    before it leaves): no control characters but tab, no edge whitespace."""
    return value == value.strip(b" \t") and not any(
        (b < 0x20 and b != 0x09) or b == 0x7F for b in value
    )


header_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(st.characters(exclude_categories=()), max_size=60).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
    st.sampled_from([b"x" * 8000, "Bearer é".encode(), b"Bearer \xff\xfe", b"Basic Og=="]),
).filter(header_value)

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "",
    "*/*",
    "application/json; boundary=",
]


@st.composite
def hostile_headers(draw: st.DrawFn, keys: list[str]) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    auth = draw(
        st.one_of(
            st.builds(lambda k: f"Bearer {k}".encode(), st.sampled_from(keys)),
            st.builds(lambda v: b"Bearer " + v, header_bytes).filter(header_value),
            header_bytes,
        )
    )
    if auth:
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["x-api-key"] = draw(st.one_of(st.sampled_from(keys).map(str.encode), header_bytes))
    content_type = draw(
        st.one_of(st.sampled_from(CONTENT_TYPES).map(str.encode), header_bytes, st.none())
    )
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


@pytest.mark.timeout(300)
def test_hostile_headers_never_answer_5xx(
    clean_fleet: Fleet, keys: list[str], http: httpx.Client
) -> None:
    good = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    ).encode()

    @settings(LIVE, max_examples=300)
    @given(
        headers=hostile_headers(keys),
        call=st.sampled_from(["POST /v1/jobs", "GET /v1/jobs", "GET /v1/keys", "GET /v1/models"]),
    )
    def run(headers: dict[str, bytes], call: str) -> None:
        method, path = call.split()
        response = http.request(
            method,
            path,
            content=good if method == "POST" else None,
            headers=[(name.encode(), value) for name, value in headers.items()],
        )
        assert_answer(response, repr(headers).encode())

    run()
    listings_answer(clean_fleet)


@pytest.mark.timeout(300)
def test_hostile_batch_files_are_reported_line_by_line(
    clean_fleet: Fleet, keys: list[str], http: httpx.Client
) -> None:
    @settings(LIVE, max_examples=150)
    @given(lines=batch_files, key=st.sampled_from(keys))
    def run(lines: list[bytes], key: str) -> None:
        # Given a generated batch file, uploaded
        data = as_file(lines)
        headers = {"Authorization": f"Bearer {key}"}
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", data)},
            data={"purpose": "batch"},
            headers=headers,
        )
        assert_answer(upload, data)
        assert upload.status_code == 200, upload.text
        # When it is checked with a dry run
        body = {"input_file_id": upload.json()["id"], "endpoint": CHAT}
        response = http.post("/v1/batches", json=body, params={"dry_run": "true"}, headers=headers)
        # Then it answers with every bad line, as the parser in-process finds them
        assert_answer(response, data)
        assert response.status_code == 200, response.text
        allowed = None if key == MASTER_KEY else lambda m: model_allowed(VIRTUAL_MODELS, m)
        report = validate_file(io.BytesIO(data), len(data), CHAT, lambda m: m == MODEL, allowed)
        answer = response.json()
        assert answer["valid"] is report.ok
        assert answer["request_count"] == report.lines
        found = [(e["line"], e["code"]) for e in (answer["errors"] or {"data": []})["data"]]
        assert found == [(e.line, e.code) for e in report.errors]

    run()
    listings_answer(clean_fleet)


def test_the_strategies_write_what_they_promise() -> None:
    """The strategies really do produce the values they promise (a strategy that
    silently lost its surrogates would make every test above pass vacuously)."""
    assert "\ud800" in SPECIAL_TEXT
    assert math.isinf(json.loads(to_json(Raw("1e400"))))
    assert encode("\ud800", ascii_only=True) == b'"\\ud800"'
    assert encode("\ud800", ascii_only=False) == b'"\xed\xa0\x80"'
    assert encode(deep(3), True) == b"[[[1]]]"
