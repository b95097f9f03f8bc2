"""Requests holding PII never reach the cache store, through real Envoy, the router process, the ONNX encoder and
the PII validators, and embedded Milvus Lite (what `make run` uses).

A prompt with an SSN was stored in Milvus (its text and the answer) and its repeat served from there. Hot answers
are off, so a repeat that is not answered by the model would have come from Milvus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from devstack.stack import Stack
from tests.integration.test_cache_e2e import _client, _metric, _request_lines, eventually_hit

pytestmark = pytest.mark.usefixtures("require_model")
SSN_PROMPT = "My social security number is 536-22-1234. Which tax form do I file as a freelancer?"
CONVERSATIONS = {  # the SSN in the classified turn, or in an earlier user turn of the same conversation
    "latest turn": [{"role": "user", "content": SSN_PROMPT}],
    "earlier turn": [{"role": "user", "content": SSN_PROMPT}, {"role": "assistant", "content": "Form 1040."},
                     {"role": "user", "content": "And by which date is it due?"}],
}


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    db = tmp_path_factory.mktemp("lite") / "cache.db"

    def overrides(cfg: dict[str, Any]) -> None:
        # Seconds for the passes: a 4,000-character prompt's took past the default 600 ms at load ~10 on 2 cores
        # (a clean-clone CI run beside other jobs: 503 "retry later" where a routing was asserted). No test here is
        # about the time budget.
        cfg["classifier"].update(enabled=True, timeout_ms=5000)
        cfg["envoy"]["message_timeout_ms"] = 6000
        cfg["semantic_cache"] = {"enabled": True, "uri": str(db), "hot_answers": 0}
        # The big model may not see names either (shipped: it allows PERSON and EMAIL_ADDRESS).
        cfg["models"]["gpt-oss-120b"]["pii_policy"] = {"allow_by_default": False, "pii_types_allowed": ["EMAIL_ADDRESS"]}

    return make_stack(overrides)


@pytest.mark.parametrize("where", CONVERSATIONS)
def test_a_conversation_with_an_ssn_is_answered_by_the_model_each_time(stack: Stack, where: str) -> None:
    client = _client(stack)
    messages = CONVERSATIONS[where]
    skipped = 'vsr_cache_events_total{event="skipped_write",reason="pii"}'
    before = _metric(stack, skipped)
    ids = []
    for attempt in range(2):
        calls = stack.upstream_requests()
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        assert raw.parse().choices[0].message.content
        assert raw.headers.get("x-vsr-cache-hit") != "true" and stack.upstream_requests() == calls + 1
        assert raw.headers["x-vsr-selected-model"] == "qwen3-4b"  # gpt-oss-120b's pii_policy refuses US_SSN
        ids.append(raw.headers["x-request-id"])
        if attempt == 0:  # a PII-free prompt sent after it is still stored and served: the SSN's write, queued
            eventually_hit(client, f"Which tax form does a freelancer file? ({where})")  # before, would have landed
    assert _metric(stack, skipped) - before == 2
    lines = _request_lines(stack, ids)
    assert [(lines[i]["cache"], lines[i]["pii_types"]) for i in ids] == [("skip:pii", ["US_SSN"])] * 2
    assert "536-22-1234" not in (stack.workdir / "router.log").read_text()



REPORT = ("The quarterly report covers revenue, churn and hiring across the three regions, and the board asked for a "
          "clearer breakdown of costs by team before the next planning cycle begins. ")


def _report(chars: int, middle: str = "") -> str:
    """A math ask ("prove": gpt-oss-120b's category) over a report of `chars` characters with `middle` in its middle."""
    body = (REPORT * (chars // len(REPORT) + 1))[:chars]
    half = body.rfind(" ", 0, chars // 2) + 1
    return "Prove that the costs below add up (sum = total).\n\n" + body[:half] + middle + body[half:]


def _routed_twice_uncached(stack: Stack, prompt: str, reason: str) -> list[dict[str, str]]:
    """The response headers of `prompt` sent twice: both answered by the model, both a counted cache skip."""
    client, skipped = _client(stack), f'vsr_cache_events_total{{event="skipped_write",reason="{reason}"}}'
    before, answers = _metric(stack, skipped), []
    for _ in range(2):
        calls = stack.upstream_requests()
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
        assert raw.parse().choices[0].message.content and stack.upstream_requests() == calls + 1
        assert raw.headers.get("x-vsr-cache-hit") != "true"
        answers.append(dict(raw.headers))
    assert _metric(stack, skipped) - before == 2
    return answers


def _kept_from_gpt_oss(stack: Stack, plain: str, prompt: str, *pii_types: str) -> dict[str, dict[str, Any]]:
    """`plain` goes to gpt-oss-120b; `prompt`, which adds `pii_types` (sorted) to it, is routed to qwen3-4b twice,
    uncached (`_routed_twice_uncached`), and refused when gpt-oss-120b is asked for by name. The two routed requests'
    lines."""
    routed = _client(stack).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": plain}])
    assert routed.headers["x-vsr-selected-model"] == "gpt-oss-120b"  # without the PII, the big model answers
    answers = _routed_twice_uncached(stack, prompt, "pii")
    assert [h["x-vsr-selected-model"] for h in answers] == ["qwen3-4b"] * 2
    assert f"): pii_policy refuses {', '.join(pii_types)}" in answers[0]["x-vsr-decision-reason"]
    assert "skipped gpt-oss-120b (" in answers[0]["x-vsr-decision-reason"]
    with pytest.raises(openai.PermissionDeniedError) as refused:  # asked for by name: refused per its pii_policy
        _client(stack).chat.completions.create(model="gpt-oss-120b", messages=[{"role": "user", "content": prompt}])
    assert refused.value.response.headers["x-vsr-pii-violation"] == ",".join(pii_types)
    return _request_lines(stack, [h["x-request-id"] for h in answers])


def test_a_name_in_the_middle_of_a_long_prompt_keeps_it_from_a_model_that_refuses_names(stack: Stack) -> None:
    """New-user trial (2026-12-01): the PII head read a prompt's first and last 256 tokens only, so a name in the middle
    of a prompt over ~1.6k characters reached a model whose pii_policy refuses PERSON, and its answer was cached."""
    lines = _kept_from_gpt_oss(stack, _report(4000), _report(4000, "Send the summary to Margaret Thompson afterwards. "),
                               "PERSON")
    assert [line["pii_types"] for line in lines.values()] == [["PERSON"]] * 2
    assert "Thompson" not in (stack.workdir / "router.log").read_text()


def test_a_phone_number_written_against_chinese_text_keeps_it_from_a_model_that_refuses_phones(stack: Stack) -> None:
    """Trial 15: Chinese writes no space around a number, and the validators took a Chinese letter for part of a word,
    so "我的手机号是13812345678" (my mobile is ...) went to gpt-oss-120b, whose pii_policy refuses PHONE_NUMBER, and was
    stored in the cache; the same number with spaces around it was found."""
    # Code-switched, as such users write: "... and explain each step". A shipped keyword rule makes it math (gpt-oss-120b's);
    # Chinese alone the encoder does not read, so it would take the default category (router/classifier/reading.py).
    ask = "Solve the linear equation 3x + 7 = 22，并解释每一步。"
    # ... my mobile is ..., text me the result
    lines = _kept_from_gpt_oss(stack, ask, ask + "我的手机号是13812345678，算完请发短信给我。", "PHONE_NUMBER")
    assert [(line["cache"], line["pii_types"]) for line in lines.values()] == [("skip:pii", ["PHONE_NUMBER"])] * 2
    assert "13812345678" not in (stack.workdir / "router.log").read_text()


@pytest.mark.parametrize(("prompt", "model"), [
    ("What did Lise Meitner discover about nuclear fission?", "gpt-oss-120b"),  # physics
    ("Why did the Manhattan Project build its bomb laboratory at Los Alamos?", "qwen3-4b"),  # history
    ("can I take Sudafed with Wellbutrin", "gpt-oss-120b"),  # health (trial 17: drug names read as PERSON)
])
def test_a_question_naming_a_famous_scientist_a_place_or_a_drug_keeps_its_model_and_is_cached(
        stack: Stack, prompt: str, model: str) -> None:
    """Issue 10 (education trial): the PII head read famous scientists as PERSON and famous places as STREET_ADDRESS,
    so such questions left gpt-oss-120b (whose pii_policy refuses them) and were never cached. Now the text's framing
    ("what did X discover", a street without a number asked about) says they name no private person. Trial 17
    (telehealth): drug names the same way ("take X with Y" frames both as medications)."""
    client = _client(stack)
    calls = stack.upstream_requests()
    first = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
    assert first.parse().choices[0].message.content and stack.upstream_requests() == calls + 1
    assert first.headers["x-vsr-selected-model"] == model and first.headers.get("x-vsr-cache-skip") is None
    eventually_hit(client, prompt)  # the repeat is served from the cache, not by a model
    rid = first.headers["x-request-id"]
    assert "pii_types" not in _request_lines(stack, [rid])[rid]  # the line names PII types only when some were found


def test_a_clinical_note_with_an_mrn_and_a_date_of_birth_keeps_it_from_gpt_oss_and_the_cache(stack: Stack) -> None:
    """Trial 17: no PII type had dates of birth or medical record numbers, so a clinician's visit note holding both
    went to gpt-oss-120b, whose pii_policy refuses every type it does not list, and was stored in the cache."""
    note = ("Summarize this visit note for the chart: 58F with type 2 diabetes on metformin 1000 mg twice daily, "
            "A1c 8.1% up from 7.4%, started empagliflozin 10 mg, foot exam normal, follow up in 3 months.")
    lines = _kept_from_gpt_oss(stack, note, note.replace("58F", "DOB 03/14/1967, MRN 00482913 - 58F"),
                               "DATE_OF_BIRTH", "ID_NUMBER")
    assert [(line["cache"], line["pii_types"]) for line in lines.values()] == [
        ("skip:pii", ["DATE_OF_BIRTH", "ID_NUMBER"])] * 2
    log = (stack.workdir / "router.log").read_text()
    assert "00482913" not in log and "03/14/1967" not in log


def test_a_prompt_longer_than_the_pii_screen_reads_is_unscreened(stack: Stack) -> None:
    """Past the 2,048 tokens the PII head reads whole (~8-10k characters), a name could sit unread: such a prompt is
    routed as if it held names, and never cached. Addresses are read around the places one may stand (none in this
    report), so STREET_ADDRESS is screened (it was unscreened too until 2026-12-02)."""
    counted = 'vsr_pii_unscreened_total{type="PERSON"}'
    before = _metric(stack, counted)
    answers = _routed_twice_uncached(stack, _report(20_000), "unscreened")
    assert [h["x-vsr-selected-model"] for h in answers] == ["qwen3-4b"] * 2
    assert "(unscreened: the text is longer than the PII screen reads)" in answers[0]["x-vsr-decision-reason"]
    assert _metric(stack, counted) - before == 2
    lines = _request_lines(stack, [h["x-request-id"] for h in answers])
    assert [line["pii_unscreened"] for line in lines.values()] == [["PERSON"]] * 2


def test_a_complete_postal_address_keeps_a_prompt_from_a_model_that_refuses_addresses(stack: Stack) -> None:
    """Trial 19: the head read "1842 Maple Ridge Drive, Sacramento, CA 95822" in pieces too small to be an address, so
    the prompt reached gpt-oss-120b, whose pii_policy refuses STREET_ADDRESS, and its answer was cached. A complete
    address (number, street and type, town, state, ZIP) is now found by its shape."""
    ask = "Is alimony she receives under a 2020 divorce agreement taxable to her?"
    prompt = "Her address is 1842 Maple Ridge Drive, Sacramento, CA 95822. " + ask
    routed = _client(stack).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": ask}])
    assert routed.headers["x-vsr-selected-model"] == "gpt-oss-120b"  # without the address, the big model answers
    answers = _routed_twice_uncached(stack, prompt, "pii")
    assert [h["x-vsr-selected-model"] for h in answers] == ["qwen3-4b"] * 2
    assert "pii_policy refuses STREET_ADDRESS" in answers[0]["x-vsr-decision-reason"]
    lines = _request_lines(stack, [h["x-request-id"] for h in answers])
    assert [line["pii_types"] for line in lines.values()] == [["STREET_ADDRESS"]] * 2
    assert "Maple Ridge" not in (stack.workdir / "router.log").read_text()


LEASE_CLAUSE = ("The Tenant shall comply with the obligations described herein and shall not permit any act that would "
                "increase the cost of coverage or breach applicable law, as set out in Section {ref}. Any amount due "
                "shall bear interest at the rate in Schedule {schedule} until paid, subject to Article {ref} hereof. ")


@pytest.fixture(scope="module")
def shipped_policy_stack(make_stack: Callable[..., Stack]) -> Stack:
    """The shipped pii_policy: gpt-oss-120b may see names and e-mail addresses, no other personal data."""
    return make_stack(lambda cfg: cfg["classifier"].update(enabled=True, timeout_ms=5000)
                      or cfg["envoy"].update(message_timeout_ms=6000))


def test_a_long_contract_with_section_cross_references_stays_on_its_model(shipped_policy_stack: Stack) -> None:
    """Trial 19: every "Section 21." of a 15k-character lease was a place an address might stand, more than the PII
    head's windows hold, so the lease was unscreened for STREET_ADDRESS and kept from gpt-oss-120b. A numbered heading
    or cross-reference is no such place now; the lease's names stay unscreened (it is not cached), which that model's
    pii_policy allows."""
    clauses = "".join(f"\nSection {i}. Clause {chr(64 + i)}\n" + LEASE_CLAUSE.format(ref=(i * 7) % 26 + 1, schedule=i % 4 + 1) * 3
                      for i in range(1, 27))
    lease = "Review this commercial lease and list the tenant's obligations.\n" + clauses
    assert len(lease) > 15_000
    raw = _client(shipped_policy_stack).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": lease}])
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-vsr-selected-model"] == "gpt-oss-120b", raw.headers["x-vsr-decision-reason"]
    rid = raw.headers["x-request-id"]
    assert _request_lines(shipped_policy_stack, [rid])[rid]["pii_unscreened"] == ["PERSON"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_holding_pii_is_not_served_to_the_next_caller(stack: Stack, stream: bool) -> None:
    """Trial 10: a model answering from its documents named a customer's SSN and card for a prompt without PII; the
    answer was stored and replayed to the tenant's next caller (`x-vsr-cache-hit: true`, the SSN in its reasoning).
    Now the answer's PII screen keeps it out of the cache: the repeat is answered by the model again."""
    client, prompt = _client(stack), f"Which customer called support last about a refund? ({stream})"
    skipped = 'vsr_cache_events_total{event="skipped_write",reason="answer_pii"}'
    before = _metric(stack, skipped)
    leak = "The customer was Jane Roe, SSN 536-22-1234, card 4111 1111 1111 1111, jane.roe@example.com"
    first = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], stream=stream,
        extra_headers={"x-demo-reasoning": leak})
    said = "".join(str(c.choices[0].delta.model_extra.get("reasoning_content") or "") for c in first.parse()
                   if c.choices) if stream else first.parse().choices[0].message.model_extra["reasoning_content"]
    assert "536-22-1234" in said and first.headers.get("x-vsr-cache-skip") is None  # the request itself is clean
    eventually_hit(client, f"How do refunds reach a customer's card? ({stream})")  # the leak's write, queued
    calls = stack.upstream_requests()  # before this one, would have landed by now
    repeat = client.chat.completions.with_raw_response.create(model="auto",
                                                              messages=[{"role": "user", "content": prompt}])
    assert repeat.headers["x-vsr-cache-hit"] == "false" and stack.upstream_requests() == calls + 1
    assert "536-22-1234" not in repeat.text
    assert _metric(stack, skipped) - before == 1
