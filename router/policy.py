"""Which model answers, with reasoning on or off, or whether the request is blocked.

Plain Python over typed inputs (the parsed request and its Classification): no gRPC, no cache,
so every routing rule is unit-testable and new signals plug in by producing a Classification.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from router import cost
from router.config import Category, Matcher, ReasoningFamily, RouterConfig
from router.errors import ContentBlocked, JailbreakBlocked, ModelNotFound, PIIViolation, RouterError
from router.openai_wire import REASONING_SWITCHES, ChatRequest
from router.resilience import chain_cluster
from router.signals import NO_SIGNAL, UNSCREENED_CONTENT, Classification


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes and why; also what the response headers report."""

    model: str
    cluster: str
    category: str
    # The classifier's confidence in this turn's own category: `turn_category` when affinity answers the turn as its
    # conversation's (x-vsr-selected-confidence is then left out: it would read as a weak `category`), else `category`.
    confidence: float
    # Thinking on or off as the body sent upstream sets it (the router's switch or the client's own); None when it
    # sets none and the model server's default applies (x-vsr-selected-reasoning is then absent, not guessed).
    reasoning: bool | None
    auto: bool
    # The models Envoy may try, in order (the first is `model`): the same category ranking and PII rule.
    chain: tuple[str, ...] = ()
    route: str = ""  # what the selection header carries: the model's cluster, or its chain's cluster
    reason: str = ""  # why this model (x-vsr-decision-reason): best score, cheapest within margin, ...
    # Guards whose score passed their threshold under a `flag` action: the request goes on, the response
    # carries x-vsr-jailbreak-flagged / x-vsr-content-flagged and vsr_guard_flags_total counts it.
    flagged: tuple[str, ...] = ()
    # This turn's own category when affinity answers it as its conversation's (`category`): the stricter of the two
    # categories' restrictive rules applies (guards here, cache settings in the cache key).
    turn_category: str | None = None
    # The client set reasoning itself (`reasoning_effort`, a family's `chat_template_kwargs` flag, Responses
    # `reasoning.effort`): `reasoning` is its choice and the router sends the body's setting untouched.
    client_reasoning: bool = False
    # The family types whose switch the request's format carries (ChatRequest.reasoning_switches).
    reasoning_switches: frozenset[str] = REASONING_SWITCHES
    # What chose `category` (CategoryChoice.by), which `semantic-router explain` names; "" when affinity answers the
    # turn as its conversation's (`pinned`).
    category_by: str = ""


class CategoryChoice(NamedTuple):
    """A request's category and what chose it."""

    name: str
    confidence: float
    # What chose it, with the value it judged: "keyword_rules.N (category X) matched", "the classifier: ...",
    # "default_category: <why>"; `semantic-router explain` prints it.
    by: str
    note: str  # for the decision reason: why the default applies to a confident category the config lacks


@dataclass(frozen=True, slots=True)
class GuardRule:
    """What one guard's score is compared with in a category, and what passing it does."""

    threshold: float
    action: str  # off | block | flag | allow
    key: str  # the config key that set `action`: the fleet-wide one, or the category's own under a fleet-wide block


GUARDS = ("jailbreak", "content_safety")
# Client efforts that mean "do not think" in the router's terms (it sends `low` to switch reasoning off).
_NO_EFFORT = frozenset({"none", "minimal", "low"})


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    category: str
    pattern: Matcher


