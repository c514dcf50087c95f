"""A flood does not take token holders' places: against a real `serve`, the token is checked before
admission, places are shared by client, and a client is its peer unless a trusted proxy names it.

The service is held full without a gate: a request whose headers arrived holds its place while its
body has not (admission is decided on the headers), so sockets that send headers and wait hold the
places for as long as a test needs.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import random
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cats_dogs_other.server.protocol import SHED_PACE_SECONDS, pace_after
from tests.api.conftest import ServeProcess, serve_command
from tests.auth.conftest import AUDIENCE, FakeProvider, make_key
from tests.auth.conftest import provider_server as provider_server  # the fixture, for this module
from tests.server.test_overload import Responses, multipart, read_response
from tests.server.test_overload import request_head as head
from tests.servers import ProcessMemory


def metrics(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def holding_places(base_url: str, count: int, *extra: str) -> Iterator[list[socket.socket]]:
    """`count` uploads whose headers are sent and whose bodies are not: each holds an admission place
    (QUEUE_MAX=2 here) until the socket closes."""
    port = int(base_url.rsplit(":", 1)[1])
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(head(1000, *extra))
            sockets.append(sock)
        deadline = time.monotonic() + 10
        while value(metrics(base_url), "cdo_inference_requests_in_progress") < count:
            assert time.monotonic() < deadline, "the held requests were never admitted"
            time.sleep(0.02)
        yield sockets


def post(base_url: str, data: bytes, *extra: str) -> tuple[str, dict[str, str], bytes]:
    """One upload on its own connection, body sent with the headers."""
    body = multipart(data)
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head(len(body), *extra) + body)
        return read_response(sock)


@pytest.fixture(scope="module")
def protected(
    provider_server: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """A real `serve` with auth on and two places (QUEUE_MAX=2)."""
    provider_server.keys = [make_key("RS256", kid="rsa-1")]
    command = [part for part in serve_command("--queue-max", "2") if part != "--no-auth"]
    env = {
        "OAUTH2_ISSUER": provider_server.issuer,
        "OAUTH2_AUDIENCE": AUDIENCE,
        "OAUTH2_JWKS_MIN_REFRESH_SECONDS": "0.5",  # a new kid may fetch the keys again soon
    }
    process = ServeProcess(command, tmp_path_factory.mktemp("flood") / "serve.log", env=env).start()
    yield process
    process.stop()


def bearer(provider: FakeProvider, subject: str) -> str:
    return f"Authorization: Bearer {provider.token(sub=subject)}"


def test_requests_without_a_valid_token_never_take_a_place(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    base_url = protected.base_url
    data = sample_files["Cat"].read_bytes()
    forged = make_key("RS256", kid="rsa-1")  # the published kid, another key: a bad signature
    forged_token = provider_server.token(key=forged, sub="mallory")
    before = metrics(base_url)
    with holding_places(base_url, 2, bearer(provider_server, "alice")):
        # The service is full: before this change these were 503 (admitted first, then refused).
        answers = [post(base_url, data) for _ in range(5)]
        answers += [post(base_url, data, f"Authorization: Bearer {forged_token}") for _ in range(5)]
        answers += [post(base_url, data, "Authorization: Basic YWxpY2U6c2VjcmV0")]
        during = metrics(base_url)
    assert [status for status, _, _ in answers] == ["HTTP/1.1 401 Unauthorized"] * 11
    assert all("www-authenticate" in headers for _, headers, _ in answers)
    assert value(during, "cdo_inference_requests_in_progress") == 2  # the token holder's two, no more

    def delta(name: str, **labels: str) -> float:
        return value(during, name, **labels) - value(before, name, **labels)

    assert delta("cdo_refusals_total", reason="unauthenticated") == 11
    assert delta("cdo_refusals_total", reason="full") == 0
    assert delta("cdo_auth_failures_total", reason="missing") == 6
    assert delta("cdo_auth_failures_total", reason="signature") == 5
    assert delta("cdo_http_requests_total", method="POST", route="/upload", status="401") == 11
    # The app never saw them: it times every request it answers, the protocol does not.
    assert delta("cdo_http_request_duration_seconds_count", method="POST", route="/upload", status="401") == 0


def test_a_slow_key_fetch_blocks_neither_the_event_loop_nor_other_clients(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    """A token signed by a key not cached yet waits for the key set, in the app; meanwhile the protocol
    goes on answering everyone else."""
    base_url = protected.base_url
    data = sample_files["Dog"].read_bytes()
    post(base_url, data, bearer(provider_server, "erin"))  # the keys are cached
    rotated = make_key("RS256", kid="rsa-2")
    provider_server.keys = [*provider_server.keys, rotated]
    provider_server.delay = 2.0
    fetches = provider_server.fetches
    time.sleep(0.6)  # past OAUTH2_JWKS_MIN_REFRESH_SECONDS
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            token = provider_server.token(key=rotated, sub="dave")
            waiting = pool.submit(post, base_url, data, f"Authorization: Bearer {token}")
            deadline = time.monotonic() + 10
            while provider_server.fetches == fetches:  # the fetch has started and is held 2 s
                assert time.monotonic() < deadline
                time.sleep(0.01)
            tokenless, _, _ = post(base_url, data)
            answered, _, _ = post(base_url, data, bearer(provider_server, "erin"))
            health = httpx.get(f"{base_url}/health", timeout=10)
            assert not waiting.done()  # still waiting for the provider
            status, _, body = waiting.result(timeout=30)
    finally:
        provider_server.delay = 0.0
    assert (tokenless, answered, health.status_code) == (
        "HTTP/1.1 401 Unauthorized",
        "HTTP/1.1 200 OK",
        200,
    )
    assert status == "HTTP/1.1 200 OK"  # the new key was fetched, then the request admitted
    assert json.loads(body)["prediction"] == "Dog"


def test_the_protocol_refuses_a_token_as_the_app_does(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    """The seed's 401/403 bodies and challenges, whoever answers."""
    data = sample_files["Cat"].read_bytes()
    no_scope = provider_server.token(scope="openid")
    status, headers, body = post(protected.base_url, data)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert headers["www-authenticate"] == 'Bearer realm="cats-dogs-other"'
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert {k: problem[k] for k in ("type", "title", "status", "instance")} == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "instance": "/upload",
    }
    assert problem["detail"] == "A bearer token is required: send 'Authorization: Bearer <access token>'."
    status, headers, body = post(protected.base_url, data, f"Authorization: Bearer {no_scope}")
    assert status == "HTTP/1.1 403 Forbidden"
    assert headers["www-authenticate"] == (
        'Bearer realm="cats-dogs-other", error="insufficient_scope", '
        'error_description="The token lacks the scope get::prediction.", scope="get::prediction"'
    )
    assert json.loads(body)["detail"] == "The token lacks the scope get::prediction."


