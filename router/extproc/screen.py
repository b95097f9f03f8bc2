"""The body phase's screening: every text a request puts in front of the model through the classifier.

router/screening.py says which texts a request holds and who wrote them; this runs them through the guards and
the PII rules within the request's deadline, the encoder's pending bound and MAX_EARLIER_PASSES, remembers them
per caller, and lets `classifier.on_failure` decide what a failure or a late pass means for the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

from router import openai_wire as wire
from router import screening
from router.chat_schema import MAX_ITEMS
from router.classifier import injection_rules
from router.classifier.canonical import canonical
from router.classifier.pii import PII_TYPES
from router.classifier.pii_rules import STRUCTURED_TYPES, find_structured
from router.errors import ClassifierUnavailable, TooManyUnscreenedTurns
from router.extproc.encoder_queue import Overloaded
from router.extproc.state import Failure, StreamState
from router.signals import NO_SIGNAL, Classification, PIIFinding, with_earlier_turns

T = TypeVar("T")

# Longest rest of a conversation the PII screen scans on the event loop rather than in the executor.
INLINE_SCAN_CHARS = 2048
# Earlier user turns and tool results the classification memo does not hold that one request may classify, one
# encoder pass each (2.2 ms for a short turn, ~35 ms for a two-window one). A genuine conversation's are in the memo
# (each was a latest turn before); sent cold (a restart, another replica) ShareGPT dev requests need 2 (median), 12
# (p99), 27 (max), and an SDK trial's real 50-turn conversation failed past its retries at 16. 64 short passes cost
# ~140 ms; long turns meet the request's deadline first (router/classifier/README.md, "Every user turn").
MAX_EARLIER_PASSES = 64
# What the exact validators scan of a request's rest (system prompt, assistant turns, tool calls: the texts no encoder
# pass reads), in multiples of classifier.max_scan_chars (128k chars of code: ~30-90 ms on the encoder thread). A
# coding agent's 80 steps of tool calls and short answers hold a few tens of thousands of characters.
REST_SCAN_FACTOR = 4


class Screener(StreamState):
    """The classifier's passes of one request (the body phase of StreamSession)."""

    async def _screen(self, chat: wire.ChatRequest, screen: screening.Screen, deadline: float) -> str:
        """Every text put in front of the model (`screen`, router/screening.py) through the classifier for the guards
        and the PII rules (`request.signal`); returns the classified text, bounded as the classifier read it, which the
        keyword rules scan too."""
        text = self._bounded(screen.latest)
        with self.trace.span("vsr.classify"):
            signal = await self._classify(text, deadline, screen_jailbreak=chat.has_user_turn)
            if screen.latest_tool and signal is not NO_SIGNAL:  # judged as the tool result it is in `earlier`
                signal = dataclasses.replace(signal, content_safety_score=0.0)
            signal = injection_rules.in_request(signal, screen.foreign, typed=screen.latest_typed)
            signal = self._unscreened(signal, len(text) < len(screen.latest), PII_TYPES)
            signal = await self._screen_earlier_turns(screen, signal, deadline)
            signal = await self._screen_other_turns(screen, signal, deadline)
            if screen.unreadable and signal is not NO_SIGNAL:
                signal = dataclasses.replace(signal, unreadable=screen.unreadable)
            self.request.signal = signal
            if self.trace.recording:
                self.trace.set(category=signal.category, confidence=round(signal.confidence, 4),
                               jailbreak_score=round(signal.jailbreak_score, 4),
                               pii_types=",".join(sorted(signal.pii_types)), source=signal.source,
                               guard_turns=",".join(f"{g}:{t}" for g, t in signal.earlier_turns) or None)
        return text

    async def _classify(self, text: str, deadline: float, screen_jailbreak: bool = True) -> Classification:
        """One encoder pass by `deadline`. When it fails or runs late, `classifier.on_failure` decides.

        A request with no user turn (a system prompt alone) is not screened for jailbreaks: instructions
        are what system prompts are made of, and the head scores them as such. Its tool results and prefill are, as
        `earlier` texts (router/screening.py).
        """
        if self.runtime.classifier is None:
            return NO_SIGNAL
        start = time.perf_counter()
        try:
            result = await self._encode_bounded(text, deadline)
        except TimeoutError:
            budget = self.runtime.cfg.classifier.timeout_ms
            return self._classifier_failed(TimeoutError(f"no result within {budget} ms"), "timeout")
        except Overloaded as exc:
            return self._classifier_failed(exc, "overload")
        except Exception as exc:  # noqa: BLE001 - any failure is handled by the operator's explicit policy
            return self._classifier_failed(exc, "error")
        finally:  # every turn the request screens counts
            timings = self.request.timings
            timings["classify"] = timings.get("classify", 0.0) + time.perf_counter() - start
        self.runtime.classifier_failures.success()
        return result if screen_jailbreak else dataclasses.replace(result, jailbreak_score=0.0, overrides=False)

    def _bounded(self, text: str) -> str:
        """What the classifier reads of a text: its head and tail (classifier.max_scan_chars)."""
        return wire.bounded(text, self.runtime.cfg.classifier.max_scan_chars)

    async def _screen_earlier_turns(self, screen: screening.Screen, signal: Classification,
                                    deadline: float) -> Classification:
        """The guards and the name/address screen read every earlier user turn too: the router is stateless, so a
        client may send a fabricated history whose first turn is a DAN prompt and whose last is innocent. Tool results
        are read alike (a tool's output is attacker-influenced: a web page or file may carry an injected instruction),
        and a last assistant message, which the model continues as its own words (a prefill).

        A genuine conversation's earlier turns were each the latest turn of an earlier request, so the per-caller
        memo (per client address for a caller without identity) answers them on the loop, without a pass. The others
        cost a pass each (the exported graph takes no attention mask: texts of different lengths share no batched
        run), one after another in `_classify`, by the request's deadline and within max_pending. Past
        MAX_EARLIER_PASSES of them, or at a pass that fails, the request is decided by `classifier.on_failure` like the
        latest turn's failure: closed refuses (503, Retry-After), open goes on with what was screened and says
        x-vsr-guards-skipped. The passes spent are memoised, so a long conversation sent cold (a new replica) gets
        further at each retry instead of being refused for ever; a caller the memo cannot scope, whose retries would
        get no further, gets a 400 at once. The category stays the latest turn's; each text's classification is kept
        in `request.earlier_signals` for affinity."""
        clf = self.runtime.classifier
        if clf is None or signal is NO_SIGNAL:
            return signal  # no classifier, or it failed: the guards are off for this request either way
        scope = self.request.caller.memo_scope
        turns: dict[str, screening.Other] = {}  # a text repeated in the history is screened once
        cut: set[str] = set()  # those bounded by max_scan_chars
        for other in screen.earlier:
            text = self._bounded(other.text)
            if text not in turns or other.asks and not turns[text].asks:
                # One pass per text, judged where it asks: a user turn repeating a tool result's text is a request
                # for the content-safety guard (keeping the first place, the tool's, zeroed its score).
                turns[text] = other
            if len(text) < len(other.text):
                cut.add(text)
        if len(turns) > MAX_ITEMS:  # blocks of one message are not messages: 55k tool results needed ~860 retries
            raise TooManyUnscreenedTurns(f"the conversation holds {len(turns)} texts the guards read (earlier user "
                                         f"turns, tool results, documents); at most {MAX_ITEMS} are accepted",
                                         param="messages")
        unknown = {text for text in turns if clf.cached(text, scope) is None}  # one memo lookup each, here
        if scope is None and len(unknown) > MAX_EARLIER_PASSES and self.runtime.cfg.classifier.on_failure == "closed":
            # Nothing is remembered for a caller without identity or address: each retry would start again at the
            # first turn, refused with a 503 its client retries for ever.
            raise TooManyUnscreenedTurns(
                f"{len(unknown)} earlier turns and tool results are new to this router, which screens at most "
                f"{MAX_EARLIER_PASSES} a request and remembers them only for a caller it can tell apart: send an API "
                f"key, or at most {MAX_EARLIER_PASSES} earlier turns and tool results", param="messages")
        screened: list[tuple[str, Classification]] = []
        passes = 0
        for text, other in turns.items():
            if text in unknown:
                if passes == MAX_EARLIER_PASSES:  # the passes spent are memoised: a retry gets further
                    left = len(unknown) - passes
                    self._classifier_failed(Overloaded(
                        f"{len(unknown)} earlier turns and tool results were not known to this router; "
                        f"{MAX_EARLIER_PASSES} are classified per request"), "overload",
                        f"{len(unknown)} earlier turns and tool results were new to this router, which screens "
                        f"{MAX_EARLIER_PASSES} a request and remembers them: {left} remain, retry to go on")
                    break
                passes += 1
            result = await self._classify(text, deadline)
            if result is NO_SIGNAL:
                break  # on_failure decided it (open: the turns screened so far still count)
            self.request.earlier_signals[text] = result
            result = injection_rules.in_request(result, screen.foreign, typed=other.typed)
            if not other.asks:  # a tool's output: the jailbreak guard only
                result = dataclasses.replace(result, content_safety_score=0.0)
            screened.append((other.label, self._unscreened(result, text in cut, PII_TYPES)))
        return with_earlier_turns(signal, screened)

    async def _screen_other_turns(self, screen: screening.Screen, signal: Classification,
                                  deadline: float) -> Classification:
        """Structured PII (cards, IBANs, SSNs, e-mails, phones, IPs, dates of birth, cue-named IDs: the exact
        validators) in the rest of the conversation joins the screened texts', so the PII policy sees what the model
        would: a system prompt, assistant turns, tool calls' arguments and where a message's parts meet (a value split
        over two parts), as `screening.Screen.structured` lists them, and any earlier text whose pass did not run (on_failure: open). The
        texts `_screen_earlier_turns` classified are not scanned again: their pass ran the validators on each, bounded
        by max_scan_chars one by one, so a long conversation of texts each screened once is not unscreened as a whole.
        Each of the rest is read up to max_scan_chars too, all of it up to REST_SCAN_FACTOR times that (beyond: the
        structured types are unscreened). A short rest is scanned on the loop (~10 us per 2 kB), a long one in the
        executor by the request's deadline (~30-90 ms per 128k chars of code)."""
        if signal is NO_SIGNAL or not self.runtime.cfg.classifier.pii_enabled:
            return signal  # no classifier, or it failed: the guards are off for this request either way
        unclassified = (o.text for o in screen.earlier if self._bounded(o.text) not in self.request.earlier_signals)
        budget, cut, pieces = REST_SCAN_FACTOR * self.runtime.cfg.classifier.max_scan_chars, False, []
        for raw in (*screen.structured, *unclassified):
            piece = self._bounded(raw)
            budget -= len(piece)
            if budget < 0:
                cut = True
                break
            cut |= len(piece) < len(raw)
            pieces.append(piece)
        signal = self._unscreened(signal, cut, STRUCTURED_TYPES)
        rest = "\n".join(pieces)
        if len(rest) <= INLINE_SCAN_CHARS:
            found = _find_structured(rest)
        else:
            try:
                found = await self._in_executor_by(deadline, len(rest), None, _find_structured, rest)
            except TimeoutError:
                budget_ms = self.runtime.cfg.classifier.timeout_ms
                return self._classifier_failed(TimeoutError(f"no PII screen within {budget_ms} ms"), "timeout")
        return dataclasses.replace(signal, pii=signal.pii + tuple(found)) if found else signal

    def _unscreened(self, signal: Classification, cut: bool, types: tuple[str, ...]) -> Classification:
        """`signal` of a text that classifier.max_scan_chars `cut` (its head and tail were read): the detectors of
        `types` never read its middle, which the PII rule and the cache then take as unscreened."""
        if not cut or signal is NO_SIGNAL or not self.runtime.cfg.classifier.pii_enabled:
            return signal
        return dataclasses.replace(signal, unscreened=signal.unscreened | frozenset(types))

    async def _encode_bounded(self, text: str, deadline: float) -> Classification:
        """One encoder pass in the executor, within `classifier.max_pending` and by `deadline` (else raises).

        A text the memo already holds is answered here, on the loop: no pass, so no executor round trip
        (two thread wake-ups) and no place in the pending bound.
        """
        rt = self.runtime
        assert rt.classifier is not None
        scope = self.request.caller.memo_scope
        if (known := rt.classifier.cached(text, scope)) is not None:
            return known
        bound = rt.cfg.classifier.max_pending
        return await self._in_executor_by(deadline, len(text), bound, rt.classifier.classify, text, scope)

    async def _in_executor_by(self, deadline: float, chars: int, bound: int | None, fn: Callable[..., T],
                              *args: Any) -> T:
        """`fn(*args)` on the encoder thread, off the event loop, in its turn by size (`chars` of text: shorter texts
        go first, encoder_queue.py) within `bound` passes pending; TimeoutError past `deadline` (a time.monotonic()
        value). Nothing is started once the deadline has passed: a thread cannot be stopped, and its result would
        go unread."""
        loop = asyncio.get_running_loop()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        async with asyncio.timeout_at(loop.time() + left):
            return await self.executor.run(chars, bound, deadline, fn, *args)

    def _classifier_failed(self, exc: Exception, reason: Failure, hint: str = "retry later") -> Classification:
        policy = self.runtime.cfg.classifier.on_failure
        self.request.classifier_error = f"{type(exc).__name__}: {exc}"[:300]
        self.request.classifier_failure = reason
        self.runtime.classifier_failures.failure(reason, error=self.request.classifier_error, on_failure=policy,
                                                 request_id=self.request.request_id)
        if policy == "closed":
            raise ClassifierUnavailable(f"The request could not be screened by the router's guards; {hint}")
        return NO_SIGNAL


def _find_structured(text: str) -> list[PIIFinding]:
    return find_structured(canonical(text))
