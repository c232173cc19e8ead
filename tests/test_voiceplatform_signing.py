"""Tuya HMAC-SHA256 request signing (reference/tuya-voice.md §2.2, §2.3).

Expected signatures are computed here with hashlib/hmac from Tuya's published recipe, never
with the code under test:

    stringToSign = METHOD "\\n" sha256hex(body) "\\n" headers_block "\\n" url
    token APIs:    sign = UPPER(HEX(HMAC_SHA256(secret, client_id + t + nonce + stringToSign)))
    business APIs: sign = UPPER(HEX(HMAC_SHA256(secret, client_id + access_token + t + nonce + stringToSign)))
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from deviceagentd.core.clock import Clock
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.signing import (
    RequestVerifier,
    SigningSettings,
    compute_sign,
    signed_request_headers,
    string_to_sign,
)

CLIENT_ID = "gw7q2x9hotel"
SECRET = "4OHBOnWOqaEC1mWXOpVL3yV50s0qGSRC"
NOW_MS = 1_700_000_000_000
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ACCESS = "3f4eda2bdec17232f67c0b188af3eec1"
OBTAIN_PATH = "/v1.0/voice/devices/spk-101/token"
OBTAIN_QUERY = {"industry_type": "hotel", "code": "brand-x"}  # deliberately not in sorted order
EXECUTE_PATH = "/v1.0/voice/execute"
EXECUTE_BODY = b'{"message_id":"m-1","version":"1.0","command":{"interface":"Tuya.Voice.Platform.Discovery",' \
    b'"intent":"Discover"}}'


class FakeClock(Clock):
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def wall_ms(self) -> int:
        return self.now_ms


def tuya_hmac(message: str) -> str:
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(clock: FakeClock) -> RequestVerifier:
    return RequestVerifier(SigningSettings(CLIENT_ID, SECRET), clock)


def obtain_headers(t_ms: int = NOW_MS, nonce: str = "") -> dict[str, str]:
    """A correctly signed obtain-token request (a token API), signed by hand."""
    sts = f"GET\n{EMPTY_SHA256}\n\n{OBTAIN_PATH}?code=brand-x&industry_type=hotel"
    headers = {"client_id": CLIENT_ID, "sign": tuya_hmac(CLIENT_ID + str(t_ms) + nonce + sts),
               "sign_method": "HMAC-SHA256", "t": str(t_ms)}
    if nonce:
        headers["nonce"] = nonce
    return headers


def execute_headers(t_ms: int = NOW_MS, nonce: str = "", body: bytes = EXECUTE_BODY) -> dict[str, str]:
    """A correctly signed execute request (a business API), signed by hand."""
    sts = f"POST\n{hashlib.sha256(body).hexdigest()}\n\n{EXECUTE_PATH}"
    headers = {"client_id": CLIENT_ID, "sign": tuya_hmac(CLIENT_ID + ACCESS + str(t_ms) + nonce + sts),
               "sign_method": "HMAC-SHA256", "t": str(t_ms), "access_token": ACCESS}
    if nonce:
        headers["nonce"] = nonce
    return headers


def verify_obtain(verifier: RequestVerifier, headers: Any, query: dict[str, str] | None = None,
                  path: str = OBTAIN_PATH, body: bytes = b"") -> None:
    verifier.verify(method="GET", path=path, query=OBTAIN_QUERY if query is None else query,
                    headers=headers, body=body, business=False)


def verify_execute(verifier: RequestVerifier, headers: Any, body: bytes = EXECUTE_BODY) -> None:
    verifier.verify(method="POST", path=EXECUTE_PATH, query={}, headers=headers, body=body, business=True)


def rejected(call: Any) -> VoicePlatformError:
    with pytest.raises(VoicePlatformError) as caught:
        call()
    return caught.value


# --------------------------------------------------------------------------- vectors


def test_string_to_sign_for_a_get_has_the_empty_body_hash_an_empty_header_line_and_sorted_query() -> None:
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256
    assert string_to_sign("GET", OBTAIN_PATH, OBTAIN_QUERY, b"") == (
        "GET\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "\n"
        "/v1.0/voice/devices/spk-101/token?code=brand-x&industry_type=hotel"
    )


def test_string_to_sign_without_query_is_the_bare_path_and_hashes_the_body() -> None:
    body_sha = hashlib.sha256(EXECUTE_BODY).hexdigest()
    assert string_to_sign("post", EXECUTE_PATH, {}, EXECUTE_BODY) == f"POST\n{body_sha}\n\n/v1.0/voice/execute"


def test_string_to_sign_lists_signature_headers_in_their_order() -> None:
    signed = {"area_id": "29a33e8796834b1efa6", "call_id": "8afdb70ab2ed11eb85290242ac130003"}
    assert string_to_sign("GET", "/v2.0/apps/schema/users", {"page_size": "50", "page_no": "1"}, b"", signed) == (
        f"GET\n{EMPTY_SHA256}\n"
        "area_id:29a33e8796834b1efa6\ncall_id:8afdb70ab2ed11eb85290242ac130003\n"
        "\n/v2.0/apps/schema/users?page_no=1&page_size=50"
    )


def test_token_api_vector() -> None:
    nonce = "5138cc3a9033d69856923fd07b491173"
    message = (
        CLIENT_ID + "1700000000000" + nonce
        + "GET\n" + EMPTY_SHA256 + "\n\n/v1.0/voice/devices/spk-101/token?code=brand-x&industry_type=hotel"
    )
    expected = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest().upper()

    sts = string_to_sign("GET", OBTAIN_PATH, OBTAIN_QUERY, b"")
    assert compute_sign(SECRET, CLIENT_ID, NOW_MS, nonce, sts) == expected


def test_business_api_vector() -> None:
    body_sha = hashlib.sha256(EXECUTE_BODY).hexdigest()
    message = CLIENT_ID + ACCESS + "1700000000000" + "" + "POST\n" + body_sha + "\n\n/v1.0/voice/execute"
    expected = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest().upper()

    sts = string_to_sign("POST", EXECUTE_PATH, {}, EXECUTE_BODY)
    assert compute_sign(SECRET, CLIENT_ID, NOW_MS, "", sts, access_token=ACCESS) == expected
    assert expected.isupper() and len(expected) == 64


def test_hand_signed_requests_verify(verifier: RequestVerifier) -> None:
    verify_obtain(verifier, obtain_headers())
    verify_obtain(verifier, obtain_headers(nonce="7a1c2f0e-1b2c-4d5e-8f90-123456789abc"))
    verify_execute(verifier, execute_headers())
    verify_execute(verifier, execute_headers(nonce="0f3c-nonce"))


def test_signed_request_headers_helper_makes_requests_the_verifier_accepts(verifier: RequestVerifier) -> None:
    settings = SigningSettings(CLIENT_ID, SECRET)
    headers = signed_request_headers(settings, method="POST", path=EXECUTE_PATH, query={}, body=EXECUTE_BODY,
                                     t_ms=NOW_MS, nonce="n-1", access_token=ACCESS)
    assert headers == execute_headers(nonce="n-1")
    verify_execute(verifier, headers)


def test_a_request_as_tuya_connector_python_sends_it(verifier: RequestVerifier) -> None:
    # tuya_connector/openapi.py: the body is hashed as json.dumps(body) (", " and ": "
    # separators) and sent by requests' json= with the same serialization; no nonce header;
    # message = access_id + access_token + str(t) + str_to_sign.
    body = {"message_id": "m-2", "version": "1.0",
            "command": {"interface": "Tuya.Voice.Platform.Control", "intent": "TurnOn"},
            "endpoint": {"device_id": "light-1"}}
    wire = json.dumps(body).encode()
    assert b'", "' in wire and b'": ' in wire
    str_to_sign = "POST\n" + hashlib.sha256(json.dumps(body).encode("utf8")).hexdigest().lower() + "\n" + "\n"
    str_to_sign += EXECUTE_PATH
    message = CLIENT_ID + ACCESS + str(NOW_MS) + str_to_sign
    sign = hmac.new(SECRET.encode("utf8"), msg=message.encode("utf8"), digestmod=hashlib.sha256).hexdigest().upper()
    headers = {"client_id": CLIENT_ID, "sign": sign, "sign_method": "HMAC-SHA256", "access_token": ACCESS,
               "t": str(NOW_MS), "lang": "en", "dev_lang": "python", "dev_version": "0.1.2",
               "dev_channel": "cloud_"}

    verify_execute(verifier, headers, body=wire)

    # Over the raw bytes only: the same JSON re-serialized compactly is not what was signed.
    compact = json.dumps(body, separators=(",", ":")).encode()
    assert json.loads(compact) == json.loads(wire)
    assert rejected(lambda: verify_execute(verifier, headers, body=compact)).code == codes.SIGN_INVALID


def test_connector_refresh_is_a_token_api_with_an_empty_access_token_header(verifier: RequestVerifier) -> None:
    path = "/v1.0/token/0123456789abcdef0123456789abcdef"
    message = CLIENT_ID + "" + str(NOW_MS) + f"GET\n{EMPTY_SHA256}\n\n{path}"
    headers = {"client_id": CLIENT_ID, "sign": tuya_hmac(message), "sign_method": "HMAC-SHA256",
               "access_token": "", "t": str(NOW_MS), "lang": "en"}

    verifier.verify(method="GET", path=path, query={}, headers=headers, body=b"", business=False)


def test_token_api_signature_leaves_out_an_access_token_header(verifier: RequestVerifier) -> None:
    # Token APIs are signed without access_token even when a client sends its old one along.
    verify_obtain(verifier, {**obtain_headers(), "access_token": ACCESS})


def test_signature_headers_are_covered(verifier: RequestVerifier) -> None:
    block = "area_id:29a33e8796834b1efa6\ncall_id:8afdb70ab2ed11eb85290242ac130003\n"
    sts = f"POST\n{hashlib.sha256(EXECUTE_BODY).hexdigest()}\n{block}\n{EXECUTE_PATH}"
    headers = {"client_id": CLIENT_ID, "sign": tuya_hmac(CLIENT_ID + ACCESS + str(NOW_MS) + sts),
               "sign_method": "HMAC-SHA256", "t": str(NOW_MS), "access_token": ACCESS,
               "Signature-Headers": "area_id:call_id", "area_id": "29a33e8796834b1efa6",
               "call_id": "8afdb70ab2ed11eb85290242ac130003"}
    verify_execute(verifier, headers)

    tampered = {**headers, "call_id": "somebody-else"}
    assert rejected(lambda: verify_execute(verifier, tampered)).code == codes.SIGN_INVALID


def test_header_names_are_case_insensitive(verifier: RequestVerifier) -> None:
    headers = CIMultiDict({name.upper(): value for name, value in execute_headers().items()})
    verify_execute(verifier, headers)
    mixed = {"Client_Id": CLIENT_ID, **{k: v for k, v in obtain_headers().items() if k != "client_id"}}
    verify_obtain(verifier, mixed)


def test_lower_case_sign_is_accepted(verifier: RequestVerifier) -> None:
    headers = obtain_headers()
    headers["sign"] = headers["sign"].lower()
    verify_obtain(verifier, headers)


def test_sign_method_case_is_not_significant(verifier: RequestVerifier) -> None:
    verify_obtain(verifier, {**obtain_headers(), "sign_method": "hmac-sha256"})


# --------------------------------------------------------------------------- bad input


def test_wrong_sign_is_1004(verifier: RequestVerifier) -> None:
    headers = obtain_headers()
    headers["sign"] = tuya_hmac("something else")
    assert rejected(lambda: verify_obtain(verifier, headers)).code == codes.SIGN_INVALID


def test_sign_made_with_another_secret_is_1004(verifier: RequestVerifier) -> None:
    sts = f"GET\n{EMPTY_SHA256}\n\n{OBTAIN_PATH}?code=brand-x&industry_type=hotel"
    other = hmac.new(b"another-secret", (CLIENT_ID + str(NOW_MS) + sts).encode(), hashlib.sha256)
    headers = {**obtain_headers(), "sign": other.hexdigest().upper()}
    assert rejected(lambda: verify_obtain(verifier, headers)).code == codes.SIGN_INVALID


@pytest.mark.parametrize("sign", ["", "not hex", "é" * 64, "\udcff" * 64])
def test_garbage_sign_is_refused(verifier: RequestVerifier, sign: str) -> None:
    error = rejected(lambda: verify_obtain(verifier, {**obtain_headers(), "sign": sign}))
    assert error.code == (codes.MISSING_HEADER if not sign else codes.SIGN_INVALID)


@pytest.mark.parametrize("name", ["client_id", "sign", "sign_method", "t"])
def test_missing_required_header_is_1105_and_named(verifier: RequestVerifier, name: str) -> None:
    headers = obtain_headers()
    del headers[name]
    error = rejected(lambda: verify_obtain(verifier, headers))
    assert error.code == codes.MISSING_HEADER
    assert name in error.msg


def test_empty_required_header_counts_as_missing(verifier: RequestVerifier) -> None:
    error = rejected(lambda: verify_obtain(verifier, {**obtain_headers(), "t": ""}))
    assert (error.code, error.msg) == (codes.MISSING_HEADER, "missing the header: t")


def test_every_missing_header_is_named(verifier: RequestVerifier) -> None:
    error = rejected(lambda: verify_obtain(verifier, {"sign_method": "HMAC-SHA256"}))
    assert error.msg == "missing the header: client_id, sign, t"


def test_wrong_sign_method_is_refused(verifier: RequestVerifier) -> None:
    error = rejected(lambda: verify_obtain(verifier, {**obtain_headers(), "sign_method": "HMAC-SHA1"}))
    assert error.code == codes.SIGN_INVALID
    assert "HMAC-SHA256" in error.msg


def test_unknown_client_id_is_1005(verifier: RequestVerifier) -> None:
    sts = f"GET\n{EMPTY_SHA256}\n\n{OBTAIN_PATH}?code=brand-x&industry_type=hotel"
    # Signed correctly for its own id: the id itself is what is wrong.
    headers = {**obtain_headers(), "client_id": "someone", "sign": tuya_hmac("someone" + str(NOW_MS) + sts)}
    assert rejected(lambda: verify_obtain(verifier, headers)).code == codes.CLIENT_ID_INVALID


@pytest.mark.parametrize("offset_s", [-301, 301, -86_400, 86_400])
def test_t_outside_the_skew_window_is_1013(verifier: RequestVerifier, offset_s: int) -> None:
    # Signed correctly for its own t.
    headers = obtain_headers(t_ms=NOW_MS + offset_s * 1000)
    error = rejected(lambda: verify_obtain(verifier, headers))
    assert error.code == codes.REQUEST_TIME_INVALID
    assert "±300 s" in error.msg


@pytest.mark.parametrize("offset_ms", [-300_000, 300_000])
def test_t_at_the_edge_of_the_window_is_accepted(verifier: RequestVerifier, offset_ms: int) -> None:
    verify_obtain(verifier, obtain_headers(t_ms=NOW_MS + offset_ms))


def test_skew_window_is_configurable(clock: FakeClock) -> None:
    narrow = RequestVerifier(SigningSettings(CLIENT_ID, SECRET, skew_s=30), clock)
    verify_obtain(narrow, obtain_headers(t_ms=NOW_MS - 30_000))
    error = rejected(lambda: verify_obtain(narrow, obtain_headers(t_ms=NOW_MS - 30_001)))
    assert error.code == codes.REQUEST_TIME_INVALID


@pytest.mark.parametrize(
    "t", ["soon", "1700000000000.0", "1.7e12", "-1700000000000", " 1700000000000", "+1700000000000",
          "1_700_000_000_000", "１７００００００００００００", "17000000000000000000000"]
)
def test_t_that_is_not_a_millisecond_integer_is_1013(verifier: RequestVerifier, t: str) -> None:
    headers = {**obtain_headers(), "t": t}
    error = rejected(lambda: verify_obtain(verifier, headers))
    assert error.code == codes.REQUEST_TIME_INVALID


def test_replayed_nonce_is_1013(verifier: RequestVerifier) -> None:
    headers = execute_headers(nonce="9b2e4c1a-replay")
    verify_execute(verifier, headers)

    error = rejected(lambda: verify_execute(verifier, headers))
    assert error.code == codes.REQUEST_TIME_INVALID
    assert "nonce" in error.msg
    # The same nonce with a fresh t and a new, valid signature is still a reused nonce.
    again = execute_headers(t_ms=NOW_MS + 5, nonce="9b2e4c1a-replay")
    assert rejected(lambda: verify_execute(verifier, again)).code == codes.REQUEST_TIME_INVALID
    # Another nonce is fine.
    verify_execute(verifier, execute_headers(nonce="9b2e4c1a-other"))


def test_requests_without_nonce_are_not_replay_checked(verifier: RequestVerifier) -> None:
    # Tuya's own connector sends none; the nonce is optional in Tuya's recipe.
    verify_execute(verifier, execute_headers())
    verify_execute(verifier, execute_headers())


def test_a_nonce_is_remembered_only_for_requests_that_verified(verifier: RequestVerifier) -> None:
    forged = {**execute_headers(nonce="n-victim"), "sign": tuya_hmac("forged")}
    assert rejected(lambda: verify_execute(verifier, forged)).code == codes.SIGN_INVALID

    verify_execute(verifier, execute_headers(nonce="n-victim"))


def test_nonces_are_forgotten_once_their_t_leaves_the_window(clock: FakeClock) -> None:
    verifier = RequestVerifier(SigningSettings(CLIENT_ID, SECRET, skew_s=10), clock)
    headers = execute_headers(nonce="n-old")
    verify_execute(verifier, headers)

    clock.now_ms += 10_001
    # The replay is now refused for its t; the cache no longer needs the entry...
    assert rejected(lambda: verify_execute(verifier, headers)).code == codes.REQUEST_TIME_INVALID
    verify_execute(verifier, execute_headers(t_ms=clock.now_ms, nonce="n-new"))
    assert len(verifier._nonces) == 1


def test_a_full_nonce_cache_refuses_what_it_can_no_longer_check(clock: FakeClock) -> None:
    verifier = RequestVerifier(SigningSettings(CLIENT_ID, SECRET, max_nonces=2), clock)
    first = execute_headers(t_ms=NOW_MS - 3, nonce="n-1")
    verify_execute(verifier, first)
    verify_execute(verifier, execute_headers(t_ms=NOW_MS - 2, nonce="n-2"))
    verify_execute(verifier, execute_headers(t_ms=NOW_MS - 1, nonce="n-3"))  # pushes n-1 out

    assert len(verifier._nonces) == 2
    # n-1 is no longer remembered, yet its replay is still refused: its t is at the floor.
    assert rejected(lambda: verify_execute(verifier, first)).code == codes.REQUEST_TIME_INVALID
    older = execute_headers(t_ms=NOW_MS - 4, nonce="n-0")
    assert rejected(lambda: verify_execute(verifier, older)).code == codes.REQUEST_TIME_INVALID
    verify_execute(verifier, execute_headers(t_ms=NOW_MS, nonce="n-4"))


def test_business_call_without_access_token_is_1002(verifier: RequestVerifier) -> None:
    headers = execute_headers()
    del headers["access_token"]
    assert rejected(lambda: verify_execute(verifier, headers)).code == codes.ACCESS_TOKEN_NULL
    assert rejected(lambda: verify_execute(verifier, {**headers, "access_token": ""})).code == codes.ACCESS_TOKEN_NULL


def test_business_call_signed_as_a_token_api_is_1004(verifier: RequestVerifier) -> None:
    # access_token sent, but left out of the signature.
    sts = f"POST\n{hashlib.sha256(EXECUTE_BODY).hexdigest()}\n\n{EXECUTE_PATH}"
    headers = {**execute_headers(), "sign": tuya_hmac(CLIENT_ID + str(NOW_MS) + sts)}
    assert rejected(lambda: verify_execute(verifier, headers)).code == codes.SIGN_INVALID


def test_other_access_token_than_signed_is_1004(verifier: RequestVerifier) -> None:
    headers = {**execute_headers(), "access_token": "ffffffffffffffffffffffffffffffff"}
    assert rejected(lambda: verify_execute(verifier, headers)).code == codes.SIGN_INVALID


def test_tampered_body_is_1004(verifier: RequestVerifier) -> None:
    tampered = EXECUTE_BODY.replace(b"Discover\"", b"Discovex\"")
    assert tampered != EXECUTE_BODY
    assert rejected(lambda: verify_execute(verifier, execute_headers(), body=tampered)).code == codes.SIGN_INVALID
    assert rejected(lambda: verify_execute(verifier, execute_headers(), body=b"")).code == codes.SIGN_INVALID


@pytest.mark.parametrize(
    "query",
    [
        {"industry_type": "hotel", "code": "brand-y"},
        {"industry_type": "hotel"},
        {"industry_type": "hotel", "code": "brand-x", "extra": "1"},
        {},
    ],
)
def test_tampered_query_is_1004(verifier: RequestVerifier, query: dict[str, str]) -> None:
    assert rejected(lambda: verify_obtain(verifier, obtain_headers(), query=query)).code == codes.SIGN_INVALID


def test_tampered_path_or_method_is_1004(verifier: RequestVerifier) -> None:
    headers = obtain_headers()
    error = rejected(lambda: verify_obtain(verifier, headers, path="/v1.0/voice/devices/spk-102/token"))
    assert error.code == codes.SIGN_INVALID
    error = rejected(lambda: verifier.verify(method="DELETE", path=OBTAIN_PATH, query=OBTAIN_QUERY,
                                             headers={**headers, "access_token": ACCESS}, body=b"", business=False))
    assert error.code == codes.SIGN_INVALID


@pytest.mark.parametrize(
    ("change", "code"),
    [
        # missing header before an unknown client_id
        ({"client_id": "someone", "t": None}, codes.MISSING_HEADER),
        # unknown client_id before a bad t
        ({"client_id": "someone", "t": "soon"}, codes.CLIENT_ID_INVALID),
        # bad t before a missing access_token
        ({"t": str(NOW_MS - 3_600_000), "access_token": None}, codes.REQUEST_TIME_INVALID),
        # missing access_token before a bad signature
        ({"access_token": None, "sign": "00"}, codes.ACCESS_TOKEN_NULL),
    ],
)
def test_checks_run_in_tuya_order(verifier: RequestVerifier, change: dict[str, str | None], code: int) -> None:
    headers: dict[str, str] = execute_headers()
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    assert rejected(lambda: verify_execute(verifier, headers)).code == code


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="client_id and a secret"):
        SigningSettings("", SECRET)
    with pytest.raises(ValueError, match="client_id and a secret"):
        SigningSettings(CLIENT_ID, "")
    with pytest.raises(ValueError, match="skew_s"):
        SigningSettings(CLIENT_ID, SECRET, skew_s=0)
    with pytest.raises(ValueError, match="max_nonces"):
        SigningSettings(CLIENT_ID, SECRET, max_nonces=0)