def test_a_client_over_its_share_is_refused_and_another_gets_in(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    base_url = protected.base_url
    data = sample_files["Cat"].read_bytes()
    with holding_places(base_url, 2, bearer(provider_server, "hog")):  # every place, taken while alone
        before = metrics(base_url)
        status, _, body = post(base_url, data, bearer(provider_server, "hog"))
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert "at capacity" in json.loads(body)["detail"]
        # Another subject, with nothing in flight, is let in past the limit and answered.
        status, _, body = post(base_url, data, bearer(provider_server, "bob"))
        assert status == "HTTP/1.1 200 OK", body
        assert json.loads(body)["prediction"] == "Cat"
        after = metrics(base_url)
    assert (
        value(after, "cdo_refusals_total", reason="full") - value(before, "cdo_refusals_total", reason="full")
        == 1
    )


def test_a_client_holding_more_than_its_share_is_refused_as_over_share(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    base_url = protected.base_url
    with (
        holding_places(base_url, 2, bearer(provider_server, "hog")),
        holding_places(base_url, 1, bearer(provider_server, "carol")),  # carol in: 3 in flight
    ):
        before = metrics(base_url)
        status, _, body = post(base_url, sample_files["Dog"].read_bytes(), bearer(provider_server, "hog"))
        after = metrics(base_url)
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert "its share being 1 while 1 other clients wait" in json.loads(body)["detail"]
    over = value(after, "cdo_refusals_total", reason="over_share") - value(
        before, "cdo_refusals_total", reason="over_share"
    )
    assert over == 1


@pytest.fixture(scope="module", params=["untrusted", "trusted"])
def open_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServeProcess]]:
    """Auth off, two places; the loopback peer a trusted proxy, or not (the default)."""
    extra = ["--queue-max", "2"]
    env = {"TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8"} if request.param == "trusted" else {}
    process = ServeProcess(serve_command(*extra), tmp_path_factory.mktemp("proxies") / "serve.log", env=env)
    process.start()
    yield request.param, process
    process.stop()


def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(
    open_service: tuple[str, ServeProcess], sample_files: dict[str, Path]
) -> None:
    trust, process = open_service
    data = sample_files["Cat"].read_bytes()
    with holding_places(process.base_url, 2, "X-Forwarded-For: 203.0.113.7"):
        # The proxy appends what it saw; the client wrote the first entry itself.
        status, _, _ = post(process.base_url, data, "X-Forwarded-For: 203.0.113.7, 198.51.100.2, 10.1.2.3")
    if trust == "trusted":
        assert status == "HTTP/1.1 200 OK"  # 198.51.100.2, another client than 203.0.113.7: let in
    else:
        assert status == "HTTP/1.1 503 Service Unavailable"  # forged: every request is the peer's