class Policy:
    """The routing policy compiled from one config; immutable, shared by concurrent streams."""

    def __init__(self, cfg: RouterConfig):
        self.cfg = cfg
        self._rules = [_CompiledRule(r.category, r.compiled()) for r in cfg.keyword_rules]
        self._auto = frozenset(cfg.auto_model_names)

    def public_model_names(self) -> list[str]:
        return [*self.cfg.auto_model_names, *self.cfg.models]

    def is_known_model(self, name: str) -> bool:
        return name in self._auto or name in self.cfg.models

    def require_model(self, name: str) -> None:
        """Refuse a model name the router does not serve (404), before any classifier work is spent on it: under load
        an unknown name got a retryable 503 `classifier_unavailable` instead of the 404 it can only end in."""
        if not self.is_known_model(name):
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")

    def checks_text_for(self, model: str) -> bool:
        """Whether a request sent to `model` by name has its text read by a check: a guard that is not `off`, or a PII
        rule of that model's. A request that nothing checks need not be classified (/v1/completions)."""
        clf = self.cfg.classifier
        guarded = clf.jailbreak_action != "off" or clf.content_safety_action != "off"
        return clf.enabled and (guarded or (clf.pii_enabled and not self.cfg.models[model].pii_policy.allow_by_default))

    def keyword_rule(self, text: str) -> int | None:
        """The index of the first keyword rule that matches, in config order."""
        return next((i for i, r in enumerate(self._rules) if r.pattern.search(text)), None)

    def decide(self, chat: ChatRequest, signal: Classification, text: str | None = None) -> Decision:
        """Pick the model; raises the RouterError the client should see for a blocked request.

        `text` is what keyword rules scan (the session passes the bounded text it classified).
        """
        self.require_model(chat.model)
        choice = self.category_choice(chat.latest_user_text() if text is None else text, signal)
        category, confidence, fell_back = choice.name, choice.confidence, choice.note
        cat_cfg = self.cfg.category(category)
        flagged = tuple(guard for guard in GUARDS if self._check_guard(guard, signal, cat_cfg, category))
        earlier = "".join(f"; {g} flagged in {t}" for g in flagged if (t := signal.earlier_turn(g)))
        auto = chat.model in self._auto
        chosen = self.reasoning_asked(chat)
        pii = signal.pii_possible
        ranked = self.ranked(cat_cfg, lambda m: self.cfg.models[m].pii_policy.allows(pii))
        allowed, reason = ranked.models, ranked.reason
        if auto:
            if not allowed:
                said = pii_said(signal, self.pii_refused(self.ranking(cat_cfg), signal))
                raise PIIViolation(f"No model may receive {said}", category=category)
            model = allowed[0]
            reasoning = self.reasons(cat_cfg, model, chat.reasoning_switches) if chosen is None else chosen
            reason += self._pii_skipped(cat_cfg, model, signal)
        else:
            reason = "requested by the client"
            model = chat.model
            if not self.cfg.models[model].pii_policy.allows(pii):
                said = pii_said(signal, self.pii_refused([model], signal))
                raise PIIViolation(f"The model '{model}' may not receive {said}", category=category)
            reasoning = chosen  # none chosen: the server's default, which the router does not know
        chain = self.chain(model, allowed if auto or self.cfg.fallback.explicit_models else [])
        return Decision(model=model, cluster=self.cfg.cluster_of(model), category=category,
                        confidence=confidence, reasoning=reasoning, auto=auto, chain=chain,
                        route=chain_cluster(self.cfg, chain), reason=reason + fell_back + earlier, flagged=flagged,
                        client_reasoning=chosen is not None, reasoning_switches=chat.reasoning_switches,
                        category_by=choice.by)

    def pinned(self, decision: Decision, model: str, category: str, signal: Classification) -> Decision | None:
        """`decision` moved to a conversation's model and category; None if that model may not see the PII.

        The conversation's category decides the model, its chain and reasoning (how the conversation is answered);
        a guard the conversation's category is stricter about than this turn's (`decide` applied the turn's) flags
        or blocks here, so a turn never escapes a rule of either category by being pinned."""
        pii = signal.pii_possible
        if model not in self.cfg.models or not self.cfg.models[model].pii_policy.allows(pii):
            return None
        cat = self.cfg.category(category)
        flagged = tuple(g for g in GUARDS if self._check_guard(g, signal, cat, category) or g in decision.flagged)
        chain = self.chain(model, self.allowed_ranking(cat, pii))
        turn = decision.category if decision.category != category else None
        said = f"; this turn is {turn} ({decision.confidence:.3f}): the stricter rules apply" if turn else ""
        reason = "the conversation's model (affinity)" + said
        reasoning = decision.reasoning if decision.client_reasoning else self.reasons(cat, model,
                                                                                       decision.reasoning_switches)
        return Decision(model=model, cluster=self.cfg.cluster_of(model), category=category,
                        confidence=decision.confidence, reasoning=reasoning,
                        auto=True, chain=chain, route=chain_cluster(self.cfg, chain),
                        reason=reason, flagged=flagged, turn_category=turn,
                        client_reasoning=decision.client_reasoning, reasoning_switches=decision.reasoning_switches)

    def reasons(self, cat: Category | None, model: str, switches: frozenset[str]) -> bool | None:
        """Whether the router asks `model` to reason (the category's `use_reasoning`); None when it cannot switch it:
        the model has no family, or the request's format cannot carry the family's switch (`switches`: a Messages
        body, a Responses body to a `chat_template_kwargs` family). Nothing is sent then and the server's default
        applies: `x-vsr-selected-reasoning` followed the category all the same."""
        family = self._family(model)
        if family is None or family.type not in switches:
            return None
        return bool(cat and cat.use_reasoning)

    def _family(self, model: str) -> ReasoningFamily | None:
        name = self.cfg.models[model].reasoning_family
        return self.cfg.reasoning_families.get(name) if name else None

    def reasoning_asked(self, chat: ChatRequest) -> bool | None:
        """The reasoning the client set itself in a family's parameter, as on/off (an effort of low or below is off,
        as the router sends `low` for off); None when it set none, and the category decides. Responses'
        `reasoning.effort` arrives as `reasoning_effort` (router/apis.py)."""
        kwargs = chat.body.get("chat_template_kwargs")
        for family in self.cfg.reasoning_families.values():
            where = kwargs if family.type == "chat_template_kwargs" else chat.body
            value = where.get(family.parameter) if isinstance(where, dict) else None
            if value is not None:
                return value not in _NO_EFFORT if isinstance(value, str) else bool(value)
        return None

    def ranking(self, cat: Category | None) -> list[str]:
        """The category's models, best first (the default model when the category lists none)."""
        ranked = sorted(cat.model_scores, key=lambda s: -s.score) if cat else []
        return [s.model for s in ranked] or [self.cfg.default_model]

    def ranked(self, cat: Category | None, allowed: Callable[[str], bool]) -> cost.Ranked:
        """The allowed models of the ranking in the order to try them: cost-aware (router/cost.py)."""
        return cost.order(self.cfg, cat, [m for m in self.ranking(cat) if allowed(m)])

    def allowed_ranking(self, cat: Category | None, pii: frozenset[str]) -> list[str]:
        """The models that may see the detected PII types, in the order to try them."""
        return self.ranked(cat, lambda m: self.cfg.models[m].pii_policy.allows(pii)).models

    def _pii_skipped(self, cat: Category | None, chosen: str, signal: Classification) -> str:
        """The better-ranked models the PII rule kept out, for the decision reason: without it `best score 0.40`
        reads as if 0.40 were the category's best, and "the big model gets nothing" has no visible cause."""
        ranking = self.ranking(cat)
        better = ranking[:ranking.index(chosen)] if chosen in ranking else ranking
        scores = {s.model: s.score for s in cat.model_scores} if cat else {}
        pii = signal.pii_possible
        kept_out = [m for m in better if not self.cfg.models[m].pii_policy.allows(pii)]
        refused = ", ".join(part for part in _pii_parts(signal, self.pii_refused(kept_out, signal)) if part)
        named = ", ".join(f"{m} ({scores.get(m, 0.0):.2f})" for m in kept_out)
        return f"; skipped {named}: pii_policy refuses {refused}" if kept_out else ""

    def pii_refused(self, models: Iterable[str], signal: Classification) -> frozenset[str]:
        """The types of `signal.pii_possible` one of `models` may not receive: what a reason or refusal names. All the
        detected types were named, those a model allows too, and an operator read that it refused them."""
        policies = [self.cfg.models[m].pii_policy for m in models if m in self.cfg.models]
        return frozenset(t for p in policies for t in signal.pii_possible if not p.allows(frozenset({t})))

    def chain(self, first: str, allowed: list[str]) -> tuple[str, ...]:
        """`first`, then the next allowed models in ranking order, bounded by `fallback.max_fallbacks`."""
        fb = self.cfg.fallback
        rest = [m for m in allowed if m != first][:fb.max_fallbacks] if fb.enabled else []
        return (first, *rest)

    def category_for(self, text: str, signal: Classification) -> tuple[str, float]:
        """The category of `text`: a keyword rule, else the classifier's if confident, else the default."""
        choice = self.category_choice(text, signal)
        return choice.name, choice.confidence

    def category_choice(self, text: str, signal: Classification) -> CategoryChoice:
        """`category_for`, the keyword rule that chose it, and for the decision reason why the default applies to a
        confident classifier category the config lacks: headers and log said `general 0.906` where the classifier had
        said law 0.906 (trial 13)."""
        rule = self.keyword_rule(text) if self._rules else None
        if rule is not None:
            category = self._rules[rule].category
            return CategoryChoice(category, 1.0, f"keyword_rules.{rule} (category {category}) matched", "")
        threshold, default = self.cfg.classifier.confidence_threshold, self.cfg.default_category
        if signal is NO_SIGNAL:
            return CategoryChoice(default, signal.confidence, "default_category: no classifier result", "")
        if not signal.encoder_reads:  # its confident categories: 56 of 67 wrong on trial 15's sets (classifier README)
            return CategoryChoice(default, signal.confidence, f"default_category: {UNREAD}", f"; {UNREAD}, so the "
                                  "default category applies")
        confident = confident_category(signal, threshold, lambda name: self.cfg.category(name) is not None)
        if confident:
            return CategoryChoice(confident, signal.confidence,
                                  f"the classifier: {signal.confidence:.3f} >= classifier.confidence_threshold "
                                  f"{threshold}", "")
        head = f"the classifier's {signal.category} {signal.confidence:.3f}"
        if signal.category is None or signal.confidence < threshold:
            return CategoryChoice(default, signal.confidence,
                                  f"default_category: {head} is below classifier.confidence_threshold {threshold}", "")
        note = (f"; classifier category {signal.category} ({signal.confidence:.3f}) is not configured, so the default "
                f"category {default} applies") if signal.category != default else ""
        return CategoryChoice(default, signal.confidence, f"default_category: {head} is not a configured category",
                              note)

    def _check_guard(self, guard: str, signal: Classification, cat: Category | None, category: str) -> bool:
        """True when the guard fires under a `flag` action; raises when it fires under `block`."""
        rule = self.guard_rule(guard, cat)
        if rule.action == "off" or guard_score(guard, signal) < rule.threshold:
            return False
        if rule.action == "block":
            raise _blocked(guard, cat, category, signal.earlier_turn(guard))
        return rule.action == "flag"

    def guard_rule(self, guard: str, cat: Category | None) -> GuardRule:
        """`guard`'s threshold and action in category `cat`: the fleet-wide action wins unless it is `block`, then the
        category's own action decides."""
        clf = self.cfg.classifier
        threshold, action = ((clf.jailbreak_threshold, clf.jailbreak_action) if guard == "jailbreak"
                             else (clf.content_safety_threshold, clf.content_safety_action))
        if action == "block" and cat is not None:
            own = cat.jailbreak_action if guard == "jailbreak" else cat.content_safety_action
            return GuardRule(threshold, own, f"categories[{cat.name}].{guard}_action")
        return GuardRule(threshold, action, f"classifier.{guard}_action")

    def rewrite(self, chat: ChatRequest, decision: Decision) -> bytes:
        """The body sent upstream: the chosen model, and reasoning switched per the category."""
        body: dict[str, Any] = {**chat.body, "model": decision.model}
        self._apply_reasoning(body, decision)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def reasoning_switch(self, decision: Decision) -> tuple[ReasoningFamily, bool | str] | None:
        """The reasoning switch the router sets: the model's family and the value of its parameter (on/off, or an
        effort). None when the body goes with the client's setting, or the server's default: an explicit model, a
        client that set reasoning itself, a model or a request format the router cannot switch (`reasons`). The cache
        keys it: the server answers by it."""
        family = self._family(decision.model)
        if decision.client_reasoning or decision.reasoning is None or family is None:
            return None
        if family.type == "chat_template_kwargs":
            return family, decision.reasoning
        cat = self.cfg.category(decision.category)
        return family, (cat.reasoning_effort if cat else "high") if decision.reasoning else "low"

    def _apply_reasoning(self, body: dict[str, Any], decision: Decision) -> None:
        switch = self.reasoning_switch(decision)
        if switch is None:
            return
        family, value = switch
        if family.type == "chat_template_kwargs":
            kwargs = body.get("chat_template_kwargs")
            body["chat_template_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}), family.parameter: value}
        else:
            body[family.parameter] = value

    def effort_for(self, decision: Decision) -> str | None:
        """The reasoning effort the router sets for a `reasoning_effort` family, else None."""
        switch = self.reasoning_switch(decision)
        return switch[1] if switch and isinstance(switch[1], str) else None

    def retarget(self, body: dict[str, Any], routed: str, target: str, category: str | None) -> bytes:
        """The body of a retry that lands on `target` instead of `routed` (the fallback chain).

        `category` is set when the router chose the model (auto): the reasoning switch the router added
        for `routed`'s family is taken out and the one for `target`'s family put in.
        """
        out = {**body, "model": target}
        if category is not None and routed in self.cfg.models and target in self.cfg.models:
            self._remove_reasoning(out, routed)
            cat = self.cfg.category(category)
            reasoning = self.reasons(cat, target, REASONING_SWITCHES)  # a chat body (the session says)
            self._apply_reasoning(out, Decision(model=target, cluster="", category=category, confidence=0.0,
                                                reasoning=reasoning, auto=True))
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()

    def _remove_reasoning(self, body: dict[str, Any], model: str) -> None:
        family = self._family(model)
        if family is None:
            return
        if family.type == "reasoning_effort":
            body.pop(family.parameter, None)
            return
        kwargs = body.get("chat_template_kwargs")
        if isinstance(kwargs, dict):
            kwargs = {k: v for k, v in kwargs.items() if k != family.parameter}
            if kwargs:
                body["chat_template_kwargs"] = kwargs
            else:
                body.pop("chat_template_kwargs", None)


def _blocked(guard: str, cat: Category | None, category: str, turn: str | None) -> RouterError:
    """`turn`: the other text that fired the guard ("user turn 1"); the client learns which, never its text."""
    subject = "it" if turn is None else f"{turn} of the conversation"
    if guard == "jailbreak":
        return JailbreakBlocked(f"The request was blocked: {subject} looks like a jailbreak or prompt injection",
                                status=cat.jailbreak_status if cat else 403, category=category)
    return ContentBlocked(f"The request was blocked: {subject} asks for harmful content",
                          status=cat.content_safety_status if cat else 403, category=category)


def guard_score(guard: str, signal: Classification) -> float:
    """The score `guard` judges: the highest over the texts screened (Classification.earlier_turns)."""
    return signal.jailbreak_score if guard == "jailbreak" else signal.content_safety_score


# The decision reason's words for text the encoder does not read (Classification.encoder_reads).
UNREAD = "the classifier does not read this text's script"


def confident_category(signal: Classification, threshold: float, known: Callable[[str], bool]) -> str | None:
    """The classifier's category when it is sure enough and names a category the config routes; else None, and the
    default category applies (`semantic-router classify` reports the same)."""
    if signal.category and signal.confidence >= threshold and known(signal.category):
        return signal.category
    return None


def pii_said(signal: Classification, refused: frozenset[str] | None = None) -> str:
    """The PII a refusal names: found types, those only unscreened text may hold, documents no screen could read;
    only those in `refused` (Policy.pii_refused) when given."""
    types, unreadable = _pii_parts(signal, refused)
    return " or ".join(([f"personal data of type {types}"] if types else []) + ([unreadable] if unreadable else []))


def _pii_parts(signal: Classification, refused: frozenset[str] | None = None) -> tuple[str, str]:
    """(the types found, then those only unscreened text may hold, said as such; the documents no screen could
    read), each "" when there is none; only those in `refused` when given."""
    said = signal.pii_possible if refused is None else refused
    parts, unread = sorted(signal.pii_types & said), sorted((signal.unscreened - signal.pii_types) & said)
    if unread:
        parts.append(f"{', '.join(unread)} (unscreened: the text is longer than the PII screen reads)")
    unreadable = signal.unreadable and UNSCREENED_CONTENT in said
    docs = f"content the router cannot read ({', '.join(sorted(set(signal.unreadable)))})" if unreadable else ""
    return ", ".join(parts), docs