def test_a_connection_refused_again_and_again_is_read_later_and_later(
    protected: ServeProcess, provider_server: FakeProvider, sample_files: dict[str, Path]
) -> None:
    """Pacing escalates: 25, 50, 100, 200 ms between the answers of four refusals in a row (lower bounds
    only: a busy machine can be slower, never faster)."""
    assert [pace_after(n, 1) for n in range(1, 8)] == [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1]
    assert pace_after(3, 0.06) == 0.06  # never past the refusal's Retry-After
    body = multipart(sample_files["Cat"].read_bytes())
    port = int(protected.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        responses = Responses(sock)
        times = []
        for _ in range(5):
            sock.sendall(head(len(body)) + body)  # no token: refused, the connection kept
            status, headers, _ = responses.next()
            assert status == "HTTP/1.1 401 Unauthorized"
            assert "connection" not in headers
            times.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for refusals, gap in enumerate(gaps, start=1):
        assert gap >= pace_after(refusals, 1) - 0.005, gaps
    assert sum(gaps) >= SHED_PACE_SECONDS * (1 + 2 + 4 + 8) - 0.02


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hostile_tokens(seed: int, count: int) -> list[str]:
    """Token-shaped garbage: random JSON headers (types, nesting, sizes), random claims and signatures,
    up to the 8 KiB a token may be, and past it."""
    rng = random.Random(seed)

    def value(depth: int) -> object:
        kind = rng.randrange(6 if depth < 40 else 3)
        if kind == 0:
            return rng.choice(["RS256", "none", "HS256", "ES256", "", "x" * rng.randrange(2000)])
        if kind == 1:
            return rng.randrange(-(2**63), 2**63)
        if kind == 2:
            return None
        if kind == 3:
            return [value(depth + 1) for _ in range(rng.randrange(3))]
        if kind == 4:
            return {rng.choice(["alg", "kid", "typ", "crit", "jku"]): value(depth + 1)}
        return "[" * 400 + "]" * 400  # a string that looks nested

    tokens = []
    for _ in range(count):
        header = {"alg": value(0), "kid": value(0), "typ": value(0)}
        payload = rng.randbytes(rng.randrange(4000))
        token = ".".join([_b64(json.dumps(header).encode()), _b64(payload), _b64(rng.randbytes(256))])
        tokens.append(token[: rng.choice([len(token), 8192, 9000])])
    tokens.append(_b64(b'{"alg":"RS256","kid":' + b"[" * 2900 + b"]" * 2900 + b"}") + ".e30.c2ln")
    return tokens


@pytest.mark.parametrize("seed", [0, 1])
def test_hostile_tokens_and_tokenless_pipelines_leave_memory_flat(
    protected: ServeProcess, sample_files: dict[str, Path], seed: int
) -> None:
    """Against the real server with auth on, RSS from /proc: generated garbage tokens, pipelined
    tokenless uploads whose bodies are dropped unread, all at once on many connections. Each is refused
    in the protocol (401, or 431 past the header cap); nothing is kept, nothing is logged per request."""
    assert protected.process is not None
    memory = ProcessMemory(protected.process.pid)
    port = int(protected.base_url.rsplit(":", 1)[1])
    body = multipart(sample_files["Cat"].read_bytes())
    before = memory.reset_peak()
    statuses: list[bytes] = []

    def send(requests: bytes, answers: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            with contextlib.suppress(OSError):  # a refused connection may be closed on us: fine
                sock.sendall(requests)
            responses = Responses(sock)
            for _ in range(answers):
                try:
                    status, _, _ = responses.next()
                except (AssertionError, OSError):
                    break
                statuses.append(status.encode())

    tokens = hostile_tokens(seed, 48)
    work = [(head(len(body), f"Authorization: Bearer {token}") + body, 1) for token in tokens]
    # Tokenless uploads pipelined 8 deep: the first answers come at once, the rest are paced.
    work += [((head(len(body)) + body) * 8, 2) for _ in range(16)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda job: send(*job), work))
        health = httpx.get(f"{protected.base_url}/health", timeout=10)
    growth = memory.peak_mib() - before
    assert health.status_code == 200
    assert statuses, "no answer at all"
    assert {s.split(b" ")[1] for s in statuses} <= {b"401", b"431"}, set(statuses)
    assert growth < 50, f"peak RSS grew by {growth:.0f} MiB"
    assert "Traceback" not in protected.logs()
